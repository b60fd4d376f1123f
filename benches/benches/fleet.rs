//! Fleet simulator (a bench binary, not a test): the scheduler's server side at 1,000 and
//! 10,000 runtime nodes, without Docker.
//!
//! What runs, in one process against one scheduler (or three sharing PostgreSQL, below):
//!
//! 1. Heartbeats: N nodes are registered on a real `Scheduler` (redb store, background loops
//!    off) with `liveness: heartbeat`, then each sends `Scheduler::heartbeat` every 5 s, spread
//!    evenly (a 10 ms tick sends N/500), in real time for `FLEET_HB_SECONDS` (default 10: two
//!    rounds of every node). The process CPU time (`/proc/self/stat` utime + stime) over that
//!    window, less the same window idle, is the heartbeat cost. Heartbeats are in-process calls:
//!    the HTTP and JSON of a real agent's heartbeat are not counted.
//! 2. Placements alone: sandbox creates arrive at `FLEET_RATE` per second (default 5,000) for
//!    `FLEET_SECONDS` (default 5). Each is a decision of the `PlacementIndex` the scheduler's
//!    registry keeps (behind a mutex, as in the registry) plus the in-flight reservation; its
//!    record is then written durably as `Scheduler::persist` does, before the container is
//!    made: the create waits on the blocking pool for `RedbSchedulerStore::put_sandbox`, and
//!    the records written at the same time share redb commits (group commit). The container
//!    is then a 5 ms sleep, after which the reservation becomes an allocation, released 2 s
//!    later. This isolates the placement decision and the durable record: reported are
//!    placement latency p50/p99/max (decision + reservation, under the mutex), durable
//!    placements per second against the offered rate, records per commit, and how long a
//!    create waited for its record.
//! 3. Creates through the scheduler (`fleet/creates.rs`): the same rate into the real
//!    `Scheduler::create_sandbox`, with the simulated engine (`engine::simulated`) behind the
//!    scheduler's engine trait standing in for N Docker engines with a quiet host's latencies.
//!    Everything but the engine's work is the production path.
//!
//! With `FLEET_POSTGRES=postgres://…` (a database this bench may create schemas in) it runs
//! against a three-server cluster on PostgreSQL instead: see `fleet/cluster.rs`.
//!
//! `FLEET_NODES=1000,10000` picks the fleet sizes. `FLEET_ONE_BY_ONE=1` also runs the
//! placements with the records written the way they were before group commit, for comparison:
//! one writer thread, one commit per record, in arrival order, the creates not waiting (at a
//! slow disk's commit rate it takes minutes to drain).

use agentvm::scheduler::placement::Demand;
use agentvm::scheduler::placement_index::{NodeState, PlacementIndex};
use agentvm::scheduler::{
    Heartbeat, Liveness, NodeRegistration, RedbSchedulerStore, Resources, Sandbox, SandboxStatus,
    Scheduler, SchedulerConfig, SchedulerStore,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[path = "fleet/cluster.rs"]
mod cluster;
#[path = "fleet/creates.rs"]
mod creates;

const IMAGE: &str = "agentvm-test/busybox:latest";

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Process cpu time (user + system), from `/proc/self/stat` (USER_HZ = 100 ticks/s).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10)
}

fn store() -> (tempfile::TempDir, Arc<RedbSchedulerStore>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = redb::Database::create(dir.path().join("fleet.redb")).expect("redb");
    let store = RedbSchedulerStore::open(Arc::new(db)).expect("store");
    (dir, Arc::new(store))
}

fn images() -> Vec<String> {
    vec![IMAGE.to_string(), "python:3.11".to_string()]
}

async fn heartbeats(n: usize, seconds: u64) {
    let (_dir, store) = store();
    let config = SchedulerConfig {
        background: false,
        docker_timeout: Duration::from_millis(200),
        ..SchedulerConfig::default()
    };
    let s = Scheduler::builder()
        .store(store)
        .config(config)
        .open()
        .await
        .expect("scheduler");
    let t = Instant::now();
    for i in 0..n {
        let mut reg = NodeRegistration::new(
            format!("node-{i:05}"),
            "unix:///nonexistent/agentvm-fleet/docker.sock",
        );
        reg.liveness = Liveness::Heartbeat;
        reg.total_cpu_cores = Some(16.0);
        reg.total_memory_mb = Some(65_536);
        reg.max_containers = 100;
        reg.cached_images = Some(images());
        s.register_node(reg).await.expect("register");
    }
    let registered = t.elapsed();
    let beats: Vec<Heartbeat> = (0..n)
        .map(|i| Heartbeat {
            node_id: format!("node-{i:05}"),
            container_id: None,
            timestamp: None,
            cached_images: Some(images()),
        })
        .collect();
    // One round first, untimed: it turns every node online (registration could not reach the
    // made-up Docker endpoint), which publishes a status event per node.
    for hb in &beats {
        s.heartbeat(hb.clone()).await.expect("heartbeat");
    }
    // The same window idle, to subtract the runtime's own ticking.
    let window = Duration::from_secs(seconds);
    let tick = Duration::from_millis(10);
    let ticks = window.as_millis() / tick.as_millis();
    let per_tick = n as f64 * tick.as_secs_f64() / 5.0;
    let idle = {
        let c = cpu_time();
        let mut iv = tokio::time::interval(tick);
        for _ in 0..ticks {
            iv.tick().await;
        }
        cpu_time() - c
    };
    let c = cpu_time();
    let start = Instant::now();
    let mut iv = tokio::time::interval(tick);
    let (mut sent, mut due, mut next) = (0usize, 0.0f64, 0usize);
    for _ in 0..ticks {
        iv.tick().await;
        due += per_tick;
        while (sent as f64) < due {
            let hb = beats[next].clone();
            next = (next + 1) % n;
            s.heartbeat(hb).await.expect("heartbeat");
            sent += 1;
        }
    }
    let wall = start.elapsed();
    let busy = (cpu_time() - c).saturating_sub(idle);
    let online = s
        .list_nodes()
        .iter()
        .filter(|n| n.status == agentvm::scheduler::NodeStatus::Online)
        .count();
    println!(
        "fleet/{n} heartbeats: {sent} in {:.1} s ({:.0}/s, each node every 5 s), {online} online; \
         server cpu {:.2}% of one core ({} ms, idle {} ms subtracted), {:.1} µs per heartbeat, \
         {:.3} ms cpu per node per minute (registration of {n} took {:.1} s)",
        wall.as_secs_f64(),
        sent as f64 / wall.as_secs_f64(),
        100.0 * busy.as_secs_f64() / wall.as_secs_f64(),
        busy.as_millis(),
        idle.as_millis(),
        busy.as_secs_f64() * 1e6 / sent.max(1) as f64,
        busy.as_secs_f64() * 1e3 / n as f64 * 60.0 / wall.as_secs_f64(),
        registered.as_secs_f64(),
    );
}

fn record(k: usize, node_id: &str) -> Sandbox {
    let now = 1_700_000_000_000;
    Sandbox {
        id: format!("sbx_fleet_{k:08}"),
        template_id: "busybox".into(),
        docker_image: IMAGE.into(),
        node_id: node_id.into(),
        docker_container_id: None,
        docker_container_name: format!("agentvm-sbx_fleet_{k:08}"),
        status: SandboxStatus::Creating,
        resources: Resources {
            cpu_cores: 0.5,
            memory_mb: 512,
            disk_mb: None,
            pids_limit: 256,
        },
        env: BTreeMap::new(),
        user: "1000:1000".into(),
        uid_gid: None,
        workdir: "/workspace".into(),
        network: "none".into(),
        read_only_root: true,
        owner: None,
        warm: false,
        lifetime_s: 600,
        idle_timeout_s: None,
        idle_action: Default::default(),
        expires_at: now + 600_000,
        paused_at: None,
        resumed_at: None,
        created_at: now,
        ready_at: None,
        last_activity_at: now,
        executor_url: None,
        termination: None,
    }
}

/// The placement index of `n` empty nodes of 16 cores and 64 GiB; even ones hold the image.
fn fleet_index(n: usize) -> PlacementIndex {
    let mut index = PlacementIndex::new();
    for i in 0..n {
        index.upsert(
            &format!("node-{i:05}"),
            NodeState {
                schedulable: true,
                total_cpu_millis: 16_000,
                total_memory_mb: 65_536,
                max_containers: 100,
                allocated_cpu_millis: 0,
                allocated_memory_mb: 0,
                running: 0,
                in_flight_cpu_millis: 0,
                in_flight_memory_mb: 0,
                in_flight: 0,
                images: if i % 2 == 0 { images() } else { Vec::new() },
            },
        );
    }
    index
}

/// One placement decision and its reservation, under the index's mutex (as the registry
/// does); the node chosen.
fn place_and_reserve(index: &Mutex<PlacementIndex>, demand: &Demand<'_>) -> String {
    let mut ix = index.lock().expect("index");
    let node = ix.place(demand).expect("room").to_string();
    ix.update(&node, |s| {
        s.in_flight += 1;
        s.in_flight_cpu_millis += demand.cpu_millis;
        s.in_flight_memory_mb += demand.memory_mb;
    });
    node
}

/// The container after the durable record, in the placements-alone run: create + start take
/// 5 ms, then the reservation becomes an allocation, released 2 s later.
async fn fake_engine(index: &Mutex<PlacementIndex>, node: &str, demand: &Demand<'_>) {
    tokio::time::sleep(Duration::from_millis(5)).await;
    index.lock().expect("index").update(node, |s| {
        s.in_flight -= 1;
        s.in_flight_cpu_millis -= demand.cpu_millis;
        s.in_flight_memory_mb -= demand.memory_mb;
        s.running += 1;
        s.allocated_cpu_millis += demand.cpu_millis;
        s.allocated_memory_mb += demand.memory_mb;
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    index.lock().expect("index").update(node, |s| {
        s.running -= 1;
        s.allocated_cpu_millis -= demand.cpu_millis;
        s.allocated_memory_mb -= demand.memory_mb;
    });
}

/// How the placement records are made durable.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durable {
    /// As the scheduler does: each create awaits its record's durable write on the blocking
    /// pool, and the writes made at the same time share commits (group commit).
    Group,
    /// For comparison: one writer thread writes the records one by one, one commit each, in
    /// arrival order (what the scheduler's store did before group commit).
    OneByOne,
}

async fn placements(n: usize, rate: u64, seconds: u64, durable_mode: Durable) {
    let (_dir, store) = store();
    let index = Arc::new(Mutex::new(fleet_index(n)));
    let demand = Demand {
        cpu_millis: 500,
        memory_mb: 512,
        image: IMAGE,
    };
    // One-by-one mode: the writer thread, one commit per record, in arrival order; it reports
    // how long each record waited until durable.
    let (tx, rx) = std::sync::mpsc::channel::<(Sandbox, Instant)>();
    let writer = (durable_mode == Durable::OneByOne).then(|| {
        let store = store.clone();
        std::thread::spawn(move || {
            let mut waits = Vec::new();
            let mut last = None;
            for (r, queued) in rx {
                store.put_sandbox(&r).expect("durable put");
                last = Some(Instant::now());
                waits.push(queued.elapsed());
            }
            (waits, last)
        })
    });
    let lat = Arc::new(Mutex::new(Vec::<Duration>::with_capacity(
        (rate * seconds) as usize,
    )));
    // Group mode: when each record became durable, and how long its create waited for that.
    let acks = Arc::new(Mutex::new(Vec::<(Instant, Duration)>::with_capacity(
        (rate * seconds) as usize,
    )));
    let commits_before = store.commit_stats();
    let total = (rate * seconds) as usize;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (index, lat, acks, tx, store) = (
            index.clone(),
            lat.clone(),
            acks.clone(),
            tx.clone(),
            store.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let node = place_and_reserve(&index, &demand);
            lat.lock().expect("lat").push(t.elapsed());
            let r = record(k, &node);
            match durable_mode {
                Durable::Group => {
                    // As `Scheduler::persist`: the record is durable before the container is made.
                    let queued = Instant::now();
                    tokio::task::spawn_blocking(move || store.put_sandbox(&r))
                        .await
                        .expect("join")
                        .expect("durable put");
                    acks.lock()
                        .expect("acks")
                        .push((Instant::now(), queued.elapsed()));
                }
                Durable::OneByOne => tx.send((r, Instant::now())).expect("writer"),
            }
            fake_engine(&index, &node, &demand).await;
        }));
    }
    let offered_for = start.elapsed();
    drop(tx);
    for t in tasks {
        t.await.expect("task");
    }
    let (mut waits, last) = match writer {
        Some(w) => tokio::task::spawn_blocking(move || w.join())
            .await
            .expect("join")
            .expect("writer"),
        None => {
            let acks = acks.lock().expect("acks");
            (
                acks.iter().map(|(_, w)| *w).collect(),
                acks.iter().map(|(at, _)| *at).max(),
            )
        }
    };
    let durable = waits.len();
    let durable_for = last.map(|l| l - start).unwrap_or_default();
    let commits = {
        let now = store.commit_stats();
        now.commits - commits_before.commits
    };
    let mut lat = lat.lock().expect("lat").clone();
    lat.sort();
    waits.sort();
    let p = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    let how = match durable_mode {
        Durable::Group => "group commit, each create awaiting its record",
        Durable::OneByOne => "one writer, one commit each",
    };
    println!(
        "fleet/{n} placements ({how}): offered {total} at {rate}/s over {:.2} s; placement p50 \
         {:?} p99 {:?} max {:?}; {durable} durable records in {commits} redb commits ({:.1} per \
         commit) in {:.2} s = {:.0} durable placements/s; wait until durable p50 {:?} p99 {:?} \
         max {:?}",
        offered_for.as_secs_f64(),
        p(&lat, 0.5),
        p(&lat, 0.99),
        lat[lat.len() - 1],
        durable as f64 / commits.max(1) as f64,
        durable_for.as_secs_f64(),
        durable as f64 / durable_for.as_secs_f64(),
        p(&waits, 0.5),
        p(&waits, 0.99),
        waits[waits.len() - 1],
    );
}

/// Creates through one real scheduler on redb, the simulated engine behind it.
async fn creates(n: usize, rate: u64, seconds: u64) {
    let (_dir, store) = store();
    let s = Scheduler::builder()
        .store(store)
        .config(SchedulerConfig {
            background: false,
            ..SchedulerConfig::default()
        })
        .engine(creates::connector())
        .open()
        .await
        .expect("scheduler");
    creates::register(&s, n).await;
    creates::drive(&format!("fleet/{n}"), &[s], &[None], rate, seconds).await;
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let sizes: Vec<usize> = std::env::var("FLEET_NODES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rate = env_or("FLEET_RATE", 5_000u64);
    let seconds = env_or("FLEET_SECONDS", 5u64);
    let hb_seconds = env_or("FLEET_HB_SECONDS", 10u64);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "fleet simulator: one process, one scheduler, {} cpus online, no Docker (see the file's docs)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    if let Ok(server) = std::env::var("FLEET_POSTGRES") {
        println!("three schedulers sharing one PostgreSQL store ({server})");
        for n in sizes {
            rt.block_on(cluster::heartbeats(&server, n, hb_seconds));
            rt.block_on(cluster::placements(&server, n, rate, seconds));
            rt.block_on(cluster::creates(&server, n, rate, seconds));
        }
        return;
    }
    let one_by_one = env_or("FLEET_ONE_BY_ONE", 0u8) == 1;
    for n in sizes {
        rt.block_on(heartbeats(n, hb_seconds));
        rt.block_on(placements(n, rate, seconds, Durable::Group));
        if one_by_one {
            rt.block_on(placements(n, rate, seconds, Durable::OneByOne));
        }
        rt.block_on(creates(n, rate, seconds));
    }
}
