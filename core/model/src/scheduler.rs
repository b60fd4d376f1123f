//! The sandbox scheduler's records as clients see them: runtime nodes, templates, sandboxes,
//! executions and directory entries. Plain data and pure rules (state transitions, template
//! resolution, validation); the scheduler crate does the I/O.

pub mod exec;
pub mod executor;
pub mod file;
pub mod node;
pub mod sandbox;
pub mod template;

pub use exec::{ExecEvent, ExecRequest, ExecStatus, Execution, OutputStream};
pub use executor::{ContainerExited, ContainerReady};
pub use file::{FileEntry, FileKind};
pub use node::{Heartbeat, Liveness, NodeRegistration, NodeStatus, RuntimeNode, TlsFiles};
pub use sandbox::{Resources, Sandbox, SandboxStatus, Termination, TerminationReason};
pub use template::{NetworkPolicy, SandboxRequest, SecurityPolicy, Template, TemplateSpec};

/// A snapshot of the scheduler's counters and gauges (served on `/v1/metrics`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
}
