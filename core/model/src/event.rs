//! Events: everything that happens, as the Channel protocol carries it (docs/protocol.md §2, §5).

use super::error::ErrorKind;
use super::message::{Message, Usage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where an event comes from (the envelope's `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A command request or response.
    Command,
    /// An agent.
    Agent,
    /// A session.
    Session,
    /// A container.
    Container,
    /// A sandbox.
    Sandbox,
    /// The runtime itself.
    Environment,
}

/// The envelope's `category`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// A command request.
    Request,
    /// A command response.
    Response,
    /// A streamed piece of a reply.
    Stream,
    /// A state change of a conversation.
    State,
    /// A whole stored message.
    Message,
    /// A turn boundary.
    Turn,
    /// Creation, registration, destruction.
    Lifecycle,
    /// An error.
    Error,
}

/// The envelope's `intent`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Intent {
    /// A request.
    Request,
    /// A response.
    Result,
    /// Anything else.
    Notification,
}

/// The ids an event concerns. Agent events carry all four.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct EventContext {
    /// The container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// The image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The session; agent events are published on this session's topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The turn (one user message and everything it caused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_id: Option<String>,
}

/// Why a conversation turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The model finished.
    Completed,
    /// `interrupt()` stopped it.
    Interrupted,
    /// It failed; an `error_message` was stored.
    Error,
}

/// The type and data of an event. The serde tag is the wire `type`, the content is `data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventPayload {
    // --- stream ---
    /// The model began a message.
    #[serde(rename_all = "camelCase")]
    MessageStart {
        /// The id the stored assistant message will have.
        message_id: String,
        /// The model answering.
        model: String,
    },
    /// A piece of text.
    TextDelta {
        /// The text.
        text: String,
    },
    /// The model began a tool call.
    #[serde(rename_all = "camelCase")]
    ToolUseStart {
        /// The call id.
        tool_call_id: String,
        /// The tool.
        tool_name: String,
    },
    /// A piece of a tool call's JSON input.
    #[serde(rename_all = "camelCase")]
    InputJsonDelta {
        /// The JSON fragment.
        partial_json: String,
    },
    /// A tool call is complete.
    #[serde(rename_all = "camelCase")]
    ToolUseStop {
        /// The call id.
        tool_call_id: String,
        /// The tool.
        tool_name: String,
        /// The parsed input.
        input: Value,
    },
    /// A tool's result.
    #[serde(rename_all = "camelCase")]
    ToolResult {
        /// The call id.
        tool_call_id: String,
        /// What the tool returned.
        result: String,
        /// True when the tool failed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    /// Usage and stop information of the message.
    MessageDelta {
        /// Cumulative token usage.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    /// The model finished the message.
    #[serde(rename_all = "camelCase")]
    MessageStop {
        /// `end_turn`, `max_tokens`, `stop_sequence`, `tool_use`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop_reason: Option<String>,
    },
    /// The model or the provider reported an error.
    #[serde(rename_all = "camelCase")]
    ErrorReceived {
        /// What went wrong.
        message: String,
        /// `rate_limit`, `overloaded`, `authentication`, `invalid_request`, `timeout`, `network`, ...
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_code: Option<String>,
        /// The stable error kind a binding raises for the failed turn
        /// ([`ErrorKind::of_turn_error`] of `error_code`; an extension of the AgentX event).
        #[serde(default = "unavailable")]
        error_kind: ErrorKind,
    },

    // --- state ---
    /// A turn started answering.
    #[serde(rename_all = "camelCase")]
    ConversationStart {
        /// The first assistant message's id.
        message_id: String,
    },
    /// Text is flowing.
    ConversationResponding {},
    /// The turn ended.
    ConversationEnd {
        /// Why.
        reason: EndReason,
    },
    /// The model plans a tool call.
    #[serde(rename_all = "camelCase")]
    ToolPlanned {
        /// The call id.
        tool_id: String,
        /// The tool.
        tool_name: String,
    },
    /// A tool is running.
    #[serde(rename_all = "camelCase")]
    ToolExecuting {
        /// The call id.
        tool_id: String,
        /// The tool.
        tool_name: String,
        /// Its input.
        input: Value,
    },
    /// A tool finished.
    #[serde(rename_all = "camelCase")]
    ToolCompleted {
        /// The call id.
        tool_id: String,
        /// The tool.
        tool_name: String,
    },
    /// A tool failed.
    #[serde(rename_all = "camelCase")]
    ToolFailed {
        /// The call id.
        tool_id: String,
        /// The tool.
        tool_name: String,
        /// What went wrong.
        error: String,
    },
    /// An error happened in the conversation.
    ErrorOccurred {
        /// The error code.
        code: String,
        /// What went wrong.
        message: String,
        /// Whether the conversation can go on (it can: the next message starts a new turn).
        recoverable: bool,
    },

    // --- message ---
    /// The stored assistant reply.
    AssistantMessage(Message),
    /// A stored tool call.
    ToolCallMessage(Message),
    /// A stored tool result.
    ToolResultMessage(Message),
    /// A stored error.
    ErrorMessage(Message),

    // --- lifecycle ---
    /// A container was created.
    #[serde(rename_all = "camelCase")]
    ContainerCreated {
        /// The container.
        container_id: String,
        /// When, ms.
        created_at: i64,
    },
    /// A container and everything in it was deleted.
    #[serde(rename_all = "camelCase")]
    ContainerDeleted {
        /// The container.
        container_id: String,
    },
    /// An agent started.
    #[serde(rename_all = "camelCase")]
    AgentRegistered {
        /// Its container.
        container_id: String,
        /// The agent.
        agent_id: String,
        /// The image's definition name (its name when built from a raw config).
        definition_name: String,
        /// When, ms.
        registered_at: i64,
    },
    /// An agent stopped.
    #[serde(rename_all = "camelCase")]
    AgentUnregistered {
        /// Its container.
        container_id: String,
        /// The agent.
        agent_id: String,
    },
    /// A turn was interrupted.
    #[serde(rename_all = "camelCase")]
    Interrupted {
        /// The agent.
        agent_id: String,
        /// Its container.
        container_id: String,
    },
    /// A session was deleted. Its context carries the same ids (as AgentX's does); it goes to
    /// `global` all the same, the session's own topic being gone with it.
    #[serde(rename_all = "camelCase")]
    SessionDestroyed {
        /// The session.
        session_id: String,
        /// Its image.
        image_id: String,
        /// Its container.
        container_id: String,
        /// The agent that was running it, stopped with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        agent_id: Option<String>,
    },

    /// The remote runtime's connection changed state (local to the remote runtime).
    #[serde(rename_all = "camelCase")]
    ConnectionState {
        /// `connecting`, `connected`, `disconnected`, `reconnecting` or `closed`.
        state: String,
        /// Reconnection attempt number, when reconnecting.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        attempt: Option<u32>,
        /// Why the connection was lost, when it was.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// The server this state is about: the one connected to (`connected`), being tried
        /// (`connecting`, `reconnecting`) or lost (`disconnected`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },

    // --- sandboxes (source `sandbox`; context.containerId is the sandbox's owner) ---
    /// A sandbox was placed on a node and its Docker container is being created.
    #[serde(rename_all = "camelCase")]
    SandboxCreated {
        /// The sandbox.
        sandbox_id: String,
        /// Its template.
        template_id: String,
        /// The node it was placed on.
        node_id: String,
        /// True for a warm-pool sandbox (no owner until claimed).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        warm: bool,
    },
    /// A sandbox answers execs: `creating -> running`.
    #[serde(rename_all = "camelCase")]
    SandboxReady {
        /// The sandbox.
        sandbox_id: String,
        /// The node it runs on.
        node_id: String,
        /// The Docker container id on that node.
        docker_id: String,
        /// Milliseconds from placement to ready.
        ready_ms: u64,
    },
    /// A warm-pool sandbox was claimed by a request.
    #[serde(rename_all = "camelCase")]
    SandboxClaimed {
        /// The sandbox.
        sandbox_id: String,
        /// Its template.
        template_id: String,
    },
    /// A sandbox that agentvm found at start-up (Docker labels) was adopted.
    #[serde(rename_all = "camelCase")]
    SandboxAdopted {
        /// The sandbox.
        sandbox_id: String,
        /// The node it runs on.
        node_id: String,
    },
    /// A sandbox ended: `completed`, `failed`, `timeout` or `terminated`, with the reason.
    #[serde(rename_all = "camelCase")]
    SandboxTerminated {
        /// The sandbox.
        sandbox_id: String,
        /// Its final status.
        status: String,
        /// Why (`requested`, `expired`, `idle`, `stuck_creating`, `create_failed`, ...).
        reason: String,
        /// Detail, when there is any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// A sandbox was paused (`running -> paused`): by a request, or by the idle sweep.
    #[serde(rename_all = "camelCase")]
    SandboxPaused {
        /// The sandbox.
        sandbox_id: String,
        /// `requested` or `idle`.
        reason: String,
    },
    /// A paused sandbox runs again (`paused -> running`): by a request, or because an exec or
    /// file operation needed it.
    #[serde(rename_all = "camelCase")]
    SandboxResumed {
        /// The sandbox.
        sandbox_id: String,
        /// `requested`, `exec` or `file`.
        reason: String,
        /// How long it was paused, ms.
        paused_ms: u64,
    },
    /// A sandbox's filesystem was committed into a new image and template.
    #[serde(rename_all = "camelCase")]
    SandboxSnapshotted {
        /// The sandbox.
        sandbox_id: String,
        /// The template made from it.
        template_id: String,
        /// The image committed (on the sandbox's node).
        image: String,
    },
    /// A sandbox's record was deleted (`sandbox_delete_request`), after it ended.
    #[serde(rename_all = "camelCase")]
    SandboxRemoved {
        /// The sandbox.
        sandbox_id: String,
    },
    /// A `sandbox_exec_request` started its command. Published on the sandbox's topic (the
    /// topic named by the sandbox id), like the output and the end that follow.
    #[serde(rename_all = "camelCase")]
    SandboxExecStarted {
        /// The sandbox (and topic).
        sandbox_id: String,
        /// The execution, for `sandbox_exec_cancel_request` and `execution_get_request`.
        execution_id: String,
        /// The argv run.
        command: Vec<String>,
    },
    /// A chunk of an exec's output, in the order the command wrote it per stream (whole UTF-8
    /// characters; invalid bytes become U+FFFD). Output beyond the cap is not sent.
    #[serde(rename_all = "camelCase")]
    SandboxExecOutput {
        /// The sandbox (and topic).
        sandbox_id: String,
        /// The execution.
        execution_id: String,
        /// `stdout` or `stderr`.
        stream: String,
        /// The text.
        data: String,
    },
    /// Output of a terminal (`sandbox_terminal_open_request`), in the order the terminal wrote
    /// it: whole UTF-8 characters (invalid bytes become U+FFFD), control sequences included.
    /// Published on the sandbox's topic.
    #[serde(rename_all = "camelCase")]
    SandboxTerminalOutput {
        /// The sandbox (and topic).
        sandbox_id: String,
        /// The terminal.
        terminal_id: String,
        /// The text.
        data: String,
    },
    /// A terminal's command ended (it exited, was closed, or its sandbox ended); nothing of
    /// it follows. Published on the sandbox's topic.
    #[serde(rename_all = "camelCase")]
    SandboxTerminalExited {
        /// The sandbox (and topic).
        sandbox_id: String,
        /// The terminal.
        terminal_id: String,
        /// The exit code, when Docker reports one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i64>,
    },
    /// An exec ended; its `sandbox_exec_response` (with the whole execution) follows.
    #[serde(rename_all = "camelCase")]
    SandboxExecFinished {
        /// The sandbox (and topic).
        sandbox_id: String,
        /// The execution.
        execution_id: String,
        /// `completed`, `failed`, `timeout`, `cancelled` or `crashed`.
        status: String,
        /// The exit code, when the command exited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i64>,
        /// What went wrong, for timeouts, cancels and crashes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// Output beyond the cap was dropped.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        truncated: bool,
        /// How long it ran, ms.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        duration_ms: Option<u64>,
    },
    /// A runtime node changed status (`online`, `offline`, `draining`, `maintenance`).
    #[serde(rename_all = "camelCase")]
    NodeStatusChanged {
        /// The node.
        node_id: String,
        /// The new status.
        status: String,
        /// The status before.
        previous: String,
        /// Why, when known (for example the Docker error that turned it offline).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },

    // --- error ---
    /// A request failed or a frame was refused; sent to the one connection concerned.
    #[serde(rename_all = "camelCase")]
    SystemError {
        /// What went wrong.
        message: String,
        /// The request it answers, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
        /// Always `error`.
        severity: String,
        /// More detail (the error kind).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        details: Option<Value>,
    },
}

impl EventPayload {
    /// The wire `type` of this payload.
    pub fn type_name(&self) -> &'static str {
        use EventPayload::*;
        match self {
            MessageStart { .. } => "message_start",
            TextDelta { .. } => "text_delta",
            ToolUseStart { .. } => "tool_use_start",
            InputJsonDelta { .. } => "input_json_delta",
            ToolUseStop { .. } => "tool_use_stop",
            ToolResult { .. } => "tool_result",
            MessageDelta { .. } => "message_delta",
            MessageStop { .. } => "message_stop",
            ErrorReceived { .. } => "error_received",
            ConversationStart { .. } => "conversation_start",
            ConversationResponding {} => "conversation_responding",
            ConversationEnd { .. } => "conversation_end",
            ToolPlanned { .. } => "tool_planned",
            ToolExecuting { .. } => "tool_executing",
            ToolCompleted { .. } => "tool_completed",
            ToolFailed { .. } => "tool_failed",
            ErrorOccurred { .. } => "error_occurred",
            AssistantMessage(_) => "assistant_message",
            ToolCallMessage(_) => "tool_call_message",
            ToolResultMessage(_) => "tool_result_message",
            ErrorMessage(_) => "error_message",
            ContainerCreated { .. } => "container_created",
            ContainerDeleted { .. } => "container_deleted",
            AgentRegistered { .. } => "agent_registered",
            AgentUnregistered { .. } => "agent_unregistered",
            Interrupted { .. } => "interrupted",
            SessionDestroyed { .. } => "session_destroyed",
            ConnectionState { .. } => "connection_state",
            SandboxCreated { .. } => "sandbox_created",
            SandboxReady { .. } => "sandbox_ready",
            SandboxClaimed { .. } => "sandbox_claimed",
            SandboxAdopted { .. } => "sandbox_adopted",
            SandboxTerminated { .. } => "sandbox_terminated",
            SandboxPaused { .. } => "sandbox_paused",
            SandboxResumed { .. } => "sandbox_resumed",
            SandboxSnapshotted { .. } => "sandbox_snapshotted",
            SandboxRemoved { .. } => "sandbox_removed",
            SandboxExecStarted { .. } => "sandbox_exec_started",
            SandboxExecOutput { .. } => "sandbox_exec_output",
            SandboxExecFinished { .. } => "sandbox_exec_finished",
            SandboxTerminalOutput { .. } => "sandbox_terminal_output",
            SandboxTerminalExited { .. } => "sandbox_terminal_exited",
            NodeStatusChanged { .. } => "node_status_changed",
            SystemError { .. } => "system_error",
        }
    }

    /// The envelope's `source` and `category` for this payload.
    pub fn classify(&self) -> (Source, Category) {
        use EventPayload::*;
        match self {
            MessageStart { .. }
            | TextDelta { .. }
            | ToolUseStart { .. }
            | InputJsonDelta { .. }
            | ToolUseStop { .. }
            | ToolResult { .. }
            | MessageDelta { .. }
            | MessageStop { .. }
            | ErrorReceived { .. } => (Source::Agent, Category::Stream),
            ConversationStart { .. }
            | ConversationResponding {}
            | ConversationEnd { .. }
            | ToolPlanned { .. }
            | ToolExecuting { .. }
            | ToolCompleted { .. }
            | ToolFailed { .. }
            | ErrorOccurred { .. } => (Source::Agent, Category::State),
            AssistantMessage(_) | ToolCallMessage(_) | ToolResultMessage(_) | ErrorMessage(_) => {
                (Source::Agent, Category::Message)
            }
            ContainerCreated { .. } | ContainerDeleted { .. } => {
                (Source::Container, Category::Lifecycle)
            }
            // AgentX's container registers and unregisters its agents.
            AgentRegistered { .. } | AgentUnregistered { .. } => {
                (Source::Container, Category::Lifecycle)
            }
            Interrupted { .. } => (Source::Agent, Category::Lifecycle),
            SessionDestroyed { .. } => (Source::Session, Category::Lifecycle),
            ConnectionState { .. } => (Source::Environment, Category::Lifecycle),
            SandboxCreated { .. }
            | SandboxReady { .. }
            | SandboxClaimed { .. }
            | SandboxAdopted { .. }
            | SandboxTerminated { .. }
            | SandboxPaused { .. }
            | SandboxResumed { .. }
            | SandboxSnapshotted { .. }
            | SandboxRemoved { .. }
            | SandboxExecStarted { .. }
            | SandboxExecFinished { .. }
            | SandboxTerminalExited { .. } => (Source::Sandbox, Category::Lifecycle),
            SandboxExecOutput { .. } | SandboxTerminalOutput { .. } => {
                (Source::Sandbox, Category::Stream)
            }
            NodeStatusChanged { .. } => (Source::Environment, Category::Lifecycle),
            SystemError { .. } => (Source::Environment, Category::Error),
        }
    }
}

/// One event: the payload in the protocol's envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Event {
    /// `type` and `data`.
    #[serde(flatten)]
    pub payload: EventPayload,
    /// When, ms.
    pub timestamp: i64,
    /// Where it comes from.
    pub source: Source,
    /// Its category.
    pub category: Category,
    /// Always `notification` for events.
    pub intent: Intent,
    /// The ids it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<EventContext>,
}

impl Event {
    /// An event stamped now, classified from its payload.
    pub fn new(payload: EventPayload, context: Option<EventContext>) -> Self {
        let (source, category) = payload.classify();
        Event {
            payload,
            timestamp: super::now_ms(),
            source,
            category,
            intent: Intent::Notification,
            context,
        }
    }

    /// The wire `type`.
    pub fn type_name(&self) -> &'static str {
        self.payload.type_name()
    }

    /// The session topic this event belongs to, if it is a session event.
    pub fn session_id(&self) -> Option<&str> {
        self.context.as_ref().and_then(|c| c.session_id.as_deref())
    }

    /// The topic this event is published on, with a cursor: its session for agent events, its
    /// sandbox for exec events. `None`: the `global` topic.
    pub fn topic(&self) -> Option<&str> {
        if let EventPayload::SessionDestroyed { .. } = self.payload {
            return None;
        }
        if let Some(s) = self.session_id() {
            return Some(s);
        }
        match &self.payload {
            EventPayload::SandboxExecStarted { sandbox_id, .. }
            | EventPayload::SandboxExecOutput { sandbox_id, .. }
            | EventPayload::SandboxExecFinished { sandbox_id, .. }
            | EventPayload::SandboxTerminalOutput { sandbox_id, .. }
            | EventPayload::SandboxTerminalExited { sandbox_id, .. } => Some(sandbox_id),
            _ => None,
        }
    }

    /// The container this event concerns, if any.
    pub fn container_id(&self) -> Option<&str> {
        if let Some(c) = self
            .context
            .as_ref()
            .and_then(|c| c.container_id.as_deref())
        {
            return Some(c);
        }
        match &self.payload {
            EventPayload::ContainerCreated { container_id, .. }
            | EventPayload::ContainerDeleted { container_id }
            | EventPayload::AgentRegistered { container_id, .. }
            | EventPayload::AgentUnregistered { container_id, .. }
            | EventPayload::Interrupted { container_id, .. }
            | EventPayload::SessionDestroyed { container_id, .. } => Some(container_id),
            _ => None,
        }
    }
}

/// The default kind of a stored `error_received` without one: the turn could not be answered.
fn unavailable() -> ErrorKind {
    ErrorKind::Unavailable
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_delta_envelope_matches_protocol() {
        let e = Event {
            payload: EventPayload::TextDelta { text: "Hel".into() },
            timestamp: 1,
            source: Source::Agent,
            category: Category::Stream,
            intent: Intent::Notification,
            context: Some(EventContext {
                container_id: Some("c".into()),
                image_id: Some("i".into()),
                agent_id: Some("a".into()),
                session_id: Some("s".into()),
                turn_id: None,
            }),
        };
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            json!({"type":"text_delta","data":{"text":"Hel"},"timestamp":1,"source":"agent",
                   "category":"stream","intent":"notification",
                   "context":{"containerId":"c","imageId":"i","agentId":"a","sessionId":"s"}})
        );
        let back: Event = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
    }

    #[test]
    fn error_received_carries_the_kind_and_old_records_default_it() {
        let e = EventPayload::ErrorReceived {
            message: "invalid x-api-key".into(),
            error_code: Some("authentication".into()),
            error_kind: ErrorKind::of_turn_error(Some("authentication")),
        };
        let v = serde_json::to_value(Event::new(e, None)).unwrap();
        assert_eq!(
            v["data"],
            json!({"message":"invalid x-api-key","errorCode":"authentication","errorKind":"unauthorized"})
        );
        // Replay logs written before the field existed still read.
        let old: EventPayload =
            serde_json::from_value(json!({"type":"error_received","data":{"message":"boom"}}))
                .unwrap();
        assert!(matches!(
            old,
            EventPayload::ErrorReceived {
                error_kind: ErrorKind::Unavailable,
                ..
            }
        ));
    }

    #[test]
    fn empty_data_is_an_object() {
        let e = Event::new(EventPayload::ConversationResponding {}, None);
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["data"], json!({}));
        assert_eq!(v["category"], "state");
    }

    #[test]
    fn type_name_matches_serde_tag() {
        let e = Event::new(
            EventPayload::ConversationEnd {
                reason: EndReason::Interrupted,
            },
            None,
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], e.type_name());
        assert_eq!(v["data"]["reason"], "interrupted");
    }

    #[test]
    fn sandbox_events_come_from_the_sandbox_source_with_the_owner_as_container() {
        let e = Event::new(
            EventPayload::SandboxTerminated {
                sandbox_id: "sbx_1".into(),
                status: "timeout".into(),
                reason: "expired".into(),
                message: None,
            },
            Some(EventContext {
                container_id: Some("user-alice".into()),
                ..Default::default()
            }),
        );
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["type"], e.type_name());
        assert_eq!(v["type"], "sandbox_terminated");
        assert_eq!(v["source"], "sandbox");
        assert_eq!(v["category"], "lifecycle");
        assert_eq!(v["data"]["sandboxId"], "sbx_1");
        assert_eq!(e.container_id(), Some("user-alice"));
        let out = Event::new(
            EventPayload::SandboxExecOutput {
                sandbox_id: "sbx_1".into(),
                execution_id: "exec_1".into(),
                stream: "stdout".into(),
                data: "hi\n".into(),
            },
            Some(EventContext {
                container_id: Some("user-alice".into()),
                ..Default::default()
            }),
        );
        let v = serde_json::to_value(&out).unwrap();
        assert_eq!(v["type"], out.type_name());
        assert_eq!(v["category"], "stream");
        assert_eq!(v["data"]["executionId"], "exec_1");
        assert_eq!(
            out.topic(),
            Some("sbx_1"),
            "exec events go on the sandbox's topic"
        );
        assert_eq!(out.session_id(), None);
        assert_eq!(e.topic(), None, "lifecycle events stay on global");
        let n = Event::new(
            EventPayload::NodeStatusChanged {
                node_id: "n".into(),
                status: "offline".into(),
                previous: "online".into(),
                message: None,
            },
            None,
        );
        assert_eq!(serde_json::to_value(&n).unwrap()["type"], n.type_name());
    }
}
