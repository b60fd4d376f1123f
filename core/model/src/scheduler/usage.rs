//! What a sandbox uses now: cpu, memory, processes and network, from one Docker stats sample.

use serde::{Deserialize, Serialize};

/// One sample of a sandbox's resource use (`sandbox_usage_request`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxUsage {
    /// The sandbox.
    pub sandbox_id: String,
    /// The node it runs on.
    pub node_id: String,
    /// Its status when sampled (`running` or `paused`).
    pub status: super::SandboxStatus,
    /// Cpu time its processes used since it started, nanoseconds.
    pub cpu_total_ns: u64,
    /// Cpu used since the previous sample the scheduler took of it, in percent of one core
    /// (200 = two cores busy); absent on the first sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_percent: Option<f64>,
    /// Memory in use, bytes (the cgroup's usage less its inactive file cache, as `docker
    /// stats` shows it).
    pub memory_bytes: u64,
    /// Its memory limit, bytes.
    pub memory_limit_bytes: u64,
    /// Processes and threads running in it.
    pub pids: u64,
    /// Bytes received over all its interfaces (0 without a network).
    pub net_rx_bytes: u64,
    /// Bytes sent over all its interfaces.
    pub net_tx_bytes: u64,
    /// When sampled, ms.
    pub at: i64,
}

/// What the live sandboxes of one node use together, for `/metrics` (per node, never per
/// sandbox, so the number of series stays bounded by the nodes).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeUsage {
    /// The node.
    pub node_id: String,
    /// Live sandboxes sampled on it (running or paused).
    pub sandboxes: u64,
    /// Of them, paused.
    pub paused: u64,
    /// Cpu time used by them since each started, nanoseconds.
    pub cpu_total_ns: u64,
    /// Memory they use, bytes.
    pub memory_bytes: u64,
    /// Processes and threads in them.
    pub pids: u64,
    /// Bytes they received.
    pub net_rx_bytes: u64,
    /// Bytes they sent.
    pub net_tx_bytes: u64,
    /// Sandboxes whose sample failed (their node did not answer in time).
    pub unsampled: u64,
}

/// Cpu percent of one core between two samples: `(cpu1 - cpu0) / (t1 - t0)`, with cpu in ns
/// and time in ms. `None` when the interval is empty or the counter went back (a restart).
pub fn cpu_percent(cpu0_ns: u64, t0_ms: i64, cpu1_ns: u64, t1_ms: i64) -> Option<f64> {
    let dt_ms = t1_ms.checked_sub(t0_ms).filter(|d| *d > 0)?;
    let used = cpu1_ns.checked_sub(cpu0_ns)?;
    Some(used as f64 / (dt_ms as f64 * 1_000_000.0) * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_percent_is_per_core_and_refuses_empty_or_backward_intervals() {
        assert_eq!(cpu_percent(0, 0, 500_000_000, 1000), Some(50.0));
        assert_eq!(cpu_percent(0, 0, 2_000_000_000, 1000), Some(200.0));
        assert_eq!(cpu_percent(0, 1000, 5, 1000), None);
        assert_eq!(cpu_percent(10, 0, 5, 1000), None);
    }
}
