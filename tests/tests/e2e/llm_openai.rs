//! The OpenAI-compatible driver against transcripts in the shapes OpenAI, vLLM, llama.cpp and
//! Ollama stream, served by a real HTTP server on loopback and cut at many byte boundaries:
//! exact `LlmEvent` sequences, the request on the wire, and docs/protocol.md §5 sequences through
//! `AgentVm`.

use agentvm::*;
use agentvm_e2e::llm::{collect, decoded_under, openai, request, usage};
use agentvm_e2e::replay_server::{fixture, Chunking, RecordedRequest, ReplayServer, Reply};
use agentvm_e2e::{collect_turn, text_of, types};
use serde_json::json;

fn chunkings() -> Vec<Chunking> {
    vec![
        Chunking::Whole,
        Chunking::Every(1),
        Chunking::Every(5),
        Chunking::Every(100),
        Chunking::Random { seed: 11, max: 4 },
        Chunking::Random { seed: 99, max: 60 },
    ]
}
/// The events of `transcript` under every chunking (asserted equal), and the last request.
async fn decoded(transcript: &str) -> (Vec<LlmEvent>, RecordedRequest) {
    decoded_under(&chunkings(), openai, "gpt-x", transcript).await
}

#[tokio::test]
async fn text_with_a_usage_only_last_chunk_and_the_request_on_the_wire() {
    let (events, req) = decoded("openai/text.sse").await;
    assert_eq!(
        events,
        vec![
            LlmEvent::MessageStart {
                model: "gpt-4o-mini-2024-07-18".into()
            },
            LlmEvent::TextDelta("Hello".into()),
            LlmEvent::TextDelta(", wörld 🌍!".into()),
            LlmEvent::MessageDelta {
                usage: usage(19, 5),
                stop_reason: Some("end_turn".into())
            },
            LlmEvent::MessageStop,
        ]
    );
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("POST", "/v1/chat/completions")
    );
    assert_eq!(req.header("authorization"), Some("Bearer test-key"));
    assert_eq!(
        req.json(),
        json!({
            "model": "gpt-x",
            "max_tokens": 256,
            "stream": true,
            "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
            ],
        })
    );
}

#[tokio::test]
async fn tool_calls_assembled_by_index() {
    let (events, _) = decoded("openai/tool_calls.sse").await;
    assert_eq!(
        &events[1..],
        &[
            LlmEvent::ToolUseStart {
                id: "call_DdmO9pD3xa9XTPNJ32zg2hcA".into(),
                name: "get_weather".into()
            },
            LlmEvent::InputJsonDelta("{\"lo".into()),
            LlmEvent::InputJsonDelta("cation\": \"Paris\"}".into()),
            LlmEvent::ToolUseStop {
                id: "call_DdmO9pD3xa9XTPNJ32zg2hcA".into(),
                name: "get_weather".into(),
                input: json!({"location": "Paris"}),
            },
            LlmEvent::ToolUseStart {
                id: "call_ABCdef".into(),
                name: "get_time".into()
            },
            LlmEvent::InputJsonDelta("{\"tz\": \"CET\"}".into()),
            LlmEvent::ToolUseStop {
                id: "call_ABCdef".into(),
                name: "get_time".into(),
                input: json!({"tz": "CET"})
            },
            LlmEvent::MessageDelta {
                usage: usage(80, 40),
                stop_reason: Some("tool_use".into())
            },
            LlmEvent::MessageStop,
        ]
    );
}

#[tokio::test]
async fn ollama_sends_a_whole_call_without_id_or_index() {
    let server = ReplayServer::start([
        Reply::sse(fixture("openai/ollama_tool_call.sse")).chunking(Chunking::Every(9))
    ])
    .await;
    let events = collect(&*openai(&server.url()), request("llama3.2", "Weather?")).await;
    let LlmEvent::ToolUseStart { id, name } = &events[1] else {
        panic!("{events:?}")
    };
    assert!(id.starts_with("call_"), "a synthesized id: {id}");
    assert_eq!(name, "get_weather");
    assert_eq!(
        events,
        vec![
            LlmEvent::MessageStart {
                model: "llama3.2".into()
            },
            LlmEvent::ToolUseStart {
                id: id.clone(),
                name: "get_weather".into()
            },
            LlmEvent::InputJsonDelta("{\"location\":\"Paris\"}".into()),
            LlmEvent::ToolUseStop {
                id: id.clone(),
                name: "get_weather".into(),
                input: json!({"location": "Paris"})
            },
            LlmEvent::MessageDelta {
                usage: None,
                stop_reason: Some("tool_use".into())
            },
            LlmEvent::MessageStop,
        ]
    );
}

#[tokio::test]
async fn empty_finish_reasons_crlf_comments_and_reasoning() {
    let (events, _) = decoded("openai/empty_finish_reason.sse").await;
    assert_eq!(
        events,
        vec![
            LlmEvent::MessageStart {
                model: "Qwen/Qwen2.5-7B-Instruct".into()
            },
            LlmEvent::ThinkingDelta("Short answer.".into()),
            LlmEvent::TextDelta("Yes".into()),
            LlmEvent::TextDelta(".".into()),
            LlmEvent::MessageDelta {
                usage: None,
                stop_reason: Some("max_tokens".into())
            },
            LlmEvent::MessageStop,
        ]
    );
}

#[tokio::test]
async fn an_error_object_mid_stream() {
    let (events, _) = decoded("openai/error_mid_stream.sse").await;
    assert_eq!(
        events,
        vec![
            LlmEvent::MessageStart {
                model: "gpt-4o-mini-2024-07-18".into()
            },
            LlmEvent::TextDelta("Partial answ".into()),
            LlmEvent::Error {
                message:
                    "the server reported an error (server_error): The server had an error while \
                          processing your request. Sorry about that!"
                        .into(),
                code: Some("overloaded".into()),
            },
        ]
    );
}

#[tokio::test]
async fn a_recording_of_llama_cpp_chat_completions() {
    let (events, _) = decoded("openai/llamacpp_text.sse").await;
    assert_eq!(
        events,
        vec![
            LlmEvent::MessageStart {
                model: "SmolLM2-135M-Instruct.Q4_1.gguf".into()
            },
            LlmEvent::TextDelta("I".into()),
            LlmEvent::TextDelta("'m".into()),
            LlmEvent::TextDelta(" glad".into()),
            LlmEvent::TextDelta(" you".into()),
            LlmEvent::MessageDelta {
                usage: usage(32, 4),
                stop_reason: Some("max_tokens".into())
            },
            LlmEvent::MessageStop,
        ]
    );
}

#[tokio::test]
async fn a_base_url_ending_in_v1_and_no_key() {
    let server = ReplayServer::start([Reply::sse(fixture("openai/text.sse"))]).await;
    let settings = HttpSettings::new(format!("{}/v1/", server.url()), None);
    let driver = OpenAiDriver::new(settings, "m").unwrap();
    collect(&driver, request("m", "Hi")).await;
    let req = &server.requests()[0];
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.header("authorization"), None);
}

async fn vm(url: &str) -> AgentVm {
    AgentVm::builder().llm(openai(url)).open().await.unwrap()
}

#[tokio::test]
async fn a_text_reply_through_the_runtime() {
    let server =
        ReplayServer::start([Reply::sse(fixture("openai/text.sse")).chunking(Chunking::Every(2))])
            .await;
    let vm = vm(&server.url()).await;
    let config = ImageConfig {
        model: Some("gpt-image-model".into()),
        ..Default::default()
    };
    let img = vm.images().create("c1", config).await.unwrap().record;
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
    let stored = vm.images().messages(&img.image_id).await.unwrap();
    assert_eq!(stored[1].usage, usage(19, 5));
    assert_eq!(stored[1].stop_reason.as_deref(), Some("end_turn"));
    assert_eq!(server.requests()[0].json()["model"], "gpt-image-model");
}

#[tokio::test]
async fn tool_calls_through_the_runtime_send_back_tool_messages() {
    let server = ReplayServer::start([
        Reply::sse(fixture("openai/tool_calls.sse"))
            .chunking(Chunking::Random { seed: 5, max: 30 }),
        Reply::sse(fixture("openai/text.sse")),
    ])
    .await;
    let vm = vm(&server.url()).await;
    let img = vm
        .images()
        .create("c1", Default::default())
        .await
        .unwrap()
        .record;
    let mut sub = vm.sessions().events(&img.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&img.image_id, "Weather and time?")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    let t = types(&events);
    assert_eq!(t.iter().filter(|t| **t == "tool_result_message").count(), 2);
    assert_eq!(t.last(), Some(&"conversation_end"));
    let body = server.requests()[1].json();
    let messages = body["messages"].as_array().unwrap();
    let not_available = |name: &str| {
        format!("[error] tool '{name}' is not available: no tools are enabled for this agent")
    };
    assert_eq!(
        messages.to_vec(),
        vec![
            json!({"role": "user", "content": "Weather and time?"}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
                {"id": "call_ABCdef", "type": "function",
                 "function": {"name": "get_time", "arguments": "{\"tz\":\"CET\"}"}},
            ]}),
            json!({"role": "tool", "tool_call_id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "content": not_available("get_weather")}),
            json!({"role": "tool", "tool_call_id": "call_ABCdef", "content": not_available("get_time")}),
        ]
    );
}

/// `LLM_PROVIDER=openai` without a model: the driver asks the server which model it serves
/// (once), never sending another provider's model name; a server that lists none gets a clear
/// error naming what to set.
#[tokio::test]
async fn without_a_model_the_server_is_asked_which_it_serves() {
    let server = ReplayServer::start([
        Reply::json(
            200,
            json!({"object": "list", "data": [{"id": "served-model", "object": "model"}]}),
        ),
        Reply::sse(fixture("openai/text.sse")),
        Reply::sse(fixture("openai/text.sse")),
    ])
    .await;
    let url = server.url();
    let config = agentvm::llm::config::LlmConfig::from_vars(|k| match k {
        "LLM_PROVIDER" => Some("openai".into()),
        "LLM_PROVIDER_URL" => Some(url.clone()),
        _ => None,
    })
    .unwrap();
    assert_eq!(config.model, None);
    let driver = config.driver().unwrap();
    assert_eq!(driver.default_model(), "");
    for _ in 0..2 {
        let events = collect(&*driver, request(driver.default_model(), "Hi")).await;
        assert!(events.contains(&LlmEvent::MessageStop), "{events:?}");
    }
    let requests = server.requests();
    let seen: Vec<_> = requests
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", "/v1/models"),
            ("POST", "/v1/chat/completions"),
            ("POST", "/v1/chat/completions")
        ]
    );
    assert_eq!(requests[1].json()["model"], "served-model");
    assert_eq!(requests[2].json()["model"], "served-model");

    let empty =
        ReplayServer::start([Reply::json(200, json!({"object": "list", "data": []}))]).await;
    let driver = agentvm::OpenAiDriver::new(agentvm_e2e::llm::settings(&empty.url()), "").unwrap();
    let events = collect(&driver, request("", "Hi")).await;
    match events.as_slice() {
        [LlmEvent::Error { message, code }] => {
            assert_eq!(code.as_deref(), Some("invalid_request"));
            assert!(message.contains("/v1/models lists no model"), "{message}");
            assert!(message.contains("LLM_PROVIDER_MODEL"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
