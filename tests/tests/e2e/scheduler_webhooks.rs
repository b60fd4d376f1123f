//! Webhooks on real Docker and a real HTTP receiver on loopback: sandbox events arrive signed
//! (checked here with an HMAC written independently of the server's), a failing receiver is
//! retried, and a receiver that recovers gets each event exactly once.

use agentvm::model::scheduler::{DeliveryStatus, Webhook};
use agentvm::scheduler::{NodeRegistration, Scheduler};
use agentvm::{
    AgentVm, Command, ErrorKind, Response, Runtime, Scope, WebhookCreateRequest,
    WebhookDeliveriesRequest, WebhookListRequest,
};
use agentvm_e2e::docker::*;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "a-webhook-secret-of-some-length";

/// HMAC-SHA256 as RFC 2104 writes it, hex.
fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    let inner = Sha256::digest([ipad.as_slice(), body].concat());
    let outer = Sha256::digest([opad.as_slice(), inner.as_slice()].concat());
    outer.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the receiver saw: every request, and how many more to refuse.
#[derive(Default)]
struct Seen {
    refuse: usize,
    /// (delivery id, event type, answered 2xx, signature valid)
    requests: Vec<(String, String, bool, bool)>,
}

async fn receive(
    State(seen): State<Arc<Mutex<Seen>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let valid =
        header("x-agentvm-signature") == format!("sha256={}", hmac_hex(SECRET.as_bytes(), &body));
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["deliveryId"], header("x-agentvm-delivery"));
    assert_eq!(json["event"]["type"], header("x-agentvm-event"));
    let mut s = seen.lock().unwrap();
    let ok = s.refuse == 0;
    s.refuse = s.refuse.saturating_sub(1);
    s.requests.push((
        header("x-agentvm-delivery"),
        header("x-agentvm-event"),
        ok,
        valid,
    ));
    if ok {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn receiver(refuse: usize) -> (String, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen {
        refuse,
        ..Default::default()
    }));
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

async fn register(vm: &AgentVm, r: WebhookCreateRequest) -> agentvm::Result<Webhook> {
    match vm.request(Command::WebhookCreate(r)).await? {
        Response::WebhookCreate(c) => Ok(c.webhook),
        other => panic!("not a webhook_create_response: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_retried_and_once_each() {
    if !require_docker().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut reg = NodeRegistration::new("local", ENDPOINT);
    reg.total_cpu_cores = Some(4.0);
    reg.total_memory_mb = Some(8192);
    let vm = AgentVm::builder()
        .data_dir(dir.path())
        .scheduler(Scheduler::builder().node(reg))
        .open()
        .await
        .unwrap();
    let s = vm.scheduler().unwrap().clone();
    s.create_template("busybox", busybox_spec()).await.unwrap();
    // The receiver refuses its first two requests.
    let (url, seen) = receiver(2).await;
    let events: Vec<String> = ["sandbox_ready", "sandbox_paused", "sandbox_resumed"]
        .map(String::from)
        .to_vec();
    let hook = register(
        &vm,
        WebhookCreateRequest {
            url: url.clone(),
            template_id: Some("busybox".into()),
            events: events.clone(),
            secret: Some(SECRET.into()),
        },
    )
    .await
    .unwrap();
    assert_eq!(hook.secret, SECRET, "the create shows the secret");
    // One for another template: it must get nothing.
    let (other_url, other_seen) = receiver(0).await;
    register(
        &vm,
        WebhookCreateRequest {
            url: other_url,
            template_id: Some("python".into()),
            events: vec![],
            secret: None,
        },
    )
    .await
    .unwrap();
    let Response::WebhookList(list) = vm
        .request(Command::WebhookList(WebhookListRequest {}))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(list.webhooks.len(), 2);
    assert!(
        list.webhooks.iter().all(|w| w.secret.is_empty()),
        "lists hide secrets"
    );

    let sb = s
        .create_sandbox(agentvm::scheduler::SandboxRequest::new("busybox"))
        .await
        .unwrap();
    s.pause_sandbox(&sb.id).await.unwrap();
    s.resume_sandbox(&sb.id).await.unwrap();

    eventually(
        Duration::from_secs(20),
        "three events delivered",
        || async { seen.lock().unwrap().requests.iter().filter(|r| r.2).count() >= 3 },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let requests = seen.lock().unwrap().requests.clone();
    assert!(
        requests.iter().all(|r| r.3),
        "every request signed: {requests:?}"
    );
    let mut delivered: HashMap<String, Vec<String>> = HashMap::new();
    for (id, event, ok, _) in &requests {
        if *ok {
            delivered.entry(event.clone()).or_default().push(id.clone());
        }
    }
    for e in &events {
        assert_eq!(
            delivered.get(e).map(Vec::len),
            Some(1),
            "{e} once: {requests:?}"
        );
    }
    assert_eq!(requests.iter().filter(|r| !r.2).count(), 2, "two refused");
    let first = &requests[0].0;
    assert!(
        requests.iter().filter(|r| &r.0 == first).count() >= 2,
        "the refused delivery was retried under the same id: {requests:?}"
    );
    assert!(
        other_seen.lock().unwrap().requests.is_empty(),
        "template filter"
    );

    let Response::WebhookDeliveries(d) = vm
        .request(Command::WebhookDeliveries(WebhookDeliveriesRequest {
            webhook_id: Some(hook.id.clone()),
        }))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(d.deliveries.len(), 3, "{:?}", d.deliveries);
    assert!(d
        .deliveries
        .iter()
        .all(|x| x.status == DeliveryStatus::Delivered));
    assert_eq!(
        d.deliveries.iter().map(|x| x.attempts).sum::<u32>(),
        5,
        "two failed attempts and three good ones: {:?}",
        d.deliveries
    );
    let retried = d.deliveries.iter().find(|x| x.attempts > 1).unwrap();
    assert_eq!(retried.last_status, Some(204));

    // Tenants cannot see or make webhooks; bad registrations say why.
    let alice = vm.scoped(Scope::containers(["user-alice"]));
    let e = alice
        .request(Command::WebhookList(WebhookListRequest {}))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    let e = register(
        &vm,
        WebhookCreateRequest {
            url: "ftp://nope".into(),
            template_id: None,
            events: vec![],
            secret: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    s.terminate_sandbox(&sb.id).await.unwrap();
}

/// A runtime with a scheduler (no node: no Docker needed) on `dir`, waiting for a previous
/// one's database to close.
async fn reopen(dir: &std::path::Path) -> AgentVm {
    let start = std::time::Instant::now();
    loop {
        match AgentVm::builder()
            .data_dir(dir)
            .scheduler(Scheduler::builder())
            .open()
            .await
        {
            Ok(vm) => return vm,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[tokio::test]
async fn registrations_survive_a_restart_and_can_be_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let id = {
        let vm = reopen(dir.path()).await;
        let hook = register(
            &vm,
            WebhookCreateRequest {
                url: "http://127.0.0.1:9/hook".into(),
                template_id: None,
                events: vec!["sandbox_paused".into()],
                secret: None,
            },
        )
        .await
        .unwrap();
        assert!(hook.secret.len() >= 16, "a secret is made: {hook:?}");
        hook.id
    };
    let vm = reopen(dir.path()).await;
    let Response::WebhookList(list) = vm
        .request(Command::WebhookList(WebhookListRequest {}))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(list.webhooks.len(), 1);
    assert_eq!(list.webhooks[0].id, id);
    assert_eq!(list.webhooks[0].events, ["sandbox_paused"]);
    let Response::WebhookDelete(d) = vm
        .request(Command::WebhookDelete(agentvm::WebhookDeleteRequest {
            webhook_id: id.clone(),
        }))
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(d.webhook_id, id);
    let e = vm
        .request(Command::WebhookDelete(agentvm::WebhookDeleteRequest {
            webhook_id: id,
        }))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
}
