//! Node.js bindings of agentvm: the native half of the npm package `agentvm`.
//!
//! Thin on purpose: every function converts between JavaScript and `agentvm-embed`
//! ([`agentvm_embed::Embed`]), nothing else. Options are JSON text parsed by embed
//! ([`agentvm_embed::EmbedOptions`], [`agentvm_embed::ConnectOptions`],
//! [`agentvm_embed::SubscribeOptions`], [`agentvm_embed::ServeOptions`]); commands go in and
//! responses' data come out as the JSON of the Channel protocol; events come in batches (one
//! JSON array text per call) with embed's overflow policy. The typed, Promise-based API
//! (`vm.images.create(...)`, `vm.events(...)`, `vm.on(...)`, `vm.scheduler`) is the
//! façade in `index.js` / `index.d.ts`, generic over commands: no command has native code here.
//!
//! Everything runs on embed's one tokio runtime ([`agentvm_embed::process`]). Errors are mapped
//! in one place, [`error`]. Calls first try to finish on the JavaScript thread ([`settle`]).
#![allow(unsafe_code)] // napi-derive's generated glue; this crate writes none itself.

mod error;
pub mod events;
pub mod runtime;
mod settle;

use napi_derive::napi;

/// The version of the native module (the crate version).
#[napi]
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
