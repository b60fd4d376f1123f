//! An engine with nothing behind it: containers are rows in a table, every request waits its
//! configured latency on a tokio timer, and no command runs. The fleet simulator puts
//! thousands of nodes behind it to drive the real scheduler (placement, admission, records,
//! events, reconciliation) at a scale no machine has Docker engines for; a control plane can
//! use it to test its own code against a scheduler without Docker.
//!
//! What a command "does" here: it ends at once with exit code 0 and no output, except the
//! scheduler's readiness probe (`id -u; id -g`), answered from the exec's user (`uid:gid`;
//! a name is `1000:1000`), and `echo <words>`, which prints them. Everything else about a
//! container (pause, commit, stats, files) is kept only as far as a later request can see it.

use super::{
    Address, ByteStream, Chunk, Commit, Connector, ContainerSpec, Created, Engine, EngineRef,
    ExecIo, ExecSpec, ExecState, ImageConfig, Inspected, Listed, Machine, NetworkInfo, NetworkSpec,
    RunState, Stats,
};
use crate::error::{Error, Result};
use crate::hardening::labels;
use async_trait::async_trait;
use bytes::Bytes;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long each kind of request takes. The defaults are a Docker engine on a quiet host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latencies {
    /// Pings, inspections, lists, network requests, pause and unpause, and the gap between
    /// creating an exec and starting it.
    pub request: Duration,
    /// Creating a container.
    pub create: Duration,
    /// Starting one.
    pub start: Duration,
    /// Running a command to its end.
    pub exec: Duration,
    /// Removing a container.
    pub remove: Duration,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            request: Duration::from_millis(1),
            create: Duration::from_millis(30),
            start: Duration::from_millis(80),
            exec: Duration::from_millis(40),
            remove: Duration::from_millis(40),
        }
    }
}

impl Latencies {
    /// No waiting at all: the scheduler's own cost alone.
    pub fn none() -> Self {
        Latencies {
            request: Duration::ZERO,
            create: Duration::ZERO,
            start: Duration::ZERO,
            exec: Duration::ZERO,
            remove: Duration::ZERO,
        }
    }
}

/// Connects every node to its own [`SimulatedEngine`], made on first connect and kept for
/// the connector's life (a reconnect finds the node's containers where they were).
#[derive(Debug)]
pub struct SimulatedConnector {
    latencies: Latencies,
    machine: Machine,
    images: Vec<String>,
    engines: Mutex<HashMap<String, Arc<SimulatedEngine>>>,
    down: Mutex<std::collections::HashSet<String>>,
}

impl SimulatedConnector {
    /// Nodes of `cpu_cores` and `memory_mb` holding `images`, answering after `latencies`.
    pub fn new(latencies: Latencies, cpu_cores: f64, memory_mb: u64, images: Vec<String>) -> Self {
        SimulatedConnector {
            latencies,
            machine: Machine {
                cpu_cores: Some(cpu_cores),
                memory_mb: Some(memory_mb),
            },
            images,
            engines: Mutex::new(HashMap::new()),
            down: Mutex::new(Default::default()),
        }
    }

    /// The engine of `node_id`, once it was connected.
    pub fn engine(&self, node_id: &str) -> Option<Arc<SimulatedEngine>> {
        lock(&self.engines).get(node_id).cloned()
    }

    /// Makes `node_id`'s engine stop (or start again) answering: every request to it fails
    /// as a daemon that is down does.
    pub fn set_down(&self, node_id: &str, down: bool) {
        if down {
            lock(&self.down).insert(node_id.to_string());
        } else {
            lock(&self.down).remove(node_id);
        }
        if let Some(e) = self.engine(node_id) {
            e.down.store(down as u64, Ordering::Relaxed);
        }
    }
}

#[async_trait]
impl Connector for SimulatedConnector {
    async fn connect(&self, a: Address<'_>) -> Result<EngineRef> {
        if lock(&self.down).contains(a.node_id) {
            return Err(unreachable(a.node_id, "connecting"));
        }
        let engine = lock(&self.engines)
            .entry(a.node_id.to_string())
            .or_insert_with(|| {
                Arc::new(SimulatedEngine {
                    node_id: a.node_id.to_string(),
                    latencies: self.latencies,
                    machine: self.machine.clone(),
                    images: Mutex::new(self.images.clone()),
                    containers: Mutex::new(HashMap::new()),
                    networks: Mutex::new(HashMap::new()),
                    network_labels: Mutex::new(HashMap::new()),
                    execs: Mutex::new(HashMap::new()),
                    next: AtomicU64::new(1),
                    down: AtomicU64::new(0),
                    pings: AtomicU64::new(0),
                })
            })
            .clone();
        Ok(engine)
    }
}

/// One simulated node.
#[derive(Debug)]
pub struct SimulatedEngine {
    node_id: String,
    latencies: Latencies,
    machine: Machine,
    images: Mutex<Vec<String>>,
    containers: Mutex<HashMap<String, Container>>,
    networks: Mutex<HashMap<String, NetworkInfo>>,
    /// The labels each network was made with.
    network_labels: Mutex<HashMap<String, HashMap<String, String>>>,
    execs: Mutex<HashMap<String, i64>>,
    next: AtomicU64,
    down: AtomicU64,
    pings: AtomicU64,
}

#[derive(Debug, Clone)]
struct Container {
    name: String,
    labels: HashMap<String, String>,
    state: RunState,
}

impl SimulatedEngine {
    /// Containers on this node, in every state.
    pub fn containers(&self) -> usize {
        lock(&self.containers).len()
    }

    /// The names of the networks on this node.
    pub fn networks(&self) -> Vec<String> {
        let mut names: Vec<String> = lock(&self.networks).keys().cloned().collect();
        names.sort();
        names
    }

    /// Pings received (health rounds that reached this node).
    pub fn pings(&self) -> u64 {
        self.pings.load(Ordering::Relaxed)
    }

    async fn wait(&self, d: Duration, doing: &str) -> Result<()> {
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        if self.down.load(Ordering::Relaxed) != 0 {
            return Err(unreachable(&self.node_id, doing));
        }
        Ok(())
    }

    fn id(&self, prefix: &str) -> String {
        format!("{prefix}{:016x}", self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// The key of a container given by id or name.
    fn find(&self, containers: &HashMap<String, Container>, c: &str) -> Option<String> {
        if containers.contains_key(c) {
            return Some(c.to_string());
        }
        containers
            .iter()
            .find(|(_, v)| v.name == c)
            .map(|(k, _)| k.clone())
    }

    fn missing(&self, container: &str, doing: &str) -> Error {
        Error::Remote {
            kind: crate::error::ErrorKind::NotFound,
            message: format!(
                "simulated node {} refused {doing}: no such container: {container}",
                self.node_id
            ),
        }
    }

    /// A conflict unless `container` is running, as Docker refuses an exec in a paused one.
    fn refuse_unless_running(&self, container: &str, doing: &str) -> Result<()> {
        let all = lock(&self.containers);
        let key = self
            .find(&all, container)
            .ok_or_else(|| self.missing(container, doing))?;
        if all.get(&key).map(|c| c.state) != Some(RunState::Running) {
            return Err(Error::Remote {
                kind: crate::error::ErrorKind::Conflict,
                message: format!(
                    "simulated node {} refused {doing}: container {container} is not running",
                    self.node_id
                ),
            });
        }
        Ok(())
    }

    fn set_state(&self, container: &str, from: RunState, to: RunState, doing: &str) -> Result<()> {
        let mut all = lock(&self.containers);
        let key = self
            .find(&all, container)
            .ok_or_else(|| self.missing(container, doing))?;
        let c = all
            .get_mut(&key)
            .ok_or_else(|| self.missing(container, doing))?;
        if c.state != from {
            return Err(Error::Remote {
                kind: crate::error::ErrorKind::Conflict,
                message: format!(
                    "simulated node {} refused {doing}: container {container} is {:?}",
                    self.node_id, c.state
                ),
            });
        }
        c.state = to;
        Ok(())
    }
}

#[async_trait]
impl Engine for SimulatedEngine {
    async fn machine(&self) -> Result<Machine> {
        self.wait(self.latencies.request, "reading the machine's info")
            .await?;
        Ok(self.machine.clone())
    }

    async fn ping(&self) -> Result<()> {
        self.pings.fetch_add(1, Ordering::Relaxed);
        self.wait(self.latencies.request, "pinging").await
    }

    async fn images(&self) -> Result<Vec<String>> {
        self.wait(self.latencies.request, "listing images").await?;
        Ok(lock(&self.images).clone())
    }

    async fn image(&self, reference: &str) -> Result<Option<ImageConfig>> {
        self.wait(self.latencies.request, "inspecting the image")
            .await?;
        Ok(lock(&self.images)
            .iter()
            .any(|i| i == reference)
            .then(ImageConfig::default))
    }

    async fn network(&self, name: &str) -> Result<Option<NetworkInfo>> {
        self.wait(self.latencies.request, "inspecting the network")
            .await?;
        Ok(lock(&self.networks).get(name).cloned())
    }

    async fn create_network(&self, spec: &NetworkSpec<'_>) -> Result<()> {
        self.wait(self.latencies.request, "creating the network")
            .await?;
        let mut networks = lock(&self.networks);
        let n = networks.len() as u8;
        // On the loopback range, so an egress proxy can listen on the gateway here.
        networks
            .entry(spec.name.to_string())
            .or_insert_with(|| NetworkInfo {
                internal: spec.internal,
                gateway: Some(IpAddr::V4(Ipv4Addr::new(127, 200, n, 1))),
            });
        lock(&self.network_labels)
            .entry(spec.name.to_string())
            .or_insert_with(|| spec.labels.clone());
        Ok(())
    }

    async fn list_networks(&self, labels: &[(&str, &str)]) -> Result<Vec<String>> {
        self.wait(self.latencies.request, "listing networks")
            .await?;
        let mut names: Vec<String> = lock(&self.network_labels)
            .iter()
            .filter(|(_, l)| {
                labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(name, _)| name.clone())
            .collect();
        names.sort();
        Ok(names)
    }

    async fn remove_network(&self, name: &str) -> Result<()> {
        self.wait(self.latencies.request, "removing the network")
            .await?;
        lock(&self.networks).remove(name);
        lock(&self.network_labels).remove(name);
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec<'_>) -> Result<Created> {
        self.wait(self.latencies.create, "creating the container")
            .await?;
        let name = spec.sandbox.docker_container_name.clone();
        let mut all = lock(&self.containers);
        if all.values().any(|c| c.name == name) {
            return Err(Error::Remote {
                kind: crate::error::ErrorKind::Conflict,
                message: format!(
                    "simulated node {} refused creating the container: the name {name} is in use",
                    self.node_id
                ),
            });
        }
        let id = self.id("");
        let mut l = HashMap::new();
        l.insert(labels::INSTANCE.to_string(), spec.instance.to_string());
        l.insert(labels::SANDBOX.to_string(), spec.sandbox.id.clone());
        l.insert(
            labels::TEMPLATE.to_string(),
            spec.sandbox.template_id.clone(),
        );
        all.insert(
            id.clone(),
            Container {
                name,
                labels: l,
                state: RunState::Stopped,
            },
        );
        Ok(Created {
            id,
            warnings: Vec::new(),
        })
    }

    async fn start(&self, container: &str) -> Result<()> {
        self.wait(self.latencies.start, "starting the container")
            .await?;
        self.set_state(
            container,
            RunState::Stopped,
            RunState::Running,
            "starting the container",
        )
    }

    async fn remove(&self, container: &str) -> Result<bool> {
        self.wait(self.latencies.remove, "removing the container")
            .await?;
        let mut all = lock(&self.containers);
        Ok(match self.find(&all, container) {
            Some(k) => all.remove(&k).is_some(),
            None => false,
        })
    }

    async fn list(&self, instance: &str) -> Result<Vec<Listed>> {
        self.wait(self.latencies.request, "listing containers")
            .await?;
        Ok(lock(&self.containers)
            .iter()
            .filter(|(_, c)| c.labels.get(labels::INSTANCE).map(String::as_str) == Some(instance))
            .map(|(id, c)| Listed {
                id: id.clone(),
                labels: c.labels.clone(),
                state: c.state,
                status: format!("{:?}", c.state),
            })
            .collect())
    }

    async fn inspect(&self, container: &str) -> Result<Option<Inspected>> {
        self.wait(self.latencies.request, "inspecting the container")
            .await?;
        let all = lock(&self.containers);
        Ok(self.find(&all, container).and_then(|k| {
            all.get(&k).map(|c| Inspected {
                running: c.state != RunState::Stopped,
                paused: c.state == RunState::Paused,
                addresses: Vec::new(),
            })
        }))
    }

    async fn pause(&self, container: &str) -> Result<()> {
        self.wait(self.latencies.request, "pausing the container")
            .await?;
        self.set_state(
            container,
            RunState::Running,
            RunState::Paused,
            "pausing the container",
        )
    }

    async fn unpause(&self, container: &str) -> Result<()> {
        self.wait(self.latencies.request, "resuming the container")
            .await?;
        self.set_state(
            container,
            RunState::Paused,
            RunState::Running,
            "resuming the container",
        )
    }

    async fn commit(&self, commit: &Commit<'_>) -> Result<()> {
        self.wait(self.latencies.create, "committing the snapshot")
            .await?;
        {
            let all = lock(&self.containers);
            if self.find(&all, commit.container).is_none() {
                return Err(self.missing(commit.container, "committing the snapshot"));
            }
        }
        lock(&self.images).push(format!("{}:{}", commit.repo, commit.tag));
        Ok(())
    }

    async fn stats(&self, container: &str) -> Result<Stats> {
        self.wait(self.latencies.request, "reading the container's stats")
            .await?;
        let all = lock(&self.containers);
        self.find(&all, container)
            .map(|_| Stats::default())
            .ok_or_else(|| self.missing(container, "reading the container's stats"))
    }

    async fn upload(&self, container: &str, _dir: &str, _tar: Vec<u8>) -> Result<()> {
        self.wait(self.latencies.request, "uploading").await?;
        let all = lock(&self.containers);
        self.find(&all, container)
            .map(|_| ())
            .ok_or_else(|| self.missing(container, "uploading"))
    }

    fn download(&self, container: &str, path: &str) -> ByteStream {
        let e = Error::Remote {
            kind: crate::error::ErrorKind::NotFound,
            message: format!(
                "simulated node {} refused downloading: {path} in {container}: a simulated container has no files",
                self.node_id
            ),
        };
        Box::pin(futures::stream::iter([Err(e)]))
    }

    async fn exec(&self, container: &str, spec: ExecSpec) -> Result<ExecIo> {
        let doing = format!("creating {}", spec.what);
        self.refuse_unless_running(container, &doing)?;
        // Docker creates an exec, then starts it in a second request, and refuses to start
        // one in a container paused in between.
        self.wait(self.latencies.request, &doing).await?;
        self.refuse_unless_running(container, &format!("starting {}", spec.what))?;
        self.wait(self.latencies.exec, &doing).await?;
        let script = spec.argv.last().map(String::as_str).unwrap_or("");
        let out = if script.trim() == "id -u; id -g" {
            let mut ids = spec.user.split(':');
            let uid = ids
                .next()
                .and_then(|u| u.parse::<u32>().ok())
                .unwrap_or(1000);
            let gid = ids
                .next()
                .and_then(|g| g.parse::<u32>().ok())
                .unwrap_or(uid);
            format!("{uid}\n{gid}\n")
        } else if let Some(words) = script.strip_prefix("echo ") {
            format!("{words}\n")
        } else {
            String::new()
        };
        let id = self.id("exec-");
        lock(&self.execs).insert(id.clone(), 0);
        let chunks: Vec<Result<Chunk>> = if out.is_empty() {
            Vec::new()
        } else {
            vec![Ok(Chunk::Stdout(Bytes::from(out)))]
        };
        Ok(ExecIo {
            id,
            output: Box::pin(futures::stream::iter(chunks)),
            input: Box::pin(tokio::io::sink()),
        })
    }

    async fn exec_state(&self, exec_id: &str) -> Result<ExecState> {
        self.wait(self.latencies.request, "inspecting an exec")
            .await?;
        // Each exec is asked about once, at its end: forget it then, so execs do not pile up.
        match lock(&self.execs).remove(exec_id) {
            Some(code) => Ok(ExecState {
                running: false,
                exit_code: Some(code),
            }),
            None => Err(Error::Remote {
                kind: crate::error::ErrorKind::NotFound,
                message: format!(
                    "simulated node {} refused inspecting an exec: no such exec: {exec_id}",
                    self.node_id
                ),
            }),
        }
    }

    async fn resize(&self, _exec_id: &str, _cols: u16, _rows: u16) -> Result<()> {
        self.wait(self.latencies.request, "resizing a terminal")
            .await
    }
}

fn unreachable(node_id: &str, doing: &str) -> Error {
    Error::unavailable(format!(
        "simulated node {node_id} does not answer while {doing}"
    ))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
