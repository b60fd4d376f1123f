use super::*;
use crate::llm::http::decode_all;
use crate::llm::ToolSpec;
use crate::model::{Message, ToolCall, ToolResult};

fn decode(sse: &str) -> Vec<LlmEvent> {
    decode_all(&mut AnthropicDecoder::new(), [sse.as_bytes()])
}

fn sse(events: &[(&str, &str)]) -> String {
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect()
}

const START: &str = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-x","stop_reason":null,"usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}}"#;

#[test]
fn text_reply_with_usage() {
    let s = sse(&[
        ("message_start", START),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ),
        ("ping", r#"{"type":"ping"}"#),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        ),
        (
            "message_delta",
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":7}}"#,
        ),
        ("message_stop", r#"{"type":"message_stop"}"#),
        ("message_stop", r#"{"type":"message_stop"}"#),
    ]);
    assert_eq!(
        decode(&s),
        vec![
            LlmEvent::MessageStart {
                model: "claude-x".into()
            },
            LlmEvent::TextDelta("Hi".into()),
            LlmEvent::MessageDelta {
                usage: Some(Usage {
                    input_tokens: 30,
                    output_tokens: 7
                }),
                stop_reason: Some("end_turn".into()),
            },
            LlmEvent::MessageStop,
        ]
    );
}

#[test]
fn tool_use_input_is_joined_and_parsed_at_block_stop() {
    let s = sse(&[
        ("message_start", START),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_1","name":"bash","input":{}}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"command\": \"l"}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"s\"}"}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":1}"#,
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_2","name":"list_files","input":{}}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":2}"#,
        ),
        ("message_stop", r#"{"type":"message_stop"}"#),
    ]);
    let events = decode(&s);
    assert_eq!(
        &events[1..],
        &[
            LlmEvent::ToolUseStart {
                id: "toolu_1".into(),
                name: "bash".into()
            },
            LlmEvent::InputJsonDelta("{\"command\": \"l".into()),
            LlmEvent::InputJsonDelta("s\"}".into()),
            LlmEvent::ToolUseStop {
                id: "toolu_1".into(),
                name: "bash".into(),
                input: json!({"command": "ls"})
            },
            LlmEvent::ToolUseStart {
                id: "toolu_2".into(),
                name: "list_files".into()
            },
            LlmEvent::ToolUseStop {
                id: "toolu_2".into(),
                name: "list_files".into(),
                input: json!({})
            },
            LlmEvent::MessageStop,
        ]
    );
}

#[test]
fn thinking_stays_out_of_the_text_and_signatures_are_dropped() {
    let s = sse(&[
        ("message_start", START),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me think."}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCg=="}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":0}"#,
        ),
        (
            "content_block_start",
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"redacted_thinking","data":"abc"}}"#,
        ),
        (
            "content_block_stop",
            r#"{"type":"content_block_stop","index":1}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":2,"delta":{"type":"text_delta","text":"42"}}"#,
        ),
        ("message_stop", r#"{"type":"message_stop"}"#),
    ]);
    assert_eq!(
        &decode(&s)[1..],
        &[
            LlmEvent::ThinkingDelta("Let me think.".into()),
            LlmEvent::TextDelta("42".into()),
            LlmEvent::MessageStop,
        ]
    );
}

#[test]
fn an_error_event_after_200_ends_the_reply() {
    let s = sse(&[
        ("message_start", START),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Par"}}"#,
        ),
        (
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        ),
        (
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"never"}}"#,
        ),
    ]);
    assert_eq!(
        &decode(&s)[1..],
        &[
            LlmEvent::TextDelta("Par".into()),
            LlmEvent::Error {
                message: "Anthropic stream error (overloaded_error): Overloaded".into(),
                code: Some("overloaded".into()),
            },
        ]
    );
}

#[test]
fn unknown_events_are_ignored_and_a_cut_stream_is_an_error() {
    let s = format!(
        ": keep-alive\n\n{}",
        sse(&[
            ("message_start", START),
            ("brand_new_event", r#"{"type":"brand_new_event","x":1}"#),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"server_tool_use","id":"srv_1","name":"web_search","input":{}}}"#
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"citations_delta","citation":{}}}"#
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#
            ),
        ])
    );
    let events = decode(&s);
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        matches!(&events[1], LlmEvent::Error { code, message } if code.as_deref() == Some("network") && message.contains("before message_stop"))
    );
    assert!(
        matches!(&decode("data: not json\n\n")[0], LlmEvent::Error { code, .. } if code.as_deref() == Some("network"))
    );
}

#[test]
fn a_cut_tool_input_is_kept_as_a_string() {
    assert_eq!(
        tool_input("{\"command\": \"l", json!({})),
        json!("{\"command\": \"l")
    );
    assert_eq!(tool_input("", json!({"a": 1})), json!({"a": 1}));
    assert_eq!(tool_input(" ", Value::Null), json!({}));
}

#[test]
fn request_body_has_system_tools_and_paired_history() {
    let call = ToolCall {
        id: "toolu_1".into(),
        name: "bash".into(),
        input: json!({"command": "ls"}),
    };
    let result = ToolResult {
        tool_call_id: "toolu_1".into(),
        name: "bash".into(),
        output: "".into(),
        is_error: true,
    };
    let request = LlmRequest {
        model: "claude-x".into(),
        system: Some("Be brief.".into()),
        messages: vec![
            Message::user("m1".into(), "hi".into(), 0),
            Message::assistant("m2".into(), "Let me look.".into(), 0, None, None),
            Message::tool_call("m3".into(), call, 0),
            Message::tool_result("m4".into(), result, 0),
            Message::error("m5".into(), "boom".into(), None, 0),
        ],
        tools: vec![ToolSpec {
            name: "bash".into(),
            description: "Run".into(),
            input_schema: json!({"type": "object"}),
        }],
        max_tokens: 100,
    };
    assert_eq!(
        request_body(&request),
        json!({
            "model": "claude-x",
            "max_tokens": 100,
            "stream": true,
            "system": "Be brief.",
            "tools": [{"name": "bash", "description": "Run", "input_schema": {"type": "object"}}],
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                {"role": "assistant", "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "ls"}},
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": "(no output)", "is_error": true},
                ]},
            ],
        })
    );
}

#[test]
fn images_and_files_map_to_blocks() {
    let parts = crate::model::Content::Parts(vec![
        ContentPart::Image {
            data: "AAA=".into(),
            media_type: "image/png".into(),
        },
        ContentPart::File {
            data: "JVBE".into(),
            media_type: "application/pdf".into(),
            filename: None,
        },
        ContentPart::File {
            data: "eA==".into(),
            media_type: "text/csv".into(),
            filename: Some("a.csv".into()),
        },
    ]);
    let m = messages(&[Message::user("m".into(), parts, 0)]);
    let content = &m[0]["content"];
    assert_eq!(content[0]["source"]["media_type"], "image/png");
    assert_eq!(content[1]["type"], "document");
    assert!(content[2]["text"].as_str().unwrap().contains("a.csv"));
}
