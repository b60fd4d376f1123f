//! The scheduler's tables: runtime nodes, templates, sandboxes and executions.
//!
//! Same conventions as the rest of the repository: JSON values keyed by id, every write a
//! durable (`Immediate`) commit, so a sandbox the caller saw created is found again by the
//! reconciliation after a crash.

use super::{decode, encode, Repository};
use crate::error::Result;
use crate::scheduler::{Execution, RuntimeNode, Sandbox, Template};
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

const NODES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sched_nodes");
const TEMPLATES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sched_templates");
const SANDBOXES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sched_sandboxes");
const EXECUTIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sched_executions");
const EXECUTIONS_BY_SANDBOX: TableDefinition<'_, (&str, &str), ()> =
    TableDefinition::new("sched_executions_by_sandbox");
const SCHED_META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sched_meta");

/// Creates the scheduler's tables inside the repository's init transaction.
pub(super) fn init_tables(txn: &redb::WriteTransaction) -> Result<()> {
    txn.open_table(NODES)?;
    txn.open_table(TEMPLATES)?;
    txn.open_table(SANDBOXES)?;
    txn.open_table(EXECUTIONS)?;
    txn.open_table(EXECUTIONS_BY_SANDBOX)?;
    txn.open_table(SCHED_META)?;
    Ok(())
}

impl Repository {
    fn put_json<T: Serialize>(
        &self,
        table: TableDefinition<'_, &str, &[u8]>,
        id: &str,
        value: &T,
    ) -> Result<()> {
        let bytes = encode(value)?;
        let txn = self.db.begin_write()?;
        txn.open_table(table)?.insert(id, bytes.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    fn list_json<T: DeserializeOwned>(
        &self,
        table: TableDefinition<'_, &str, &[u8]>,
    ) -> Result<Vec<T>> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(table)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (_, v) = row?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn remove_key(&self, table: TableDefinition<'_, &str, &[u8]>, id: &str) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let removed = txn.open_table(table)?.remove(id)?.is_some();
        txn.commit()?;
        Ok(removed)
    }

    /// The id of the scheduler that owns this repository's sandboxes, created on first use.
    /// Docker containers carry it as a label, so a scheduler only ever reconciles its own.
    pub fn scheduler_instance(&self) -> Result<String> {
        {
            let txn = self.db.begin_read()?;
            let t = txn.open_table(SCHED_META)?;
            if let Some(v) = t.get("instance")? {
                return Ok(String::from_utf8_lossy(v.value()).into_owned());
            }
        }
        let txn = self.db.begin_write()?;
        let id = {
            let mut t = txn.open_table(SCHED_META)?;
            let existing = t
                .get("instance")?
                .map(|v| String::from_utf8_lossy(v.value()).into_owned());
            match existing {
                Some(id) => id,
                None => {
                    let id = crate::model::new_id("sched");
                    t.insert("instance", id.as_bytes())?;
                    id
                }
            }
        };
        txn.commit()?;
        Ok(id)
    }

    // ----- nodes -----

    /// Stores a runtime node (insert or replace).
    pub fn put_node(&self, node: &RuntimeNode) -> Result<()> {
        self.put_json(NODES, &node.node_id, node)
    }

    /// A runtime node by id.
    pub fn get_node(&self, node_id: &str) -> Result<Option<RuntimeNode>> {
        self.get_json(NODES, node_id)
    }

    /// Every runtime node, by id.
    pub fn list_nodes(&self) -> Result<Vec<RuntimeNode>> {
        self.list_json(NODES)
    }

    /// Removes a runtime node; whether it existed.
    pub fn delete_node(&self, node_id: &str) -> Result<bool> {
        self.remove_key(NODES, node_id)
    }

    // ----- templates -----

    /// Stores a template (insert or replace).
    pub fn put_template(&self, template: &Template) -> Result<()> {
        self.put_json(TEMPLATES, &template.id, template)
    }

    /// A template by id.
    pub fn get_template(&self, id: &str) -> Result<Option<Template>> {
        self.get_json(TEMPLATES, id)
    }

    /// Every template, by id.
    pub fn list_templates(&self) -> Result<Vec<Template>> {
        self.list_json(TEMPLATES)
    }

    /// Removes a template; whether it existed.
    pub fn delete_template(&self, id: &str) -> Result<bool> {
        self.remove_key(TEMPLATES, id)
    }

    // ----- sandboxes -----

    /// Stores a sandbox (insert or replace).
    pub fn put_sandbox(&self, sandbox: &Sandbox) -> Result<()> {
        self.put_json(SANDBOXES, &sandbox.id, sandbox)
    }

    /// A sandbox by id.
    pub fn get_sandbox(&self, id: &str) -> Result<Option<Sandbox>> {
        self.get_json(SANDBOXES, id)
    }

    /// Every sandbox, by id.
    pub fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        self.list_json(SANDBOXES)
    }

    /// Removes a sandbox and its executions in one transaction; whether it existed.
    pub fn delete_sandbox(&self, id: &str) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let existed = {
            let existed = txn.open_table(SANDBOXES)?.remove(id)?.is_some();
            let mut index = txn.open_table(EXECUTIONS_BY_SANDBOX)?;
            let mut executions = txn.open_table(EXECUTIONS)?;
            let mut ids = Vec::new();
            for row in index.range((id, "")..)? {
                let (k, _) = row?;
                let (sid, eid) = k.value();
                if sid != id {
                    break;
                }
                ids.push(eid.to_string());
            }
            for eid in &ids {
                index.remove((id, eid.as_str()))?;
                executions.remove(eid.as_str())?;
            }
            existed
        };
        txn.commit()?;
        Ok(existed)
    }

    // ----- executions -----

    /// Stores an execution (insert or replace) and indexes it under its sandbox.
    pub fn put_execution(&self, execution: &Execution) -> Result<()> {
        let bytes = encode(execution)?;
        let txn = self.db.begin_write()?;
        txn.open_table(EXECUTIONS)?
            .insert(execution.id.as_str(), bytes.as_slice())?;
        txn.open_table(EXECUTIONS_BY_SANDBOX)?
            .insert((execution.sandbox_id.as_str(), execution.id.as_str()), ())?;
        txn.commit()?;
        Ok(())
    }

    /// An execution by id.
    pub fn get_execution(&self, id: &str) -> Result<Option<Execution>> {
        self.get_json(EXECUTIONS, id)
    }

    /// The executions of a sandbox, oldest first.
    pub fn list_executions(&self, sandbox_id: &str) -> Result<Vec<Execution>> {
        let txn = self.db.begin_read()?;
        let index = txn.open_table(EXECUTIONS_BY_SANDBOX)?;
        let executions = txn.open_table(EXECUTIONS)?;
        let mut out: Vec<Execution> = Vec::new();
        for row in index.range((sandbox_id, "")..)? {
            let (k, _) = row?;
            let (sid, eid) = k.value();
            if sid != sandbox_id {
                break;
            }
            if let Some(v) = executions.get(eid)? {
                out.push(decode(v.value())?);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }
}
