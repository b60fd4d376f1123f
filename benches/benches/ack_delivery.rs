//! Server CPU per frame delivered to a client that acknowledges every frame, as the stock
//! AgentX client does (`{"__ack":"<msgId>"}` for each wrapped frame it receives).
//!
//! A real server (`ServerManager::listen` on 127.0.0.1:0, an in-memory `AgentVm`) runs on its
//! own multi-thread tokio runtime. One real WebSocket client (tokio-tungstenite, Nagle off) runs
//! on a dedicated thread with a current-thread runtime: it subscribes to a session, then reads
//! frames and answers each with its ack, sent at once (one WebSocket frame per ack, as the stock
//! client does). A publisher thread publishes `text_delta` events on the session's bus topic,
//! [`BURSTS`] at a time (1, then 20) with a short sleep between bursts (a streamed reply arrives in bursts
//! of tokens, not all at once); an iteration ends when the client has every delta.
//!
//! **How server CPU is measured.** The process's CPU time (`CLOCK_PROCESS_CPUTIME_ID`, every
//! thread) minus the CPU time of the client thread and of the publisher thread (each read with
//! `CLOCK_THREAD_CPUTIME_ID` on that thread at the start and end of the iteration). What is
//! left is what the server's runtime threads spent delivering: waking the connection task,
//! framing, writing, reading and processing the acks (plus the idle criterion thread, which
//! waits on a channel). The publisher's own CPU (the bus's `publish` and its sleeps) is
//! printed separately and not counted. Criterion's "time" for this bench is that server CPU
//! time, so its per-element figure is server CPU per delivered frame.
//!
//! Target: <= 5 µs of server CPU per delivered frame.
//!
//! Where the time goes (`perf record -g` on this bench, 2-core VM): about half of the server
//! threads' samples are in the kernel's context-switch and wake-up paths
//! (`finish_task_switch`, `_raw_spin_unlock_irqrestore`), much of the rest in the TCP stack;
//! framing, JSON escaping and the ack are a few percent each. Every frame costs a wake-up for
//! its event and one for the client's ack (the socket is in the runtime's epoll set, so an ack
//! wakes a parked worker whether or not the connection reads it then). Skipping acks without
//! parsing them, writing a batch with one flush, and (as an experiment) persisting the replay
//! log in 2 ms batches changed the number by less than the run-to-run spread.

use agentvm_benches::wire::{connect, long_stream_image, subscribe, BenchServer, Ws};
use agentvm_benches::{text_delta, tokio_runtime, CONTAINER_ID};
use agentvm_server::ServerConfig;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use futures::{SinkExt, StreamExt};
use rustix::time::{clock_gettime, ClockId};
use std::sync::mpsc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// Deltas per iteration.
const FRAMES: u64 = 1_000;
/// Deltas published back to back before the publisher sleeps.
const BURSTS: [u64; 2] = [1, 20];
/// The publisher's pause between bursts.
const PAUSE: Duration = Duration::from_micros(200);
const TARGET_US: f64 = 5.0;

fn cpu(clock: ClockId) -> Duration {
    let t = clock_gettime(clock);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// The `__msgId` of a wrapped server frame (it is the first field), without parsing JSON.
fn msg_id(frame: &str) -> Option<&str> {
    let rest = frame.strip_prefix("{\"__msgId\":\"")?;
    Some(&rest[..rest.find('"')?])
}

/// Reads until `frames` `text_delta` frames came, acking every frame. Returns this thread's
/// CPU time spent.
async fn read_and_ack(ws: &mut Ws, frames: u64) -> Duration {
    let start = cpu(ClockId::ThreadCPUTime);
    let mut deltas = 0;
    while deltas < frames {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a frame within 30 s")
            .expect("the connection is open")
            .expect("a frame");
        let Message::Text(text) = msg else { continue };
        let Some(id) = msg_id(text.as_str()) else {
            continue;
        };
        let ack = format!("{{\"__ack\":\"{id}\"}}");
        ws.send(Message::Text(ack.into()))
            .await
            .expect("sending an ack");
        if text.as_str().contains("text_delta") {
            deltas += 1;
        }
    }
    cpu(ClockId::ThreadCPUTime) - start
}

/// One measured iteration's parts.
struct Sample {
    process: Duration,
    client: Duration,
    publisher: Duration,
}

impl Sample {
    fn server(&self) -> Duration {
        self.process.saturating_sub(self.client + self.publisher)
    }
}

fn ack_delivery(c: &mut Criterion) {
    let rt = tokio_runtime();
    let mut group = c.benchmark_group("ws_ack/delivery");
    group.throughput(Throughput::Elements(FRAMES));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(5));
    for burst in BURSTS {
        let server = rt.block_on(BenchServer::start(ServerConfig::default()));
        let (_, session_id) = rt.block_on(long_stream_image(&server.vm, CONTAINER_ID));
        let url = server.ws_url();
        // The client thread: told how many deltas to read, answers with its CPU time.
        let (go_tx, go_rx) = mpsc::channel::<u64>();
        let (done_tx, done_rx) = mpsc::channel::<Duration>();
        let sid = session_id.clone();
        let client = std::thread::spawn(move || {
            let crt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the client's runtime");
            crt.block_on(async move {
                let mut ws = connect(&url).await;
                subscribe(&mut ws, &sid).await;
                done_tx.send(Duration::ZERO).expect("ready");
                while let Ok(frames) = go_rx.recv() {
                    let spent = read_and_ack(&mut ws, frames).await;
                    done_tx.send(spent).expect("reporting");
                }
                let _ = ws.close(None).await;
            })
        });
        done_rx.recv().expect("the client subscribed");
        let bus = server.vm.bus().clone();
        let handle = rt.handle().clone();
        let publish = |frames: u64| -> Duration {
            let bus = bus.clone();
            let sid = session_id.clone();
            let handle = handle.clone();
            std::thread::spawn(move || {
                let _runtime = handle.enter();
                let start = cpu(ClockId::ThreadCPUTime);
                let mut sent = 0;
                while sent < frames {
                    for _ in 0..burst.min(frames - sent) {
                        bus.publish(text_delta(&sid, "chunk42 "));
                        sent += 1;
                    }
                    std::thread::sleep(PAUSE);
                }
                cpu(ClockId::ThreadCPUTime) - start
            })
            .join()
            .expect("the publisher")
        };
        let run = || -> Sample {
            let start = cpu(ClockId::ProcessCPUTime);
            go_tx.send(FRAMES).expect("starting the client");
            let publisher = publish(FRAMES);
            let client = done_rx.recv().expect("the client's CPU time");
            Sample {
                process: cpu(ClockId::ProcessCPUTime) - start,
                client,
                publisher,
            }
        };
        // Warm up (connection buffers, the topic's log) before anything is measured.
        run();
        let mut samples = Vec::new();
        group.bench_function(BenchmarkId::new("burst", burst), |b| {
            b.iter_custom(|iters| {
                let mut server_cpu = Duration::ZERO;
                for _ in 0..iters {
                    let s = run();
                    server_cpu += s.server();
                    samples.push(s);
                }
                server_cpu
            })
        });
        drop(go_tx);
        client.join().expect("the client thread");
        if !samples.is_empty() {
            let n = (samples.len() as u64 * FRAMES) as f64;
            let per = |f: fn(&Sample) -> Duration| {
                samples.iter().map(f).sum::<Duration>().as_secs_f64() * 1e6 / n
            };
            let server_us = per(Sample::server);
            println!(
                "ws_ack burst {burst}: {} frames to an acking client: server CPU {server_us:.2} µs/frame \
                 (process {:.2}, client {:.2}, publisher {:.2}); target <= {TARGET_US} µs ({})",
                n as u64,
                per(|s| s.process),
                per(|s| s.client),
                per(|s| s.publisher),
                if server_us <= TARGET_US { "met" } else { "MISSED" },
            );
        }
        rt.block_on(server.close());
    }
    group.finish();
}

criterion_group!(benches, ack_delivery);
criterion_main!(benches);
