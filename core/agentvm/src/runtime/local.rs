//! [`AgentVm`], the local (in-process) runtime, and its builder.

use super::agent::{AgentEnv, WindowBounds};
use super::bus::{Bus, BusConfig, EventFilter, Scope, Subscription};
use super::container_manager::ContainerManager;
use super::dispatch::Caller;
use super::tools::{NoTools, ToolRunner};
use super::Runtime;
use crate::config::{AgentConfig, Limits};
use crate::error::{Error, Result};
use crate::llm::{LlmDriver, LlmEvent, LlmRequest, LlmStream};
use crate::model::{Command, Definition, Response};
use crate::scheduler::{Scheduler, SchedulerBuilder};
use crate::store::{MemoryStore, RedbStore, Store};
use crate::toolhost::sandboxed::SandboxToolHost;
use crate::toolhost::{BuiltinTools, LocalToolHost, ToolHost, ToolLimits};
use async_trait::async_trait;
use futures::future::BoxFuture;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file name of the store ([`RedbStore`]) inside a data dir.
pub(super) const DATABASE_FILE: &str = "agentvm.redb";

/// Builds an [`AgentVm`].
#[must_use]
pub struct AgentVmBuilder {
    data_dir: Option<PathBuf>,
    /// A store the embedder opened (PostgreSQL, say); replaces the data dir's redb file.
    store: Option<Arc<dyn Store>>,
    definitions: Vec<Definition>,
    driver: Option<Arc<dyn LlmDriver>>,
    tools: Option<Arc<dyn ToolRunner>>,
    tool_host: Option<Arc<dyn ToolHost>>,
    local_tools: bool,
    /// Who may use the local tools and as whom they run.
    local_tools_policy: crate::toolhost::local::LocalToolsPolicy,
    /// The embedded scheduler, opened with this runtime's store and bus.
    scheduler: Option<SchedulerBuilder>,
    tool_limits: ToolLimits,
    /// Timeouts and restart backoff of agents' MCP servers.
    mcp_limits: crate::mcp::McpLimits,
    limits: Limits,
    agents: AgentConfig,
    bus: BusConfig,
}

impl std::fmt::Debug for AgentVmBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentVmBuilder")
            .field("data_dir", &self.data_dir)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl AgentVmBuilder {
    /// Keep every record in `store` (a `PostgresStore`, or any [`Store`]) instead of the
    /// data dir's `agentvm.redb`. A data dir, if given too, still holds the workdirs.
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Keep everything in `<dir>/agentvm.redb` (a [`RedbStore`]) and workdirs under
    /// `<dir>/containers/`. Without a data dir the runtime is ephemeral (a [`MemoryStore`]).
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Registers a definition at start-up (replacing a stored one of the same name).
    pub fn definition(mut self, definition: Definition) -> Self {
        self.definitions.push(definition);
        self
    }

    /// The LLM driver agents use. Without one, turns fail with a message saying how to
    /// configure a provider.
    pub fn llm(mut self, driver: Arc<dyn LlmDriver>) -> Self {
        self.driver = Some(driver);
        self
    }

    /// A custom tool runner, replacing the built-in tools. Without one (and without
    /// [`tool_host`](Self::tool_host), [`scheduler`](Self::scheduler) or
    /// [`local_tools`](Self::local_tools)), tool calls are
    /// refused.
    pub fn tools(mut self, tools: Arc<dyn ToolRunner>) -> Self {
        self.tools = Some(tools);
        self
    }

    /// Runs the built-in tools (`bash`, `read_file`, `write_file`, `list_files`) on this
    /// host, for images that enable them.
    pub fn tool_host(mut self, host: Arc<dyn ToolHost>) -> Self {
        self.tool_host = Some(host);
        self
    }

    /// Runs the built-in tools on this machine, each image in its workdir
    /// `<data-dir>/containers/<containerId>/workdirs/<imageId>` ([`LocalToolHost`]). Opt-in,
    /// because `bash` then runs as this process's user: enable it for agents you trust. Needs a
    /// [`data_dir`](Self::data_dir). Images still enable each tool by name.
    pub fn local_tools(mut self) -> Self {
        self.local_tools = true;
        self
    }

    /// Runs the built-in tools on this machine as [`local_tools`](Self::local_tools) does,
    /// under `policy`: only the containers it names may use them, and `bash` runs as its user
    /// when this process is root ([`LocalToolsPolicy`](crate::toolhost::local::LocalToolsPolicy)).
    pub fn local_tools_policy(mut self, policy: crate::toolhost::local::LocalToolsPolicy) -> Self {
        self.local_tools = true;
        self.local_tools_policy = policy;
        self
    }

    /// Limits of the built-in tools (timeout, output and file sizes).
    pub fn tool_limits(mut self, limits: ToolLimits) -> Self {
        self.tool_limits = limits;
        self
    }

    /// Timeouts and restart backoff of agents' MCP servers (see [`crate::mcp`]).
    pub fn mcp_limits(mut self, limits: crate::mcp::McpLimits) -> Self {
        self.mcp_limits = limits;
        self
    }

    /// Input limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Agent tuning.
    pub fn agent_config(mut self, config: AgentConfig) -> Self {
        self.agents = config;
        self
    }

    /// Bus tuning.
    pub fn bus_config(mut self, config: BusConfig) -> Self {
        self.bus = config;
        self
    }

    /// Opens the store and starts the runtime. Must run inside a tokio runtime.
    pub async fn open(self) -> Result<AgentVm> {
        let data_dir = self.data_dir.clone();
        let sandbox = match (self.tool_host, self.local_tools, &data_dir) {
            (Some(s), _, _) => Some(s),
            (None, true, Some(dir)) => Some(Arc::new(
                LocalToolHost::new(dir).with_policy(self.local_tools_policy.clone()),
            ) as Arc<dyn ToolHost>),
            (None, true, None) => {
                return Err(Error::invalid(
                    "local_tools() needs a data_dir: the tools run in its containers/ workdirs",
                ))
            }
            (None, false, _) => None,
        };
        let store: Arc<dyn Store> = match (self.store, &data_dir) {
            (Some(store), _) => store,
            (None, Some(dir)) => {
                let path = dir.join(DATABASE_FILE);
                Arc::new(
                    tokio::task::spawn_blocking(move || RedbStore::open(path))
                        .await
                        .map_err(|e| Error::Internal(format!("opening the store: {e}")))??,
                )
            }
            (None, None) => Arc::new(MemoryStore::new()),
        };
        for d in &self.definitions {
            super::commands::validate_definition(d, &self.limits)?;
            store.put_definition(d)?;
        }
        let bus = Bus::new(self.bus, Some(store.clone()))?;
        let scheduler = match self.scheduler {
            Some(builder) => Some(
                match &data_dir {
                    Some(dir) => builder.data_dir(dir),
                    None => builder,
                }
                .store(store.scheduler_store()?)
                .events(Arc::new(bus.clone()))
                .open()
                .await?,
            ),
            None => None,
        };
        let webhooks = match &scheduler {
            Some(_) => {
                let w = super::webhooks::Webhooks::open(store.scheduler_store()?)?;
                if !w.list().is_empty() {
                    w.start(&bus)?;
                }
                Some(w)
            }
            None => None,
        };
        // With a scheduler, containers that name a sandbox template run their tools there.
        let sandbox = match &scheduler {
            Some(s) => Some(
                Arc::new(SandboxToolHost::new(s.clone(), store.clone(), sandbox))
                    as Arc<dyn ToolHost>,
            ),
            None => sandbox,
        };
        let tools: Arc<dyn ToolRunner> = match (self.tools, sandbox) {
            (Some(t), _) => t,
            (None, Some(s)) => Arc::new(BuiltinTools::new(s, self.tool_limits)),
            (None, None) => Arc::new(NoTools),
        };
        let llm_latency = Arc::new(crate::llm::LlmLatency::default());
        let driver = self.driver.unwrap_or_else(|| Arc::new(Unconfigured));
        let env = Arc::new(AgentEnv {
            store: store.clone(),
            bus: bus.clone(),
            driver: Arc::new(crate::llm::TimedDriver::new(driver, llm_latency.clone())),
            tools,
            mcp_limits: self.mcp_limits,
            max_turns: self.agents.max_turns,
            max_tokens: self.agents.max_tokens,
            request_timeout: self.agents.request_timeout,
            mailbox: self.agents.mailbox,
            window: WindowBounds {
                messages: self.agents.history_messages.max(1),
                bytes: self.agents.history_bytes,
            },
        });
        Ok(AgentVm {
            inner: Arc::new(Inner {
                manager: ContainerManager::new(env),
                store,
                bus,
                data_dir,
                limits: self.limits,
                scheduler,
                webhooks,
                metrics: super::dispatch::RequestMetrics::default(),
                llm_latency,
                gate: std::sync::OnceLock::new(),
                terminal_routes: Default::default(),
            }),
        })
    }

    /// Embeds the Docker sandbox scheduler, on this runtime's store and bus. Containers
    /// created with a `sandboxTemplate` then run their agents' tools in a sandbox of it.
    pub fn scheduler(mut self, scheduler: SchedulerBuilder) -> Self {
        self.scheduler = Some(scheduler);
        self
    }
}

pub(crate) struct Inner {
    pub store: Arc<dyn Store>,
    pub bus: Bus,
    pub manager: ContainerManager,
    pub data_dir: Option<PathBuf>,
    pub limits: Limits,
    pub scheduler: Option<Scheduler>,
    /// Webhook registrations and deliveries (with a scheduler).
    pub webhooks: Option<Arc<super::webhooks::Webhooks>>,
    /// Requests by command and outcome, for every caller.
    pub metrics: super::dispatch::RequestMetrics,
    /// How long model requests take, by provider (every agent's driver is timed).
    pub llm_latency: Arc<crate::llm::LlmLatency>,
    /// Who decides whether this process may serve a container (a cluster's lease manager);
    /// weak, so the runtime does not keep its owner alive. Unset: every container is served.
    pub gate: std::sync::OnceLock<std::sync::Weak<dyn super::dispatch::ContainerGate>>,
    /// Terminals opened through this process on another member of its cluster.
    pub terminal_routes: super::dispatch::TerminalRoutes,
}

/// The local runtime: agents, sessions and their store in this process. Cheap to clone.
///
/// ```
/// # async fn demo() -> agentvm::Result<()> {
/// use agentvm::{AgentVm, RuntimeExt, MockDriver};
/// use std::sync::Arc;
/// let vm = AgentVm::builder().llm(Arc::new(MockDriver::default())).open().await?;
/// let image = vm.images().create("user-alice", Default::default()).await?;
/// let mut events = vm.sessions().events(&image.record.session_id).await?;
/// vm.agents().send_to_image(&image.record.image_id, "Hello!").await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct AgentVm {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for AgentVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentVm")
            .field("data_dir", &self.inner.data_dir)
            .finish_non_exhaustive()
    }
}

impl AgentVm {
    /// A builder with defaults: in memory, no LLM, no tools.
    pub fn builder() -> AgentVmBuilder {
        AgentVmBuilder {
            data_dir: None,
            store: None,
            definitions: Vec::new(),
            driver: None,
            tools: None,
            tool_host: None,
            local_tools: false,
            local_tools_policy: Default::default(),
            tool_limits: ToolLimits::default(),
            mcp_limits: crate::mcp::McpLimits::default(),
            scheduler: None,
            limits: Limits::default(),
            agents: AgentConfig::default(),
            bus: BusConfig::default(),
        }
    }

    /// Opens a runtime on `data_dir` with the given driver and defaults otherwise.
    pub async fn open(data_dir: impl Into<PathBuf>, driver: Arc<dyn LlmDriver>) -> Result<AgentVm> {
        Self::builder().data_dir(data_dir).llm(driver).open().await
    }

    /// A view of this runtime that sees and touches only `scope`'s containers.
    pub fn scoped(&self, scope: Scope) -> ScopedRuntime {
        self.for_caller(Caller::scoped(scope))
    }

    /// A view of this runtime for `caller`: its scope, deadline and hook apply to every request.
    pub fn for_caller(&self, caller: Caller) -> ScopedRuntime {
        ScopedRuntime {
            vm: self.clone(),
            caller,
        }
    }

    /// The container manager (running agents).
    pub fn container_manager(&self) -> &ContainerManager {
        &self.inner.manager
    }

    /// The store holding this runtime's records (and its scheduler's tables).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The bus.
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    /// The embedded scheduler, when the runtime was built with one.
    pub fn scheduler(&self) -> Option<&Scheduler> {
        self.inner.scheduler.as_ref()
    }

    /// The data dir, `None` in memory.
    pub fn data_dir(&self) -> Option<&Path> {
        self.inner.data_dir.as_deref()
    }

    /// Stops every agent (interrupting running turns, whose partial replies are stored) and
    /// writes the replay log out. The runtime stays usable.
    pub async fn close(&self) {
        self.inner.manager.destroy_everything().await;
        self.inner.bus.flush().await;
    }
}

/// Who an in-process [`Runtime::request`] runs as: everything in scope, no hook, no deadline.
static IN_PROCESS: std::sync::LazyLock<Caller> = std::sync::LazyLock::new(Caller::default);

#[async_trait]
impl Runtime for AgentVm {
    // Boxed by hand: the box then holds only the dispatch's small future, not the command
    // (and a caller) beside it as the generated one would.
    fn request<'a, 'b>(&'a self, command: Command) -> BoxFuture<'b, Result<Response>>
    where
        'a: 'b,
    {
        Box::pin(self.dispatch(command, &IN_PROCESS))
    }

    async fn subscribe(&self, filter: EventFilter) -> Result<Subscription> {
        self.inner.bus.subscribe(filter)
    }
}

/// A view of an [`AgentVm`] limited to some containers: what a tenant's connection gets.
/// Records of other containers behave as if they did not exist.
#[derive(Clone, Debug)]
pub struct ScopedRuntime {
    vm: AgentVm,
    caller: Caller,
}

impl ScopedRuntime {
    /// The scope.
    pub fn scope(&self) -> &Scope {
        &self.caller.scope
    }

    /// The caller this view runs requests as.
    pub fn caller(&self) -> &Caller {
        &self.caller
    }
}

#[async_trait]
impl Runtime for ScopedRuntime {
    fn request<'a, 'b>(&'a self, command: Command) -> BoxFuture<'b, Result<Response>>
    where
        'a: 'b,
    {
        Box::pin(self.vm.dispatch(command, &self.caller))
    }

    async fn subscribe(&self, mut filter: EventFilter) -> Result<Subscription> {
        filter.scope = self.caller.scope.clone();
        // Session topics and sandbox topics (exec output) alike.
        for (topic, _) in &filter.sessions {
            self.vm.check_topic(&self.caller.scope, topic).await?;
        }
        self.vm.inner.bus.subscribe(filter)
    }
}

/// The driver used when none is configured: every turn fails saying how to configure one.
struct Unconfigured;

impl LlmDriver for Unconfigured {
    fn name(&self) -> &str {
        "unconfigured"
    }

    fn default_model(&self) -> &str {
        "none"
    }

    fn stream(&self, _request: LlmRequest) -> LlmStream {
        futures::stream::iter([LlmEvent::Error {
            message: "No LLM provider is configured. Set LLM_PROVIDER (anthropic | openai | mock) \
                      and LLM_PROVIDER_KEY, or pass a driver to AgentVm::builder().llm(...)."
                .into(),
            code: Some("not_configured".into()),
        }])
        .boxed()
    }
}
