//! An agent's tool calls run inside its container's Docker sandbox: created on the first tool
//! call, shared by the container's agents, the tool output coming from inside it.

use agentvm::*;
use agentvm_e2e::collect_turn;
use agentvm_e2e::docker::{require_docker, vm_with_sandboxed_container};
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;

/// First call: a bash tool call that shows where it runs; then a text reply quoting it.
struct WhereAmI;

impl LlmDriver for WhereAmI {
    fn name(&self) -> &str {
        "where-am-i"
    }
    fn default_model(&self) -> &str {
        "where-am-i"
    }
    fn stream(&self, request: LlmRequest) -> agentvm::llm::LlmStream {
        let last = request.messages.last().cloned();
        let events = match last.as_ref().and_then(|m| m.tool_result.clone()) {
            Some(result) => vec![
                LlmEvent::MessageStart {
                    model: "where-am-i".into(),
                },
                LlmEvent::TextDelta(format!("tool said: {}", result.output)),
                LlmEvent::MessageDelta {
                    usage: None,
                    stop_reason: Some("end_turn".into()),
                },
                LlmEvent::MessageStop,
            ],
            None => {
                let input = json!({"command": "echo uid=$(id -u) host=$(hostname) pwd=$(pwd); echo note > note.txt; cat note.txt"});
                vec![
                    LlmEvent::MessageStart {
                        model: "where-am-i".into(),
                    },
                    LlmEvent::ToolUseStart {
                        id: "call_1".into(),
                        name: "bash".into(),
                    },
                    LlmEvent::ToolUseStop {
                        id: "call_1".into(),
                        name: "bash".into(),
                        input,
                    },
                    LlmEvent::MessageDelta {
                        usage: None,
                        stop_reason: Some("tool_use".into()),
                    },
                    LlmEvent::MessageStop,
                ]
            }
        };
        futures::stream::iter(events).boxed()
    }
}

fn tool_output(events: &[Event]) -> String {
    events
        .iter()
        .find_map(|e| match &e.payload {
            EventPayload::ToolResult {
                result, is_error, ..
            } => {
                assert_eq!(*is_error, Some(false), "the tool failed: {result}");
                Some(result.clone())
            }
            _ => None,
        })
        .expect("a tool_result event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_run_in_the_containers_sandbox_shared_by_its_agents() {
    if !require_docker().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vm = vm_with_sandboxed_container(dir.path(), "tenant", Some(Arc::new(WhereAmI))).await;
    let scheduler = vm.scheduler().unwrap().clone();
    let config = ImageConfig {
        tools: Some(vec!["bash".into()]),
        ..Default::default()
    };
    let a = vm
        .images()
        .create("tenant", config.clone())
        .await
        .unwrap()
        .record;
    let b = vm
        .images()
        .create("tenant", config.clone())
        .await
        .unwrap()
        .record;

    let mut sub = vm.sessions().events(&a.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&a.image_id, "where are you?")
        .await
        .unwrap();
    let out_a = tool_output(&collect_turn(&mut sub).await);
    let mut sub = vm.sessions().events(&b.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&b.image_id, "and you?")
        .await
        .unwrap();
    let out_b = tool_output(&collect_turn(&mut sub).await);

    // One sandbox, owned by the container, runs both agents' tools.
    let sandboxes: Vec<_> = scheduler
        .list_sandboxes()
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.owner.as_deref() == Some("tenant") && !s.status.is_terminal())
        .collect();
    assert_eq!(sandboxes.len(), 1, "{sandboxes:?}");
    let host = |out: &str| {
        out.split("host=")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    // The sandbox's hostname is its id (with - for _).
    assert_eq!(
        host(&out_a),
        sandboxes[0].id.replace('_', "-"),
        "ran in the sandbox: {out_a}"
    );
    assert_eq!(host(&out_a), host(&out_b));
    // Not root, each image in its own directory, files written there.
    assert!(!out_a.contains("uid=0 "), "{out_a}");
    assert!(
        out_a.contains(&format!("pwd=/workspace/{}", a.image_id)),
        "{out_a}"
    );
    assert!(
        out_b.contains(&format!("pwd=/workspace/{}", b.image_id)),
        "{out_b}"
    );
    assert!(out_a.trim_end().ends_with("note"));
    // Nothing was written on the host.
    assert!(!dir
        .path()
        .join("containers/tenant/workdirs")
        .join(&a.image_id)
        .join("note.txt")
        .exists());

    // A container without a template (and no local tools) gets a clear tool error.
    let c = vm
        .images()
        .create("no-sandbox", config)
        .await
        .unwrap()
        .record;
    let mut sub = vm.sessions().events(&c.session_id).await.unwrap();
    vm.agents().send_to_image(&c.image_id, "try").await.unwrap();
    let events = collect_turn(&mut sub).await;
    let failed = events
        .iter()
        .find_map(|e| match &e.payload {
            EventPayload::ToolResult {
                result,
                is_error: Some(true),
                ..
            } => Some(result.clone()),
            _ => None,
        })
        .expect("a failed tool result");
    assert!(failed.contains("has no sandbox"), "{failed}");

    for s in sandboxes {
        scheduler.terminate_sandbox(&s.id).await.unwrap();
    }
}
