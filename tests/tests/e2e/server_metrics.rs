//! `/metrics` labels come from fixed sets: a client-chosen request type can neither forge a
//! line nor grow the page.

use agentvm_e2e::wire::{http, TestServer, WsClient};
use serde_json::json;
use std::time::Duration;

/// The sample lines (not `#` comments) of `/metrics` for `name`, exactly.
fn samples<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .collect()
}

#[tokio::test]
async fn a_crafted_request_type_cannot_forge_a_metrics_line() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let forged = "x\"} 1\nagentvm_agents_running 424242\nagentvm_build_info{version=\"evil\"} 1\n# y_request";
    c.send_text(&json!({"type": forged, "data": {"requestId": "r1"}}).to_string())
        .await;
    c.send_text(&json!({"type": "bogus_request", "data": {"requestId": "r2"}}).to_string())
        .await;
    // Both refused (each a system_error and an error response).
    for _ in 0..4 {
        c.read_frame_within(Duration::from_secs(5))
            .await
            .expect("a refusal")
            .expect("open");
    }
    let (st, text) = http(s.addr, "GET", "/metrics", &[], None).await;
    assert_eq!(st, 200);
    assert!(!text.contains("424242"), "{text}");
    assert!(!text.contains("evil"), "{text}");
    assert_eq!(
        samples(&text, "agentvm_agents_running"),
        ["agentvm_agents_running 0"]
    );
    assert_eq!(
        samples(&text, "agentvm_build_info"),
        [format!(
            "agentvm_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )]
    );
    assert!(
        text.contains("agentvm_requests_total{type=\"unknown\",outcome=\"invalid\"} 2"),
        "{text}"
    );
    // Every sample line is `name{labels} value` or `name value` with a known prefix.
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        assert!(line.starts_with("agentvm_"), "{line:?}");
        let value = line.rsplit(' ').next().unwrap_or_default();
        assert!(value.parse::<f64>().is_ok(), "{line:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_unique_megabyte_type_names_leave_metrics_small() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let (_, before) = http(s.addr, "GET", "/metrics", &[], None).await;
    for i in 0..200 {
        let name = format!("{i:03}{}_request", "t".repeat(1024 * 1024));
        c.send_text(&json!({"type": name, "data": {"requestId": format!("r{i}")}}).to_string())
            .await;
        // Read the refusals as they come, so neither side waits on the other.
        c.clear_backlog();
        while let Ok(Some(_)) = c.read_frame_within(Duration::from_millis(1)).await {}
    }
    let r = c.request("container_list_request", json!({})).await;
    assert!(r["data"]["error"].is_null(), "{r}");
    let (st, after) = http(s.addr, "GET", "/metrics", &[], None).await;
    assert_eq!(st, 200);
    assert!(
        after.len() < before.len() + 1024,
        "/metrics grew from {} to {} bytes",
        before.len(),
        after.len()
    );
    assert!(
        after.contains("agentvm_requests_total{type=\"unknown\",outcome=\"invalid\"} 200"),
        "{after}"
    );
}
