//! Interactive terminals in sandboxes (docs/sandboxes.md, *Terminal*) on real Docker: an `sh`
//! session over the REST WebSocket route (the token as a bearer header or in `?token=`) and
//! over the Channel commands — its prompt, a command, a resize seen by `stty size`, its exit
//! code, a paused sandbox resumed by input — a token of another container refused, the limit
//! per sandbox, and bad input refused with clear errors.

use agentvm::scheduler::{NodeRegistration, Scheduler};
use agentvm::*;
use agentvm_e2e::docker::{require_docker, ENDPOINT};
use agentvm_e2e::wire::WsClient;
use agentvm_server::{AuthMode, ServerConfig, ServerManager};
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A server with authentication on, the local Docker daemon as its node, the busybox
/// template, and tokens for two tenants.
struct Served {
    vm: AgentVm,
    addr: SocketAddr,
    tenant_a: String,
    tenant_b: String,
    _server: ServerManager,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start() -> Served {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut node = NodeRegistration::new("local", ENDPOINT);
        node.max_containers = 20;
        let vm = AgentVm::builder()
            .data_dir(dir.path())
            .scheduler(Scheduler::builder().node(node))
            .open()
            .await
            .expect("open a runtime with a scheduler");
        vm.scheduler()
            .expect("a scheduler")
            .create_template("busybox", agentvm_e2e::docker::busybox_spec())
            .await
            .expect("the busybox template");
        let server = ServerManager::new(
            vm.clone(),
            ServerConfig {
                auth: AuthMode::Required,
                ..Default::default()
            },
        );
        let addr = server.listen("127.0.0.1:0").await.expect("listen");
        let (tenant_a, _) =
            auth::create_token(&**vm.store(), Some(vec!["tenant-a".into()])).unwrap();
        let (tenant_b, _) =
            auth::create_token(&**vm.store(), Some(vec!["tenant-b".into()])).unwrap();
        Served {
            vm,
            addr,
            tenant_a,
            tenant_b,
            _server: server,
            _dir: dir,
        }
    }

    /// A Channel client with `token`.
    async fn channel(&self, token: &str) -> WsClient {
        WsClient::try_connect(&format!("ws://{}/ws", self.addr), Some(token))
            .await
            .expect("connect to /ws")
    }

    /// A sandbox owned by tenant A.
    async fn sandbox(&self, c: &mut WsClient) -> String {
        let r = c
            .request(
                "sandbox_create_request",
                json!({"templateId": "busybox", "owner": "tenant-a"}),
            )
            .await;
        ok(r)["sandbox"]["id"].as_str().unwrap().to_string()
    }

    async fn terminate(&self, sandbox_id: &str) {
        self.vm
            .scheduler()
            .unwrap()
            .terminate_sandbox(sandbox_id)
            .await
            .expect("terminate the sandbox");
    }

    /// Upgrades `GET /v1/sandboxes/{id}/terminal?{query}` with `token` as a bearer header (none
    /// when empty); `Err` is the refused status and body.
    async fn terminal(
        &self,
        sandbox_id: &str,
        query: &str,
        token: &str,
    ) -> Result<TerminalSocket, (u16, String)> {
        let url = format!(
            "ws://{}/v1/sandboxes/{sandbox_id}/terminal?{query}",
            self.addr
        );
        let mut req = url.into_client_request().unwrap();
        if !token.is_empty() {
            req.headers_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((ws, _)) => Ok(TerminalSocket {
                ws,
                screen: String::new(),
            }),
            Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
                let body = r
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).to_string())
                    .unwrap_or_default();
                Err((r.status().as_u16(), body))
            }
            Err(e) => panic!("upgrading the terminal route: {e}"),
        }
    }
}

fn ok(r: Value) -> Value {
    assert!(r["data"]["error"].is_null(), "{r}");
    r["data"].clone()
}

fn err(r: &Value, kind: &str) -> String {
    assert_eq!(r["data"]["errorKind"], kind, "{r}");
    r["data"]["error"].as_str().unwrap().to_string()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The client end of the terminal route: everything the terminal printed so far.
struct TerminalSocket {
    ws: Ws,
    screen: String,
}

impl TerminalSocket {
    async fn type_text(&mut self, text: &str) {
        self.ws
            .send(Message::Binary(text.as_bytes().to_vec().into()))
            .await
            .unwrap();
    }

    /// Reads output until the screen, after `from`, contains `needle` (a control frame
    /// meanwhile fails the test).
    async fn until(&mut self, from: usize, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.screen[from..].contains(needle) {
            let left = deadline.saturating_duration_since(Instant::now());
            let msg = tokio::time::timeout(left, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no {needle:?} within 20 s; screen: {:?}", self.screen))
                .expect("the socket is open")
                .expect("a frame");
            match msg {
                Message::Binary(b) => self.screen.push_str(&String::from_utf8_lossy(&b)),
                Message::Text(t) => {
                    panic!("unexpected control frame {t} (screen {:?})", self.screen)
                }
                other => panic!("unexpected {other:?} (screen {:?})", self.screen),
            }
        }
    }

    /// Reads until the next text frame (output before it is kept).
    async fn next_control(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(20), self.ws.next())
                .await
                .expect("a frame within 20 s")
                .expect("the socket is open")
                .expect("a frame");
            match msg {
                Message::Binary(b) => self.screen.push_str(&String::from_utf8_lossy(&b)),
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                other => panic!("unexpected {other:?} (screen {:?})", self.screen),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_over_the_terminal_websocket_route() {
    if !require_docker().await {
        return;
    }
    let s = Served::start().await;
    let mut c = s.channel(&s.tenant_a).await;
    let id = s.sandbox(&mut c).await;

    let mut t = s
        .terminal(&id, "cols=80&rows=24", &s.tenant_a)
        .await
        .expect("the terminal opens");
    t.until(0, "$ ").await;
    let mark = t.screen.len();
    t.type_text("echo $((6*7))\n").await;
    t.until(mark, "42\r\n").await;
    assert!(
        t.screen[mark..].contains("echo $((6*7))"),
        "input is echoed: {:?}",
        t.screen
    );

    // The initial size, then a resize as a text control frame.
    let mark = t.screen.len();
    t.type_text("stty size\n").await;
    t.until(mark, "24 80\r\n").await;
    t.ws.send(Message::Text(
        json!({"type": "resize", "cols": 100, "rows": 40})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let mark = t.screen.len();
    // Text frames that are not control frames are input too.
    t.ws.send(Message::Text("stty size\n".into()))
        .await
        .unwrap();
    t.until(mark, "40 100\r\n").await;

    // A bad control frame is an error frame; the terminal goes on.
    t.ws.send(Message::Text(
        json!({"type": "resize", "cols": 0, "rows": 40})
            .to_string()
            .into(),
    ))
    .await
    .unwrap();
    let e = t.next_control().await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["kind"], "invalid_input", "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("cols must be 1 to 1000, not 0"),
        "{e}"
    );

    // The exit code, then a normal close.
    t.type_text("exit 3\n").await;
    let exit = t.next_control().await;
    assert_eq!(exit, json!({"type": "exit", "exitCode": 3}));
    match tokio::time::timeout(Duration::from_secs(10), t.ws.next()).await {
        Ok(Some(Ok(Message::Close(Some(f))))) => assert_eq!(u16::from(f.code), 1000),
        other => panic!("expected a close frame, got {other:?}"),
    }

    // Another container's token does not see the sandbox; no token is a 401; bad sizes 400.
    let (status, body) = s
        .terminal(&id, "", &s.tenant_b)
        .await
        .err()
        .expect("tenant B is refused");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains(&format!("Sandbox not found: {id}")), "{body}");
    let (status, _) = s.terminal(&id, "", "avm_not_a_token").await.err().unwrap();
    assert_eq!(status, 401);
    let (status, body) = s.terminal(&id, "cols=0", &s.tenant_a).await.err().unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("cols must be 1 to 1000, not 0"), "{body}");
    let (status, body) = s
        .terminal(&id, "rows=lots", &s.tenant_a)
        .await
        .err()
        .unwrap();
    assert_eq!(status, 400, "{body}");

    // A browser cannot set headers on a WebSocket (the web console): `?token=` is checked the
    // same way, and scoped the same way.
    let mut t = s
        .terminal(&id, &format!("token={}", s.tenant_a), "")
        .await
        .expect("?token= opens the terminal");
    t.until(0, "$ ").await;
    t.type_text("exit 4\n").await;
    assert_eq!(
        t.next_control().await,
        json!({"type": "exit", "exitCode": 4})
    );
    let (status, body) = s
        .terminal(&id, &format!("token={}", s.tenant_b), "")
        .await
        .err()
        .expect("tenant B's ?token= is refused");
    assert_eq!(status, 404, "{body}");
    let (status, _) = s.terminal(&id, "", "").await.err().unwrap();
    assert_eq!(status, 401, "no token at all");

    // A client that goes away closes its terminal: the sandbox has none open after it.
    let mut t = s.terminal(&id, "", &s.tenant_a).await.unwrap();
    t.until(0, "$ ").await;
    let scheduler = s.vm.scheduler().unwrap().clone();
    assert_eq!(scheduler.list_terminals(&id).len(), 1);
    drop(t);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !scheduler.list_terminals(&id).is_empty() {
        assert!(
            Instant::now() < deadline,
            "the terminal outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.terminate(&id).await;
}

/// Output of terminal `tid` read from the Channel (backlog first) until it contains `needle`
/// after `from`; `screen` keeps everything.
async fn channel_until(
    c: &mut WsClient,
    tid: &str,
    screen: &mut String,
    from: usize,
    needle: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !screen[from..].contains(needle) {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} within 20 s; screen: {screen:?}"
        );
        let f = c.next_frame().await;
        if f.type_name() == "sandbox_terminal_output" && f.payload["data"]["terminalId"] == tid {
            screen.push_str(f.payload["data"]["data"].as_str().unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shell_over_the_terminal_commands() {
    if !require_docker().await {
        return;
    }
    let s = Served::start().await;
    let mut c = s.channel(&s.tenant_a).await;
    let id = s.sandbox(&mut c).await;

    let opened = ok(c
        .request(
            "sandbox_terminal_open_request",
            json!({"sandboxId": id, "cols": 80, "rows": 24}),
        )
        .await);
    let tid = opened["terminal"]["id"].as_str().unwrap().to_string();
    assert!(tid.starts_with("term_"), "{opened}");
    assert_eq!(opened["terminal"]["command"], json!(["/bin/sh"]));
    let mut screen = String::new();
    channel_until(&mut c, &tid, &mut screen, 0, "$ ").await;

    let mark = screen.len();
    let r = ok(c
        .request(
            "sandbox_terminal_input_request",
            json!({"terminalId": tid, "data": "echo $((6*7))\n"}),
        )
        .await);
    assert_eq!(r["bytes"], 14);
    channel_until(&mut c, &tid, &mut screen, mark, "42\r\n").await;

    let r = ok(c
        .request(
            "sandbox_terminal_resize_request",
            json!({"terminalId": tid, "cols": 132, "rows": 50}),
        )
        .await);
    assert_eq!(
        (
            r["terminal"]["cols"].as_u64(),
            r["terminal"]["rows"].as_u64()
        ),
        (Some(132), Some(50))
    );
    let mark = screen.len();
    ok(c.request(
        "sandbox_terminal_input_request",
        json!({"terminalId": tid, "data": "stty size\n"}),
    )
    .await);
    channel_until(&mut c, &tid, &mut screen, mark, "50 132\r\n").await;

    // Input to a paused sandbox resumes it first.
    let r = ok(c
        .request("sandbox_pause_request", json!({"sandboxId": id}))
        .await);
    assert_eq!(r["sandbox"]["status"], "paused", "{r}");
    let mark = screen.len();
    ok(c.request(
        "sandbox_terminal_input_request",
        json!({"terminalId": tid, "data": "echo back $((1+1))\n"}),
    )
    .await);
    channel_until(&mut c, &tid, &mut screen, mark, "back 2\r\n").await;
    let r = ok(c
        .request("sandbox_get_request", json!({"sandboxId": id}))
        .await);
    assert_eq!(r["sandbox"]["status"], "running", "{r}");

    // Bad input gets clear errors.
    let e = c
        .request(
            "sandbox_terminal_input_request",
            json!({"terminalId": "term_nope", "data": "x"}),
        )
        .await;
    assert!(
        err(&e, "not_found").contains("Terminal not found: term_nope"),
        "{e}"
    );
    let e = c
        .request(
            "sandbox_terminal_resize_request",
            json!({"terminalId": tid, "cols": 0, "rows": 10}),
        )
        .await;
    assert!(
        err(&e, "invalid_input").contains("cols must be 1 to 1000, not 0"),
        "{e}"
    );
    let e = c
        .request(
            "sandbox_terminal_open_request",
            json!({"sandboxId": id, "rows": 0}),
        )
        .await;
    assert!(
        err(&e, "invalid_input").contains("rows must be 1 to 1000, not 0"),
        "{e}"
    );
    let e = c
        .request(
            "sandbox_terminal_input_request",
            json!({"terminalId": tid, "data": "x".repeat(70_000)}),
        )
        .await;
    assert!(
        err(&e, "invalid_input").contains("the limit is 65536"),
        "{e}"
    );
    let e = c
        .request(
            "sandbox_terminal_input_request",
            json!({"terminalId": tid, "data": "@@@", "encoding": "base64"}),
        )
        .await;
    assert!(err(&e, "invalid_input").contains("not valid base64"), "{e}");

    // Another container's token: neither the sandbox nor its terminal exists for it.
    let mut b = s.channel(&s.tenant_b).await;
    let e = b
        .request("sandbox_terminal_open_request", json!({"sandboxId": id}))
        .await;
    assert!(
        err(&e, "not_found").contains(&format!("Sandbox not found: {id}")),
        "{e}"
    );
    for (t, d) in [
        (
            "sandbox_terminal_input_request",
            json!({"terminalId": tid, "data": "id\n"}),
        ),
        (
            "sandbox_terminal_resize_request",
            json!({"terminalId": tid, "cols": 10, "rows": 10}),
        ),
        ("sandbox_terminal_close_request", json!({"terminalId": tid})),
    ] {
        let e = b.request(t, d).await;
        assert!(
            err(&e, "not_found").contains(&format!("Terminal not found: {tid}")),
            "{t}: {e}"
        );
    }

    // At most four terminals per sandbox; closing one makes room.
    let mut more = Vec::new();
    for _ in 0..3 {
        let r = ok(c
            .request("sandbox_terminal_open_request", json!({"sandboxId": id}))
            .await);
        more.push(r["terminal"]["id"].as_str().unwrap().to_string());
    }
    let e = c
        .request("sandbox_terminal_open_request", json!({"sandboxId": id}))
        .await;
    assert!(
        err(&e, "conflict").contains("already has 4 open terminals"),
        "{e}"
    );
    for t in &more {
        let r = ok(c
            .request("sandbox_terminal_close_request", json!({"terminalId": t}))
            .await);
        assert_eq!(r["terminalId"], t.as_str());
    }

    // The exit code of `exit 3`, typed as base64.
    let exit = base64::engine::general_purpose::STANDARD.encode("exit 3\n");
    ok(c.request(
        "sandbox_terminal_input_request",
        json!({"terminalId": tid, "data": exit, "encoding": "base64"}),
    )
    .await);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "no sandbox_terminal_exited");
        let f = c.next_frame().await;
        if f.type_name() == "sandbox_terminal_exited" && f.payload["data"]["terminalId"] == tid {
            assert_eq!(f.payload["data"]["exitCode"], 3, "{:?}", f.payload);
            assert_eq!(f.payload["data"]["sandboxId"], id.as_str());
            break;
        }
    }
    let e = c
        .request(
            "sandbox_terminal_input_request",
            json!({"terminalId": tid, "data": "echo late\n"}),
        )
        .await;
    err(&e, "not_found");
    s.terminate(&id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_blocks_the_command_and_loses_nothing() {
    use agentvm::scheduler::{SandboxRequest, TerminalEvent, TerminalRequest};
    use agentvm_e2e::docker::{busybox_spec, fast_config, local_scheduler};
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(fast_config()).await;
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let sandbox = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap();
    // About 2.7 MB of output: a second's work for a terminal, far more than the buffers between
    // the command and an unread session hold.
    let mut session = s
        .open_terminal(
            &sandbox.id,
            TerminalRequest {
                command: vec![
                    "/bin/sh".into(),
                    "-c".into(),
                    "seq 1 400000; echo done".into(),
                ],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let id = session.terminal.id.clone();
    // Unread, the output is not buffered without end: the command waits on its terminal.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(
        s.terminal(&id).is_some(),
        "the command ran to its end with nobody reading its output"
    );
    let mut tail = String::new();
    let mut bytes = 0usize;
    let exit = loop {
        match tokio::time::timeout(Duration::from_secs(60), session.next_event())
            .await
            .expect("output within 60 s")
        {
            Some(TerminalEvent::Output(text)) => {
                bytes += text.len();
                tail.push_str(&text);
                if tail.len() > 64 {
                    let cut = tail.len() - 64;
                    tail.drain(..cut);
                }
            }
            Some(TerminalEvent::Exited(code)) => break code,
            None => panic!("the stream ended without an exit"),
        }
    };
    assert_eq!(exit, Some(0));
    assert!(tail.ends_with("399999\r\n400000\r\ndone\r\n"), "{tail:?}");
    // Every line arrived: 1..=400000 with \r\n after each, and `done`.
    let digits: usize = (1..=400_000u32).map(|n| n.to_string().len() + 2).sum();
    assert_eq!(bytes, digits + "done\r\n".len());
    assert!(s.terminal(&id).is_none(), "an ended terminal is forgotten");
    s.terminate_sandbox(&sandbox.id).await.unwrap();
}
