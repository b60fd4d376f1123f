//! A scheduler sharing its store with other servers (a cluster; see [`Stewardship`]): which
//! sandboxes it tends, letting go of the ones another server now tends, and following the
//! nodes other servers registered, drained, removed or heard from.

use super::node::{self, Liveness, NodeEntry, NodeStatus, OthersLoad};
use super::placement::cores_to_millis;
use super::provision::demand_of;
use super::sandbox::SandboxStatus;
use super::stewardship::Stewardship;
use super::{blocking, lock, Scheduler};
use crate::error::Result;
use crate::model::now_ms;
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// Syncs a request forces (a placement that found no room) happen at most this often; the
/// requests meanwhile wait for the one in progress and use what it read. Without it, a storm
/// of creates on a full cluster would each read every node and sandbox record and ping every
/// node.
pub(crate) const FORCED_SYNC_EVERY: Duration = Duration::from_secs(1);

impl Scheduler {
    /// Whether this process tends a sandbox owned by `owner` (`None`: an operator's or a warm
    /// one): always on one server; in a cluster, when it holds that owner's lease.
    pub fn tends(&self, owner: Option<&str>) -> bool {
        self.inner
            .stewardship
            .as_ref()
            .is_none_or(|s| s.tends(owner))
    }

    /// The stewardship this scheduler follows, in a cluster.
    pub fn stewardship(&self) -> Option<&std::sync::Arc<Stewardship>> {
        self.inner.stewardship.as_ref()
    }

    /// Lets go of live sandboxes this process no longer tends (their owner's lease moved to
    /// another server, which adopts them): they leave this process's books without any
    /// Docker call, so nothing here pauses, ends or counts them any more. A sandbox being
    /// created or ended here right now is left to finish first.
    pub(crate) fn forget_untended(&self) {
        if self.inner.stewardship.is_none() {
            return;
        }
        let gone: Vec<_> = {
            let mut live = lock(&self.inner.live);
            let ids: Vec<String> = live
                .values()
                .filter(|l| {
                    !self.tends(l.record.owner.as_deref()) && l.lifecycle.try_lock().is_ok()
                })
                .map(|l| l.record.id.clone())
                .collect();
            ids.iter().filter_map(|id| live.remove(id)).collect()
        };
        for l in gone {
            let r = &l.record;
            if matches!(r.status, SandboxStatus::Running | SandboxStatus::Paused) {
                if let Some(mut e) = lock(&self.inner.nodes).get_mut(&r.node_id) {
                    node::free(&mut e, &demand_of(r));
                }
            }
            lock(&self.inner.samples).remove(&r.id);
            lock(&self.inner.addresses).remove(&r.id);
            self.forget_pooled(&r.template_id, &r.id);
            tracing::info!(sandbox = %r.id, owner = r.owner.as_deref().unwrap_or("-"),
                "another server tends this sandbox now");
        }
    }

    /// A sync (and a health round, so nodes learned from the store can be placed on) for a
    /// placement that found no room, coalesced: see [`FORCED_SYNC_EVERY`].
    pub(crate) async fn sync_nodes_now(&self) -> Result<()> {
        let mut last = self.inner.forced_sync.lock().await;
        if last.is_some_and(|t| t.elapsed() < FORCED_SYNC_EVERY) {
            return Ok(());
        }
        self.sync_nodes().await?;
        self.check_nodes().await;
        *last = Some(Instant::now());
        Ok(())
    }

    /// Takes one node over from the shared store, if another server registered it (a
    /// heartbeat for a node this server has not met yet): one record read, not a sync. Its
    /// charge for other servers' sandboxes comes with the next sync.
    pub(crate) async fn follow_node(&self, node_id: &str) -> Result<()> {
        let store = self.inner.store.clone();
        let id = node_id.to_string();
        let Some(n) = blocking(move || store.get_node(&id)).await? else {
            return Ok(());
        };
        let mut nodes = lock(&self.inner.nodes);
        if !nodes.contains_key(node_id) {
            nodes.insert(node_id.to_string(), self.learned(n, OthersLoad::default()));
            tracing::info!(node = %node_id, "a node registered through another server");
        }
        Ok(())
    }

    /// A node learned from the store, as at start-up: a heartbeating node keeps its word; a
    /// probed one is offline until this server's health round reaches it.
    fn learned(&self, mut n: node::RuntimeNode, others: OthersLoad) -> NodeEntry {
        let offline_ms = self.inner.config.offline_after.as_millis() as i64;
        let healthy = n.liveness == Liveness::Heartbeat
            && n.last_heartbeat_at
                .is_some_and(|t| now_ms() - t < offline_ms);
        n.status = if healthy {
            n.admin_status
        } else {
            NodeStatus::Offline
        };
        n.status_message = (!healthy).then(|| "not checked by this server yet".into());
        let id = n.node_id.clone();
        let mut entry = NodeEntry::new(n, self.new_gate(&id));
        entry.others = others;
        entry
    }

    /// Follows the shared store: nodes registered through other servers are added, nodes
    /// removed there are dropped, an operator's drain or maintenance and a heartbeat another
    /// server received are taken over, and each node is charged what other servers' live
    /// sandboxes hold on it, so placements here do not overfill it. Runs every heartbeat
    /// interval on a scheduler with a [`Stewardship`]; the charge is as fresh as that.
    pub async fn sync_nodes(&self) -> Result<()> {
        self.share_heartbeats().await?;
        let store = self.inner.store.clone();
        let (stored, records) =
            blocking(move || Ok((store.list_nodes()?, store.list_sandboxes()?))).await?;
        let mine: HashSet<String> = lock(&self.inner.live).keys().cloned().collect();
        let mut others: HashMap<String, OthersLoad> = HashMap::new();
        for r in records
            .iter()
            .filter(|r| !r.status.is_terminal() && !mine.contains(&r.id))
        {
            let o = others.entry(r.node_id.clone()).or_default();
            o.cpu_millis = o
                .cpu_millis
                .saturating_add(cores_to_millis(r.resources.cpu_cores));
            o.memory_mb = o.memory_mb.saturating_add(r.resources.memory_mb);
            o.running = o.running.saturating_add(1);
        }
        let now = now_ms();
        let offline_ms = self.inner.config.offline_after.as_millis() as i64;
        let fresh = |at: Option<i64>| at.is_some_and(|t| now - t < offline_ms);
        let mut back = Vec::new();
        let mut nodes = lock(&self.inner.nodes);
        let in_store: HashSet<String> = stored.iter().map(|n| n.node_id.clone()).collect();
        for n in stored {
            let load = others.remove(&n.node_id).unwrap_or_default();
            if let Some(mut e) = nodes.get_mut(&n.node_id) {
                e.others = load;
                if n.last_heartbeat_at > e.node.last_heartbeat_at {
                    e.node.last_heartbeat_at = n.last_heartbeat_at;
                    if e.node.liveness == Liveness::Heartbeat
                        && e.node.status == NodeStatus::Offline
                        && fresh(n.last_heartbeat_at)
                    {
                        back.push(n.node_id.clone());
                    }
                }
                if e.node.admin_status != n.admin_status {
                    e.node.admin_status = n.admin_status;
                    if e.node.status != NodeStatus::Offline {
                        e.node.status = n.admin_status;
                    }
                }
                if e.node.api_endpoint != n.api_endpoint || e.node.tls != n.tls {
                    e.engine = None;
                    e.node.api_endpoint = n.api_endpoint;
                    e.node.tls = n.tls;
                }
                e.node.total_cpu_cores = n.total_cpu_cores;
                e.node.total_memory_mb = n.total_memory_mb;
                e.node.max_containers = n.max_containers;
                e.node.labels = n.labels;
                continue;
            }
            let id = n.node_id.clone();
            let entry = self.learned(n, load);
            tracing::info!(node = %id, "a node registered through another server");
            nodes.insert(id, entry);
        }
        // Removed through another server. One registered here a moment ago may not be in the
        // store yet: only nodes older than the offline delay are dropped.
        let removed: Vec<String> = nodes
            .values()
            .filter(|e| !in_store.contains(&e.node.node_id))
            .filter(|e| now - e.node.registered_at >= offline_ms)
            .map(|e| e.node.node_id.clone())
            .collect();
        for id in removed {
            nodes.remove(&id);
            tracing::info!(node = %id, "a node removed through another server");
        }
        drop(nodes);
        for id in back {
            self.set_health(&id, true, None);
        }
        Ok(())
    }

    /// In a cluster, shares a heartbeat with the other members. The time is queued and
    /// written with the others received meanwhile in one batch ([`Self::share_heartbeats`], every
    /// background tick and before each sync); a changed image list is written at once. Only
    /// those fields change in the stored record: an operator's drain made through another
    /// server is not overwritten by this server's older view.
    pub(crate) async fn share_heartbeat(&self, node_id: &str, images_changed: bool) -> Result<()> {
        if self.inner.stewardship.is_none() {
            return Ok(());
        }
        let Some(mine) = self.get_node(node_id)? else {
            return Ok(());
        };
        if !images_changed {
            if let Some(at) = mine.last_heartbeat_at {
                lock(&self.inner.heartbeats).insert(mine.node_id, at);
            }
            return Ok(());
        }
        let store = self.inner.store.clone();
        blocking(move || {
            let Some(mut record) = store.get_node(&mine.node_id)? else {
                return Ok(());
            };
            record.last_heartbeat_at = mine.last_heartbeat_at;
            record.cached_images = mine.cached_images;
            store.put_node(&record)
        })
        .await
    }

    /// Writes the heartbeats queued since the last call to the shared store in one batch;
    /// how many. Runs every background tick and before each [`Self::sync_nodes`].
    pub async fn share_heartbeats(&self) -> Result<usize> {
        let beats: Vec<(String, i64)> = lock(&self.inner.heartbeats).drain().collect();
        if beats.is_empty() {
            return Ok(0);
        }
        let n = beats.len();
        let store = self.inner.store.clone();
        blocking(move || store.touch_nodes(&beats)).await?;
        Ok(n)
    }
}
