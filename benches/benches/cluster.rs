//! One server against three: real `agentvm-server` processes (`serve --store postgres://...
//! --cluster --server-id srv_<i>`, mock LLM) on one PostgreSQL schema, first one member, then
//! three. Every run starts on a fresh schema.
//!
//! Setup: `AGENTVM_BENCH_CLUSTER_CONTAINERS` containers, one `long-stream` image
//! each (100 `text_delta`s per reply), container `c` created through member `c % servers`, so
//! that member takes its lease and serves it (the bench reads the leases back to know the owner
//! of each).
//!
//! 1. **Requests/s.** `AGENTVM_BENCH_CLUSTER_CONNECTIONS` raw Channel clients
//!    (tokio-tungstenite, the `ws` bench's raw client), connection `k` on member `k % servers`.
//!    Each sends `image_get_request`s one at a time, cycling over every container's image, for
//!    `AGENTVM_BENCH_CLUSTER_REQUEST_SECONDS`. With three members about 2/3 of the requests
//!    are for a container another member serves: the member checks scope, forwards the command
//!    to the owner over its member-to-member Channel client, and relays the answer. Reported:
//!    requests/s, p50/p99 round trip, and the same for local and forwarded requests apart.
//! 2. **Delivered events/s.** For every container's session,
//!    `AGENTVM_BENCH_CLUSTER_SUBSCRIBERS` raw clients subscribe, subscriber `j`
//!    on member `(owner + j) % servers`: with three members and three subscribers, one follows
//!    the session on its owner and two on other members, which get the events through the
//!    shared replay log (the owner's batched append + `pg_notify`, then an indexed read on the
//!    relaying member). A round sends one message to every session at once (through the
//!    owner, so no forwarding is counted here) and ends when every subscriber saw its
//!    `conversation_end`. Rounds repeat for `AGENTVM_BENCH_CLUSTER_EVENT_SECONDS`. Reported:
//!    `text_delta`s delivered per second across all subscribers, how many of them crossed
//!    servers, and the time from the send to each subscriber's `conversation_end`, for
//!    subscribers on the owner and on another member apart. Subscribers count every frame,
//!    acknowledge none, and find types without parsing JSON.
//!
//! One member runs with `--cluster` too, so both runs pay for leases and fencing and differ
//! only in forwarding, relaying and how the work is spread. Everything (the members, the
//! clients in this process, PostgreSQL) shares one machine: on a machine with fewer cores than
//! members, three members compete for the same cores and the same database, so this measures
//! the overhead of the cluster paths, not the capacity three machines would have.
//!
//! Needs `AGENTVM_BENCH_POSTGRES` (a `postgres://` URL; skipped, with a message, without it)
//! and a release `agentvm-server` binary: `AGENTVM_SERVER_BIN`, else the `agentvm-server`
//! beside this bench's own target directory (`cargo build --release -p agentvm-server`).
//!
//! Settings (environment): `AGENTVM_BENCH_CLUSTER_SERVERS` (member counts to run, default
//! `1,3`), `..._CONTAINERS` (default 6), `..._CONNECTIONS` (default 12), `..._SUBSCRIBERS`
//! (per session, default 3), `..._REQUEST_SECONDS` (default 10), `..._EVENT_SECONDS`
//! (default 15).

use agentvm::{connect as remote_connect, ConnectOptions, ImageConfig, RemoteRuntime, RuntimeExt};
use agentvm_benches::postgres::{bench_postgres_url, drop_schema, fresh_schema, POSTGRES_VAR};
use agentvm_benches::tokio_runtime;
use agentvm_benches::wire::{
    connect, count_until_end, quantile, read_response, request_frame, send_text, subscribe,
};
use serde_json::json;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const DELTAS_PER_REPLY: u64 = 100;

/// The bench's settings, from the environment.
#[derive(Debug, Clone)]
struct Settings {
    servers: Vec<usize>,
    containers: usize,
    connections: usize,
    subscribers: usize,
    request_time: Duration,
    event_time: Duration,
}

fn env_number(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| format!("{name}={v} is not a whole number")),
        _ => Ok(default),
    }
}

impl Settings {
    fn from_env() -> Result<Settings, String> {
        let servers = match std::env::var("AGENTVM_BENCH_CLUSTER_SERVERS") {
            Ok(list) if !list.trim().is_empty() => list
                .split(',')
                .map(|n| match n.trim().parse::<usize>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(format!(
                        "AGENTVM_BENCH_CLUSTER_SERVERS={list}: give member counts such as 1,3"
                    )),
                })
                .collect::<Result<Vec<_>, _>>()?,
            _ => vec![1, 3],
        };
        let positive = |name: &str, default: u64| -> Result<u64, String> {
            match env_number(name, default)? {
                0 => Err(format!("{name} must be at least 1")),
                n => Ok(n),
            }
        };
        Ok(Settings {
            servers,
            containers: positive("AGENTVM_BENCH_CLUSTER_CONTAINERS", 6)? as usize,
            connections: positive("AGENTVM_BENCH_CLUSTER_CONNECTIONS", 12)? as usize,
            subscribers: positive("AGENTVM_BENCH_CLUSTER_SUBSCRIBERS", 3)? as usize,
            request_time: Duration::from_secs(positive(
                "AGENTVM_BENCH_CLUSTER_REQUEST_SECONDS",
                10,
            )?),
            event_time: Duration::from_secs(positive("AGENTVM_BENCH_CLUSTER_EVENT_SECONDS", 15)?),
        })
    }
}

fn main() -> ExitCode {
    let Some(postgres) = bench_postgres_url() else {
        println!(
            "cluster bench skipped: set {POSTGRES_VAR} to a postgres:// URL (a database the \
             bench may create schemas in) to run it"
        );
        return ExitCode::SUCCESS;
    };
    let bin = match server_bin() {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!("cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!("cluster bench: {settings:?}, server {}", bin.display());
    let rt = tokio_runtime();
    let mut runs = Vec::new();
    for &servers in &settings.servers {
        let run = rt.block_on(run(&bin, &postgres, servers, &settings));
        runs.push(run);
    }
    print_tables(&runs, &settings);
    ExitCode::SUCCESS
}

/// `AGENTVM_SERVER_BIN`, else `agentvm-server` in the profile directory this bench was built
/// into (`target/release`), which must exist.
fn server_bin() -> Result<PathBuf, String> {
    if let Ok(bin) = std::env::var("AGENTVM_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!(
                "AGENTVM_SERVER_BIN={} is not a file",
                bin.display()
            ))
        };
    }
    // This bench runs as target/release/deps/cluster-<hash>.
    let exe = std::env::current_exe().map_err(|e| format!("finding this bench's path: {e}"))?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("agentvm-server"))
        .ok_or_else(|| format!("no target directory above {}", exe.display()))?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} is missing: build it with `cargo build --release -p agentvm-server` (same \
             CARGO_TARGET_DIR as the bench), or point AGENTVM_SERVER_BIN at a release build",
            bin.display()
        ))
    }
}

/// A running member; killed and reaped when dropped.
struct Member {
    id: String,
    child: Child,
    /// `ws://…/ws`.
    url: String,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Member {
    /// `serve --port 0 --store <store> --cluster --server-id <id>` with the mock LLM; waits
    /// for its "listening on" line and keeps draining its stdout afterwards.
    fn start(bin: &Path, dir: &Path, store: &str, id: &str) -> Member {
        let data_dir = dir.join(id);
        std::fs::create_dir_all(&data_dir)
            .unwrap_or_else(|e| panic!("creating {}: {e}", data_dir.display()));
        let mut child = Command::new(bin)
            .args(["serve", "--port", "0", "--data-dir"])
            .arg(&data_dir)
            .args(["--store", store, "--cluster", "--server-id", id])
            .env("LLM_PROVIDER", "mock")
            .env("AGENTVM_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let url = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.split("listening on http://").nth(1) {
                        let addr = rest.split_whitespace().next().unwrap_or_default();
                        break format!("ws://{addr}/ws");
                    }
                }
                other => {
                    let _ = child.kill();
                    panic!("member {id} exited before listening: {other:?}")
                }
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Member {
            id: id.into(),
            child,
            url,
        }
    }

    /// The member's user and system CPU time so far (`/proc/<pid>/stat`), `None` without procfs.
    fn cpu(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).ok()?;
        // Fields after the command name (which may hold spaces) in parentheses.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // USER_HZ is 100 on Linux.
        Some(Duration::from_millis(ticks * 10))
    }
}

/// The members' CPU time together.
fn cpu(members: &[Member]) -> Duration {
    members.iter().filter_map(Member::cpu).sum()
}

/// One session the bench streams: its image, session and the member that owns its container.
#[derive(Debug, Clone)]
struct Target {
    image_id: String,
    session_id: String,
    owner: usize,
}

/// What one run (one member count) measured.
struct Run {
    servers: usize,
    requests: Requests,
    events: Events,
}

#[derive(Default)]
struct Requests {
    elapsed: Duration,
    /// Round trips in µs, local and forwarded.
    local: Vec<u32>,
    forwarded: Vec<u32>,
    cpu: Duration,
}

#[derive(Default)]
struct Events {
    elapsed: Duration,
    rounds: u64,
    delivered: u64,
    crossed: u64,
    /// Deltas a subscriber should have seen and did not.
    missing: u64,
    /// Send to `conversation_end`, µs, for subscribers on the owner and on another member.
    end_local: Vec<u32>,
    end_crossed: Vec<u32>,
    cpu: Duration,
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

async fn run(bin: &Path, postgres: &str, servers: usize, settings: &Settings) -> Run {
    let schema = format!("cluster{servers}");
    let store = fresh_schema(postgres, &schema).await;
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let members: Vec<Member> = (0..servers)
        .map(|i| Member::start(bin, dir.path(), &store, &format!("srv_{i}")))
        .collect();
    println!(
        "{servers} member(s): {}",
        members
            .iter()
            .map(|m| format!("{} {}", m.id, m.url))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let targets = setup(&members, &store, settings.containers).await;

    let requests = requests(&members, &targets, settings).await;
    println!(
        "{servers} member(s): requests done ({} round trips)",
        requests.local.len() + requests.forwarded.len()
    );
    let events = events(&members, &targets, settings).await;
    println!(
        "{servers} member(s): events done ({} rounds)",
        events.rounds
    );

    drop(members);
    drop_schema(postgres, &schema).await;
    Run {
        servers,
        requests,
        events,
    }
}

/// Creates one `long-stream` image per container, container `c` through member
/// `c % members`, and returns them with the owner the lease table names.
async fn setup(members: &[Member], store: &str, containers: usize) -> Vec<Target> {
    let clients = remotes(members).await;
    let mut created = Vec::with_capacity(containers);
    for c in 0..containers {
        let through = c % members.len();
        let container = format!("bench-tenant-{c}");
        let image = clients[through]
            .images()
            .create(
                &container,
                ImageConfig {
                    model: Some("long-stream".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("creating an image of {container}: {e}"))
            .record;
        created.push((container, image));
    }
    let owners = lease_owners(store).await;
    let index: HashMap<&str, usize> = members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.id.as_str(), i))
        .collect();
    for client in clients {
        client.close().await;
    }
    created
        .into_iter()
        .map(|(container, image)| {
            let owner = owners
                .get(&container)
                .and_then(|id| index.get(id.as_str()))
                .unwrap_or_else(|| panic!("no member holds the lease of {container}"));
            Target {
                image_id: image.image_id,
                session_id: image.session_id,
                owner: *owner,
            }
        })
        .collect()
}

/// One remote runtime per member, without reconnection.
async fn remotes(members: &[Member]) -> Vec<RemoteRuntime> {
    let mut clients = Vec::with_capacity(members.len());
    for m in members {
        let options = ConnectOptions {
            reconnect: false,
            ..Default::default()
        };
        clients.push(
            remote_connect(&m.url, options)
                .await
                .unwrap_or_else(|e| panic!("connecting to {}: {e}", m.url)),
        );
    }
    clients
}

/// `container_id -> owner` from the lease table.
async fn lease_owners(store: &str) -> HashMap<String, String> {
    let (db, connection) = tokio_postgres::connect(store, tokio_postgres::NoTls)
        .await
        .expect("connecting to the bench schema");
    let connection = tokio::spawn(connection);
    let rows = db
        .query("SELECT container_id, owner FROM container_leases", &[])
        .await
        .expect("reading the leases");
    drop(db);
    let _ = connection.await;
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

async fn requests(members: &[Member], targets: &[Target], settings: &Settings) -> Requests {
    let servers = members.len();
    let mut conns = Vec::with_capacity(settings.connections);
    for k in 0..settings.connections {
        conns.push((k % servers, connect(&members[k % servers].url).await));
    }
    // Warm-up, untimed: every connection asks once for every image, so every member has its
    // forwarding clients open before the clock starts.
    for (k, (_, ws)) in conns.iter_mut().enumerate() {
        for (t, target) in targets.iter().enumerate() {
            let id = format!("warm_{k}_{t}");
            send_text(
                ws,
                request_frame(
                    "image_get_request",
                    json!({ "imageId": target.image_id }),
                    &id,
                ),
            )
            .await;
            let frame = read_response(ws, "image_get_response", &id).await;
            assert!(
                !frame.contains("\\\"error\\\""),
                "image_get failed: {frame}"
            );
        }
    }

    let cpu_before = cpu(members);
    let start = Instant::now();
    let deadline = start + settings.request_time;
    let tasks = conns.into_iter().enumerate().map(|(k, (server, mut ws))| {
        let targets = targets.to_vec();
        tokio::spawn(async move {
            let mut local = Vec::new();
            let mut forwarded = Vec::new();
            let mut i = k;
            while Instant::now() < deadline {
                let target = &targets[i % targets.len()];
                let id = format!("req_{i}");
                i += 1;
                let sent = Instant::now();
                send_text(
                    &mut ws,
                    request_frame(
                        "image_get_request",
                        json!({ "imageId": target.image_id }),
                        &id,
                    ),
                )
                .await;
                read_response(&mut ws, "image_get_response", &id).await;
                let took = micros(sent.elapsed());
                if target.owner == server {
                    local.push(took);
                } else {
                    forwarded.push(took);
                }
            }
            let _ = ws.close(None).await;
            (local, forwarded)
        })
    });
    let mut out = Requests::default();
    for result in futures::future::join_all(tasks).await {
        let (local, forwarded) = result.expect("a request task");
        out.local.extend(local);
        out.forwarded.extend(forwarded);
    }
    out.elapsed = start.elapsed();
    out.cpu = cpu(members).saturating_sub(cpu_before);
    out
}

/// A subscriber: its connection, and whether it is on the member that owns its session.
struct Subscriber {
    ws: agentvm_benches::wire::Ws,
    on_owner: bool,
}

async fn events(members: &[Member], targets: &[Target], settings: &Settings) -> Events {
    let servers = members.len();
    let mut subs = Vec::new();
    for target in targets {
        for j in 0..settings.subscribers {
            let server = (target.owner + j) % servers;
            let mut ws = connect(&members[server].url).await;
            subscribe(&mut ws, &target.session_id).await;
            subs.push(Subscriber {
                ws,
                on_owner: server == target.owner,
            });
        }
    }
    // Turns are sent through each session's owner.
    let senders = remotes(members).await;

    // A first round starts the agents; it is not timed.
    round(&senders, targets, &mut subs).await;
    let cpu_before = cpu(members);
    let mut out = Events::default();
    let start = Instant::now();
    while start.elapsed() < settings.event_time {
        let got = round(&senders, targets, &mut subs).await;
        out.rounds += 1;
        for (sub, (deltas, end)) in subs.iter().zip(got) {
            out.delivered += deltas;
            out.missing += DELTAS_PER_REPLY.saturating_sub(deltas);
            if sub.on_owner {
                out.end_local.push(micros(end));
            } else {
                out.crossed += deltas;
                out.end_crossed.push(micros(end));
            }
        }
    }
    out.elapsed = start.elapsed();
    out.cpu = cpu(members).saturating_sub(cpu_before);
    for sender in senders {
        sender.close().await;
    }
    for sub in subs {
        let mut ws = sub.ws;
        let _ = ws.close(None).await;
    }
    out
}

/// Sends one message to every session at once (through its owner) and waits until every
/// subscriber saw its `conversation_end`. Returns, per subscriber, the `text_delta`s it got
/// and how long after the send its `conversation_end` came.
async fn round(
    senders: &[RemoteRuntime],
    targets: &[Target],
    subs: &mut [Subscriber],
) -> Vec<(u64, Duration)> {
    let start = Instant::now();
    let sends = targets.iter().map(|t| async move {
        senders[t.owner]
            .agents()
            .send_to_image(&t.image_id, "Tell me a long story.")
            .await
            .unwrap_or_else(|e| panic!("sending to {}: {e}", t.image_id))
    });
    let reads = subs.iter_mut().map(|sub| async move {
        let got = count_until_end(&mut sub.ws).await;
        (got.text_deltas, start.elapsed())
    });
    let (_, got) = futures::future::join(
        futures::future::join_all(sends),
        futures::future::join_all(reads),
    )
    .await;
    got
}

/// `p50 / p99` of µs values, in ms; `-` for none.
fn p50_p99(values: &mut [u32]) -> String {
    if values.is_empty() {
        return "-".into();
    }
    values.sort_unstable();
    format!(
        "{:.2} / {:.2}",
        quantile(values, 0.5) as f64 / 1e3,
        quantile(values, 0.99) as f64 / 1e3
    )
}

fn cpu_share(cpu: Duration, elapsed: Duration) -> String {
    format!("{:.0}%", 100.0 * cpu.as_secs_f64() / elapsed.as_secs_f64())
}

fn print_tables(runs: &[Run], settings: &Settings) {
    println!();
    println!(
        "Requests: {} connections spread over the members, image_get one at a time per \
         connection, {} s; round trips in ms",
        settings.connections,
        settings.request_time.as_secs()
    );
    println!(
        "| members | requests/s | p50 / p99 | forwarded | local p50 / p99 | forwarded p50 / p99 | members' cpu (of one core) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for run in runs {
        let r = &run.requests;
        let total = r.local.len() + r.forwarded.len();
        let mut all: Vec<u32> = r.local.iter().chain(&r.forwarded).copied().collect();
        let mut local = r.local.clone();
        let mut forwarded = r.forwarded.clone();
        println!(
            "| {} | {:.0} | {} | {:.0}% | {} | {} | {} |",
            run.servers,
            total as f64 / r.elapsed.as_secs_f64(),
            p50_p99(&mut all),
            100.0 * r.forwarded.len() as f64 / total.max(1) as f64,
            p50_p99(&mut local),
            p50_p99(&mut forwarded),
            cpu_share(r.cpu, r.elapsed),
        );
    }
    println!();
    println!(
        "Events: {} long-stream sessions (100 text_delta per reply), {} subscriber(s) each \
         spread over the members, one turn per session per round, {} s; send to \
         conversation_end in ms",
        settings.containers,
        settings.subscribers,
        settings.event_time.as_secs()
    );
    println!(
        "| members | rounds | text_delta delivered/s | delivered | crossed servers | missing | end on owner p50 / p99 | end elsewhere p50 / p99 | members' cpu (of one core) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for run in runs {
        let e = &run.events;
        let mut local = e.end_local.clone();
        let mut crossed = e.end_crossed.clone();
        println!(
            "| {} | {} | {:.0} | {} | {} ({:.0}%) | {} | {} | {} | {} |",
            run.servers,
            e.rounds,
            e.delivered as f64 / e.elapsed.as_secs_f64(),
            e.delivered,
            e.crossed,
            100.0 * e.crossed as f64 / e.delivered.max(1) as f64,
            e.missing,
            p50_p99(&mut local),
            p50_p99(&mut crossed),
            cpu_share(e.cpu, e.elapsed),
        );
    }
}
