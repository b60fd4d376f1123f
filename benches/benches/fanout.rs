//! `text_delta` fan-out: one session topic, 1, 10 and 100 subscribers, every event delivered to
//! every subscriber. The number is delivered events per second (events x subscribers).
//!
//! Each iteration publishes a burst of [`BURST`] deltas, as a streaming reply does, and ends
//! when every subscriber has received all of them. Subscriber queues hold exactly one burst,
//! so none may overflow; an overflow panics rather than quietly delivering less.
//!
//! - `fanout/tasks`: each subscriber is its own tokio task awaiting `recv()`, as a Channel
//!   connection is, and the publisher is a task too, on a multi-thread runtime.
//! - `fanout/try_recv`: one thread publishes the burst and drains every queue with
//!   `try_recv()`: the bus's own cost without task wake-ups.
//!
//! `memory` is `Bus::in_memory`; `redb` is the bus `AgentVm` runs on a data dir, with a
//! [`RedbStore`] whose replay log is written in the background while the bench runs.
//!
//! Target: >= 1M delivered events/s at 10 subscribers.

use agentvm::{Bus, BusConfig, BusItem, Event, EventFilter, RedbStore, Subscription};
use agentvm_benches::{text_delta, tokio_runtime, DATABASE_FILE};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Deltas per iteration: a long streamed reply.
const BURST: usize = 1_000;
const SUBSCRIBERS: [usize; 3] = [1, 10, 100];
const SESSION: &str = "sess_bench";

#[derive(Clone, Copy)]
enum BusKind {
    Memory,
    Redb,
}

impl BusKind {
    fn name(self) -> &'static str {
        match self {
            BusKind::Memory => "memory",
            BusKind::Redb => "redb",
        }
    }
}

/// A bus of `kind` (and the temp dir holding its store). Subscriber queues hold one burst.
fn new_bus(kind: BusKind, rt: &tokio::runtime::Runtime) -> (Bus, Option<tempfile::TempDir>) {
    let config = BusConfig {
        subscriber_queue: BURST,
        ..Default::default()
    };
    match kind {
        BusKind::Memory => (Bus::in_memory(config), None),
        BusKind::Redb => {
            let dir = tempfile::tempdir().expect("creating a temp dir");
            let store = RedbStore::open(dir.path().join(DATABASE_FILE)).expect("opening the store");
            // Bus::new starts the replay-log persister on the runtime.
            let _guard = rt.enter();
            let bus = Bus::new(config, Some(Arc::new(store))).expect("creating the bus");
            (bus, Some(dir))
        }
    }
}

fn burst() -> Vec<Event> {
    (0..BURST)
        .map(|i| text_delta(SESSION, &format!("chunk{i} ")))
        .collect()
}

fn subscribe(bus: &Bus) -> Subscription {
    bus.subscribe(EventFilter::session(SESSION))
        .expect("subscribing")
}

/// Takes one event off `item`, refusing anything that would make the count dishonest.
fn expect_event(item: Option<BusItem>) -> Result<(), &'static str> {
    match item {
        Some(BusItem::Event(_)) => Ok(()),
        Some(BusItem::Overflowed { .. }) => Err("a subscriber overflowed"),
        None => Err("a subscription ended or came up short"),
    }
}

/// `iters` bursts to `subscribers` subscriber tasks; the time from each burst's first publish
/// until the last subscriber has received all of it.
fn run_tasks(rt: &tokio::runtime::Runtime, bus: &Bus, subscribers: usize, iters: u64) -> Duration {
    let bus = bus.clone();
    rt.block_on(async move {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Result<(), &'static str>>();
        let mut tasks = Vec::with_capacity(subscribers);
        for _ in 0..subscribers {
            let mut sub = subscribe(&bus);
            let done = done_tx.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..iters {
                    let mut result = Ok(());
                    for _ in 0..BURST {
                        result = expect_event(sub.recv().await);
                        if result.is_err() {
                            break;
                        }
                    }
                    let failed = result.is_err();
                    let _ = done.send(result);
                    if failed {
                        return;
                    }
                }
            }));
        }
        drop(done_tx);
        // The publisher is a task, like an agent.
        let publisher = tokio::spawn(async move {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iters {
                let events = burst();
                let start = Instant::now();
                for event in events {
                    bus.publish(event);
                }
                for _ in 0..subscribers {
                    match done_rx.recv().await {
                        Some(Ok(())) => {}
                        Some(Err(e)) => panic!("{e}"),
                        None => panic!("a subscriber task died"),
                    }
                }
                elapsed += start.elapsed();
            }
            elapsed
        });
        let elapsed = publisher.await.expect("the publisher panicked");
        for task in tasks {
            task.await.expect("a subscriber task panicked");
        }
        elapsed
    })
}

/// `iters` bursts, each drained from every subscriber with `try_recv` on this thread.
fn run_try_recv(bus: &Bus, subs: &mut [Subscription], iters: u64) -> Duration {
    let mut elapsed = Duration::ZERO;
    for _ in 0..iters {
        let events = burst();
        let start = Instant::now();
        for event in events {
            bus.publish(event);
        }
        for sub in subs.iter_mut() {
            for _ in 0..BURST {
                if let Err(e) = expect_event(sub.try_recv()) {
                    panic!("{e}");
                }
            }
        }
        elapsed += start.elapsed();
    }
    for sub in subs.iter_mut() {
        assert!(
            sub.try_recv().is_none(),
            "a subscriber got more than a burst"
        );
    }
    elapsed
}

/// Waits for the replay log to catch up and says how many events could not be queued for it.
fn finish_bus(kind: BusKind, subscribers: usize, bus: &Bus, rt: &tokio::runtime::Runtime) {
    if let BusKind::Redb = kind {
        rt.block_on(bus.flush());
        println!(
            "  redb bus, {subscribers} subscribers: {} events not queued for the replay log",
            bus.dropped_persists()
        );
    }
}

fn fanout(c: &mut Criterion) {
    let rt = tokio_runtime();

    let mut group = c.benchmark_group("fanout/tasks");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for kind in [BusKind::Memory, BusKind::Redb] {
        for subscribers in SUBSCRIBERS {
            let (bus, _dir) = new_bus(kind, &rt);
            group.throughput(Throughput::Elements((BURST * subscribers) as u64));
            group.bench_function(BenchmarkId::new(kind.name(), subscribers), |b| {
                b.iter_custom(|iters| run_tasks(&rt, &bus, subscribers, iters))
            });
            finish_bus(kind, subscribers, &bus, &rt);
        }
    }
    group.finish();

    let mut group = c.benchmark_group("fanout/try_recv");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for kind in [BusKind::Memory, BusKind::Redb] {
        for subscribers in SUBSCRIBERS {
            let (bus, _dir) = new_bus(kind, &rt);
            let mut subs: Vec<Subscription> = (0..subscribers).map(|_| subscribe(&bus)).collect();
            group.throughput(Throughput::Elements((BURST * subscribers) as u64));
            group.bench_function(BenchmarkId::new(kind.name(), subscribers), |b| {
                b.iter_custom(|iters| run_try_recv(&bus, &mut subs, iters))
            });
            finish_bus(kind, subscribers, &bus, &rt);
        }
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
