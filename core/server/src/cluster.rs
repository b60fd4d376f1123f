//! Cluster membership and container leases for servers sharing one PostgreSQL store
//! (`docs/cluster.md`).
//!
//! A [`LeaseManager`] registers this server (id, advertised URL), heartbeats, and owns the
//! leases of the containers it serves. It is the runtime's [`ContainerGate`]: the first command
//! for a container takes the container's lease (or finds this server's own); a container
//! leased by another live server is refused with `Unavailable`, naming the owner's URL (until
//! requests are forwarded there). Every `renew_interval` the held leases are renewed; one that
//! cannot be renewed was lost (this server was paused, partitioned, or too slow), so the server
//! steps down from it: its agents are stopped and it is forgotten, and the store refuses any
//! write still under the old epoch. [`LeaseManager::drain`] (on `SIGTERM`) marks the server
//! draining, stops the agents of its containers and releases their leases, so another server
//! can take each at once instead of after the TTL.

use agentvm::runtime::{Admission, ContainerGate};
use agentvm::scheduler::stewardship::{Stewardship, UNOWNED};
use agentvm::store::{ClusterMember, Lease, LeaseClaim};
use agentvm::{AgentVm, Error, Result, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How a server takes part in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This server's id, unique in the cluster (default: a new `srv_…` at each start).
    pub server_id: String,
    /// Where clients reach this server (`http://host:port`); named in refusals by others.
    pub advertise_url: String,
    /// How long a lease lasts without renewal: how long a dead server's containers wait for a
    /// new owner, at most.
    pub lease_ttl: Duration,
    /// How often leases are renewed and the heartbeat sent (default a third of the TTL, so
    /// two renewals can fail before the lease expires).
    pub renew_interval: Duration,
    /// Send a command for a container another member owns to that member, instead of
    /// refusing it (default on). The caller's scope is checked here first.
    pub forward: bool,
    /// The token presented to the other members when forwarding: a token for all containers
    /// (tokens live in the shared store, so one works everywhere). `None` where the members
    /// require no token. Without one, a member that requires tokens refuses the forwarded
    /// command, and the caller gets that refusal.
    pub forward_token: Option<String>,
}

impl ClusterConfig {
    /// A config with a new server id, the default TTL (10 s) and renewal every TTL / 3.
    pub fn new(advertise_url: impl Into<String>) -> Self {
        ClusterConfig {
            server_id: agentvm::model::new_id("srv"),
            advertise_url: advertise_url.into(),
            lease_ttl: Duration::from_secs(10),
            renew_interval: Duration::from_secs(10) / 3,
            forward: true,
            forward_token: None,
        }
    }

    /// Sets the lease TTL, and the renewal interval to a third of it.
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self.renew_interval = ttl / 3;
        self
    }
}

/// A lease this server holds, and when it was last confirmed.
#[derive(Debug, Clone)]
struct Held {
    lease: Lease,
    /// When the last acquisition or renewal succeeded (this process's monotonic clock; only
    /// used to step down early when the database cannot be reached, never to extend a lease).
    confirmed: Instant,
}

/// Registers this server, heartbeats, and holds the leases of the containers it serves.
pub struct LeaseManager {
    config: ClusterConfig,
    vm: AgentVm,
    store: Arc<dyn Store>,
    /// The containers this server serves, by id.
    held: Mutex<HashMap<String, Held>>,
    /// Stops the renewal task.
    stop: watch::Sender<bool>,
    /// The gate as installed in the runtime (which keeps only a weak reference).
    gate: Mutex<Option<Arc<dyn ContainerGate>>>,
    /// Clients of the other members, by advertised URL, for forwarding (at most
    /// [`MAX_FORWARDERS`]).
    forwarders: Mutex<HashMap<String, Arc<Forwarder>>>,
    /// The scheduler's view of which sandboxes this server tends (a scheduler built with a
    /// stewardship): told of every lease taken and given up.
    stewardship: Option<Arc<Stewardship>>,
    /// Containers another member was found serving: container -> (its URL, until when to
    /// forward there without asking the database again). At most [`MAX_OWNERS_SEEN`].
    owners_seen: Mutex<HashMap<String, (String, Instant)>>,
}

/// Containers whose owner is remembered for forwarding; past it the memory is cleared.
const MAX_OWNERS_SEEN: usize = 10_000;

/// Connections to other members kept for forwarding; past it they are dropped and made
/// again on demand.
const MAX_FORWARDERS: usize = 64;

impl std::fmt::Debug for LeaseManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseManager")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl LeaseManager {
    /// Joins the cluster through `vm`'s store, installs the lease gate in `vm` and starts
    /// renewing. Fails when the store cannot share (it is not PostgreSQL) or is unreachable.
    pub async fn start(vm: &AgentVm, config: ClusterConfig) -> Result<Arc<LeaseManager>> {
        if config.lease_ttl < Duration::from_millis(100)
            || config.renew_interval >= config.lease_ttl
        {
            return Err(Error::invalid(format!(
                "cluster: the lease TTL ({} ms) must be at least 100 ms and longer than the \
                 renewal interval ({} ms)",
                config.lease_ttl.as_millis(),
                config.renew_interval.as_millis()
            )));
        }
        let store = vm.store().clone();
        let member = ClusterMember {
            id: config.server_id.clone(),
            url: config.advertise_url.clone(),
        };
        blocking(&store, move |s| s.join_cluster(&member)).await?;
        if blocking(&store, |s| s.cluster_members()).await?.is_empty() {
            return Err(Error::invalid(
                "cluster mode needs a store that servers can share (--store postgres://...)",
            ));
        }
        let (stop, stopped) = watch::channel(false);
        let manager = Arc::new(LeaseManager {
            config,
            vm: vm.clone(),
            store,
            held: Mutex::new(HashMap::new()),
            stop,
            gate: Mutex::new(None),
            forwarders: Mutex::new(HashMap::new()),
            stewardship: vm.scheduler().and_then(|s| s.stewardship().cloned()),
            owners_seen: Mutex::new(HashMap::new()),
        });
        let gate: Arc<dyn ContainerGate> = Arc::new(Gate(Arc::downgrade(&manager)));
        vm.set_container_gate(&gate)?;
        *manager.gate.lock().unwrap_or_else(|p| p.into_inner()) = Some(gate);
        tokio::spawn(renew_loop(Arc::downgrade(&manager), stopped));
        tracing::info!(
            server = %manager.config.server_id,
            url = %manager.config.advertise_url,
            ttl_ms = manager.config.lease_ttl.as_millis() as u64,
            "joined the cluster"
        );
        Ok(manager)
    }

    /// This server's id.
    pub fn server_id(&self) -> &str {
        &self.config.server_id
    }

    /// The containers whose leases this server holds, by id.
    pub fn held(&self) -> Vec<Lease> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        let mut leases: Vec<Lease> = held.values().map(|h| h.lease.clone()).collect();
        leases.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        leases
    }

    /// Takes (or confirms) the lease of `container_id`, or names the member that holds it:
    /// forwarded there (see [`ClusterConfig::forward`]) or refused, naming it.
    pub async fn admit(&self, container_id: &str) -> Result<Admission> {
        if self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(container_id)
        {
            return Ok(Admission::Serve);
        }
        // Another member served it a moment ago: forward without a database round trip. The
        // memory lasts one renewal interval; a member that died meanwhile fails the forwarded
        // command as `unavailable`, as the database would have for the rest of its lease.
        if self.config.forward {
            let seen = {
                let mut owners = self.owners_seen.lock().unwrap_or_else(|p| p.into_inner());
                match owners.get(container_id) {
                    Some((url, until)) if Instant::now() < *until => Some(url.clone()),
                    Some(_) => {
                        owners.remove(container_id);
                        None
                    }
                    None => None,
                }
            };
            if let Some(url) = seen {
                if let Ok(to) = self.forwarder(&url).await {
                    return Ok(Admission::Forward(to));
                }
            }
        }
        let (id, me, ttl) = (
            container_id.to_string(),
            self.config.server_id.clone(),
            self.config.lease_ttl,
        );
        let asked = Instant::now();
        let claim = blocking(&self.store, move |s| s.acquire_lease(&id, &me, ttl)).await?;
        match claim {
            LeaseClaim::Held(lease) => {
                self.took(container_id, lease, asked).await?;
                Ok(Admission::Serve)
            }
            LeaseClaim::Taken { owner, url, epoch } => {
                let refusal = format!(
                    "container {container_id} is served by server {owner}{} (lease epoch \
                     {epoch}); this server ({}) does not serve it",
                    url.as_deref()
                        .map(|u| format!(" at {u}"))
                        .unwrap_or_default(),
                    self.config.server_id
                );
                match url {
                    Some(url) if self.config.forward => match self.forwarder(&url).await {
                        Ok(to) => {
                            let mut owners =
                                self.owners_seen.lock().unwrap_or_else(|p| p.into_inner());
                            if owners.len() >= MAX_OWNERS_SEEN {
                                owners.clear();
                            }
                            owners.insert(
                                container_id.to_string(),
                                (url, Instant::now() + self.config.renew_interval),
                            );
                            Ok(Admission::Forward(to))
                        }
                        Err(e) => Err(Error::unavailable(format!(
                            "{refusal}, and forwarding there failed: {}",
                            e.chain()
                        ))),
                    },
                    _ => Err(Error::unavailable(format!("{refusal}: connect there"))),
                }
            }
        }
    }

    /// Until when a lease taken or renewed by a request sent at `asked` is surely still ours:
    /// its TTL from then, less a tenth for clock rate differences.
    fn sure_until(&self, asked: Instant) -> Instant {
        asked + self.config.lease_ttl.mul_f64(0.9)
    }

    /// Starts serving `container_id` under `lease`, just acquired.
    async fn took(&self, container_id: &str, lease: Lease, asked: Instant) -> Result<()> {
        // The container's events may have been numbered by another server, whose clock
        // (and counter) may be ahead of ours: continue above every cursor in the log.
        let newest = blocking(&self.store, |s| s.max_replay_cursor()).await?;
        self.vm.bus().advance_past(newest);
        tracing::info!(container = %container_id, epoch = lease.epoch, "lease acquired");
        if let Some(s) = &self.stewardship {
            s.hold(container_id, self.sure_until(asked));
        }
        self.held.lock().unwrap_or_else(|p| p.into_inner()).insert(
            container_id.to_string(),
            Held {
                lease,
                confirmed: Instant::now(),
            },
        );
        Ok(())
    }

    /// A client of the member at `url` (its advertised `http://host:port`), connected once and
    /// kept: it follows no session, so the member pushes it no events (the events of a
    /// forwarded turn reach this server's subscribers through the shared replay log).
    async fn forwarder(&self, url: &str) -> Result<Arc<dyn agentvm::Runtime>> {
        if let Some(rt) = self
            .forwarders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(url)
        {
            return Ok(rt.clone());
        }
        let ws = match url.trim_end_matches('/').strip_prefix("http://") {
            Some(rest) => format!("ws://{rest}/ws"),
            None => {
                return Err(Error::invalid(format!(
                    "the member's advertised URL {url} is not http://host:port"
                )))
            }
        };
        let options = agentvm::ConnectOptions {
            token: self.config.forward_token.clone(),
            follow_sends: false,
            ..Default::default()
        };
        let rt = Arc::new(Forwarder {
            client: agentvm::connect(&ws, options).await?,
            url: url.to_string(),
        });
        let mut forwarders = self.forwarders.lock().unwrap_or_else(|p| p.into_inner());
        if forwarders.len() >= MAX_FORWARDERS {
            forwarders.clear();
        }
        forwarders.insert(url.to_string(), rt.clone());
        Ok(rt)
    }

    /// One round of renewals and the heartbeat; steps down from every lease that was lost.
    /// With a scheduler, also bids for the lease of unowned sandboxes, so some member keeps
    /// warm pools and removes containers nobody records.
    async fn renew_all(&self) {
        if let Err(e) = blocking(&self.store, |s| s.heartbeat(false)).await {
            tracing::warn!(error = %e, "cluster heartbeat failed");
        }
        if self.stewardship.is_some() {
            let held = self
                .held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(UNOWNED);
            if !held {
                let (me, ttl) = (self.config.server_id.clone(), self.config.lease_ttl);
                let asked = Instant::now();
                match blocking(&self.store, move |s| s.acquire_lease(UNOWNED, &me, ttl)).await {
                    Ok(LeaseClaim::Held(lease)) => {
                        if let Err(e) = self.took(UNOWNED, lease, asked).await {
                            tracing::warn!(error = %e, "taking the unowned sandboxes' lease");
                        }
                    }
                    // Another member tends them.
                    Ok(LeaseClaim::Taken { .. }) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "bidding for the unowned sandboxes' lease")
                    }
                }
            }
        }
        let held: Vec<Held> = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let ttl = self.config.lease_ttl;
        for h in held {
            let lease = h.lease.clone();
            let asked = Instant::now();
            match blocking(&self.store, move |s| s.renew_lease(&lease, ttl)).await {
                Ok(true) => {
                    if let Some(s) = &self.stewardship {
                        s.hold(&h.lease.container_id, self.sure_until(asked));
                    }
                    if let Some(entry) = self
                        .held
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_mut(&h.lease.container_id)
                    {
                        if entry.lease == h.lease {
                            entry.confirmed = Instant::now();
                        }
                    }
                }
                Ok(false) => self.step_down(&h.lease, "the lease was lost").await,
                Err(e) if h.confirmed.elapsed() >= ttl => {
                    self.step_down(&h.lease, &format!("it could not be renewed: {e}"))
                        .await
                }
                Err(e) => tracing::warn!(container = %h.lease.container_id, error = %e,
                    "lease renewal failed; retrying"),
            }
        }
    }

    /// Stops serving a container: forgets its lease and stops its agents.
    async fn step_down(&self, lease: &Lease, why: &str) {
        let removed = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            match held.get(&lease.container_id) {
                Some(h) if h.lease == *lease => held.remove(&lease.container_id),
                _ => None,
            }
        };
        if removed.is_some() {
            if let Some(s) = &self.stewardship {
                s.release(&lease.container_id);
            }
            tracing::warn!(container = %lease.container_id, epoch = lease.epoch, why,
                "stepping down from a container");
            self.vm
                .container_manager()
                .destroy_all(&lease.container_id)
                .await;
        }
    }

    /// Hands every lease over before exit: marks this server draining, stops renewing, stops
    /// the agents of each container and releases its lease, so another server can take it at
    /// once. Returns how many leases were released.
    pub async fn drain(&self) -> usize {
        let _ = self.stop.send(true);
        if let Err(e) = blocking(&self.store, |s| s.heartbeat(true)).await {
            tracing::warn!(error = %e, "marking this server draining failed");
        }
        let held: Vec<Held> = self
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        let mut released = 0;
        for h in held {
            if let Some(s) = &self.stewardship {
                s.release(&h.lease.container_id);
            }
            self.vm
                .container_manager()
                .destroy_all(&h.lease.container_id)
                .await;
            let lease = h.lease.clone();
            match blocking(&self.store, move |s| s.release_lease(&lease)).await {
                Ok(true) => released += 1,
                Ok(false) => {}
                Err(e) => tracing::warn!(container = %h.lease.container_id, error = %e,
                    "releasing a lease failed; it expires after its TTL"),
            }
        }
        tracing::info!(released, "leases handed over");
        released
    }
}

/// A client of another member, as the gate hands it out: a refusal of a forwarded command
/// says where it went and what this server lacks.
struct Forwarder {
    client: agentvm::RemoteRuntime,
    /// The member's advertised URL.
    url: String,
}

#[async_trait::async_trait]
impl agentvm::Runtime for Forwarder {
    async fn request(&self, command: agentvm::Command) -> Result<agentvm::Response> {
        self.client
            .request(command)
            .await
            .map_err(|e| match e.kind() {
                agentvm::ErrorKind::Unauthorized => Error::Unauthorized(format!(
                    "the server at {} that serves this container refused the command this server \
                 forwarded to it ({e}); give this server a token for all containers to forward \
                 with (--cluster-token or AGENTVM_CLUSTER_TOKEN)",
                    self.url
                )),
                _ => e,
            })
    }

    async fn subscribe(&self, filter: agentvm::EventFilter) -> Result<agentvm::Subscription> {
        self.client.subscribe(filter).await
    }
}

/// The runtime's gate: a weak handle on the manager (the manager owns the runtime).
struct Gate(std::sync::Weak<LeaseManager>);

#[async_trait::async_trait]
impl ContainerGate for Gate {
    async fn admit(&self, container_id: &str) -> Result<Admission> {
        match self.0.upgrade() {
            Some(manager) => manager.admit(container_id).await,
            None => Err(Error::unavailable("this server is leaving the cluster")),
        }
    }
}

/// Renews until stopped or the manager is gone.
async fn renew_loop(manager: std::sync::Weak<LeaseManager>, mut stopped: watch::Receiver<bool>) {
    loop {
        let Some(interval) = manager.upgrade().map(|m| m.config.renew_interval) else {
            return;
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        let Some(m) = manager.upgrade() else {
            return;
        };
        m.renew_all().await;
    }
}

/// Runs a store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    store: &Arc<dyn Store>,
    f: impl FnOnce(&dyn Store) -> Result<T> + Send + 'static,
) -> Result<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&*store))
        .await
        .map_err(|e| Error::Internal(format!("a store call panicked: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentvm::ErrorKind;

    #[tokio::test]
    async fn a_store_no_other_server_can_share_is_refused() {
        let vm = AgentVm::builder().open().await.unwrap();
        let err = LeaseManager::start(&vm, ClusterConfig::new("http://127.0.0.1:1"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        assert!(err.to_string().contains("--store postgres://"), "{err}");
    }

    #[tokio::test]
    async fn a_ttl_not_longer_than_its_renewal_is_refused() {
        let vm = AgentVm::builder().open().await.unwrap();
        let mut config = ClusterConfig::new("http://127.0.0.1:1");
        config.renew_interval = config.lease_ttl;
        let err = LeaseManager::start(&vm, config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        let config = ClusterConfig::new("u").with_lease_ttl(Duration::from_secs(3));
        assert_eq!(config.renew_interval, Duration::from_secs(1));
        assert!(config.server_id.starts_with("srv_"));
    }
}
