//! agentvm: an embeddable AI-agent runtime.
//!
//! One core holds the agent model (definitions built into images, containers as per-tenant
//! isolation units, sessions and running agents that stream LLM replies), a [`Store`] that
//! keeps everything a caller saw succeed (a redb file, or memory), and the event bus behind the AgentX-compatible
//! Channel protocol.
//!
//! Every operation is a [`Command`] sent through [`Runtime::request`]; everything that happens
//! is an [`Event`] you [`Runtime::subscribe`] to. [`RuntimeExt`] adds typed helpers.
//!
//! ```
//! use agentvm::{AgentVm, BusItem, EventPayload, MockDriver, RuntimeExt};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> agentvm::Result<()> {
//! let vm = AgentVm::builder().llm(Arc::new(MockDriver::default())).open().await?;
//! let image = vm.images().create("user-alice", Default::default()).await?;
//! let mut events = vm.sessions().events(&image.record.session_id).await?;
//! vm.agents().send_to_image(&image.record.image_id, "Hello!").await?;
//! while let Some(BusItem::Event(e)) = events.recv().await {
//!     match &e.event.payload {
//!         EventPayload::TextDelta { text } => print!("{text}"),
//!         EventPayload::ConversationEnd { .. } => break,
//!         _ => {}
//!     }
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs, unreachable_pub)]

pub mod auth;
pub mod channel;
pub mod config;
pub mod llm;
pub mod mcp;
pub mod runtime;
pub mod store;
pub mod toolhost;
mod trace;

/// The agent model and the wire types (the `agentvm-model` crate).
pub use agentvm_model as model;
/// The one error type and its stable kinds (from the model crate).
pub use agentvm_model::error;
/// The Docker sandbox scheduler (the `agentvm-scheduler` crate).
pub use agentvm_scheduler as scheduler;

#[cfg(feature = "client")]
pub use channel::remote::{connect, ConnectOptions, RemoteRuntime, FORWARDING_HEADER};
pub use config::{AgentConfig, Limits};
pub use error::{Error, ErrorKind, Result};
pub use llm::{
    AnthropicDriver, HttpSettings, LlmConfig, LlmDriver, LlmEvent, LlmRequest, MockDriver,
    MockScenario, OpenAiDriver, Provider, RetryPolicy,
};
pub use mcp::McpLimits;
pub use model::*;
pub use runtime::{
    Agent, AgentVm, AgentVmBuilder, Bus, BusConfig, BusItem, ContainerManager, EventFilter,
    Published, Runtime, RuntimeExt, Scope, ScopedRuntime, Subscription,
};
pub use scheduler::{Scheduler, SchedulerConfig};
#[cfg(feature = "postgres")]
pub use store::PostgresStore;
pub use store::{MemoryStore, RedbStore, Store};
pub use toolhost::{BuiltinTools, LocalToolHost, ToolHost, ToolLimits};
