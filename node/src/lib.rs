//! Node.js bindings of agentvm: the native half of the npm package `agentvm`.
//!
//! Thin on purpose: commands, responses and events cross the boundary as the JSON of the
//! Channel protocol (the serde types of the core), and the typed, Promise-based API
//! (`vm.images.create(...)`, `vm.events(...)`, `vm.on(...)`) is the TypeScript façade in
//! `index.js` / `index.d.ts`. Native classes are handles: [`runtime::NativeRuntime`] (local or
//! remote), [`server::NativeServer`] and [`stream::JsonStream`]. The sandbox scheduler has no
//! native code: it is commands like the rest (`vm.scheduler` in `index.js`), and
//! `open({scheduler})` only hands its options to the core.
//!
//! One tokio runtime serves the module (built at load, see [`init`]). Errors are mapped in one
//! place, [`error`]. Calls first try to finish on the JavaScript thread ([`settle`]).
#![allow(unsafe_code)] // napi-derive's generated glue; this crate writes none itself.

mod error;
mod llm;
pub mod runtime;
pub mod server;
mod settle;
pub mod stream;

use napi_derive::napi;

/// Builds the module's one tokio runtime when Node loads the addon: multi-threaded, with as
/// many workers as cores (at most 4: agents are I/O bound), threads named `agentvm`.
#[napi_derive::module_init]
fn init() {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(1, 4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .thread_name("agentvm")
        .enable_all()
        .build();
    // Without it napi builds its default runtime on first use, which works the same.
    if let Ok(runtime) = runtime {
        napi::bindgen_prelude::create_custom_tokio_runtime(runtime);
    }
}

/// The version of the native module (the crate version).
#[napi]
pub fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}
