//! `agentvm._native`: the Python binding of agentvm. It only converts between Python and the
//! embedding layer (`agentvm-embed`): options go in as embed's JSON, commands as dicts
//! (converted straight to the core's serde types), responses and event batches come out as
//! Python objects, errors as one exception class per kind.
//!
//! - [`vm::Runtime`]: an [`agentvm_embed::Embed`] handle (`request`, `subscribe`, `cancel`,
//!   `serve`, `stop_serving`, `close`).
//! - [`events::EventStream`]: embed's event stream, taken in batches (`next_batch`).
//! - [`call::Call`]: what every waiting method returns. Awaited in asyncio, it is an
//!   awaitable; inside [`call::run_blocking`] (how the package derives its blocking API from
//!   the async one) it waits on the calling thread, GIL released, Ctrl-C honoured.
//!
//! Everything runs on embed's one tokio runtime of the process.

mod call;
mod error;
mod events;
mod json;
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

/// Called in a forked child (`os.register_at_fork(after_in_child=...)`): the parent's
/// runtime is forgotten without touching its threads; the child builds its own on first use.
#[pyfunction]
fn _after_fork() {
    call::after_fork();
}

/// How long blocking work may take to finish at interpreter exit.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// Called at interpreter exit (`atexit`): stops the runtime's threads while Python still
/// runs normally. Left running, a worker could complete an asyncio future during
/// finalization, when taking the GIL ends the thread and crashes the process.
#[pyfunction]
fn _shutdown(py: Python<'_>) {
    py.detach(|| call::shutdown(SHUTDOWN_GRACE));
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    error::register(m)?;
    m.add_class::<vm::Runtime>()?;
    m.add_class::<events::EventStream>()?;
    m.add_class::<call::Call>()?;
    m.add_function(wrap_pyfunction!(vm::open, m)?)?;
    m.add_function(wrap_pyfunction!(vm::connect, m)?)?;
    m.add_function(wrap_pyfunction!(call::run_blocking, m)?)?;
    m.add_function(wrap_pyfunction!(json::_json_round_trip, m)?)?;
    m.add_function(wrap_pyfunction!(_after_fork, m)?)?;
    m.add_function(wrap_pyfunction!(_shutdown, m)?)?;
    m.add_function(wrap_pyfunction!(init_logging, m)?)?;
    Ok(())
}
