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

/// Milliseconds since the Unix epoch, the protocol's `timestamp` unit.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
