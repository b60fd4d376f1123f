//! agentvm's model: typed ids, records, messages, events, every command and its response, the
//! scheduler's records, and the one error type with its stable kinds.
//!
//! Everything here is plain data with serde, and this crate does no I/O (no tokio, no
//! database, no Docker, no HTTP). The JSON of these types *is* the Channel protocol
//! (docs/protocol.md): the WebSocket server, the remote runtime and the bindings all pass these
//! same values across their boundaries.
#![warn(missing_docs, unreachable_pub)]

pub mod command;
pub mod error;
pub mod event;
pub mod ids;
pub mod latency;
pub mod mcp;
pub mod message;
pub mod operations;
pub mod records;
pub mod scheduler;

pub use command::*;
pub use error::{Error, ErrorKind, Result};
pub use event::*;
pub use ids::*;
pub use mcp::{McpHttpServer, McpServer, McpServers, McpStdioServer};
pub use message::*;
pub use operations::*;
pub use records::*;

/// The `tracing` target of the spans agentvm opens for OpenTelemetry (a request, an agent's
/// turn, its model and tool calls, a sandbox exec). agentvm-server exports them over OTLP when
/// configured and keeps them out of its log lines; an embedding application can do the same by
/// filtering on this target.
pub const TRACE_TARGET: &str = "agentvm::trace";

/// Milliseconds since the Unix epoch, the protocol's `timestamp` unit.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
