//! What the store costs per write, on each backend.
//!
//! - `store/append_message/<backend>`: a durable message append, what every user message and
//!   assistant reply costs before the runtime reports it stored. On the redb file, one commit
//!   with `Immediate` durability (an fsync) per call; on PostgreSQL, one transaction committed
//!   with the server's `synchronous_commit` (on by default: the commit waits for the WAL
//!   flush), on a pooled connection, over loopback here. `memory` is the same call without
//!   disk, database or encoding, to tell commit cost from the rest.
//!   Target: median <= 1 ms per append on the redb file.
//! - `store/append_message/postgres_fenced`: the PostgreSQL append of a cluster member
//!   (`join_cluster` + a held lease): the same transaction first reads the container's lease
//!   row `FOR SHARE` and checks owner, epoch and expiry, as every container write of a cluster
//!   member does.
//! - `store/append_replay_<n>/<backend>`: one call of `append_replay` with `n` entries (1, then
//!   100), each a serialized `text_delta` of one session. This is how the bus persists events:
//!   in batches, **not durably** (redb: `Durability::None`; PostgreSQL: `synchronous_commit =
//!   off`, plus the `pg_notify` every append sends so other members relay the events).
//!   Throughput is entries, so `append_replay_100` reads as the per-event cost when events
//!   are batched and `append_replay_1` as the cost of a batch of one. After each sample the
//!   log is trimmed to its newest 1,000 entries, untimed, as the runtime trims it.
//!
//! The PostgreSQL variants run only when `AGENTVM_BENCH_POSTGRES` is a `postgres://` URL
//! (e.g. `postgres://postgres@127.0.0.1:5432/bench`); they use a fresh schema of their own,
//! dropped at the end. Without it only redb and memory run.

use agentvm::store::{ClusterMember, ReplayEntry};
use agentvm::{MemoryStore, PostgresStore, RedbStore, Store};
use agentvm_benches::postgres::{bench_postgres_url, drop_schema, fresh_schema};
use agentvm_benches::{
    image_and_session, text_delta, tokio_runtime, user_message, CONTAINER_ID, DATABASE_FILE,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};

/// Entries per `append_replay` call in the batched variant.
const REPLAY_BATCH: usize = 100;
/// Entries a topic keeps after each sample's untimed trim.
const REPLAY_KEEP: usize = 1_000;

/// Stores a fresh image and session in `store`; returns the session id.
fn new_session(store: &dyn Store) -> String {
    let (image, session) = image_and_session(CONTAINER_ID);
    store
        .create_image(&image, &session)
        .expect("creating the bench image");
    session.session_id
}

fn bench_append(c: &mut Criterion, name: &str, store: &dyn Store) {
    let session_id = new_session(store);
    let message = user_message();
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    group.bench_function(format!("append_message/{name}"), |b| {
        b.iter(|| {
            store
                .append_message(&session_id, &message)
                .expect("appending a message")
        })
    });
    group.finish();
}

fn bench_replay(c: &mut Criterion, name: &str, store: &dyn Store) {
    let session_id = new_session(store);
    // Shared, as the bus hands it over (an in-memory log keeps the bus's copy).
    let json: std::sync::Arc<[u8]> =
        serde_json::to_vec(&text_delta(&session_id, "a few words of a reply "))
            .expect("serializing a text_delta")
            .into();
    let mut cursor = 0u64;
    let mut group = c.benchmark_group("store");
    for batch in [1, REPLAY_BATCH] {
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_function(format!("append_replay_{batch}/{name}"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let entries: Vec<ReplayEntry> = (0..batch)
                        .map(|_| {
                            cursor += 1;
                            ReplayEntry {
                                topic: session_id.clone(),
                                cursor,
                                timestamp: agentvm::now_ms(),
                                json: json.clone(),
                            }
                        })
                        .collect();
                    store.append_replay(&entries).expect("appending replay");
                }
                let took = start.elapsed();
                // Untimed: the log is trimmed as the runtime trims it, so millions of entries
                // never pile up (in memory, they would exhaust it).
                store
                    .trim_replay(REPLAY_KEEP, 0)
                    .expect("trimming the replay log");
                took
            })
        });
    }
    group.finish();
}

fn appends(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let store = RedbStore::open(dir.path().join(DATABASE_FILE)).expect("opening the redb store");
    bench_append(c, "redb_file", &store);
    bench_replay(c, "redb_file", &store);

    let memory = MemoryStore::new();
    bench_append(c, "memory", &memory);
    bench_replay(c, "memory", &memory);

    match bench_postgres_url() {
        Some(server) => postgres(c, &server),
        None => println!(
            "store/*/postgres skipped: set AGENTVM_BENCH_POSTGRES to a postgres:// URL to run them"
        ),
    }
}

fn postgres(c: &mut Criterion, server: &str) {
    // The store's calls block the calling thread while this runtime's workers drive the
    // connections, so it lives as long as the store.
    let rt = tokio_runtime();
    let url = rt.block_on(fresh_schema(server, "store"));
    let store = rt
        .block_on(PostgresStore::open(&url))
        .expect("opening the PostgreSQL store");
    bench_append(c, "postgres", &store);
    bench_replay(c, "postgres", &store);

    // Now as a cluster member holding the container's lease: every container write is fenced.
    let member = ClusterMember {
        id: "srv_bench".into(),
        url: "http://127.0.0.1:9".into(),
    };
    store.join_cluster(&member).expect("joining the cluster");
    store
        .acquire_lease(CONTAINER_ID, &member.id, Duration::from_secs(3600))
        .expect("taking the bench container's lease");
    bench_append(c, "postgres_fenced", &store);

    drop(store);
    rt.block_on(drop_schema(server, "store"));
}

criterion_group!(benches, appends);
criterion_main!(benches);
