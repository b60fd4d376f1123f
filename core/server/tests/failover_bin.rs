//! A remote client given both servers of a cluster (`--cluster`, one PostgreSQL store, two
//! `agentvm-server` processes) fails over when the one it is on stops: the next request goes to
//! the other, its subscription resumes there, and cursors mean the same on both servers.
//!
//! Needs `AGENTVM_TEST_POSTGRES` (`scripts/setup-postgres.sh`); a schema per test. Skipped,
//! loudly, with `AGENTVM_SKIP_POSTGRES=1`.
// Test helpers: a failed unwrap is a failed assertion.
#![allow(clippy::unwrap_used)]

use agentvm::{
    connect, BusItem, ConnectOptions, EventPayload, ImageConfig, Published, RuntimeExt,
    Subscription,
};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_agentvm-server");

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(dir: &std::path::Path, store: &str, id: &str) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir.join(id))
        .args(["--store", store, "--cluster", "--server-id", id])
        .args(["--lease-ttl-ms", "3000"])
        .env("LLM_PROVIDER", "mock")
        .env("AGENTVM_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn agentvm-server");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    Server {
        child,
        url: format!("ws://{addr}/ws"),
    }
}

async fn fresh_schema(name: &str) -> Option<String> {
    if std::env::var("AGENTVM_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("SKIPPED: PostgreSQL failover test (AGENTVM_SKIP_POSTGRES=1)");
        return None;
    }
    let server = std::env::var("AGENTVM_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "AGENTVM_TEST_POSTGRES is not set: run `export AGENTVM_TEST_POSTGRES=\"$(bash \
                 scripts/setup-postgres.sh)\"`, or set AGENTVM_SKIP_POSTGRES=1 to skip"
            )
        });
    let schema = format!("bin_{name}_{}", std::process::id());
    let (db, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    db.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ))
    .await
    .unwrap();
    let separator = if server.contains('?') { '&' } else { '?' };
    Some(format!(
        "{server}{separator}options=-c%20search_path%3D{schema}"
    ))
}

/// One turn's events, up to its `conversation_end`.
async fn turn(sub: &mut Subscription) -> Vec<Arc<Published>> {
    let mut out = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(20), sub.recv())
            .await
            .expect("events keep coming")
            .expect("open");
        let BusItem::Event(p) = item else {
            panic!("overflow")
        };
        let end = matches!(p.event.payload, EventPayload::ConversationEnd { .. });
        out.push(p);
        if end {
            return out;
        }
    }
}

fn cursors(events: &[Arc<Published>]) -> Vec<u64> {
    events.iter().map(|p| p.cursor.unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_both_servers_fails_over_when_its_server_stops() {
    let Some(store) = fresh_schema("failover").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), &store, "srv_a");
    // B starts later, so the cursors it hands out are above A's.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let b = start(dir.path(), &store, "srv_b");
    let options = ConnectOptions {
        urls: vec![a.url.clone(), b.url.clone()],
        min_backoff: Duration::from_millis(50),
        request_timeout: Duration::from_secs(15),
        ..Default::default()
    };
    let rt = connect("", options).await.unwrap();
    assert_eq!(rt.current_url(), a.url);
    let image = rt
        .images()
        .create("tenant-1", ImageConfig::default())
        .await
        .unwrap()
        .record;
    let mut sub = rt.sessions().events(&image.session_id).await.unwrap();
    rt.agents()
        .send_to_image(&image.image_id, "on A")
        .await
        .unwrap();
    let first = turn(&mut sub).await;

    // A stops (SIGTERM: it writes everything out and releases its lease) and exits.
    let mut a = a;
    Command::new("kill")
        .args(["-TERM", &a.child.id().to_string()])
        .status()
        .unwrap();
    assert!(a.child.wait().unwrap().success());

    // The next request goes to B, which takes the container over; the subscription goes on.
    rt.agents()
        .send_to_image(&image.image_id, "on B")
        .await
        .unwrap();
    let second = turn(&mut sub).await;
    assert_eq!(rt.current_url(), b.url);
    let all: Vec<u64> = cursors(&first)
        .into_iter()
        .chain(cursors(&second))
        .collect();
    assert!(all.windows(2).all(|w| w[0] < w[1]), "in order, none twice");
    assert_eq!(
        rt.images().messages(&image.image_id).await.unwrap().len(),
        4
    );

    // Cursors mean the same on B: a replay after A's first event of the first turn gives the
    // rest of that turn, written by A, with the cursors the client saw, then B's turn.
    let late = connect(&b.url, ConnectOptions::default()).await.unwrap();
    let mut replay = late
        .sessions()
        .events_after(&image.session_id, first[0].cursor.unwrap())
        .await
        .unwrap();
    let replayed_first = turn(&mut replay).await;
    assert_eq!(cursors(&replayed_first), cursors(&first)[1..]);
    let replayed_second = turn(&mut replay).await;
    assert_eq!(cursors(&replayed_second), cursors(&second));
    rt.close().await;
    late.close().await;
}
