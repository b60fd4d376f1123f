//! The deciding half of a turn: what each piece of the model's stream means, with no I/O.
//!
//! [`TurnState`] reads the model's replies chunk by chunk and answers with [`Effect`]s, in the
//! order the actor must carry them out, and with what comes next ([`Then`]): read on, run the
//! reply's tool calls, or end the turn. It also decides what an interrupt, a timeout, a tool's
//! outcome and running out of model calls mean. The actor (the parent module) does all the
//! I/O: it reads the stream, publishes, stores, runs tools and waits for interrupts.
//!
//! What stays true here:
//! - The effects' order is the event order on the session topic, and every stored message is
//!   announced right after it is stored ([`Effect::Store`]), never before.
//! - `conversation_start` comes once per turn, with the first `message_start`.
//! - A reply ends exactly once: complete (`message_stop` with the stop reason, `tool_use` when
//!   it calls tools and gave none), interrupted or failed. Whatever text it had is stored.
//! - Every tool call gets a result, even one an interrupt left unanswered, so the history
//!   sent back to the model stays valid.
//! - Nothing here reads the clock or draws ids, except [`Draft::stamp`], which the actor calls
//!   when it stores the message.

use crate::llm::LlmEvent;
use crate::model::{
    new_id, EndReason, ErrorKind, EventPayload, Message, ToolCall, ToolResult, Usage,
};
use crate::runtime::tools::ToolOutcome;

/// One thing for the actor to do.
// Most effects are `Emit`, and each lives only until the actor applies it: boxing the payload
// would cost an allocation per event to save stack space nobody needs.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Effect {
    /// Publish this on the session topic.
    Emit(EventPayload),
    /// Store this message (keeping it in the history), then announce it.
    Store(Draft),
}

/// A message to store, before it has its timestamp.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Draft {
    /// The model's text reply, under the id its `message_start` announced.
    Assistant {
        message_id: String,
        text: String,
        usage: Option<Usage>,
        stop_reason: Option<String>,
    },
    /// A tool call of the model.
    ToolCall(ToolCall),
    /// The result of a tool call.
    ToolResult(ToolResult),
    /// The error that ended a turn.
    Error {
        message: String,
        code: Option<String>,
    },
}

impl Draft {
    /// The message as stored at `now` (a new id for all but the assistant reply), and the
    /// event that announces it.
    pub(super) fn stamp(self, now: i64) -> (Message, fn(Message) -> EventPayload) {
        match self {
            Draft::Assistant {
                message_id,
                text,
                usage,
                stop_reason,
            } => (
                Message::assistant(message_id, text, now, usage, stop_reason),
                EventPayload::AssistantMessage,
            ),
            Draft::ToolCall(call) => (
                Message::tool_call(new_id("msg"), call, now),
                EventPayload::ToolCallMessage,
            ),
            Draft::ToolResult(result) => (
                Message::tool_result(new_id("msg"), result, now),
                EventPayload::ToolResultMessage,
            ),
            Draft::Error { message, code } => (
                Message::error(new_id("msg"), message, code, now),
                EventPayload::ErrorMessage,
            ),
        }
    }
}

/// What comes after a chunk's effects.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Then {
    /// Read the stream's next chunk.
    Read,
    /// The reply is complete and calls these tools: run them, then ask the model again.
    RunTools(Vec<ToolCall>),
    /// The reply is complete and the turn is over.
    Done,
    /// The reply failed and the turn is over.
    Failed,
}

/// What one chunk of the stream means.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Decision {
    /// To carry out first, in order.
    pub effects: Vec<Effect>,
    /// Then this.
    pub then: Then,
}

impl Decision {
    fn read(effects: Vec<Effect>) -> Decision {
        Decision {
            effects,
            then: Then::Read,
        }
    }
}

/// The reply being streamed.
#[derive(Debug, Default)]
struct Reply {
    message_id: String,
    started: bool,
    text: String,
    calls: Vec<ToolCall>,
    usage: Option<Usage>,
    stop_reason: Option<String>,
}

/// The state of one turn: one user message answered by one or more model replies.
#[derive(Debug)]
pub(super) struct TurnState {
    agent_id: String,
    container_id: String,
    conversation_started: bool,
    reply: Reply,
}

impl TurnState {
    /// A turn of agent `agent_id`, in container `container_id`.
    pub(super) fn new(agent_id: String, container_id: String) -> TurnState {
        TurnState {
            agent_id,
            container_id,
            conversation_started: false,
            reply: Reply::default(),
        }
    }

    /// A new model reply starts; its stored message will have id `message_id`.
    pub(super) fn start_reply(&mut self, message_id: String) {
        self.reply = Reply {
            message_id,
            ..Reply::default()
        };
    }

    /// What `event` means for the reply.
    pub(super) fn on_llm_event(&mut self, event: LlmEvent) -> Decision {
        let reply = &mut self.reply;
        match event {
            LlmEvent::MessageStart { model } => {
                reply.started = true;
                let mut effects = vec![Effect::Emit(EventPayload::MessageStart {
                    message_id: reply.message_id.clone(),
                    model,
                })];
                if !self.conversation_started {
                    self.conversation_started = true;
                    effects.push(Effect::Emit(EventPayload::ConversationStart {
                        message_id: reply.message_id.clone(),
                    }));
                }
                Decision::read(effects)
            }
            // Reasoning is not part of the reply and has no protocol event.
            LlmEvent::ThinkingDelta(_) => Decision::read(Vec::new()),
            LlmEvent::TextDelta(text) => {
                reply.text.push_str(&text);
                Decision::read(vec![
                    Effect::Emit(EventPayload::TextDelta { text }),
                    Effect::Emit(EventPayload::ConversationResponding {}),
                ])
            }
            LlmEvent::ToolUseStart { id, name } => Decision::read(vec![
                Effect::Emit(EventPayload::ToolUseStart {
                    tool_call_id: id.clone(),
                    tool_name: name.clone(),
                }),
                Effect::Emit(EventPayload::ToolPlanned {
                    tool_id: id,
                    tool_name: name,
                }),
            ]),
            LlmEvent::InputJsonDelta(partial_json) => {
                Decision::read(vec![Effect::Emit(EventPayload::InputJsonDelta {
                    partial_json,
                })])
            }
            LlmEvent::ToolUseStop { id, name, input } => {
                let effects = vec![Effect::Emit(EventPayload::ToolUseStop {
                    tool_call_id: id.clone(),
                    tool_name: name.clone(),
                    input: input.clone(),
                })];
                reply.calls.push(ToolCall { id, name, input });
                Decision::read(effects)
            }
            LlmEvent::MessageDelta { usage, stop_reason } => {
                if stop_reason.is_some() {
                    reply.stop_reason = stop_reason;
                }
                let mut effects = Vec::new();
                if usage.is_some() {
                    reply.usage = usage;
                    effects.push(Effect::Emit(EventPayload::MessageDelta { usage }));
                }
                Decision::read(effects)
            }
            LlmEvent::MessageStop => self.complete(),
            LlmEvent::Error { message, code } => Decision {
                effects: self.failure(message, code),
                then: Then::Failed,
            },
        }
    }

    /// The stream ended without `message_stop` or an error.
    pub(super) fn on_stream_end(&mut self) -> Decision {
        let message = "the model's reply ended before it was complete".to_string();
        Decision {
            effects: self.failure(message, Some("network".into())),
            then: Then::Failed,
        }
    }

    /// The model sent nothing for `waited`, and the request was cancelled. The turn is over.
    pub(super) fn on_timeout(&mut self, waited: std::time::Duration) -> Vec<Effect> {
        let message = format!(
            "the model sent nothing for {waited:?}; the request was cancelled (request timeout)"
        );
        self.failure(message, Some("timeout".into()))
    }

    /// An interrupt (or stop) arrived while the reply streamed: `interrupted`, then
    /// `message_stop` and the partial reply, then `conversation_end`. The turn is over.
    pub(super) fn on_interrupt(&mut self) -> Vec<Effect> {
        let mut effects = vec![self.interrupted()];
        if self.reply.started {
            effects.push(Effect::Emit(EventPayload::MessageStop {
                stop_reason: None,
            }));
        }
        effects.extend(self.partial_reply());
        effects.push(end(EndReason::Interrupted));
        effects
    }

    /// The model was called `limit` times and still wants tools. The turn is over.
    pub(super) fn out_of_model_calls(&mut self, limit: u32) -> Vec<Effect> {
        self.reply = Reply::default();
        self.failure(
            format!("the agent stopped after {limit} model calls without finishing its turn"),
            Some("max_turns".into()),
        )
    }

    /// What to publish as a tool call starts running.
    pub(super) fn tool_executing(&self, call: &ToolCall) -> EventPayload {
        EventPayload::ToolExecuting {
            tool_id: call.id.clone(),
            tool_name: call.name.clone(),
            input: call.input.clone(),
        }
    }

    /// A tool call finished: `tool_result`, `tool_failed` or `tool_completed`, and the stored
    /// result.
    pub(super) fn tool_finished(&self, call: &ToolCall, outcome: ToolOutcome) -> Vec<Effect> {
        let verdict = if outcome.is_error {
            EventPayload::ToolFailed {
                tool_id: call.id.clone(),
                tool_name: call.name.clone(),
                error: outcome.output.clone(),
            }
        } else {
            EventPayload::ToolCompleted {
                tool_id: call.id.clone(),
                tool_name: call.name.clone(),
            }
        };
        vec![
            Effect::Emit(EventPayload::ToolResult {
                tool_call_id: call.id.clone(),
                result: outcome.output.clone(),
                is_error: Some(outcome.is_error),
            }),
            Effect::Emit(verdict),
            Effect::Store(Draft::ToolResult(ToolResult {
                tool_call_id: call.id.clone(),
                name: call.name.clone(),
                output: outcome.output,
                is_error: outcome.is_error,
            })),
        ]
    }

    /// An interrupt (or stop) arrived while tools ran: `interrupted`, an error result for
    /// each call in `unanswered`, then `conversation_end`. The turn is over.
    pub(super) fn on_tools_interrupted(&self, unanswered: &[ToolCall]) -> Vec<Effect> {
        let mut effects = vec![self.interrupted()];
        effects.extend(unanswered.iter().map(|c| {
            Effect::Store(Draft::ToolResult(ToolResult {
                tool_call_id: c.id.clone(),
                name: c.name.clone(),
                output: "interrupted before the tool finished".into(),
                is_error: true,
            }))
        }));
        effects.push(end(EndReason::Interrupted));
        effects
    }

    /// `message_stop`, the reply's text (unless it only calls tools), then either
    /// `conversation_end` or the tool calls to run.
    fn complete(&mut self) -> Decision {
        let reply = &mut self.reply;
        let calls = std::mem::take(&mut reply.calls);
        let wants_tools = !calls.is_empty();
        let stop_reason = match (&reply.stop_reason, wants_tools) {
            (None, true) => Some("tool_use".to_string()),
            (r, _) => r.clone(),
        };
        let mut effects = vec![Effect::Emit(EventPayload::MessageStop {
            stop_reason: stop_reason.clone(),
        })];
        if !reply.text.is_empty() || !wants_tools {
            effects.push(Effect::Store(Draft::Assistant {
                message_id: reply.message_id.clone(),
                text: std::mem::take(&mut reply.text),
                usage: reply.usage,
                stop_reason,
            }));
        }
        if !wants_tools {
            effects.push(end(EndReason::Completed));
            return Decision {
                effects,
                then: Then::Done,
            };
        }
        effects.extend(
            calls
                .iter()
                .cloned()
                .map(|c| Effect::Store(Draft::ToolCall(c))),
        );
        Decision {
            effects,
            then: Then::RunTools(calls),
        }
    }

    /// `error_received`, `error_occurred`, the partial reply if any, the stored error,
    /// `conversation_end {reason: error}`.
    fn failure(&mut self, message: String, code: Option<String>) -> Vec<Effect> {
        let mut effects = vec![
            Effect::Emit(EventPayload::ErrorReceived {
                message: message.clone(),
                error_code: code.clone(),
                error_kind: ErrorKind::of_turn_error(code.as_deref()),
            }),
            Effect::Emit(EventPayload::ErrorOccurred {
                code: code.clone().unwrap_or_else(|| "llm_error".into()),
                message: message.clone(),
                recoverable: true,
            }),
        ];
        effects.extend(self.partial_reply());
        effects.push(Effect::Store(Draft::Error { message, code }));
        effects.push(end(EndReason::Error));
        effects
    }

    /// The text streamed so far, as a reply with no stop reason; none without text.
    fn partial_reply(&mut self) -> Option<Effect> {
        let reply = &mut self.reply;
        (!reply.text.is_empty()).then(|| {
            Effect::Store(Draft::Assistant {
                message_id: reply.message_id.clone(),
                text: std::mem::take(&mut reply.text),
                usage: reply.usage,
                stop_reason: None,
            })
        })
    }

    fn interrupted(&self) -> Effect {
        Effect::Emit(EventPayload::Interrupted {
            agent_id: self.agent_id.clone(),
            container_id: self.container_id.clone(),
        })
    }
}

fn end(reason: EndReason) -> Effect {
    Effect::Emit(EventPayload::ConversationEnd { reason })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Content, Subtype};
    use serde_json::json;

    fn emit(payload: EventPayload) -> Effect {
        Effect::Emit(payload)
    }

    fn state() -> TurnState {
        let mut s = TurnState::new("agent_1".into(), "c1".into());
        s.start_reply("msg_1".into());
        s
    }

    fn read(s: &mut TurnState, event: LlmEvent) -> Vec<Effect> {
        let d = s.on_llm_event(event);
        assert_eq!(d.then, Then::Read);
        d.effects
    }

    fn start(s: &mut TurnState) -> Vec<Effect> {
        read(s, LlmEvent::MessageStart { model: "m".into() })
    }

    fn call(id: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            name: "bash".into(),
            input: json!({"command": "ls"}),
        }
    }

    fn assistant(text: &str, usage: Option<Usage>, stop_reason: Option<&str>) -> Effect {
        Effect::Store(Draft::Assistant {
            message_id: "msg_1".into(),
            text: text.into(),
            usage,
            stop_reason: stop_reason.map(Into::into),
        })
    }

    fn interrupted() -> Effect {
        emit(EventPayload::Interrupted {
            agent_id: "agent_1".into(),
            container_id: "c1".into(),
        })
    }

    #[test]
    fn message_start_starts_the_conversation_once_per_turn() {
        let mut s = state();
        assert_eq!(
            start(&mut s),
            vec![
                emit(EventPayload::MessageStart {
                    message_id: "msg_1".into(),
                    model: "m".into(),
                }),
                emit(EventPayload::ConversationStart {
                    message_id: "msg_1".into(),
                }),
            ]
        );
        s.start_reply("msg_2".into());
        assert_eq!(
            start(&mut s),
            vec![emit(EventPayload::MessageStart {
                message_id: "msg_2".into(),
                model: "m".into(),
            })]
        );
    }

    #[test]
    fn text_deltas_accumulate_into_one_stored_reply() {
        let mut s = state();
        start(&mut s);
        for piece in ["Hel", "lo"] {
            assert_eq!(
                read(&mut s, LlmEvent::TextDelta(piece.into())),
                vec![
                    emit(EventPayload::TextDelta { text: piece.into() }),
                    emit(EventPayload::ConversationResponding {}),
                ]
            );
        }
        assert_eq!(read(&mut s, LlmEvent::ThinkingDelta("hmm".into())), vec![]);
        let done = s.on_llm_event(LlmEvent::MessageStop);
        assert_eq!(done.then, Then::Done);
        assert_eq!(
            done.effects,
            vec![
                emit(EventPayload::MessageStop { stop_reason: None }),
                assistant("Hello", None, None),
                emit(EventPayload::ConversationEnd {
                    reason: EndReason::Completed,
                }),
            ]
        );
    }

    #[test]
    fn message_delta_keeps_the_stop_reason_and_publishes_only_known_usage() {
        let mut s = state();
        start(&mut s);
        let usage = Some(Usage {
            input_tokens: 3,
            output_tokens: 5,
        });
        assert_eq!(
            read(
                &mut s,
                LlmEvent::MessageDelta {
                    usage: None,
                    stop_reason: Some("max_tokens".into()),
                }
            ),
            vec![]
        );
        assert_eq!(
            read(
                &mut s,
                LlmEvent::MessageDelta {
                    usage,
                    stop_reason: None,
                }
            ),
            vec![emit(EventPayload::MessageDelta { usage })]
        );
        let done = s.on_llm_event(LlmEvent::MessageStop);
        assert_eq!(
            done.effects,
            vec![
                emit(EventPayload::MessageStop {
                    stop_reason: Some("max_tokens".into()),
                }),
                assistant("", usage, Some("max_tokens")),
                emit(EventPayload::ConversationEnd {
                    reason: EndReason::Completed,
                }),
            ]
        );
    }

    #[test]
    fn a_tool_use_block_becomes_a_tool_call_to_run() {
        let mut s = state();
        start(&mut s);
        assert_eq!(
            read(
                &mut s,
                LlmEvent::ToolUseStart {
                    id: "call_1".into(),
                    name: "bash".into(),
                }
            ),
            vec![
                emit(EventPayload::ToolUseStart {
                    tool_call_id: "call_1".into(),
                    tool_name: "bash".into(),
                }),
                emit(EventPayload::ToolPlanned {
                    tool_id: "call_1".into(),
                    tool_name: "bash".into(),
                }),
            ]
        );
        assert_eq!(
            read(&mut s, LlmEvent::InputJsonDelta("{\"command\"".into())),
            vec![emit(EventPayload::InputJsonDelta {
                partial_json: "{\"command\"".into(),
            })]
        );
        assert_eq!(
            read(
                &mut s,
                LlmEvent::ToolUseStop {
                    id: "call_1".into(),
                    name: "bash".into(),
                    input: json!({"command": "ls"}),
                }
            ),
            vec![emit(EventPayload::ToolUseStop {
                tool_call_id: "call_1".into(),
                tool_name: "bash".into(),
                input: json!({"command": "ls"}),
            })]
        );
        // No text and no stop reason: the reply is only the call, stopped for `tool_use`.
        let done = s.on_llm_event(LlmEvent::MessageStop);
        assert_eq!(done.then, Then::RunTools(vec![call("call_1")]));
        assert_eq!(
            done.effects,
            vec![
                emit(EventPayload::MessageStop {
                    stop_reason: Some("tool_use".into()),
                }),
                Effect::Store(Draft::ToolCall(call("call_1"))),
            ]
        );
    }

    #[test]
    fn text_before_tool_calls_is_stored_before_them() {
        let mut s = state();
        start(&mut s);
        read(&mut s, LlmEvent::TextDelta("Let me look.".into()));
        for id in ["call_1", "call_2"] {
            read(
                &mut s,
                LlmEvent::ToolUseStop {
                    id: id.into(),
                    name: "bash".into(),
                    input: json!({"command": "ls"}),
                },
            );
        }
        let done = s.on_llm_event(LlmEvent::MessageStop);
        assert_eq!(
            done.then,
            Then::RunTools(vec![call("call_1"), call("call_2")])
        );
        assert_eq!(
            done.effects,
            vec![
                emit(EventPayload::MessageStop {
                    stop_reason: Some("tool_use".into()),
                }),
                assistant("Let me look.", None, Some("tool_use")),
                Effect::Store(Draft::ToolCall(call("call_1"))),
                Effect::Store(Draft::ToolCall(call("call_2"))),
            ]
        );
    }

    #[test]
    fn an_error_mid_stream_keeps_the_partial_text_and_fails_the_turn() {
        let mut s = state();
        start(&mut s);
        read(&mut s, LlmEvent::TextDelta("Half a".into()));
        let failed = s.on_llm_event(LlmEvent::Error {
            message: "slow down".into(),
            code: Some("rate_limit".into()),
        });
        assert_eq!(failed.then, Then::Failed);
        assert_eq!(
            failed.effects,
            vec![
                emit(EventPayload::ErrorReceived {
                    message: "slow down".into(),
                    error_code: Some("rate_limit".into()),
                    error_kind: ErrorKind::Unavailable,
                }),
                emit(EventPayload::ErrorOccurred {
                    code: "rate_limit".into(),
                    message: "slow down".into(),
                    recoverable: true,
                }),
                assistant("Half a", None, None),
                Effect::Store(Draft::Error {
                    message: "slow down".into(),
                    code: Some("rate_limit".into()),
                }),
                emit(EventPayload::ConversationEnd {
                    reason: EndReason::Error,
                }),
            ]
        );
    }

    #[test]
    fn an_error_without_text_or_code_stores_only_the_error() {
        let mut s = state();
        let failed = s.on_llm_event(LlmEvent::Error {
            message: "boom".into(),
            code: None,
        });
        assert_eq!(failed.then, Then::Failed);
        assert_eq!(
            failed.effects,
            vec![
                emit(EventPayload::ErrorReceived {
                    message: "boom".into(),
                    error_code: None,
                    error_kind: ErrorKind::Unavailable,
                }),
                emit(EventPayload::ErrorOccurred {
                    code: "llm_error".into(),
                    message: "boom".into(),
                    recoverable: true,
                }),
                Effect::Store(Draft::Error {
                    message: "boom".into(),
                    code: None,
                }),
                emit(EventPayload::ConversationEnd {
                    reason: EndReason::Error,
                }),
            ]
        );
    }

    #[test]
    fn a_stream_that_stops_early_or_stalls_is_a_failure() {
        let mut s = state();
        start(&mut s);
        let ended = s.on_stream_end();
        assert_eq!(ended.then, Then::Failed);
        assert_eq!(
            ended.effects[0],
            emit(EventPayload::ErrorReceived {
                message: "the model's reply ended before it was complete".into(),
                error_code: Some("network".into()),
                error_kind: ErrorKind::Unavailable,
            })
        );

        let mut s = state();
        let effects = s.on_timeout(std::time::Duration::from_secs(2));
        assert_eq!(
            effects[0],
            emit(EventPayload::ErrorReceived {
                message:
                    "the model sent nothing for 2s; the request was cancelled (request timeout)"
                        .into(),
                error_code: Some("timeout".into()),
                error_kind: ErrorKind::Unavailable,
            })
        );
        assert_eq!(
            effects.last(),
            Some(&emit(EventPayload::ConversationEnd {
                reason: EndReason::Error,
            }))
        );
    }

    #[test]
    fn an_interrupt_closes_a_started_reply_and_keeps_its_text() {
        let mut s = state();
        start(&mut s);
        read(&mut s, LlmEvent::TextDelta("Once upon".into()));
        assert_eq!(
            s.on_interrupt(),
            vec![
                interrupted(),
                emit(EventPayload::MessageStop { stop_reason: None }),
                assistant("Once upon", None, None),
                emit(EventPayload::ConversationEnd {
                    reason: EndReason::Interrupted,
                }),
            ]
        );
        // Before `message_start` there is no message to stop.
        let mut s = state();
        assert_eq!(
            s.on_interrupt(),
            vec![
                interrupted(),
                emit(EventPayload::ConversationEnd {
                    reason: EndReason::Interrupted,
                }),
            ]
        );
    }

    #[test]
    fn tool_outcomes_are_published_then_stored() {
        let s = state();
        let c = call("call_1");
        assert_eq!(
            s.tool_finished(
                &c,
                ToolOutcome {
                    output: "a.txt".into(),
                    is_error: false,
                }
            ),
            vec![
                emit(EventPayload::ToolResult {
                    tool_call_id: "call_1".into(),
                    result: "a.txt".into(),
                    is_error: Some(false),
                }),
                emit(EventPayload::ToolCompleted {
                    tool_id: "call_1".into(),
                    tool_name: "bash".into(),
                }),
                Effect::Store(Draft::ToolResult(ToolResult {
                    tool_call_id: "call_1".into(),
                    name: "bash".into(),
                    output: "a.txt".into(),
                    is_error: false,
                })),
            ]
        );
        assert_eq!(
            s.tool_finished(
                &c,
                ToolOutcome {
                    output: "no such file".into(),
                    is_error: true,
                }
            )[1],
            emit(EventPayload::ToolFailed {
                tool_id: "call_1".into(),
                tool_name: "bash".into(),
                error: "no such file".into(),
            })
        );
    }

    #[test]
    fn an_interrupt_during_tools_answers_every_call_left() {
        let s = state();
        let unanswered = [call("call_2"), call("call_3")];
        let effects = s.on_tools_interrupted(&unanswered);
        assert_eq!(effects.len(), 4);
        assert_eq!(effects[0], interrupted());
        for (effect, c) in effects[1..3].iter().zip(&unanswered) {
            assert_eq!(
                effect,
                &Effect::Store(Draft::ToolResult(ToolResult {
                    tool_call_id: c.id.clone(),
                    name: "bash".into(),
                    output: "interrupted before the tool finished".into(),
                    is_error: true,
                }))
            );
        }
        assert_eq!(
            effects[3],
            emit(EventPayload::ConversationEnd {
                reason: EndReason::Interrupted,
            })
        );
    }

    #[test]
    fn running_out_of_model_calls_fails_without_a_partial_reply() {
        let mut s = state();
        start(&mut s);
        read(&mut s, LlmEvent::TextDelta("stale".into()));
        let effects = s.out_of_model_calls(3);
        let message = "the agent stopped after 3 model calls without finishing its turn";
        assert_eq!(effects.len(), 4, "{effects:?}");
        assert_eq!(
            effects[2],
            Effect::Store(Draft::Error {
                message: message.into(),
                code: Some("max_turns".into()),
            })
        );
    }

    #[test]
    fn stamping_a_draft_gives_the_message_and_its_event() {
        let (m, announce) = Draft::Assistant {
            message_id: "msg_1".into(),
            text: "Hi".into(),
            usage: None,
            stop_reason: Some("end_turn".into()),
        }
        .stamp(42);
        assert_eq!((m.id.as_str(), m.timestamp), ("msg_1", 42));
        assert_eq!(m.content, Some(Content::Text("Hi".into())));
        assert_eq!(m.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(announce(m).type_name(), "assistant_message");

        let (m, announce) = Draft::ToolCall(call("call_1")).stamp(7);
        assert_eq!(m.subtype, Subtype::ToolCall);
        assert_eq!(m.tool_call, Some(call("call_1")));
        assert!(m.id.starts_with("msg"));
        assert_eq!(announce(m).type_name(), "tool_call_message");

        let (m, announce) = Draft::Error {
            message: "boom".into(),
            code: Some("network".into()),
        }
        .stamp(7);
        assert_eq!(m.error_code.as_deref(), Some("network"));
        assert_eq!(announce(m).type_name(), "error_message");
    }
}
