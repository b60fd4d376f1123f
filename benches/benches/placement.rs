//! Placement decisions per second with 10, 100, 1,000 and 10,000 nodes: the linear scan
//! (`scheduler::placement::place`, group `placement`) and the ordered index
//! (`scheduler::placement_index::PlacementIndex`, group `placement_index`), with the p50/p99 of
//! one decision printed beside criterion's median. The index is also timed on its worst case,
//! a uniform empty fleet (`index-uniform`). Targets: >= 1M decisions/s at 100 nodes, p99 < 10 µs
//! at 1,000, p99 < 50 µs at 10,000.

use agentvm::scheduler::placement::{place, Demand, NodeLoad};
use agentvm::scheduler::placement_index::{NodeState, PlacementIndex};
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

    let mut group = c.benchmark_group("placement_index");
    for n in [10usize, 100, 1000, 10_000] {
        let ids: Vec<String> = (0..n).map(|i| format!("node-{i:05}")).collect();
        let nodes = fleet(&ids, &images_a, &images_b);
        let mut index = PlacementIndex::new();
        for node in &nodes {
            index.upsert(node.node_id, NodeState::of(node));
        }
        // The same load shifts as above, applied through the index (an O(log n) update each).
        let shift = |index: &mut PlacementIndex, k: usize| {
            index.update(&ids[k % n], |s| s.in_flight = (k % 3) as u32);
        };
        let mut lat = Vec::with_capacity(20_000);
        let mut upd = Vec::with_capacity(20_000);
        for k in 0..20_000 {
            let t = Instant::now();
            let id = index.place(black_box(&demand)).expect("room");
            lat.push(t.elapsed());
            black_box(id);
            let t = Instant::now();
            shift(&mut index, k);
            upd.push(t.elapsed());
        }
        report(&format!("placement_index/{n}"), &mut lat, Some(&mut upd));
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            let mut k = 0usize;
            b.iter(|| {
                k += 1;
                shift(&mut index, k);
                index.place(black_box(&demand)).map(str::len).expect("room")
            })
        });
    }
    group.finish();

    // Worst case for the index: every node empty and alike, so the bound never cuts the walk
    // short until placements make the loads differ.
    let n = 10_000;
    let ids: Vec<String> = (0..n).map(|i| format!("node-{i:05}")).collect();
    let mut index = PlacementIndex::new();
    for (i, id) in ids.iter().enumerate() {
        let mut s = NodeState::of(&fleet(&ids[i..=i], &images_a, &images_b)[0]);
        s.schedulable = true;
        s.allocated_cpu_millis = 0;
        s.allocated_memory_mb = 0;
        s.running = 0;
        s.in_flight = 0;
        s.images = images_a.clone();
        index.upsert(id, s);
    }
    let mut lat = Vec::with_capacity(2_000);
    for _ in 0..2_000 {
        let t = Instant::now();
        let id = index.place(black_box(&demand)).expect("room").to_string();
        lat.push(t.elapsed());
        // Placements land, so the fleet stops being uniform one node at a time.
        index.update(&id, |s| {
            s.running += 1;
            s.allocated_cpu_millis += demand.cpu_millis;
            s.allocated_memory_mb += demand.memory_mb;
        });
    }
    report("placement_index/10000 uniform, first 2,000", &mut lat, None);
}

fn report(name: &str, lat: &mut [Duration], upd: Option<&mut Vec<Duration>>) {
    lat.sort();
    let p = |l: &[Duration], q: f64| l[((l.len() - 1) as f64 * q) as usize];
    match upd {
        Some(u) => {
            u.sort();
            println!(
                "{name}: p50 {:?}  p99 {:?}  (update p50 {:?} p99 {:?})",
                p(lat, 0.5),
                p(lat, 0.99),
                p(u, 0.5),
                p(u, 0.99)
            );
        }
        None => println!("{name}: p50 {:?}  p99 {:?}", p(lat, 0.5), p(lat, 0.99)),
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
