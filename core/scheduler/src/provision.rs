//! Creating and ending sandboxes: placement, admission, the container (see `hardening`), start,
//! the readiness exec, accounting, records and events.

use super::engine::{ContainerSpec, EngineRef, NetworkSpec};
use super::hardening::{labels, resolve_user};
use super::node;
use super::placement::{self, cores_to_millis, Demand, NoPlacement};
use super::sandbox::{Sandbox, SandboxStatus, TerminationReason};
use super::template::{resolve, NetworkPolicy, SandboxPlan, SandboxRequest, Template};
use super::{lock, Live, Scheduler};
use crate::error::{Error, Result};
use crate::model::{new_id, now_ms, validate_id, EventPayload};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;

pub(crate) fn demand_of(s: &Sandbox) -> Demand<'_> {
    Demand {
        cpu_millis: cores_to_millis(s.resources.cpu_cores),
        memory_mb: s.resources.memory_mb,
        image: &s.docker_image,
    }
}

impl Scheduler {
    /// Creates a sandbox and returns it ready (an exec works), from the warm pool when the
    /// request takes the template's defaults and the pool has one, cold otherwise.
    ///
    /// The work runs in its own task: a caller that gives up (a dropped future, a closed HTTP
    /// connection) leaves a sandbox that is created, recorded and accounted for, never a
    /// half-made one.
    pub async fn create_sandbox(&self, request: SandboxRequest) -> Result<Sandbox> {
        let this = self.clone();
        tokio::spawn(async move { this.create_sandbox_now(request).await })
            .await
            .map_err(|e| Error::Internal(format!("the sandbox creation task failed: {e}")))?
    }

    async fn create_sandbox_now(&self, request: SandboxRequest) -> Result<Sandbox> {
        if let Some(o) = &request.owner {
            validate_id("owner", o)?;
        }
        if !self.tends(request.owner.as_deref()) {
            return Err(Error::unavailable(format!(
                "another server of the cluster tends the sandboxes of {}; send the request there",
                request
                    .owner
                    .as_deref()
                    .map_or("no owner".to_string(), |o| format!("container {o}"))
            )));
        }
        let template = self.template(&request.template_id).await?;
        let plan = resolve(&template, &request)?;
        if template.spec.warm_pool_size > 0 && request.fits_warm_pool() {
            let started = std::time::Instant::now();
            if let Some(s) = self.claim_warm(&template, &request, &plan).await? {
                let c = &self.inner.counters;
                c.latency.pool_claim.observe(started.elapsed());
                c.pool_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(s);
            }
            self.inner
                .counters
                .pool_misses
                .fetch_add(1, Ordering::Relaxed);
        }
        let s = self
            .create_container(
                &template,
                request.owner.clone(),
                request.node_id.as_deref(),
                plan,
                false,
            )
            .await?;
        self.inner
            .counters
            .cold_starts
            .fetch_add(1, Ordering::Relaxed);
        Ok(s)
    }

    /// Places, admits and creates one sandbox container; `warm` makes a pool member.
    pub(crate) async fn create_container(
        &self,
        template: &Template,
        owner: Option<String>,
        only_node: Option<&str>,
        plan: SandboxPlan,
        warm: bool,
    ) -> Result<Sandbox> {
        let now = now_ms();
        let id = new_id("sbx");
        let mut record = Sandbox {
            docker_container_name: format!("agentvm-{id}"),
            id,
            template_id: template.id.clone(),
            docker_image: template.spec.docker_image.clone(),
            node_id: String::new(),
            docker_container_id: None,
            status: SandboxStatus::Creating,
            resources: plan.resources,
            env: plan.env,
            user: String::new(),
            uid_gid: None,
            workdir: plan.workdir,
            network: super::egress::network_of(&self.inner.instance, template),
            read_only_root: template.spec.security.read_only_root,
            owner,
            warm,
            lifetime_s: plan.lifetime_s,
            idle_timeout_s: plan.idle_timeout_s,
            idle_action: plan.idle_action,
            expires_at: if warm {
                0
            } else {
                now + (plan.lifetime_s as i64).saturating_mul(1000)
            },
            paused_at: None,
            resumed_at: None,
            created_at: now,
            ready_at: None,
            last_activity_at: now,
            executor_url: None,
            termination: None,
        };
        let gate = match self.place(&mut record, only_node) {
            // In a cluster the registry follows the store every heartbeat interval; a node
            // registered (or freed) through another server a moment ago is looked up now.
            Err(_) if self.inner.stewardship.is_some() => {
                self.sync_nodes_now().await?;
                self.place(&mut record, only_node)?
            }
            placed => placed?,
        };
        let permit = match gate.admit().await {
            Ok(p) => p,
            Err(e) => {
                self.settle(&record, false);
                if e.retry_after().is_some() {
                    self.inner
                        .counters
                        .busy_refusals
                        .fetch_add(1, Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        let (status_tx, _) = watch::channel(SandboxStatus::Creating);
        let lifecycle = Arc::new(tokio::sync::Mutex::new(()));
        let _held = lifecycle.clone().lock_owned().await;
        lock(&self.inner.live).insert(
            record.id.clone(),
            Live {
                record: record.clone(),
                status: status_tx,
                lifecycle,
            },
        );
        if let Err(e) = self.persist(&record).await {
            lock(&self.inner.live).remove(&record.id);
            self.settle(&record, false);
            return Err(e);
        }
        self.publish(
            EventPayload::SandboxCreated {
                sandbox_id: record.id.clone(),
                template_id: record.template_id.clone(),
                node_id: record.node_id.clone(),
                warm,
            },
            record.owner.as_deref(),
        );
        let started = Instant::now();
        let outcome = tokio::time::timeout(
            self.inner.config.docker_timeout,
            self.start_container(&mut record, template),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Error::unavailable(format!(
                "Docker on node {} took longer than {:?} to create and start the sandbox",
                record.node_id, self.inner.config.docker_timeout
            )))
        });
        gate.record_start(started.elapsed());
        drop(permit);
        match outcome {
            Ok(()) => {
                let now = now_ms();
                record.transition(SandboxStatus::Running)?;
                record.ready_at = Some(now);
                record.last_activity_at = now;
                self.settle(&record, true);
                self.persist(&record).await?;
                if let Some(l) = lock(&self.inner.live).get_mut(&record.id) {
                    l.record = record.clone();
                    l.status.send_replace(SandboxStatus::Running);
                }
                self.publish(
                    EventPayload::SandboxReady {
                        sandbox_id: record.id.clone(),
                        node_id: record.node_id.clone(),
                        docker_id: record.docker_container_id.clone().unwrap_or_default(),
                        ready_ms: (now - record.created_at).max(0) as u64,
                    },
                    record.owner.as_deref(),
                );
                Ok(record)
            }
            Err(e) => {
                self.inner
                    .counters
                    .create_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.node_failed(&record.node_id, &e);
                if let Ok(engine) = self.engine(&record.node_id).await {
                    let _ = engine.remove(&record.docker_container_name).await;
                }
                self.settle(&record, false);
                let msg = format!(
                    "creating sandbox {} on node {} failed: {e}",
                    record.id, record.node_id
                );
                self.finish(
                    &mut record,
                    TerminationReason::CreateFailed,
                    Some(e.to_string()),
                    None,
                    false,
                )
                .await;
                Err(match e {
                    Error::Remote { kind, .. } => Error::Remote { kind, message: msg },
                    other => other,
                })
            }
        }
    }

    /// Chooses a node for `record` (setting its `node_id`) and reserves the capacity in flight.
    fn place(
        &self,
        record: &mut Sandbox,
        only_node: Option<&str>,
    ) -> Result<Arc<super::admission::Admission>> {
        let started = Instant::now();
        let mut nodes = lock(&self.inner.nodes);
        let demand = demand_of(record);
        let chosen = match only_node {
            // Pinned to one node: the rule on that node alone.
            Some(n) => match nodes.get(n) {
                Some(e) => placement::place(&[e.load()], &demand).map(|_| n.to_string()),
                None => return Err(Error::not_found("Node", n)),
            },
            None => nodes.place(&demand).map(str::to_string),
        };
        let chosen = match chosen {
            Ok(id) => id,
            Err(why) => return Err(self.no_placement(why, record, &nodes)),
        };
        let mut entry = nodes
            .get_mut(&chosen)
            .ok_or_else(|| Error::Internal("a placed node vanished".into()))?;
        node::reserve(&mut entry, &demand_of(record));
        record.node_id = chosen;
        let admission = entry.admission.clone();
        drop(entry);
        drop(nodes);
        self.inner
            .counters
            .latency
            .placement
            .observe(started.elapsed());
        Ok(admission)
    }

    fn no_placement(&self, why: NoPlacement, r: &Sandbox, nodes: &node::Registry) -> Error {
        let statuses = || {
            let mut v: Vec<String> = nodes
                .values()
                .map(|e| {
                    let m = e
                        .node
                        .status_message
                        .as_deref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default();
                    format!("{} is {}{m}", e.node.node_id, e.node.status.as_str())
                })
                .collect();
            v.sort();
            v.join("; ")
        };
        match why {
            NoPlacement::NoNodes => Error::unavailable(
                "no runtime node is registered: register a Docker node first (NodeRegistration, POST /v1/nodes or `agentvm-server node join`)",
            ),
            NoPlacement::NoneSchedulable { registered } => Error::unavailable(format!(
                "none of the {registered} runtime node(s) accepts sandboxes now ({})",
                statuses()
            )),
            NoPlacement::TooLarge { largest_cpu_millis, largest_memory_mb } => Error::invalid(format!(
                "the sandbox asks for {} cores and {} MiB; the largest online node offers {} cores and {} MiB",
                r.resources.cpu_cores,
                r.resources.memory_mb,
                largest_cpu_millis as f64 / 1000.0,
                largest_memory_mb
            )),
            NoPlacement::Full { schedulable } => {
                let retry_after = self.inner.config.heartbeat_interval;
                Error::Busy {
                    message: format!(
                        "all {schedulable} online node(s) are full (cpu, memory or container count); retry after {} ms",
                        retry_after.as_millis()
                    ),
                    retry_after,
                }
            }
        }
    }

    /// Ends an in-flight placement of `record`; `created` counts it against the node.
    fn settle(&self, record: &Sandbox, created: bool) {
        if let Some(mut e) = lock(&self.inner.nodes).get_mut(&record.node_id) {
            node::settle(&mut e, &demand_of(record), created);
        }
    }

    /// The engine: image check, network, create (with limits verified), start, readiness exec.
    async fn start_container(&self, record: &mut Sandbox, template: &Template) -> Result<()> {
        let node_id = record.node_id.clone();
        let engine = self.engine(&node_id).await?;
        let Some(image) = engine.image(&record.docker_image).await? else {
            return Err(Error::invalid(format!(
                "image {} of template {} is not on node {node_id}; agentvm never pulls images: load it on the node (docker load / docker import) first",
                record.docker_image, template.id
            )));
        };
        record.user = resolve_user(
            &template.spec.security,
            Some(&image.labels),
            image.user.as_deref(),
        );
        match &template.spec.network {
            NetworkPolicy::Bridge { name, internal } => {
                self.ensure_network(&engine, name, *internal).await?;
            }
            NetworkPolicy::Allowlist { .. } => {
                let env = self.prepare_egress(&engine, &node_id, template).await?;
                record.env.extend(env);
            }
            NetworkPolicy::None => {}
        }
        let spec = ContainerSpec {
            sandbox: record,
            template,
            instance: &self.inner.instance,
        };
        let created = engine.create(&spec).await.map_err(|e| {
            let msg = e.to_string();
            if msg.contains("storage-opt") || msg.contains("storage opt") {
                Error::invalid(format!(
                    "node {node_id} cannot limit a container's disk (diskMb={}): {msg}; leave diskMb unset or use a read-only root",
                    record.resources.disk_mb.unwrap_or(0)
                ))
            } else {
                e
            }
        })?;
        record.docker_container_id = Some(created.id.clone());
        if matches!(template.spec.network, NetworkPolicy::Allowlist { .. })
            && !template.spec.security.read_only_root
        {
            self.install_egress_ca(&engine, &created.id).await?;
        }
        let warnings: Vec<String> = created
            .warnings
            .into_iter()
            .filter(|w| !w.is_empty())
            .collect();
        if !warnings.is_empty() {
            return Err(Error::invalid(format!(
                "node {node_id} cannot enforce the sandbox's limits: {}",
                warnings.join("; ")
            )));
        }
        engine.start(&created.id).await?;
        let ready = self
            .run_quiet(
                &engine,
                &created.id,
                &record.user,
                vec!["sh", "-c", "id -u; id -g"],
            )
            .await?;
        if ready.0 != 0 {
            return Err(Error::invalid(format!(
                "sandbox {} started but an exec failed (exit {}): {}",
                record.id,
                ready.0,
                ready.1.trim()
            )));
        }
        let ids: Vec<u32> = ready
            .1
            .split_whitespace()
            .filter_map(|t| t.parse().ok())
            .collect();
        if let [uid, gid] = ids[..] {
            record.uid_gid = Some((uid, gid));
        }
        Ok(())
    }

    async fn ensure_network(&self, engine: &EngineRef, name: &str, internal: bool) -> Result<()> {
        if engine.network(name).await?.is_some() {
            return Ok(());
        }
        let mut labels = HashMap::new();
        labels.insert(labels::INSTANCE.to_string(), self.inner.instance.clone());
        engine
            .create_network(&NetworkSpec {
                name,
                internal,
                labels,
            })
            .await
    }

    /// A sandbox record, live or stored.
    pub async fn get_sandbox(&self, id: &str) -> Result<Option<Sandbox>> {
        if let Some(l) = lock(&self.inner.live).get(id) {
            return Ok(Some(l.record.clone()));
        }
        let store = self.inner.store.clone();
        let id = id.to_string();
        super::blocking(move || store.get_sandbox(&id)).await
    }

    /// Every sandbox except unclaimed warm ones, oldest first.
    pub async fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        let store = self.inner.store.clone();
        let mut all = super::blocking(move || store.list_sandboxes()).await?;
        {
            let live = lock(&self.inner.live);
            for s in all.iter_mut() {
                if let Some(l) = live.get(&s.id) {
                    *s = l.record.clone();
                }
            }
        }
        all.retain(|s| !s.warm);
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    /// Stops and removes a sandbox's container; the record stays, `terminated` with reason
    /// `requested`. Terminating an ended sandbox returns it unchanged.
    pub async fn terminate_sandbox(&self, id: &str) -> Result<Sandbox> {
        self.end_sandbox(id, TerminationReason::Requested, None, None)
            .await
    }

    /// Terminates a sandbox if it is live, then deletes its record and executions.
    pub async fn delete_sandbox(&self, id: &str) -> Result<()> {
        let ended = self
            .end_sandbox(id, TerminationReason::Requested, None, None)
            .await?;
        let store = self.inner.store.clone();
        let key = id.to_string();
        if super::blocking(move || store.delete_sandbox(&key)).await? {
            self.publish(
                EventPayload::SandboxRemoved {
                    sandbox_id: id.to_string(),
                },
                ended.owner.as_deref(),
            );
        }
        Ok(())
    }

    /// Ends a sandbox for `reason`: removes its container (SIGKILL, volumes too), frees its
    /// share of the node, records the reason and publishes `sandbox_terminated`.
    pub(crate) async fn end_sandbox(
        &self,
        id: &str,
        reason: TerminationReason,
        message: Option<String>,
        exit_code: Option<i64>,
    ) -> Result<Sandbox> {
        let lifecycle = lock(&self.inner.live).get(id).map(|l| l.lifecycle.clone());
        let Some(lifecycle) = lifecycle else {
            return self
                .get_sandbox(id)
                .await?
                .ok_or_else(|| Error::not_found("Sandbox", id));
        };
        let _held = lifecycle.lock().await;
        let record = lock(&self.inner.live).get(id).map(|l| l.record.clone());
        let Some(mut record) = record else {
            // It ended while we waited (a failed create, another terminate).
            return self
                .get_sandbox(id)
                .await?
                .ok_or_else(|| Error::not_found("Sandbox", id));
        };
        let mut message = message;
        let removed = match self.engine(&record.node_id).await {
            Ok(engine) => engine
                .remove(&record.docker_container_name)
                .await
                .map_err(|e| self.engine_error(&record.node_id, e)),
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            message = Some(note(
                message,
                &format!(
                    "container not removed yet ({e}); the sweep removes it when the node answers"
                ),
            ));
        }
        let was_created = matches!(
            record.status,
            SandboxStatus::Running | SandboxStatus::Paused
        );
        self.finish(&mut record, reason, message, exit_code, was_created)
            .await;
        Ok(record)
    }

    /// Records the end of `record`: state, persistence, accounting, pool, event.
    pub(crate) async fn finish(
        &self,
        record: &mut Sandbox,
        reason: TerminationReason,
        message: Option<String>,
        exit_code: Option<i64>,
        free: bool,
    ) {
        if let Err(e) = record.terminate(reason, message, exit_code, now_ms()) {
            tracing::warn!(sandbox = %record.id, error = %e, "ending a sandbox twice");
            return;
        }
        if free {
            if let Some(mut e) = lock(&self.inner.nodes).get_mut(&record.node_id) {
                node::free(&mut e, &demand_of(record));
            }
        }
        if let Err(e) = self.persist(record).await {
            tracing::error!(sandbox = %record.id, error = %e.chain(), "recording a sandbox's end");
        }
        if let Some(l) = lock(&self.inner.live).remove(&record.id) {
            l.status.send_replace(record.status);
        }
        lock(&self.inner.samples).remove(&record.id);
        lock(&self.inner.addresses).remove(&record.id);
        self.forget_pooled(&record.template_id, &record.id);
        self.inner
            .counters
            .terminated
            .fetch_add(1, Ordering::Relaxed);
        let t = record.termination.as_ref();
        self.publish(
            EventPayload::SandboxTerminated {
                sandbox_id: record.id.clone(),
                status: record.status.as_str().to_string(),
                reason: reason.as_str().to_string(),
                message: t.and_then(|t| t.message.clone()),
            },
            record.owner.as_deref(),
        );
    }

    /// [`ready_sandbox`](Self::ready_sandbox), returned with the sandbox's lifecycle lock
    /// held: no pause, resume or end starts until the guard drops. For what a pause in the
    /// middle would break — an exec being created and started (Docker refuses to start one in
    /// a paused container, and one just started would be frozen with it), a file transfer.
    /// A sandbox paused while this waited for the lock is resumed again.
    pub(crate) async fn ready_held(
        &self,
        id: &str,
    ) -> Result<(Sandbox, tokio::sync::OwnedMutexGuard<()>)> {
        for _ in 0..3 {
            self.ready_sandbox(id).await?;
            let lifecycle = lock(&self.inner.live).get(id).map(|l| l.lifecycle.clone());
            let Some(lifecycle) = lifecycle else {
                return Err(Error::Conflict(format!("sandbox {id} has ended")));
            };
            let held = lifecycle.lock_owned().await;
            let live = lock(&self.inner.live).get(id).map(|l| l.record.clone());
            match live {
                Some(record) if record.status == SandboxStatus::Running => {
                    return Ok((record, held))
                }
                // Paused (or ending) while this waited for the lock: round again.
                Some(_) => continue,
                None => return Err(Error::Conflict(format!("sandbox {id} has ended"))),
            }
        }
        Err(Error::Conflict(format!(
            "sandbox {id} was paused again each time it was resumed; try again"
        )))
    }

    /// Marks a sandbox active now: its idle timeout starts again. The scheduler marks its own
    /// execs, file operations and terminal traffic; a front end calls this for activity only
    /// it sees, such as bytes through the port proxy. A sandbox this scheduler does not hold
    /// live (unknown, ended, or tended by another server of a cluster) is left alone.
    pub fn mark_active(&self, sandbox_id: &str) {
        if let Some(l) = lock(&self.inner.live).get_mut(sandbox_id) {
            l.record.last_activity_at = now_ms();
        }
    }

    /// Waits until a sandbox is running (or fails clearly), resuming it when it is paused,
    /// and marks it active.
    pub(crate) async fn ready_sandbox(&self, id: &str) -> Result<Sandbox> {
        let paused = lock(&self.inner.live)
            .get(id)
            .is_some_and(|l| l.record.status == SandboxStatus::Paused);
        if paused {
            self.resume(id, super::lifecycle::Cause::Activity).await?;
        }
        let rx = lock(&self.inner.live).get(id).map(|l| l.status.subscribe());
        let Some(mut rx) = rx else {
            return match self.get_sandbox(id).await? {
                Some(s) => Err(ended(&s)),
                None => Err(Error::not_found("Sandbox", id)),
            };
        };
        let waited = tokio::time::timeout(
            self.inner.config.docker_timeout,
            rx.wait_for(|s| *s != SandboxStatus::Creating),
        )
        .await;
        if waited.is_err() {
            return Err(Error::Conflict(format!(
                "sandbox {id} is still being created; try again"
            )));
        }
        let now = now_ms();
        let mut live = lock(&self.inner.live);
        match live.get_mut(id) {
            Some(l) if l.record.status == SandboxStatus::Running => {
                l.record.last_activity_at = now;
                Ok(l.record.clone())
            }
            Some(l) => Err(ended(&l.record)),
            None => {
                drop(live);
                Err(Error::Conflict(format!("sandbox {id} has ended")))
            }
        }
    }
}

fn note(message: Option<String>, extra: &str) -> String {
    match message {
        Some(m) => format!("{m}; {extra}"),
        None => extra.to_string(),
    }
}

pub(crate) fn ended(s: &Sandbox) -> Error {
    let why = s
        .termination
        .as_ref()
        .map(|t| {
            let m = t
                .message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            format!(" ({}{m})", t.reason.as_str())
        })
        .unwrap_or_default();
    Error::Conflict(format!("sandbox {} has ended: {}{why}", s.id, s.status))
}
