//! The REST API as a table (core/server/src/rest/routes.rs): every documented route is served
//! and every served route documented, bodies are parsed strictly, internal fields never leak,
//! and a sandbox runs end to end over REST alone.

use agentvm::scheduler::{NodeRegistration, Scheduler};
use agentvm::AgentVm;
use agentvm_e2e::docker::{require_docker, ENDPOINT, TEST_IMAGE};
use agentvm_e2e::wire::{http, TestServer};
use agentvm_server::{ServerConfig, ServerManager};
use serde_json::{json, Value};

/// A router miss (no route, or no such method on it) rather than an answer of a route: axum
/// answers those with an empty body, while every route answers JSON (or bytes / NDJSON).
/// A path or method the router does not have: a JSON 404 `no route for …` or 405.
fn is_router_miss(status: u16, body: &str) -> bool {
    let error = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_default();
    (status == 404 && error.starts_with("no route for "))
        || (status == 405 && error == "Method Not Allowed")
}

#[tokio::test]
async fn every_documented_route_is_served_and_nothing_else_is() {
    let s = TestServer::start().await;
    let (st, body) = http(s.addr, "GET", "/v1/openapi.json", &[], None).await;
    assert_eq!(st, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let mut probed = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            if path == "/ws" {
                continue; // an upgrade, probed by every WebSocket test
            }
            assert!(
                op["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path} has a summary"
            );
            let concrete = path.replace("{id}", "x_probe").replace("{name}", "x_probe");
            let url = format!("{concrete}?path=probe.txt");
            let body = match method.as_str() {
                "post" | "put" | "patch" => Some("{}"),
                _ => None,
            };
            let (st, text) = http(s.addr, &method.to_uppercase(), &url, &[], body).await;
            assert!(
                !is_router_miss(st, &text),
                "{method} {path} is documented but not served ({st})"
            );
            probed += 1;
        }
    }
    assert!(probed > 60, "only {probed} routes documented");
    // The probe can tell: what is not in the table is a router miss.
    for (method, path) in [
        ("GET", "/v1/nope"),
        ("DELETE", "/v1/definitions"),
        ("PUT", "/v1/images/x"),
        ("GET", "/internal/runtime/heartbeat"),
    ] {
        let (st, text) = http(s.addr, method, path, &[], None).await;
        assert!(is_router_miss(st, &text), "{method} {path}: {st} {text}");
    }
}

#[tokio::test]
async fn bodies_are_strict_and_internal_fields_stay_internal() {
    let s = TestServer::start().await;
    let (st, body) = http(
        s.addr,
        "POST",
        "/v1/containers",
        &[],
        Some(r#"{"containerId":"c","colour":"red"}"#),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    let e: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(e["kind"], "invalid_input");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"),
        "{e}"
    );
    // Nested unknown fields are named with their path.
    let (st, body) = http(
        s.addr,
        "POST",
        "/v1/containers/c/images",
        &[],
        Some(r#"{"config":{"name":"x","temprature":1}}"#),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("config.temprature"), "{body}");
    // A body that contradicts the URL is refused.
    let (st, body) = http(
        s.addr,
        "POST",
        "/v1/images/img_a/messages",
        &[],
        Some(r#"{"content":"hi","imageId":"img_b"}"#),
    )
    .await;
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("imageId"), "{body}");
    // Routes without a body refuse one.
    let (st, _) = http(s.addr, "GET", "/v1/containers", &[], Some(r#"{"x":1}"#)).await;
    assert_eq!(st, 400);

    // `__subscriptions` is for Channel clients only.
    let (st, body) = http(
        s.addr,
        "POST",
        "/v1/containers/c/images",
        &[],
        Some(r#"{"config":{"name":"x"}}"#),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    assert!(created["record"]["imageId"].is_string(), "{created}");
    assert!(created.get("__subscriptions").is_none(), "{created}");
    let image = created["record"]["imageId"].as_str().unwrap();
    let (_, body) = http(s.addr, "GET", "/v1/containers/c/images", &[], None).await;
    assert!(!body.contains("__subscriptions"), "{body}");
    let (_, body) = http(s.addr, "GET", &format!("/v1/images/{image}"), &[], None).await;
    assert!(!body.contains("__subscriptions"), "{body}");

    // Every refusal above was counted once, as `invalid`, by the one dispatcher's metrics.
    let (_, metrics) = http(s.addr, "GET", "/metrics", &[], None).await;
    assert!(
        metrics.contains("agentvm_requests_total{type=\"container_create\",outcome=\"invalid\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentvm_requests_total{type=\"image_create\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_end_to_end_over_rest_only() {
    if !require_docker().await {
        return;
    }
    let vm = AgentVm::builder()
        .scheduler(Scheduler::builder().node(NodeRegistration::new("local", ENDPOINT)))
        .open()
        .await
        .unwrap();
    let server = ServerManager::new(vm, ServerConfig::default());
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let base = format!("http://{addr}");
    let c = reqwest::Client::new();

    let r = c
        .post(format!("{base}/v1/templates"))
        .json(
            &json!({"id": "rest-box", "name": "rest", "image": TEST_IMAGE,
                      "defaultCpuCores": 0.5, "defaultMemoryMb": 128, "workdir": "/workspace"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let r = c
        .post(format!("{base}/v1/sandboxes"))
        .json(&json!({"templateId": "rest-box", "owner": "tenant-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let sandbox: Value = r.json().await.unwrap();
    assert_eq!(sandbox["status"], "running", "{sandbox}");
    let id = sandbox["id"].as_str().unwrap().to_string();

    // Exec: output lines as they come, the execution last, its id the one we chose.
    let r = c
        .post(format!("{base}/v1/sandboxes/{id}/exec"))
        .json(
            &json!({"command": ["/bin/sh", "-c", "echo one; echo two >&2; echo three"],
                      "executionId": "exec_rest_1"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = r
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let stdout: String = lines
        .iter()
        .filter(|l| l["stream"] == "stdout")
        .map(|l| l["data"].as_str().unwrap())
        .collect();
    assert_eq!(stdout, "one\nthree\n");
    assert!(lines.contains(&json!({"stream": "stderr", "data": "two\n"})));
    let last = lines.last().unwrap();
    assert_eq!(last["id"], "exec_rest_1", "{last}");
    assert_eq!(last["exitCode"], 0);
    assert_eq!(last["stdout"], "one\nthree\n");
    // The id is taken now.
    let r = c
        .post(format!("{base}/v1/sandboxes/{id}/exec"))
        .json(&json!({"command": ["true"], "executionId": "exec_rest_1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // An unknown sandbox is a 404 before anything streams.
    let r = c
        .post(format!("{base}/v1/sandboxes/sbx_nope/exec"))
        .json(&json!({"command": ["true"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Files: upload raw bytes, read them back, list, delete.
    let bytes: Vec<u8> = (0u8..=255).collect();
    let r = c
        .put(format!("{base}/v1/sandboxes/{id}/files?path=data.bin"))
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{:?}", r.text().await);
    let r = c
        .get(format!("{base}/v1/sandboxes/{id}/files?path=data.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.unwrap().to_vec(), bytes);
    let listed: Value = c
        .get(format!(
            "{base}/v1/sandboxes/{id}/files/list?path=/workspace"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "data.bin" && f["size"] == 256),
        "{listed}"
    );
    let r = c
        .delete(format!("{base}/v1/sandboxes/{id}/files?path=data.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .get(format!("{base}/v1/sandboxes/{id}/files?path=data.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // Executions, then the sandbox goes.
    let execs: Value = c
        .get(format!("{base}/v1/sandboxes/{id}/executions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        execs
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["id"] == "exec_rest_1"),
        "{execs}"
    );
    let r = c
        .get(format!("{base}/v1/executions/exec_rest_1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .delete(format!("{base}/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = c
        .get(format!("{base}/v1/sandboxes/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let e: Value = r.json().await.unwrap();
    assert_eq!(
        e,
        json!({"error": format!("Sandbox not found: {id}"), "kind": "not_found"})
    );
    server.close().await;
}
