//! Hygiene. Docker is the truth: at start-up and on every sweep each reachable node's
//! containers labelled with this scheduler's instance are compared with the records.
//!
//! - a container whose record is live in this process: fine, unless it stopped running
//!   (then the sandbox ends, `container_exited`);
//! - a container from before a restart whose record is still creating or running: adopted
//!   (after an exec works) or removed, as [`super::OrphanPolicy`] says;
//! - a container with no record, or whose record has ended: removed;
//! - a record still creating or running whose container is gone: ended, `container_lost`.
//!
//! The sweep also ends expired, idle and stuck-creating sandboxes. Every end has a reason and
//! an event; nothing is reaped silently. The executors' callbacks (`containers/ready`,
//! `containers/exited`) are handled here too.

use super::engine::{EngineRef, RunState};
use super::hardening::labels;
use super::lifecycle::Cause;
use super::node::NodeStatus;
use super::sandbox::{IdleAction, Sandbox, SandboxStatus, TerminationReason};
use super::{blocking, lock, Inner, Live, OrphanPolicy, Scheduler};
use crate::error::{Error, Result};
use crate::model::{now_ms, EventPayload};
pub use agentvm_model::scheduler::executor::*;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Instant;
use tokio::sync::watch;

/// Ended sandboxes deleted by one sweep at most (the rest go in the next ones), so a backlog
/// of history never makes a sweep long.
const MAX_REMOVED_PER_SWEEP: usize = 1_000;

/// What a reconciliation did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReconcileReport {
    /// Sandboxes adopted (running again under this process).
    pub adopted: Vec<String>,
    /// Sandboxes whose container was removed by policy (`reconciled`).
    pub removed: Vec<String>,
    /// Sandboxes ended because their container had stopped or vanished.
    pub lost: Vec<String>,
    /// Docker containers removed because no live record owns them.
    pub orphans_removed: Vec<String>,
    /// Nodes that could not be asked.
    pub unreachable_nodes: Vec<String>,
    /// Egress networks of deleted templates removed (see `remove_stale_egress_networks`).
    pub networks_removed: Vec<String>,
}

/// What a sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReport {
    /// Ended because their lifetime ran out.
    pub expired: Vec<String>,
    /// Ended because nothing used them.
    pub idle: Vec<String>,
    /// Sandboxes paused because they were idle (`idleAction: pause`).
    pub paused: Vec<String>,
    /// Failed because they stayed `creating` too long.
    pub stuck: Vec<String>,
    /// Ended longer ago than the retention: their records and executions were deleted.
    pub removed: Vec<String>,
    /// Egress proxies stopped and networks removed, as `<template>@<node>`: their template
    /// was deleted and its last sandbox on the node ended.
    pub egress_retired: Vec<String>,
    /// The comparison with Docker.
    pub reconcile: ReconcileReport,
}

/// One labelled container as Docker lists it.
struct Found {
    /// Docker's id, to inspect or remove it.
    docker_id: String,
    /// Whether Docker listed it as running.
    running: bool,
    /// Whether Docker listed it as paused.
    paused: bool,
    /// Docker's status text (`Exited (137) 3 seconds ago`), for the exit code and messages.
    status: String,
}

impl Scheduler {
    /// Compares every reachable node's containers with the records (the start-up pass; the
    /// sweep repeats it).
    pub async fn reconcile(&self) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let nodes: Vec<(String, NodeStatus)> = lock(&self.inner.nodes)
            .values()
            .map(|e| (e.node.node_id.clone(), e.node.status))
            .collect();
        let store = self.inner.store.clone();
        let records = blocking(move || store.list_sandboxes()).await?;
        for (node_id, status) in nodes {
            if status == NodeStatus::Offline {
                report.unreachable_nodes.push(node_id);
                continue;
            }
            if let Err(e) = self.reconcile_node(&node_id, &records, &mut report).await {
                tracing::warn!(node_id, error = %e, "reconciling a node");
                report.unreachable_nodes.push(node_id);
                continue;
            }
            let stale = match self.engine(&node_id).await {
                Ok(d) => self.remove_stale_egress_networks(&node_id, &d).await,
                Err(e) => Err(e),
            };
            match stale {
                Ok(removed) => report.networks_removed.extend(removed),
                Err(e) => {
                    tracing::warn!(node_id, error = %e, "looking for networks of deleted templates")
                }
            }
        }
        let c = &self.inner.counters;
        c.adopted
            .fetch_add(report.adopted.len() as u64, Ordering::Relaxed);
        c.orphans_removed
            .fetch_add(report.orphans_removed.len() as u64, Ordering::Relaxed);
        Ok(report)
    }

    async fn reconcile_node(
        &self,
        node_id: &str,
        records: &[Sandbox],
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let d = self.engine(node_id).await?;
        let listed = d
            .list(&self.inner.instance)
            .await
            .map_err(|e| self.engine_error(node_id, e))?;
        let mut found: HashMap<String, Found> = HashMap::new();
        for c in listed {
            let Some(sid) = c.labels.get(labels::SANDBOX).cloned() else {
                continue;
            };
            found.insert(
                sid,
                Found {
                    docker_id: c.id,
                    running: c.state == RunState::Running,
                    paused: c.state == RunState::Paused,
                    status: c.status,
                },
            );
        }
        let by_id: HashMap<&str, &Sandbox> = records.iter().map(|r| (r.id.as_str(), r)).collect();
        let live: HashSet<String> = lock(&self.inner.live).keys().cloned().collect();
        for (sid, c) in &found {
            if live.contains(sid) {
                let running = lock(&self.inner.live)
                    .get(sid)
                    .map(|l| {
                        matches!(
                            l.record.status,
                            SandboxStatus::Running | SandboxStatus::Paused
                        )
                    })
                    .unwrap_or(false);
                // The list may predate the start of a sandbox created meanwhile (or a resume):
                // ask again.
                if running && !c.running && !c.paused && !self.still_running(&d, &c.docker_id).await
                {
                    let code = exit_code_of(&c.status);
                    self.end_sandbox(
                        sid,
                        TerminationReason::ContainerExited,
                        Some(format!("the container stopped ({})", c.status)),
                        code,
                    )
                    .await?;
                    report.lost.push(sid.clone());
                }
                continue;
            }
            // The current record (the list may be older than a create that just finished).
            let store = self.inner.store.clone();
            let key = sid.clone();
            let record = blocking(move || store.get_sandbox(&key)).await?;
            if lock(&self.inner.live).contains_key(sid) {
                continue;
            }
            // In a cluster, another server may tend it (and may be creating it right now).
            if !self.tends(record.as_ref().and_then(|r| r.owner.as_deref())) {
                continue;
            }
            match record {
                Some(r) if !r.status.is_terminal() && r.node_id == node_id => {
                    self.reconcile_orphan(&d, r, c, report).await?;
                }
                _ => {
                    remove(&d, &c.docker_id).await;
                    report.orphans_removed.push(c.docker_id.clone());
                }
            }
        }
        // Records on this node that Docker no longer has.
        for r in records.iter().filter(|r| {
            r.node_id == node_id && !r.status.is_terminal() && self.tends(r.owner.as_deref())
        }) {
            if found.contains_key(&r.id)
                || live.contains(&r.id)
                || !by_id.contains_key(r.id.as_str())
            {
                continue;
            }
            // The snapshot may be stale: act on the record as it is now.
            let store = self.inner.store.clone();
            let key = r.id.clone();
            let Some(mut r) = blocking(move || store.get_sandbox(&key)).await? else {
                continue;
            };
            if r.status.is_terminal() || lock(&self.inner.live).contains_key(&r.id) {
                continue;
            }
            self.finish(
                &mut r,
                TerminationReason::ContainerLost,
                Some(format!("no container on node {node_id}")),
                None,
                false,
            )
            .await;
            report.lost.push(r.id);
        }
        Ok(())
    }

    /// A container from before a restart whose record is still live: adopt or remove it.
    async fn reconcile_orphan(
        &self,
        d: &EngineRef,
        mut r: Sandbox,
        c: &Found,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        if self.inner.config.orphans == OrphanPolicy::Remove {
            remove(d, &c.docker_id).await;
            self.finish(
                &mut r,
                TerminationReason::Reconciled,
                Some("agentvm restarted; configured to remove surviving sandboxes".into()),
                None,
                false,
            )
            .await;
            report.removed.push(r.id);
            return Ok(());
        }
        // A paused container stays paused: it answers no exec, and the next exec or file
        // operation resumes it. A record left paused whose container runs (a crash between
        // the unpause and the record) is running.
        if c.paused {
            return self.adopt(r, c, SandboxStatus::Paused, report).await;
        }
        let ready = if c.running {
            self.run_quiet(d, &c.docker_id, &r.user, vec!["true"])
                .await
                .map(|(code, _)| code == 0)
                .unwrap_or(false)
        } else {
            false
        };
        if !ready {
            remove(d, &c.docker_id).await;
            let (reason, msg) = if r.status == SandboxStatus::Creating {
                (
                    TerminationReason::CreateFailed,
                    "agentvm restarted while it was being created",
                )
            } else {
                (
                    TerminationReason::ContainerExited,
                    "its container was not running after agentvm restarted",
                )
            };
            self.finish(
                &mut r,
                reason,
                Some(format!("{msg} ({})", c.status)),
                exit_code_of(&c.status),
                false,
            )
            .await;
            report.lost.push(r.id);
            return Ok(());
        }
        self.adopt(r, c, SandboxStatus::Running, report).await
    }

    /// Takes a surviving container back as a live sandbox in `status` (`running` or `paused`).
    async fn adopt(
        &self,
        mut r: Sandbox,
        c: &Found,
        status: SandboxStatus,
        report: &mut ReconcileReport,
    ) -> Result<()> {
        let now = now_ms();
        if r.status == SandboxStatus::Creating {
            r.transition(SandboxStatus::Running)?;
            r.ready_at = Some(now);
        }
        if r.status != status {
            r.transition(status)?;
        }
        match status {
            SandboxStatus::Paused => {
                r.paused_at.get_or_insert(now);
            }
            _ => r.paused_at = None,
        }
        r.docker_container_id = Some(c.docker_id.clone());
        r.last_activity_at = now;
        self.persist(&r).await?;
        if let Some(mut e) = lock(&self.inner.nodes).get_mut(&r.node_id) {
            super::node::allocate(
                &mut e,
                &super::placement::Demand {
                    cpu_millis: super::placement::cores_to_millis(r.resources.cpu_cores),
                    memory_mb: r.resources.memory_mb,
                    image: &r.docker_image,
                },
            );
        }
        let (status, _) = watch::channel(r.status);
        lock(&self.inner.live).insert(
            r.id.clone(),
            Live {
                record: r.clone(),
                status,
                lifecycle: Arc::new(tokio::sync::Mutex::new(())),
            },
        );
        if r.warm {
            self.pool_add(&r.template_id, &r.id);
        }
        self.resume_egress(&r).await;
        self.publish(
            EventPayload::SandboxAdopted {
                sandbox_id: r.id.clone(),
                node_id: r.node_id.clone(),
            },
            r.owner.as_deref(),
        );
        report.adopted.push(r.id);
        Ok(())
    }

    /// One sweep: expired, idle and stuck sandboxes end (idle ones of `idleAction: pause`
    /// pause instead); then Docker is compared.
    pub async fn sweep(&self) -> Result<SweepReport> {
        let now = now_ms();
        let stuck_ms = self.inner.config.stuck_creating_after.as_millis() as i64;
        let mut report = SweepReport::default();
        // A sandbox running an exec is busy, whatever its last activity says: it is neither
        // paused nor ended for being idle (its lifetime still ends it).
        let busy: HashSet<String> = lock(&self.inner.running)
            .values()
            .map(|c| c.started.sandbox_id.clone())
            .collect();
        self.forget_untended();
        let to_pause: Vec<String> = lock(&self.inner.live)
            .values()
            .filter(|l| {
                let r = &l.record;
                self.tends(r.owner.as_deref())
                    && r.idle_action == IdleAction::Pause
                    && !r.is_expired(now)
                    && r.is_idle(now)
                    && !busy.contains(&r.id)
            })
            .map(|l| l.record.id.clone())
            .collect();
        for id in to_pause {
            match self.pause(&id, Cause::Idle).await {
                Ok(_) => report.paused.push(id),
                // It ended, was resumed or paused meanwhile: the next sweep looks again.
                Err(e) if e.kind() == crate::error::ErrorKind::Conflict => {}
                Err(e) => tracing::warn!(sandbox = %id, error = %e, "pausing an idle sandbox"),
            }
        }
        let candidates: Vec<(String, TerminationReason)> = lock(&self.inner.live)
            .values()
            .filter_map(|l| {
                let r = &l.record;
                if !self.tends(r.owner.as_deref()) {
                    None
                } else if r.is_expired(now) {
                    Some((r.id.clone(), TerminationReason::Expired))
                } else if r.is_idle(now)
                    && r.idle_action == IdleAction::Terminate
                    && !busy.contains(&r.id)
                {
                    Some((r.id.clone(), TerminationReason::Idle))
                } else if r.status == SandboxStatus::Creating
                    && now - r.created_at >= stuck_ms
                    && l.lifecycle.try_lock().is_ok()
                {
                    Some((r.id.clone(), TerminationReason::StuckCreating))
                } else {
                    None
                }
            })
            .collect();
        for (id, reason) in candidates {
            let msg = match reason {
                TerminationReason::Expired => "its lifetime ran out",
                TerminationReason::Idle => "no exec or file operation within its idle timeout",
                _ => "it stayed creating too long",
            };
            self.end_sandbox(&id, reason, Some(msg.into()), None)
                .await?;
            match reason {
                TerminationReason::Expired => report.expired.push(id),
                TerminationReason::Idle => report.idle.push(id),
                _ => report.stuck.push(id),
            }
        }
        // Records left creating by an earlier process on a node that never answered.
        let store = self.inner.store.clone();
        let records = blocking(move || store.list_sandboxes()).await?;
        let retention_ms =
            i64::try_from(self.inner.config.ended_retention.as_millis()).unwrap_or(i64::MAX);
        let past_retention: Vec<(String, Option<String>)> = records
            .iter()
            .filter(|r| {
                r.status.is_terminal()
                    && self.tends(r.owner.as_deref())
                    && now.saturating_sub(r.termination.as_ref().map_or(r.created_at, |t| t.at))
                        >= retention_ms
            })
            .take(MAX_REMOVED_PER_SWEEP)
            .map(|r| (r.id.clone(), r.owner.clone()))
            .collect();
        for mut r in records {
            let stale = r.status == SandboxStatus::Creating
                && now - r.created_at >= stuck_ms
                && self.tends(r.owner.as_deref());
            if stale && !lock(&self.inner.live).contains_key(&r.id) {
                self.finish(
                    &mut r,
                    TerminationReason::StuckCreating,
                    Some("it stayed creating across a restart".into()),
                    None,
                    false,
                )
                .await;
                report.stuck.push(r.id);
            }
        }
        for (id, owner) in past_retention {
            // Not live here: a record is terminal for good once written so.
            if lock(&self.inner.live).contains_key(&id) {
                continue;
            }
            let store = self.inner.store.clone();
            let key = id.clone();
            match blocking(move || store.delete_sandbox(&key)).await {
                Ok(true) => {
                    self.publish(
                        EventPayload::SandboxRemoved {
                            sandbox_id: id.clone(),
                        },
                        owner.as_deref(),
                    );
                    report.removed.push(id);
                }
                // Another server's sweep deleted it first.
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(sandbox = %id, error = %e, "deleting an ended sandbox past its retention");
                    break;
                }
            }
        }
        // Egress proxies of templates deleted while their sandboxes ran.
        for template_id in self.egress_templates() {
            let store = self.inner.store.clone();
            let key = template_id.clone();
            if blocking(move || store.get_template(&key)).await?.is_none() {
                report.egress_retired.extend(
                    self.retire_egress(&template_id)
                        .await
                        .into_iter()
                        .map(|node| format!("{template_id}@{node}")),
                );
            }
        }
        report.reconcile = self.reconcile().await?;
        Ok(report)
    }

    /// Whether Docker says the container runs now (unknown counts as running: never end a
    /// sandbox on a guess).
    async fn still_running(&self, d: &EngineRef, docker_id: &str) -> bool {
        match d.inspect(docker_id).await {
            Ok(Some(c)) => c.running,
            Ok(None) => false,
            Err(_) => true,
        }
    }

    fn find_sandbox(&self, container_id: &str, sandbox_id: Option<&str>) -> Result<String> {
        let live = lock(&self.inner.live);
        if let Some(id) = sandbox_id {
            if live.contains_key(id) {
                return Ok(id.to_string());
            }
        }
        live.values()
            .find(|l| {
                l.record
                    .docker_container_id
                    .as_deref()
                    .is_some_and(|c| c.starts_with(container_id) && !container_id.is_empty())
                    || l.record.docker_container_name == container_id
            })
            .map(|l| l.record.id.clone())
            .ok_or_else(|| Error::not_found("Sandbox", sandbox_id.unwrap_or(container_id)))
    }

    /// An executor in a sandbox reports it is up: its URL is recorded.
    pub async fn container_ready(&self, report: ContainerReady) -> Result<Sandbox> {
        let id = self.find_sandbox(&report.docker_container_id, report.session_id.as_deref())?;
        let record = {
            let mut live = lock(&self.inner.live);
            let l = live
                .get_mut(&id)
                .ok_or_else(|| Error::not_found("Sandbox", id.clone()))?;
            l.record.executor_url = report.executor_url;
            l.record.last_activity_at = now_ms();
            l.record.clone()
        };
        self.persist(&record).await?;
        Ok(record)
    }

    /// An executor reports its sandbox's main process exited: the sandbox ends.
    pub async fn container_exited(&self, report: ContainerExited) -> Result<Sandbox> {
        let id = self.find_sandbox(&report.docker_container_id, report.session_id.as_deref())?;
        let msg = match report.exit_code {
            Some(c) => format!("the executor reported exit code {c}"),
            None => "the executor reported an exit".to_string(),
        };
        self.end_sandbox(
            &id,
            TerminationReason::ContainerExited,
            Some(msg),
            report.exit_code,
        )
        .await
    }
}

/// `Exited (137) 3 seconds ago` -> 137.
fn exit_code_of(status: &str) -> Option<i64> {
    let start = status.find("Exited (")? + "Exited (".len();
    let end = status[start..].find(')')? + start;
    status[start..end].parse().ok()
}

async fn remove(d: &EngineRef, docker_id: &str) {
    if let Err(e) = d.remove(docker_id).await {
        tracing::warn!(container = docker_id, error = %e, "removing a container");
    }
}

/// The background loop: node health every heartbeat interval, a sweep every sweep interval,
/// pool refills on every tick. Ends when the last [`Scheduler`] handle is dropped.
pub(crate) async fn background(weak: Weak<Inner>) {
    let (tick, heartbeat, sweep) = match weak.upgrade() {
        Some(inner) => {
            let c = &inner.config;
            let tick = c.heartbeat_interval.min(c.sweep_interval) / 2;
            (
                tick.max(std::time::Duration::from_millis(10)),
                c.heartbeat_interval,
                c.sweep_interval,
            )
        }
        None => return,
    };
    let mut last_health = Instant::now();
    let mut last_sweep = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let Some(inner) = weak.upgrade() else { return };
        let s = Scheduler { inner };
        if last_health.elapsed() >= heartbeat {
            if s.inner.stewardship.is_some() {
                if let Err(e) = s.sync_nodes().await {
                    tracing::warn!(error = %e.chain(), "following the shared store's nodes");
                }
            }
            s.check_nodes().await;
            last_health = Instant::now();
        }
        if last_sweep.elapsed() >= sweep {
            if let Err(e) = s.sweep().await {
                tracing::warn!(error = %e.chain(), "sweeping sandboxes");
            }
            last_sweep = Instant::now();
        }
        s.refill_pools().await;
        if s.inner.stewardship.is_some() {
            if let Err(e) = s.share_heartbeats().await {
                tracing::warn!(error = %e.chain(), "sharing heartbeats with the cluster");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_come_from_docker_status() {
        assert_eq!(exit_code_of("Exited (137) 3 seconds ago"), Some(137));
        assert_eq!(exit_code_of("Exited (0) About a minute ago"), Some(0));
        assert_eq!(exit_code_of("Up 2 seconds"), None);
    }

    #[test]
    fn executor_reports_accept_the_seed_bodies() {
        let r: ContainerReady = serde_json::from_value(serde_json::json!({
            "container_id": "abc123", "session_id": "sess_xxx",
            "executor_url": "http://container-name:8080"}))
        .unwrap();
        assert_eq!(r.session_id.as_deref(), Some("sess_xxx"));
        let x: ContainerExited =
            serde_json::from_value(serde_json::json!({"containerId": "abc", "exitCode": 3}))
                .unwrap();
        assert_eq!(x.exit_code, Some(3));
    }
}
