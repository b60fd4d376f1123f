//! Agent and message commands: send, interrupt, get, list, destroy, destroy all.
//!
//! A message goes to an agent named by id, or to the agent of an image or a session, started
//! (or reused) for it; the message is stored before the call returns. An interrupt never
//! starts an agent: with none running it answers without an `agentId`. An agent named by id
//! outside the caller's scope answers exactly like one that does not exist.

use super::check_scope;
use crate::error::{Error, Result};
use crate::model::*;
use crate::runtime::bus::Scope;
use crate::runtime::local::AgentVm;

impl AgentVm {
    pub(super) async fn message_send(
        &self,
        r: MessageSendRequest,
        scope: &Scope,
    ) -> Result<MessageSendResponse> {
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
        Ok(MessageSendResponse {
            image_id: agent.image_id().to_string(),
            agent_id: agent.id().to_string(),
            session_id: agent.session_id().to_string(),
            message_id: message.id,
        })
    }

    pub(super) async fn agent_interrupt(
        &self,
        r: AgentInterruptRequest,
        scope: &Scope,
    ) -> Result<AgentInterruptResponse> {
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
        Ok(AgentInterruptResponse {
            image_id: r
                .image_id
                .or_else(|| agent.as_ref().map(|a| a.image_id().to_string())),
            agent_id: agent.map(|a| a.id().to_string()),
        })
    }

    pub(super) async fn agent_get(
        &self,
        r: AgentGetRequest,
        scope: &Scope,
    ) -> Result<AgentGetResponse> {
        validate_id("agentId", &r.agent_id)?;
        let agent = self
            .inner
            .manager
            .get(&r.agent_id)
            .filter(|a| scope.allows(a.container_id()));
        Ok(AgentGetResponse {
            exists: agent.is_some(),
            container_id: agent.as_ref().map(|a| a.container_id().to_string()),
            agent_id: agent.map(|a| a.id().to_string()),
        })
    }

    pub(super) async fn agent_list(
        &self,
        r: AgentListRequest,
        scope: &Scope,
    ) -> Result<AgentListResponse> {
        if let Some(c) = &r.container_id {
            validate_id("containerId", c)?;
            check_scope(scope, c)?;
        }
        Ok(AgentListResponse {
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

    pub(super) async fn agent_destroy(
        &self,
        r: AgentDestroyRequest,
        scope: &Scope,
    ) -> Result<AgentDestroyResponse> {
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
        Ok(AgentDestroyResponse {
            agent_id: r.agent_id,
            success,
        })
    }

    pub(super) async fn agent_destroy_all(
        &self,
        r: AgentDestroyAllRequest,
        scope: &Scope,
    ) -> Result<AgentDestroyAllResponse> {
        validate_id("containerId", &r.container_id)?;
        check_scope(scope, &r.container_id)?;
        self.inner.manager.destroy_all(&r.container_id).await;
        Ok(AgentDestroyAllResponse {
            container_id: r.container_id,
        })
    }
}
