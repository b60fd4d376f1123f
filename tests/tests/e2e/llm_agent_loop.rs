//! The agent loop over a real HTTP stream: interrupting a slow reply, a stalled reply timing
//! out, and the tool loop with the local sandbox (write a file, `cat` it with bash, answer;
//! escapes refused), with the history sent back to the model valid after a restart.

use agentvm::*;
use agentvm_e2e::llm::anthropic;
use agentvm_e2e::replay_server::{Chunking, ReplayServer, Reply};
use agentvm_e2e::{collect_turn, text_of, types};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// An Anthropic stream answering with `deltas` as text.
fn text_reply(deltas: &[&str]) -> (String, Vec<usize>) {
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_t", "type": "message", "role": "assistant", "content": [], "model": "claude-test", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for d in deltas {
        events.push(("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}})));
    }
    events.push((
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    events.push(("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}})));
    events.push(("message_stop", json!({"type": "message_stop"})));
    sse(events)
}

/// An Anthropic stream calling `calls` (id, name, input).
fn tool_reply(calls: &[(&str, &str, Value)]) -> String {
    let mut events = vec![(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_c", "type": "message", "role": "assistant", "content": [], "model": "claude-test", "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    )];
    for (i, (id, name, input)) in calls.iter().enumerate() {
        events.push(("content_block_start", json!({"type": "content_block_start", "index": i, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}})));
        events.push(("content_block_delta", json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": input.to_string()}})));
        events.push((
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    events.push(("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 20}})));
    events.push(("message_stop", json!({"type": "message_stop"})));
    sse(events).0
}

/// The stream and the byte offset where each event starts.
fn sse(events: Vec<(&str, Value)>) -> (String, Vec<usize>) {
    let mut out = String::new();
    let mut starts = Vec::new();
    for (name, data) in events {
        starts.push(out.len());
        out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    }
    (out, starts)
}

async fn image(vm: &AgentVm, tools: &[&str]) -> ImageListItem {
    let config = ImageConfig {
        tools: Some(tools.iter().map(|t| t.to_string()).collect()),
        ..Default::default()
    };
    vm.images().create("c1", config).await.unwrap().record
}

#[tokio::test]
async fn interrupting_a_slow_stream_stops_it_at_once_and_keeps_a_consistent_history() {
    let deltas: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
    let (body, starts) = text_reply(&deltas.iter().map(String::as_str).collect::<Vec<_>>());
    let slow = Reply::sse(body)
        .chunking(Chunking::At(starts))
        .delay(Duration::from_millis(30));
    let server = ReplayServer::start([slow, Reply::sse(text_reply(&["again"]).0)]).await;
    let vm = AgentVm::builder()
        .llm(anthropic(&server.url()))
        .open()
        .await
        .unwrap();
    let img = image(&vm, &[]).await;
    let mut sub = vm.sessions().events(&img.session_id).await.unwrap();
    let sent = vm
        .agents()
        .send_to_image(&img.image_id, "Talk slowly")
        .await
        .unwrap();

    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|e: &&Event| e.type_name() == "text_delta")
        .count()
        < 3
    {
        match tokio::time::timeout(Duration::from_secs(10), sub.recv())
            .await
            .unwrap()
            .unwrap()
        {
            BusItem::Event(p) => seen.push(p.event.clone()),
            BusItem::Overflowed { .. } => panic!("overflow"),
        }
    }
    let asked = Instant::now();
    vm.agents().interrupt(&sent.agent_id).await.unwrap();
    let rest = collect_turn(&mut sub).await;
    let stopped_in = asked.elapsed();
    assert!(
        stopped_in < Duration::from_millis(200),
        "the turn ended {stopped_in:?} after the interrupt"
    );
    let tail: Vec<_> = types(&rest)
        .into_iter()
        .filter(|t| *t != "text_delta" && *t != "conversation_responding")
        .collect();
    assert_eq!(
        tail,
        [
            "interrupted",
            "message_stop",
            "assistant_message",
            "conversation_end"
        ]
    );
    // The HTTP request was cancelled: the server saw the client leave.
    let hangup = server
        .wait_for_hangup(Duration::from_secs(2))
        .await
        .expect("the server saw the client hang up");
    assert!(
        hangup.duration_since(asked) < Duration::from_millis(500),
        "{:?}",
        hangup.duration_since(asked)
    );

    let streamed = text_of(&seen.into_iter().chain(rest).collect::<Vec<_>>());
    assert!(
        streamed.starts_with("w0 w1 w2 ") && !streamed.contains("w99"),
        "{streamed}"
    );
    let history = vm.images().messages(&img.image_id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(
        history[0].content,
        Some(Content::Text("Talk slowly".into()))
    );
    assert_eq!(history[1].content, Some(Content::Text(streamed.clone())));

    // The next turn sends the user message, the partial reply and the new message.
    vm.agents()
        .send_to_image(&img.image_id, "Go on")
        .await
        .unwrap();
    let next = collect_turn(&mut sub).await;
    assert_eq!(
        next.last().unwrap().payload,
        EventPayload::ConversationEnd {
            reason: EndReason::Completed
        }
    );
    assert_eq!(
        server.requests()[1].json()["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Talk slowly"}]},
            {"role": "assistant", "content": [{"type": "text", "text": streamed}]},
            {"role": "user", "content": [{"type": "text", "text": "Go on"}]},
        ])
    );
}

#[tokio::test]
async fn a_stalled_stream_times_out_with_error_code_timeout() {
    let (body, starts) = text_reply(&["Hel", "lo"]);
    // message_start, the block start and one delta, then nothing.
    let partial = body[..starts[3]].to_string();
    let server = ReplayServer::start([Reply::sse(partial).stall(), Reply::sse("").stall()]).await;
    let config = AgentConfig {
        request_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let vm = AgentVm::builder()
        .llm(anthropic(&server.url()))
        .agent_config(config)
        .open()
        .await
        .unwrap();
    let img = image(&vm, &[]).await;
    let mut sub = vm.sessions().events(&img.session_id).await.unwrap();
    let started = Instant::now();
    vm.agents()
        .send_to_image(&img.image_id, "Hi")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        types(&events),
        [
            "message_start",
            "conversation_start",
            "text_delta",
            "conversation_responding",
            "error_received",
            "error_occurred",
            "assistant_message",
            "error_message",
            "conversation_end",
        ]
    );
    let EventPayload::ErrorReceived {
        error_code,
        message,
        error_kind,
    } = &events[4].payload
    else {
        panic!()
    };
    assert_eq!(*error_kind, agentvm::ErrorKind::Unavailable);
    assert_eq!(error_code.as_deref(), Some("timeout"), "{message}");
    assert!(
        server
            .wait_for_hangup(Duration::from_secs(2))
            .await
            .is_some(),
        "the request was cancelled"
    );

    // A server that sends headers and then nothing times out the same way.
    vm.agents()
        .send_to_image(&img.image_id, "Again")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert_eq!(types(&events)[..2], ["error_received", "error_occurred"]);
    let EventPayload::ErrorReceived { error_code, .. } = &events[0].payload else {
        panic!()
    };
    assert_eq!(error_code.as_deref(), Some("timeout"));
}

const ALL_TOOLS: [&str; 4] = ["bash", "read_file", "write_file", "list_files"];

fn tool_results(events: &[Event]) -> Vec<(String, bool)> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::ToolResult {
                result, is_error, ..
            } => Some((result.clone(), is_error.unwrap_or(false))),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_tool_loop_writes_a_file_reads_it_with_bash_and_answers() {
    let dir = tempfile::tempdir().unwrap();
    let content = "héllo from the agent\n";
    let server = ReplayServer::start([
        Reply::sse(tool_reply(&[(
            "toolu_w",
            "write_file",
            json!({"path": "notes/hello.txt", "content": content}),
        )])),
        Reply::sse(tool_reply(&[(
            "toolu_b",
            "bash",
            json!({"command": "cat notes/hello.txt"}),
        )])),
        Reply::sse(text_reply(&["The file says: ", "héllo from the agent"]).0),
        Reply::sse(text_reply(&["Still here."]).0),
    ])
    .await;
    let vm = AgentVm::builder()
        .data_dir(dir.path())
        .llm(anthropic(&server.url()))
        .local_tools()
        .open()
        .await
        .unwrap();
    let img = image(&vm, &ALL_TOOLS).await;
    let mut sub = vm.sessions().events(&img.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&img.image_id, "Write a note, then read it back")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;

    let t = types(&events);
    assert_eq!(
        t.iter().filter(|t| **t == "tool_completed").count(),
        2,
        "{t:?}"
    );
    assert_eq!(t.iter().filter(|t| **t == "message_start").count(), 3);
    assert_eq!(
        events.last().unwrap().payload,
        EventPayload::ConversationEnd {
            reason: EndReason::Completed
        }
    );
    assert_eq!(
        tool_results(&events),
        [
            (
                format!("wrote {} bytes to notes/hello.txt", content.len()),
                false
            ),
            (content.to_string(), false)
        ]
    );
    let workdir = dir
        .path()
        .join("containers/c1/workdirs")
        .join(&img.image_id);
    assert_eq!(
        std::fs::read_to_string(workdir.join("notes/hello.txt")).unwrap(),
        content
    );

    // The model was offered the four tools and got every result back, paired with its call.
    let requests = server.requests();
    let offered: Vec<_> = requests[0].json()["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(offered, ALL_TOOLS);
    let third = requests[2].json();
    let m = third["messages"].as_array().unwrap();
    assert_eq!(m.len(), 5);
    assert_eq!(m[2]["content"][0]["tool_use_id"], "toolu_w");
    assert_eq!(
        m[4]["content"][0],
        json!({"type": "tool_result", "tool_use_id": "toolu_b", "content": content})
    );

    let history = vm.images().messages(&img.image_id).await.unwrap();
    let kinds: Vec<_> = history.iter().map(|m| m.subtype).collect();
    assert_eq!(
        kinds,
        [
            Subtype::User,
            Subtype::ToolCall,
            Subtype::ToolResult,
            Subtype::ToolCall,
            Subtype::ToolResult,
            Subtype::Assistant
        ]
    );
    assert_eq!(
        history[5].content,
        Some(Content::Text("The file says: héllo from the agent".into()))
    );

    // After a restart the history is rebuilt from the store into the same conversation.
    vm.close().await;
    drop((sub, vm));
    let vm = AgentVm::builder()
        .data_dir(dir.path())
        .llm(anthropic(&server.url()))
        .local_tools()
        .open()
        .await
        .unwrap();
    let mut sub = vm.sessions().events(&img.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&img.image_id, "Are you there?")
        .await
        .unwrap();
    collect_turn(&mut sub).await;
    let fourth = server.requests()[3].json();
    let m = fourth["messages"].as_array().unwrap();
    assert_eq!(m[..5], third["messages"].as_array().unwrap()[..]);
    assert_eq!(m[5]["role"], "assistant");
    assert_eq!(
        m[6],
        json!({"role": "user", "content": [{"type": "text", "text": "Are you there?"}]})
    );
}

#[tokio::test]
async fn escape_attempts_are_refused_with_error_results() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();
    let calls = vec![
        (
            "t1",
            "read_file",
            json!({"path": "../../../../agentvm.redb"}),
        ),
        (
            "t2",
            "write_file",
            json!({"path": "../escaped.txt", "content": "x"}),
        ),
        ("t3", "read_file", json!({"path": secret.to_str().unwrap()})),
        (
            "t4",
            "write_file",
            json!({"path": outside.path().join("new.txt").to_str().unwrap(), "content": "x"}),
        ),
        (
            "t5",
            "bash",
            json!({"command": format!("ln -s {} escape && ln -s {} secret-link", outside.path().display(), secret.display())}),
        ),
        ("t6", "read_file", json!({"path": "escape/secret.txt"})),
        ("t7", "read_file", json!({"path": "secret-link"})),
        (
            "t8",
            "write_file",
            json!({"path": "escape/pwned.txt", "content": "x"}),
        ),
        ("t9", "list_files", json!({"path": "escape"})),
        ("t10", "list_files", json!({"path": "/"})),
    ];
    let server = ReplayServer::start([
        Reply::sse(tool_reply(&calls)),
        Reply::sse(text_reply(&["Done."]).0),
    ])
    .await;
    let vm = AgentVm::builder()
        .data_dir(dir.path())
        .llm(anthropic(&server.url()))
        .local_tools()
        .open()
        .await
        .unwrap();
    let img = image(&vm, &ALL_TOOLS).await;
    let mut sub = vm.sessions().events(&img.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&img.image_id, "Try to get out")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    let results = tool_results(&events);
    assert_eq!(results.len(), calls.len());
    for (i, (output, is_error)) in results.iter().enumerate() {
        let expect_error = calls[i].0 != "t5";
        assert_eq!(*is_error, expect_error, "{}: {output}", calls[i].0);
        if expect_error {
            assert!(
                output.contains("..") || output.contains("outside the workspace"),
                "{}: {output}",
                calls[i].0
            );
        }
    }
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "top secret");
    assert!(!outside.path().join("new.txt").exists());
    assert!(!outside.path().join("pwned.txt").exists());
    assert!(!dir
        .path()
        .join("containers/c1/workdirs/escaped.txt")
        .exists());
    assert_eq!(
        events.last().unwrap().payload,
        EventPayload::ConversationEnd {
            reason: EndReason::Completed
        }
    );
}

#[tokio::test]
async fn tools_are_off_unless_the_image_enables_them() {
    let dir = tempfile::tempdir().unwrap();
    let server = ReplayServer::start([
        Reply::sse(tool_reply(&[(
            "t1",
            "bash",
            json!({"command": "touch made-it"}),
        )])),
        Reply::sse(text_reply(&["ok"]).0),
        Reply::sse(tool_reply(&[("t2", "bash", json!({"command": "echo hi"}))])),
        Reply::sse(text_reply(&["ok"]).0),
    ])
    .await;
    let vm = AgentVm::builder()
        .data_dir(dir.path())
        .llm(anthropic(&server.url()))
        .local_tools()
        .open()
        .await
        .unwrap();
    let none = image(&vm, &[]).await;
    let mut sub = vm.sessions().events(&none.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&none.image_id, "Run it")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert_eq!(
        tool_results(&events),
        [(
            "tool 'bash' is not available to this agent".to_string(),
            true
        )]
    );
    assert!(
        server.requests()[0].json().get("tools").is_none(),
        "no tools are offered"
    );
    assert!(!dir
        .path()
        .join("containers/c1/workdirs")
        .join(&none.image_id)
        .join("made-it")
        .exists());

    // Enabling only read_file does not enable bash.
    let some = image(&vm, &["read_file"]).await;
    let mut sub = vm.sessions().events(&some.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&some.image_id, "Run it")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert!(tool_results(&events)[0].1);
    let offered = server.requests()[2].json()["tools"].clone();
    assert_eq!(offered.as_array().unwrap().len(), 1);
    assert_eq!(offered[0]["name"], "read_file");
}

#[tokio::test]
async fn local_tools_need_a_data_dir() {
    let e = AgentVm::builder().local_tools().open().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("data_dir"), "{e}");
}
