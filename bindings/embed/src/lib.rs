//! agentvm-embed: the one layer every agentvm binding calls, and nothing else.
//!
//! - [`Embed::open`] a local runtime from [`EmbedOptions`] (one serde struct, parsed once) or
//!   [`Embed::connect`] to a server; both answer the same commands.
//! - [`Embed::request`]: any command as JSON (`{"type": "image_get_request", "data": {...}}`)
//!   in, the response's `data` as JSON out. Errors are [`agentvm::Error`]: the stable
//!   [`kind`](agentvm::Error::kind) and the message with its cause chain
//!   ([`chain`](agentvm::Error::chain)).
//! - [`Embed::call`]: any call bounded by a timeout and cancellable by an id
//!   ([`Embed::cancel`]).
//! - [`Embed::subscribe`]: an [`EventStream`] taken in batches, with one overflow policy
//!   (see [`events`]).
//! - [`Embed::serve`]: agentvm-server (WebSocket, REST, metrics, the scheduler's routes) in
//!   this process. [`Embed::close`].
//!
//! Everything runs on one tokio runtime per process, owned here ([`process`]); the blocking
//! helpers ([`process::block_on`]) are for bindings whose callers have no event loop (C, Go).
//!
//! ```
//! use agentvm_embed::{Embed, EmbedOptions, SubscribeOptions};
//! # agentvm_embed::process::block_on(async {
//! let vm = Embed::open(EmbedOptions::from_json(r#"{"llm": "mock"}"#)?).await?;
//! let image = vm.request(r#"{"type": "image_create_request", "data": {"containerId": "c1"}}"#).await?;
//! assert!(image.contains("sessionId"));
//! vm.close().await;
//! # Ok::<(), agentvm::Error>(())
//! # }).unwrap().unwrap();
//! ```

mod calls;
pub mod events;
pub mod options;
pub mod process;
mod response_data;
mod wire;

pub use calls::cancel_opening;

/// The core crate, for bindings that name its types (errors, kinds).
pub use agentvm;
pub use events::EventStream;
pub use options::{ConnectOptions, EmbedOptions, ServeOptions, SubscribeOptions};
pub use response_data::serialize_response_data;

use agentvm::{
    AgentVm, Command, CommandKind, Error, EventFilter, RemoteRuntime, Response, Result, Runtime,
};
use agentvm_server::{AuthMode, ServerConfig, ServerManager};
use calls::lock;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// What a handle drives.
#[derive(Clone)]
enum Target {
    /// The runtime in this process.
    Local(AgentVm),
    /// A runtime on an agentvm server.
    Remote(RemoteRuntime),
}

impl Target {
    fn runtime(&self) -> &dyn Runtime {
        match self {
            Target::Local(vm) => vm,
            Target::Remote(r) => r,
        }
    }
}

/// What the clones of a handle share.
struct Inner {
    /// `None` after `close()`: dropping it releases the store (its file lock) at once, even
    /// while the binding's handle object lives on.
    target: std::sync::RwLock<Option<Target>>,
    /// Whether `target` was local (kept after close).
    local: bool,
    /// Calls in progress that a caller named by an id: `cancel(id)` sets their flag.
    cancels: calls::Registry,
    /// The process runtime this handle was opened on (blocking calls enter it directly).
    runtime: Arc<tokio::runtime::Runtime>,
    /// Streams to end on `close()`.
    streams: Mutex<Vec<Weak<events::Shared>>>,
    /// Servers started by `serve` and the port each listens on, stopped by `stop_serving`
    /// or `close()`.
    servers: Mutex<Vec<(u16, Arc<ServerManager>)>>,
    /// Set by `close()`: later calls fail with `Cancelled`.
    closed: watch::Sender<bool>,
}

/// A runtime handle: local or remote, the same methods. Cheap to clone; every method may be
/// called from any thread.
#[derive(Clone)]
pub struct Embed {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Embed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.target() {
            Ok(Target::Local(vm)) => write!(f, "Embed(local {:?})", vm.data_dir()),
            Ok(Target::Remote(r)) => write!(f, "Embed({r:?})"),
            Err(_) => write!(f, "Embed(closed)"),
        }
    }
}

/// Where a server started by [`Embed::serve`] listens.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    /// `http://host:port`.
    pub url: String,
    /// `ws://host:port/ws`, for [`Embed::connect`].
    pub ws_url: String,
    /// The port (the one picked when 0 was asked for).
    pub port: u16,
}

impl Embed {
    fn new(target: Target) -> Result<Self> {
        Ok(Embed {
            inner: Arc::new(Inner {
                local: matches!(target, Target::Local(_)),
                target: std::sync::RwLock::new(Some(target)),
                cancels: Mutex::new(HashMap::new()),
                runtime: process::runtime()?,
                streams: Mutex::new(Vec::new()),
                servers: Mutex::new(Vec::new()),
                closed: watch::channel(false).0,
            }),
        })
    }

    /// Opens a local runtime. Must run on the process runtime ([`process::block_on`] or a
    /// task spawned on [`process::handle`]).
    pub async fn open(options: EmbedOptions) -> Result<Embed> {
        let vm = options.builder()?.open().await?;
        Embed::new(Target::Local(vm))
    }

    /// [`open`](Self::open) bounded by `timeout` and cancellable by
    /// [`cancel_opening(id)`](cancel_opening) when `cancel_id` is given (`Cancelled` either way).
    pub async fn open_with(
        options: EmbedOptions,
        cancel_id: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<Embed> {
        calls::bounded(
            calls::opening(),
            None,
            cancel_id,
            timeout,
            Embed::open(options),
        )
        .await
    }

    /// Connects to an agentvm server.
    pub async fn connect(options: ConnectOptions) -> Result<Embed> {
        let core = options.core()?;
        let remote = agentvm::connect(options.url(), core).await?;
        Embed::new(Target::Remote(remote))
    }

    /// [`connect`](Self::connect) bounded by `timeout` and cancellable by
    /// [`cancel_opening(id)`](cancel_opening) when `cancel_id` is given: a server that is down
    /// or slow to answer can be given up on from another thread.
    pub async fn connect_with(
        options: ConnectOptions,
        cancel_id: Option<u64>,
        timeout: Option<Duration>,
    ) -> Result<Embed> {
        calls::bounded(
            calls::opening(),
            None,
            cancel_id,
            timeout,
            Embed::connect(options),
        )
        .await
    }

    /// Runs `fut` to completion on this handle's runtime, blocking the calling thread (the
    /// entry of blocking bindings such as the C ABI). A thread of the runtime itself may not
    /// block on it (that would deadlock a worker): it gets `Internal`.
    pub fn block_on<F: Future>(&self, fut: F) -> Result<F::Output> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Internal(
                "a blocking agentvm call was made from inside the agentvm runtime (an async context); use the async API there".into(),
            ));
        }
        Ok(self.inner.runtime.block_on(fut))
    }

    /// Whether this handle drives a runtime in this process.
    pub fn is_local(&self) -> bool {
        self.inner.local
    }

    /// Runs one command given as JSON `{"type": "<name>_request", "data": {...}}` and returns
    /// the response's `data` as JSON. The request is parsed strictly: an unknown type or field
    /// is `InvalidInput` naming it. `data` may carry the envelope's `requestId`.
    pub async fn request(&self, json: &str) -> Result<String> {
        let command = wire::parse_command(json)?;
        let response = self.request_command(command).await?;
        wire::response_data(&response)
    }

    /// Runs a command already parsed (by [`parse_command_parts`]) and returns the typed
    /// response: for bindings that convert their language's values straight to and from the
    /// serde types instead of going through JSON text. Same checks and errors as
    /// [`request`](Self::request).
    pub async fn request_command(&self, command: Command) -> Result<Response> {
        self.check_open()?;
        self.target()?.runtime().request(command).await
    }

    /// Runs `fut` bounded by `timeout` and cancellable by [`cancel(id)`](Self::cancel) when
    /// `cancel_id` is given. Either ends it with `Cancelled` (`timed out after N ms`,
    /// `cancelled by the caller (id N)`); `close()` does too. Dropping the future stops waiting
    /// but does not undo what the command already did (a started `sandbox_exec` runs to its
    /// end: cancel it with `sandbox_exec_cancel_request`). An id already in use is
    /// `InvalidInput`.
    pub async fn call<T, F>(
        &self,
        cancel_id: Option<u64>,
        timeout: Option<Duration>,
        fut: F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        calls::bounded(
            &self.inner.cancels,
            Some(self.inner.closed.subscribe()),
            cancel_id,
            timeout,
            fut,
        )
        .await
    }

    /// [`call`](Self::call) for a caller without an event loop (the C ABI), blocking this
    /// thread until it ends. Without a cancel id the call is first polled once right here,
    /// inside the runtime's context: a command the core answers at once (most reads) then
    /// costs no `block_on`, no timer and no cancel entry; only one that has to wait goes on to
    /// [`block_on`](Self::block_on), bounded by `timeout` and by `close()` as `call` bounds
    /// it. With a cancel id it is registered first, so `cancel(id)` always finds it. A thread
    /// of the runtime itself gets `Internal`, as with `block_on`.
    pub fn call_blocking<T, F>(
        &self,
        cancel_id: Option<u64>,
        timeout: Option<Duration>,
        fut: F,
    ) -> Result<T>
    where
        F: Future<Output = Result<T>>,
    {
        if cancel_id.is_some() {
            return self.block_on(self.call(cancel_id, timeout, fut))?;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            // `block_on` refuses it with its error, without running `fut`.
            return self.block_on(fut)?;
        }
        let mut fut = std::pin::pin!(fut);
        let first = {
            let _context = self.inner.runtime.enter();
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            fut.as_mut().poll(&mut cx)
        };
        match first {
            std::task::Poll::Ready(out) => out,
            std::task::Poll::Pending => self.block_on(self.call(None, timeout, fut))?,
        }
    }

    /// Cancels the call running with `id`; `false` when none is (it finished, or never
    /// started). Any thread.
    pub fn cancel(&self, id: u64) -> bool {
        calls::fire(&self.inner.cancels, id)
    }

    /// Subscribes to events. Events caused after this returns are never missed.
    pub async fn subscribe(&self, options: SubscribeOptions) -> Result<EventStream> {
        self.check_open()?;
        let filter = EventFilter {
            global: options.global,
            all_sessions: options.all_sessions,
            sessions: options
                .sessions
                .into_iter()
                .map(|s| (s.session_id, s.after_cursor))
                .collect(),
            queue: options.queue,
            ..Default::default()
        };
        let sub = self.target()?.runtime().subscribe(filter).await?;
        let (stream, shared) = EventStream::start(sub, options.global, options.all_sessions)?;
        let mut streams = lock(&self.inner.streams);
        streams.retain(|w| w.strong_count() > 0);
        streams.push(Arc::downgrade(&shared));
        Ok(stream)
    }

    /// Serves this (local) runtime: WebSocket `/ws`, REST `/v1`, `/health`, `/metrics`, and
    /// the scheduler's routes and counters when it was opened with one. `close()` stops it.
    pub async fn serve(&self, options: ServeOptions) -> Result<Served> {
        self.check_open()?;
        let Target::Local(vm) = &self.target()? else {
            return Err(Error::invalid(
                "serve needs a local runtime (open), not a connected one",
            ));
        };
        let auth = match options.auth.as_deref().unwrap_or("auto") {
            "auto" => AuthMode::Auto,
            "required" => AuthMode::Required,
            "disabled" => AuthMode::Disabled,
            other => {
                return Err(Error::invalid(format!(
                    "auth is {other:?}: use auto, required or disabled"
                )))
            }
        };
        let manager = ServerManager::new(
            vm.clone(),
            ServerConfig {
                auth,
                ..Default::default()
            },
        );
        let addr = manager
            .listen(options.addr.as_deref().unwrap_or("127.0.0.1:0"))
            .await?;
        lock(&self.inner.servers).push((addr.port(), Arc::new(manager)));
        Ok(Served {
            url: format!("http://{addr}"),
            ws_url: format!("ws://{addr}/ws"),
            port: addr.port(),
        })
    }

    /// Stops the server [`serve`](Self::serve) started on `port`: it stops accepting, lets
    /// running turns finish (up to a grace period) and writes everything out; the runtime
    /// stays open. `false` when no server of this handle listens there.
    pub async fn stop_serving(&self, port: u16) -> bool {
        let server = {
            let mut servers = lock(&self.inner.servers);
            let at = servers.iter().position(|(p, _)| *p == port);
            at.map(|i| servers.remove(i).1)
        };
        match server {
            // `stop`, not `close`: the runtime stays open for the handle and its other servers.
            Some(s) => {
                s.stop().await;
                true
            }
            None => false,
        }
    }

    /// Ends every stream and call of this handle, stops its servers, then stops the agents
    /// and writes everything out (local; the store is released, so the data dir can be opened
    /// again at once) or closes the connection (remote). Idempotent.
    pub async fn close(&self) {
        if self.inner.closed.send_replace(true) {
            return;
        }
        let streams = std::mem::take(&mut *lock(&self.inner.streams));
        for s in streams.iter().filter_map(Weak::upgrade) {
            s.close();
        }
        let servers = std::mem::take(&mut *lock(&self.inner.servers));
        for (_, s) in servers {
            s.close().await;
        }
        let target = self
            .inner
            .target
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match target {
            Some(Target::Local(vm)) => vm.close().await,
            Some(Target::Remote(r)) => r.close().await,
            None => {}
        }
    }

    /// Whether `close()` was called.
    pub fn is_closed(&self) -> bool {
        *self.inner.closed.borrow()
    }

    /// What this handle drives; `Cancelled` after `close()`.
    fn target(&self) -> Result<Target> {
        self.inner
            .target
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Error::Cancelled("the runtime handle was closed".into()))
    }

    fn check_open(&self) -> Result<()> {
        if self.is_closed() {
            return Err(Error::Cancelled("the runtime handle was closed".into()));
        }
        Ok(())
    }
}
/// Parses a command from its wire type (`image_get_request`) and `data`, strictly, as
/// [`Embed::request`] does: an unknown type or field is `InvalidInput` naming it; `data` may
/// carry the envelope's `requestId`.
pub fn parse_command_parts(type_name: &str, mut data: serde_json::Value) -> Result<Command> {
    let kind = CommandKind::from_type_name(type_name)
        .ok_or_else(|| Error::invalid(format!("Unknown request type: {type_name}")))?;
    if let Some(o) = data.as_object_mut() {
        o.remove("requestId");
    }
    kind.parse_strict(data)
}
