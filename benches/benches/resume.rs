//! Resume of a paused sandbox to its first exec output (needs Docker and the test image:
//! `sudo bash scripts/setup-docker.sh`): a sandbox is paused, then one exec is timed from the
//! request to its first output (the target, p50 <= 60 ms) and to its end (the exit code read
//! and the execution recorded), the resume included. An exec in the same sandbox while
//! running is timed alongside, interleaved, as the floor. The scheduler keeps its records in
//! a redb file, as a server does, so the resume's durable record is in the time.
//!
//! `ROUNDS` (default 30) sets the number of rounds.

use agentvm::scheduler::{
    ExecEvent, ExecRequest, NodeRegistration, RedbSchedulerStore, SandboxRequest, Scheduler,
    SchedulerConfig, TemplateSpec,
};
use futures::StreamExt;
use std::sync::Arc;
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

/// One exec of `echo hi`: the time to its first output and to its end.
async fn timed(s: &Scheduler, id: &str) -> (Duration, Duration) {
    let t = Instant::now();
    let mut stream = s
        .exec(id, ExecRequest::shell("echo hi"))
        .await
        .expect("exec");
    let mut first = None;
    while let Some(event) = stream.next().await {
        match event {
            ExecEvent::Output { data, .. } => {
                first.get_or_insert(t.elapsed());
                assert_eq!(data, "hi\n");
            }
            ExecEvent::Finished(x) => {
                assert_eq!(x.exit_code, Some(0), "{x:?}");
                break;
            }
        }
    }
    (first.expect("output"), t.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = redb::Database::create(dir.path().join("resume.redb")).expect("redb");
    let store = Arc::new(RedbSchedulerStore::open(Arc::new(db)).expect("store"));
    let s = Scheduler::builder()
        .store(store)
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
    // Warm up Docker's exec path.
    for _ in 0..3 {
        timed(&s, &sb.id).await;
    }
    let (mut resumed, mut resumed_end, mut running, mut running_end) =
        (vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let (first, end) = timed(&s, &sb.id).await;
        running.push(first);
        running_end.push(end);
        s.pause_sandbox(&sb.id).await.expect("pause");
        let (first, end) = timed(&s, &sb.id).await;
        resumed.push(first);
        resumed_end.push(end);
    }
    let floor = line("exec in a running sandbox: first output", running);
    line("exec in a running sandbox: end", running_end);
    let p50 = line("resume + exec: first output", resumed);
    line("resume + exec: end", resumed_end);
    println!(
        "resume adds {:.2?} at p50; target p50 <= 60 ms to the first output: {}",
        p50.saturating_sub(floor),
        if p50 <= Duration::from_millis(60) {
            "met"
        } else {
            "MISSED"
        }
    );
    s.terminate_sandbox(&sb.id).await.expect("terminate");
}
