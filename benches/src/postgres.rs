//! PostgreSQL fixtures for the benches that need a database: the server named by
//! `AGENTVM_BENCH_POSTGRES` (a `postgres://` URL) and a schema of one's own on it, so a bench
//! starts from empty tables and leaves nothing behind in the database's other schemas.

/// The variable naming the PostgreSQL server the PostgreSQL benches use.
pub const POSTGRES_VAR: &str = "AGENTVM_BENCH_POSTGRES";

/// `AGENTVM_BENCH_POSTGRES` when set and not empty; `None` skips the PostgreSQL benches.
pub fn bench_postgres_url() -> Option<String> {
    std::env::var(POSTGRES_VAR).ok().filter(|u| !u.is_empty())
}

/// The schema name `bench_<name>_<pid>`.
fn schema_name(name: &str) -> String {
    format!("bench_{name}_{}", std::process::id())
}

/// Drops and creates schema `bench_<name>_<pid>` on `server`; returns the URL whose
/// connections use it (`?options=-c search_path=...`, as `PostgresStore::open` reads it).
/// Must run inside a tokio runtime. Panics, naming the server, when it cannot.
pub async fn fresh_schema(server: &str, name: &str) -> String {
    let schema = schema_name(name);
    execute(
        server,
        &format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"),
    )
    .await;
    let separator = if server.contains('?') { '&' } else { '?' };
    format!("{server}{separator}options=-c%20search_path%3D{schema}")
}

/// Drops the schema [`fresh_schema`] made for `name`, with everything in it.
pub async fn drop_schema(server: &str, name: &str) {
    let schema = schema_name(name);
    execute(server, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
}

/// Runs `sql` on a connection of its own.
async fn execute(server: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(server, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to {POSTGRES_VAR} ({server}): {e}"));
    let connection = tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql} on {server}: {e}"));
    drop(client);
    let _ = connection.await;
}
