//! Scheduler and token operations as commands (docs/commands.md): a sandbox driven end to end
//! over /ws only (template, sandbox, exec with its output streamed on the sandbox's topic and
//! replayed by cursor, cancel, files, executions, delete), the same through `Runtime::request`
//! in process, tenant scopes, tokens, bad input, and a runtime without a scheduler.

use agentvm::scheduler::{NodeRegistration, Scheduler};
use agentvm::*;
use agentvm_e2e::docker::{require_docker, ENDPOINT, TEST_IMAGE};
use agentvm_e2e::wire::{Frame, TestServer, WsClient};
use agentvm_server::{AuthMode, ServerConfig, ServerManager};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A runtime with a scheduler on its own data dir; the local Docker daemon as node `local`
/// when `node` is true (no node, no Docker needed).
async fn scheduler_vm(dir: &std::path::Path, node: bool) -> AgentVm {
    let mut builder = Scheduler::builder();
    if node {
        let mut reg = NodeRegistration::new("local", ENDPOINT);
        reg.total_cpu_cores = Some(4.0);
        reg.total_memory_mb = Some(8192);
        reg.max_containers = 50;
        builder = builder.node(reg);
    }
    AgentVm::builder()
        .data_dir(dir)
        .scheduler(builder)
        .open()
        .await
        .expect("open a runtime with a scheduler")
}

/// That runtime behind agentvm-server on 127.0.0.1:0.
struct Served {
    vm: AgentVm,
    server: ServerManager,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Served {
    async fn start(auth: AuthMode, node: bool) -> Served {
        let dir = tempfile::tempdir().expect("tempdir");
        let vm = scheduler_vm(dir.path(), node).await;
        let server = ServerManager::new(
            vm.clone(),
            ServerConfig {
                auth,
                ..Default::default()
            },
        );
        let addr = server.listen("127.0.0.1:0").await.expect("listen");
        Served {
            vm,
            server,
            addr,
            _dir: dir,
        }
    }

    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    async fn client(&self, token: Option<&str>) -> WsClient {
        WsClient::try_connect(&self.ws_url(), token)
            .await
            .expect("connect")
    }
}

/// The busybox template as `template_create_request` data.
fn busybox(template_id: &str) -> Value {
    json!({"templateId": template_id, "name": "busybox", "image": TEST_IMAGE,
           "defaultCpuCores": 0.5, "defaultMemoryMb": 128, "defaultTimeoutS": 600,
           "workdir": "/workspace", "security": {"pidsLimit": 64}})
}

/// `data` of a successful response (panics with the error otherwise).
fn ok(r: Value) -> Value {
    assert!(r["data"]["error"].is_null(), "{r}");
    r["data"].clone()
}

/// `data.error` of a failed response, after checking its kind.
fn err(r: &Value, kind: &str) -> String {
    assert_eq!(r["data"]["errorKind"], kind, "{r}");
    r["data"]["error"]
        .as_str()
        .expect("an error message")
        .to_string()
}

/// Frames until `until`, keeping only the exec events and the exec response.
async fn exec_frames(c: &mut WsClient, until: &str) -> Vec<Frame> {
    c.frames_until(until)
        .await
        .into_iter()
        .filter(|f| {
            f.type_name().starts_with("sandbox_exec_")
                && f.type_name() != "sandbox_exec_cancel_response"
        })
        .collect()
}

/// The execution id of an exec event.
trait ExecutionIdOf {
    fn payload_execution_id(&self) -> Option<&str>;
}

impl ExecutionIdOf for Event {
    fn payload_execution_id(&self) -> Option<&str> {
        match &self.payload {
            EventPayload::SandboxExecStarted { execution_id, .. }
            | EventPayload::SandboxExecOutput { execution_id, .. }
            | EventPayload::SandboxExecFinished { execution_id, .. } => Some(execution_id),
            _ => None,
        }
    }
}

fn joined(frames: &[Frame], stream: &str) -> String {
    frames
        .iter()
        .filter(|f| f.type_name() == "sandbox_exec_output" && f.payload["data"]["stream"] == stream)
        .map(|f| f.payload["data"]["data"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_end_to_end_over_the_websocket_only() {
    if !require_docker().await {
        return;
    }
    let s = Served::start(AuthMode::Auto, true).await;
    let mut c = s.client(None).await;

    let t = ok(c
        .request("template_create_request", busybox("busybox"))
        .await);
    assert_eq!(t["template"]["id"], "busybox");
    assert_eq!(t["template"]["defaultMemoryMb"], 128);
    let templates = ok(c.request("template_list_request", json!({})).await);
    assert_eq!(templates["templates"][0]["id"], "busybox");
    let nodes = ok(c.request("node_list_request", json!({})).await);
    assert_eq!(
        nodes["nodes"][0]["node_id"], "local",
        "node records stay snake_case"
    );

    let created = ok(c
        .request(
            "sandbox_create_request",
            json!({"templateId": "busybox", "owner": "user-alice"}),
        )
        .await);
    let sandbox = created["sandbox"].clone();
    assert_eq!(sandbox["status"], "running", "{sandbox}");
    assert_eq!(sandbox["owner"], "user-alice");
    let id = sandbox["id"].as_str().unwrap().to_string();

    // Subscribe to the sandbox's topic, then exec: output in order, then the response.
    c.send_text(&json!({"type":"subscribe","sessionId": id}).to_string())
        .await;
    let rid = c
        .send_request(
            "sandbox_exec_request",
            json!({"sandboxId": id, "command": ["/bin/sh", "-c", "echo hi; echo err >&2"]}),
        )
        .await;
    let frames = exec_frames(&mut c, "sandbox_exec_response").await;
    let kinds: Vec<&str> = frames.iter().map(Frame::type_name).collect();
    assert_eq!(kinds.first(), Some(&"sandbox_exec_started"), "{kinds:?}");
    assert_eq!(
        &kinds[kinds.len() - 2..],
        ["sandbox_exec_finished", "sandbox_exec_response"],
        "{kinds:?}"
    );
    assert!(kinds[1..kinds.len() - 2]
        .iter()
        .all(|k| *k == "sandbox_exec_output"));
    assert_eq!(joined(&frames, "stdout"), "hi\n");
    assert_eq!(joined(&frames, "stderr"), "err\n");
    let response = frames.last().unwrap();
    assert_eq!(response.payload["data"]["requestId"], rid);
    let execution = response.payload["data"]["execution"].clone();
    assert_eq!(execution["exitCode"], 0, "{execution}");
    assert_eq!(execution["status"], "completed");
    assert_eq!(execution["stdout"], "hi\n");
    assert_eq!(execution["stderr"], "err\n");
    let execution_id = execution["id"].as_str().unwrap().to_string();
    let events = &frames[..frames.len() - 1];
    for f in events {
        assert_eq!(f.payload["source"], "sandbox");
        assert_eq!(f.payload["context"]["containerId"], "user-alice");
        assert_eq!(f.payload["data"]["sandboxId"], id);
        assert_eq!(f.payload["data"]["executionId"], execution_id);
    }
    assert_eq!(events.last().unwrap().payload["data"]["exitCode"], 0);
    let cursors: Vec<u64> = events
        .iter()
        .map(|f| f.cursor.expect("sandbox topic events carry __cursor"))
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "{cursors:?}");

    // Another client replays the same events by cursor, in order, without duplicates.
    let mut late = s.client(None).await;
    late.send_text(
        &json!({"type":"subscribe","sessionId": id, "afterCursor": cursors[0].to_string()})
            .to_string(),
    )
    .await;
    let replayed: Vec<Frame> = late
        .frames_until("sandbox_exec_finished")
        .await
        .into_iter()
        .filter(|f| f.type_name().starts_with("sandbox_exec_"))
        .collect();
    assert_eq!(
        replayed
            .iter()
            .map(|f| f.cursor.unwrap())
            .collect::<Vec<_>>(),
        cursors[1..]
    );
    assert_eq!(
        replayed.iter().map(|f| &f.payload).collect::<Vec<_>>(),
        events[1..].iter().map(|f| &f.payload).collect::<Vec<_>>()
    );

    // Files: write (utf8 and base64), read both ways, list, delete.
    let w = ok(c
        .request(
            "sandbox_file_write_request",
            json!({"sandboxId": id, "path": "a.txt", "content": "hello\n"}),
        )
        .await);
    assert_eq!(
        w,
        json!({"path": "a.txt", "size": 6, "requestId": w["requestId"]})
    );
    ok(c.request(
        "sandbox_file_write_request",
        json!({"sandboxId": id, "path": "/workspace/b.bin", "content": "AP8B", "encoding": "base64"}),
    )
    .await);
    let r = ok(c
        .request(
            "sandbox_file_read_request",
            json!({"sandboxId": id, "path": "a.txt"}),
        )
        .await);
    assert_eq!(
        (
            r["content"].as_str(),
            r["encoding"].as_str(),
            r["size"].as_u64()
        ),
        (Some("hello\n"), Some("utf8"), Some(6))
    );
    let r = ok(c
        .request(
            "sandbox_file_read_request",
            json!({"sandboxId": id, "path": "b.bin", "encoding": "base64"}),
        )
        .await);
    assert_eq!(r["content"], "AP8B");
    let e = c
        .request(
            "sandbox_file_read_request",
            json!({"sandboxId": id, "path": "b.bin"}),
        )
        .await;
    assert!(err(&e, "invalid_input").contains("not UTF-8"), "{e}");
    let list = ok(c
        .request("sandbox_file_list_request", json!({"sandboxId": id}))
        .await);
    let names: Vec<&str> = list["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"a.txt") && names.contains(&"b.bin"),
        "{names:?}"
    );
    let a = list["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "a.txt")
        .unwrap();
    assert_eq!(
        (&a["path"], &a["size"]),
        (&json!("/workspace/a.txt"), &json!(6))
    );
    ok(c.request(
        "sandbox_file_delete_request",
        json!({"sandboxId": id, "path": "a.txt"}),
    )
    .await);
    let e = c
        .request(
            "sandbox_file_read_request",
            json!({"sandboxId": id, "path": "a.txt"}),
        )
        .await;
    assert!(err(&e, "not_found").contains("/workspace/a.txt"), "{e}");
    let e = c
        .request(
            "sandbox_file_delete_request",
            json!({"sandboxId": id, "path": "/workspace"}),
        )
        .await;
    assert!(err(&e, "invalid_input").contains("recursive"), "{e}");

    // Executions.
    let got = ok(c
        .request(
            "execution_get_request",
            json!({"executionId": execution_id}),
        )
        .await);
    assert_eq!(got["execution"], execution);
    let listed = ok(c
        .request("execution_list_request", json!({"sandboxId": id}))
        .await);
    assert_eq!(listed["executions"], json!([execution]));

    // A long exec is cancelled from the same connection while it runs.
    let started = Instant::now();
    let rid = c
        .send_request(
            "sandbox_exec_request",
            json!({"sandboxId": id, "command": ["/bin/sh", "-c", "echo going; sleep 60"]}),
        )
        .await;
    let first = exec_frames(&mut c, "sandbox_exec_started").await;
    let running_id = first.last().unwrap().payload["data"]["executionId"]
        .as_str()
        .unwrap()
        .to_string();
    let cancel = ok(c
        .request(
            "sandbox_exec_cancel_request",
            json!({"executionId": running_id}),
        )
        .await);
    assert_eq!(cancel["cancelled"], true, "{cancel}");
    assert_eq!(cancel["execution"]["status"], "cancelled");
    let r = c.response_to(&rid).await;
    assert_eq!(r["data"]["execution"]["status"], "cancelled", "{r}");
    assert_eq!(r["data"]["execution"]["stdout"], "going\n");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let again = ok(c
        .request(
            "sandbox_exec_cancel_request",
            json!({"executionId": running_id}),
        )
        .await);
    assert_eq!(
        again["cancelled"], false,
        "an ended execution is not cancelled twice"
    );

    // The remote runtime: the same command and the same events, through agentvm::connect.
    let remote = connect(&s.ws_url(), ConnectOptions::default())
        .await
        .unwrap();
    let mut watched = remote
        .subscribe(EventFilter {
            sessions: vec![(id.clone(), None)],
            ..Default::default()
        })
        .await
        .unwrap();
    let Response::SandboxExec(x) = remote
        .request(Command::SandboxExec(SandboxExecRequest {
            sandbox_id: id.clone(),
            command: vec!["/bin/sh".into(), "-c".into(), "echo remote".into()],
            ..Default::default()
        }))
        .await
        .unwrap()
    else {
        panic!("not a sandbox_exec_response")
    };
    assert_eq!(x.execution.stdout, "remote\n");
    let mut kinds = Vec::new();
    while let Some(BusItem::Event(p)) = watched.try_recv() {
        if p.event.payload_execution_id() == Some(x.execution.id.as_str()) {
            kinds.push(p.event.type_name());
        }
    }
    assert_eq!(
        kinds,
        [
            "sandbox_exec_started",
            "sandbox_exec_output",
            "sandbox_exec_finished"
        ],
        "the events reach the remote subscriber before the response"
    );

    // Delete: the sandbox is gone.
    let d = ok(c
        .request("sandbox_delete_request", json!({"sandboxId": id}))
        .await);
    assert_eq!(d["sandboxId"], id);
    let g = ok(c
        .request("sandbox_get_request", json!({"sandboxId": id}))
        .await);
    assert!(g["sandbox"].is_null(), "{g}");
    ok(
        c.request("template_delete_request", json!({"templateId": "busybox"}))
            .await,
    );
    let m = ok(c.request("scheduler_metrics_request", json!({})).await);
    assert_eq!(m["metrics"]["executions"], 3, "{m}");
    s.server.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_through_runtime_request_in_process() {
    if !require_docker().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vm = scheduler_vm(dir.path(), true).await;
    let request = TemplateCreateRequest {
        template_id: "busybox".into(),
        name: "busybox".into(),
        docker_image: TEST_IMAGE.into(),
        runtime_type: None,
        default_cpu_cores: Some(0.5),
        default_memory_mb: Some(128),
        default_disk_mb: None,
        default_timeout_s: Some(600),
        idle_timeout_s: None,
        idle_action: Default::default(),
        env: Default::default(),
        network: None,
        credentials: Vec::new(),
        security: None,
        workdir: Some("/workspace".into()),
        command: None,
        warm_pool_size: None,
    };
    let (_, spec) = request.clone().into_parts();
    let Response::TemplateCreate(created) =
        vm.request(Command::TemplateCreate(request)).await.unwrap()
    else {
        panic!("not a template_create_response")
    };
    let template = created.template;
    assert_eq!(template.spec, spec);

    // A tenant's view creates a sandbox for its container and watches its topic.
    let alice = vm.scoped(Scope::containers(["user-alice"]));
    let Response::SandboxCreate(created) = alice
        .request(Command::SandboxCreate(SandboxCreateRequest {
            template_id: "busybox".into(),
            owner: Some("user-alice".into()),
            ..Default::default()
        }))
        .await
        .unwrap()
    else {
        panic!("not a sandbox_create_response")
    };
    let id = created.sandbox.id.clone();
    let mut events = alice
        .subscribe(EventFilter {
            sessions: vec![(id.clone(), None)],
            ..Default::default()
        })
        .await
        .unwrap();
    let Response::SandboxExec(done) = alice
        .request(Command::SandboxExec(SandboxExecRequest {
            sandbox_id: id.clone(),
            command: vec![
                "/bin/sh".into(),
                "-c".into(),
                "echo hi; echo err >&2".into(),
            ],
            ..Default::default()
        }))
        .await
        .unwrap()
    else {
        panic!("not a sandbox_exec_response")
    };
    assert_eq!(done.execution.exit_code, Some(0));
    assert_eq!(done.execution.stdout, "hi\n");
    // Everything was published before the response: the subscription holds it all.
    let mut kinds = Vec::new();
    let mut stdout = String::new();
    while let Some(BusItem::Event(p)) = events.try_recv() {
        kinds.push(p.event.type_name());
        if let EventPayload::SandboxExecOutput { stream, data, .. } = &p.event.payload {
            if stream == "stdout" {
                stdout.push_str(data);
            }
        }
    }
    assert_eq!(kinds.first(), Some(&"sandbox_exec_started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"sandbox_exec_finished"), "{kinds:?}");
    assert_eq!(stdout, "hi\n");

    // Files and executions.
    alice
        .request(Command::SandboxFileWrite(SandboxFileWriteRequest {
            sandbox_id: id.clone(),
            path: "n.txt".into(),
            content: "bm90ZQ==".into(),
            encoding: FileEncoding::Base64,
        }))
        .await
        .unwrap();
    let Response::SandboxFileRead(read) = alice
        .request(Command::SandboxFileRead(SandboxFileReadRequest {
            sandbox_id: id.clone(),
            path: "n.txt".into(),
            encoding: FileEncoding::Utf8,
        }))
        .await
        .unwrap()
    else {
        panic!("not a sandbox_file_read_response")
    };
    assert_eq!(read.content, "note");
    let Response::ExecutionGet(got) = alice
        .request(Command::ExecutionGet(ExecutionGetRequest {
            execution_id: done.execution.id.clone(),
        }))
        .await
        .unwrap()
    else {
        panic!("not an execution_get_response")
    };
    assert_eq!(got.execution.as_ref(), Some(&done.execution));

    // Another tenant sees none of it.
    let bob = vm.scoped(Scope::containers(["user-bob"]));
    let e = bob
        .subscribe(EventFilter {
            sessions: vec![(id.clone(), None)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), format!("Sandbox not found: {id}"));
    let e = bob
        .request(Command::SandboxExec(SandboxExecRequest {
            sandbox_id: id.clone(),
            command: vec!["true".into()],
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // Cancel in process: the exec's request is answered with status cancelled.
    let runner = alice.clone();
    let sid = id.clone();
    let started = Instant::now();
    let long = tokio::spawn(async move {
        runner
            .request(Command::SandboxExec(SandboxExecRequest {
                sandbox_id: sid,
                command: vec!["/bin/sh".into(), "-c".into(), "sleep 60".into()],
                ..Default::default()
            }))
            .await
    });
    let execution_id = loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("the exec starts")
        {
            Some(BusItem::Event(p)) => {
                if let EventPayload::SandboxExecStarted { execution_id, .. } = &p.event.payload {
                    if *execution_id != done.execution.id {
                        break execution_id.clone();
                    }
                }
            }
            other => panic!("{other:?}"),
        }
    };
    let Response::SandboxExecCancel(c) = alice
        .request(Command::SandboxExecCancel(SandboxExecCancelRequest {
            execution_id: execution_id.clone(),
        }))
        .await
        .unwrap()
    else {
        panic!("not a sandbox_exec_cancel_response")
    };
    assert!(c.cancelled);
    let Ok(Response::SandboxExec(x)) = long.await.unwrap() else {
        panic!("the cancelled exec is answered")
    };
    assert_eq!(
        x.execution.status,
        agentvm::scheduler::ExecStatus::Cancelled
    );
    assert!(started.elapsed() < Duration::from_secs(30));

    alice
        .request(Command::SandboxDelete(SandboxDeleteRequest {
            sandbox_id: id.clone(),
        }))
        .await
        .unwrap();
    let Response::SandboxGet(g) = vm
        .request(Command::SandboxGet(SandboxGetRequest { sandbox_id: id }))
        .await
        .unwrap()
    else {
        panic!("not a sandbox_get_response")
    };
    assert!(g.sandbox.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_token_uses_its_own_sandboxes_only() {
    if !require_docker().await {
        return;
    }
    let s = Served::start(AuthMode::Required, true).await;
    let (operator, _) = auth::create_token(&**s.vm.store(), None).unwrap();
    let (tenant_a, _) = auth::create_token(&**s.vm.store(), Some(vec!["tenant-a".into()])).unwrap();
    let (tenant_b, _) = auth::create_token(&**s.vm.store(), Some(vec!["tenant-b".into()])).unwrap();
    let mut op = s.client(Some(&operator)).await;
    let mut a = s.client(Some(&tenant_a)).await;
    let mut b = s.client(Some(&tenant_b)).await;
    ok(op
        .request("template_create_request", busybox("busybox"))
        .await);

    // Tenants read templates, but must own what they create.
    let t = ok(a
        .request("template_get_request", json!({"templateId": "busybox"}))
        .await);
    assert_eq!(t["template"]["image"], TEST_IMAGE);
    let e = a
        .request("sandbox_create_request", json!({"templateId": "busybox"}))
        .await;
    assert!(err(&e, "unauthorized").contains("needs an owner"), "{e}");
    let e = a
        .request(
            "sandbox_create_request",
            json!({"templateId": "busybox", "owner": "tenant-b"}),
        )
        .await;
    err(&e, "unauthorized");
    let sandbox = ok(a
        .request(
            "sandbox_create_request",
            json!({"templateId": "busybox", "owner": "tenant-a"}),
        )
        .await)["sandbox"]
        .clone();
    let id = sandbox["id"].as_str().unwrap().to_string();
    let x = ok(a
        .request(
            "sandbox_exec_request",
            json!({"sandboxId": id, "command": ["/bin/sh", "-c", "id -u"]}),
        )
        .await);
    assert_eq!(x["execution"]["status"], "completed", "{x}");

    // Tenant B: tenant A's sandbox does not exist.
    let g = ok(b
        .request("sandbox_get_request", json!({"sandboxId": id}))
        .await);
    assert!(g["sandbox"].is_null());
    let e = b
        .request(
            "sandbox_exec_request",
            json!({"sandboxId": id, "command": ["true"]}),
        )
        .await;
    assert_eq!(err(&e, "not_found"), format!("Sandbox not found: {id}"));
    for (t, data) in [
        (
            "sandbox_file_read_request",
            json!({"sandboxId": id, "path": "x"}),
        ),
        ("execution_list_request", json!({"sandboxId": id})),
        ("sandbox_delete_request", json!({"sandboxId": id})),
    ] {
        let e = b.request(t, data).await;
        assert_eq!(
            err(&e, "not_found"),
            format!("Sandbox not found: {id}"),
            "{t}"
        );
    }
    let g = ok(b
        .request(
            "execution_get_request",
            json!({"executionId": x["execution"]["id"]}),
        )
        .await);
    assert!(g["execution"].is_null());
    let l = ok(b.request("sandbox_list_request", json!({})).await);
    assert_eq!(l["sandboxes"], json!([]));
    b.send_text(&json!({"type":"subscribe","sessionId": id}).to_string())
        .await;
    let f = b.frames_until("system_error").await.pop().unwrap();
    assert_eq!(
        f.payload["data"]["message"],
        format!("Sandbox not found: {id}")
    );
    // Tenant A lists it; the operator sees it too.
    let l = ok(a.request("sandbox_list_request", json!({})).await);
    assert_eq!(l["sandboxes"][0]["id"], id);
    let l = ok(op
        .request("sandbox_list_request", json!({"owner": "tenant-a"}))
        .await);
    assert_eq!(l["sandboxes"][0]["id"], id);

    // Operator commands refuse a tenant.
    for (t, data) in [
        ("node_list_request", json!({})),
        ("node_get_request", json!({"nodeId": "local"})),
        (
            "node_update_request",
            json!({"nodeId": "local", "status": "draining"}),
        ),
        ("node_delete_request", json!({"nodeId": "local"})),
        (
            "node_register_request",
            json!({"nodeId": "x", "apiEndpoint": ENDPOINT}),
        ),
        ("node_heartbeat_request", json!({"nodeId": "local"})),
        ("template_create_request", busybox("mine")),
        ("template_update_request", busybox("busybox")),
        ("template_delete_request", json!({"templateId": "busybox"})),
        ("scheduler_metrics_request", json!({})),
        ("token_create_request", json!({"containers": ["tenant-a"]})),
        ("token_list_request", json!({})),
        ("token_revoke_request", json!({"tokenId": "tok_x"})),
    ] {
        let e = a.request(t, data).await;
        assert!(
            err(&e, "unauthorized").contains("needs an operator token"),
            "{t}: {e}"
        );
    }
    // The connection is still usable, and the node untouched.
    let n = ok(op
        .request("node_get_request", json!({"nodeId": "local"}))
        .await);
    assert_eq!(n["node"]["admin_status"], "online");
    ok(
        a.request("sandbox_delete_request", json!({"sandboxId": id}))
            .await,
    );
    s.server.close().await;
}

#[tokio::test]
async fn tokens_are_created_listed_and_revoked_over_the_websocket() {
    let s = TestServer::start_with(
        ServerConfig {
            auth: AuthMode::Required,
            ..Default::default()
        },
        MockDriver::default(),
    )
    .await;
    let (operator, operator_rec) = auth::create_token(&**s.vm.store(), None).unwrap();
    let mut op = WsClient::try_connect(&s.ws_url(), Some(&operator))
        .await
        .unwrap();

    let created = ok(op
        .request("token_create_request", json!({"containers": ["c1"]}))
        .await);
    let secret = created["token"].as_str().unwrap().to_string();
    assert!(secret.starts_with("avm_"), "{created}");
    let token_id = created["id"].as_str().unwrap().to_string();
    for (field, value) in [
        ("token", json!(secret)),
        ("id", json!(token_id)),
        ("containers", json!(["c1"])),
        ("revokedAt", Value::Null),
    ] {
        assert_eq!(created[field], value, "{field} in {created}");
    }
    assert!(created["createdAt"].is_i64(), "{created}");

    // The new token works, scoped to its container.
    let mut t = WsClient::try_connect(&s.ws_url(), Some(&secret))
        .await
        .unwrap();
    ok(
        t.request("container_create_request", json!({"containerId": "c1"}))
            .await,
    );
    let e = t
        .request("container_create_request", json!({"containerId": "c2"}))
        .await;
    err(&e, "unauthorized");

    // Listed without secrets or hashes.
    let listed = ok(op.request("token_list_request", json!({})).await);
    let text = listed.to_string();
    assert!(!text.contains(&secret) && !text.contains("hash"), "{text}");
    let ids: Vec<&str> = listed["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [operator_rec.id.as_str(), token_id.as_str()]);
    assert!(
        listed["tokens"][0]["containers"].is_null(),
        "an operator token: all"
    );

    // Revoked: refused from the next connection on; revoking an unknown id is not found.
    let revoked = ok(op
        .request("token_revoke_request", json!({"tokenId": token_id}))
        .await);
    assert!(revoked["revokedAt"].is_i64(), "{revoked}");
    let refused = WsClient::try_connect(&s.ws_url(), Some(&secret)).await;
    assert!(refused.is_err(), "a revoked token is refused");
    let e = op
        .request("token_revoke_request", json!({"tokenId": "tok_nope"}))
        .await;
    assert_eq!(err(&e, "not_found"), "Token not found: tok_nope");
    let e = op
        .request("token_create_request", json!({"containers": []}))
        .await;
    assert!(
        err(&e, "invalid_input").contains("at least one container"),
        "{e}"
    );
    s.server.close().await;
}

#[tokio::test]
async fn bad_input_is_answered_clearly_and_the_connection_stays_usable() {
    // A scheduler without nodes: nothing here reaches Docker.
    let s = Served::start(AuthMode::Auto, false).await;
    let mut c = s.client(None).await;
    let cases = [
        (
            "sandbox_get_request",
            json!({"sandboxId": "sbx_1", "sandboxID": "x"}),
            "invalid_input",
            "unknown field `sandboxID`",
        ),
        (
            "sandbox_exec_request",
            json!({"command": ["true"]}),
            "invalid_input",
            "missing field `sandboxId`",
        ),
        (
            "sandbox_exec_request",
            json!({"sandboxId": "sbx_missing", "command": ["true"]}),
            "not_found",
            "Sandbox not found: sbx_missing",
        ),
        (
            "sandbox_exec_cancel_request",
            json!({"executionId": "exec_missing"}),
            "not_found",
            "Execution not found: exec_missing",
        ),
        (
            "sandbox_file_write_request",
            json!({"sandboxId": "sbx_missing", "path": "a", "content": "not base64!", "encoding": "base64"}),
            "invalid_input",
            "content is not valid base64",
        ),
        (
            "sandbox_file_write_request",
            json!({"sandboxId": "sbx_missing", "path": "a", "content": "x", "encoding": "hex"}),
            "invalid_input",
            "unknown variant `hex`",
        ),
        (
            "node_update_request",
            json!({"nodeId": "local", "status": "offline"}),
            "invalid_input",
            "set draining or maintenance instead",
        ),
        (
            "template_create_request",
            json!({"templateId": "t", "name": "t", "image": "x:1", "network": {"mode": "allowlist", "hosts": ["http://x.org"]}}),
            "invalid_input",
            "allowlist host \"http://x.org\"",
        ),
    ];
    for (t, data, kind, want) in cases {
        let id = c.send_request(t, data).await;
        let f = c.next_frame().await;
        assert_eq!(f.type_name(), "system_error", "{t}");
        assert_eq!(f.payload["data"]["requestId"], id.as_str());
        let r = c.response_to(&id).await;
        assert_eq!(r["type"], t.replace("_request", "_response"));
        let e = err(&r, kind);
        assert!(e.contains(want), "{t}: {e}");
        // Still usable.
        ok(c.request("template_list_request", json!({})).await);
    }
    // Unknown sandbox topics are refused like unknown sessions (to a client that asks).
    c.send_text(
        &json!({"type":"subscribe","sessionId": "sbx_missing","__subscribeResponse": true})
            .to_string(),
    )
    .await;
    let f = c.next_frame().await;
    assert_eq!(
        f.payload["data"]["message"],
        "Sandbox not found: sbx_missing"
    );
    s.server.close().await;
}

#[tokio::test]
async fn a_runtime_without_a_scheduler_answers_unavailable() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    for (t, data) in [
        ("sandbox_list_request", json!({})),
        ("template_list_request", json!({})),
        ("node_list_request", json!({})),
        (
            "sandbox_exec_request",
            json!({"sandboxId": "sbx_1", "command": ["true"]}),
        ),
        ("scheduler_metrics_request", json!({})),
    ] {
        let r = c.request(t, data).await;
        assert!(
            err(&r, "unavailable").contains("no sandbox scheduler"),
            "{t}: {r}"
        );
    }
    // Token commands need no scheduler.
    let listed = ok(c.request("token_list_request", json!({})).await);
    assert_eq!(listed["tokens"], json!([]));
    // In process too.
    let e =
        s.vm.request(Command::SandboxList(SandboxListRequest::default()))
            .await
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    s.server.close().await;
}
