//! The node side of registration (`agentvm-server node join`): register this node's Docker
//! endpoint with a control plane, then heartbeat until cancelled.
//!
//! ```no_run
//! # async fn demo() -> agentvm::Result<()> {
//! use agentvm_server::node_agent::{join, JoinOptions};
//! let mut opts = JoinOptions::new("http://control-plane:8080", "node-1", "unix:///var/run/docker.sock");
//! opts.token = Some("secret".into());
//! join(opts).await // runs until the future is dropped
//! # }
//! ```

use crate::error::{Error, ErrorKind, Result};
use agentvm::scheduler::{Heartbeat, Liveness, NodeRegistration, TlsFiles};
use std::collections::BTreeMap;
use std::time::Duration;

/// How to join a control plane.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    /// The control plane's base URL (`http://host:port`); the `/internal/runtime/*` paths are
    /// appended.
    pub control_plane: String,
    /// This node's id.
    pub node_id: String,
    /// This node's Docker endpoint as the control plane reaches it.
    pub docker_endpoint: String,
    /// TLS files for a `tcp://` endpoint.
    pub tls: Option<TlsFiles>,
    /// The node token (`Authorization: Bearer`), when the control plane requires one.
    pub token: Option<String>,
    /// Host name reported; the node id when unset.
    pub hostname: Option<String>,
    /// Host address reported.
    pub ip_address: Option<String>,
    /// Cpu offered; the control plane asks Docker when unset.
    pub total_cpu_cores: Option<f64>,
    /// Memory offered, MiB; the control plane asks Docker when unset.
    pub total_memory_mb: Option<u64>,
    /// Container limit.
    pub max_containers: u32,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Heartbeat period (SCHEDULER.md: 5 s; the control plane marks the node offline after
    /// its own `offline_after`).
    pub heartbeat_interval: Duration,
}

impl JoinOptions {
    /// Options with the defaults: 5 s heartbeats, 100 containers, capacity from Docker.
    pub fn new(
        control_plane: impl Into<String>,
        node_id: impl Into<String>,
        docker_endpoint: impl Into<String>,
    ) -> Self {
        JoinOptions {
            control_plane: control_plane.into(),
            node_id: node_id.into(),
            docker_endpoint: docker_endpoint.into(),
            tls: None,
            token: None,
            hostname: None,
            ip_address: None,
            total_cpu_cores: None,
            total_memory_mb: None,
            max_containers: 100,
            labels: BTreeMap::new(),
            heartbeat_interval: Duration::from_secs(5),
        }
    }

    fn registration(&self) -> NodeRegistration {
        NodeRegistration {
            hostname: self.hostname.clone(),
            ip_address: self.ip_address.clone(),
            tls: self.tls.clone(),
            total_cpu_cores: self.total_cpu_cores,
            total_memory_mb: self.total_memory_mb,
            max_containers: self.max_containers,
            labels: self.labels.clone(),
            liveness: Liveness::Heartbeat,
            ..NodeRegistration::new(self.node_id.clone(), self.docker_endpoint.clone())
        }
    }
}

/// A small client of the control plane's `/internal/runtime` endpoints.
struct ControlPlane {
    /// The HTTP client (rustls, no native roots needed for plain http).
    http: reqwest::Client,
    /// Base URL without a trailing slash.
    base: String,
    /// Bearer token.
    token: Option<String>,
}

impl ControlPlane {
    async fn post<T: serde::Serialize>(&self, path: &str, body: &T) -> Result<()> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| Error::Unavailable {
            message: format!("the control plane at {} does not answer: {e}", self.base),
            source: Some(Box::new(e)),
        })?;
        if resp.status().is_success() {
            return Ok(());
        }
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let kind = body
            .get("kind")
            .and_then(|k| k.as_str())
            .map(ErrorKind::parse)
            .unwrap_or(if status.as_u16() == 401 {
                ErrorKind::Unauthorized
            } else {
                ErrorKind::Unavailable
            });
        let message = body
            .get("error")
            .and_then(|m| m.as_str())
            .map(str::to_string)
            .unwrap_or_else(|| format!("the control plane answered {status} to {path}"));
        Err(Error::Remote { kind, message })
    }
}

/// Registers the node, then heartbeats every `heartbeat_interval` until the future is dropped.
/// Registration is retried while the control plane is unreachable or busy; a refusal (bad
/// token, invalid registration) ends `join` with that error. A heartbeat answered "not found"
/// (the control plane forgot the node) registers again.
pub async fn join(opts: JoinOptions) -> Result<()> {
    let base = opts.control_plane.trim_end_matches('/').to_string();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(Error::invalid(format!(
            "control plane URL {base:?} must start with http:// or https://"
        )));
    }
    let registration = opts.registration();
    registration.validate()?;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Internal(format!("building the HTTP client: {e}")))?;
    let cp = ControlPlane {
        http,
        base,
        token: opts.token.clone(),
    };
    let retry = opts.heartbeat_interval.min(Duration::from_secs(5));
    register(&cp, &registration, retry).await?;
    tracing::info!(node_id = %opts.node_id, control_plane = %cp.base, "joined");
    loop {
        tokio::time::sleep(opts.heartbeat_interval).await;
        let hb = Heartbeat {
            node_id: opts.node_id.clone(),
            container_id: None,
            timestamp: Some(crate::model::now_ms().to_string()),
            cached_images: None,
        };
        match cp.post("/internal/runtime/heartbeat", &hb).await {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {
                tracing::warn!(node_id = %opts.node_id, "the control plane forgot this node; registering again");
                register(&cp, &registration, retry).await?;
            }
            Err(e) if e.kind() == ErrorKind::Unauthorized => return Err(e),
            Err(e) => tracing::warn!(node_id = %opts.node_id, error = %e, "heartbeat failed"),
        }
    }
}

async fn register(cp: &ControlPlane, reg: &NodeRegistration, retry: Duration) -> Result<()> {
    loop {
        match cp.post("/internal/runtime/nodes/register", reg).await {
            Ok(()) => return Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::Unavailable) => {
                tracing::warn!(node_id = %reg.node_id, error = %e, "registration failed; retrying");
                tokio::time::sleep(retry).await;
            }
            Err(e) => return Err(e),
        }
    }
}
