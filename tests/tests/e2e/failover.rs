//! Failover of the remote runtime between the servers of one cluster: `connect` with several
//! URLs connects to the first that answers and, when its server goes away, resumes every
//! subscription on the next one from the last cursor — no event lost, none twice.
//!
//! The two servers here serve one runtime in this process (one store, one bus), so cursors
//! agree and a turn keeps running when the server its client was on stops, as it does in a
//! cluster whose servers share a store and the turn runs on a server that stays up.

use agentvm::*;
use agentvm_server::{ServerConfig, ServerManager};
use std::sync::Arc;
use std::time::Duration;

/// One runtime (long mock streams, 10 ms per delta) behind two servers.
struct TwoServers {
    a: ServerManager,
    b: ServerManager,
    a_url: String,
    b_url: String,
    _dir: tempfile::TempDir,
}

async fn two_servers() -> TwoServers {
    let dir = tempfile::tempdir().unwrap();
    let driver =
        MockDriver::new(MockScenario::LongStream).with_delta_delay(Duration::from_millis(10));
    let vm = AgentVm::builder()
        .data_dir(dir.path())
        .llm(Arc::new(driver))
        .open()
        .await
        .unwrap();
    let a = ServerManager::new(vm.clone(), ServerConfig::default());
    let b = ServerManager::new(vm, ServerConfig::default());
    let a_url = format!("ws://{}/ws", a.listen("127.0.0.1:0").await.unwrap());
    let b_url = format!("ws://{}/ws", b.listen("127.0.0.1:0").await.unwrap());
    TwoServers {
        a,
        b,
        a_url,
        b_url,
        _dir: dir,
    }
}

fn cluster(urls: &[&str]) -> ConnectOptions {
    ConnectOptions {
        urls: urls.iter().map(|u| u.to_string()).collect(),
        min_backoff: Duration::from_millis(50),
        connect_timeout: Duration::from_secs(2),
        ..Default::default()
    }
}

/// A URL where nothing listens (a port just released).
async fn dead_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("ws://{addr}/ws")
}

#[tokio::test]
async fn a_stopped_server_mid_stream_fails_over_to_the_next_with_every_event_once() {
    let s = two_servers().await;
    let rt = connect("", cluster(&[&s.a_url, &s.b_url])).await.unwrap();
    assert_eq!(rt.current_url(), s.a_url, "the first URL that answers");
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
    let mut stopped_at = None;
    loop {
        let item = tokio::time::timeout(Duration::from_secs(15), sub.recv())
            .await
            .expect("events keep coming after the failover")
            .unwrap();
        let BusItem::Event(p) = item else {
            panic!("overflow")
        };
        cursors.push(p.cursor.unwrap());
        match &p.event.payload {
            EventPayload::TextDelta { text } => {
                texts.push(text.clone());
                if texts.len() == 30 && stopped_at.is_none() {
                    // The server this client is on goes away mid-stream.
                    s.a.stop().await;
                    stopped_at = Some(p.cursor.unwrap());
                }
            }
            EventPayload::ConversationEnd { .. } => break,
            _ => {}
        }
    }
    let stopped_at = stopped_at.expect("stopped mid-stream");
    assert_eq!(texts.len(), 100, "all 100 deltas: {texts:?}");
    assert_eq!(
        texts.concat(),
        (0..100).map(|i| format!("chunk{i} ")).collect::<String>(),
        "in order"
    );
    assert!(cursors.windows(2).all(|w| w[0] < w[1]), "none twice");
    assert!(
        cursors.iter().filter(|c| **c > stopped_at).count() >= 70,
        "the rest of the turn came after the stop"
    );
    // It said where it went.
    let mut seen = Vec::new();
    while let Some(BusItem::Event(p)) = states.try_recv() {
        if let EventPayload::ConnectionState { state, url, .. } = &p.event.payload {
            seen.push((state.clone(), url.clone().unwrap_or_default()));
        }
    }
    assert!(
        seen.contains(&("disconnected".into(), s.a_url.clone())),
        "{seen:?}"
    );
    assert_eq!(
        seen.last(),
        Some(&("connected".into(), s.b_url.clone())),
        "{seen:?}"
    );
    assert_eq!(rt.current_url(), s.b_url);
    // And it keeps working there.
    assert_eq!(
        rt.images().messages(&image.image_id).await.unwrap().len(),
        2
    );
    rt.close().await;
    s.b.close().await;
}

#[tokio::test]
async fn a_first_url_that_is_down_at_connect_moves_on_to_the_next() {
    let s = two_servers().await;
    let down = dead_url().await;
    let rt = connect("", cluster(&[&down, &s.b_url])).await.unwrap();
    assert_eq!(rt.current_url(), s.b_url);
    rt.containers().create("c").await.unwrap();
    rt.close().await;

    // None answering: one error naming every server.
    let other = dead_url().await;
    let e = connect("", cluster(&[&down, &other])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    let message = e.to_string();
    assert!(
        message.contains(&down) && message.contains(&other),
        "{message}"
    );
    s.a.close().await;
}

#[tokio::test]
async fn bad_url_lists_are_invalid_input() {
    let e = connect("", cluster(&[])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("no server"), "{e}");
    let e = connect(
        "",
        cluster(&["ws://127.0.0.1:1/ws", "http://127.0.0.1:2/ws"]),
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("http://127.0.0.1:2/ws"), "{e}");
    let e = connect("ws://127.0.0.1:1/ws", cluster(&["ws://127.0.0.1:2/ws"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.to_string().contains("url or urls"), "{e}");
}
