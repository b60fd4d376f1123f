//! Fixtures of the PostgreSQL tests: the server (`AGENTVM_TEST_POSTGRES`, a `postgres://` URL;
//! `scripts/setup-postgres.sh` starts one), a schema per test, and the runtime the synchronous
//! tests open their stores on.

use super::PostgresStore;
use std::path::Path;
use std::sync::OnceLock;

/// The test server's URL; `None` (the test is skipped, loudly) with `AGENTVM_SKIP_POSTGRES=1`.
/// Panics with how to get one when neither is set.
pub(crate) fn server_url() -> Option<String> {
    if std::env::var("AGENTVM_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("SKIPPED: PostgreSQL store test (AGENTVM_SKIP_POSTGRES=1)");
        return None;
    }
    match std::env::var("AGENTVM_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => panic!(
            "AGENTVM_TEST_POSTGRES is not set: the PostgreSQL store tests need a server. Run \
             `export AGENTVM_TEST_POSTGRES=\"$(bash scripts/setup-postgres.sh)\"` (as root, or \
             with PostgreSQL installed), or set AGENTVM_SKIP_POSTGRES=1 to skip them"
        ),
    }
}

/// Whether the PostgreSQL tests are skipped (see [`server_url`]).
pub(crate) fn skipped() -> bool {
    server_url().is_none()
}

/// The multi-thread runtime the synchronous tests open stores on (tests may build one).
pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The URL of a schema of its own for `dir` (created if missing): the same directory gives
/// the same schema, so a test can close its store and open it again.
pub(crate) fn schema_url(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let server = server_url().expect("the PostgreSQL tests are not skipped");
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut hasher);
    std::process::id().hash(&mut hasher);
    let schema = format!("t_{:016x}", hasher.finish());
    runtime().block_on(async {
        let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to AGENTVM_TEST_POSTGRES ({server}): {e}"));
        let connection = tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
            .await
            .unwrap();
        drop(client);
        let _ = connection.await;
    });
    let separator = if server.contains('?') { '&' } else { '?' };
    format!("{server}{separator}options=-c%20search_path%3D{schema}")
}

/// A store in the schema of `dir`, opened on [`runtime`].
pub(crate) fn open(dir: &Path) -> PostgresStore {
    let url = schema_url(dir);
    runtime().block_on(PostgresStore::open(&url)).unwrap()
}
