//! A client that acks every frame (as the stock AgentX client does): the server skips its acks
//! without parsing them and writes events in batches, and must still answer a request sent
//! mid-stream promptly and deliver every frame in order.

use agentvm_e2e::wire::{TestServer, WsClient};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_from_an_acking_client_is_answered_during_a_stream() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    assert!(c.ack, "the test client acks every wrapped frame");
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
