//! The runtime handle: one class over the local [`AgentVm`] and the remote runtime, so the
//! JavaScript API is the same either way. Commands, responses and events cross as JSON text
//! (the wire types of the Channel protocol); the typed helpers live in the TypeScript façade.

use crate::error::{self, invalid};
use crate::server::{NativeServer, ServeOptions};
use crate::settle::{settle, spawn, CoreResult};
use crate::stream::{subscription_source, JsonStream, StreamRegistry, StreamState};
use agentvm::scheduler::{Scheduler, SchedulerOptions};
use agentvm::{AgentVm, Command, EventFilter, RemoteRuntime, Runtime, Scope};
use napi::bindgen_prelude::*;
use napi_derive::napi;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Options of `open()`.
#[napi(object)]
#[derive(Default)]
pub struct OpenOptions {
    /// Where the store (`agentvm.redb`) and workdirs live. Without it everything is kept
    /// in memory and lost on close.
    pub data_dir: Option<String>,
    /// The LLM driver: `"mock"` (or `"mock:<scenario>"`: `multi-delta`, `long-stream`,
    /// `instant`, `error`, `with-tool`, `slow-stream`), `"anthropic"`, `"openai"`, or `"env"`
    /// to read `LLM_PROVIDER`, `LLM_PROVIDER_KEY`, `LLM_PROVIDER_URL`, `LLM_PROVIDER_MODEL`.
    /// Without it, turns fail with a message saying how to configure a provider.
    pub llm: Option<String>,
    /// API key of the provider (overrides `LLM_PROVIDER_KEY`).
    pub api_key: Option<String>,
    /// Base URL of the provider (overrides `LLM_PROVIDER_URL`).
    pub base_url: Option<String>,
    /// Default model (overrides `LLM_PROVIDER_MODEL`); an image may name its own.
    pub model: Option<String>,
    /// For the mock driver: a delay before every streamed delta, in milliseconds.
    pub mock_delta_delay_ms: Option<u32>,
    /// Run the built-in tools (`bash`, `read_file`, ...) on this machine, in each image's
    /// workdir under `dataDir`. Off by default: `bash` then runs as this process's user.
    pub local_tools: Option<bool>,
    /// Embeds the Docker sandbox scheduler: its options (the core's `SchedulerOptions`) as JSON
    /// text, parsed and checked by the core. The package's `open()` takes them as an object.
    pub scheduler: Option<String>,
}

/// Options of `connect()`.
#[napi(object)]
#[derive(Default)]
pub struct ConnectOptions {
    /// The servers of one cluster, for failover: the first that answers, in order, then the
    /// next in turn after each lost connection (`connect()` fills it from a list of URLs).
    pub urls: Option<Vec<String>>,
    /// Bearer token, sent in the `Authorization` header of the WebSocket upgrade.
    pub token: Option<String>,
    /// How long a request may wait for its response, in milliseconds (default 30000).
    pub request_timeout_ms: Option<u32>,
    /// How long one connection attempt may take, in milliseconds (default 10000).
    pub connect_timeout_ms: Option<u32>,
    /// Reconnect (and resubscribe from the last cursor) after the connection drops (default true).
    pub reconnect: Option<bool>,
}

/// What an event stream or listener receives.
#[napi(object)]
#[derive(Default)]
pub struct EventsOptions {
    /// One session's events.
    pub session_id: Option<String>,
    /// Several sessions' events.
    pub session_ids: Option<Vec<String>>,
    /// Replay the session's events after this cursor first (with `sessionId`).
    pub after_cursor: Option<f64>,
    /// Events of the `global` topic (lifecycle: containers, agents, sandboxes, nodes).
    pub global: Option<bool>,
    /// Events of every session. Default when no session is named: every event.
    pub all_sessions: Option<bool>,
    /// Only events of these containers.
    pub container_ids: Option<Vec<String>>,
    /// Events queued before the subscriber counts as too slow (default 4096; 65536 for `on()`).
    pub queue: Option<u32>,
}

/// Which runtime a handle drives.
#[derive(Clone)]
enum Backend {
    /// In this process.
    Local(AgentVm),
    /// Over a WebSocket Channel.
    Remote(RemoteRuntime),
}

impl Backend {
    fn runtime(&self) -> &dyn Runtime {
        match self {
            Backend::Local(vm) => vm,
            Backend::Remote(r) => r,
        }
    }
}

/// What a handle owns; everything is released by `close()`.
struct Shared {
    /// `None` after `close()`.
    backend: RwLock<Option<Backend>>,
    /// Event streams and listeners, ended by `close()`.
    streams: StreamRegistry,
    /// Servers started by `serve()`, closed by `close()`.
    servers: std::sync::Mutex<Vec<Arc<crate::server::ServerState>>>,
}

impl Shared {
    fn backend(&self) -> CoreResult<Backend> {
        self.backend
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| error::closed("runtime"))
    }

    fn local(&self, what: &str) -> CoreResult<AgentVm> {
        match self.backend()? {
            Backend::Local(vm) => Ok(vm),
            Backend::Remote(_) => Err(invalid(format!(
                "{what} runs in-process only: call it on the runtime from open(), not connect()"
            ))),
        }
    }
}

/// An agentvm runtime, local or remote. The `agentvm` package wraps it in `AgentVm`; use that.
#[napi]
pub struct NativeRuntime {
    shared: Arc<Shared>,
    kind: &'static str,
}

impl NativeRuntime {
    fn new(backend: Backend) -> Self {
        let kind = match backend {
            Backend::Local(_) => "local",
            Backend::Remote(_) => "remote",
        };
        NativeRuntime {
            shared: Arc::new(Shared {
                backend: RwLock::new(Some(backend)),
                streams: StreamRegistry::default(),
                servers: std::sync::Mutex::new(Vec::new()),
            }),
            kind,
        }
    }
}

fn event_filter(options: Option<EventsOptions>) -> CoreResult<EventFilter> {
    let o = options.unwrap_or_default();
    let cursor = match o.after_cursor {
        Some(c) if c.is_finite() && c >= 0.0 && c.fract() == 0.0 => Some(c as u64),
        Some(c) => {
            return Err(invalid(format!(
                "afterCursor must be a cursor from an event, not {c}"
            )))
        }
        None => None,
    };
    let mut sessions: Vec<(String, Option<u64>)> = Vec::new();
    if let Some(s) = o.session_id {
        sessions.push((s, cursor));
    } else if cursor.is_some() {
        return Err(invalid("afterCursor needs a sessionId"));
    }
    for s in o.session_ids.unwrap_or_default() {
        sessions.push((s, None));
    }
    let named = !sessions.is_empty();
    Ok(EventFilter {
        global: o.global.unwrap_or(!named),
        all_sessions: o.all_sessions.unwrap_or(!named),
        sessions,
        scope: match o.container_ids {
            Some(ids) => Scope::containers(ids),
            None => Scope::All,
        },
        queue: o.queue.map(|q| q.max(1) as usize),
    })
}

#[napi]
impl NativeRuntime {
    /// `"local"` (from `open()`) or `"remote"` (from `connect()`).
    #[napi(getter)]
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// Runs one command: `type` is the wire request type (`image_get_request`), `data` its JSON
    /// payload. Returns the response as JSON text `{"type":"..._response","data":{...}}`.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn request<'env>(
        &self,
        env: &'env Env,
        r#type: String,
        data: Option<String>,
    ) -> Result<Unknown<'env>> {
        let shared = self.shared.clone();
        settle(env, async move {
            let backend = shared.backend()?;
            let data = match data.as_deref() {
                None | Some("") => serde_json::Value::Null,
                Some(text) => serde_json::from_str(text)
                    .map_err(|e| invalid(format!("the data of {type} is not JSON: {e}")))?,
            };
            let command = Command::from_wire(&r#type, data)?;
            let response = backend.runtime().request(command).await?;
            serde_json::to_string(&response)
                .map_err(|e| agentvm::Error::Internal(format!("serializing a response: {e}")))
        })
    }

    /// Subscribes to events; returns a stream to pull batches from.
    #[napi(ts_return_type = "JsonStream | Promise<JsonStream>")]
    pub fn subscribe<'env>(
        &self,
        env: &'env Env,
        options: Option<EventsOptions>,
    ) -> Result<Unknown<'env>> {
        let shared = self.shared.clone();
        let filter = event_filter(options);
        settle(env, async move {
            let backend = shared.backend()?;
            let sub = backend.runtime().subscribe(filter?).await?;
            let state = StreamState::new(subscription_source(sub));
            shared.streams.add(&state);
            Ok(JsonStream::new(state))
        })
    }

    /// Serves this runtime (WebSocket Channel at `/ws`, REST under `/v1`, `/health`,
    /// `/metrics`, and the scheduler's routes when it embeds one) on `host:port`. In-process
    /// runtimes only.
    #[napi]
    pub fn serve<'env>(
        &self,
        env: &'env Env,
        options: Option<ServeOptions>,
    ) -> Result<PromiseRaw<'env, NativeServer>> {
        let shared = self.shared.clone();
        spawn(env, async move {
            let vm = shared.local("serve()")?;
            let server = crate::server::start(vm, options.unwrap_or_default()).await?;
            shared
                .servers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(server.clone());
            Ok(NativeServer::new(server))
        })
    }

    /// Ends every stream and listener, closes servers started by `serve()`, stops every agent
    /// (partial replies are stored), writes the replay log out and releases the store.
    /// Calls after it fail with code `Unavailable`. Closing twice is a no-op.
    #[napi]
    pub fn close<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let shared = self.shared.clone();
        spawn(env, async move {
            let backend = shared
                .backend
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            shared.streams.close_all();
            let servers =
                std::mem::take(&mut *shared.servers.lock().unwrap_or_else(|p| p.into_inner()));
            for server in servers {
                server.close().await;
            }
            match backend {
                Some(Backend::Local(vm)) => vm.close().await,
                Some(Backend::Remote(r)) => r.close().await,
                None => {}
            }
            Ok(())
        })
    }
}

/// Opens an in-process runtime.
#[napi]
pub fn open<'env>(
    env: &'env Env,
    options: Option<OpenOptions>,
) -> Result<PromiseRaw<'env, NativeRuntime>> {
    spawn(env, async move {
        let o = options.unwrap_or_default();
        let mut builder = AgentVm::builder();
        if let Some(dir) = &o.data_dir {
            if dir.is_empty() {
                return Err(invalid(
                    "dataDir must not be empty (leave it out for memory)",
                ));
            }
            builder = builder.data_dir(dir);
        }
        if let Some(driver) = crate::llm::driver(&o)? {
            builder = builder.llm(driver);
        }
        if o.local_tools == Some(true) {
            builder = builder.local_tools();
        }
        if let Some(text) = o.scheduler.as_deref() {
            let value = serde_json::from_str(text)
                .map_err(|e| invalid(format!("the scheduler options are not JSON: {e}")))?;
            let options = SchedulerOptions::from_json(value)?;
            builder = builder.scheduler(Scheduler::builder().options(&options)?);
        }
        Ok(NativeRuntime::new(Backend::Local(builder.open().await?)))
    })
}

/// Connects to an agentvm server's Channel (`ws://host:port/ws`), or with `url` empty to the
/// first of `options.urls` that answers.
#[napi]
pub fn connect<'env>(
    env: &'env Env,
    url: String,
    options: Option<ConnectOptions>,
) -> Result<PromiseRaw<'env, NativeRuntime>> {
    spawn(env, async move {
        let o = options.unwrap_or_default();
        let mut options = agentvm::ConnectOptions {
            urls: o.urls.unwrap_or_default(),
            token: o.token,
            ..Default::default()
        };
        if let Some(ms) = o.request_timeout_ms {
            options.request_timeout = Duration::from_millis(ms.into());
        }
        if let Some(ms) = o.connect_timeout_ms {
            options.connect_timeout = Duration::from_millis(ms.into());
        }
        if let Some(r) = o.reconnect {
            options.reconnect = r;
        }
        let remote = agentvm::connect(&url, options).await?;
        Ok(NativeRuntime::new(Backend::Remote(remote)))
    })
}
