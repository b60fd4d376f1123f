//! The sandbox scheduler's records as clients see them: runtime nodes, templates, sandboxes,
//! executions and directory entries. Plain data and pure rules (state transitions, template
//! resolution, validation); the scheduler crate does the I/O.

pub mod egress;
pub mod exec;
pub mod executor;
pub mod file;
pub mod node;
pub mod sandbox;
pub mod template;
pub mod terminal;
pub mod usage;
pub mod webhook;

pub use exec::{ExecEvent, ExecRequest, ExecStatus, Execution, OutputStream};
pub use executor::{ContainerExited, ContainerReady};
pub use file::{FileEntry, FileKind};
pub use node::{Heartbeat, Liveness, NodeRegistration, NodeStatus, RuntimeNode, TlsFiles};
pub use sandbox::{IdleAction, Resources, Sandbox, SandboxStatus, Termination, TerminationReason};
pub use template::{
    Credential, NetworkPolicy, SandboxRequest, SecurityPolicy, Template, TemplateSpec,
};
pub use terminal::{Terminal, TerminalEvent, TerminalRequest};
pub use usage::{NodeUsage, SandboxUsage};
pub use webhook::{Delivery, DeliveryStatus, Webhook};

/// A snapshot of the scheduler's counters and gauges (served on `/v1/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SchedulerMetrics {
    /// Creates served from a warm pool.
    pub pool_hits: u64,
    /// Creates for a pooled template that found its pool empty (they started cold).
    pub pool_misses: u64,
    /// Containers created and started on demand (pool refills not included).
    pub cold_starts: u64,
    /// Creates that failed.
    pub create_failures: u64,
    /// Creates refused as busy by admission.
    pub busy_refusals: u64,
    /// Executions run.
    pub executions: u64,
    /// Executions killed by their timeout.
    pub exec_timeouts: u64,
    /// Sandboxes that ended.
    pub terminated: u64,
    /// Sandboxes adopted by reconciliation.
    pub adopted: u64,
    /// Containers removed by reconciliation or the sweep because nothing owned them.
    pub orphans_removed: u64,
    /// Warm sandboxes ready now, all templates.
    pub pool_ready: u64,
    /// Sandboxes creating or running now (warm ones included).
    pub live_sandboxes: u64,
    /// Nodes online now.
    pub nodes_online: u64,
    /// Sandboxes paused now.
    #[serde(default)]
    pub paused_sandboxes: u64,
    /// Pauses (requested or idle).
    #[serde(default)]
    pub pauses: u64,
    /// Resumes (requested, or by an exec or file operation).
    #[serde(default)]
    pub resumes: u64,
    /// Snapshots committed.
    #[serde(default)]
    pub snapshots: u64,
    /// Requests the egress proxy refused, by reason (a fixed set: `not_allowed`,
    /// `direct_ip`, `local_address`, `bad_request`, `busy`, `upstream_failed`).
    #[serde(default)]
    pub egress_refusals: std::collections::BTreeMap<String, u64>,
}

/// How an embedded scheduler is set up, as plain data: what the server's config file, the
/// Python and Node `open()` options and the C ABI pass (one set of names and defaults
/// everywhere). Durations are milliseconds; every field is optional (the default is used).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SchedulerOptions {
    /// Runtime nodes registered at start-up (Docker engines).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<NodeRegistration>,
    /// How often node agents heartbeat and static nodes are probed (5000).
    #[serde(
        default,
        alias = "heartbeat_interval_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub heartbeat_interval_ms: Option<u64>,
    /// Silence after which a node turns offline (15000).
    #[serde(
        default,
        alias = "offline_after_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub offline_after_ms: Option<u64>,
    /// How often expired, idle and stuck sandboxes are swept (10000).
    #[serde(
        default,
        alias = "sweep_interval_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub sweep_interval_ms: Option<u64>,
    /// A sandbox still creating after this long is failed by the sweep (120000).
    #[serde(
        default,
        alias = "stuck_creating_after_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub stuck_creating_after_ms: Option<u64>,
    /// How long an ended sandbox's record and executions are kept after it ended, for
    /// `sandbox_get`, lists and usage history; the sweep then deletes them (604800000, 7 days).
    #[serde(
        default,
        alias = "ended_retention_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub ended_retention_ms: Option<u64>,
    /// Bound on one Docker request (120000).
    #[serde(
        default,
        alias = "docker_timeout_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub docker_timeout_ms: Option<u64>,
    /// Exec timeout when a request gives none (60000).
    #[serde(
        default,
        alias = "default_exec_timeout_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_exec_timeout_ms: Option<u64>,
    /// Idle timeout of the sandboxes agents' tools run in (600000).
    #[serde(
        default,
        alias = "owner_idle_timeout_ms",
        skip_serializing_if = "Option::is_none"
    )]
    pub owner_idle_timeout_ms: Option<u64>,
    /// Docker starts in flight per node (4).
    #[serde(
        default,
        alias = "max_starts_in_flight",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_starts_in_flight: Option<usize>,
    /// Starts that may wait per node; beyond, `Busy` (32).
    #[serde(
        default,
        alias = "max_start_queue",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_start_queue: Option<usize>,
    /// Bytes of stdout (and of stderr) kept per exec (1 MiB).
    #[serde(
        default,
        alias = "max_output_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_output_bytes: Option<usize>,
    /// Largest file uploaded or downloaded (64 MiB).
    #[serde(
        default,
        alias = "max_file_bytes",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_file_bytes: Option<usize>,
    /// `adopt` (default) or `remove`: what start-up does with sandboxes that survived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphans: Option<String>,
    /// Bearer token runtime nodes must present on `/internal/runtime/*`.
    #[serde(
        default,
        alias = "internal_token",
        skip_serializing_if = "Option::is_none"
    )]
    pub internal_token: Option<String>,
    /// Run the background loop (health, sweep, pool refill); default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub background: Option<bool>,
    /// The port of the egress proxies of allowlist sandboxes, on each egress network's
    /// gateway address (3128; `0`: a free port per proxy).
    #[serde(
        default,
        alias = "egress_port",
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_port: Option<u16>,
    /// Names the egress proxies resolve to a given address instead of through DNS, as
    /// `host=address` (like curl's `--resolve`); the address is trusted, even a local one.
    #[serde(
        default,
        alias = "egress_resolve",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub egress_resolve: Vec<String>,
    /// The key sealing template credentials at rest, base64 of 32 random bytes (the same on
    /// every member of a cluster); default: `secrets.key` in the data dir, made on first use.
    #[serde(
        default,
        alias = "secrets_key",
        skip_serializing_if = "Option::is_none"
    )]
    pub secrets_key: Option<String>,
    /// Extra CA certificates (PEM text) the egress proxy trusts for upstream TLS when it
    /// intercepts a host with credentials, besides the webpki roots.
    #[serde(
        default,
        alias = "egress_upstream_ca",
        skip_serializing_if = "Option::is_none"
    )]
    pub egress_upstream_ca: Option<String>,
}

impl SchedulerOptions {
    /// Reads options given as JSON (a binding's `open({scheduler: ...})`): the one place they
    /// are parsed, so every binding refuses the same things with the same `InvalidInput`
    /// (naming an unknown field and the fields it could have been).
    pub fn from_json(value: serde_json::Value) -> crate::Result<Self> {
        serde_json::from_value(value)
            .map_err(|e| crate::Error::invalid(format!("Invalid scheduler options: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_from_json_take_both_spellings_and_name_unknown_fields() {
        let o = SchedulerOptions::from_json(json!({
            "nodes": [{"node_id": "local", "api_endpoint": "unix:///var/run/docker.sock"}],
            "heartbeatIntervalMs": 200,
            "offline_after_ms": 1000,
            "background": false,
        }))
        .unwrap();
        assert_eq!(o.nodes.len(), 1);
        assert_eq!(o.heartbeat_interval_ms, Some(200));
        assert_eq!(o.offline_after_ms, Some(1000));
        assert_eq!(o.background, Some(false));
        assert_eq!(
            SchedulerOptions::from_json(json!({})).unwrap(),
            SchedulerOptions::default()
        );

        let e = SchedulerOptions::from_json(json!({"nodez": []})).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        let message = e.to_string();
        assert!(
            message.starts_with("Invalid scheduler options: unknown field `nodez`"),
            "{message}"
        );
        assert!(message.contains("nodes"), "{message}");
        let e = SchedulerOptions::from_json(json!({"sweepIntervalMs": "soon"})).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }
}
