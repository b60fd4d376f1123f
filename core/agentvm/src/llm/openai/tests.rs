use super::*;
use crate::llm::http::decode_all;
use crate::llm::ToolSpec;
use crate::model::{ToolCall, ToolResult};

fn decode(sse: &str) -> Vec<LlmEvent> {
    decode_all(&mut OpenAiDecoder::new(), [sse.as_bytes()])
}

fn chunk(delta: Value, finish: Value) -> String {
    let v = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-x",
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
    format!("data: {v}\n\n")
}

const USAGE: &str = "data: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n";
const DONE: &str = "data: [DONE]\n\n";

#[test]
fn text_then_finish_then_usage_then_done() {
    let s = [
        chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        chunk(json!({"content": "Hello"}), json!("")),
        chunk(json!({"content": "!"}), Value::Null),
        chunk(json!({}), json!("stop")),
        USAGE.to_string(),
        DONE.to_string(),
    ]
    .concat();
    assert_eq!(
        decode(&s),
        vec![
            LlmEvent::MessageStart {
                model: "gpt-x".into()
            },
            LlmEvent::TextDelta("Hello".into()),
            LlmEvent::TextDelta("!".into()),
            LlmEvent::MessageDelta {
                usage: Some(Usage {
                    input_tokens: 9,
                    output_tokens: 2
                }),
                stop_reason: Some("end_turn".into()),
            },
            LlmEvent::MessageStop,
        ]
    );
}

#[test]
fn tool_calls_are_assembled_by_index_one_at_a_time() {
    let s = [
        chunk(json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "write_file", "arguments": ""}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"path\": \"a.txt\", "}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"content\": \"hi\"}"}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "bash", "arguments": "{\"command\""}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 1, "function": {"arguments": ": \"cat a.txt\"}"}}]}), Value::Null),
        chunk(json!({}), json!("tool_calls")),
        DONE.to_string(),
    ]
    .concat();
    assert_eq!(
        &decode(&s)[1..],
        &[
            LlmEvent::ToolUseStart {
                id: "call_a".into(),
                name: "write_file".into()
            },
            LlmEvent::InputJsonDelta("{\"path\": \"a.txt\", ".into()),
            LlmEvent::InputJsonDelta("\"content\": \"hi\"}".into()),
            LlmEvent::ToolUseStop {
                id: "call_a".into(),
                name: "write_file".into(),
                input: json!({"path": "a.txt", "content": "hi"})
            },
            LlmEvent::ToolUseStart {
                id: "call_b".into(),
                name: "bash".into()
            },
            LlmEvent::InputJsonDelta("{\"command\"".into()),
            LlmEvent::InputJsonDelta(": \"cat a.txt\"}".into()),
            LlmEvent::ToolUseStop {
                id: "call_b".into(),
                name: "bash".into(),
                input: json!({"command": "cat a.txt"})
            },
            LlmEvent::MessageDelta {
                usage: None,
                stop_reason: Some("tool_use".into())
            },
            LlmEvent::MessageStop,
        ]
    );
}

#[test]
fn ollama_whole_call_without_id_or_index_and_finish_stop() {
    let s = [
        chunk(json!({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}}]}), Value::Null),
        chunk(json!({"role": "assistant", "content": ""}), json!("stop")),
        DONE.to_string(),
    ]
    .concat();
    let events = decode(&s);
    let LlmEvent::ToolUseStart { id, name } = &events[1] else {
        panic!("{events:?}")
    };
    assert!(id.starts_with("call_"), "{id}");
    assert_eq!(name, "bash");
    assert_eq!(
        &events[2..],
        &[
            LlmEvent::InputJsonDelta("{\"command\":\"ls\"}".into()),
            LlmEvent::ToolUseStop {
                id: id.clone(),
                name: "bash".into(),
                input: json!({"command": "ls"})
            },
            LlmEvent::MessageDelta {
                usage: None,
                stop_reason: Some("tool_use".into())
            },
            LlmEvent::MessageStop,
        ]
    );
}

#[test]
fn mid_stream_errors_in_data_or_llama_cpp_error_lines() {
    let s = [
        chunk(json!({"content": "Par"}), Value::Null),
        "data: {\"error\":{\"message\":\"The server had an error\",\"type\":\"server_error\",\"code\":null}}\n\n".into(),
        chunk(json!({"content": "never"}), Value::Null),
    ]
    .concat();
    assert_eq!(
        &decode(&s)[1..],
        &[
            LlmEvent::TextDelta("Par".into()),
            LlmEvent::Error {
                message: "the server reported an error (server_error): The server had an error"
                    .into(),
                code: Some("overloaded".into()),
            },
        ]
    );
    let llama = "error: {\"code\":500,\"message\":\"context full\",\"type\":\"exceed_context_size_error\"}\n\n";
    let events = decode(llama);
    assert!(
        matches!(&events[0], LlmEvent::Error { message, .. } if message.contains("context full")),
        "{events:?}"
    );
}

#[test]
fn finish_without_done_is_complete_and_nothing_is_a_cut() {
    let s = [
        chunk(json!({"content": "a"}), Value::Null),
        chunk(json!({}), json!("length")),
    ]
    .concat();
    let events = decode(&s);
    assert_eq!(
        events[events.len() - 2],
        LlmEvent::MessageDelta {
            usage: None,
            stop_reason: Some("max_tokens".into())
        }
    );
    assert_eq!(events.last(), Some(&LlmEvent::MessageStop));
    let cut = decode(&chunk(json!({"content": "a"}), Value::Null));
    assert!(
        matches!(cut.last(), Some(LlmEvent::Error { code, .. }) if code.as_deref() == Some("network"))
    );
}

#[test]
fn reasoning_content_is_thinking() {
    let s = [
        chunk(json!({"reasoning_content": "hmm"}), Value::Null),
        chunk(json!({"content": "ok"}), json!("stop")),
        DONE.to_string(),
    ]
    .concat();
    assert_eq!(
        decode(&s)[1..3],
        [
            LlmEvent::ThinkingDelta("hmm".into()),
            LlmEvent::TextDelta("ok".into())
        ]
    );
}

#[test]
fn a_fragment_for_a_closed_call_is_an_error() {
    let s = [
        chunk(json!({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "bash", "arguments": "{"}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "bash", "arguments": "{}"}}]}), Value::Null),
        chunk(json!({"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]}), Value::Null),
    ]
    .concat();
    assert!(
        matches!(decode(&s).last(), Some(LlmEvent::Error { message, .. }) if message.contains("tool call a"))
    );
}

#[test]
fn request_body_maps_history_tools_and_the_token_limit() {
    let call = ToolCall {
        id: "call_1".into(),
        name: "bash".into(),
        input: json!({"command": "ls"}),
    };
    let result = ToolResult {
        tool_call_id: "call_1".into(),
        name: "bash".into(),
        output: "denied".into(),
        is_error: true,
    };
    let request = LlmRequest {
        model: "m".into(),
        system: Some("sys".into()),
        messages: vec![
            Message::user("1".into(), "hi".into(), 0),
            Message::tool_call("2".into(), call, 0),
            Message::tool_result("3".into(), result, 0),
            Message::user("4".into(), "and?".into(), 0),
        ],
        tools: vec![ToolSpec {
            name: "bash".into(),
            description: "Run".into(),
            input_schema: json!({"type": "object"}),
        }],
        max_tokens: 64,
    };
    assert_eq!(
        request_body(&request, "max_tokens"),
        json!({
            "model": "m",
            "stream": true,
            "stream_options": {"include_usage": true},
            "max_tokens": 64,
            "tools": [{"type": "function", "function": {"name": "bash", "description": "Run", "parameters": {"type": "object"}}}],
            "messages": [
                {"role": "system", "content": "sys"},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "bash", "arguments": "{\"command\":\"ls\"}"}},
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "[error] denied"},
                {"role": "user", "content": "and?"},
            ],
        })
    );
    let official = request_body(&request, "max_completion_tokens");
    assert_eq!(official["max_completion_tokens"], 64);
    assert!(official.get("max_tokens").is_none());
}

#[test]
fn images_become_data_urls() {
    let parts = crate::model::Content::Parts(vec![
        ContentPart::Text { text: "see".into() },
        ContentPart::Image {
            data: "AAA=".into(),
            media_type: "image/png".into(),
        },
    ]);
    let h = history(&[Message::user("m".into(), parts, 0)]);
    assert_eq!(
        h[0]["content"][1]["image_url"]["url"],
        "data:image/png;base64,AAA="
    );
}
