//! [`Call`]: what every waiting method of the module returns, and the two ways Python waits
//! for it.
//!
//! A call starts at once: its future is polled once on the calling thread (most local
//! commands, `image_get` or a queued event batch, finish right there and no thread hop or
//! event-loop callback is paid); a future still pending goes on embed's runtime. Then:
//!
//! - awaited in asyncio, a finished call returns at once and a running one becomes an asyncio
//!   future (cancelling it stops waiting; what the command already did stays done);
//! - inside [`run_blocking`], the call waits on the calling thread with the GIL released,
//!   waking every [`SIGNAL_CHECK`] so Ctrl-C (any signal handler that raises) interrupts it.
//!
//! [`run_blocking`] drives a coroutine of the package's async API to its end on the calling
//! thread: every `Call` it awaits waits in place, so the coroutine never yields to an event
//! loop. That is how the package derives its blocking API from the async one.

use crate::error::to_py;
use crate::events::EventStream;
use crate::vm::Runtime;
use futures::future::BoxFuture;
use pyo3::exceptions::{PyRuntimeError, PyStopIteration};
use pyo3::prelude::*;
use pyo3_async_runtimes::generic::{ContextExt, JoinError, Runtime as GenericRuntime};
use pyo3_async_runtimes::TaskLocals;
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Bumped on fork (`_after_fork`, registered with `os.register_at_fork`) and at exit
/// (`_shutdown`): a thread's cached handle from an earlier generation is stale.
static GENERATION: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's handle on embed's runtime and the generation it was taken in: a call
    /// then costs no lock and no `getpid` (embed's check that the runtime is this process's),
    /// a good part of a local command's round trip. A handle does not keep the runtime alive.
    static RUNTIME: RefCell<Option<(u64, Handle)>> = const { RefCell::new(None) };
}

/// A handle on embed's runtime of the process, through this thread's cache.
pub(crate) fn runtime() -> PyResult<Handle> {
    let generation = GENERATION.load(Ordering::Acquire);
    RUNTIME.with(|cached| {
        let mut cached = cached.borrow_mut();
        if let Some((g, handle)) = cached.as_ref() {
            if *g == generation {
                return Ok(handle.clone());
            }
        }
        let handle = agentvm_embed::process::handle().map_err(to_py)?;
        *cached = Some((generation, handle.clone()));
        Ok(handle)
    })
}

/// In a forked child: every thread's cached handle is the parent's, and so is embed's runtime.
pub(crate) fn after_fork() {
    GENERATION.fetch_add(1, Ordering::AcqRel);
    agentvm_embed::process::after_fork();
}

/// At interpreter exit: stops embed's runtime; cached handles are stale.
pub(crate) fn shutdown(grace: Duration) {
    GENERATION.fetch_add(1, Ordering::AcqRel);
    agentvm_embed::process::shutdown(grace);
}

/// How often a blocking wait wakes up to let Python handle signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(50);

/// What a call gives Python when it ends.
pub(crate) enum Out {
    /// `None`.
    None,
    /// A bool.
    Bool(bool),
    /// A command's response: Python gets its `data`.
    Data(Box<agentvm_embed::agentvm::Response>),
    /// A runtime handle.
    Runtime(agentvm_embed::Embed),
    /// An event stream.
    Stream(agentvm_embed::EventStream),
    /// A batch of events as embed's JSON array text (`None`: timed out or ended).
    Batch(Option<String>),
    /// Where a server listens.
    Served(agentvm_embed::Served),
}

impl<'py> IntoPyObject<'py> for Out {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(match self {
            Out::None | Out::Batch(None) => py.None().into_bound(py),
            Out::Bool(b) => pyo3::types::PyBool::new(py, b).to_owned().into_any(),
            Out::Data(response) => crate::json::response_data(py, &response)?,
            Out::Runtime(embed) => Bound::new(py, Runtime::new(embed))?.into_any(),
            Out::Stream(stream) => Bound::new(py, EventStream::new(stream))?.into_any(),
            Out::Batch(Some(text)) => crate::json::parse(py, &text)?,
            Out::Served(served) => crate::json::serialize(py, &served)?,
        })
    }
}

/// A future the module runs.
pub(crate) type CallFuture = BoxFuture<'static, PyResult<Out>>;

/// Where a call is.
enum State {
    /// Finished; the result is taken by the first wait.
    Done(PyResult<Out>),
    /// Running on the runtime.
    Running(JoinHandle<PyResult<Out>>),
    /// Awaited in asyncio: the iterator of the asyncio future it became.
    Awaiting(Py<PyAny>),
    /// Its result was taken.
    Taken,
}

/// A call in progress (or finished): `await` it in asyncio, or let `run_blocking` wait for
/// it. Its result can be taken once.
#[pyclass(module = "agentvm._native", frozen)]
pub struct Call {
    state: Mutex<State>,
}

impl Call {
    /// Starts `fut`: polled once here, on the runtime if it has to wait.
    pub(crate) fn start(fut: CallFuture) -> PyResult<Call> {
        let rt = runtime()?;
        let mut fut = fut;
        let state = {
            let _guard = rt.enter();
            let mut cx = Context::from_waker(std::task::Waker::noop());
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(result) => State::Done(result),
                Poll::Pending => State::Running(rt.spawn(fut)),
            }
        };
        Ok(Call {
            state: Mutex::new(state),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn joined(result: Result<PyResult<Out>, tokio::task::JoinError>) -> PyResult<Out> {
    result.map_err(|e| {
        to_py(agentvm_embed::agentvm::Error::Internal(format!(
            "an agentvm task failed: {e}"
        )))
    })?
}

/// Waits for `handle` on this thread, GIL released, checking for signals every
/// [`SIGNAL_CHECK`]; a signal handler that raises ends the wait (the task runs on).
fn wait(py: Python<'_>, mut handle: JoinHandle<PyResult<Out>>) -> PyResult<Out> {
    let rt = runtime()?;
    loop {
        let step = py.detach(|| {
            rt.block_on(async { tokio::time::timeout(SIGNAL_CHECK, &mut handle).await })
        });
        match step {
            Ok(result) => return joined(result),
            Err(_elapsed) => py.check_signals()?,
        }
    }
}

/// The end of an awaitable: `StopIteration(value)`, or the call's error.
fn finish(py: Python<'_>, result: PyResult<Out>) -> PyResult<Py<PyAny>> {
    let value = result?.into_pyobject(py)?.unbind();
    Err(PyStopIteration::new_err((value,)))
}

thread_local! {
    /// How many `run_blocking` drives are running on this thread.
    static BLOCKING: Cell<u32> = const { Cell::new(0) };
}

/// Marks this thread as driving a coroutine blocking, for as long as it lives.
struct BlockingScope;

impl BlockingScope {
    fn enter() -> Self {
        BLOCKING.with(|b| b.set(b.get() + 1));
        BlockingScope
    }
}

impl Drop for BlockingScope {
    fn drop(&mut self) {
        BLOCKING.with(|b| b.set(b.get().saturating_sub(1)));
    }
}

fn blocking() -> bool {
    BLOCKING.with(|b| b.get() > 0)
}

#[pymethods]
impl Call {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, State::Taken) {
            State::Done(result) => {
                drop(state);
                finish(py, result)
            }
            State::Running(handle) if handle.is_finished() || blocking() => {
                drop(state);
                let result = wait(py, handle);
                finish(py, result)
            }
            State::Running(handle) => {
                let future = pyo3_async_runtimes::generic::future_into_py::<AgentVmRuntime, _, Out>(
                    py,
                    async move { joined(handle.await) },
                )?;
                let iter = future.call_method0("__await__")?;
                *state = State::Awaiting(iter.clone().unbind());
                drop(state);
                iter.call_method0("__next__").map(Bound::unbind)
            }
            State::Awaiting(iter) => {
                *state = State::Awaiting(iter.clone_ref(py));
                drop(state);
                iter.call_method0(py, "__next__")
            }
            State::Taken => Err(PyRuntimeError::new_err(
                "this agentvm call was awaited already",
            )),
        }
    }

    /// Whether the call has finished (its result is ready).
    fn done(&self) -> bool {
        match &*self.lock() {
            State::Done(_) | State::Taken => true,
            State::Running(handle) => handle.is_finished(),
            State::Awaiting(_) => false,
        }
    }
}

/// Runs `awaitable` (a coroutine of the async API, or a `Call`) to its end on this thread and
/// returns its result: every `Call` it awaits waits in place (GIL released, Ctrl-C honoured).
/// A coroutine that awaits something else (an asyncio primitive) is an error.
#[pyfunction]
pub(crate) fn run_blocking(py: Python<'_>, awaitable: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let iter = awaitable.call_method0(pyo3::intern!(py, "__await__"))?;
    let step = {
        let _scope = BlockingScope::enter();
        iter.call_method0(pyo3::intern!(py, "__next__"))
    };
    match step {
        Err(e) if e.is_instance_of::<PyStopIteration>(py) => {
            Ok(e.value(py).getattr(pyo3::intern!(py, "value"))?.unbind())
        }
        Err(e) => Err(e),
        Ok(yielded) => {
            let _ = iter.call_method0("close");
            Err(PyRuntimeError::new_err(format!(
                "the blocking agentvm API cannot wait for {}: only agentvm calls can be waited for without an event loop",
                yielded.repr()?
            )))
        }
    }
}

/// The [`GenericRuntime`] pyo3-async-runtimes drives: embed's runtime of the process.
pub(crate) struct AgentVmRuntime;

/// A join error of the runtime.
pub(crate) struct TaskJoinError(tokio::task::JoinError);

impl JoinError for TaskJoinError {
    fn is_panic(&self) -> bool {
        self.0.is_panic()
    }
    fn into_panic(self) -> Box<dyn std::any::Any + Send + 'static> {
        self.0.into_panic()
    }
}

/// The join handle of a task on the runtime.
pub(crate) struct TaskHandle(JoinHandle<()>);

impl Future for TaskHandle {
    type Output = Result<(), TaskJoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map_err(TaskJoinError)
    }
}

/// A handle to spawn on: the current one inside a worker, else the process runtime's.
fn handle() -> Handle {
    if let Ok(h) = Handle::try_current() {
        return h;
    }
    match runtime() {
        Ok(h) => h,
        // Building a runtime failed (no threads left): nothing can run; say so loudly.
        Err(e) => panic!("agentvm: {e}"),
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
