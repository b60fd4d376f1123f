//! The agent model and the wire types: ids, records, messages, events, commands.
//!
//! Everything here is plain data with serde. The JSON of these types *is* the Channel
//! protocol (PROTOCOL.md): the WebSocket server, the remote runtime and the bindings all pass
//! these same values across their boundaries.

pub mod command;
pub mod event;
pub mod ids;
pub mod message;
pub mod operations;
pub mod records;

pub use command::*;
pub use event::*;
pub use ids::*;
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
