//! A sandbox's life on real Docker: create -> exec -> files -> terminate, hardening and limits
//! seen from inside, streaming, output caps, the timeout that kills a process group, admission.

use agentvm::scheduler::{
    ExecEvent, ExecRequest, ExecStatus, SandboxRequest, SandboxStatus, TerminationReason,
};
use agentvm::{Bus, BusConfig, BusItem, ErrorKind, EventFilter, EventPayload};
use agentvm_e2e::docker::*;
use std::time::{Duration, Instant};

fn cgroup_read(v1: &str, v2: &str) -> String {
    format!("cat /sys/fs/cgroup/{v2} 2>/dev/null || cat /sys/fs/cgroup/{v1}")
}

#[tokio::test]
async fn create_exec_files_terminate_with_limits_visible_inside() {
    if !require_docker().await {
        return;
    }
    let bus = Bus::in_memory(BusConfig::default());
    let mut events = bus.subscribe(EventFilter::everything()).unwrap();
    let s = agentvm::Scheduler::builder()
        .events(std::sync::Arc::new(bus.clone()))
        .config(fast_config())
        .open()
        .await
        .unwrap();
    let mut reg = agentvm::scheduler::NodeRegistration::new("local", ENDPOINT);
    reg.total_cpu_cores = Some(4.0);
    reg.total_memory_mb = Some(8192);
    s.register_node(reg).await.unwrap();
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let sandbox = s
        .create_sandbox(SandboxRequest {
            owner: Some("user-alice".into()),
            ..SandboxRequest::new("busybox")
        })
        .await
        .unwrap();
    assert_eq!(sandbox.status, SandboxStatus::Running);
    assert_eq!(sandbox.user, "sandbox");
    assert_eq!(sandbox.uid_gid, Some((1000, 1000)));

    let hi = s
        .exec_collect(&sandbox.id, ExecRequest::shell("echo hi"))
        .await
        .unwrap();
    assert_eq!(
        (hi.stdout.as_str(), hi.exit_code, hi.status),
        ("hi\n", Some(0), ExecStatus::Completed)
    );
    let fail = s
        .exec_collect(&sandbox.id, ExecRequest::shell("echo oops >&2; exit 3"))
        .await
        .unwrap();
    assert_eq!(
        (fail.stderr.as_str(), fail.exit_code, fail.status),
        ("oops\n", Some(3), ExecStatus::Failed)
    );

    // Hardening and limits, as the sandbox sees them (cgroup v1 or v2).
    let inside = s
        .exec_collect(
            &sandbox.id,
            ExecRequest::shell(format!(
                "id -u; grep CapEff /proc/self/status | cut -f2; {}; {}; {}; {}; {}",
                cgroup_read("memory/memory.limit_in_bytes", "memory.max"),
                cgroup_read("memory/memory.memsw.limit_in_bytes", "memory.swap.max"),
                cgroup_read("pids/pids.max", "pids.max"),
                "cat /sys/fs/cgroup/cpu.max 2>/dev/null || echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)",
                "grep NoNewPrivs /proc/self/status | cut -f2",
            )),
        )
        .await
        .unwrap();
    let lines: Vec<&str> = inside.stdout.lines().collect();
    assert_eq!(lines[0], "1000", "{inside:?}");
    assert_eq!(lines[1], "0000000000000000", "no capabilities: {inside:?}");
    assert_eq!(
        lines[2],
        (128u64 * 1024 * 1024).to_string(),
        "memory: {inside:?}"
    );
    // v1 memsw is memory+swap (= memory: no swap); v2 swap.max is swap alone (0).
    assert!(
        lines[3] == (128u64 * 1024 * 1024).to_string() || lines[3] == "0",
        "swap: {inside:?}"
    );
    assert_eq!(lines[4], "64", "pids: {inside:?}");
    assert_eq!(
        lines[5], "50000 100000",
        "cpu quota of 0.5 cores: {inside:?}"
    );
    assert_eq!(lines[6], "1", "no-new-privileges: {inside:?}");
    let net = s
        .exec_collect(&sandbox.id, ExecRequest::shell("ls /sys/class/net"))
        .await
        .unwrap();
    assert_eq!(net.stdout.trim(), "lo", "network none: {net:?}");

    // Files: upload, download, list, and what the sandbox sees.
    s.write_file(&sandbox.id, "hello.txt", b"hello\nworld\n".to_vec())
        .await
        .unwrap();
    assert_eq!(
        s.read_file(&sandbox.id, "/workspace/hello.txt")
            .await
            .unwrap(),
        b"hello\nworld\n"
    );
    let cat = s
        .exec_collect(
            &sandbox.id,
            ExecRequest::shell("cat hello.txt && echo more >> hello.txt"),
        )
        .await
        .unwrap();
    assert_eq!(cat.stdout, "hello\nworld\n", "{cat:?}");
    assert_eq!(
        s.read_file(&sandbox.id, "hello.txt").await.unwrap(),
        b"hello\nworld\nmore\n"
    );
    let listed = s.list_files(&sandbox.id, ".").await.unwrap();
    let entry = listed
        .iter()
        .find(|e| e.name == "hello.txt")
        .expect("hello.txt is listed");
    assert_eq!(
        (entry.size, entry.path.as_str()),
        (17, "/workspace/hello.txt")
    );
    let e = s.read_file(&sandbox.id, "/workspace").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = s.read_file(&sandbox.id, "nope.txt").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    let e = s
        .write_file(&sandbox.id, "/no/such/dir/x", b"x".to_vec())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");

    // Terminate: the container is gone, the record says why, execs are refused clearly.
    let ended = s.terminate_sandbox(&sandbox.id).await.unwrap();
    assert_eq!(ended.status, SandboxStatus::Terminated);
    assert_eq!(
        ended.termination.as_ref().unwrap().reason,
        TerminationReason::Requested
    );
    let d = local().await;
    assert!(d
        .inspect_container(
            &sandbox.docker_container_name,
            None::<bollard::query_parameters::InspectContainerOptions>
        )
        .await
        .is_err());
    let e = s
        .exec_collect(&sandbox.id, ExecRequest::shell("true"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(
        e.to_string().contains("has ended: terminated (requested)"),
        "{e}"
    );
    assert_eq!(
        s.terminate_sandbox(&sandbox.id).await.unwrap().status,
        SandboxStatus::Terminated
    );

    // Every transition was an event, attributed to the owner.
    let mut seen = Vec::new();
    while let Some(BusItem::Event(p)) = events.try_recv() {
        if p.event.source == agentvm::Source::Sandbox {
            assert_eq!(p.event.container_id(), Some("user-alice"), "{:?}", p.event);
            seen.push(p.event.type_name());
        }
    }
    assert_eq!(
        seen,
        ["sandbox_created", "sandbox_ready", "sandbox_terminated"]
    );
    let node = s.get_node("local").unwrap().unwrap();
    assert_eq!(
        (node.running_containers, node.allocated_memory_mb),
        (0, 0),
        "accounting freed"
    );
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(fast_config()).await;
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let sandbox = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap();
    let started = Instant::now();
    let run = s
        .exec_collect(
            &sandbox.id,
            ExecRequest::shell("sleep 100 & sleep 100").timeout(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    assert_eq!(run.status, ExecStatus::Timeout, "{run:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let ps = s
        .exec_collect(&sandbox.id, ExecRequest::shell("ps -o pid,stat,args"))
        .await
        .unwrap();
    assert!(
        !ps.stdout.contains("sleep 100"),
        "processes left behind:\n{}",
        ps.stdout
    );
    assert_eq!(s.metrics().exec_timeouts, 1);
    s.terminate_sandbox(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn output_streams_in_order_and_is_capped() {
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(fast_config()).await;
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let sandbox = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap();
    let mut stream = s
        .exec(
            &sandbox.id,
            ExecRequest::shell("echo one; sleep 0.3; echo two >&2; echo three"),
        )
        .await
        .unwrap();
    let mut chunks = Vec::new();
    let mut finished = None;
    while let Some(e) = stream.next_event().await {
        match e {
            ExecEvent::Output { stream, data } => chunks.push(format!("{stream:?}:{data}")),
            ExecEvent::Finished(x) => finished = Some(*x),
        }
    }
    assert_eq!(
        chunks.first().map(String::as_str),
        Some("Stdout:one\n"),
        "{chunks:?}"
    );
    let x = finished.unwrap();
    assert_eq!(
        (x.stdout.as_str(), x.stderr.as_str()),
        ("one\nthree\n", "two\n")
    );
    let big = s
        .exec_collect(
            &sandbox.id,
            ExecRequest {
                max_output_bytes: Some(1000),
                ..ExecRequest::shell("yes | head -c 100000")
            },
        )
        .await
        .unwrap();
    assert_eq!(big.stdout.len(), 1000);
    assert!(big.truncated);
    assert_eq!(big.status, ExecStatus::Completed);
    // stdin is closed: cat returns at once.
    let cat = s
        .exec_collect(
            &sandbox.id,
            ExecRequest::shell("cat; echo done").timeout(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert_eq!(
        (cat.stdout.as_str(), cat.status),
        ("done\n", ExecStatus::Completed)
    );
    s.terminate_sandbox(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn read_only_root_and_a_bridge_created_on_demand() {
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(fast_config()).await;
    let mut spec = busybox_spec();
    spec.security.read_only_root = true;
    spec.network = agentvm::scheduler::NetworkPolicy::Bridge {
        name: "agentvm-test-net".into(),
        internal: true,
    };
    s.create_template("ro", spec).await.unwrap();
    let sandbox = s.create_sandbox(SandboxRequest::new("ro")).await.unwrap();
    let w = s
        .exec_collect(&sandbox.id, ExecRequest::shell("touch /etc/x 2>/dev/null && echo rw-root; touch /tmp/x /workspace/y && echo ok; ls /sys/class/net | sort | tr '\\n' ' '"))
        .await
        .unwrap();
    assert_eq!(w.stdout, "ok\neth0 lo ", "{w:?}");
    s.write_file(&sandbox.id, "f.txt", b"data".to_vec())
        .await
        .unwrap();
    assert_eq!(s.read_file(&sandbox.id, "f.txt").await.unwrap(), b"data");
    let d = local().await;
    let net = d
        .inspect_network(
            "agentvm-test-net",
            None::<bollard::query_parameters::InspectNetworkOptions>,
        )
        .await
        .unwrap();
    assert_eq!(net.internal, Some(true));
    s.terminate_sandbox(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn beyond_the_start_queue_is_busy_with_a_retry_hint() {
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(agentvm::SchedulerConfig {
        max_starts_in_flight: 1,
        max_start_queue: 1,
        ..fast_config()
    })
    .await;
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let creates = (0..4).map(|_| s.create_sandbox(SandboxRequest::new("busybox")));
    let results = futures::future::join_all(creates).await;
    let busy: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        !busy.is_empty(),
        "4 starts with 1 in flight and 1 queued: some must be refused"
    );
    for e in &busy {
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.retry_after().is_some(), "{e}");
        assert!(e.to_string().contains("retry after"), "{e}");
    }
    assert_eq!(s.metrics().busy_refusals as usize, busy.len());
    for r in results.into_iter().flatten() {
        s.terminate_sandbox(&r.id).await.unwrap();
    }
    let node = s.get_node("local").unwrap().unwrap();
    assert_eq!((node.in_flight, node.running_containers), (0, 0));
}

#[tokio::test]
async fn events_are_published_for_node_changes_too() {
    if !require_docker().await {
        return;
    }
    let bus = Bus::in_memory(BusConfig::default());
    let mut events = bus.subscribe(EventFilter::everything()).unwrap();
    let s = agentvm::Scheduler::builder()
        .events(std::sync::Arc::new(bus))
        .config(fast_config())
        .open()
        .await
        .unwrap();
    s.register_node(agentvm::scheduler::NodeRegistration::new("local", ENDPOINT))
        .await
        .unwrap();
    let mut saw = false;
    while let Some(BusItem::Event(p)) = events.try_recv() {
        if let EventPayload::NodeStatusChanged {
            node_id, status, ..
        } = &p.event.payload
        {
            saw |= node_id == "local" && status == "online";
        }
    }
    assert!(saw, "registration published node_status_changed online");
}
