//! The agent actor: one task per running agent.
//!
//! [`Agent::receive`] stores the user message durably and queues a turn; the actor answers
//! queued messages one turn at a time, in order. A turn streams the model's reply as events on
//! the session topic, runs tool calls and feeds their results back until the model ends its
//! turn, and stores each finished message exactly once, before announcing it.
//!
//! Event order for a plain reply (PROTOCOL.md §5): `message_start`, `conversation_start`,
//! (`text_delta`, `conversation_responding`) × N, [`message_delta` when usage is known],
//! `message_stop`, `assistant_message`, `conversation_end`.

use crate::error::{Error, Result};
use crate::llm::{LlmDriver, LlmEvent, LlmRequest};
use crate::model::{
    new_id, now_ms, Content, EndReason, Event, EventContext, EventPayload, ImageRecord, Message,
    ToolCall, ToolResult, Usage,
};
use crate::runtime::bus::{Bus, EventFilter, Subscription};
use crate::runtime::tools::{ToolContext, ToolRunner};
use crate::store::Store;
use futures::StreamExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

/// What every agent of a runtime shares.
pub(crate) struct AgentEnv {
    pub store: Arc<dyn Store>,
    pub bus: Bus,
    pub driver: Arc<dyn LlmDriver>,
    pub tools: Arc<dyn ToolRunner>,
    /// Model calls allowed for one user message (tool loops).
    pub max_turns: u32,
    /// Output token limit per model call.
    pub max_tokens: u32,
    /// The longest wait for the model's next event (the first one included) before the turn
    /// fails with `errorCode: timeout`.
    pub request_timeout: std::time::Duration,
    /// User messages that may wait for an agent before `receive` refuses more.
    pub mailbox: usize,
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
    inputs: mpsc::Sender<Box<Message>>,
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
    /// Starts the actor for `image` talking in `session_id`, with `history` already loaded.
    pub(crate) fn spawn(
        env: Arc<AgentEnv>,
        image: &ImageRecord,
        session_id: &str,
        history: Vec<Message>,
    ) -> Arc<Agent> {
        let (inputs_tx, inputs_rx) = mpsc::channel(env.mailbox.max(1));
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
        let actor = Actor {
            env,
            ids: Ids {
                agent: agent.id.clone(),
                container: agent.container_id.clone(),
                image: agent.image_id.clone(),
                session: agent.session_id.clone(),
            },
            model: image.definition.model.clone(),
            system: image.definition.system_prompt.clone(),
            enabled_tools: image.definition.tools.clone(),
            history,
            pending,
        };
        tokio::spawn(async move {
            actor.run(inputs_rx, control_rx).await;
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
        permit.send(Box::new(message.clone()));
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

struct Ids {
    agent: String,
    container: String,
    image: String,
    session: String,
}

struct Actor {
    env: Arc<AgentEnv>,
    ids: Ids,
    model: Option<String>,
    system: Option<String>,
    enabled_tools: Vec<String>,
    history: Vec<Message>,
    pending: Arc<AtomicUsize>,
}

/// How a turn ended.
enum Ended {
    Done,
    /// A stop was requested during the turn.
    Stop,
}

/// The state of one model reply within a turn.
struct Reply {
    message_id: String,
    started: bool,
    text: String,
    calls: Vec<ToolCall>,
    usage: Option<Usage>,
    stop_reason: Option<String>,
}

impl Actor {
    async fn run(
        mut self,
        mut inputs: mpsc::Receiver<Box<Message>>,
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
                    Some(message) => {
                        // Boxed: an idle actor's task does not carry a turn's state.
                        let ended = Box::pin(self.turn(*message, &mut control)).await;
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

    /// Stores a message, then keeps it in the history. A failed store is logged: the session
    /// was deleted under the agent, and nothing can be kept.
    async fn store(&mut self, message: Message) -> bool {
        let store = self.env.store.clone();
        let session = self.ids.session.clone();
        let m = message.clone();
        let stored = tokio::task::spawn_blocking(move || store.append_message(&session, &m)).await;
        let ok = match stored {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::warn!(agent = %self.ids.agent, error = %e.chain(), "could not store a message");
                false
            }
            Err(e) => {
                tracing::error!(agent = %self.ids.agent, error = %e, "storing a message panicked");
                false
            }
        };
        self.history.push(message);
        ok
    }

    async fn turn(
        &mut self,
        user: Message,
        control: &mut mpsc::UnboundedReceiver<Control>,
    ) -> Ended {
        self.history.push(user);
        let turn_id = new_id("turn");
        let model = self
            .model
            .clone()
            .unwrap_or_else(|| self.env.driver.default_model().to_string());
        let tools = self.env.tools.specs(&self.enabled_tools);
        let mut conversation_started = false;
        for _ in 0..self.env.max_turns.max(1) {
            let request = LlmRequest {
                model: model.clone(),
                system: self.system.clone(),
                messages: self.history.clone(),
                tools: tools.clone(),
                max_tokens: self.env.max_tokens,
            };
            let mut stream = self.env.driver.stream(request);
            let mut reply = Reply {
                message_id: new_id("msg"),
                started: false,
                text: String::new(),
                calls: Vec::new(),
                usage: None,
                stop_reason: None,
            };
            loop {
                let next = tokio::select! {
                    biased;
                    c = control.recv() => {
                        let stop = !matches!(c, Some(Control::Interrupt));
                        drop(stream);
                        self.interrupted(&turn_id, &reply).await;
                        return if stop { Ended::Stop } else { Ended::Done };
                    }
                    e = tokio::time::timeout(self.env.request_timeout, stream.next()) => e,
                };
                let Ok(next) = next else {
                    // A stalled reply: dropping the stream cancels the request.
                    drop(stream);
                    let waited = self.env.request_timeout;
                    let message = format!(
                        "the model sent nothing for {waited:?}; the request was cancelled (request timeout)"
                    );
                    self.failed(&turn_id, &reply, message, Some("timeout".into()))
                        .await;
                    return Ended::Done;
                };
                match next {
                    Some(LlmEvent::MessageStart { model }) => {
                        reply.started = true;
                        self.emit(
                            &turn_id,
                            EventPayload::MessageStart {
                                message_id: reply.message_id.clone(),
                                model,
                            },
                        );
                        if !conversation_started {
                            conversation_started = true;
                            self.emit(
                                &turn_id,
                                EventPayload::ConversationStart {
                                    message_id: reply.message_id.clone(),
                                },
                            );
                        }
                    }
                    // Reasoning is not part of the reply and has no protocol event.
                    Some(LlmEvent::ThinkingDelta(_)) => {}
                    Some(LlmEvent::TextDelta(text)) => {
                        reply.text.push_str(&text);
                        self.emit(&turn_id, EventPayload::TextDelta { text });
                        self.emit(&turn_id, EventPayload::ConversationResponding {});
                    }
                    Some(LlmEvent::ToolUseStart { id, name }) => {
                        self.emit(
                            &turn_id,
                            EventPayload::ToolUseStart {
                                tool_call_id: id.clone(),
                                tool_name: name.clone(),
                            },
                        );
                        self.emit(
                            &turn_id,
                            EventPayload::ToolPlanned {
                                tool_id: id,
                                tool_name: name,
                            },
                        );
                    }
                    Some(LlmEvent::InputJsonDelta(partial_json)) => {
                        self.emit(&turn_id, EventPayload::InputJsonDelta { partial_json });
                    }
                    Some(LlmEvent::ToolUseStop { id, name, input }) => {
                        self.emit(
                            &turn_id,
                            EventPayload::ToolUseStop {
                                tool_call_id: id.clone(),
                                tool_name: name.clone(),
                                input: input.clone(),
                            },
                        );
                        reply.calls.push(ToolCall { id, name, input });
                    }
                    Some(LlmEvent::MessageDelta { usage, stop_reason }) => {
                        if stop_reason.is_some() {
                            reply.stop_reason = stop_reason;
                        }
                        if usage.is_some() {
                            reply.usage = usage;
                            self.emit(&turn_id, EventPayload::MessageDelta { usage });
                        }
                    }
                    Some(LlmEvent::MessageStop) => break,
                    Some(LlmEvent::Error { message, code }) => {
                        self.failed(&turn_id, &reply, message, code).await;
                        return Ended::Done;
                    }
                    None => {
                        let message = "the model's reply ended before it was complete".to_string();
                        self.failed(&turn_id, &reply, message, Some("network".into()))
                            .await;
                        return Ended::Done;
                    }
                }
            }
            drop(stream);
            // The reply is complete.
            let wants_tools = !reply.calls.is_empty();
            let stop_reason = match (&reply.stop_reason, wants_tools) {
                (None, true) => Some("tool_use".to_string()),
                (r, _) => r.clone(),
            };
            self.emit(
                &turn_id,
                EventPayload::MessageStop {
                    stop_reason: stop_reason.clone(),
                },
            );
            if !reply.text.is_empty() || !wants_tools {
                let m = Message::assistant(
                    reply.message_id.clone(),
                    std::mem::take(&mut reply.text),
                    now_ms(),
                    reply.usage,
                    stop_reason.clone(),
                );
                self.store(m.clone()).await;
                self.emit(&turn_id, EventPayload::AssistantMessage(m));
            }
            if !wants_tools {
                self.emit(
                    &turn_id,
                    EventPayload::ConversationEnd {
                        reason: EndReason::Completed,
                    },
                );
                return Ended::Done;
            }
            for call in &reply.calls {
                let m = Message::tool_call(new_id("msg"), call.clone(), now_ms());
                self.store(m.clone()).await;
                self.emit(&turn_id, EventPayload::ToolCallMessage(m));
            }
            let calls = std::mem::take(&mut reply.calls);
            for (i, call) in calls.iter().enumerate() {
                self.emit(
                    &turn_id,
                    EventPayload::ToolExecuting {
                        tool_id: call.id.clone(),
                        tool_name: call.name.clone(),
                        input: call.input.clone(),
                    },
                );
                let ctx = ToolContext {
                    container_id: self.ids.container.clone(),
                    image_id: self.ids.image.clone(),
                    session_id: self.ids.session.clone(),
                    enabled: self.enabled_tools.clone(),
                };
                let tools = self.env.tools.clone();
                let outcome = tokio::select! {
                    biased;
                    c = control.recv() => {
                        let stop = !matches!(c, Some(Control::Interrupt));
                        // Pair every call left unanswered with a result, so the history stays valid.
                        self.emit(&turn_id, EventPayload::Interrupted {
                            agent_id: self.ids.agent.clone(),
                            container_id: self.ids.container.clone(),
                        });
                        for c in &calls[i..] {
                            let r = ToolResult {
                                tool_call_id: c.id.clone(),
                                name: c.name.clone(),
                                output: "interrupted before the tool finished".into(),
                                is_error: true,
                            };
                            let m = Message::tool_result(new_id("msg"), r, now_ms());
                            self.store(m.clone()).await;
                            self.emit(&turn_id, EventPayload::ToolResultMessage(m));
                        }
                        self.emit(&turn_id, EventPayload::ConversationEnd { reason: EndReason::Interrupted });
                        return if stop { Ended::Stop } else { Ended::Done };
                    }
                    o = tools.run(&ctx, call) => o,
                };
                self.emit(
                    &turn_id,
                    EventPayload::ToolResult {
                        tool_call_id: call.id.clone(),
                        result: outcome.output.clone(),
                        is_error: Some(outcome.is_error),
                    },
                );
                if outcome.is_error {
                    self.emit(
                        &turn_id,
                        EventPayload::ToolFailed {
                            tool_id: call.id.clone(),
                            tool_name: call.name.clone(),
                            error: outcome.output.clone(),
                        },
                    );
                } else {
                    self.emit(
                        &turn_id,
                        EventPayload::ToolCompleted {
                            tool_id: call.id.clone(),
                            tool_name: call.name.clone(),
                        },
                    );
                }
                let r = ToolResult {
                    tool_call_id: call.id.clone(),
                    name: call.name.clone(),
                    output: outcome.output,
                    is_error: outcome.is_error,
                };
                let m = Message::tool_result(new_id("msg"), r, now_ms());
                self.store(m.clone()).await;
                self.emit(&turn_id, EventPayload::ToolResultMessage(m));
            }
        }
        let limit = self.env.max_turns;
        self.failed(
            &turn_id,
            &Reply {
                message_id: new_id("msg"),
                started: false,
                text: String::new(),
                calls: vec![],
                usage: None,
                stop_reason: None,
            },
            format!("the agent stopped after {limit} model calls without finishing its turn"),
            Some("max_turns".into()),
        )
        .await;
        Ended::Done
    }

    /// `interrupted`, then `message_stop` and the partial reply, then `conversation_end`.
    async fn interrupted(&mut self, turn_id: &str, reply: &Reply) {
        self.emit(
            turn_id,
            EventPayload::Interrupted {
                agent_id: self.ids.agent.clone(),
                container_id: self.ids.container.clone(),
            },
        );
        if reply.started {
            self.emit(turn_id, EventPayload::MessageStop { stop_reason: None });
        }
        if !reply.text.is_empty() {
            let m = Message::assistant(
                reply.message_id.clone(),
                reply.text.clone(),
                now_ms(),
                reply.usage,
                None,
            );
            self.store(m.clone()).await;
            self.emit(turn_id, EventPayload::AssistantMessage(m));
        }
        self.emit(
            turn_id,
            EventPayload::ConversationEnd {
                reason: EndReason::Interrupted,
            },
        );
    }

    /// `error_received`, `error_occurred`, the partial reply if any, `error_message`,
    /// `conversation_end {reason: error}`.
    async fn failed(
        &mut self,
        turn_id: &str,
        reply: &Reply,
        message: String,
        code: Option<String>,
    ) {
        self.emit(
            turn_id,
            EventPayload::ErrorReceived {
                message: message.clone(),
                error_code: code.clone(),
            },
        );
        self.emit(
            turn_id,
            EventPayload::ErrorOccurred {
                code: code.clone().unwrap_or_else(|| "llm_error".into()),
                message: message.clone(),
                recoverable: true,
            },
        );
        if !reply.text.is_empty() {
            let m = Message::assistant(
                reply.message_id.clone(),
                reply.text.clone(),
                now_ms(),
                reply.usage,
                None,
            );
            self.store(m.clone()).await;
            self.emit(turn_id, EventPayload::AssistantMessage(m));
        }
        let m = Message::error(new_id("msg"), message, code, now_ms());
        self.store(m.clone()).await;
        self.emit(turn_id, EventPayload::ErrorMessage(m));
        self.emit(
            turn_id,
            EventPayload::ConversationEnd {
                reason: EndReason::Error,
            },
        );
    }
}
