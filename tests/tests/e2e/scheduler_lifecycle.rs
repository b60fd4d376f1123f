//! A sandbox between its start and its end, on real Docker: pause and resume (by request, by
//! the idle sweep, by the next exec or file operation), its deadline and its extension,
//! snapshots, usage, and a restart that finds a paused sandbox.

use agentvm::model::scheduler::IdleAction;
use agentvm::scheduler::{
    ExecRequest, NodeRegistration, SandboxRequest, SandboxStatus, Scheduler, TerminationReason,
};
use agentvm::{
    AgentVm, Bus, BusConfig, BusItem, Command, ErrorKind, EventFilter, EventPayload, RedbStore,
    Response, Runtime, SchedulerConfig, Scope, ScopedRuntime, Store,
};
use agentvm_e2e::docker::*;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A scheduler whose events go to a bus the test reads.
async fn with_bus(config: SchedulerConfig) -> (Scheduler, agentvm::Subscription) {
    let bus = Bus::in_memory(BusConfig::default());
    let events = bus.subscribe(EventFilter::everything()).unwrap();
    let s = Scheduler::builder()
        .events(Arc::new(bus.clone()))
        .config(config)
        .open()
        .await
        .unwrap();
    let mut reg = NodeRegistration::new("local", ENDPOINT);
    reg.total_cpu_cores = Some(4.0);
    reg.total_memory_mb = Some(8192);
    s.register_node(reg).await.unwrap();
    (s, events)
}

/// The next event of type `name` within 10 s, skipping others.
async fn next_of(events: &mut agentvm::Subscription, name: &str) -> EventPayload {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| panic!("no {name} event within 10 s"));
        if let Some(BusItem::Event(p)) = item {
            if p.event.type_name() == name {
                return p.event.payload.clone();
            }
        }
    }
}

#[tokio::test]
async fn pause_freezes_and_the_next_exec_or_file_operation_resumes() {
    if !require_docker().await {
        return;
    }
    let (s, mut events) = with_bus(fast_config()).await;
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let sb = s
        .create_sandbox(SandboxRequest {
            owner: Some("user-alice".into()),
            ..SandboxRequest::new("busybox")
        })
        .await
        .unwrap();
    let paused = s.pause_sandbox(&sb.id).await.unwrap();
    assert_eq!(paused.status, SandboxStatus::Paused);
    assert!(paused.paused_at.is_some());
    let EventPayload::SandboxPaused { sandbox_id, reason } =
        next_of(&mut events, "sandbox_paused").await
    else {
        unreachable!()
    };
    assert_eq!(
        (sandbox_id.as_str(), reason.as_str()),
        (sb.id.as_str(), "requested")
    );
    let d = local().await;
    let state = d
        .inspect_container(&sb.docker_container_name, None)
        .await
        .unwrap()
        .state
        .unwrap();
    assert_eq!(state.paused, Some(true), "Docker says it is paused");

    let e = s.pause_sandbox(&sb.id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("already paused"), "{e}");

    // The next exec resumes it transparently.
    let run = s
        .exec_collect(&sb.id, ExecRequest::shell("echo back"))
        .await
        .unwrap();
    assert_eq!(run.stdout, "back\n");
    let EventPayload::SandboxResumed { reason, .. } = next_of(&mut events, "sandbox_resumed").await
    else {
        unreachable!()
    };
    assert_eq!(reason, "activity");
    let now = s.get_sandbox(&sb.id).await.unwrap().unwrap();
    assert_eq!(now.status, SandboxStatus::Running);
    assert!(now.paused_at.is_none() && now.resumed_at.is_some());

    // So does a file operation; resuming a running sandbox changes nothing.
    s.pause_sandbox(&sb.id).await.unwrap();
    s.write_file(&sb.id, "note.txt", b"kept".to_vec())
        .await
        .unwrap();
    assert_eq!(
        s.get_sandbox(&sb.id).await.unwrap().unwrap().status,
        SandboxStatus::Running
    );
    assert_eq!(s.read_file(&sb.id, "note.txt").await.unwrap(), b"kept");
    let same = s.resume_sandbox(&sb.id).await.unwrap();
    assert_eq!(same.status, SandboxStatus::Running);

    // A paused sandbox can be terminated; an ended one cannot be paused.
    s.pause_sandbox(&sb.id).await.unwrap();
    let ended = s.terminate_sandbox(&sb.id).await.unwrap();
    assert_eq!(ended.status, SandboxStatus::Terminated);
    let e = s.pause_sandbox(&sb.id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("has ended"), "{e}");
    let e = s.pause_sandbox("sbx_nope").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn an_idle_sandbox_pauses_itself_and_an_exec_brings_it_back() {
    if !require_docker().await {
        return;
    }
    let (s, mut events) = with_bus(fast_config()).await;
    let mut spec = busybox_spec();
    spec.idle_timeout_s = Some(1);
    spec.idle_action = IdleAction::Pause;
    s.create_template("napper", spec).await.unwrap();
    let sb = s
        .create_sandbox(SandboxRequest::new("napper"))
        .await
        .unwrap();
    assert_eq!(sb.idle_action, IdleAction::Pause);
    let EventPayload::SandboxPaused { reason, .. } = next_of(&mut events, "sandbox_paused").await
    else {
        unreachable!()
    };
    assert_eq!(reason, "idle");
    assert_eq!(
        s.get_sandbox(&sb.id).await.unwrap().unwrap().status,
        SandboxStatus::Paused,
        "paused, not terminated"
    );
    let run = s
        .exec_collect(&sb.id, ExecRequest::shell("echo awake"))
        .await
        .unwrap();
    assert_eq!(run.stdout, "awake\n");
    s.terminate_sandbox(&sb.id).await.unwrap();
}

#[tokio::test]
async fn a_sandbox_running_a_long_exec_is_not_ended_as_idle() {
    if !require_docker().await {
        return;
    }
    // Sweeps every 500 ms; the exec outlasts three idle timeouts.
    let s = local_scheduler(fast_config()).await;
    let mut spec = busybox_spec();
    spec.idle_timeout_s = Some(1);
    spec.idle_action = IdleAction::Terminate;
    s.create_template("brief", spec).await.unwrap();
    let sb = s
        .create_sandbox(SandboxRequest::new("brief"))
        .await
        .unwrap();
    let run = s
        .exec_collect(&sb.id, ExecRequest::shell("sleep 3; echo done"))
        .await
        .unwrap();
    assert_eq!(run.exit_code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "done\n");
    // Idle once the exec is over: the sweep ends it then, and says why.
    let deadline = Instant::now() + Duration::from_secs(15);
    let ended = loop {
        let now = s.get_sandbox(&sb.id).await.unwrap().unwrap();
        if now.status.is_terminal() {
            break now;
        }
        assert!(Instant::now() < deadline, "still {:?}", now.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let termination = ended.termination.expect("why it ended");
    assert_eq!(termination.reason, TerminationReason::Idle);
}

#[tokio::test]
async fn the_deadline_removes_the_sandbox_and_extend_moves_it() {
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(fast_config()).await;
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let short = s
        .create_sandbox(SandboxRequest {
            timeout_s: Some(1),
            ..SandboxRequest::new("busybox")
        })
        .await
        .unwrap();
    let extended = s
        .create_sandbox(SandboxRequest {
            timeout_s: Some(1),
            ..SandboxRequest::new("busybox")
        })
        .await
        .unwrap();
    let moved = s.extend_sandbox(&extended.id, 4).await.unwrap();
    assert!(moved.expires_at >= extended.expires_at + 2500, "{moved:?}");

    for (ttl, want) in [
        (0, "at least 1 second"),
        (-5, "must be positive"),
        (i64::MAX, "longest allowed"),
    ] {
        let e = s.extend_sandbox(&extended.id, ttl).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{ttl}");
        assert!(e.to_string().contains(want), "{ttl}: {e}");
    }
    let e = s.extend_sandbox("sbx_nope", 10).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);

    let d = local().await;
    eventually(
        Duration::from_secs(10),
        "the short sandbox to expire",
        || async {
            s.get_sandbox(&short.id).await.unwrap().unwrap().status == SandboxStatus::Timeout
        },
    )
    .await;
    let t = s.get_sandbox(&short.id).await.unwrap().unwrap();
    assert_eq!(t.termination.unwrap().reason, TerminationReason::Expired);
    assert!(
        d.inspect_container(&short.docker_container_name, None)
            .await
            .is_err(),
        "its container is removed"
    );
    assert_eq!(
        s.get_sandbox(&extended.id).await.unwrap().unwrap().status,
        SandboxStatus::Running,
        "the extended one lives on"
    );
    let e = s.extend_sandbox(&short.id, 10).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "an ended sandbox: {e}");
    eventually(
        Duration::from_secs(10),
        "the extended sandbox to expire",
        || async {
            s.get_sandbox(&extended.id).await.unwrap().unwrap().status == SandboxStatus::Timeout
        },
    )
    .await;
}

#[tokio::test]
async fn a_snapshot_keeps_the_files_and_sandboxes_from_it_see_them() {
    if !require_docker().await {
        return;
    }
    let (s, mut events) = with_bus(fast_config()).await;
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let sb = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap();
    s.write_file(&sb.id, "state.txt", b"before the snapshot".to_vec())
        .await
        .unwrap();
    s.pause_sandbox(&sb.id).await.unwrap();
    let (template, image) = s
        .snapshot_sandbox(&sb.id, Some("busybox-snap"), None)
        .await
        .unwrap();
    assert_eq!(template.id, "busybox-snap");
    assert_eq!(template.spec.docker_image, image);
    let EventPayload::SandboxSnapshotted { template_id, .. } =
        next_of(&mut events, "sandbox_snapshotted").await
    else {
        unreachable!()
    };
    assert_eq!(template_id, "busybox-snap");
    let d = local().await;
    let inspected = d.inspect_image(&image).await.unwrap();
    let labels = inspected.config.unwrap().labels.unwrap();
    assert_eq!(labels["agentvm.snapshot-of"], sb.id);
    let e = s
        .snapshot_sandbox(&sb.id, Some("busybox-snap"), None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);

    let copy = s
        .create_sandbox(SandboxRequest::new("busybox-snap"))
        .await
        .unwrap();
    assert_eq!(
        s.read_file(&copy.id, "state.txt").await.unwrap(),
        b"before the snapshot"
    );
    s.terminate_sandbox(&copy.id).await.unwrap();
    s.terminate_sandbox(&sb.id).await.unwrap();
    let _ = d
        .remove_image(
            &image,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        )
        .await;
}

#[tokio::test]
async fn usage_of_a_busy_sandbox_is_sane() {
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(fast_config()).await;
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let sb = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap();
    s.exec_collect(
        &sb.id,
        ExecRequest::shell("(while :; do :; done) >/dev/null 2>&1 &"),
    )
    .await
    .unwrap();
    let first = s.sandbox_usage(&sb.id).await.unwrap();
    assert!(first.cpu_percent.is_none(), "no previous sample: {first:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let u = s.sandbox_usage(&sb.id).await.unwrap();
    let cpu = u.cpu_percent.expect("a cpu percent on the second sample");
    // The template allows half a core.
    assert!(cpu > 15.0 && cpu < 80.0, "cpu {cpu}% of one core: {u:?}");
    assert!(u.cpu_total_ns > first.cpu_total_ns);
    assert!(
        u.memory_bytes > 0 && u.memory_bytes < u.memory_limit_bytes,
        "{u:?}"
    );
    assert_eq!(u.memory_limit_bytes, 128 * 1024 * 1024);
    assert!(u.pids >= 2, "sleep and the loop: {u:?}");
    assert_eq!((u.net_rx_bytes, u.net_tx_bytes), (0, 0), "no network");
    s.terminate_sandbox(&sb.id).await.unwrap();
    let e = s.sandbox_usage(&sb.id).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
}

#[tokio::test]
async fn a_restart_finds_a_paused_sandbox_paused_and_an_exec_resumes_it() {
    if !require_docker().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentvm.redb");
    let open = |path: std::path::PathBuf| async move {
        let store = RedbStore::open(&path).unwrap();
        let mut reg = NodeRegistration::new("local", ENDPOINT);
        reg.total_cpu_cores = Some(4.0);
        reg.total_memory_mb = Some(8192);
        Scheduler::builder()
            .store(store.scheduler_store().unwrap())
            .config(SchedulerConfig {
                background: false,
                ..fast_config()
            })
            .node(reg)
            .open()
            .await
            .unwrap()
    };
    let id = {
        let s = open(path.clone()).await;
        s.create_template("busybox", busybox_spec()).await.unwrap();
        let sb = s
            .create_sandbox(SandboxRequest::new("busybox"))
            .await
            .unwrap();
        s.write_file(&sb.id, "x", b"1".to_vec()).await.unwrap();
        s.pause_sandbox(&sb.id).await.unwrap();
        sb.id
    };
    let s = open(path).await;
    let sb = s.get_sandbox(&id).await.unwrap().unwrap();
    assert_eq!(sb.status, SandboxStatus::Paused, "{sb:?}");
    let run = s
        .exec_collect(&id, ExecRequest::shell("cat x"))
        .await
        .unwrap();
    assert_eq!(run.stdout, "1");
    assert_eq!(
        s.get_sandbox(&id).await.unwrap().unwrap().status,
        SandboxStatus::Running
    );
    s.terminate_sandbox(&id).await.unwrap();
}

/// Sends one command, as JSON, through a scoped runtime.
async fn request(vm: &ScopedRuntime, c: serde_json::Value) -> agentvm::Result<Response> {
    let command: Command = serde_json::from_value(c).unwrap();
    vm.request(command).await
}

#[tokio::test]
async fn a_tenant_cannot_pause_snapshot_or_watch_another_containers_sandbox() {
    if !require_docker().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut reg = NodeRegistration::new("local", ENDPOINT);
    reg.total_cpu_cores = Some(4.0);
    reg.total_memory_mb = Some(8192);
    let vm = AgentVm::builder()
        .data_dir(dir.path())
        .scheduler(Scheduler::builder().node(reg))
        .open()
        .await
        .unwrap();
    vm.scheduler()
        .unwrap()
        .create_template("busybox", busybox_spec())
        .await
        .unwrap();
    let alice = vm.scoped(Scope::containers(["user-alice"]));
    let bob = vm.scoped(Scope::containers(["user-bob"]));
    let Response::SandboxCreate(created) = request(
        &alice,
        serde_json::json!({"type": "sandbox_create_request", "data": {"templateId": "busybox", "owner": "user-alice"}}),
    )
    .await
    .unwrap() else {
        panic!("not a sandbox_create_response")
    };
    let id = created.sandbox.id;
    for t in [
        "sandbox_pause_request",
        "sandbox_resume_request",
        "sandbox_usage_request",
        "sandbox_snapshot_request",
    ] {
        let e = request(
            &bob,
            serde_json::json!({"type": t, "data": {"sandboxId": id}}),
        )
        .await
        .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{t}: {e}");
    }
    let e = request(
        &bob,
        serde_json::json!({"type": "sandbox_extend_request", "data": {"sandboxId": id, "ttlS": 60}}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    // Lifecycle events are scoped to the sandbox's owner.
    let global = EventFilter {
        global: true,
        ..Default::default()
    };
    let mut alice_events = alice.subscribe(global.clone()).await.unwrap();
    let mut bob_events = bob.subscribe(global).await.unwrap();
    // Alice may pause and see her own; a snapshot makes a template, which takes an operator.
    let Response::SandboxPause(p) = request(
        &alice,
        serde_json::json!({"type": "sandbox_pause_request", "data": {"sandboxId": id}}),
    )
    .await
    .unwrap() else {
        panic!("not a sandbox_pause_response")
    };
    assert_eq!(p.sandbox.status, SandboxStatus::Paused);
    next_of(&mut alice_events, "sandbox_paused").await;
    let leaked = tokio::time::timeout(Duration::from_millis(300), async {
        loop {
            if let Some(BusItem::Event(p)) = bob_events.recv().await {
                if p.event.type_name() == "sandbox_paused" {
                    return;
                }
            }
        }
    })
    .await;
    assert!(leaked.is_err(), "bob saw alice's sandbox_paused");
    let Response::SandboxUsage(u) = request(
        &alice,
        serde_json::json!({"type": "sandbox_usage_request", "data": {"sandboxId": id}}),
    )
    .await
    .unwrap() else {
        panic!("not a sandbox_usage_response")
    };
    assert_eq!(u.usage.status, SandboxStatus::Paused);
    assert!(u.usage.memory_bytes > 0);
    let e = request(
        &alice,
        serde_json::json!({"type": "sandbox_snapshot_request", "data": {"sandboxId": id}}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    let e = request(
        &alice,
        serde_json::json!({"type": "sandbox_extend_request", "data": {"sandboxId": id, "ttlS": -1}}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = request(
        &alice,
        serde_json::json!({"type": "sandbox_pause_request", "data": {"sandboxId": "sbx_unknown"}}),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    vm.scheduler()
        .unwrap()
        .terminate_sandbox(&id)
        .await
        .unwrap();
}
