//! The engine: what runs sandboxes on a node. The scheduler places, accounts, records and
//! reconciles; everything it asks of a node's container runtime goes through [`Engine`], in
//! the scheduler's own words (a sandbox record to realise, a command to run, a path to read),
//! never in one runtime's API types.
//!
//! Two engines ship:
//! - [`docker::DockerEngine`], the production one: a node's Docker daemon through bollard,
//!   over its own `api_endpoint`, with the hardening of SCHEDULER.md;
//! - [`simulated::SimulatedEngine`]: nothing behind it but timers and a table of containers,
//!   with configurable latencies; the fleet simulator drives the real scheduler with it, and
//!   a control plane can be tested without Docker.
//!
//! Another runtime (Kubernetes pods, a microVM manager) is one more [`Connector`] and
//! [`Engine`]. Errors come back already mapped: [`Error::Unavailable`](crate::Error::Unavailable) when the runtime does
//! not answer (the node turns offline), `NotFound` and `Conflict` when it answers so, each
//! naming the node and what was being done.

pub mod docker;
pub mod simulated;

use crate::error::Result;
use crate::model::scheduler::TlsFiles;
use crate::{Sandbox, Template};
use async_trait::async_trait;
use bytes::Bytes;
use futures::Stream;
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWrite;

/// A connected engine, shared by every task working on its node.
pub type EngineRef = Arc<dyn Engine>;

/// Bytes as the engine sends them (a file archive).
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// A running command's output, chunk by chunk, until it closes its output.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<Chunk>> + Send>>;

/// A running command's stdin.
pub type Input = Pin<Box<dyn AsyncWrite + Send>>;

/// Where a node's engine is reached.
#[derive(Debug, Clone, Copy)]
pub struct Address<'a> {
    /// The node's id, for messages.
    pub node_id: &'a str,
    /// `unix:///var/run/docker.sock`, `tcp://host:2376`, ...
    pub api_endpoint: &'a str,
    /// Client certificates for a TLS endpoint.
    pub tls: Option<&'a TlsFiles>,
    /// Bound on each request to the engine.
    pub timeout: Duration,
}

/// Connects to the engine of a node. The scheduler asks once per node and keeps the engine
/// until the node's address changes or the engine stops answering.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The engine of the node at `address`; `Unavailable` naming the node when it does not
    /// answer.
    async fn connect(&self, address: Address<'_>) -> Result<EngineRef>;
}

/// What the node's machine offers, as its engine reports it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Machine {
    /// Cpu cores, when reported.
    pub cpu_cores: Option<f64>,
    /// Memory in MiB, when reported.
    pub memory_mb: Option<u64>,
}

/// What the scheduler needs of an image: whom it runs as, and its labels.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageConfig {
    /// The image's default user (`USER`), if any.
    pub user: Option<String>,
    /// The image's labels.
    pub labels: HashMap<String, String>,
}

/// A network as the scheduler sees it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkInfo {
    /// Whether it has no route out (an egress network must not).
    pub internal: bool,
    /// The address of its gateway on this node, if any.
    pub gateway: Option<IpAddr>,
}

/// A network to make.
#[derive(Debug, Clone)]
pub struct NetworkSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// No route out.
    pub internal: bool,
    /// Labels to find it by.
    pub labels: HashMap<String, String>,
}

/// A sandbox to realise: its record (name, image, limits, network, env, labels' inputs), its
/// template (security, network policy) and the scheduler instance that labels it. The
/// engine turns them into its runtime's own container (Docker: a hardened container body).
#[derive(Debug, Clone, Copy)]
pub struct ContainerSpec<'a> {
    /// The record, `docker_container_name` included.
    pub sandbox: &'a Sandbox,
    /// Its template.
    pub template: &'a Template,
    /// The scheduler's instance id, labelled on every container it makes.
    pub instance: &'a str,
}

/// A created (not yet started) container.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Created {
    /// The engine's id of it.
    pub id: String,
    /// What the engine could not enforce (a limit it ignores); the scheduler refuses then.
    pub warnings: Vec<String>,
}

/// How a listed container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Running.
    Running,
    /// Frozen.
    Paused,
    /// Anything else: created, exited, dead, restarting.
    Stopped,
}

/// One container of this scheduler instance on a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    /// The engine's id of it.
    pub id: String,
    /// Its labels (the sandbox id among them).
    pub labels: HashMap<String, String>,
    /// How it is.
    pub state: RunState,
    /// The engine's words for it (`Exited (137) 3 seconds ago`).
    pub status: String,
}

/// One container looked at closely.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Inspected {
    /// Its processes run.
    pub running: bool,
    /// Its processes are frozen.
    pub paused: bool,
    /// Its address on each network it is on, by network name.
    pub addresses: Vec<(String, IpAddr)>,
}

/// A snapshot to commit: a container's filesystem into a new image on the same node.
#[derive(Debug, Clone)]
pub struct Commit<'a> {
    /// The container.
    pub container: &'a str,
    /// The new image's repository.
    pub repo: &'a str,
    /// Its tag.
    pub tag: &'a str,
    /// Its comment.
    pub comment: String,
    /// Freeze the container while committing (a paused one is frozen already).
    pub pause: bool,
    /// The new image's labels.
    pub labels: HashMap<String, String>,
}

/// One sample of what a container uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Cpu time used since it started, in ns.
    pub cpu_total_ns: u64,
    /// Memory in use, page cache that can be dropped excluded (what `docker stats` shows).
    pub memory_bytes: u64,
    /// Its memory limit.
    pub memory_limit_bytes: u64,
    /// Processes.
    pub pids: u64,
    /// Bytes received over every network.
    pub net_rx_bytes: u64,
    /// Bytes sent over every network.
    pub net_tx_bytes: u64,
}

/// A command to run in a container.
#[derive(Debug, Clone, Default)]
pub struct ExecSpec {
    /// What to run.
    pub argv: Vec<String>,
    /// `KEY=value` pairs.
    pub env: Vec<String>,
    /// Run as (`uid:gid` or a name).
    pub user: String,
    /// Where; the container's default when `None`.
    pub workdir: Option<String>,
    /// Keep its stdin open for [`ExecIo::input`]; closed otherwise.
    pub stdin: bool,
    /// On a terminal: output comes as one stream (as [`Chunk::Stdout`]) and can be resized.
    pub tty: bool,
    /// What it is, for messages: "the exec", "a terminal", "a file exec".
    pub what: &'static str,
}

/// A piece of a running command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// From its stdout (or its terminal).
    Stdout(Bytes),
    /// From its stderr.
    Stderr(Bytes),
}

/// A started command.
pub struct ExecIo {
    /// The engine's id of it, for [`Engine::exec_state`] and [`Engine::resize`].
    pub id: String,
    /// Its output, until it closes it.
    pub output: ChunkStream,
    /// Its stdin (closed by dropping it; a sink when [`ExecSpec::stdin`] was false).
    pub input: Input,
}

impl std::fmt::Debug for ExecIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecIo").field("id", &self.id).finish()
    }
}

/// Whether a started command still runs, and how it ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExecState {
    /// Still running.
    pub running: bool,
    /// Its exit code once it ended.
    pub exit_code: Option<i64>,
}

/// A node's container runtime, as the scheduler uses it. Every method is one request to the
/// runtime (bounded by the connector's timeout) and names the node in its errors.
#[async_trait]
pub trait Engine: Send + Sync {
    /// Its machine's cpus and memory.
    async fn machine(&self) -> Result<Machine>;
    /// Answers when the runtime does.
    async fn ping(&self) -> Result<()>;
    /// The images on the node, as `repo:tag`.
    async fn images(&self) -> Result<Vec<String>>;
    /// An image's configuration; `None` when the node does not have it (never pulled).
    async fn image(&self, reference: &str) -> Result<Option<ImageConfig>>;
    /// A network; `None` when there is none of that name.
    async fn network(&self, name: &str) -> Result<Option<NetworkInfo>>;
    /// Makes a network; one that exists already (made meanwhile by someone else) is fine.
    async fn create_network(&self, spec: &NetworkSpec<'_>) -> Result<()>;
    /// Removes a network; none of that name is fine. `Conflict` while containers are on it.
    async fn remove_network(&self, name: &str) -> Result<()>;
    /// The names of the networks carrying every one of `labels` (`key`, `value`).
    async fn list_networks(&self, labels: &[(&str, &str)]) -> Result<Vec<String>>;
    /// Creates a sandbox's container, not started.
    async fn create(&self, spec: &ContainerSpec<'_>) -> Result<Created>;
    /// Starts a created container.
    async fn start(&self, container: &str) -> Result<()>;
    /// Removes a container whatever its state, with its volumes; `false` when it was gone.
    async fn remove(&self, container: &str) -> Result<bool>;
    /// The containers labelled with scheduler `instance`, in every state.
    async fn list(&self, instance: &str) -> Result<Vec<Listed>>;
    /// One container; `None` when it is gone.
    async fn inspect(&self, container: &str) -> Result<Option<Inspected>>;
    /// Freezes a container's processes.
    async fn pause(&self, container: &str) -> Result<()>;
    /// Thaws them; `Conflict` when it was not paused.
    async fn unpause(&self, container: &str) -> Result<()>;
    /// Commits a container's filesystem into a new image on the node.
    async fn commit(&self, commit: &Commit<'_>) -> Result<()>;
    /// One sample of what a container uses.
    async fn stats(&self, container: &str) -> Result<Stats>;
    /// Unpacks a tar archive into directory `dir` of a container.
    async fn upload(&self, container: &str, dir: &str, tar: Vec<u8>) -> Result<()>;
    /// A tar archive of `path` in a container; `NotFound` (in the stream) when there is none.
    fn download(&self, container: &str, path: &str) -> ByteStream;
    /// Starts a command in a running container and attaches to it.
    async fn exec(&self, container: &str, spec: ExecSpec) -> Result<ExecIo>;
    /// Whether a started command still runs and its exit code.
    async fn exec_state(&self, exec_id: &str) -> Result<ExecState>;
    /// Resizes a command's terminal.
    async fn resize(&self, exec_id: &str, cols: u16, rows: u16) -> Result<()>;
}

/// Whether an engine's error says the node's runtime is gone (so the node turns offline).
pub fn node_is_down(e: &crate::error::Error) -> bool {
    matches!(e, crate::error::Error::Unavailable { .. })
}
