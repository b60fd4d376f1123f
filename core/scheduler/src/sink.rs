//! The one way out of the scheduler: events about nodes, sandboxes and executions.
//!
//! The scheduler knows no agents and no bus; the runtime that embeds it implements this trait
//! (its bus does), and tests can collect events with a plain `Vec`.

use agentvm_model::Event;

/// Receives the scheduler's events. Called on the scheduler's tasks: it must not block.
pub trait EventSink: Send + Sync + 'static {
    /// Takes one event (`source` `sandbox`, `context.containerId` = the sandbox's owner).
    fn publish(&self, event: Event);
}
