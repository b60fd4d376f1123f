//! The scheduler driven through its engine trait, with the simulated engine behind it: the
//! same placement, records, lifecycle and reconciliation as on Docker, without Docker. (The
//! Docker engine is tested end to end by the e2e `scheduler_*` suites.)

use agentvm_model::error::ErrorKind;
use agentvm_scheduler::engine::simulated::{Latencies, SimulatedConnector};
use agentvm_scheduler::{
    ExecRequest, Heartbeat, Liveness, NodeRegistration, NodeStatus, RedbSchedulerStore,
    SandboxRequest, SandboxStatus, Scheduler, SchedulerConfig, Stewardship, TemplateSpec,
};
use std::sync::Arc;

const IMAGE: &str = "sim/busybox:1";

fn connector() -> Arc<SimulatedConnector> {
    Arc::new(SimulatedConnector::new(
        Latencies::none(),
        8.0,
        16_384,
        vec![IMAGE.to_string()],
    ))
}

fn store(dir: &tempfile::TempDir) -> Arc<RedbSchedulerStore> {
    let db = redb::Database::create(dir.path().join("scheduler.redb")).expect("redb");
    Arc::new(RedbSchedulerStore::open(Arc::new(db)).expect("store"))
}

async fn open(connector: &Arc<SimulatedConnector>, store: Arc<RedbSchedulerStore>) -> Scheduler {
    Scheduler::builder()
        .config(SchedulerConfig {
            background: false,
            ..Default::default()
        })
        .store(store)
        .engine(connector.clone())
        .open()
        .await
        .expect("scheduler")
}

async fn with_node_and_template(s: &Scheduler) {
    // No capacity given: the engine's machine report fills it in.
    let node = s
        .register_node(NodeRegistration::new("sim-1", "tcp://10.0.0.1:2375"))
        .await
        .expect("register");
    assert_eq!(node.total_cpu_cores, 8.0);
    assert_eq!(node.total_memory_mb, 16_384);
    assert!(node.cached_images.contains(&IMAGE.to_string()));
    let mut spec = TemplateSpec::new("b", IMAGE);
    spec.default_cpu_cores = 1.0;
    spec.default_memory_mb = 512;
    s.create_template("b", spec).await.expect("template");
}

#[tokio::test]
async fn a_sandbox_lives_its_whole_life_through_the_engine_trait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = connector();
    let s = open(&sim, store(&dir)).await;
    with_node_and_template(&s).await;

    let sb = s
        .create_sandbox(SandboxRequest::new("b"))
        .await
        .expect("create");
    assert_eq!(sb.status, SandboxStatus::Running);
    // The readiness exec's answer came back through the trait.
    assert_eq!(sb.uid_gid, Some((65534, 65534)), "{sb:?}");
    let engine = sim.engine("sim-1").expect("connected");
    assert_eq!(engine.containers(), 1);
    let node = s.get_node("sim-1").expect("node").expect("node");
    assert_eq!(node.allocated_memory_mb, 512);

    let run = s
        .exec_collect(&sb.id, ExecRequest::shell("echo hi"))
        .await
        .expect("exec");
    assert_eq!((run.stdout.as_str(), run.exit_code), ("hi\n", Some(0)));

    // Pause, then an exec resumes it.
    let paused = s.pause_sandbox(&sb.id).await.expect("pause");
    assert_eq!(paused.status, SandboxStatus::Paused);
    let again = s.pause_sandbox(&sb.id).await.expect_err("paused twice");
    assert_eq!(again.kind(), ErrorKind::Conflict);
    let run = s
        .exec_collect(&sb.id, ExecRequest::shell("echo back"))
        .await
        .expect("exec resumes");
    assert_eq!(run.stdout, "back\n");
    let now = s.get_sandbox(&sb.id).await.expect("get").expect("sandbox");
    assert_eq!(now.status, SandboxStatus::Running);
    assert!(now.resumed_at.is_some());

    // A snapshot is an image on the node and a template to create from.
    let (template, image) = s
        .snapshot_sandbox(&sb.id, None, None)
        .await
        .expect("snapshot");
    assert_eq!(template.spec.docker_image, image);
    let from = s
        .create_sandbox(SandboxRequest::new(&template.id))
        .await
        .expect("create from the snapshot");
    assert_eq!(engine.containers(), 2);

    let usage = s.sandbox_usage(&sb.id).await.expect("usage");
    assert_eq!(usage.sandbox_id, sb.id);

    for id in [&sb.id, &from.id] {
        let ended = s.terminate_sandbox(id).await.expect("terminate");
        assert!(ended.status.is_terminal());
    }
    assert_eq!(engine.containers(), 0, "every container was removed");
    let node = s.get_node("sim-1").expect("node").expect("node");
    assert_eq!(node.allocated_memory_mb, 0);
    assert_eq!(node.running_containers, 0);
}

#[tokio::test]
async fn a_restarted_scheduler_adopts_what_the_engine_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = connector();
    let store = store(&dir);
    let (kept, paused) = {
        let s = open(&sim, store.clone()).await;
        with_node_and_template(&s).await;
        let a = s.create_sandbox(SandboxRequest::new("b")).await.expect("a");
        let b = s.create_sandbox(SandboxRequest::new("b")).await.expect("b");
        s.pause_sandbox(&b.id).await.expect("pause");
        (a.id, b.id)
    };
    // A new process on the same store and the same engines.
    let s = open(&sim, store).await;
    let a = s.get_sandbox(&kept).await.expect("get").expect("a");
    assert_eq!(a.status, SandboxStatus::Running);
    let b = s.get_sandbox(&paused).await.expect("get").expect("b");
    assert_eq!(b.status, SandboxStatus::Paused);
    let node = s.get_node("sim-1").expect("node").expect("node");
    assert_eq!(
        node.allocated_memory_mb, 1024,
        "both count against the node again"
    );
    // The adopted sandboxes work.
    let run = s
        .exec_collect(&paused, ExecRequest::shell("echo adopted"))
        .await
        .expect("exec resumes the adopted paused sandbox");
    assert_eq!(run.stdout, "adopted\n");
    // A container whose record is gone is removed by the next reconciliation.
    let engine = sim.engine("sim-1").expect("engine");
    assert_eq!(engine.containers(), 2);
    s.delete_sandbox(&kept).await.expect("delete");
    assert_eq!(engine.containers(), 1);
    let report = s.reconcile().await.expect("reconcile");
    assert!(
        report.lost.is_empty() && report.orphans_removed.is_empty(),
        "{report:?}"
    );
}

#[tokio::test]
async fn an_engine_that_stops_answering_turns_its_node_offline_and_creates_say_why() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = connector();
    let s = open(&sim, store(&dir)).await;
    with_node_and_template(&s).await;
    let sb = s
        .create_sandbox(SandboxRequest::new("b"))
        .await
        .expect("create");

    sim.set_down("sim-1", true);
    let e = s
        .exec_collect(&sb.id, ExecRequest::shell("echo hi"))
        .await
        .expect_err("the engine is down");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("sim-1"), "{e}");
    let node = s.get_node("sim-1").expect("node").expect("node");
    assert_eq!(node.status, NodeStatus::Offline);
    let e = s
        .create_sandbox(SandboxRequest::new("b"))
        .await
        .expect_err("no node to place on");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");

    // Back up: the probe brings the node online, and the sandbox answers again.
    sim.set_down("sim-1", false);
    s.check_nodes().await;
    let node = s.get_node("sim-1").expect("node").expect("node");
    assert_eq!(node.status, NodeStatus::Online);
    let run = s
        .exec_collect(&sb.id, ExecRequest::shell("echo up"))
        .await
        .expect("exec");
    assert_eq!(run.stdout, "up\n");
}

#[tokio::test]
async fn a_cluster_member_learns_nodes_from_the_store_and_coalesces_the_syncs_a_storm_forces() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = connector();
    let store = store(&dir);
    let member = |tenant: &'static str| {
        let (sim, store) = (sim.clone(), store.clone());
        async move {
            let stewardship = Arc::new(Stewardship::new());
            stewardship.hold(
                tenant,
                std::time::Instant::now() + std::time::Duration::from_secs(600),
            );
            Scheduler::builder()
                .config(SchedulerConfig {
                    background: false,
                    ..Default::default()
                })
                .store(store)
                .engine(sim)
                .stewardship(stewardship)
                .open()
                .await
                .expect("member")
        }
    };
    let a = member("t-a").await;
    let b = member("t-b").await;
    with_node_and_template(&a).await;
    let engine = sim.engine("sim-1").expect("engine");

    // B has not met the node: its first placement fails, syncs, probes it and places.
    let mut request = SandboxRequest::new("b");
    request.owner = Some("t-b".into());
    let sb = b
        .create_sandbox(request)
        .await
        .expect("B places on A's node");
    assert_eq!(sb.node_id, "sim-1");
    assert_eq!(engine.pings(), 1, "one health round");

    // Twenty creates that cannot be placed anywhere, at once: one sync and one health round
    // between them, not twenty.
    let storm = (0..20).map(|_| {
        let mut r = SandboxRequest::new("b");
        r.owner = Some("t-b".into());
        r.cpu_cores = Some(64.0);
        b.create_sandbox(r)
    });
    for r in futures::future::join_all(storm).await {
        let e = r.expect_err("too large for any node");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
    assert_eq!(
        engine.pings(),
        1,
        "the storm's syncs were coalesced (within 1 s of the last)"
    );

    // A heartbeat for a node registered through A a moment ago: B reads that one record.
    let mut reg = NodeRegistration::new("sim-2", "tcp://10.0.0.2:2375");
    reg.liveness = Liveness::Heartbeat;
    a.register_node(reg).await.expect("register through A");
    assert!(b.get_node("sim-2").expect("get").is_none());
    let node = b
        .heartbeat(Heartbeat {
            node_id: "sim-2".into(),
            container_id: None,
            timestamp: None,
            cached_images: None,
        })
        .await
        .expect("B takes the heartbeat");
    assert_eq!(node.node_id, "sim-2");
    assert_eq!(node.status, NodeStatus::Online);
    // An unknown node is still told to register.
    let e = b
        .heartbeat(Heartbeat {
            node_id: "nowhere".into(),
            container_id: None,
            timestamp: None,
            cached_images: None,
        })
        .await
        .expect_err("unknown");
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
}

/// Collects what the scheduler publishes.
#[derive(Default)]
struct Events(std::sync::Mutex<Vec<agentvm_model::event::Event>>);

impl agentvm_scheduler::EventSink for Events {
    fn publish(&self, event: agentvm_model::event::Event) {
        self.0.lock().expect("events").push(event);
    }
}

impl Events {
    fn removed(&self) -> Vec<(String, Option<String>)> {
        self.0
            .lock()
            .expect("events")
            .iter()
            .filter_map(|e| match &e.payload {
                agentvm_model::event::EventPayload::SandboxRemoved { sandbox_id } => {
                    Some((sandbox_id.clone(), e.container_id().map(str::to_string)))
                }
                _ => None,
            })
            .collect()
    }
}

#[tokio::test]
async fn the_sweep_deletes_ended_sandboxes_past_their_retention_and_keeps_the_rest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = connector();
    let events = Arc::new(Events::default());
    let s = Scheduler::builder()
        .config(SchedulerConfig {
            background: false,
            ended_retention: std::time::Duration::from_millis(1_500),
            ..Default::default()
        })
        .store(store(&dir))
        .events(events.clone())
        .engine(sim.clone())
        .open()
        .await
        .expect("scheduler");
    with_node_and_template(&s).await;

    let mut old = SandboxRequest::new("b");
    old.owner = Some("tenant-a".into());
    let old = s.create_sandbox(old).await.expect("create");
    let run = s
        .exec_collect(&old.id, ExecRequest::shell("echo hi"))
        .await
        .expect("exec");
    s.terminate_sandbox(&old.id).await.expect("terminate");
    let live = s
        .create_sandbox(SandboxRequest::new("b"))
        .await
        .expect("create");

    // Within the retention, the ended sandbox and its execution are still there.
    let report = s.sweep().await.expect("sweep");
    assert!(report.removed.is_empty(), "{report:?}");
    assert!(s.get_sandbox(&old.id).await.expect("get").is_some());
    assert!(s.get_execution(&run.id).await.expect("get").is_some());

    tokio::time::sleep(std::time::Duration::from_millis(1_600)).await;
    let recent = s
        .create_sandbox(SandboxRequest::new("b"))
        .await
        .expect("create");
    s.terminate_sandbox(&recent.id).await.expect("terminate");
    let report = s.sweep().await.expect("sweep");
    assert_eq!(report.removed, vec![old.id.clone()], "{report:?}");
    assert!(s.get_sandbox(&old.id).await.expect("get").is_none());
    assert!(s.get_execution(&run.id).await.expect("get").is_none());
    assert!(s.list_executions(&old.id).await.expect("list").is_empty());
    // One ended within the retention, and a live one, stay.
    let left: Vec<String> = s
        .list_sandboxes()
        .await
        .expect("list")
        .into_iter()
        .map(|x| x.id)
        .collect();
    assert_eq!(left, vec![live.id.clone(), recent.id.clone()]);
    assert_eq!(
        events.removed(),
        vec![(old.id.clone(), Some("tenant-a".to_string()))],
        "sandbox_removed, scoped to its owner"
    );
    // Nothing is removed twice.
    let report = s.sweep().await.expect("sweep");
    assert!(report.removed.is_empty(), "{report:?}");
}

#[tokio::test]
async fn a_deleted_templates_egress_proxy_and_network_go_once_its_last_sandbox_ended() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = connector();
    let mut config = SchedulerConfig {
        background: false,
        ..Default::default()
    };
    // Any free port: the proxy listens on the network's gateway (loopback here).
    config.egress.port = 0;
    let s = Scheduler::builder()
        .config(config)
        .store(store(&dir))
        .engine(sim.clone())
        .open()
        .await
        .expect("scheduler");
    // An allowlist needs an engine on this host.
    s.register_node(NodeRegistration::new("sim-1", "unix:///run/simulated.sock"))
        .await
        .expect("register");
    for id in ["kept", "gone"] {
        s.create_template(id, allowlisted(id))
            .await
            .expect("template");
    }
    let kept = s
        .create_sandbox(SandboxRequest::new("kept"))
        .await
        .expect("create");
    let gone = s
        .create_sandbox(SandboxRequest::new("gone"))
        .await
        .expect("create");
    let engine = sim.engine("sim-1").expect("connected");
    let networks = engine.networks();
    assert_eq!(networks.len(), 2, "{networks:?}");
    let gone_network = networks
        .iter()
        .find(|n| n.ends_with("-gone"))
        .expect("the network of `gone`")
        .clone();

    // Deleted while its sandbox runs: the sandbox keeps its way out.
    s.delete_template("gone").await.expect("delete");
    assert!(engine.networks().contains(&gone_network));
    let report = s.sweep().await.expect("sweep");
    assert!(report.egress_retired.is_empty(), "{report:?}");

    // Its last sandbox ended: the next sweep stops the proxy and removes the network; the
    // other template's stay.
    s.terminate_sandbox(&gone.id).await.expect("terminate");
    let report = s.sweep().await.expect("sweep");
    assert_eq!(report.egress_retired, vec!["gone@sim-1".to_string()]);
    let left = engine.networks();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].ends_with("-kept"), "{left:?}");
    let report = s.sweep().await.expect("sweep");
    assert!(report.egress_retired.is_empty(), "retired once: {report:?}");

    // With no sandbox left, deleting the template retires its proxy at once.
    s.terminate_sandbox(&kept.id).await.expect("terminate");
    s.delete_template("kept").await.expect("delete");
    assert!(engine.networks().is_empty(), "{:?}", engine.networks());
}

#[tokio::test]
async fn after_a_restart_the_networks_of_deleted_templates_are_found_and_removed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = connector();
    let db = Arc::new(redb::Database::create(dir.path().join("scheduler.redb")).expect("redb"));
    let open_on = |db: Arc<redb::Database>| {
        let sim = sim.clone();
        async move {
            let mut config = SchedulerConfig {
                background: false,
                ..Default::default()
            };
            config.egress.port = 0;
            Scheduler::builder()
                .config(config)
                .store(Arc::new(RedbSchedulerStore::open(db).expect("store")))
                .engine(sim)
                .open()
                .await
                .expect("scheduler")
        }
    };
    let s = open_on(db.clone()).await;
    s.register_node(NodeRegistration::new("sim-1", "unix:///run/simulated.sock"))
        .await
        .expect("register");
    for id in ["kept", "gone"] {
        s.create_template(id, allowlisted(id))
            .await
            .expect("template");
        let sb = s
            .create_sandbox(SandboxRequest::new(id))
            .await
            .expect("create");
        s.terminate_sandbox(&sb.id).await.expect("terminate");
    }
    let engine = sim.engine("sim-1").expect("connected");
    assert_eq!(engine.networks().len(), 2);
    drop(s);

    // Another process on the same store: it never ran their proxies.
    let s = open_on(db).await;
    s.delete_template("gone").await.expect("delete");
    assert_eq!(engine.networks().len(), 2, "no proxy of it here to retire");
    let report = s.reconcile().await.expect("reconcile");
    assert_eq!(report.networks_removed.len(), 1, "{report:?}");
    assert!(report.networks_removed[0].ends_with("-gone"), "{report:?}");
    let left = engine.networks();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0].ends_with("-kept"),
        "the live template's network stays: {left:?}"
    );
    let report = s.reconcile().await.expect("reconcile");
    assert!(report.networks_removed.is_empty(), "{report:?}");
}

/// A small template whose sandboxes may reach `api.example.com` only (through an egress proxy).
fn allowlisted(id: &str) -> TemplateSpec {
    let mut spec = TemplateSpec::new(id, IMAGE);
    spec.default_cpu_cores = 0.5;
    spec.default_memory_mb = 128;
    spec.network = agentvm_scheduler::NetworkPolicy::Allowlist {
        hosts: vec!["api.example.com".into()],
    };
    spec
}

#[tokio::test]
async fn an_exec_arriving_while_its_sandbox_is_being_paused_waits_and_resumes_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Pausing takes the engine 50 ms, and so does the gap between creating an exec and
    // starting it (Docker refuses to start one in a container paused in between).
    let sim = Arc::new(SimulatedConnector::new(
        Latencies {
            request: std::time::Duration::from_millis(50),
            ..Latencies::none()
        },
        8.0,
        16_384,
        vec![IMAGE.to_string()],
    ));
    let s = open(&sim, store(&dir)).await;
    with_node_and_template(&s).await;
    let sb = s
        .create_sandbox(SandboxRequest::new("b"))
        .await
        .expect("create");
    for round in 0..3 {
        let pausing = {
            let (s, id) = (s.clone(), sb.id.clone());
            tokio::spawn(async move { s.pause_sandbox(&id).await })
        };
        // 10 ms into the pause the sandbox still reads as running; without waiting for the
        // pause, the exec would be created before the container froze and refused at start.
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let run = s
            .exec_collect(&sb.id, ExecRequest::shell(format!("echo {round}")))
            .await
            .expect("the exec waits out the pause, then resumes the sandbox");
        assert_eq!((run.stdout, run.exit_code), (format!("{round}\n"), Some(0)));
        let paused = pausing.await.expect("the pause task").expect("the pause");
        assert_eq!(paused.status, SandboxStatus::Paused);
        let now = s.get_sandbox(&sb.id).await.expect("get").expect("sandbox");
        assert_eq!(now.status, SandboxStatus::Running, "round {round}");
    }
}
