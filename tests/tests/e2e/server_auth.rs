//! Authentication and tenant isolation on the wire: missing, wrong, out-of-scope and revoked
//! tokens are refused clearly; no response or event of container A reaches a client of B.

use agentvm::MockDriver;
use agentvm_e2e::wire::{http, TestServer, WsClient};
use agentvm_server::{AuthMode, ServerConfig};
use serde_json::{json, Value};
use std::time::Duration;

async fn auth_server() -> TestServer {
    TestServer::start_with(
        ServerConfig {
            auth: AuthMode::Required,
            ..Default::default()
        },
        MockDriver::default(),
    )
    .await
}

fn token(s: &TestServer, containers: Option<Vec<&str>>) -> (String, String) {
    let (t, rec) = agentvm::auth::create_token(
        &**s.vm.store(),
        containers.map(|c| c.into_iter().map(String::from).collect()),
    )
    .unwrap();
    (t, rec.id)
}

#[tokio::test]
async fn missing_wrong_and_revoked_tokens_are_refused() {
    let s = auth_server().await;
    // Wrong token in the header: HTTP 401 with a JSON error.
    let e = WsClient::try_connect(&s.ws_url(), Some("avm_wrong"))
        .await
        .err()
        .expect("refused");
    match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 401);
            let body: Value = serde_json::from_slice(resp.body().as_ref().unwrap()).unwrap();
            assert_eq!(
                body,
                json!({"error":"unauthorized: invalid token","kind":"unauthorized"})
            );
        }
        other => panic!("{other:?}"),
    }

    // No token: the upgrade succeeds but the first frame must be auth; anything else closes 1008.
    let mut c = WsClient::connect(&s.ws_url()).await;
    c.send_text(&json!({"type":"container_list_request","data":{"requestId":"r"}}).to_string())
        .await;
    let f = c.next_frame().await;
    assert_eq!(f.type_name(), "system_error");
    assert!(f.payload["data"]["message"]
        .as_str()
        .unwrap()
        .contains("authentication required"));
    let f = c.next_frame().await;
    assert_eq!(f.type_name(), "__close");
    assert_eq!(f.payload["code"], 1008);

    // The browser client's auth frame works.
    let (t, id) = token(&s, None);
    let mut c = WsClient::connect(&s.ws_url()).await;
    c.send_text(
        &json!({"type":"auth","headers":{"Authorization": format!("Bearer {t}")}}).to_string(),
    )
    .await;
    let r = c.request("container_list_request", json!({})).await;
    assert_eq!(r["data"]["containerIds"], json!([]));
    // ?token= works.
    let mut q = WsClient::connect(&format!("{}?token={t}", s.ws_url())).await;
    let r = q.request("container_list_request", json!({})).await;
    assert!(r["data"]["error"].is_null());

    // Revoked: refused at the next connection.
    assert!(s.vm.store().revoke_token(&id, 1).unwrap());
    let e = WsClient::try_connect(&s.ws_url(), Some(&t))
        .await
        .err()
        .expect("refused");
    match e {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 401);
            let body = String::from_utf8_lossy(resp.body().as_ref().unwrap()).to_string();
            assert!(body.contains("revoked"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    // REST too.
    let (st, body) = http(s.addr, "GET", "/v1/containers", &[], None).await;
    assert_eq!(st, 401);
    assert!(body.contains("authentication required"));
    let (st, _) = http(
        s.addr,
        "GET",
        "/v1/containers",
        &[("Authorization", &format!("Bearer {t}"))],
        None,
    )
    .await;
    assert_eq!(st, 401);
    // /health needs no token.
    assert_eq!(http(s.addr, "GET", "/health", &[], None).await.0, 200);
}

#[tokio::test]
async fn out_of_scope_requests_are_refused_and_tenants_never_see_each_other() {
    let s = auth_server().await;
    let (ta, _) = token(&s, Some(vec!["tenant-a"]));
    let (tb, _) = token(&s, Some(vec!["tenant-b"]));
    let mut a = WsClient::try_connect(&s.ws_url(), Some(&ta)).await.unwrap();
    let mut b = WsClient::try_connect(&s.ws_url(), Some(&tb)).await.unwrap();

    let r = a
        .request(
            "container_create_request",
            json!({"containerId":"tenant-b"}),
        )
        .await;
    assert_eq!(r["data"]["errorKind"], "unauthorized");
    assert!(r["data"]["error"]
        .as_str()
        .unwrap()
        .contains("outside this connection's scope"));
    a.clear_backlog();

    let ra = a
        .request(
            "image_create_request",
            json!({"containerId":"tenant-a","config":{}}),
        )
        .await;
    let rb = b
        .request(
            "image_create_request",
            json!({"containerId":"tenant-b","config":{}}),
        )
        .await;
    let image_b = rb["data"]["record"]["imageId"]
        .as_str()
        .unwrap()
        .to_string();
    let session_b = rb["data"]["record"]["sessionId"]
        .as_str()
        .unwrap()
        .to_string();
    a.clear_backlog();

    // A cannot see or touch B's records by id.
    let r = a
        .request("image_get_request", json!({"imageId": image_b}))
        .await;
    assert_eq!(r["data"]["record"], Value::Null);
    let r = a
        .request(
            "message_send_request",
            json!({"imageId": image_b, "content":"hi"}),
        )
        .await;
    assert_eq!(r["data"]["error"], format!("Image not found: {image_b}"));
    a.clear_backlog();
    a.send_text(
        &json!({"type":"subscribe","sessionId": session_b, "afterCursor":"0","__subscribeResponse": true})
            .to_string(),
    )
    .await;
    let f = a.next_frame().await;
    assert_eq!(f.type_name(), "system_error");
    assert_eq!(
        f.payload["data"]["message"],
        format!("Session not found: {session_b}")
    );
    let r = a.request("image_list_request", json!({})).await;
    assert_eq!(r["data"]["records"].as_array().unwrap().len(), 1);
    assert_eq!(
        r["data"]["records"][0]["imageId"],
        ra["data"]["record"]["imageId"]
    );
    let r = a.request("container_list_request", json!({})).await;
    assert_eq!(r["data"]["containerIds"], json!(["tenant-a"]));
    a.clear_backlog();

    // B chats; A receives nothing at all: no response, no session event, no global event.
    b.request(
        "message_send_request",
        json!({"imageId": image_b, "content":"secret"}),
    )
    .await;
    let frames = b.frames_until("conversation_end").await;
    assert!(frames.len() > 5);
    b.request(
        "container_create_request",
        json!({"containerId":"tenant-b"}),
    )
    .await;
    assert!(
        a.silent_for(Duration::from_millis(300)).await,
        "a frame of tenant-b reached tenant-a"
    );

    // Token management needs an all-containers token.
    let (st, _) = http(
        s.addr,
        "GET",
        "/v1/tokens",
        &[("Authorization", &format!("Bearer {ta}"))],
        None,
    )
    .await;
    assert_eq!(st, 401);
    let (admin, _) = token(&s, None);
    let (st, body) = http(
        s.addr,
        "POST",
        "/v1/tokens",
        &[("Authorization", &format!("Bearer {admin}"))],
        Some(r#"{"containers":["tenant-c"]}"#),
    )
    .await;
    assert_eq!(st, 201, "{body}");
    let created: Value = serde_json::from_str(&body).unwrap();
    let mut c = WsClient::try_connect(&s.ws_url(), Some(created["token"].as_str().unwrap()))
        .await
        .unwrap();
    let r = c
        .request(
            "container_create_request",
            json!({"containerId":"tenant-c"}),
        )
        .await;
    assert_eq!(r["data"]["containerId"], "tenant-c");
}

#[tokio::test]
async fn metrics_need_a_token_for_all_containers_when_auth_is_on() {
    let s = auth_server().await;
    let (tenant, _) = token(&s, Some(vec!["c-a"]));
    let (operator, _) = token(&s, None);
    let get = |t: String| async move {
        http(
            s.addr,
            "GET",
            "/metrics",
            &[("Authorization", &format!("Bearer {t}"))],
            None,
        )
        .await
    };
    assert_eq!(http(s.addr, "GET", "/metrics", &[], None).await.0, 401);
    let (status, body) = get(tenant).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("needs a token for all containers"), "{body}");
    assert!(!body.contains("agentvm_"), "no counter leaks: {body}");
    let (status, body) = get(operator).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("agentvm_build_info"), "{body}");
}

#[tokio::test]
async fn a_non_loopback_bind_turns_auth_on() {
    let dir = tempfile::tempdir().unwrap();
    let vm = agentvm::AgentVm::builder()
        .data_dir(dir.path())
        .open()
        .await
        .unwrap();
    let server = agentvm_server::ServerManager::new(vm, ServerConfig::default());
    // 0.0.0.0 is not loopback; connect through 127.0.0.1.
    let addr = server.listen("0.0.0.0:0").await.unwrap();
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()));
    let (st, body) = http(local, "GET", "/v1/containers", &[], None).await;
    assert_eq!(st, 401, "{body}");
    server.close().await;
}

#[tokio::test]
async fn revoking_a_token_closes_its_open_connections_with_1008() {
    let s = auth_server().await;
    let (admin, _) = token(&s, None);
    let (t1, id1) = token(&s, Some(vec!["c"]));
    let (t2, id2) = token(&s, Some(vec!["c"]));
    let mut operator = WsClient::try_connect(&s.ws_url(), Some(&admin))
        .await
        .unwrap();
    let mut victim = WsClient::try_connect(&s.ws_url(), Some(&t1)).await.unwrap();
    let r = victim
        .request(
            "image_create_request",
            json!({"containerId":"c","config":{}}),
        )
        .await;
    assert!(r["data"]["error"].is_null(), "{r}");
    // Another token's connection is not touched.
    let mut bystander = WsClient::try_connect(&s.ws_url(), Some(&t2)).await.unwrap();

    // Revoked over the WebSocket: the connection is told, then closed with 1008.
    let r = operator
        .request("token_revoke_request", json!({"tokenId": id1}))
        .await;
    assert_eq!(r["data"]["revoked"], true, "{r}");
    let frames = victim.frames_until("__close").await;
    let close = frames.last().expect("close").payload.clone();
    assert_eq!(close["code"], 1008, "{close}");
    assert_eq!(close["reason"], "token revoked");
    assert!(frames.iter().any(|f| f.type_name() == "system_error"
        && f.payload["data"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("revoked")));
    // Nothing more runs on it: the socket is closed.
    assert!(matches!(
        victim.read_frame_within(Duration::from_secs(2)).await,
        Ok(None) | Err(())
    ));
    let images = s.vm.store().list_images("c").unwrap();
    assert_eq!(images.len(), 1, "an image was created after the revoke");

    // Revoked over REST: the same.
    let (st, body) = http(
        s.addr,
        "DELETE",
        &format!("/v1/tokens/{id2}"),
        &[("Authorization", &format!("Bearer {admin}"))],
        None,
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let close = bystander
        .frames_until("__close")
        .await
        .pop()
        .expect("close");
    assert_eq!(close.payload["code"], 1008);
    // The operator's connection is still fine.
    let r = operator.request("container_list_request", json!({})).await;
    assert!(r["data"]["error"].is_null(), "{r}");
}

#[tokio::test]
async fn a_token_for_every_container_is_asked_for_explicitly_and_only_by_a_token_holder() {
    // A loopback server with auth off: every client is an operator, but none without a token
    // may mint a token for every container (it would open the server once auth is on).
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let r = c.request("token_create_request", json!({})).await;
    assert_eq!(r["data"]["errorKind"], "invalid_input", "{r}");
    assert!(
        r["data"]["error"]
            .as_str()
            .unwrap()
            .contains("say which containers the token may use"),
        "{r}"
    );
    let r = c
        .request("token_create_request", json!({"all": true}))
        .await;
    assert_eq!(r["data"]["errorKind"], "unauthorized", "{r}");
    assert!(
        r["data"]["error"]
            .as_str()
            .unwrap()
            .contains("agentvm-server token create --all"),
        "{r}"
    );
    let (status, body) = http(s.addr, "POST", "/v1/tokens", &[], Some(r#"{"all":true}"#)).await;
    assert_eq!(status, 401, "{body}");
    // Scoped tokens are still made by anyone the server lets in.
    let r = c
        .request("token_create_request", json!({"containers": ["a"]}))
        .await;
    assert!(
        r["data"]["token"].as_str().unwrap().starts_with("avm_"),
        "{r}"
    );
    assert!(s.vm.store().list_tokens().unwrap().len() == 1);

    // With an operator token, `all: true` mints one.
    let (op, _) = token(&s, None);
    let mut o = WsClient::try_connect(&s.ws_url(), Some(&op)).await.unwrap();
    let r = o
        .request("token_create_request", json!({"all": true}))
        .await;
    assert!(
        r["data"]["token"].as_str().unwrap().starts_with("avm_"),
        "{r}"
    );
    assert!(r["data"]["containers"].is_null(), "{r}");
    let r = o
        .request(
            "token_create_request",
            json!({"all": true, "containers": ["a"]}),
        )
        .await;
    assert_eq!(r["data"]["errorKind"], "invalid_input", "{r}");
}
