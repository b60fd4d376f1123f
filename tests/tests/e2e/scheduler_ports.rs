//! Sandbox ports through agentvm-server's reverse proxy (`/v1/sandboxes/{id}/ports/{port}/…`),
//! over real HTTP with authentication on: busybox `httpd` answering through it (files, CGI
//! with a streamed request body, its own error pages), tokens and scopes, a WebSocket-style
//! upgrade with bytes both ways after the `101`, a paused sandbox resumed by a request, the
//! errors (404, 400, 409, 502), and no Docker port published on the host.

use agentvm::model::scheduler::IdleAction;
use agentvm::scheduler::{ExecRequest, NetworkPolicy, SandboxRequest, SandboxStatus, Scheduler};
use agentvm_e2e::docker::*;
use agentvm_server::{AuthMode, ServerConfig, ServerManager};
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The bridge the proxied sandboxes are on: internal (no route out), yet reachable from the
/// host the server runs on. One per test: schedulers that create the same bridge at the same
/// moment would each make one, and Docker then refuses the ambiguous name.
const NETWORK: &str = "agentvm-ports-test";

struct Fixture {
    scheduler: Scheduler,
    base: String,
    addr: std::net::SocketAddr,
    operator: String,
    tenant_a: String,
    tenant_b: String,
    _dir: tempfile::TempDir,
}

/// agentvm-server on 127.0.0.1 with authentication required, the local Docker as its node,
/// a `web` template on the bridge `agentvm-ports-test-<network>` and a `sealed` one without a network, and three tokens.
async fn serve(network: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let mut node = agentvm::scheduler::NodeRegistration::new("local", ENDPOINT);
    node.total_cpu_cores = Some(4.0);
    node.total_memory_mb = Some(8192);
    node.max_containers = 20;
    let vm = agentvm::AgentVm::builder()
        .data_dir(dir.path())
        .scheduler(Scheduler::builder().config(fast_config()).node(node))
        .open()
        .await
        .expect("open the runtime");
    let scheduler = vm.scheduler().expect("the runtime's scheduler").clone();
    let mut web = busybox_spec();
    web.network = NetworkPolicy::Bridge {
        name: format!("{NETWORK}-{network}"),
        internal: true,
    };
    scheduler.create_template("web", web).await.unwrap();
    scheduler
        .create_template("sealed", busybox_spec())
        .await
        .unwrap();
    let token = |containers: Option<Vec<String>>| {
        agentvm::auth::create_token(&**vm.store(), containers)
            .unwrap()
            .0
    };
    let operator = token(None);
    let tenant_a = token(Some(vec!["tenant-a".into()]));
    let tenant_b = token(Some(vec!["tenant-b".into()]));
    let server = ServerManager::new(
        vm,
        ServerConfig {
            auth: AuthMode::Required,
            ..Default::default()
        },
    );
    let addr = server.listen("127.0.0.1:0").await.expect("listen");
    // The server lives as long as the test process.
    Box::leak(Box::new(server));
    Fixture {
        scheduler,
        base: format!("http://{addr}"),
        addr,
        operator,
        tenant_a,
        tenant_b,
        _dir: dir,
    }
}

async fn sandbox_of(s: &Scheduler, template: &str, owner: &str) -> String {
    let mut r = SandboxRequest::new(template);
    r.owner = Some(owner.into());
    s.create_sandbox(r).await.expect("create a sandbox").id
}

async fn sh(s: &Scheduler, id: &str, line: &str) {
    let x = s
        .exec_collect(id, ExecRequest::shell(line))
        .await
        .expect("exec");
    assert_eq!(x.exit_code, Some(0), "{line}: {x:?}");
}

/// A CGI script that prints its environment, and one that echoes its request body.
const ENV_CGI: &str = "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\n'\nenv | sort\n";
const ECHO_CGI: &str =
    "#!/bin/sh\nprintf 'Content-Type: application/octet-stream\\r\\n\\r\\n'\nhead -c \"$CONTENT_LENGTH\"\n";

/// Reads the request head, answers `101` for the RFC 6455 sample key, then echoes.
const WS_SCRIPT: &str = "#!/bin/sh\ncr=$(printf '\\r')\nwhile IFS= read -r line; do\n  if [ -z \"$line\" ] || [ \"$line\" = \"$cr\" ]; then break; fi\ndone\nprintf 'HTTP/1.1 101 Switching Protocols\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRk3zmOo=\\r\\n\\r\\n'\nexec cat\n";

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let v = serde_json::from_str(&text).unwrap_or_else(|_| panic!("a JSON error, not {text:?}"));
    (status, v)
}

#[tokio::test]
async fn httpd_in_a_sandbox_answers_through_the_proxy_for_its_owner_only() {
    if !require_docker().await {
        return;
    }
    let f = serve("http").await;
    let s = &f.scheduler;
    let id = sandbox_of(s, "web", "tenant-a").await;
    s.write_file(&id, "hello.txt", b"hello from the sandbox\n".to_vec())
        .await
        .unwrap();
    sh(s, &id, "mkdir -p /workspace/cgi-bin").await;
    s.write_file(&id, "cgi-bin/env.cgi", ENV_CGI.as_bytes().to_vec())
        .await
        .unwrap();
    s.write_file(&id, "cgi-bin/echo.cgi", ECHO_CGI.as_bytes().to_vec())
        .await
        .unwrap();
    sh(
        s,
        &id,
        "chmod +x /workspace/cgi-bin/*.cgi && httpd -p 8080 -h /workspace",
    )
    .await;
    let c = reqwest::Client::new();
    let port = format!("{}/v1/sandboxes/{id}/ports/8080", f.base);

    // A file, as the owner's token (header); the server was up at once? Retry briefly.
    let mut got = None;
    for _ in 0..50 {
        let r = c
            .get(format!("{port}/hello.txt"))
            .bearer_auth(&f.tenant_a)
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            got = Some(r.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(got.as_deref(), Some("hello from the sandbox\n"));

    // ?token= works too, and neither the token nor the Authorization header reaches the
    // sandbox; the query, the method and X-Forwarded-* do.
    let env = c
        .get(format!(
            "{port}/cgi-bin/env.cgi?x=1&token={}&y=2",
            f.tenant_a
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(env.status(), 200);
    let env = env.text().await.unwrap();
    assert!(env.contains("QUERY_STRING=x=1&y=2\n"), "{env}");
    assert!(env.contains("REQUEST_METHOD=GET\n"), "{env}");
    assert!(!env.contains(&f.tenant_a), "the token leaked: {env}");
    let env = c
        .get(format!("{port}/cgi-bin/env.cgi"))
        .bearer_auth(&f.tenant_a)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!env.contains(&f.tenant_a), "the token leaked: {env}");

    // A request body streams to the sandbox and the answer back.
    let body: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let r = c
        .post(format!("{port}/cgi-bin/echo.cgi"))
        .bearer_auth(&f.tenant_a)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().to_vec(), body);

    // The sandbox's own error page is passed through, not rewritten as an agentvm error.
    let r = c
        .get(format!("{port}/missing.txt"))
        .bearer_auth(&f.tenant_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let text = r.text().await.unwrap();
    assert!(
        serde_json::from_str::<Value>(&text).is_err(),
        "httpd's page: {text}"
    );

    // Another container's token sees no such sandbox (exactly like an unknown one); no token
    // is a 401.
    let (st, e) = error_of(
        c.get(format!("{port}/hello.txt"))
            .bearer_auth(&f.tenant_b)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["kind"].as_str()), (404, Some("not_found")), "{e}");
    assert_eq!(e["error"], format!("Sandbox not found: {id}"));
    let (st, e) = error_of(c.get(format!("{port}/hello.txt")).send().await.unwrap()).await;
    assert_eq!((st, e["kind"].as_str()), (401, Some("unauthorized")), "{e}");
    let (st, _) = error_of(
        c.get(format!("{port}/hello.txt"))
            .bearer_auth("not-a-token")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 401);

    // Nothing is published on the Docker host.
    let d = local().await;
    let info = d
        .inspect_container(
            s.get_sandbox(&id)
                .await
                .unwrap()
                .unwrap()
                .docker_container_id
                .as_deref()
                .unwrap(),
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
        .unwrap();
    let bindings = info.host_config.and_then(|h| h.port_bindings);
    assert!(
        bindings.as_ref().is_none_or(|b| b.is_empty()),
        "{bindings:?}"
    );
    let published = info.network_settings.and_then(|n| n.ports);
    assert!(
        published
            .as_ref()
            .is_none_or(|p| p.values().all(|b| b.as_ref().is_none_or(|b| b.is_empty()))),
        "{published:?}"
    );

    // A paused sandbox is resumed by a request through its port.
    s.pause_sandbox(&id).await.unwrap();
    let r = c
        .get(format!("{port}/hello.txt"))
        .bearer_auth(&f.tenant_a)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        s.get_sandbox(&id).await.unwrap().unwrap().status.as_str(),
        "running"
    );

    // Ended: a 409 naming it.
    s.terminate_sandbox(&id).await.unwrap();
    let (st, e) = error_of(
        c.get(format!("{port}/hello.txt"))
            .bearer_auth(&f.tenant_a)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["kind"].as_str()), (409, Some("conflict")), "{e}");
    assert!(e["error"].as_str().unwrap().contains("has ended"), "{e}");
}

#[tokio::test]
async fn a_websocket_upgrade_passes_and_bytes_flow_both_ways() {
    if !require_docker().await {
        return;
    }
    let f = serve("ws").await;
    let s = &f.scheduler;
    let id = sandbox_of(s, "web", "tenant-a").await;
    let head = upgrade_head(&f, &id);
    let (mut tcp, response) = echo_over_upgrade(&f, &id, &head).await;
    let lower = response.to_ascii_lowercase();
    assert!(lower.contains("upgrade: websocket"), "{response}");
    assert!(
        lower.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrk3zmoo="),
        "{response}"
    );
    // After the 101 the connection is the sandbox's: what goes in comes back, several times.
    for round in 0..3 {
        echo(&mut tcp, format!("frame {round} \u{1F600}\n").as_bytes()).await;
    }
    // Binary bytes too, in one larger piece.
    let blob: Vec<u8> = (0..64 * 1024u32).map(|i| (i % 256) as u8).collect();
    echo(&mut tcp, &blob).await;
    drop(tcp);

    // The upgrade is authorised like any request.
    let mut tcp = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    tcp.write_all(head.replace(&f.tenant_a, &f.tenant_b).as_bytes())
        .await
        .unwrap();
    let response = read_head(&mut tcp).await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    s.terminate_sandbox(&id).await.unwrap();
}

/// The upgrade request for port 9000 of `id`, as tenant A.
fn upgrade_head(f: &Fixture, id: &str) -> String {
    format!(
        "GET /v1/sandboxes/{id}/ports/9000/echo?room=1 HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\r\n",
        f.addr, f.tenant_a
    )
}

/// Starts the echo script on port 9000 of `id` and upgrades a connection to it through the
/// proxy (`head`): the connection and the `101`'s head.
async fn echo_over_upgrade(f: &Fixture, id: &str, head: &str) -> (tokio::net::TcpStream, String) {
    let s = &f.scheduler;
    s.write_file(id, "ws.sh", WS_SCRIPT.as_bytes().to_vec())
        .await
        .unwrap();
    sh(
        s,
        id,
        "chmod +x /workspace/ws.sh && setsid nc -ll -p 9000 -e /workspace/ws.sh </dev/null >/dev/null 2>&1 &",
    )
    .await;
    // nc may not listen yet: retry the upgrade until it answers 101.
    for _ in 0..50 {
        let mut tcp = tokio::net::TcpStream::connect(f.addr).await.unwrap();
        tcp.write_all(head.as_bytes()).await.unwrap();
        let response = read_head(&mut tcp).await;
        if response.starts_with("HTTP/1.1 101") {
            return (tcp, response);
        }
        assert!(
            response.starts_with("HTTP/1.1 502"),
            "only a closed port is retried: {response}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the upgrade is never answered with 101");
}

/// Sends `msg` and reads it back.
async fn echo(tcp: &mut tokio::net::TcpStream, msg: &[u8]) {
    tcp.write_all(msg).await.unwrap();
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), tcp.read_exact(&mut back))
        .await
        .expect("the echo comes back")
        .unwrap();
    assert_eq!(back, msg);
}

#[tokio::test]
async fn bytes_through_the_proxy_keep_an_idle_pausing_sandbox_awake() {
    if !require_docker().await {
        return;
    }
    let f = serve("awake").await;
    let s = &f.scheduler;
    let mut napper = busybox_spec();
    napper.network = NetworkPolicy::Bridge {
        name: format!("{NETWORK}-awake"),
        internal: true,
    };
    napper.idle_timeout_s = Some(1);
    napper.idle_action = IdleAction::Pause;
    s.create_template("napper", napper).await.unwrap();
    let id = sandbox_of(s, "napper", "tenant-a").await;
    let (mut tcp, _) = echo_over_upgrade(&f, &id, &upgrade_head(&f, &id)).await;
    // Three idle timeouts (the sweep runs every 500 ms) with bytes moving every 200 ms and no
    // other request: the sandbox stays running and every echo comes back.
    let start = std::time::Instant::now();
    let mut round = 0;
    while start.elapsed() < Duration::from_secs(3) {
        echo(&mut tcp, format!("tick {round}\n").as_bytes()).await;
        let status = s.get_sandbox(&id).await.unwrap().unwrap().status;
        assert_eq!(status, SandboxStatus::Running, "after {round} rounds");
        round += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Open but silent, the connection does not keep it awake.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while s.get_sandbox(&id).await.unwrap().unwrap().status != SandboxStatus::Paused {
        assert!(
            std::time::Instant::now() < deadline,
            "never paused once idle"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(tcp);
    s.terminate_sandbox(&id).await.unwrap();
}

/// Reads an HTTP response head (up to the blank line).
async fn read_head(tcp: &mut tokio::net::TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut byte))
            .await
            .expect("a response head")
            .unwrap();
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn unknown_sandboxes_bad_ports_closed_ports_and_sealed_sandboxes_are_refused() {
    if !require_docker().await {
        return;
    }
    let f = serve("errors").await;
    let s = &f.scheduler;
    let c = reqwest::Client::new();
    let get = |path: String| {
        c.get(format!("{}{path}", f.base))
            .bearer_auth(&f.operator)
            .send()
    };
    let (st, e) = error_of(
        get("/v1/sandboxes/sbx_nope/ports/8080/x".into())
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["kind"].as_str()), (404, Some("not_found")), "{e}");

    let id = sandbox_of(s, "web", "tenant-a").await;
    for bad in ["0", "70000", "http", "-1"] {
        let (st, e) = error_of(
            get(format!("/v1/sandboxes/{id}/ports/{bad}/"))
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (st, e["kind"].as_str()),
            (400, Some("invalid_input")),
            "{bad}: {e}"
        );
        assert!(
            e["error"].as_str().unwrap().contains("1 to 65535"),
            "{bad}: {e}"
        );
    }
    // Nothing listens on 9999: a 502 saying so.
    let (st, e) = error_of(get(format!("/v1/sandboxes/{id}/ports/9999")).await.unwrap()).await;
    assert_eq!((st, e["kind"].as_str()), (502, Some("protocol")), "{e}");
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("nothing accepts connections"),
        "{e}"
    );

    // A sandbox without a network has no reachable port, and the error says why.
    let sealed = sandbox_of(s, "sealed", "tenant-a").await;
    let (st, e) = error_of(
        c.get(format!("{}/v1/sandboxes/{sealed}/ports/8080/", f.base))
            .bearer_auth(&f.tenant_a)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["kind"].as_str()), (409, Some("conflict")), "{e}");
    assert!(e["error"].as_str().unwrap().contains("no network"), "{e}");

    s.terminate_sandbox(&id).await.unwrap();
    s.terminate_sandbox(&sealed).await.unwrap();
}
