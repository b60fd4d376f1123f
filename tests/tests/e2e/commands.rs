//! Every command of docs/protocol.md §4 through `Runtime::request`, with the response JSON checked
//! field by field.

use agentvm::*;
use agentvm_e2e::{collect_turn, mock_vm};
use serde_json::{json, Value};

/// Sends a command given as wire JSON (`type` + `data`) and returns the response as wire JSON.
async fn wire(vm: &AgentVm, type_name: &str, data: Value) -> Value {
    let command = Command::from_wire(type_name, data).expect("a valid wire command");
    let expected = command.response_type();
    let response = vm.request(command).await.expect("the command succeeds");
    let v = serde_json::to_value(&response).expect("a response encodes");
    assert_eq!(v["type"], expected);
    v["data"].clone()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v
        .as_object()
        .expect("an object")
        .keys()
        .map(String::as_str)
        .collect();
    k.sort();
    k
}

#[tokio::test]
async fn container_commands() {
    let vm = mock_vm().await;
    let mut global = vm
        .subscribe(EventFilter {
            global: true,
            ..Default::default()
        })
        .await
        .unwrap();

    let d = wire(
        &vm,
        "container_create_request",
        json!({"containerId":"user-alice"}),
    )
    .await;
    assert_eq!(d, json!({"containerId":"user-alice"}));
    // container_created is emitted on a real create only.
    let BusItem::Event(e) = global.try_recv().unwrap() else {
        panic!()
    };
    assert_eq!(e.event.type_name(), "container_created");
    assert_eq!(
        serde_json::to_value(&e.event).unwrap()["data"]["containerId"],
        "user-alice"
    );
    let d = wire(
        &vm,
        "container_create_request",
        json!({"containerId":"user-alice"}),
    )
    .await;
    assert_eq!(d, json!({"containerId":"user-alice"}));
    assert!(
        global.try_recv().is_none(),
        "idempotent create emits nothing"
    );

    let d = wire(
        &vm,
        "container_get_request",
        json!({"containerId":"user-alice"}),
    )
    .await;
    assert_eq!(d, json!({"containerId":"user-alice","exists":true}));
    let d = wire(
        &vm,
        "container_get_request",
        json!({"containerId":"nobody"}),
    )
    .await;
    assert_eq!(d, json!({"exists":false}));

    wire(
        &vm,
        "container_create_request",
        json!({"containerId":"user-bob"}),
    )
    .await;
    let d = wire(&vm, "container_list_request", json!({})).await;
    assert_eq!(d, json!({"containerIds":["user-alice","user-bob"]}));

    let d = wire(
        &vm,
        "container_delete_request",
        json!({"containerId":"user-bob"}),
    )
    .await;
    assert_eq!(d, json!({"containerId":"user-bob","deleted":true}));
    let d = wire(
        &vm,
        "container_delete_request",
        json!({"containerId":"user-bob"}),
    )
    .await;
    assert_eq!(d, json!({"containerId":"user-bob","deleted":false}));
    let d = wire(&vm, "container_list_request", json!({})).await;
    assert_eq!(d, json!({"containerIds":["user-alice"]}));
}

#[tokio::test]
async fn image_commands() {
    let vm = mock_vm().await;
    let d = wire(
        &vm,
        "image_create_request",
        json!({"containerId":"c1","config":{"name":"My Assistant","description":"d","systemPrompt":"You are helpful."}}),
    )
    .await;
    assert_eq!(keys(&d), ["__subscriptions", "record"]);
    let record = &d["record"];
    assert_eq!(
        keys(record),
        [
            "containerId",
            "createdAt",
            "description",
            "imageId",
            "name",
            "online",
            "sessionId",
            "systemPrompt",
            "updatedAt"
        ]
    );
    let image_id = record["imageId"].as_str().unwrap().to_string();
    let session_id = record["sessionId"].as_str().unwrap().to_string();
    assert!(image_id.starts_with("img_"));
    assert!(session_id.starts_with("sess_"));
    assert_eq!(record["containerId"], "c1");
    assert_eq!(record["name"], "My Assistant");
    assert_eq!(record["description"], "d");
    assert_eq!(record["systemPrompt"], "You are helpful.");
    assert_eq!(record["online"], false);
    assert!(record["createdAt"].is_i64());
    assert_eq!(record["createdAt"], record["updatedAt"]);
    assert_eq!(d["__subscriptions"], json!([session_id]));
    // image_create created the container.
    let d2 = wire(&vm, "container_get_request", json!({"containerId":"c1"})).await;
    assert_eq!(d2["exists"], true);

    // name defaults to "New Conversation".
    let d = wire(
        &vm,
        "image_create_request",
        json!({"containerId":"c1","config":{}}),
    )
    .await;
    assert_eq!(d["record"]["name"], "New Conversation");
    let second = d["record"]["imageId"].as_str().unwrap().to_string();

    let d = wire(&vm, "image_get_request", json!({"imageId": image_id})).await;
    assert_eq!(d["record"], record.clone());
    assert_eq!(d["__subscriptions"], json!([session_id]));
    let d = wire(&vm, "image_get_request", json!({"imageId":"img_missing"})).await;
    assert_eq!(d, json!({"record":null}));

    let d = wire(&vm, "image_list_request", json!({"containerId":"c1"})).await;
    assert_eq!(keys(&d), ["__subscriptions", "records"]);
    let ids: Vec<&str> = d["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["imageId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [image_id.as_str(), second.as_str()]);
    assert_eq!(d["__subscriptions"].as_array().unwrap().len(), 2);
    let d = wire(&vm, "image_list_request", json!({})).await;
    assert_eq!(d["records"].as_array().unwrap().len(), 2);

    let d = wire(
        &vm,
        "image_update_request",
        json!({"imageId": image_id, "updates":{"name":"Renamed"}}),
    )
    .await;
    assert_eq!(keys(&d), ["record"]);
    assert_eq!(d["record"]["name"], "Renamed");
    assert_eq!(d["record"]["description"], "d");
    assert!(d["record"]["updatedAt"].as_i64().unwrap() > record["createdAt"].as_i64().unwrap());

    let d = wire(&vm, "image_run_request", json!({"imageId": image_id})).await;
    assert_eq!(keys(&d), ["agentId", "imageId", "reused"]);
    assert_eq!(d["reused"], false);
    let agent_id = d["agentId"].as_str().unwrap().to_string();
    assert!(agent_id.starts_with("agent_"));
    let d = wire(&vm, "image_run_request", json!({"imageId": image_id})).await;
    assert_eq!(
        d,
        json!({"imageId": image_id, "agentId": agent_id, "reused": true})
    );
    let d = wire(&vm, "image_get_request", json!({"imageId": image_id})).await;
    assert_eq!(d["record"]["online"], true);
    assert_eq!(d["record"]["agentId"], agent_id);

    let d = wire(&vm, "image_stop_request", json!({"imageId": image_id})).await;
    assert_eq!(d, json!({"imageId": image_id}));
    let d = wire(&vm, "image_get_request", json!({"imageId": image_id})).await;
    assert_eq!(d["record"]["online"], false);
    assert!(d["record"].get("agentId").is_none());

    let d = wire(&vm, "image_messages_request", json!({"imageId": image_id})).await;
    assert_eq!(
        d,
        json!({"imageId": image_id, "messages": [], "hasMore": false})
    );

    let d = wire(&vm, "image_delete_request", json!({"imageId": image_id})).await;
    assert_eq!(d, json!({"imageId": image_id}));
    let d = wire(&vm, "image_get_request", json!({"imageId": image_id})).await;
    assert_eq!(d["record"], Value::Null);
    // Unknown id is not an error.
    let d = wire(&vm, "image_delete_request", json!({"imageId": image_id})).await;
    assert_eq!(d, json!({"imageId": image_id}));
    // Its session and messages are gone.
    let d = wire(&vm, "session_get_request", json!({"sessionId": session_id})).await;
    assert_eq!(d, json!({"session": null}));
}

#[tokio::test]
async fn message_and_agent_commands() {
    let vm = mock_vm().await;
    let created = wire(
        &vm,
        "image_create_request",
        json!({"containerId":"c1","config":{}}),
    )
    .await;
    let image_id = created["record"]["imageId"].as_str().unwrap().to_string();
    let session_id = created["record"]["sessionId"].as_str().unwrap().to_string();
    let mut sub = vm.sessions().events(&session_id).await.unwrap();

    let d = wire(
        &vm,
        "message_send_request",
        json!({"imageId": image_id, "content":"Hello!"}),
    )
    .await;
    assert_eq!(keys(&d), ["agentId", "imageId", "messageId", "sessionId"]);
    assert_eq!(d["imageId"], image_id);
    assert_eq!(d["sessionId"], session_id);
    let agent_id = d["agentId"].as_str().unwrap().to_string();
    collect_turn(&mut sub).await;

    // By agentId, with content parts.
    let d = wire(
        &vm,
        "message_send_request",
        json!({"agentId": agent_id, "content":[{"type":"text","text":"parts"}]}),
    )
    .await;
    assert_eq!(d["agentId"], agent_id);
    collect_turn(&mut sub).await;

    let d = wire(&vm, "image_messages_request", json!({"imageId": image_id})).await;
    let messages = d["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 4);
    assert_eq!(
        keys(&messages[0]),
        ["content", "id", "role", "subtype", "timestamp"]
    );
    assert_eq!(messages[0]["role"], "user");
    assert_eq!(messages[0]["subtype"], "user");
    assert_eq!(messages[0]["content"], "Hello!");
    assert_eq!(messages[1]["role"], "assistant");
    assert_eq!(messages[1]["subtype"], "assistant");
    assert_eq!(messages[1]["content"], "Hello from mock!");
    assert_eq!(
        messages[2]["content"],
        json!([{"type":"text","text":"parts"}])
    );

    let d = wire(&vm, "agent_get_request", json!({"agentId": agent_id})).await;
    assert_eq!(
        d,
        json!({"agentId": agent_id, "containerId":"c1", "exists": true})
    );
    let d = wire(&vm, "agent_get_request", json!({"agentId": "agent_nope"})).await;
    assert_eq!(d, json!({"exists": false}));

    let d = wire(&vm, "agent_list_request", json!({"containerId":"c1"})).await;
    assert_eq!(
        d,
        json!({"agents":[{"agentId": agent_id, "containerId":"c1", "imageId": image_id, "sessionId": session_id}]})
    );

    let d = wire(&vm, "agent_interrupt_request", json!({"agentId": agent_id})).await;
    assert_eq!(d, json!({"imageId": image_id, "agentId": agent_id}));
    let d = wire(&vm, "agent_interrupt_request", json!({"imageId": image_id})).await;
    assert_eq!(d, json!({"imageId": image_id, "agentId": agent_id}));

    let d = wire(&vm, "agent_destroy_request", json!({"agentId": agent_id})).await;
    assert_eq!(d, json!({"agentId": agent_id, "success": true}));
    let d = wire(&vm, "agent_destroy_request", json!({"agentId": agent_id})).await;
    assert_eq!(d, json!({"agentId": agent_id, "success": false}));
    // Offline image: interrupt is a success without agentId.
    let d = wire(&vm, "agent_interrupt_request", json!({"imageId": image_id})).await;
    assert_eq!(d, json!({"imageId": image_id}));

    wire(&vm, "image_run_request", json!({"imageId": image_id})).await;
    let d = wire(
        &vm,
        "agent_destroy_all_request",
        json!({"containerId":"c1"}),
    )
    .await;
    assert_eq!(d, json!({"containerId":"c1"}));
    let d = wire(&vm, "agent_list_request", json!({"containerId":"c1"})).await;
    assert_eq!(d, json!({"agents":[]}));
}

#[tokio::test]
async fn definition_commands_and_image_build() {
    let vm = mock_vm().await;
    let d = wire(
        &vm,
        "definition_register_request",
        json!({"definition":{"name":"coder","description":"writes code","systemPrompt":"You code.","tools":["bash"]}}),
    )
    .await;
    assert_eq!(d, json!({"name":"coder","replaced":false}));
    let d = wire(&vm, "definition_list_request", json!({})).await;
    assert_eq!(
        d,
        json!({"definitions":[{"name":"coder","description":"writes code","systemPrompt":"You code.","tools":["bash"]}]})
    );
    let d = wire(&vm, "definition_get_request", json!({"name":"coder"})).await;
    assert_eq!(d["definition"]["systemPrompt"], "You code.");
    let d = wire(&vm, "definition_get_request", json!({"name":"nope"})).await;
    assert_eq!(d, json!({"definition": null}));

    let d = wire(
        &vm,
        "image_build_request",
        json!({"containerId":"c1","definitionName":"coder","config":{"description":"mine"}}),
    )
    .await;
    assert_eq!(d["record"]["name"], "coder");
    assert_eq!(d["record"]["definitionName"], "coder");
    assert_eq!(d["record"]["systemPrompt"], "You code.");
    assert_eq!(d["record"]["description"], "mine");
    assert_eq!(d["__subscriptions"].as_array().unwrap().len(), 1);

    // A definition named in image_create's config.
    let d = wire(
        &vm,
        "image_create_request",
        json!({"containerId":"c1","config":{"definition":"coder"}}),
    )
    .await;
    assert_eq!(d["record"]["systemPrompt"], "You code.");
    assert_eq!(d["record"]["definitionName"], "coder");

    let d = wire(
        &vm,
        "definition_register_request",
        json!({"definition":{"name":"coder","systemPrompt":"v2"}}),
    )
    .await;
    assert_eq!(d, json!({"name":"coder","replaced":true}));
}

#[tokio::test]
async fn session_commands() {
    let vm = mock_vm().await;
    let created = wire(
        &vm,
        "image_create_request",
        json!({"containerId":"c1","config":{}}),
    )
    .await;
    let image_id = created["record"]["imageId"].as_str().unwrap().to_string();
    let first = created["record"]["sessionId"].as_str().unwrap().to_string();

    let d = wire(
        &vm,
        "session_create_request",
        json!({"imageId": image_id, "title":"Second"}),
    )
    .await;
    assert_eq!(keys(&d), ["__subscriptions", "session"]);
    assert_eq!(
        keys(&d["session"]),
        [
            "containerId",
            "createdAt",
            "imageId",
            "sessionId",
            "title",
            "updatedAt"
        ]
    );
    let second = d["session"]["sessionId"].as_str().unwrap().to_string();
    assert_eq!(d["session"]["title"], "Second");
    assert_eq!(d["__subscriptions"], json!([second]));

    let d = wire(&vm, "session_list_request", json!({"imageId": image_id})).await;
    let ids: Vec<&str> = d["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sessionId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);

    let d = wire(&vm, "session_get_request", json!({"sessionId": second})).await;
    assert_eq!(d["session"]["imageId"], image_id);

    let d = wire(
        &vm,
        "session_update_request",
        json!({"sessionId": second, "title":"Renamed"}),
    )
    .await;
    assert_eq!(d["session"]["title"], "Renamed");
    let d = wire(
        &vm,
        "session_update_request",
        json!({"sessionId": second, "title": null}),
    )
    .await;
    assert!(d["session"].get("title").is_none());

    let mut sub = vm.sessions().events(&second).await.unwrap();
    let d = wire(&vm, "session_resume_request", json!({"sessionId": second})).await;
    assert_eq!(keys(&d), ["agentId", "imageId", "reused", "sessionId"]);
    assert_eq!(d["reused"], false);
    let d2 = wire(
        &vm,
        "message_send_request",
        json!({"sessionId": second, "content":"hi"}),
    )
    .await;
    assert_eq!(d2["agentId"], d["agentId"]);
    collect_turn(&mut sub).await;
    let d = wire(
        &vm,
        "session_messages_request",
        json!({"sessionId": second}),
    )
    .await;
    assert_eq!(d["messages"].as_array().unwrap().len(), 2);
    // The first session's history is separate.
    let d = wire(&vm, "image_messages_request", json!({"imageId": image_id})).await;
    assert_eq!(d["messages"], json!([]));

    let d = wire(&vm, "session_delete_request", json!({"sessionId": second})).await;
    assert_eq!(d, json!({"sessionId": second}));
    let d = wire(&vm, "session_get_request", json!({"sessionId": second})).await;
    assert_eq!(d, json!({"session": null}));
    // The first session of an image can only go with the image.
    let e = vm
        .request(Command::from_wire("session_delete_request", json!({"sessionId": first})).unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
}
