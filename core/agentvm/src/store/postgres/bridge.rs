//! How the synchronous store traits wait for tokio-postgres, which is async.
//!
//! The rule: a [`PostgresStore`](super::PostgresStore) is opened inside tokio's multi-thread
//! runtime, and keeps a [`Handle`] to it. A call runs its future to completion with
//! [`Handle::block_on`] on the calling thread, and the runtime's workers drive the sockets:
//!
//! - on the blocking pool (`spawn_blocking`, the intended use) or a thread with no runtime:
//!   `block_on` directly;
//! - on a worker of a multi-thread runtime (async code calling the store directly, as the
//!   runtime does for small reads): [`tokio::task::block_in_place`] first, which hands the
//!   worker's other tasks to a new thread, so nothing on the runtime waits for this call;
//! - on a thread of a current-thread runtime (necessarily another runtime): on a scoped thread
//!   of its own, because that runtime can neither block in place nor start a nested `block_on`.
//!
//! So no call panics or deadlocks, wherever it comes from. A current-thread runtime cannot
//! host the store at all (its only thread would be the one waiting), so opening on one is
//! refused with a message saying so.

use crate::error::{Error, Result};
use std::future::Future;
use tokio::runtime::{Handle, RuntimeFlavor};

/// A handle on the runtime the store's connections live on.
#[derive(Debug, Clone)]
pub(super) struct Bridge {
    /// The multi-thread runtime the store was opened on: its workers drive the connections.
    handle: Handle,
}

impl Bridge {
    /// The bridge to the runtime this is called on; refuses a current-thread runtime.
    pub(super) fn current() -> Result<Self> {
        let handle = Handle::try_current().map_err(|_| {
            Error::invalid("the PostgreSQL store must be opened inside a tokio runtime")
        })?;
        if handle.runtime_flavor() != RuntimeFlavor::MultiThread {
            return Err(Error::invalid(
                "the PostgreSQL store needs tokio's multi-thread runtime (its calls block the \
                 calling thread while the runtime's workers drive the connection); use \
                 #[tokio::main] or #[tokio::test(flavor = \"multi_thread\")]",
            ));
        }
        Ok(Bridge { handle })
    }

    /// Runs a background task (a listener) on the store's runtime.
    pub(super) fn spawn<F>(&self, future: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        drop(self.handle.spawn(future));
    }

    /// Runs `future` to completion for a synchronous caller on any thread (see the module docs).
    pub(super) fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        match Handle::try_current().map(|h| h.runtime_flavor()) {
            Err(_) => self.handle.block_on(future),
            Ok(RuntimeFlavor::MultiThread) => {
                tokio::task::block_in_place(|| self.handle.block_on(future))
            }
            Ok(_) => std::thread::scope(|scope| {
                match scope.spawn(|| self.handle.block_on(future)).join() {
                    Ok(output) => output,
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }),
        }
    }
}
