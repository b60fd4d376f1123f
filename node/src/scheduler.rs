//! The Docker sandbox scheduler: nodes, templates, sandboxes, exec (collected or streamed) and
//! files. Records cross as JSON text in the shapes of the REST API under `/v1`.

use crate::error::{self, invalid};
use crate::settle::{settle, spawn, CoreResult};
use crate::stream::{JsonStream, StreamState};
use agentvm::scheduler::{
    ExecEvent, ExecRequest, NodeRegistration, NodeStatus, SandboxRequest, Scheduler,
    SchedulerConfig, TemplateSpec,
};
use agentvm::AgentVm;
use futures::StreamExt;
use napi::bindgen_prelude::*;
use napi_derive::napi;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Options of `vm.scheduler()`. Durations are milliseconds; unset ones keep the production
/// defaults of SCHEDULER.md.
#[napi(object)]
#[derive(Default)]
pub struct SchedulerOptions {
    /// How often static nodes are probed (default 5000).
    pub heartbeat_interval_ms: Option<u32>,
    /// Silence after which a node turns offline (default 15000).
    pub offline_after_ms: Option<u32>,
    /// How often expired, idle and stuck sandboxes are swept (default 10000).
    pub sweep_interval_ms: Option<u32>,
    /// Bound on one Docker request (default 120000).
    pub docker_timeout_ms: Option<u32>,
    /// Exec timeout when a request gives none (default 60000).
    pub default_exec_timeout_ms: Option<u32>,
    /// Run the background loop (health, sweep, pool refill); default true.
    pub background: Option<bool>,
}

/// Opens a scheduler on the runtime's store and bus.
pub(crate) async fn open(vm: &AgentVm, o: SchedulerOptions) -> CoreResult<NativeScheduler> {
    let ms = |v: Option<u32>, d: Duration| v.map(|m| Duration::from_millis(m.into())).unwrap_or(d);
    let d = SchedulerConfig::default();
    let config = SchedulerConfig {
        heartbeat_interval: ms(o.heartbeat_interval_ms, d.heartbeat_interval),
        offline_after: ms(o.offline_after_ms, d.offline_after),
        sweep_interval: ms(o.sweep_interval_ms, d.sweep_interval),
        docker_timeout: ms(o.docker_timeout_ms, d.docker_timeout),
        default_exec_timeout: ms(o.default_exec_timeout_ms, d.default_exec_timeout),
        background: o.background.unwrap_or(d.background),
        ..d
    };
    let scheduler = Scheduler::builder()
        .store(vm.store().scheduler_store()?)
        .events(std::sync::Arc::new(vm.bus().clone()))
        .config(config)
        .open()
        .await?;
    Ok(NativeScheduler {
        inner: Arc::new(RwLock::new(Some(scheduler))),
    })
}

fn parse<T: DeserializeOwned>(what: &str, json: &str) -> CoreResult<T> {
    serde_json::from_str(json).map_err(|e| invalid(format!("invalid {what}: {e}")))
}

fn to_json<T: Serialize>(value: &T) -> CoreResult<String> {
    serde_json::to_string(value)
        .map_err(|e| agentvm::Error::Internal(format!("serializing a scheduler record: {e}")))
}

/// An exec stream item as JavaScript sees it: `{type:"output", stream, data}` chunks, then
/// `{type:"finished", execution}`.
fn exec_event_json(event: ExecEvent) -> String {
    let value = match event {
        ExecEvent::Output { stream, data } => {
            serde_json::json!({ "type": "output", "stream": stream, "data": data })
        }
        ExecEvent::Finished(execution) => {
            serde_json::json!({ "type": "finished", "execution": execution })
        }
    };
    value.to_string()
}

/// The scheduler. The `agentvm` package wraps it in `Scheduler`; use that.
#[napi]
pub struct NativeScheduler {
    /// `None` after `close()`: the background loop stops when the last handle is dropped.
    inner: Arc<RwLock<Option<Scheduler>>>,
}

impl NativeScheduler {
    /// The core handle, or the error of a closed scheduler.
    pub(crate) fn handle(&self) -> CoreResult<Scheduler> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| error::closed("scheduler"))
    }

    /// Runs `f` on the scheduler and returns its result as JSON text.
    fn json<'env, T, F, Fut>(&self, env: &'env Env, f: F) -> Result<Unknown<'env>>
    where
        T: Serialize,
        F: FnOnce(Scheduler) -> Fut + Send + 'static,
        Fut: Future<Output = CoreResult<T>> + Send + 'static,
    {
        let handle = self.handle();
        settle(env, async move { to_json(&f(handle?).await?) })
    }
}

#[napi]
impl NativeScheduler {
    /// Registers (or re-registers) a runtime node: `NodeRegistration` JSON
    /// (`{node_id, api_endpoint, ...}`, snake_case as on `/internal/runtime`).
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn register_node<'env>(
        &self,
        env: &'env Env,
        registration: String,
    ) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move {
            s.register_node(parse::<NodeRegistration>(
                "node registration",
                &registration,
            )?)
            .await
        })
    }

    /// Every node.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn list_nodes<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        self.json(env, |s| async move { Ok(s.list_nodes()) })
    }

    /// A node, `null` when unknown.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn get_node<'env>(&self, env: &'env Env, node_id: String) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move { s.get_node(&node_id) })
    }

    /// Drains (`"draining"`), cordons (`"cordoned"`) or reopens (`"online"`) a node.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn set_node_status<'env>(
        &self,
        env: &'env Env,
        node_id: String,
        status: String,
    ) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move {
            let status: NodeStatus =
                serde_json::from_value(serde_json::Value::String(status.clone()))
                    .map_err(|_| invalid(format!("unknown node status {status:?}")))?;
            s.set_node_status(&node_id, status).await
        })
    }

    /// Removes a node.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn remove_node<'env>(&self, env: &'env Env, node_id: String) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move { s.remove_node(&node_id).await })
    }

    /// Creates a template from `TemplateSpec` JSON (`{name, image, ...}`).
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn create_template<'env>(
        &self,
        env: &'env Env,
        id: String,
        spec: String,
    ) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move {
            s.create_template(&id, parse::<TemplateSpec>("template spec", &spec)?)
                .await
        })
    }

    /// A template, `null` when unknown.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn get_template<'env>(&self, env: &'env Env, id: String) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move { s.get_template(&id).await })
    }

    /// Every template.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn list_templates<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        self.json(env, |s| async move { s.list_templates().await })
    }

    /// Replaces a template's spec.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn update_template<'env>(
        &self,
        env: &'env Env,
        id: String,
        spec: String,
    ) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move {
            s.update_template(&id, parse::<TemplateSpec>("template spec", &spec)?)
                .await
        })
    }

    /// Deletes a template.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn delete_template<'env>(&self, env: &'env Env, id: String) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move { s.delete_template(&id).await })
    }

    /// Creates a sandbox from `SandboxRequest` JSON (`{templateId, owner?, ...}`); resolves
    /// once it runs and an exec works.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn create_sandbox<'env>(&self, env: &'env Env, request: String) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move {
            s.create_sandbox(parse::<SandboxRequest>("sandbox request", &request)?)
                .await
        })
    }

    /// A sandbox, `null` when unknown.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn get_sandbox<'env>(&self, env: &'env Env, id: String) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move { s.get_sandbox(&id).await })
    }

    /// Every sandbox.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn list_sandboxes<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        self.json(env, |s| async move { s.list_sandboxes().await })
    }

    /// Stops and removes a sandbox's container; the record stays, terminated.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn terminate_sandbox<'env>(&self, env: &'env Env, id: String) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move { s.terminate_sandbox(&id).await })
    }

    /// Terminates a sandbox and deletes its record.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn delete_sandbox<'env>(&self, env: &'env Env, id: String) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move { s.delete_sandbox(&id).await })
    }

    /// Runs `ExecRequest` JSON (`{command}` or `{code, language}`) and resolves with the
    /// finished execution.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn exec_collect<'env>(
        &self,
        env: &'env Env,
        sandbox_id: String,
        request: String,
    ) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move {
            s.exec_collect(&sandbox_id, parse::<ExecRequest>("exec request", &request)?)
                .await
        })
    }

    /// Runs `ExecRequest` JSON and streams its output as it comes, then the execution.
    #[napi]
    pub fn exec<'env>(
        &self,
        env: &'env Env,
        sandbox_id: String,
        request: String,
    ) -> Result<PromiseRaw<'env, JsonStream>> {
        let handle = self.handle();
        spawn(env, async move {
            let request = parse::<ExecRequest>("exec request", &request)?;
            let stream = handle?.exec(&sandbox_id, request).await?;
            Ok(JsonStream::new(StreamState::new(
                stream.map(exec_event_json).boxed(),
            )))
        })
    }

    /// An execution, `null` when unknown.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn get_execution<'env>(&self, env: &'env Env, id: String) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move { s.get_execution(&id).await })
    }

    /// A sandbox's executions.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn list_executions<'env>(
        &self,
        env: &'env Env,
        sandbox_id: String,
    ) -> Result<Unknown<'env>> {
        self.json(
            env,
            move |s| async move { s.list_executions(&sandbox_id).await },
        )
    }

    /// Writes a file into a sandbox (parent directories are created).
    #[napi]
    pub fn write_file<'env>(
        &self,
        env: &'env Env,
        sandbox_id: String,
        path: String,
        data: Buffer,
    ) -> Result<PromiseRaw<'env, ()>> {
        let handle = self.handle();
        let data: Vec<u8> = data.to_vec();
        spawn(env, async move {
            handle?.write_file(&sandbox_id, &path, data).await
        })
    }

    /// Reads a file from a sandbox.
    #[napi]
    pub fn read_file<'env>(
        &self,
        env: &'env Env,
        sandbox_id: String,
        path: String,
    ) -> Result<PromiseRaw<'env, Buffer>> {
        let handle = self.handle();
        spawn(env, async move {
            Ok(Buffer::from(handle?.read_file(&sandbox_id, &path).await?))
        })
    }

    /// Lists a directory in a sandbox.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn list_files<'env>(
        &self,
        env: &'env Env,
        sandbox_id: String,
        path: String,
    ) -> Result<Unknown<'env>> {
        self.json(env, move |s| async move {
            s.list_files(&sandbox_id, &path).await
        })
    }

    /// Counters and gauges.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn metrics<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        self.json(env, |s| async move { Ok(s.metrics()) })
    }

    /// Sweeps expired, idle and stuck sandboxes now.
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn sweep<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        self.json(env, |s| async move { s.sweep().await })
    }

    /// Compares the records with Docker now (adopting or removing survivors).
    #[napi(ts_return_type = "string | Promise<string>")]
    pub fn reconcile<'env>(&self, env: &'env Env) -> Result<Unknown<'env>> {
        self.json(env, |s| async move { s.reconcile().await })
    }

    /// Releases this handle; the background loop stops once no handle is left (a server
    /// started with this scheduler keeps one). Sandboxes keep running: terminate them first.
    #[napi]
    pub fn close(&self) {
        self.inner.write().unwrap_or_else(|p| p.into_inner()).take();
    }
}
