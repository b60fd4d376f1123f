//! Event order of docs/protocol.md §5 for every mock scenario, through the local runtime.

use agentvm::*;
use agentvm_e2e::{collect_turn, mock_vm, text_of, types};
use std::time::Duration;

async fn image_with_model(vm: &AgentVm, model: &str) -> ImageListItem {
    vm.images()
        .create(
            "c1",
            ImageConfig {
                model: Some(model.into()),
                ..Default::default()
            },
        )
        .await
        .expect("create an image")
        .record
}

fn plain_reply(deltas: usize) -> Vec<&'static str> {
    let mut v = vec!["message_start", "conversation_start"];
    for _ in 0..deltas {
        v.push("text_delta");
        v.push("conversation_responding");
    }
    v.extend(["message_stop", "assistant_message", "conversation_end"]);
    v
}

#[tokio::test]
async fn default_scenario_follows_the_protocol_order() {
    let vm = mock_vm().await;
    let image = image_with_model(&vm, "default").await;
    let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
    let sent = vm
        .agents()
        .send_to_image(&image.image_id, "Hello")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert_eq!(types(&events), plain_reply(1));
    assert_eq!(text_of(&events), "Hello from mock!");

    // Every agent event carries all four ids, and the turn id.
    for e in &events {
        let ctx = e.context.as_ref().unwrap();
        assert_eq!(ctx.container_id.as_deref(), Some("c1"));
        assert_eq!(ctx.image_id.as_deref(), Some(image.image_id.as_str()));
        assert_eq!(ctx.agent_id.as_deref(), Some(sent.agent_id.as_str()));
        assert_eq!(ctx.session_id.as_deref(), Some(image.session_id.as_str()));
        assert!(ctx.turn_id.is_some());
        assert_eq!(e.intent, Intent::Notification);
        assert_eq!(e.source, Source::Agent);
    }
    // message_start's id is the stored assistant message's id.
    let EventPayload::MessageStart { message_id, .. } = &events[0].payload else {
        panic!()
    };
    let EventPayload::AssistantMessage(stored) = &events[events.len() - 2].payload else {
        panic!()
    };
    assert_eq!(&stored.id, message_id);
    assert_eq!(
        events.last().unwrap().payload,
        EventPayload::ConversationEnd {
            reason: EndReason::Completed
        }
    );

    // The user message was stored on receive, the assistant message once.
    let history = vm.images().messages(&image.image_id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].id, sent.message_id);
    assert_eq!(history[0].role, Role::User);
    assert_eq!(history[1].role, Role::Assistant);
    assert_eq!(
        history[1].content,
        Some(Content::Text("Hello from mock!".into()))
    );
}

#[tokio::test]
async fn multi_delta_has_exactly_five_deltas() {
    let vm = mock_vm().await;
    let image = image_with_model(&vm, "multi-delta").await;
    let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&image.image_id, "Hi")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert_eq!(types(&events), plain_reply(5));
    assert_eq!(text_of(&events), "Hello from multi-delta mock!");
}

#[tokio::test]
async fn long_stream_has_exactly_one_hundred_deltas_in_order() {
    let vm = mock_vm().await;
    let image = image_with_model(&vm, "long-stream").await;
    let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&image.image_id, "Hi")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert_eq!(types(&events), plain_reply(100));
    let expected: String = (0..100).map(|i| format!("chunk{i} ")).collect();
    assert_eq!(text_of(&events), expected);
    let history = vm.images().messages(&image.image_id).await.unwrap();
    assert_eq!(history[1].content, Some(Content::Text(expected)));
}

#[tokio::test]
async fn instant_scenario() {
    let vm = mock_vm().await;
    let image = image_with_model(&vm, "instant").await;
    let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&image.image_id, "Hi")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert_eq!(types(&events), plain_reply(1));
    assert_eq!(text_of(&events), "Instant response");
}

#[tokio::test]
async fn error_scenario_reports_and_stores_the_error() {
    let vm = mock_vm().await;
    let image = image_with_model(&vm, "error").await;
    let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&image.image_id, "Hi")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert_eq!(
        types(&events),
        [
            "error_received",
            "error_occurred",
            "error_message",
            "conversation_end"
        ]
    );
    let EventPayload::ErrorReceived {
        message,
        error_code,
        error_kind,
    } = &events[0].payload
    else {
        panic!()
    };
    assert!(message.contains("Mock error"));
    assert_eq!(error_code.as_deref(), Some("mock_error"));
    assert_eq!(*error_kind, agentvm::ErrorKind::Unavailable);
    assert_eq!(
        events[3].payload,
        EventPayload::ConversationEnd {
            reason: EndReason::Error
        }
    );
    let history = vm.images().messages(&image.image_id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].role, Role::Error);
    assert_eq!(history[1].subtype, Subtype::Error);
    assert_eq!(history[1].error_code.as_deref(), Some("mock_error"));
    // The agent survives an error: the next message gets an answer too.
    vm.agents()
        .send_to_image(&image.image_id, "again")
        .await
        .unwrap();
    let again = collect_turn(&mut sub).await;
    assert_eq!(
        again.last().unwrap().payload,
        EventPayload::ConversationEnd {
            reason: EndReason::Error
        }
    );
}

#[tokio::test]
async fn with_tool_runs_the_loop_and_pairs_every_call_with_a_result() {
    let vm = mock_vm().await;
    let image = image_with_model(&vm, "with-tool").await;
    let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&image.image_id, "run it")
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
            "message_start",
            "text_delta",
            "conversation_responding",
            "message_stop",
            "assistant_message",
            "conversation_end",
        ]
    );
    let EventPayload::MessageStop { stop_reason } = &events[8].payload else {
        panic!()
    };
    assert_eq!(stop_reason.as_deref(), Some("tool_use"));
    // No tools are configured: the call is refused with a result the model reads.
    let EventPayload::ToolResult {
        is_error, result, ..
    } = &events[12].payload
    else {
        panic!()
    };
    assert_eq!(*is_error, Some(true));
    assert!(result.contains("not available"), "{result}");
    let history = vm.images().messages(&image.image_id).await.unwrap();
    let subtypes: Vec<_> = history.iter().map(|m| m.subtype).collect();
    assert_eq!(
        subtypes,
        [
            Subtype::User,
            Subtype::Assistant,
            Subtype::ToolCall,
            Subtype::ToolResult,
            Subtype::Assistant
        ]
    );
    assert_eq!(
        history[2].tool_call.as_ref().unwrap().id,
        history[3].tool_result.as_ref().unwrap().tool_call_id
    );
}

#[tokio::test]
async fn interrupt_during_slow_stream_stores_the_partial_reply() {
    let vm = mock_vm().await;
    let image = image_with_model(&vm, "slow-stream").await;
    let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
    let sent = vm
        .agents()
        .send_to_image(&image.image_id, "Hi")
        .await
        .unwrap();
    // Wait for three deltas, then interrupt.
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|e: &&Event| e.type_name() == "text_delta")
        .count()
        < 3
    {
        match sub.recv().await.unwrap() {
            BusItem::Event(p) => seen.push(p.event.clone()),
            BusItem::Overflowed { .. } => panic!("overflow"),
        }
    }
    let r = vm.agents().interrupt(&sent.agent_id).await.unwrap();
    assert_eq!(r.agent_id.as_deref(), Some(sent.agent_id.as_str()));
    let rest = collect_turn(&mut sub).await;
    // Whatever deltas were already on their way, the tail is exactly the interrupt sequence.
    let tail: Vec<_> = types(&rest)
        .into_iter()
        .filter(|t| *t != "text_delta" && *t != "conversation_responding")
        .collect();
    assert_eq!(
        tail,
        [
            "interrupted",
            "message_stop",
            "assistant_message",
            "conversation_end"
        ]
    );
    assert_eq!(
        rest.last().unwrap().payload,
        EventPayload::ConversationEnd {
            reason: EndReason::Interrupted
        }
    );
    let all: Vec<Event> = seen.into_iter().chain(rest.clone()).collect();
    let streamed = text_of(&all);
    assert!(streamed.starts_with("slow0 slow1 slow2 "));
    assert!(
        !streamed.contains("slow49"),
        "the stream was not cut: {streamed}"
    );
    // The stored partial reply is exactly what was streamed.
    let history = vm.images().messages(&image.image_id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[1].content, Some(Content::Text(streamed)));

    // The agent answers the next message normally.
    tokio::time::sleep(Duration::from_millis(50)).await;
    vm.agents()
        .send_to_image(&image.image_id, "again")
        .await
        .unwrap();
    let next = collect_turn(&mut sub).await;
    assert_eq!(
        next.last().unwrap().payload,
        EventPayload::ConversationEnd {
            reason: EndReason::Completed
        }
    );
}

#[tokio::test]
async fn messages_sent_during_a_turn_are_answered_after_in_order() {
    let vm = mock_vm().await;
    let image = image_with_model(&vm, "slow-stream").await;
    let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
    for i in 0..3 {
        vm.agents()
            .send_to_image(&image.image_id, format!("m{i}"))
            .await
            .unwrap();
    }
    for _ in 0..3 {
        let events = collect_turn(&mut sub).await;
        assert_eq!(types(&events), plain_reply(50));
    }
    let history = vm.images().messages(&image.image_id).await.unwrap();
    let roles: Vec<_> = history.iter().map(|m| m.role).collect();
    // All three user messages were stored on receive, then the three answers in turn order.
    assert_eq!(
        roles,
        [
            Role::User,
            Role::User,
            Role::User,
            Role::Assistant,
            Role::Assistant,
            Role::Assistant
        ]
    );
}

#[tokio::test]
async fn no_llm_configured_fails_the_turn_with_a_message_saying_what_to_do() {
    let vm = AgentVm::builder().open().await.unwrap();
    let image = vm
        .images()
        .create("c1", Default::default())
        .await
        .unwrap()
        .record;
    let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&image.image_id, "Hi")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    let EventPayload::ErrorReceived {
        message,
        error_code,
        error_kind,
    } = &events[0].payload
    else {
        panic!()
    };
    assert!(message.contains("LLM_PROVIDER"), "{message}");
    assert_eq!(error_code.as_deref(), Some("not_configured"));
    assert_eq!(
        *error_kind,
        agentvm::ErrorKind::Unavailable,
        "no LLM: unavailable"
    );
}
