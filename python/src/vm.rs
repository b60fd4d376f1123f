//! `Runtime`: a handle on embed ([`Embed`]), local (`open`) or remote (`connect`), with the
//! same methods. Options arrive as embed's JSON text; commands as dicts, converted straight
//! to the core's command (no JSON text in between) and parsed by embed, strictly.

use crate::call::{Call, Out};
use crate::error::to_py;
use crate::json::from_py;
use agentvm_embed::agentvm::Error;
use agentvm_embed::{ConnectOptions, Embed, EmbedOptions, ServeOptions, SubscribeOptions};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};
use std::time::Duration;

/// A runtime handle. Every waiting method returns a [`Call`].
#[pyclass(module = "agentvm._native", frozen)]
pub struct Runtime {
    /// Cheap to clone into every future.
    embed: Embed,
}

impl Runtime {
    pub(crate) fn new(embed: Embed) -> Self {
        Runtime { embed }
    }
}

fn invalid(message: impl Into<String>) -> PyErr {
    to_py(Error::invalid(message.into()))
}

/// The command a dict `{"type": "<name>_request", "data": {...}}` is, parsed by embed.
fn command(command: &Bound<'_, PyAny>) -> PyResult<agentvm_embed::agentvm::Command> {
    let dict = command.cast::<PyDict>().map_err(|_| {
        invalid("a command is a dict {\"type\": \"<name>_request\", \"data\": {...}}")
    })?;
    let mut type_name = None;
    let mut data = serde_json::Value::Null;
    for (key, value) in dict.iter() {
        match key.cast::<PyString>().map(|k| k.to_str()) {
            Ok(Ok("type")) => type_name = Some(value.extract::<String>()?),
            Ok(Ok("data")) => data = from_py(&value)?,
            _ => {
                return Err(invalid(format!(
                    "Invalid request JSON: unknown field `{key}`, expected `type` or `data`"
                )))
            }
        }
    }
    let type_name =
        type_name.ok_or_else(|| invalid("Invalid request JSON: missing field `type`"))?;
    agentvm_embed::parse_command_parts(&type_name, data).map_err(to_py)
}

fn seconds(timeout: Option<f64>) -> PyResult<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(invalid(format!(
            "timeout is {s}: a number of seconds, 0 or more"
        ))),
    }
}

#[pymethods]
impl Runtime {
    /// Runs a command (`{"type": "image_get_request", "data": {...}}`); the call gives the
    /// response's `data`. `timeout` (seconds) and `cancel_id` (for `cancel`) bound it.
    #[pyo3(signature = (command, timeout=None, cancel_id=None))]
    fn request(
        &self,
        command: &Bound<'_, PyAny>,
        timeout: Option<f64>,
        cancel_id: Option<u64>,
    ) -> PyResult<Call> {
        let command = self::command(command)?;
        let timeout = seconds(timeout)?;
        let embed = self.embed.clone();
        Call::start(Box::pin(async move {
            let response = if timeout.is_none() && cancel_id.is_none() {
                embed.request_command(command).await
            } else {
                embed
                    .call(cancel_id, timeout, embed.request_command(command))
                    .await
            };
            response.map(|r| Out::Data(Box::new(r))).map_err(to_py)
        }))
    }

    /// Subscribes (embed's subscribe options as JSON); the call gives an `EventStream`.
    /// Events caused after the call has finished are never missed.
    fn subscribe(&self, options: &str) -> PyResult<Call> {
        let options = SubscribeOptions::from_json(options).map_err(to_py)?;
        let embed = self.embed.clone();
        Call::start(Box::pin(async move {
            embed
                .subscribe(options)
                .await
                .map(Out::Stream)
                .map_err(to_py)
        }))
    }

    /// Ends the request running with `cancel_id` (it raises `CancelledError`); `False` when
    /// none is.
    fn cancel(&self, cancel_id: u64) -> bool {
        self.embed.cancel(cancel_id)
    }

    /// Serves this local runtime (embed's serve options as JSON); the call gives
    /// `{"url", "wsUrl", "port"}`.
    fn serve(&self, options: &str) -> PyResult<Call> {
        let options = ServeOptions::from_json(options).map_err(to_py)?;
        let embed = self.embed.clone();
        Call::start(Box::pin(async move {
            embed.serve(options).await.map(Out::Served).map_err(to_py)
        }))
    }

    /// Stops the server `serve` started on `port`; the call gives whether there was one.
    fn stop_serving(&self, port: u16) -> PyResult<Call> {
        let embed = self.embed.clone();
        Call::start(Box::pin(async move {
            Ok(Out::Bool(embed.stop_serving(port).await))
        }))
    }

    /// Ends every stream and call of this handle and stops its servers, then the agents
    /// (partial replies are stored) and writes everything out; closes a remote connection.
    fn close(&self) -> PyResult<Call> {
        let embed = self.embed.clone();
        Call::start(Box::pin(async move {
            embed.close().await;
            Ok(Out::None)
        }))
    }

    /// Whether this runtime runs in this process.
    #[getter]
    fn is_local(&self) -> bool {
        self.embed.is_local()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.embed.is_closed()
    }

    fn __repr__(&self) -> String {
        format!("<agentvm {:?}>", self.embed)
    }
}

/// Opens a local runtime from embed's open options as JSON (`{"dataDir", "llm", ...}`); the
/// call gives a `Runtime`.
#[pyfunction]
pub(crate) fn open(options: &str) -> PyResult<Call> {
    let options = EmbedOptions::from_json(options).map_err(to_py)?;
    Call::start(Box::pin(async move {
        Embed::open(options).await.map(Out::Runtime).map_err(to_py)
    }))
}

/// Connects to an agentvm server from embed's connect options as JSON (`{"url", "token",
/// "timeoutMs"}`); the call gives a `Runtime`.
#[pyfunction]
pub(crate) fn connect(options: &str) -> PyResult<Call> {
    let options = ConnectOptions::from_json(options).map_err(to_py)?;
    Call::start(Box::pin(async move {
        Embed::connect(options)
            .await
            .map(Out::Runtime)
            .map_err(to_py)
    }))
}
