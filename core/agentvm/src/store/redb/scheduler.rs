//! The scheduler's tables in the runtime's redb file, through the shared [`Handle`], so they
//! follow a reopen after a failed write and their own failed writes start one.

use super::handle::Handle;
use crate::error::Result;
use agentvm_model::scheduler::{Execution, RuntimeNode, Sandbox, Template, Webhook};
use agentvm_scheduler::{RedbSchedulerStore, SchedulerStore};
use std::sync::Arc;

/// [`RedbSchedulerStore`] on the database the handle has open now.
pub(crate) struct SchedulerTables {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for SchedulerTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerTables").finish_non_exhaustive()
    }
}

impl SchedulerTables {
    /// Creates the tables when missing.
    pub(super) fn open(handle: Arc<Handle>) -> Result<Self> {
        let tables = SchedulerTables { handle };
        tables.tables()?;
        Ok(tables)
    }

    /// The tables on the current database, opened again after a reopen.
    fn tables(&self) -> Result<Arc<RedbSchedulerStore>> {
        let database = self.handle.database()?;
        let mut cached = self
            .handle
            .scheduler
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(tables) = cached.as_ref() {
            return Ok(tables.clone());
        }
        let tables = Arc::new(
            RedbSchedulerStore::open(database).map_err(|e| self.handle.scheduler_failed(e))?,
        );
        *cached = Some(tables.clone());
        Ok(tables)
    }

    /// Runs `f` on the tables; an I/O failure is reported (and recovered from) like ours.
    fn with<T>(&self, f: impl FnOnce(&RedbSchedulerStore) -> Result<T>) -> Result<T> {
        let tables = self.tables()?;
        f(&tables).map_err(|e| self.handle.scheduler_failed(e))
    }
}

impl SchedulerStore for SchedulerTables {
    fn scheduler_instance(&self) -> Result<String> {
        self.with(|t| t.scheduler_instance())
    }
    fn put_node(&self, node: &RuntimeNode) -> Result<()> {
        self.with(|t| t.put_node(node))
    }
    fn get_node(&self, node_id: &str) -> Result<Option<RuntimeNode>> {
        self.with(|t| t.get_node(node_id))
    }
    fn list_nodes(&self) -> Result<Vec<RuntimeNode>> {
        self.with(|t| t.list_nodes())
    }
    fn delete_node(&self, node_id: &str) -> Result<bool> {
        self.with(|t| t.delete_node(node_id))
    }
    fn put_webhook(&self, webhook: &Webhook) -> Result<()> {
        self.with(|t| t.put_webhook(webhook))
    }
    fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        self.with(|t| t.list_webhooks())
    }
    fn delete_webhook(&self, id: &str) -> Result<bool> {
        self.with(|t| t.delete_webhook(id))
    }
    fn put_template(&self, template: &Template) -> Result<()> {
        self.with(|t| t.put_template(template))
    }
    fn get_template(&self, id: &str) -> Result<Option<Template>> {
        self.with(|t| t.get_template(id))
    }
    fn list_templates(&self) -> Result<Vec<Template>> {
        self.with(|t| t.list_templates())
    }
    fn delete_template(&self, id: &str) -> Result<bool> {
        self.with(|t| t.delete_template(id))
    }
    fn put_sandbox(&self, sandbox: &Sandbox) -> Result<()> {
        self.with(|t| t.put_sandbox(sandbox))
    }
    fn get_sandbox(&self, id: &str) -> Result<Option<Sandbox>> {
        self.with(|t| t.get_sandbox(id))
    }
    fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        self.with(|t| t.list_sandboxes())
    }
    fn delete_sandbox(&self, id: &str) -> Result<bool> {
        self.with(|t| t.delete_sandbox(id))
    }
    fn put_execution(&self, execution: &Execution) -> Result<()> {
        self.with(|t| t.put_execution(execution))
    }
    fn get_execution(&self, id: &str) -> Result<Option<Execution>> {
        self.with(|t| t.get_execution(id))
    }
    fn list_executions(&self, sandbox_id: &str) -> Result<Vec<Execution>> {
        self.with(|t| t.list_executions(sandbox_id))
    }
}
