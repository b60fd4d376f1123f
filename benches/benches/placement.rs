//! Placement decisions per second with 10, 100, 1,000 and 10,000 nodes (the pure
//! `scheduler::placement::place`), and the p99 of one decision, printed beside criterion's median.
//! Targets: >= 1M decisions/s at 100 nodes, p99 < 10 µs at 1,000.

use agentvm::scheduler::placement::{place, Demand, NodeLoad};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use std::time::{Duration, Instant};

fn fleet<'a>(
    ids: &'a [String],
    images_a: &'a [String],
    images_b: &'a [String],
) -> Vec<NodeLoad<'a>> {
    ids.iter()
        .enumerate()
        .map(|(i, id)| NodeLoad {
            node_id: id,
            schedulable: i % 17 != 0,
            total_cpu_millis: 16_000,
            total_memory_mb: 65_536,
            max_containers: 100,
            allocated_cpu_millis: ((i * 7919) % 15_000) as u64,
            allocated_memory_mb: ((i * 104_729) % 60_000) as u64,
            running: (i % 90) as u32,
            in_flight_cpu_millis: 0,
            in_flight_memory_mb: 0,
            in_flight: (i % 3) as u32,
            images: if i % 2 == 0 { images_a } else { images_b },
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let images_a = vec![
        "python:3.11".to_string(),
        "agentvm-test/busybox:latest".to_string(),
        "node:20".to_string(),
    ];
    let images_b = vec!["python:3.11".to_string(), "node:20".to_string()];
    let demand = Demand {
        cpu_millis: 500,
        memory_mb: 512,
        image: "agentvm-test/busybox:latest",
    };
    let mut group = c.benchmark_group("placement");
    for n in [10usize, 100, 1000, 10_000] {
        let ids: Vec<String> = (0..n).map(|i| format!("node-{i:05}")).collect();
        let mut nodes = fleet(&ids, &images_a, &images_b);
        // p99 of single decisions, with the load shifting between them as placements land.
        let mut lat = Vec::with_capacity(20_000);
        for k in 0..20_000 {
            let t = Instant::now();
            let i = place(black_box(&nodes), black_box(&demand)).expect("room");
            lat.push(t.elapsed());
            nodes[k % n].in_flight = (k % 3) as u32;
            black_box(i);
        }
        lat.sort();
        let p = |q: f64| lat[((lat.len() - 1) as f64 * q) as usize];
        println!("placement/{n}: p50 {:?}  p99 {:?}", p(0.5), p(0.99));
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut k = 0usize;
            b.iter(|| {
                k += 1;
                nodes[k % n].in_flight = (k % 3) as u32;
                place(black_box(&nodes), black_box(&demand)).expect("room")
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
