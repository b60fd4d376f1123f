//! The scheduler's tables in redb: runtime nodes, templates, sandboxes and executions.
//!
//! They live in the same database file as the runtime's records (the runtime hands its
//! `redb::Database` over), each write a durable (`Immediate`) commit, so a sandbox the caller
//! saw created is found again by the reconciliation after a crash.

use super::SchedulerStore;
use agentvm_model::scheduler::{Execution, RuntimeNode, Sandbox, Template, Webhook};
use agentvm_model::{Error, Result};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use std::sync::Arc;

const NODES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sched_nodes");
const TEMPLATES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sched_templates");
const SANDBOXES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sched_sandboxes");
const EXECUTIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sched_executions");
const EXECUTIONS_BY_SANDBOX: TableDefinition<'_, (&str, &str), ()> =
    TableDefinition::new("sched_executions_by_sandbox");
const WEBHOOKS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sched_webhooks");
const SCHED_META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sched_meta");

fn db(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::storage("redb", e)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encoding a record: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::storage("decoding a stored record", e))
}

/// The scheduler's tables in a redb database (the runtime's, or one of its own).
#[derive(Clone)]
pub struct RedbSchedulerStore {
    db: Arc<Database>,
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
        Ok(RedbSchedulerStore { db: database })
    }

    /// The scheduler's tables in a database of their own, in memory.
    pub fn in_memory() -> Result<Self> {
        let database = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(db)?;
        Self::open(Arc::new(database))
    }
}

impl RedbSchedulerStore {
    fn put_json<T: Serialize>(
        &self,
        table: TableDefinition<'_, &str, &[u8]>,
        id: &str,
        value: &T,
    ) -> Result<()> {
        let bytes = encode(value)?;
        let txn = self.db.begin_write().map_err(db)?;
        txn.open_table(table)
            .map_err(db)?
            .insert(id, bytes.as_slice())
            .map_err(db)?;
        txn.commit().map_err(db)?;
        Ok(())
    }

    fn list_json<T: DeserializeOwned>(
        &self,
        table: TableDefinition<'_, &str, &[u8]>,
    ) -> Result<Vec<T>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(table).map_err(db)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db)? {
            let (_, v) = row.map_err(db)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn remove_key(&self, table: TableDefinition<'_, &str, &[u8]>, id: &str) -> Result<bool> {
        let txn = self.db.begin_write().map_err(db)?;
        let removed = txn
            .open_table(table)
            .map_err(db)?
            .remove(id)
            .map_err(db)?
            .is_some();
        txn.commit().map_err(db)?;
        Ok(removed)
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        table: TableDefinition<'_, &str, &[u8]>,
        id: &str,
    ) -> Result<Option<T>> {
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
        let txn = self.db.begin_write().map_err(db)?;
        let existed = {
            let existed = txn
                .open_table(SANDBOXES)
                .map_err(db)?
                .remove(id)
                .map_err(db)?
                .is_some();
            let mut index = txn.open_table(EXECUTIONS_BY_SANDBOX).map_err(db)?;
            let mut executions = txn.open_table(EXECUTIONS).map_err(db)?;
            let mut ids = Vec::new();
            for row in index.range((id, "")..).map_err(db)? {
                let (k, _) = row.map_err(db)?;
                let (sid, eid) = k.value();
                if sid != id {
                    break;
                }
                ids.push(eid.to_string());
            }
            for eid in &ids {
                index.remove((id, eid.as_str())).map_err(db)?;
                executions.remove(eid.as_str()).map_err(db)?;
            }
            existed
        };
        txn.commit().map_err(db)?;
        Ok(existed)
    }

    // ----- executions -----

    /// Stores an execution (insert or replace) and indexes it under its sandbox.
    fn put_execution(&self, execution: &Execution) -> Result<()> {
        let bytes = encode(execution)?;
        let txn = self.db.begin_write().map_err(db)?;
        txn.open_table(EXECUTIONS)
            .map_err(db)?
            .insert(execution.id.as_str(), bytes.as_slice())
            .map_err(db)?;
        txn.open_table(EXECUTIONS_BY_SANDBOX)
            .map_err(db)?
            .insert((execution.sandbox_id.as_str(), execution.id.as_str()), ())
            .map_err(db)?;
        txn.commit().map_err(db)?;
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
