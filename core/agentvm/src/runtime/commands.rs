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
    pub(crate) async fn handle(&self, command: Command, scope: &Scope) -> Result<Response> {
        Ok(match command {
            Command::ContainerCreate(r) => {
                Response::ContainerCreate(self.container_create(r, scope).await?)
            }
            Command::ContainerGet(r) => Response::ContainerGet(self.container_get(r, scope).await?),
            Command::ContainerList(r) => {
                Response::ContainerList(self.container_list(r, scope).await?)
            }
            Command::ContainerDelete(r) => {
                Response::ContainerDelete(self.container_delete(r, scope).await?)
            }
            Command::ImageCreate(r) => Response::ImageCreate(self.image_create(r, scope).await?),
            Command::ImageBuild(r) => Response::ImageBuild(self.image_build(r, scope).await?),
            Command::ImageGet(r) => Response::ImageGet(self.image_get(r, scope).await?),
            Command::ImageList(r) => Response::ImageList(self.image_list(r, scope).await?),
            Command::ImageUpdate(r) => Response::ImageUpdate(self.image_update(r, scope).await?),
            Command::ImageDelete(r) => Response::ImageDelete(self.image_delete(r, scope).await?),
            Command::ImageRun(r) => Response::ImageRun(self.image_run(r, scope).await?),
            Command::ImageStop(r) => Response::ImageStop(self.image_stop(r, scope).await?),
            Command::ImageMessages(r) => {
                Response::ImageMessages(self.image_messages(r, scope).await?)
            }
            Command::MessageSend(r) => Response::MessageSend(self.message_send(r, scope).await?),
            Command::AgentInterrupt(r) => {
                Response::AgentInterrupt(self.agent_interrupt(r, scope).await?)
            }
            Command::AgentGet(r) => Response::AgentGet(self.agent_get(r, scope).await?),
            Command::AgentList(r) => Response::AgentList(self.agent_list(r, scope).await?),
            Command::AgentDestroy(r) => Response::AgentDestroy(self.agent_destroy(r, scope).await?),
            Command::AgentDestroyAll(r) => {
                Response::AgentDestroyAll(self.agent_destroy_all(r, scope).await?)
            }
            Command::DefinitionList(r) => {
                Response::DefinitionList(self.definition_list(r, scope).await?)
            }
            Command::DefinitionGet(r) => {
                Response::DefinitionGet(self.definition_get(r, scope).await?)
            }
            Command::DefinitionRegister(r) => {
                Response::DefinitionRegister(self.definition_register(r, scope).await?)
            }
            Command::SessionCreate(r) => {
                Response::SessionCreate(self.session_create(r, scope).await?)
            }
            Command::SessionList(r) => Response::SessionList(self.session_list(r, scope).await?),
            Command::SessionGet(r) => Response::SessionGet(self.session_get(r, scope).await?),
            Command::SessionUpdate(r) => {
                Response::SessionUpdate(self.session_update(r, scope).await?)
            }
            Command::SessionDelete(r) => {
                Response::SessionDelete(self.session_delete(r, scope).await?)
            }
            Command::SessionResume(r) => {
                Response::SessionResume(self.session_resume(r, scope).await?)
            }
            Command::SessionMessages(r) => {
                Response::SessionMessages(self.session_messages(r, scope).await?)
            }
            // The scheduler and token families: commands/{node,template,sandbox,token}.rs.
            Command::NodeRegister(r) => Response::NodeRegister(self.node_register(scope, r).await?),
            Command::NodeHeartbeat(r) => {
                Response::NodeHeartbeat(self.node_heartbeat(scope, r).await?)
            }
            Command::NodeList(r) => Response::NodeList(self.node_list(scope, r).await?),
            Command::NodeGet(r) => Response::NodeGet(self.node_get(scope, r).await?),
            Command::NodeUpdate(r) => Response::NodeUpdate(self.node_update(scope, r).await?),
            Command::NodeDelete(r) => Response::NodeDelete(self.node_delete(scope, r).await?),
            Command::TemplateCreate(r) => {
                Response::TemplateCreate(self.template_create(scope, r).await?)
            }
            Command::TemplateGet(r) => Response::TemplateGet(self.template_get(scope, r).await?),
            Command::TemplateList(r) => Response::TemplateList(self.template_list(scope, r).await?),
            Command::TemplateUpdate(r) => {
                Response::TemplateUpdate(self.template_update(scope, r).await?)
            }
            Command::TemplateDelete(r) => {
                Response::TemplateDelete(self.template_delete(scope, r).await?)
            }
            Command::SandboxCreate(r) => {
                Response::SandboxCreate(self.sandbox_create(scope, r).await?)
            }
            Command::SandboxGet(r) => Response::SandboxGet(self.sandbox_get(scope, r).await?),
            Command::SandboxList(r) => Response::SandboxList(self.sandbox_list(scope, r).await?),
            Command::SandboxPause(r) => Response::SandboxPause(self.sandbox_pause(scope, r).await?),
            Command::SandboxResume(r) => {
                Response::SandboxResume(self.sandbox_resume(scope, r).await?)
            }
            Command::SandboxExtend(r) => {
                Response::SandboxExtend(self.sandbox_extend(scope, r).await?)
            }
            Command::SandboxSnapshot(r) => {
                Response::SandboxSnapshot(self.sandbox_snapshot(scope, r).await?)
            }
            Command::SandboxUsage(r) => Response::SandboxUsage(self.sandbox_usage(scope, r).await?),
            Command::SandboxPort(r) => Response::SandboxPort(self.sandbox_port(scope, r).await?),
            Command::WebhookCreate(r) => {
                Response::WebhookCreate(self.webhook_create(scope, r).await?)
            }
            Command::WebhookList(r) => Response::WebhookList(self.webhook_list(scope, r).await?),
            Command::WebhookDelete(r) => {
                Response::WebhookDelete(self.webhook_delete(scope, r).await?)
            }
            Command::WebhookDeliveries(r) => {
                Response::WebhookDeliveries(self.webhook_deliveries(scope, r).await?)
            }
            Command::SandboxTerminate(r) => {
                Response::SandboxTerminate(self.sandbox_terminate(scope, r).await?)
            }
            Command::SandboxDelete(r) => {
                Response::SandboxDelete(self.sandbox_delete(scope, r).await?)
            }
            Command::SandboxExec(r) => Response::SandboxExec(self.sandbox_exec(scope, r).await?),
            Command::SandboxExecCancel(r) => {
                Response::SandboxExecCancel(self.sandbox_exec_cancel(scope, r).await?)
            }
            Command::SandboxTerminalOpen(r) => {
                Response::SandboxTerminalOpen(self.sandbox_terminal_open(scope, r).await?)
            }
            Command::SandboxTerminalInput(r) => {
                Response::SandboxTerminalInput(self.sandbox_terminal_input(scope, r).await?)
            }
            Command::SandboxTerminalResize(r) => {
                Response::SandboxTerminalResize(self.sandbox_terminal_resize(scope, r).await?)
            }
            Command::SandboxTerminalClose(r) => {
                Response::SandboxTerminalClose(self.sandbox_terminal_close(scope, r).await?)
            }
            Command::ExecutionGet(r) => Response::ExecutionGet(self.execution_get(scope, r).await?),
            Command::ExecutionList(r) => {
                Response::ExecutionList(self.execution_list(scope, r).await?)
            }
            Command::SandboxFileRead(r) => {
                Response::SandboxFileRead(self.sandbox_file_read(scope, r).await?)
            }
            Command::SandboxFileWrite(r) => {
                Response::SandboxFileWrite(self.sandbox_file_write(scope, r).await?)
            }
            Command::SandboxFileList(r) => {
                Response::SandboxFileList(self.sandbox_file_list(scope, r).await?)
            }
            Command::SandboxFileDelete(r) => {
                Response::SandboxFileDelete(self.sandbox_file_delete(scope, r).await?)
            }
            Command::SchedulerMetrics(r) => {
                Response::SchedulerMetrics(self.scheduler_metrics(scope, r).await?)
            }
            Command::ExecutorReady(r) => {
                Response::ExecutorReady(self.executor_ready(scope, r).await?)
            }
            Command::ExecutorExited(r) => {
                Response::ExecutorExited(self.executor_exited(scope, r).await?)
            }
            Command::TokenCreate(r) => Response::TokenCreate(self.token_create(scope, r).await?),
            Command::TokenList(r) => Response::TokenList(self.token_list(scope, r).await?),
            Command::TokenRevoke(r) => Response::TokenRevoke(self.token_revoke(scope, r).await?),
        })
    }
}
