//! The remote runtime (`agentvm::connect`) against a real server: the same API as the local
//! one, reconnection without loss or duplicates, clear errors.

use agentvm::*;
use agentvm_e2e::wire::TestServer;
use agentvm_server::{AuthMode, ServerConfig};
use std::time::Duration;

async fn events_until_end(sub: &mut Subscription) -> Vec<std::sync::Arc<Published>> {
    let mut out = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(15), sub.recv())
            .await
            .expect("events keep coming")
            .expect("open");
        match item {
            BusItem::Event(p) => {
                let end = matches!(p.event.payload, EventPayload::ConversationEnd { .. });
                out.push(p);
                if end {
                    return out;
                }
            }
            BusItem::Overflowed { .. } => panic!("overflow"),
        }
    }
}

#[tokio::test]
async fn the_remote_runtime_has_the_local_api() {
    let s = TestServer::start().await;
    let rt = connect(&s.ws_url(), ConnectOptions::default())
        .await
        .unwrap();
    let image = rt
        .images()
        .create(
            "c1",
            ImageConfig {
                name: Some("remote".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .record;
    assert_eq!(
        rt.images()
            .get(&image.image_id)
            .await
            .unwrap()
            .unwrap()
            .name,
        "remote"
    );
    let mut sub = rt.sessions().events(&image.session_id).await.unwrap();
    let sent = rt
        .agents()
        .send_to_image(&image.image_id, "Hello!")
        .await
        .unwrap();
    let events = events_until_end(&mut sub).await;
    let types: Vec<_> = events.iter().map(|p| p.event.type_name()).collect();
    assert_eq!(
        types,
        [
            "message_start",
            "conversation_start",
            "text_delta",
            "conversation_responding",
            "message_stop",
            "assistant_message",
            "conversation_end"
        ]
    );
    assert!(events.iter().all(|p| p.cursor.is_some()));
    let history = rt.images().messages(&image.image_id).await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].id, sent.message_id);
    // Errors keep their kind and message.
    let e = rt
        .agents()
        .send_to_image("img_nope", "x")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(e.to_string(), "Image not found: img_nope");
    let e = rt.containers().create("").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    rt.close().await;
}

#[tokio::test]
async fn a_cut_connection_mid_stream_loses_nothing_and_duplicates_nothing() {
    let driver =
        MockDriver::new(MockScenario::LongStream).with_delta_delay(Duration::from_millis(8));
    let s = TestServer::start_with(ServerConfig::default(), driver).await;
    let rt = connect(
        &s.ws_url(),
        ConnectOptions {
            min_backoff: Duration::from_millis(50),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut states = rt.connection_events().unwrap();
    let image = rt
        .images()
        .create("c1", Default::default())
        .await
        .unwrap()
        .record;
    let mut sub = rt.sessions().events(&image.session_id).await.unwrap();
    rt.agents()
        .send_to_image(&image.image_id, "stream please")
        .await
        .unwrap();
    let mut texts = Vec::new();
    let mut cursors = Vec::new();
    let mut cut = false;
    loop {
        let item = tokio::time::timeout(Duration::from_secs(15), sub.recv())
            .await
            .unwrap()
            .unwrap();
        let BusItem::Event(p) = item else {
            panic!("overflow")
        };
        cursors.push(p.cursor.unwrap());
        match &p.event.payload {
            EventPayload::TextDelta { text } => {
                texts.push(text.clone());
                if texts.len() == 30 && !cut {
                    rt.disconnect_for_test();
                    cut = true;
                }
            }
            EventPayload::ConversationEnd { .. } => break,
            _ => {}
        }
    }
    assert!(cut);
    assert_eq!(texts.len(), 100, "all 100 deltas");
    assert_eq!(
        texts.concat(),
        (0..100).map(|i| format!("chunk{i} ")).collect::<String>(),
        "in order"
    );
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "none twice");
    // The connection went down and came back, and said so.
    let mut seen = Vec::new();
    while let Some(BusItem::Event(p)) = states.try_recv() {
        if let EventPayload::ConnectionState { state, .. } = &p.event.payload {
            seen.push(state.clone());
        }
    }
    assert!(seen.iter().any(|s| s == "disconnected"), "{seen:?}");
    assert_eq!(
        seen.last().map(String::as_str),
        Some("connected"),
        "{seen:?}"
    );
    assert!(rt.is_connected());
    // And it keeps working.
    assert_eq!(
        rt.images().messages(&image.image_id).await.unwrap().len(),
        2
    );
}

#[tokio::test]
async fn connection_errors_are_clear() {
    // Nothing listens there.
    let e = connect(
        "ws://127.0.0.1:1/ws",
        ConnectOptions {
            connect_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(
        e.to_string()
            .contains("cannot connect to ws://127.0.0.1:1/ws"),
        "{e}"
    );
    let e = connect("http://127.0.0.1:1/ws", ConnectOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);

    // A bad token.
    let s = TestServer::start_with(
        ServerConfig {
            auth: AuthMode::Required,
            ..Default::default()
        },
        MockDriver::default(),
    )
    .await;
    let e = connect(&s.ws_url(), ConnectOptions::with_token("avm_bad"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert!(e.to_string().contains("invalid token"), "{e}");

    // The server goes away: requests fail with Unavailable after the timeout, not hang.
    let s = TestServer::start().await;
    let rt = connect(
        &s.ws_url(),
        ConnectOptions {
            request_timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    rt.containers().create("c").await.unwrap();
    s.server.close().await;
    drop(s);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = rt.containers().list().await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

#[tokio::test]
async fn the_example_runs_against_local_and_remote() {
    let exe = std::env::current_exe().unwrap();
    let example = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join("chat");
    assert!(
        example.exists(),
        "build the example first: cargo test --workspace builds it ({})",
        example.display()
    );
    let local = tokio::process::Command::new(&example)
        .output()
        .await
        .unwrap();
    assert!(
        local.status.success(),
        "{}",
        String::from_utf8_lossy(&local.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&local.stdout).trim(),
        "Hello from mock!"
    );
    let s = TestServer::start().await;
    let remote = tokio::process::Command::new(&example)
        .arg(s.ws_url())
        .output()
        .await
        .unwrap();
    assert!(
        remote.status.success(),
        "{}",
        String::from_utf8_lossy(&remote.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&remote.stdout).trim(),
        "Hello from mock!"
    );
}
