//! agentvm-server's Channel against real WebSocket clients on a port-0 listener: the seed's
//! acceptance list, the AgentX client's behaviour, every command over the wire, bad input.

use agentvm::MockDriver;
use agentvm_e2e::wire::{http, Frame, TestServer, WsClient};
use agentvm_server::ServerConfig;
use serde_json::{json, Value};
use std::time::Duration;

fn types(frames: &[Frame]) -> Vec<&str> {
    frames.iter().map(Frame::type_name).collect()
}

fn keys(v: &Value) -> Vec<&str> {
    let mut k: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    k.sort();
    k
}

#[tokio::test]
async fn acceptance_serve_health_connect_create_send_stream() {
    let s = TestServer::start().await;
    // /health answers.
    let (status, body) = http(s.addr, "GET", "/health", &[], None).await;
    assert_eq!(status, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        json!({"status":"ok","version": env!("CARGO_PKG_VERSION")})
    );

    // A WebSocket client connects and creates a container.
    let mut c = WsClient::connect(&s.ws_url()).await;
    let r = c
        .request(
            "container_create_request",
            json!({"containerId":"user-alice"}),
        )
        .await;
    assert_eq!(r["type"], "container_create_response");
    assert_eq!(r["data"]["containerId"], "user-alice");
    assert_eq!(
        (
            r["source"].as_str(),
            r["category"].as_str(),
            r["intent"].as_str()
        ),
        (Some("command"), Some("response"), Some("result"))
    );
    assert!(r["timestamp"].is_i64());

    // It creates an image, subscribes to what __subscriptions lists, and sends a message.
    let r = c
        .request("image_create_request", json!({"containerId":"user-alice","config":{"name":"My Assistant","systemPrompt":"You are a helpful assistant."}}))
        .await;
    let record = r["data"]["record"].clone();
    let session = r["data"]["__subscriptions"][0]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(record["sessionId"], session);
    c.send_text(&json!({"type":"subscribe","sessionId": session}).to_string())
        .await;
    let id = c
        .send_request(
            "message_send_request",
            json!({"imageId": record["imageId"], "content":"Hello!"}),
        )
        .await;

    // The reply streams in docs/protocol.md's order, right after the response.
    let mut frames = Vec::new();
    loop {
        let f = c.next_frame().await;
        // Global lifecycle events (container_created, agent_registered) interleave freely.
        // `message_persisted` notices are checked in server_agentx_wire.
        if f.type_name() == "message_persisted" || f.payload["category"] == "lifecycle" {
            continue;
        }
        let end = f.type_name() == "conversation_end";
        frames.push(f);
        if end {
            break;
        }
    }
    assert_eq!(
        types(&frames),
        [
            "message_send_response",
            "message_start",
            "conversation_start",
            "text_delta",
            "conversation_responding",
            "message_stop",
            "assistant_message",
            "conversation_end"
        ]
    );
    assert_eq!(frames[0].payload["data"]["requestId"], id);
    assert_eq!(frames[3].payload["data"]["text"], "Hello from mock!");
    // Every frame is wrapped; session events carry increasing cursors.
    assert!(frames
        .iter()
        .all(|f| f.wrapped && f.msg_id.as_deref().unwrap().starts_with("conn_")));
    let cursors: Vec<u64> = frames[1..]
        .iter()
        .map(|f| f.cursor.expect("session events carry __cursor"))
        .collect();
    assert!(cursors.windows(2).all(|w| w[0] < w[1]));
    assert!(frames[0].cursor.is_none(), "responses carry no cursor");
    let ctx = &frames[1].payload["context"];
    assert_eq!(ctx["containerId"], "user-alice");
    assert_eq!(ctx["imageId"], record["imageId"]);
    assert_eq!(ctx["sessionId"], session);
    assert!(ctx["agentId"].as_str().unwrap().starts_with("agent_"));
    assert_eq!(frames[6].payload["data"]["content"], "Hello from mock!");
}

#[tokio::test]
async fn message_send_subscribes_the_sender_before_answering() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let r = c
        .request(
            "image_create_request",
            json!({"containerId":"c","config":{}}),
        )
        .await;
    let image = r["data"]["record"]["imageId"].as_str().unwrap().to_string();
    // No subscribe frame at all.
    c.request(
        "message_send_request",
        json!({"imageId": image, "content":"hi"}),
    )
    .await;
    let frames = c.frames_until("conversation_end").await;
    assert!(types(&frames).contains(&"text_delta"));
}

#[tokio::test]
async fn a_client_that_never_acks_still_gets_everything() {
    let s = TestServer::start_with(
        ServerConfig::default(),
        MockDriver::new(agentvm::MockScenario::LongStream),
    )
    .await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    c.ack = false;
    let r = c
        .request(
            "image_create_request",
            json!({"containerId":"c","config":{}}),
        )
        .await;
    let image = r["data"]["record"]["imageId"].as_str().unwrap().to_string();
    c.request(
        "message_send_request",
        json!({"imageId": image, "content":"hi"}),
    )
    .await;
    let frames = c.frames_until("conversation_end").await;
    let deltas: Vec<&str> = frames
        .iter()
        .filter(|f| f.type_name() == "text_delta")
        .map(|f| f.payload["data"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(deltas.len(), 100);
    assert_eq!(
        deltas.concat(),
        (0..100).map(|i| format!("chunk{i} ")).collect::<String>()
    );
}

#[tokio::test]
async fn wrapped_client_frames_are_acknowledged_and_unwrapped_ones_tolerated() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let inner = json!({"type":"container_list_request","data":{"requestId":"r1"}}).to_string();
    c.send_text(&json!({"__msgId":"client_1","__payload": inner}).to_string())
        .await;
    let mut got_ack = false;
    let mut got_response = false;
    while !(got_ack && got_response) {
        let f = c.next_frame().await;
        if f.payload.get("__ack") == Some(&json!("client_1")) {
            got_ack = true;
        } else if f.type_name() == "container_list_response" {
            assert_eq!(f.payload["data"]["requestId"], "r1");
            got_response = true;
        }
    }
    // Unwrapped requests (the common case) work, and acks of unknown ids are harmless.
    c.send_text(r#"{"__ack":"conn_999_999"}"#).await;
    let r = c.request("container_list_request", json!({})).await;
    assert_eq!(r["data"]["containerIds"], json!([]));
}

#[tokio::test]
async fn subscribe_after_a_cursor_replays_what_was_missed() {
    let s = TestServer::start_with(
        ServerConfig::default(),
        MockDriver::new(agentvm::MockScenario::MultiDelta),
    )
    .await;
    let mut a = WsClient::connect(&s.ws_url()).await;
    let r = a
        .request(
            "image_create_request",
            json!({"containerId":"c","config":{}}),
        )
        .await;
    let image = r["data"]["record"]["imageId"].as_str().unwrap().to_string();
    let session = r["data"]["record"]["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    a.request(
        "message_send_request",
        json!({"imageId": image, "content":"one"}),
    )
    .await;
    let first: Vec<_> = a
        .frames_until("conversation_end")
        .await
        .into_iter()
        .filter(|f| f.type_name() != "message_persisted")
        .collect();
    let cut = first[3].cursor.unwrap(); // after the first delta
                                        // Another client resumes from that cursor: it gets the rest of the turn, in order, once.
    let mut b = WsClient::connect(&s.ws_url()).await;
    b.send_text(
        &json!({"type":"subscribe","sessionId": session,"afterCursor": cut.to_string()})
            .to_string(),
    )
    .await;
    let mut replayed = Vec::new();
    loop {
        let f = b.next_frame().await;
        if f.type_name() == "message_persisted" {
            continue;
        }
        let end = f.type_name() == "conversation_end";
        replayed.push(f);
        if end {
            break;
        }
    }
    let expected: Vec<u64> = first
        .iter()
        .filter_map(|f| f.cursor)
        .filter(|c| *c > cut)
        .collect();
    assert_eq!(
        replayed
            .iter()
            .map(|f| f.cursor.unwrap())
            .collect::<Vec<_>>(),
        expected
    );
    assert!(
        b.silent_for(Duration::from_millis(200)).await,
        "no duplicates follow"
    );
}

#[tokio::test]
async fn every_command_over_the_wire_with_protocol_field_names() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let d = c
        .request("container_create_request", json!({"containerId":"c1"}))
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["containerId", "requestId"]);
    let d = c
        .request("container_get_request", json!({"containerId":"c1"}))
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["containerId", "exists", "requestId"]);
    let d = c.request("container_list_request", json!({})).await["data"].clone();
    assert_eq!(d["containerIds"], json!(["c1"]));
    let d = c
        .request(
            "image_create_request",
            json!({"containerId":"c1","config":{"name":"n"}}),
        )
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["__subscriptions", "record", "requestId"]);
    assert_eq!(
        keys(&d["record"]),
        [
            "containerId",
            "createdAt",
            "imageId",
            "name",
            "online",
            "sessionId",
            "updatedAt"
        ]
    );
    let image = d["record"]["imageId"].as_str().unwrap().to_string();
    let session = d["record"]["sessionId"].as_str().unwrap().to_string();
    let d = c
        .request("image_get_request", json!({"imageId": image}))
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["__subscriptions", "record", "requestId"]);
    let d = c
        .request("image_get_request", json!({"imageId": "img_none"}))
        .await["data"]
        .clone();
    assert_eq!(d["record"], Value::Null);
    assert!(d.get("error").is_none());
    let d = c
        .request("image_list_request", json!({"containerId":"c1"}))
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["__subscriptions", "records", "requestId"]);
    let d = c.request("image_list_request", json!({})).await["data"].clone();
    assert_eq!(d["records"].as_array().unwrap().len(), 1);
    let d = c
        .request(
            "image_update_request",
            json!({"imageId": image, "updates":{"name":"m","description":"x"}}),
        )
        .await["data"]
        .clone();
    assert_eq!(d["record"]["name"], "m");
    let d = c
        .request("image_run_request", json!({"imageId": image}))
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["agentId", "imageId", "requestId", "reused"]);
    let agent = d["agentId"].as_str().unwrap().to_string();
    let d = c
        .request("agent_get_request", json!({"agentId": agent}))
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["agentId", "containerId", "exists", "requestId"]);
    let d = c
        .request("agent_list_request", json!({"containerId":"c1"}))
        .await["data"]
        .clone();
    assert_eq!(
        keys(&d["agents"][0]),
        ["agentId", "containerId", "imageId", "sessionId"]
    );
    let d = c
        .request(
            "message_send_request",
            json!({"agentId": agent, "content":"hi"}),
        )
        .await["data"]
        .clone();
    assert_eq!(
        keys(&d),
        ["agentId", "imageId", "messageId", "requestId", "sessionId"]
    );
    c.frames_until("conversation_end").await;
    let d = c
        .request("image_messages_request", json!({"imageId": image}))
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["hasMore", "imageId", "messages", "requestId"]);
    assert_eq!(d["messages"].as_array().unwrap().len(), 2);
    let d = c
        .request("agent_interrupt_request", json!({"imageId": image}))
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["agentId", "imageId", "requestId"]);
    let d = c
        .request("image_stop_request", json!({"imageId": image}))
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["imageId", "requestId"]);
    let d = c
        .request("agent_destroy_request", json!({"agentId": agent}))
        .await["data"]
        .clone();
    assert_eq!(d["success"], false);
    let d = c
        .request("agent_destroy_all_request", json!({"containerId":"c1"}))
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["containerId", "requestId"]);
    let d = c
        .request(
            "definition_register_request",
            json!({"definition":{"name":"coder","systemPrompt":"p"}}),
        )
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["name", "replaced", "requestId"]);
    let d = c.request("definition_list_request", json!({})).await["data"].clone();
    assert_eq!(d["definitions"][0]["name"], "coder");
    let d = c
        .request("definition_get_request", json!({"name":"coder"}))
        .await["data"]
        .clone();
    assert_eq!(d["definition"]["systemPrompt"], "p");
    let d = c
        .request(
            "image_build_request",
            json!({"containerId":"c1","definitionName":"coder"}),
        )
        .await["data"]
        .clone();
    assert_eq!(d["record"]["definitionName"], "coder");
    let d = c
        .request(
            "session_create_request",
            json!({"imageId": image,"title":"t"}),
        )
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["__subscriptions", "requestId", "session"]);
    let s2 = d["session"]["sessionId"].as_str().unwrap().to_string();
    let d = c
        .request("session_list_request", json!({"imageId": image}))
        .await["data"]
        .clone();
    assert_eq!(d["sessions"].as_array().unwrap().len(), 2);
    let d = c
        .request("session_get_request", json!({"sessionId": s2}))
        .await["data"]
        .clone();
    assert_eq!(d["session"]["title"], "t");
    let d = c
        .request(
            "session_update_request",
            json!({"sessionId": s2, "title":"u"}),
        )
        .await["data"]
        .clone();
    assert_eq!(d["session"]["title"], "u");
    let d = c
        .request("session_resume_request", json!({"sessionId": s2}))
        .await["data"]
        .clone();
    assert_eq!(
        keys(&d),
        ["agentId", "imageId", "requestId", "reused", "sessionId"]
    );
    let d = c
        .request("session_messages_request", json!({"sessionId": session}))
        .await["data"]
        .clone();
    assert_eq!(d["messages"].as_array().unwrap().len(), 2);
    let d = c
        .request("session_delete_request", json!({"sessionId": s2}))
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["requestId", "sessionId"]);
    let d = c
        .request("image_delete_request", json!({"imageId": image}))
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["imageId", "requestId"]);
    let d = c
        .request("container_delete_request", json!({"containerId":"c1"}))
        .await["data"]
        .clone();
    assert_eq!(keys(&d), ["containerId", "deleted", "requestId"]);
    assert_eq!(d["deleted"], true);
}

#[tokio::test]
async fn errors_come_as_system_error_then_the_response_with_data_error() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let id = c
        .send_request("message_send_request", json!({"content":"hi"}))
        .await;
    let f = c.next_frame().await;
    assert_eq!(f.type_name(), "system_error");
    assert_eq!(f.payload["category"], "error");
    assert_eq!(f.payload["data"]["requestId"], id);
    assert_eq!(f.payload["data"]["severity"], "error");
    assert_eq!(
        f.payload["data"]["message"],
        "Either imageId or agentId must be provided"
    );
    let f = c.next_frame().await;
    assert_eq!(f.type_name(), "message_send_response");
    assert_eq!(
        f.payload["data"],
        // AgentX's fallback: the agentId string it promises, empty.
        json!({"requestId": id, "error": "Either imageId or agentId must be provided", "errorKind": "invalid_input", "agentId": ""})
    );
    let r = c
        .request(
            "message_send_request",
            json!({"imageId":"img_x","content":"hi"}),
        )
        .await;
    assert_eq!(r["data"]["error"], "Image not found: img_x");
}

async fn expect_refusal(c: &mut WsClient, needle: &str) {
    let f = c.next_frame().await;
    assert_eq!(f.type_name(), "system_error", "{:?}", f.payload);
    let msg = f.payload["data"]["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{msg:?} should contain {needle:?}");
}

#[tokio::test]
async fn bad_input_gets_the_documented_error_and_the_connection_stays_usable() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let mut other = WsClient::connect(&s.ws_url()).await;

    c.send_text("this is not json").await;
    expect_refusal(&mut c, "frame is not valid JSON").await;
    c.send_text(r#"{"data":{"requestId":"r1"}}"#).await;
    expect_refusal(&mut c, "frame has no \"type\"").await;
    c.send_text(r#"[1,2,3]"#).await;
    expect_refusal(&mut c, "not a JSON object").await;

    // Unknown type with a requestId: system_error, then an error response.
    c.send_text(r#"{"type":"launch_missiles_request","data":{"requestId":"r2"}}"#)
        .await;
    expect_refusal(&mut c, "Unknown request type: launch_missiles_request").await;
    let f = c.next_frame().await;
    assert_eq!(f.type_name(), "launch_missiles_response");
    assert_eq!(f.payload["data"]["requestId"], "r2");
    assert_eq!(f.payload["data"]["errorKind"], "invalid_input");
    // An unknown non-request frame is refused and never echoed to anyone.
    c.send_text(r#"{"type":"text_delta","data":{"text":"spoof"}}"#)
        .await;
    expect_refusal(&mut c, "Unknown frame type: text_delta").await;

    // Missing and mistyped fields.
    let r = c.request("image_get_request", json!({})).await;
    assert!(r["data"]["error"]
        .as_str()
        .unwrap()
        .contains("missing field `imageId`"));
    c.clear_backlog();
    let r = c.request("image_get_request", json!({"imageId": 42})).await;
    assert!(r["data"]["error"]
        .as_str()
        .unwrap()
        .contains("invalid type"));
    c.clear_backlog();
    let r = c
        .request("container_create_request", json!({"containerId": ""}))
        .await;
    assert_eq!(r["data"]["error"], "containerId must not be empty");
    c.clear_backlog();

    // Binary frames.
    c.send_binary(vec![0, 1, 2]).await;
    expect_refusal(&mut c, "binary frames are not supported").await;

    // 1,000 garbage frames in a row: 1,000 refusals, then the connection still works.
    for i in 0..1000 {
        c.send_text(&format!("garbage {i} {{")).await;
    }
    for _ in 0..1000 {
        expect_refusal(&mut c, "not valid JSON").await;
    }
    // The other client saw none of it.
    assert!(other.silent_for(Duration::from_millis(200)).await);
    let r = c
        .request(
            "container_create_request",
            json!({"containerId":"still-works"}),
        )
        .await;
    assert_eq!(r["data"]["containerId"], "still-works");
    other.clear_backlog();
    let r = other.request("container_list_request", json!({})).await;
    assert_eq!(r["data"]["containerIds"], json!(["still-works"]));

    // Metrics counted the refusals.
    let (_, metrics) = http(s.addr, "GET", "/metrics", &[], None).await;
    let refused: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("agentvm_frames_refused_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused >= 1006, "{refused}");
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009_and_others_are_unaffected() {
    let config = ServerConfig {
        max_frame_bytes: 64 * 1024,
        ..Default::default()
    };
    let s = TestServer::start_with(config, MockDriver::default()).await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let mut other = WsClient::connect(&s.ws_url()).await;
    let big = json!({"type":"container_create_request","data":{"containerId":"x".repeat(100 * 1024),"requestId":"r"}}).to_string();
    c.send_text(&big).await;
    let f = c.next_frame().await;
    assert_eq!(f.type_name(), "__close");
    assert_eq!(f.payload["code"], 1009);
    assert!(f.payload["reason"]
        .as_str()
        .unwrap()
        .contains("larger than 65536"));
    let r = other.request("container_list_request", json!({})).await;
    assert_eq!(r["data"]["containerIds"], json!([]));
    // The server still accepts new connections.
    let mut again = WsClient::connect(&s.ws_url()).await;
    let r = again.request("container_list_request", json!({})).await;
    assert!(r["data"]["error"].is_null());
}

#[tokio::test]
async fn a_slow_consumer_is_resumed_from_its_cursor_without_loss() {
    let config = ServerConfig {
        send_queue: 8,
        ..Default::default()
    };
    let s =
        TestServer::start_with(config, MockDriver::new(agentvm::MockScenario::LongStream)).await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let r = c
        .request(
            "image_create_request",
            json!({"containerId":"c","config":{}}),
        )
        .await;
    let image = r["data"]["record"]["imageId"].as_str().unwrap().to_string();
    c.request(
        "message_send_request",
        json!({"imageId": image, "content":"hi"}),
    )
    .await;
    // Read slowly at first so the 8-event queue overflows.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frames = c.frames_until("conversation_end").await;
    let cursors: Vec<u64> = frames.iter().filter_map(|f| f.cursor).collect();
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates"
    );
    let deltas = frames
        .iter()
        .filter(|f| f.type_name() == "text_delta")
        .count();
    assert_eq!(deltas, 100);
    let (_, metrics) = http(s.addr, "GET", "/metrics", &[], None).await;
    assert!(
        !metrics.contains("agentvm_send_queue_overflows_total 0\n"),
        "the queue did overflow"
    );
}

#[tokio::test]
async fn rest_api_and_openapi_document() {
    let s = TestServer::start().await;
    let (st, body) = http(
        s.addr,
        "POST",
        "/v1/containers",
        &[],
        Some(r#"{"containerId":"rest"}"#),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let (st, body) = http(
        s.addr,
        "POST",
        "/v1/containers/rest/images",
        &[],
        Some(r#"{"config":{"name":"via rest"}}"#),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    let image = v["record"]["imageId"].as_str().unwrap().to_string();
    let (st, body) = http(s.addr, "GET", &format!("/v1/images/{image}"), &[], None).await;
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["record"]["name"],
        "via rest"
    );
    let (st, body) = http(s.addr, "GET", "/v1/images/img_nope", &[], None).await;
    assert_eq!(st, 404);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error":"Image not found: img_nope","kind":"not_found"})
    );
    let (st, _) = http(
        s.addr,
        "POST",
        &format!("/v1/images/{image}/messages"),
        &[],
        Some(r#"{"content":"hi"}"#),
    )
    .await;
    assert_eq!(st, 202);
    let (st, body) = http(s.addr, "POST", "/v1/containers", &[], Some("{not json")).await;
    assert_eq!(st, 400);
    assert!(body.contains("invalid JSON body"));
    let (st, body) = http(
        s.addr,
        "POST",
        "/v1/commands",
        &[],
        Some(r#"{"type":"container_list_request","data":{}}"#),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"containerIds":["rest"]})
    );
    let (st, body) = http(s.addr, "GET", "/v1/openapi.json", &[], None).await;
    assert_eq!(st, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/containers",
        "/v1/containers/{id}/images",
        "/v1/images/{id}/messages",
        "/v1/sessions/{id}",
        "/v1/commands",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} documented");
    }
    let (_, metrics) = http(s.addr, "GET", "/metrics", &[], None).await;
    assert!(
        metrics.contains("agentvm_requests_total{type=\"image_create\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("agentvm_request_duration_seconds_count"));
    assert!(metrics.contains("agentvm_agents_running 1"));
}

#[tokio::test]
async fn connection_hooks_see_requests_and_events_and_can_veto() {
    use agentvm_server::{ConnectionHandler, ConnectionInfo};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    #[derive(Default)]
    struct Audit {
        opened: AtomicUsize,
        requests: AtomicUsize,
        events: AtomicUsize,
        closed: AtomicUsize,
    }
    impl ConnectionHandler for Audit {
        fn on_open(&self, conn: &ConnectionInfo) -> agentvm::Result<()> {
            assert!(conn.id.starts_with("conn_"));
            self.opened.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
        fn on_request(
            &self,
            _conn: &ConnectionInfo,
            command: &agentvm::Command,
        ) -> agentvm::Result<()> {
            self.requests.fetch_add(1, Ordering::SeqCst);
            if command.type_name() == "container_delete_request" {
                return Err(agentvm::Error::Unauthorized(
                    "deleting containers is disabled here".into(),
                ));
            }
            Ok(())
        }
        fn on_event(&self, _conn: &ConnectionInfo, event: &agentvm::Event) -> bool {
            self.events.fetch_add(1, Ordering::SeqCst);
            event.type_name() != "conversation_responding"
        }
        fn on_close(&self, _conn: &ConnectionInfo) {
            self.closed.fetch_add(1, Ordering::SeqCst);
        }
    }

    let s = TestServer::start().await;
    let audit = Arc::new(Audit::default());
    s.server.on_connection(audit.clone());
    let mut c = WsClient::connect(&s.ws_url()).await;
    let r = c
        .request(
            "image_create_request",
            json!({"containerId":"c","config":{}}),
        )
        .await;
    let image = r["data"]["record"]["imageId"].as_str().unwrap().to_string();
    c.request(
        "message_send_request",
        json!({"imageId": image, "content":"hi"}),
    )
    .await;
    let frames = c.frames_until("conversation_end").await;
    assert!(
        !types(&frames).contains(&"conversation_responding"),
        "the hook dropped them"
    );
    let r = c
        .request("container_delete_request", json!({"containerId":"c"}))
        .await;
    assert_eq!(
        r["data"]["error"],
        "unauthorized: deleting containers is disabled here"
    );
    assert!(
        s.vm.store().get_container("c").unwrap().is_some(),
        "vetoed: nothing deleted"
    );
    c.close().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(audit.opened.load(Ordering::SeqCst), 1);
    assert_eq!(audit.requests.load(Ordering::SeqCst), 3);
    assert!(audit.events.load(Ordering::SeqCst) >= 7);
    assert_eq!(audit.closed.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn connection_limit_and_request_timeout() {
    let config = ServerConfig {
        max_connections: 2,
        request_timeout: Duration::ZERO,
        ..Default::default()
    };
    let s = TestServer::start_with(config, MockDriver::default()).await;
    let mut a = WsClient::connect(&s.ws_url()).await;
    let _b = WsClient::connect(&s.ws_url()).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    match WsClient::try_connect(&s.ws_url(), None).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            let body = String::from_utf8_lossy(resp.body().as_ref().unwrap()).to_string();
            assert!(body.contains("too many connections (limit 2)"), "{body}");
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a third connection was accepted"),
    }
    // A request that cannot finish within the (zero) timeout is answered, not left hanging.
    let r = a
        .request(
            "image_create_request",
            json!({"containerId":"c","config":{}}),
        )
        .await;
    let error = r["data"]["error"].as_str().unwrap();
    assert!(
        error.contains("image_create_request timed out after 0 ms"),
        "{error}"
    );
    assert_eq!(r["data"]["errorKind"], "unavailable");
}
