//! Stored history to a valid provider conversation, in one provider-neutral pass.
//!
//! The store keeps every message as it happened: user messages, assistant text, each tool
//! call and each tool result as its own message, errors, partial replies cut by an interrupt,
//! tool calls whose results never came (a crash between the two). Providers accept much less:
//! strictly alternating roles starting with the user, and every tool call answered by its result
//! in the very next user turn. [`conversation`] turns the first into the second:
//!
//! - error messages are skipped, and so are empty texts;
//! - consecutive messages of the same side are merged into one turn;
//! - assistant messages before the first user message are dropped (with their tool calls);
//! - a tool result is kept only in the user turn right after the assistant turn that made the
//!   call, first in that turn, in call order, once; other results are orphans and are dropped;
//! - a call left without a result gets a synthesized error result, so the model knows it did
//!   not run.
//!
//! Providers then map each [`Turn`] to their JSON (Anthropic: one message per turn; OpenAI:
//! `tool` messages for the results, then the user's message).

use crate::model::{Content, ContentPart, Message, Subtype, ToolCall, ToolResult};

/// What the result of a call that never completed says.
pub const MISSING_RESULT: &str = "the tool call did not complete (no result was recorded)";

/// One part of a user turn.
#[derive(Debug, Clone, PartialEq)]
pub enum UserBlock {
    /// The answer to a tool call of the previous assistant turn.
    ToolResult(ToolResult),
    /// Text, an image or a file the user sent.
    Part(ContentPart),
}

/// One turn of a provider conversation.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    /// The user's side: tool results first, then what the user wrote.
    User(Vec<UserBlock>),
    /// The model's side: its text, then its tool calls.
    Assistant {
        /// The text, possibly empty when the turn only calls tools.
        text: String,
        /// The tool calls, in order.
        calls: Vec<ToolCall>,
    },
}

impl Turn {
    fn is_user(&self) -> bool {
        matches!(self, Turn::User(_))
    }
}

/// Normalizes stored history into alternating turns, starting with the user, every tool call
/// answered. See the module documentation for the rules.
pub fn conversation(history: &[Message]) -> Vec<Turn> {
    let mut turns: Vec<Turn> = Vec::new();
    for m in history {
        match m.subtype {
            Subtype::Error => {}
            Subtype::User => {
                let parts = user_parts(m.content.as_ref());
                if !parts.is_empty() {
                    user_turn(&mut turns).extend(parts.into_iter().map(UserBlock::Part));
                }
            }
            Subtype::Assistant => {
                let text = m.content.as_ref().map(Content::text).unwrap_or_default();
                if text.is_empty() || turns.is_empty() {
                    continue;
                }
                if let Some((t, _)) = assistant_turn(&mut turns) {
                    t.push_str(&text);
                }
            }
            Subtype::ToolCall => {
                let Some(call) = &m.tool_call else { continue };
                if turns.is_empty() {
                    continue;
                }
                if let Some((_, calls)) = assistant_turn(&mut turns) {
                    calls.push(call.clone());
                }
            }
            Subtype::ToolResult => {
                let Some(result) = &m.tool_result else {
                    continue;
                };
                // Only an answer to the most recent assistant turn can be placed.
                let answers_last = turns.iter().rev().find(|t| !t.is_user()).is_some_and(
                    |t| matches!(t, Turn::Assistant { calls, .. } if calls.iter().any(|c| c.id == result.tool_call_id)),
                );
                if answers_last {
                    user_turn(&mut turns).push(UserBlock::ToolResult(result.clone()));
                }
            }
        }
    }
    pair_results(&mut turns);
    turns
}

/// The user turn at the end, started if the last turn is the assistant's.
fn user_turn(turns: &mut Vec<Turn>) -> &mut Vec<UserBlock> {
    if !matches!(turns.last(), Some(Turn::User(_))) {
        turns.push(Turn::User(Vec::new()));
    }
    match turns.last_mut() {
        Some(Turn::User(blocks)) => blocks,
        _ => unreachable!("a user turn was just pushed"),
    }
}

/// The assistant turn at the end, started if the last turn is the user's.
fn assistant_turn(turns: &mut Vec<Turn>) -> Option<(&mut String, &mut Vec<ToolCall>)> {
    if !matches!(turns.last(), Some(Turn::Assistant { .. })) {
        turns.push(Turn::Assistant {
            text: String::new(),
            calls: Vec::new(),
        });
    }
    match turns.last_mut() {
        Some(Turn::Assistant { text, calls }) => Some((text, calls)),
        _ => None,
    }
}

/// Puts, in each user turn after an assistant turn with calls, exactly one result per call,
/// first and in call order, synthesizing the missing ones.
fn pair_results(turns: &mut Vec<Turn>) {
    let mut i = 0;
    while i < turns.len() {
        let calls = match &turns[i] {
            Turn::Assistant { calls, .. } if !calls.is_empty() => calls.clone(),
            _ => {
                i += 1;
                continue;
            }
        };
        if !matches!(turns.get(i + 1), Some(Turn::User(_))) {
            turns.insert(i + 1, Turn::User(Vec::new()));
        }
        if let Some(Turn::User(blocks)) = turns.get_mut(i + 1) {
            let mut results = Vec::new();
            let mut rest = Vec::new();
            for b in blocks.drain(..) {
                match b {
                    UserBlock::ToolResult(r) => results.push(r),
                    part => rest.push(part),
                }
            }
            let mut paired: Vec<UserBlock> = calls
                .iter()
                .map(|c| {
                    let r = results
                        .iter()
                        .find(|r| r.tool_call_id == c.id)
                        .cloned()
                        .unwrap_or_else(|| ToolResult {
                            tool_call_id: c.id.clone(),
                            name: c.name.clone(),
                            output: MISSING_RESULT.into(),
                            is_error: true,
                        });
                    UserBlock::ToolResult(r)
                })
                .collect();
            paired.extend(rest);
            *blocks = paired;
        }
        i += 2;
    }
}

fn user_parts(content: Option<&Content>) -> Vec<ContentPart> {
    match content {
        None => Vec::new(),
        Some(Content::Text(t)) if t.is_empty() => Vec::new(),
        Some(Content::Text(t)) => vec![ContentPart::Text { text: t.clone() }],
        Some(Content::Parts(parts)) => parts
            .iter()
            .filter(|p| !matches!(p, ContentPart::Text { text } if text.is_empty()))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(t: &str) -> Message {
        Message::user("u".into(), t.into(), 0)
    }
    fn assistant(t: &str) -> Message {
        Message::assistant("a".into(), t.into(), 0, None, None)
    }
    fn call(id: &str) -> Message {
        let c = ToolCall {
            id: id.into(),
            name: "bash".into(),
            input: json!({"command": "ls"}),
        };
        Message::tool_call("c".into(), c, 0)
    }
    fn result(id: &str, out: &str) -> Message {
        let r = ToolResult {
            tool_call_id: id.into(),
            name: "bash".into(),
            output: out.into(),
            is_error: false,
        };
        Message::tool_result("r".into(), r, 0)
    }
    fn error() -> Message {
        Message::error("e".into(), "boom".into(), Some("network".into()), 0)
    }
    fn text(t: &str) -> UserBlock {
        UserBlock::Part(ContentPart::Text { text: t.into() })
    }
    fn res(id: &str, out: &str, is_error: bool) -> UserBlock {
        UserBlock::ToolResult(ToolResult {
            tool_call_id: id.into(),
            name: "bash".into(),
            output: out.into(),
            is_error,
        })
    }
    fn calls_of(turn: &Turn) -> Vec<String> {
        match turn {
            Turn::Assistant { calls, .. } => calls.iter().map(|c| c.id.clone()).collect(),
            Turn::User(_) => vec![],
        }
    }

    #[test]
    fn a_tool_loop_as_the_agent_stores_it() {
        let h = [
            user("hi"),
            assistant("let me"),
            call("t1"),
            call("t2"),
            result("t1", "a"),
            result("t2", "b"),
            assistant("done"),
        ];
        let turns = conversation(&h);
        assert_eq!(turns.len(), 4);
        assert_eq!(turns[0], Turn::User(vec![text("hi")]));
        assert!(matches!(&turns[1], Turn::Assistant { text, .. } if text == "let me"));
        assert_eq!(calls_of(&turns[1]), ["t1", "t2"]);
        assert_eq!(
            turns[2],
            Turn::User(vec![res("t1", "a", false), res("t2", "b", false)])
        );
        assert_eq!(
            turns[3],
            Turn::Assistant {
                text: "done".into(),
                calls: vec![]
            }
        );
    }

    #[test]
    fn consecutive_users_merge_and_errors_are_skipped() {
        let h = [
            user("a"),
            error(),
            user("b"),
            assistant("x"),
            error(),
            assistant("y"),
        ];
        let turns = conversation(&h);
        assert_eq!(turns[0], Turn::User(vec![text("a"), text("b")]));
        assert_eq!(
            turns[1],
            Turn::Assistant {
                text: "xy".into(),
                calls: vec![]
            }
        );
        assert_eq!(turns.len(), 2);
    }

    #[test]
    fn leading_assistant_messages_and_their_results_are_dropped() {
        let h = [
            assistant("orphan"),
            call("t0"),
            result("t0", "x"),
            user("hi"),
        ];
        assert_eq!(conversation(&h), vec![Turn::User(vec![text("hi")])]);
    }

    #[test]
    fn an_unanswered_call_gets_an_error_result_before_the_next_user_text() {
        let h = [user("hi"), call("t1"), user("are you there?")];
        let turns = conversation(&h);
        assert_eq!(turns.len(), 3);
        assert_eq!(
            turns[2],
            Turn::User(vec![
                res("t1", MISSING_RESULT, true),
                text("are you there?")
            ])
        );
        // A call at the very end gets its own user turn.
        let turns = conversation(&[user("hi"), call("t1")]);
        assert_eq!(turns[2], Turn::User(vec![res("t1", MISSING_RESULT, true)]));
    }

    #[test]
    fn orphan_and_duplicate_results_are_dropped_and_results_ordered_by_call() {
        let h = [
            user("hi"),
            result("nope", "orphan"),
            call("t1"),
            call("t2"),
            result("t2", "b"),
            result("t1", "a"),
            result("t1", "again"),
            result("zzz", "orphan"),
        ];
        let turns = conversation(&h);
        assert_eq!(turns[0], Turn::User(vec![text("hi")]));
        assert_eq!(
            turns[2],
            Turn::User(vec![res("t1", "a", false), res("t2", "b", false)])
        );
    }

    #[test]
    fn a_result_for_an_older_turn_is_an_orphan() {
        let h = [
            user("hi"),
            call("t1"),
            user("next"),
            assistant("ok"),
            result("t1", "late"),
        ];
        let turns = conversation(&h);
        assert_eq!(turns.len(), 4);
        assert_eq!(
            turns[2],
            Turn::User(vec![res("t1", MISSING_RESULT, true), text("next")])
        );
        assert_eq!(
            turns[3],
            Turn::Assistant {
                text: "ok".into(),
                calls: vec![]
            }
        );
    }

    #[test]
    fn empty_texts_are_skipped() {
        let h = [user(""), user("hi"), assistant(""), user("again")];
        assert_eq!(
            conversation(&h),
            vec![Turn::User(vec![text("hi"), text("again")])]
        );
        assert!(conversation(&[]).is_empty());
    }
}
