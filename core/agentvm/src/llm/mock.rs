//! The mock driver: the scenarios of docs/protocol.md §6, for tests and offline demos.
//!
//! A scenario is chosen per request by the model name (`mock:long-stream` or just
//! `long-stream`), else the driver's default.

use super::{LlmDriver, LlmEvent, LlmRequest, LlmStream};
use crate::model::Subtype;
use futures::StreamExt;
use serde_json::json;
use std::time::Duration;

/// The scripted replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MockScenario {
    /// One delta: `Hello from mock!`.
    Default,
    /// Exactly 5 deltas.
    MultiDelta,
    /// Exactly 100 deltas.
    LongStream,
    /// `Instant response`.
    Instant,
    /// An error (`error_received`, then `error_message`).
    Error,
    /// One tool call (`bash`), then a final text once the result is back.
    WithTool,
    /// 50 deltas with a delay between them, for interrupts.
    SlowStream,
    /// `call-tool:<tool>:<JSON arguments>` (arguments optional, `{}` by default): one call
    /// of the named tool with those arguments, then, once the result is back, the text
    /// `The tool said: <result>` (`The tool failed: <result>` for an error result).
    CallTool,
}

/// The model-name prefix of [`MockScenario::CallTool`].
const CALL_TOOL: &str = "call-tool:";

/// The tool and arguments of a `call-tool:<tool>:<JSON>` model name.
fn call_tool_of(model: &str) -> (String, serde_json::Value) {
    let rest = model
        .strip_prefix("mock:")
        .unwrap_or(model)
        .strip_prefix(CALL_TOOL)
        .unwrap_or_default();
    match rest.split_once(':') {
        Some((tool, args)) => (
            tool.to_string(),
            serde_json::from_str(args)
                .unwrap_or_else(|e| json!({ "unparsed": args, "error": e.to_string() })),
        ),
        None => (rest.to_string(), json!({})),
    }
}

/// One tool call, as a reply.
fn tool_call_reply(name: &str, input: serde_json::Value, preface: Option<&str>) -> Vec<LlmEvent> {
    let mut out = vec![LlmEvent::MessageStart {
        model: "mock".into(),
    }];
    if let Some(text) = preface {
        out.push(LlmEvent::TextDelta(text.into()));
    }
    out.extend([
        LlmEvent::ToolUseStart {
            id: "toolu_mock_1".into(),
            name: name.into(),
        },
        LlmEvent::InputJsonDelta(input.to_string()),
        LlmEvent::ToolUseStop {
            id: "toolu_mock_1".into(),
            name: name.into(),
            input,
        },
        LlmEvent::MessageDelta {
            usage: None,
            stop_reason: Some("tool_use".into()),
        },
        LlmEvent::MessageStop,
    ]);
    out
}

/// The last message's tool result, when the model is answering one.
fn answered(request: &LlmRequest) -> Option<(String, bool)> {
    let last = request.messages.last()?;
    if last.subtype != Subtype::ToolResult {
        return None;
    }
    let r = last.tool_result.as_ref()?;
    Some((r.output.clone(), r.is_error))
}

impl MockScenario {
    /// Every scenario.
    pub const ALL: [MockScenario; 8] = [
        MockScenario::Default,
        MockScenario::MultiDelta,
        MockScenario::LongStream,
        MockScenario::Instant,
        MockScenario::Error,
        MockScenario::WithTool,
        MockScenario::SlowStream,
        MockScenario::CallTool,
    ];

    /// The scenario's name.
    pub fn name(self) -> &'static str {
        match self {
            MockScenario::Default => "default",
            MockScenario::MultiDelta => "multi-delta",
            MockScenario::LongStream => "long-stream",
            MockScenario::Instant => "instant",
            MockScenario::Error => "error",
            MockScenario::WithTool => "with-tool",
            MockScenario::SlowStream => "slow-stream",
            MockScenario::CallTool => "call-tool",
        }
    }

    /// Parses a name, with or without the `mock:` prefix.
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.strip_prefix("mock:").unwrap_or(name);
        if name.starts_with(CALL_TOOL) {
            return Some(MockScenario::CallTool);
        }
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// A driver that replays scripted scenarios.
#[derive(Debug, Clone)]
pub struct MockDriver {
    default: MockScenario,
    delay: Duration,
    /// A delay before every delta of every scenario (tests that need a stream in flight).
    delta_delay: Option<Duration>,
}

impl MockDriver {
    /// A mock driver answering with `default` unless a request names another scenario.
    pub fn new(default: MockScenario) -> Self {
        MockDriver {
            default,
            delay: Duration::from_millis(20),
            delta_delay: None,
        }
    }

    /// A delay before every delta of every scenario.
    pub fn with_delta_delay(mut self, delay: Duration) -> Self {
        self.delta_delay = Some(delay);
        self
    }

    /// The delay between `slow-stream` deltas (default 20 ms).
    pub fn with_delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

impl Default for MockDriver {
    fn default() -> Self {
        MockDriver::new(MockScenario::Default)
    }
}

fn text_reply(deltas: Vec<String>) -> Vec<LlmEvent> {
    let mut out = vec![LlmEvent::MessageStart {
        model: "mock".into(),
    }];
    out.extend(deltas.into_iter().map(LlmEvent::TextDelta));
    out.push(LlmEvent::MessageDelta {
        usage: None,
        stop_reason: Some("end_turn".into()),
    });
    out.push(LlmEvent::MessageStop);
    out
}

impl LlmDriver for MockDriver {
    fn name(&self) -> &str {
        "mock"
    }

    fn default_model(&self) -> &str {
        "mock"
    }

    fn stream(&self, request: LlmRequest) -> LlmStream {
        let scenario = MockScenario::parse(&request.model).unwrap_or(self.default);
        let events = match scenario {
            MockScenario::Default => text_reply(vec!["Hello from mock!".into()]),
            MockScenario::Instant => text_reply(vec!["Instant response".into()]),
            MockScenario::MultiDelta => text_reply(
                ["Hello", " from", " multi", "-delta", " mock!"]
                    .map(String::from)
                    .to_vec(),
            ),
            MockScenario::LongStream => {
                text_reply((0..100).map(|i| format!("chunk{i} ")).collect())
            }
            MockScenario::SlowStream => {
                let events = text_reply((0..50).map(|i| format!("slow{i} ")).collect());
                let delay = self.delay;
                return futures::stream::iter(events)
                    .then(move |e| async move {
                        if matches!(e, LlmEvent::TextDelta(_)) {
                            tokio::time::sleep(delay).await;
                        }
                        e
                    })
                    .boxed();
            }
            MockScenario::Error => vec![LlmEvent::Error {
                message: "Mock error: the scenario 'error' always fails".into(),
                code: Some("mock_error".into()),
            }],
            MockScenario::WithTool => match answered(&request) {
                // After the tool result is in the history, answer with text.
                Some((result, _)) => text_reply(vec![format!("The tool said: {}", result.trim())]),
                None => tool_call_reply(
                    "bash",
                    json!({"command": "echo hello from the sandbox"}),
                    Some("Let me run that."),
                ),
            },
            MockScenario::CallTool => match answered(&request) {
                Some((result, is_error)) => text_reply(vec![format!(
                    "The tool {}: {}",
                    if is_error { "failed" } else { "said" },
                    result.trim()
                )]),
                None => {
                    let (tool, input) = call_tool_of(&request.model);
                    tool_call_reply(&tool, input, None)
                }
            },
        };
        match self.delta_delay {
            Some(delay) => futures::stream::iter(events)
                .then(move |e| async move {
                    if matches!(e, LlmEvent::TextDelta(_)) {
                        tokio::time::sleep(delay).await;
                    }
                    e
                })
                .boxed(),
            None => futures::stream::iter(events).boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(model: &str) -> LlmRequest {
        LlmRequest {
            model: model.into(),
            system: None,
            messages: vec![],
            tools: vec![],
            max_tokens: 100,
        }
    }

    #[tokio::test]
    async fn scenarios_have_their_delta_counts() {
        let d = MockDriver::default();
        for (model, n) in [
            ("default", 1),
            ("mock:multi-delta", 5),
            ("long-stream", 100),
            ("instant", 1),
        ] {
            let events: Vec<_> = d.stream(request(model)).collect().await;
            let deltas = events
                .iter()
                .filter(|e| matches!(e, LlmEvent::TextDelta(_)))
                .count();
            assert_eq!(deltas, n, "{model}");
            assert_eq!(events.last(), Some(&LlmEvent::MessageStop));
        }
    }

    #[test]
    fn names_round_trip() {
        for s in MockScenario::ALL {
            assert_eq!(MockScenario::parse(s.name()), Some(s));
        }
        assert_eq!(MockScenario::parse("claude"), None);
    }

    #[tokio::test]
    async fn call_tool_calls_the_named_tool_with_its_arguments() {
        let d = MockDriver::default();
        let events: Vec<_> = d
            .stream(request(
                r#"mock:call-tool:mcp__py__echo:{"text":"hi: there"}"#,
            ))
            .collect()
            .await;
        let stop = events.iter().find_map(|e| match e {
            LlmEvent::ToolUseStop { name, input, .. } => Some((name.clone(), input.clone())),
            _ => None,
        });
        assert_eq!(
            stop,
            Some(("mcp__py__echo".to_string(), json!({"text": "hi: there"})))
        );
        let events: Vec<_> = d.stream(request("call-tool:ping")).collect().await;
        assert!(events.iter().any(
            |e| matches!(e, LlmEvent::ToolUseStop { name, input, .. } if name == "ping" && *input == json!({}))
        ));
    }
}
