//! A client cannot run the server out of memory: replays stream from the log a page at a time,
//! and a connection that does not read (or joins too much) is closed with 4008 while the
//! other clients of the same server carry on.
//!
//! One test in this file: it measures the resident memory of its own process.

use agentvm::{Event, EventContext, EventPayload, MockDriver};
use agentvm_e2e::wire::{TestServer, WsClient};
use agentvm_server::{ServerConfig, CLOSE_OVER_BUDGET};
use futures::{SinkExt, StreamExt};
use serde_json::json;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

/// Events in the session's replay log before the abuse starts.
const LOGGED: usize = 10_000;
/// Events published while the abuse runs.
const LIVE: usize = 200;
/// subscribe/unsubscribe pairs the abusive client sends at a time.
const BURST: usize = 500;
/// The bound on this process's resident memory while the abuse runs.
const RSS_BOUND: u64 = 256 * 1024 * 1024;
/// Where the abuse stops anyway, so a regression cannot take the machine down.
const RSS_STOP: u64 = 1024 * 1024 * 1024;

/// `VmRSS` of this process, bytes.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS")
}

fn text_delta(session: &str, i: usize) -> Event {
    Event::new(
        EventPayload::TextDelta {
            text: format!("{i:06} {}", "x".repeat(600)),
        },
        Some(EventContext {
            container_id: Some("c".into()),
            session_id: Some(session.into()),
            ..Default::default()
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resubscribing_client_that_never_reads_is_closed_and_memory_stays_bounded() {
    let s = TestServer::start_with(
        ServerConfig {
            send_timeout: Duration::from_secs(1),
            ..Default::default()
        },
        MockDriver::default(),
    )
    .await;
    let mut good = WsClient::connect(&s.ws_url()).await;
    let r = good
        .request(
            "image_create_request",
            json!({"containerId":"c","config":{}}),
        )
        .await;
    let session = r["data"]["__subscriptions"][0]
        .as_str()
        .expect("a session")
        .to_string();
    for i in 0..LOGGED {
        s.vm.bus().publish(text_delta(&session, i));
    }
    s.vm.bus().flush().await;
    let before = rss();

    // The well-behaved client replays everything and then follows live events.
    good.send_text(&json!({"type":"subscribe","sessionId":session,"afterCursor":"0"}).to_string())
        .await;
    let good_task = tokio::spawn(async move {
        let mut seen = HashSet::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while seen.len() < LOGGED + LIVE && Instant::now() < deadline {
            match good.read_frame_within(Duration::from_secs(20)).await {
                Ok(Some(f)) if f.type_name() == "text_delta" => {
                    seen.insert(f.cursor.expect("a cursor"));
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(()) => break,
            }
        }
        seen.len()
    });

    // The abusive client: subscribe(afterCursor 0) / unsubscribe as fast as the socket takes
    // them, never reading.
    // A small receive buffer: what the server sends piles up on its side, as it would behind
    // a slow link.
    let tcp = tokio::net::TcpSocket::new_v4().expect("socket");
    tcp.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = tcp.connect(s.addr).await.expect("connect");
    let (abuser, _) = tokio_tungstenite::client_async(s.ws_url(), tcp)
        .await
        .expect("upgrade");
    let (mut tx, mut rx) = abuser.split();
    let peak = Arc::new(AtomicU64::new(before));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop) = (peak.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    // Each subscribe asks for its `subscribe_response` (as agentvm's own client does), so the
    // server has something to write for every one.
    let subscribe = json!({"type":"subscribe","sessionId":session,"afterCursor":"0","__subscribeResponse":true}).to_string();
    let unsubscribe = json!({"type":"unsubscribe","sessionId":session}).to_string();
    let started = Instant::now();
    let mut frames_bytes = 0usize;
    let mut live = 0;
    while started.elapsed() < Duration::from_secs(4) && peak.load(Ordering::Relaxed) < RSS_STOP {
        // In bursts, so the server finds frame after frame waiting to be read.
        let burst = async {
            for _ in 0..BURST {
                tx.feed(Message::Text(subscribe.clone().into())).await?;
                tx.feed(Message::Text(unsubscribe.clone().into())).await?;
            }
            tx.flush().await
        };
        match tokio::time::timeout(Duration::from_millis(500), burst).await {
            Ok(Ok(())) => frames_bytes += BURST * (subscribe.len() + unsubscribe.len()),
            // Every buffer between us and the server is full: it stopped reading.
            Ok(Err(_)) | Err(_) => break,
        }
        if live < LIVE {
            s.vm.bus().publish(text_delta(&session, LOGGED + live));
            live += 1;
        }
    }
    while live < LIVE {
        s.vm.bus().publish(text_delta(&session, LOGGED + live));
        live += 1;
    }
    eprintln!(
        "abuse: {frames_bytes} bytes of frames in {:?}; RSS before {} MB, peak so far {} MB",
        started.elapsed(),
        before / (1024 * 1024),
        peak.load(Ordering::Relaxed) / (1024 * 1024)
    );
    // A last subscribe: its replay alone is more than the socket buffers hold.
    let _ = tokio::time::timeout(
        Duration::from_millis(500),
        tx.send(Message::Text(subscribe.clone().into())),
    )
    .await;
    // Still not reading: the server, its writes stalled for the send budget, gives the
    // connection up.
    let waited = Instant::now();
    while s.server.metrics().over_budget_closes() == 0 && peak.load(Ordering::Relaxed) < RSS_BOUND {
        assert!(
            waited.elapsed() < Duration::from_secs(60),
            "the non-reading connection was never closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    sampler.await.expect("sampler");
    let peak = peak.load(Ordering::Relaxed);
    eprintln!(
        "after the close: RSS before {} MB, peak {} MB (bound {} MB)",
        before / (1024 * 1024),
        peak / (1024 * 1024),
        RSS_BOUND / (1024 * 1024)
    );
    assert!(
        peak < RSS_BOUND,
        "RSS peaked at {} MB (bound {} MB)",
        peak / (1024 * 1024),
        RSS_BOUND / (1024 * 1024)
    );

    // The abuser, reading at last, finds its connection closed for its budget.
    let code = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(m) = rx.next().await {
            match m {
                Ok(Message::Close(c)) => {
                    return c.map(|c| (u16::from(c.code), c.reason.to_string()))
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .expect("the abusive connection ends");
    let (code, reason) = code.expect("a close frame");
    assert_eq!(code, CLOSE_OVER_BUDGET, "{reason}");
    assert!(reason.contains("send budget"), "{reason}");
    assert_eq!(s.server.metrics().over_budget_closes(), 1);

    // The well-behaved client got every event, logged and live.
    let seen = good_task.await.expect("good client");
    assert_eq!(seen, LOGGED + LIVE);
}

#[tokio::test]
async fn joining_more_topics_than_the_budget_closes_with_4008() {
    let s = TestServer::start_with(
        ServerConfig {
            max_subscriptions: 2,
            ..Default::default()
        },
        MockDriver::default(),
    )
    .await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let r = c
            .request(
                "image_create_request",
                json!({"containerId":"c","config":{}}),
            )
            .await;
        let sid = r["data"]["__subscriptions"][0].as_str().expect("a session");
        sessions.push(sid.to_string());
    }
    // Two topics fit the budget.
    for sid in &sessions[..2] {
        c.send_text(
            &json!({"type":"subscribe","sessionId":sid,"__subscribeResponse": true}).to_string(),
        )
        .await;
        let f = c
            .frames_until("subscribe_response")
            .await
            .pop()
            .expect("reply");
        assert_eq!(f.payload["data"]["sessionId"], json!(sid));
    }
    // A third goes over it.
    c.send_text(&json!({"type":"subscribe","sessionId":sessions[2]}).to_string())
        .await;
    let closed = c.frames_until("__close").await.pop().expect("a close");
    assert_eq!(closed.payload["code"], CLOSE_OVER_BUDGET);
    assert!(closed.payload["reason"]
        .as_str()
        .unwrap_or_default()
        .contains("subscription budget"));
}
