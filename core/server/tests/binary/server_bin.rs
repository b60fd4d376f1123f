//! The `agentvm-server` binary: serve, restart on the same data dir, graceful SIGTERM, the
//! token CLI, `--version`.
// Test helpers: a failed unwrap is a failed assertion.
#![allow(clippy::unwrap_used)]

use agentvm::{
    connect, BusItem, ConnectOptions, ErrorKind, EventPayload, ImageConfig, Role, RuntimeExt,
};
use std::io::{BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{serve as start, sigterm, spawn, wait_exit, BIN};

/// Connects, creates a `slow-stream` image in `container`, sends a message and returns once
/// three deltas of the reply have arrived (the turn is mid-stream).
async fn mid_stream(
    url: &str,
    container: &str,
) -> (agentvm::RemoteRuntime, agentvm::ImageListItem) {
    let options = ConnectOptions {
        reconnect: false,
        ..Default::default()
    };
    let rt = connect(url, options).await.unwrap();
    let config = ImageConfig {
        model: Some("slow-stream".into()),
        ..Default::default()
    };
    let image = rt.images().create(container, config).await.unwrap().record;
    let mut sub = rt.sessions().events(&image.session_id).await.unwrap();
    rt.agents()
        .send_to_image(&image.image_id, "tell me a long story")
        .await
        .unwrap();
    let mut deltas = 0;
    while deltas < 3 {
        if let Some(BusItem::Event(p)) = sub.recv().await {
            if matches!(p.event.payload, EventPayload::TextDelta { .. }) {
                deltas += 1;
            }
        }
    }
    (rt, image)
}

#[test]
fn version() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("agentvm-server {}", env!("CARGO_PKG_VERSION"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_turn_finishes_the_turn_and_a_restart_continues_the_conversation() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &[]);
    // Stop the server once the reply is streaming.
    let (rt, image) = mid_stream(&server.url, "user-alice").await;
    sigterm(&server.child);
    let status = wait_exit(&mut server.child, Duration::from_secs(15));
    assert!(status.success(), "exit status {status}");
    drop(rt);

    // Same data dir: everything is there, the turn was allowed to finish.
    let mut server = start(dir.path(), &[]);
    let rt = connect(&server.url, ConnectOptions::default())
        .await
        .unwrap();
    assert_eq!(rt.containers().list().await.unwrap(), ["user-alice"]);
    let history = rt.images().messages(&image.image_id).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[1].role, Role::Assistant);
    let full: String = (0..50).map(|i| format!("slow{i} ")).collect();
    assert_eq!(history[1].content.as_ref().unwrap().text(), full);
    // The conversation continues.
    let mut sub = rt.sessions().events(&image.session_id).await.unwrap();
    rt.agents()
        .send_to_image(&image.image_id, "and then?")
        .await
        .unwrap();
    loop {
        if let Some(BusItem::Event(p)) = sub.recv().await {
            if matches!(p.event.payload, EventPayload::ConversationEnd { .. }) {
                break;
            }
        }
    }
    assert_eq!(
        rt.images().messages(&image.image_id).await.unwrap().len(),
        4
    );
    sigterm(&server.child);
    assert!(wait_exit(&mut server.child, Duration::from_secs(15)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_grace_interrupts_the_turn_and_keeps_the_partial_reply() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentvm.toml");
    std::fs::write(&config, "shutdown_grace_ms = 50\n").unwrap();
    let mut server = start(dir.path(), &["--config", config.to_str().unwrap()]);
    // Stop the server once the reply is streaming.
    let (rt, image) = mid_stream(&server.url, "c").await;
    sigterm(&server.child);
    assert!(wait_exit(&mut server.child, Duration::from_secs(10)).success());
    drop(rt);
    let store = agentvm::RedbStore::open(dir.path().join("agentvm.redb")).unwrap();
    let history = agentvm::Store::list_messages(&store, &image.session_id).unwrap();
    assert_eq!(history.len(), 2);
    let text = history[1].content.as_ref().unwrap().text();
    assert!(text.starts_with("slow0 slow1 slow2 "), "{text}");
    assert!(!text.contains("slow49"), "the turn was interrupted: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_cli_scopes_and_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["token", "create", "--containers", "a,b", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(token.starts_with("avm_"));
    let out = Command::new(BIN)
        .args(["token", "create", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--containers a,b) or --all"));
    let out = Command::new(BIN)
        .args(["token", "list", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(listing.contains("active\ta,b"), "{listing}");
    assert!(!listing.contains(&token), "tokens are never shown again");
    let id = listing.split('\t').next().unwrap().to_string();

    let mut server = start(dir.path(), &["--require-auth"]);
    // Without a token the upgrade succeeds (browsers authenticate with a first frame), and the
    // first request fails clearly.
    let anonymous = connect(&server.url, ConnectOptions::default())
        .await
        .unwrap();
    let e = anonymous.containers().list().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert!(e.to_string().contains("authentication required"), "{e}");
    let rt = connect(&server.url, ConnectOptions::with_token(&token))
        .await
        .unwrap();
    rt.containers().create("a").await.unwrap();
    assert_eq!(
        rt.containers().create("c").await.unwrap_err().kind(),
        ErrorKind::Unauthorized
    );
    // While the server runs, the CLI works through the server's operator socket: a token
    // created now works at once, and a revoke closes the connections that use the token.
    let out = Command::new(BIN)
        .args(["token", "create", "--containers", "z", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("through the running server"));
    let live = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let z = connect(&server.url, ConnectOptions::with_token(&live))
        .await
        .unwrap();
    z.containers().create("z").await.unwrap();
    // Subscribing to another tenant's session, or to one that does not exist, fails as it does
    // in process (and the same way for both); one's own session subscribes.
    let a = rt
        .images()
        .create("a", ImageConfig::default())
        .await
        .unwrap()
        .record;
    for session in [a.session_id.as_str(), "sess_never_made"] {
        let e = z.sessions().events(session).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert!(e.to_string().contains("Session not found"), "{e}");
    }
    rt.sessions().events(&a.session_id).await.unwrap();
    // z's connection is intact after its refused subscribes.
    z.containers().list().await.unwrap();
    let out = Command::new(BIN)
        .args(["token", "list", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        listing.contains("active\ta,b") && listing.contains("active\tz"),
        "{listing}"
    );
    let out = Command::new(BIN)
        .args(["token", "revoke", &id, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = rt.containers().list().await.unwrap_err();
    assert!(
        matches!(e.kind(), ErrorKind::Unauthorized | ErrorKind::Unavailable),
        "the revoked token's connection is closed: {e}"
    );
    let out = Command::new(BIN)
        .args(["token", "revoke", "tok_nope", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Token not found: tok_nope"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(rt);
    drop(z);
    sigterm(&server.child);
    assert!(wait_exit(&mut server.child, Duration::from_secs(10)).success());
    assert!(
        !dir.path().join("agentvm.sock").exists(),
        "the operator socket goes with the server"
    );
    let mut server = start(dir.path(), &["--require-auth"]);
    let e = connect(&server.url, ConnectOptions::with_token(&token))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("revoked"), "{e}");
    sigterm(&server.child);
    assert!(wait_exit(&mut server.child, Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_token_is_printed_once_on_a_server_that_needs_one() {
    let dir = tempfile::tempdir().unwrap();
    let run = |dir: &Path| {
        let mut command = Command::new(BIN);
        command
            .args([
                "serve",
                "--port",
                "0",
                "--require-auth",
                "--bootstrap-token",
                "--data-dir",
            ])
            .arg(dir)
            .env("LLM_PROVIDER", "mock")
            .env("AGENTVM_LOG", "warn")
            .stderr(Stdio::null());
        let server = spawn(command);
        let printed = server.before.clone();
        (server, printed)
    };
    let (mut server, printed) = run(dir.path());
    assert_eq!(printed.len(), 1, "{printed:?}");
    let token = printed[0].split_whitespace().last().unwrap().to_string();
    assert!(token.starts_with("avm_"), "{printed:?}");
    // It is an operator token: it may create tokens for every container.
    let rt = connect(&server.url, ConnectOptions::with_token(&token))
        .await
        .unwrap();
    rt.containers().create("anything").await.unwrap();
    drop(rt);
    sigterm(&server.child);
    assert!(wait_exit(&mut server.child, Duration::from_secs(10)).success());
    // A store that holds a token gets no second one.
    let (mut server, printed) = run(dir.path());
    assert!(printed.is_empty(), "{printed:?}");
    sigterm(&server.child);
    assert!(wait_exit(&mut server.child, Duration::from_secs(10)).success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_join_registers_and_heartbeats() {
    if std::env::var("AGENTVM_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("AGENTVM_SKIP_DOCKER=1: skipping");
        return;
    }
    assert!(
        Path::new("/var/run/docker.sock").exists(),
        "Docker is not available: run `sudo bash scripts/setup-docker.sh` or set AGENTVM_SKIP_DOCKER=1"
    );
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let base = server.url.replace("ws://", "http://").replace("/ws", "");
    let mut join = Command::new(BIN)
        .args([
            "node",
            "join",
            "--control-plane",
            &base,
            "--docker",
            "unix:///var/run/docker.sock",
        ])
        .args(["--node-id", "joined-1", "--heartbeat-ms", "200"])
        .env("AGENTVM_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    let mut seen = None;
    for _ in 0..100 {
        let nodes: serde_json::Value = client
            .get(format!("{base}/v1/nodes"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(n) = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node_id"] == "joined-1")
        {
            if n["status"] == "online" && n["last_heartbeat_at"].as_i64().is_some() {
                seen = Some(n.clone());
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = join.kill();
    let _ = join.wait();
    let node = seen.expect("the joined node appears online");
    assert_eq!(node["api_endpoint"], "unix:///var/run/docker.sock");
}

/// A provider that refuses the key: the client sees `error_received`, and the operator sees one
/// WARN line naming the provider and its URL, never the key; the log has no colour codes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_llm_failure_is_logged_at_warn_with_provider_and_url_not_the_key() {
    use std::io::Write;
    let provider = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let provider_url = format!("http://{}", provider.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in provider.incoming() {
            let Ok(mut s) = stream else { return };
            let mut buf = [0u8; 65536];
            let _ = s.read(&mut buf);
            let body = r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#;
            let _ = write!(
                s,
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .env("LLM_PROVIDER", "openai")
        .env("LLM_PROVIDER_URL", &provider_url)
        .env("LLM_PROVIDER_MODEL", "some-model")
        .env("LLM_PROVIDER_KEY", "sk-very-secret-key")
        .env("AGENTVM_LOG", "info")
        .stderr(Stdio::piped());
    let mut server = spawn(command);
    let stderr = server.child.stderr.take().unwrap();
    let rt = connect(&server.url, ConnectOptions::default())
        .await
        .unwrap();
    let image = rt
        .images()
        .create("c", ImageConfig::default())
        .await
        .unwrap()
        .record;
    let mut sub = rt.sessions().events(&image.session_id).await.unwrap();
    rt.agents()
        .send_to_image(&image.image_id, "hello")
        .await
        .unwrap();
    loop {
        if let Some(BusItem::Event(p)) = sub.recv().await {
            if matches!(p.event.payload, EventPayload::ErrorReceived { .. }) {
                break;
            }
        }
    }
    drop(rt);
    sigterm(&server.child);
    assert!(wait_exit(&mut server.child, Duration::from_secs(10)).success());
    let mut log = String::new();
    BufReader::new(stderr).read_to_string(&mut log).unwrap();
    let warn = log
        .lines()
        .find(|l| l.contains("WARN") && l.contains("LLM request failed"))
        .unwrap_or_else(|| panic!("no WARN line for the failure in:\n{log}"));
    assert!(
        warn.contains("openai") && warn.contains(&provider_url),
        "{warn}"
    );
    assert!(warn.contains("authentication"), "{warn}");
    assert!(
        !log.contains("sk-very-secret-key"),
        "the key reached the log:\n{log}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log that is not a terminal"
    );
}

/// `--secrets-dir` keeps the key that seals template credentials out of the data dir (where
/// cluster members can share one copy): the key is made there, 0600, and the credential is
/// stored sealed and returned without its value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_dir_holds_the_credentials_key() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secrets = dir.path().join("shared-secrets");
    std::fs::create_dir(&secrets).unwrap();
    let data = dir.path().join("data");
    let server = start(&data, &["--secrets-dir", secrets.to_str().unwrap()]);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/commands", server.http))
        .json(
            &serde_json::json!({"type": "template_create_request", "data": {
            "templateId": "api", "name": "API", "image": "agentvm-test/busybox:latest",
            "network": {"mode": "allowlist", "hosts": ["api.example.com"]},
            "credentials": [{"host": "api.example.com", "header": "Authorization",
                "value": "Bearer s3cr3t-value"}]}}),
        )
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.text().await.unwrap();
    assert!(status.is_success(), "{status} {body}");
    assert!(!body.contains("s3cr3t-value"), "{body}");
    let key = secrets.join("secrets.key");
    let mode = std::fs::metadata(&key)
        .unwrap_or_else(|e| panic!("{}: {e}", key.display()))
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !data.join("secrets.key").exists(),
        "the key is not in the data dir"
    );
}

#[test]
fn the_config_files_scheduler_table_takes_the_bindings_options_and_refuses_unknown_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agentvm.toml");
    std::fs::write(
        &config,
        "[scheduler]\nended_retention_ms = 3600000\nsweepIntervalMs = 5000\n",
    )
    .unwrap();
    let server = start(dir.path(), &["--config", config.to_str().unwrap()]);
    drop(server);

    std::fs::write(&config, "[scheduler]\nended_retention = 5\n").unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.path())
        .args(["--config", config.to_str().unwrap()])
        .env("LLM_PROVIDER", "mock")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown field `ended_retention`") && err.contains("endedRetentionMs"),
        "the error names the key and what is allowed: {err}"
    );
}
