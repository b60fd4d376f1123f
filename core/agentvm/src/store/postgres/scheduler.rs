//! The scheduler's tables in the PostgreSQL store (`sched_*`, created by the migrations).
//!
//! Sandbox and execution records, written at every step of every sandbox, are group-committed
//! as the redb store's are ([`CommitQueue`]): a write queues and waits, and the waiter that
//! finds no commit in progress sends everything queued in one transaction (the statements
//! pipelined on one connection, in the order they were queued) and answers every waiter once it
//! commits. One WAL flush and about one round trip then serve a whole batch instead of each
//! record paying its own. A failed transaction fails every write of its batch, with its error.

use super::{json, AtServer, Db};
use crate::error::{Error, Result};
use crate::model::scheduler::{Execution, RuntimeNode, Sandbox, Template, Webhook};
use agentvm_scheduler::{CommitQueue, CommitStats, SchedulerStore};
use std::sync::Arc;

/// Most writes waiting for a commit; more writers wait for room.
const QUEUE_CAPACITY: usize = 1024;

const PUT_SANDBOX: &str = "INSERT INTO sched_sandboxes (id, record) VALUES ($1, $2) \
     ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record";
/// One statement: the sandbox and its executions go together.
const DELETE_SANDBOX: &str =
    "WITH executions AS (DELETE FROM sched_executions WHERE sandbox_id = $1) \
     DELETE FROM sched_sandboxes WHERE id = $1";
const PUT_EXECUTION: &str = "INSERT INTO sched_executions (id, sandbox_id, created_at, record) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE \
     SET sandbox_id = EXCLUDED.sandbox_id, created_at = EXCLUDED.created_at, \
         record = EXCLUDED.record";

/// A write of a sandbox or execution record, queued for the next shared commit.
enum Write {
    Sandbox(Box<Sandbox>),
    DeleteSandbox(String),
    Execution(Box<Execution>),
}

/// [`SchedulerStore`] on the store's pool.
pub(super) struct PostgresSchedulerStore {
    /// The store's pool: the scheduler's tables are in the same database.
    db: Arc<Db>,
    /// Sandbox and execution writes waiting for the next shared commit.
    queue: CommitQueue<Write, bool>,
}

impl PostgresSchedulerStore {
    /// The scheduler's tables on `db` (created by the store's migrations).
    pub(super) fn new(db: Arc<Db>) -> Self {
        PostgresSchedulerStore {
            db,
            queue: CommitQueue::new(QUEUE_CAPACITY),
        }
    }

    /// How many transactions the queued writes took, for how many writes.
    pub(crate) fn commit_stats(&self) -> CommitStats {
        self.queue.stats()
    }

    /// Queues `write` for the next shared commit and waits until it is committed (or failed):
    /// whether it changed a row.
    fn write(&self, write: Write) -> Result<bool> {
        self.queue
            .submit(write, |batch| commit_batch(&self.db, batch))
    }
}

/// Commits `batch` in one transaction: one outcome per write, or the transaction's error for
/// each.
fn commit_batch(db: &Db, batch: Vec<Write>) -> Vec<Result<bool>> {
    let n = batch.len();
    match db.run(commit(db, &batch)) {
        Ok(changed) => changed.into_iter().map(Ok).collect(),
        Err(e) => {
            let (kind, message) = (e.kind(), e.chain());
            (0..n)
                .map(|_| {
                    Err(Error::Remote {
                        kind,
                        message: message.clone(),
                    })
                })
                .collect()
        }
    }
}

async fn commit(db: &Db, batch: &[Write]) -> Result<Vec<bool>> {
    let mut client = db.client().await?;
    if let [write] = batch {
        // A lone write is one statement, its own transaction: no BEGIN and COMMIT round trips.
        let changed = match write {
            Write::Sandbox(s) => {
                let statement = client.prepare_cached(PUT_SANDBOX).await.at(db)?;
                client.execute(&statement, &[&s.id, &json(&**s)]).await
            }
            Write::Execution(x) => {
                let statement = client.prepare_cached(PUT_EXECUTION).await.at(db)?;
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                    [&x.id, &x.sandbox_id, &x.created_at, &json(&**x)];
                client.execute(&statement, &params).await
            }
            Write::DeleteSandbox(id) => {
                let statement = client.prepare_cached(DELETE_SANDBOX).await.at(db)?;
                client.execute(&statement, &[id]).await
            }
        };
        return Ok(vec![changed.at(db)? > 0]);
    }
    let tx = client.transaction().await.at(db)?;
    let put_sandbox = tx.prepare_cached(PUT_SANDBOX).await.at(db)?;
    let delete_sandbox = tx.prepare_cached(DELETE_SANDBOX).await.at(db)?;
    let put_execution = tx.prepare_cached(PUT_EXECUTION).await.at(db)?;
    let records: Vec<_> = batch
        .iter()
        .map(|w| match w {
            Write::Sandbox(s) => Some(serde_json::to_value(&**s)),
            Write::Execution(x) => Some(serde_json::to_value(&**x)),
            Write::DeleteSandbox(_) => None,
        })
        .map(|r| r.transpose())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Internal(format!("encoding a scheduler record: {e}")))?;
    // Each statement is sent when first polled, so joined they are pipelined: sent back to
    // back on the connection and run in this order, their answers read after.
    let statements = batch.iter().zip(&records).map(|(w, record)| {
        let (statement, params): (_, Vec<&(dyn tokio_postgres::types::ToSql + Sync)>) =
            match (w, record) {
                (Write::Sandbox(s), Some(r)) => (&put_sandbox, vec![&s.id, r]),
                (Write::Execution(x), Some(r)) => {
                    (&put_execution, vec![&x.id, &x.sandbox_id, &x.created_at, r])
                }
                (Write::DeleteSandbox(id), _) => (&delete_sandbox, vec![id]),
                // Every put has its record (made above).
                (_, None) => (&delete_sandbox, vec![]),
            };
        let tx = &tx;
        async move { tx.execute(statement, &params).await }
    });
    let changed = futures::future::try_join_all(statements).await.at(db)?;
    tx.commit().await.at(db)?;
    Ok(changed.into_iter().map(|n| n > 0).collect())
}

impl SchedulerStore for PostgresSchedulerStore {
    fn scheduler_instance(&self) -> Result<String> {
        let db = &*self.db;
        db.run(async {
            let client = db.client().await?;
            let candidate = agentvm_model::new_id("sched");
            // The first caller's id wins; everyone reads it back.
            client
                .execute(
                    "INSERT INTO meta (key, value) VALUES ('scheduler_instance', $1) \
                     ON CONFLICT (key) DO NOTHING",
                    &[&candidate],
                )
                .await
                .at(db)?;
            let row = client
                .query_one(
                    "SELECT value FROM meta WHERE key = 'scheduler_instance'",
                    &[],
                )
                .await
                .at(db)?;
            row.try_get(0).at(db)
        })
    }

    fn put_node(&self, node: &RuntimeNode) -> Result<()> {
        let db = &*self.db;
        db.run(db.execute(
            "INSERT INTO sched_nodes (node_id, record) VALUES ($1, $2) \
             ON CONFLICT (node_id) DO UPDATE SET record = EXCLUDED.record",
            &[&node.node_id, &json(node)],
        ))
        .map(drop)
    }

    fn get_node(&self, node_id: &str) -> Result<Option<RuntimeNode>> {
        let db = &*self.db;
        db.run(db.one(
            "SELECT record FROM sched_nodes WHERE node_id = $1",
            &[&node_id],
        ))
    }

    fn list_nodes(&self) -> Result<Vec<RuntimeNode>> {
        let db = &*self.db;
        db.run(db.list("SELECT record FROM sched_nodes ORDER BY node_id", &[]))
    }

    fn touch_nodes(&self, beats: &[(String, i64)]) -> Result<()> {
        if beats.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = beats.iter().map(|(id, _)| id.as_str()).collect();
        let ats: Vec<i64> = beats.iter().map(|(_, at)| *at).collect();
        let db = &*self.db;
        // One statement for the whole batch; a heartbeat never moves the time back.
        db.run(db.execute(
            "UPDATE sched_nodes AS n \
             SET record = jsonb_set(n.record, '{last_heartbeat_at}', to_jsonb(b.at)) \
             FROM unnest($1::text[], $2::int8[]) AS b(id, at) \
             WHERE n.node_id = b.id \
             AND COALESCE((n.record->>'last_heartbeat_at')::int8, 0) < b.at",
            &[&ids, &ats],
        ))
        .map(drop)
    }

    fn delete_node(&self, node_id: &str) -> Result<bool> {
        let db = &*self.db;
        db.run(db.execute("DELETE FROM sched_nodes WHERE node_id = $1", &[&node_id]))
            .map(|n| n > 0)
    }

    fn put_webhook(&self, webhook: &Webhook) -> Result<()> {
        let db = &*self.db;
        db.run(db.execute(
            "INSERT INTO sched_webhooks (id, record) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&webhook.id, &json(webhook)],
        ))
        .map(drop)
    }

    fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        let db = &*self.db;
        db.run(db.list("SELECT record FROM sched_webhooks ORDER BY id", &[]))
    }

    fn delete_webhook(&self, id: &str) -> Result<bool> {
        let db = &*self.db;
        db.run(db.execute("DELETE FROM sched_webhooks WHERE id = $1", &[&id]))
            .map(|n| n > 0)
    }

    fn put_template(&self, template: &Template) -> Result<()> {
        let db = &*self.db;
        db.run(db.execute(
            "INSERT INTO sched_templates (id, record) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&template.id, &json(template)],
        ))
        .map(drop)
    }

    fn get_template(&self, id: &str) -> Result<Option<Template>> {
        let db = &*self.db;
        db.run(db.one("SELECT record FROM sched_templates WHERE id = $1", &[&id]))
    }

    fn list_templates(&self) -> Result<Vec<Template>> {
        let db = &*self.db;
        db.run(db.list("SELECT record FROM sched_templates ORDER BY id", &[]))
    }

    fn delete_template(&self, id: &str) -> Result<bool> {
        let db = &*self.db;
        db.run(db.execute("DELETE FROM sched_templates WHERE id = $1", &[&id]))
            .map(|n| n > 0)
    }

    fn put_sandbox(&self, sandbox: &Sandbox) -> Result<()> {
        self.write(Write::Sandbox(Box::new(sandbox.clone())))
            .map(drop)
    }

    fn get_sandbox(&self, id: &str) -> Result<Option<Sandbox>> {
        let db = &*self.db;
        db.run(db.one("SELECT record FROM sched_sandboxes WHERE id = $1", &[&id]))
    }

    fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        let db = &*self.db;
        db.run(db.list("SELECT record FROM sched_sandboxes ORDER BY id", &[]))
    }

    fn delete_sandbox(&self, id: &str) -> Result<bool> {
        self.write(Write::DeleteSandbox(id.to_string()))
    }

    fn put_execution(&self, execution: &Execution) -> Result<()> {
        self.write(Write::Execution(Box::new(execution.clone())))
            .map(drop)
    }

    fn get_execution(&self, id: &str) -> Result<Option<Execution>> {
        let db = &*self.db;
        db.run(db.one("SELECT record FROM sched_executions WHERE id = $1", &[&id]))
    }

    fn list_executions(&self, sandbox_id: &str) -> Result<Vec<Execution>> {
        let db = &*self.db;
        db.run(db.list(
            "SELECT record FROM sched_executions WHERE sandbox_id = $1 ORDER BY created_at, id",
            &[&sandbox_id],
        ))
    }
}
