//! The Anthropic driver against recorded SSE transcripts served by a real HTTP server on
//! loopback, cut at many byte boundaries: exact `LlmEvent` sequences, the request on the wire,
//! and exact docs/protocol.md §5 event sequences through `AgentVm`.

use agentvm::*;
use agentvm_e2e::llm::{anthropic, decoded_under, usage};
use agentvm_e2e::replay_server::{fixture, Chunking, RecordedRequest, ReplayServer, Reply};
use agentvm_e2e::{collect_turn, text_of, types};
use serde_json::json;

const MODEL: &str = "claude-sonnet-4-20250514";

fn chunkings() -> Vec<Chunking> {
    vec![
        Chunking::Whole,
        Chunking::Every(1),
        Chunking::Every(7),
        Chunking::Every(64),
        Chunking::Random { seed: 1, max: 5 },
        Chunking::Random { seed: 42, max: 50 },
        Chunking::Random { seed: 7, max: 400 },
    ]
}

/// The events of `transcript` under every chunking (asserted equal), and the last request.
async fn decoded(transcript: &str) -> (Vec<LlmEvent>, RecordedRequest) {
    decoded_under(&chunkings(), anthropic, "claude-x", transcript).await
}

#[tokio::test]
async fn text_transcript_and_the_request_on_the_wire() {
    let (events, req) = decoded("anthropic/text.sse").await;
    assert_eq!(
        events,
        vec![
            LlmEvent::MessageStart {
                model: MODEL.into()
            },
            LlmEvent::TextDelta("Hello".into()),
            LlmEvent::TextDelta(", wörld 🌍!".into()),
            LlmEvent::MessageDelta {
                usage: usage(25, 15),
                stop_reason: Some("end_turn".into())
            },
            LlmEvent::MessageStop,
        ]
    );
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/v1/messages")
    );
    assert_eq!(req.header("x-api-key"), Some("test-key"));
    assert_eq!(req.header("anthropic-version"), Some("2023-06-01"));
    assert_eq!(req.header("content-type"), Some("application/json"));
    assert_eq!(
        req.json(),
        json!({
            "model": "claude-x",
            "max_tokens": 256,
            "stream": true,
            "system": "You are terse.",
            "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        })
    );
}

#[tokio::test]
async fn tool_use_transcript() {
    let (events, _) = decoded("anthropic/tool_use.sse").await;
    let id = "toolu_01T1x1fJ34qAmk2tNTrN7Up6";
    assert_eq!(
        events,
        vec![
            LlmEvent::MessageStart {
                model: MODEL.into()
            },
            LlmEvent::TextDelta("Okay".into()),
            LlmEvent::TextDelta(", let me check the weather.".into()),
            LlmEvent::ToolUseStart {
                id: id.into(),
                name: "get_weather".into()
            },
            LlmEvent::InputJsonDelta("{\"location\":".into()),
            LlmEvent::InputJsonDelta(" \"San Fra".into()),
            LlmEvent::InputJsonDelta("ncisco, CA\", \"unit\": \"fahrenheit\"}".into()),
            LlmEvent::ToolUseStop {
                id: id.into(),
                name: "get_weather".into(),
                input: json!({"location": "San Francisco, CA", "unit": "fahrenheit"}),
            },
            LlmEvent::MessageDelta {
                usage: usage(472, 89),
                stop_reason: Some("tool_use".into())
            },
            LlmEvent::MessageStop,
        ]
    );
}

#[tokio::test]
async fn thinking_transcript_keeps_reasoning_out_of_the_text() {
    let (events, _) = decoded("anthropic/thinking.sse").await;
    assert_eq!(
        events,
        vec![
            LlmEvent::MessageStart {
                model: MODEL.into()
            },
            LlmEvent::ThinkingDelta("I need to find 27 * 453.".into()),
            LlmEvent::ThinkingDelta("\n27 * 453 = 12231.".into()),
            LlmEvent::TextDelta("27 * 453 = 12,231".into()),
            LlmEvent::MessageDelta {
                usage: usage(50, 90),
                stop_reason: Some("end_turn".into())
            },
            LlmEvent::MessageStop,
        ]
    );
}

#[tokio::test]
async fn an_error_event_after_http_200() {
    let (events, _) = decoded("anthropic/error_after_200.sse").await;
    assert_eq!(
        events,
        vec![
            LlmEvent::MessageStart {
                model: MODEL.into()
            },
            LlmEvent::TextDelta("Partial answ".into()),
            LlmEvent::Error {
                message: "Anthropic stream error (overloaded_error): Overloaded".into(),
                code: Some("overloaded".into()),
            },
        ]
    );
}

#[tokio::test]
async fn unknown_events_blocks_and_deltas_are_ignored() {
    let (events, _) = decoded("anthropic/unknown_events.sse").await;
    assert_eq!(
        events,
        vec![
            LlmEvent::MessageStart {
                model: MODEL.into()
            },
            LlmEvent::TextDelta("Still here.".into()),
            LlmEvent::MessageDelta {
                usage: usage(9, 4),
                stop_reason: Some("end_turn".into())
            },
            LlmEvent::MessageStop,
        ]
    );
}

#[tokio::test]
async fn a_recording_of_llama_cpp_messages_endpoint() {
    let (events, _) = decoded("anthropic/llamacpp_text.sse").await;
    let text: String = events
        .iter()
        .filter_map(|e| match e {
            LlmEvent::TextDelta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(text, "I'm glad you");
    assert_eq!(
        events[events.len() - 2],
        LlmEvent::MessageDelta {
            usage: usage(32, 4),
            stop_reason: Some("max_tokens".into())
        }
    );
}

async fn vm(url: &str) -> AgentVm {
    AgentVm::builder().llm(anthropic(url)).open().await.unwrap()
}

async fn image(vm: &AgentVm, model: Option<&str>) -> ImageListItem {
    let config = ImageConfig {
        model: model.map(String::from),
        ..Default::default()
    };
    vm.images().create("c1", config).await.unwrap().record
}

#[tokio::test]
async fn a_text_reply_through_the_runtime_with_usage_and_the_image_model() {
    let server = ReplayServer::start([
        Reply::sse(fixture("anthropic/text.sse")).chunking(Chunking::Every(3)),
        Reply::sse(fixture("anthropic/text.sse")),
    ])
    .await;
    let vm = vm(&server.url()).await;
    let img = image(&vm, Some("claude-opus-image")).await;
    let mut sub = vm.sessions().events(&img.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&img.image_id, "Hello?")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert_eq!(
        types(&events),
        [
            "message_start",
            "conversation_start",
            "text_delta",
            "conversation_responding",
            "text_delta",
            "conversation_responding",
            "message_delta",
            "message_stop",
            "assistant_message",
            "conversation_end",
        ]
    );
    assert_eq!(text_of(&events), "Hello, wörld 🌍!");
    assert_eq!(
        events[6].payload,
        EventPayload::MessageDelta {
            usage: usage(25, 15)
        }
    );
    let EventPayload::AssistantMessage(m) = &events[8].payload else {
        panic!()
    };
    assert_eq!(m.usage, usage(25, 15));
    assert_eq!(m.stop_reason.as_deref(), Some("end_turn"));
    let stored = vm.images().messages(&img.image_id).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert_eq!(&stored[1], m);
    // The image's model is what is sent; an image without one gets the driver's default.
    assert_eq!(server.requests()[0].json()["model"], "claude-opus-image");
    let plain = image(&vm, None).await;
    let mut sub = vm.sessions().events(&plain.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&plain.image_id, "Hi")
        .await
        .unwrap();
    collect_turn(&mut sub).await;
    assert_eq!(server.requests()[1].json()["model"], "claude-test");
}

#[tokio::test]
async fn thinking_never_reaches_clients_or_the_stored_text() {
    let server = ReplayServer::start([Reply::sse(fixture("anthropic/thinking.sse"))]).await;
    let vm = vm(&server.url()).await;
    let img = image(&vm, None).await;
    let mut sub = vm.sessions().events(&img.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&img.image_id, "27 * 453?")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert_eq!(text_of(&events), "27 * 453 = 12,231");
    let stored = vm.images().messages(&img.image_id).await.unwrap();
    assert_eq!(
        stored[1].content,
        Some(Content::Text("27 * 453 = 12,231".into()))
    );
}

#[tokio::test]
async fn an_error_after_200_through_the_runtime_keeps_the_partial_reply() {
    let server = ReplayServer::start([Reply::sse(fixture("anthropic/error_after_200.sse"))]).await;
    let vm = vm(&server.url()).await;
    let img = image(&vm, None).await;
    let mut sub = vm.sessions().events(&img.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&img.image_id, "Hi")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert_eq!(
        types(&events),
        [
            "message_start",
            "conversation_start",
            "text_delta",
            "conversation_responding",
            "error_received",
            "error_occurred",
            "assistant_message",
            "error_message",
            "conversation_end",
        ]
    );
    let EventPayload::ErrorReceived {
        message,
        error_code,
        error_kind,
    } = &events[4].payload
    else {
        panic!()
    };
    assert_eq!(*error_kind, agentvm::ErrorKind::Unavailable);
    assert_eq!(error_code.as_deref(), Some("overloaded"));
    assert!(message.contains("Overloaded"), "{message}");
    let stored = vm.images().messages(&img.image_id).await.unwrap();
    let kinds: Vec<_> = stored.iter().map(|m| m.subtype).collect();
    assert_eq!(kinds, [Subtype::User, Subtype::Assistant, Subtype::Error]);
    assert_eq!(
        stored[1].content,
        Some(Content::Text("Partial answ".into()))
    );
    assert_eq!(
        server.requests().len(),
        1,
        "an error after the reply started is not retried"
    );
}

#[tokio::test]
async fn a_tool_call_is_answered_and_the_history_sent_back_is_paired() {
    let server = ReplayServer::start([
        Reply::sse(fixture("anthropic/tool_use.sse"))
            .chunking(Chunking::Random { seed: 3, max: 20 }),
        Reply::sse(fixture("anthropic/text.sse")),
    ])
    .await;
    let vm = vm(&server.url()).await;
    let img = image(&vm, None).await;
    let mut sub = vm.sessions().events(&img.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&img.image_id, "Weather?")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert_eq!(
        types(&events),
        [
            "message_start",
            "conversation_start",
            "text_delta",
            "conversation_responding",
            "text_delta",
            "conversation_responding",
            "tool_use_start",
            "tool_planned",
            "input_json_delta",
            "input_json_delta",
            "input_json_delta",
            "tool_use_stop",
            "message_delta",
            "message_stop",
            "assistant_message",
            "tool_call_message",
            "tool_executing",
            "tool_result",
            "tool_failed",
            "tool_result_message",
            "message_start",
            "text_delta",
            "conversation_responding",
            "text_delta",
            "conversation_responding",
            "message_delta",
            "message_stop",
            "assistant_message",
            "conversation_end",
        ]
    );
    // No tools are configured: the refusal goes back to the model, paired with its call.
    let second = server.requests()[1].json();
    let id = "toolu_01T1x1fJ34qAmk2tNTrN7Up6";
    assert_eq!(
        second["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Okay, let me check the weather."},
                {"type": "tool_use", "id": id, "name": "get_weather",
                 "input": {"location": "San Francisco, CA", "unit": "fahrenheit"}},
            ]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "is_error": true,
                "content": "tool 'get_weather' is not available: no tools are enabled for this agent"}]},
        ])
    );
}
