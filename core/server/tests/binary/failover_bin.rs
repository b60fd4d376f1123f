//! A remote client given both servers of a cluster (`--cluster`, one PostgreSQL store, two
//! `agentvm-server` processes) fails over when the one it is on stops: the next request goes to
//! the other, its subscription resumes there, and cursors mean the same on both servers. A
//! client of one server follows, live, a session the other server runs.
//!
//! Needs `AGENTVM_TEST_POSTGRES` (`scripts/setup-postgres.sh`); a schema per test. Skipped,
//! loudly, with `AGENTVM_SKIP_POSTGRES=1`.
// Test helpers: a failed unwrap is a failed assertion.
#![allow(clippy::unwrap_used)]

use agentvm::{connect, ConnectOptions, EventPayload, ImageConfig, Published, RuntimeExt};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{fresh_schema, postgres_skipped, serve, sigterm, turn, Server};

fn start(dir: &std::path::Path, store: &str, id: &str) -> Server {
    serve(
        &dir.join(id),
        &[
            "--store",
            store,
            "--cluster",
            "--server-id",
            id,
            "--lease-ttl-ms",
            "3000",
        ],
    )
}

fn cursors(events: &[Arc<Published>]) -> Vec<u64> {
    events.iter().map(|p| p.cursor.unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_both_servers_fails_over_when_its_server_stops() {
    if postgres_skipped("PostgreSQL failover test") {
        return;
    }
    let (store, _db) = fresh_schema("failover").await;
    let dir = tempfile::tempdir().unwrap();
    // B starts first: a server that started earlier still numbers above what the later one
    // handed out (cursors follow the clock and the shared log, not each server's start).
    let b = start(dir.path(), &store, "srv_b");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = start(dir.path(), &store, "srv_a");
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
    sigterm(&a.child);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_one_server_follows_live_a_session_another_server_runs() {
    if postgres_skipped("PostgreSQL cross-server events test") {
        return;
    }
    let (store, _db) = fresh_schema("follow").await;
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), &store, "srv_a");
    let b = start(dir.path(), &store, "srv_b");
    let single = || ConnectOptions {
        reconnect: false,
        ..Default::default()
    };
    let on_b = connect(&b.url, single()).await.unwrap();
    let on_a = connect(&a.url, single()).await.unwrap();
    // B serves the container (its first request took the lease); the session streams 100
    // deltas per turn.
    let image = on_b
        .images()
        .create(
            "tenant-1",
            ImageConfig {
                model: Some("mock:long-stream".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .record;
    let mut watch_b = on_b.sessions().events(&image.session_id).await.unwrap();
    on_b.agents()
        .send_to_image(&image.image_id, "first")
        .await
        .unwrap();
    let first = turn(&mut watch_b).await;
    assert_eq!(first.len(), 205);

    // Clients of A: one following from the last event it knows (the subscribe does not wait
    // for A to join, and B runs the next turn at once: a cursor makes the order irrelevant),
    // and one, on a connection of its own, replaying from the start.
    let known = first.last().unwrap().cursor.unwrap();
    let mut live_a = on_a
        .sessions()
        .events_after(&image.session_id, known)
        .await
        .unwrap();
    let replaying = connect(&a.url, single()).await.unwrap();
    let mut replay_a = replaying
        .sessions()
        .events_after(&image.session_id, 0)
        .await
        .unwrap();
    on_b.agents()
        .send_to_image(&image.image_id, "second")
        .await
        .unwrap();
    let second = turn(&mut watch_b).await;
    let deltas = |events: &[Arc<Published>]| {
        events
            .iter()
            .filter(|p| matches!(p.event.payload, EventPayload::TextDelta { .. }))
            .count()
    };
    assert_eq!(deltas(&second), 100);

    // A's following client gets B's second turn as it streams: every event, in order, once,
    // with the cursors B's own client saw.
    let followed = turn(&mut live_a).await;
    assert_eq!(cursors(&followed), cursors(&second));
    // A's replaying client gets both turns, once each.
    let replayed: Vec<u64> = [turn(&mut replay_a).await, turn(&mut replay_a).await]
        .iter()
        .flat_map(|t| cursors(t))
        .collect();
    let both: Vec<u64> = cursors(&first)
        .into_iter()
        .chain(cursors(&second))
        .collect();
    assert_eq!(replayed.len(), both.len(), "{replayed:?}\n{both:?}");
    assert_eq!(replayed, both);
    on_a.close().await;
    replaying.close().await;
    on_b.close().await;
    drop((a, b));
}

fn text_of(m: &agentvm::Message) -> String {
    m.content.as_ref().map(|c| c.text()).unwrap_or_default()
}

/// The member serving `container`, from its lease row.
async fn owner_of(db: &tokio_postgres::Client, container: &str) -> String {
    db.query_one(
        "SELECT owner FROM container_leases WHERE container_id = $1",
        &[&container],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_owner_mid_stream_loses_no_acknowledged_message_over_rounds() {
    if postgres_skipped("PostgreSQL kill -9 failover test") {
        return;
    }
    const ROUNDS: usize = 3;
    let (store, db) = fresh_schema("kill9").await;
    let dir = tempfile::tempdir().unwrap();
    let mut servers: Vec<(String, Server)> = ["srv_a", "srv_b", "srv_c"]
        .iter()
        .map(|id| (id.to_string(), start(dir.path(), &store, id)))
        .collect();
    let first = connect(&servers[0].1.url, ConnectOptions::default())
        .await
        .unwrap();
    let image = first
        .images()
        .create(
            "tenant-1",
            ImageConfig {
                model: Some("mock:slow-stream".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .record;
    first.close().await;
    let mut acknowledged = Vec::new();
    for round in 0..ROUNDS {
        // The client starts on the owner and knows every live member.
        let owner = owner_of(&db, "tenant-1").await;
        let at = servers.iter().position(|(id, _)| *id == owner).unwrap();
        let mut urls = vec![servers[at].1.url.clone()];
        urls.extend(
            servers
                .iter()
                .filter(|(id, _)| *id != owner)
                .map(|(_, s)| s.url.clone()),
        );
        let options = ConnectOptions {
            urls,
            min_backoff: Duration::from_millis(50),
            request_timeout: Duration::from_secs(20),
            ..Default::default()
        };
        let rt = connect("", options).await.unwrap();
        let mut sub = rt.sessions().events(&image.session_id).await.unwrap();
        let text = format!("round {round}");
        rt.agents()
            .send_to_image(&image.image_id, text.as_str())
            .await
            .unwrap();
        acknowledged.push(text);
        // Mid-stream: after ten deltas, the owner is killed.
        let mut deltas = 0;
        while deltas < 10 {
            let item = tokio::time::timeout(Duration::from_secs(20), sub.recv())
                .await
                .expect("the reply streams")
                .expect("open");
            if let agentvm::BusItem::Event(p) = item {
                if matches!(p.event.payload, EventPayload::TextDelta { .. }) {
                    deltas += 1;
                }
            }
        }
        let (_, mut dead) = servers.remove(at);
        dead.child.kill().unwrap();
        dead.child.wait().unwrap();
        let killed_at = std::time::Instant::now();
        // The next message goes to another member once the lease has expired (one TTL, 3 s);
        // until then it is refused as unavailable, and the client tries again.
        let text = format!("after round {round}");
        loop {
            match rt
                .agents()
                .send_to_image(&image.image_id, text.as_str())
                .await
            {
                Ok(_) => break,
                Err(e) => {
                    assert!(
                        killed_at.elapsed() < Duration::from_secs(15),
                        "no member took the container over: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        acknowledged.push(text.clone());
        let new_owner = owner_of(&db, "tenant-1").await;
        assert_ne!(new_owner, owner, "round {round}: the lease moved");
        // Its reply is stored before the next round.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let history = rt.images().messages(&image.image_id).await.unwrap();
            if history
                .last()
                .is_some_and(|m| m.role == agentvm::Role::Assistant)
                && history.iter().any(|m| text_of(m) == text)
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no reply after the failover"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        rt.close().await;
        // A new member replaces the dead one.
        let id = format!("{owner}_{round}");
        servers.push((id.clone(), start(dir.path(), &store, &id)));
    }
    // Every acknowledged message is there exactly once.
    let check = connect(&servers[0].1.url, ConnectOptions::default())
        .await
        .unwrap();
    let history = check.images().messages(&image.image_id).await.unwrap();
    for text in &acknowledged {
        let n = history.iter().filter(|m| text_of(m) == *text).count();
        assert_eq!(n, 1, "{text:?} stored {n} times: {history:?}");
    }
    // No epoch was ever written by two members.
    let shared: Vec<(i64, i64)> = db
        .query(
            "SELECT lease_epoch, count(DISTINCT lease_owner) FROM messages \
             GROUP BY lease_epoch HAVING count(DISTINCT lease_owner) > 1",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        shared.is_empty(),
        "epochs written by two members: {shared:?}"
    );
    let epochs: i64 = db
        .query_one(
            "SELECT count(DISTINCT lease_epoch) FROM messages WHERE lease_epoch IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        epochs > ROUNDS as i64,
        "{epochs} epochs over {ROUNDS} failovers"
    );
    check.close().await;
}
