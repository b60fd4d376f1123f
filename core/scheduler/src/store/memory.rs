//! The scheduler's tables in memory: for ephemeral schedulers and as the reference behaviour
//! the conformance suite holds every backend to.

use super::SchedulerStore;
use agentvm_model::scheduler::{Execution, RuntimeNode, Sandbox, Template, Webhook};
use agentvm_model::Result;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

/// The scheduler's tables in memory (nothing survives the process).
#[derive(Debug, Default)]
pub struct MemorySchedulerStore {
    tables: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    instance: Option<String>,
    nodes: BTreeMap<String, RuntimeNode>,
    templates: BTreeMap<String, Template>,
    sandboxes: BTreeMap<String, Sandbox>,
    executions: BTreeMap<String, Execution>,
    webhooks: BTreeMap<String, Webhook>,
}

impl MemorySchedulerStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SchedulerStore for MemorySchedulerStore {
    fn scheduler_instance(&self) -> Result<String> {
        Ok(self
            .tables()
            .instance
            .get_or_insert_with(|| agentvm_model::new_id("sched"))
            .clone())
    }

    fn put_node(&self, node: &RuntimeNode) -> Result<()> {
        self.tables()
            .nodes
            .insert(node.node_id.clone(), node.clone());
        Ok(())
    }

    fn get_node(&self, node_id: &str) -> Result<Option<RuntimeNode>> {
        Ok(self.tables().nodes.get(node_id).cloned())
    }

    fn list_nodes(&self) -> Result<Vec<RuntimeNode>> {
        Ok(self.tables().nodes.values().cloned().collect())
    }

    fn delete_node(&self, node_id: &str) -> Result<bool> {
        Ok(self.tables().nodes.remove(node_id).is_some())
    }

    fn put_template(&self, template: &Template) -> Result<()> {
        self.tables()
            .templates
            .insert(template.id.clone(), template.clone());
        Ok(())
    }

    fn get_template(&self, id: &str) -> Result<Option<Template>> {
        Ok(self.tables().templates.get(id).cloned())
    }

    fn list_templates(&self) -> Result<Vec<Template>> {
        Ok(self.tables().templates.values().cloned().collect())
    }

    fn delete_template(&self, id: &str) -> Result<bool> {
        Ok(self.tables().templates.remove(id).is_some())
    }

    fn put_sandbox(&self, sandbox: &Sandbox) -> Result<()> {
        self.tables()
            .sandboxes
            .insert(sandbox.id.clone(), sandbox.clone());
        Ok(())
    }

    fn get_sandbox(&self, id: &str) -> Result<Option<Sandbox>> {
        Ok(self.tables().sandboxes.get(id).cloned())
    }

    fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        Ok(self.tables().sandboxes.values().cloned().collect())
    }

    fn delete_sandbox(&self, id: &str) -> Result<bool> {
        let mut t = self.tables();
        t.executions.retain(|_, e| e.sandbox_id != id);
        Ok(t.sandboxes.remove(id).is_some())
    }

    fn put_execution(&self, execution: &Execution) -> Result<()> {
        self.tables()
            .executions
            .insert(execution.id.clone(), execution.clone());
        Ok(())
    }

    fn get_execution(&self, id: &str) -> Result<Option<Execution>> {
        Ok(self.tables().executions.get(id).cloned())
    }

    fn put_webhook(&self, webhook: &Webhook) -> Result<()> {
        self.tables()
            .webhooks
            .insert(webhook.id.clone(), webhook.clone());
        Ok(())
    }

    fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        Ok(self.tables().webhooks.values().cloned().collect())
    }

    fn delete_webhook(&self, id: &str) -> Result<bool> {
        Ok(self.tables().webhooks.remove(id).is_some())
    }

    fn list_executions(&self, sandbox_id: &str) -> Result<Vec<Execution>> {
        let mut out: Vec<Execution> = self
            .tables()
            .executions
            .values()
            .filter(|e| e.sandbox_id == sandbox_id)
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }
}
