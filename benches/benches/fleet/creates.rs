//! Creates through the real scheduler: `Scheduler::create_sandbox`, end to end, with the
//! simulated engine behind the scheduler's engine trait (`engine::simulated`) standing in
//! for N Docker engines. Each create is what it is on Docker: placement on the index and the
//! reservation, admission (4 starts in flight per node), the durable `creating` record, the
//! engine's image check, create, start and readiness exec, the durable `running` record, the
//! allocation and the events. Only the engine's work is simulated, with a quiet Docker host's
//! latencies: 1 ms per request, 30 ms create, 80 ms start, 40 ms exec.
//!
//! Reported: creates finished per second against the offered rate (`FLEET_RATE` for
//! `FLEET_SECONDS`), each with two durable records; create latency p50/p99 (the engine's
//! ~150 ms included); and the scheduler's own placement histogram
//! (`agentvm_placement_duration_seconds`), as the bucket bounds p50 and p99 fall in.

use super::{images, IMAGE};
use agentvm::scheduler::engine::simulated::{Latencies, SimulatedConnector};
use agentvm::scheduler::{
    HistogramSnapshot, NodeRegistration, SandboxRequest, Scheduler, TemplateSpec,
};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The engines of every node: 16 cores, 64 GiB, the bench image on each.
pub(super) fn connector() -> Arc<SimulatedConnector> {
    Arc::new(SimulatedConnector::new(
        Latencies::default(),
        16.0,
        65_536,
        images(),
    ))
}

/// Registers `n` nodes through `s` (their capacity from the engine), 200 at a time.
pub(super) async fn register(s: &Scheduler, n: usize) {
    let ids: Vec<usize> = (0..n).collect();
    for chunk in ids.chunks(200) {
        let regs = chunk.iter().map(|i| {
            let mut reg = NodeRegistration::new(
                format!("node-{i:05}"),
                format!(
                    "tcp://10.{}.{}.{}:2375",
                    i / 65_536,
                    (i / 256) % 256,
                    i % 256
                ),
            );
            reg.max_containers = 100;
            s.register_node(reg)
        });
        for r in futures::future::join_all(regs).await {
            r.expect("register");
        }
    }
    let mut spec = TemplateSpec::new("busybox", IMAGE);
    spec.default_cpu_cores = 0.5;
    spec.default_memory_mb = 512;
    s.create_template("busybox", spec).await.expect("template");
}

/// The upper bound of the bucket quantile `q` falls in.
fn bucket_of(h: &HistogramSnapshot, q: f64) -> String {
    let rank = ((h.count as f64 * q).ceil() as u64).max(1);
    let mut cumulative = 0;
    for (bound, n) in h.bounds.iter().zip(h.buckets.iter()) {
        cumulative += n;
        if cumulative >= rank {
            return format!("<= {:.0} µs", bound * 1e6);
        }
    }
    "> the last bucket".into()
}

/// Offers `rate` creates per second for `seconds` to `servers` (round-robin; create `k` is
/// owned by `owners[k % servers.len()]`), waits for all and prints the line.
pub(super) async fn drive(
    label: &str,
    servers: &[Scheduler],
    owners: &[Option<String>],
    rate: u64,
    seconds: u64,
) {
    let total = (rate * seconds) as usize;
    let done = Arc::new(Mutex::new(Vec::<(Instant, Duration)>::with_capacity(total)));
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for k in 0..total {
        let due = start + Duration::from_secs_f64(k as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let s = servers[k % servers.len()].clone();
        let mut request = SandboxRequest::new("busybox");
        request.owner = owners[k % owners.len()].clone();
        let (done, failed) = (done.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            match s.create_sandbox(request).await {
                Ok(_) => done
                    .lock()
                    .expect("done")
                    .push((Instant::now(), t.elapsed())),
                Err(e) => failed.lock().expect("failed").push(e.to_string()),
            }
        }));
    }
    let offered_for = start.elapsed();
    for t in tasks {
        t.await.expect("task");
    }
    let done = done.lock().expect("done").clone();
    let failed = failed.lock().expect("failed").clone();
    let last = done.iter().map(|(at, _)| *at).max().unwrap_or(start);
    let mut lat: Vec<Duration> = done.iter().map(|(_, d)| *d).collect();
    lat.sort();
    let p = |q: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or_default()
    };
    let mut placement = servers[0].latency().placement;
    for s in &servers[1..] {
        let h = s.latency().placement;
        for (a, b) in placement.buckets.iter_mut().zip(h.buckets.iter()) {
            *a += b;
        }
        placement.count += h.count;
        placement.sum_seconds += h.sum_seconds;
    }
    println!(
        "{label} creates through the scheduler and the simulated engine: offered {total} at \
         {rate}/s over {:.2} s; {} ready ({} failed{}) in {:.2} s = {:.0} creates/s, two durable \
         records each; create p50 {:?} p99 {:?} max {:?}; placement (histogram) p50 {} p99 {}, \
         mean {:.1} µs over {}",
        offered_for.as_secs_f64(),
        done.len(),
        failed.len(),
        failed
            .first()
            .map(|e| format!(", first: {e}"))
            .unwrap_or_default(),
        (last - start).as_secs_f64(),
        done.len() as f64 / (last - start).as_secs_f64().max(1e-9),
        p(0.5),
        p(0.99),
        lat.last().copied().unwrap_or_default(),
        bucket_of(&placement, 0.5),
        bucket_of(&placement, 0.99),
        placement.sum_seconds * 1e6 / placement.count.max(1) as f64,
        placement.count,
    );
}
