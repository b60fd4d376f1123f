//! agentvm-server: one port for `GET /health`, the Channel at `/ws`, `GET /metrics`, and the
//! REST API under `/v1` (with its OpenAPI document at `/v1/openapi.json`), and the web console
//! at `/` (embedded static files; see `console`).
//!
//! Embedders own it through [`ServerManager`]: `listen(addr)`, `close()`, and
//! `on_connection(handler)` to log, meter or veto per connection. The `agentvm-server` binary
//! is this crate with a command line around it.
#![warn(missing_docs, unreachable_pub)]

pub mod admin_socket;
pub mod cluster;
mod connection;
mod console;
mod exec_stream;
mod http;
mod listener;
pub mod mcp;
pub mod metrics;
pub mod node_agent;
mod openapi;
mod paced_reads;
mod port_proxy;
mod rest;
mod sandbox_activity;
pub mod telemetry;
mod terminal;

pub use cluster::{ClusterConfig, LeaseManager};
pub use connection::{ConnectionHandler, ConnectionInfo};
pub use metrics::Metrics;

/// The allocator the `agentvm-server` binary runs on (mimalloc). A server spends a good part
/// of each delivered frame allocating and freeing small buffers (an event's texts, its replay
/// entry, the frame); glibc's allocator handed those back through its slower consolidating
/// paths. With mimalloc the server CPU per frame to an acking client (`benches/ack_delivery`,
/// `thread/20`) is 15–18% lower in alternating runs. It is built with transparent huge pages
/// off: with them an idle connection took 41 KB instead of 25 KB. Only the binary (and the
/// benches that measure the server) install it, as their `#[global_allocator]`: the library
/// never does, so a process that embeds the runtime (Python, Node, the C ABI) keeps its own.
pub use mimalloc::MiMalloc as ServerAllocator;

// The runtime's modules under the names this crate's files use.
use agentvm::{auth, channel, error, model, runtime};

use crate::error::{Error, Result};
use crate::runtime::{AgentVm, Caller, Scope};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// WebSocket close code: going away (server shutting down).
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// WebSocket close code: policy violation (authentication failed).
pub const CLOSE_POLICY: u16 = 1008;
/// WebSocket close code: message too big (larger than `max_frame_bytes`).
pub const CLOSE_TOO_BIG: u16 = 1009;
/// WebSocket close code: protocol error (a malformed frame, a control frame over 125 bytes,
/// a fragmented control frame, an unknown opcode, an unmasked client frame).
pub const CLOSE_PROTOCOL: u16 = 1002;
/// WebSocket close code: invalid data (a text frame that is not UTF-8).
pub const CLOSE_INVALID_DATA: u16 = 1007;
/// WebSocket close code: the connection went over one of its budgets (a client that does
/// not read what it is sent, too many topics joined, too many requests running at once).
/// The close reason names the budget.
pub const CLOSE_OVER_BUDGET: u16 = 4008;

/// When clients must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthMode {
    /// Required when the server binds a non-loopback address, off on loopback.
    #[default]
    Auto,
    /// Always required.
    Required,
    /// Never required (tokens presented are still honoured, narrowing the scope).
    Disabled,
}

/// The longest [`ServerConfig::event_coalesce`]: each event of a busy stream may wait this
/// long before it is written, so a longer window would make a stream visibly stutter.
pub const MAX_EVENT_COALESCE: Duration = Duration::from_secs(1);

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest WebSocket message and largest REST request body accepted: one limit for both
    /// doors, so whatever fits one fits the other. A larger WebSocket message closes the
    /// connection with 1009; a larger body gets a 413. It must leave room for the largest
    /// content the runtime accepts (`Limits::max_content_bytes`, 1 MiB by default) and its JSON
    /// envelope.
    pub max_frame_bytes: usize,
    /// Sockets open at once, upgraded WebSockets and plain HTTP alike; a socket accepted
    /// beyond it is closed at once.
    pub max_connections: usize,
    /// Events queued per connection before it is resumed from its cursor.
    pub send_queue: usize,
    /// Longest a write to a WebSocket client may wait: a client that reads nothing for this
    /// long is over its send budget and is closed with [`CLOSE_OVER_BUDGET`].
    pub send_timeout: Duration,
    /// While a WebSocket connection streams events, the client's frames (its acks, and any
    /// request) are read with the next batch of events, or at the latest this long after the
    /// last one, instead of as each arrives: an acking client then costs one wake-up per batch
    /// rather than two per event. A request sent during a stream may wait up to this long;
    /// one sent after a response, or when no event went out for this long, is read at once.
    /// Zero reads every frame as it arrives.
    pub ack_read_delay: Duration,
    /// While a WebSocket connection streams events, an event that arrives less than this long
    /// after the previous write waits out the rest of it, and everything published meanwhile
    /// goes out in one write: a fast stream costs one write (and one read of its acks) per
    /// window instead of per event. The first event after a quiet spell of this long is
    /// written at once, so only events of a busy stream wait, each at most this long. Zero
    /// writes each event (or each burst already queued) as soon as it arrives. At most
    /// [`MAX_EVENT_COALESCE`]; a longer one is cut to it.
    pub event_coalesce: Duration,
    /// Session and sandbox topics one WebSocket connection may have joined at once.
    pub max_subscriptions: usize,
    /// Requests one WebSocket connection may have running beside its loop at once
    /// (`sandbox_exec_request`s); the others run one at a time in order.
    pub max_requests_in_flight: usize,
    /// How long a socket has to send a complete request head (HTTP headers): from the accept
    /// for its first request, from the previous response for the next one on a kept-alive
    /// connection. It is the handshake timeout and the idle timeout of every socket that is
    /// not an upgraded WebSocket (those have `ping_interval`).
    pub header_timeout: Duration,
    /// Longest a request may take before it is answered with a timeout error.
    pub request_timeout: Duration,
    /// How often the server pings; a connection that missed the previous pong is dropped.
    pub ping_interval: Duration,
    /// How long a connection without a token has to send its `auth` frame.
    pub auth_timeout: Duration,
    /// When authentication is required.
    pub auth: AuthMode,
    /// On shutdown, how long running turns may finish before they are interrupted.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_frame_bytes: 4 * 1024 * 1024,
            max_connections: 10_000,
            send_queue: 4096,
            send_timeout: Duration::from_secs(30),
            ack_read_delay: Duration::from_millis(5),
            event_coalesce: Duration::from_millis(2),
            max_subscriptions: 256,
            max_requests_in_flight: 64,
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            ping_interval: Duration::from_secs(30),
            auth_timeout: Duration::from_secs(10),
            auth: AuthMode::Auto,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// What every connection and route shares.
pub(crate) struct ServerState {
    pub vm: AgentVm,
    pub config: ServerConfig,
    pub metrics: Metrics,
    /// Whether every connection and request needs a token.
    pub require_auth: std::sync::atomic::AtomicBool,
    pub shutdown: watch::Receiver<bool>,
    /// Set first when the server begins to shut down: `/readyz` then answers 503 while the
    /// connections are still served, so a load balancer stops sending new work first.
    pub draining: std::sync::atomic::AtomicBool,
    handler: RwLock<Option<Arc<dyn ConnectionHandler>>>,
    next_conn: AtomicU64,
    /// Extra Prometheus text (scheduler counters), rendered after ours.
    pub extra_metrics: RwLock<Vec<Arc<dyn Fn() -> String + Send + Sync>>>,
    /// The open WebSocket connections of each token id: revoking the token tells them
    /// (`true`) so they close and fail their requests in flight.
    by_token: std::sync::Mutex<std::collections::HashMap<String, Vec<watch::Sender<bool>>>>,
    /// Sockets accepted and not yet closed, plain HTTP and WebSocket alike (the connection
    /// limit): a permit per socket.
    pub sockets: Arc<tokio::sync::Semaphore>,
}

impl ServerState {
    pub(crate) fn handler(&self) -> Option<Arc<dyn ConnectionHandler>> {
        self.handler
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Registers a connection opened with `token_id`; the receiver turns `true` when the
    /// token is revoked through this server.
    pub(crate) fn watch_token(&self, token_id: &str) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        let mut by_token = self.by_token.lock().unwrap_or_else(|p| p.into_inner());
        let conns = by_token.entry(token_id.to_string()).or_default();
        conns.retain(|t| !t.is_closed());
        conns.push(tx);
        rx
    }

    /// Tells every open connection of `token_id` that it was revoked.
    pub(crate) fn token_revoked(&self, token_id: &str) {
        let conns = self
            .by_token
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token_id);
        for tx in conns.unwrap_or_default() {
            let _ = tx.send(true);
        }
    }

    /// Runs what follows a dispatched command on the server: a revoked token's connections
    /// are closed.
    pub(crate) fn after_dispatch(&self, result: &Result<crate::model::Response>) {
        if let Ok(crate::model::Response::TokenRevoke(r)) = result {
            self.token_revoked(&r.record.id);
        }
    }

    pub(crate) fn next_connection_id(&self) -> String {
        format!("conn_{}", self.next_conn.fetch_add(1, Ordering::Relaxed))
    }

    /// Operator routes: with auth on, a valid token for all containers.
    pub(crate) fn authorize_operator(
        &self,
        headers: &axum::http::HeaderMap,
        query: Option<&str>,
    ) -> Result<()> {
        let query_token = query.and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token=").map(str::to_string))
        });
        let q = http::TokenQuery { token: query_token };
        let (scope, _) = self.authorize(http::presented_token(headers, &q).as_deref())?;
        if self.require_auth.load(Ordering::Relaxed) && scope != Scope::All {
            return Err(Error::Unauthorized(
                "this route needs a token for all containers".into(),
            ));
        }
        Ok(())
    }

    /// Who a REST request runs as: the token's scope, the request timeout, and the
    /// connection hooks (a REST request is reported to them as a connection of its own).
    pub(crate) fn rest_caller(self: &Arc<Self>, token: Option<&str>) -> Result<Caller> {
        let (scope, token_id) = self.authorize(token)?;
        let info = ConnectionInfo {
            id: format!("rest_{}", self.next_conn.fetch_add(1, Ordering::Relaxed)),
            remote_addr: None,
            token_id: token_id.clone(),
            scope: scope.clone(),
            runtime: self.vm.scoped(scope.clone()),
        };
        Ok(Caller {
            scope,
            token_id,
            deadline: Some(self.config.request_timeout),
            hook: Some(Arc::new(connection::ConnectionHook {
                state: self.clone(),
                info,
            })),
        })
    }

    /// Who an `/internal/runtime` request runs as: a runtime node, allowed the node commands.
    /// With a node token set (the scheduler's `internal_token`) it must be presented; without
    /// one, a server with authentication on wants an operator token; otherwise (a loopback
    /// control plane) anyone on the machine may report.
    pub(crate) fn node_caller(&self, token: Option<&str>) -> Result<Caller> {
        let expected = self
            .vm
            .scheduler()
            .and_then(|s| s.config().internal_token.clone());
        match expected {
            Some(expected) if token == Some(expected.as_str()) => {}
            Some(_) => {
                return Err(Error::Unauthorized(
                    "the /internal/runtime endpoints need `Authorization: Bearer <token>` with the node token".into(),
                ))
            }
            None => {
                let (scope, _) = self.authorize(token)?;
                if self.require_auth.load(Ordering::Relaxed) && scope != Scope::All {
                    return Err(Error::Unauthorized(
                        "the /internal/runtime endpoints need a token for all containers (or the scheduler's node token)".into(),
                    ));
                }
            }
        }
        Ok(Caller {
            scope: Scope::All,
            token_id: None,
            deadline: Some(self.config.request_timeout),
            hook: None,
        })
    }

    /// The scope of a presented token; `None` token: all when auth is off.
    ///
    /// With auth off, a token agentvm never issued is ignored, as AgentX ignores every token
    /// (deployments that send their own to a proxy can connect); an agentvm token still
    /// narrows the scope, and a revoked one is still refused.
    pub(crate) fn authorize(&self, token: Option<&str>) -> Result<(Scope, Option<String>)> {
        let required = self.require_auth.load(Ordering::Relaxed);
        match token {
            Some(t) if !required && !crate::auth::is_issued(&**self.vm.store(), t)? => {
                Ok((Scope::All, None))
            }
            Some(t) => {
                let (record, scope) = crate::auth::verify_token(&**self.vm.store(), t)?;
                Ok((scope, Some(record.id)))
            }
            None if required => Err(Error::Unauthorized(
                "authentication required: send 'Authorization: Bearer <token>' (create one with 'agentvm-server token create')".into(),
            )),
            None => Ok((Scope::All, None)),
        }
    }
}

/// Runs the agentvm server for an [`AgentVm`].
pub struct ServerManager {
    state: Arc<ServerState>,
    shutdown_tx: watch::Sender<bool>,
    extra_routes: std::sync::Mutex<Option<axum::Router>>,
    task: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl std::fmt::Debug for ServerManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerManager").finish_non_exhaustive()
    }
}

impl ServerManager {
    /// A server for `vm`. Nothing listens until [`ServerManager::listen`].
    pub fn new(vm: AgentVm, mut config: ServerConfig) -> Self {
        if config.event_coalesce > MAX_EVENT_COALESCE {
            tracing::warn!(
                asked_ms = config.event_coalesce.as_millis() as u64,
                max_ms = MAX_EVENT_COALESCE.as_millis() as u64,
                "event_coalesce is cut to its maximum: a longer window would hold every event \
                 of a busy stream that long"
            );
            config.event_coalesce = MAX_EVENT_COALESCE;
        }
        let (shutdown_tx, shutdown) = watch::channel(false);
        let config_max_sockets = config
            .max_connections
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        ServerManager {
            state: Arc::new(ServerState {
                vm,
                require_auth: std::sync::atomic::AtomicBool::new(config.auth == AuthMode::Required),
                config,
                metrics: Metrics::default(),
                shutdown,
                draining: std::sync::atomic::AtomicBool::new(false),
                handler: RwLock::new(None),
                next_conn: AtomicU64::new(1),
                extra_metrics: RwLock::new(Vec::new()),
                by_token: std::sync::Mutex::new(std::collections::HashMap::new()),
                sockets: Arc::new(tokio::sync::Semaphore::new(config_max_sockets)),
            }),
            shutdown_tx,
            extra_routes: std::sync::Mutex::new(None),
            task: tokio::sync::Mutex::new(None),
        }
    }

    /// Installs the per-connection hooks.
    pub fn on_connection(&self, handler: Arc<dyn ConnectionHandler>) {
        *self
            .state
            .handler
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }

    /// Adds routes (for example the scheduler's) to the same port. When authentication is
    /// on, they need a token for all containers: they are operator routes, not a tenant's.
    pub fn merge_routes(&self, router: axum::Router) {
        let state = self.state.clone();
        let router = router.layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let state = state.clone();
                async move {
                    if let Err(e) = state.authorize_operator(req.headers(), req.uri().query()) {
                        return http::error_response(&e);
                    }
                    next.run(req).await
                }
            },
        ));
        let mut extra = self.extra_routes.lock().unwrap_or_else(|p| p.into_inner());
        *extra = Some(match extra.take() {
            Some(r) => r.merge(router),
            None => router,
        });
    }

    /// Adds text to `/metrics`, written before the closing `# EOF` (the runtime's scheduler is
    /// rendered already). It must be OpenMetrics text: counter samples end in `_total`, their
    /// `# TYPE` names do not.
    pub fn add_metrics(&self, render: Arc<dyn Fn() -> String + Send + Sync>) {
        self.state
            .extra_metrics
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(render);
    }

    /// The server's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.state.metrics
    }

    /// Binds `addr` and serves in the background. Returns the bound address (port 0 picks one).
    pub async fn listen(&self, addr: impl tokio::net::ToSocketAddrs) -> Result<SocketAddr> {
        let listener =
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Unavailable {
                    message: format!("cannot listen: {e}"),
                    source: Some(Box::new(e)),
                })?;
        let local = listener.local_addr()?;
        self.serve(listener).await?;
        Ok(local)
    }

    /// Serves on an already bound listener, in the background.
    pub async fn serve(&self, listener: tokio::net::TcpListener) -> Result<()> {
        let local = listener.local_addr()?;
        if self.state.config.auth == AuthMode::Auto && !local.ip().is_loopback() {
            self.state.require_auth.store(true, Ordering::Relaxed);
        }
        let state = self.state.clone();
        let extra = self
            .extra_routes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let app = http::router(state.clone(), extra);
        let shutdown = self.shutdown_tx.subscribe();
        let task = tokio::spawn(listener::run(listener, app, state.clone(), shutdown));
        *self.task.lock().await = Some(task);
        tracing::info!(%local, auth = state.require_auth.load(Ordering::Relaxed), "agentvm listening (WebSocket at /ws)");
        Ok(())
    }

    /// Serves the operator socket at `path` (normally [`admin_socket::ADMIN_SOCKET`] in the
    /// data dir) until the server stops: commands with all-containers rights for whoever may
    /// open the file (mode 0600). `Conflict` when another server answers there.
    pub async fn serve_admin_socket(&self, path: impl Into<std::path::PathBuf>) -> Result<()> {
        admin_socket::serve(
            self.state.clone(),
            path.into(),
            self.shutdown_tx.subscribe(),
        )
        .await
    }

    /// Marks the server draining: `/readyz` answers 503 from now on, while everything is still
    /// served. [`ServerManager::stop`] and [`ServerManager::close`] do it first; a process that
    /// wants load balancers to notice before connections close calls it on `SIGTERM`, waits,
    /// then closes.
    pub fn drain(&self) {
        if !self.state.draining.swap(true, Ordering::AcqRel) {
            tracing::info!("draining: /readyz now answers 503");
        }
    }

    /// Stops accepting and closes every connection (`1001 server shutting down`), leaving the
    /// runtime open and its turns running: for a runtime served by more than one server, where
    /// the others keep serving it. [`ServerManager::close`] also closes the runtime.
    pub async fn stop(&self) {
        self.drain();
        let _ = self.shutdown_tx.send(true);
        if let Some(task) = self.task.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Stops accepting, lets running turns finish up to the grace period, interrupts the rest
    /// (their partial replies are stored), writes everything out and returns.
    pub async fn close(&self) {
        self.drain();
        let _ = self.shutdown_tx.send(true);
        let deadline = tokio::time::Instant::now() + self.state.config.shutdown_grace;
        loop {
            let busy = self
                .state
                .vm
                .container_manager()
                .list(None)
                .iter()
                .any(|a| a.is_busy());
            if !busy || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.state.vm.close().await;
        if let Some(task) = self.task.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_event_coalesce_window_past_its_maximum_is_cut_to_it() {
        let vm = AgentVm::builder()
            .open()
            .await
            .expect("an in-memory runtime");
        let long = ServerConfig {
            event_coalesce: Duration::from_secs(60),
            ..Default::default()
        };
        let server = ServerManager::new(vm.clone(), long);
        assert_eq!(server.state.config.event_coalesce, MAX_EVENT_COALESCE);
        let short = ServerConfig {
            event_coalesce: Duration::from_millis(200),
            ..Default::default()
        };
        let server = ServerManager::new(vm, short);
        assert_eq!(
            server.state.config.event_coalesce,
            Duration::from_millis(200)
        );
    }
}
