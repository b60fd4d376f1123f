//! agentvm-uniffi: the uniffi bindings of agentvm for Kotlin, Swift, Python and Ruby, a thin
//! shell over `agentvm-embed`.
//!
//! - [`AgentVm`]: `open(options_json)` / `connect(options_json)` (async constructors),
//!   `request(json)` (async; the response's `data` as JSON), `cancel(id)`,
//!   `subscribe(options_json)` (async, an [`EventStream`]), `serve`, `close`.
//! - [`EventStream`]: `next(max, timeout_ms)` (async; a JSON array batch, `None` at the end).
//! - [`AgentVmError`]: a variant per stable error kind, with the message and its causes.
//!
//! Commands, responses and events are the JSON the WebSocket speaks. Every async method runs
//! on embed's one process runtime ([`agentvm_embed::process`]); the foreign executor only
//! waits for it (see `task.rs`). The foreign code is generated from the built cdylib by the
//! pinned `uniffi-bindgen` of `bindings/uniffi/bindgen`, see `scripts/test-uniffi.sh`.

mod error;
mod events;
mod runtime;
mod task;

pub use error::AgentVmError;
pub use events::EventStream;
pub use runtime::{AgentVm, Served};

uniffi::setup_scaffolding!("agentvm_uniffi");
