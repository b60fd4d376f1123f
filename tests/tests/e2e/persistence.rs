//! Drop the runtime, reopen the file: everything is back, in order.

use agentvm::*;
use agentvm_e2e::{collect_turn, mock_vm_at, text_of};

#[tokio::test]
async fn every_record_and_message_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (image, extra, history, def_list);
    {
        let vm = mock_vm_at(dir.path()).await;
        vm.definitions()
            .register(Definition {
                name: "helper".into(),
                system_prompt: Some("v1".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        image = vm
            .images()
            .build(
                "c1",
                "helper",
                ImageConfig {
                    model: Some("multi-delta".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .record;
        vm.containers().create("c2").await.unwrap();
        extra = vm
            .sessions()
            .create(&image.image_id, Some("second"))
            .await
            .unwrap();
        let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
        for i in 0..3 {
            vm.agents()
                .send_to_image(&image.image_id, format!("message {i}"))
                .await
                .unwrap();
            collect_turn(&mut sub).await;
        }
        history = vm.images().messages(&image.image_id).await.unwrap();
        def_list = vm.definitions().list().await.unwrap();
        vm.close().await;
    }
    let vm = mock_vm_at(dir.path()).await;
    assert_eq!(vm.containers().list().await.unwrap(), ["c1", "c2"]);
    let mut got = vm.images().get(&image.image_id).await.unwrap().unwrap();
    assert!(!got.online);
    got.online = image.online;
    got.agent_id = image.agent_id.clone();
    assert_eq!(got, image);
    assert_eq!(
        vm.sessions().get(&extra.session_id).await.unwrap(),
        Some(extra)
    );
    let reopened = vm.images().messages(&image.image_id).await.unwrap();
    assert_eq!(reopened.len(), 6);
    assert_eq!(reopened, history);
    assert_eq!(vm.definitions().list().await.unwrap(), def_list);

    // The conversation continues where it was.
    let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&image.image_id, "after restart")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert_eq!(text_of(&events), "Hello from multi-delta mock!");
    assert_eq!(
        vm.images().messages(&image.image_id).await.unwrap().len(),
        8
    );
}

#[tokio::test]
async fn an_image_keeps_its_definition_snapshot_after_the_definition_changes() {
    let dir = tempfile::tempdir().unwrap();
    let image;
    {
        let vm = mock_vm_at(dir.path()).await;
        vm.definitions()
            .register(Definition {
                name: "helper".into(),
                system_prompt: Some("original prompt".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        image = vm
            .images()
            .build("c1", "helper", Default::default())
            .await
            .unwrap()
            .record;
        vm.close().await;
    }
    // Re-register at start-up with a new system prompt.
    let vm = AgentVm::builder()
        .data_dir(dir.path())
        .definition(Definition {
            name: "helper".into(),
            system_prompt: Some("NEW prompt".into()),
            ..Default::default()
        })
        .llm(std::sync::Arc::new(RecordingDriver))
        .open()
        .await
        .unwrap();
    assert_eq!(
        vm.definitions()
            .get("helper")
            .await
            .unwrap()
            .unwrap()
            .system_prompt
            .as_deref(),
        Some("NEW prompt")
    );
    let got = vm.images().get(&image.image_id).await.unwrap().unwrap();
    assert_eq!(got.system_prompt.as_deref(), Some("original prompt"));
    // The resumed agent sends the snapshot's prompt to the model.
    let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
    vm.agents()
        .send_to_image(&image.image_id, "hi")
        .await
        .unwrap();
    let events = collect_turn(&mut sub).await;
    assert_eq!(text_of(&events), "system=original prompt");
    // A new build uses the new definition.
    let fresh = vm
        .images()
        .build("c1", "helper", Default::default())
        .await
        .unwrap()
        .record;
    assert_eq!(fresh.system_prompt.as_deref(), Some("NEW prompt"));
}

/// Answers with the system prompt it was given, so a test can see what the agent sent.
#[derive(Default)]
struct RecordingDriver;

impl LlmDriver for RecordingDriver {
    fn name(&self) -> &str {
        "recording"
    }
    fn default_model(&self) -> &str {
        "recording"
    }
    fn stream(&self, request: LlmRequest) -> agentvm::llm::LlmStream {
        use futures::StreamExt;
        let text = format!("system={}", request.system.unwrap_or_default());
        futures::stream::iter([
            LlmEvent::MessageStart {
                model: "recording".into(),
            },
            LlmEvent::TextDelta(text),
            LlmEvent::MessageDelta {
                usage: None,
                stop_reason: Some("end_turn".into()),
            },
            LlmEvent::MessageStop,
        ])
        .boxed()
    }
}

#[tokio::test]
async fn replay_log_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (image, first_cursor, texts);
    {
        let vm = mock_vm_at(dir.path()).await;
        image = vm
            .images()
            .create(
                "c1",
                ImageConfig {
                    model: Some("multi-delta".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap()
            .record;
        let mut sub = vm.sessions().events(&image.session_id).await.unwrap();
        vm.agents()
            .send_to_image(&image.image_id, "hi")
            .await
            .unwrap();
        let mut cursors = Vec::new();
        loop {
            let BusItem::Event(p) = sub.recv().await.unwrap() else {
                panic!()
            };
            cursors.push(p.cursor.unwrap());
            if matches!(p.event.payload, EventPayload::ConversationEnd { .. }) {
                break;
            }
        }
        assert!(cursors.windows(2).all(|w| w[0] < w[1]), "cursors increase");
        first_cursor = cursors[0];
        texts = cursors.len();
        vm.close().await;
    }
    let vm = mock_vm_at(dir.path()).await;
    let mut sub = vm
        .sessions()
        .events_after(&image.session_id, first_cursor)
        .await
        .unwrap();
    let mut replayed = Vec::new();
    while let Some(BusItem::Event(p)) = sub.try_recv() {
        replayed.push(p);
    }
    assert_eq!(replayed.len(), texts - 1);
    assert_eq!(
        replayed.last().unwrap().event.type_name(),
        "conversation_end"
    );
    // New events get cursors above the old ones.
    vm.agents()
        .send_to_image(&image.image_id, "again")
        .await
        .unwrap();
    let BusItem::Event(p) = sub.recv().await.unwrap() else {
        panic!()
    };
    assert!(p.cursor.unwrap() > replayed.last().unwrap().cursor.unwrap());
}
