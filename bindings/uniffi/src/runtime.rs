//! The runtime handle: open, connect, request, cancel, subscribe, serve, close.

use crate::error::AgentVmError;
use crate::events::EventStream;
use crate::task::on_runtime;
use agentvm_embed::{ConnectOptions, Embed, EmbedOptions, ServeOptions, SubscribeOptions};
use std::sync::Arc;
use std::time::Duration;

/// A runtime: local ([`AgentVm::open`]) or remote ([`AgentVm::connect`]), the same methods.
/// Every method may be called from any thread, also at once.
#[derive(uniffi::Object)]
pub struct AgentVm {
    /// The embed handle every method forwards to (cheap to clone into a call's task).
    embed: Embed,
}

impl std::fmt::Debug for AgentVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgentVm({:?})", self.embed)
    }
}

/// Where a server started by [`AgentVm::serve`] listens.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct Served {
    /// `http://host:port`.
    pub url: String,
    /// `ws://host:port/ws`, for [`AgentVm::connect`].
    pub ws_url: String,
    /// The port (the one picked when 0 was asked for).
    pub port: u16,
}

#[uniffi::export]
impl AgentVm {
    /// Opens a local runtime. `options_json`: `{"dataDir"?, "llm"?: "mock" | "env" |
    /// "anthropic" | {...}, "scheduler"?, "limits"?, "localTools"?, "definitions"?,
    /// "maxTokens"?}` (`""`: defaults, everything in memory); unknown fields are
    /// `InvalidInput`.
    #[uniffi::constructor]
    pub async fn open(options_json: String) -> Result<Arc<AgentVm>, AgentVmError> {
        on_runtime(async move {
            let options = EmbedOptions::from_json(&options_json)?;
            let embed = Embed::open(options).await?;
            Ok(Arc::new(AgentVm { embed }))
        })
        .await
    }

    /// Connects to an agentvm server: `{"url": "ws://host:port/ws", "token"?, "timeoutMs"?}`,
    /// or to the servers of a cluster with `"urls": [...]` instead of `"url"` (failover).
    #[uniffi::constructor]
    pub async fn connect(options_json: String) -> Result<Arc<AgentVm>, AgentVmError> {
        on_runtime(async move {
            let options = ConnectOptions::from_json(&options_json)?;
            let embed = Embed::connect(options).await?;
            Ok(Arc::new(AgentVm { embed }))
        })
        .await
    }

    /// Runs one command, `{"type": "<name>_request", "data": {...}}`, and returns the
    /// response's `data` as JSON. `timeout_ms` bounds the wait; `cancel_id` names the call for
    /// [`cancel`](Self::cancel) from another thread or task. A timed-out or cancelled call is
    /// `Cancelled`; what the command already did stays done (a started `sandbox_exec` runs on:
    /// end it with `sandbox_exec_cancel_request`).
    #[uniffi::method(default(timeout_ms = None, cancel_id = None))]
    pub async fn request(
        &self,
        json: String,
        timeout_ms: Option<u64>,
        cancel_id: Option<u64>,
    ) -> Result<String, AgentVmError> {
        let embed = self.embed.clone();
        on_runtime(async move {
            let timeout = timeout_ms.map(Duration::from_millis);
            Ok(embed.call(cancel_id, timeout, embed.request(&json)).await?)
        })
        .await
    }

    /// Cancels the call running with `cancel_id`: it fails with `Cancelled`. `false` when no
    /// call runs with that id (it ended, or has not started).
    pub fn cancel(&self, cancel_id: u64) -> bool {
        self.embed.cancel(cancel_id)
    }

    /// Subscribes to events: `{"sessions": [{"sessionId", "afterCursor"?}], "allSessions"?,
    /// "global"?, "queue"?}`. Events caused after this returns are never missed.
    pub async fn subscribe(&self, options_json: String) -> Result<Arc<EventStream>, AgentVmError> {
        let embed = self.embed.clone();
        on_runtime(async move {
            let options = SubscribeOptions::from_json(&options_json)?;
            let stream = embed.subscribe(options).await?;
            Ok(Arc::new(EventStream::new(stream)))
        })
        .await
    }

    /// Serves this local runtime in this process (WebSocket `/ws`, REST `/v1`, `/health`,
    /// `/metrics`): `{"addr"?: "127.0.0.1:0", "auth"?: "auto" | "required" | "disabled"}`.
    /// [`close`](Self::close) stops the server.
    pub async fn serve(&self, options_json: String) -> Result<Served, AgentVmError> {
        let embed = self.embed.clone();
        on_runtime(async move {
            let served = embed.serve(ServeOptions::from_json(&options_json)?).await?;
            Ok(Served {
                url: served.url,
                ws_url: served.ws_url,
                port: served.port,
            })
        })
        .await
    }

    /// Ends every stream and call of this handle (`Cancelled`), stops its servers, then stops
    /// the agents and writes everything out (local) or closes the connection (remote). Later
    /// calls fail with `Cancelled`. Idempotent.
    pub async fn close(&self) -> Result<(), AgentVmError> {
        let embed = self.embed.clone();
        on_runtime(async move {
            embed.close().await;
            Ok(())
        })
        .await
    }

    /// Whether this handle drives a runtime in this process.
    pub fn is_local(&self) -> bool {
        self.embed.is_local()
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.embed.is_closed()
    }
}

impl Drop for AgentVm {
    /// A handle the foreign side lets go of without `close()` is closed in the background.
    fn drop(&mut self) {
        if self.embed.is_closed() {
            return;
        }
        if let Ok(handle) = agentvm_embed::process::handle() {
            let embed = self.embed.clone();
            handle.spawn(async move { embed.close().await });
        }
    }
}
