//! The Channel: PROTOCOL.md over one WebSocket.
//!
//! - [`codec`]: frames in and out — pure, no I/O, so it can be tested and benched alone.
//! - [`remote`]: the remote runtime, `agentvm::connect(url)`, a [`crate::Runtime`] over the wire.
//! - [`server`]: the server side of one connection (feature `server`).

pub mod codec;
#[cfg(feature = "client")]
pub mod remote;
#[cfg(feature = "server")]
pub mod server;
