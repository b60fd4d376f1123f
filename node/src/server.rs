//! The agentvm server in this process: `vm.serve({host, port})`.
//!
//! The native handle does not keep Node running by itself; the façade holds a timer handle
//! while the server listens (with `ref()`/`unref()` like `net.Server`) and clears it on close.

use crate::error::invalid;
use crate::settle::{spawn, CoreResult};
use agentvm::AgentVm;
use agentvm_server::{AuthMode, ServerConfig, ServerManager};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Options of `serve()`.
#[napi(object)]
#[derive(Default)]
pub struct ServeOptions {
    /// The address to bind (default `127.0.0.1`).
    pub host: Option<String>,
    /// The port (default 0: any free port; read it from `server.port`).
    pub port: Option<u32>,
    /// When clients need a token: `"auto"` (default: required unless bound to loopback),
    /// `"required"`, or `"disabled"`.
    pub auth: Option<String>,
    /// On close, how long running turns may finish before they are interrupted, in
    /// milliseconds (default 10000).
    pub shutdown_grace_ms: Option<u32>,
}

/// A running server, shared by its handle and the runtime that closes it.
pub(crate) struct ServerState {
    manager: ServerManager,
    addr: SocketAddr,
    closed: AtomicBool,
}

impl ServerState {
    /// Stops accepting, lets turns finish within the grace period, and returns. Idempotent.
    pub(crate) async fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.manager.close().await;
        }
    }
}

/// Binds and serves `vm` (with its scheduler's routes, when it embeds one).
pub(crate) async fn start(vm: AgentVm, o: ServeOptions) -> CoreResult<Arc<ServerState>> {
    let auth = match o.auth.as_deref() {
        None | Some("auto") => AuthMode::Auto,
        Some("required") => AuthMode::Required,
        Some("disabled") => AuthMode::Disabled,
        Some(other) => {
            return Err(invalid(format!(
                "auth is {other:?}; use \"auto\", \"required\" or \"disabled\""
            )))
        }
    };
    let port = match o.port {
        None => 0,
        Some(p) => {
            u16::try_from(p).map_err(|_| invalid(format!("port {p} is not between 0 and 65535")))?
        }
    };
    let mut config = ServerConfig {
        auth,
        ..Default::default()
    };
    if let Some(ms) = o.shutdown_grace_ms {
        config.shutdown_grace = Duration::from_millis(ms.into());
    }
    let manager = ServerManager::new(vm, config);
    let host = o.host.unwrap_or_else(|| "127.0.0.1".into());
    let addr = manager.listen((host.as_str(), port)).await?;
    Ok(Arc::new(ServerState {
        manager,
        addr,
        closed: AtomicBool::new(false),
    }))
}

/// A listening server. The `agentvm` package wraps it in `Server`; use that.
#[napi]
pub struct NativeServer {
    state: Arc<ServerState>,
}

impl NativeServer {
    pub(crate) fn new(state: Arc<ServerState>) -> Self {
        NativeServer { state }
    }
}

#[napi]
impl NativeServer {
    /// The bound port.
    #[napi(getter)]
    pub fn port(&self) -> u32 {
        self.state.addr.port().into()
    }

    /// The bound address.
    #[napi(getter)]
    pub fn host(&self) -> String {
        self.state.addr.ip().to_string()
    }

    /// Stops accepting, lets running turns finish within the grace period (then interrupts
    /// them, storing partial replies), and resolves. Closing twice is a no-op.
    #[napi]
    pub fn close<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let state = self.state.clone();
        spawn(env, async move {
            state.close().await;
            Ok(())
        })
    }
}
