//! Bounding calls: a timeout, a cancel id another thread can fire, and the handle's close.
//!
//! Cancel ids of calls on a handle live in that handle ([`Embed::cancel`](crate::Embed::cancel));
//! an `open` or `connect` has no handle yet, so its id lives in one process-wide table
//! ([`cancel_opening`]).

use agentvm::{Error, Result};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;

/// Calls in progress that a caller named by an id: cancelling sets their flag.
pub(crate) type Registry = Mutex<HashMap<u64, watch::Sender<bool>>>;

/// `open`/`connect` calls in progress with a cancel id.
static OPENING: std::sync::LazyLock<Registry> =
    std::sync::LazyLock::new(|| Mutex::new(HashMap::new()));

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Cancels the `open` or `connect` running with `id` ([`Embed::open_with`](crate::Embed::open_with),
/// [`Embed::connect_with`](crate::Embed::connect_with)); `false` when none is. Any thread.
pub fn cancel_opening(id: u64) -> bool {
    fire(&OPENING, id)
}

pub(crate) fn fire(registry: &Registry, id: u64) -> bool {
    match lock(registry).get(&id) {
        Some(tx) => {
            tx.send_replace(true);
            true
        }
        None => false,
    }
}

/// The opening table, for `open_with` / `connect_with`.
pub(crate) fn opening() -> &'static Registry {
    &OPENING
}

/// Removes a call's cancel entry when the call ends, however it ends.
struct Entry<'a> {
    registry: &'a Registry,
    id: u64,
}

impl Drop for Entry<'_> {
    fn drop(&mut self) {
        lock(self.registry).remove(&self.id);
    }
}

/// Runs `fut`, ended early with `Cancelled` by `timeout` (`timed out after N ms`), by a cancel
/// of `cancel_id` through `registry` (`cancelled by the caller (id N)`) or when `closed` turns
/// true. `fut` is polled first, so a call that is ready at once never arms a timer. An id
/// already in use is `InvalidInput`.
pub(crate) async fn bounded<T>(
    registry: &Registry,
    closed: Option<watch::Receiver<bool>>,
    cancel_id: Option<u64>,
    timeout: Option<Duration>,
    fut: impl Future<Output = Result<T>>,
) -> Result<T> {
    let (mut cancelled, _entry) = match cancel_id {
        Some(id) => {
            let (tx, rx) = watch::channel(false);
            let mut table = lock(registry);
            if table.contains_key(&id) {
                return Err(Error::invalid(format!(
                    "cancel id {id} is in use by another call"
                )));
            }
            table.insert(id, tx);
            (Some(rx), Some(Entry { registry, id }))
        }
        None => (None, None),
    };
    let mut closed = closed;
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let cancel = async {
        match cancelled.as_mut() {
            // The sender lives in the registry until `_entry` drops, after this select.
            Some(rx) => drop(rx.wait_for(|c| *c).await),
            None => std::future::pending().await,
        }
    };
    let close = async {
        match closed.as_mut() {
            Some(rx) => drop(rx.wait_for(|c| *c).await),
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        r = fut => r,
        _ = cancel => Err(Error::Cancelled(format!(
            "cancelled by the caller (id {})",
            cancel_id.unwrap_or_default()
        ))),
        _ = close => Err(Error::Cancelled("the runtime handle was closed".into())),
        _ = deadline => Err(Error::Cancelled(format!(
            "timed out after {} ms",
            timeout.map(|t| t.as_millis()).unwrap_or_default()
        ))),
    }
}
