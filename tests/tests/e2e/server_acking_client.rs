//! A client that acks every frame (as the stock AgentX client does): the server skips its acks
//! without parsing them and writes events in batches, and must still answer a request sent
//! mid-stream promptly and deliver every frame in order.

use agentvm_e2e::wire::{TestServer, WsClient};
use serde_json::json;
use std::time::{Duration, Instant};

/// An image whose replies are the mock's `slow-stream` (50 deltas, one every 20 ms).
async fn slow_stream_image(c: &mut WsClient) -> String {
    let r = c
        .request(
            "image_create_request",
            json!({"containerId": "c", "config": {"model": "slow-stream"}}),
        )
        .await;
    let image = r["data"]["record"]["imageId"]
        .as_str()
        .expect("an image id")
        .to_string();
    image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_an_acking_client_is_answered_during_a_stream() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    assert!(c.ack, "the test client acks every wrapped frame");
    let image = slow_stream_image(&mut c).await;
    let send = c
        .send_request(
            "message_send_request",
            json!({"imageId": image, "content": "hi"}),
        )
        .await;
    // A few deltas in (each acked), ask something else.
    let mut deltas = Vec::new();
    while deltas.len() < 5 {
        let f = c.next_frame().await;
        if f.type_name() == "text_delta" {
            deltas.push(f.payload["data"]["text"].as_str().unwrap_or("").to_string());
        }
    }
    let asked = Instant::now();
    let id = c
        .send_request("image_get_request", json!({"imageId": image}))
        .await;
    let mut answered = None;
    let mut ended = false;
    while !(ended && answered.is_some()) {
        let f = c.read_frame().await.expect("the connection is open");
        match f.type_name() {
            "image_get_response" if f.payload["data"]["requestId"] == id => {
                assert!(
                    !ended,
                    "the request was answered only after the stream ended"
                );
                answered = Some(asked.elapsed());
            }
            "text_delta" => {
                deltas.push(f.payload["data"]["text"].as_str().unwrap_or("").to_string())
            }
            "conversation_end" => ended = true,
            "message_send_response" => {
                assert_eq!(f.payload["data"]["requestId"], send.as_str());
            }
            _ => {}
        }
    }
    // The slow stream sends a delta every 20 ms: the answer came between two of them, not
    // after the whole reply (a second).
    let waited = answered.expect("answered");
    assert!(
        waited < Duration::from_millis(500),
        "answered after {waited:?}"
    );
    let expected: Vec<String> = (0..50).map(|i| format!("slow{i} ")).collect();
    assert_eq!(deltas, expected, "every delta, in order");
}

/// Streams the 50-delta `slow-stream` reply (a delta every 20 ms) to an acking client on a
/// server with `event_coalesce` set to `window`, asking for the image a few deltas in. Returns
/// the deltas in the order they came and the server's `agentvm_event_writes_total`.
async fn stream_with_coalescing(window: Duration) -> (Vec<String>, u64) {
    let config = agentvm_server::ServerConfig {
        event_coalesce: window,
        ..Default::default()
    };
    let s = TestServer::start_with(config, agentvm::llm::MockDriver::default()).await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let image = slow_stream_image(&mut c).await;
    c.send_request(
        "message_send_request",
        json!({"imageId": image, "content": "hi"}),
    )
    .await;
    let mut deltas = Vec::new();
    let mut asked = None;
    let mut answered = false;
    loop {
        let f = c.next_frame().await;
        match f.type_name() {
            "text_delta" => {
                deltas.push(f.payload["data"]["text"].as_str().unwrap_or("").to_string());
                if deltas.len() == 5 && asked.is_none() {
                    // Deltas are being held for the rest of a window now: the answer comes
                    // after them, not after the window or the stream.
                    asked = Some(
                        c.send_request("image_get_request", json!({"imageId": image}))
                            .await,
                    );
                }
            }
            "image_get_response" => {
                assert_eq!(
                    f.payload["data"]["requestId"],
                    asked.as_deref().unwrap_or("")
                );
                assert_eq!(f.payload["data"]["record"]["imageId"], image.as_str());
                answered = true;
            }
            "conversation_end" => break,
            _ => {}
        }
    }
    assert!(
        answered,
        "the request sent mid-stream was answered before its end"
    );
    let (status, metrics) = agentvm_e2e::wire::http(s.addr, "GET", "/metrics", &[], None).await;
    assert_eq!(status, 200, "{metrics}");
    let counter = |name: &str| -> u64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing from\n{metrics}"))
    };
    let writes = counter("agentvm_event_writes_total");
    assert!(
        counter("agentvm_events_sent_total") >= 50,
        "every delta counted: {metrics}"
    );
    (deltas, writes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_stream_shares_writes_and_loses_or_reorders_nothing() {
    let expected: Vec<String> = (0..50).map(|i| format!("slow{i} ")).collect();
    // Off: every delta (20 ms apart) is its own write.
    let (deltas, writes_off) = stream_with_coalescing(Duration::ZERO).await;
    assert_eq!(
        deltas, expected,
        "every delta, in order, without coalescing"
    );
    assert!(
        writes_off >= 45,
        "{writes_off} writes for 50 deltas 20 ms apart"
    );
    // A 200 ms window: the first event after the quiet goes at once, the rest wait out the
    // window the previous write opened (about ten deltas each; the 1 s stream needs ~6).
    let (deltas, writes_on) = stream_with_coalescing(Duration::from_millis(200)).await;
    assert_eq!(deltas, expected, "every delta, in order, with coalescing");
    assert!(
        writes_on <= 15,
        "{writes_on} writes for 50 deltas in 200 ms windows (without: {writes_off})"
    );
}
