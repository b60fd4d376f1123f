//! `agentvm-soak`: runs every abuse the hardening work closed against a running
//! `agentvm-server`, at once, while a probe client measures latency and a writer and a
//! subscriber check that nothing acknowledged is lost. Prints the server's resident memory,
//! the probe's percentiles and what was lost (which must be nothing); exits 1 when a bound is
//! broken. Run it through `scripts/soak.sh`, which builds a release server and starts it.
//!
//! ```text
//! agentvm-soak --addr 127.0.0.1:8080 --pid <server pid> [--token <operator token>] [--seconds 300]
//! ```
//!
//! The abusers: a client that never reads and repeats `subscribe(afterCursor: 0)` /
//! `unsubscribe` on a 10,000-event session; a session of large messages read over and over;
//! idle and trickling TCP sockets; a metrics-label flood of unique request types; malformed,
//! mutated and oversized frames; tokens revoked while their connection is open (with a token,
//! that is, when the server requires auth). Disk full and sandbox escapes are covered by tests
//! (they need a small filesystem and a Docker node).

use agentvm_e2e::wire::WsClient;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// The server's resident memory must stay under this.
const RSS_BOUND: u64 = 256 * 1024 * 1024;
/// The probe client's p99 must stay under this.
const P99_BOUND: Duration = Duration::from_millis(50);
/// The size of each large message of the history abuser.
const LARGE_MESSAGE: usize = 900 * 1024;

struct Args {
    addr: SocketAddr,
    pid: u32,
    token: Option<String>,
    seconds: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut addr = None;
    let mut pid = None;
    let mut token = None;
    let mut seconds = 300;
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => addr = Some(value()?.parse().map_err(|e| format!("--addr: {e}"))?),
            "--pid" => pid = Some(value()?.parse().map_err(|e| format!("--pid: {e}"))?),
            "--token" => token = Some(value()?),
            "--seconds" => seconds = value()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(Args {
        addr: addr.ok_or("--addr is required")?,
        pid: pid.ok_or("--pid is required")?,
        token,
        seconds,
    })
}

#[derive(Default)]
struct Stats {
    rss_start: AtomicU64,
    rss_max: AtomicU64,
    probe: Mutex<Vec<Duration>>,
    probe_failures: AtomicU64,
    resub_bursts: AtomicU64,
    resub_closes: Mutex<BTreeMap<String, u64>>,
    history_reads: AtomicU64,
    history_bytes: AtomicU64,
    history_slowest_ms: AtomicU64,
    sockets_opened: AtomicU64,
    sockets_closed_by_server: AtomicU64,
    labels_sent: AtomicU64,
    malformed_sent: AtomicU64,
    malformed_closes: Mutex<BTreeMap<String, u64>>,
    revoked: AtomicU64,
    revoked_closed: AtomicU64,
}

fn count(map: &Mutex<BTreeMap<String, u64>>, key: String) {
    if let Ok(mut m) = map.lock() {
        *m.entry(key).or_default() += 1;
    }
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn raw_ws(addr: SocketAddr, token: Option<&str>) -> Option<Ws> {
    let mut req = format!("ws://{addr}/ws").into_client_request().ok()?;
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().ok()?);
    }
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .ok()?
    .ok()?;
    Some(ws)
}

fn request_frame(type_name: &str, id: &str, mut data: Value) -> String {
    data["requestId"] = json!(id);
    json!({"type": type_name, "timestamp": 0, "data": data, "source": "command",
        "category": "request", "intent": "request"})
    .to_string()
}

/// A tolerant HTTP/1.1 request: `None` when the server did not answer.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Option<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\nContent-Type: application/json\r\n",
        body.len()
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.ok()?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())?;
    Some((status, body))
}

/// Creates an image (and its container) with the given mock scenario; returns (image, session).
async fn image(client: &mut WsClient, container: &str, model: &str) -> (String, String) {
    let r = client
        .request(
            "image_create_request",
            json!({"containerId": container, "config": {"model": model}}),
        )
        .await;
    let image = r["data"]["record"]["imageId"]
        .as_str()
        .unwrap_or_else(|| panic!("image_create_request failed: {r}"))
        .to_string();
    let session = r["data"]["__subscriptions"][0]
        .as_str()
        .unwrap_or_else(|| panic!("image_create_request named no session: {r}"))
        .to_string();
    (image, session)
}

/// Sends a message and reads to the end of its turn; `false` when the send was refused.
async fn turn(client: &mut WsClient, image: &str, content: &str) -> bool {
    let r = client
        .request(
            "message_send_request",
            json!({"imageId": image, "content": content}),
        )
        .await;
    if r["data"]["error"].is_string() {
        return false;
    }
    client.frames_until("conversation_end").await;
    client.clear_backlog();
    true
}

async fn probe(addr: SocketAddr, token: Option<String>, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    let mut client = WsClient::try_connect(&format!("ws://{addr}/ws"), token.as_deref())
        .await
        .expect("the probe connects");
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let id = client
            .send_request("container_list_request", json!({}))
            .await;
        match tokio::time::timeout(Duration::from_secs(5), client.response_to(&id)).await {
            Ok(_) => {
                if let Ok(mut p) = stats.probe.lock() {
                    p.push(started.elapsed());
                }
            }
            Err(_) => {
                stats.probe_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What the writer and the subscriber saw.
struct Delivery {
    acknowledged: u64,
    lost: u64,
    duplicated: u64,
    deltas: u64,
    expected_deltas: u64,
    cursor_errors: u64,
}

async fn writer_and_subscriber(
    addr: SocketAddr,
    token: Option<String>,
    stop: Arc<AtomicBool>,
) -> Delivery {
    let url = format!("ws://{addr}/ws");
    let mut writer = WsClient::try_connect(&url, token.as_deref())
        .await
        .expect("the writer connects");
    // multi-delta: five text deltas a turn.
    let (image_id, session) = image(&mut writer, "soak-writer", "mock:multi-delta").await;
    let mut subscriber = WsClient::try_connect(&url, token.as_deref())
        .await
        .expect("the subscriber connects");
    subscriber
        .send_text(
            &json!({"type": "subscribe", "sessionId": session, "afterCursor": "0"}).to_string(),
        )
        .await;
    let reader = tokio::spawn(async move {
        let mut cursors = HashSet::new();
        let (mut deltas, mut ends, mut cursor_errors, mut last) = (0u64, 0u64, 0u64, 0u64);
        let mut quiet_since = Instant::now();
        loop {
            match subscriber.read_frame_within(Duration::from_secs(1)).await {
                Ok(Some(f)) => {
                    if let Some(c) = f.cursor {
                        if !cursors.insert(c) || c <= last {
                            cursor_errors += 1;
                        }
                        last = c;
                    }
                    match f.type_name() {
                        "text_delta" => deltas += 1,
                        "conversation_end" => ends += 1,
                        "__close" => break,
                        _ => {}
                    }
                    quiet_since = Instant::now();
                }
                Ok(None) => break,
                Err(()) => {
                    if ends_target_reached(&ends) || quiet_since.elapsed() > Duration::from_secs(20)
                    {
                        break;
                    }
                }
            }
        }
        (deltas, ends, cursor_errors)
    });
    let mut sent = Vec::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let content = format!("soak-writer-{n:06}");
        if turn(&mut writer, &image_id, &content).await {
            sent.push(content);
        }
    }
    ENDS_TARGET.store(sent.len() as u64, Ordering::Relaxed);
    let (deltas, _ends, cursor_errors) = reader.await.unwrap_or((0, 0, 1));
    // The whole history, page by page.
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    let mut page = json!({"imageId": image_id, "limit": 1000});
    loop {
        let history = writer.request("image_messages_request", page.clone()).await;
        for m in history["data"]["messages"].as_array().into_iter().flatten() {
            if let Some(text) = m["content"].as_str() {
                if text.starts_with("soak-writer-") {
                    *seen.entry(text.to_string()).or_default() += 1;
                }
            }
        }
        match (
            history["data"]["hasMore"].as_bool(),
            history["data"].get("nextCursor"),
        ) {
            (Some(true), Some(next)) => page["after"] = next.clone(),
            _ => break,
        }
    }
    let lost = sent.iter().filter(|c| !seen.contains_key(*c)).count() as u64;
    let duplicated = seen.values().filter(|n| **n > 1).count() as u64;
    Delivery {
        acknowledged: sent.len() as u64,
        lost,
        duplicated,
        deltas,
        expected_deltas: sent.len() as u64 * 5,
        cursor_errors,
    }
}

static ENDS_TARGET: AtomicU64 = AtomicU64::new(u64::MAX);

fn ends_target_reached(ends: &u64) -> bool {
    *ends >= ENDS_TARGET.load(Ordering::Relaxed)
}

async fn resubscriber(
    addr: SocketAddr,
    token: Option<String>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
    let mut setup = WsClient::try_connect(&format!("ws://{addr}/ws"), token.as_deref())
        .await
        .expect("the resubscriber connects");
    let (image_id, session) = image(&mut setup, "soak-resubscribe", "mock:long-stream").await;
    // 100 turns of 100 deltas: a 10,000-event replay log.
    for i in 0..100 {
        if stop.load(Ordering::Relaxed) || !turn(&mut setup, &image_id, &format!("fill {i}")).await
        {
            break;
        }
    }
    setup.close().await;
    // Asking for the subscribe response too (an agentvm extension) adds a frame per subscribe.
    let subscribe = json!({"type": "subscribe", "sessionId": session, "afterCursor": "0",
        "__subscribeResponse": true})
    .to_string();
    let unsubscribe = json!({"type": "unsubscribe", "sessionId": session}).to_string();
    while !stop.load(Ordering::Relaxed) {
        let Some(ws) = raw_ws(addr, token.as_deref()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        // Never reads: only the sink is driven, the stream half is kept and left alone.
        let (mut sink, mut stream) = ws.split();
        let mut closed = false;
        while !stop.load(Ordering::Relaxed) && !closed {
            for _ in 0..500 {
                let sent = tokio::time::timeout(Duration::from_secs(2), async {
                    sink.send(Message::Text(subscribe.clone().into())).await?;
                    sink.send(Message::Text(unsubscribe.clone().into())).await
                })
                .await;
                if !matches!(sent, Ok(Ok(()))) {
                    closed = true;
                    break;
                }
            }
            stats.resub_bursts.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Still not reading for longer than the server's send budget (30 s by default), so a
        // server that bounds it has closed the connection by now; then read to learn how.
        if !stop.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_secs(35)).await;
        }
        let reason = tokio::time::timeout(Duration::from_secs(60), how_it_ended(&mut stream))
            .await
            .unwrap_or_else(|_| "still open at the end".into());
        count(&stats.resub_closes, reason);
    }
}

async fn history_reader(
    addr: SocketAddr,
    token: Option<String>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
    let mut client = WsClient::try_connect(&format!("ws://{addr}/ws"), token.as_deref())
        .await
        .expect("the history abuser connects");
    let (image_id, _) = image(&mut client, "soak-history", "mock:instant").await;
    let big = "h".repeat(LARGE_MESSAGE);
    for i in 0..60 {
        if stop.load(Ordering::Relaxed)
            || !turn(&mut client, &image_id, &format!("{i:03} {big}")).await
        {
            break;
        }
    }
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let r = client
            .request("image_messages_request", json!({"imageId": image_id}))
            .await;
        let ms = started.elapsed().as_millis() as u64;
        stats.history_slowest_ms.fetch_max(ms, Ordering::Relaxed);
        stats.history_reads.fetch_add(1, Ordering::Relaxed);
        stats
            .history_bytes
            .fetch_add(r.to_string().len() as u64, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn idle_sockets(addr: SocketAddr, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let mut held = Vec::new();
        for i in 0..600 {
            if let Ok(Ok(s)) =
                tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr)).await
            {
                stats.sockets_opened.fetch_add(1, Ordering::Relaxed);
                held.push((i % 2 == 0, s));
            }
        }
        // Half say nothing; half trickle a request line a byte every 2 s.
        let deadline = Instant::now() + Duration::from_secs(20);
        let line = b"GET /health HTTP/1.1\r\nX-Slow: ";
        let mut step = 0;
        while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
            for (trickle, s) in held.iter_mut() {
                if *trickle {
                    let _ = s
                        .write_all(&line[step % line.len()..step % line.len() + 1])
                        .await;
                }
            }
            step += 1;
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        for (_, mut s) in held {
            let mut buf = [0u8; 512];
            // A socket the server closed reads EOF (or the 408 it sent, then EOF) at once.
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(5), s.read(&mut buf)).await
            {
                let _ = n;
                stats
                    .sockets_closed_by_server
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn label_flood(
    addr: SocketAddr,
    token: Option<String>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(mut ws) = raw_ws(addr, token.as_deref()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        for _ in 0..50 {
            n += 1;
            let name = format!("flood_{n}_{}\\n{{le=\"1\"}} 424242", "x".repeat(64 * 1024));
            let frame = request_frame(&name, &format!("f{n}"), json!({}));
            if ws.send(Message::Text(frame.into())).await.is_err() {
                break;
            }
            stats.labels_sent.fetch_add(1, Ordering::Relaxed);
            // Read the error so the connection stays within its budget.
            let _ = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        }
        let _ = ws.close(None).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn mutations(seed: u64) -> String {
    let valid = request_frame(
        "image_list_request",
        "m",
        json!({"containerId": "soak-writer"}),
    );
    let bytes = valid.as_bytes();
    let pick = |k: u64| (seed.wrapping_mul(6364136223846793005).wrapping_add(k) >> 33) as usize;
    match seed % 7 {
        0 => valid[..pick(1) % valid.len()].to_string(),
        1 => {
            let mut b = bytes.to_vec();
            let i = pick(2) % b.len();
            b[i] = b"{}[]\",:0\\"[pick(3) % 9];
            String::from_utf8_lossy(&b).to_string()
        }
        2 => "[".repeat(10_000 + pick(4) % 100_000),
        3 => json!({"type": "message_send_request", "data": {"imageId": 1e308, "content": [null]}}).to_string(),
        4 => json!({"type": "subscribe", "sessionId": "x".repeat(pick(5) % 100_000), "afterCursor": "-1"}).to_string(),
        5 => json!({"__ack": "nope", "type": 7}).to_string(),
        _ => format!("{{\"type\":\"{}\"}}", "\u{fffd}".repeat(pick(6) % 1000)),
    }
}

async fn malformed(
    addr: SocketAddr,
    token: Option<String>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) {
    let mut seed = 1u64;
    while !stop.load(Ordering::Relaxed) {
        let Some(ws) = raw_ws(addr, token.as_deref()).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let (mut sink, mut stream) = ws.split();
        let drain = tokio::spawn(async move { how_it_ended(&mut stream).await });
        for _ in 0..200 {
            seed += 1;
            if sink
                .send(Message::Text(mutations(seed).into()))
                .await
                .is_err()
            {
                break;
            }
            stats.malformed_sent.fetch_add(1, Ordering::Relaxed);
        }
        // Every other connection ends with a frame over the limit, the rest with a Close.
        if seed % 400 == 1 {
            let _ = sink
                .send(Message::Text("x".repeat(5 * 1024 * 1024).into()))
                .await;
        } else {
            let _ = sink.close().await;
        }
        let reason = tokio::time::timeout(Duration::from_secs(10), drain)
            .await
            .map(|r| r.unwrap_or_else(|_| "task".into()))
            .unwrap_or_else(|_| "no close within 10 s".into());
        count(&stats.malformed_closes, reason);
    }
}

async fn revoker(addr: SocketAddr, token: String, stats: Arc<Stats>, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let created = http(
            addr,
            "POST",
            "/v1/tokens",
            Some(&token),
            Some(r#"{"containers":["soak-revoke"]}"#),
        )
        .await;
        let Some((201, body)) = created else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        let (Some(secret), Some(id)) = (v["token"].as_str(), v["id"].as_str()) else {
            continue;
        };
        let Some(ws) = raw_ws(addr, Some(secret)).await else {
            continue;
        };
        let (_sink, mut stream) = ws.split();
        let _ = http(
            addr,
            "DELETE",
            &format!("/v1/tokens/{id}"),
            Some(&token),
            None,
        )
        .await;
        stats.revoked.fetch_add(1, Ordering::Relaxed);
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            while let Some(m) = stream.next().await {
                if let Ok(Message::Close(Some(c))) = m {
                    return u16::from(c.code) == 1008;
                }
            }
            false
        })
        .await;
        if matches!(closed, Ok(true)) {
            stats.revoked_closed.fetch_add(1, Ordering::Relaxed);
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1048576.0)
}

#[tokio::main]
async fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("agentvm-soak: {e}\nusage: agentvm-soak --addr HOST:PORT --pid PID [--token T] [--seconds N]");
            std::process::exit(2);
        }
    };
    let stats = Arc::new(Stats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let start_rss = rss_of(args.pid).unwrap_or(0);
    stats.rss_start.store(start_rss, Ordering::Relaxed);
    let metrics_before = http(args.addr, "GET", "/metrics", args.token.as_deref(), None)
        .await
        .map(|(_, b)| b.len())
        .unwrap_or(0);

    let sampler = {
        let (stats, stop, pid) = (stats.clone(), stop.clone(), args.pid);
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Some(r) = rss_of(pid) {
                    stats.rss_max.fetch_max(r, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };
    let t = || args.token.clone();
    let mut tasks = vec![
        tokio::spawn(probe(args.addr, t(), stats.clone(), stop.clone())),
        tokio::spawn(resubscriber(args.addr, t(), stats.clone(), stop.clone())),
        tokio::spawn(history_reader(args.addr, t(), stats.clone(), stop.clone())),
        tokio::spawn(idle_sockets(args.addr, stats.clone(), stop.clone())),
        tokio::spawn(label_flood(args.addr, t(), stats.clone(), stop.clone())),
        tokio::spawn(malformed(args.addr, t(), stats.clone(), stop.clone())),
    ];
    if let Some(token) = t() {
        tasks.push(tokio::spawn(revoker(
            args.addr,
            token,
            stats.clone(),
            stop.clone(),
        )));
    }
    let delivery = tokio::spawn(writer_and_subscriber(args.addr, t(), stop.clone()));

    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let delivery = delivery.await.expect("the writer finished");
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(90), task).await;
    }
    let _ = sampler.await;
    let end_rss = rss_of(args.pid);
    let alive = end_rss.is_some()
        && http(args.addr, "GET", "/health", None, None)
            .await
            .map(|(s, _)| s)
            == Some(200);
    let metrics_after = http(args.addr, "GET", "/metrics", args.token.as_deref(), None)
        .await
        .map(|(_, b)| b.len())
        .unwrap_or(0);

    let mut probe = stats.probe.lock().map(|p| p.clone()).unwrap_or_default();
    probe.sort();
    let p99 = percentile(&probe, 0.99);
    let rss_max = stats.rss_max.load(Ordering::Relaxed);
    let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "soak: {} s against {} (pid {})",
        args.seconds, args.addr, args.pid
    );
    println!(
        "server RSS: start {}, max {}, end {} (bound {})",
        mb(start_rss),
        mb(rss_max),
        end_rss.map(mb).unwrap_or_else(|| "gone".into()),
        mb(RSS_BOUND)
    );
    println!(
        "probe: {} requests, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms, {} without an answer in 5 s (p99 bound {} ms)",
        probe.len(),
        percentile(&probe, 0.5).as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        probe.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        ld(&stats.probe_failures),
        P99_BOUND.as_millis()
    );
    println!(
        "writer: {} messages acknowledged, {} lost, {} duplicated in the history",
        delivery.acknowledged, delivery.lost, delivery.duplicated
    );
    println!(
        "subscriber: {} of {} text deltas, {} cursor errors (repeated or going back)",
        delivery.deltas, delivery.expected_deltas, delivery.cursor_errors
    );
    println!(
        "resubscribe loop: {} bursts of 500 subscribe/unsubscribe; ended by {:?}",
        ld(&stats.resub_bursts),
        stats
            .resub_closes
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    );
    println!(
        "large history: {} reads, {} read, slowest {} ms",
        ld(&stats.history_reads),
        mb(ld(&stats.history_bytes)),
        ld(&stats.history_slowest_ms)
    );
    println!(
        "idle sockets: {} opened, {} closed by the server within their round",
        ld(&stats.sockets_opened),
        ld(&stats.sockets_closed_by_server)
    );
    println!(
        "label flood: {} unique 64 KB request types; /metrics {} bytes before, {} after",
        ld(&stats.labels_sent),
        metrics_before,
        metrics_after
    );
    println!(
        "malformed: {} frames; connections ended by {:?}",
        ld(&stats.malformed_sent),
        stats
            .malformed_closes
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    );
    if args.token.is_some() {
        println!(
            "revoke: {} tokens revoked with a connection open, {} closed with 1008",
            ld(&stats.revoked),
            ld(&stats.revoked_closed)
        );
    }

    let mut broken = Vec::new();
    if !alive {
        broken.push("the server is gone or /health does not answer".to_string());
    }
    if rss_max > RSS_BOUND {
        broken.push(format!("RSS {} over {}", mb(rss_max), mb(RSS_BOUND)));
    }
    if p99 > P99_BOUND || ld(&stats.probe_failures) > 0 {
        broken.push(format!(
            "probe p99 {:?}, {} unanswered",
            p99,
            ld(&stats.probe_failures)
        ));
    }
    if delivery.lost + delivery.duplicated + delivery.cursor_errors > 0
        || delivery.deltas != delivery.expected_deltas
    {
        broken.push("delivery: something acknowledged was lost, repeated or out of order".into());
    }
    if metrics_after > metrics_before + 64 * 1024 {
        broken.push(format!(
            "/metrics grew from {metrics_before} to {metrics_after} bytes"
        ));
    }
    if ld(&stats.revoked) != ld(&stats.revoked_closed) {
        broken.push("a revoked token's connection stayed open".into());
    }
    if broken.is_empty() {
        println!("lost: nothing; every bound held");
    } else {
        for b in &broken {
            println!("BROKEN: {b}");
        }
        std::process::exit(1);
    }
}

/// Reads a WebSocket to its end and names how it ended: the close code the server sent,
/// `close` (a Close without a code), `reset` (an error) or `eof` (no Close at all).
async fn how_it_ended<S, E>(stream: &mut S) -> String
where
    S: futures::Stream<Item = Result<Message, E>> + Unpin,
{
    while let Some(m) = stream.next().await {
        match m {
            Ok(Message::Close(c)) => {
                return c
                    .map(|c| u16::from(c.code).to_string())
                    .unwrap_or("close".into())
            }
            Ok(_) => continue,
            Err(_) => return "reset".to_string(),
        }
    }
    "eof".to_string()
}
