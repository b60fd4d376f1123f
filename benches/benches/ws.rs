//! The Channel over a real loopback WebSocket: an agentvm server (`ServerManager` on
//! 127.0.0.1:0 over an in-memory `AgentVm` with the mock driver) and clients in the same
//! process.
//!
//! - `ws/round_trip/raw`: one raw tokio-tungstenite client sends `image_get_request` for an
//!   existing image and reads until its `image_get_response`. Besides criterion's estimate, a
//!   separate sample of [`LATENCY_SAMPLES`] timed round trips is printed with its median and
//!   p99 (criterion reports no tail). Target: median <= 100 µs.
//! - `ws/round_trip/remote`: the same request through `agentvm::connect`
//!   (`RemoteRuntime::request`), which acknowledges every wrapped frame and decodes the
//!   response, for comparison.
//! - `ws/round_trip/raw_current_thread`: the raw round trip with server and client on one
//!   current-thread runtime, so no thread wakes another: the path's CPU cost without the
//!   multi-thread runtime's cross-thread wake-ups (expensive and erratic on a small VM).
//! - `ws/text_delta/<server>/<clients>`: 1 and 100 raw clients subscribed to one session of a
//!   `long-stream` image (100 deltas per reply). Client 0 sends `message_send_request`; an
//!   iteration ends when every client has seen `conversation_end`. Throughput is delivered
//!   `text_delta` events (100 x clients); the other frames of a turn (about 8 per client) are
//!   delivered too but not counted. Clients do NOT acknowledge frames (the stock client does;
//!   the server needs no acks to keep sending). Every delta is followed by a
//!   `conversation_responding` event, so the wire carries about twice as many frames.
//!   Target: >= 200k delivered events/s.
//!
//!   `<server>` is `listen`, the stock `ServerManager::listen`, or `nodelay`: the same server
//!   through `ServerManager::serve` on a listener with `TCP_NODELAY` (inherited by accepted
//!   sockets on Linux). The stock server leaves Nagle's algorithm on its sockets, and a stream
//!   of small frames then stalls ~40 ms on the client's delayed ACK; the `nodelay` variant
//!   shows what the server does without that.
//!
//! - `ws/wrap/*`: the server's per-connection cost of framing one `text_delta`
//!   (`codec::wrap`), against building the same frame from a payload escaped once; and the
//!   per-event cost paid once for all connections: the event's JSON (`event_json`), that JSON
//!   escaped as a string literal (`event_escaped_json`, both), and the escaping alone
//!   (`escape`); and the two texts alone, without the event's clone and drop, written by
//!   serde_json then the escaper (`serde_json_then_escape`) or in one pass
//!   (`json_and_literal`, what `Published` does).
//!
//! The raw clients find a frame's type with a substring search instead of parsing JSON, so the
//! client side costs little; everything shares the machine's cores with the server.

/// The allocator the `agentvm-server` binary runs on, so this bench measures what runs.
#[global_allocator]
static ALLOCATOR: agentvm_server::ServerAllocator = agentvm_server::ServerAllocator;

use agentvm::{Command, ConnectOptions, ImageGetRequest, Response, Runtime, RuntimeExt};
use agentvm_benches::wire::{
    connect, count_until_end, long_stream_image, quantile, read_response, request_frame, send_text,
    subscribe, BenchServer, Received, Ws,
};
use agentvm_benches::{tokio_runtime, CONTAINER_ID};
use agentvm_server::ServerConfig;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::json;
use std::time::{Duration, Instant};

/// Round trips in the separately timed latency sample.
const LATENCY_SAMPLES: usize = 20_000;
const TARGET_MEDIAN_US: f64 = 100.0;
const DELTAS_PER_REPLY: u64 = 100;
const CLIENTS: [usize; 2] = [1, 100];
const TARGET_EVENTS_PER_S: f64 = 200_000.0;
/// Turns on one session before the clients move to a fresh one.
const TURNS_PER_SESSION: u64 = 20;

struct RawClient {
    ws: Ws,
    next: u64,
}

impl RawClient {
    fn next_id(&mut self) -> String {
        self.next += 1;
        format!("req_{}", self.next)
    }

    /// One `image_get_request` → `image_get_response`.
    async fn image_get(&mut self, image_id: &str) {
        let id = self.next_id();
        send_text(
            &mut self.ws,
            request_frame("image_get_request", json!({ "imageId": image_id }), &id),
        )
        .await;
        let frame = read_response(&mut self.ws, "image_get_response", &id).await;
        debug_assert!(!frame.contains("\\\"error\\\""), "{frame}");
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn print_latency(label: &str, mut samples: Vec<Duration>) {
    samples.sort_unstable();
    let median = micros(quantile(&samples, 0.5));
    println!(
        "{label}: {} round trips: median {median:.1} µs, p90 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, max {:.1} µs; target median <= {TARGET_MEDIAN_US} µs ({})",
        samples.len(),
        micros(quantile(&samples, 0.9)),
        micros(quantile(&samples, 0.99)),
        micros(quantile(&samples, 0.999)),
        micros(quantile(&samples, 1.0)),
        if median <= TARGET_MEDIAN_US { "met" } else { "MISSED" },
    );
}

fn round_trip(c: &mut Criterion) {
    let rt = tokio_runtime();
    let server = rt.block_on(BenchServer::start(ServerConfig::default()));
    let url = server.ws_url();
    let image_id = rt.block_on(async {
        server
            .vm
            .images()
            .create(CONTAINER_ID, Default::default())
            .await
            .expect("creating the bench image")
            .record
            .image_id
    });

    let mut raw = RawClient {
        ws: rt.block_on(connect(&url)),
        next: 0,
    };
    // The first answer proves the request works before anything is timed.
    rt.block_on(async {
        let id = raw.next_id();
        send_text(
            &mut raw.ws,
            request_frame("image_get_request", json!({ "imageId": image_id }), &id),
        )
        .await;
        let frame = read_response(&mut raw.ws, "image_get_response", &id).await;
        assert!(
            frame.contains(&image_id) && !frame.contains("\\\"error\\\""),
            "unexpected image_get_response: {frame}"
        );
    });

    let mut group = c.benchmark_group("ws/round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    raw.image_get(&image_id).await;
                }
                start.elapsed()
            })
        })
    });

    // Criterion reports no tail: time each round trip of a separate sample, before the
    // remote runtime connects.
    let samples = rt.block_on(async {
        let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
        for _ in 0..LATENCY_SAMPLES {
            let start = Instant::now();
            raw.image_get(&image_id).await;
            samples.push(start.elapsed());
        }
        samples
    });
    print_latency("ws round trip, raw client", samples);
    let remote = rt.block_on(async {
        agentvm::connect(&url, ConnectOptions::default())
            .await
            .expect("connecting the remote runtime")
    });
    let remote_get = |remote: &agentvm::RemoteRuntime| {
        let image_id = image_id.clone();
        let remote = remote.clone();
        async move {
            match remote
                .request(Command::ImageGet(ImageGetRequest { image_id }))
                .await
                .expect("image_get_request over the remote runtime")
            {
                Response::ImageGet(r) if r.record.is_some() => r,
                other => panic!("unexpected response to image_get_request: {other:?}"),
            }
        }
    };
    group.bench_function("remote", |b| b.to_async(&rt).iter(|| remote_get(&remote)));
    group.finish();

    let samples = rt.block_on(async {
        let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
        for _ in 0..LATENCY_SAMPLES {
            let start = Instant::now();
            remote_get(&remote).await;
            samples.push(start.elapsed());
        }
        samples
    });
    print_latency("ws round trip, agentvm::connect", samples);
    let samples = rt.block_on(async {
        let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
        for _ in 0..LATENCY_SAMPLES {
            let start = Instant::now();
            raw.image_get(&image_id).await;
            samples.push(start.elapsed());
        }
        samples
    });
    print_latency(
        "ws round trip, raw client again (remote runtime connected)",
        samples,
    );

    rt.block_on(async {
        remote.close().await;
        let _ = raw.ws.close(None).await;
        server.close().await;
    });
}

/// One session streamed to `conns`, rotated to a fresh image every [`TURNS_PER_SESSION`] turns
/// so the history the agent sends the model (and clones) stays short.
struct Stream {
    image_id: String,
    session_id: String,
    turns_on_session: u64,
    next_request: u64,
}

impl Stream {
    async fn open(server: &BenchServer, conns: &mut [Ws]) -> Stream {
        let (image_id, session_id) = long_stream_image(&server.vm, CONTAINER_ID).await;
        for ws in conns.iter_mut() {
            subscribe(ws, &session_id).await;
        }
        let mut stream = Stream {
            image_id,
            session_id,
            turns_on_session: 0,
            next_request: 0,
        };
        // A first turn starts the agent; it is not timed.
        stream.turn(conns).await;
        stream
    }

    /// Moves every connection to a fresh session once this one has had its turns.
    async fn rotate_if_due(&mut self, server: &BenchServer, conns: &mut [Ws]) {
        if self.turns_on_session < TURNS_PER_SESSION {
            return;
        }
        let old = self.session_id.clone();
        for ws in conns.iter_mut() {
            send_text(
                ws,
                json!({ "type": "unsubscribe", "sessionId": old }).to_string(),
            )
            .await;
        }
        let next_request = self.next_request;
        *self = Stream::open(server, conns).await;
        self.next_request += next_request;
    }

    /// Client 0 sends `message_send_request`; every client reads to `conversation_end`.
    async fn turn(&mut self, conns: &mut [Ws]) -> (Duration, Received) {
        self.next_request += 1;
        self.turns_on_session += 1;
        let frame = request_frame(
            "message_send_request",
            json!({ "imageId": self.image_id, "content": "Tell me a long story." }),
            &format!("send_{}", self.next_request),
        );
        let start = Instant::now();
        send_text(&mut conns[0], frame).await;
        let counts = futures::future::join_all(conns.iter_mut().map(count_until_end)).await;
        let elapsed = start.elapsed();
        let mut total = Received::default();
        for got in counts {
            assert_eq!(
                got.text_deltas, DELTAS_PER_REPLY,
                "a client missed text_delta events"
            );
            total += got;
        }
        (elapsed, total)
    }
}

fn text_delta(c: &mut Criterion) {
    let rt = tokio_runtime();
    let mut group = c.benchmark_group("ws/text_delta");
    for (nodelay, variant) in [(false, "listen"), (true, "nodelay")] {
        for clients in CLIENTS {
            let server = rt.block_on(BenchServer::start_with(ServerConfig::default(), nodelay));
            let url = server.ws_url();
            let mut conns: Vec<Ws> = rt.block_on(async {
                let mut conns = Vec::with_capacity(clients);
                for _ in 0..clients {
                    conns.push(connect(&url).await);
                }
                conns
            });
            let mut stream = rt.block_on(Stream::open(&server, &mut conns));
            let mut turns = 0u64;
            let mut elapsed_total = Duration::ZERO;
            let mut received = Received::default();
            group.throughput(Throughput::Elements(DELTAS_PER_REPLY * clients as u64));
            group.bench_function(BenchmarkId::new(variant, clients), |b| {
                b.iter_custom(|iters| {
                    rt.block_on(async {
                        let mut elapsed = Duration::ZERO;
                        for _ in 0..iters {
                            stream.rotate_if_due(&server, &mut conns).await;
                            let (took, got) = stream.turn(&mut conns).await;
                            elapsed += took;
                            received += got;
                        }
                        turns += iters;
                        elapsed_total += elapsed;
                        elapsed
                    })
                })
            });
            if turns == 0 {
                // Filtered out by a criterion filter.
                rt.block_on(server.close());
                continue;
            }
            let secs = elapsed_total.as_secs_f64();
            let rate = received.text_deltas as f64 / secs;
            let overflows = server
                .metric("agentvm_send_queue_overflows_total")
                .expect("the overflow counter");
            println!(
                "ws text_delta ({variant}) to {clients} client(s): {turns} timed turns, {rate:.0} delivered text_delta/s \
                 ({:.0} frames/s, {:.2} ms per turn); target >= {TARGET_EVENTS_PER_S:.0}/s ({}); clients send no acks; \
                 send-queue overflows: {overflows}",
                received.frames as f64 / secs,
                secs * 1e3 / turns.max(1) as f64,
                if rate >= TARGET_EVENTS_PER_S { "met" } else { "MISSED" },
            );
            rt.block_on(async {
                for mut ws in conns {
                    let _ = ws.close(None).await;
                }
                server.close().await;
            });
        }
    }
    group.finish();
}

/// The per-connection cost of framing one event: `codec::wrap` re-escapes the event's JSON
/// into `__payload` for every connection it is sent to. For comparison, the same frame built
/// with `serde_json::to_string(&str)` (no `fmt` adapter), and from a payload escaped once and
/// cached, as it could be per event.
fn wrap(c: &mut Criterion) {
    let event = agentvm_benches::text_delta("sess_bench", "chunk42 ");
    let payload = serde_json::to_string(&event).expect("serializing the event");
    let mut group = c.benchmark_group("ws/wrap");
    group.throughput(Throughput::Bytes(payload.len() as u64));
    group.bench_function("codec_wrap", |b| {
        b.iter(|| agentvm::channel::codec::wrap("conn_17_4242", &payload, Some(4242)))
    });
    group.bench_function("to_string_escape", |b| {
        b.iter(|| {
            let escaped = serde_json::to_string(payload.as_str()).expect("escaping");
            frame_from_escaped("conn_17_4242", &escaped, Some(4242))
        })
    });
    let escaped = serde_json::to_string(payload.as_str()).expect("escaping");
    assert_eq!(
        frame_from_escaped("conn_17_4242", &escaped, Some(4242)),
        agentvm::channel::codec::wrap("conn_17_4242", &payload, Some(4242)),
    );
    group.bench_function("escaped_once", |b| {
        b.iter(|| frame_from_escaped("conn_17_4242", &escaped, Some(4242)))
    });
    // What each event costs once, whatever the number of connections: its JSON and that JSON
    // escaped for `__payload` (`Published::json`, `Published::escaped_json`).
    group.bench_function("event_json", |b| {
        b.iter(|| {
            agentvm::Published::new(event.clone(), Some(4242))
                .json()
                .len()
        })
    });
    group.bench_function("event_escaped_json", |b| {
        b.iter(|| {
            agentvm::Published::new(event.clone(), Some(4242))
                .escaped_json()
                .len()
        })
    });
    group.bench_function("escape", |b| {
        b.iter(|| agentvm::channel::codec::escape(&payload))
    });
    // The two texts alone, without the event's clone and drop: serde_json then the escaper
    // (how `Published` wrote them before), against one pass writing both.
    group.bench_function("serde_json_then_escape", |b| {
        b.iter(|| {
            let json =
                serde_json::to_string(std::hint::black_box(&event)).expect("an event serializes");
            let literal = agentvm::channel::codec::escape(&json);
            (json, literal)
        })
    });
    group.bench_function("json_and_literal", |b| {
        b.iter(|| {
            agentvm::channel::json_literal::to_json_and_literal(std::hint::black_box(&event), 512)
                .expect("an event serializes")
        })
    });
    group.finish();
}

/// `{"__msgId":"<id>","__payload":<escaped>,"__cursor":"<c>"}` from an already escaped payload
/// (the msgId is `conn_<n>_<n>`, which needs no escaping).
fn frame_from_escaped(msg_id: &str, escaped: &str, cursor: Option<u64>) -> String {
    let mut out = String::with_capacity(escaped.len() + msg_id.len() + 48);
    out.push_str("{\"__msgId\":\"");
    out.push_str(msg_id);
    out.push_str("\",\"__payload\":");
    out.push_str(escaped);
    if let Some(c) = cursor {
        out.push_str(",\"__cursor\":\"");
        out.push_str(&c.to_string());
        out.push('"');
    }
    out.push('}');
    out
}

/// The raw round trip with server and client on one current-thread runtime: no wake-ups across
/// threads, so it shows the CPU cost of the path (syscalls included) without the scheduling
/// latency of the multi-thread runtime on a small, shared VM.
fn round_trip_one_thread(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("building a current-thread runtime");
    let server = rt.block_on(BenchServer::start(ServerConfig::default()));
    let image_id = rt.block_on(async {
        server
            .vm
            .images()
            .create(CONTAINER_ID, Default::default())
            .await
            .expect("creating the bench image")
            .record
            .image_id
    });
    let mut raw = RawClient {
        ws: rt.block_on(connect(&server.ws_url())),
        next: 0,
    };
    rt.block_on(raw.image_get(&image_id));
    let mut group = c.benchmark_group("ws/round_trip");
    group.throughput(Throughput::Elements(1));
    group.bench_function("raw_current_thread", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    raw.image_get(&image_id).await;
                }
                start.elapsed()
            })
        })
    });
    group.finish();
    let samples = rt.block_on(async {
        let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
        for _ in 0..LATENCY_SAMPLES {
            let start = Instant::now();
            raw.image_get(&image_id).await;
            samples.push(start.elapsed());
        }
        samples
    });
    print_latency(
        "ws round trip, raw client, server and client on one current-thread runtime",
        samples,
    );
    rt.block_on(async {
        let _ = raw.ws.close(None).await;
        server.close().await;
    });
}

criterion_group!(benches, round_trip, round_trip_one_thread, text_delta, wrap);
criterion_main!(benches);
