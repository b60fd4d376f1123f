//! The one tokio runtime of the process, owned by the embedding layer.
//!
//! The core never builds a runtime; every binding (C, Go through C, Python, and later Node)
//! runs everything on this one, so a process that loads two bindings still has one.
//!
//! Fork safety: tokio's worker threads do not survive `fork()`. The runtime remembers the pid
//! that built it; in a forked child the parent's runtime is leaked without being touched (its
//! destructor would wait for threads that do not exist there) and a fresh one is built on
//! first use. Handles opened before the fork belong to the parent and must not be used in the
//! child: open new ones. [`after_fork`] makes the switch immediate (a binding can call it from
//! `pthread_atfork`'s child hook or `os.register_at_fork`).

use agentvm::{Error, Result};
use std::future::Future;
use std::sync::{Arc, Mutex};
use tokio::runtime::{Handle, Runtime};

/// The runtime and the process that built it.
struct Slot {
    /// Which process built `runtime`: a forked child must not use its parent's.
    pid: u32,
    /// The multi-threaded runtime everything runs on.
    runtime: Arc<Runtime>,
}

/// The current runtime; `None` until first use (and again after a fork).
static SLOT: Mutex<Option<Slot>> = Mutex::new(None);

/// The runtime of this process, built on first use (and rebuilt in a forked child).
pub fn runtime() -> Result<Arc<Runtime>> {
    let pid = std::process::id();
    let mut slot = SLOT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(s) = slot.as_ref().filter(|s| s.pid == pid) {
        return Ok(s.runtime.clone());
    }
    if let Some(stale) = slot.take() {
        std::mem::forget(stale.runtime);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("agentvm-tokio")
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the tokio runtime: {e}")))?;
    let runtime = Arc::new(runtime);
    *slot = Some(Slot {
        pid,
        runtime: runtime.clone(),
    });
    Ok(runtime)
}

/// A handle to spawn on.
pub fn handle() -> Result<Handle> {
    Ok(runtime()?.handle().clone())
}

/// Forgets the parent's runtime in a forked child without touching its threads.
pub fn after_fork() {
    let mut slot = SLOT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(stale) = slot.take() {
        std::mem::forget(stale.runtime);
    }
}

/// Runs `fut` to completion on the process runtime, blocking this thread. A thread of the
/// runtime itself may not block on it (that would deadlock a worker): it gets `Internal`.
pub fn block_on<F: Future>(fut: F) -> Result<F::Output> {
    if Handle::try_current().is_ok() {
        return Err(Error::Internal(
            "a blocking agentvm call was made from inside the agentvm runtime (an async context); use the async API there".into(),
        ));
    }
    Ok(runtime()?.block_on(fut))
}

/// Stops the runtime's threads, giving blocking work up to `grace` to finish: for bindings
/// whose host is about to exit (Python's `atexit`), where a worker left running could call
/// into a host that is being torn down. Running tasks are dropped; the next use builds a new
/// runtime. A runtime still in use by a call on another thread, or one built by a parent
/// process, is left alone.
pub fn shutdown(grace: std::time::Duration) {
    let taken = SLOT.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(slot) = taken else {
        return;
    };
    if slot.pid != std::process::id() {
        std::mem::forget(slot.runtime);
        return;
    }
    match Arc::try_unwrap(slot.runtime) {
        Ok(rt) => rt.shutdown_timeout(grace),
        Err(shared) => std::mem::forget(shared),
    }
}
