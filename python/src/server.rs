//! `Server`: agentvm's server (WebSocket `/ws`, REST `/v1`, `/health`, `/metrics`) running in
//! this process, on the module's runtime. A runtime opened with a scheduler serves its routes
//! and counters too.

use crate::error::{to_py, IntoPyResult};
use crate::runtime::{awaitable, wait, PyFuture};
use agentvm::{AgentVm, Error};
use agentvm_server::{AuthMode, ServerConfig, ServerManager};
use pyo3::prelude::*;
use std::net::SocketAddr;
use std::sync::Arc;

/// A listening server. `await close()` drains it (running turns get a grace period).
#[pyclass(module = "agentvm._native", frozen)]
pub struct Server {
    /// Shared with the close futures.
    manager: Arc<ServerManager>,
    /// Where it listens (the port picked when 0 was asked for).
    addr: SocketAddr,
}

/// Parses `auth` and prepares the server; the future binds and starts serving.
pub(crate) fn start(vm: AgentVm, host: &str, port: u16, auth: &str) -> PyResult<PyFuture<Server>> {
    let auth = match auth {
        "auto" => AuthMode::Auto,
        "required" => AuthMode::Required,
        "disabled" => AuthMode::Disabled,
        other => {
            return Err(to_py(Error::invalid(format!(
                "auth={other:?}: use auto, required or disabled"
            ))))
        }
    };
    let addr = format!("{host}:{port}");
    Ok(Box::pin(async move {
        let manager = ServerManager::new(
            vm,
            ServerConfig {
                auth,
                ..Default::default()
            },
        );
        let addr = manager.listen(addr).await.py()?;
        Ok(Server {
            manager: Arc::new(manager),
            addr,
        })
    }))
}

fn close_future(manager: Arc<ServerManager>) -> PyFuture<()> {
    Box::pin(async move {
        manager.close().await;
        Ok(())
    })
}

#[pymethods]
impl Server {
    /// The port it listens on.
    #[getter]
    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The host it listens on.
    #[getter]
    fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// `http://host:port`.
    #[getter]
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `ws://host:port/ws`, for `agentvm.connect`.
    #[getter]
    fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// Stops accepting, lets running turns finish (up to a grace period), writes everything
    /// out.
    fn close<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        awaitable(py, close_future(self.manager.clone()))
    }

    /// `close`, blocking.
    fn close_blocking(&self, py: Python<'_>) -> PyResult<()> {
        wait(py, close_future(self.manager.clone()))
    }

    fn __repr__(&self) -> String {
        format!("<agentvm Server {}>", self.url())
    }
}
