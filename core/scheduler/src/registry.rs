//! The node and template registries on [`Scheduler`]: static and dynamic registration,
//! heartbeats, health checks, draining and maintenance; template create, read, update, delete.

use super::admission::Admission;
use super::node::{Heartbeat, Liveness, NodeEntry, NodeRegistration, NodeStatus, RuntimeNode};
use super::template::{validate_template_id, Template, TemplateSpec};
use super::{blocking, lock, Scheduler, TerminationReason};
use crate::error::{Error, Result};
use crate::model::now_ms;
use std::sync::Arc;

impl Scheduler {
    pub(crate) fn load_nodes(&self) -> Result<()> {
        let stored = self.inner.store.list_nodes()?;
        let now = now_ms();
        let offline_ms = self.inner.config.offline_after.as_millis() as i64;
        let mut nodes = lock(&self.inner.nodes);
        for mut node in stored {
            let fresh = node
                .last_heartbeat_at
                .map(|t| now - t < offline_ms)
                .unwrap_or(false);
            // Probed nodes are checked right after loading; heartbeating ones keep their word.
            let healthy = node.liveness == Liveness::Heartbeat && fresh;
            node.status = if healthy {
                node.admin_status
            } else {
                NodeStatus::Offline
            };
            node.status_message = (!healthy).then(|| "not checked since agentvm started".into());
            let gate = self.new_gate(&node.node_id);
            nodes.insert(node.node_id.clone(), NodeEntry::new(node, gate));
        }
        Ok(())
    }

    pub(crate) fn new_gate(&self, node_id: &str) -> Arc<Admission> {
        Arc::new(Admission::new(
            node_id,
            self.inner.config.max_starts_in_flight,
            self.inner.config.max_start_queue,
        ))
    }

    /// Registers a node or updates its registration (upsert). Capacity and images left out
    /// are asked from its Docker daemon; a daemon that does not answer then is `Unavailable`.
    /// A node agent's registration (liveness `heartbeat`) counts as its first heartbeat.
    pub async fn register_node(&self, reg: NodeRegistration) -> Result<RuntimeNode> {
        self.register(reg, false).await
    }

    /// Registers a node given at open (the CLI's `--docker`, a config file, `Scheduler.open`):
    /// one whose Docker does not answer is kept as an `offline` node saying why (listed, never
    /// placed on), and comes online with its capacity once a probe reaches it.
    pub(crate) async fn register_static_node(&self, reg: NodeRegistration) -> Result<RuntimeNode> {
        self.register(reg, true).await
    }

    async fn register(&self, reg: NodeRegistration, offline_if_down: bool) -> Result<RuntimeNode> {
        reg.validate()?;
        let probe = self
            .connect(&reg.node_id, &reg.api_endpoint, reg.tls.as_ref())
            .await;
        let (engine, machine, images, down) = match probe {
            Ok(e) => {
                let machine = e.machine().await.ok();
                let images = e.images().await.ok();
                (Some(e), machine, images, None)
            }
            Err(e) => (None, None, None, Some(e)),
        };
        let cpu = reg
            .total_cpu_cores
            .or_else(|| machine.as_ref().and_then(|m| m.cpu_cores));
        let memory = reg
            .total_memory_mb
            .or_else(|| machine.as_ref().and_then(|m| m.memory_mb));
        let (cpu, memory) = match (cpu, memory, &down) {
            // Capacity unknown until Docker answers: none to place on meanwhile.
            (None, _, Some(_)) | (_, None, Some(_)) if offline_if_down => (Some(0.0), Some(0)),
            other => (other.0, other.1),
        };
        let (Some(cpu), Some(memory)) = (cpu, memory) else {
            return Err(down.unwrap_or_else(|| {
                Error::unavailable(format!(
                    "node {}: Docker did not report its cpu and memory; give total_cpu_cores and total_memory_mb",
                    reg.node_id
                ))
            }));
        };
        let now = now_ms();
        let healthy = down.is_none() || reg.liveness == Liveness::Heartbeat;
        let snapshot = {
            let mut nodes = lock(&self.inner.nodes);
            let gate = self.new_gate(&reg.node_id);
            let mut guard = nodes.get_or_insert_with(&reg.node_id, || {
                NodeEntry::new(
                    RuntimeNode {
                        node_id: reg.node_id.clone(),
                        hostname: String::new(),
                        runtime_type: reg.runtime_type.clone(),
                        ip_address: None,
                        api_endpoint: String::new(),
                        tls: None,
                        status: NodeStatus::Offline,
                        admin_status: NodeStatus::Online,
                        status_message: None,
                        total_cpu_cores: 0.0,
                        total_memory_mb: 0,
                        allocated_cpu_cores: 0.0,
                        allocated_memory_mb: 0,
                        running_containers: 0,
                        in_flight: 0,
                        max_containers: 0,
                        cached_images: Vec::new(),
                        labels: Default::default(),
                        liveness: reg.liveness,
                        last_heartbeat_at: None,
                        registered_at: now,
                    },
                    gate,
                )
            });
            let entry: &mut NodeEntry = &mut guard;
            let n = &mut entry.node;
            if n.api_endpoint != reg.api_endpoint || n.tls != reg.tls {
                entry.engine = None;
            }
            n.hostname = reg.hostname.clone().unwrap_or_else(|| reg.node_id.clone());
            n.ip_address = reg.ip_address.clone();
            n.api_endpoint = reg.api_endpoint.clone();
            n.tls = reg.tls.clone();
            n.total_cpu_cores = cpu;
            n.total_memory_mb = memory;
            n.max_containers = reg.max_containers;
            n.labels = reg.labels.clone();
            n.liveness = reg.liveness;
            if let Some(images) = reg.cached_images.clone().or(images) {
                n.cached_images = images;
            }
            if let Some(e) = engine {
                entry.engine = Some(e);
            }
            entry.snapshot()
        };
        self.set_health(&reg.node_id, healthy, down.as_ref().map(|e| e.to_string()));
        let stored = self.get_node(&reg.node_id)?.unwrap_or(snapshot);
        let store = self.inner.store.clone();
        let record = stored.clone();
        blocking(move || store.put_node(&record)).await?;
        Ok(stored)
    }

    /// A node agent's heartbeat: the node is alive now. `NotFound` tells the agent to register.
    pub async fn heartbeat(&self, hb: Heartbeat) -> Result<RuntimeNode> {
        // In a cluster the node may have registered through another server a moment ago.
        if self.inner.stewardship.is_some() && !lock(&self.inner.nodes).contains_key(&hb.node_id) {
            self.follow_node(&hb.node_id).await?;
        }
        let images_changed = {
            let mut nodes = lock(&self.inner.nodes);
            let mut entry = nodes
                .get_mut(&hb.node_id)
                .ok_or_else(|| Error::not_found("Node", hb.node_id.clone()))?;
            match hb.cached_images {
                Some(images) if images != entry.node.cached_images => {
                    entry.node.cached_images = images;
                    true
                }
                _ => false,
            }
        };
        self.set_health(&hb.node_id, true, None);
        self.share_heartbeat(&hb.node_id, images_changed).await?;
        self.get_node(&hb.node_id)?
            .ok_or_else(|| Error::not_found("Node", hb.node_id))
    }

    /// Every node with its load, by id.
    pub fn list_nodes(&self) -> Vec<RuntimeNode> {
        let mut out: Vec<RuntimeNode> = lock(&self.inner.nodes)
            .values()
            .map(NodeEntry::snapshot)
            .collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// A node with its load.
    pub fn get_node(&self, node_id: &str) -> Result<Option<RuntimeNode>> {
        Ok(lock(&self.inner.nodes)
            .get(node_id)
            .map(NodeEntry::snapshot))
    }

    /// Sets what an operator wants: `online`, `draining` (keeps its sandboxes, takes no new
    /// ones) or `maintenance`. `offline` is decided by health, not set.
    pub async fn set_node_status(&self, node_id: &str, status: NodeStatus) -> Result<RuntimeNode> {
        if status == NodeStatus::Offline {
            return Err(Error::invalid(
                "a node goes offline when its daemon or heartbeats stop; set draining or maintenance instead",
            ));
        }
        let healthy = {
            let mut nodes = lock(&self.inner.nodes);
            let mut entry = nodes
                .get_mut(node_id)
                .ok_or_else(|| Error::not_found("Node", node_id))?;
            entry.node.admin_status = status;
            entry.node.status != NodeStatus::Offline
        };
        if healthy {
            self.set_health(node_id, true, None);
        }
        let node = self
            .get_node(node_id)?
            .ok_or_else(|| Error::not_found("Node", node_id))?;
        let store = self.inner.store.clone();
        let record = node.clone();
        blocking(move || store.put_node(&record)).await?;
        Ok(node)
    }

    /// Removes a node. Refused while sandboxes other than warm ones live on it.
    pub async fn remove_node(&self, node_id: &str) -> Result<()> {
        let (busy, warm): (Vec<String>, Vec<String>) = {
            let live = lock(&self.inner.live);
            let mut busy = Vec::new();
            let mut warm = Vec::new();
            for l in live.values().filter(|l| l.record.node_id == node_id) {
                if l.record.warm {
                    warm.push(l.record.id.clone());
                } else {
                    busy.push(l.record.id.clone());
                }
            }
            (busy, warm)
        };
        if !busy.is_empty() {
            return Err(Error::Conflict(format!(
                "node {node_id} still runs {} sandbox(es) ({}); set it draining and terminate them first",
                busy.len(),
                busy.join(", ")
            )));
        }
        for id in warm {
            self.end_sandbox(
                &id,
                TerminationReason::PoolDrained,
                Some("node removed".into()),
                None,
            )
            .await?;
        }
        let existed = lock(&self.inner.nodes).remove(node_id).is_some();
        let store = self.inner.store.clone();
        let id = node_id.to_string();
        let stored = blocking(move || store.delete_node(&id)).await?;
        if !existed && !stored {
            return Err(Error::not_found("Node", node_id));
        }
        Ok(())
    }

    /// One health round: heartbeating nodes silent for `offline_after` turn offline; probed
    /// nodes are pinged (in parallel) and follow the answer.
    pub async fn check_nodes(&self) {
        let now = now_ms();
        let offline_ms = self.inner.config.offline_after.as_millis() as i64;
        let (silent, probed): (Vec<(String, i64)>, Vec<String>) = {
            let nodes = lock(&self.inner.nodes);
            let mut silent = Vec::new();
            let mut probed = Vec::new();
            for e in nodes.values() {
                match e.node.liveness {
                    Liveness::Heartbeat => {
                        let last = e.node.last_heartbeat_at.unwrap_or(0);
                        if e.node.status != NodeStatus::Offline && now - last >= offline_ms {
                            silent.push((e.node.node_id.clone(), now - last));
                        }
                    }
                    Liveness::Probe => probed.push(e.node.node_id.clone()),
                }
            }
            (silent, probed)
        };
        for (id, quiet) in silent {
            self.set_health(
                &id,
                false,
                Some(format!(
                    "no heartbeat for {} ms (offline after {} ms)",
                    quiet, offline_ms
                )),
            );
        }
        let pings = probed.into_iter().map(|id| async move {
            let result = match self.engine(&id).await {
                Ok(e) => e.ping().await,
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    if let Some(reg) = self.capacity_unknown(&id) {
                        // A static node that was down at open: ask Docker its capacity now.
                        if let Err(e) = self.register(reg, true).await {
                            self.set_health(&id, false, Some(e.to_string()));
                            return;
                        }
                    }
                    self.set_health(&id, true, None)
                }
                Err(e) => self.set_health(&id, false, Some(e.to_string())),
            }
        });
        futures::future::join_all(pings).await;
    }

    /// The registration of a node whose capacity was never learnt (its Docker was down when
    /// it was registered), to register it again.
    fn capacity_unknown(&self, id: &str) -> Option<NodeRegistration> {
        let nodes = lock(&self.inner.nodes);
        let n = &nodes.get(id)?.node;
        if n.total_memory_mb != 0 || n.total_cpu_cores > 0.0 {
            return None;
        }
        let mut reg = NodeRegistration::new(n.node_id.clone(), n.api_endpoint.clone());
        reg.hostname = Some(n.hostname.clone());
        reg.runtime_type = n.runtime_type.clone();
        reg.ip_address = n.ip_address.clone();
        reg.tls = n.tls.clone();
        reg.max_containers = n.max_containers;
        reg.labels = n.labels.clone();
        reg.liveness = n.liveness;
        Some(reg)
    }

    // ----- templates -----

    /// Creates a template (its credential values sealed before they are stored) and returns
    /// it redacted. `AlreadyExists` when the id is taken.
    pub async fn create_template(&self, id: &str, mut spec: TemplateSpec) -> Result<Template> {
        validate_template_id(id)?;
        spec.validate()?;
        self.seal_credentials(&mut spec, None)?;
        let now = now_ms();
        let template = Template {
            id: id.to_string(),
            spec,
            created_at: now,
            updated_at: now,
        };
        let store = self.inner.store.clone();
        let t = template.clone();
        blocking(move || {
            if store.get_template(&t.id)?.is_some() {
                return Err(Error::AlreadyExists {
                    what: "Template",
                    id: t.id.clone(),
                });
            }
            store.put_template(&t)
        })
        .await?;
        Ok(template.redacted())
    }

    /// A template as stored: credential values sealed ([`Template::redacted`] for clients).
    pub async fn get_template(&self, id: &str) -> Result<Option<Template>> {
        let store = self.inner.store.clone();
        let id = id.to_string();
        blocking(move || store.get_template(&id)).await
    }

    /// A template, or `NotFound` naming it.
    pub async fn template(&self, id: &str) -> Result<Template> {
        self.get_template(id)
            .await?
            .ok_or_else(|| Error::not_found("Template", id))
    }

    /// Every template, by id, as stored (credential values sealed).
    pub async fn list_templates(&self) -> Result<Vec<Template>> {
        let store = self.inner.store.clone();
        blocking(move || store.list_templates()).await
    }

    /// Replaces a template's spec. Its warm pool is drained and refilled with the new spec;
    /// sandboxes already made from it keep what they were made with, except the hosts of an
    /// allowlist network, which its egress proxy applies from now on.
    pub async fn update_template(&self, id: &str, mut spec: TemplateSpec) -> Result<Template> {
        spec.validate()?;
        let mut template = self.template(id).await?;
        self.seal_credentials(&mut spec, Some(&template))?;
        template.spec = spec;
        template.updated_at = now_ms();
        let store = self.inner.store.clone();
        let t = template.clone();
        blocking(move || store.put_template(&t)).await?;
        // An allowlist is a live policy: running sandboxes of the template follow it.
        self.refresh_egress(&template);
        self.drain_pool(id, "template updated").await;
        Ok(template.redacted())
    }

    /// Deletes a template and drains its warm pool. Sandboxes made from it keep running; its
    /// egress proxies and networks go once none runs on their node.
    pub async fn delete_template(&self, id: &str) -> Result<()> {
        let store = self.inner.store.clone();
        let key = id.to_string();
        if !blocking(move || store.delete_template(&key)).await? {
            return Err(Error::not_found("Template", id));
        }
        self.drain_pool(id, "template deleted").await;
        self.retire_egress(id).await;
        Ok(())
    }
}
