//! Durable message append: what every user message and assistant reply costs before the
//! runtime reports it stored. One redb commit with `Immediate` durability (an fsync) per call.
//!
//! Target: median <= 1 ms per append on the file-backed repository. The in-memory variant is
//! the same work without the disk, to tell commit cost from encoding and B-tree cost.

use agentvm::Repository;
use agentvm_benches::{image_and_session, user_message, CONTAINER_ID, DATABASE_FILE};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench_append(c: &mut Criterion, name: &str, repo: &Repository) {
    let (image, session) = image_and_session(CONTAINER_ID);
    repo.create_image(&image, &session)
        .expect("creating the bench image");
    let message = user_message();
    let mut group = c.benchmark_group("repository");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter(|| {
            repo.append_message(&session.session_id, &message)
                .expect("appending a message")
        })
    });
    group.finish();
}

fn append_message(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("creating a temp dir");
    let repo = Repository::open(dir.path().join(DATABASE_FILE)).expect("opening the repository");
    bench_append(c, "append_message/file", &repo);

    let repo = Repository::in_memory().expect("opening the in-memory repository");
    bench_append(c, "append_message/memory", &repo);
}

criterion_group!(benches, append_message);
criterion_main!(benches);
