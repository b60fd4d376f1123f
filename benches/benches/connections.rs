//! Idle WebSocket connections and a reply streamed to all of them: 1,000 raw clients on one
//! agentvm server (`ServerManager::listen` on 127.0.0.1:0, in-memory `AgentVm`, mock driver).
//!
//! Not a criterion bench: it reads `VmRSS` from `/proc/self/status` and prints the differences.
//! It runs twice, each time in a fresh process, so neither run inherits the other's heap:
//!
//! 1. **clients in a child process**: this process runs the server; it starts itself again
//!    (`AGENTVM_BENCH_CONNECTIONS_MODE=clients`) and that child opens the 1,000 connections.
//!    The server's RSS difference is then the server's cost alone. Target: <= 50 KB per idle
//!    connection.
//! 2. **clients in the same process** (`…_MODE=inprocess`, started as a second child): the
//!    difference is client and server together.
//!
//! Each run then subscribes every connection to one session (then 10 sessions of 100
//! connections each), streams [`TURNS`] `long-stream` replies (100 `text_delta`s each) per
//! session, and reports `text_delta`s delivered per second across all connections (clients
//! count every frame, acknowledge none, and find types without parsing JSON). The replies are
//! sent in-process (`RuntimeExt::agents().send_to_image`); the agents are started beforehand.
//!
//! `AGENTVM_BENCH_NODELAY=1` serves on a listener with `TCP_NODELAY` instead of
//! `ServerManager::listen` (see `ws.rs`). The open-file limit is raised to its hard maximum
//! when it is too low for the sockets (a client and a server socket per connection in one
//! process).

/// The allocator the `agentvm-server` binary runs on, so this bench measures what runs.
#[global_allocator]
static ALLOCATOR: agentvm_server::ServerAllocator = agentvm_server::ServerAllocator;

use agentvm::{BusItem, EventPayload, RuntimeExt};
use agentvm_benches::wire::{
    connect, count_until_end, long_stream_image, send_text, subscribe, BenchServer, Received, Ws,
};
use agentvm_benches::{rss_kib, tokio_runtime};
use agentvm_server::ServerConfig;
use futures::StreamExt;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const CONNECTIONS: usize = 1_000;
const TARGET_KB: f64 = 50.0;
/// Replies streamed per session in each streaming phase.
const TURNS: u64 = 3;
const DELTAS_PER_REPLY: u64 = 100;
/// The streaming phases: connections spread over this many sessions.
const SESSION_COUNTS: [usize; 2] = [1, 10];
/// Connections opened at once.
const OPEN_CONCURRENCY: usize = 32;
/// Settle time before reading RSS.
const SETTLE: Duration = Duration::from_millis(500);

const MODE_VAR: &str = "AGENTVM_BENCH_CONNECTIONS_MODE";
const URL_VAR: &str = "AGENTVM_BENCH_CONNECTIONS_URL";
const NODELAY_VAR: &str = "AGENTVM_BENCH_NODELAY";

fn main() -> ExitCode {
    let result = match std::env::var(MODE_VAR).as_deref() {
        Ok("clients") => client_child(),
        Ok("inprocess") => in_process(),
        _ => split().and_then(|()| run_in_process_child()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("connections: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mib(kib: i64) -> f64 {
    kib as f64 / 1024.0
}

fn rss() -> Result<i64, String> {
    rss_kib()
        .map(|k| k as i64)
        .ok_or_else(|| "no /proc/self/status here, cannot measure RSS".to_string())
}

/// Raises the soft open-file limit to at least `needed` (up to the hard limit).
fn raise_fd_limit(needed: u64) -> Result<u64, String> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current.is_none_or(|c| c >= needed) {
        return Ok(limit.current.unwrap_or(u64::MAX));
    }
    let want = limit.maximum.map_or(needed, |max| max.min(needed));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(want),
            maximum: limit.maximum,
        },
    )
    .map_err(|e| format!("raising the open-file limit to {want}: {e}"))?;
    if want < needed {
        return Err(format!(
            "the open-file limit's hard maximum is {want}, below the {needed} sockets this bench needs"
        ));
    }
    Ok(want)
}

fn server_config() -> ServerConfig {
    ServerConfig::default()
}

fn nodelay() -> bool {
    std::env::var(NODELAY_VAR).is_ok_and(|v| v == "1")
}

/// A server with one long-stream image per streaming session, every agent started, and a few
/// connections opened and closed so one-time allocations are behind the baseline.
async fn prepared_server() -> (BenchServer, Vec<(String, String)>) {
    let server = BenchServer::start_with(server_config(), nodelay()).await;
    let max_sessions = SESSION_COUNTS.iter().copied().max().unwrap_or(1);
    let mut images = Vec::with_capacity(max_sessions);
    for i in 0..max_sessions {
        let (image_id, session_id) = long_stream_image(&server.vm, &format!("tenant-{i:02}")).await;
        let mut events = server
            .vm
            .sessions()
            .events(&session_id)
            .await
            .expect("subscribing in-process");
        server
            .vm
            .agents()
            .send_to_image(&image_id, "warm up")
            .await
            .expect("starting the agent");
        wait_for_end(&mut events).await;
        images.push((image_id, session_id));
    }
    let url = server.ws_url();
    let mut warm = Vec::new();
    for _ in 0..8 {
        warm.push(connect(&url).await);
    }
    for mut ws in warm {
        let _ = ws.close(None).await;
    }
    wait_for_connections(&server, 0).await;
    (server, images)
}

async fn wait_for_end(events: &mut agentvm::Subscription) {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), events.recv()).await {
            Ok(Some(BusItem::Event(p))) => {
                if matches!(p.event.payload, EventPayload::ConversationEnd { .. }) {
                    return;
                }
            }
            other => panic!("waiting for conversation_end: {other:?}"),
        }
    }
}

async fn wait_for_connections(server: &BenchServer, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.server.metrics().connections_open() != n {
        assert!(
            Instant::now() < deadline,
            "the server has {} connections open, expected {n}",
            server.server.metrics().connections_open()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn open_clients(url: &str, n: usize) -> Vec<Ws> {
    futures::stream::iter(0..n)
        .map(|_| connect(url))
        .buffer_unordered(OPEN_CONCURRENCY)
        .collect()
        .await
}

/// Connection `i` joins `sessions[i % len]` (leaving `leave` first, if given).
async fn subscribe_all(conns: Vec<Ws>, sessions: &[String], leave: Option<&[String]>) -> Vec<Ws> {
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut ws)| {
            let join = sessions[i % sessions.len()].clone();
            let leave = leave.map(|l| l[i % l.len()].clone());
            tokio::spawn(async move {
                if let Some(old) = leave {
                    send_text(
                        &mut ws,
                        json!({ "type": "unsubscribe", "sessionId": old }).to_string(),
                    )
                    .await;
                }
                subscribe(&mut ws, &join).await;
                ws
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.expect("a subscribe task panicked"));
    }
    out
}

/// Spawns one task per connection reading `turns` turns; join with [`join_counts`].
type CountTasks = Vec<tokio::task::JoinHandle<(Ws, Received)>>;

fn spawn_counts(conns: Vec<Ws>, turns: u64) -> CountTasks {
    conns
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut got = Received::default();
                for _ in 0..turns {
                    got += count_until_end(&mut ws).await;
                }
                (ws, got)
            })
        })
        .collect()
}

async fn join_counts(tasks: CountTasks) -> (Vec<Ws>, Received) {
    let mut conns = Vec::with_capacity(tasks.len());
    let mut total = Received::default();
    for t in tasks {
        let (ws, got) = t.await.expect("a counting task panicked");
        assert_eq!(
            got.text_deltas % DELTAS_PER_REPLY,
            0,
            "a connection missed text_delta events"
        );
        total += got;
        conns.push(ws);
    }
    (conns, total)
}

/// Sends [`TURNS`] messages to each of `images` (queued by each agent, streamed back to back).
async fn send_turns(server: &BenchServer, images: &[(String, String)]) {
    for _ in 0..TURNS {
        for (image_id, _) in images {
            server
                .vm
                .agents()
                .send_to_image(image_id, "Tell me a long story.")
                .await
                .expect("sending a message");
        }
    }
}

fn report_stream(where_: &str, sessions: usize, elapsed: Duration, got: Received) {
    let expected = CONNECTIONS as u64 * TURNS * DELTAS_PER_REPLY;
    let secs = elapsed.as_secs_f64();
    println!(
        "  streaming ({where_}): {CONNECTIONS} connections on {sessions} session(s), {TURNS} replies per session: \
         {} text_delta delivered (expected {expected}) in {:.3} s = {:.0} events/s ({:.0} frames/s)",
        got.text_deltas,
        secs,
        got.text_deltas as f64 / secs,
        got.frames as f64 / secs,
    );
}

fn sessions_of(images: &[(String, String)], n: usize) -> Vec<String> {
    images[..n].iter().map(|(_, s)| s.clone()).collect()
}

fn images_of(images: &[(String, String)], n: usize) -> Vec<(String, String)> {
    images[..n].to_vec()
}

// ---- variant 1: the server here, the clients in a child process ----------------------------

struct ClientProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl ClientProcess {
    fn start(url: &str) -> Result<Self, String> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
        let mut child = Command::new(exe)
            .env(MODE_VAR, "clients")
            .env(URL_VAR, url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("starting the client process: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin pipe")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout pipe")?);
        Ok(ClientProcess {
            child,
            stdin,
            stdout,
        })
    }

    fn send(&mut self, line: &str) -> Result<(), String> {
        writeln!(self.stdin, "{line}")
            .and_then(|()| self.stdin.flush())
            .map_err(|e| format!("writing to the client process: {e}"))
    }

    /// The next line the child prints, split into words after checking the first.
    fn expect(&mut self, first: &str) -> Result<Vec<String>, String> {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .map_err(|e| format!("reading from the client process: {e}"))?;
        let words: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        if words.first().map(String::as_str) != Some(first) {
            return Err(format!(
                "the client process said {line:?}, expected {first:?}"
            ));
        }
        Ok(words)
    }

    fn finish(mut self) -> Result<(), String> {
        drop(self.stdin);
        let status = self
            .child
            .wait()
            .map_err(|e| format!("waiting for the client process: {e}"))?;
        if !status.success() {
            return Err(format!("the client process failed: {status}"));
        }
        Ok(())
    }
}

fn parse_u64(words: &[String], i: usize) -> Result<u64, String> {
    words
        .get(i)
        .and_then(|w| w.parse().ok())
        .ok_or_else(|| format!("the client process sent {words:?}"))
}

fn split() -> Result<(), String> {
    raise_fd_limit(CONNECTIONS as u64 + 256)?;
    let rt = tokio_runtime();
    let (server, images) = rt.block_on(prepared_server());
    std::thread::sleep(SETTLE);
    let before = rss()?;

    let mut clients = ClientProcess::start(&server.ws_url())?;
    let ready = clients.expect("ready")?;
    let (client_before, client_after) = (parse_u64(&ready, 1)?, parse_u64(&ready, 2)?);
    rt.block_on(wait_for_connections(&server, CONNECTIONS as u64));
    std::thread::sleep(SETTLE);
    let idle = rss()?;
    let per_conn = (idle - before) as f64 / CONNECTIONS as f64;
    let client_per_conn = (client_after as f64 - client_before as f64) / CONNECTIONS as f64;
    println!(
        "idle connections: {CONNECTIONS}, server RSS +{:.1} MB ({per_conn:.1} KB per connection); target <= {TARGET_KB} KB ({}) \
         [clients in a child process, whose RSS grew {:.1} MB ({client_per_conn:.1} KB per connection)]",
        mib(idle - before),
        if per_conn <= TARGET_KB { "met" } else { "MISSED" },
        mib(client_after as i64 - client_before as i64),
    );

    let mut previous: Option<Vec<String>> = None;
    for n in SESSION_COUNTS {
        let sessions = sessions_of(&images, n);
        let leave = previous.as_ref().map(|p| p.join(","));
        clients.send(&format!(
            "subscribe {} {}",
            sessions.join(","),
            leave.as_deref().unwrap_or("-")
        ))?;
        clients.expect("subscribed")?;
        if previous.is_none() {
            std::thread::sleep(SETTLE);
            let subscribed = rss()?;
            println!(
                "  subscribed to 1 session: server RSS +{:.1} MB over idle ({:.1} KB per connection)",
                mib(subscribed - idle),
                (subscribed - idle) as f64 / CONNECTIONS as f64,
            );
        }
        clients.send(&format!("count {TURNS}"))?;
        let start = Instant::now();
        rt.block_on(send_turns(&server, &images_of(&images, n)));
        let counted = clients.expect("counted")?;
        let elapsed = start.elapsed();
        let got = Received {
            text_deltas: parse_u64(&counted, 1)?,
            frames: parse_u64(&counted, 2)?,
        };
        report_stream("clients in a child process", n, elapsed, got);
        previous = Some(sessions);
    }
    std::thread::sleep(SETTLE);
    let after = rss()?;
    println!(
        "  server RSS after streaming: +{:.1} MB over idle ({:.1} KB per connection), +{:.1} MB over the baseline; \
         send-queue overflows: {}",
        mib(after - idle),
        (after - idle) as f64 / CONNECTIONS as f64,
        mib(after - before),
        server
            .metric("agentvm_send_queue_overflows_total")
            .unwrap_or_default(),
    );
    clients.finish()?;
    rt.block_on(server.close());
    Ok(())
}

/// The child of variant 1: opens the connections, then follows the parent's commands on stdin.
fn client_child() -> Result<(), String> {
    let url = std::env::var(URL_VAR).map_err(|_| format!("{URL_VAR} is not set"))?;
    raise_fd_limit(CONNECTIONS as u64 + 256)?;
    let rt = tokio_runtime();
    let before = rss()?;
    let mut conns = rt.block_on(open_clients(&url, CONNECTIONS));
    std::thread::sleep(SETTLE);
    let after = rss()?;
    let mut out = std::io::stdout();
    let say = |out: &mut std::io::Stdout, line: String| {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("writing to the parent: {e}"))
    };
    say(&mut out, format!("ready {before} {after}"))?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("reading a command: {e}"))?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["subscribe", sessions, leave] => {
                let sessions: Vec<String> = sessions.split(',').map(str::to_string).collect();
                let leave: Option<Vec<String>> =
                    (*leave != "-").then(|| leave.split(',').map(str::to_string).collect());
                conns = rt.block_on(subscribe_all(conns, &sessions, leave.as_deref()));
                say(&mut out, "subscribed".into())?;
            }
            ["count", turns] => {
                let turns: u64 = turns.parse().map_err(|_| format!("bad command {line:?}"))?;
                let (back, got) =
                    rt.block_on(async { join_counts(spawn_counts(conns, turns)).await });
                conns = back;
                say(
                    &mut out,
                    format!("counted {} {}", got.text_deltas, got.frames),
                )?;
            }
            _ => return Err(format!("unknown command {line:?}")),
        }
    }
    rt.block_on(async {
        for mut ws in conns {
            let _ = ws.close(None).await;
        }
    });
    Ok(())
}

// ---- variant 2: server and clients in one process -----------------------------------------

fn run_in_process_child() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding this executable: {e}"))?;
    let status = Command::new(exe)
        .env(MODE_VAR, "inprocess")
        .status()
        .map_err(|e| format!("starting the in-process run: {e}"))?;
    if !status.success() {
        return Err(format!("the in-process run failed: {status}"));
    }
    Ok(())
}

fn in_process() -> Result<(), String> {
    raise_fd_limit(2 * CONNECTIONS as u64 + 256)?;
    let rt = tokio_runtime();
    let (server, images) = rt.block_on(prepared_server());
    std::thread::sleep(SETTLE);
    let before = rss()?;
    let mut conns = rt.block_on(async {
        let conns = open_clients(&server.ws_url(), CONNECTIONS).await;
        wait_for_connections(&server, CONNECTIONS as u64).await;
        conns
    });
    std::thread::sleep(SETTLE);
    let idle = rss()?;
    println!(
        "idle connections (clients in the same process): {CONNECTIONS}, process RSS +{:.1} MB ({:.1} KB per connection, client and server)",
        mib(idle - before),
        (idle - before) as f64 / CONNECTIONS as f64,
    );
    let mut previous: Option<Vec<String>> = None;
    for n in SESSION_COUNTS {
        let sessions = sessions_of(&images, n);
        let (back, elapsed, got) = rt.block_on(async {
            let subscribed = subscribe_all(conns, &sessions, previous.as_deref()).await;
            let tasks = spawn_counts(subscribed, TURNS);
            let start = Instant::now();
            send_turns(&server, &images_of(&images, n)).await;
            let (back, got) = join_counts(tasks).await;
            (back, start.elapsed(), got)
        });
        conns = back;
        report_stream("clients in the same process", n, elapsed, got);
        previous = Some(sessions);
    }
    std::thread::sleep(SETTLE);
    let after = rss()?;
    println!(
        "  process RSS after streaming: +{:.1} MB over idle ({:.1} KB per connection); send-queue overflows: {}",
        mib(after - idle),
        (after - idle) as f64 / CONNECTIONS as f64,
        server
            .metric("agentvm_send_queue_overflows_total")
            .unwrap_or_default(),
    );
    rt.block_on(async {
        for mut ws in conns {
            let _ = ws.close(None).await;
        }
        server.close().await;
    });
    Ok(())
}
