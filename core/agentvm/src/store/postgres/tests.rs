//! What only the PostgreSQL backend promises; the rest is in the conformance suite.

use super::testing::{self, runtime, schema_url};
use super::PostgresStore;
use crate::error::ErrorKind;
use crate::model::{Definition, ImageRecord, Message, SessionRecord};
use crate::store::{Store, SCHEMA_VERSION};
use std::sync::Arc;

/// A store in a schema of its own, and its URL.
fn fresh() -> Option<(tempfile::TempDir, String, PostgresStore)> {
    testing::server_url()?;
    let dir = tempfile::tempdir().unwrap();
    let url = schema_url(dir.path());
    let store = runtime().block_on(PostgresStore::open(&url)).unwrap();
    Some((dir, url, store))
}

fn with_session(store: &dyn Store, session_id: &str) {
    let image = ImageRecord {
        image_id: format!("img_{session_id}"),
        container_id: "c".into(),
        session_id: session_id.into(),
        name: "n".into(),
        description: None,
        definition_name: None,
        definition: Definition::default(),
        created_at: 1,
        updated_at: 1,
    };
    let session = SessionRecord {
        session_id: session_id.into(),
        image_id: image.image_id.clone(),
        container_id: "c".into(),
        title: None,
        created_at: 1,
        updated_at: 1,
    };
    store.create_image(&image, &session).unwrap();
}

fn message(id: &str) -> Message {
    Message::user(id.into(), format!("text of {id}").into(), 1)
}

/// Runs SQL in the test's schema.
fn sql(url: &str, statements: &str) {
    runtime().block_on(async {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .unwrap();
        let connection = tokio::spawn(connection);
        client.batch_execute(statements).await.unwrap();
        drop(client);
        let _ = connection.await;
    });
}

#[test]
fn migrations_are_recorded_and_applied_once() {
    let Some((_dir, url, store)) = fresh() else {
        return;
    };
    drop(store);
    let again = runtime().block_on(PostgresStore::open(&url)).unwrap();
    assert_eq!(again.schema_version().unwrap(), SCHEMA_VERSION);
    let versions: Vec<i64> = runtime().block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .query(
                "SELECT version FROM schema_migrations ORDER BY version",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    });
    let known: Vec<i64> = super::migrate::MIGRATIONS.iter().map(|m| m.0).collect();
    assert_eq!(versions, known);
}

#[test]
fn a_database_of_a_newer_schema_is_refused() {
    let Some((_dir, url, store)) = fresh() else {
        return;
    };
    drop(store);
    sql(
        &url,
        &format!(
            "UPDATE meta SET value = '{}' WHERE key = 'schema_version'",
            SCHEMA_VERSION + 1
        ),
    );
    let e = runtime().block_on(PostgresStore::open(&url)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Storage);
    assert!(e.to_string().contains("upgrade agentvm"), "{e}");
}

#[test]
fn a_database_with_an_unknown_migration_is_refused() {
    let Some((_dir, url, store)) = fresh() else {
        return;
    };
    drop(store);
    sql(
        &url,
        "INSERT INTO schema_migrations (version, name) VALUES (9999, 'from the future')",
    );
    let e = runtime().block_on(PostgresStore::open(&url)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Storage);
    assert!(e.to_string().contains("migration 9999"), "{e}");
    assert!(e.to_string().contains("upgrade agentvm"), "{e}");
}

#[test]
fn an_unreachable_server_is_unavailable_and_named() {
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let e = runtime()
        .block_on(PostgresStore::open(
            "postgres://agentvm@127.0.0.1:1/agentvm",
        ))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.to_string().contains("127.0.0.1:1/agentvm"), "{e}");
}

#[test]
fn a_url_that_is_not_postgres_is_invalid_input() {
    let e = runtime()
        .block_on(PostgresStore::open("postgres://host:notaport/db"))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
}

#[tokio::test]
async fn a_current_thread_runtime_is_refused_with_a_reason() {
    // Refused before connecting: no server needed.
    let e = PostgresStore::open("postgres://agentvm@127.0.0.1:1/agentvm")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.to_string().contains("multi-thread runtime"), "{e}");
}

/// The bridge's rule (bridge.rs): a call straight from async code on a runtime worker neither
/// panics nor deadlocks, even when every worker is making one at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_from_async_workers_neither_panic_nor_deadlock() {
    if testing::skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = tokio::task::spawn_blocking({
        let path = dir.path().to_path_buf();
        move || schema_url(&path)
    })
    .await
    .unwrap();
    let store = Arc::new(PostgresStore::open(&url).await.unwrap());
    with_session(&*store, "sess_1");
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..5 {
                    // No spawn_blocking: the store is called on the worker itself.
                    store
                        .append_message("sess_1", &message(&format!("m{t}_{i}")))
                        .unwrap();
                }
            })
        })
        .collect();
    let all = futures::future::join_all(tasks);
    let done = tokio::time::timeout(std::time::Duration::from_secs(60), all)
        .await
        .expect("calls from async workers finish");
    for r in done {
        r.unwrap();
    }
    assert_eq!(store.count_messages("sess_1").unwrap(), 40);
}

/// A current-thread runtime cannot host the store, but its async code may still call one
/// opened elsewhere (the call waits on a thread of its own).
#[test]
fn calls_from_a_current_thread_runtime_work() {
    let Some((_dir, _url, store)) = fresh() else {
        return;
    };
    with_session(&store, "sess_1");
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let seqs = other.block_on(async {
        let mut seqs = Vec::new();
        for i in 0..3 {
            seqs.push(
                store
                    .append_message("sess_1", &message(&format!("m{i}")))
                    .unwrap(),
            );
        }
        seqs
    });
    assert_eq!(seqs, [0, 1, 2]);
}

/// Two stores on one database (two servers) share sequence numbers: appends from both get
/// consecutive numbers, none twice.
#[test]
fn appends_through_two_pools_get_consecutive_seqs() {
    let Some((_dir, url, first)) = fresh() else {
        return;
    };
    let second = runtime().block_on(PostgresStore::open(&url)).unwrap();
    with_session(&first, "sess_1");
    let mut seqs: Vec<u64> = std::thread::scope(|scope| {
        let handles: Vec<_> = [&first, &second]
            .into_iter()
            .enumerate()
            .map(|(n, store)| {
                scope.spawn(move || {
                    (0..20)
                        .map(|i| {
                            store
                                .append_message("sess_1", &message(&format!("m{n}_{i}")))
                                .unwrap()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    seqs.sort();
    assert_eq!(seqs, (0..40).collect::<Vec<u64>>());
    assert_eq!(second.list_messages("sess_1").unwrap().len(), 40);
}

/// Servers starting together on an empty database agree: each migration is applied once (the
/// advisory lock), and every open succeeds.
#[test]
fn first_opens_racing_to_migrate_agree() {
    if testing::skipped() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = schema_url(dir.path());
    let opened: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| runtime().block_on(PostgresStore::open(&url))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for store in opened {
        let store = store.unwrap_or_else(|e| panic!("a racing open failed: {}", e.chain()));
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
    }
    let applied: i64 = runtime().block_on(async {
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .query_one("SELECT count(*) FROM schema_migrations", &[])
            .await
            .unwrap()
            .get(0)
    });
    assert_eq!(applied, super::migrate::MIGRATIONS.len() as i64);
}

#[test]
fn a_scheduler_write_whose_transaction_fails_reports_the_database_error_and_later_writes_land() {
    let Some((_dir, url, store)) = fresh() else {
        return;
    };
    let sched = store.scheduler_store().unwrap();
    sql(
        &url,
        "ALTER TABLE sched_sandboxes ADD CONSTRAINT no_bad_sandbox CHECK (id <> 'sbx_bad')",
    );
    let bad = crate::store::conformance::sandbox("sbx_bad");
    let e = sched.put_sandbox(&bad).unwrap_err();
    assert!(e.to_string().contains("no_bad_sandbox"), "{e}");
    assert!(sched.get_sandbox("sbx_bad").unwrap().is_none());
    // Writes from several threads at once, one of them refused: the refused one fails (with
    // any write that shared its transaction), and every write that reported success is there.
    let outcomes: Vec<(String, bool)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let sched = sched.clone();
                s.spawn(move || {
                    let id = if i == 3 {
                        "sbx_bad".to_string()
                    } else {
                        format!("sbx_{i}")
                    };
                    let ok = sched
                        .put_sandbox(&crate::store::conformance::sandbox(&id))
                        .is_ok();
                    (id, ok)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (id, ok) in &outcomes {
        assert_eq!(sched.get_sandbox(id).unwrap().is_some(), *ok, "{id}");
    }
    assert!(outcomes.iter().any(|(id, ok)| id == "sbx_bad" && !ok));
    // The queue and the pool go on after a failed transaction.
    let good = crate::store::conformance::sandbox("sbx_good");
    sched.put_sandbox(&good).unwrap();
    assert_eq!(sched.get_sandbox("sbx_good").unwrap(), Some(good));
    let stats = store.scheduler_commit_stats();
    assert!(stats.writes >= 10 && stats.commits >= 3, "{stats:?}");
    assert!(stats.commits <= stats.writes, "{stats:?}");
}
