//! AgentX 1.9 wire fidelity: the frames a stock AgentX client sends get the answers AgentX's
//! own server gives — foreign tokens ignored with auth off, no `subscribe_response` unless
//! asked for, silence for a session that is gone, `message_persisted` after every stored
//! message, `session_destroyed` with its ids, agents registered by their container, and
//! error responses with AgentX's fallback fields.

use agentvm::MockDriver;
use agentvm_e2e::wire::{Frame, TestServer, WsClient};
use agentvm_server::{AuthMode, ServerConfig};
use serde_json::{json, Value};
use std::time::Duration;

/// Frames up to the first that `pred` accepts (backlog first), that one included.
async fn until(c: &mut WsClient, pred: impl Fn(&Frame) -> bool) -> Vec<Frame> {
    let mut out = Vec::new();
    loop {
        let f = tokio::time::timeout(Duration::from_secs(10), c.next_frame())
            .await
            .expect("the frame came");
        let done = pred(&f);
        out.push(f);
        if done {
            return out;
        }
    }
}

/// The answers (`subscribe_response`, `system_error`, any response) among what arrives within
/// `d`; global lifecycle events are not answers.
async fn answers_within(c: &mut WsClient, d: Duration) -> Vec<Value> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + d;
    while let Ok(Ok(Some(f))) = tokio::time::timeout_at(deadline, c.read_frame_within(d)).await {
        let t = f.type_name().to_string();
        if t == "subscribe_response" || t == "system_error" || t.ends_with("_response") {
            out.push(f.payload);
        }
    }
    out
}

async fn image(c: &mut WsClient, container: &str) -> (String, String) {
    let r = c
        .request(
            "image_create_request",
            json!({"containerId": container, "config": {}}),
        )
        .await;
    let record = &r["data"]["record"];
    (
        record["imageId"].as_str().unwrap().to_string(),
        record["sessionId"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn with_auth_off_foreign_tokens_are_ignored_and_agentvm_tokens_still_narrow() {
    let s = TestServer::start().await;
    // A deployment's own token in the header, as AgentX ignores it.
    let mut c = WsClient::try_connect(&s.ws_url(), Some("sk-proxy-1234"))
        .await
        .expect("a foreign bearer token is ignored with auth off");
    c.request("container_create_request", json!({"containerId": "a"}))
        .await;
    c.request("container_create_request", json!({"containerId": "b"}))
        .await;
    let r = c.request("container_list_request", json!({})).await;
    assert_eq!(r["data"]["containerIds"], json!(["a", "b"]));
    // And in the query.
    let mut q = WsClient::try_connect(&format!("{}?token=foreign", s.ws_url()), None)
        .await
        .expect("a foreign ?token= is ignored with auth off");
    let r = q.request("container_list_request", json!({})).await;
    assert_eq!(r["data"]["containerIds"], json!(["a", "b"]));
    // An agentvm token still narrows the scope.
    let (token, record) =
        agentvm::auth::create_token(&**s.vm.store(), Some(vec!["a".into()])).unwrap();
    let mut scoped = WsClient::try_connect(&s.ws_url(), Some(&token))
        .await
        .unwrap();
    let r = scoped.request("container_list_request", json!({})).await;
    assert_eq!(r["data"]["containerIds"], json!(["a"]));
    // A revoked agentvm token is still refused.
    assert!(s.vm.store().revoke_token(&record.id, 1).unwrap());
    match WsClient::try_connect(&s.ws_url(), Some(&token)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        Err(other) => panic!("{other:?}"),
        Ok(_) => panic!("a revoked token was accepted"),
    }
}

#[tokio::test]
async fn subscribe_is_answered_only_when_the_client_asks() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let (_, session) = image(&mut c, "c").await;
    c.clear_backlog();
    // As AgentX's client sends it: nothing comes back.
    c.send_text(&json!({"type": "subscribe", "sessionId": session}).to_string())
        .await;
    let answers = answers_within(&mut c, Duration::from_millis(500)).await;
    assert!(answers.is_empty(), "{answers:?}");
    // agentvm's extension: the cursor of the topic.
    c.send_text(
        &json!({"type": "subscribe", "sessionId": session, "__subscribeResponse": true})
            .to_string(),
    )
    .await;
    let f = c.next_frame().await;
    assert_eq!(f.type_name(), "subscribe_response");
    assert_eq!(f.payload["data"]["sessionId"], json!(session));
    assert!(
        f.payload["data"]["cursor"].as_str().is_some(),
        "{:?}",
        f.payload
    );
}

#[tokio::test]
async fn subscribing_to_a_session_that_is_gone_is_accepted_silently() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let (image_id, session) = image(&mut c, "c").await;
    c.request("image_delete_request", json!({"imageId": image_id}))
        .await;
    c.clear_backlog();
    // What a stock client re-sends after it reconnects.
    c.send_text(&json!({"type": "subscribe", "sessionId": session}).to_string())
        .await;
    let answers = answers_within(&mut c, Duration::from_millis(500)).await;
    assert!(answers.is_empty(), "{answers:?}");
    // The connection is fine.
    let r = c.request("container_list_request", json!({})).await;
    assert_eq!(r["data"]["containerIds"], json!(["c"]));
    // A client that asks hears why.
    c.send_text(
        &json!({"type": "subscribe", "sessionId": session, "__subscribeResponse": true})
            .to_string(),
    )
    .await;
    let f = c.next_frame().await;
    assert_eq!(f.type_name(), "system_error");
    assert_eq!(
        f.payload["data"]["message"],
        format!("Session not found: {session}")
    );
    // Which subscribe it answers (a client may have several in flight).
    assert_eq!(f.payload["data"]["details"]["sessionId"], json!(session));
    assert_eq!(f.payload["data"]["details"]["kind"], "not_found");
}

#[tokio::test]
async fn with_auth_on_unknown_and_forbidden_sessions_look_the_same() {
    let s = TestServer::start_with(
        ServerConfig {
            auth: AuthMode::Required,
            ..Default::default()
        },
        MockDriver::default(),
    )
    .await;
    let (all, _) = agentvm::auth::create_token(&**s.vm.store(), None).unwrap();
    let (only_a, _) = agentvm::auth::create_token(&**s.vm.store(), Some(vec!["a".into()])).unwrap();
    let mut admin = WsClient::try_connect(&s.ws_url(), Some(&all))
        .await
        .unwrap();
    let (_, session_b) = image(&mut admin, "b").await;
    let mut a = WsClient::try_connect(&s.ws_url(), Some(&only_a))
        .await
        .unwrap();
    let unknown = "sess_does_not_exist";
    for sid in [session_b.as_str(), unknown] {
        a.send_text(&json!({"type": "subscribe", "sessionId": sid}).to_string())
            .await;
        let answers = answers_within(&mut a, Duration::from_millis(300)).await;
        assert!(answers.is_empty(), "{sid}: {answers:?}");
    }
    let mut answers = Vec::new();
    for sid in [session_b.as_str(), unknown] {
        a.send_text(
            &json!({"type": "subscribe", "sessionId": sid, "__subscribeResponse": true})
                .to_string(),
        )
        .await;
        let f = a.next_frame().await;
        assert_eq!(f.type_name(), "system_error");
        let mut data = f.payload["data"].clone();
        let message = data["message"].as_str().unwrap().replace(sid, "<id>");
        data["message"] = json!(message);
        assert_eq!(data["details"]["sessionId"], json!(sid));
        data["details"]["sessionId"] = json!("<id>");
        answers.push(data);
    }
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0]["message"], "Session not found: <id>");
}

#[tokio::test]
async fn every_stored_message_is_followed_by_message_persisted() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let (image_id, session) = image(&mut c, "c").await;
    c.send_text(&json!({"type": "subscribe", "sessionId": session}).to_string())
        .await;
    let id = c
        .send_request(
            "message_send_request",
            json!({"imageId": image_id, "content": "Hello!"}),
        )
        .await;
    let frames = until(&mut c, |f| f.type_name() == "conversation_end").await;
    let response = frames
        .iter()
        .position(|f| f.type_name() == "message_send_response")
        .expect("the response");
    assert_eq!(frames[response].payload["data"]["requestId"], id);
    let user_msg = frames[response].payload["data"]["messageId"].clone();
    // The user message's notice right after the response.
    let notice = &frames[response + 1];
    assert_eq!(notice.type_name(), "message_persisted");
    assert_eq!(notice.payload["data"]["messageId"], user_msg);
    // The assistant message's right after it.
    let assistant = frames
        .iter()
        .position(|f| f.type_name() == "assistant_message")
        .expect("the reply");
    let notice = &frames[assistant + 1];
    assert_eq!(notice.type_name(), "message_persisted");
    let p = &notice.payload;
    assert_eq!(
        (&p["source"], &p["category"], &p["intent"]),
        (&json!("session"), &json!("persist"), &json!("result"))
    );
    assert_eq!(p["data"]["sessionId"], json!(session));
    assert_eq!(
        p["data"]["messageId"],
        frames[assistant].payload["data"]["id"]
    );
    assert!(p["data"]["savedAt"].as_i64().is_some(), "{p}");
    assert_eq!(p["context"]["sessionId"], json!(session));
    assert_eq!(p["context"]["imageId"], json!(image_id));
    assert_eq!(p["context"]["containerId"], json!("c"));
    // Exactly two: the user's and the assistant's.
    assert_eq!(
        frames
            .iter()
            .filter(|f| f.type_name() == "message_persisted")
            .count(),
        2
    );
}

#[tokio::test]
async fn session_destroyed_carries_its_context_and_agent() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let (image_id, session) = image(&mut c, "c").await;
    let r = c
        .request("image_run_request", json!({"imageId": image_id}))
        .await;
    let agent = r["data"]["agentId"].clone();
    assert!(agent.as_str().is_some(), "{r}");
    c.clear_backlog();
    c.request("image_delete_request", json!({"imageId": image_id}))
        .await;
    let f = until(&mut c, |f| f.type_name() == "session_destroyed")
        .await
        .pop()
        .unwrap();
    let p = &f.payload;
    assert_eq!(
        (&p["source"], &p["category"]),
        (&json!("session"), &json!("lifecycle"))
    );
    assert_eq!(p["data"]["sessionId"], json!(session));
    assert_eq!(p["data"]["agentId"], agent);
    assert_eq!(p["data"]["containerId"], json!("c"));
    assert_eq!(
        p["context"],
        json!({"containerId": "c", "imageId": image_id, "agentId": agent, "sessionId": session})
    );
    // On `global`: no cursor of a topic that is gone.
    assert!(f.cursor.is_none());
}

#[tokio::test]
async fn agents_are_registered_and_unregistered_by_their_container() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let (image_id, _) = image(&mut c, "c").await;
    c.clear_backlog();
    c.request("image_run_request", json!({"imageId": image_id}))
        .await;
    let f = until(&mut c, |f| f.type_name() == "agent_registered")
        .await
        .pop()
        .unwrap();
    assert_eq!(f.payload["source"], "container");
    assert_eq!(f.payload["category"], "lifecycle");
    c.request("image_stop_request", json!({"imageId": image_id}))
        .await;
    let f = until(&mut c, |f| f.type_name() == "agent_unregistered")
        .await
        .pop()
        .unwrap();
    assert_eq!(f.payload["source"], "container");
}

#[tokio::test]
async fn error_responses_carry_agentx_fallback_fields() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let cases: [(&str, Value, Value); 4] = [
        (
            "image_run_request",
            json!({"imageId": "img_missing"}),
            json!({"imageId": "img_missing", "agentId": "", "reused": false}),
        ),
        (
            "image_messages_request",
            json!({"imageId": "img_missing"}),
            json!({"imageId": "img_missing", "messages": []}),
        ),
        (
            "message_send_request",
            json!({"content": "hi"}),
            json!({"agentId": ""}),
        ),
        (
            "message_send_request",
            json!({"imageId": "img_missing", "content": "hi"}),
            json!({"imageId": "img_missing", "agentId": ""}),
        ),
    ];
    for (t, data, fallback) in cases {
        let r = c.request(t, data).await;
        let d = &r["data"];
        assert!(d["error"].as_str().is_some(), "{t}: {r}");
        for (k, v) in fallback.as_object().unwrap() {
            assert_eq!(&d[k], v, "{t}: {k} in {r}");
        }
    }
    // A frame that does not decode still gets the fields of its type.
    let r = c
        .request("image_list_request", json!({"containerId": 42}))
        .await;
    assert!(r["data"]["error"].as_str().is_some(), "{r}");
    assert_eq!(r["data"]["records"], json!([]));
}
