//! The fleet simulator against a three-server cluster (`FLEET_POSTGRES=postgres://…`): three
//! schedulers in this process, each with its own registry, placement index and
//! [`Stewardship`], sharing one PostgreSQL store in a fresh schema, as three `agentvm-server`
//! members do (docs/cluster.md, *Sandboxes and nodes in a cluster*).
//!
//! 1. Heartbeats: the N nodes register through server 0; servers 1 and 2 learn them from the
//!    store. Node `i` sends its heartbeats to server `i % 3` (a node agent behind a load
//!    balancer keeps its connection); those due in one 10 ms tick arrive together. Each is a
//!    registry update plus a queued time, which every server writes to the store in one
//!    statement per 2.5 s tick (`share_heartbeats`); every server also reads the shared node
//!    table every 5 s (`sync_nodes`), as its background loop does.
//!    Reported: this process's cpu and PostgreSQL's (the `postgres` processes' cpu from
//!    `/proc`), each less the same window idle.
//! 2. Placements: creates arrive at `FLEET_RATE`/s, round-robin over the three servers; each
//!    is that server's index decision plus reservation under its mutex, then a durable record
//!    in PostgreSQL that the create waits for (PostgreSQL commits each insert; concurrent
//!    commits share WAL flushes), then the 5 ms container as in the one-server run. Each
//!    server's index sees its own placements only (the 5 s charge of the others' is left out:
//!    at most 5 s of drift, which this short run does not reach).
//! 3. Creates through the three real schedulers (`fleet/creates.rs`), round-robin, each for
//!    the tenant whose lease it holds, with one simulated engine per node shared by all three
//!    (as real members reach the same Docker engines). Servers 1 and 2 learn the nodes from the
//!    store and probe them once before the run, as their background loops do.

use super::{cpu_time, fake_engine, fleet_index, images, place_and_reserve, record};
use agentvm::scheduler::engine::simulated::SimulatedConnector;
use agentvm::scheduler::placement::Demand;
use agentvm::scheduler::placement_index::PlacementIndex;
use agentvm::scheduler::{
    Heartbeat, Liveness, NodeRegistration, Scheduler, SchedulerConfig, Stewardship,
};
use agentvm::{PostgresStore, Store};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SERVERS: usize = 3;

/// The cpu time of every `postgres` process on this machine (the database server's
/// backends, WAL writer and checkpointer), from `/proc/<pid>/stat`.
fn postgres_cpu() -> Duration {
    let mut ticks = 0u64;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Duration::ZERO;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != "postgres" {
            continue;
        }
        let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        if let (Some(u), Some(s)) = (f.get(11), f.get(12)) {
            ticks += u.parse::<u64>().unwrap_or(0) + s.parse::<u64>().unwrap_or(0);
        }
    }
    Duration::from_millis(ticks * 10)
}

/// A schema of the run's own on a server, dropped (with its tables) when this is dropped.
struct Schema {
    server: String,
    name: String,
    /// The URL that puts the tables in it.
    url: String,
}

fn psql(server: &str, sql: &str) -> bool {
    std::process::Command::new("psql")
        .args([server, "-q", "-c", sql])
        .status()
        .expect("psql (Debian's postgresql-client) runs")
        .success()
}

impl Schema {
    fn fresh(server: &str) -> Schema {
        let name = format!("fleet_{}_{}", std::process::id(), agentvm::model::now_ms());
        assert!(
            psql(server, &format!("CREATE SCHEMA {name}")),
            "creating schema {name} on {server}"
        );
        let separator = if server.contains('?') { '&' } else { '?' };
        Schema {
            url: format!("{server}{separator}options=-c%20search_path%3D{name}"),
            server: server.to_string(),
            name,
        }
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        psql(
            &self.server,
            &format!(
                "SET client_min_messages = warning; DROP SCHEMA {} CASCADE",
                self.name
            ),
        );
    }
}

/// Three schedulers on one PostgreSQL store, background loops off; server `i` holds the
/// lease of owner `tenant-i`. With `engine`, every server reaches the nodes' (simulated)
/// engines through it, as real servers reach the same Docker engines.
async fn cluster(
    url: &str,
    engine: Option<Arc<SimulatedConnector>>,
) -> (PostgresStore, Vec<Scheduler>) {
    let store = PostgresStore::open(url)
        .await
        .expect("the PostgreSQL store");
    let shared = store.scheduler_store().expect("its scheduler tables");
    let mut servers = Vec::new();
    for i in 0..SERVERS {
        let config = SchedulerConfig {
            background: false,
            // The heartbeat and placement runs' nodes have no engine: fail fast on them.
            docker_timeout: if engine.is_some() {
                SchedulerConfig::default().docker_timeout
            } else {
                Duration::from_millis(200)
            },
            ..SchedulerConfig::default()
        };
        let stewardship = Arc::new(Stewardship::new());
        stewardship.hold(&owner(i), Instant::now() + Duration::from_secs(3600));
        let mut builder = Scheduler::builder()
            .store(shared.clone())
            .config(config)
            .stewardship(stewardship);
        if let Some(e) = &engine {
            builder = builder.engine(e.clone());
        }
        servers.push(builder.open().await.expect("scheduler"));
    }
    (store, servers)
}

/// The tenant whose lease server `i` holds.
fn owner(i: usize) -> String {
    format!("tenant-{i}")
}

/// Creates through the three real schedulers, round-robin, each for the tenant it holds;
/// the simulated engine behind them (`fleet/creates.rs`).
pub(super) async fn creates(server: &str, n: usize, rate: u64, seconds: u64) {
    let schema = Schema::fresh(server);
    let (store, servers) = cluster(&schema.url, Some(super::creates::connector())).await;
    super::creates::register(&servers[0], n).await;
    // As their background loops would: follow the node table, then a health round reaches
    // the (probed) nodes learned from it.
    for s in &servers[1..] {
        s.sync_nodes().await.expect("sync");
        s.check_nodes().await;
    }
    let owners: Vec<Option<String>> = (0..SERVERS).map(|i| Some(owner(i))).collect();
    super::creates::drive(
        &format!("fleet/{n}, 3 servers on PostgreSQL,"),
        &servers,
        &owners,
        rate,
        seconds,
    )
    .await;
    let stats = store.scheduler_commit_stats();
    println!(
        "fleet/{n}, 3 servers on PostgreSQL: {} sandbox and execution writes in {} transactions \
         ({:.1} per transaction, group commit)",
        stats.writes,
        stats.commits,
        stats.writes as f64 / stats.commits.max(1) as f64
    );
}

pub(super) async fn heartbeats(server: &str, n: usize, seconds: u64) {
    let schema = Schema::fresh(server);
    let (_store, servers) = cluster(&schema.url, None).await;
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
        servers[0].register_node(reg).await.expect("register");
    }
    let registered = t.elapsed();
    for s in &servers[1..] {
        s.sync_nodes().await.expect("sync");
    }
    let beats: Vec<Heartbeat> = (0..n)
        .map(|i| Heartbeat {
            node_id: format!("node-{i:05}"),
            container_id: None,
            timestamp: None,
            cached_images: Some(images()),
        })
        .collect();
    // One round first, untimed: every node online on its server.
    for (i, hb) in beats.iter().enumerate() {
        servers[i % SERVERS]
            .heartbeat(hb.clone())
            .await
            .expect("heartbeat");
    }
    let window = Duration::from_secs(seconds);
    let tick = Duration::from_millis(10);
    let ticks = window.as_millis() / tick.as_millis();
    let per_tick = n as f64 * tick.as_secs_f64() / 5.0;
    let (idle, idle_pg) = {
        let (c, pg) = (cpu_time(), postgres_cpu());
        let mut iv = tokio::time::interval(tick);
        for _ in 0..ticks {
            iv.tick().await;
        }
        (cpu_time() - c, postgres_cpu() - pg)
    };
    // Each server follows the shared node table every 5 s, staggered.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let syncs = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let followers: Vec<_> = servers
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let (s, stop, syncs) = (s.clone(), stop.clone(), syncs.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5000 / SERVERS as u64 * k as u64)).await;
                // As the background loop: the queued heartbeats are written every tick
                // (2.5 s), and the node table is read every heartbeat interval (5 s).
                let mut round = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if round.is_multiple_of(2) {
                        let t = Instant::now();
                        s.sync_nodes().await.expect("sync");
                        syncs.lock().expect("syncs").push(t.elapsed());
                    } else {
                        s.share_heartbeats().await.expect("share");
                    }
                    round += 1;
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                }
            })
        })
        .collect();
    let (c, pg) = (cpu_time(), postgres_cpu());
    let start = Instant::now();
    let mut iv = tokio::time::interval(tick);
    let (mut sent, mut due, mut next) = (0usize, 0.0f64, 0usize);
    for _ in 0..ticks {
        iv.tick().await;
        due += per_tick;
        // The heartbeats due in this tick arrive together, from different node agents.
        let mut batch = Vec::new();
        while (sent as f64) < due {
            let (s, hb) = (servers[next % SERVERS].clone(), beats[next].clone());
            batch.push(async move { s.heartbeat(hb).await.expect("heartbeat") });
            next = (next + 1) % n;
            sent += 1;
        }
        futures::future::join_all(batch).await;
    }
    let wall = start.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let busy = (cpu_time() - c).saturating_sub(idle);
    let busy_pg = (postgres_cpu() - pg).saturating_sub(idle_pg);
    for f in followers {
        f.abort();
    }
    let online: Vec<usize> = servers
        .iter()
        .map(|s| {
            s.list_nodes()
                .iter()
                .filter(|n| n.status == agentvm::scheduler::NodeStatus::Online)
                .count()
        })
        .collect();
    let mut syncs = syncs.lock().expect("syncs").clone();
    syncs.sort();
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / wall.as_secs_f64();
    println!(
        "fleet/{n} heartbeats, 3 servers on PostgreSQL: {sent} in {:.1} s ({:.0}/s), online per \
         server {online:?}; servers' cpu {:.2}% of one core ({:.1} µs per heartbeat), \
         PostgreSQL's cpu {:.2}% ({:.1} µs per heartbeat); node-table syncs: {} taking p50 {:?} \
         max {:?}; registration of {n} took {:.1} s",
        wall.as_secs_f64(),
        sent as f64 / wall.as_secs_f64(),
        pct(busy),
        busy.as_secs_f64() * 1e6 / sent.max(1) as f64,
        pct(busy_pg),
        busy_pg.as_secs_f64() * 1e6 / sent.max(1) as f64,
        syncs.len(),
        syncs.get(syncs.len() / 2).copied().unwrap_or_default(),
        syncs.last().copied().unwrap_or_default(),
        registered.as_secs_f64(),
    );
}

pub(super) async fn placements(server: &str, n: usize, rate: u64, seconds: u64) {
    let schema = Schema::fresh(server);
    let (pg, _servers) = cluster(&schema.url, None).await;
    let store = pg.scheduler_store().expect("its scheduler tables");
    let indexes: Vec<Arc<Mutex<PlacementIndex>>> = (0..SERVERS)
        .map(|_| Arc::new(Mutex::new(fleet_index(n))))
        .collect();
    let demand = Demand {
        cpu_millis: 500,
        memory_mb: 512,
        image: super::IMAGE,
    };
    let total = (rate * seconds) as usize;
    let lat = Arc::new(Mutex::new(Vec::<Duration>::with_capacity(total)));
    let acks = Arc::new(Mutex::new(Vec::<(Instant, Duration)>::with_capacity(total)));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (index, lat, acks, store) = (
            indexes[k % SERVERS].clone(),
            lat.clone(),
            acks.clone(),
            store.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let node = place_and_reserve(&index, &demand);
            lat.lock().expect("lat").push(t.elapsed());
            let r = record(k, &node);
            let queued = Instant::now();
            tokio::task::spawn_blocking(move || store.put_sandbox(&r))
                .await
                .expect("join")
                .expect("durable put");
            acks.lock()
                .expect("acks")
                .push((Instant::now(), queued.elapsed()));
            fake_engine(&index, &node, &demand).await;
        }));
    }
    let offered_for = start.elapsed();
    for t in tasks {
        t.await.expect("task");
    }
    let acks = acks.lock().expect("acks").clone();
    let durable = acks.len();
    let durable_for = acks
        .iter()
        .map(|(at, _)| *at)
        .max()
        .map(|l| l - start)
        .unwrap_or_default();
    let mut waits: Vec<Duration> = acks.iter().map(|(_, w)| *w).collect();
    let mut lat = lat.lock().expect("lat").clone();
    lat.sort();
    waits.sort();
    let p = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    println!(
        "fleet/{n} placements, 3 servers on PostgreSQL: offered {total} at {rate}/s over {:.2} s; \
         placement p50 {:?} p99 {:?} max {:?}; {durable} durable records in {:.2} s = {:.0} \
         durable placements/s; wait until durable p50 {:?} p99 {:?} max {:?}",
        offered_for.as_secs_f64(),
        p(&lat, 0.5),
        p(&lat, 0.99),
        lat[lat.len() - 1],
        durable_for.as_secs_f64(),
        durable as f64 / durable_for.as_secs_f64(),
        p(&waits, 0.5),
        p(&waits, 0.99),
        waits[waits.len() - 1],
    );
}
