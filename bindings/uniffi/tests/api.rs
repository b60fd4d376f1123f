//! The Rust side of the bindings, driven from an executor that is not tokio (as Python's,
//! Kotlin's, Swift's or Ruby's are): a message streamed to `conversation_end`, history, error
//! kinds, a stream ended from another thread, concurrent requests, close.

use agentvm_uniffi::{AgentVm, AgentVmError, EventStream};
use futures::executor::block_on;
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

fn open(dir: &tempfile::TempDir) -> Arc<AgentVm> {
    let options = serde_json::json!({"llm": "mock", "dataDir": dir.path()}).to_string();
    block_on(AgentVm::open(options)).expect("open")
}

fn request(vm: &AgentVm, command: Value) -> Value {
    json(&block_on(vm.request(command.to_string(), Some(30_000), None)).expect("request"))
}

/// Reads batches until `conversation_end`; returns the event types in order.
fn events_until_end(stream: &EventStream) -> Vec<String> {
    let mut types = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !types.iter().any(|t| t == "conversation_end") {
        assert!(Instant::now() < deadline, "no conversation_end: {types:?}");
        let batch = block_on(stream.next(4, Some(10_000)))
            .expect("next")
            .expect("the stream is open");
        let batch = json(&batch);
        let items = batch.as_array().expect("a batch is an array");
        assert!(items.len() <= 4, "max is respected");
        types.extend(
            items
                .iter()
                .map(|e| e["type"].as_str().unwrap_or("").to_string()),
        );
    }
    types
}

#[test]
fn a_message_streams_to_conversation_end_and_lands_in_history() {
    let dir = tempfile::tempdir().unwrap();
    let vm = open(&dir);
    assert!(vm.is_local());
    let image = request(
        &vm,
        serde_json::json!({"type": "image_create_request", "data": {"containerId": "c-uniffi"}}),
    );
    let session = image["record"]["sessionId"].as_str().expect("sessionId");
    let image_id = image["record"]["imageId"].as_str().expect("imageId");
    assert!(image_id.starts_with("img_"), "{image}");

    let stream = block_on(vm.subscribe(format!(r#"{{"sessions":[{{"sessionId":"{session}"}}]}}"#)))
        .expect("subscribe");
    assert_eq!(
        stream.try_next(0).as_deref(),
        Some("[]"),
        "nothing before the message"
    );
    request(
        &vm,
        serde_json::json!({"type": "message_send_request", "data": {"imageId": image_id, "content": "Hello"}}),
    );
    let types = events_until_end(&stream);
    assert!(types.iter().any(|t| t == "text_delta"), "{types:?}");
    assert_eq!(types.last().map(String::as_str), Some("conversation_end"));

    let history = request(
        &vm,
        serde_json::json!({"type": "session_messages_request", "data": {"sessionId": session}}),
    );
    let roles: Vec<&str> = history["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert_eq!(roles.first(), Some(&"user"), "{history}");
    assert!(roles.contains(&"assistant"), "{history}");

    block_on(vm.close()).unwrap();
    assert!(vm.is_closed());
    assert_eq!(
        block_on(stream.next(0, Some(1000))).unwrap(),
        None,
        "a closed runtime ends its streams"
    );
    let after = block_on(vm.request(
        r#"{"type":"image_list_request","data":{}}"#.into(),
        None,
        None,
    ));
    assert!(
        matches!(after, Err(AgentVmError::Cancelled { .. })),
        "{after:?}"
    );
}

#[test]
fn errors_carry_their_kind_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let bad = block_on(AgentVm::open(r#"{"bogus": 1}"#.into()));
    assert!(
        matches!(bad, Err(AgentVmError::InvalidInput { .. })),
        "{bad:?}"
    );
    let vm = open(&dir);
    let cases = [
        ("{not json", "invalid_input", "Invalid request JSON"),
        (
            r#"{"type":"frobnicate_request","data":{}}"#,
            "invalid_input",
            "Unknown request type: frobnicate_request",
        ),
        (
            r#"{"type":"message_send_request","data":{"imageId":"img_nope","content":"x"}}"#,
            "not_found",
            "img_nope",
        ),
    ];
    for (command, kind, text) in cases {
        let e = block_on(vm.request(command.into(), None, None)).expect_err(command);
        assert_eq!(e.kind(), kind, "{command}: {e}");
        assert!(e.to_string().contains(text), "{command}: {e}");
    }
    assert!(!vm.cancel(424_242), "no call runs with that id");
    block_on(vm.close()).unwrap();
}

#[test]
fn a_waiting_next_ends_when_another_thread_closes_the_stream() {
    let vm = block_on(AgentVm::open(r#"{"llm":"mock"}"#.into())).unwrap();
    let stream = block_on(vm.subscribe(r#"{"global":true}"#.into())).unwrap();
    let closer = {
        let stream = stream.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            stream.close();
        })
    };
    let started = Instant::now();
    let mut last = block_on(stream.next(0, None)).unwrap();
    while let Some(batch) = last {
        // Global events that happened to be waiting; then the end.
        assert!(batch.starts_with('['), "{batch}");
        last = block_on(stream.next(0, None)).unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(stream.is_ended());
    closer.join().unwrap();
    assert_eq!(block_on(stream.next(0, Some(10))).unwrap(), None);
    block_on(vm.close()).unwrap();
}

#[test]
fn timeouts_give_an_empty_batch_and_cancelled_calls() {
    let vm = block_on(AgentVm::open(r#"{"llm":"mock"}"#.into())).unwrap();
    let stream =
        block_on(vm.subscribe(r#"{"sessions":[{"sessionId":"ses_quiet"}]}"#.into())).unwrap();
    assert_eq!(
        block_on(stream.next(0, Some(50))).unwrap().as_deref(),
        Some("[]")
    );
    let r = block_on(vm.request(
        r#"{"type":"image_list_request","data":{}}"#.into(),
        Some(0),
        None,
    ));
    // A zero timeout may win or lose against a fast command, but is never another error.
    assert!(
        matches!(r, Ok(_) | Err(AgentVmError::Cancelled { .. })),
        "{r:?}"
    );
    block_on(vm.close()).unwrap();
}

#[test]
fn many_threads_share_one_handle() {
    let vm = block_on(AgentVm::open(r#"{"llm":"mock"}"#.into())).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let vm = vm.clone();
            std::thread::spawn(move || {
                let command = format!(
                    r#"{{"type":"image_create_request","data":{{"containerId":"c-{i}"}}}}"#
                );
                json(&block_on(vm.request(command, Some(30_000), None)).expect("request"))
            })
        })
        .collect();
    let mut images: Vec<String> = threads
        .into_iter()
        .map(|t| {
            t.join().unwrap()["record"]["imageId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    images.sort();
    images.dedup();
    assert_eq!(images.len(), 8, "eight distinct images");
    let containers = request(
        &vm,
        serde_json::json!({"type": "container_list_request", "data": {}}),
    );
    let ids = containers["containerIds"].as_array().expect("containerIds");
    for i in 0..8 {
        assert!(ids.contains(&Value::from(format!("c-{i}"))), "{containers}");
    }
    block_on(vm.close()).unwrap();
}
