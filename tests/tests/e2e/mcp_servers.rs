//! Agents calling tools of MCP servers (`mcpServers` of their image), driven by the mock
//! model's `call-tool:` scenario: a stdio server written with the Python SDK (PyPI `mcp`) on
//! this machine under local tools, a streamable HTTP server written with the Node SDK
//! (`@modelcontextprotocol/sdk`), a stdio server inside a Docker sandbox, a stdio server
//! refused where neither a sandbox nor local tools are allowed, and servers that crash, hang or
//! print garbage: each turn ends with a clear tool error and leaves no process behind.
//!
//! Needs `AGENTVM_TEST_PYTHON` (the venv python of `scripts/setup-python.sh`, which installs
//! `mcp`) and `AGENTVM_TEST_MCP_NODE` (the fixture directory `scripts/setup-mcp-node.sh`
//! prints); `scripts/test-all.sh` sets both. The sandbox test needs Docker
//! (`scripts/setup-docker.sh`).

use agentvm::scheduler::{NodeRegistration, Scheduler, SchedulerConfig};
use agentvm::toolhost::local::LocalToolsPolicy;
use agentvm::*;
use agentvm_e2e::collect_turn;
use agentvm_e2e::docker::{busybox_spec, require_docker, ENDPOINT};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("mcp")
        .join(rel)
}

/// The venv python with the `mcp` SDK.
fn python() -> String {
    match std::env::var("AGENTVM_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => p,
        _ => panic!(
            "AGENTVM_TEST_PYTHON is not set. These tests run MCP servers written with the \
             Python SDK: run\n  export AGENTVM_TEST_PYTHON=\"$(bash scripts/setup-python.sh)\"\n\
             first (AGENTVM_SKIP_LLAMACPP=1 installs only the MCP SDK)."
        ),
    }
}

/// The Python fixture server as an `mcpServers` entry, with a marker argument to find its
/// processes by.
fn python_server(marker: &str) -> Value {
    json!({"command": python(), "args": [fixture("python_stdio_server.py"), marker]})
}

async fn vm_with(builder: AgentVmBuilder, limits: McpLimits) -> AgentVm {
    builder
        .llm(std::sync::Arc::new(MockDriver::default()))
        .mcp_limits(limits)
        .open()
        .await
        .unwrap()
}

fn quick_limits() -> McpLimits {
    McpLimits {
        start_timeout: Duration::from_secs(20),
        call_timeout: Duration::from_secs(3),
        restart_backoff: Duration::from_millis(200),
        max_restart_backoff: Duration::from_secs(1),
    }
}

/// Creates an image in `container` with `servers`, calls `tool` with `args` through the mock
/// model, and returns the stored tool result (output, is_error) and the turn's events.
async fn call_tool(
    vm: &AgentVm,
    container: &str,
    servers: Value,
    tool: &str,
    args: Value,
) -> (String, bool, ImageListItem, Vec<Event>) {
    let config: ImageConfig = serde_json::from_value(json!({
        "model": format!("mock:call-tool:{tool}:{args}"),
        "mcpServers": servers,
    }))
    .unwrap();
    let image = vm.images().create(container, config).await.unwrap().record;
    let (result, events) = call_again(vm, &image).await;
    (result.0, result.1, image, events)
}

/// Sends one more message to `image` and returns its tool result and the turn's events.
async fn call_again(vm: &AgentVm, image: &ImageListItem) -> ((String, bool), Vec<Event>) {
    let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&image.image_id, "call it")
        .await
        .unwrap();
    let events = tokio::time::timeout(Duration::from_secs(60), collect_turn(&mut sub))
        .await
        .expect("the turn ended");
    let history = vm.sessions().messages(&image.session_id).await.unwrap();
    let result = history
        .iter()
        .rev()
        .find_map(|m| m.tool_result.clone())
        .expect("a stored tool result");
    ((result.output, result.is_error), events)
}

/// Processes of this machine whose command line contains `marker`.
fn processes_with(marker: &str) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(marker) {
                out.push(cmd);
            }
        }
    }
    out
}

/// Waits up to 5 s for no process with `marker` to be left.
async fn assert_no_process(marker: &str) {
    for _ in 0..50 {
        if processes_with(marker).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("processes left behind: {:?}", processes_with(marker));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_stdio_server_runs_on_this_machine_under_local_tools() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("marker-{}", new_id("py"));
    let vm = vm_with(
        AgentVm::builder().data_dir(dir.path()).local_tools(),
        quick_limits(),
    )
    .await;
    vm.containers().create("c1").await.unwrap();
    let servers = json!({ "py": python_server(&marker) });
    let (out, is_error, image, events) = call_tool(
        &vm,
        "c1",
        servers,
        "mcp__py__echo",
        json!({"text": "hello mcp"}),
    )
    .await;
    assert!(!is_error, "{out}");
    assert_eq!(out, "echo: hello mcp");
    assert!(
        events.iter().any(|e| matches!(&e.payload,
            EventPayload::ToolResult { result, .. } if result.contains("echo: hello mcp"))),
        "the result is published"
    );
    // The same session: the server is still up, in the image's workdir.
    let config_dir = std::fs::canonicalize(dir.path()).unwrap();
    vm.images().stop(&image.image_id).await.unwrap();
    assert_no_process(&marker).await;
    let image2 = vm
        .images()
        .create(
            "c1",
            serde_json::from_value(json!({
                "model": "mock:call-tool:mcp__py__whoami",
                "mcpServers": { "py": python_server(&marker) },
            }))
            .unwrap(),
        )
        .await
        .unwrap()
        .record;
    let ((out, is_error), _) = call_again(&vm, &image2).await;
    assert!(!is_error, "{out}");
    let workdir = config_dir
        .join("containers/c1/workdirs")
        .join(&image2.image_id);
    assert!(
        out.ends_with(&format!("cwd={}", workdir.display())),
        "{out}"
    );
    assert_eq!(processes_with(&marker).len(), 1, "one server process");
    vm.images().stop(&image2.image_id).await.unwrap();
    assert_no_process(&marker).await;
}

/// Starts the Node fixture and returns it and its URL.
async fn node_server() -> (tokio::process::Child, String) {
    let dir = match std::env::var("AGENTVM_TEST_MCP_NODE") {
        Ok(d) if !d.is_empty() => PathBuf::from(d),
        _ => panic!(
            "AGENTVM_TEST_MCP_NODE is not set. This test runs an MCP server written with the \
             Node SDK: run\n  export AGENTVM_TEST_MCP_NODE=\"$(bash scripts/setup-mcp-node.sh)\"\n\
             first."
        ),
    };
    let mut child = tokio::process::Command::new("node")
        .arg(dir.join("server.mjs"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the Node server started")
        .unwrap()
        .expect("a line");
    let port = line.strip_prefix("listening ").expect("listening <port>");
    (child, format!("http://127.0.0.1:{port}/mcp"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_http_server_is_called_with_its_headers() {
    let (_server, url) = node_server().await;
    let vm = vm_with(AgentVm::builder(), quick_limits()).await;
    vm.containers().create("c1").await.unwrap();
    let servers =
        json!({"web": {"type": "http", "url": url, "headers": {"X-Fixture-Key": "k-42"}}});
    let (out, is_error, _, _) = call_tool(
        &vm,
        "c1",
        servers,
        "mcp__web__shout",
        json!({"text": "quiet"}),
    )
    .await;
    assert!(!is_error, "{out}");
    assert_eq!(out, "QUIET (key k-42)");

    // A tool the server does not have: the server's error, as a tool error.
    let servers = json!({"web": {"type": "http", "url": url}});
    let (out, is_error, _, _) = call_tool(&vm, "c1", servers, "mcp__web__nope", json!({})).await;
    assert!(is_error, "{out}");
    assert!(out.contains("nope"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_is_refused_where_no_tools_may_run() {
    let marker = format!("marker-{}", new_id("refused"));
    // No sandbox and no local tools at all.
    let vm = vm_with(AgentVm::builder(), quick_limits()).await;
    vm.containers().create("c1").await.unwrap();
    let servers = json!({ "py": python_server(&marker) });
    let (out, is_error, _, events) = call_tool(
        &vm,
        "c1",
        servers.clone(),
        "mcp__py__echo",
        json!({"text": "x"}),
    )
    .await;
    assert!(is_error, "{out}");
    assert!(out.contains("no place to run a stdio MCP server"), "{out}");
    assert!(
        events.iter().any(|e| matches!(&e.payload,
            EventPayload::ErrorOccurred { code, .. } if code == "mcp_server_failed")),
        "the failure is published"
    );

    // Local tools, but not for this container.
    let dir = tempfile::tempdir().unwrap();
    let vm = vm_with(
        AgentVm::builder()
            .data_dir(dir.path())
            .local_tools_policy(LocalToolsPolicy::allow(["other"])),
        quick_limits(),
    )
    .await;
    vm.containers().create("c1").await.unwrap();
    let (out, is_error, _, _) =
        call_tool(&vm, "c1", servers, "mcp__py__echo", json!({"text": "x"})).await;
    assert!(is_error, "{out}");
    assert!(
        out.contains("local tools are not enabled for container c1"),
        "{out}"
    );
    assert!(
        processes_with(&marker).is_empty(),
        "nothing ran on the host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_hanging_and_garbled_servers_end_the_turn_with_a_tool_error() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("marker-{}", new_id("bad"));
    let vm = vm_with(
        AgentVm::builder().data_dir(dir.path()).local_tools(),
        McpLimits {
            start_timeout: Duration::from_secs(3),
            call_timeout: Duration::from_secs(3),
            restart_backoff: Duration::from_secs(1),
            max_restart_backoff: Duration::from_secs(10),
        },
    )
    .await;
    vm.containers().create("c1").await.unwrap();

    // Crashes in the middle of a call; started again (after its backoff) for the next one.
    let servers = json!({ "py": python_server(&marker) });
    let (out, is_error, image, _) =
        call_tool(&vm, "c1", servers.clone(), "mcp__py__crash", json!({})).await;
    assert!(is_error, "{out}");
    assert!(out.contains("the call to crash failed"), "{out}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let ((out, is_error), events) = call_again(&vm, &image).await;
    assert!(is_error, "{out}");
    assert!(
        out.contains("the call to crash failed"),
        "restarted after its backoff, and crashed again: {out}"
    );
    assert!(
        events.iter().any(|e| matches!(&e.payload,
            EventPayload::ErrorOccurred { code, message, .. }
                if code == "mcp_server_failed" && message.contains("MCP server 'py' failed"))),
        "the crash is published"
    );
    // Within its (now doubled, 2 s) backoff it is not started again.
    let ((out, is_error), _) = call_again(&vm, &image).await;
    assert!(is_error, "{out}");
    assert!(
        out.contains("is not available: MCP server 'py' failed"),
        "{out}"
    );
    vm.images().stop(&image.image_id).await.unwrap();
    assert_no_process(&marker).await;

    // A call that never answers times out, and the hung server is killed.
    let (out, is_error, image, _) = call_tool(&vm, "c1", servers, "mcp__py__hang", json!({})).await;
    assert!(is_error, "{out}");
    assert!(out.contains("did not answer within 3000 ms"), "{out}");
    assert_no_process(&marker).await;
    vm.images().stop(&image.image_id).await.unwrap();

    // Never answers initialize.
    let servers =
        json!({"mute": {"command": "sh", "args": ["-c", format!("sleep 600 # {marker}")]}});
    let (out, is_error, image, _) =
        call_tool(&vm, "c1", servers, "mcp__mute__anything", json!({})).await;
    assert!(is_error, "{out}");
    assert!(out.contains("no answer to initialize"), "{out}");
    assert_no_process(&marker).await;
    vm.images().stop(&image.image_id).await.unwrap();

    // Prints something that is not JSON-RPC, then waits.
    let script = format!("echo 'this is not JSON' ; echo 'oops' >&2 ; sleep 600 # {marker}");
    let servers = json!({"garbled": {"command": "sh", "args": ["-c", script]}});
    let (out, is_error, image, _) =
        call_tool(&vm, "c1", servers, "mcp__garbled__anything", json!({})).await;
    assert!(is_error, "{out}");
    assert!(out.contains("MCP server 'garbled' failed"), "{out}");
    assert!(out.contains("oops"), "its stderr is shown: {out}");
    vm.images().stop(&image.image_id).await.unwrap();
    assert_no_process(&marker).await;

    // A command that does not exist.
    let servers = json!({"missing": {"command": "/nonexistent/mcp-server"}});
    let (out, is_error, _, _) = call_tool(&vm, "c1", servers, "mcp__missing__x", json!({})).await;
    assert!(is_error, "{out}");
    assert!(out.contains("could not start"), "{out}");
}

/// A stdio MCP server as a busybox `sh` script: newline-delimited JSON-RPC, enough of it for
/// `initialize`, `tools/list` and `tools/call` of one tool, `whoami`.
const SH_SERVER: &str = r#"
while IFS= read -r line; do
  id=$(printf '%s' "$line" | sed -n 's/.*"id":\([0-9][0-9]*\).*/\1/p')
  method=$(printf '%s' "$line" | sed -n 's/.*"method":"\([^"]*\)".*/\1/p')
  version=$(printf '%s' "$line" | sed -n 's/.*"protocolVersion":"\([^"]*\)".*/\1/p')
  [ -n "$id" ] || continue
  case "$method" in
    initialize) printf '{"jsonrpc":"2.0","id":%s,"result":{"protocolVersion":"%s","capabilities":{"tools":{}},"serverInfo":{"name":"sh-fixture","version":"1"}}}\n' "$id" "$version" ;;
    tools/list) printf '{"jsonrpc":"2.0","id":%s,"result":{"tools":[{"name":"whoami","description":"uid and hostname","inputSchema":{"type":"object"}}]}}\n' "$id" ;;
    tools/call) printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"uid=%s host=%s cwd=%s"}]}}\n' "$id" "$(id -u)" "$(hostname)" "$(pwd)" ;;
    *) printf '{"jsonrpc":"2.0","id":%s,"error":{"code":-32601,"message":"unknown method"}}\n' "$id" ;;
  esac
done
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stdio_server_runs_inside_the_containers_sandbox() {
    if !require_docker().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeRegistration::new("local", ENDPOINT);
    node.max_containers = 20;
    let vm = AgentVm::builder()
        .data_dir(dir.path())
        .llm(std::sync::Arc::new(MockDriver::default()))
        .mcp_limits(quick_limits())
        .scheduler(
            Scheduler::builder()
                .config(SchedulerConfig::default())
                .node(node),
        )
        .open()
        .await
        .unwrap();
    let scheduler = vm.scheduler().unwrap().clone();
    scheduler
        .create_template("busybox", busybox_spec())
        .await
        .unwrap();
    vm.containers()
        .create_with_sandbox("mcp-sbx", "busybox")
        .await
        .unwrap();
    let marker = format!("marker-{}", new_id("sbx"));
    let script = format!("{SH_SERVER}# {marker}\n");
    let servers = json!({"box": {"command": "sh", "args": ["-c", script]}});
    let (out, is_error, image, _) =
        call_tool(&vm, "mcp-sbx", servers, "mcp__box__whoami", json!({})).await;
    assert!(!is_error, "{out}");

    // Seen from inside: the sandbox's user, host name and the image's directory.
    let sandbox = scheduler
        .sandbox_for_owner("mcp-sbx", "busybox")
        .await
        .unwrap();
    let inside = sandbox
        .exec(
            "echo \"uid=$(id -u) host=$(hostname) cwd=$(pwd)\"",
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    // The cwd comes last: the server's is the image's directory inside the sandbox workdir.
    let expected = format!("{}/{}", inside.stdout.trim(), image.image_id);
    assert_eq!(out, expected);
    assert!(!out.starts_with("uid=0 "), "not root: {out}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        !out.contains(&format!("host={} ", host.trim())),
        "not this machine: {out}"
    );
    let count = format!("ps -o args | grep -c '[{}]{}'", &marker[..1], &marker[1..]);
    let running = sandbox.exec(&count, Duration::from_secs(20)).await.unwrap();
    assert_eq!(running.stdout.trim(), "1", "the server runs in the sandbox");

    // Its exec ends with the agent.
    vm.images().stop(&image.image_id).await.unwrap();
    let left = sandbox.exec(&count, Duration::from_secs(20)).await.unwrap();
    assert_eq!(left.stdout.trim(), "0", "no process left in the sandbox");
    scheduler.terminate_sandbox(sandbox.id()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_ends_a_running_mcp_call_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("marker-{}", new_id("int"));
    let vm = vm_with(
        AgentVm::builder().data_dir(dir.path()).local_tools(),
        McpLimits {
            call_timeout: Duration::from_secs(60),
            ..quick_limits()
        },
    )
    .await;
    vm.containers().create("c1").await.unwrap();
    let config: ImageConfig = serde_json::from_value(json!({
        "model": "mock:call-tool:mcp__py__hang",
        "mcpServers": { "py": python_server(&marker) },
    }))
    .unwrap();
    let image = vm.images().create("c1", config).await.unwrap().record;
    let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
    let sent = vm
        .agents()
        .send_to_image(&image.image_id, "hang")
        .await
        .unwrap();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(30), sub.recv())
            .await
            .expect("the call started")
            .unwrap();
        if let BusItem::Event(p) = item {
            if p.event.type_name() == "tool_executing" {
                break;
            }
        }
    }
    let asked = std::time::Instant::now();
    vm.agents().interrupt(&sent.agent_id).await.unwrap();
    collect_turn(&mut sub).await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "the turn ended {:?} after the interrupt",
        asked.elapsed()
    );
    let history = vm.sessions().messages(&image.session_id).await.unwrap();
    let result = history.iter().rev().find_map(|m| m.tool_result.clone());
    assert_eq!(
        result.map(|r| r.output),
        Some("interrupted before the tool finished".to_string())
    );
    assert_eq!(processes_with(&marker).len(), 1, "the server lives on");
    vm.images().stop(&image.image_id).await.unwrap();
    assert_no_process(&marker).await;
}

#[tokio::test]
async fn bad_mcp_servers_are_invalid_input_naming_the_field() {
    let vm = vm_with(AgentVm::builder(), quick_limits()).await;
    vm.containers().create("c1").await.unwrap();
    let bad = json!({"files": {"command": "srv", "args": "not-a-list"}});
    for (type_name, data) in [
        (
            "image_create_request",
            json!({"containerId": "c1", "config": {"mcpServers": bad}}),
        ),
        (
            "image_create_request",
            json!({"containerId": "c1", "config": {"definition": {"name": "d", "mcpServers": bad}}}),
        ),
        (
            "definition_register_request",
            json!({"definition": {"name": "d", "mcpServers": bad}}),
        ),
    ] {
        let e = match Command::from_wire(type_name, data.clone()) {
            Ok(c) => vm.request(c).await.expect_err("refused"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{data}: {e}");
        assert!(
            e.to_string().contains("mcpServers.files.args"),
            "{data}: {e}"
        );
    }
    assert!(
        vm.images().list(Some("c1")).await.unwrap().is_empty(),
        "nothing was created"
    );
}

/// A record stored before shapes were checked (an AgentX `"sse"` server) stays readable and is
/// kept as it was; its agent's turn reports why that server does not start, and the others
/// work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_server_of_an_unsupported_shape_is_kept_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let vm = vm_with(AgentVm::builder().data_dir(dir.path()), quick_limits()).await;
    vm.containers().create("c1").await.unwrap();
    let config: ImageConfig = serde_json::from_value(json!({
        "model": "mock:call-tool:mcp__legacy__echo:{}",
    }))
    .unwrap();
    let image = vm.images().create("c1", config).await.unwrap().record;
    // What an older version stored: an entry no command accepts today.
    let legacy = json!({"legacy": {"type": "sse", "url": "http://127.0.0.1:9/sse"}});
    let mut record = vm.store().get_image(&image.image_id).unwrap().unwrap();
    record.definition.mcp_servers = Some(serde_json::from_value(legacy.clone()).unwrap());
    vm.store().update_image(&record).unwrap();
    drop(vm);

    let vm = vm_with(AgentVm::builder().data_dir(dir.path()), quick_limits()).await;
    assert!(vm.images().get(&image.image_id).await.unwrap().is_some());
    let read = vm.store().get_image(&image.image_id).unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&read.definition.mcp_servers).unwrap(),
        legacy,
        "kept as it was stored"
    );
    let ((out, is_error), events) = call_again(&vm, &image).await;
    assert!(is_error, "{out}");
    assert!(out.contains("not started") && out.contains("sse"), "{out}");
    assert!(
        events.iter().any(|e| matches!(&e.payload,
            EventPayload::ErrorOccurred { code, .. } if code == "mcp_server_failed")),
        "the failure is published"
    );
}
