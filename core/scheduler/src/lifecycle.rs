//! What happens to a live sandbox between its start and its end: pause and resume (Docker
//! pause and unpause; idle sandboxes of `idleAction: pause` templates are paused by the sweep,
//! and the next exec or file operation resumes them), its deadline (`sandbox_extend_request`),
//! snapshots (its filesystem committed into a new image and template on its node) and one
//! sample of what it uses (Docker stats, one shot).
//!
//! Pause, resume and the end of a sandbox hold its lifecycle lock, so they never interleave.

use super::engine::{Commit, EngineRef};
use super::hardening::labels;
use super::sandbox::{Sandbox, SandboxStatus};
use super::template::{validate_lifetime, Template, TemplateSpec};
use super::{lock, Scheduler};
use crate::error::{Error, ErrorKind, Result};
use crate::model::scheduler::usage::cpu_percent;
use crate::model::scheduler::{IdleAction, NodeUsage, SandboxUsage};
use crate::model::{now_ms, EventPayload};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// How long `/metrics` waits for one sandbox's stats before counting it unsampled.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

/// Label on snapshot images: the sandbox they were committed from.
pub(crate) const SNAPSHOT_OF: &str = "agentvm.snapshot-of";

/// Why a sandbox is paused or resumed, as the events say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// A caller asked.
    Requested,
    /// The idle sweep paused it.
    Idle,
    /// An exec or file operation needed it running.
    Activity,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::Requested => "requested",
            Cause::Idle => "idle",
            Cause::Activity => "activity",
        }
    }
}

impl Scheduler {
    /// Freezes a running sandbox's processes (Docker pause). It keeps its memory and files;
    /// its lifetime keeps running. `Conflict` when it is already paused, still being created,
    /// or has ended.
    pub async fn pause_sandbox(&self, id: &str) -> Result<Sandbox> {
        self.pause(id, Cause::Requested).await
    }

    /// Lets a paused sandbox run again. A running sandbox is returned unchanged.
    pub async fn resume_sandbox(&self, id: &str) -> Result<Sandbox> {
        self.resume(id, Cause::Requested).await
    }

    /// The lifecycle lock of a live sandbox, or why there is none.
    async fn lifecycle_of(&self, id: &str) -> Result<Arc<tokio::sync::Mutex<()>>> {
        let held = lock(&self.inner.live).get(id).map(|l| l.lifecycle.clone());
        match held {
            Some(l) => Ok(l),
            None => match self.get_sandbox(id).await? {
                Some(s) => Err(super::provision::ended(&s)),
                None => Err(Error::not_found("Sandbox", id)),
            },
        }
    }

    /// The live record, once its lifecycle lock is held.
    fn live_record(&self, id: &str) -> Result<Sandbox> {
        lock(&self.inner.live)
            .get(id)
            .map(|l| l.record.clone())
            .ok_or_else(|| Error::Conflict(format!("sandbox {id} has ended")))
    }

    /// Replaces the live record and its status, then persists it.
    async fn store_live(&self, record: &Sandbox) -> Result<()> {
        self.set_live(record);
        self.persist(record).await
    }

    /// Makes `record` the live one in memory (and its status the one waiters see).
    fn set_live(&self, record: &Sandbox) {
        if let Some(l) = lock(&self.inner.live).get_mut(&record.id) {
            l.record = record.clone();
            l.status.send_replace(record.status);
        }
    }

    pub(crate) async fn pause(&self, id: &str, cause: Cause) -> Result<Sandbox> {
        let lifecycle = self.lifecycle_of(id).await?;
        let _held = lifecycle.lock().await;
        let mut record = self.live_record(id)?;
        match record.status {
            SandboxStatus::Running => {}
            SandboxStatus::Paused => {
                return Err(Error::Conflict(format!("sandbox {id} is already paused")))
            }
            SandboxStatus::Creating => {
                return Err(Error::Conflict(format!(
                    "sandbox {id} is still being created; pause it once it runs"
                )))
            }
            _ => return Err(super::provision::ended(&record)),
        }
        if record.warm {
            return Err(Error::Conflict(format!(
                "sandbox {id} waits in its template's warm pool; only claimed sandboxes pause"
            )));
        }
        let engine = self.engine(&record.node_id).await?;
        engine
            .pause(&record.docker_container_name)
            .await
            .map_err(|e| self.engine_error(&record.node_id, e))?;
        let now = now_ms();
        record.transition(SandboxStatus::Paused)?;
        record.paused_at = Some(now);
        self.store_live(&record).await?;
        self.inner.counters.pauses.fetch_add(1, Ordering::Relaxed);
        tracing::info!(sandbox = %id, cause = cause.as_str(), "sandbox paused");
        self.publish(
            EventPayload::SandboxPaused {
                sandbox_id: id.to_string(),
                reason: cause.as_str().to_string(),
            },
            record.owner.as_deref(),
        );
        Ok(record)
    }

    pub(crate) async fn resume(&self, id: &str, cause: Cause) -> Result<Sandbox> {
        let lifecycle = self.lifecycle_of(id).await?;
        let held = lifecycle.lock_owned().await;
        let mut record = self.live_record(id)?;
        match record.status {
            SandboxStatus::Paused => {}
            SandboxStatus::Running | SandboxStatus::Creating => return Ok(record),
            _ => return Err(super::provision::ended(&record)),
        }
        let engine = self.engine(&record.node_id).await?;
        match engine.unpause(&record.docker_container_name).await {
            Ok(()) => {}
            // "is not paused": it runs already (a pause lost across a crash).
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            Err(e) => return Err(self.engine_error(&record.node_id, e)),
        }
        let now = now_ms();
        let paused_ms = record
            .paused_at
            .map(|p| now.saturating_sub(p).max(0) as u64)
            .unwrap_or(0);
        record.transition(SandboxStatus::Running)?;
        record.paused_at = None;
        record.resumed_at = Some(now);
        record.last_activity_at = now;
        if cause == Cause::Activity {
            // The exec or file operation that woke it waits for its own work, not for this
            // record. It is written with the lifecycle lock still held, so a pause or an end
            // that follows is written after it; a crash before it lands leaves a paused record
            // whose container runs, which reconciliation takes as running.
            self.set_live(&record);
            let (this, written) = (self.clone(), record.clone());
            tokio::spawn(async move {
                let _held = held;
                if let Err(e) = this.persist(&written).await {
                    tracing::warn!(sandbox = %written.id, error = %e.chain(), "recording a resume");
                }
            });
        } else {
            self.store_live(&record).await?;
            drop(held);
        }
        self.inner.counters.resumes.fetch_add(1, Ordering::Relaxed);
        tracing::info!(sandbox = %id, cause = cause.as_str(), paused_ms, "sandbox resumed");
        self.publish(
            EventPayload::SandboxResumed {
                sandbox_id: id.to_string(),
                reason: cause.as_str().to_string(),
                paused_ms,
            },
            record.owner.as_deref(),
        );
        Ok(record)
    }

    /// Moves a live sandbox's deadline to `ttl_s` seconds from now. `InvalidInput` for 0, a
    /// negative value, or more than 30 days; `Conflict` for an ended sandbox or an unclaimed
    /// warm one (its clock has not started).
    pub async fn extend_sandbox(&self, id: &str, ttl_s: i64) -> Result<Sandbox> {
        let seconds = u64::try_from(ttl_s)
            .map_err(|_| Error::invalid(format!("ttlS must be positive, not {ttl_s}")))?;
        validate_lifetime("ttlS", seconds)?;
        let lifecycle = self.lifecycle_of(id).await?;
        let _held = lifecycle.lock().await;
        let mut record = self.live_record(id)?;
        if record.warm {
            return Err(Error::Conflict(format!(
                "sandbox {id} waits in its template's warm pool; its lifetime starts when it is claimed"
            )));
        }
        let now = now_ms();
        record.expires_at = now.saturating_add((seconds as i64).saturating_mul(1000));
        record.lifetime_s = u64::try_from((record.expires_at - record.created_at) / 1000)
            .unwrap_or(seconds)
            .max(1);
        self.store_live(&record).await?;
        Ok(record)
    }

    /// Commits a running or paused sandbox's filesystem into a new image on its node
    /// (`agentvm-snapshot/<sandboxId>:<ms>`, labelled with the sandbox) and registers a
    /// template for it: a copy of the sandbox's template with that image, no warm pool and
    /// `idleAction` kept. Its processes are not part of it. `AlreadyExists` when `template_id`
    /// is taken.
    pub async fn snapshot_sandbox(
        &self,
        id: &str,
        template_id: Option<&str>,
        name: Option<&str>,
    ) -> Result<(Template, String)> {
        let lifecycle = self.lifecycle_of(id).await?;
        let _held = lifecycle.lock().await;
        let record = self.live_record(id)?;
        if !matches!(
            record.status,
            SandboxStatus::Running | SandboxStatus::Paused
        ) {
            return Err(Error::Conflict(format!(
                "sandbox {id} is {}; only running or paused sandboxes can be snapshotted",
                record.status
            )));
        }
        let now = now_ms();
        let new_id = match template_id {
            Some(t) => t.to_string(),
            None => format!("snap-{id}-{now}"),
        };
        super::template::validate_template_id(&new_id)?;
        if self.get_template(&new_id).await?.is_some() {
            return Err(Error::AlreadyExists {
                what: "Template",
                id: new_id,
            });
        }
        let mut spec = match self.get_template(&record.template_id).await? {
            Some(t) => t.spec,
            None => TemplateSpec::new(&new_id, &record.docker_image),
        };
        let repo = format!("agentvm-snapshot/{}", id.to_ascii_lowercase());
        let tag = now.to_string();
        let image = format!("{repo}:{tag}");
        let mut image_labels = HashMap::new();
        image_labels.insert(SNAPSHOT_OF.to_string(), id.to_string());
        image_labels.insert(labels::TEMPLATE.to_string(), new_id.clone());
        let engine = self.engine(&record.node_id).await?;
        engine
            .commit(&Commit {
                container: &record.docker_container_name,
                repo: &repo,
                tag: &tag,
                comment: format!("snapshot of sandbox {id}"),
                // A paused sandbox is frozen already; a running one is frozen while committed.
                pause: record.status == SandboxStatus::Running,
                labels: image_labels,
            })
            .await
            .map_err(|e| self.engine_error(&record.node_id, e))?;
        spec.name = name.map(str::to_string).unwrap_or_else(|| new_id.clone());
        spec.docker_image = image.clone();
        spec.warm_pool_size = 0;
        if spec.idle_action != IdleAction::Pause {
            spec.idle_action = IdleAction::Terminate;
        }
        if let Some(mut e) = lock(&self.inner.nodes).get_mut(&record.node_id) {
            e.node.cached_images.push(image.clone());
        }
        let template = self.create_template(&new_id, spec).await?;
        self.inner
            .counters
            .snapshots
            .fetch_add(1, Ordering::Relaxed);
        self.publish(
            EventPayload::SandboxSnapshotted {
                sandbox_id: id.to_string(),
                template_id: template.id.clone(),
                image: image.clone(),
            },
            record.owner.as_deref(),
        );
        Ok((template, image))
    }

    /// One sample of what a live sandbox uses (Docker stats, one shot, no waiting). The cpu
    /// percent is measured against the previous sample the scheduler took of it.
    pub async fn sandbox_usage(&self, id: &str) -> Result<SandboxUsage> {
        let live = lock(&self.inner.live).get(id).map(|l| l.record.clone());
        let record = match live {
            Some(r) => r,
            None => {
                return match self.get_sandbox(id).await? {
                    Some(s) => Err(super::provision::ended(&s)),
                    None => Err(Error::not_found("Sandbox", id)),
                }
            }
        };
        if record.status == SandboxStatus::Creating {
            return Err(Error::Conflict(format!(
                "sandbox {id} is still being created; ask again once it runs"
            )));
        }
        let engine = self.engine(&record.node_id).await?;
        let usage = sample(self, &engine, &record).await?;
        Ok(usage)
    }

    /// What the live sandboxes of each node use together (one Docker stats sample of each,
    /// taken concurrently, each bounded by 2 s), by node id. Warm sandboxes count: they hold
    /// memory too. For `/metrics`.
    pub async fn usage_by_node(&self) -> Vec<NodeUsage> {
        let records: Vec<Sandbox> = lock(&self.inner.live)
            .values()
            .filter(|l| l.record.status != SandboxStatus::Creating)
            .map(|l| l.record.clone())
            .collect();
        let samples = futures::future::join_all(records.iter().map(|r| async move {
            let engine = self.engine(&r.node_id).await.ok()?;
            tokio::time::timeout(SAMPLE_TIMEOUT, sample(self, &engine, r))
                .await
                .ok()?
                .ok()
        }))
        .await;
        let mut by_node: std::collections::BTreeMap<String, NodeUsage> = lock(&self.inner.nodes)
            .keys()
            .map(|id| {
                (
                    id.clone(),
                    NodeUsage {
                        node_id: id.clone(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        for (r, u) in records.iter().zip(samples) {
            let n = by_node
                .entry(r.node_id.clone())
                .or_insert_with(|| NodeUsage {
                    node_id: r.node_id.clone(),
                    ..Default::default()
                });
            n.sandboxes += 1;
            if r.status == SandboxStatus::Paused {
                n.paused += 1;
            }
            match u {
                Some(u) => {
                    n.cpu_total_ns = n.cpu_total_ns.saturating_add(u.cpu_total_ns);
                    n.memory_bytes = n.memory_bytes.saturating_add(u.memory_bytes);
                    n.pids = n.pids.saturating_add(u.pids);
                    n.net_rx_bytes = n.net_rx_bytes.saturating_add(u.net_rx_bytes);
                    n.net_tx_bytes = n.net_tx_bytes.saturating_add(u.net_tx_bytes);
                }
                None => n.unsampled += 1,
            }
        }
        by_node.into_values().collect()
    }
}

/// Takes one stats sample of `record`'s container and turns it into a [`SandboxUsage`],
/// remembering it for the next sample's cpu percent.
pub(crate) async fn sample(
    scheduler: &Scheduler,
    engine: &EngineRef,
    record: &Sandbox,
) -> Result<SandboxUsage> {
    let stats = engine
        .stats(&record.docker_container_name)
        .await
        .map_err(|e| scheduler.engine_error(&record.node_id, e))?;
    let at = now_ms();
    let cpu_total_ns = stats.cpu_total_ns;
    let previous = lock(&scheduler.inner.samples).insert(record.id.clone(), (cpu_total_ns, at));
    Ok(SandboxUsage {
        sandbox_id: record.id.clone(),
        node_id: record.node_id.clone(),
        status: record.status,
        cpu_total_ns,
        cpu_percent: previous.and_then(|(cpu0, t0)| cpu_percent(cpu0, t0, cpu_total_ns, at)),
        memory_bytes: stats.memory_bytes,
        memory_limit_bytes: stats.memory_limit_bytes,
        pids: stats.pids,
        net_rx_bytes: stats.net_rx_bytes,
        net_tx_bytes: stats.net_tx_bytes,
        at,
    })
}
