//! Command handlers of the local runtime: validation, scope checks, store and agents.
//!
//! Scope rule: a record in a container outside the caller's scope behaves exactly like a
//! record that does not exist, so ids of one tenant reveal nothing to another.
//!
//! `AgentVm::handle` only dispatches: each command family has its own file (`container`,
//! `image`, `session`, `agent` with messages, `definition`), and the lookups that apply the
//! scope rule live here, so every family finds records the same way.

use super::bus::Scope;
use super::local::AgentVm;
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::model::*;
use crate::store::Store;
use futures::future::BoxFuture;
use std::future::Future;
use std::sync::Arc;

mod agent;
mod container;
mod definition;
mod image;
mod node;
mod sandbox;
mod session;
mod template;
mod terminal;
mod token;

pub(crate) fn validate_definition(d: &Definition, limits: &Limits) -> Result<()> {
    validate_id("definition name", &d.name)?;
    if let Some(s) = &d.system_prompt {
        Limits::check("systemPrompt", s, limits.max_system_prompt_bytes)?;
    }
    if let Some(s) = &d.description {
        Limits::check("description", s, limits.max_description_bytes)?;
    }
    let size = serde_json::to_vec(d).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > limits.max_config_bytes {
        return Err(Error::invalid(format!(
            "definition is {size} bytes as JSON; the limit is {}",
            limits.max_config_bytes
        )));
    }
    Ok(())
}

/// A page of history as a messages response carries it.
struct MessagesPage {
    messages: Vec<Message>,
    has_more: bool,
    next_cursor: Option<u64>,
}

fn check_scope(scope: &Scope, container_id: &str) -> Result<()> {
    if scope.allows(container_id) {
        Ok(())
    } else {
        Err(Error::Unauthorized(format!(
            "container {container_id} is outside this connection's scope"
        )))
    }
}

impl AgentVm {
    fn repo(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// Runs a write on the blocking pool, so an fsync never stalls the async workers.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Store) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || f(&*store))
            .await
            .map_err(|e| Error::Internal(format!("a store write panicked: {e}")))?
    }

    /// One page of a session's history, read on the blocking pool so a large read never holds
    /// up the async workers (and the requests of everyone else). `limit` defaults to
    /// [`MESSAGE_PAGE_DEFAULT`] and may not exceed [`MESSAGE_PAGE_MAX`].
    async fn message_page(
        &self,
        session_id: String,
        limit: Option<u32>,
        after: Option<u64>,
        before: Option<u64>,
    ) -> Result<MessagesPage> {
        let limit = limit.unwrap_or(MESSAGE_PAGE_DEFAULT);
        if limit == 0 || limit > MESSAGE_PAGE_MAX {
            return Err(Error::invalid(format!(
                "limit must be between 1 and {MESSAGE_PAGE_MAX}; got {limit}"
            )));
        }
        let request = crate::store::MessagePageRequest {
            after,
            before,
            limit: limit as usize,
            max_bytes: MESSAGE_PAGE_MAX_BYTES,
        };
        let store = self.inner.store.clone();
        let page = tokio::task::spawn_blocking(move || store.page_messages(&session_id, &request))
            .await
            .map_err(|e| Error::Internal(format!("reading messages panicked: {e}")))??;
        let next_cursor = if !page.has_more {
            None
        } else if request.backward() {
            page.messages.first().map(|(seq, _)| *seq)
        } else {
            page.messages.last().map(|(seq, _)| *seq)
        };
        Ok(MessagesPage {
            messages: page.messages.into_iter().map(|(_, m)| m).collect(),
            has_more: page.has_more,
            next_cursor,
        })
    }

    fn visible_image(&self, scope: &Scope, image_id: &str) -> Result<Option<ImageRecord>> {
        if image_id.is_empty() || image_id.len() > MAX_ID_LEN {
            return Ok(None);
        }
        Ok(self
            .repo()
            .get_image(image_id)?
            .filter(|i| scope.allows(&i.container_id)))
    }

    fn image(&self, scope: &Scope, image_id: &str) -> Result<ImageRecord> {
        validate_id("imageId", image_id)?;
        self.visible_image(scope, image_id)?
            .ok_or_else(|| Error::not_found("Image", image_id))
    }

    fn session(&self, scope: &Scope, session_id: &str) -> Result<SessionRecord> {
        validate_id("sessionId", session_id)?;
        self.repo()
            .get_session(session_id)?
            .filter(|s| scope.allows(&s.container_id))
            .ok_or_else(|| Error::not_found("Session", session_id))
    }

    fn agent(&self, scope: &Scope, agent_id: &str) -> Result<Arc<super::Agent>> {
        validate_id("agentId", agent_id)?;
        self.inner
            .manager
            .get(agent_id)
            .filter(|a| scope.allows(a.container_id()))
            .ok_or_else(|| Error::not_found("Agent", agent_id))
    }

    fn workdir(&self, container_id: &str, image_id: &str) -> Option<std::path::PathBuf> {
        self.inner.data_dir.as_ref().map(|d| {
            d.join("containers")
                .join(container_id)
                .join("workdirs")
                .join(image_id)
        })
    }

    async fn remove_dir(&self, dir: Option<std::path::PathBuf>) {
        if let Some(dir) = dir {
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove a directory")
                }
            }
        }
    }

    fn publish_container_created(&self, record: &ContainerRecord) {
        self.inner.bus.publish(Event::new(
            EventPayload::ContainerCreated {
                container_id: record.container_id.clone(),
                created_at: record.created_at,
            },
            Some(EventContext {
                container_id: Some(record.container_id.clone()),
                ..Default::default()
            }),
        ));
    }

    /// Runs one command within `scope`.
    ///
    /// Each command's handler future is boxed on its own, at its own size. Awaited in place,
    /// the handlers would make this future as large as the largest of them (several KB, the
    /// long-running ones): allocated and copied whole for every request, an `image_get` as
    /// much as a `message_send`.
    pub(crate) fn handle<'a>(
        &'a self,
        command: Command,
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Response>> {
        match command {
            Command::ContainerCreate(r) => {
                run(self.container_create(r, scope), Response::ContainerCreate)
            }
            Command::ContainerGet(r) => run(self.container_get(r, scope), Response::ContainerGet),
            Command::ContainerList(r) => {
                run(self.container_list(r, scope), Response::ContainerList)
            }
            Command::ContainerDelete(r) => {
                run(self.container_delete(r, scope), Response::ContainerDelete)
            }
            Command::ImageCreate(r) => run(self.image_create(r, scope), Response::ImageCreate),
            Command::ImageBuild(r) => run(self.image_build(r, scope), Response::ImageBuild),
            Command::ImageGet(r) => run(self.image_get(r, scope), Response::ImageGet),
            Command::ImageList(r) => run(self.image_list(r, scope), Response::ImageList),
            Command::ImageUpdate(r) => run(self.image_update(r, scope), Response::ImageUpdate),
            Command::ImageDelete(r) => run(self.image_delete(r, scope), Response::ImageDelete),
            Command::ImageRun(r) => run(self.image_run(r, scope), Response::ImageRun),
            Command::ImageStop(r) => run(self.image_stop(r, scope), Response::ImageStop),
            Command::ImageMessages(r) => {
                run(self.image_messages(r, scope), Response::ImageMessages)
            }
            Command::MessageSend(r) => run(self.message_send(r, scope), Response::MessageSend),
            Command::AgentInterrupt(r) => {
                run(self.agent_interrupt(r, scope), Response::AgentInterrupt)
            }
            Command::AgentGet(r) => run(self.agent_get(r, scope), Response::AgentGet),
            Command::AgentList(r) => run(self.agent_list(r, scope), Response::AgentList),
            Command::AgentDestroy(r) => run(self.agent_destroy(r, scope), Response::AgentDestroy),
            Command::AgentDestroyAll(r) => {
                run(self.agent_destroy_all(r, scope), Response::AgentDestroyAll)
            }
            Command::DefinitionList(r) => {
                run(self.definition_list(r, scope), Response::DefinitionList)
            }
            Command::DefinitionGet(r) => {
                run(self.definition_get(r, scope), Response::DefinitionGet)
            }
            Command::DefinitionRegister(r) => run(
                self.definition_register(r, scope),
                Response::DefinitionRegister,
            ),
            Command::SessionCreate(r) => {
                run(self.session_create(r, scope), Response::SessionCreate)
            }
            Command::SessionList(r) => run(self.session_list(r, scope), Response::SessionList),
            Command::SessionGet(r) => run(self.session_get(r, scope), Response::SessionGet),
            Command::SessionUpdate(r) => {
                run(self.session_update(r, scope), Response::SessionUpdate)
            }
            Command::SessionDelete(r) => {
                run(self.session_delete(r, scope), Response::SessionDelete)
            }
            Command::SessionResume(r) => {
                run(self.session_resume(r, scope), Response::SessionResume)
            }
            Command::SessionMessages(r) => {
                run(self.session_messages(r, scope), Response::SessionMessages)
            }
            // The scheduler and token families: commands/{node,template,sandbox,token}.rs.
            Command::NodeRegister(r) => run(self.node_register(scope, r), Response::NodeRegister),
            Command::NodeHeartbeat(r) => {
                run(self.node_heartbeat(scope, r), Response::NodeHeartbeat)
            }
            Command::NodeList(r) => run(self.node_list(scope, r), Response::NodeList),
            Command::NodeGet(r) => run(self.node_get(scope, r), Response::NodeGet),
            Command::NodeUpdate(r) => run(self.node_update(scope, r), Response::NodeUpdate),
            Command::NodeDelete(r) => run(self.node_delete(scope, r), Response::NodeDelete),
            Command::TemplateCreate(r) => {
                run(self.template_create(scope, r), Response::TemplateCreate)
            }
            Command::TemplateGet(r) => run(self.template_get(scope, r), Response::TemplateGet),
            Command::TemplateList(r) => run(self.template_list(scope, r), Response::TemplateList),
            Command::TemplateUpdate(r) => {
                run(self.template_update(scope, r), Response::TemplateUpdate)
            }
            Command::TemplateDelete(r) => {
                run(self.template_delete(scope, r), Response::TemplateDelete)
            }
            Command::SandboxCreate(r) => {
                run(self.sandbox_create(scope, r), Response::SandboxCreate)
            }
            Command::SandboxGet(r) => run(self.sandbox_get(scope, r), Response::SandboxGet),
            Command::SandboxList(r) => run(self.sandbox_list(scope, r), Response::SandboxList),
            Command::SandboxPause(r) => run(self.sandbox_pause(scope, r), Response::SandboxPause),
            Command::SandboxResume(r) => {
                run(self.sandbox_resume(scope, r), Response::SandboxResume)
            }
            Command::SandboxExtend(r) => {
                run(self.sandbox_extend(scope, r), Response::SandboxExtend)
            }
            Command::SandboxSnapshot(r) => {
                run(self.sandbox_snapshot(scope, r), Response::SandboxSnapshot)
            }
            Command::SandboxUsage(r) => run(self.sandbox_usage(scope, r), Response::SandboxUsage),
            Command::SandboxPort(r) => run(self.sandbox_port(scope, r), Response::SandboxPort),
            Command::WebhookCreate(r) => {
                run(self.webhook_create(scope, r), Response::WebhookCreate)
            }
            Command::WebhookList(r) => run(self.webhook_list(scope, r), Response::WebhookList),
            Command::WebhookDelete(r) => {
                run(self.webhook_delete(scope, r), Response::WebhookDelete)
            }
            Command::WebhookDeliveries(r) => run(
                self.webhook_deliveries(scope, r),
                Response::WebhookDeliveries,
            ),
            Command::SandboxTerminate(r) => {
                run(self.sandbox_terminate(scope, r), Response::SandboxTerminate)
            }
            Command::SandboxDelete(r) => {
                run(self.sandbox_delete(scope, r), Response::SandboxDelete)
            }
            Command::SandboxExec(r) => run(self.sandbox_exec(scope, r), Response::SandboxExec),
            Command::SandboxExecCancel(r) => run(
                self.sandbox_exec_cancel(scope, r),
                Response::SandboxExecCancel,
            ),
            Command::SandboxTerminalOpen(r) => run(
                self.sandbox_terminal_open(scope, r),
                Response::SandboxTerminalOpen,
            ),
            Command::SandboxTerminalInput(r) => run(
                self.sandbox_terminal_input(scope, r),
                Response::SandboxTerminalInput,
            ),
            Command::SandboxTerminalResize(r) => run(
                self.sandbox_terminal_resize(scope, r),
                Response::SandboxTerminalResize,
            ),
            Command::SandboxTerminalClose(r) => run(
                self.sandbox_terminal_close(scope, r),
                Response::SandboxTerminalClose,
            ),
            Command::ExecutionGet(r) => run(self.execution_get(scope, r), Response::ExecutionGet),
            Command::ExecutionList(r) => {
                run(self.execution_list(scope, r), Response::ExecutionList)
            }
            Command::SandboxFileRead(r) => {
                run(self.sandbox_file_read(scope, r), Response::SandboxFileRead)
            }
            Command::SandboxFileWrite(r) => run(
                self.sandbox_file_write(scope, r),
                Response::SandboxFileWrite,
            ),
            Command::SandboxFileList(r) => {
                run(self.sandbox_file_list(scope, r), Response::SandboxFileList)
            }
            Command::SandboxFileDelete(r) => run(
                self.sandbox_file_delete(scope, r),
                Response::SandboxFileDelete,
            ),
            Command::SchedulerMetrics(r) => {
                run(self.scheduler_metrics(scope, r), Response::SchedulerMetrics)
            }
            Command::ExecutorReady(r) => {
                run(self.executor_ready(scope, r), Response::ExecutorReady)
            }
            Command::ExecutorExited(r) => {
                run(self.executor_exited(scope, r), Response::ExecutorExited)
            }
            Command::TokenCreate(r) => run(self.token_create(scope, r), Response::TokenCreate),
            Command::TokenList(r) => run(self.token_list(scope, r), Response::TokenList),
            Command::TokenRevoke(r) => run(self.token_revoke(scope, r), Response::TokenRevoke),
        }
    }
}

/// A handler's future, boxed, its answer wrapped in its response variant.
fn run<'a, T: 'a>(
    handler: impl Future<Output = Result<T>> + Send + 'a,
    into: fn(T) -> Response,
) -> BoxFuture<'a, Result<Response>> {
    Box::pin(async move { handler.await.map(into) })
}
