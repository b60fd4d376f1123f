//! What every call of the PostgreSQL store goes through: the pool, error classification
//! (`Unavailable` when the server cannot be reached, else `Storage`), JSONB records and the
//! statements several methods share.

use super::bridge::Bridge;
use super::CONNECT_TIMEOUT;
use crate::error::{Error, Result};
use crate::model::ContainerRecord;
use deadpool_postgres::{Object, Pool, PoolError};
use serde::{de::DeserializeOwned, Serialize};
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::Row;

/// What every call needs: the pool, the runtime it lives on, and the server's name.
pub(super) struct Db {
    /// Up to [`POOL_SIZE`](super::POOL_SIZE) connections; one the server closed is replaced on the next call.
    pub(super) pool: Pool,
    /// Waits for the async client on the caller's thread (`bridge.rs`).
    pub(super) bridge: Bridge,
    /// `host:port/dbname`, without user or password: for error messages and `Debug`.
    pub(super) server: String,
}

/// `host:port/dbname` of a config (never its user or password).
pub(super) fn describe(config: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            };
            let port = config
                .get_ports()
                .get(i)
                .or(config.get_ports().first())
                .copied()
                .unwrap_or(5432);
            format!("{name}:{port}")
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "localhost:5432".to_string()
    } else {
        hosts.join(",")
    };
    format!("{hosts}/{}", config.get_dbname().unwrap_or("postgres"))
}

/// Turns a tokio-postgres result into the store's, classifying the error.
pub(super) trait AtServer<T> {
    /// The error as `Unavailable` (the server cannot be reached or went away) or `Storage`.
    fn at(self, db: &Db) -> Result<T>;
}

impl<T> AtServer<T> for std::result::Result<T, tokio_postgres::Error> {
    fn at(self, db: &Db) -> Result<T> {
        self.map_err(|e| db.error(e))
    }
}

impl Db {
    /// Runs a call's future for its synchronous caller.
    pub(super) fn run<T: Send>(
        &self,
        future: impl std::future::Future<Output = Result<T>> + Send,
    ) -> Result<T> {
        self.bridge.block_on(future)
    }

    /// A pooled connection (a new one when the pooled ones were closed by the server).
    pub(super) async fn client(&self) -> Result<Object> {
        self.pool.get().await.map_err(|e| match e {
            PoolError::Backend(e) => self.error(e),
            PoolError::Timeout(_) => Error::unavailable(format!(
                "PostgreSQL at {} did not answer in time (no connection within {}s)",
                self.server,
                CONNECT_TIMEOUT.as_secs()
            )),
            other => Error::unavailable(format!("PostgreSQL at {}: {other}", self.server)),
        })
    }

    /// A PostgreSQL error as the store's.
    pub(super) fn error(&self, e: tokio_postgres::Error) -> Error {
        use tokio_postgres::error::SqlState;
        if e.code().is_some_and(|c| *c == SqlState::DISK_FULL) {
            return Error::StorageFull {
                message: format!(
                    "PostgreSQL at {} has no space left on its data directory: free space there; writes resume by themselves",
                    self.server
                ),
                source: Some(Box::new(e)),
            };
        }
        let unreachable = match e.code() {
            Some(code) => {
                code.code().starts_with("08")
                    || *code == SqlState::ADMIN_SHUTDOWN
                    || *code == SqlState::CRASH_SHUTDOWN
                    || *code == SqlState::CANNOT_CONNECT_NOW
                    || *code == SqlState::TOO_MANY_CONNECTIONS
            }
            None => {
                e.is_closed()
                    || std::error::Error::source(&e)
                        .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some())
            }
        };
        if unreachable {
            // tokio-postgres says "error connecting to server"; the cause says why.
            let cause = std::error::Error::source(&e)
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            Error::Unavailable {
                message: format!("PostgreSQL at {} is unavailable: {e}{cause}", self.server),
                source: Some(Box::new(e)),
            }
        } else {
            Error::storage(format!("PostgreSQL at {}", self.server), e)
        }
    }

    /// The records of a query's first column.
    pub(super) async fn list<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<T>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.at(self)?;
        let rows = client.query(&statement, params).await.at(self)?;
        rows.iter().map(|row| record(self, row, 0)).collect()
    }

    /// The record in a query's first column, if it returned a row.
    pub(super) async fn one<T: DeserializeOwned>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<T>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.at(self)?;
        match client.query_opt(&statement, params).await.at(self)? {
            Some(row) => Ok(Some(record(self, &row, 0)?)),
            None => Ok(None),
        }
    }

    /// Runs one statement (its own transaction); how many rows it changed.
    pub(super) async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let client = self.client().await?;
        let statement = client.prepare_cached(sql).await.at(self)?;
        client.execute(&statement, params).await.at(self)
    }
}

/// Column `i` of `row`, a JSONB record.
pub(super) fn record<T: DeserializeOwned>(db: &Db, row: &Row, i: usize) -> Result<T> {
    row.try_get::<_, Json<T>>(i)
        .map(|Json(value)| value)
        .map_err(|e| Error::storage(format!("decoding a record stored in {}", db.server), e))
}

/// A record as a JSONB parameter.
pub(super) fn json<T: Serialize + std::fmt::Debug>(value: &T) -> Json<&T> {
    Json(value)
}

/// A sequence number or cursor as a BIGINT (they are far below `i64::MAX` in practice).
pub(super) fn bigint(what: &str, value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::invalid(format!("{what} {value} is too large")))
}

pub(super) fn seq(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

/// Deletes the replay topics of removed sessions inside `tx`.
pub(super) async fn delete_topics(
    db: &Db,
    tx: &deadpool_postgres::Transaction<'_>,
    sessions: &[String],
) -> Result<()> {
    if sessions.is_empty() {
        return Ok(());
    }
    let statement = tx
        .prepare_cached("DELETE FROM replay WHERE topic = ANY($1)")
        .await
        .at(db)?;
    tx.execute(&statement, &[&sessions]).await.at(db)?;
    Ok(())
}

/// Creates the container unless it exists, inside `tx`; whether it was created.
pub(super) async fn ensure_container(
    db: &Db,
    tx: &deadpool_postgres::Transaction<'_>,
    record: &ContainerRecord,
) -> Result<bool> {
    let statement = tx
        .prepare_cached(
            "INSERT INTO containers (container_id, record) VALUES ($1, $2) \
             ON CONFLICT (container_id) DO NOTHING",
        )
        .await
        .at(db)?;
    let inserted = tx
        .execute(&statement, &[&record.container_id, &json(record)])
        .await
        .at(db)?;
    Ok(inserted == 1)
}

/// Runs `sql` in `tx`; the rows.
pub(super) async fn query(
    db: &Db,
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>> {
    let statement = tx.prepare_cached(sql).await.at(db)?;
    tx.query(&statement, params).await.at(db)
}

/// Runs `sql` in `tx`; how many rows it changed.
pub(super) async fn execute(
    db: &Db,
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64> {
    let statement = tx.prepare_cached(sql).await.at(db)?;
    tx.execute(&statement, params).await.at(db)
}
