//! Runtime nodes as clients see them: the record, registration and heartbeat messages.

use super::template::DOCKER;
use crate::error::{Error, Result};
use crate::ids::validate_id;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A node's status as clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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
        Endpoint::parse(&self.api_endpoint, self.tls.as_ref())?;
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
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
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

/// A parsed Docker endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `unix:///path/to/docker.sock`.
    Unix(String),
    /// `tcp://host:port` or `https://host:port` with client TLS.
    Tls {
        /// `host:port`.
        addr: String,
        /// Certificates.
        tls: TlsFiles,
    },
    /// `http://host:port` or `tcp://host:2375`: plain TCP, for loopback and tests only.
    Plain(String),
}

impl Endpoint {
    /// Parses `api_endpoint`, refusing schemes bollard cannot reach and TLS ports without TLS.
    pub fn parse(api_endpoint: &str, tls: Option<&TlsFiles>) -> Result<Endpoint> {
        if let Some(path) = api_endpoint.strip_prefix("unix://") {
            if !path.starts_with('/') {
                return Err(Error::invalid(format!(
                    "api_endpoint {api_endpoint:?}: a unix socket needs an absolute path (unix:///var/run/docker.sock)"
                )));
            }
            return Ok(Endpoint::Unix(path.to_string()));
        }
        let (scheme, addr) = match api_endpoint.split_once("://") {
            Some((s, a)) if !a.is_empty() => (s, a.trim_end_matches('/')),
            _ => {
                return Err(Error::invalid(format!(
                    "api_endpoint {api_endpoint:?} is not unix:///path, tcp://host:port or https://host:port"
                )))
            }
        };
        match (scheme, tls) {
            ("tcp" | "https", Some(tls)) => Ok(Endpoint::Tls {
                addr: addr.to_string(),
                tls: tls.clone(),
            }),
            ("https", None) => Err(Error::invalid(format!(
                "api_endpoint {api_endpoint:?} needs TLS files (ca, cert, key)"
            ))),
            ("tcp", None) if addr.ends_with(":2376") => Err(Error::invalid(format!(
                "api_endpoint {api_endpoint:?} is Docker's TLS port: give TLS files (ca, cert, key)"
            ))),
            ("tcp" | "http", None) => Ok(Endpoint::Plain(addr.to_string())),
            _ => Err(Error::invalid(format!(
                "api_endpoint {api_endpoint:?}: scheme {scheme:?} is not supported (unix, tcp, https, http)"
            ))),
        }
    }
}
