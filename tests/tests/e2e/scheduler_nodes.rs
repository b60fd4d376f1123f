//! Two real Docker daemons as two runtime nodes, the second reached over TCP with TLS: each
//! sandbox is created on its own node's endpoint, placements follow the algorithm, and a node
//! whose heartbeats stop goes offline and gets nothing new.

use agentvm::scheduler::{
    Heartbeat, Liveness, NodeRegistration, NodeStatus, SandboxRequest, Scheduler,
};
use agentvm::{Bus, BusConfig, BusItem, EventFilter, EventPayload};
use agentvm_e2e::docker::*;
use std::collections::BTreeMap;
use std::time::Duration;

fn registration(id: &str, endpoint: String, liveness: Liveness) -> NodeRegistration {
    let mut r = NodeRegistration::new(id, endpoint);
    r.total_cpu_cores = Some(4.0);
    r.total_memory_mb = Some(4096);
    r.max_containers = 10;
    r.liveness = liveness;
    r
}

async fn counts(s: &Scheduler) -> BTreeMap<String, u32> {
    s.list_nodes()
        .into_iter()
        .map(|n| (n.node_id, n.running_containers))
        .collect()
}

#[tokio::test]
async fn two_daemons_placement_and_heartbeat_loss() {
    if !require_docker().await {
        return;
    }
    let second = SecondDaemon::start().await;
    let bus = Bus::in_memory(BusConfig::default());
    let mut events = bus.subscribe(EventFilter::everything()).unwrap();
    let s = Scheduler::builder()
        .events(std::sync::Arc::new(bus))
        .config(fast_config())
        .open()
        .await
        .unwrap();
    s.register_node(registration("node-a", ENDPOINT.into(), Liveness::Probe))
        .await
        .unwrap();
    let b = s
        .register_node(registration(
            "node-b",
            format!("unix://{}", second.socket),
            Liveness::Heartbeat,
        ))
        .await
        .unwrap();
    assert_eq!(b.status, NodeStatus::Online);
    assert!(
        b.cached_images.iter().any(|i| i == TEST_IMAGE),
        "images asked from node-b's own daemon: {:?}",
        b.cached_images
    );
    let beating = {
        let s = s.clone();
        tokio::spawn(async move {
            loop {
                s.heartbeat(Heartbeat {
                    node_id: "node-b".into(),
                    container_id: None,
                    timestamp: None,
                    cached_images: None,
                })
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    s.create_template("busybox", busybox_spec()).await.unwrap();

    // Both nodes hold the image and are equal: a burst spreads evenly (in-flight counts).
    let burst =
        futures::future::join_all((0..4).map(|_| s.create_sandbox(SandboxRequest::new("busybox"))))
            .await;
    let first: Vec<_> = burst.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        counts(&s).await,
        BTreeMap::from([("node-a".into(), 2), ("node-b".into(), 2)])
    );
    // Each container lives on the daemon of its node, and only there.
    let a = local().await;
    let bd = connect(&second.socket).await;
    let (on_a, on_b) = (
        containers_of(&a, s.instance()).await,
        containers_of(&bd, s.instance()).await,
    );
    assert_eq!((on_a.len(), on_b.len()), (2, 2));
    for sb in &first {
        let here = if sb.node_id == "node-a" { &on_a } else { &on_b };
        assert!(
            here.contains(sb.docker_container_id.as_ref().unwrap()),
            "{} is on {}'s daemon",
            sb.id,
            sb.node_id
        );
        let hi = s
            .exec_collect(&sb.id, agentvm::scheduler::ExecRequest::shell("echo hi"))
            .await
            .unwrap();
        assert_eq!(hi.stdout, "hi\n");
    }
    // Least committed next: a bigger sandbox on node-a makes node-b the choice.
    let big = s
        .create_sandbox(SandboxRequest {
            cpu_cores: Some(1.0),
            node_id: Some("node-a".into()),
            ..SandboxRequest::new("busybox")
        })
        .await
        .unwrap();
    assert_eq!(big.node_id, "node-a");
    let next = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap();
    assert_eq!(next.node_id, "node-b");

    // node-b's heartbeats stop: offline after `offline_after`, and nothing new goes there.
    beating.abort();
    eventually(Duration::from_secs(5), "node-b offline", || async {
        s.get_node("node-b").unwrap().unwrap().status == NodeStatus::Offline
    })
    .await;
    let msg = s
        .get_node("node-b")
        .unwrap()
        .unwrap()
        .status_message
        .unwrap();
    assert!(msg.contains("no heartbeat"), "{msg}");
    for _ in 0..3 {
        let sb = s
            .create_sandbox(SandboxRequest::new("busybox"))
            .await
            .unwrap();
        assert_eq!(sb.node_id, "node-a");
    }
    let e = s
        .create_sandbox(SandboxRequest {
            node_id: Some("node-b".into()),
            ..SandboxRequest::new("busybox")
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("node-b is offline"), "{e}");
    let mut offline_event = false;
    while let Some(BusItem::Event(p)) = events.try_recv() {
        if let EventPayload::NodeStatusChanged {
            node_id, status, ..
        } = &p.event.payload
        {
            offline_event |= node_id == "node-b" && status == "offline";
        }
    }
    assert!(offline_event, "node_status_changed offline was published");

    // A heartbeat brings it back; draining keeps it out of placement.
    s.heartbeat(Heartbeat {
        node_id: "node-b".into(),
        container_id: None,
        timestamp: None,
        cached_images: None,
    })
    .await
    .unwrap();
    s.set_node_status("node-b", NodeStatus::Draining)
        .await
        .unwrap();
    assert_eq!(
        s.create_sandbox(SandboxRequest::new("busybox"))
            .await
            .unwrap()
            .node_id,
        "node-a"
    );
    let e = s.remove_node("node-b").await.unwrap_err();
    assert_eq!(e.kind(), agentvm::ErrorKind::Conflict, "{e}");

    for sb in s.list_sandboxes().await.unwrap() {
        s.terminate_sandbox(&sb.id).await.unwrap();
    }
    assert!(containers_of(&a, s.instance()).await.is_empty());
    assert!(containers_of(&bd, s.instance()).await.is_empty());
    s.remove_node("node-b").await.unwrap();
    assert_eq!(s.list_nodes().len(), 1);
    drop(second);
}

/// A node given at open whose Docker does not answer is listed `offline` with the reason (never
/// dropped), gets no sandboxes, and comes online with its capacity once its Docker answers.
#[tokio::test]
async fn a_static_node_that_is_down_at_open_is_offline_then_comes_online() {
    if !require_docker().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let s = Scheduler::builder()
        .config(fast_config())
        .node(NodeRegistration::new(
            "late",
            format!("unix://{}", socket.display()),
        ))
        .open()
        .await
        .expect("a node that is down does not keep the scheduler from opening");
    let nodes = s.list_nodes();
    assert_eq!(nodes.len(), 1, "the node is listed, not dropped: {nodes:?}");
    assert_eq!(nodes[0].status, NodeStatus::Offline);
    let why = nodes[0].status_message.clone().unwrap_or_default();
    assert!(why.contains(&socket.display().to_string()), "{why}");
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let e = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("late") || e.to_string().contains("online"),
        "{e}"
    );

    // Its Docker answers now (the socket path leads to the real daemon).
    let real = ENDPOINT.trim_start_matches("unix://");
    std::os::unix::fs::symlink(real, &socket).unwrap();
    s.check_nodes().await;
    let n = s.get_node("late").unwrap().unwrap();
    assert_eq!(n.status, NodeStatus::Online, "{n:?}");
    assert!(n.total_memory_mb > 0 && n.total_cpu_cores > 0.0, "{n:?}");
}
