//! Two `agentvm-server` processes in one cluster (`--cluster`, one PostgreSQL store): a
//! container is served by one of them at a time through a lease; a paused owner loses it to the
//! other after the TTL and can never write for it again; `SIGTERM` hands leases over at once;
//! a client of either server uses a container the other serves (its commands are forwarded,
//! its events relayed), within its token's scope.
//!
//! Needs `AGENTVM_TEST_POSTGRES` (`scripts/setup-postgres.sh`); a schema per test. Skipped,
//! loudly, with `AGENTVM_SKIP_POSTGRES=1`.
// Test helpers: a failed unwrap is a failed assertion.
#![allow(clippy::unwrap_used)]

use agentvm::{connect, ConnectOptions, ErrorKind, ImageConfig, RemoteRuntime, RuntimeExt};
use std::time::{Duration, Instant};

use crate::common::{fresh_schema, postgres_skipped, serve, signal, turn, Server};

/// Short, so the test waits seconds, not the default 10.
const TTL_MS: u64 = 3000;

/// Starts a cluster member `id` on `store`, with `extra` arguments.
fn start(dir: &std::path::Path, store: &str, id: &str, extra: &[&str]) -> Server {
    let ttl = TTL_MS.to_string();
    let mut args = vec![
        "--store",
        store,
        "--cluster",
        "--server-id",
        id,
        "--lease-ttl-ms",
        &ttl,
    ];
    args.extend_from_slice(extra);
    serve(&dir.join(id), &args)
}

async fn client(url: &str) -> RemoteRuntime {
    let options = ConnectOptions {
        reconnect: false,
        ..Default::default()
    };
    connect(url, options).await.unwrap()
}

/// Sends `text` to `image_id` and waits until the session has `count` messages.
async fn send_and_wait(rt: &RemoteRuntime, image_id: &str, text: &str, count: usize) {
    rt.agents().send_to_image(image_id, text).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let history = rt.images().messages(image_id).await.unwrap();
        if history.len() >= count {
            assert_eq!(history.len(), count, "{history:?}");
            return;
        }
        assert!(Instant::now() < deadline, "no reply stored: {history:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The lease row: (owner, epoch, live).
async fn lease(db: &tokio_postgres::Client, container: &str) -> (String, i64, bool) {
    let row = db
        .query_one(
            "SELECT owner, epoch, expires_at > now() FROM container_leases \
             WHERE container_id = $1",
            &[&container],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1), row.get(2))
}

/// `(lease_owner, lease_epoch, messages)` of the container's messages, grouped.
async fn writers(db: &tokio_postgres::Client, container: &str) -> Vec<(String, i64, i64)> {
    db.query(
        "SELECT m.lease_owner, m.lease_epoch, count(*) FROM messages m \
         JOIN sessions s ON s.session_id = m.session_id WHERE s.container_id = $1 \
         GROUP BY 1, 2 ORDER BY 2, 1",
        &[&container],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_loses_its_container_and_cannot_write_and_sigterm_hands_it_over() {
    if postgres_skipped("PostgreSQL cluster test") {
        return;
    }
    let (store, db) = fresh_schema("cluster").await;
    let dir = tempfile::tempdir().unwrap();
    // Refusing, not forwarding: what this test watches is who writes.
    let a = start(dir.path(), &store, "srv_a", &["--no-forward"]);
    let mut b = start(dir.path(), &store, "srv_b", &["--no-forward"]);
    let tenant = "tenant-1";

    // A serves the tenant first: it holds epoch 1, and B refuses it, naming A.
    let rt_a = client(&a.url).await;
    let image = rt_a
        .images()
        .create(tenant, ImageConfig::default())
        .await
        .unwrap()
        .record;
    send_and_wait(&rt_a, &image.image_id, "hello A", 2).await;
    assert_eq!(lease(&db, tenant).await, ("srv_a".into(), 1, true));
    let rt_b = client(&b.url).await;
    let refused = rt_b.images().messages(&image.image_id).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    assert!(
        refused
            .to_string()
            .contains(&format!("srv_a at {}", a.http)),
        "{refused}"
    );

    // A freezes past its TTL: B takes the tenant over in a new epoch and serves it.
    signal(&a.child, "STOP");
    tokio::time::sleep(Duration::from_millis(TTL_MS + 500)).await;
    let took_over = Instant::now();
    send_and_wait(&rt_b, &image.image_id, "hello B", 4).await;
    assert!(took_over.elapsed() < Duration::from_millis(TTL_MS * 5));
    assert_eq!(lease(&db, tenant).await, ("srv_b".into(), 2, true));

    // A wakes up: whatever it still believes, nothing it does for the tenant is written.
    signal(&a.child, "CONT");
    let rt_a = client(&a.url).await;
    // A may be stepping down as the send arrives (its renewal failed): its agent for the
    // tenant is stopping, and the send is refused as such. Once it has stepped down, the gate
    // refuses it naming the new owner.
    let mut err = None;
    for _ in 0..20 {
        let e = rt_a
            .agents()
            .send_to_image(&image.image_id, "stale A")
            .await
            .unwrap_err();
        let stopping = e.to_string().contains("has stopped");
        err = Some(e);
        if !stopping {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let err = err.expect("an answer");
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Conflict),
        "{err}"
    );
    assert!(err.to_string().contains("srv_b"), "{err}");
    let err = rt_a
        .images()
        .create(tenant, ImageConfig::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unavailable | ErrorKind::Conflict),
        "{err}"
    );
    tokio::time::sleep(Duration::from_millis(TTL_MS / 2)).await;
    assert_eq!(
        writers(&db, tenant).await,
        [("srv_a".to_string(), 1, 2), ("srv_b".to_string(), 2, 2)],
        "every message was written by the lease holder of its epoch, none by A after it lost it"
    );
    let images = db
        .query_one(
            "SELECT count(*) FROM images WHERE container_id = $1",
            &[&tenant],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(images, 1);

    // SIGTERM on B releases the lease before B exits: it is not live a moment later, though
    // B renewed it less than a TTL ago, and A can take it at once.
    signal(&b.child, "TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    while b.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "B did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (owner, epoch, live) = lease(&db, tenant).await;
    assert_eq!((owner.as_str(), epoch, live), ("srv_b", 2, false));
    let draining: bool = db
        .query_one(
            "SELECT draining FROM cluster_servers WHERE id = 'srv_b'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(draining);
    send_and_wait(&rt_a, &image.image_id, "A again", 6).await;
    assert_eq!(lease(&db, tenant).await, ("srv_a".into(), 3, true));
    assert_eq!(
        writers(&db, tenant).await,
        [
            ("srv_a".to_string(), 1, 2),
            ("srv_b".to_string(), 2, 2),
            ("srv_a".to_string(), 3, 2)
        ]
    );
}

/// `agentvm-server token create <args> --store <store>`: the token it prints.
fn token(store: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(crate::common::BIN)
        .args(["token", "create"])
        .args(args)
        .args(["--store", store])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("avm_"))
        .unwrap_or_else(|| panic!("no token in {out:?}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_either_server_uses_a_container_the_other_serves() {
    if postgres_skipped("PostgreSQL cluster forwarding test") {
        return;
    }
    let (store, db) = fresh_schema("forward").await;
    let operator = token(&store, &["--all"]);
    let alice = token(&store, &["--containers", "tenant-1"]);
    let bob = token(&store, &["--containers", "tenant-2"]);
    let dir = tempfile::tempdir().unwrap();
    let members = ["--require-auth", "--cluster-token", operator.as_str()];
    let a = start(dir.path(), &store, "srv_a", &members);
    let b = start(dir.path(), &store, "srv_b", &members);
    let with = |token: &str| ConnectOptions {
        reconnect: false,
        ..ConnectOptions::with_token(token)
    };

    // B serves tenant-1 (its first request took the lease).
    let on_b = connect(&b.url, with(&alice)).await.unwrap();
    on_b.containers().create("tenant-1").await.unwrap();
    assert_eq!(lease(&db, "tenant-1").await, ("srv_b".into(), 1, true));

    // Alice's client of A creates an image, streams a reply and reads the history: A forwards
    // each command to B, and relays the session's events from the shared log.
    let on_a = connect(&a.url, with(&alice)).await.unwrap();
    let image = on_a
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
    let mut events = on_a.sessions().events(&image.session_id).await.unwrap();
    on_a.agents()
        .send_to_image(&image.image_id, "hello through A")
        .await
        .unwrap();
    let streamed = turn(&mut events).await;
    let types: Vec<&str> = streamed.iter().map(|p| p.event.type_name()).collect();
    assert_eq!(types.iter().filter(|t| **t == "text_delta").count(), 100);
    let history = on_a.images().messages(&image.image_id).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    // B did the work, in its tenure: the lease never moved.
    assert_eq!(lease(&db, "tenant-1").await, ("srv_b".into(), 1, true));
    assert_eq!(
        writers(&db, "tenant-1").await,
        [("srv_b".to_string(), 1, 2)]
    );

    // Bob's token is checked on A before anything is forwarded: refused, as on B.
    let on_a_bob = connect(&a.url, with(&bob)).await.unwrap();
    let e = on_a_bob
        .images()
        .messages(&image.image_id)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert!(e.to_string().contains("tenant-1"), "{e}");

    // Without a token for the members, forwarding is refused by B, and the caller is told.
    drop(a);
    let c = start(dir.path(), &store, "srv_c", &["--require-auth"]);
    let on_c = connect(&c.url, with(&alice)).await.unwrap();
    let e = on_c.images().messages(&image.image_id).await.unwrap_err();
    eprintln!("forwarding without a cluster token: {e}");
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert!(e.to_string().contains(&b.http), "names the member: {e}");
    assert!(
        e.to_string().contains("--cluster-token"),
        "says what is missing: {e}"
    );
    on_a.close().await;
    on_a_bob.close().await;
    on_b.close().await;
    on_c.close().await;
}

/// `POST {http}/v1/commands` with `command`: the response's data, or the error body.
async fn command(http: &str, command: serde_json::Value) -> Result<serde_json::Value, String> {
    let resp = reqwest::Client::new()
        .post(format!("{http}/v1/commands"))
        .json(&command)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status} {body}"))
    }
}

/// A counter of `/metrics` on `http` (0 when absent).
async fn counter(http: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{http}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_are_shared_by_the_cluster_and_tended_by_one_server() {
    if postgres_skipped("PostgreSQL cluster scheduler test") {
        return;
    }
    if std::env::var("AGENTVM_SKIP_DOCKER").as_deref() == Ok("1") {
        eprintln!("SKIPPED: the cluster scheduler test needs Docker (AGENTVM_SKIP_DOCKER=1)");
        return;
    }
    let (store, db) = fresh_schema("sched").await;
    let dir = tempfile::tempdir().unwrap();
    let a = start(dir.path(), &store, "srv_a", &[]);
    let b = start(dir.path(), &store, "srv_b", &[]);
    let c = start(dir.path(), &store, "srv_c", &[]);
    let cmd = |t: &str, data: serde_json::Value| serde_json::json!({"type": t, "data": data});

    // A node and a template, both through A.
    command(
        &a.http,
        cmd(
            "node_register_request",
            serde_json::json!({"nodeId": "shared-docker", "apiEndpoint": "unix:///var/run/docker.sock"}),
        ),
    )
    .await
    .unwrap();
    command(
        &a.http,
        cmd(
            "template_create_request",
            serde_json::json!({"templateId": "busybox", "name": "BusyBox",
                "image": "agentvm-test/busybox:latest", "defaultMemoryMb": 64, "workdir": "/workspace"}),
        ),
    )
    .await
    .unwrap();

    // C serves tenant-c and places its sandbox on the node A registered.
    command(
        &c.http,
        cmd(
            "container_create_request",
            serde_json::json!({"containerId": "tenant-c"}),
        ),
    )
    .await
    .unwrap();
    let created = command(
        &c.http,
        cmd(
            "sandbox_create_request",
            serde_json::json!({"templateId": "busybox", "owner": "tenant-c"}),
        ),
    )
    .await
    .unwrap();
    let sandbox = &created["sandbox"];
    let sid = sandbox["id"].as_str().unwrap().to_string();
    assert_eq!(sandbox["nodeId"], "shared-docker", "{created}");
    assert_eq!(lease(&db, "tenant-c").await.0, "srv_c");

    // An exec sent to A or B runs on C, which tends the sandbox.
    for via in [&a.http, &b.http] {
        let ran = command(
            via,
            cmd(
                "sandbox_exec_request",
                serde_json::json!({"sandboxId": sid, "command": "echo hi"}),
            ),
        )
        .await
        .unwrap();
        assert_eq!(ran["execution"]["stdout"], "hi\n", "{ran}");
    }
    assert_eq!(lease(&db, "tenant-c").await.0, "srv_c", "the lease stayed");

    // A charges the node with what C's sandbox holds (its registry follows the store).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let node = command(
            &a.http,
            cmd(
                "node_get_request",
                serde_json::json!({"nodeId": "shared-docker"}),
            ),
        )
        .await
        .unwrap();
        if node["node"]["running_containers"] == 1 {
            assert_eq!(node["node"]["allocated_memory_mb"], 64, "{node}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A never counted C's sandbox: {node}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // An operator's sandbox (no owner) runs on whichever member holds the unowned lease.
    let unowned = command(
        &b.http,
        cmd(
            "sandbox_create_request",
            serde_json::json!({"templateId": "busybox"}),
        ),
    )
    .await
    .unwrap();
    let uid = unowned["sandbox"]["id"].as_str().unwrap().to_string();
    let ran = command(
        &a.http,
        cmd(
            "sandbox_exec_request",
            serde_json::json!({"sandboxId": uid, "command": "echo op"}),
        ),
    )
    .await
    .unwrap();
    assert_eq!(ran["execution"]["stdout"], "op\n", "{ran}");

    // Every member's sweep (10 s) compares the node's containers with the shared records:
    // none adopts, removes or ends what another member tends.
    tokio::time::sleep(Duration::from_secs(12)).await;
    for s in [&a, &b, &c] {
        assert_eq!(
            counter(&s.http, "agentvm_sandboxes_adopted_total").await,
            0.0,
            "{}",
            s.http
        );
        assert_eq!(
            counter(&s.http, "agentvm_orphans_removed_total").await,
            0.0,
            "{}",
            s.http
        );
    }
    for id in [&sid, &uid] {
        let got = command(
            &b.http,
            cmd("sandbox_get_request", serde_json::json!({"sandboxId": id})),
        )
        .await
        .unwrap();
        assert_eq!(got["sandbox"]["status"], "running", "{got}");
        command(
            &a.http,
            cmd(
                "sandbox_delete_request",
                serde_json::json!({"sandboxId": id}),
            ),
        )
        .await
        .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_containers_spread_over_three_servers_each_with_one_owner() {
    if postgres_skipped("PostgreSQL cluster spread test") {
        return;
    }
    let (store, db) = fresh_schema("spread").await;
    let dir = tempfile::tempdir().unwrap();
    let servers = [
        start(dir.path(), &store, "srv_a", &[]),
        start(dir.path(), &store, "srv_b", &[]),
        start(dir.path(), &store, "srv_c", &[]),
    ];
    let cmd = |t: &str, data: serde_json::Value| serde_json::json!({"type": t, "data": data});
    // Clients spread over the three (as a load balancer would): each container is served by
    // the member its first request reached.
    for i in 0..100 {
        let via = &servers[i % 3].http;
        command(
            via,
            cmd(
                "container_create_request",
                serde_json::json!({"containerId": format!("spread-{i}")}),
            ),
        )
        .await
        .unwrap();
    }
    let rows = db
        .query(
            "SELECT owner, count(*) FROM container_leases WHERE container_id LIKE 'spread-%' \
             AND expires_at > now() GROUP BY owner ORDER BY owner",
            &[],
        )
        .await
        .unwrap();
    let spread: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        spread,
        [
            ("srv_a".to_string(), 34),
            ("srv_b".to_string(), 33),
            ("srv_c".to_string(), 33)
        ]
    );
    // Every member lists all of them, and an image of any container can be made through any
    // member (forwarded to its owner).
    for (i, s) in servers.iter().enumerate() {
        let listed = command(
            &s.http,
            cmd("container_list_request", serde_json::json!({})),
        )
        .await
        .unwrap();
        let ids = listed["containerIds"].as_array().unwrap();
        assert_eq!(
            ids.iter()
                .filter(|c| c.as_str().unwrap().starts_with("spread-"))
                .count(),
            100
        );
        let other = format!("spread-{}", (i + 1) % 3);
        let made = command(
            &s.http,
            cmd(
                "image_create_request",
                serde_json::json!({"containerId": other, "config": {"name": "x"}}),
            ),
        )
        .await
        .unwrap();
        assert!(made["record"]["imageId"].is_string(), "{made}");
    }
    // A client of A streams a 100-delta reply of an image whose container B serves, and C
    // follows the same session: the command is forwarded to B, the events reach A's and C's
    // clients through the shared log, each once.
    let on_a = client(&servers[0].url).await;
    let on_c = client(&servers[2].url).await;
    let image = on_a
        .images()
        .create(
            "spread-1",
            ImageConfig {
                model: Some("mock:long-stream".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .record;
    assert_eq!(lease(&db, "spread-1").await.0, "srv_b");
    let mut on_a_events = on_a.sessions().events(&image.session_id).await.unwrap();
    let mut on_c_events = on_c.sessions().events(&image.session_id).await.unwrap();
    on_a.agents()
        .send_to_image(&image.image_id, "stream")
        .await
        .unwrap();
    for events in [&mut on_a_events, &mut on_c_events] {
        let streamed = turn(events).await;
        let deltas = streamed
            .iter()
            .filter(|p| p.event.type_name() == "text_delta")
            .count();
        assert_eq!(deltas, 100);
        let cursors: Vec<u64> = streamed.iter().filter_map(|p| p.cursor).collect();
        assert!(
            cursors.windows(2).all(|w| w[0] < w[1]),
            "in order, none twice"
        );
    }
    assert_eq!(lease(&db, "spread-1").await.0, "srv_b", "B kept serving it");
}
