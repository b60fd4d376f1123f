//! Image commands: create, build, get, list, update, delete, run, stop, messages.
//!
//! An image is created together with its first session and workdir, and owns them: deleting
//! it stops their agents, removes its sessions, messages and workdir, and publishes
//! `session_destroyed` for each session removed. An image's effective definition is fixed
//! when it is created (its base definition with the request's config on top).

use super::check_scope;
use crate::config::Limits;
use crate::error::{Error, Result};
use crate::model::*;
use crate::runtime::bus::Scope;
use crate::runtime::local::AgentVm;

const DEFAULT_IMAGE_NAME: &str = "New Conversation";

impl AgentVm {
    pub(super) async fn image_create(
        &self,
        r: ImageCreateRequest,
        scope: &Scope,
    ) -> Result<ImageCreateResponse> {
        self.create_image(scope, r.container_id, None, r.config)
            .await
    }

    pub(super) async fn image_build(
        &self,
        r: ImageBuildRequest,
        scope: &Scope,
    ) -> Result<ImageBuildResponse> {
        validate_id("definitionName", &r.definition_name)?;
        let def = self
            .repo()
            .get_definition(&r.definition_name)?
            .ok_or_else(|| Error::not_found("Definition", r.definition_name.clone()))?;
        self.create_image(scope, r.container_id, Some(def), r.config)
            .await
    }

    pub(super) async fn image_get(
        &self,
        r: ImageGetRequest,
        scope: &Scope,
    ) -> Result<ImageGetResponse> {
        let record = self.visible_image(scope, &r.image_id)?;
        Ok(ImageGetResponse {
            subscriptions: record.as_ref().map(|i| vec![i.session_id.clone()]),
            record: record.as_ref().map(|i| self.list_item(i)),
        })
    }

    pub(super) async fn image_list(
        &self,
        r: ImageListRequest,
        scope: &Scope,
    ) -> Result<ImageListResponse> {
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
        Ok(ImageListResponse {
            subscriptions: records.iter().map(|i| i.session_id.clone()).collect(),
            records: records.iter().map(|i| self.list_item(i)).collect(),
        })
    }

    pub(super) async fn image_update(
        &self,
        r: ImageUpdateRequest,
        scope: &Scope,
    ) -> Result<ImageUpdateResponse> {
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
        Ok(ImageUpdateResponse {
            record: self.list_item(&image),
        })
    }

    pub(super) async fn image_delete(
        &self,
        r: ImageDeleteRequest,
        scope: &Scope,
    ) -> Result<ImageDeleteResponse> {
        if let Some(image) = self.visible_image(scope, &r.image_id)? {
            let sessions: Vec<String> = self
                .repo()
                .list_sessions(&image.image_id)?
                .into_iter()
                .map(|s| s.session_id)
                .collect();
            let agents: std::collections::HashMap<String, String> = sessions
                .iter()
                .filter_map(|s| {
                    self.inner
                        .manager
                        .by_session(s)
                        .map(|a| (s.clone(), a.id().to_string()))
                })
                .collect();
            self.inner.manager.destroy_sessions(&sessions).await;
            let id = image.image_id.clone();
            if let Some((_, removed)) = self.write(move |repo| repo.delete_image(&id)).await? {
                self.remove_dir(self.workdir(&image.container_id, &image.image_id))
                    .await;
                for session_id in removed.sessions {
                    let agent_id = agents.get(&session_id).cloned();
                    self.inner.bus.publish(session_destroyed(
                        session_id,
                        image.image_id.clone(),
                        image.container_id.clone(),
                        agent_id,
                    ));
                }
            }
        }
        Ok(ImageDeleteResponse {
            image_id: r.image_id,
        })
    }

    pub(super) async fn image_run(
        &self,
        r: ImageRunRequest,
        scope: &Scope,
    ) -> Result<ImageRunResponse> {
        let image = self.image(scope, &r.image_id)?;
        let (agent, reused) = self.inner.manager.run(&image, &image.container_id).await?;
        Ok(ImageRunResponse {
            image_id: r.image_id,
            agent_id: agent.id().to_string(),
            reused,
        })
    }

    pub(super) async fn image_stop(
        &self,
        r: ImageStopRequest,
        scope: &Scope,
    ) -> Result<ImageStopResponse> {
        let image = self.image(scope, &r.image_id)?;
        let sessions: Vec<String> = self
            .repo()
            .list_sessions(&image.image_id)?
            .into_iter()
            .map(|s| s.session_id)
            .collect();
        self.inner.manager.destroy_sessions(&sessions).await;
        Ok(ImageStopResponse {
            image_id: r.image_id,
        })
    }

    pub(super) async fn image_messages(
        &self,
        r: ImageMessagesRequest,
        scope: &Scope,
    ) -> Result<ImageMessagesResponse> {
        let image = self.image(scope, &r.image_id)?;
        let page = self
            .message_page(image.session_id, r.limit, r.after, r.before)
            .await?;
        Ok(ImageMessagesResponse {
            image_id: r.image_id,
            messages: page.messages,
            has_more: page.has_more,
            next_cursor: page.next_cursor,
        })
    }

    fn list_item(&self, record: &ImageRecord) -> ImageListItem {
        let agent = self
            .inner
            .manager
            .by_session(&record.session_id)
            .map(|a| a.id().to_string());
        ImageListItem::new(record, agent)
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
        if let Some(m) = &config.mcp_servers {
            m.check().map_err(Error::invalid)?;
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
                if let Some(m) = &d.mcp_servers {
                    m.check().map_err(|e| {
                        Error::invalid(format!("config.definition is not a definition: {e}"))
                    })?;
                }
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

    /// Creates an image with its first session and workdir; shared by `image_create` (no
    /// base) and `image_build` (a registered definition as the base).
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
}

/// `session_destroyed` as AgentX sends it: the ids in `data` and in `context`.
pub(super) fn session_destroyed(
    session_id: String,
    image_id: String,
    container_id: String,
    agent_id: Option<String>,
) -> Event {
    let context = EventContext {
        container_id: Some(container_id.clone()),
        image_id: Some(image_id.clone()),
        agent_id: agent_id.clone(),
        session_id: Some(session_id.clone()),
        turn_id: None,
    };
    Event::new(
        EventPayload::SessionDestroyed {
            session_id,
            image_id,
            container_id,
            agent_id,
        },
        Some(context),
    )
}
