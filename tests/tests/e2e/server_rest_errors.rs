//! REST errors: authentication comes before the body is read, every error reply is JSON, and
//! none echoes a large input back.

use agentvm::MockDriver;
use agentvm_e2e::wire::{http, TestServer};
use agentvm_server::{AuthMode, ServerConfig};
use serde_json::Value;

async fn auth_server() -> TestServer {
    TestServer::start_with(
        ServerConfig {
            auth: AuthMode::Required,
            ..Default::default()
        },
        MockDriver::default(),
    )
    .await
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body:?}"))
}

#[tokio::test]
async fn unauthenticated_malformed_posts_get_401_not_400() {
    let s = auth_server().await;
    for (method, path) in [
        ("POST", "/v1/commands"),
        ("POST", "/v1/containers"),
        ("POST", "/v1/definitions"),
        ("POST", "/internal/runtime/heartbeat"),
    ] {
        let (st, body) = http(s.addr, method, path, &[], Some("{not json")).await;
        // A route that exists answers 401 (a path the table does not have is a JSON 404).
        if st == 404 {
            assert_eq!(json(&body)["kind"], "not_found", "{method} {path}");
            continue;
        }
        assert_eq!(st, 401, "{method} {path}: {body}");
        assert_eq!(json(&body)["kind"], "unauthorized", "{method} {path}");
    }
    // With a token, the same body is a 400.
    let (t, _) = agentvm::auth::create_token(&**s.vm.store(), None).unwrap();
    let auth = format!("Bearer {t}");
    let (st, body) = http(
        s.addr,
        "POST",
        "/v1/containers",
        &[("Authorization", &auth)],
        Some("{not json"),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert_eq!(json(&body)["kind"], "invalid_input");
}

#[tokio::test]
async fn every_error_reply_is_json_and_short() {
    let s = TestServer::start().await;
    // Unknown path, method not allowed, a path parameter too odd to extract.
    for (method, path, status) in [
        ("GET", "/nope", 404),
        ("GET", "/v1/nope", 404),
        ("DELETE", "/health", 405),
    ] {
        let (st, body) = http(s.addr, method, path, &[], None).await;
        assert_eq!(st, status, "{method} {path}: {body}");
        let v = json(&body);
        assert!(v["error"].is_string(), "{body}");
        assert!(v["kind"].is_string(), "{body}");
    }
    // A huge unknown field name is refused without being echoed whole.
    let huge = "f".repeat(200_000);
    let (st, body) = http(
        s.addr,
        "POST",
        "/v1/containers",
        &[],
        Some(&format!("{{\"containerId\":\"c\",\"{huge}\":1}}")),
    )
    .await;
    assert_eq!(st, 400, "{}", &body[..body.len().min(300)]);
    assert!(body.len() < 2048, "{} bytes", body.len());
    assert_eq!(json(&body)["kind"], "invalid_input");
    // A body over the limit (`max_frame_bytes`, shared with WebSocket messages): a 413, JSON.
    let limit = agentvm_server::ServerConfig::default().max_frame_bytes;
    let big = format!("{{\"containerId\":\"{}\"}}", "x".repeat(limit));
    let (st, body) = http(s.addr, "POST", "/v1/containers", &[], Some(&big)).await;
    assert_eq!(st, 413, "{body}");
    assert!(body.len() < 2048, "{} bytes", body.len());
    json(&body);
}
