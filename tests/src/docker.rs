//! Docker fixtures for the scheduler tests: the availability check (fail loudly, skip only
//! when `AGENTVM_SKIP_DOCKER=1`), a scheduler on the local daemon, the busybox template, and a
//! second `dockerd` with its own socket, data root and exec root.

use agentvm::scheduler::{NodeRegistration, Scheduler, SchedulerConfig, TemplateSpec};
use bollard::query_parameters::ListContainersOptionsBuilder;
use bollard::Docker;
use futures::StreamExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The local daemon's socket.
pub const SOCKET: &str = "/var/run/docker.sock";
/// The local daemon as a node endpoint.
pub const ENDPOINT: &str = "unix:///var/run/docker.sock";
/// The offline test image `scripts/setup-docker.sh` builds.
pub const TEST_IMAGE: &str = "agentvm-test/busybox:latest";

const HOW: &str = "run `sudo bash scripts/setup-docker.sh` (installs docker.io, starts dockerd, \
                   builds agentvm-test/busybox:latest offline), or set AGENTVM_SKIP_DOCKER=1 to \
                   skip the Docker tests on purpose";

/// A runtime on `dir` whose scheduler has the local daemon as its node and the `busybox`
/// template, with `container` created so that its agents' tools run in a sandbox of that
/// template. `llm` is the driver its agents use, when the test runs agents.
pub async fn vm_with_sandboxed_container(
    dir: &std::path::Path,
    container: &str,
    llm: Option<std::sync::Arc<dyn agentvm::LlmDriver>>,
) -> agentvm::AgentVm {
    use agentvm::RuntimeExt;
    let mut node = NodeRegistration::new("local", ENDPOINT);
    node.max_containers = 20;
    let mut builder = agentvm::AgentVm::builder().data_dir(dir).scheduler(
        Scheduler::builder()
            .config(SchedulerConfig::default())
            .node(node),
    );
    if let Some(llm) = llm {
        builder = builder.llm(llm);
    }
    let vm = builder.open().await.expect("opening the runtime");
    let scheduler = vm.scheduler().expect("the runtime has a scheduler").clone();
    scheduler
        .create_template("busybox", busybox_spec())
        .await
        .expect("creating the busybox template");
    vm.containers()
        .create_with_sandbox(container, "busybox")
        .await
        .expect("creating the sandboxed container");
    vm
}

/// Checks that Docker and the test image are there. Panics with what to do when they are
/// not; returns `false` (after saying so) only when `AGENTVM_SKIP_DOCKER=1`.
pub async fn require_docker() -> bool {
    if std::env::var("AGENTVM_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("AGENTVM_SKIP_DOCKER=1: skipping a test that needs Docker");
        return false;
    }
    let docker = local().await;
    if let Err(e) = docker.inspect_image(TEST_IMAGE).await {
        panic!("the test image {TEST_IMAGE} is missing on {SOCKET} ({e}): {HOW}");
    }
    true
}

/// A client of the local daemon (panics with what to do when it does not answer).
pub async fn local() -> Docker {
    connect(SOCKET).await
}

/// A negotiated client of the daemon at `socket`.
pub async fn connect(socket: &str) -> Docker {
    if !std::path::Path::new(socket).exists() {
        panic!("Docker is not available: no socket at {socket}: {HOW}");
    }
    let d = Docker::connect_with_unix(socket, 60, bollard::API_DEFAULT_VERSION)
        .unwrap_or_else(|e| panic!("Docker is not available at {socket} ({e}): {HOW}"));
    let d = d
        .negotiate_version()
        .await
        .unwrap_or_else(|e| panic!("Docker does not answer at {socket} ({e}): {HOW}"));
    d.ping()
        .await
        .unwrap_or_else(|e| panic!("Docker does not answer at {socket} ({e}): {HOW}"));
    d
}

/// Short intervals so health and sweeps happen within a test.
pub fn fast_config() -> SchedulerConfig {
    SchedulerConfig {
        heartbeat_interval: Duration::from_millis(200),
        offline_after: Duration::from_millis(1000),
        sweep_interval: Duration::from_millis(500),
        docker_timeout: Duration::from_secs(60),
        ..Default::default()
    }
}

/// A scheduler (in-memory store) with the local daemon as node `local`.
pub async fn local_scheduler(config: SchedulerConfig) -> Scheduler {
    let s = Scheduler::builder()
        .config(config)
        .open()
        .await
        .expect("open a scheduler");
    let mut reg = NodeRegistration::new("local", ENDPOINT);
    reg.total_cpu_cores = Some(4.0);
    reg.total_memory_mb = Some(8192);
    reg.max_containers = 50;
    s.register_node(reg)
        .await
        .expect("register the local Docker daemon as a node");
    s
}

/// The busybox template: non-root `sandbox` user (from the image label), /workspace.
pub fn busybox_spec() -> TemplateSpec {
    let mut spec = TemplateSpec::new("busybox", TEST_IMAGE);
    spec.default_cpu_cores = 0.5;
    spec.default_memory_mb = 128;
    spec.security.pids_limit = 64;
    spec.workdir = Some("/workspace".into());
    spec.default_timeout_s = 600;
    spec
}

/// Ids of the containers of a scheduler `instance` on a daemon.
pub async fn containers_of(d: &Docker, instance: &str) -> Vec<String> {
    let mut filters = HashMap::new();
    filters.insert(
        "label".to_string(),
        vec![format!("agentvm.instance={instance}")],
    );
    let opts = ListContainersOptionsBuilder::new()
        .all(true)
        .filters(&filters)
        .build();
    d.list_containers(Some(opts))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A second Docker daemon on its own socket, data root, exec root and pidfile, without a
/// bridge or iptables, also listening on TCP 127.0.0.1 with TLS (client certificates required).
/// Stopped and cleaned up on drop.
pub struct SecondDaemon {
    /// The `dockerd` process.
    child: Child,
    /// Its directories.
    dir: tempfile::TempDir,
    /// Its socket path.
    pub socket: String,
    /// Its TLS endpoint, `tcp://127.0.0.1:<port>`.
    pub tcp_endpoint: String,
    /// The client certificate, key and CA to reach `tcp_endpoint`.
    pub tls: agentvm::scheduler::TlsFiles,
}

/// Makes a CA, a server certificate for 127.0.0.1 and a client certificate with openssl.
fn make_certs(dir: &std::path::Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write server.ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n")
        .expect("write client.ext");
    let subj = |cn: &str| format!("/CN={cn}");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-subj",
        &subj("agentvm-test-ca"),
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server-key.pem",
        "-out",
        "server.csr",
        "-subj",
        &subj("127.0.0.1"),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "server-cert.pem",
        "-extfile",
        "server.ext",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "client.csr",
        "-subj",
        &subj("agentvm-test-client"),
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "client.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca-key.pem",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "cert.pem",
        "-extfile",
        "client.ext",
    ]);
}

impl SecondDaemon {
    /// Starts it, waits until it answers and imports the test image into it from the local
    /// daemon (`docker save | docker load`, no registry).
    pub async fn start() -> SecondDaemon {
        let dir = tempfile::Builder::new()
            .prefix("agentvm-dockerd-")
            .tempdir_in("/var/tmp")
            .expect("a directory for the second dockerd in /var/tmp");
        let p = |n: &str| -> PathBuf { dir.path().join(n) };
        let socket = p("docker.sock").to_string_lossy().into_owned();
        make_certs(dir.path());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port on 127.0.0.1")
            .port();
        let tcp_endpoint = format!("tcp://127.0.0.1:{port}");
        let tls = agentvm::scheduler::TlsFiles {
            ca: p("ca.pem"),
            cert: p("cert.pem"),
            key: p("key.pem"),
        };
        let log = std::fs::File::create(p("dockerd.log")).expect("create dockerd.log");
        let child = Command::new("dockerd")
            .arg("--host")
            .arg(format!("unix://{socket}"))
            .arg("--host")
            .arg(&tcp_endpoint)
            .arg("--tlsverify")
            .arg("--tlscacert")
            .arg(p("ca.pem"))
            .arg("--tlscert")
            .arg(p("server-cert.pem"))
            .arg("--tlskey")
            .arg(p("server-key.pem"))
            .arg("--data-root")
            .arg(p("data"))
            .arg("--exec-root")
            .arg(p("exec"))
            .arg("--pidfile")
            .arg(p("dockerd.pid"))
            .args(["--bridge=none", "--iptables=false", "--ip-masq=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start a second dockerd ({e}): {HOW}"));
        let daemon = SecondDaemon {
            child,
            dir,
            socket,
            tcp_endpoint,
            tls,
        };
        let start = Instant::now();
        while !std::path::Path::new(&daemon.socket).exists() {
            if start.elapsed() > Duration::from_secs(30) {
                let log = std::fs::read_to_string(daemon.dir.path().join("dockerd.log"))
                    .unwrap_or_default();
                panic!(
                    "the second dockerd did not create {} within 30 s; its log:\n{log}",
                    daemon.socket
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let second = loop {
            let ok = async {
                let d = Docker::connect_with_unix(&daemon.socket, 30, bollard::API_DEFAULT_VERSION)
                    .ok()?;
                let d = d.negotiate_version().await.ok()?;
                d.ping().await.ok()?;
                Some(d)
            }
            .await;
            if let Some(d) = ok {
                break d;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the second dockerd does not answer"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let first = local().await;
        let mut tar = Vec::new();
        let mut export = first.export_image(TEST_IMAGE);
        while let Some(chunk) = export.next().await {
            tar.extend_from_slice(&chunk.expect("export the test image"));
        }
        let opts = bollard::query_parameters::ImportImageOptionsBuilder::new().build();
        let mut load = second.import_image(opts, bollard::body_full(tar.into()), None);
        while let Some(r) = load.next().await {
            r.expect("load the test image into the second dockerd");
        }
        second
            .inspect_image(TEST_IMAGE)
            .await
            .expect("the test image is in the second dockerd");
        daemon
    }
}

impl Drop for SecondDaemon {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
