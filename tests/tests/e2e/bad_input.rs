//! Bad input gets a clear error and loses nothing: unknown ids give NotFound naming the id;
//! empty or oversized ids and configs give InvalidInput; nothing is half-written.

use agentvm::*;
use agentvm_e2e::mock_vm;
use serde_json::json;

async fn err(vm: &AgentVm, type_name: &str, data: serde_json::Value) -> Error {
    let command = match Command::from_wire(type_name, data) {
        Ok(c) => c,
        Err(e) => return e,
    };
    vm.request(command)
        .await
        .expect_err("the command is refused")
}

#[tokio::test]
async fn unknown_ids_are_not_found_naming_the_id() {
    let vm = mock_vm().await;
    for (t, data, what) in [
        (
            "image_run_request",
            json!({"imageId":"img_x"}),
            "Image not found: img_x",
        ),
        (
            "image_stop_request",
            json!({"imageId":"img_x"}),
            "Image not found: img_x",
        ),
        (
            "image_messages_request",
            json!({"imageId":"img_x"}),
            "Image not found: img_x",
        ),
        (
            "image_update_request",
            json!({"imageId":"img_x","updates":{"name":"n"}}),
            "Image not found: img_x",
        ),
        (
            "message_send_request",
            json!({"imageId":"img_x","content":"hi"}),
            "Image not found: img_x",
        ),
        (
            "message_send_request",
            json!({"agentId":"agent_x","content":"hi"}),
            "Agent not found: agent_x",
        ),
        (
            "message_send_request",
            json!({"sessionId":"sess_x","content":"hi"}),
            "Session not found: sess_x",
        ),
        (
            "agent_interrupt_request",
            json!({"agentId":"agent_x"}),
            "Agent not found: agent_x",
        ),
        (
            "agent_interrupt_request",
            json!({"imageId":"img_x"}),
            "Image not found: img_x",
        ),
        (
            "session_create_request",
            json!({"imageId":"img_x"}),
            "Image not found: img_x",
        ),
        (
            "session_list_request",
            json!({"imageId":"img_x"}),
            "Image not found: img_x",
        ),
        (
            "session_update_request",
            json!({"sessionId":"sess_x","title":"t"}),
            "Session not found: sess_x",
        ),
        (
            "session_delete_request",
            json!({"sessionId":"sess_x"}),
            "Session not found: sess_x",
        ),
        (
            "session_resume_request",
            json!({"sessionId":"sess_x"}),
            "Session not found: sess_x",
        ),
        (
            "session_messages_request",
            json!({"sessionId":"sess_x"}),
            "Session not found: sess_x",
        ),
        (
            "image_build_request",
            json!({"containerId":"c","definitionName":"nope"}),
            "Definition not found: nope",
        ),
        (
            "image_create_request",
            json!({"containerId":"c","config":{"definition":"nope"}}),
            "Definition not found: nope",
        ),
    ] {
        let e = err(&vm, t, data).await;
        assert_eq!(e.kind(), ErrorKind::NotFound, "{t}: {e}");
        assert_eq!(e.to_string(), what, "{t}");
    }
    // Nothing was created along the way (image_build/create failed before the container).
    assert!(vm.containers().list().await.unwrap().is_empty());
}

#[tokio::test]
async fn message_send_without_a_target_says_so() {
    let vm = mock_vm().await;
    let e = err(&vm, "message_send_request", json!({"content":"hi"})).await;
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(e.to_string(), "Either imageId or agentId must be provided");
}

#[tokio::test]
async fn empty_and_oversized_input_is_invalid_and_writes_nothing() {
    let vm = AgentVm::builder()
        .llm(std::sync::Arc::new(MockDriver::default()))
        .limits(Limits {
            max_content_bytes: 1000,
            max_system_prompt_bytes: 100,
            ..Default::default()
        })
        .open()
        .await
        .unwrap();
    let long_id = "x".repeat(300);
    for (t, data, needle) in [
        (
            "container_create_request",
            json!({"containerId":""}),
            "containerId must not be empty",
        ),
        (
            "container_create_request",
            json!({"containerId": long_id}),
            "the limit is 256",
        ),
        (
            "container_create_request",
            json!({"containerId":"../etc"}),
            "not allowed",
        ),
        (
            "image_create_request",
            json!({"containerId":"","config":{}}),
            "containerId must not be empty",
        ),
        (
            "image_create_request",
            json!({"containerId":"c","config":{"name":""}}),
            "config.name must not be empty",
        ),
        (
            "image_create_request",
            json!({"containerId":"c","config":{"systemPrompt": "p".repeat(101)}}),
            "systemPrompt is 101 bytes",
        ),
        (
            "image_create_request",
            json!({"containerId":"c","config":{"definition": 5}}),
            "config.definition is not a definition",
        ),
        ("image_get_request", json!({}), "missing field `imageId`"),
        ("image_get_request", json!({"imageId": 7}), "invalid type"),
        (
            "session_get_request",
            json!({"sessionId":""}),
            "sessionId must not be empty",
        ),
        (
            "definition_register_request",
            json!({"definition":{"name":""}}),
            "definition name must not be empty",
        ),
        (
            "no_such_request",
            json!({}),
            "Unknown request type: no_such_request",
        ),
    ] {
        let e = err(&vm, t, data).await;
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{t}: {e}");
        assert!(e.to_string().contains(needle), "{t}: {e}");
    }
    assert!(
        vm.containers().list().await.unwrap().is_empty(),
        "a refused create wrote something"
    );
    assert!(vm.definitions().list().await.unwrap().is_empty());

    let image = vm
        .images()
        .create("c", Default::default())
        .await
        .unwrap()
        .record;
    for (content, needle) in [
        (json!(""), "content must not be empty"),
        (json!("y".repeat(1001)), "content is 1001 bytes"),
    ] {
        let e = err(
            &vm,
            "message_send_request",
            json!({"imageId": image.image_id, "content": content}),
        )
        .await;
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains(needle), "{e}");
    }
    let e = err(
        &vm,
        "message_send_request",
        json!({"imageId": image.image_id, "content": {"bad": 1}}),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let e = err(
        &vm,
        "image_update_request",
        json!({"imageId": image.image_id, "updates": {"name": ""}}),
    )
    .await;
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // None of the refused messages was stored, and the image is unchanged.
    assert!(vm
        .images()
        .messages(&image.image_id)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        vm.images()
            .get(&image.image_id)
            .await
            .unwrap()
            .unwrap()
            .name,
        "New Conversation"
    );
}

#[tokio::test]
async fn a_second_process_on_the_same_data_dir_is_told_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let _first = agentvm_e2e::mock_vm_at(dir.path()).await;
    // redb refuses a second open of the same file in this process too.
    let e = AgentVm::builder()
        .data_dir(dir.path())
        .open()
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(
        e.to_string().contains("open in another agentvm process"),
        "{e}"
    );
}
