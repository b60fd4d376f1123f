//! Bad input gets clear errors: unknown templates, limits beyond capacity, unsupported options,
//! missing images, and a Docker daemon that does not answer (Unavailable, while chats go on).

use agentvm::scheduler::{
    NetworkPolicy, NodeRegistration, NodeStatus, SandboxRequest, Scheduler, TemplateSpec,
};
use agentvm::{ErrorKind, RuntimeExt};
use agentvm_e2e::docker::*;

#[tokio::test]
async fn unknown_templates_and_limits_beyond_capacity() {
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(fast_config()).await;
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let e = s
        .create_sandbox(SandboxRequest::new("nope"))
        .await
        .unwrap_err();
    assert_eq!(
        (e.kind(), e.to_string().as_str()),
        (ErrorKind::NotFound, "Template not found: nope")
    );
    let e = s
        .create_sandbox(SandboxRequest {
            cpu_cores: Some(64.0),
            ..SandboxRequest::new("busybox")
        })
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.to_string()
            .contains("the largest online node offers 4 cores and 8192 MiB"),
        "{e}"
    );
    let e = s
        .create_sandbox(SandboxRequest {
            memory_mb: Some(1),
            ..SandboxRequest::new("busybox")
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("at least 6 MiB"), "{e}");
    let e = s
        .create_template("busybox", busybox_spec())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists);
    let e = s
        .create_sandbox(SandboxRequest {
            node_id: Some("ghost".into()),
            ..SandboxRequest::new("busybox")
        })
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "Node not found: ghost");
    assert!(
        s.list_sandboxes().await.unwrap().is_empty(),
        "nothing was half-created"
    );
}

/// Sizes that overflow (`memoryMb: 2^64-1` once the node holds a sandbox used to wrap around in
/// placement and reach Docker as a negative limit) are refused as invalid input naming the
/// field, and no container is made for them.
#[tokio::test]
async fn sizes_that_would_overflow_are_refused_before_docker() {
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(fast_config()).await;
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let held = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap();
    let d = local().await;
    let before = containers_of(&d, s.instance()).await;
    assert_eq!(before.len(), 1);
    for (field, request) in [
        (
            "memoryMb",
            SandboxRequest {
                memory_mb: Some(u64::MAX),
                ..SandboxRequest::new("busybox")
            },
        ),
        (
            "diskMb",
            SandboxRequest {
                disk_mb: Some(u64::MAX),
                ..SandboxRequest::new("busybox")
            },
        ),
        (
            "cpuCores",
            SandboxRequest {
                cpu_cores: Some(1e300),
                ..SandboxRequest::new("busybox")
            },
        ),
    ] {
        let e = s.create_sandbox(request).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{field}: {e}");
        assert!(e.to_string().starts_with(field), "{e}");
        assert!(e.to_string().contains("too large"), "{e}");
    }
    assert_eq!(containers_of(&d, s.instance()).await, before);
    assert_eq!(s.list_sandboxes().await.unwrap().len(), 1);
    s.delete_sandbox(&held.id).await.unwrap();
}

#[tokio::test]
async fn unsupported_options_are_refused_not_dropped() {
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(fast_config()).await;
    let mut allow = busybox_spec();
    allow.network = NetworkPolicy::Allowlist {
        hosts: vec!["pypi.org".into(), "*.org".into()],
    };
    let e = s.create_template("t1", allow).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(
        e.to_string()
            .contains("allowlist host \"*.org\" would allow a whole top-level domain"),
        "{e}"
    );
    let mut caps = busybox_spec();
    caps.security.cap_add = vec!["SYS_ADMIN".into()];
    assert!(s
        .create_template("t2", caps)
        .await
        .unwrap_err()
        .to_string()
        .contains("SYS_ADMIN is not allowed"));
    let mut rt = busybox_spec();
    rt.runtime_type = "kata".into();
    assert!(s
        .create_template("t3", rt)
        .await
        .unwrap_err()
        .to_string()
        .contains("\"kata\" is not supported"));
    // A disk quota this node's storage driver cannot enforce: refused by name, not ignored.
    let mut disk = busybox_spec();
    disk.default_disk_mb = Some(100);
    s.create_template("disk", disk).await.unwrap();
    let e = s
        .create_sandbox(SandboxRequest::new("disk"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        e.to_string().contains("cannot limit a container's disk"),
        "{e}"
    );
    // An image the node does not have: agentvm never pulls.
    s.create_template(
        "ghost-image",
        TemplateSpec::new("g", "agentvm-test/not-there:1"),
    )
    .await
    .unwrap();
    let e = s
        .create_sandbox(SandboxRequest::new("ghost-image"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        e.to_string()
            .contains("is not on node local; agentvm never pulls"),
        "{e}"
    );
    let failed = s.list_sandboxes().await.unwrap();
    assert!(
        failed
            .iter()
            .all(|x| x.status == agentvm::scheduler::SandboxStatus::Failed),
        "{failed:?}"
    );
    assert!(
        containers_of(&local().await, s.instance()).await.is_empty(),
        "failed creates leave no container"
    );
    assert_eq!(s.get_node("local").unwrap().unwrap().in_flight, 0);
}

#[tokio::test]
async fn a_daemon_that_does_not_answer_is_unavailable_and_chats_go_on() {
    if !require_docker().await {
        return;
    }
    let vm = agentvm_e2e::mock_vm().await;
    let s = Scheduler::builder()
        .store(vm.store().scheduler_store().unwrap())
        .events(std::sync::Arc::new(vm.bus().clone()))
        .config(fast_config())
        .open()
        .await
        .unwrap();
    // No capacity given and nothing at the socket: registration cannot ask Docker.
    let e = s
        .register_node(NodeRegistration::new(
            "dead",
            "unix:///tmp/agentvm-no-docker.sock",
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(
        e.to_string()
            .contains("no socket at /tmp/agentvm-no-docker.sock"),
        "{e}"
    );
    // A socket file nobody listens on (a stopped daemon leaves one behind).
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("docker.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let mut reg = NodeRegistration::new("stopped", format!("unix://{}", sock.display()));
    reg.total_cpu_cores = Some(2.0);
    reg.total_memory_mb = Some(2048);
    let node = s.register_node(reg).await.unwrap();
    assert_eq!(node.status, NodeStatus::Offline);
    let why = node.status_message.unwrap();
    assert!(
        why.contains("Docker on node stopped") && why.contains("does not answer"),
        "{why}"
    );
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let e = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        e.to_string()
            .contains("stopped is offline: Docker on node stopped"),
        "{e}"
    );

    // Meanwhile the agents' side is unaffected.
    let image = vm
        .images()
        .create("user-alice", Default::default())
        .await
        .unwrap();
    let mut sub = vm
        .sessions()
        .events(&image.record.session_id)
        .await
        .unwrap();
    vm.agents()
        .send_to_image(&image.record.image_id, "Hello!")
        .await
        .unwrap();
    let turn = agentvm_e2e::collect_turn(&mut sub).await;
    assert!(!agentvm_e2e::text_of(&turn).is_empty());
}
