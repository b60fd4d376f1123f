//! The embedding layer as a binding uses it: blocking calls from a plain thread.
#![allow(clippy::unwrap_used)] // helpers of tests: a failed unwrap is a failed assertion

use agentvm::ErrorKind;
use agentvm_embed::process::block_on;
use agentvm_embed::{Embed, EmbedOptions, ServeOptions, SubscribeOptions};
use serde_json::Value;
use std::time::Duration;

fn open() -> Embed {
    block_on(Embed::open(
        EmbedOptions::from_json(r#"{"llm":"mock"}"#).unwrap(),
    ))
    .unwrap()
    .unwrap()
}

fn request(vm: &Embed, json: &str) -> agentvm::Result<Value> {
    block_on(vm.request(json))
        .unwrap()
        .map(|s| serde_json::from_str(&s).unwrap())
}

#[test]
fn a_message_streams_to_conversation_end_and_history_has_both_sides() {
    let vm = open();
    let image = request(
        &vm,
        r#"{"type":"image_create_request","data":{"containerId":"c1"}}"#,
    )
    .unwrap();
    let session = image["record"]["sessionId"].as_str().unwrap().to_string();
    let image_id = image["record"]["imageId"].as_str().unwrap().to_string();
    let sub = block_on(
        vm.subscribe(
            SubscribeOptions::from_json(&format!(
                r#"{{"sessions":[{{"sessionId":"{session}"}}]}}"#
            ))
            .unwrap(),
        ),
    )
    .unwrap()
    .unwrap();
    request(
        &vm,
        &format!(
            r#"{{"type":"message_send_request","data":{{"imageId":"{image_id}","content":"hi"}}}}"#
        ),
    )
    .unwrap();
    let (mut deltas, mut ended) = (0, false);
    while !ended {
        let batch = block_on(sub.next_batch(64, Some(Duration::from_secs(10))))
            .unwrap()
            .expect("events before the timeout");
        let items: Vec<Value> = serde_json::from_str(&batch).unwrap();
        for e in items {
            assert!(e["cursor"].is_u64(), "{e}");
            match e["type"].as_str().unwrap() {
                "text_delta" => deltas += 1,
                "conversation_end" => ended = true,
                _ => {}
            }
        }
    }
    assert!(deltas > 0);
    let history = request(
        &vm,
        &format!(r#"{{"type":"session_messages_request","data":{{"sessionId":"{session}"}}}}"#),
    )
    .unwrap();
    let roles: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["role"].as_str())
        .collect();
    assert!(
        roles.contains(&"user") && roles.contains(&"assistant"),
        "{history}"
    );
    block_on(vm.close()).unwrap();
    assert!(block_on(sub.next_batch(1, None)).unwrap().is_none());
}

#[test]
fn bad_requests_are_invalid_input_naming_the_problem() {
    let vm = open();
    let e = request(&vm, "{not json").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.chain().contains("Invalid request JSON"), "{e}");
    let e = request(&vm, r#"{"type":"frobnicate_request","data":{}}"#).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e
        .chain()
        .contains("Unknown request type: frobnicate_request"));
    let e = request(
        &vm,
        r#"{"type":"image_get_request","data":{"imageId":"x","bogus":1}}"#,
    )
    .unwrap_err();
    assert!(e.chain().contains("bogus"), "{e}");
    let e = request(
        &vm,
        r#"{"type":"container_get_request","data":{"containerId":"nope","requestId":"r1"}}"#,
    );
    assert!(e.is_ok(), "requestId is accepted: {e:?}");
    block_on(vm.close()).unwrap();
    let e = request(&vm, r#"{"type":"image_list_request","data":{}}"#).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
}

#[test]
fn calls_end_on_timeout_or_cancel_by_id() {
    let vm = open();
    let e = block_on(vm.call(
        None,
        Some(Duration::from_millis(20)),
        std::future::pending::<agentvm::Result<()>>(),
    ))
    .unwrap()
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(e.to_string().contains("timed out after 20 ms"), "{e}");

    let canceller = vm.clone();
    let t = std::thread::spawn(move || {
        while !canceller.cancel(7) {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let e = block_on(vm.call(Some(7), None, std::future::pending::<agentvm::Result<()>>()))
        .unwrap()
        .unwrap_err();
    t.join().unwrap();
    assert!(
        e.to_string().contains("cancelled by the caller (id 7)"),
        "{e}"
    );
    assert!(!vm.cancel(7), "the id is free once the call ended");
    block_on(vm.close()).unwrap();
}

#[test]
fn blocking_calls_answer_at_once_or_wait_bounded_like_any_call() {
    let vm = open();
    // Ready at once: answered on this thread.
    let image = vm
        .call_blocking(
            None,
            Some(Duration::from_secs(30)),
            vm.request(r#"{"type":"image_create_request","data":{"containerId":"c1"}}"#),
        )
        .unwrap();
    let image: Value = serde_json::from_str(&image).unwrap();
    let id = image["record"]["imageId"].as_str().unwrap();
    let get = format!(r#"{{"type":"image_get_request","data":{{"imageId":"{id}"}}}}"#);
    let got: Value =
        serde_json::from_str(&vm.call_blocking(None, None, vm.request(&get)).unwrap()).unwrap();
    assert_eq!(got["record"]["imageId"], id);
    // Errors of a call that ends at once are its own.
    let e = vm
        .call_blocking(None, None, vm.request(r#"{"type":"nope_request"}"#))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    // A call that has to wait: first pending here, then finished on the runtime.
    let slept = vm
        .call_blocking(None, Some(Duration::from_secs(30)), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok(5)
        })
        .unwrap();
    assert_eq!(slept, 5);
    // ... bounded by its timeout,
    let e = vm
        .call_blocking(
            None,
            Some(Duration::from_millis(20)),
            std::future::pending::<agentvm::Result<()>>(),
        )
        .unwrap_err();
    assert!(e.to_string().contains("timed out after 20 ms"), "{e}");
    // ... by a cancel id from another thread,
    let canceller = vm.clone();
    let t = std::thread::spawn(move || {
        while !canceller.cancel(9) {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let e = vm
        .call_blocking(Some(9), None, std::future::pending::<agentvm::Result<()>>())
        .unwrap_err();
    t.join().unwrap();
    assert!(
        e.to_string().contains("cancelled by the caller (id 9)"),
        "{e}"
    );
    // ... and by close from another thread.
    let closer = vm.clone();
    let t = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        block_on(closer.close()).unwrap();
    });
    let e = vm
        .call_blocking(None, None, std::future::pending::<agentvm::Result<()>>())
        .unwrap_err();
    t.join().unwrap();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(e.to_string().contains("closed"), "{e}");

    // Not from a thread of the runtime: that would block one of its workers.
    let inner = vm.clone();
    let e = block_on(async move {
        inner
            .call_blocking(None, None, async { Ok(()) })
            .unwrap_err()
    })
    .unwrap();
    assert_eq!(e.kind(), ErrorKind::Internal);
}

#[test]
fn a_connect_to_a_server_that_never_answers_ends_by_timeout_or_cancel() {
    // Accepts TCP (the kernel's backlog) but never answers the WebSocket handshake.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let options = || {
        agentvm_embed::ConnectOptions::from_json(&format!(
            r#"{{"url":"ws://{}/ws","timeoutMs":60000}}"#,
            silent.local_addr().unwrap()
        ))
        .unwrap()
    };
    let e = block_on(Embed::connect_with(
        options(),
        None,
        Some(Duration::from_millis(100)),
    ))
    .unwrap()
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    assert!(e.to_string().contains("timed out after 100 ms"), "{e}");

    let t = std::thread::spawn(|| {
        while !agentvm_embed::cancel_opening(41) {
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    let e = block_on(Embed::connect_with(options(), Some(41), None))
        .unwrap()
        .unwrap_err();
    t.join().unwrap();
    assert!(
        e.to_string().contains("cancelled by the caller (id 41)"),
        "{e}"
    );
    assert!(!agentvm_embed::cancel_opening(41), "the id is free again");

    // An open that finishes in time frees its id.
    let vm = block_on(Embed::open_with(
        EmbedOptions::from_json(r#"{"llm":"mock"}"#).unwrap(),
        Some(42),
        Some(Duration::from_secs(30)),
    ))
    .unwrap()
    .unwrap();
    assert!(!agentvm_embed::cancel_opening(42), "the open finished");
    block_on(vm.close()).unwrap();
}

#[test]
fn a_slow_subscriber_resumes_without_losing_session_events() {
    let vm = open();
    let image = request(
        &vm,
        r#"{"type":"image_create_request","data":{"containerId":"c2"}}"#,
    )
    .unwrap();
    let session = image["record"]["sessionId"].as_str().unwrap().to_string();
    let image_id = image["record"]["imageId"].as_str().unwrap().to_string();
    // A queue of 1: the bus overflows this subscriber at once; the stream resumes.
    let sub = block_on(
        vm.subscribe(
            SubscribeOptions::from_json(&format!(
                r#"{{"sessions":[{{"sessionId":"{session}"}}],"queue":1}}"#
            ))
            .unwrap(),
        ),
    )
    .unwrap()
    .unwrap();
    request(
        &vm,
        &format!(
            r#"{{"type":"message_send_request","data":{{"imageId":"{image_id}","content":"hi"}}}}"#
        ),
    )
    .unwrap();
    let mut cursors = Vec::new();
    let mut ended = false;
    while !ended {
        let batch = block_on(sub.next_batch(1, Some(Duration::from_secs(10))))
            .unwrap()
            .expect("events");
        for e in serde_json::from_str::<Vec<Value>>(&batch).unwrap() {
            assert_ne!(
                e["type"], "subscription_gap",
                "the ring still holds them: {e}"
            );
            cursors.push(e["cursor"].as_u64().unwrap());
            ended |= e["type"] == "conversation_end";
        }
    }
    let mut sorted = cursors.clone();
    sorted.dedup();
    assert_eq!(sorted, cursors, "no duplicates, in order");
    assert!(cursors.windows(2).all(|w| w[0] < w[1]));
    block_on(vm.close()).unwrap();
}

#[test]
fn serve_then_connect_answers_the_same_commands() {
    let vm = open();
    let served = block_on(vm.serve(ServeOptions::default()))
        .unwrap()
        .unwrap();
    let remote = block_on(Embed::connect(
        agentvm_embed::options::parse_connect(&format!(r#"{{"url":"{}"}}"#, served.ws_url))
            .unwrap(),
    ))
    .unwrap()
    .unwrap();
    assert!(!remote.is_local());
    let list = request(&remote, r#"{"type":"container_list_request","data":{}}"#).unwrap();
    assert!(list.is_object(), "{list}");
    block_on(remote.close()).unwrap();
    // stop_serving ends that server only: the runtime answers on, a new connection is refused.
    assert!(block_on(vm.stop_serving(served.port)).unwrap());
    assert!(!block_on(vm.stop_serving(served.port)).unwrap());
    let refused = block_on(Embed::connect(
        agentvm_embed::options::parse_connect(&format!(
            r#"{{"url":"{}","timeoutMs":2000}}"#,
            served.ws_url
        ))
        .unwrap(),
    ))
    .unwrap()
    .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    request(&vm, r#"{"type":"container_list_request","data":{}}"#).unwrap();
    block_on(vm.close()).unwrap();
}

#[test]
fn connect_with_urls_fails_over_when_its_server_stops() {
    let vm = open();
    let a = block_on(vm.serve(ServeOptions::default()))
        .unwrap()
        .unwrap();
    let b = block_on(vm.serve(ServeOptions::default()))
        .unwrap()
        .unwrap();
    let remote = block_on(Embed::connect(
        agentvm_embed::options::parse_connect(&format!(
            r#"{{"urls":["{}","{}"],"timeoutMs":5000}}"#,
            a.ws_url, b.ws_url
        ))
        .unwrap(),
    ))
    .unwrap()
    .unwrap();
    request(
        &remote,
        r#"{"type":"container_create_request","data":{"containerId":"c1"}}"#,
    )
    .unwrap();
    // The server it is on stops; the client moves to the other one. A request the dropped
    // connection carried fails with `unavailable` ("may or may not have run"); once the client
    // is on the second server, requests are answered again.
    assert!(block_on(vm.stop_serving(a.port)).unwrap());
    let mut tries = 0;
    let list = loop {
        match request(&remote, r#"{"type":"container_list_request","data":{}}"#) {
            Ok(list) => break list,
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                tries += 1;
                assert!(
                    tries < 100,
                    "the client reached the second server within 5 s: {e}"
                );
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    };
    assert!(list.to_string().contains("c1"), "{list}");
    block_on(remote.close()).unwrap();
    block_on(vm.close()).unwrap();
}

#[test]
fn a_parsed_command_runs_with_the_same_checks_as_json() {
    let vm = open();
    let command = agentvm_embed::parse_command_parts(
        "image_create_request",
        serde_json::json!({"containerId": "c1", "requestId": "r1"}),
    )
    .unwrap();
    let response = block_on(vm.request_command(command)).unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&response).unwrap()["type"],
        "image_create_response"
    );
    let e = agentvm_embed::parse_command_parts(
        "image_get_request",
        serde_json::json!({"imageId": "x", "bogus": 1}),
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("bogus"), "{e}");
    let e =
        agentvm_embed::parse_command_parts("nope_request", serde_json::Value::Null).unwrap_err();
    assert!(
        e.to_string().contains("Unknown request type: nope_request"),
        "{e}"
    );
    block_on(vm.close()).unwrap();
    let closed = block_on(
        vm.request_command(
            agentvm_embed::parse_command_parts("container_list_request", serde_json::Value::Null)
                .unwrap(),
        ),
    )
    .unwrap()
    .unwrap_err();
    assert_eq!(closed.kind(), ErrorKind::Cancelled);
}

#[test]
fn stop_serving_stops_one_server_and_refuses_new_connections() {
    let vm = open();
    let served = block_on(vm.serve(ServeOptions::default()))
        .unwrap()
        .unwrap();
    let addr = format!("127.0.0.1:{}", served.port);
    assert!(std::net::TcpStream::connect(&addr).is_ok(), "listening");
    assert!(block_on(vm.stop_serving(served.port)).unwrap());
    assert!(
        !block_on(vm.stop_serving(served.port)).unwrap(),
        "already stopped"
    );
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "no longer listening on {addr}"
    );
    // The runtime itself goes on.
    let list = request(&vm, r#"{"type":"container_list_request","data":{}}"#).unwrap();
    assert!(list.is_object(), "{list}");
    block_on(vm.close()).unwrap();
}

#[test]
fn close_releases_the_data_dir_while_the_handle_lives_on() {
    let dir = tempfile::tempdir().unwrap();
    let options = || {
        EmbedOptions::from_json(&serde_json::json!({ "dataDir": dir.path() }).to_string()).unwrap()
    };
    let first = block_on(Embed::open(options())).unwrap().unwrap();
    request(
        &first,
        r#"{"type":"container_create_request","data":{"containerId":"kept"}}"#,
    )
    .unwrap();
    block_on(first.close()).unwrap();
    // `first` is still alive (a binding's handle object may outlive close): the store's lock
    // must be gone anyway.
    let again = block_on(Embed::open(options())).unwrap().unwrap();
    let list = request(&again, r#"{"type":"container_list_request","data":{}}"#).unwrap();
    assert_eq!(list["containerIds"], serde_json::json!(["kept"]));
    let e = request(&first, r#"{"type":"container_list_request","data":{}}"#).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Cancelled);
    block_on(again.close()).unwrap();
    drop(first);
}
