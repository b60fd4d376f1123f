//! Runtime nodes: the record, registration and heartbeat messages, and the in-memory registry
//! that keeps each node's load, its engine and its admission gate.

use super::admission::Admission;
use super::placement::{cores_to_millis, Demand, NoPlacement, NodeLoad};
use super::placement_index::{NodeState, PlacementIndex};
pub use agentvm_model::scheduler::node::*;
use std::collections::HashMap;
use std::sync::Arc;

/// One node in memory: its record, its load in exact units, its engine and its gate.
pub(crate) struct NodeEntry {
    /// The record (allocation fields are refreshed from the exact counters on read).
    pub node: RuntimeNode,
    /// The connected engine; `None` until first use or after a failure.
    pub engine: Option<super::engine::EngineRef>,
    /// Bounds container starts in flight on this node.
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
    /// What other servers' sandboxes hold on the node (a cluster's shared store; zero on
    /// one server), as of the last `sync_nodes`.
    pub others: OthersLoad,
}

/// The resources other servers' live sandboxes hold on a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OthersLoad {
    /// Cpu, millicores.
    pub cpu_millis: u64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Sandboxes.
    pub running: u32,
}

impl NodeEntry {
    pub(crate) fn new(node: RuntimeNode, admission: Arc<Admission>) -> Self {
        NodeEntry {
            node,
            engine: None,
            admission,
            allocated_cpu_millis: 0,
            allocated_memory_mb: 0,
            running: 0,
            in_flight_cpu_millis: 0,
            in_flight_memory_mb: 0,
            in_flight: 0,
            others: OthersLoad::default(),
        }
    }

    /// The record with its load filled in.
    pub(crate) fn snapshot(&self) -> RuntimeNode {
        let mut n = self.node.clone();
        let o = &self.others;
        n.allocated_cpu_cores =
            self.allocated_cpu_millis.saturating_add(o.cpu_millis) as f64 / 1000.0;
        n.allocated_memory_mb = self.allocated_memory_mb.saturating_add(o.memory_mb);
        n.running_containers = self.running.saturating_add(o.running);
        n.in_flight = self.in_flight;
        n
    }

    pub(crate) fn load(&self) -> NodeLoad<'_> {
        NodeLoad {
            node_id: &self.node.node_id,
            schedulable: self.node.status == NodeStatus::Online,
            total_cpu_millis: cores_to_millis(self.node.total_cpu_cores),
            total_memory_mb: self.node.total_memory_mb,
            max_containers: self.node.max_containers,
            allocated_cpu_millis: self
                .allocated_cpu_millis
                .saturating_add(self.others.cpu_millis),
            allocated_memory_mb: self
                .allocated_memory_mb
                .saturating_add(self.others.memory_mb),
            running: self.running.saturating_add(self.others.running),
            in_flight_cpu_millis: self.in_flight_cpu_millis,
            in_flight_memory_mb: self.in_flight_memory_mb,
            in_flight: self.in_flight,
            images: &self.node.cached_images,
        }
    }

    /// Sets health; returns the previous and new status when the status changed.
    pub(crate) fn set_healthy(
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
            self.engine = None;
        }
        (before != self.node.status).then_some((before, self.node.status))
    }
}

/// The registry's load operations, in exact units. `Demand` carries the amounts.
pub(crate) fn reserve(entry: &mut NodeEntry, d: &Demand<'_>) {
    entry.in_flight = entry.in_flight.saturating_add(1);
    entry.in_flight_cpu_millis = entry.in_flight_cpu_millis.saturating_add(d.cpu_millis);
    entry.in_flight_memory_mb = entry.in_flight_memory_mb.saturating_add(d.memory_mb);
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
    entry.running = entry.running.saturating_add(1);
    entry.allocated_cpu_millis = entry.allocated_cpu_millis.saturating_add(d.cpu_millis);
    entry.allocated_memory_mb = entry.allocated_memory_mb.saturating_add(d.memory_mb);
}

/// Frees a destroyed sandbox's share of the node.
pub(crate) fn free(entry: &mut NodeEntry, d: &Demand<'_>) {
    entry.running = entry.running.saturating_sub(1);
    entry.allocated_cpu_millis = entry.allocated_cpu_millis.saturating_sub(d.cpu_millis);
    entry.allocated_memory_mb = entry.allocated_memory_mb.saturating_sub(d.memory_mb);
}

/// The node map and the placement index over it. Reads go through `Deref` to the map; every
/// change goes through a method here or an [`EntryMut`], which refiles the node in the index
/// when dropped, so the index cannot fall behind heartbeats, allocations and releases.
#[derive(Default)]
pub(crate) struct Registry {
    map: HashMap<String, NodeEntry>,
    index: PlacementIndex,
}

/// A node being changed; the index learns its new load when this is dropped.
pub(crate) struct EntryMut<'a> {
    entry: &'a mut NodeEntry,
    index: &'a mut PlacementIndex,
}

impl Drop for EntryMut<'_> {
    fn drop(&mut self) {
        let load = self.entry.load();
        self.index.upsert(load.node_id, NodeState::of(&load));
    }
}

impl std::ops::Deref for EntryMut<'_> {
    type Target = NodeEntry;
    fn deref(&self) -> &NodeEntry {
        self.entry
    }
}

impl std::ops::DerefMut for EntryMut<'_> {
    fn deref_mut(&mut self) -> &mut NodeEntry {
        self.entry
    }
}

impl std::ops::Deref for Registry {
    type Target = HashMap<String, NodeEntry>;
    fn deref(&self) -> &Self::Target {
        &self.map
    }
}

impl Registry {
    /// The node to change, if registered.
    pub(crate) fn get_mut(&mut self, node_id: &str) -> Option<EntryMut<'_>> {
        let entry = self.map.get_mut(node_id)?;
        Some(EntryMut {
            entry,
            index: &mut self.index,
        })
    }

    /// The node to change, made with `new` when absent.
    pub(crate) fn get_or_insert_with(
        &mut self,
        node_id: &str,
        new: impl FnOnce() -> NodeEntry,
    ) -> EntryMut<'_> {
        let entry = self.map.entry(node_id.to_string()).or_insert_with(new);
        EntryMut {
            entry,
            index: &mut self.index,
        }
    }

    /// Adds or replaces a node.
    pub(crate) fn insert(&mut self, node_id: String, entry: NodeEntry) {
        let load = entry.load();
        self.index.upsert(&node_id, NodeState::of(&load));
        self.map.insert(node_id, entry);
    }

    /// Forgets a node.
    pub(crate) fn remove(&mut self, node_id: &str) -> Option<NodeEntry> {
        self.index.remove(node_id);
        self.map.remove(node_id)
    }

    /// The node for `demand` among all registered nodes (see [`PlacementIndex`]).
    pub(crate) fn place(&self, demand: &Demand<'_>) -> Result<&str, NoPlacement> {
        self.index.place(demand)
    }
}

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
