//! Runtime nodes: the record, registration and heartbeat messages, and the in-memory registry
//! that keeps each node's load, its Docker connection and its admission gate.

use super::admission::Admission;
use super::placement::{cores_to_millis, Demand, NodeLoad};
use super::template::DOCKER;
use crate::error::{Error, Result};
use crate::model::validate_id;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// A node's status as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Healthy and accepting sandboxes.
    Online,
    /// Its Docker daemon or its heartbeats stopped: no new sandboxes.
    Offline,
    /// Healthy, keeps its sandboxes, takes no new ones.
    Draining,
    /// Taken out by an operator: no new sandboxes.
    Maintenance,
}

impl NodeStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Online => "online",
            NodeStatus::Offline => "offline",
            NodeStatus::Draining => "draining",
            NodeStatus::Maintenance => "maintenance",
        }
    }
}

/// How agentvm learns that a node is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// agentvm pings the node's Docker endpoint itself every heartbeat interval (static nodes).
    #[default]
    Probe,
    /// A node agent (`agentvm-server node join`) posts heartbeats; silence means offline.
    Heartbeat,
}

/// Client certificate files for a `tcp://` Docker endpoint with TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsFiles {
    /// The CA that signed the daemon's certificate.
    pub ca: PathBuf,
    /// The client certificate.
    pub cert: PathBuf,
    /// The client key.
    pub key: PathBuf,
}

/// A Docker engine sandboxes run on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct RuntimeNode {
    /// Unique id (`docker-local`).
    pub node_id: String,
    /// Host name, for people.
    pub hostname: String,
    /// Always `docker`.
    pub runtime_type: String,
    /// Address of the host, for people and executors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// Where its Docker API answers (`unix:///var/run/docker.sock`, `tcp://host:2376`); every
    /// container of this node is created through it and no other.
    pub api_endpoint: String,
    /// Client TLS files for a `tcp://` endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Online, offline, draining or maintenance (derived from `admin` and health).
    pub status: NodeStatus,
    /// What an operator set: `online` (active), `draining` or `maintenance`; kept apart from
    /// health so a draining node that goes offline comes back draining.
    pub admin_status: NodeStatus,
    /// Why it is offline, when it is (the Docker error, the missing heartbeats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// Cpu the node offers to sandboxes, cores.
    pub total_cpu_cores: f64,
    /// Memory the node offers to sandboxes, MiB.
    pub total_memory_mb: u64,
    /// Cpu held by its sandboxes, cores (counted by agentvm, not reported by the node).
    pub allocated_cpu_cores: f64,
    /// Memory held by its sandboxes, MiB.
    pub allocated_memory_mb: u64,
    /// Its sandboxes (warm ones included).
    pub running_containers: u32,
    /// Placements decided and not yet created.
    pub in_flight: u32,
    /// Containers it may run at once.
    pub max_containers: u32,
    /// Images it holds, for placement affinity.
    #[serde(default)]
    pub cached_images: Vec<String>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Probed by agentvm, or heartbeating through a node agent.
    pub liveness: Liveness,
    /// The last heartbeat or successful probe, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat_at: Option<i64>,
    /// When it was first registered, ms.
    pub registered_at: i64,
}

/// Registers (or updates) a node: the body of `POST /internal/runtime/nodes/register` and of
/// static registration. snake_case as the executors send it; camelCase is accepted too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub struct NodeRegistration {
    /// Unique id.
    #[serde(alias = "nodeId")]
    pub node_id: String,
    /// Host name; the node id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `docker` (the only runtime type).
    #[serde(default = "docker", alias = "runtimeType")]
    pub runtime_type: String,
    /// Host address.
    #[serde(default, alias = "ipAddress", skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// The Docker endpoint.
    #[serde(alias = "apiEndpoint")]
    pub api_endpoint: String,
    /// TLS files for `tcp://` endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Cpu offered; the daemon's cpu count when absent.
    #[serde(
        default,
        alias = "totalCpuCores",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_cpu_cores: Option<f64>,
    /// Memory offered, MiB; the daemon's memory when absent.
    #[serde(
        default,
        alias = "totalMemoryMb",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_memory_mb: Option<u64>,
    /// Container limit.
    #[serde(default = "hundred", alias = "maxContainers")]
    pub max_containers: u32,
    /// Images held; asked from the daemon when absent.
    #[serde(
        default,
        alias = "cachedImages",
        skip_serializing_if = "Option::is_none"
    )]
    pub cached_images: Option<Vec<String>>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Probe (static nodes) or heartbeat (node agents).
    #[serde(default)]
    pub liveness: Liveness,
}

fn docker() -> String {
    DOCKER.to_string()
}
fn hundred() -> u32 {
    100
}

impl NodeRegistration {
    /// A static registration of `api_endpoint` as `node_id`; capacity asked from Docker.
    pub fn new(node_id: impl Into<String>, api_endpoint: impl Into<String>) -> Self {
        NodeRegistration {
            node_id: node_id.into(),
            hostname: None,
            runtime_type: docker(),
            ip_address: None,
            api_endpoint: api_endpoint.into(),
            tls: None,
            total_cpu_cores: None,
            total_memory_mb: None,
            max_containers: hundred(),
            cached_images: None,
            labels: BTreeMap::new(),
            liveness: Liveness::Probe,
        }
    }

    /// Refuses ids, runtimes and capacities agentvm cannot use.
    pub fn validate(&self) -> Result<()> {
        validate_id("node_id", &self.node_id)?;
        if self.runtime_type != DOCKER {
            return Err(Error::invalid(format!(
                "runtime type {:?} is not supported; only \"docker\" is",
                self.runtime_type
            )));
        }
        super::docker::Endpoint::parse(&self.api_endpoint, self.tls.as_ref())?;
        if let Some(c) = self.total_cpu_cores {
            if !c.is_finite() || c <= 0.0 {
                return Err(Error::invalid(format!(
                    "total_cpu_cores must be positive, not {c}"
                )));
            }
        }
        if self.total_memory_mb == Some(0) {
            return Err(Error::invalid("total_memory_mb must be positive"));
        }
        Ok(())
    }
}

/// A node agent's heartbeat: the body of `POST /internal/runtime/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct Heartbeat {
    /// The node.
    #[serde(alias = "nodeId")]
    pub node_id: String,
    /// Set when an executor inside a sandbox sends it (its Docker container id).
    #[serde(
        default,
        alias = "containerId",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    /// The sender's clock, for people (agentvm uses its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Images the node holds now, when the agent reports them.
    #[serde(
        default,
        alias = "cachedImages",
        skip_serializing_if = "Option::is_none"
    )]
    pub cached_images: Option<Vec<String>>,
}

/// One node in memory: its record, its load in exact units, its Docker client and its gate.
pub(crate) struct NodeEntry {
    /// The record (allocation fields are refreshed from the exact counters on read).
    pub node: RuntimeNode,
    /// A connected, version-negotiated client; `None` until first use or after a failure.
    pub docker: Option<bollard::Docker>,
    /// Bounds Docker starts in flight on this node.
    pub admission: Arc<Admission>,
    /// Cpu held by created sandboxes, millicores.
    pub allocated_cpu_millis: u64,
    /// Memory held by created sandboxes, MiB.
    pub allocated_memory_mb: u64,
    /// Created sandboxes.
    pub running: u32,
    /// Cpu of placements in flight, millicores.
    pub in_flight_cpu_millis: u64,
    /// Memory of placements in flight, MiB.
    pub in_flight_memory_mb: u64,
    /// Placements in flight.
    pub in_flight: u32,
}

impl NodeEntry {
    pub fn new(node: RuntimeNode, admission: Arc<Admission>) -> Self {
        NodeEntry {
            node,
            docker: None,
            admission,
            allocated_cpu_millis: 0,
            allocated_memory_mb: 0,
            running: 0,
            in_flight_cpu_millis: 0,
            in_flight_memory_mb: 0,
            in_flight: 0,
        }
    }

    /// The record with its load filled in.
    pub fn snapshot(&self) -> RuntimeNode {
        let mut n = self.node.clone();
        n.allocated_cpu_cores = self.allocated_cpu_millis as f64 / 1000.0;
        n.allocated_memory_mb = self.allocated_memory_mb;
        n.running_containers = self.running;
        n.in_flight = self.in_flight;
        n
    }

    pub fn load(&self) -> NodeLoad<'_> {
        NodeLoad {
            node_id: &self.node.node_id,
            schedulable: self.node.status == NodeStatus::Online,
            total_cpu_millis: cores_to_millis(self.node.total_cpu_cores),
            total_memory_mb: self.node.total_memory_mb,
            max_containers: self.node.max_containers,
            allocated_cpu_millis: self.allocated_cpu_millis,
            allocated_memory_mb: self.allocated_memory_mb,
            running: self.running,
            in_flight_cpu_millis: self.in_flight_cpu_millis,
            in_flight_memory_mb: self.in_flight_memory_mb,
            in_flight: self.in_flight,
            images: &self.node.cached_images,
        }
    }

    /// Sets health; returns the previous and new status when the status changed.
    pub fn set_healthy(
        &mut self,
        healthy: bool,
        message: Option<String>,
    ) -> Option<(NodeStatus, NodeStatus)> {
        let before = self.node.status;
        self.node.status = if healthy {
            self.node.admin_status
        } else {
            NodeStatus::Offline
        };
        self.node.status_message = if healthy { None } else { message };
        if !healthy {
            self.docker = None;
        }
        (before != self.node.status).then_some((before, self.node.status))
    }
}

/// The registry's load operations, in exact units. `Demand` carries the amounts.
pub(crate) fn reserve(entry: &mut NodeEntry, d: &Demand<'_>) {
    entry.in_flight += 1;
    entry.in_flight_cpu_millis += d.cpu_millis;
    entry.in_flight_memory_mb += d.memory_mb;
}

/// Ends an in-flight placement; `created` moves it to the node's allocation.
pub(crate) fn settle(entry: &mut NodeEntry, d: &Demand<'_>, created: bool) {
    entry.in_flight = entry.in_flight.saturating_sub(1);
    entry.in_flight_cpu_millis = entry.in_flight_cpu_millis.saturating_sub(d.cpu_millis);
    entry.in_flight_memory_mb = entry.in_flight_memory_mb.saturating_sub(d.memory_mb);
    if created {
        allocate(entry, d);
    }
}

/// Counts a created sandbox against the node.
pub(crate) fn allocate(entry: &mut NodeEntry, d: &Demand<'_>) {
    entry.running += 1;
    entry.allocated_cpu_millis += d.cpu_millis;
    entry.allocated_memory_mb += d.memory_mb;
}

/// Frees a destroyed sandbox's share of the node.
pub(crate) fn free(entry: &mut NodeEntry, d: &Demand<'_>) {
    entry.running = entry.running.saturating_sub(1);
    entry.allocated_cpu_millis = entry.allocated_cpu_millis.saturating_sub(d.cpu_millis);
    entry.allocated_memory_mb = entry.allocated_memory_mb.saturating_sub(d.memory_mb);
}

/// The node map. A `BTreeMap` would also do; placement sorts by id itself.
pub(crate) type Registry = HashMap<String, NodeEntry>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_accepts_the_seed_body_and_camel_case() {
        let seed = serde_json::json!({"node_id": "docker-local", "hostname": "localhost",
            "runtime_type": "docker", "api_endpoint": "unix:///var/run/docker.sock",
            "total_cpu_cores": 8.0, "total_memory_mb": 16384, "max_containers": 100});
        let r: NodeRegistration = serde_json::from_value(seed).unwrap();
        assert_eq!(r.total_memory_mb, Some(16384));
        r.validate().unwrap();
        let camel = serde_json::json!({"nodeId": "n", "apiEndpoint": "unix:///x.sock"});
        let r: NodeRegistration = serde_json::from_value(camel).unwrap();
        assert_eq!(r.max_containers, 100);
        assert_eq!(r.liveness, Liveness::Probe);
    }

    #[test]
    fn registration_refuses_other_runtimes_and_bad_endpoints() {
        let mut r = NodeRegistration::new("n", "unix:///x.sock");
        r.runtime_type = "podman".into();
        assert!(r
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not supported"));
        let r = NodeRegistration::new("n", "ftp://x");
        assert!(r.validate().is_err());
        let r = NodeRegistration::new("n", "tcp://10.0.0.1:2376");
        assert!(r.validate().unwrap_err().to_string().contains("TLS"));
    }
}
