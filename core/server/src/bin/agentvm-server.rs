//! `agentvm-server`: the agentvm runtime behind one port (Channel WebSocket, REST, metrics).

use agentvm::toolhost::local::{running_as_root, LocalToolsPolicy, ToolUser};
use agentvm::{AgentVm, LlmDriver, RedbStore, Store};
use agentvm_server::telemetry::{self, OtlpEndpoint};
use agentvm_server::{AuthMode, ClusterConfig, LeaseManager, ServerConfig, ServerManager};
use clap::{Args, Parser, Subcommand};
use serde::Deserialize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// See [`agentvm_server::ServerAllocator`]: why the server does not use the system allocator.
#[global_allocator]
static ALLOCATOR: agentvm_server::ServerAllocator = agentvm_server::ServerAllocator;

#[derive(Parser)]
#[command(
    name = "agentvm-server",
    version,
    about = "The agentvm runtime server: AgentX-compatible WebSocket at /ws, REST under /v1"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    #[command(after_help = SERVE_HELP)]
    Serve(Box<ServeArgs>),
    /// Run the node side of runtime-node registration: register this Docker engine with a
    /// control plane and heartbeat until stopped.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Serve MCP (Model Context Protocol) on stdin/stdout, for desktop MCP clients: on a
    /// running server (--url, --token), or on the data dir as an embedded runtime.
    #[command(after_help = MCP_HELP)]
    Mcp(McpArgs),
    /// Manage access tokens (stored hashed in the data dir, or in --store).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
        /// The data dir holding agentvm.redb.
        #[arg(long, global = true, env = "AGENTVM_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// The store the server uses, when it is not the data dir's redb file
        /// (`postgres://user@host:port/dbname`).
        #[arg(long, global = true, env = "AGENTVM_STORE")]
        store: Option<String>,
    },
}

/// What `serve --help` adds after the flags: the environment and the config file.
const SERVE_HELP: &str = "\
Environment:
  LLM_PROVIDER          anthropic, openai or mock (no provider: agents answer with an error)
  LLM_PROVIDER_KEY      the API key (alias LLM_API_KEY); required for anthropic
  LLM_PROVIDER_URL      the base URL (default: the provider's public API; /v1 is added)
  LLM_PROVIDER_MODEL    the model when an image names none (anthropic: claude-sonnet-4-20250514;
                        openai: the first model the server's /v1/models lists)
  LLM_MAX_RETRIES       retries of a failed LLM request (default 2)
  LLM_TIMEOUT_SECS      wait for response headers, and the longest silence in a stream (600)
  AGENTVM_LOG           log filter, e.g. info, debug, agentvm_server=debug (default info)
  OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: export traces over
                        OTLP/HTTP (as --otlp-endpoint); OTEL_SERVICE_NAME, OTEL_BSP_* apply
  AGENTVM_DATA_DIR, AGENTVM_STORE, AGENTVM_ADVERTISE_URL, AGENTVM_SERVER_ID,
  AGENTVM_SECRETS_DIR: as the flags

Config file (--config agentvm.toml; flags and environment win; see agentvm.example.toml):
  host, port, data_dir, store, require_auth, docker = [..], local_tools_containers = [..],
  local_tools_user, max_content_bytes, max_frame_bytes,
  max_connections, request_timeout_ms, shutdown_grace_ms, send_timeout_ms, header_timeout_ms,
  ack_read_delay_ms, event_coalesce_ms, max_subscriptions, max_requests_in_flight,
  otlp_endpoint, secrets_dir,
  [llm] provider/key/url/model,
  [cluster] advertise_url/server_id/lease_ttl_ms/token/forward";

/// What `mcp --help` adds after the flags.
const MCP_HELP: &str = "\
Two ways to run, both speaking MCP on stdin/stdout (logs go to stderr):
  --url ws://HOST:PORT/ws (or http://HOST:PORT) [--token T]
        every tool call goes to that running server as the token's caller (its scope applies);
        this is the way while `agentvm-server serve` runs on the data dir.
  no --url: opens the data dir (or --store) as an embedded runtime with every container in
        scope, like `serve` without the port. A data dir a running server holds is refused.
  The LLM_* environment (see `serve --help`) configures the embedded runtime's provider.
  The server itself serves the same tools at /mcp (streamable HTTP, same tokens as /ws).";

/// `agentvm-server mcp`.
#[derive(Args)]
struct McpArgs {
    /// Speak MCP on stdin/stdout (the only transport of this command; /mcp on `serve` is the
    /// HTTP one).
    #[arg(long, required = true)]
    stdio: bool,
    /// A running server to send every tool call to: `ws://host:port/ws`, or `http://host:port`.
    #[arg(long, env = "AGENTVM_URL")]
    url: Option<String>,
    /// The access token for --url.
    #[arg(long, env = "AGENTVM_TOKEN")]
    token: Option<String>,
    /// Without --url: the data dir to open (default ~/.agentvm).
    #[arg(long, env = "AGENTVM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Without --url: the store, when it is not the data dir's redb file (`postgres://...`).
    #[arg(long, env = "AGENTVM_STORE")]
    store: Option<String>,
    /// Without --url: a Docker engine for sandboxes (repeatable), as for `serve`.
    #[arg(long = "docker", conflicts_with = "url")]
    docker: Vec<String>,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to bind (default 127.0.0.1). A non-loopback address turns authentication on.
    #[arg(long)]
    host: Option<String>,
    /// Port to bind (default 8080; 0 picks a free one).
    #[arg(long)]
    port: Option<u16>,
    /// Where agentvm.redb and the workdirs live (default ~/.agentvm).
    #[arg(long, env = "AGENTVM_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Where the records live: `postgres://user[:password]@host[:port]/dbname` for a
    /// PostgreSQL database (no TLS yet), several servers may share one. Default: agentvm.redb
    /// in the data dir.
    #[arg(long, env = "AGENTVM_STORE")]
    store: Option<String>,
    /// A TOML file with the same settings (flags and environment win).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Require a token even on loopback.
    #[arg(long)]
    require_auth: bool,
    /// A Docker engine to run sandboxes on (repeatable): `unix:///var/run/docker.sock`,
    /// `tcp://host:2376`. More nodes can register at /internal/runtime/nodes/register.
    #[arg(long = "docker")]
    docker: Vec<String>,
    /// Let agents whose image enables them run the built-in tools (bash, files) on this host,
    /// confined to each image's workdir, in the containers named by --local-tools-container.
    /// Off by default: bash on the host is not a sandbox.
    #[arg(long)]
    local_tools: bool,
    /// When authentication is on and the store holds no active token, create one token for
    /// all containers and print it once on stdout (the first start of a public server).
    #[arg(long)]
    bootstrap_token: bool,
    /// A container whose agents may use the local tools (repeatable; `*`: every container).
    /// Other containers' tool calls are refused. Adds to the config file's
    /// `local_tools_containers`.
    #[arg(long = "local-tools-container")]
    local_tools_containers: Vec<String>,
    /// The user the local tools run as when the server runs as root: a name from /etc/passwd
    /// or uid:gid (default `nobody`; config file `local_tools_user`).
    #[arg(long)]
    local_tools_user: Option<String>,
    /// Join a cluster of servers sharing the `--store` PostgreSQL database: each container is
    /// served by one server at a time, through a lease (docs/cluster.md).
    #[arg(long)]
    cluster: bool,
    /// The URL other servers name when they refuse a container this one serves
    /// (default `http://<bound address>`). Implies --cluster.
    #[arg(long, env = "AGENTVM_ADVERTISE_URL")]
    advertise_url: Option<String>,
    /// This server's id in the cluster (default: a new `srv_…` at each start).
    #[arg(long, env = "AGENTVM_SERVER_ID")]
    server_id: Option<String>,
    /// How long a container lease lasts without renewal, in milliseconds (default 10000);
    /// renewed every third of it.
    #[arg(long)]
    lease_ttl_ms: Option<u64>,
    /// The token (for all containers) this server presents to the other members when it
    /// forwards a command for a container one of them serves; needed where they require
    /// tokens. Prefer the environment variable: a flag shows in `ps`.
    #[arg(long, env = "AGENTVM_CLUSTER_TOKEN", hide_env_values = true)]
    cluster_token: Option<String>,
    /// Refuse commands for containers another member serves, naming it, instead of
    /// forwarding them there.
    #[arg(long)]
    no_forward: bool,
    /// The largest user message content accepted, in bytes (default 1048576); larger content
    /// is refused with `invalid_input`. Keep it under `max_frame_bytes`.
    #[arg(long, env = "AGENTVM_MAX_CONTENT_BYTES")]
    max_content_bytes: Option<usize>,
    /// Export OpenTelemetry traces over OTLP/HTTP to this collector, e.g.
    /// `http://127.0.0.1:4318` (spans go to its /v1/traces). Without it, the standard
    /// OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_EXPORTER_OTLP_TRACES_ENDPOINT turn tracing on.
    #[arg(long)]
    otlp_endpoint: Option<String>,
    /// Where the key sealing templates' egress credentials (`secrets.key`) and the egress CA
    /// (`egress-ca.key`, `egress-ca.pem`) are kept, made on first use (default: the data
    /// dir). Cluster members must share these files: give each the same copy.
    #[arg(long, env = "AGENTVM_SECRETS_DIR")]
    secrets_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Register with a control plane and heartbeat.
    Join {
        /// The control plane's base URL (`http://host:8080`).
        #[arg(long)]
        control_plane: String,
        /// This node's Docker endpoint as the control plane should reach it
        /// (`unix:///var/run/docker.sock`, `tcp://host:2376`).
        #[arg(long, default_value = "unix:///var/run/docker.sock")]
        docker: String,
        /// A token the control plane accepts (an all-containers token when it requires auth).
        #[arg(long, env = "AGENTVM_NODE_TOKEN")]
        token: Option<String>,
        /// The node's id (default: the host name).
        #[arg(long)]
        node_id: Option<String>,
        /// Most sandboxes this node takes.
        #[arg(long, default_value_t = 100)]
        max_containers: u32,
        /// Heartbeat interval in milliseconds.
        #[arg(long, default_value_t = 5000)]
        heartbeat_ms: u64,
    },
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Create a token; it is printed once.
    Create {
        /// Containers the token may use, comma-separated.
        #[arg(long, value_delimiter = ',', conflicts_with = "all")]
        containers: Vec<String>,
        /// The token may use every container.
        #[arg(long)]
        all: bool,
    },
    /// List tokens (ids and scopes, never the tokens).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The token's id (`tok_…`).
        id: String,
    },
}

/// The config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    host: Option<String>,
    port: Option<u16>,
    data_dir: Option<PathBuf>,
    store: Option<String>,
    require_auth: Option<bool>,
    #[serde(default)]
    docker: Vec<String>,
    max_frame_bytes: Option<usize>,
    max_content_bytes: Option<usize>,
    max_connections: Option<usize>,
    request_timeout_ms: Option<u64>,
    shutdown_grace_ms: Option<u64>,
    send_timeout_ms: Option<u64>,
    header_timeout_ms: Option<u64>,
    ack_read_delay_ms: Option<u64>,
    event_coalesce_ms: Option<u64>,
    max_subscriptions: Option<usize>,
    max_requests_in_flight: Option<usize>,
    #[serde(default)]
    local_tools_containers: Vec<String>,
    local_tools_user: Option<String>,
    otlp_endpoint: Option<String>,
    secrets_dir: Option<PathBuf>,
    /// The scheduler's options, as every binding's `open()` takes them (`SchedulerOptions`:
    /// `sweep_interval_ms`, `ended_retention_ms`, ...; snake_case or camelCase).
    scheduler: Option<agentvm::scheduler::SchedulerOptions>,
    #[serde(default)]
    llm: LlmFileConfig,
    cluster: Option<ClusterFileConfig>,
}

/// `[cluster]` in the config file: its presence joins the cluster.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFileConfig {
    advertise_url: Option<String>,
    server_id: Option<String>,
    lease_ttl_ms: Option<u64>,
    token: Option<String>,
    forward: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LlmFileConfig {
    provider: Option<String>,
    key: Option<String>,
    url: Option<String>,
    model: Option<String>,
}

/// The operator's local tools policy: the containers named on the command line and in the
/// config file, run as `local_tools_user` (default `nobody`) when the server is root.
fn local_tools_policy(
    flags: Vec<String>,
    user: Option<String>,
    file_containers: &[String],
    file_user: Option<&str>,
) -> Result<LocalToolsPolicy, String> {
    let containers: Vec<String> = flags
        .into_iter()
        .chain(file_containers.iter().cloned())
        .collect();
    if containers.is_empty() {
        tracing::warn!(
            "--local-tools without --local-tools-container: no container may use the local tools"
        );
    }
    let mut policy = LocalToolsPolicy::allow(containers.iter().cloned());
    let user = user
        .or_else(|| file_user.map(str::to_string))
        .unwrap_or_else(|| "nobody".into());
    if running_as_root() {
        let u = ToolUser::resolve(&user).map_err(|e| e.to_string())?;
        tracing::warn!(
            containers = ?containers, user, uid = u.uid, gid = u.gid,
            "local tools: agents' bash runs on this host as this user, confined only to its workdir"
        );
        policy = policy.run_as(u);
    } else {
        tracing::warn!(
            containers = ?containers,
            "local tools: the server is not root, so it cannot switch to local_tools_user ({user}); \
             agents' bash runs as this server's user, confined only to its workdir"
        );
    }
    Ok(policy)
}

fn default_data_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".agentvm")
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The driver chosen by `LLM_PROVIDER` and friends; the config file's `[llm]` fills what the
/// environment leaves unset. `None` when no provider is named at all.
fn llm_driver(file: &LlmFileConfig) -> Result<Option<Arc<dyn LlmDriver>>, String> {
    let var = |name: &str| -> Option<String> {
        env(name).or_else(|| match name {
            "LLM_PROVIDER" => file.provider.clone(),
            "LLM_PROVIDER_KEY" => file.key.clone(),
            "LLM_PROVIDER_URL" => file.url.clone(),
            "LLM_PROVIDER_MODEL" => file.model.clone(),
            _ => None,
        })
    };
    if var("LLM_PROVIDER").is_none() {
        return Ok(None);
    }
    let config = agentvm::llm::config::LlmConfig::from_vars(var).map_err(|e| e.to_string())?;
    config.driver().map(Some).map_err(|e| e.to_string())
}

/// Log lines only (the node agent): no traces.
fn init_logging() {
    if let Err(e) = telemetry::init(&OtlpEndpoint::Off) {
        eprintln!("agentvm-server: {e}");
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => match serve(*args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("agentvm-server: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Node {
            command:
                NodeCommand::Join {
                    control_plane,
                    docker,
                    token,
                    node_id,
                    max_containers,
                    heartbeat_ms,
                },
        } => {
            init_logging();
            let node_id = node_id
                .or_else(|| {
                    std::fs::read_to_string("/etc/hostname")
                        .ok()
                        .map(|h| h.trim().to_string())
                })
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "node".into());
            let mut opts =
                agentvm_server::node_agent::JoinOptions::new(control_plane, node_id, docker);
            opts.token = token;
            opts.max_containers = max_containers;
            opts.heartbeat_interval = Duration::from_millis(heartbeat_ms.max(100));
            tokio::select! {
                r = agentvm_server::node_agent::join(opts) => match r {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("agentvm-server: {}", e.chain());
                        ExitCode::FAILURE
                    }
                },
                _ = shutdown_signal() => ExitCode::SUCCESS,
            }
        }
        Command::Mcp(args) => {
            init_logging();
            match mcp(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("agentvm-server: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Token {
            command,
            data_dir,
            store,
        } => match token(command, data_dir.unwrap_or_else(default_data_dir), store).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("agentvm-server: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// `mcp --stdio`: MCP on stdin/stdout, on a running server or an embedded runtime.
async fn mcp(args: McpArgs) -> Result<(), String> {
    let mut embedded: Option<AgentVm> = None;
    let runtime: Arc<dyn agentvm::Runtime> = match &args.url {
        Some(url) => {
            let url = channel_url(url);
            let options = agentvm::ConnectOptions {
                token: args.token.clone(),
                // An exec runs as long as its own timeout; the Channel default (30 s) would cut it.
                request_timeout: Duration::from_secs(600),
                ..Default::default()
            };
            let remote = agentvm::connect(&url, options)
                .await
                .map_err(|e| format!("connecting to {url}: {}", e.chain()))?;
            Arc::new(remote)
        }
        None => {
            if args.token.is_some() {
                tracing::warn!("a token without --url is not used: the embedded runtime has every container in scope");
            }
            let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
            let mut builder = AgentVm::builder().data_dir(&data_dir);
            if let Some(url) = &args.store {
                builder = builder.store(open_store(url).await?.0);
            } else {
                // A running server holds the redb file: say so before the store's own error.
                let socket = data_dir.join(agentvm_server::admin_socket::ADMIN_SOCKET);
                if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                    return Err(format!(
                        "a running agentvm-server holds the data dir {}: connect to it instead \
                         (agentvm-server mcp --stdio --url ws://HOST:PORT/ws --token TOKEN)",
                        data_dir.display()
                    ));
                }
            }
            if let Some(d) = llm_driver(&LlmFileConfig::default())? {
                builder = builder.llm(d);
            }
            let mut scheduler = agentvm::scheduler::Scheduler::builder();
            for (i, endpoint) in args.docker.iter().enumerate() {
                scheduler = scheduler.node(agentvm::scheduler::NodeRegistration::new(
                    format!("docker-{}", i + 1),
                    endpoint.clone(),
                ));
            }
            builder = builder.scheduler(scheduler);
            let vm = builder.open().await.map_err(|e| {
                format!(
                    "opening the data dir {} (if a server runs on it, use --url and --token): {}",
                    data_dir.display(),
                    e.chain()
                )
            })?;
            embedded = Some(vm.clone());
            Arc::new(vm.scoped(agentvm::Scope::All))
        }
    };
    let served = agentvm_server::mcp::serve_stdio(runtime).await;
    if let Some(vm) = embedded {
        // Stops the agents (their partial replies are stored) and writes the replay log out.
        vm.close().await;
    }
    served.map_err(|e| e.chain())
}

/// The Channel URL of a server: `http://host:port` becomes `ws://host:port/ws`.
fn channel_url(url: &str) -> String {
    match url.strip_prefix("http://") {
        Some(rest) => {
            let rest = rest.trim_end_matches('/');
            if rest.contains('/') {
                format!("ws://{rest}")
            } else {
                format!("ws://{rest}/ws")
            }
        }
        None => url.to_string(),
    }
}

/// `event_coalesce_ms` from the config file, refused above its maximum.
fn event_coalesce(ms: u64) -> Result<Duration, String> {
    let max = agentvm_server::MAX_EVENT_COALESCE;
    if ms > max.as_millis() as u64 {
        return Err(format!(
            "event_coalesce_ms = {ms}: at most {} (each event of a busy stream may wait that \
             long; 2 is the default, 0 turns it off)",
            max.as_millis()
        ));
    }
    Ok(Duration::from_millis(ms))
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let file: FileConfig = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        }
        None => FileConfig::default(),
    };
    let otlp = OtlpEndpoint::resolve(args.otlp_endpoint.clone().or(file.otlp_endpoint.clone()));
    let telemetry = telemetry::init(&otlp)?;
    if telemetry.tracing() {
        tracing::info!(
            endpoint = otlp
                .traces_url()
                .as_deref()
                .unwrap_or("from OTEL_EXPORTER_OTLP_*"),
            "exporting traces over OTLP/HTTP"
        );
    }
    let host = args
        .host
        .or(file.host)
        .unwrap_or_else(|| "127.0.0.1".into());
    let port = args.port.or(file.port).unwrap_or(8080);
    let data_dir = args
        .data_dir
        .or(file.data_dir)
        .unwrap_or_else(default_data_dir);
    let driver = llm_driver(&file.llm)?;
    let mut builder = AgentVm::builder().data_dir(&data_dir);
    if let Some(max) = args.max_content_bytes.or(file.max_content_bytes) {
        builder = builder.limits(agentvm::Limits {
            max_content_bytes: max,
            ..Default::default()
        });
    }
    let store_url = args.store.or(file.store);
    let store_text = match &store_url {
        Some(url) => {
            let (store, server) = open_store(url).await?;
            builder = builder.store(store);
            format!(
                "store PostgreSQL at {server}, data dir {}",
                data_dir.display()
            )
        }
        None => format!("data dir {}", data_dir.display()),
    };
    if args.local_tools {
        builder = builder.local_tools_policy(local_tools_policy(
            args.local_tools_containers,
            args.local_tools_user,
            &file.local_tools_containers,
            file.local_tools_user.as_deref(),
        )?);
    }
    match driver {
        Some(d) => {
            let model = match d.default_model() {
                "" => "the first model the server's /v1/models lists",
                m => m,
            };
            tracing::info!(
                provider = d.name(),
                endpoint = d.endpoint().unwrap_or("in-process"),
                model,
                "LLM provider configured"
            );
            builder = builder.llm(d);
        }
        None => tracing::warn!(
            "no LLM provider configured: agents will answer with an error. Set LLM_PROVIDER=anthropic \
             (or openai) and LLM_PROVIDER_KEY=..., optionally LLM_PROVIDER_URL and LLM_PROVIDER_MODEL; \
             LLM_PROVIDER=mock runs the offline mock"
        ),
    }
    // The Docker scheduler: static nodes from --docker / the config file; others register.
    let mut scheduler = agentvm::scheduler::Scheduler::builder();
    if let Some(options) = &file.scheduler {
        scheduler = scheduler
            .options(options)
            .map_err(|e| format!("the config file's [scheduler]: {}", e.chain()))?;
    }
    let engines: Vec<String> = if args.docker.is_empty() {
        file.docker.clone()
    } else {
        args.docker.clone()
    };
    for (i, endpoint) in engines.iter().enumerate() {
        scheduler = scheduler.node(agentvm::scheduler::NodeRegistration::new(
            format!("docker-{}", i + 1),
            endpoint.clone(),
        ));
    }
    if let Some(dir) = args.secrets_dir.clone().or(file.secrets_dir.clone()) {
        scheduler = scheduler.data_dir(&dir);
    }
    let clustered = args.cluster || args.advertise_url.is_some() || file.cluster.is_some();
    if clustered {
        // Members share the store and the nodes: each tends only its containers' sandboxes.
        scheduler = scheduler.stewardship(Arc::new(agentvm::scheduler::Stewardship::new()));
    }
    builder = builder.scheduler(scheduler);
    let vm = builder.open().await.map_err(|e| e.chain())?;
    let mut config = ServerConfig::default();
    if args.require_auth || file.require_auth.unwrap_or(false) {
        config.auth = AuthMode::Required;
    }
    if let Some(v) = file.max_frame_bytes {
        config.max_frame_bytes = v;
    }
    if let Some(v) = file.max_connections {
        config.max_connections = v;
    }
    if let Some(v) = file.request_timeout_ms {
        config.request_timeout = Duration::from_millis(v);
    }
    if let Some(v) = file.shutdown_grace_ms {
        config.shutdown_grace = Duration::from_millis(v);
    }
    if let Some(v) = file.send_timeout_ms {
        config.send_timeout = Duration::from_millis(v);
    }
    if let Some(v) = file.header_timeout_ms {
        config.header_timeout = Duration::from_millis(v);
    }
    if let Some(v) = file.ack_read_delay_ms {
        config.ack_read_delay = Duration::from_millis(v);
    }
    if let Some(v) = file.event_coalesce_ms {
        config.event_coalesce = event_coalesce(v)?;
    }
    if let Some(v) = file.max_subscriptions {
        config.max_subscriptions = v;
    }
    if let Some(v) = file.max_requests_in_flight {
        config.max_requests_in_flight = v;
    }
    let config_auth = config.auth;
    let server = ServerManager::new(vm.clone(), config);
    // Bound before the cluster is joined (the advertised URL defaults to the bound address),
    // served after it (no request may reach a container before the lease gate is in place).
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .map_err(|e| bind_error(&host, port, &e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("the bound address: {e}"))?;
    let file_cluster = file.cluster.unwrap_or_default();
    let cluster = if clustered {
        if store_url.is_none() {
            return Err("--cluster needs a shared store: --store postgres://...".into());
        }
        let url = args
            .advertise_url
            .or(file_cluster.advertise_url)
            .unwrap_or_else(|| format!("http://{addr}"));
        let mut config = ClusterConfig::new(url);
        if let Some(id) = args.server_id.or(file_cluster.server_id) {
            config.server_id = id;
        }
        if let Some(ms) = args.lease_ttl_ms.or(file_cluster.lease_ttl_ms) {
            config = config.with_lease_ttl(Duration::from_millis(ms));
        }
        config.forward_token = args.cluster_token.or(file_cluster.token);
        config.forward = !args.no_forward && file_cluster.forward.unwrap_or(true);
        Some(
            LeaseManager::start(&vm, config)
                .await
                .map_err(|e| e.chain())?,
        )
    } else {
        None
    };
    let auth_on = match config_auth {
        AuthMode::Required => true,
        AuthMode::Disabled => false,
        AuthMode::Auto => !addr.ip().is_loopback(),
    };
    if args.bootstrap_token {
        bootstrap_token(&vm, auth_on)?;
    }
    server.serve(listener).await.map_err(|e| e.chain())?;
    // `agentvm-server token ...` reaches a running server through this socket.
    let socket = data_dir.join(agentvm_server::admin_socket::ADMIN_SOCKET);
    if let Err(e) = server.serve_admin_socket(&socket).await {
        tracing::warn!(error = %e.chain(), "no operator socket: `agentvm-server token` works only while the server is stopped");
    }
    // Catch SIGTERM before announcing the address: a script that stops the server as soon as
    // it reads the line must get a clean shutdown, not the default action of the signal.
    let shutdown = shutdown_signal();
    // One line on stdout that scripts (and tests) can wait for.
    println!("agentvm-server listening on http://{addr} (WebSocket ws://{addr}/ws, {store_text})");
    shutdown.await;
    // Not ready first, while connections are still served.
    server.drain();
    tracing::info!("shutting down: letting running turns finish");
    server.close().await;
    if let Some(cluster) = &cluster {
        // After the turns finished (their replies are written under the leases), before exit.
        cluster.drain().await;
    }
    tracing::info!("stopped");
    telemetry.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Handles SIGTERM and SIGINT from this call on (not from the first poll); the future ends at
/// the first of them.
#[cfg(unix)]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let handlers = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

/// Ends at the first Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Opens the store named by `--store` / `store = "..."` (a PostgreSQL URL), and names its
/// server (`host:port/dbname`, never the password).
async fn open_store(url: &str) -> Result<(Arc<dyn Store>, String), String> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = agentvm::PostgresStore::open(url)
            .await
            .map_err(|e| e.chain())?;
        let server = store.server().to_string();
        tracing::info!(%server, "store: PostgreSQL");
        Ok((Arc::new(store), server))
    } else {
        Err(format!(
            "--store {url:?}: expected a postgres://user@host:port/dbname URL (without --store, \
             the data dir's agentvm.redb is used)"
        ))
    }
}

async fn token(
    command: TokenCommand,
    data_dir: PathBuf,
    store_url: Option<String>,
) -> Result<(), String> {
    if let TokenCommand::Create { containers, all } = &command {
        if !*all && containers.is_empty() {
            return Err(
                "say which containers the token may use (--containers a,b) or --all".into(),
            );
        }
    }
    let store: Arc<dyn Store> = match store_url {
        Some(url) => open_store(&url).await?.0,
        None => {
            let path = data_dir.join("agentvm.redb");
            match RedbStore::open(&path) {
                Ok(store) => Arc::new(store),
                Err(e) => {
                    // The server holds the file: ask it, over its operator socket.
                    let socket = data_dir.join(agentvm_server::admin_socket::ADMIN_SOCKET);
                    if std::os::unix::net::UnixStream::connect(&socket).is_ok() {
                        return token_through_server(command, &socket).await;
                    }
                    return Err(e.chain());
                }
            }
        }
    };
    let store = &*store;
    match command {
        TokenCommand::Create { containers, all } => {
            let scope = if all { None } else { Some(containers) };
            let (token, record) =
                agentvm::auth::create_token(store, scope).map_err(|e| e.to_string())?;
            eprintln!(
                "created {} for {}",
                record.id,
                scope_text(&record.containers)
            );
            println!("{token}");
        }
        TokenCommand::List => {
            for t in store.list_tokens().map_err(|e| e.to_string())? {
                let state = if t.revoked_at.is_some() {
                    "revoked"
                } else {
                    "active"
                };
                println!("{}\t{}\t{}", t.id, state, scope_text(&t.containers));
            }
        }
        TokenCommand::Revoke { id } => {
            if !store
                .revoke_token(&id, agentvm::now_ms())
                .map_err(|e| e.to_string())?
            {
                return Err(format!("no token with id {id}"));
            }
            println!("revoked {id}");
        }
    }
    Ok(())
}

/// One line naming the address, with what to do about the usual causes.
fn bind_error(host: &str, port: u16, e: &std::io::Error) -> String {
    let hint = match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            " (another process listens there, perhaps another agentvm-server: stop it or pick another --port)"
        }
        std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges: pick another --port)",
        std::io::ErrorKind::AddrNotAvailable => " (this machine has no such address: check --host)",
        _ => "",
    };
    format!("cannot listen on {host}:{port}: {e}{hint}")
}

/// `--bootstrap-token`: the first token of a server that needs one and has none.
fn bootstrap_token(vm: &AgentVm, auth_on: bool) -> Result<(), String> {
    if !auth_on {
        tracing::info!(
            "--bootstrap-token: authentication is off on this address; no token created"
        );
        return Ok(());
    }
    let store = vm.store();
    let active = store
        .list_tokens()
        .map_err(|e| e.chain())?
        .iter()
        .any(|t| t.revoked_at.is_none());
    if active {
        tracing::info!("--bootstrap-token: the store already holds a token; none created");
        return Ok(());
    }
    let (token, record) = agentvm::auth::create_token(&**store, None).map_err(|e| e.chain())?;
    tracing::warn!(id = %record.id, "--bootstrap-token: created a token for all containers; it is printed once");
    println!("agentvm-server bootstrap token (all containers, shown once): {token}");
    Ok(())
}

/// The token commands through a running server's operator socket.
async fn token_through_server(
    command: TokenCommand,
    socket: &std::path::Path,
) -> Result<(), String> {
    let (type_name, data) = match &command {
        TokenCommand::Create { containers, all } => (
            "token_create_request",
            if *all {
                serde_json::json!({ "all": true })
            } else {
                serde_json::json!({ "containers": containers })
            },
        ),
        TokenCommand::List => ("token_list_request", serde_json::json!({})),
        TokenCommand::Revoke { id } => {
            ("token_revoke_request", serde_json::json!({ "tokenId": id }))
        }
    };
    let frame = serde_json::json!({ "type": type_name, "data": data });
    let answer = agentvm_server::admin_socket::request(socket, &frame)
        .await
        .map_err(|e| e.chain())?;
    let data = &answer["data"];
    if let Some(error) = data["error"].as_str() {
        return Err(error.to_string());
    }
    let containers = |v: &serde_json::Value| -> Option<Vec<String>> {
        v.as_array().map(|a| {
            a.iter()
                .filter_map(|c| c.as_str().map(str::to_string))
                .collect()
        })
    };
    match command {
        TokenCommand::Create { .. } => {
            eprintln!(
                "created {} for {} (through the running server)",
                data["id"].as_str().unwrap_or("?"),
                scope_text(&containers(&data["containers"]))
            );
            println!("{}", data["token"].as_str().unwrap_or_default());
        }
        TokenCommand::List => {
            for t in data["tokens"].as_array().into_iter().flatten() {
                let state = if t["revokedAt"].is_null() {
                    "active"
                } else {
                    "revoked"
                };
                println!(
                    "{}\t{}\t{}",
                    t["id"].as_str().unwrap_or("?"),
                    state,
                    scope_text(&containers(&t["containers"]))
                );
            }
        }
        TokenCommand::Revoke { id } => println!("revoked {id}"),
    }
    Ok(())
}

fn scope_text(containers: &Option<Vec<String>>) -> String {
    match containers {
        None => "all containers".into(),
        Some(c) => c.join(","),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_parses_and_says_the_defaults() {
        let file: FileConfig = toml::from_str(include_str!("../../../../agentvm.example.toml"))
            .expect("agentvm.example.toml parses");
        let defaults = ServerConfig::default();
        assert_eq!(file.host.as_deref(), Some("127.0.0.1"));
        assert_eq!(file.port, Some(8080));
        assert_eq!(file.max_frame_bytes, Some(defaults.max_frame_bytes));
        assert_eq!(
            file.max_content_bytes,
            Some(agentvm::Limits::default().max_content_bytes)
        );
        assert_eq!(file.max_connections, Some(defaults.max_connections));
        assert_eq!(
            file.send_timeout_ms,
            Some(defaults.send_timeout.as_millis() as u64)
        );
        assert_eq!(
            file.header_timeout_ms,
            Some(defaults.header_timeout.as_millis() as u64)
        );
        assert_eq!(
            file.ack_read_delay_ms,
            Some(defaults.ack_read_delay.as_millis() as u64)
        );
        assert_eq!(
            file.event_coalesce_ms,
            Some(defaults.event_coalesce.as_millis() as u64)
        );
        assert_eq!(file.max_subscriptions, Some(defaults.max_subscriptions));
        assert_eq!(
            file.max_requests_in_flight,
            Some(defaults.max_requests_in_flight)
        );
        assert_eq!(
            file.shutdown_grace_ms,
            Some(defaults.shutdown_grace.as_millis() as u64)
        );
        assert_eq!(
            file.request_timeout_ms,
            Some(defaults.request_timeout.as_millis() as u64)
        );
        assert_eq!(
            file.llm.model.as_deref(),
            Some(agentvm::llm::config::DEFAULT_MODEL)
        );
        assert!(file.cluster.is_none(), "the example leaves the cluster off");
    }

    #[test]
    fn an_event_coalesce_window_past_its_maximum_is_refused_saying_why() {
        assert_eq!(event_coalesce(0), Ok(Duration::ZERO));
        assert_eq!(event_coalesce(1000), Ok(Duration::from_secs(1)));
        let e = event_coalesce(60_000).expect_err("a minute is refused");
        assert!(
            e.starts_with("event_coalesce_ms = 60000: at most 1000"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let e = toml::from_str::<FileConfig>("prot = 8080").expect_err("a typo is an error");
        assert!(e.to_string().contains("prot"), "{e}");
    }

    #[test]
    fn a_port_in_use_names_the_address_and_what_to_do() {
        let e = std::io::Error::from(std::io::ErrorKind::AddrInUse);
        let text = bind_error("127.0.0.1", 8080, &e);
        assert!(
            text.starts_with("cannot listen on 127.0.0.1:8080: "),
            "{text}"
        );
        assert!(text.contains("--port"), "{text}");
        assert_eq!(text.lines().count(), 1);
    }
}

#[cfg(test)]
mod fuzz {
    //! Fuzz target of the config file (harness: the `agentvm-fuzz` crate): no text panics the
    //! parser; a refusal is the parser's error, with a message saying where.

    use super::FileConfig;

    #[test]
    fn fuzz_config_file() {
        let mut parsed = 0;
        agentvm_fuzz::run("server_config", |input| {
            let text = String::from_utf8_lossy(input);
            match toml::from_str::<FileConfig>(&text) {
                Ok(_) => parsed += 1,
                Err(e) => assert!(!e.message().is_empty(), "an error without a message"),
            }
        });
        assert!(parsed > 0, "no config parsed: the corpus reaches nothing");
    }
}
