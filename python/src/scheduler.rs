//! `Scheduler`: the Docker sandbox scheduler (nodes, templates, sandboxes, exec, files).
//!
//! Operations are named and take a dict of arguments, like the runtime's commands; records
//! come back as the same JSON the REST API serves. Files cross as bytes, and `exec` streams
//! its output as an iterator (`ExecStream`).

use crate::error::{to_py, IntoPyResult};
use crate::json::{from_py, Json};
use crate::runtime::{self, awaitable, wait, PyFuture};
use agentvm::scheduler::{
    ExecEvent, ExecRequest, ExecStream as CoreExecStream, Heartbeat, NodeRegistration, NodeStatus,
    OrphanPolicy, SandboxRequest, TemplateSpec,
};
use agentvm::{Error, SchedulerConfig};
use pyo3::exceptions::{PyStopAsyncIteration, PyStopIteration};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Mutex;

/// The scheduler. Share a runtime's store and bus with `Scheduler.open(runtime=vm)`.
#[pyclass(module = "agentvm._native", frozen)]
pub struct Scheduler {
    /// Cheap to clone into every future.
    inner: agentvm::Scheduler,
}

impl Scheduler {
    /// The core scheduler (for merging its routes into a server).
    pub fn inner(&self) -> agentvm::Scheduler {
        self.inner.clone()
    }
}

/// One argument of an operation, deserialized; `InvalidInput` naming it when missing or wrong.
fn arg<T: DeserializeOwned>(
    args: &mut serde_json::Map<String, Value>,
    name: &str,
) -> agentvm::Result<T> {
    let value = args.remove(name).unwrap_or(Value::Null);
    serde_json::from_value(value).map_err(|e| Error::invalid(format!("{name}: {e}")))
}

fn json<T: serde::Serialize>(value: T) -> agentvm::Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::Internal(format!("serializing: {e}")))
}

/// Runs the operation `op` with `args`. The one table of what the scheduler offers Python.
async fn dispatch(s: agentvm::Scheduler, op: String, args: Value) -> agentvm::Result<Value> {
    let mut a = match args {
        Value::Object(map) => map,
        Value::Null => serde_json::Map::new(),
        _ => return Err(Error::invalid("arguments must be a dict")),
    };
    let a = &mut a;
    match op.as_str() {
        "register_node" => json(
            s.register_node(arg::<NodeRegistration>(a, "registration")?)
                .await?,
        ),
        "heartbeat" => json(s.heartbeat(arg::<Heartbeat>(a, "heartbeat")?).await?),
        "list_nodes" => json(s.list_nodes()),
        "get_node" => json(s.get_node(&arg::<String>(a, "node_id")?)?),
        "set_node_status" => {
            let id: String = arg(a, "node_id")?;
            json(
                s.set_node_status(&id, arg::<NodeStatus>(a, "status")?)
                    .await?,
            )
        }
        "remove_node" => json(s.remove_node(&arg::<String>(a, "node_id")?).await?),
        "create_template" => {
            let id: String = arg(a, "template_id")?;
            json(
                s.create_template(&id, arg::<TemplateSpec>(a, "spec")?)
                    .await?,
            )
        }
        "update_template" => {
            let id: String = arg(a, "template_id")?;
            json(
                s.update_template(&id, arg::<TemplateSpec>(a, "spec")?)
                    .await?,
            )
        }
        "get_template" => json(s.get_template(&arg::<String>(a, "template_id")?).await?),
        "list_templates" => json(s.list_templates().await?),
        "delete_template" => json(s.delete_template(&arg::<String>(a, "template_id")?).await?),
        "fill_pool" => json(s.fill_pool(&arg::<String>(a, "template_id")?).await?),
        "create_sandbox" => json(
            s.create_sandbox(arg::<SandboxRequest>(a, "request")?)
                .await?,
        ),
        "get_sandbox" => json(s.get_sandbox(&arg::<String>(a, "sandbox_id")?).await?),
        "list_sandboxes" => json(s.list_sandboxes().await?),
        "terminate_sandbox" => json(
            s.terminate_sandbox(&arg::<String>(a, "sandbox_id")?)
                .await?,
        ),
        "delete_sandbox" => json(s.delete_sandbox(&arg::<String>(a, "sandbox_id")?).await?),
        "sandbox_for_owner" => {
            let owner: String = arg(a, "owner")?;
            let template: String = arg(a, "template_id")?;
            json(s.sandbox_for_owner(&owner, &template).await?.id())
        }
        "release_owner" => json(s.release_owner(&arg::<String>(a, "owner")?).await?),
        "exec_collect" => {
            let id: String = arg(a, "sandbox_id")?;
            json(
                s.exec_collect(&id, arg::<ExecRequest>(a, "request")?)
                    .await?,
            )
        }
        "get_execution" => json(s.get_execution(&arg::<String>(a, "execution_id")?).await?),
        "list_executions" => json(s.list_executions(&arg::<String>(a, "sandbox_id")?).await?),
        "list_files" => {
            let id: String = arg(a, "sandbox_id")?;
            json(s.list_files(&id, &arg::<String>(a, "path")?).await?)
        }
        "metrics" => json(s.metrics()),
        "instance" => json(s.instance()),
        other => Err(Error::invalid(format!(
            "unknown scheduler operation {other:?}"
        ))),
    }
}

fn call_future(s: agentvm::Scheduler, op: String, args: Value) -> PyFuture<Json> {
    Box::pin(async move { dispatch(s, op, args).await.map(Json).py() })
}

fn args_of(args: Option<&Bound<'_, PyDict>>) -> PyResult<Value> {
    match args {
        Some(d) => from_py(d.as_any()),
        None => Ok(Value::Null),
    }
}

/// Seconds (float) from a config dict as a duration.
fn secs(v: &Value, name: &str) -> agentvm::Result<Duration> {
    v.as_f64()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| Error::invalid(format!("{name} must be a number of seconds")))
}

/// The scheduler's tuning from a dict (durations in seconds).
fn config_of(config: Value) -> agentvm::Result<SchedulerConfig> {
    let mut c = SchedulerConfig::default();
    let Value::Object(map) = config else {
        return Ok(c);
    };
    for (k, v) in &map {
        let count = || {
            v.as_u64()
                .ok_or_else(|| Error::invalid(format!("{k} must be a whole number")))
        };
        match k.as_str() {
            "heartbeat_interval" => c.heartbeat_interval = secs(v, k)?,
            "offline_after" => c.offline_after = secs(v, k)?,
            "sweep_interval" => c.sweep_interval = secs(v, k)?,
            "stuck_creating_after" => c.stuck_creating_after = secs(v, k)?,
            "docker_timeout" => c.docker_timeout = secs(v, k)?,
            "default_exec_timeout" => c.default_exec_timeout = secs(v, k)?,
            "owner_idle_timeout" => c.owner_idle_timeout = secs(v, k)?,
            "max_starts_in_flight" => c.max_starts_in_flight = count()? as usize,
            "max_start_queue" => c.max_start_queue = count()? as usize,
            "max_output_bytes" => c.max_output_bytes = count()? as usize,
            "max_file_bytes" => c.max_file_bytes = count()? as usize,
            "internal_token" => c.internal_token = v.as_str().map(String::from),
            "background" => c.background = v.as_bool().unwrap_or(true),
            "orphans" => {
                c.orphans = match v.as_str() {
                    Some("adopt") => OrphanPolicy::Adopt,
                    Some("remove") => OrphanPolicy::Remove,
                    _ => return Err(Error::invalid("orphans must be \"adopt\" or \"remove\"")),
                }
            }
            other => {
                return Err(Error::invalid(format!(
                    "unknown scheduler setting {other:?}"
                )))
            }
        }
    }
    Ok(c)
}

fn open_future(
    runtime: Option<agentvm::AgentVm>,
    nodes: Value,
    config: Value,
) -> PyResult<PyFuture<Scheduler>> {
    let nodes: Vec<NodeRegistration> = match nodes {
        Value::Null => Vec::new(),
        v => serde_json::from_value(v).map_err(|e| to_py(Error::invalid(format!("nodes: {e}"))))?,
    };
    let config = config_of(config).py()?;
    Ok(Box::pin(async move {
        let mut builder = agentvm::Scheduler::builder().config(config);
        if let Some(vm) = runtime {
            builder = builder
                .store(vm.store().scheduler_store().py()?)
                .events(std::sync::Arc::new(vm.bus().clone()));
        }
        for n in nodes {
            builder = builder.node(n);
        }
        Ok(Scheduler {
            inner: builder.open().await.py()?,
        })
    }))
}

fn runtime_of(
    runtime: Option<&Bound<'_, crate::vm::Runtime>>,
) -> PyResult<Option<agentvm::AgentVm>> {
    runtime.map(|r| r.get().local("a scheduler")).transpose()
}

/// Opens a scheduler: `runtime` shares a local runtime's store and events (else in
/// memory), `nodes` registers nodes (`[{"node_id", "api_endpoint", ...}]`), `config` tunes it
/// (durations in seconds).
#[pyfunction]
#[pyo3(signature = (runtime=None, nodes=None, config=None))]
pub fn open_scheduler<'py>(
    py: Python<'py>,
    runtime: Option<&Bound<'py, crate::vm::Runtime>>,
    nodes: Option<&Bound<'py, PyAny>>,
    config: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let nodes = nodes.map(from_py).transpose()?.unwrap_or(Value::Null);
    let fut = open_future(runtime_of(runtime)?, nodes, args_of(config)?)?;
    awaitable(py, fut)
}

/// `open_scheduler`, blocking.
#[pyfunction]
#[pyo3(signature = (runtime=None, nodes=None, config=None))]
pub fn open_scheduler_blocking(
    py: Python<'_>,
    runtime: Option<&Bound<'_, crate::vm::Runtime>>,
    nodes: Option<&Bound<'_, PyAny>>,
    config: Option<&Bound<'_, PyDict>>,
) -> PyResult<Scheduler> {
    let nodes = nodes.map(from_py).transpose()?.unwrap_or(Value::Null);
    let fut = open_future(runtime_of(runtime)?, nodes, args_of(config)?)?;
    wait(py, fut)
}

fn write_future(s: agentvm::Scheduler, id: String, path: String, data: Vec<u8>) -> PyFuture<()> {
    Box::pin(async move { s.write_file(&id, &path, data).await.py() })
}

/// File contents on their way to Python, as `bytes`.
pub struct Bytes(Vec<u8>);

impl<'py> IntoPyObject<'py> for Bytes {
    type Target = PyBytes;
    type Output = Bound<'py, PyBytes>;
    type Error = PyErr;
    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(py, &self.0))
    }
}

fn read_future(s: agentvm::Scheduler, id: String, path: String) -> PyFuture<Bytes> {
    Box::pin(async move { s.read_file(&id, &path).await.map(Bytes).py() })
}

#[pymethods]
impl Scheduler {
    /// Runs the operation `op` (`create_sandbox`, `list_nodes`, ...) with `args`.
    #[pyo3(signature = (op, args=None))]
    fn call<'py>(
        &self,
        py: Python<'py>,
        op: String,
        args: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, call_future(self.inner.clone(), op, args_of(args)?))
    }

    /// `call`, blocking.
    #[pyo3(signature = (op, args=None))]
    fn call_blocking(
        &self,
        py: Python<'_>,
        op: String,
        args: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<Json> {
        wait(py, call_future(self.inner.clone(), op, args_of(args)?))
    }

    /// Writes a file in a sandbox (its directory must exist).
    fn write_file<'py>(
        &self,
        py: Python<'py>,
        sandbox_id: String,
        path: String,
        data: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, write_future(self.inner.clone(), sandbox_id, path, data))
    }

    /// `write_file`, blocking.
    fn write_file_blocking(
        &self,
        py: Python<'_>,
        sandbox_id: String,
        path: String,
        data: Vec<u8>,
    ) -> PyResult<()> {
        wait(py, write_future(self.inner.clone(), sandbox_id, path, data))
    }

    /// Reads a file of a sandbox.
    fn read_file<'py>(
        &self,
        py: Python<'py>,
        sandbox_id: String,
        path: String,
    ) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, read_future(self.inner.clone(), sandbox_id, path))
    }

    /// `read_file`, blocking.
    fn read_file_blocking(
        &self,
        py: Python<'_>,
        sandbox_id: String,
        path: String,
    ) -> PyResult<Bytes> {
        wait(py, read_future(self.inner.clone(), sandbox_id, path))
    }

    /// Starts a command in a sandbox; iterate the result for its output as it comes.
    /// `request`: `{"command": [...]}` or `{"code": ..., "language": ...}`, with `env`,
    /// `workdir`, `timeoutMs`, `maxOutputBytes`.
    fn exec(&self, sandbox_id: String, request: &Bound<'_, PyAny>) -> PyResult<ExecStream> {
        let request: ExecRequest = crate::json::from_py_as(request)?;
        let s = self.inner.clone();
        ExecStream::start(Box::pin(async move { s.exec(&sandbox_id, request).await }))
    }

    /// The `agentvm.instance` label of this scheduler's containers.
    #[getter]
    fn instance(&self) -> String {
        self.inner.instance().to_string()
    }
}

/// Where an exec stream is.
enum ExecState {
    /// Starting the command.
    Starting(tokio::task::JoinHandle<agentvm::Result<CoreExecStream>>),
    /// Streaming output.
    Running(CoreExecStream),
    /// Finished.
    Done,
}

/// The output of a running command: iterate (`async for` / `for`) for chunks
/// `{"stream": "stdout" | "stderr", "data": str}`; after the last one, `execution` holds the
/// finished execution (status, exit code, full capped output).
#[pyclass(module = "agentvm._native", frozen)]
pub struct ExecStream {
    /// One receiver at a time.
    state: Arc<Mutex<ExecState>>,
    /// The finished execution, once known.
    execution: Arc<StdMutex<Option<Value>>>,
}

impl ExecStream {
    fn start(
        fut: futures::future::BoxFuture<'static, agentvm::Result<CoreExecStream>>,
    ) -> PyResult<Self> {
        let rt = runtime::get()?;
        let mut fut = fut;
        let state = {
            let _guard = rt.enter();
            let mut cx = Context::from_waker(std::task::Waker::noop());
            match fut.as_mut().poll(&mut cx) {
                Poll::Ready(r) => ExecState::Running(r.py()?),
                Poll::Pending => ExecState::Starting(rt.spawn(fut)),
            }
        };
        Ok(ExecStream {
            state: Arc::new(Mutex::new(state)),
            execution: Arc::new(StdMutex::new(None)),
        })
    }

    fn next_future(&self, end: fn() -> PyErr) -> PyFuture<Json> {
        let state = self.state.clone();
        let execution = self.execution.clone();
        Box::pin(async move {
            let mut st = state.lock().await;
            loop {
                match &mut *st {
                    ExecState::Done => return Err(end()),
                    ExecState::Starting(h) => {
                        let started = h
                            .await
                            .map_err(|e| {
                                to_py(Error::Internal(format!("exec failed to start: {e}")))
                            })?
                            .py()?;
                        *st = ExecState::Running(started);
                    }
                    ExecState::Running(stream) => match stream.next_event().await {
                        Some(ExecEvent::Output { stream, data }) => {
                            return Ok(Json(serde_json::json!({"stream": stream, "data": data})))
                        }
                        Some(ExecEvent::Finished(x)) => {
                            let v = serde_json::to_value(&*x).unwrap_or(Value::Null);
                            *execution.lock().unwrap_or_else(|p| p.into_inner()) = Some(v);
                            *st = ExecState::Done;
                        }
                        None => *st = ExecState::Done,
                    },
                }
            }
        })
    }
}

fn stop_async() -> PyErr {
    PyStopAsyncIteration::new_err(())
}

fn stop() -> PyErr {
    PyStopIteration::new_err(())
}

#[pymethods]
impl ExecStream {
    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, self.next_future(stop_async))
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Json> {
        wait(py, self.next_future(stop))
    }

    /// The finished execution (`status`, `exitCode`, `stdout`, `stderr`, ...), `None` until
    /// the stream has ended.
    #[getter]
    fn execution(&self) -> Json {
        Json(
            self.execution
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or(Value::Null),
        )
    }
}
