//! The scheduler's tables in the PostgreSQL store (`sched_*`, created by the migrations).

use super::{json, AtServer, Db};
use crate::error::Result;
use crate::model::scheduler::{Execution, RuntimeNode, Sandbox, Template, Webhook};
use agentvm_scheduler::SchedulerStore;
use std::sync::Arc;

/// [`SchedulerStore`] on the store's pool.
pub(super) struct PostgresSchedulerStore {
    /// The store's pool: the scheduler's tables are in the same database.
    db: Arc<Db>,
}

impl PostgresSchedulerStore {
    /// The scheduler's tables on `db` (created by the store's migrations).
    pub(super) fn new(db: Arc<Db>) -> Self {
        PostgresSchedulerStore { db }
    }
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
        let db = &*self.db;
        db.run(db.execute(
            "INSERT INTO sched_sandboxes (id, record) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET record = EXCLUDED.record",
            &[&sandbox.id, &json(sandbox)],
        ))
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
        let db = &*self.db;
        // One statement, so one transaction: the sandbox and its executions go together.
        db.run(async {
            let client = db.client().await?;
            let statement = client
                .prepare_cached(
                    "WITH executions AS (DELETE FROM sched_executions WHERE sandbox_id = $1) \
                     DELETE FROM sched_sandboxes WHERE id = $1",
                )
                .await
                .at(db)?;
            Ok(client.execute(&statement, &[&id]).await.at(db)? > 0)
        })
    }

    fn put_execution(&self, execution: &Execution) -> Result<()> {
        let db = &*self.db;
        db.run(db.execute(
            "INSERT INTO sched_executions (id, sandbox_id, created_at, record) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE \
             SET sandbox_id = EXCLUDED.sandbox_id, created_at = EXCLUDED.created_at, \
                 record = EXCLUDED.record",
            &[
                &execution.id,
                &execution.sandbox_id,
                &execution.created_at,
                &json(execution),
            ],
        ))
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
