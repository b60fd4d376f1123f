//! Sandboxes against raw Docker on the same daemon, side by side (needs Docker and the test
//! image: `sudo bash scripts/setup-docker.sh`):
//! - cold create-to-ready vs raw bollard create+start (target: overhead <= 10%), and vs raw
//!   create+start+first exec (what "ready" means here);
//! - warm-pool claim (target p50 <= 5 ms);
//! - exec round trip vs raw Docker exec (target: overhead <= 10%).
//!
//! `ROUNDS` (default 15) sets the number of interleaved rounds.

use agentvm::scheduler::{
    ExecRequest, NodeRegistration, SandboxRequest, Scheduler, SchedulerConfig, TemplateSpec,
};
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use futures::StreamExt;
use std::time::{Duration, Instant};

const IMAGE: &str = "agentvm-test/busybox:latest";

fn pct(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (p(0.5), p(0.95))
}

fn line(what: &str, v: Vec<Duration>) -> Duration {
    let n = v.len();
    let (p50, p95) = pct(v);
    println!("{what:<36} n={n:<4} p50 {p50:>9.2?}  p95 {p95:>9.2?}");
    p50
}

async fn raw_exec(d: &bollard::Docker, id: &str) {
    let opts = CreateExecOptions::<&str> {
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        cmd: Some(vec!["true"]),
        ..Default::default()
    };
    let e = d.create_exec(id, opts).await.expect("create exec");
    if let StartExecResults::Attached { mut output, .. } =
        d.start_exec(&e.id, None).await.expect("start exec")
    {
        while output.next().await.is_some() {}
    }
    d.inspect_exec(&e.id).await.expect("inspect exec");
}

/// The same hardening the scheduler applies, so the comparison is like for like.
fn body() -> ContainerCreateBody {
    let mem = 128 * 1024 * 1024;
    ContainerCreateBody {
        image: Some(IMAGE.into()),
        entrypoint: Some(vec!["sleep".into()]),
        cmd: Some(vec!["2147483647".into()]),
        user: Some("sandbox".into()),
        host_config: Some(HostConfig {
            init: Some(true),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges=true".into()]),
            pids_limit: Some(64),
            memory: Some(mem),
            memory_swap: Some(mem),
            nano_cpus: Some(500_000_000),
            network_mode: Some("none".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    let d = bollard::Docker::connect_with_unix(
        "/var/run/docker.sock",
        60,
        bollard::API_DEFAULT_VERSION,
    )
    .expect("Docker socket (run scripts/setup-docker.sh)")
    .negotiate_version()
    .await
    .expect("Docker answers");
    let rm = || {
        RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build()
    };
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
    s.register_node(reg).await.expect("node");
    let mut spec = TemplateSpec::new("b", IMAGE);
    spec.default_cpu_cores = 0.5;
    spec.default_memory_mb = 128;
    spec.security.pids_limit = 64;
    s.create_template("b", spec.clone())
        .await
        .expect("template");

    // Interleaved, so drift hits both alike.
    let (mut raw, mut raw_ready, mut ours, mut raw_exec_t, mut our_exec_t) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..rounds {
        let t = Instant::now();
        let c = d
            .create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                body(),
            )
            .await
            .expect("raw create");
        d.start_container(
            &c.id,
            None::<bollard::query_parameters::StartContainerOptions>,
        )
        .await
        .expect("raw start");
        raw.push(t.elapsed());
        raw_exec(&d, &c.id).await;
        raw_ready.push(t.elapsed());
        for _ in 0..5 {
            let t = Instant::now();
            raw_exec(&d, &c.id).await;
            raw_exec_t.push(t.elapsed());
        }
        d.remove_container(&c.id, Some(rm()))
            .await
            .expect("raw remove");

        let t = Instant::now();
        let sb = s
            .create_sandbox(SandboxRequest::new("b"))
            .await
            .expect("create sandbox");
        ours.push(t.elapsed());
        for _ in 0..5 {
            let t = Instant::now();
            s.exec_collect(&sb.id, ExecRequest::command(["true"]))
                .await
                .expect("exec");
            our_exec_t.push(t.elapsed());
        }
        s.terminate_sandbox(&sb.id).await.expect("terminate");
    }
    let raw50 = line("raw bollard create+start", raw);
    let ready50 = line("raw create+start+first exec", raw_ready);
    let ours50 = line("create_sandbox (ready: an exec works)", ours);
    println!(
        "  cold overhead vs raw create+start: {:+.1}% (target <= 10%); vs raw create+start+exec: {:+.1}%",
        (ours50.as_secs_f64() / raw50.as_secs_f64() - 1.0) * 100.0,
        (ours50.as_secs_f64() / ready50.as_secs_f64() - 1.0) * 100.0
    );
    let rexec = line("raw docker exec round trip (true)", raw_exec_t);
    let oexec = line("scheduler exec_collect (true)", our_exec_t);
    println!(
        "  exec overhead: {:+.1}% (target <= 10%)",
        (oexec.as_secs_f64() / rexec.as_secs_f64() - 1.0) * 100.0
    );

    spec.warm_pool_size = 10;
    s.create_template("w", spec).await.expect("warm template");
    let mut claims = vec![];
    for _ in 0..2 {
        s.fill_pool("w").await.expect("fill the pool");
        let mut ids = vec![];
        for _ in 0..10 {
            let t = Instant::now();
            let sb = s
                .create_sandbox(SandboxRequest::new("w"))
                .await
                .expect("claim");
            claims.push(t.elapsed());
            ids.push(sb.id);
        }
        for id in ids {
            s.terminate_sandbox(&id).await.expect("terminate");
        }
    }
    let claim50 = line("warm-pool claim", claims);
    println!("  warm claim p50 {claim50:.2?} (target <= 5 ms)");
    let m = s.metrics();
    println!(
        "  pool hits={} misses={} cold starts={}",
        m.pool_hits, m.pool_misses, m.cold_starts
    );
    let mut off = TemplateSpec::new("w", IMAGE);
    off.warm_pool_size = 0;
    s.update_template("w", off).await.expect("drain the pool");
    for sb in s.list_sandboxes().await.expect("list") {
        let _ = s.terminate_sandbox(&sb.id).await;
    }
}
