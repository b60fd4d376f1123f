//! The runtime handle: one class over embed's [`Embed`], local (`open`) or remote (`connect`).
//! Options are embed's JSON text; commands go in and answers come out as JSON text.

use crate::events::NativeEventStream;
use crate::settle::{runtime, settle, spawn};
use agentvm_embed::{ConnectOptions, Embed, EmbedOptions, ServeOptions, SubscribeOptions};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::time::Duration;

/// An agentvm runtime, local or remote. The `agentvm` package wraps it in `AgentVm`; use that.
#[napi]
pub struct NativeRuntime {
    embed: Embed,
    /// Embed's runtime, kept so a call does not look it up (a lock and a pid check) each time.
    runtime: tokio::runtime::Handle,
}

#[napi]
impl NativeRuntime {
    /// `"local"` (from `open()`) or `"remote"` (from `connect()`).
    #[napi(getter)]
    pub fn kind(&self) -> &'static str {
        if self.embed.is_local() {
            "local"
        } else {
            "remote"
        }
    }

    /// Runs one command, `{"type": "<name>_request", "data": {...}}` as JSON text, and returns
    /// the response's `data` as JSON text. `timeoutMs` bounds it and `cancelId` lets
    /// `cancel(id)` end it (both `cancelled`).
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn request<'env>(
        &self,
        env: &'env Env,
        command: String,
        timeout_ms: Option<u32>,
        cancel_id: Option<u32>,
    ) -> Result<Unknown<'env>> {
        let embed = self.embed.clone();
        settle(env, &self.runtime, async move {
            if timeout_ms.is_none() && cancel_id.is_none() {
                return embed.request(&command).await;
            }
            let timeout = timeout_ms.map(|ms| Duration::from_millis(ms.into()));
            embed
                .call(cancel_id.map(u64::from), timeout, embed.request(&command))
                .await
        })
    }

    /// Ends the request running with `cancelId` `id`; `false` when none is.
    #[napi]
    pub fn cancel(&self, id: u32) -> bool {
        self.embed.cancel(id.into())
    }

    /// Subscribes to events (`options`: embed's subscribe options as JSON text); returns a
    /// stream to take batches from.
    #[napi(ts_return_type = "NativeEventStream | Promise<NativeEventStream>")]
    pub fn subscribe<'env>(
        &self,
        env: &'env Env,
        options: Option<String>,
    ) -> Result<Unknown<'env>> {
        let embed = self.embed.clone();
        let handle = self.runtime.clone();
        settle(env, &self.runtime, async move {
            let options = SubscribeOptions::from_json(options.as_deref().unwrap_or(""))?;
            Ok(NativeEventStream::new(
                embed.subscribe(options).await?,
                handle,
            ))
        })
    }

    /// Serves this runtime (embed's serve options as JSON text); resolves with where it listens,
    /// `{"url", "wsUrl", "port"}` as JSON text.
    #[napi(ts_return_type = "Promise<string>")]
    pub fn serve<'env>(&self, env: &'env Env, options: Option<String>) -> Result<Unknown<'env>> {
        let embed = self.embed.clone();
        spawn(env, &self.runtime, async move {
            let options = ServeOptions::from_json(options.as_deref().unwrap_or(""))?;
            let served = embed.serve(options).await?;
            serde_json::to_string(&served).map_err(|e| {
                agentvm_embed::agentvm::Error::Internal(format!("serializing a server: {e}"))
            })
        })
    }

    /// Stops the server `serve()` started on `port`; resolves with whether there was one.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn stop_serving<'env>(&self, env: &'env Env, port: u32) -> Result<Unknown<'env>> {
        let embed = self.embed.clone();
        spawn(env, &self.runtime, async move {
            Ok(match u16::try_from(port) {
                Ok(port) => embed.stop_serving(port).await,
                Err(_) => false,
            })
        })
    }

    /// Ends every stream and call, stops servers, then the agents, and writes everything out
    /// (local) or closes the connection (remote). Closing twice is a no-op.
    #[napi(ts_return_type = "Promise<void>")]
    pub fn close<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        let embed = self.embed.clone();
        spawn(env, &self.runtime, async move {
            embed.close().await;
            Ok(())
        })
    }
}

/// Opens an in-process runtime; `options` is embed's open options as JSON text.
#[napi(ts_return_type = "Promise<NativeRuntime>")]
pub fn open<'env>(env: &'env Env, options: Option<String>) -> Result<Unknown<'env>> {
    let handle = runtime(env)?;
    let kept = handle.clone();
    spawn(env, &handle, async move {
        let options = EmbedOptions::from_json(options.as_deref().unwrap_or(""))?;
        Ok(NativeRuntime {
            embed: Embed::open(options).await?,
            runtime: kept,
        })
    })
}

/// Connects to an agentvm server; `options` is embed's connect options as JSON text
/// (`{"url": "ws://host:port/ws", ...}`).
#[napi(ts_return_type = "Promise<NativeRuntime>")]
pub fn connect<'env>(env: &'env Env, options: String) -> Result<Unknown<'env>> {
    let handle = runtime(env)?;
    let kept = handle.clone();
    spawn(env, &handle, async move {
        let options = ConnectOptions::from_json(&options)?;
        Ok(NativeRuntime {
            embed: Embed::connect(options).await?,
            runtime: kept,
        })
    })
}
