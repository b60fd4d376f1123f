//! The agent actor: one task per running agent.
//!
//! [`Agent::receive`] stores the user message durably and queues a turn; the actor answers
//! queued messages one turn at a time, in order. A turn streams the model's reply as events on
//! the session topic, runs tool calls and feeds their results back until the model ends its
//! turn, and stores each finished message exactly once, before announcing it.
//!
//! Event order for a plain reply (docs/protocol.md §5): `message_start`, `conversation_start`,
//! (`text_delta`, `conversation_responding`) × N, [`message_delta` when usage is known],
//! `message_stop`, `assistant_message`, `conversation_end`.
//!
//! What each piece of the model's stream means for the turn (which events, which messages,
//! when tools run, when the turn ends) is decided in `turn`, with no I/O; the actor here
//! reads the stream, publishes, stores, runs tools and watches for interrupts.
//!
//! An image with `mcpServers` gives its actor an `McpHub`: its servers' tools are offered with
//! the built-in ones, calls named `mcp__…` go to it, and it is closed when the actor ends.

use crate::error::{Error, Result};
use crate::llm::{LlmDriver, LlmEvent, LlmRequest};
use crate::mcp::{McpHub, MCP_TOOL_PREFIX};
use crate::model::{
    new_id, now_ms, Content, Event, EventContext, EventPayload, ImageRecord, Message, ToolCall,
};
use crate::runtime::bus::{Bus, EventFilter, Subscription};
use crate::runtime::tools::{ToolContext, ToolRunner};
use crate::store::Store;
use futures::StreamExt;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;
use turn::{Decision, Effect, Then, TurnState};
use window::Window;
pub(crate) use window::WindowBounds;

mod turn;
mod window;

/// What every agent of a runtime shares.
pub(crate) struct AgentEnv {
    pub store: Arc<dyn Store>,
    pub bus: Bus,
    pub driver: Arc<dyn LlmDriver>,
    pub tools: Arc<dyn ToolRunner>,
    /// Timeouts and backoff of the agents' MCP servers.
    pub mcp_limits: crate::mcp::McpLimits,
    /// Model calls allowed for one user message (tool loops).
    pub max_turns: u32,
    /// Output token limit per model call.
    pub max_tokens: u32,
    /// The longest wait for the model's next event (the first one included) before the turn
    /// fails with `errorCode: timeout`.
    pub request_timeout: std::time::Duration,
    /// User messages that may wait for an agent before `receive` refuses more.
    pub mailbox: usize,
    /// How much history an agent holds in memory (see `agent/window.rs`).
    pub window: WindowBounds,
}

enum Control {
    Interrupt,
    Stop,
}

/// A running agent: an image's definition snapshot talking in one session.
pub struct Agent {
    id: String,
    container_id: String,
    image_id: String,
    session_id: String,
    definition_name: String,
    env: Arc<AgentEnv>,
    inputs: mpsc::Sender<Box<Input>>,
    control: mpsc::UnboundedSender<Control>,
    /// Keeps "store, then queue" atomic so the stored order is the answered order.
    send_lock: tokio::sync::Mutex<()>,
    /// Turns running or queued.
    pending: Arc<AtomicUsize>,
    done: watch::Receiver<bool>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("id", &self.id)
            .field("container_id", &self.container_id)
            .field("image_id", &self.image_id)
            .field("session_id", &self.session_id)
            .finish()
    }
}

impl Agent {
    /// Starts the actor for `image` talking in `session_id`, with the newest `history` already
    /// loaded (oldest first; the window keeps what fits its bounds).
    pub(crate) fn spawn(
        env: Arc<AgentEnv>,
        image: &ImageRecord,
        session_id: &str,
        history: Vec<Message>,
    ) -> Arc<Agent> {
        let (inputs_tx, inputs_rx) = mpsc::channel(env.mailbox.max(1));
        let env_window = env.window;
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = watch::channel(false);
        let pending = Arc::new(AtomicUsize::new(0));
        let agent = Arc::new(Agent {
            id: new_id("agent"),
            container_id: image.container_id.clone(),
            image_id: image.image_id.clone(),
            session_id: session_id.to_string(),
            definition_name: image
                .definition_name
                .clone()
                .unwrap_or_else(|| image.name.clone()),
            env: env.clone(),
            inputs: inputs_tx,
            control: control_tx,
            send_lock: tokio::sync::Mutex::new(()),
            pending: pending.clone(),
            done: done_rx,
        });
        let mcp = image
            .definition
            .mcp_servers
            .as_ref()
            .filter(|s| !s.is_empty())
            .map(|servers| {
                let bus = env.bus.clone();
                let context = EventContext {
                    container_id: Some(agent.container_id.clone()),
                    image_id: Some(agent.image_id.clone()),
                    agent_id: Some(agent.id.clone()),
                    session_id: Some(agent.session_id.clone()),
                    turn_id: None,
                };
                let report: crate::mcp::McpReport = Arc::new(move |_server, message| {
                    bus.publish(Event::new(
                        EventPayload::ErrorOccurred {
                            code: "mcp_server_failed".into(),
                            message: message.to_string(),
                            recoverable: true,
                        },
                        Some(context.clone()),
                    ));
                });
                Arc::new(McpHub::new(
                    servers,
                    env.mcp_limits.clone(),
                    env.tools.clone(),
                    ToolContext {
                        container_id: agent.container_id.clone(),
                        image_id: agent.image_id.clone(),
                        session_id: agent.session_id.clone(),
                        enabled: image.definition.tools.clone(),
                    },
                    report,
                ))
            });
        let actor = Actor {
            env,
            mcp: mcp.clone(),
            ids: Ids {
                agent: agent.id.clone(),
                container: agent.container_id.clone(),
                image: agent.image_id.clone(),
                session: agent.session_id.clone(),
            },
            model: image.definition.model.clone(),
            system: image.definition.system_prompt.clone(),
            enabled_tools: image.definition.tools.clone(),
            history: Window::new(env_window, history),
            pending,
        };
        tokio::spawn(async move {
            actor.run(inputs_rx, control_rx).await;
            // The agent's MCP sessions end with it: no process or exec outlives it.
            if let Some(mcp) = mcp {
                mcp.close().await;
            }
            let _ = done_tx.send(true);
        });
        agent
    }

    /// `agent_…`
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The container it runs in.
    pub fn container_id(&self) -> &str {
        &self.container_id
    }
    /// Its image.
    pub fn image_id(&self) -> &str {
        &self.image_id
    }
    /// Its session (the event topic).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }
    /// The definition (or image) name it was built from.
    pub fn definition_name(&self) -> &str {
        &self.definition_name
    }

    /// Whether a turn is running or queued.
    pub fn is_busy(&self) -> bool {
        self.pending.load(Ordering::Acquire) > 0
    }

    /// Stores `content` as a user message and queues it. Returns the stored message once it is
    /// durable; the reply streams on the session topic. Messages are answered in the order
    /// they were received, one turn at a time.
    pub async fn receive(&self, content: Content) -> Result<Message> {
        let _order = self.send_lock.lock().await;
        if *self.done.borrow() || self.inputs.is_closed() {
            return Err(Error::Conflict(format!("agent {} has stopped", self.id)));
        }
        let permit = self.inputs.try_reserve().map_err(|_| {
            Error::Conflict(format!(
                "agent {} has {} messages waiting; retry when it has answered some",
                self.id, self.env.mailbox
            ))
        })?;
        let message = Message::user(new_id("msg"), content, now_ms());
        let store = self.env.store.clone();
        let (session, m) = (self.session_id.clone(), message.clone());
        tokio::task::spawn_blocking(move || store.append_message(&session, &m))
            .await
            .map_err(|e| Error::Internal(format!("storing a message: {e}")))??;
        self.pending.fetch_add(1, Ordering::AcqRel);
        // The turn's span starts here, a child of the request that sent the message.
        let span = crate::trace::turn(&self.id, &self.session_id, &self.container_id);
        permit.send(Box::new(Input {
            message: message.clone(),
            span,
        }));
        Ok(message)
    }

    /// Interrupts the turn running now, if any. Returns whether a turn was running or queued.
    pub fn interrupt(&self) -> bool {
        let busy = self.is_busy();
        if busy {
            let _ = self.control.send(Control::Interrupt);
        }
        busy
    }

    /// Asks the actor to stop (interrupting a running turn first).
    pub(crate) fn stop(&self) {
        let _ = self.control.send(Control::Stop);
    }

    /// Waits until the actor has stopped.
    pub async fn stopped(&self) {
        let mut done = self.done.clone();
        let _ = done.wait_for(|d| *d).await;
    }

    /// A subscription to this agent's session events (new ones).
    pub fn events(&self) -> Result<Subscription> {
        self.env
            .bus
            .subscribe(EventFilter::session(self.session_id.clone()))
    }
}

/// A user message waiting for its turn, with the turn's span.
struct Input {
    message: Message,
    span: tracing::Span,
}

struct Ids {
    agent: String,
    container: String,
    image: String,
    session: String,
}

struct Actor {
    env: Arc<AgentEnv>,
    /// The image's MCP servers, started at the first turn.
    mcp: Option<Arc<McpHub>>,
    ids: Ids,
    model: Option<String>,
    system: Option<String>,
    enabled_tools: Vec<String>,
    /// The recent history the model is sent, bounded; the rest stays in the store.
    history: Window,
    pending: Arc<AtomicUsize>,
}

/// How a turn ended.
enum Ended {
    Done,
    /// A stop was requested during the turn.
    Stop,
}

impl Actor {
    async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Box<Input>>,
        mut control: mpsc::UnboundedReceiver<Control>,
    ) {
        loop {
            tokio::select! {
                biased;
                // Biased: an interrupt that arrives after its turn ended is consumed here, before
                // the next queued message starts, so it never cuts the wrong turn.
                c = control.recv() => match c {
                    Some(Control::Interrupt) => continue,
                    Some(Control::Stop) | None => break,
                },
                m = inputs.recv() => match m {
                    Some(input) => {
                        let Input { message, span } = *input;
                        // Boxed: an idle actor's task does not carry a turn's state.
                        let ended = Box::pin(self.turn(message, &mut control))
                            .instrument(span)
                            .await;
                        self.pending.fetch_sub(1, Ordering::AcqRel);
                        if matches!(ended, Ended::Stop) {
                            break;
                        }
                    }
                    None => break,
                },
            }
        }
        self.env.bus.publish(Event::new(
            EventPayload::AgentUnregistered {
                container_id: self.ids.container.clone(),
                agent_id: self.ids.agent.clone(),
            },
            Some(EventContext {
                container_id: Some(self.ids.container.clone()),
                image_id: Some(self.ids.image.clone()),
                agent_id: Some(self.ids.agent.clone()),
                session_id: None,
                turn_id: None,
            }),
        ));
    }

    fn context(&self, turn_id: &str) -> EventContext {
        EventContext {
            container_id: Some(self.ids.container.clone()),
            image_id: Some(self.ids.image.clone()),
            agent_id: Some(self.ids.agent.clone()),
            session_id: Some(self.ids.session.clone()),
            turn_id: Some(turn_id.to_string()),
        }
    }

    fn emit(&self, turn_id: &str, payload: EventPayload) {
        self.env
            .bus
            .publish(Event::new(payload, Some(self.context(turn_id))));
    }

    /// Stores a message, then keeps it in the window (the turn goes on with it either way).
    /// A failed store is logged and returned: the session was deleted under the agent, or the
    /// disk is full.
    async fn store(&mut self, message: Message) -> Result<()> {
        let store = self.env.store.clone();
        let session = self.ids.session.clone();
        let m = message.clone();
        let stored = tokio::task::spawn_blocking(move || store.append_message(&session, &m)).await;
        let result = match stored {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => {
                tracing::warn!(agent = %self.ids.agent, error = %e.chain(), "could not store a message");
                Err(e)
            }
            Err(e) => {
                tracing::error!(agent = %self.ids.agent, error = %e, "storing a message panicked");
                Err(Error::Internal(format!("storing a message panicked: {e}")))
            }
        };
        self.history.push(message);
        result
    }

    /// Carries out `effects` in order: publishes, and stores each message before announcing it.
    /// A message that could not be stored is not announced as stored: subscribers get an
    /// `error_occurred` saying so (code: the error's kind, such as `storage_full`) instead.
    async fn apply(&mut self, turn_id: &str, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Emit(payload) => self.emit(turn_id, payload),
                Effect::Store(draft) => {
                    let (m, announce) = draft.stamp(now_ms());
                    match self.store(m.clone()).await {
                        Ok(()) => self.emit(turn_id, announce(m)),
                        Err(e) => self.emit(
                            turn_id,
                            EventPayload::ErrorOccurred {
                                code: e.kind().as_str().to_string(),
                                message: format!("message {} was not stored: {}", m.id, e.chain()),
                                recoverable: true,
                            },
                        ),
                    }
                }
            }
        }
    }

    /// Answers `user`: calls the model, runs the tools it asks for and calls it again, until it
    /// ends its turn, fails, is interrupted or has been called `max_turns` times.
    async fn turn(
        &mut self,
        user: Message,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Ended {
        let turn_id = turn_id_of(&user.id);
        self.history.push(user);
        let model = self
            .model
            .clone()
            .unwrap_or_else(|| self.env.driver.default_model().to_string());
        let mut tools = self.env.tools.specs(&self.enabled_tools);
        if let Some(mcp) = &self.mcp {
            tools.extend(mcp.specs().await);
        }
        let mut state = TurnState::new(self.ids.agent.clone(), self.ids.container.clone());
        for _ in 0..self.env.max_turns.max(1) {
            let request = LlmRequest {
                model: model.clone(),
                system: self.system.clone(),
                messages: self.history.to_vec(),
                tools: tools.clone(),
                max_tokens: self.env.max_tokens,
            };
            let span = crate::trace::chat(self.env.driver.as_ref(), &model, self.env.max_tokens);
            let calls = match self
                .reply(&turn_id, request, &mut state, control, &span)
                .instrument(span.clone())
                .await
            {
                ControlFlow::Continue(calls) => calls,
                ControlFlow::Break(ended) => return ended,
            };
            if let ControlFlow::Break(ended) =
                self.run_tools(&turn_id, &state, &calls, control).await
            {
                return ended;
            }
        }
        let effects = state.out_of_model_calls(self.env.max_turns);
        self.apply(&turn_id, effects).await;
        Ended::Done
    }

    /// Streams one model reply, publishing it as it comes. Continues with the tool calls to
    /// run; breaks when the turn is over.
    async fn reply(
        &mut self,
        turn_id: &str,
        request: LlmRequest,
        state: &mut TurnState,
        control: &mut mpsc::UnboundedReceiver<Control>,
        span: &tracing::Span,
    ) -> ControlFlow<Ended, Vec<ToolCall>> {
        let mut stream = self.env.driver.stream(request);
        state.start_reply(new_id("msg"));
        loop {
            let next = tokio::select! {
                biased;
                c = control.recv() => {
                    drop(stream);
                    self.apply(turn_id, state.on_interrupt()).await;
                    return ControlFlow::Break(ended_by(c));
                }
                e = tokio::time::timeout(self.env.request_timeout, stream.next()) => e,
            };
            let Ok(next) = next else {
                // A stalled reply: dropping the stream cancels the request.
                drop(stream);
                self.warn_llm_failure(
                    span,
                    &format!(
                        "no reply within {} s",
                        self.env.request_timeout.as_secs_f64()
                    ),
                    Some("timeout"),
                );
                let effects = state.on_timeout(self.env.request_timeout);
                self.apply(turn_id, effects).await;
                return ControlFlow::Break(Ended::Done);
            };
            let Decision { effects, then } = match next {
                Some(event) => {
                    match &event {
                        LlmEvent::Error { message, code } => {
                            self.warn_llm_failure(span, message, code.as_deref())
                        }
                        LlmEvent::MessageStart { model } => {
                            crate::trace::chat_reply(span, Some(model), None, None)
                        }
                        LlmEvent::MessageDelta { usage, stop_reason } => crate::trace::chat_reply(
                            span,
                            None,
                            usage.as_ref(),
                            stop_reason.as_deref(),
                        ),
                        _ => {}
                    }
                    state.on_llm_event(event)
                }
                None => {
                    self.warn_llm_failure(
                        span,
                        "the reply ended before it was complete",
                        Some("network"),
                    );
                    state.on_stream_end()
                }
            };
            match then {
                Then::Read => self.apply(turn_id, effects).await,
                Then::Failed => {
                    self.apply(turn_id, effects).await;
                    return ControlFlow::Break(Ended::Done);
                }
                Then::Done => {
                    drop(stream);
                    self.apply(turn_id, effects).await;
                    return ControlFlow::Break(Ended::Done);
                }
                Then::RunTools(calls) => {
                    drop(stream);
                    self.apply(turn_id, effects).await;
                    return ControlFlow::Continue(calls);
                }
            }
        }
    }

    /// A failed LLM request, at WARN for operators (the client sees `error_received`): which
    /// provider and where, never the key; the retries already happened in the driver.
    fn warn_llm_failure(&self, span: &tracing::Span, message: &str, code: Option<&str>) {
        crate::trace::failed(span, code.unwrap_or("unknown"), &message);
        let driver = &self.env.driver;
        tracing::warn!(
            provider = driver.name(),
            endpoint = driver.endpoint().unwrap_or("in-process"),
            code = code.unwrap_or("unknown"),
            "LLM request failed: {message}"
        );
    }

    /// Runs a reply's tool calls in order, storing each result. Breaks when an interrupt or a
    /// stop cuts them short; the calls left unanswered then get error results.
    async fn run_tools(
        &mut self,
        turn_id: &str,
        state: &TurnState,
        calls: &[ToolCall],
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> ControlFlow<Ended> {
        for (i, call) in calls.iter().enumerate() {
            self.emit(turn_id, state.tool_executing(call));
            let ctx = ToolContext {
                container_id: self.ids.container.clone(),
                image_id: self.ids.image.clone(),
                session_id: self.ids.session.clone(),
                enabled: self.enabled_tools.clone(),
            };
            let tools = self.env.tools.clone();
            let span = crate::trace::tool(call);
            let mcp = self.mcp.clone();
            let outcome = tokio::select! {
                biased;
                c = control.recv() => {
                    crate::trace::failed(&span, "interrupted", &"the turn was interrupted");
                    self.apply(turn_id, state.on_tools_interrupted(&calls[i..])).await;
                    return ControlFlow::Break(ended_by(c));
                }
                o = async {
                    match &mcp {
                        Some(m) if call.name.starts_with(MCP_TOOL_PREFIX) => m.call(call).await,
                        _ => tools.run(&ctx, call).await,
                    }
                }
                .instrument(span.clone()) => o,
            };
            if outcome.is_error {
                crate::trace::failed(&span, "tool_error", &outcome.output);
            }
            self.apply(turn_id, state.tool_finished(call, outcome))
                .await;
        }
        ControlFlow::Continue(())
    }
}

/// How a turn cut short by `control` ends: a stop (or a closed channel) stops the actor.
fn ended_by(control: Option<Control>) -> Ended {
    if matches!(control, Some(Control::Interrupt)) {
        Ended::Done
    } else {
        Ended::Stop
    }
}

/// The id of the turn that answers user message `message_id`: `turn_` and the message id's
/// unique part. A message is answered by one turn, so a client that sent it (and got its id
/// back in `message_send_response`) knows which events answer it.
pub fn turn_id_of(message_id: &str) -> String {
    format!(
        "turn_{}",
        message_id.strip_prefix("msg_").unwrap_or(message_id)
    )
}

#[cfg(test)]
mod tests {
    //! The actor's paths the protocol tests in `tests/` do not reach: a turn that runs out of
    //! model calls, and an interrupt while a tool runs.

    use crate::llm::ToolSpec;
    use crate::model::{EventPayload, ImageConfig, ImageListItem, Subtype, ToolCall};
    use crate::runtime::{BusItem, RuntimeExt, Subscription, ToolContext, ToolOutcome, ToolRunner};
    use crate::{AgentConfig, AgentVm, MockDriver};
    use async_trait::async_trait;
    use std::sync::Arc;
    use std::time::Duration;

    /// The payloads of the turn's events, up to and including `conversation_end`.
    async fn rest_of_turn(sub: &mut Subscription) -> Vec<EventPayload> {
        let mut out = Vec::new();
        loop {
            let item = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                .await
                .expect("the turn ended within 10 s")
                .expect("the subscription is open");
            let BusItem::Event(p) = item else {
                panic!("the subscription overflowed")
            };
            let end = matches!(p.event.payload, EventPayload::ConversationEnd { .. });
            out.push(p.event.payload.clone());
            if end {
                return out;
            }
        }
    }

    #[tokio::test]
    async fn every_event_of_a_turn_names_the_turn_of_its_user_message() {
        let vm = AgentVm::builder()
            .llm(Arc::new(MockDriver::default()))
            .open()
            .await
            .unwrap();
        let image = vm
            .images()
            .create("c1", ImageConfig::default())
            .await
            .unwrap()
            .record;
        let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
        for text in ["one", "two"] {
            let sent = vm
                .agents()
                .send_to_image(&image.image_id, text)
                .await
                .unwrap();
            let expected = super::turn_id_of(&sent.message_id);
            assert!(expected.starts_with("turn_") && expected != "turn_");
            loop {
                let item = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                    .await
                    .unwrap()
                    .unwrap();
                let BusItem::Event(p) = item else { panic!() };
                let turn = p.event.context.as_ref().and_then(|c| c.turn_id.clone());
                assert_eq!(
                    turn.as_deref(),
                    Some(expected.as_str()),
                    "{:?}",
                    p.event.payload
                );
                if matches!(p.event.payload, EventPayload::ConversationEnd { .. }) {
                    break;
                }
            }
        }
    }

    fn types(events: &[EventPayload]) -> Vec<&'static str> {
        events.iter().map(|e| e.type_name()).collect()
    }

    async fn with_tool_image(vm: &AgentVm) -> ImageListItem {
        let config = ImageConfig {
            model: Some("with-tool".into()),
            ..Default::default()
        };
        vm.images().create("c1", config).await.unwrap().record
    }

    const TOOL_CALL_REPLY: [&str; 15] = [
        "message_start",
        "conversation_start",
        "text_delta",
        "conversation_responding",
        "tool_use_start",
        "tool_planned",
        "input_json_delta",
        "tool_use_stop",
        "message_stop",
        "assistant_message",
        "tool_call_message",
        "tool_executing",
        "tool_result",
        "tool_failed",
        "tool_result_message",
    ];

    #[tokio::test]
    async fn a_turn_out_of_model_calls_fails_after_answering_its_tool_calls() {
        let vm = AgentVm::builder()
            .llm(Arc::new(MockDriver::default()))
            .agent_config(AgentConfig {
                max_turns: 1,
                ..Default::default()
            })
            .open()
            .await
            .unwrap();
        let image = with_tool_image(&vm).await;
        let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
        vm.agents()
            .send_to_image(&image.image_id, "run it")
            .await
            .unwrap();
        let events = rest_of_turn(&mut sub).await;
        let mut expected = TOOL_CALL_REPLY.to_vec();
        expected.extend([
            "error_received",
            "error_occurred",
            "error_message",
            "conversation_end",
        ]);
        assert_eq!(types(&events), expected);
        assert_eq!(
            events[15],
            EventPayload::ErrorReceived {
                message: "the agent stopped after 1 model calls without finishing its turn".into(),
                error_code: Some("max_turns".into()),
                error_kind: crate::ErrorKind::Unavailable,
            }
        );
        let history = vm.images().messages(&image.image_id).await.unwrap();
        let subtypes: Vec<_> = history.iter().map(|m| m.subtype).collect();
        assert_eq!(
            subtypes,
            [
                Subtype::User,
                Subtype::Assistant,
                Subtype::ToolCall,
                Subtype::ToolResult,
                Subtype::Error
            ]
        );
    }

    /// A model that answers with what it was sent: how many messages, and the first
    /// characters of the newest, and records the sizes of every request.
    #[derive(Default)]
    struct Echo {
        requests: std::sync::Mutex<Vec<(usize, usize)>>,
    }

    impl crate::llm::LlmDriver for Echo {
        fn name(&self) -> &str {
            "echo"
        }
        fn default_model(&self) -> &str {
            "echo"
        }
        fn stream(&self, request: crate::llm::LlmRequest) -> crate::llm::LlmStream {
            use crate::llm::LlmEvent;
            let bytes: usize = request
                .messages
                .iter()
                .map(super::window::message_bytes)
                .sum();
            self.requests
                .lock()
                .unwrap()
                .push((request.messages.len(), bytes));
            let newest = request
                .messages
                .last()
                .and_then(|m| m.content.as_ref())
                .map(|c| c.byte_len().to_string())
                .unwrap_or_default();
            let text = format!(
                "{} messages; the newest is {newest} bytes",
                request.messages.len()
            );
            let events = vec![
                LlmEvent::MessageStart {
                    model: "echo".into(),
                },
                LlmEvent::TextDelta(text),
                LlmEvent::MessageDelta {
                    usage: None,
                    stop_reason: Some("end_turn".into()),
                },
                LlmEvent::MessageStop,
            ];
            futures::StreamExt::boxed(futures::stream::iter(events))
        }
    }

    #[tokio::test]
    async fn an_agent_answers_with_a_bounded_window_after_many_large_messages() {
        let echo = Arc::new(Echo::default());
        let bounds = (8, 3 * 1024 * 1024);
        let vm = AgentVm::builder()
            .llm(echo.clone())
            .agent_config(AgentConfig {
                history_messages: bounds.0,
                history_bytes: bounds.1,
                ..Default::default()
            })
            .open()
            .await
            .unwrap();
        let image = vm
            .images()
            .create("c1", ImageConfig::default())
            .await
            .unwrap()
            .record;
        let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
        let big = "x".repeat(900 * 1024);
        for i in 0..12 {
            let content = format!("{i}{big}");
            vm.agents()
                .send_to_image(&image.image_id, content.as_str())
                .await
                .unwrap();
            let events = rest_of_turn(&mut sub).await;
            let reply = events
                .iter()
                .find_map(|e| match e {
                    EventPayload::AssistantMessage(m) => m.content.clone(),
                    _ => None,
                })
                .expect("an assistant reply");
            // The model saw the newest message whole, with earlier turns as context.
            let text = format!("{reply:?}");
            assert!(
                text.contains(&format!("the newest is {} bytes", content.len())),
                "{text}"
            );
        }
        let requests = echo.requests.lock().unwrap().clone();
        assert_eq!(requests.len(), 12);
        for (n, bytes) in &requests {
            assert!(*n <= bounds.0, "{n} messages sent");
            assert!(*bytes <= bounds.1, "{bytes} bytes sent");
        }
        // Context: once the window filled, earlier turns were still sent along.
        assert!(requests[11].0 >= 3, "{requests:?}");
        // Everything is still in the store.
        assert_eq!(
            vm.images().messages(&image.image_id).await.unwrap().len(),
            24
        );
    }

    /// Tools that run until they are cancelled.
    struct Hangs;

    #[async_trait]
    impl ToolRunner for Hangs {
        fn specs(&self, _enabled: &[String]) -> Vec<ToolSpec> {
            Vec::new()
        }
        async fn run(&self, _ctx: &ToolContext, _call: &ToolCall) -> ToolOutcome {
            std::future::pending().await
        }
    }

    #[tokio::test]
    async fn an_interrupt_while_a_tool_runs_answers_the_call_and_ends_the_turn() {
        let vm = AgentVm::builder()
            .llm(Arc::new(MockDriver::default()))
            .tools(Arc::new(Hangs))
            .open()
            .await
            .unwrap();
        let image = with_tool_image(&vm).await;
        let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
        let sent = vm
            .agents()
            .send_to_image(&image.image_id, "run it")
            .await
            .unwrap();
        let mut events = Vec::new();
        while events.last().map(EventPayload::type_name) != Some("tool_executing") {
            let item = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                .await
                .unwrap()
                .unwrap();
            let BusItem::Event(p) = item else { panic!() };
            events.push(p.event.payload.clone());
        }
        let answer = vm.agents().interrupt_image(&image.image_id).await.unwrap();
        assert_eq!(answer.agent_id.as_deref(), Some(sent.agent_id.as_str()));
        events.extend(rest_of_turn(&mut sub).await);
        let mut expected = TOOL_CALL_REPLY[..12].to_vec();
        expected.extend(["interrupted", "tool_result_message", "conversation_end"]);
        assert_eq!(types(&events), expected);
        assert_eq!(
            events.last(),
            Some(&EventPayload::ConversationEnd {
                reason: crate::model::EndReason::Interrupted,
            })
        );
        let history = vm.images().messages(&image.image_id).await.unwrap();
        let last = history.last().unwrap().tool_result.clone().unwrap();
        assert_eq!(last.tool_call_id, "toolu_mock_1");
        assert_eq!(last.output, "interrupted before the tool finished");
        assert!(last.is_error);
        // An interrupt ends the turn, not the agent.
        assert!(vm.agents().get(&sent.agent_id).await.unwrap().exists);
    }
}
