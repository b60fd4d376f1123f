//! The Channel: docs/protocol.md over one WebSocket.
//!
//! - [`codec`]: frames in and out — pure, no I/O, so it can be tested and benched alone.
//! - [`json_literal`]: an event's JSON and its escaped form for the frame, in one pass.
//! - [`remote`]: the remote runtime, `agentvm::connect(url)`, a [`crate::Runtime`] over the wire.
//!
//! The server side of a connection lives in the `agentvm-server` crate.

pub mod codec;
pub mod json_literal;
#[cfg(feature = "client")]
pub mod remote;
