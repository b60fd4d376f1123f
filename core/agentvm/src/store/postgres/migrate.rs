//! The PostgreSQL layout: versioned migrations, applied at open.
//!
//! Each migration is a SQL file in `migrations/`, embedded here and applied at most once, in
//! order, in one transaction with the check of the record schema version, under an advisory
//! lock (servers opening one database at once apply each migration once). `schema_migrations`
//! lists what was applied; a database with a migration this build does not know, or a record
//! schema newer than [`SCHEMA_VERSION`], was written by a newer agentvm and is refused.

use super::{AtServer, Db};
use crate::error::{Error, Result};
use crate::store::SCHEMA_VERSION;
use deadpool_postgres::Object;

/// The migrations, in order: (version, name, SQL). Never edit a released one; add the next.
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (2, "cluster", include_str!("migrations/0002_cluster.sql")),
    (
        3,
        "replay_floors",
        include_str!("migrations/0003_replay_floors.sql"),
    ),
    (
        4,
        "replay_by_cursor",
        include_str!("migrations/0004_replay_by_cursor.sql"),
    ),
    (
        5,
        "sched_webhooks",
        include_str!("migrations/0005_sched_webhooks.sql"),
    ),
];

/// The key of the advisory lock that serializes migrations ("agentvm" in ASCII).
const MIGRATION_LOCK: i64 = 0x0061_6765_6e74_766d;

/// Applies the missing migrations and records (or checks) the schema version, atomically.
pub(super) async fn run(db: &Db, client: &mut Object) -> Result<()> {
    let tx = client.transaction().await.at(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .at(db)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations ( \
             version    BIGINT PRIMARY KEY, \
             name       TEXT NOT NULL, \
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )
    .await
    .at(db)?;
    let applied: Vec<i64> = tx
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .at(db)?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<std::result::Result<_, _>>()
        .at(db)?;
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(newest) = applied.iter().copied().max().filter(|v| *v > known) {
        return Err(newer(db, format!("migration {newest}"), format!("{known}")));
    }
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tracing::info!(server = %db.server, version, name, "applying a PostgreSQL migration");
        tx.batch_execute(sql).await.map_err(|e| {
            Error::storage(
                format!(
                    "applying migration {version} ({name}) to PostgreSQL at {}",
                    db.server
                ),
                e,
            )
        })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await
        .at(db)?;
    }
    let stored = tx
        .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
        .await
        .at(db)?;
    match stored {
        None => {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', $1)",
                &[&SCHEMA_VERSION.to_string()],
            )
            .await
            .at(db)?;
        }
        Some(row) => {
            let version = parse_version(db, &row.try_get::<_, String>(0).at(db)?)?;
            if version > SCHEMA_VERSION {
                return Err(newer(
                    db,
                    format!("schema version {version}"),
                    format!("schema version {SCHEMA_VERSION}"),
                ));
            }
        }
    }
    tx.commit().await.at(db)
}

/// The stored schema version.
pub(super) fn parse_version(db: &Db, value: &str) -> Result<u64> {
    value.parse().map_err(|_| Error::Storage {
        message: format!(
            "PostgreSQL at {}: schema_version is {value:?}, not a number",
            db.server
        ),
        source: None,
    })
}

fn newer(db: &Db, found: String, known: String) -> Error {
    Error::Storage {
        message: format!(
            "the database at {} has {found}; this agentvm knows up to {known}: upgrade agentvm",
            db.server
        ),
        source: None,
    }
}
