//! Streaming replies from a provider: SSE parsing, decoding, and the way to the bus.
//!
//! - `sse/parse/<provider>/<chunk>`: `agentvm::llm::sse::SseParser::feed` over a synthetic
//!   transcript of [`DELTAS`] text deltas (Anthropic: `content_block_delta` events with a
//!   `ping` every 100; OpenAI: `chat.completion.chunk` events), fed in chunks of 1, 64, 1460
//!   (one TCP segment) and 16384 bytes, the parsed events drained after each chunk as the
//!   driver does. Throughput in bytes.
//! - `sse/parse_decode/<provider>/<chunk>`: the same plus the provider's decoder
//!   (`AnthropicDecoder::decode` / `OpenAiDecoder::decode`), SSE events to `LlmEvent`s.
//! - Chunk to bus (printed, not a criterion measurement): a loopback HTTP server streams an
//!   OpenAI-compatible reply, one SSE `text_delta` event per HTTP chunk, noting the time just
//!   before each write; an `AgentVm` with the OpenAI-compatible driver (`LlmConfig`, provider
//!   `openai`, `base_url` at the server) answers a message and a subscriber on the session
//!   notes when each `text_delta` arrives on the bus. Latency = arrival - write, p50/p99 over
//!   every delta; paced (a 1 ms sleep between chunks, so each is measured without queueing
//!   behind the previous) and back to back (which also gives the pipeline's deltas per
//!   second).

use agentvm::llm::anthropic::AnthropicDecoder;
use agentvm::llm::openai::OpenAiDecoder;
use agentvm::llm::sse::{SseEvent, SseParser};
use agentvm::{
    AgentVm, BusItem, EventFilter, EventPayload, LlmConfig, LlmEvent, Provider, Runtime, RuntimeExt,
};
use agentvm_benches::sse_server::{
    anthropic_transcript, delta_index, openai_transcript, Pacing, SseServer,
};
use agentvm_benches::wire::quantile;
use agentvm_benches::{tokio_runtime, CONTAINER_ID};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Text deltas in each synthetic transcript.
const DELTAS: usize = 10_000;
const CHUNK_SIZES: [usize; 4] = [1, 64, 1460, 16384];

/// The provider's stream format.
#[derive(Clone, Copy)]
enum Format {
    Anthropic,
    OpenAi,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Anthropic => "anthropic",
            Format::OpenAi => "openai",
        }
    }

    fn transcript(self) -> String {
        match self {
            Format::Anthropic => anthropic_transcript(DELTAS),
            Format::OpenAi => openai_transcript(DELTAS),
        }
    }
}

/// Feeds `bytes` in `chunk`-byte pieces; returns the number of SSE events.
fn parse(bytes: &[u8], chunk: usize) -> usize {
    let mut parser = SseParser::new();
    let mut sse = Vec::new();
    let mut events = 0;
    for piece in bytes.chunks(chunk) {
        parser.feed(piece, &mut sse);
        events += sse.len();
        for e in sse.drain(..) {
            black_box(e);
        }
    }
    parser.finish(&mut sse);
    events + sse.len()
}

/// Parses and decodes; returns the number of text deltas.
fn parse_decode(provider: Format, bytes: &[u8], chunk: usize) -> usize {
    let mut parser = SseParser::new();
    let mut sse: Vec<SseEvent> = Vec::new();
    let mut out: Vec<LlmEvent> = Vec::new();
    let mut anthropic = AnthropicDecoder::new();
    let mut openai = OpenAiDecoder::new();
    let mut deltas = 0;
    let mut decode = |sse: &mut Vec<SseEvent>, out: &mut Vec<LlmEvent>| {
        for e in sse.drain(..) {
            match provider {
                Format::Anthropic => anthropic.decode(&e, out),
                Format::OpenAi => openai.decode(&e, out),
            }
            for e in out.drain(..) {
                if matches!(e, LlmEvent::TextDelta(_)) {
                    deltas += 1;
                }
                black_box(e);
            }
        }
    };
    for piece in bytes.chunks(chunk) {
        parser.feed(piece, &mut sse);
        decode(&mut sse, &mut out);
    }
    parser.finish(&mut sse);
    decode(&mut sse, &mut out);
    deltas
}

fn parsing(c: &mut Criterion) {
    for provider in [Format::Anthropic, Format::OpenAi] {
        let transcript = provider.transcript();
        let bytes = transcript.as_bytes();
        let sse_events = parse(bytes, bytes.len());
        assert_eq!(parse_decode(provider, bytes, 1), DELTAS);
        assert_eq!(parse(bytes, 7), sse_events);
        println!(
            "sse transcript ({}): {} bytes, {sse_events} SSE events, {DELTAS} text deltas",
            provider.name(),
            bytes.len()
        );
        for (name, decode) in [("parse", false), ("parse_decode", true)] {
            let mut group = c.benchmark_group(format!("sse/{name}/{}", provider.name()));
            group
                .sampling_mode(SamplingMode::Flat)
                .sample_size(10)
                .throughput(Throughput::Bytes(bytes.len() as u64));
            for chunk in CHUNK_SIZES {
                group.bench_function(BenchmarkId::from_parameter(chunk), |b| {
                    b.iter(|| {
                        if decode {
                            parse_decode(provider, bytes, chunk)
                        } else {
                            parse(bytes, chunk)
                        }
                    })
                });
            }
            group.finish();
        }
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// One run of the chunk-to-bus measurement: `replies` replies of `deltas` chunks each.
async fn chunk_to_bus(label: &str, deltas: usize, replies: usize, pacing: Pacing) {
    let server = SseServer::start(deltas, pacing).await;
    let config = LlmConfig {
        provider: Provider::OpenAi,
        api_key: Some("bench-key".into()),
        base_url: Some(server.url().into()),
        model: Some("gpt-bench".into()),
        ..Default::default()
    };
    let vm = AgentVm::builder()
        .llm(config.driver().expect("the OpenAI-compatible driver"))
        .open()
        .await
        .expect("opening the AgentVm");
    let image = vm
        .images()
        .create(CONTAINER_ID, Default::default())
        .await
        .expect("creating the image")
        .record;
    // Room for a whole reply: a text_delta and a conversation_responding per chunk.
    let mut events = vm
        .subscribe(EventFilter {
            sessions: vec![(image.session_id.clone(), None)],
            queue: Some(4 * deltas + 1024),
            ..Default::default()
        })
        .await
        .expect("subscribing to the session");
    let mut latencies = Vec::with_capacity(deltas * replies);
    let mut rates = Vec::with_capacity(replies);
    for reply in 0..replies {
        vm.agents()
            .send_to_image(&image.image_id, "Stream, please.")
            .await
            .expect("sending a message");
        let mut arrivals: Vec<Option<Instant>> = vec![None; deltas];
        loop {
            let item = tokio::time::timeout(Duration::from_secs(60), events.recv())
                .await
                .expect("an event within 60 s");
            let p = match item {
                Some(BusItem::Event(p)) => p,
                other => panic!("the subscription ended or overflowed: {other:?}"),
            };
            let now = Instant::now();
            match &p.event.payload {
                EventPayload::TextDelta { text } => {
                    let i = delta_index(text).expect("a bench delta");
                    arrivals[i] = Some(now);
                }
                EventPayload::ConversationEnd { .. } => break,
                EventPayload::ErrorMessage { .. } => panic!("the reply failed: {:?}", p.event),
                _ => {}
            }
        }
        let writes = server.writes();
        let writes = &writes[reply];
        for (i, (w, a)) in writes.iter().zip(&arrivals).enumerate() {
            let a = a.unwrap_or_else(|| panic!("delta {i} of reply {reply} never arrived"));
            latencies.push(a.saturating_duration_since(*w));
        }
        if let (Some(first), Some(Some(last))) = (writes.first(), arrivals.last()) {
            rates.push(deltas as f64 / last.duration_since(*first).as_secs_f64());
        }
    }
    latencies.sort_unstable();
    let best_rate = rates.iter().copied().fold(0.0, f64::max);
    println!(
        "sse chunk -> bus ({label}): {} deltas over {replies} replies: p50 {:.1} µs, p90 {:.1} µs, p99 {:.1} µs, max {:.1} µs; \
         first write to last arrival: {:.0} deltas/s (best reply)",
        latencies.len(),
        micros(quantile(&latencies, 0.5)),
        micros(quantile(&latencies, 0.9)),
        micros(quantile(&latencies, 0.99)),
        micros(quantile(&latencies, 1.0)),
        best_rate,
    );
    vm.close().await;
}

fn to_bus(_c: &mut Criterion) {
    let rt = tokio_runtime();
    rt.block_on(async {
        chunk_to_bus(
            "paced, 1 ms sleep between chunks",
            1_000,
            3,
            Pacing::Every(Duration::from_millis(1)),
        )
        .await;
        chunk_to_bus("back to back", 5_000, 3, Pacing::BackToBack).await;
    });
}

criterion_group!(benches, parsing, to_bus);
criterion_main!(benches);
