//! `agentvm._native`: the Python binding of agentvm, kept thin.
//!
//! Commands, responses and events cross the boundary as the protocol's JSON (Python dicts)
//! through the same serde types the WebSocket speaks; a few handle classes hold the Rust
//! objects: [`vm::Runtime`] (local or remote), [`events::Subscription`], [`server::Server`].
//! Every method comes as an awaitable (asyncio) and as `*_blocking` (GIL released, Ctrl-C
//! honoured); the Python package (`python/agentvm/`) builds the typed, documented API on top,
//! the sandbox scheduler's included: it is commands (`sandbox_create_request`, ...) like the
//! rest, and `open(scheduler=...)` only hands its options to the core.

mod error;
mod events;
mod json;
mod runtime;
mod server;
mod vm;

use pyo3::prelude::*;

/// Logs through `tracing` to stderr, filtered by `AGENTVM_LOG` (for example `info` or
/// `agentvm=debug`); without the variable nothing is logged. Safe to call twice.
#[pyfunction]
fn init_logging() {
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("AGENTVM_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    error::register(m)?;
    m.add_class::<vm::Runtime>()?;
    m.add_class::<events::Subscription>()?;
    m.add_class::<server::Server>()?;
    m.add_class::<runtime::Ready>()?;
    m.add_function(wrap_pyfunction!(vm::open, m)?)?;
    m.add_function(wrap_pyfunction!(vm::open_blocking, m)?)?;
    m.add_function(wrap_pyfunction!(vm::connect, m)?)?;
    m.add_function(wrap_pyfunction!(vm::connect_blocking, m)?)?;
    m.add_function(wrap_pyfunction!(vm::_json_round_trip, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::_after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(runtime::_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(init_logging, m)?)?;
    Ok(())
}
