//! agentvm as an MCP server, through the binary: `/mcp` over a real loopback server (tokens and
//! scopes, malformed JSON-RPC, unknown tools, missing arguments, oversized bodies) and
//! `mcp --stdio` (embedded, refused on a held data dir, and against a running server).
#![allow(clippy::unwrap_used)]

use crate::common::{serve, BIN};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `token create` for `containers` (`None`: all), while a server may hold the data dir.
fn token(dir: &Path, containers: Option<&str>) -> String {
    let mut command = Command::new(BIN);
    command.args(["token", "create", "--data-dir"]).arg(dir);
    match containers {
        Some(c) => command.args(["--containers", c]),
        None => command.arg("--all"),
    };
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One JSON-RPC POST to `/mcp`: the status and the body (JSON when it parses).
async fn post(http: &str, token: Option<&str>, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{http}/mcp"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

/// A `tools/call` over `/mcp`: the JSON-RPC answer.
async fn call(http: &str, token: &str, name: &str, arguments: Value) -> Value {
    let body = json!({
        "jsonrpc": "2.0", "id": 7, "method": "tools/call",
        "params": { "name": name, "arguments": arguments }
    });
    let (status, answer) = post(http, Some(token), body.to_string()).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// A tool result that succeeded: its structured content.
fn ok(answer: &Value) -> &Value {
    assert_eq!(answer["result"]["isError"], json!(false), "{answer}");
    &answer["result"]["structuredContent"]
}

/// A tool result that failed: its error kind.
fn failed(answer: &Value) -> String {
    assert_eq!(answer["result"]["isError"], json!(true), "{answer}");
    let kind = answer["result"]["structuredContent"]["kind"]
        .as_str()
        .unwrap()
        .to_string();
    let text = answer["result"]["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with(&format!("{kind}: ")), "{text}");
    kind
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_http_is_authorised_by_token_and_scope() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["--require-auth"]);
    let all = token(dir.path(), None);
    let only_a = token(dir.path(), Some("team-a"));
    let http = server.http.as_str();

    // No token, a wrong one: refused before MCP sees the request.
    let init = json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": { "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": { "name": "test", "version": "1" } }
    })
    .to_string();
    let (status, body) = post(http, None, init.clone()).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["kind"], "unauthorized");
    let (status, _) = post(http, Some("avm_not_a_token"), init.clone()).await;
    assert_eq!(status, 401);

    let (status, body) = post(http, Some(&only_a), init).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["serverInfo"]["name"], "agentvm");
    let list = json!({ "jsonrpc": "2.0", "id": 2, "method": "tools/list" }).to_string();
    let (status, body) = post(http, Some(&only_a), list).await;
    assert_eq!(status, 200, "{body}");
    let names: Vec<&str> = body["result"]["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for expected in [
        "container_create",
        "image_create",
        "session_messages",
        "agent_ask",
        "sandbox_exec",
        "sandbox_file_write",
    ] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }

    // Container B exists, with an image, made by the all-containers token.
    let b = call(
        http,
        &all,
        "image_create",
        json!({ "containerId": "team-b", "config": {} }),
    )
    .await;
    let b_image = ok(&b)["record"]["imageId"].as_str().unwrap().to_string();
    let b_session = ok(&b)["record"]["sessionId"].as_str().unwrap().to_string();

    // Token A works in A...
    let a = call(
        http,
        &only_a,
        "image_create",
        json!({ "containerId": "team-a", "config": {} }),
    )
    .await;
    let a_image = ok(&a)["record"]["imageId"].as_str().unwrap().to_string();
    let asked = call(
        http,
        &only_a,
        "agent_ask",
        json!({ "imageId": a_image, "content": "hello", "timeoutMs": 20000 }),
    )
    .await;
    assert_eq!(ok(&asked)["reply"], "Hello from mock!");
    assert_eq!(asked["result"]["content"][0]["text"], "Hello from mock!");

    // ...and B does not exist for it, through any tool.
    assert_eq!(
        failed(
            &call(
                http,
                &only_a,
                "container_create",
                json!({ "containerId": "team-b" })
            )
            .await
        ),
        "unauthorized"
    );
    let got = call(http, &only_a, "image_get", json!({ "imageId": b_image })).await;
    assert!(ok(&got)["record"].is_null(), "{got}");
    let listed = call(http, &only_a, "image_list", json!({})).await;
    let text = listed.to_string();
    assert!(
        !text.contains(&b_image) && text.contains(&a_image),
        "{text}"
    );
    assert_eq!(
        failed(
            &call(
                http,
                &only_a,
                "agent_ask",
                json!({ "imageId": b_image, "content": "hi" })
            )
            .await
        ),
        "not_found"
    );
    let kind = failed(
        &call(
            http,
            &only_a,
            "agent_ask",
            json!({ "sessionId": b_session, "content": "hi" }),
        )
        .await,
    );
    assert!(kind == "not_found" || kind == "unauthorized", "{kind}");
    assert!(
        failed(
            &call(
                http,
                &only_a,
                "session_messages",
                json!({ "sessionId": b_session })
            )
            .await
        ) == "not_found"
    );
    // Nothing reached B's session.
    let history = call(
        http,
        &all,
        "session_messages",
        json!({ "sessionId": b_session }),
    )
    .await;
    assert_eq!(ok(&history)["messages"], json!([]), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_over_http_answers_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &["--require-auth"]);
    let t = token(dir.path(), None);
    let http = server.http.as_str();

    // Not JSON at all, and JSON that is not JSON-RPC.
    let (status, body) = post(http, Some(&t), "{not json").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(http, Some(&t), r#"{"hello":"world"}"#).await;
    assert_eq!(status, 400, "{body}");
    // An unknown method and an unknown tool: JSON-RPC errors.
    let (_, body) = post(
        http,
        Some(&t),
        json!({ "jsonrpc": "2.0", "id": 3, "method": "tools/frobnicate" }).to_string(),
    )
    .await;
    assert_eq!(body["error"]["code"], -32601, "{body}");
    let (_, body) = post(
        http,
        Some(&t),
        json!({ "jsonrpc": "2.0", "id": 4, "method": "tools/call",
                "params": { "name": "no_such_tool", "arguments": {} } })
        .to_string(),
    )
    .await;
    assert_eq!(body["error"]["code"], -32602, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("no_such_tool"));
    assert_eq!(body["error"]["data"]["kind"], "not_found");
    // Missing and unknown arguments: tool errors naming the field, for the model to fix.
    let answer = call(http, &t, "sandbox_exec", json!({})).await;
    assert_eq!(failed(&answer), "invalid_input");
    assert!(answer.to_string().contains("sandboxId"), "{answer}");
    let answer = call(
        http,
        &t,
        "container_create",
        json!({ "containerId": "c", "colour": 1 }),
    )
    .await;
    assert_eq!(failed(&answer), "invalid_input");
    assert!(answer.to_string().contains("colour"), "{answer}");
    let answer = call(http, &t, "agent_ask", json!({ "content": "hi" })).await;
    assert_eq!(failed(&answer), "invalid_input");
    let answer = call(
        http,
        &t,
        "agent_ask",
        json!({ "imageId": "img_x", "content": "hi", "timeoutMs": 999999999 }),
    )
    .await;
    assert_eq!(failed(&answer), "invalid_input");
    // A failed turn is a tool error with the turn's kind, not an empty reply.
    let image = call(
        http,
        &t,
        "image_create",
        json!({ "containerId": "c", "config": { "model": "mock:error" } }),
    )
    .await;
    let image_id = ok(&image)["record"]["imageId"]
        .as_str()
        .unwrap()
        .to_string();
    let answer = call(
        http,
        &t,
        "agent_ask",
        json!({ "imageId": image_id, "content": "hi" }),
    )
    .await;
    failed(&answer);
    assert!(answer.to_string().contains("the turn failed"), "{answer}");

    // A body over the limit (max_frame_bytes, 4 MiB by default) is refused whole.
    let big = format!(
        r#"{{"jsonrpc":"2.0","id":5,"method":"tools/call","params":{{"name":"container_create","arguments":{{"containerId":"{}"}}}}}}"#,
        "x".repeat(5 * 1024 * 1024)
    );
    let (status, _) = post(http, Some(&t), big).await;
    assert_eq!(status, 413);
    // Stateless: no session to open, resume or delete.
    let get = reqwest::Client::new()
        .get(format!("{http}/mcp"))
        .bearer_auth(&t)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 405);
    // The server still serves.
    let answer = call(http, &t, "container_list", json!({})).await;
    ok(&answer);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_without_auth_serves_local_clients_but_no_foreign_web_page() {
    let dir = tempfile::tempdir().unwrap();
    // Loopback without --require-auth: authentication is off.
    let server = serve(dir.path(), &[]);
    let list = json!({ "jsonrpc": "2.0", "id": 1, "method": "tools/list" }).to_string();
    let (status, body) = post(&server.http, None, list.clone()).await;
    assert_eq!(status, 200, "{body}");
    let with_origin = |origin: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/mcp", server.http))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("origin", origin)
            .body(list.clone())
            .send()
    };
    let local = with_origin("http://localhost:5173").await.unwrap();
    assert_eq!(local.status().as_u16(), 200);
    let foreign = with_origin("http://rebound.example").await.unwrap();
    assert_eq!(foreign.status().as_u16(), 401);
    let body: Value = foreign.json().await.unwrap();
    assert_eq!(body["kind"], "unauthorized");
    assert!(
        body["error"].as_str().unwrap().contains("rebound.example"),
        "{body}"
    );
}

/// `mcp --stdio` with `args`: the child and a line-wise JSON-RPC exchange.
struct StdioMcp {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl StdioMcp {
    fn start(args: &[&str], env: &[(&str, &str)]) -> StdioMcp {
        let mut command = Command::new(BIN);
        command
            .args(["mcp", "--stdio"])
            .args(args)
            .env_remove("LLM_PROVIDER")
            .env("AGENTVM_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut s = StdioMcp { child, lines };
        let init = s.request(
            "initialize",
            json!({ "protocolVersion": "2025-06-18", "capabilities": {},
                    "clientInfo": { "name": "test", "version": "1" } }),
        );
        assert_eq!(init["result"]["serverInfo"]["name"], "agentvm", "{init}");
        s.send(json!({ "jsonrpc": "2.0", "method": "notifications/initialized" }));
        s
    }

    fn send(&mut self, message: Value) {
        let stdin = self.child.stdin.as_mut().unwrap();
        writeln!(stdin, "{message}").unwrap();
        stdin.flush().unwrap();
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        self.send(json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }));
        loop {
            let line = self.lines.next().expect("an answer").unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            if v.get("id").is_some() {
                return v;
            }
        }
    }

    fn call(&mut self, name: &str, arguments: Value) -> Value {
        self.request(
            "tools/call",
            json!({ "name": name, "arguments": arguments }),
        )
    }

    /// Closes stdin; the process ends by itself.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = crate::common::wait_exit(&mut self.child, std::time::Duration::from_secs(20));
        assert!(status.success(), "{status}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_stdio_embedded_and_against_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();

    // Embedded: the data dir opened in this process, every container in scope.
    let mut mcp = StdioMcp::start(&["--data-dir", data_dir], &[("LLM_PROVIDER", "mock")]);
    let image = mcp.call(
        "image_create",
        json!({ "containerId": "desk", "config": {} }),
    );
    let image_id = ok(&image)["record"]["imageId"]
        .as_str()
        .unwrap()
        .to_string();
    let asked = mcp.call("agent_ask", json!({ "imageId": image_id, "content": "hi" }));
    assert_eq!(ok(&asked)["reply"], "Hello from mock!");
    mcp.finish();

    // While a server holds the data dir, the embedded mode refuses, saying what to do.
    let server = serve(dir.path(), &["--require-auth"]);
    let out = Command::new(BIN)
        .args(["mcp", "--stdio", "--data-dir", data_dir])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--url") && stderr.contains(data_dir),
        "{stderr}"
    );

    // Against the running server, with a scoped token: its scope applies.
    let scoped = token(dir.path(), Some("desk"));
    let mut mcp = StdioMcp::start(&["--url", &server.http, "--token", &scoped], &[]);
    let history = mcp.call("image_messages", json!({ "imageId": image_id }));
    assert_eq!(
        ok(&history)["messages"].as_array().unwrap().len(),
        2,
        "{history}"
    );
    let asked = mcp.call(
        "agent_ask",
        json!({ "imageId": image_id, "content": "again" }),
    );
    assert_eq!(ok(&asked)["reply"], "Hello from mock!");
    assert_eq!(
        failed(&mcp.call("container_create", json!({ "containerId": "other" }))),
        "unauthorized"
    );
    mcp.finish();
}
