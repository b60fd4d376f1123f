//! Sandbox, execution, file and scheduler-metrics commands (docs/commands.md), and what the
//! scheduler families share: the operator check and the scheduler itself.
//!
//! Scope rule: a sandbox is visible to callers whose scope holds its `owner`; one without an
//! owner (an operator's, or an unclaimed warm one) only to operators. A sandbox outside the
//! caller's scope behaves exactly like one that does not exist.

use super::super::bus::Scope;
use super::super::local::AgentVm;
use crate::error::{Error, Result};
use crate::model::*;
use crate::scheduler::exec::OutputStream;
use crate::scheduler::{ExecEvent, ExecStatus, Execution, Sandbox, Scheduler};
use base64::Engine;

/// Refuses callers that are not operators (a token for all containers, or auth off).
pub(super) fn require_operator(scope: &Scope, what: &str) -> Result<()> {
    if *scope == Scope::All {
        Ok(())
    } else {
        Err(Error::Unauthorized(format!(
            "{what} needs an operator token: it needs a token for all containers, and this one is scoped to some"
        )))
    }
}

/// The wire name of an execution status.
fn status_name(status: ExecStatus) -> &'static str {
    match status {
        ExecStatus::Pending => "pending",
        ExecStatus::Running => "running",
        ExecStatus::Completed => "completed",
        ExecStatus::Failed => "failed",
        ExecStatus::Timeout => "timeout",
        ExecStatus::Cancelled => "cancelled",
        ExecStatus::Crashed => "crashed",
    }
}

fn finished_event(x: &Execution) -> EventPayload {
    EventPayload::SandboxExecFinished {
        sandbox_id: x.sandbox_id.clone(),
        execution_id: x.id.clone(),
        status: status_name(x.status).to_string(),
        exit_code: x.exit_code,
        error: x.error.clone(),
        truncated: x.truncated,
        duration_ms: x.duration_ms,
    }
}

impl AgentVm {
    /// The embedded scheduler, or `Unavailable` saying how to get one.
    pub(super) fn scheduler_or_unavailable(&self) -> Result<&Scheduler> {
        self.inner.scheduler.as_ref().ok_or_else(|| {
            Error::unavailable(
                "this runtime has no sandbox scheduler: build it with \
                 AgentVm::builder().scheduler(Scheduler::builder().node(...)) \
                 (agentvm-server always embeds one; nodes come from --docker, its config file \
                 or node_register_request)",
            )
        })
    }

    /// The sandbox if it exists and the caller may see it.
    pub(super) async fn visible_sandbox(
        &self,
        scope: &Scope,
        sandbox_id: &str,
    ) -> Result<Option<Sandbox>> {
        if sandbox_id.is_empty() || sandbox_id.len() > MAX_ID_LEN {
            return Ok(None);
        }
        Ok(self
            .scheduler_or_unavailable()?
            .get_sandbox(sandbox_id)
            .await?
            .filter(|s| scope.allows_owner(s.owner.as_deref())))
    }

    /// The sandbox, or `NotFound` (also when it is outside the caller's scope).
    pub(super) async fn sandbox(&self, scope: &Scope, sandbox_id: &str) -> Result<Sandbox> {
        validate_id("sandboxId", sandbox_id)?;
        self.visible_sandbox(scope, sandbox_id)
            .await?
            .ok_or_else(|| Error::not_found("Sandbox", sandbox_id))
    }

    /// Whether the caller may see an execution: operators always, others when they may see
    /// its sandbox.
    async fn execution_visible(&self, scope: &Scope, x: &Execution) -> Result<bool> {
        Ok(*scope == Scope::All || self.visible_sandbox(scope, &x.sandbox_id).await?.is_some())
    }

    /// `Ok` when the caller may join `topic` (a session in its scope, or a sandbox it may
    /// see); otherwise `NotFound`, whether the topic is unknown or outside the scope.
    pub async fn check_topic(&self, scope: &Scope, topic: &str) -> Result<()> {
        if self.visible_topic(scope, topic).await? {
            Ok(())
        } else if topic.starts_with("sbx_") && self.inner.scheduler.is_some() {
            Err(Error::not_found("Sandbox", topic))
        } else {
            Err(Error::not_found("Session", topic))
        }
    }

    /// Whether the caller may join `topic`: a session in its scope, or a sandbox it may see.
    async fn visible_topic(&self, scope: &Scope, topic: &str) -> Result<bool> {
        if topic.is_empty() || topic.len() > MAX_ID_LEN {
            return Ok(false);
        }
        if let Some(s) = self.inner.store.get_session(topic)? {
            return Ok(scope.allows(&s.container_id));
        }
        match &self.inner.scheduler {
            Some(_) => Ok(self.visible_sandbox(scope, topic).await?.is_some()),
            None => Ok(false),
        }
    }

    pub(super) async fn sandbox_create(
        &self,
        scope: &Scope,
        r: SandboxCreateRequest,
    ) -> Result<SandboxCreateResponse> {
        match (&r.owner, scope) {
            (Some(owner), _) => {
                validate_id("owner", owner)?;
                super::check_scope(scope, owner)?;
            }
            (None, Scope::All) => {}
            (None, Scope::Containers(_)) => {
                return Err(Error::Unauthorized(
                    "sandbox_create_request needs an owner: a container in this token's scope"
                        .into(),
                ))
            }
        }
        let s = self.scheduler_or_unavailable()?;
        Ok(SandboxCreateResponse {
            sandbox: s.create_sandbox(r).await?,
        })
    }

    pub(super) async fn sandbox_get(
        &self,
        scope: &Scope,
        r: SandboxGetRequest,
    ) -> Result<SandboxGetResponse> {
        self.scheduler_or_unavailable()?;
        Ok(SandboxGetResponse {
            sandbox: self.visible_sandbox(scope, &r.sandbox_id).await?,
        })
    }

    pub(super) async fn sandbox_list(
        &self,
        scope: &Scope,
        r: SandboxListRequest,
    ) -> Result<SandboxListResponse> {
        let s = self.scheduler_or_unavailable()?;
        if let Some(owner) = &r.owner {
            validate_id("owner", owner)?;
            super::check_scope(scope, owner)?;
        }
        let sandboxes = s
            .list_sandboxes()
            .await?
            .into_iter()
            .filter(|x| scope.allows_owner(x.owner.as_deref()))
            .filter(|x| r.owner.is_none() || x.owner == r.owner)
            .collect();
        Ok(SandboxListResponse { sandboxes })
    }

    pub(super) async fn sandbox_terminate(
        &self,
        scope: &Scope,
        r: SandboxTerminateRequest,
    ) -> Result<SandboxTerminateResponse> {
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        let s = self.scheduler_or_unavailable()?;
        Ok(SandboxTerminateResponse {
            sandbox: s.terminate_sandbox(&sandbox.id).await?,
        })
    }

    pub(super) async fn sandbox_pause(
        &self,
        scope: &Scope,
        r: SandboxPauseRequest,
    ) -> Result<SandboxPauseResponse> {
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        Ok(SandboxPauseResponse {
            sandbox: self
                .scheduler_or_unavailable()?
                .pause_sandbox(&sandbox.id)
                .await?,
        })
    }

    pub(super) async fn sandbox_resume(
        &self,
        scope: &Scope,
        r: SandboxResumeRequest,
    ) -> Result<SandboxResumeResponse> {
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        Ok(SandboxResumeResponse {
            sandbox: self
                .scheduler_or_unavailable()?
                .resume_sandbox(&sandbox.id)
                .await?,
        })
    }

    pub(super) async fn sandbox_extend(
        &self,
        scope: &Scope,
        r: SandboxExtendRequest,
    ) -> Result<SandboxExtendResponse> {
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        Ok(SandboxExtendResponse {
            sandbox: self
                .scheduler_or_unavailable()?
                .extend_sandbox(&sandbox.id, r.ttl_s)
                .await?,
        })
    }

    /// Snapshots make templates, which only operators manage: a container-scoped caller may
    /// snapshot its own sandboxes, but the template is created all the same (templates are
    /// shared), so it needs an operator token like `template_create_request`.
    pub(super) async fn sandbox_snapshot(
        &self,
        scope: &Scope,
        r: SandboxSnapshotRequest,
    ) -> Result<SandboxSnapshotResponse> {
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        require_operator(scope, "sandbox_snapshot_request (it creates a template)")?;
        if let Some(t) = &r.template_id {
            validate_id("templateId", t)?;
        }
        let (template, image) = self
            .scheduler_or_unavailable()?
            .snapshot_sandbox(&sandbox.id, r.template_id.as_deref(), r.name.as_deref())
            .await?;
        Ok(SandboxSnapshotResponse { template, image })
    }

    pub(super) async fn sandbox_usage(
        &self,
        scope: &Scope,
        r: SandboxUsageRequest,
    ) -> Result<SandboxUsageResponse> {
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        Ok(SandboxUsageResponse {
            usage: self
                .scheduler_or_unavailable()?
                .sandbox_usage(&sandbox.id)
                .await?,
        })
    }

    pub(super) async fn sandbox_port(
        &self,
        scope: &Scope,
        r: SandboxPortRequest,
    ) -> Result<SandboxPortResponse> {
        let port = crate::scheduler::ports::checked_port(r.port)?;
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        let address = self
            .scheduler_or_unavailable()?
            .port_address(&sandbox.id, port)
            .await?;
        Ok(SandboxPortResponse {
            sandbox_id: sandbox.id,
            port,
            address: address.to_string(),
        })
    }

    fn webhooks(&self) -> Result<&std::sync::Arc<super::super::webhooks::Webhooks>> {
        self.scheduler_or_unavailable()?;
        self.inner
            .webhooks
            .as_ref()
            .ok_or_else(|| Error::unavailable("this runtime has no webhooks"))
    }

    pub(super) async fn webhook_create(
        &self,
        scope: &Scope,
        r: WebhookCreateRequest,
    ) -> Result<WebhookCreateResponse> {
        require_operator(scope, "webhook_create_request")?;
        if let Some(t) = &r.template_id {
            validate_id("templateId", t)?;
        }
        let secret = match r.secret {
            Some(s) => s,
            None => {
                use rand::RngCore;
                let mut bytes = [0u8; 24];
                rand::rng().fill_bytes(&mut bytes);
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            }
        };
        let webhook = crate::model::scheduler::Webhook {
            id: new_id("whk"),
            url: r.url,
            template_id: r.template_id,
            events: r.events,
            secret,
            created_at: now_ms(),
        };
        let w = self.webhooks()?.clone();
        let bus = self.inner.bus.clone();
        let webhook = tokio::task::spawn_blocking(move || w.register(&bus, webhook))
            .await
            .map_err(|e| Error::Internal(format!("registering a webhook: {e}")))??;
        Ok(WebhookCreateResponse { webhook })
    }

    pub(super) async fn webhook_list(
        &self,
        scope: &Scope,
        _r: WebhookListRequest,
    ) -> Result<WebhookListResponse> {
        require_operator(scope, "webhook_list_request")?;
        Ok(WebhookListResponse {
            webhooks: self.webhooks()?.list(),
        })
    }

    pub(super) async fn webhook_delete(
        &self,
        scope: &Scope,
        r: WebhookDeleteRequest,
    ) -> Result<WebhookDeleteResponse> {
        require_operator(scope, "webhook_delete_request")?;
        validate_id("webhookId", &r.webhook_id)?;
        let w = self.webhooks()?.clone();
        let id = r.webhook_id.clone();
        let existed = tokio::task::spawn_blocking(move || w.remove(&id))
            .await
            .map_err(|e| Error::Internal(format!("removing a webhook: {e}")))??;
        if !existed {
            return Err(Error::not_found("Webhook", &r.webhook_id));
        }
        Ok(WebhookDeleteResponse {
            webhook_id: r.webhook_id,
        })
    }

    pub(super) async fn webhook_deliveries(
        &self,
        scope: &Scope,
        r: WebhookDeliveriesRequest,
    ) -> Result<WebhookDeliveriesResponse> {
        require_operator(scope, "webhook_deliveries_request")?;
        Ok(WebhookDeliveriesResponse {
            deliveries: self.webhooks()?.deliveries(r.webhook_id.as_deref()),
        })
    }

    pub(super) async fn sandbox_delete(
        &self,
        scope: &Scope,
        r: SandboxDeleteRequest,
    ) -> Result<SandboxDeleteResponse> {
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        self.scheduler_or_unavailable()?
            .delete_sandbox(&sandbox.id)
            .await?;
        Ok(SandboxDeleteResponse {
            sandbox_id: sandbox.id,
        })
    }

    /// Runs the command and publishes its output on the sandbox's topic as it comes; answers
    /// with the finished execution after the last event. The output keeps being published if
    /// the caller goes away: the exec runs to its end or its timeout either way.
    pub(super) async fn sandbox_exec(
        &self,
        scope: &Scope,
        r: SandboxExecRequest,
    ) -> Result<SandboxExecResponse> {
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        let s = self.scheduler_or_unavailable()?;
        let (sandbox_id, request) = r.into_parts();
        let command = request.argv()?;
        let mut stream = s.exec(&sandbox_id, request).await?;
        let execution_id = stream.id.clone();
        let context = sandbox.owner.map(|owner| EventContext {
            container_id: Some(owner),
            ..Default::default()
        });
        let bus = self.inner.bus.clone();
        bus.publish(Event::new(
            EventPayload::SandboxExecStarted {
                sandbox_id: sandbox_id.clone(),
                execution_id: execution_id.clone(),
                command,
            },
            context.clone(),
        ));
        let forward = tokio::spawn(async move {
            while let Some(event) = stream.next_event().await {
                match event {
                    ExecEvent::Output { stream, data } => {
                        let stream = match stream {
                            OutputStream::Stdout => "stdout",
                            OutputStream::Stderr => "stderr",
                        };
                        bus.publish(Event::new(
                            EventPayload::SandboxExecOutput {
                                sandbox_id: sandbox_id.clone(),
                                execution_id: execution_id.clone(),
                                stream: stream.to_string(),
                                data,
                            },
                            context.clone(),
                        ));
                    }
                    ExecEvent::Finished(x) => {
                        bus.publish(Event::new(finished_event(&x), context.clone()));
                        return Ok(*x);
                    }
                }
            }
            Err(Error::Internal(format!(
                "execution {execution_id} ended without a result"
            )))
        });
        let execution = forward
            .await
            .map_err(|e| Error::Internal(format!("forwarding an exec's output failed: {e}")))??;
        Ok(SandboxExecResponse { execution })
    }

    pub(super) async fn sandbox_exec_cancel(
        &self,
        scope: &Scope,
        r: SandboxExecCancelRequest,
    ) -> Result<SandboxExecCancelResponse> {
        validate_id("executionId", &r.execution_id)?;
        let s = self.scheduler_or_unavailable()?;
        let known = s.get_execution(&r.execution_id).await?;
        match known {
            Some(x) if self.execution_visible(scope, &x).await? => {}
            _ => return Err(Error::not_found("Execution", r.execution_id)),
        }
        let (execution, cancelled) = s.cancel_exec(&r.execution_id).await?;
        Ok(SandboxExecCancelResponse {
            execution,
            cancelled,
        })
    }

    pub(super) async fn execution_get(
        &self,
        scope: &Scope,
        r: ExecutionGetRequest,
    ) -> Result<ExecutionGetResponse> {
        let s = self.scheduler_or_unavailable()?;
        if r.execution_id.is_empty() || r.execution_id.len() > MAX_ID_LEN {
            return Ok(ExecutionGetResponse { execution: None });
        }
        let execution = match s.get_execution(&r.execution_id).await? {
            Some(x) if self.execution_visible(scope, &x).await? => Some(x),
            _ => None,
        };
        Ok(ExecutionGetResponse { execution })
    }

    pub(super) async fn execution_list(
        &self,
        scope: &Scope,
        r: ExecutionListRequest,
    ) -> Result<ExecutionListResponse> {
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        Ok(ExecutionListResponse {
            executions: self
                .scheduler_or_unavailable()?
                .list_executions(&sandbox.id)
                .await?,
        })
    }

    pub(super) async fn sandbox_file_read(
        &self,
        scope: &Scope,
        r: SandboxFileReadRequest,
    ) -> Result<SandboxFileReadResponse> {
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        let bytes = self
            .scheduler_or_unavailable()?
            .read_file(&sandbox.id, &r.path)
            .await?;
        let size = bytes.len() as u64;
        let content = match r.encoding {
            FileEncoding::Utf8 => String::from_utf8(bytes).map_err(|_| {
                Error::invalid(format!(
                    "{} is not UTF-8 text; read it with \"encoding\":\"base64\"",
                    r.path
                ))
            })?,
            FileEncoding::Base64 => base64::engine::general_purpose::STANDARD.encode(bytes),
        };
        Ok(SandboxFileReadResponse {
            path: r.path,
            content,
            encoding: r.encoding,
            size,
        })
    }

    pub(super) async fn sandbox_file_write(
        &self,
        scope: &Scope,
        r: SandboxFileWriteRequest,
    ) -> Result<SandboxFileWriteResponse> {
        let bytes = match r.encoding {
            FileEncoding::Utf8 => r.content.into_bytes(),
            FileEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(r.content.as_bytes())
                .map_err(|e| Error::invalid(format!("content is not valid base64: {e}")))?,
        };
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        let size = bytes.len() as u64;
        self.scheduler_or_unavailable()?
            .write_file(&sandbox.id, &r.path, bytes)
            .await?;
        Ok(SandboxFileWriteResponse { path: r.path, size })
    }

    pub(super) async fn sandbox_file_list(
        &self,
        scope: &Scope,
        r: SandboxFileListRequest,
    ) -> Result<SandboxFileListResponse> {
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        let path = r.path.as_deref().unwrap_or(".");
        Ok(SandboxFileListResponse {
            files: self
                .scheduler_or_unavailable()?
                .list_files(&sandbox.id, path)
                .await?,
        })
    }

    pub(super) async fn sandbox_file_delete(
        &self,
        scope: &Scope,
        r: SandboxFileDeleteRequest,
    ) -> Result<SandboxFileDeleteResponse> {
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        self.scheduler_or_unavailable()?
            .delete_file(&sandbox.id, &r.path, r.recursive)
            .await?;
        Ok(SandboxFileDeleteResponse { path: r.path })
    }

    pub(super) async fn scheduler_metrics(
        &self,
        scope: &Scope,
        _r: SchedulerMetricsRequest,
    ) -> Result<SchedulerMetricsResponse> {
        require_operator(scope, "scheduler_metrics_request")?;
        Ok(SchedulerMetricsResponse {
            metrics: self.scheduler_or_unavailable()?.metrics(),
        })
    }
}
