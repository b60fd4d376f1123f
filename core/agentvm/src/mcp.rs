//! MCP servers as tools: an agent's connections to the MCP servers of its image
//! (`mcpServers`), whose tools the model is offered as `mcp__<server>__<tool>` next to the
//! built-in tools, and run in the same tool loop.
//!
//! - **Where a stdio server runs**: where the agent's tools run ([`ToolRunner::spawn_stdio`]):
//!   inside the container's sandbox (a Docker exec with stdin and stdout attached, as the
//!   sandbox's user, in the image's directory) when the container has a sandbox template; on
//!   this machine only where local tools are allowed for the container (as the tool user, in
//!   the image's workdir); refused otherwise. An HTTP server is reached from the runtime.
//! - **When**: servers start at the agent's first turn and live as long as the agent; they are
//!   closed (processes and execs killed) when it stops.
//! - **Failures**: a server that cannot start, does not answer `initialize` within
//!   [`McpLimits::start_timeout`], crashes or breaks the protocol is marked down, reported (an
//!   `error_occurred` event with code `mcp_server_failed` on the session, and a WARN log) and
//!   started again when next needed, after a backoff that doubles with each failure. A call to
//!   one of its tools meanwhile is a tool error naming the failure. A tool that does not answer
//!   within [`McpLimits::call_timeout`] is a tool error, and its server is restarted (a hung
//!   server would hang every later call).
//!
//! The protocol is rmcp's client; `mcp/http.rs` adapts its streamable HTTP transport to reqwest.

pub(crate) mod http;

use crate::llm::ToolSpec;
use crate::model::{McpServer, McpServers, ToolCall};
use crate::runtime::{ToolContext, ToolOutcome, ToolRunner};
use crate::toolhost::{StdioCommand, StdioGuard};
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService, ServiceExt};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// The prefix of MCP tools' names: `mcp__<server>__<tool>`.
pub const MCP_TOOL_PREFIX: &str = "mcp__";

/// How long MCP servers get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpLimits {
    /// From starting a server to its answer to `initialize` and `tools/list`.
    pub start_timeout: Duration,
    /// One tool call.
    pub call_timeout: Duration,
    /// The wait before restarting a failed server; doubles with each failure in a row.
    pub restart_backoff: Duration,
    /// The longest wait before a restart.
    pub max_restart_backoff: Duration,
}

impl Default for McpLimits {
    fn default() -> Self {
        McpLimits {
            start_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(120),
            restart_backoff: Duration::from_secs(1),
            max_restart_backoff: Duration::from_secs(60),
        }
    }
}

/// Told when a server fails: `(server, message)`.
pub(crate) type McpReport = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// A live connection.
struct Conn {
    service: RunningService<RoleClient, ()>,
    /// The process of a stdio server.
    process: Option<Box<dyn StdioGuard>>,
    stderr: Option<Arc<Mutex<String>>>,
    tools: Vec<ToolSpec>,
}

enum State {
    /// Not started yet.
    Idle,
    Up(Conn),
    /// Failed `failures` times in a row; may start again at `retry_at`.
    Down {
        failures: u32,
        retry_at: Instant,
        error: String,
    },
}

struct Server {
    name: String,
    config: McpServer,
    state: State,
}

/// An agent's MCP servers. Cheap to share; [`close`](McpHub::close) ends them.
pub(crate) struct McpHub {
    servers: tokio::sync::Mutex<Vec<Server>>,
    limits: McpLimits,
    runner: Arc<dyn ToolRunner>,
    ctx: ToolContext,
    report: McpReport,
}

fn stderr_of(s: &Option<Arc<Mutex<String>>>) -> String {
    s.as_ref()
        .and_then(|s| s.lock().ok().map(|t| t.trim().to_string()))
        .filter(|t| !t.is_empty())
        .map(|t| {
            let start = t
                .char_indices()
                .rev()
                .nth(1999)
                .map(|(i, _)| i)
                .unwrap_or(0);
            format!("; its stderr ends with: {}", &t[start..])
        })
        .unwrap_or_default()
}

fn tool_error(output: String) -> ToolOutcome {
    ToolOutcome {
        output,
        is_error: true,
    }
}

impl McpHub {
    /// The servers of `servers` for the agent of `ctx`; nothing starts yet.
    pub(crate) fn new(
        servers: &McpServers,
        limits: McpLimits,
        runner: Arc<dyn ToolRunner>,
        ctx: ToolContext,
        report: McpReport,
    ) -> Self {
        McpHub {
            servers: tokio::sync::Mutex::new(
                servers
                    .0
                    .iter()
                    .map(|(name, config)| Server {
                        name: name.clone(),
                        config: config.clone(),
                        state: State::Idle,
                    })
                    .collect(),
            ),
            limits,
            runner,
            ctx,
            report,
        }
    }

    /// The tools of every server that is up, starting those that may start.
    pub(crate) async fn specs(&self) -> Vec<ToolSpec> {
        let mut servers = self.servers.lock().await;
        let mut out = Vec::new();
        for server in servers.iter_mut() {
            self.ensure(server).await;
            if let State::Up(c) = &server.state {
                out.extend(c.tools.iter().cloned());
            }
        }
        out
    }

    /// Starts `server` unless it is up or waiting out its backoff.
    async fn ensure(&self, server: &mut Server) {
        if let State::Up(c) = &server.state {
            if !c.service.is_closed() {
                return;
            }
            let why = format!("it ended{}", stderr_of(&c.stderr));
            self.fail(server, why).await;
        }
        let failures = match &server.state {
            State::Down {
                failures, retry_at, ..
            } if Instant::now() < *retry_at => return,
            State::Down { failures, .. } => *failures,
            _ => 0,
        };
        match self.start(&server.name, &server.config).await {
            Ok(conn) => server.state = State::Up(conn),
            Err(e) => {
                server.state = State::Down {
                    failures,
                    retry_at: Instant::now(),
                    error: String::new(),
                };
                self.fail(server, e).await;
            }
        }
    }

    /// Marks `server` down (killing what is left of it) and reports why.
    async fn fail(&self, server: &mut Server, why: String) {
        let failures = match &server.state {
            State::Down { failures, .. } => failures + 1,
            _ => 1,
        };
        let old = std::mem::replace(&mut server.state, State::Idle);
        if let State::Up(c) = old {
            close_conn(c).await;
        }
        let backoff = self
            .limits
            .restart_backoff
            .saturating_mul(1u32 << (failures - 1).min(16))
            .min(self.limits.max_restart_backoff);
        let message = format!(
            "MCP server '{}' failed: {why}; it is started again when needed, in {} ms at the earliest",
            server.name,
            backoff.as_millis()
        );
        tracing::warn!(
            container = %self.ctx.container_id,
            session = %self.ctx.session_id,
            server = %server.name,
            failures,
            "{message}"
        );
        (self.report)(&server.name, &message);
        server.state = State::Down {
            failures,
            retry_at: Instant::now() + backoff,
            error: why,
        };
    }

    /// Connects to a server and lists its tools, within the start timeout.
    async fn start(&self, name: &str, config: &McpServer) -> Result<Conn, String> {
        let mut process = None;
        let mut stderr = None;
        let connecting = async {
            let service = match config {
                McpServer::Stdio(s) => {
                    let command = StdioCommand {
                        command: s.command.clone(),
                        args: s.args.clone(),
                        env: s.env.clone(),
                    };
                    let p = self
                        .runner
                        .spawn_stdio(&self.ctx, &command)
                        .await
                        .map_err(|e| e.chain())?;
                    tracing::debug!(server = name, place = %p.place, "MCP server started");
                    stderr = Some(p.stderr.clone());
                    let (stdout, stdin) = (p.stdout, p.stdin);
                    process = Some(p.guard);
                    ().serve((stdout, stdin))
                        .await
                        .map_err(|e| format!("initialize failed: {e}"))?
                }
                McpServer::Http(h) => {
                    let client = http::McpHttpClient::new(&h.headers).map_err(|e| e.chain())?;
                    let transport = StreamableHttpClientTransport::with_client(
                        client,
                        StreamableHttpClientTransportConfig::with_uri(h.url.as_str()),
                    );
                    ().serve(transport)
                        .await
                        .map_err(|e| format!("initialize at {} failed: {e}", h.url))?
                }
                McpServer::Unsupported(u) => {
                    return Err(format!("not started: {}", u.problem));
                }
            };
            let tools = service
                .peer()
                .list_all_tools()
                .await
                .map_err(|e| format!("tools/list failed: {e}"))?;
            Ok::<_, String>((service, tools))
        };
        let outcome = tokio::time::timeout(self.limits.start_timeout, connecting).await;
        let (service, tools) = match outcome {
            Ok(Ok(x)) => x,
            Ok(Err(e)) => {
                let e = format!("{e}{}", stderr_of(&stderr));
                if let Some(p) = process {
                    p.kill().await;
                }
                return Err(e);
            }
            Err(_) => {
                let e = format!(
                    "no answer to initialize and tools/list within {} ms{}",
                    self.limits.start_timeout.as_millis(),
                    stderr_of(&stderr)
                );
                if let Some(p) = process {
                    p.kill().await;
                }
                return Err(e);
            }
        };
        let tools = tools
            .into_iter()
            .map(|t| ToolSpec {
                name: format!("{MCP_TOOL_PREFIX}{name}__{}", t.name),
                description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                input_schema: serde_json::Value::Object((*t.input_schema).clone()),
            })
            .filter(|t| {
                // The providers take 1 to 128 letters, digits, `_` and `-`; one tool whose
                // name does not fit would fail every request, so it is left out.
                let fits = t.name.len() <= 128
                    && t.name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
                if !fits {
                    tracing::warn!(server = name, tool = %t.name, "MCP tool left out: its name is not 1 to 128 letters, digits, '_' or '-'");
                }
                fits
            })
            .collect();
        Ok(Conn {
            service,
            process,
            stderr,
            tools,
        })
    }

    /// Runs a call to `mcp__<server>__<tool>`. Errors are tool errors the model reads.
    pub(crate) async fn call(&self, call: &ToolCall) -> ToolOutcome {
        let Some((server_name, tool)) = call
            .name
            .strip_prefix(MCP_TOOL_PREFIX)
            .and_then(|rest| rest.split_once("__"))
        else {
            return tool_error(format!("'{}' is not an MCP tool name", call.name));
        };
        let arguments = match &call.input {
            serde_json::Value::Object(m) => Some(m.clone()),
            serde_json::Value::Null => None,
            _ => return tool_error(format!("the input of {} must be an object", call.name)),
        };
        let peer =
            {
                let mut servers = self.servers.lock().await;
                let Some(server) = servers.iter_mut().find(|s| s.name == server_name) else {
                    return tool_error(format!(
                        "tool '{}': this agent has no MCP server '{server_name}'",
                        call.name
                    ));
                };
                self.ensure(server).await;
                match &server.state {
                    State::Up(c) => c.service.peer().clone(),
                    State::Down {
                        error, retry_at, ..
                    } => {
                        return tool_error(format!(
                        "tool '{}' is not available: MCP server '{server_name}' failed ({error}); \
                         it is started again in {} ms at the earliest",
                        call.name,
                        retry_at.saturating_duration_since(Instant::now()).as_millis()
                    ))
                    }
                    State::Idle => {
                        return tool_error(format!("MCP server '{server_name}' is not running"))
                    }
                }
            };
        let mut params = CallToolRequestParams::new(tool.to_string());
        params.arguments = arguments;
        let result = tokio::time::timeout(self.limits.call_timeout, peer.call_tool(params)).await;
        let why = match result {
            Ok(Ok(r)) => {
                let mut texts = Vec::new();
                for block in &r.content {
                    match block.as_text() {
                        Some(t) => texts.push(t.text.clone()),
                        None => texts.push(serde_json::to_string(block).unwrap_or_default()),
                    }
                }
                if texts.is_empty() {
                    if let Some(s) = &r.structured_content {
                        texts.push(s.to_string());
                    }
                }
                return ToolOutcome {
                    output: texts.join("\n"),
                    is_error: r.is_error.unwrap_or(false),
                };
            }
            Ok(Err(rmcp::ServiceError::McpError(e))) => {
                // The server answered with a JSON-RPC error: it is alive.
                return tool_error(format!("MCP server '{server_name}': {}", e.message));
            }
            Ok(Err(e)) => format!("the call to {tool} failed: {e}"),
            Err(_) => format!(
                "{tool} did not answer within {} ms",
                self.limits.call_timeout.as_millis()
            ),
        };
        let mut servers = self.servers.lock().await;
        let mut detail = why.clone();
        if let Some(server) = servers.iter_mut().find(|s| s.name == server_name) {
            if let State::Up(c) = &server.state {
                detail = format!("{why}{}", stderr_of(&c.stderr));
            }
            self.fail(server, detail.clone()).await;
        }
        tool_error(format!("tool '{}' failed: {detail}", call.name))
    }

    /// Ends every connection: MCP sessions closed, processes and execs killed.
    pub(crate) async fn close(&self) {
        let mut servers = self.servers.lock().await;
        for server in servers.iter_mut() {
            if let State::Up(c) = std::mem::replace(&mut server.state, State::Idle) {
                close_conn(c).await;
            }
        }
    }
}

async fn close_conn(c: Conn) {
    let _ = tokio::time::timeout(Duration::from_secs(5), c.service.cancel()).await;
    if let Some(p) = c.process {
        p.kill().await;
    }
}
