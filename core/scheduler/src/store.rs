//! Where the scheduler keeps its records: runtime nodes, templates, sandboxes and executions.
//!
//! The scheduler owns these tables and nothing else; it sees the runtime only through this
//! trait and [`EventSink`](crate::EventSink). Every write is durable before it returns, so a
//! sandbox the caller saw created is found again by reconciliation after a crash; writes made
//! at the same time may share one durable commit (the redb store does), never a reply before
//! the commit holding the write. Backends:
//! [`RedbSchedulerStore`] (the embedded default, in the runtime's database file) and
//! [`MemorySchedulerStore`]. The runtime's store conformance suite
//! (`agentvm`'s `store/conformance.rs`) runs the same checks on both, through
//! `Store::scheduler_store()`.

mod commit_queue;
mod memory;
mod redb;

pub use self::commit_queue::{CommitQueue, CommitStats};
pub use self::redb::RedbSchedulerStore;
pub use memory::MemorySchedulerStore;

use agentvm_model::scheduler::{Execution, RuntimeNode, Sandbox, Template, Webhook};
use agentvm_model::Result;

/// The scheduler's tables. Calls block (run them on the blocking pool); writes are durable
/// when they return, and two writes of one record land in the order they were made.
pub trait SchedulerStore: Send + Sync + 'static {
    /// The id of the scheduler that owns these records, created on first use. Docker
    /// containers carry it as a label, so a scheduler only ever reconciles its own.
    fn scheduler_instance(&self) -> Result<String>;

    /// Stores a runtime node (insert or replace).
    fn put_node(&self, node: &RuntimeNode) -> Result<()>;
    /// A runtime node by id.
    fn get_node(&self, node_id: &str) -> Result<Option<RuntimeNode>>;
    /// Every runtime node, by id.
    fn list_nodes(&self) -> Result<Vec<RuntimeNode>>;
    /// Removes a runtime node; whether it existed.
    fn delete_node(&self, node_id: &str) -> Result<bool>;
    /// Records heartbeats, `(node id, when, ms)`: only each stored node's `last_heartbeat_at`
    /// changes, and only forward; nodes not stored are skipped. Cluster members share their
    /// nodes' heartbeats this way, in batches. The default reads and writes each record.
    fn touch_nodes(&self, beats: &[(String, i64)]) -> Result<()> {
        for (id, at) in beats {
            if let Some(mut node) = self.get_node(id)? {
                if node.last_heartbeat_at < Some(*at) {
                    node.last_heartbeat_at = Some(*at);
                    self.put_node(&node)?;
                }
            }
        }
        Ok(())
    }

    /// Stores a template (insert or replace).
    fn put_template(&self, template: &Template) -> Result<()>;
    /// A template by id.
    fn get_template(&self, id: &str) -> Result<Option<Template>>;
    /// Every template, by id.
    fn list_templates(&self) -> Result<Vec<Template>>;
    /// Removes a template; whether it existed.
    fn delete_template(&self, id: &str) -> Result<bool>;

    /// Stores a sandbox (insert or replace).
    fn put_sandbox(&self, sandbox: &Sandbox) -> Result<()>;
    /// A sandbox by id.
    fn get_sandbox(&self, id: &str) -> Result<Option<Sandbox>>;
    /// Every sandbox, by id.
    fn list_sandboxes(&self) -> Result<Vec<Sandbox>>;
    /// Removes a sandbox and its executions at once; whether it existed.
    fn delete_sandbox(&self, id: &str) -> Result<bool>;

    /// Stores an execution (insert or replace), listed under its sandbox.
    fn put_execution(&self, execution: &Execution) -> Result<()>;
    /// An execution by id.
    fn get_execution(&self, id: &str) -> Result<Option<Execution>>;
    /// The executions of a sandbox, oldest first.
    fn list_executions(&self, sandbox_id: &str) -> Result<Vec<Execution>>;

    /// Stores a webhook registration (insert or replace), secret included.
    fn put_webhook(&self, webhook: &Webhook) -> Result<()>;
    /// Every webhook, by id, secrets included.
    fn list_webhooks(&self) -> Result<Vec<Webhook>>;
    /// Removes a webhook; whether it existed.
    fn delete_webhook(&self, id: &str) -> Result<bool>;
}
