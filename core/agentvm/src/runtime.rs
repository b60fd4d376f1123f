//! The runtime: the [`Runtime`] trait (commands in, events out), its local implementation
//! [`AgentVm`], the agent actors, the container manager and the bus.

pub mod agent;
pub mod api;
pub mod bus;
mod commands;
pub mod container_manager;
pub mod dispatch;
mod local;
pub mod tools;
pub mod webhooks;

pub use agent::Agent;
pub use api::RuntimeExt;
pub use bus::{Bus, BusConfig, BusItem, EventFilter, Published, Scope, Subscription};
pub use container_manager::ContainerManager;
pub use dispatch::{Admission, Caller, ContainerGate, RequestHook, RequestMetrics};
pub use local::{AgentVm, AgentVmBuilder, ScopedRuntime};
pub use tools::{NoTools, ToolContext, ToolOutcome, ToolRunner};

use crate::model::{Command, Response};
use async_trait::async_trait;

/// The one interface to agentvm: every operation is a [`Command`] answered by a [`Response`],
/// and everything that happens is an event to subscribe to. The local runtime and the remote
/// one (over a WebSocket Channel) both implement it, so code written against it runs either way.
/// Typed helpers live in [`RuntimeExt`].
#[async_trait]
pub trait Runtime: Send + Sync {
    /// Runs one command.
    async fn request(&self, command: Command) -> crate::Result<Response>;

    /// Subscribes to events. Session topics listed in the filter with a cursor are replayed
    /// first. A scoped view (a tenant's connection, a remote runtime) refuses a session it may
    /// not see, or that does not exist, with a `not_found` error.
    async fn subscribe(&self, filter: EventFilter) -> crate::Result<Subscription>;
}
