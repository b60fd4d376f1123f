//! The one tokio runtime of the module, and the two ways Python waits on it.
//!
//! - [`awaitable`]: an asyncio awaitable for a Rust future (async API).
//! - [`wait`]: block the calling thread, GIL released, Ctrl-C honoured (sync API).
//!
//! Both first poll the future once on the calling thread: most local commands (`image_get`,
//! a queued event) finish without waiting, and then no thread hop or event-loop callback is
//! paid. Only a future that is still pending goes to the runtime's workers.
//!
//! Fork safety: tokio's worker threads do not survive `fork()`. The runtime remembers the
//! pid that built it; a child (or `_after_fork`, registered with `os.register_at_fork`) leaks
//! the parent's runtime without touching it and builds a fresh one on first use. The slot's
//! mutex is only taken by threads holding the GIL (Python calls) — tokio workers use their
//! own handle — so a fork, which Python performs holding the GIL, never copies it locked.

use futures::future::BoxFuture;
use pyo3::exceptions::PyStopIteration;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;
use pyo3_async_runtimes::generic::{ContextExt, JoinError, Runtime as GenericRuntime};
use pyo3_async_runtimes::TaskLocals;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
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

/// How often a blocking wait wakes up to let Python handle signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

fn build() -> PyResult<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("agentvm-tokio")
        .build()
        .map_err(|e| {
            pyo3::exceptions::PyRuntimeError::new_err(format!("cannot start tokio runtime: {e}"))
        })
}

/// The runtime of this process, built on first use (and rebuilt in a forked child).
pub(crate) fn get() -> PyResult<Arc<Runtime>> {
    let pid = std::process::id();
    let mut slot = SLOT.lock().unwrap_or_else(|p| p.into_inner());
    match slot.as_ref() {
        Some(s) if s.pid == pid => Ok(s.runtime.clone()),
        _ => {
            // A runtime built by another process (our parent) has no threads here: leak it
            // rather than run its destructor, which would wait for threads that are gone.
            if let Some(stale) = slot.take() {
                std::mem::forget(stale.runtime);
            }
            let runtime = Arc::new(build()?);
            *slot = Some(Slot {
                pid,
                runtime: runtime.clone(),
            });
            Ok(runtime)
        }
    }
}

/// A handle to spawn on: the current one inside a worker, else the process runtime's.
fn handle() -> Handle {
    if let Ok(h) = Handle::try_current() {
        return h;
    }
    match get() {
        Ok(rt) => rt.handle().clone(),
        // Building a runtime failed (no threads left): nothing can run; say so loudly.
        Err(e) => panic!("agentvm: {e}"),
    }
}

/// Called in a forked child (`os.register_at_fork(after_in_child=...)`): drop the parent's
/// runtime without touching its threads. The pid check would catch it too; this makes it
/// immediate and independent of pid reuse.
#[pyfunction]
pub(crate) fn _after_fork() {
    let mut slot = SLOT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(stale) = slot.take() {
        std::mem::forget(stale.runtime);
    }
}

/// Called at interpreter exit (`atexit`): stops the runtime's threads while Python still
/// runs normally. Left running, a worker could call into Python (completing an asyncio
/// future) during finalization, when taking the GIL ends the thread and crashes the process.
/// Running tasks (agents' turns) are dropped; blocking work gets a moment to finish.
#[pyfunction]
pub(crate) fn _shutdown(py: Python<'_>) {
    let taken = SLOT.lock().unwrap_or_else(|p| p.into_inner()).take();
    let Some(slot) = taken else {
        return;
    };
    if slot.pid != std::process::id() {
        std::mem::forget(slot.runtime);
        return;
    }
    match Arc::try_unwrap(slot.runtime) {
        Ok(rt) => py.detach(|| rt.shutdown_timeout(SHUTDOWN_GRACE)),
        // Still in use by a call in progress on another thread: leave it alone.
        Err(shared) => std::mem::forget(shared),
    }
}

/// How long blocking work may take to finish at interpreter exit.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// The [`GenericRuntime`] pyo3-async-runtimes drives: our runtime instead of its global one,
/// which can never be replaced after a fork.
pub(crate) struct AgentVmRuntime;

/// A join error of our runtime.
pub(crate) struct TaskJoinError(tokio::task::JoinError);

impl JoinError for TaskJoinError {
    fn is_panic(&self) -> bool {
        self.0.is_panic()
    }
    fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        self.0.into_panic()
    }
}

/// The join handle of a task on our runtime.
pub(crate) struct TaskHandle(tokio::task::JoinHandle<()>);

impl Future for TaskHandle {
    type Output = Result<(), TaskJoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_err(TaskJoinError)
    }
}

impl GenericRuntime for AgentVmRuntime {
    type JoinError = TaskJoinError;
    type JoinHandle = TaskHandle;

    fn spawn<F>(fut: F) -> Self::JoinHandle
    where
        F: Future<Output = ()> + Send + 'static,
    {
        TaskHandle(handle().spawn(fut))
    }

    fn spawn_blocking<F>(f: F) -> Self::JoinHandle
    where
        F: FnOnce() + Send + 'static,
    {
        TaskHandle(handle().spawn_blocking(f))
    }
}

tokio::task_local! {
    static TASK_LOCALS: std::cell::OnceCell<TaskLocals>;
}

impl ContextExt for AgentVmRuntime {
    fn scope<F, R>(locals: TaskLocals, fut: F) -> Pin<Box<dyn Future<Output = R> + Send>>
    where
        F: Future<Output = R> + Send + 'static,
    {
        let cell = std::cell::OnceCell::new();
        let _ = cell.set(locals);
        Box::pin(TASK_LOCALS.scope(cell, fut))
    }

    fn get_task_locals() -> Option<TaskLocals> {
        TASK_LOCALS
            .try_with(|c| c.get().cloned())
            .unwrap_or_default()
    }
}

/// A future the binding runs: it produces something Python can take.
pub(crate) type PyFuture<T> = BoxFuture<'static, PyResult<T>>;

/// Polls `fut` once on this thread, inside the runtime (so it may spawn and use timers).
fn poll_once<T>(rt: &Runtime, fut: &mut PyFuture<T>) -> Poll<PyResult<T>> {
    let _guard = rt.enter();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    fut.as_mut().poll(&mut cx)
}

/// An asyncio awaitable for `fut`. A future that is done at once becomes a [`Ready`] value
/// (no event-loop round trip); one that waits runs on the runtime and completes an asyncio
/// future (cancelling it drops the Rust future).
pub(crate) fn awaitable<'py, T>(py: Python<'py>, fut: PyFuture<T>) -> PyResult<Bound<'py, PyAny>>
where
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let rt = get()?;
    let mut fut = fut;
    match poll_once(&rt, &mut fut) {
        Poll::Ready(result) => {
            let result = result.and_then(|v| v.into_py_any(py));
            Ok(Bound::new(
                py,
                Ready {
                    result: Mutex::new(Some(result)),
                },
            )?
            .into_any())
        }
        Poll::Pending => {
            pyo3_async_runtimes::generic::future_into_py::<AgentVmRuntime, _, T>(py, fut)
        }
    }
}

/// Waits for `fut` on this thread with the GIL released, waking every [`SIGNAL_CHECK`] so
/// Ctrl-C (or any signal handler that raises) interrupts the wait; the future is dropped then.
pub(crate) fn wait<T: Send + 'static>(py: Python<'_>, fut: PyFuture<T>) -> PyResult<T> {
    let rt = get()?;
    let mut fut = fut;
    if let Poll::Ready(result) = poll_once(&rt, &mut fut) {
        return result;
    }
    loop {
        // The timer is made inside block_on: it needs the runtime's context.
        let step =
            py.detach(|| rt.block_on(async { tokio::time::timeout(SIGNAL_CHECK, &mut fut).await }));
        match step {
            Ok(result) => return result,
            Err(_elapsed) => py.check_signals()?,
        }
    }
}

/// An awaitable whose result is already known: `await` returns it (or raises) at once.
#[pyclass(module = "agentvm._native", frozen)]
pub struct Ready {
    /// The result; taken by the first `await`.
    result: Mutex<Option<PyResult<Py<PyAny>>>>,
}

#[pymethods]
impl Ready {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let taken = self.result.lock().unwrap_or_else(|p| p.into_inner()).take();
        match taken {
            Some(Ok(value)) => Err(PyStopIteration::new_err((value,))),
            Some(Err(e)) => Err(e),
            None => Err(PyStopIteration::new_err((py.None(),))),
        }
    }
}
