//! Typed helpers over [`Runtime::request`]: `vm.images().create(...)` and friends.
//!
//! Each helper builds the command, sends it through `request` and unwraps the matching
//! response, so they work the same on the local and the remote runtime.

use super::bus::{EventFilter, Subscription};
use super::Runtime;
use crate::error::{Error, Result};
use crate::model::*;

/// Typed access to a [`Runtime`]. Implemented for every runtime.
pub trait RuntimeExt: Runtime {
    /// Sends a typed request and returns its typed response.
    fn call<C: Call + Send>(
        &self,
        request: C,
    ) -> impl std::future::Future<Output = Result<C::Output>> + Send
    where
        Self: Sized,
    {
        async move {
            let command = request.into_command();
            let expected = command.response_type();
            let response = self.request(command).await?;
            C::from_response(response)
                .map_err(|other| Error::Protocol(format!("expected {expected}, got {other}")))
        }
    }

    /// Containers.
    fn containers(&self) -> Containers<'_, Self>
    where
        Self: Sized,
    {
        Containers(self)
    }

    /// Images.
    fn images(&self) -> Images<'_, Self>
    where
        Self: Sized,
    {
        Images(self)
    }

    /// Sessions.
    fn sessions(&self) -> Sessions<'_, Self>
    where
        Self: Sized,
    {
        Sessions(self)
    }

    /// Agents and messages.
    fn agents(&self) -> Agents<'_, Self>
    where
        Self: Sized,
    {
        Agents(self)
    }

    /// Definitions.
    fn definitions(&self) -> Definitions<'_, Self>
    where
        Self: Sized,
    {
        Definitions(self)
    }
}

impl<R: Runtime + ?Sized> RuntimeExt for R {}

/// Container helpers.
#[derive(Debug)]
pub struct Containers<'a, R>(&'a R);

impl<R: Runtime> Containers<'_, R> {
    /// Gets or creates a container.
    pub async fn create(&self, container_id: &str) -> Result<()> {
        self.0
            .call(ContainerCreateRequest {
                container_id: container_id.into(),
                sandbox_template: None,
            })
            .await
            .map(|_| ())
    }

    /// Gets or creates a container whose agents' tools run in a sandbox of `template`.
    pub async fn create_with_sandbox(&self, container_id: &str, template: &str) -> Result<()> {
        self.0
            .call(ContainerCreateRequest {
                container_id: container_id.into(),
                sandbox_template: Some(template.into()),
            })
            .await
            .map(|_| ())
    }
    /// Whether a container exists.
    pub async fn exists(&self, container_id: &str) -> Result<bool> {
        Ok(self
            .0
            .call(ContainerGetRequest {
                container_id: container_id.into(),
            })
            .await?
            .exists)
    }
    /// Visible container ids.
    pub async fn list(&self) -> Result<Vec<String>> {
        Ok(self.0.call(ContainerListRequest {}).await?.container_ids)
    }
    /// Deletes a container and everything in it. False when it did not exist.
    pub async fn delete(&self, container_id: &str) -> Result<bool> {
        Ok(self
            .0
            .call(ContainerDeleteRequest {
                container_id: container_id.into(),
            })
            .await?
            .deleted)
    }
}

/// Image helpers.
#[derive(Debug)]
pub struct Images<'a, R>(&'a R);

impl<R: Runtime> Images<'_, R> {
    /// Creates an image (and its first session) from a raw config.
    pub async fn create(
        &self,
        container_id: &str,
        config: ImageConfig,
    ) -> Result<ImageCreateResponse> {
        self.0
            .call(ImageCreateRequest {
                container_id: container_id.into(),
                config,
            })
            .await
    }
    /// Builds an image from a registered definition.
    pub async fn build(
        &self,
        container_id: &str,
        definition_name: &str,
        config: ImageConfig,
    ) -> Result<ImageCreateResponse> {
        self.0
            .call(ImageBuildRequest {
                container_id: container_id.into(),
                definition_name: definition_name.into(),
                config,
            })
            .await
    }
    /// An image, `None` when unknown.
    pub async fn get(&self, image_id: &str) -> Result<Option<ImageListItem>> {
        Ok(self
            .0
            .call(ImageGetRequest {
                image_id: image_id.into(),
            })
            .await?
            .record)
    }
    /// Images of one container, or of all visible ones.
    pub async fn list(&self, container_id: Option<&str>) -> Result<Vec<ImageListItem>> {
        Ok(self
            .0
            .call(ImageListRequest {
                container_id: container_id.map(Into::into),
            })
            .await?
            .records)
    }
    /// Renames or re-describes an image.
    pub async fn update(&self, image_id: &str, updates: ImageUpdates) -> Result<ImageListItem> {
        Ok(self
            .0
            .call(ImageUpdateRequest {
                image_id: image_id.into(),
                updates,
            })
            .await?
            .record)
    }
    /// Deletes an image with its sessions, messages and workdir.
    pub async fn delete(&self, image_id: &str) -> Result<()> {
        self.0
            .call(ImageDeleteRequest {
                image_id: image_id.into(),
            })
            .await
            .map(|_| ())
    }
    /// Starts (or reuses) the image's agent.
    pub async fn run(&self, image_id: &str) -> Result<ImageRunResponse> {
        self.0
            .call(ImageRunRequest {
                image_id: image_id.into(),
            })
            .await
    }
    /// Stops the image's agent.
    pub async fn stop(&self, image_id: &str) -> Result<()> {
        self.0
            .call(ImageStopRequest {
                image_id: image_id.into(),
            })
            .await
            .map(|_| ())
    }
    /// The whole history of the image's first session, read page by page.
    pub async fn messages(&self, image_id: &str) -> Result<Vec<Message>> {
        all_pages(|after| async move {
            let page = self.messages_page(image_id, None, after, None).await?;
            Ok((page.messages, page.has_more, page.next_cursor))
        })
        .await
    }
    /// One page of the image's first session's history (see `image_messages_request`).
    pub async fn messages_page(
        &self,
        image_id: &str,
        limit: Option<u32>,
        after: Option<u64>,
        before: Option<u64>,
    ) -> Result<ImageMessagesResponse> {
        self.0
            .call(ImageMessagesRequest {
                image_id: image_id.into(),
                limit,
                after,
                before,
            })
            .await
    }
}

/// Session helpers.
#[derive(Debug)]
pub struct Sessions<'a, R>(&'a R);

impl<R: Runtime> Sessions<'_, R> {
    /// Another conversation on an image.
    pub async fn create(&self, image_id: &str, title: Option<&str>) -> Result<SessionRecord> {
        Ok(self
            .0
            .call(SessionCreateRequest {
                image_id: image_id.into(),
                title: title.map(Into::into),
            })
            .await?
            .session)
    }
    /// The sessions of an image.
    pub async fn list(&self, image_id: &str) -> Result<Vec<SessionRecord>> {
        Ok(self
            .0
            .call(SessionListRequest {
                image_id: image_id.into(),
            })
            .await?
            .sessions)
    }
    /// A session, `None` when unknown.
    pub async fn get(&self, session_id: &str) -> Result<Option<SessionRecord>> {
        Ok(self
            .0
            .call(SessionGetRequest {
                session_id: session_id.into(),
            })
            .await?
            .session)
    }
    /// Sets (or clears) a session's title.
    pub async fn set_title(&self, session_id: &str, title: Option<&str>) -> Result<SessionRecord> {
        Ok(self
            .0
            .call(SessionUpdateRequest {
                session_id: session_id.into(),
                title: title.map(Into::into),
            })
            .await?
            .session)
    }
    /// Deletes a session and its messages.
    pub async fn delete(&self, session_id: &str) -> Result<()> {
        self.0
            .call(SessionDeleteRequest {
                session_id: session_id.into(),
            })
            .await
            .map(|_| ())
    }
    /// Starts (or reuses) the session's agent.
    pub async fn resume(&self, session_id: &str) -> Result<SessionResumeResponse> {
        self.0
            .call(SessionResumeRequest {
                session_id: session_id.into(),
            })
            .await
    }
    /// The session's whole history, read page by page.
    pub async fn messages(&self, session_id: &str) -> Result<Vec<Message>> {
        all_pages(|after| async move {
            let page = self.messages_page(session_id, None, after, None).await?;
            Ok((page.messages, page.has_more, page.next_cursor))
        })
        .await
    }
    /// One page of the session's history (see `session_messages_request`).
    pub async fn messages_page(
        &self,
        session_id: &str,
        limit: Option<u32>,
        after: Option<u64>,
        before: Option<u64>,
    ) -> Result<SessionMessagesResponse> {
        self.0
            .call(SessionMessagesRequest {
                session_id: session_id.into(),
                limit,
                after,
                before,
            })
            .await
    }
    /// Subscribes to the session's new events.
    pub async fn events(&self, session_id: &str) -> Result<Subscription> {
        self.0.subscribe(EventFilter::session(session_id)).await
    }
    /// Subscribes to the session's events after `cursor` (replayed first), then new ones.
    pub async fn events_after(&self, session_id: &str, cursor: u64) -> Result<Subscription> {
        self.0
            .subscribe(EventFilter {
                sessions: vec![(session_id.into(), Some(cursor))],
                ..Default::default()
            })
            .await
    }
}

/// Agent and message helpers.
#[derive(Debug)]
pub struct Agents<'a, R>(&'a R);

impl<R: Runtime> Agents<'_, R> {
    /// Sends a user message to an image's first session (starting its agent if needed).
    pub async fn send_to_image(
        &self,
        image_id: &str,
        content: impl Into<Content>,
    ) -> Result<MessageSendResponse> {
        self.0
            .call(MessageSendRequest {
                image_id: Some(image_id.into()),
                agent_id: None,
                session_id: None,
                content: content.into(),
            })
            .await
    }
    /// Sends a user message to a session (starting its agent if needed).
    pub async fn send_to_session(
        &self,
        session_id: &str,
        content: impl Into<Content>,
    ) -> Result<MessageSendResponse> {
        self.0
            .call(MessageSendRequest {
                image_id: None,
                agent_id: None,
                session_id: Some(session_id.into()),
                content: content.into(),
            })
            .await
    }
    /// Sends a user message to a running agent.
    pub async fn send(
        &self,
        agent_id: &str,
        content: impl Into<Content>,
    ) -> Result<MessageSendResponse> {
        self.0
            .call(MessageSendRequest {
                image_id: None,
                agent_id: Some(agent_id.into()),
                session_id: None,
                content: content.into(),
            })
            .await
    }
    /// Interrupts an agent's current turn.
    pub async fn interrupt(&self, agent_id: &str) -> Result<AgentInterruptResponse> {
        self.0
            .call(AgentInterruptRequest {
                agent_id: Some(agent_id.into()),
                ..Default::default()
            })
            .await
    }
    /// Interrupts the current turn of an image's agent (a success when it is offline).
    pub async fn interrupt_image(&self, image_id: &str) -> Result<AgentInterruptResponse> {
        self.0
            .call(AgentInterruptRequest {
                image_id: Some(image_id.into()),
                ..Default::default()
            })
            .await
    }
    /// Whether an agent runs, and in which container.
    pub async fn get(&self, agent_id: &str) -> Result<AgentGetResponse> {
        self.0
            .call(AgentGetRequest {
                agent_id: agent_id.into(),
            })
            .await
    }
    /// Running agents.
    pub async fn list(&self, container_id: Option<&str>) -> Result<Vec<AgentInfo>> {
        Ok(self
            .0
            .call(AgentListRequest {
                container_id: container_id.map(Into::into),
            })
            .await?
            .agents)
    }
    /// Stops an agent; false when it was not running.
    pub async fn destroy(&self, agent_id: &str) -> Result<bool> {
        Ok(self
            .0
            .call(AgentDestroyRequest {
                agent_id: agent_id.into(),
            })
            .await?
            .success)
    }
    /// Stops every agent of a container.
    pub async fn destroy_all(&self, container_id: &str) -> Result<()> {
        self.0
            .call(AgentDestroyAllRequest {
                container_id: container_id.into(),
            })
            .await
            .map(|_| ())
    }
}

/// Definition helpers.
#[derive(Debug)]
pub struct Definitions<'a, R>(&'a R);

impl<R: Runtime> Definitions<'_, R> {
    /// Registers (or replaces) a definition. Returns whether it replaced one.
    pub async fn register(&self, definition: Definition) -> Result<bool> {
        Ok(self
            .0
            .call(DefinitionRegisterRequest { definition })
            .await?
            .replaced)
    }
    /// Registered definitions.
    pub async fn list(&self) -> Result<Vec<Definition>> {
        Ok(self.0.call(DefinitionListRequest {}).await?.definitions)
    }
    /// A definition by name.
    pub async fn get(&self, name: &str) -> Result<Option<Definition>> {
        Ok(self
            .0
            .call(DefinitionGetRequest { name: name.into() })
            .await?
            .definition)
    }
}

/// A whole history read page by page: `page(after)` returns a page's messages, whether more
/// follow and the cursor to ask for them with.
async fn all_pages<F, Fut>(mut page: F) -> Result<Vec<Message>>
where
    F: FnMut(Option<u64>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<Message>, bool, Option<u64>)>>,
{
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let (messages, has_more, next) = page(after).await?;
        out.extend(messages);
        match next {
            Some(next) if has_more => after = Some(next),
            _ => return Ok(out),
        }
    }
}
