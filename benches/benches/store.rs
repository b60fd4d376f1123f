//! Durable message append: what every user message and assistant reply costs before the
//! runtime reports it stored. On the redb file, one commit with `Immediate` durability (an
//! fsync) per call.
//!
//! Target: median <= 1 ms per append on the redb file. The memory store is the same call
//! without the disk or the encoding, to tell commit cost from the rest.

use agentvm::{MemoryStore, RedbStore, Store};
use agentvm_benches::{image_and_session, user_message, CONTAINER_ID, DATABASE_FILE};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench_append(c: &mut Criterion, name: &str, store: &dyn Store) {
    let (image, session) = image_and_session(CONTAINER_ID);
    store
        .create_image(&image, &session)
        .expect("creating the bench image");
    let message = user_message();
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| {
            store
                .append_message(&session.session_id, &message)
                .expect("appending a message")
        })
    });
    group.finish();
}

fn append_message(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let store = RedbStore::open(dir.path().join(DATABASE_FILE)).expect("opening the redb store");
    bench_append(c, "append_message/redb_file", &store);

    bench_append(c, "append_message/memory", &MemoryStore::new());
}

criterion_group!(benches, append_message);
criterion_main!(benches);
