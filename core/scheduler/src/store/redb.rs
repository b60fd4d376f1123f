//! The scheduler's tables in redb: runtime nodes, templates, sandboxes and executions.
//!
//! They live in the same database file as the runtime's records (the runtime hands its
//! `redb::Database` over). Every write is durable (an `Immediate` commit) before it returns, so
//! a sandbox the caller saw created is found again by the reconciliation after a crash. Writes
//! made at the same time share commits (group commit, see `store/commit_queue.rs`): the writes
//! queued while one commit is in progress go into the next as one write transaction, so the
//! rate of durable writes is no longer capped by the disk's commit rate.

#[cfg(test)]
mod tests;

use super::commit_queue::{CommitQueue, CommitStats};
use super::SchedulerStore;
use agentvm_model::scheduler::{Execution, RuntimeNode, Sandbox, Template, Webhook};
use agentvm_model::{Error, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;

/// A table of JSON records by id.
type Table = TableDefinition<'static, &'static str, &'static [u8]>;

const NODES: Table = TableDefinition::new("sched_nodes");
const TEMPLATES: Table = TableDefinition::new("sched_templates");
const SANDBOXES: Table = TableDefinition::new("sched_sandboxes");
const EXECUTIONS: Table = TableDefinition::new("sched_executions");
const EXECUTIONS_BY_SANDBOX: TableDefinition<'_, (&str, &str), ()> =
    TableDefinition::new("sched_executions_by_sandbox");
const WEBHOOKS: Table = TableDefinition::new("sched_webhooks");
const SCHED_META: Table = TableDefinition::new("sched_meta");

/// Most writes queued behind a commit before more writers wait for room (at about 1 KiB a
/// sandbox record, about 1 MiB of queued records).
const QUEUE_CAPACITY: usize = 1024;

fn db(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::storage("redb", e)
}

/// One write of a batch; its outcome is whether the record existed (for removals).
enum Write {
    /// Insert or replace `key` in `table`.
    Put {
        table: Table,
        key: String,
        bytes: Vec<u8>,
    },
    /// Insert or replace an execution and index it under its sandbox.
    PutExecution {
        id: String,
        sandbox_id: String,
        bytes: Vec<u8>,
    },
    /// Remove `key` from `table`.
    Remove { table: Table, key: String },
    /// Remove a sandbox and its executions.
    DeleteSandbox { id: String },
}

impl Write {
    /// Applies the write inside `txn`; whether the record existed before.
    fn apply(&self, txn: &WriteTransaction) -> std::result::Result<bool, redb::Error> {
        match self {
            Write::Put { table, key, bytes } => Ok(txn
                .open_table(*table)?
                .insert(key.as_str(), bytes.as_slice())?
                .is_some()),
            Write::PutExecution {
                id,
                sandbox_id,
                bytes,
            } => {
                let existed = txn
                    .open_table(EXECUTIONS)?
                    .insert(id.as_str(), bytes.as_slice())?
                    .is_some();
                txn.open_table(EXECUTIONS_BY_SANDBOX)?
                    .insert((sandbox_id.as_str(), id.as_str()), ())?;
                Ok(existed)
            }
            Write::Remove { table, key } => {
                Ok(txn.open_table(*table)?.remove(key.as_str())?.is_some())
            }
            Write::DeleteSandbox { id } => {
                let existed = txn.open_table(SANDBOXES)?.remove(id.as_str())?.is_some();
                let mut index = txn.open_table(EXECUTIONS_BY_SANDBOX)?;
                let mut executions = txn.open_table(EXECUTIONS)?;
                let mut ids = Vec::new();
                for row in index.range((id.as_str(), "")..)? {
                    let (k, _) = row?;
                    let (sid, eid) = k.value();
                    if sid != id {
                        break;
                    }
                    ids.push(eid.to_string());
                }
                for eid in &ids {
                    index.remove((id.as_str(), eid.as_str()))?;
                    executions.remove(eid.as_str())?;
                }
                Ok(existed)
            }
        }
    }
}

/// Writes `batch` in one durable write transaction: one outcome per write, in order. A failure
/// anywhere fails every write of the batch (nothing of it was committed), each with a copy of
/// the error.
fn commit_batch(database: &Database, batch: Vec<Write>) -> Vec<Result<bool>> {
    let n = batch.len();
    let committed = (|| -> std::result::Result<Vec<bool>, redb::Error> {
        // Durability::Immediate, redb's default: the commit returns once the batch is on disk.
        let txn = database.begin_write()?;
        let existed = batch
            .iter()
            .map(|w| w.apply(&txn))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        txn.commit()?;
        Ok(existed)
    })();
    match committed {
        Ok(existed) => existed.into_iter().map(Ok).collect(),
        Err(e) => {
            if n > 1 {
                tracing::debug!(records = n, error = %e, "a batch of scheduler records failed");
            }
            (0..n).map(|_| Err(batch_error(&e, n))).collect()
        }
    }
}

/// The error a write of a failed batch of `n` reports: the redb error behind it, with the
/// storage error (I/O, full disk, closed or poisoned database) kept as the source, so callers
/// that react to I/O failures (the runtime reopens its file) see it as if the write had been
/// committed alone.
fn batch_error(e: &redb::Error, n: usize) -> Error {
    let message = if n > 1 {
        format!("redb (a commit of {n} scheduler records)")
    } else {
        "redb".to_string()
    };
    match storage_copy(e) {
        Some(storage) => Error::storage(message, storage),
        None => Error::Storage {
            message: format!("{message}: {e}"),
            source: None,
        },
    }
}

/// A copy of the storage error behind `e` (redb errors are not `Clone`).
fn storage_copy(e: &redb::Error) -> Option<redb::StorageError> {
    use redb::StorageError as S;
    Some(match e {
        redb::Error::Io(io) => S::Io(io_copy(io)),
        redb::Error::PreviousIo => S::PreviousIo,
        redb::Error::DatabaseClosed => S::DatabaseClosed,
        redb::Error::Corrupted(m) => S::Corrupted(m.clone()),
        redb::Error::ValueTooLarge(len) => S::ValueTooLarge(*len),
        redb::Error::LockPoisoned(at) => S::LockPoisoned(at),
        _ => return None,
    })
}

/// A copy of an I/O error: the OS error code when there is one (a full disk stays `ENOSPC`),
/// otherwise its kind and message.
fn io_copy(io: &std::io::Error) -> std::io::Error {
    match io.raw_os_error() {
        Some(code) => std::io::Error::from_raw_os_error(code),
        None => std::io::Error::new(io.kind(), io.to_string()),
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encoding a record: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::storage("decoding a stored record", e))
}

/// The scheduler's tables in a redb database (the runtime's, or one of its own).
///
/// Writes block until durable; writes from several threads at once share commits. Clones
/// share the database and the commit queue.
#[derive(Clone)]
pub struct RedbSchedulerStore {
    db: Arc<Database>,
    /// Writes waiting for the next commit; shared by clones, so they batch together.
    queue: Arc<CommitQueue<Write, bool>>,
}

impl std::fmt::Debug for RedbSchedulerStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbSchedulerStore").finish_non_exhaustive()
    }
}

impl RedbSchedulerStore {
    /// The scheduler's tables in `db`, created when missing.
    pub fn open(database: Arc<Database>) -> Result<Self> {
        let txn = database.begin_write().map_err(db)?;
        txn.open_table(NODES).map_err(db)?;
        txn.open_table(TEMPLATES).map_err(db)?;
        txn.open_table(SANDBOXES).map_err(db)?;
        txn.open_table(EXECUTIONS).map_err(db)?;
        txn.open_table(EXECUTIONS_BY_SANDBOX).map_err(db)?;
        txn.open_table(SCHED_META).map_err(db)?;
        txn.open_table(WEBHOOKS).map_err(db)?;
        txn.commit().map_err(db)?;
        Ok(RedbSchedulerStore {
            db: database,
            queue: Arc::new(CommitQueue::new(QUEUE_CAPACITY)),
        })
    }

    /// The scheduler's tables in a database of their own, in memory.
    pub fn in_memory() -> Result<Self> {
        let database = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(db)?;
        Self::open(Arc::new(database))
    }

    /// How many commits this store (and its clones) made for how many writes: writes per
    /// commit is how much group commit saved.
    pub fn commit_stats(&self) -> CommitStats {
        self.queue.stats()
    }

    /// Queues `write` for the next shared commit and waits until it is durable (or failed).
    fn write(&self, write: Write) -> Result<bool> {
        self.queue
            .submit(write, |batch| commit_batch(&self.db, batch))
    }
}

impl RedbSchedulerStore {
    fn put_json<T: Serialize>(&self, table: Table, id: &str, value: &T) -> Result<()> {
        let bytes = encode(value)?;
        self.write(Write::Put {
            table,
            key: id.to_string(),
            bytes,
        })?;
        Ok(())
    }

    fn list_json<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(table).map_err(db)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db)? {
            let (_, v) = row.map_err(db)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn remove_key(&self, table: Table, id: &str) -> Result<bool> {
        self.write(Write::Remove {
            table,
            key: id.to_string(),
        })
    }

    fn get_json<T: DeserializeOwned>(&self, table: Table, id: &str) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(table).map_err(db)?;
        match t.get(id).map_err(db)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }
}

impl SchedulerStore for RedbSchedulerStore {
    /// The id of the scheduler that owns this store's sandboxes, created on first use.
    /// Docker containers carry it as a label, so a scheduler only ever reconciles its own.
    fn scheduler_instance(&self) -> Result<String> {
        {
            let txn = self.db.begin_read().map_err(db)?;
            let t = txn.open_table(SCHED_META).map_err(db)?;
            if let Some(v) = t.get("instance").map_err(db)? {
                return Ok(String::from_utf8_lossy(v.value()).into_owned());
            }
        }
        let txn = self.db.begin_write().map_err(db)?;
        let id = {
            let mut t = txn.open_table(SCHED_META).map_err(db)?;
            let existing = t
                .get("instance")
                .map_err(db)?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            match existing {
                Some(id) => id,
                None => {
                    let id = agentvm_model::new_id("sched");
                    t.insert("instance", id.as_bytes()).map_err(db)?;
                    id
                }
            }
        };
        txn.commit().map_err(db)?;
        Ok(id)
    }

    // ----- nodes -----

    /// Stores a runtime node (insert or replace).
    fn put_node(&self, node: &RuntimeNode) -> Result<()> {
        self.put_json(NODES, &node.node_id, node)
    }

    /// A runtime node by id.
    fn get_node(&self, node_id: &str) -> Result<Option<RuntimeNode>> {
        self.get_json(NODES, node_id)
    }

    /// Every runtime node, by id.
    fn list_nodes(&self) -> Result<Vec<RuntimeNode>> {
        self.list_json(NODES)
    }

    /// Removes a runtime node; whether it existed.
    fn delete_node(&self, node_id: &str) -> Result<bool> {
        self.remove_key(NODES, node_id)
    }

    // ----- templates -----

    /// Stores a template (insert or replace).
    fn put_template(&self, template: &Template) -> Result<()> {
        self.put_json(TEMPLATES, &template.id, template)
    }

    /// A template by id.
    fn get_template(&self, id: &str) -> Result<Option<Template>> {
        self.get_json(TEMPLATES, id)
    }

    /// Every template, by id.
    fn list_templates(&self) -> Result<Vec<Template>> {
        self.list_json(TEMPLATES)
    }

    /// Removes a template; whether it existed.
    fn delete_template(&self, id: &str) -> Result<bool> {
        self.remove_key(TEMPLATES, id)
    }

    // ----- webhooks -----

    /// Stores a webhook (insert or replace).
    fn put_webhook(&self, webhook: &Webhook) -> Result<()> {
        self.put_json(WEBHOOKS, &webhook.id, webhook)
    }

    /// Every webhook, by id.
    fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        self.list_json(WEBHOOKS)
    }

    /// Removes a webhook; whether it existed.
    fn delete_webhook(&self, id: &str) -> Result<bool> {
        self.remove_key(WEBHOOKS, id)
    }

    // ----- sandboxes -----

    /// Stores a sandbox (insert or replace).
    fn put_sandbox(&self, sandbox: &Sandbox) -> Result<()> {
        self.put_json(SANDBOXES, &sandbox.id, sandbox)
    }

    /// A sandbox by id.
    fn get_sandbox(&self, id: &str) -> Result<Option<Sandbox>> {
        self.get_json(SANDBOXES, id)
    }

    /// Every sandbox, by id.
    fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        self.list_json(SANDBOXES)
    }

    /// Removes a sandbox and its executions in one transaction; whether it existed.
    fn delete_sandbox(&self, id: &str) -> Result<bool> {
        self.write(Write::DeleteSandbox { id: id.to_string() })
    }

    // ----- executions -----

    /// Stores an execution (insert or replace) and indexes it under its sandbox.
    fn put_execution(&self, execution: &Execution) -> Result<()> {
        let bytes = encode(execution)?;
        self.write(Write::PutExecution {
            id: execution.id.clone(),
            sandbox_id: execution.sandbox_id.clone(),
            bytes,
        })?;
        Ok(())
    }

    /// An execution by id.
    fn get_execution(&self, id: &str) -> Result<Option<Execution>> {
        self.get_json(EXECUTIONS, id)
    }

    /// The executions of a sandbox, oldest first.
    fn list_executions(&self, sandbox_id: &str) -> Result<Vec<Execution>> {
        let txn = self.db.begin_read().map_err(db)?;
        let index = txn.open_table(EXECUTIONS_BY_SANDBOX).map_err(db)?;
        let executions = txn.open_table(EXECUTIONS).map_err(db)?;
        let mut out: Vec<Execution> = Vec::new();
        for row in index.range((sandbox_id, "")..).map_err(db)? {
            let (k, _) = row.map_err(db)?;
            let (sid, eid) = k.value();
            if sid != sandbox_id {
                break;
            }
            if let Some(v) = executions.get(eid).map_err(db)? {
                out.push(decode(v.value())?);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }
}
