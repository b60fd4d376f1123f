//! Command handlers of the local runtime: validation, scope checks, store and agents.
//!
//! Scope rule: a record in a container outside the caller's scope behaves exactly like a
//! record that does not exist, so ids of one tenant reveal nothing to another.

use super::bus::Scope;
use super::local::AgentVm;
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::model::*;
use crate::store::Store;
use std::sync::Arc;

const DEFAULT_IMAGE_NAME: &str = "New Conversation";

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

    fn list_item(&self, record: &ImageRecord) -> ImageListItem {
        let agent = self
            .inner
            .manager
            .by_session(&record.session_id)
            .map(|a| a.id().to_string());
        ImageListItem::new(record, agent)
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

    /// Builds the effective definition of a new image: `base` (a registered or inline
    /// definition) with `config` on top.
    fn compose(
        &self,
        base: Option<Definition>,
        config: &ImageConfig,
    ) -> Result<(Option<String>, Definition)> {
        let limits = &self.inner.limits;
        if let Some(n) = &config.name {
            if n.trim().is_empty() {
                return Err(Error::invalid("config.name must not be empty"));
            }
            Limits::check("config.name", n, limits.max_name_bytes)?;
        }
        if let Some(d) = &config.description {
            Limits::check("config.description", d, limits.max_description_bytes)?;
        }
        if let Some(s) = &config.system_prompt {
            Limits::check("config.systemPrompt", s, limits.max_system_prompt_bytes)?;
        }
        let size = serde_json::to_vec(config)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > limits.max_config_bytes {
            return Err(Error::invalid(format!(
                "config is {size} bytes as JSON; the limit is {}",
                limits.max_config_bytes
            )));
        }
        let (definition_name, mut def) = match (base, &config.definition) {
            (Some(d), _) => (Some(d.name.clone()), d),
            (None, None) => (None, Definition::default()),
            (None, Some(serde_json::Value::String(name))) => {
                validate_id("config.definition", name)?;
                let d = self
                    .repo()
                    .get_definition(name)?
                    .ok_or_else(|| Error::not_found("Definition", name.clone()))?;
                (Some(d.name.clone()), d)
            }
            (None, Some(inline)) => {
                let d: Definition = serde_json::from_value(inline.clone()).map_err(|e| {
                    Error::invalid(format!("config.definition is not a definition: {e}"))
                })?;
                let name = if d.name.is_empty() {
                    None
                } else {
                    Some(d.name.clone())
                };
                (name, d)
            }
        };
        if def.name.is_empty() {
            def.name = config
                .name
                .clone()
                .unwrap_or_else(|| DEFAULT_IMAGE_NAME.to_string());
        }
        if config.description.is_some() {
            def.description = config.description.clone();
        }
        if config.system_prompt.is_some() {
            def.system_prompt = config.system_prompt.clone();
        }
        if config.mcp_servers.is_some() {
            def.mcp_servers = config.mcp_servers.clone();
        }
        if config.model.is_some() {
            def.model = config.model.clone();
        }
        if let Some(tools) = &config.tools {
            def.tools = tools.clone();
        }
        Ok((definition_name, def))
    }

    async fn create_image(
        &self,
        scope: &Scope,
        container_id: String,
        base: Option<Definition>,
        config: ImageConfig,
    ) -> Result<ImageCreateResponse> {
        validate_id("containerId", &container_id)?;
        check_scope(scope, &container_id)?;
        let (definition_name, definition) = self.compose(base, &config)?;
        let now = now_ms();
        let description = config
            .description
            .clone()
            .or_else(|| definition.description.clone());
        let image = ImageRecord {
            image_id: new_id("img"),
            container_id: container_id.clone(),
            session_id: new_id("sess"),
            name: config
                .name
                .clone()
                .or_else(|| definition_name.clone())
                .unwrap_or_else(|| DEFAULT_IMAGE_NAME.to_string()),
            description,
            definition_name: definition_name.clone(),
            definition,
            created_at: now,
            updated_at: now,
        };
        let session = SessionRecord {
            session_id: image.session_id.clone(),
            image_id: image.image_id.clone(),
            container_id: container_id.clone(),
            title: None,
            created_at: now,
            updated_at: now,
        };
        if let Some(dir) = self.workdir(&container_id, &image.image_id) {
            tokio::fs::create_dir_all(&dir).await.map_err(|e| {
                Error::storage(format!("creating the workdir {}", dir.display()), e)
            })?;
        }
        let (i, s) = (image.clone(), session);
        let created = self.write(move |r| r.create_image(&i, &s)).await?;
        if created {
            self.publish_container_created(&ContainerRecord {
                container_id,
                created_at: now,
                sandbox_template: None,
            });
        }
        Ok(ImageCreateResponse {
            subscriptions: vec![image.session_id.clone()],
            record: self.list_item(&image),
        })
    }

    /// Runs one command within `scope`.
    pub(crate) async fn handle(&self, command: Command, scope: &Scope) -> Result<Response> {
        Ok(match command {
            Command::ContainerCreate(r) => {
                validate_id("containerId", &r.container_id)?;
                check_scope(scope, &r.container_id)?;
                if let Some(t) = &r.sandbox_template {
                    validate_id("sandboxTemplate", t)?;
                }
                let id = r.container_id.clone();
                let template = r.sandbox_template.clone();
                let (record, created) = self
                    .write(move |repo| repo.create_container(&id, template.as_deref(), now_ms()))
                    .await?;
                if created {
                    self.publish_container_created(&record);
                }
                Response::ContainerCreate(ContainerCreateResponse {
                    container_id: r.container_id,
                })
            }
            Command::ContainerGet(r) => {
                validate_id("containerId", &r.container_id)?;
                let record = if scope.allows(&r.container_id) {
                    self.repo().get_container(&r.container_id)?
                } else {
                    None
                };
                Response::ContainerGet(ContainerGetResponse {
                    exists: record.is_some(),
                    container_id: record.as_ref().map(|c| c.container_id.clone()),
                    sandbox_template: record.and_then(|c| c.sandbox_template),
                })
            }
            Command::ContainerList(_) => Response::ContainerList(ContainerListResponse {
                container_ids: self
                    .repo()
                    .list_containers()?
                    .into_iter()
                    .map(|c| c.container_id)
                    .filter(|c| scope.allows(c))
                    .collect(),
            }),
            Command::ContainerDelete(r) => {
                validate_id("containerId", &r.container_id)?;
                check_scope(scope, &r.container_id)?;
                self.inner.manager.destroy_all(&r.container_id).await;
                if let Some(s) = &self.inner.scheduler {
                    if let Err(e) = s.release_owner(&r.container_id).await {
                        tracing::warn!(container = %r.container_id, error = %e.chain(), "ending the container's sandboxes");
                    }
                }
                let id = r.container_id.clone();
                let removed = self.write(move |repo| repo.delete_container(&id)).await?;
                if let Some(removed) = &removed {
                    if let Some(dir) = &self.inner.data_dir {
                        self.remove_dir(Some(dir.join("containers").join(&r.container_id)))
                            .await;
                    }
                    self.inner.manager.destroy_sessions(&removed.sessions).await;
                    self.inner.bus.publish(Event::new(
                        EventPayload::ContainerDeleted {
                            container_id: r.container_id.clone(),
                        },
                        Some(EventContext {
                            container_id: Some(r.container_id.clone()),
                            ..Default::default()
                        }),
                    ));
                }
                Response::ContainerDelete(ContainerDeleteResponse {
                    container_id: r.container_id,
                    deleted: removed.is_some(),
                })
            }
            Command::ImageCreate(r) => Response::ImageCreate(
                self.create_image(scope, r.container_id, None, r.config)
                    .await?,
            ),
            Command::ImageBuild(r) => {
                validate_id("definitionName", &r.definition_name)?;
                let def = self
                    .repo()
                    .get_definition(&r.definition_name)?
                    .ok_or_else(|| Error::not_found("Definition", r.definition_name.clone()))?;
                Response::ImageBuild(
                    self.create_image(scope, r.container_id, Some(def), r.config)
                        .await?,
                )
            }
            Command::ImageGet(r) => {
                let record = self.visible_image(scope, &r.image_id)?;
                Response::ImageGet(ImageGetResponse {
                    subscriptions: record.as_ref().map(|i| vec![i.session_id.clone()]),
                    record: record.as_ref().map(|i| self.list_item(i)),
                })
            }
            Command::ImageList(r) => {
                let containers: Vec<String> = match r.container_id {
                    Some(c) => {
                        validate_id("containerId", &c)?;
                        check_scope(scope, &c)?;
                        vec![c]
                    }
                    None => self
                        .repo()
                        .list_containers()?
                        .into_iter()
                        .map(|c| c.container_id)
                        .filter(|c| scope.allows(c))
                        .collect(),
                };
                let mut records = Vec::new();
                for c in &containers {
                    records.extend(self.repo().list_images(c)?);
                }
                Response::ImageList(ImageListResponse {
                    subscriptions: records.iter().map(|i| i.session_id.clone()).collect(),
                    records: records.iter().map(|i| self.list_item(i)).collect(),
                })
            }
            Command::ImageUpdate(r) => {
                let mut image = self.image(scope, &r.image_id)?;
                if let Some(name) = r.updates.name {
                    if name.trim().is_empty() {
                        return Err(Error::invalid("updates.name must not be empty"));
                    }
                    Limits::check("updates.name", &name, self.inner.limits.max_name_bytes)?;
                    image.name = name;
                }
                if let Some(d) = r.updates.description {
                    Limits::check(
                        "updates.description",
                        &d,
                        self.inner.limits.max_description_bytes,
                    )?;
                    image.description = Some(d);
                }
                image.updated_at = now_ms().max(image.updated_at + 1);
                let i = image.clone();
                self.write(move |repo| repo.update_image(&i)).await?;
                Response::ImageUpdate(ImageUpdateResponse {
                    record: self.list_item(&image),
                })
            }
            Command::ImageDelete(r) => {
                if let Some(image) = self.visible_image(scope, &r.image_id)? {
                    let sessions: Vec<String> = self
                        .repo()
                        .list_sessions(&image.image_id)?
                        .into_iter()
                        .map(|s| s.session_id)
                        .collect();
                    self.inner.manager.destroy_sessions(&sessions).await;
                    let id = image.image_id.clone();
                    if let Some((_, removed)) =
                        self.write(move |repo| repo.delete_image(&id)).await?
                    {
                        self.remove_dir(self.workdir(&image.container_id, &image.image_id))
                            .await;
                        for session_id in removed.sessions {
                            self.inner.bus.publish(Event::new(
                                EventPayload::SessionDestroyed {
                                    session_id,
                                    image_id: image.image_id.clone(),
                                    container_id: image.container_id.clone(),
                                },
                                None,
                            ));
                        }
                    }
                }
                Response::ImageDelete(ImageDeleteResponse {
                    image_id: r.image_id,
                })
            }
            Command::ImageRun(r) => {
                let image = self.image(scope, &r.image_id)?;
                let (agent, reused) = self.inner.manager.run(&image, &image.container_id).await?;
                Response::ImageRun(ImageRunResponse {
                    image_id: r.image_id,
                    agent_id: agent.id().to_string(),
                    reused,
                })
            }
            Command::ImageStop(r) => {
                let image = self.image(scope, &r.image_id)?;
                let sessions: Vec<String> = self
                    .repo()
                    .list_sessions(&image.image_id)?
                    .into_iter()
                    .map(|s| s.session_id)
                    .collect();
                self.inner.manager.destroy_sessions(&sessions).await;
                Response::ImageStop(ImageStopResponse {
                    image_id: r.image_id,
                })
            }
            Command::ImageMessages(r) => {
                let image = self.image(scope, &r.image_id)?;
                Response::ImageMessages(ImageMessagesResponse {
                    messages: self.repo().list_messages(&image.session_id)?,
                    image_id: r.image_id,
                })
            }
            Command::MessageSend(r) => {
                if r.content.is_empty() {
                    return Err(Error::invalid("content must not be empty"));
                }
                let size = r.content.byte_len();
                if size > self.inner.limits.max_content_bytes {
                    return Err(Error::invalid(format!(
                        "content is {size} bytes; the limit is {}",
                        self.inner.limits.max_content_bytes
                    )));
                }
                let agent = if let Some(agent_id) = &r.agent_id {
                    self.agent(scope, agent_id)?
                } else if let Some(image_id) = &r.image_id {
                    let image = self.image(scope, image_id)?;
                    self.inner.manager.run(&image, &image.container_id).await?.0
                } else if let Some(session_id) = &r.session_id {
                    let session = self.session(scope, session_id)?;
                    self.inner
                        .manager
                        .resume(&session, &session.container_id)
                        .await?
                        .0
                } else {
                    return Err(Error::invalid("Either imageId or agentId must be provided"));
                };
                let message = agent.receive(r.content).await?;
                Response::MessageSend(MessageSendResponse {
                    image_id: agent.image_id().to_string(),
                    agent_id: agent.id().to_string(),
                    session_id: agent.session_id().to_string(),
                    message_id: message.id,
                })
            }
            Command::AgentInterrupt(r) => {
                let agent = if let Some(agent_id) = &r.agent_id {
                    Some(self.agent(scope, agent_id)?)
                } else if let Some(image_id) = &r.image_id {
                    let image = self.image(scope, image_id)?;
                    self.inner.manager.by_session(&image.session_id)
                } else if let Some(session_id) = &r.session_id {
                    let session = self.session(scope, session_id)?;
                    self.inner.manager.by_session(&session.session_id)
                } else {
                    return Err(Error::invalid("Either imageId or agentId must be provided"));
                };
                if let Some(agent) = &agent {
                    agent.interrupt();
                }
                Response::AgentInterrupt(AgentInterruptResponse {
                    image_id: r
                        .image_id
                        .or_else(|| agent.as_ref().map(|a| a.image_id().to_string())),
                    agent_id: agent.map(|a| a.id().to_string()),
                })
            }
            Command::AgentGet(r) => {
                validate_id("agentId", &r.agent_id)?;
                let agent = self
                    .inner
                    .manager
                    .get(&r.agent_id)
                    .filter(|a| scope.allows(a.container_id()));
                Response::AgentGet(AgentGetResponse {
                    exists: agent.is_some(),
                    container_id: agent.as_ref().map(|a| a.container_id().to_string()),
                    agent_id: agent.map(|a| a.id().to_string()),
                })
            }
            Command::AgentList(r) => {
                if let Some(c) = &r.container_id {
                    validate_id("containerId", c)?;
                    check_scope(scope, c)?;
                }
                Response::AgentList(AgentListResponse {
                    agents: self
                        .inner
                        .manager
                        .list(r.container_id.as_deref())
                        .into_iter()
                        .filter(|a| scope.allows(a.container_id()))
                        .map(|a| AgentInfo {
                            agent_id: a.id().to_string(),
                            container_id: a.container_id().to_string(),
                            image_id: a.image_id().to_string(),
                            session_id: a.session_id().to_string(),
                        })
                        .collect(),
                })
            }
            Command::AgentDestroy(r) => {
                validate_id("agentId", &r.agent_id)?;
                let visible = self
                    .inner
                    .manager
                    .get(&r.agent_id)
                    .filter(|a| scope.allows(a.container_id()));
                let success = match visible {
                    Some(a) => {
                        self.inner.manager.destroy(a.id());
                        a.stopped().await;
                        true
                    }
                    None => false,
                };
                Response::AgentDestroy(AgentDestroyResponse {
                    agent_id: r.agent_id,
                    success,
                })
            }
            Command::AgentDestroyAll(r) => {
                validate_id("containerId", &r.container_id)?;
                check_scope(scope, &r.container_id)?;
                self.inner.manager.destroy_all(&r.container_id).await;
                Response::AgentDestroyAll(AgentDestroyAllResponse {
                    container_id: r.container_id,
                })
            }
            Command::DefinitionList(_) => Response::DefinitionList(DefinitionListResponse {
                definitions: self.repo().list_definitions()?,
            }),
            Command::DefinitionGet(r) => {
                validate_id("name", &r.name)?;
                Response::DefinitionGet(DefinitionGetResponse {
                    definition: self.repo().get_definition(&r.name)?,
                })
            }
            Command::DefinitionRegister(r) => {
                if *scope != Scope::All {
                    return Err(Error::Unauthorized(
                        "registering definitions needs a token for all containers".into(),
                    ));
                }
                validate_definition(&r.definition, &self.inner.limits)?;
                let name = r.definition.name.clone();
                let replaced = self
                    .write(move |repo| repo.put_definition(&r.definition))
                    .await?;
                Response::DefinitionRegister(DefinitionRegisterResponse { name, replaced })
            }
            Command::SessionCreate(r) => {
                let image = self.image(scope, &r.image_id)?;
                if let Some(t) = &r.title {
                    Limits::check("title", t, self.inner.limits.max_name_bytes)?;
                }
                let now = now_ms();
                let session = SessionRecord {
                    session_id: new_id("sess"),
                    image_id: image.image_id.clone(),
                    container_id: image.container_id.clone(),
                    title: r.title,
                    created_at: now,
                    updated_at: now,
                };
                let s = session.clone();
                self.write(move |repo| repo.create_session(&s)).await?;
                Response::SessionCreate(SessionCreateResponse {
                    subscriptions: vec![session.session_id.clone()],
                    session,
                })
            }
            Command::SessionList(r) => {
                let image = self.image(scope, &r.image_id)?;
                Response::SessionList(SessionListResponse {
                    sessions: self.repo().list_sessions(&image.image_id)?,
                })
            }
            Command::SessionGet(r) => {
                validate_id("sessionId", &r.session_id)?;
                let session = self
                    .repo()
                    .get_session(&r.session_id)?
                    .filter(|s| scope.allows(&s.container_id));
                Response::SessionGet(SessionGetResponse { session })
            }
            Command::SessionUpdate(r) => {
                let mut session = self.session(scope, &r.session_id)?;
                if let Some(t) = &r.title {
                    Limits::check("title", t, self.inner.limits.max_name_bytes)?;
                }
                session.title = r.title;
                session.updated_at = now_ms().max(session.updated_at + 1);
                let s = session.clone();
                self.write(move |repo| repo.update_session(&s)).await?;
                Response::SessionUpdate(SessionUpdateResponse { session })
            }
            Command::SessionDelete(r) => {
                let session = self.session(scope, &r.session_id)?;
                let image = self.repo().get_image(&session.image_id)?;
                if image
                    .as_ref()
                    .map(|i| i.session_id == session.session_id)
                    .unwrap_or(false)
                {
                    return Err(Error::Conflict(format!(
                        "session {} is the first session of image {}; delete the image instead",
                        session.session_id, session.image_id
                    )));
                }
                self.inner
                    .manager
                    .destroy_sessions(std::slice::from_ref(&session.session_id))
                    .await;
                let id = session.session_id.clone();
                self.write(move |repo| repo.delete_session(&id)).await?;
                self.inner.bus.publish(Event::new(
                    EventPayload::SessionDestroyed {
                        session_id: session.session_id.clone(),
                        image_id: session.image_id.clone(),
                        container_id: session.container_id.clone(),
                    },
                    None,
                ));
                Response::SessionDelete(SessionDeleteResponse {
                    session_id: r.session_id,
                })
            }
            Command::SessionResume(r) => {
                let session = self.session(scope, &r.session_id)?;
                let (agent, reused) = self
                    .inner
                    .manager
                    .resume(&session, &session.container_id)
                    .await?;
                Response::SessionResume(SessionResumeResponse {
                    session_id: session.session_id,
                    image_id: session.image_id,
                    agent_id: agent.id().to_string(),
                    reused,
                })
            }
            Command::SessionMessages(r) => {
                let session = self.session(scope, &r.session_id)?;
                Response::SessionMessages(SessionMessagesResponse {
                    messages: self.repo().list_messages(&session.session_id)?,
                    session_id: session.session_id,
                })
            }
        })
    }
}
