//! `Subscription`: events as an async iterator (`async for`) and a plain iterator (`for`).
//!
//! Each event is the protocol's JSON as a dict (`type`, `data`, `timestamp`, `source`,
//! `category`, `intent`, `context`) plus `cursor` for session events. A subscriber that falls
//! behind is resumed from its last cursor transparently: nothing is lost or repeated.

use crate::error::{to_py, IntoPyResult};
use crate::runtime::{self, awaitable, wait, PyFuture};
use agentvm::{BusItem, Error, Published};
use futures::future::BoxFuture;
use pyo3::exceptions::{PyStopAsyncIteration, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{Mutex, Notify};

/// Where a subscription is.
enum State {
    /// Subscribing (a remote runtime asks its server first).
    Starting(tokio::task::JoinHandle<agentvm::Result<agentvm::Subscription>>),
    /// Receiving.
    Open(agentvm::Subscription),
    /// Closed by the caller, or the runtime ended it.
    Closed,
}

/// What the futures of one subscription share.
struct Shared {
    /// One receiver at a time.
    state: Mutex<State>,
    /// Set by `close()`; a waiting receive returns at once.
    closed: AtomicBool,
    /// Wakes a waiting receive on `close()`.
    close: Notify,
}

/// A stream of events. `async for event in sub` or `for event in sub`; `close()` ends it.
#[pyclass(module = "agentvm._native", frozen)]
pub struct Subscription {
    shared: Arc<Shared>,
}

/// An event on its way to Python: the protocol's JSON as a dict, plus `cursor`.
pub(crate) struct EventOut(Arc<Published>);

impl<'py> IntoPyObject<'py> for EventOut {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let event = crate::json::serialize(py, &self.0.event)?;
        if let (Some(c), Ok(d)) = (self.0.cursor, event.cast::<PyDict>()) {
            d.set_item(pyo3::intern!(py, "cursor"), c)?;
        }
        Ok(event)
    }
}

async fn next(shared: Arc<Shared>) -> PyResult<Option<EventOut>> {
    let mut state = shared.state.lock().await;
    loop {
        if shared.closed.load(Ordering::Acquire) {
            *state = State::Closed;
        }
        match &mut *state {
            State::Closed => return Ok(None),
            State::Starting(handle) => {
                let started = tokio::select! {
                    r = handle => r,
                    _ = shared.close.notified() => continue,
                };
                let sub = started
                    .map_err(|e| to_py(Error::Internal(format!("subscribing failed: {e}"))))?
                    .py()?;
                *state = State::Open(sub);
            }
            State::Open(sub) => {
                let item = tokio::select! {
                    item = sub.recv() => item,
                    _ = shared.close.notified() => continue,
                };
                match item {
                    Some(BusItem::Event(p)) => return Ok(Some(EventOut(p))),
                    Some(BusItem::Overflowed { .. }) => {
                        let resumed = sub.resume().py()?;
                        *sub = resumed;
                    }
                    None => *state = State::Closed,
                }
            }
        }
    }
}

impl Subscription {
    /// Subscribes with `fut`: at once when it needs no waiting (local runtimes), else on the
    /// runtime in the background (the first receive waits for it).
    pub fn start(
        fut: BoxFuture<'static, agentvm::Result<agentvm::Subscription>>,
    ) -> PyResult<Self> {
        let rt = runtime::get()?;
        let mut fut = fut;
        let state = {
            let _guard = rt.enter();
            let mut cx = Context::from_waker(std::task::Waker::noop());
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(r) => State::Open(r.py()?),
                Poll::Pending => State::Starting(rt.spawn(fut)),
            }
        };
        Ok(Subscription {
            shared: Arc::new(Shared {
                state: Mutex::new(state),
                closed: AtomicBool::new(false),
                close: Notify::new(),
            }),
        })
    }

    fn next_future(&self, end: fn() -> PyErr) -> PyFuture<EventOut> {
        let shared = self.shared.clone();
        Box::pin(async move { next(shared).await?.ok_or_else(end) })
    }
}

fn stop_async() -> PyErr {
    PyStopAsyncIteration::new_err(())
}

fn stop() -> PyErr {
    PyStopIteration::new_err(())
}

#[pymethods]
impl Subscription {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.next_future(stop_async))
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<EventOut> {
        wait(py, self.next_future(stop))
    }

    /// The next event, or `None` once closed; waits at most `timeout` seconds (then `None`
    /// too). Blocking.
    #[pyo3(signature = (timeout=None))]
    fn next_blocking(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<EventOut>> {
        let shared = self.shared.clone();
        let limit = timeout.map(std::time::Duration::from_secs_f64);
        wait(
            py,
            Box::pin(async move {
                match limit {
                    Some(d) => Ok(tokio::time::timeout(d, next(shared))
                        .await
                        .ok()
                        .transpose()?
                        .flatten()),
                    None => next(shared).await,
                }
            }),
        )
    }

    /// Ends the subscription; iteration stops (a waiting `async for` too).
    fn close(&self) {
        self.shared.closed.store(true, Ordering::Release);
        self.shared.close.notify_waiters();
        // A permit for a receive that checks `closed` just before it starts waiting.
        self.shared.close.notify_one();
        if let Ok(mut state) = self.shared.state.try_lock() {
            *state = State::Closed;
        }
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, pyo3::types::PyTuple>) {
        self.close();
    }
}
