//! The Docker sandbox scheduler: runtime nodes, templates, placement, sandboxes, exec, files,
//! a warm pool per template, admission control and reconciliation (SCHEDULER.md).
//!
//! A [`Scheduler`] is a cheap-to-clone handle. Nodes are Docker engines, each driven through
//! its own `api_endpoint`; templates name an image and default limits; creating a sandbox
//! places it on a healthy node with room, creates a hardened, labelled container there and
//! returns once an exec works. Every state change is an [`Event`] on the bus
//! (source `sandbox`, `context.containerId` = the sandbox's owner).
//!
//! ```no_run
//! use agentvm_scheduler::{ExecRequest, NodeRegistration, SandboxRequest, Scheduler, TemplateSpec};
//! # async fn demo() -> agentvm_model::Result<()> {
//! let scheduler = Scheduler::builder().open().await?;
//! scheduler.register_node(NodeRegistration::new("local", "unix:///var/run/docker.sock")).await?;
//! scheduler.create_template("busybox", TemplateSpec::new("busybox", "busybox:latest")).await?;
//! let sandbox = scheduler.create_sandbox(SandboxRequest::new("busybox")).await?;
//! let run = scheduler.exec_collect(&sandbox.id, ExecRequest::shell("echo hi")).await?;
//! assert_eq!(run.stdout, "hi\n");
//! scheduler.terminate_sandbox(&sandbox.id).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod admission;
pub mod confined;
pub mod egress;
pub mod engine;
pub mod exec;
pub mod files;
mod hardening;
mod lifecycle;
pub mod node;
mod owner;
pub mod placement;
pub mod placement_index;
mod pool;
pub mod ports;
mod provision;
pub mod reconcile;
mod registry;
mod shared;
mod sink;
pub mod stdio;
pub mod stewardship;
mod store;
pub mod terminal;

pub use agentvm_model::latency::{self, HistogramSnapshot, LatencyHistogram};
pub use agentvm_model::scheduler::{
    exec::OutputStream, sandbox, template, ContainerExited, ContainerReady, Credential, ExecEvent,
    ExecRequest, ExecStatus, Execution, FileEntry, FileKind, Heartbeat, Liveness, NetworkPolicy,
    NodeRegistration, NodeStatus, NodeUsage, Resources, RuntimeNode, Sandbox, SandboxRequest,
    SandboxStatus, SandboxUsage, SchedulerMetrics, SchedulerOptions, SecurityPolicy, Template,
    TemplateSpec, Terminal, TerminalEvent, TerminalRequest, Termination, TerminationReason,
    TlsFiles,
};
pub use exec::ExecStream;
pub use owner::SandboxRef;
pub use reconcile::{ReconcileReport, SweepReport};
pub use sink::EventSink;
pub use stdio::StdioExec;
pub use stewardship::Stewardship;
pub use store::{
    CommitQueue, CommitStats, MemorySchedulerStore, RedbSchedulerStore, SchedulerStore,
};
pub use terminal::TerminalSession;

// The model's modules under the names the scheduler's files use.
use agentvm_model as model;
use agentvm_model::error;

use crate::error::{Error, Result};
use crate::model::{Event, EventContext, EventPayload};
use node::Registry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;

/// What reconciliation does with a sandbox whose container survived an agentvm restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OrphanPolicy {
    /// Keep it: running containers become running sandboxes again (after an exec works).
    #[default]
    Adopt,
    /// Remove it, recording `reconciled` as the reason.
    Remove,
}

/// Tuning of the scheduler. The defaults are the production values of SCHEDULER.md.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How often node agents heartbeat and static nodes are probed.
    pub heartbeat_interval: Duration,
    /// Silence after which a node turns offline.
    pub offline_after: Duration,
    /// How often expired, idle and stuck sandboxes are swept and Docker is compared.
    pub sweep_interval: Duration,
    /// A sandbox `creating` for longer is failed by the sweep.
    pub stuck_creating_after: Duration,
    /// An ended sandbox's record and executions are deleted by the sweep this long after it
    /// ended, so the store holds the live sandboxes and a bounded history, not every sandbox
    /// ever made.
    pub ended_retention: Duration,
    /// Bound on one Docker request.
    pub docker_timeout: Duration,
    /// Docker starts in flight per node.
    pub max_starts_in_flight: usize,
    /// Starts that may wait per node; beyond, `Busy`.
    pub max_start_queue: usize,
    /// What start-up reconciliation does with surviving containers.
    pub orphans: OrphanPolicy,
    /// Exec timeout when a request gives none.
    pub default_exec_timeout: Duration,
    /// Bytes of stdout (and of stderr) kept and streamed per exec; the rest is dropped and
    /// the execution marked truncated.
    pub max_output_bytes: usize,
    /// Largest file uploaded or downloaded.
    pub max_file_bytes: usize,
    /// Idle timeout of sandboxes made by [`Scheduler::sandbox_for_owner`].
    pub owner_idle_timeout: Duration,
    /// Bearer token required on `/internal/runtime/*`; `None` leaves them open (loopback).
    pub internal_token: Option<String>,
    /// Run the background loop (health, sweep, pool refill). Tests may drive it by hand.
    pub background: bool,
    /// The egress proxies of allowlist templates.
    pub egress: egress::EgressConfig,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            heartbeat_interval: Duration::from_secs(5),
            offline_after: Duration::from_secs(15),
            sweep_interval: Duration::from_secs(10),
            stuck_creating_after: Duration::from_secs(120),
            ended_retention: Duration::from_secs(7 * 24 * 3600),
            docker_timeout: Duration::from_secs(120),
            max_starts_in_flight: 4,
            max_start_queue: 32,
            orphans: OrphanPolicy::Adopt,
            default_exec_timeout: Duration::from_secs(60),
            max_output_bytes: 1024 * 1024,
            max_file_bytes: 64 * 1024 * 1024,
            owner_idle_timeout: Duration::from_secs(600),
            internal_token: None,
            background: true,
            egress: egress::EgressConfig::default(),
        }
    }
}

/// Counters, as [`Scheduler::metrics`] reports them. Each field backs the [`SchedulerMetrics`]
/// field of the same name; atomics so the hot paths count without a lock.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Claims served by a warm pool.
    pub pool_hits: AtomicU64,
    /// Claims on a pooled template that found the pool empty.
    pub pool_misses: AtomicU64,
    /// On-demand container starts.
    pub cold_starts: AtomicU64,
    /// Failed creates.
    pub create_failures: AtomicU64,
    /// Creates refused as busy.
    pub busy_refusals: AtomicU64,
    /// Executions finished.
    pub executions: AtomicU64,
    /// Executions killed by their timeout.
    pub exec_timeouts: AtomicU64,
    /// Sandboxes ended.
    pub terminated: AtomicU64,
    /// Sandboxes adopted by reconciliation.
    pub adopted: AtomicU64,
    /// Unowned containers removed.
    pub orphans_removed: AtomicU64,
    /// Pauses, requested or idle.
    pub pauses: AtomicU64,
    /// Resumes, requested or by activity.
    pub resumes: AtomicU64,
    /// Snapshots committed.
    pub snapshots: AtomicU64,
    /// How long executions and pool claims take.
    pub latency: Latencies,
    /// Requests the egress proxies refused, by reason (shared with every proxy).
    pub egress: Arc<egress::EgressCounters>,
}

/// The scheduler's latency histograms (see [`Scheduler::latency`]).
#[derive(Debug)]
pub(crate) struct Latencies {
    /// Finished executions, start to end (timeouts and cancels included).
    pub exec: LatencyHistogram,
    /// Claims served by a warm pool, until the claimed sandbox is recorded.
    pub pool_claim: LatencyHistogram,
    /// Placements, decision and reservation (the registry's lock included).
    pub placement: LatencyHistogram,
}

impl Default for Latencies {
    fn default() -> Self {
        Latencies {
            exec: LatencyHistogram::new(latency::EXEC_BUCKETS),
            pool_claim: LatencyHistogram::new(latency::CLAIM_BUCKETS),
            placement: LatencyHistogram::new(latency::PLACEMENT_BUCKETS),
        }
    }
}

/// How long sandbox work takes, as [`Scheduler::latency`] reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerLatency {
    /// Executions in sandboxes, from start to end (timeouts and cancels included).
    pub exec: HistogramSnapshot,
    /// Claims of a warm sandbox from a pool, until the claim is recorded.
    pub pool_claim: HistogramSnapshot,
    /// Placements: the choice of a node and the reservation on it.
    pub placement: HistogramSnapshot,
}

/// A live (creating or running) sandbox in memory.
pub(crate) struct Live {
    /// The record, as last persisted.
    pub record: Sandbox,
    /// Its status, for requests that wait for a creating sandbox to become ready.
    pub status: watch::Sender<SandboxStatus>,
    /// Held by whoever creates or ends it, so a terminate waits for a create in progress.
    pub lifecycle: Arc<tokio::sync::Mutex<()>>,
}

/// The sandbox an owner's agents share for one template, once created; the async lock makes
/// concurrent first uses create one sandbox.
pub(crate) type OwnerSlot = Arc<tokio::sync::Mutex<Option<String>>>;

pub(crate) struct Inner {
    /// Where nodes, templates, sandboxes and executions are kept.
    pub store: Arc<dyn SchedulerStore>,
    /// Where sandbox and node events go; `None` publishes nothing.
    pub events: Option<Arc<dyn EventSink>>,
    /// Tuning.
    pub config: SchedulerConfig,
    /// This store's scheduler id: the `agentvm.instance` label of its containers.
    pub instance: String,
    /// Runtime nodes with their load, Docker clients and admission gates.
    pub nodes: Mutex<Registry>,
    /// Creating and running sandboxes.
    pub live: Mutex<HashMap<String, Live>>,
    /// Warm pools by template id.
    pub pools: Mutex<HashMap<String, pool::PoolState>>,
    /// `(owner, template)` -> the sandbox its agents share.
    pub owners: Mutex<HashMap<(String, String), OwnerSlot>>,
    /// Executions running now, by id: to cancel them and to answer for them before they end.
    pub running: Mutex<HashMap<String, Arc<exec::ExecControl>>>,
    /// Open terminals (and ones being opened), by id: for input, resize, close and the
    /// per-sandbox limit.
    pub terminals: Mutex<HashMap<String, terminal::TerminalEntry>>,
    /// The last usage sample of each live sandbox, `(cpu ns, at ms)`: the next sample's cpu
    /// percent is measured against it. Dropped when the sandbox ends.
    pub samples: Mutex<HashMap<String, (u64, i64)>>,
    /// The address of each live sandbox on its Docker network, once a port of it was asked
    /// for (`ports`): later lookups need no Docker request. Dropped when the sandbox ends.
    pub addresses: Mutex<HashMap<String, std::net::IpAddr>>,
    /// Seals and opens template credentials (the node's secrets key).
    pub sealer: egress::secrets::Sealer,
    /// The node's egress CA: signs the leaves of intercepted tunnels.
    pub ca: Arc<egress::tls::NodeCa>,
    /// The TLS client configuration of intercepted tunnels' upstream side.
    pub upstream_tls: Arc<rustls::ClientConfig>,
    /// The egress proxies running, by (node, network).
    pub egress: Mutex<HashMap<(String, String), Arc<egress::EgressProxy>>>,
    /// Counters.
    pub counters: Counters,
    /// Connects nodes to their engines.
    pub connector: Arc<dyn engine::Connector>,
    /// In a cluster, the sandboxes this process tends; `None`: all of them (one server).
    pub stewardship: Option<Arc<Stewardship>>,
    /// In a cluster, heartbeats received since they were last written to the shared store:
    /// node id -> when (ms). Written in one batch per tick (`share_heartbeats`).
    pub heartbeats: Mutex<HashMap<String, i64>>,
    /// When a request last made this scheduler follow the store at once (a placement that
    /// found no room): such syncs are coalesced, one per `shared::FORCED_SYNC_EVERY`.
    pub forced_sync: tokio::sync::Mutex<Option<std::time::Instant>>,
}

/// The scheduler handle. Cheap to clone; the background loop stops when the last clone drops.
#[derive(Clone)]
pub struct Scheduler {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("instance", &self.inner.instance)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Scheduler`].
#[must_use]
#[derive(Default)]
pub struct SchedulerBuilder {
    /// Where records are kept; in memory when unset.
    store: Option<Arc<dyn SchedulerStore>>,
    /// Where events go; dropped when unset.
    events: Option<Arc<dyn EventSink>>,
    /// Tuning.
    config: SchedulerConfig,
    /// Nodes registered statically at open.
    nodes: Vec<NodeRegistration>,
    /// Set in a cluster: see [`Stewardship`].
    stewardship: Option<Arc<Stewardship>>,
    /// How nodes' engines are reached; Docker when unset.
    connector: Option<Arc<dyn engine::Connector>>,
}

impl std::fmt::Debug for SchedulerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerBuilder")
            .field("config", &self.config)
            .field("nodes", &self.nodes)
            .finish_non_exhaustive()
    }
}

impl SchedulerBuilder {
    /// Keeps records in `store` (the runtime hands over its own database's).
    pub fn store(mut self, store: Arc<dyn SchedulerStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// Publishes events through `sink` (the runtime hands over its bus).
    pub fn events(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.events = Some(sink);
        self
    }

    /// Tuning.
    pub fn config(mut self, config: SchedulerConfig) -> Self {
        self.config = config;
        self
    }

    /// Applies options given as data (a config file, a binding's `open()` options): tuning
    /// and static nodes. Refuses values it cannot use, naming them.
    pub fn options(mut self, options: &SchedulerOptions) -> Result<Self> {
        let ms = |v: Option<u64>, d: Duration| v.map(Duration::from_millis).unwrap_or(d);
        let c = &mut self.config;
        c.heartbeat_interval = ms(options.heartbeat_interval_ms, c.heartbeat_interval);
        c.offline_after = ms(options.offline_after_ms, c.offline_after);
        c.sweep_interval = ms(options.sweep_interval_ms, c.sweep_interval);
        c.stuck_creating_after = ms(options.stuck_creating_after_ms, c.stuck_creating_after);
        c.ended_retention = ms(options.ended_retention_ms, c.ended_retention);
        c.docker_timeout = ms(options.docker_timeout_ms, c.docker_timeout);
        c.default_exec_timeout = ms(options.default_exec_timeout_ms, c.default_exec_timeout);
        c.owner_idle_timeout = ms(options.owner_idle_timeout_ms, c.owner_idle_timeout);
        c.max_starts_in_flight = options
            .max_starts_in_flight
            .unwrap_or(c.max_starts_in_flight);
        c.max_start_queue = options.max_start_queue.unwrap_or(c.max_start_queue);
        c.max_output_bytes = options.max_output_bytes.unwrap_or(c.max_output_bytes);
        c.max_file_bytes = options.max_file_bytes.unwrap_or(c.max_file_bytes);
        if options.internal_token.is_some() {
            c.internal_token = options.internal_token.clone();
        }
        c.background = options.background.unwrap_or(c.background);
        c.egress.port = options.egress_port.unwrap_or(c.egress.port);
        if options.secrets_key.is_some() {
            c.egress.secrets_key = options.secrets_key.clone();
        }
        if options.egress_upstream_ca.is_some() {
            c.egress.upstream_ca_pem = options.egress_upstream_ca.clone();
        }
        if !options.egress_resolve.is_empty() {
            c.egress.resolve = egress::EgressConfig::parse_resolve(&options.egress_resolve)?;
        }
        c.orphans = match options.orphans.as_deref() {
            None => c.orphans,
            Some("adopt") => OrphanPolicy::Adopt,
            Some("remove") => OrphanPolicy::Remove,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "orphans must be \"adopt\" or \"remove\", not {other:?}"
                )))
            }
        };
        if c.max_starts_in_flight == 0 {
            return Err(Error::invalid("maxStartsInFlight must be at least 1"));
        }
        for node in &options.nodes {
            node.validate()?;
        }
        self.nodes.extend(options.nodes.iter().cloned());
        Ok(self)
    }

    /// Shares the store with other servers: the scheduler tends only the sandboxes
    /// `stewardship` says are this process's, and follows nodes and their load through the
    /// store (see [`Stewardship`]). Unset, it tends everything in its store.
    pub fn stewardship(mut self, stewardship: Arc<Stewardship>) -> Self {
        self.stewardship = Some(stewardship);
        self
    }

    /// Reaches every node's engine through `connector` instead of Docker: another container
    /// runtime, or a [`engine::simulated::SimulatedConnector`] for simulations and tests.
    pub fn engine(mut self, connector: Arc<dyn engine::Connector>) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Keeps the key sealing template credentials in `<dir>/secrets.key` and the egress CA
    /// in `<dir>/egress-ca.*` (made on first use), unless the configuration names others.
    pub fn data_dir(mut self, dir: &std::path::Path) -> Self {
        let e = &mut self.config.egress;
        if e.secrets_key.is_none() && e.secrets_key_file.is_none() {
            e.secrets_key_file = Some(dir.join("secrets.key"));
        }
        if e.ca_dir.is_none() {
            e.ca_dir = Some(dir.to_path_buf());
        }
        self
    }

    /// Registers a node at open (static registration, from a config file or the CLI).
    pub fn node(mut self, registration: NodeRegistration) -> Self {
        self.nodes.push(registration);
        self
    }

    /// Loads nodes, registers the static ones, reconciles with Docker and starts the background
    /// loop. Must run inside a tokio runtime.
    pub async fn open(self) -> Result<Scheduler> {
        let store = match self.store {
            Some(s) => s,
            None => Arc::new(MemorySchedulerStore::new()),
        };
        let instance = store.scheduler_instance()?;
        let egress_config = &self.config.egress;
        let sealer = egress::secrets::Sealer::load(
            egress_config.secrets_key.as_deref(),
            egress_config.secrets_key_file.as_deref(),
        )?;
        let ca = Arc::new(egress::tls::NodeCa::load(egress_config.ca_dir.as_deref())?);
        let upstream_tls = egress::tls::client_config(egress_config.upstream_ca_pem.as_deref())?;
        let scheduler = Scheduler {
            inner: Arc::new(Inner {
                store,
                events: self.events,
                config: self.config,
                instance,
                nodes: Mutex::new(Registry::default()),
                live: Mutex::new(HashMap::new()),
                pools: Mutex::new(HashMap::new()),
                owners: Mutex::new(HashMap::new()),
                running: Mutex::new(HashMap::new()),
                terminals: Mutex::new(HashMap::new()),
                samples: Mutex::new(HashMap::new()),
                addresses: Mutex::new(HashMap::new()),
                sealer,
                ca,
                upstream_tls,
                egress: Mutex::new(HashMap::new()),
                counters: Counters::default(),
                connector: self
                    .connector
                    .unwrap_or_else(|| Arc::new(engine::docker::DockerConnector)),
                stewardship: self.stewardship,
                heartbeats: Mutex::new(HashMap::new()),
                forced_sync: tokio::sync::Mutex::new(None),
            }),
        };
        scheduler.load_nodes()?;
        // A static node whose daemon is down must not keep the runtime from starting (chats
        // keep working), nor vanish: it is listed `offline` with the reason, and comes online
        // when a probe reaches its Docker.
        for r in self.nodes {
            let node_id = r.node_id.clone();
            match scheduler.register_static_node(r).await {
                Ok(n) if n.status == NodeStatus::Offline => tracing::warn!(
                    node = %node_id,
                    endpoint = %n.api_endpoint,
                    reason = n.status_message.as_deref().unwrap_or("unknown"),
                    "a node given at start is offline: no sandboxes are placed on it until its Docker answers"
                ),
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(node = %node_id, error = %e.chain(), "a node given at start could not be registered")
                }
            }
        }
        scheduler.check_nodes().await;
        scheduler.reconcile().await?;
        if scheduler.inner.config.background {
            tokio::spawn(reconcile::background(Arc::downgrade(&scheduler.inner)));
        }
        Ok(scheduler)
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs a store call on the blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T>
where
    F: FnOnce() -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a store task failed: {e}")))?
}

impl Scheduler {
    /// A builder.
    pub fn builder() -> SchedulerBuilder {
        SchedulerBuilder::default()
    }

    /// The `agentvm.instance` label of this scheduler's containers.
    pub fn instance(&self) -> &str {
        &self.inner.instance
    }

    /// The tuning in force.
    pub fn config(&self) -> &SchedulerConfig {
        &self.inner.config
    }

    /// Execution, pool-claim and placement latency histograms now.
    pub fn latency(&self) -> SchedulerLatency {
        let l = &self.inner.counters.latency;
        SchedulerLatency {
            exec: l.exec.snapshot(),
            pool_claim: l.pool_claim.snapshot(),
            placement: l.placement.snapshot(),
        }
    }

    /// The counters and gauges now.
    pub fn metrics(&self) -> SchedulerMetrics {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let pool_ready = lock(&self.inner.pools)
            .values()
            .map(|p| p.ready.len() as u64)
            .sum();
        let (live_sandboxes, paused_sandboxes) = {
            let live = lock(&self.inner.live);
            let paused = live
                .values()
                .filter(|l| l.record.status == SandboxStatus::Paused)
                .count();
            (live.len() as u64, paused as u64)
        };
        let nodes_online = lock(&self.inner.nodes)
            .values()
            .filter(|n| n.node.status == NodeStatus::Online)
            .count() as u64;
        SchedulerMetrics {
            pool_hits: get(&c.pool_hits),
            pool_misses: get(&c.pool_misses),
            cold_starts: get(&c.cold_starts),
            create_failures: get(&c.create_failures),
            busy_refusals: get(&c.busy_refusals),
            executions: get(&c.executions),
            exec_timeouts: get(&c.exec_timeouts),
            terminated: get(&c.terminated),
            adopted: get(&c.adopted),
            orphans_removed: get(&c.orphans_removed),
            pool_ready,
            live_sandboxes,
            nodes_online,
            paused_sandboxes,
            pauses: get(&c.pauses),
            resumes: get(&c.resumes),
            snapshots: get(&c.snapshots),
            egress_refusals: c.egress.snapshot(),
        }
    }

    /// Publishes `payload` with the sandbox owner as `context.containerId`.
    pub(crate) fn publish(&self, payload: EventPayload, owner: Option<&str>) {
        if let Some(sink) = &self.inner.events {
            let context = owner.map(|o| EventContext {
                container_id: Some(o.to_string()),
                ..Default::default()
            });
            sink.publish(Event::new(payload, context));
        }
    }

    /// Persists a sandbox record durably.
    pub(crate) async fn persist(&self, sandbox: &Sandbox) -> Result<()> {
        let store = self.inner.store.clone();
        let s = sandbox.clone();
        blocking(move || store.put_sandbox(&s)).await
    }

    /// The node's engine, connecting on first use. A node whose engine does not answer turns
    /// offline and the error says so.
    pub(crate) async fn engine(&self, node_id: &str) -> Result<engine::EngineRef> {
        let (endpoint, tls) = {
            let nodes = lock(&self.inner.nodes);
            let entry = nodes
                .get(node_id)
                .ok_or_else(|| Error::not_found("Node", node_id))?;
            if let Some(e) = &entry.engine {
                return Ok(e.clone());
            }
            (entry.node.api_endpoint.clone(), entry.node.tls.clone())
        };
        let connected = self.connect(node_id, &endpoint, tls.as_ref()).await;
        match connected {
            Ok(e) => {
                if let Some(mut entry) = lock(&self.inner.nodes).get_mut(node_id) {
                    entry.engine = Some(e.clone());
                }
                Ok(e)
            }
            Err(e) => {
                self.node_failed(node_id, &e);
                Err(e)
            }
        }
    }

    /// Connects to the engine at a node's address.
    pub(crate) async fn connect(
        &self,
        node_id: &str,
        api_endpoint: &str,
        tls: Option<&TlsFiles>,
    ) -> Result<engine::EngineRef> {
        self.inner
            .connector
            .connect(engine::Address {
                node_id,
                api_endpoint,
                tls,
                timeout: self.inner.config.docker_timeout,
            })
            .await
    }

    /// Turns the node offline when `e` says its engine is gone, and hands `e` back.
    pub(crate) fn engine_error(&self, node_id: &str, e: Error) -> Error {
        self.node_failed(node_id, &e);
        e
    }

    /// The endpoint of a node, for error messages.
    pub(crate) fn endpoint_of(&self, node_id: &str) -> String {
        lock(&self.inner.nodes)
            .get(node_id)
            .map(|e| e.node.api_endpoint.clone())
            .unwrap_or_default()
    }

    /// Turns the node offline when `e` says its daemon is gone.
    pub(crate) fn node_failed(&self, node_id: &str, e: &Error) {
        if engine::node_is_down(e) {
            self.set_health(node_id, false, Some(e.to_string()));
        }
    }

    /// Sets a node's health and publishes the change, if any.
    pub(crate) fn set_health(&self, node_id: &str, healthy: bool, message: Option<String>) {
        let changed = {
            let mut nodes = lock(&self.inner.nodes);
            let changed = match nodes.get_mut(node_id) {
                Some(mut entry) => {
                    if healthy {
                        entry.node.last_heartbeat_at = Some(crate::model::now_ms());
                    }
                    entry.set_healthy(healthy, message.clone())
                }
                None => None,
            };
            changed
        };
        if let Some((before, after)) = changed {
            if after == NodeStatus::Offline {
                tracing::warn!(
                    node_id,
                    message = message.as_deref().unwrap_or(""),
                    "node offline"
                );
            } else {
                tracing::info!(node_id, status = after.as_str(), "node back");
            }
            self.publish(
                EventPayload::NodeStatusChanged {
                    node_id: node_id.to_string(),
                    status: after.as_str().to_string(),
                    previous: before.as_str().to_string(),
                    message,
                },
                None,
            );
        }
    }
}
