//! agentvm as an MCP server (Model Context Protocol): the tools of `mcp::tools` over streamable
//! HTTP at `/mcp` on the server's port, and over stdio for desktop clients
//! (`agentvm-server mcp --stdio`, [`serve_stdio`]).
//!
//! `/mcp` is authorised like `/ws` and `/v1`: the bearer token (header or `?token=`) is checked
//! before the MCP layer sees the request, and every tool call runs through the one dispatcher
//! as that token's caller, so a token scoped to some containers reaches only those.
//!
//! What a client can make the server hold is bounded: `/mcp` is stateless (no MCP session
//! outlives its request, so there is nothing to expire and no session count to grow; a
//! `GET`/`DELETE` on it is a 405), a request body is at most `max_frame_bytes`, the sockets
//! open at once are the server's `max_connections`, and the one tool that waits (`agent_ask`)
//! waits at most 600 s.

pub(crate) mod tools;

use crate::error::{Error, ErrorKind};
use crate::runtime::{Caller, Runtime};
use crate::ServerState;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, ErrorData,
    Implementation, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
    Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{RoleServer, ServerHandler, ServiceExt};
use serde_json::json;
use std::sync::Arc;

/// Where a tool call runs.
#[derive(Clone)]
enum Access {
    /// `/mcp`: the dispatcher of this server, as the caller the request's token resolved to
    /// (put into the request's extensions by [`authorize`]).
    Http(Arc<ServerState>),
    /// stdio: one runtime for the whole process (an embedded runtime, or a remote one that
    /// carries its own token).
    Fixed(Arc<dyn Runtime>),
}

/// The MCP server handler: lists the tools and runs them.
#[derive(Clone)]
struct AgentVmMcp {
    access: Access,
}

impl AgentVmMcp {
    /// The runtime a call of `tool` runs on: for `/mcp`, the dispatcher as the request's caller.
    fn runtime(
        &self,
        context: &RequestContext<RoleServer>,
        tool: &str,
    ) -> Result<Arc<dyn Runtime>, Error> {
        match &self.access {
            Access::Fixed(runtime) => Ok(runtime.clone()),
            Access::Http(state) => {
                let mut caller = context
                    .extensions
                    .get::<axum::http::request::Parts>()
                    .and_then(|parts| parts.extensions.get::<Caller>())
                    .cloned()
                    // `authorize` runs before every `/mcp` request: never reached.
                    .ok_or_else(|| Error::Unauthorized("no caller for this request".into()))?;
                if tool == "sandbox_exec" {
                    // Bounded by the exec's own timeout, like the REST API's exec route.
                    caller.deadline = None;
                }
                Ok(Arc::new(state.vm.for_caller(caller)))
            }
        }
    }
}

/// A failed call as a tool error: the text says the kind and the message, the structured
/// content carries them as `{"error", "kind"}` (the REST API's error body).
fn tool_error(e: &Error) -> CallToolResult {
    let kind = e.kind();
    let message = crate::http::quoted(&e.to_string(), crate::http::QUOTE_MAX);
    let mut result = CallToolResult::error(vec![ContentBlock::text(format!(
        "{}: {message}",
        kind.as_str()
    ))]);
    result.structured_content = Some(json!({ "error": message, "kind": kind.as_str() }));
    result
}

impl ServerHandler for AgentVmMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("agentvm", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "agentvm: containers hold images (configured agents) with sessions; sandboxes \
                 run commands in Docker. agent_ask sends a message and waits for the reply.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(tools::list()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools::find(name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let runtime = match self.runtime(&context, &request.name) {
            Ok(r) => r,
            Err(e) => return Ok(tool_error(&e).into()),
        };
        let arguments = request.arguments.unwrap_or_default();
        match tools::call(&*runtime, &request.name, arguments).await {
            None => Err(ErrorData::invalid_params(
                format!("no tool named {}", crate::http::quoted(&request.name, 128)),
                Some(json!({ "kind": ErrorKind::NotFound.as_str() })),
            )),
            Some(Ok(answer)) => {
                let mut result = CallToolResult::success(vec![ContentBlock::text(answer.text)]);
                // Structured content is an object: a list answer is wrapped.
                result.structured_content = Some(match answer.data {
                    serde_json::Value::Object(m) => serde_json::Value::Object(m),
                    other => json!({ "result": other }),
                });
                Ok(result.into())
            }
            Some(Err(e)) => Ok(tool_error(&e).into()),
        }
    }
}

/// The `/mcp` route: token check, then rmcp's streamable HTTP service (stateless, JSON
/// responses).
pub(crate) fn router(state: Arc<ServerState>) -> axum::Router {
    let config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(state.config.max_frame_bytes)
        // The server decides who may connect by token, like /ws and /v1; the host check
        // (rebinding protection for unauthenticated local servers) would refuse every name
        // the server is deployed under.
        .disable_allowed_hosts()
        .with_cancellation_token(shutdown_token(&state));
    let handler = AgentVmMcp {
        access: Access::Http(state.clone()),
    };
    let service = StreamableHttpService::new(
        move || Ok(handler.clone()),
        Arc::new(NeverSessionManager::default()),
        config,
    );
    axum::Router::new()
        .route_service("/mcp", service)
        .layer(axum::middleware::from_fn_with_state(state, authorize))
}

/// Cancelled when the server shuts down, so waiting calls end with it.
fn shutdown_token(state: &Arc<ServerState>) -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let mut shutdown = state.shutdown.clone();
    let cancel = token.clone();
    tokio::spawn(async move {
        while !*shutdown.borrow() {
            if shutdown.changed().await.is_err() {
                break;
            }
        }
        cancel.cancel();
    });
    token
}

/// Resolves the request's token to its caller (as a REST request's), or answers 401.
async fn authorize(
    axum::extract::State(state): axum::extract::State<Arc<ServerState>>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let query = crate::http::TokenQuery {
        token: request.uri().query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token=").map(str::to_string))
        }),
    };
    let token = crate::http::presented_token(request.headers(), &query);
    // The REST caller: its scope, its hooks, and the request timeout for each command.
    let caller = match state.rest_caller(token.as_deref()) {
        Ok(c) => c,
        Err(e) => return crate::http::error_response(&e),
    };
    // Without a token (authentication off: a loopback server) anything on the machine may
    // call, but not a web page: a browser names the page's origin, and a page served from
    // elsewhere (a DNS-rebinding attack on a local server) is refused. MCP clients send none.
    if caller.token_id.is_none() {
        let origin = request
            .headers()
            .get(axum::http::header::ORIGIN)
            .map(|v| v.to_str().unwrap_or("?").to_string());
        if let Some(origin) = origin.filter(|o| !is_loopback_origin(o)) {
            return crate::http::error_response(&Error::Unauthorized(format!(
                "/mcp without a token serves local clients only, not a page from {}",
                crate::http::quoted(&origin, 128)
            )));
        }
    }
    request.extensions_mut().insert(caller);
    let json = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let mut response = next.run(request).await;
    // rmcp answers a JSON body it cannot parse with 415; the media type was right, the body
    // was not: a 400 like every other malformed body of this server.
    if json && response.status() == axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE {
        *response.status_mut() = axum::http::StatusCode::BAD_REQUEST;
    }
    response
}

/// Whether a browser `Origin` is a page of this machine (`http://localhost:3000`,
/// `http://127.0.0.1`, `http://[::1]:8080`).
fn is_loopback_origin(origin: &str) -> bool {
    let Some(rest) = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
    else {
        return false;
    };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => rest.split(':').next().unwrap_or(""),
    };
    matches!(host, "localhost" | "127.0.0.1" | "::1")
}

/// Serves MCP over stdin/stdout on `runtime` until the client closes stdin.
pub async fn serve_stdio(runtime: Arc<dyn Runtime>) -> crate::error::Result<()> {
    let handler = AgentVmMcp {
        access: Access::Fixed(runtime),
    };
    let running = handler
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| Error::Protocol(format!("the MCP handshake on stdio: {e}")))?;
    running
        .waiting()
        .await
        .map_err(|e| Error::Internal(format!("the MCP service: {e}")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_loopback_origin;

    #[test]
    fn only_pages_of_this_machine_are_loopback_origins() {
        for ok in [
            "http://localhost:3000",
            "http://127.0.0.1",
            "https://[::1]:8080",
        ] {
            assert!(is_loopback_origin(ok), "{ok}");
        }
        for refused in [
            "http://evil.example",
            "http://localhost.evil.example",
            "http://127.0.0.1.nip.io",
            "null",
            "file://",
            "http://[::2]",
        ] {
            assert!(!is_loopback_origin(refused), "{refused}");
        }
    }
}
