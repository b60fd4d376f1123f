//! Resume of a paused sandbox to its first exec output (needs Docker and the test image:
//! `sudo bash scripts/setup-docker.sh`): a sandbox is paused, then one exec is timed from the
//! request to its finished output, the resume included (target p50 <= 60 ms). An exec in the
//! same sandbox while running is timed alongside, interleaved, as the floor.
//!
//! `ROUNDS` (default 30) sets the number of rounds.

use agentvm::scheduler::{
    ExecRequest, NodeRegistration, SandboxRequest, Scheduler, SchedulerConfig, TemplateSpec,
};
use std::time::{Duration, Instant};

const IMAGE: &str = "agentvm-test/busybox:latest";

fn line(what: &str, mut v: Vec<Duration>) -> Duration {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    let (p50, p95) = (p(0.5), p(0.95));
    println!(
        "{what:<36} n={:<4} p50 {p50:>9.2?}  p95 {p95:>9.2?}",
        v.len()
    );
    p50
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let s = Scheduler::builder()
        .config(SchedulerConfig {
            background: false,
            ..Default::default()
        })
        .open()
        .await
        .expect("scheduler");
    let mut reg = NodeRegistration::new("local", "unix:///var/run/docker.sock");
    reg.total_cpu_cores = Some(64.0);
    reg.total_memory_mb = Some(65_536);
    s.register_node(reg)
        .await
        .expect("the local Docker daemon (run scripts/setup-docker.sh)");
    let mut spec = TemplateSpec::new("b", IMAGE);
    spec.default_cpu_cores = 0.5;
    spec.default_memory_mb = 128;
    s.create_template("b", spec).await.expect("template");
    let sb = s
        .create_sandbox(SandboxRequest::new("b"))
        .await
        .expect("sandbox");
    let exec = || ExecRequest::shell("echo hi");
    // Warm up Docker's exec path.
    for _ in 0..3 {
        s.exec_collect(&sb.id, exec()).await.expect("exec");
    }
    let (mut resumed, mut running) = (vec![], vec![]);
    for _ in 0..rounds {
        let t = Instant::now();
        let out = s.exec_collect(&sb.id, exec()).await.expect("exec");
        running.push(t.elapsed());
        assert_eq!(out.stdout, "hi\n");
        s.pause_sandbox(&sb.id).await.expect("pause");
        let t = Instant::now();
        let out = s.exec_collect(&sb.id, exec()).await.expect("exec");
        resumed.push(t.elapsed());
        assert_eq!(out.stdout, "hi\n");
    }
    let floor = line("exec in a running sandbox", running);
    let p50 = line("resume + first exec output", resumed);
    println!(
        "resume adds {:.2?} at p50; target p50 <= 60 ms: {}",
        p50.saturating_sub(floor),
        if p50 <= Duration::from_millis(60) {
            "met"
        } else {
            "MISSED"
        }
    );
    s.terminate_sandbox(&sb.id).await.expect("terminate");
}
