//! A sandbox port through agentvm-server's reverse proxy vs the same server in the sandbox
//! reached directly (needs Docker and the test image: `sudo bash scripts/setup-docker.sh`).
//!
//! busybox `httpd` serves a small file in a sandbox on a bridge network. `direct` GETs it at
//! the sandbox's address; `proxied` GETs it through `/v1/sandboxes/{id}/ports/8080/…` on a
//! server with authentication on (a container-scoped token, so the token check, the scope
//! check and the dispatch of `sandbox_port_request` are all in the number). One client with
//! keep-alive for both: httpd closes after each answer, so `direct` connects every time, as
//! the proxy does to the sandbox.
//!
//! Target: proxied p50 - direct p50 <= 1 ms. After criterion's groups, an interleaved run
//! (`ROUNDS`, default 2000, of each) prints both p50s and the overhead.

/// The allocator the `agentvm-server` binary runs on, so this bench measures what runs.
#[global_allocator]
static ALLOCATOR: agentvm_server::ServerAllocator = agentvm_server::ServerAllocator;

use agentvm::scheduler::{
    ExecRequest, NetworkPolicy, NodeRegistration, SandboxRequest, Scheduler, SchedulerConfig,
    TemplateSpec,
};
use agentvm_benches::tokio_runtime;
use agentvm_server::{AuthMode, ServerConfig, ServerManager};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::{Duration, Instant};

const IMAGE: &str = "agentvm-test/busybox:latest";
const FILE: &[u8] = b"hello from the sandbox\n";

/// A running sandbox with httpd on port 8080, and the two URLs of its file.
struct World {
    scheduler: Scheduler,
    sandbox_id: String,
    direct: String,
    proxied: String,
    token: String,
    /// Kept alive for the whole run.
    _server: ServerManager,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut node = NodeRegistration::new("local", "unix:///var/run/docker.sock");
    node.total_cpu_cores = Some(64.0);
    node.total_memory_mb = Some(65_536);
    let vm = agentvm::AgentVm::builder()
        .data_dir(dir.path())
        .scheduler(
            Scheduler::builder()
                .config(SchedulerConfig {
                    background: false,
                    ..Default::default()
                })
                .node(node),
        )
        .open()
        .await
        .expect("runtime");
    let scheduler = vm.scheduler().expect("scheduler").clone();
    let mut spec = TemplateSpec::new("web", IMAGE);
    spec.default_cpu_cores = 0.5;
    spec.default_memory_mb = 128;
    spec.security.pids_limit = 64;
    spec.workdir = Some("/workspace".into());
    spec.network = NetworkPolicy::Bridge {
        name: "agentvm-bench-net".into(),
        internal: true,
    };
    scheduler
        .create_template("web", spec)
        .await
        .expect("template");
    let mut request = SandboxRequest::new("web");
    request.owner = Some("bench-tenant".into());
    let sandbox = scheduler
        .create_sandbox(request)
        .await
        .expect("sandbox (is Docker up? scripts/setup-docker.sh)");
    scheduler
        .write_file(&sandbox.id, "f.txt", FILE.to_vec())
        .await
        .expect("write the file");
    let started = scheduler
        .exec_collect(
            &sandbox.id,
            ExecRequest::shell("httpd -p 8080 -h /workspace"),
        )
        .await
        .expect("start httpd");
    assert_eq!(started.exit_code, Some(0), "{started:?}");
    let address = scheduler
        .port_address(&sandbox.id, 8080)
        .await
        .expect("the sandbox's address");
    let (token, _) = agentvm::auth::create_token(&**vm.store(), Some(vec!["bench-tenant".into()]))
        .expect("token");
    let server = ServerManager::new(
        vm,
        ServerConfig {
            auth: AuthMode::Required,
            ..Default::default()
        },
    );
    let addr = server.listen("127.0.0.1:0").await.expect("listen");
    World {
        direct: format!("http://{address}/f.txt"),
        proxied: format!("http://{addr}/v1/sandboxes/{}/ports/8080/f.txt", sandbox.id),
        sandbox_id: sandbox.id,
        scheduler,
        token,
        _server: server,
        _dir: dir,
    }
}

async fn get(client: &reqwest::Client, url: &str, token: Option<&str>) {
    let mut r = client.get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let response = r.send().await.expect("GET");
    assert_eq!(response.status(), 200, "{url}");
    let body = response.bytes().await.expect("body");
    assert_eq!(&body[..], FILE);
}

fn p50(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let p = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (p(0.5), p(0.95))
}

fn port_proxy(c: &mut Criterion) {
    let rt = tokio_runtime();
    let w = rt.block_on(world());
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    // httpd may take a moment to listen.
    rt.block_on(async {
        for _ in 0..100 {
            if client.get(&w.direct).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });

    let mut group = c.benchmark_group("port_proxy");
    group.throughput(Throughput::Elements(1));
    group.bench_function("direct", |b| {
        b.to_async(&rt).iter(|| get(&client, &w.direct, None))
    });
    group.bench_function("proxied", |b| {
        b.to_async(&rt)
            .iter(|| get(&client, &w.proxied, Some(&w.token)))
    });
    group.finish();

    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let (direct, proxied) = rt.block_on(async {
        let (mut direct, mut proxied) = (Vec::new(), Vec::new());
        // Interleaved, so drift hits both alike.
        for _ in 0..rounds {
            let t = Instant::now();
            get(&client, &w.direct, None).await;
            direct.push(t.elapsed());
            let t = Instant::now();
            get(&client, &w.proxied, Some(&w.token)).await;
            proxied.push(t.elapsed());
        }
        (direct, proxied)
    });
    let (d50, d95) = p50(direct);
    let (p50v, p95) = p50(proxied);
    println!("port_proxy interleaved, {rounds} rounds:");
    println!("  direct   p50 {d50:>9.2?}  p95 {d95:>9.2?}");
    println!("  proxied  p50 {p50v:>9.2?}  p95 {p95:>9.2?}");
    println!(
        "  overhead p50 {:>9.2?} (target <= 1 ms)",
        p50v.saturating_sub(d50)
    );
    rt.block_on(async {
        w.scheduler
            .terminate_sandbox(&w.sandbox_id)
            .await
            .expect("terminate");
    });
}

criterion_group!(benches, port_proxy);
criterion_main!(benches);
