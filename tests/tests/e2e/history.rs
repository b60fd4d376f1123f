//! Paged history: a messages request returns a bounded page however large the session is,
//! paging forward and backward returns every message exactly once, and another client is
//! served while a large history is read.

use agentvm::model::{Message, MESSAGE_PAGE_MAX_BYTES};
use agentvm::{ImageConfig, RuntimeExt};
use agentvm_e2e::wire::{TestServer, WsClient};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Messages written, and the size of each one's content.
const MESSAGES: usize = 200;
const CONTENT_BYTES: usize = 1024 * 1024 - 64;

/// A server whose image's session holds `MESSAGES` messages of `content_bytes` each, written
/// straight to the store (the reads are under test, not the agent).
async fn history(content_bytes: usize) -> (TestServer, String) {
    let server = TestServer::start().await;
    let image = server
        .vm
        .images()
        .create("c1", ImageConfig::default())
        .await
        .unwrap()
        .record;
    let store = server.vm.store().clone();
    let session = image.session_id.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..MESSAGES {
            let text = format!("{i:04}{}", "x".repeat(content_bytes - 4));
            let m = Message::user(format!("msg_{i:04}"), text.into(), i as i64);
            store.append_message(&session, &m).unwrap();
        }
    })
    .await
    .unwrap();
    (server, image.session_id)
}

/// `session_messages_request` with `extra` fields; the response's data and the frame's size.
async fn page(client: &mut WsClient, session: &str, extra: Value) -> (Value, usize) {
    let mut data = json!({ "sessionId": session });
    for (k, v) in extra.as_object().unwrap() {
        data[k] = v.clone();
    }
    let response = client.request("session_messages_request", data).await;
    let size = response.to_string().len();
    assert!(
        response["data"]["error"].is_null(),
        "{}",
        &response.to_string()[..300.min(response.to_string().len())]
    );
    (response["data"].clone(), size)
}

fn ids(data: &Value) -> Vec<String> {
    data["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_both_ways_returns_every_message_once() {
    let (server, session) = history(64).await;
    let mut client = WsClient::connect(&server.ws_url()).await;

    // Without a limit: the first 100, and more to come.
    let (first, _) = page(&mut client, &session, json!({})).await;
    assert_eq!(ids(&first).len(), 100);
    assert_eq!(ids(&first)[0], "msg_0000");
    assert_eq!(first["hasMore"], true);
    assert_eq!(first["nextCursor"], 99);

    // Forward from the start, following nextCursor.
    let mut forward = Vec::new();
    let mut extra = json!({ "limit": 7 });
    loop {
        let (data, _) = page(&mut client, &session, extra.clone()).await;
        assert!(ids(&data).len() <= 7);
        forward.extend(ids(&data));
        if !data["hasMore"].as_bool().unwrap() {
            assert!(data["nextCursor"].is_null());
            break;
        }
        extra = json!({ "limit": 7, "after": data["nextCursor"] });
    }
    let expected: Vec<String> = (0..MESSAGES).map(|i| format!("msg_{i:04}")).collect();
    assert_eq!(forward, expected);

    // Backward from the newest (any cursor past the last message), oldest first per page.
    let mut backward = Vec::new();
    let mut extra = json!({ "limit": 9, "before": 9_007_199_254_740_991u64 });
    loop {
        let (data, _) = page(&mut client, &session, extra.clone()).await;
        let mut batch = ids(&data);
        batch.reverse();
        backward.extend(batch);
        if !data["hasMore"].as_bool().unwrap() {
            break;
        }
        extra = json!({ "limit": 9, "before": data["nextCursor"] });
    }
    backward.reverse();
    assert_eq!(backward, expected);
    let unique: HashSet<_> = backward.iter().collect();
    assert_eq!(unique.len(), MESSAGES);

    // A limit over the maximum is refused, naming it.
    let response = client
        .request(
            "session_messages_request",
            json!({ "sessionId": session, "limit": 5000 }),
        )
        .await;
    assert_eq!(response["data"]["errorKind"], "invalid_input", "{response}");
    assert!(response["data"]["error"]
        .as_str()
        .unwrap()
        .contains("between 1 and 1000"));

    // REST pages the same way: ?limit=&after=.
    let url = format!(
        "http://{}/v1/sessions/{session}/messages?limit=3&after=196",
        server.addr
    );
    let body: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
    assert_eq!(ids(&body), ["msg_0197", "msg_0198", "msg_0199"]);
    assert_eq!(body["hasMore"], false);
    let bad = reqwest::get(format!(
        "http://{}/v1/sessions/{session}/messages?limit=x",
        server.addr
    ))
    .await
    .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_a_large_history_is_bounded_and_others_are_served_while_it_is_read() {
    let (server, session) = history(CONTENT_BYTES).await;

    // The first page: bounded in bytes however large the history, and it says there is more.
    let mut client = WsClient::connect(&server.ws_url()).await;
    let (first, size) = page(&mut client, &session, json!({ "limit": 1000 })).await;
    assert_eq!(first["hasMore"], true);
    let n = ids(&first).len();
    assert!((1..MESSAGES).contains(&n), "{n} messages in one page");
    assert!(
        size <= MESSAGE_PAGE_MAX_BYTES + 2 * CONTENT_BYTES,
        "a page of {size} bytes"
    );

    let started = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    // The big read: every page of the whole ~200 MB history, back to back.
    let reader = {
        let (url, session) = (server.ws_url(), session.clone());
        let (started, done) = (started.clone(), done.clone());
        tokio::spawn(async move {
            let mut client = WsClient::connect(&url).await;
            let mut extra = json!({ "limit": 1000 });
            let mut read = 0;
            loop {
                started.fetch_add(1, Ordering::SeqCst);
                let (data, size) = page(&mut client, &session, extra.clone()).await;
                assert!(size <= MESSAGE_PAGE_MAX_BYTES + 2 * CONTENT_BYTES);
                read += ids(&data).len();
                if !data["hasMore"].as_bool().unwrap() {
                    break;
                }
                extra = json!({ "limit": 1000, "after": data["nextCursor"] });
            }
            done.store(true, Ordering::SeqCst);
            read
        })
    };
    let mut probe = WsClient::connect(&server.ws_url()).await;
    while started.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    // Trivial requests of another client complete while the read is still going.
    for _ in 0..5 {
        let r = probe.request("container_list_request", json!({})).await;
        assert!(r["data"]["error"].is_null(), "{r}");
    }
    assert!(
        !done.load(Ordering::SeqCst),
        "the probe finished only after the whole history was read"
    );
    assert_eq!(reader.await.unwrap(), MESSAGES);
}
