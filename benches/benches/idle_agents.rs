//! Memory of idle agents: 10,000 containers, each with one image whose agent is running and
//! waiting for a message, on an in-memory [`AgentVm`] with the mock driver.
//!
//! Not a criterion bench: it reads `VmRSS` from `/proc/self/status` before and after and prints
//! the difference, split into the stored records and the running agents.
//!
//! Target: <= 100 MB extra RSS for 10,000 idle agents.

use agentvm::RuntimeExt;
use agentvm_benches::{mock_vm, rss_kib, tokio_runtime};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const AGENTS: usize = 10_000;
const TARGET_MB: f64 = 100.0;

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() -> ExitCode {
    let Some(baseline) = rss_kib() else {
        eprintln!("idle agents: no /proc/self/status here, cannot measure RSS");
        return ExitCode::FAILURE;
    };
    let rt = tokio_runtime();
    let vm = rt.block_on(mock_vm(None));
    let before = rss_kib().unwrap_or(baseline);

    let start = Instant::now();
    let (image_ids, records_done, after_records) = rt.block_on(async {
        let mut image_ids = Vec::with_capacity(AGENTS);
        for i in 0..AGENTS {
            let image = vm
                .images()
                .create(&format!("tenant-{i:05}"), Default::default())
                .await
                .expect("creating an image");
            image_ids.push(image.record.image_id);
        }
        (image_ids, start.elapsed(), rss_kib().unwrap_or(before))
    });
    let agents_start = Instant::now();
    rt.block_on(async {
        for image_id in &image_ids {
            vm.images().run(image_id).await.expect("starting an agent");
        }
        // Let every actor reach its idle wait before reading the RSS.
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let agents_done = agents_start.elapsed();
    let after = rss_kib().unwrap_or(after_records);
    let setup = start.elapsed();

    let running = vm.container_manager().len();
    let extra = after.saturating_sub(before);
    let records = after_records.saturating_sub(before);
    let agents = after.saturating_sub(after_records);
    println!(
        "idle agents: {running}, extra RSS: {:.1} MB ({:.1} KB per agent); target <= {TARGET_MB} MB",
        mib(extra),
        extra as f64 / AGENTS as f64,
    );
    println!(
        "  of which records (containers, images, sessions in memory): {:.1} MB ({:.2} KB each); \
         agents: {:.1} MB ({:.2} KB each)",
        mib(records),
        records as f64 / AGENTS as f64,
        mib(agents),
        agents as f64 / AGENTS as f64,
    );
    println!(
        "  setup: {:.2} s ({:.2} s creating {AGENTS} images, {:.2} s starting agents incl. 0.2 s settle; \
         {:.0} µs per image + agent)",
        setup.as_secs_f64(),
        records_done.as_secs_f64(),
        agents_done.as_secs_f64(),
        (setup.as_secs_f64() - 0.2) * 1e6 / AGENTS as f64,
    );
    println!(
        "  RSS: {:.1} MB at start, {:.1} MB after opening the runtime, {:.1} MB at the end",
        mib(baseline),
        mib(before),
        mib(after),
    );
    if mib(extra) > TARGET_MB {
        println!("  over target");
    }

    rt.block_on(vm.close());
    if running != AGENTS {
        eprintln!("idle agents: only {running} of {AGENTS} agents are running");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
