//! In-process request round trip: `image_get_request` through `Runtime::request` on an
//! [`AgentVm`], the path every embedder call and every Channel request takes (dispatch, scope
//! check, one store read, the response record).
//!
//! Target: median <= 5 µs, in memory and file-backed.

use agentvm::{AgentVm, Command, ImageGetRequest, Response, Runtime, RuntimeExt};
use agentvm_benches::{mock_vm, tokio_runtime, CONTAINER_ID};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench_image_get(c: &mut Criterion, rt: &tokio::runtime::Runtime, name: &str, vm: &AgentVm) {
    let image_id = rt.block_on(async {
        vm.images()
            .create(CONTAINER_ID, Default::default())
            .await
            .expect("creating the bench image")
            .record
            .image_id
    });
    let mut group = c.benchmark_group("request");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.to_async(rt).iter(|| async {
            let response = vm
                .request(Command::ImageGet(ImageGetRequest {
                    image_id: image_id.clone(),
                }))
                .await
                .expect("image_get_request");
            match response {
                Response::ImageGet(r) if r.record.is_some() => r,
                other => panic!("unexpected response to image_get_request: {other:?}"),
            }
        })
    });
    group.finish();
}

fn image_get(c: &mut Criterion) {
    let rt = tokio_runtime();

    let vm = rt.block_on(mock_vm(None));
    bench_image_get(c, &rt, "image_get/memory", &vm);
    rt.block_on(vm.close());

    let dir = tempfile::tempdir().expect("creating a temp dir");
    let vm = rt.block_on(mock_vm(Some(dir.path())));
    bench_image_get(c, &rt, "image_get/file", &vm);
    rt.block_on(vm.close());
}

criterion_group!(benches, image_get);
criterion_main!(benches);
