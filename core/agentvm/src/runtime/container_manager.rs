//! The ContainerManager: which agents run, in which container, for which session.
//!
//! `run(image, containerId)` starts (or reuses) the agent of an image's first session,
//! `resume(session, containerId)` the agent of any session. Provisioning — loading history,
//! wiring the driver, tools and bus — stays in here.

use crate::error::{Error, Result};
use crate::model::{now_ms, Event, EventContext, EventPayload, ImageRecord, SessionRecord};
use crate::runtime::agent::{Agent, AgentEnv};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
struct Registry {
    by_id: HashMap<String, Arc<Agent>>,
    by_session: HashMap<String, String>,
}

/// Runs agents for images and sessions.
pub struct ContainerManager {
    env: Arc<AgentEnv>,
    registry: Mutex<Registry>,
}

impl std::fmt::Debug for ContainerManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerManager")
            .field("agents", &self.len())
            .finish()
    }
}

impl ContainerManager {
    pub(crate) fn new(env: Arc<AgentEnv>) -> Self {
        ContainerManager {
            env,
            registry: Mutex::new(Registry::default()),
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the agent of `image`'s first session in `container_id`, or returns the running
    /// one. The flag is true when it was already running.
    pub async fn run(&self, image: &ImageRecord, container_id: &str) -> Result<(Arc<Agent>, bool)> {
        if image.container_id != container_id {
            return Err(Error::not_found("Image", image.image_id.clone()));
        }
        self.start(image, &image.session_id).await
    }

    /// Starts the agent of `session` in `container_id`, or returns the running one.
    pub async fn resume(
        &self,
        session: &SessionRecord,
        container_id: &str,
    ) -> Result<(Arc<Agent>, bool)> {
        if session.container_id != container_id {
            return Err(Error::not_found("Session", session.session_id.clone()));
        }
        let image = self
            .env
            .store
            .get_image(&session.image_id)?
            .ok_or_else(|| Error::not_found("Image", session.image_id.clone()))?;
        self.start(&image, &session.session_id).await
    }

    async fn start(&self, image: &ImageRecord, session_id: &str) -> Result<(Arc<Agent>, bool)> {
        if let Some(agent) = self.by_session(session_id) {
            return Ok((agent, true));
        }
        // Load the history before registering, so a message received right after is not also
        // in the loaded history. Only the newest page that fits the agent's window: older
        // messages stay in the store.
        let store = self.env.store.clone();
        let sid = session_id.to_string();
        let page = crate::store::MessagePageRequest {
            after: None,
            before: Some(u64::MAX),
            limit: self.env.window.messages,
            max_bytes: self.env.window.bytes,
        };
        let history = tokio::task::spawn_blocking(move || store.page_messages(&sid, &page))
            .await
            .map_err(|e| Error::Internal(format!("loading history: {e}")))??
            .messages
            .into_iter()
            .map(|(_, m)| m);
        let agent = {
            let mut reg = self.registry();
            if let Some(id) = reg.by_session.get(session_id) {
                if let Some(agent) = reg.by_id.get(id) {
                    return Ok((agent.clone(), true));
                }
            }
            let agent = Agent::spawn(self.env.clone(), image, session_id, history.collect());
            reg.by_session
                .insert(session_id.to_string(), agent.id().to_string());
            reg.by_id.insert(agent.id().to_string(), agent.clone());
            agent
        };
        self.env.bus.publish(Event::new(
            EventPayload::AgentRegistered {
                container_id: agent.container_id().to_string(),
                agent_id: agent.id().to_string(),
                definition_name: agent.definition_name().to_string(),
                registered_at: now_ms(),
            },
            Some(EventContext {
                container_id: Some(agent.container_id().to_string()),
                image_id: Some(agent.image_id().to_string()),
                agent_id: Some(agent.id().to_string()),
                session_id: None,
                turn_id: None,
            }),
        ));
        Ok((agent, false))
    }

    /// A running agent by id.
    pub fn get(&self, agent_id: &str) -> Option<Arc<Agent>> {
        self.registry().by_id.get(agent_id).cloned()
    }

    /// Whether an agent runs.
    pub fn has(&self, agent_id: &str) -> bool {
        self.registry().by_id.contains_key(agent_id)
    }

    /// The agent of a session, if running.
    pub fn by_session(&self, session_id: &str) -> Option<Arc<Agent>> {
        let reg = self.registry();
        reg.by_session
            .get(session_id)
            .and_then(|id| reg.by_id.get(id))
            .cloned()
    }

    /// Running agents, of one container or all, ordered by id.
    pub fn list(&self, container_id: Option<&str>) -> Vec<Arc<Agent>> {
        let mut out: Vec<_> = self
            .registry()
            .by_id
            .values()
            .filter(|a| container_id.map(|c| a.container_id() == c).unwrap_or(true))
            .cloned()
            .collect();
        out.sort_by(|a, b| a.id().cmp(b.id()));
        out
    }

    /// How many agents run.
    pub fn len(&self) -> usize {
        self.registry().by_id.len()
    }

    /// True when no agent runs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stops an agent (interrupting its turn) and forgets it. False when it was not running.
    /// Returns at once; `Agent::stopped` waits for the actor to finish.
    pub fn destroy(&self, agent_id: &str) -> Option<Arc<Agent>> {
        let agent = {
            let mut reg = self.registry();
            let agent = reg.by_id.remove(agent_id)?;
            reg.by_session.remove(agent.session_id());
            agent
        };
        agent.stop();
        Some(agent)
    }

    /// Stops every agent of a container and waits until they have stopped.
    pub async fn destroy_all(&self, container_id: &str) -> usize {
        let agents = self.list(Some(container_id));
        self.stop_and_wait(agents.iter().map(|a| a.id().to_string()).collect())
            .await
    }

    /// Stops every agent of the runtime and waits until they have stopped.
    pub async fn destroy_everything(&self) -> usize {
        let agents = self.list(None);
        self.stop_and_wait(agents.iter().map(|a| a.id().to_string()).collect())
            .await
    }

    /// Stops the agents of the given sessions and waits for them.
    pub async fn destroy_sessions(&self, session_ids: &[String]) -> usize {
        let ids: Vec<String> = session_ids
            .iter()
            .filter_map(|s| self.by_session(s).map(|a| a.id().to_string()))
            .collect();
        self.stop_and_wait(ids).await
    }

    async fn stop_and_wait(&self, agent_ids: Vec<String>) -> usize {
        let stopped: Vec<_> = agent_ids.iter().filter_map(|id| self.destroy(id)).collect();
        for a in &stopped {
            a.stopped().await;
        }
        stopped.len()
    }
}
