//! `Runtime`: the handle on a local [`AgentVm`] or a remote runtime. Commands go in and
//! responses come out as the protocol's JSON (Python dicts); typed helpers live in Python.

use crate::error::{to_py, IntoPyResult};
use crate::events::Subscription;
use crate::json::{from_py, from_py_as};
use crate::runtime::{awaitable, wait, PyFuture};
use crate::server::{self, Server};
use agentvm::scheduler::{SchedulerBuilder, SchedulerOptions};
use agentvm::{
    AgentVm, Command, ConnectOptions, Definition, Error, EventFilter, LlmConfig, LlmDriver,
    MockDriver, MockScenario, RemoteRuntime, Scheduler,
};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What a `Runtime` handle drives.
#[derive(Clone)]
pub(crate) enum Target {
    /// The runtime in this process.
    Local(AgentVm),
    /// A runtime on an agentvm server.
    Remote(RemoteRuntime),
}

impl Target {
    fn runtime(&self) -> &dyn agentvm::Runtime {
        match self {
            Target::Local(vm) => vm,
            Target::Remote(r) => r,
        }
    }
}

/// A runtime: local (`open`) or remote (`connect`), with the same methods.
#[pyclass(module = "agentvm._native", frozen)]
pub struct Runtime {
    /// Cheap to clone into every future.
    target: Target,
}

impl Runtime {
    /// The local runtime, or `InvalidInput` naming what needs one.
    pub fn local(&self, what: &str) -> PyResult<AgentVm> {
        match &self.target {
            Target::Local(vm) => Ok(vm.clone()),
            Target::Remote(_) => Err(to_py(Error::invalid(format!(
                "{what} needs a local runtime (agentvm.open), not a connected one"
            )))),
        }
    }
}

/// A response on its way to Python: all of it, or (with `pick`) its `data` (`"*"`) or one
/// key of `data`. Converted straight into Python objects when it reaches the GIL.
pub(crate) struct Reply {
    /// The response.
    response: agentvm::Response,
    /// Which part the caller wants.
    pick: Option<String>,
}

impl<'py> IntoPyObject<'py> for Reply {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let whole = crate::json::serialize(py, &self.response)?;
        let Some(part) = self.pick else {
            return Ok(whole);
        };
        let data = match whole.cast::<PyDict>() {
            Ok(d) => d.get_item("data")?,
            Err(_) => None,
        };
        let Some(data) = data else {
            return Ok(py.None().into_bound(py));
        };
        if part == "*" {
            return Ok(data);
        }
        Ok(match data.cast::<PyDict>() {
            Ok(d) => d
                .get_item(part)?
                .unwrap_or_else(|| py.None().into_bound(py)),
            Err(_) => py.None().into_bound(py),
        })
    }
}

fn request_future(target: Target, command: Command, pick: Option<String>) -> PyFuture<Reply> {
    Box::pin(async move {
        let response = target.runtime().request(command).await.py()?;
        Ok(Reply { response, pick })
    })
}

#[pymethods]
impl Runtime {
    /// Runs a command (`{"type": "image_get_request", "data": {...}}`). Returns the response
    /// (`{"type": ..., "data": ...}`); with `pick`, only `data` (`"*"`) or one key of it.
    #[pyo3(signature = (command, pick=None))]
    fn request<'py>(
        &self,
        py: Python<'py>,
        command: &Bound<'py, PyAny>,
        pick: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let command: Command = from_py_as(command)?;
        awaitable(py, request_future(self.target.clone(), command, pick))
    }

    /// `request`, blocking (GIL released; Ctrl-C interrupts).
    #[pyo3(signature = (command, pick=None))]
    fn request_blocking(
        &self,
        py: Python<'_>,
        command: &Bound<'_, PyAny>,
        pick: Option<String>,
    ) -> PyResult<Reply> {
        let command: Command = from_py_as(command)?;
        wait(py, request_future(self.target.clone(), command, pick))
    }

    /// Subscribes to events: one session's (replayed after `after` when given), every
    /// session's (`all_sessions`), and/or the `global` topic. Subscribes at once, so events
    /// caused after this call are never missed.
    #[pyo3(signature = (session_id=None, after=None, all_sessions=false, global_events=false))]
    fn subscribe(
        &self,
        session_id: Option<String>,
        after: Option<u64>,
        all_sessions: bool,
        global_events: bool,
    ) -> PyResult<Subscription> {
        let filter = EventFilter {
            global: global_events,
            all_sessions,
            sessions: session_id.map(|s| (s, after)).into_iter().collect(),
            ..Default::default()
        };
        let target = self.target.clone();
        Subscription::start(Box::pin(
            async move { target.runtime().subscribe(filter).await },
        ))
    }

    /// Stops every agent (partial replies are stored) and writes everything out (local), or
    /// closes the connection (remote).
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, close_future(self.target.clone()))
    }

    /// `close`, blocking.
    fn close_blocking(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, close_future(self.target.clone()))
    }

    /// Serves this runtime (WebSocket `/ws`, REST `/v1`, `/health`, `/metrics`, and the
    /// scheduler's routes when it was opened with one) on `host:port` (port 0 picks one).
    /// `auth`: `auto` (tokens required off loopback), `required` or `disabled`.
    #[pyo3(signature = (host="127.0.0.1", port=0, auth="auto"))]
    fn serve<'py>(
        &self,
        py: Python<'py>,
        host: &str,
        port: u16,
        auth: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let vm = self.local("serve")?;
        awaitable(py, server::start(vm, host, port, auth)?)
    }

    /// `serve`, blocking.
    #[pyo3(signature = (host="127.0.0.1", port=0, auth="auto"))]
    fn serve_blocking(
        &self,
        py: Python<'_>,
        host: &str,
        port: u16,
        auth: &str,
    ) -> PyResult<Server> {
        let vm = self.local("serve")?;
        wait(py, server::start(vm, host, port, auth)?)
    }

    /// Whether this runtime runs in this process.
    #[getter]
    fn is_local(&self) -> bool {
        matches!(self.target, Target::Local(_))
    }

    /// The data dir of a local runtime (`None` in memory or remote).
    #[getter]
    fn data_dir(&self) -> Option<PathBuf> {
        match &self.target {
            Target::Local(vm) => vm.data_dir().map(PathBuf::from),
            Target::Remote(_) => None,
        }
    }

    fn __repr__(&self) -> String {
        match &self.target {
            Target::Local(vm) => format!("<agentvm Runtime local {:?}>", vm.data_dir()),
            Target::Remote(r) => format!("<agentvm Runtime {r:?}>"),
        }
    }
}

fn close_future(target: Target) -> PyFuture<()> {
    Box::pin(async move {
        match target {
            Target::Local(vm) => vm.close().await,
            Target::Remote(r) => r.close().await,
        }
        Ok(())
    })
}

/// The LLM driver `llm` names: `None` (from `LLM_PROVIDER` & co when set, else none),
/// `"env"`, `"mock"` or `"mock:<scenario>"`, or a dict of `provider`, `url`, `api_key`,
/// `model`, `max_retries`, `timeout_secs` (as the `LLM_*` variables read them).
fn driver(llm: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Arc<dyn LlmDriver>>> {
    let Some(llm) = llm.filter(|l| !l.is_none()) else {
        return match std::env::var("LLM_PROVIDER") {
            Ok(p) if !p.trim().is_empty() => LlmConfig::from_env()
                .and_then(|c| c.driver())
                .py()
                .map(Some),
            _ => Ok(None),
        };
    };
    if let Ok(name) = llm.cast::<PyString>() {
        let name = name.to_str()?;
        if name == "env" {
            return LlmConfig::from_env()
                .and_then(|c| c.driver())
                .py()
                .map(Some);
        }
        if name == "mock" || name.starts_with("mock:") {
            let scenario = if name == "mock" {
                Some(MockScenario::Default)
            } else {
                MockScenario::parse(name)
            };
            let scenario = scenario.ok_or_else(|| {
                to_py(Error::invalid(format!(
                    "unknown mock scenario {name:?}: use mock or mock:<default|multi-delta|long-stream|instant|error|with-tool|slow-stream>"
                )))
            })?;
            return Ok(Some(Arc::new(MockDriver::new(scenario))));
        }
        return Err(to_py(Error::invalid(format!(
            "llm={name:?}: use \"mock\", \"mock:<scenario>\", \"env\" or a dict with provider, url, api_key, model"
        ))));
    }
    let dict = llm
        .cast::<PyDict>()
        .map_err(|_| to_py(Error::invalid("llm must be None, a str or a dict")))?;
    let mut vars = std::collections::HashMap::new();
    for (k, v) in dict.iter() {
        let key: String = k.extract()?;
        let var = match key.as_str() {
            "provider" => "LLM_PROVIDER",
            "url" | "base_url" => "LLM_PROVIDER_URL",
            "api_key" | "key" => "LLM_PROVIDER_KEY",
            "model" => "LLM_PROVIDER_MODEL",
            "max_retries" => "LLM_MAX_RETRIES",
            "timeout_secs" => "LLM_TIMEOUT_SECS",
            other => {
                return Err(to_py(Error::invalid(format!(
                    "unknown llm setting {other:?}: use provider, url, api_key, model, max_retries, timeout_secs"
                ))))
            }
        };
        vars.insert(var, v.str()?.to_str()?.to_owned());
    }
    LlmConfig::from_vars(|name| vars.get(name).cloned())
        .and_then(|c| c.driver())
        .py()
        .map(Some)
}

fn open_future(
    data_dir: Option<PathBuf>,
    driver: Option<Arc<dyn LlmDriver>>,
    local_tools: bool,
    definitions: Vec<Definition>,
    max_tokens: Option<u32>,
    scheduler: Option<SchedulerBuilder>,
) -> PyFuture<Runtime> {
    Box::pin(async move {
        let mut builder = AgentVm::builder();
        if let Some(max_tokens) = max_tokens {
            builder = builder.agent_config(agentvm::AgentConfig {
                max_tokens,
                ..Default::default()
            });
        }
        if let Some(dir) = data_dir {
            builder = builder.data_dir(dir);
        }
        if let Some(d) = driver {
            builder = builder.llm(d);
        }
        if local_tools {
            builder = builder.local_tools();
        }
        for d in definitions {
            builder = builder.definition(d);
        }
        if let Some(s) = scheduler {
            builder = builder.scheduler(s);
        }
        let vm = builder.open().await.py()?;
        Ok(Runtime {
            target: Target::Local(vm),
        })
    })
}

/// The embedded scheduler from its options (a dict): handed to the core as JSON, which parses
/// and checks them (an unknown name is its `InvalidInput`).
fn scheduler(options: Option<&Bound<'_, PyAny>>) -> PyResult<Option<SchedulerBuilder>> {
    let Some(options) = options.filter(|o| !o.is_none()) else {
        return Ok(None);
    };
    let options = SchedulerOptions::from_json(from_py(options)?).py()?;
    Scheduler::builder().options(&options).py().map(Some)
}

fn definitions(defs: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<Definition>> {
    match defs {
        None => Ok(Vec::new()),
        Some(d) if d.is_none() => Ok(Vec::new()),
        Some(d) => from_py_as(d),
    }
}

/// Opens a local runtime. `data_dir=None` keeps everything in memory; `scheduler` (the
/// core's `SchedulerOptions` as a dict) embeds the Docker sandbox scheduler.
#[pyfunction]
#[pyo3(signature = (data_dir=None, llm=None, local_tools=false, definitions=None, max_tokens=None, scheduler=None))]
pub(crate) fn open<'py>(
    py: Python<'py>,
    data_dir: Option<PathBuf>,
    llm: Option<&Bound<'py, PyAny>>,
    local_tools: bool,
    definitions: Option<&Bound<'py, PyAny>>,
    max_tokens: Option<u32>,
    scheduler: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let fut = open_future(
        data_dir,
        driver(llm)?,
        local_tools,
        self::definitions(definitions)?,
        max_tokens,
        self::scheduler(scheduler)?,
    );
    awaitable(py, fut)
}

/// `open`, blocking.
#[pyfunction]
#[pyo3(signature = (data_dir=None, llm=None, local_tools=false, definitions=None, max_tokens=None, scheduler=None))]
pub(crate) fn open_blocking(
    py: Python<'_>,
    data_dir: Option<PathBuf>,
    llm: Option<&Bound<'_, PyAny>>,
    local_tools: bool,
    definitions: Option<&Bound<'_, PyAny>>,
    max_tokens: Option<u32>,
    scheduler: Option<&Bound<'_, PyAny>>,
) -> PyResult<Runtime> {
    let fut = open_future(
        data_dir,
        driver(llm)?,
        local_tools,
        self::definitions(definitions)?,
        max_tokens,
        self::scheduler(scheduler)?,
    );
    wait(py, fut)
}

fn connect_future(
    url: String,
    token: Option<String>,
    timeout: Option<f64>,
) -> PyResult<PyFuture<Runtime>> {
    let mut options = ConnectOptions {
        token,
        ..Default::default()
    };
    if let Some(secs) = timeout {
        if !(secs.is_finite() && secs > 0.0) {
            return Err(to_py(Error::invalid(
                "timeout must be a number of seconds above 0",
            )));
        }
        options.request_timeout = Duration::from_secs_f64(secs);
        options.connect_timeout = Duration::from_secs_f64(secs);
    }
    Ok(Box::pin(async move {
        let remote = agentvm::connect(&url, options).await.py()?;
        Ok(Runtime {
            target: Target::Remote(remote),
        })
    }))
}

/// Connects to an agentvm server (`ws://host:port/ws`); the result has the same methods as a
/// local runtime.
#[pyfunction]
#[pyo3(signature = (url, token=None, timeout=None))]
pub(crate) fn connect<'py>(
    py: Python<'py>,
    url: String,
    token: Option<String>,
    timeout: Option<f64>,
) -> PyResult<Bound<'py, PyAny>> {
    awaitable(py, connect_future(url, token, timeout)?)
}

/// `connect`, blocking.
#[pyfunction]
#[pyo3(signature = (url, token=None, timeout=None))]
pub(crate) fn connect_blocking(
    py: Python<'_>,
    url: String,
    token: Option<String>,
    timeout: Option<f64>,
) -> PyResult<Runtime> {
    wait(py, connect_future(url, token, timeout)?)
}

/// Checks that a value converts to JSON and back unchanged (used by tests of the boundary).
#[pyfunction]
pub(crate) fn _json_round_trip(py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
    let v = from_py(value)?;
    Ok(crate::json::to_py(py, &v)?.unbind())
}
