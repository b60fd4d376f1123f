//! Session commands: create, list, get, update, delete, resume, messages.
//!
//! A session belongs to one image and lives in that image's container. An image's first
//! session goes only with the image: deleting it is a conflict. Deleting any other session
//! stops its agent, removes it with its messages and publishes `session_destroyed`.

use crate::config::Limits;
use crate::error::{Error, Result};
use crate::model::*;
use crate::runtime::bus::Scope;
use crate::runtime::local::AgentVm;

impl AgentVm {
    pub(super) async fn session_create(
        &self,
        r: SessionCreateRequest,
        scope: &Scope,
    ) -> Result<SessionCreateResponse> {
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
        Ok(SessionCreateResponse {
            subscriptions: vec![session.session_id.clone()],
            session,
        })
    }

    pub(super) async fn session_list(
        &self,
        r: SessionListRequest,
        scope: &Scope,
    ) -> Result<SessionListResponse> {
        let image = self.image(scope, &r.image_id)?;
        Ok(SessionListResponse {
            sessions: self.repo().list_sessions(&image.image_id)?,
        })
    }

    pub(super) async fn session_get(
        &self,
        r: SessionGetRequest,
        scope: &Scope,
    ) -> Result<SessionGetResponse> {
        validate_id("sessionId", &r.session_id)?;
        let session = self
            .repo()
            .get_session(&r.session_id)?
            .filter(|s| scope.allows(&s.container_id));
        Ok(SessionGetResponse { session })
    }

    pub(super) async fn session_update(
        &self,
        r: SessionUpdateRequest,
        scope: &Scope,
    ) -> Result<SessionUpdateResponse> {
        let mut session = self.session(scope, &r.session_id)?;
        if let Some(t) = &r.title {
            Limits::check("title", t, self.inner.limits.max_name_bytes)?;
        }
        session.title = r.title;
        session.updated_at = now_ms().max(session.updated_at + 1);
        let s = session.clone();
        self.write(move |repo| repo.update_session(&s)).await?;
        Ok(SessionUpdateResponse { session })
    }

    pub(super) async fn session_delete(
        &self,
        r: SessionDeleteRequest,
        scope: &Scope,
    ) -> Result<SessionDeleteResponse> {
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
        let agent_id = self
            .inner
            .manager
            .by_session(&session.session_id)
            .map(|a| a.id().to_string());
        self.inner
            .manager
            .destroy_sessions(std::slice::from_ref(&session.session_id))
            .await;
        let id = session.session_id.clone();
        self.write(move |repo| repo.delete_session(&id)).await?;
        self.inner.bus.publish(super::image::session_destroyed(
            session.session_id.clone(),
            session.image_id.clone(),
            session.container_id.clone(),
            agent_id,
        ));
        Ok(SessionDeleteResponse {
            session_id: r.session_id,
        })
    }

    pub(super) async fn session_resume(
        &self,
        r: SessionResumeRequest,
        scope: &Scope,
    ) -> Result<SessionResumeResponse> {
        let session = self.session(scope, &r.session_id)?;
        let (agent, reused) = self
            .inner
            .manager
            .resume(&session, &session.container_id)
            .await?;
        Ok(SessionResumeResponse {
            session_id: session.session_id,
            image_id: session.image_id,
            agent_id: agent.id().to_string(),
            reused,
        })
    }

    pub(super) async fn session_messages(
        &self,
        r: SessionMessagesRequest,
        scope: &Scope,
    ) -> Result<SessionMessagesResponse> {
        let session = self.session(scope, &r.session_id)?;
        let page = self
            .message_page(session.session_id.clone(), r.limit, r.after, r.before)
            .await?;
        Ok(SessionMessagesResponse {
            session_id: session.session_id,
            messages: page.messages,
            has_more: page.has_more,
            next_cursor: page.next_cursor,
        })
    }
}
