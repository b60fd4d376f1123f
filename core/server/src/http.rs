//! The routes of the one port: `/health`, `/livez`, `/readyz`, `/ws`, `/metrics`, `/v1/*`,
//! `/mcp`, and the console's.

use super::{rest, ServerState};
use crate::channel::codec;
use crate::connection::{serve, Admission};
use crate::error::{Error, ErrorKind};
use crate::runtime::Scope;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;

/// `?token=` on the upgrade URL (and REST calls).
#[derive(Debug, Clone, Deserialize, Default)]
pub(crate) struct TokenQuery {
    pub token: Option<String>,
}

pub(crate) fn router(state: Arc<ServerState>, extra: Option<Router>) -> Router {
    let limit = state.config.max_frame_bytes;
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .route("/ws", get(ws))
        .route("/metrics", get(metrics))
        .merge(rest::router())
        .merge(crate::port_proxy::router())
        .merge(crate::console::router())
        // One limit for a request body and a WebSocket message (see `ServerConfig`).
        .layer(axum::extract::DefaultBodyLimit::max(
            state.config.max_frame_bytes,
        ))
        .with_state(state.clone())
        // MCP (streamable HTTP): its own body limit, the same number (see `mcp`).
        .merge(crate::mcp::router(state));
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    app.fallback(not_found)
        .layer(axum::middleware::map_response(move |r: Response| {
            json_errors(r, limit)
        }))
}

/// An unknown path: a JSON 404 like every other error.
async fn not_found(uri: axum::http::Uri) -> Response {
    error_response(&Error::Remote {
        kind: ErrorKind::NotFound,
        message: format!("no route for {}", quoted(uri.path(), 128)),
    })
}

/// The most characters of client input an error message quotes (REST and WebSocket alike).
pub(crate) const QUOTE_MAX: usize = 1024;

/// `input` cut to `max` characters (with its length when cut), for an error message.
pub(crate) fn quoted(input: &str, max: usize) -> String {
    match input.char_indices().nth(max) {
        None => input.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &input[..end], input.len()),
    }
}

/// Every error reply is JSON: the routes' own are already; a rejection of the framework (a
/// path, query or body it could not extract, a method not allowed, a body too large) is
/// rewritten as `{"error", "kind"}` with its status and headers kept and its text cut short.
/// A body over the limit (`max_frame_bytes`, the same as a WebSocket message's) says so.
async fn json_errors(response: Response, body_limit: usize) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    // A sandbox's own answer through the port proxy is passed on as it is.
    if response
        .extensions()
        .get::<crate::port_proxy::Proxied>()
        .is_some()
    {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        format!("request body larger than {body_limit} bytes (max_frame_bytes, the WebSocket message limit too)")
    } else if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        quoted(&text, 256)
    };
    let kind = match status {
        StatusCode::NOT_FOUND => ErrorKind::NotFound,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ErrorKind::Unauthorized,
        StatusCode::CONFLICT => ErrorKind::Conflict,
        StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => ErrorKind::Unavailable,
        StatusCode::INSUFFICIENT_STORAGE => ErrorKind::StorageFull,
        s if s.is_client_error() => ErrorKind::InvalidInput,
        _ => ErrorKind::Internal,
    };
    let body = json!({ "error": message, "kind": kind.as_str() }).to_string();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The one error → HTTP status table, for every route of the server.
pub(crate) fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        // The work was cancelled (an interrupt, a shutdown) or a dependency is down: retry.
        ErrorKind::Unavailable | ErrorKind::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        // A peer (the LLM provider, a Docker daemon, a remote runtime) broke its protocol.
        ErrorKind::Protocol => StatusCode::BAD_GATEWAY,
        // The disk is full: the server is fine, the write can be retried once space is freed.
        ErrorKind::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An [`Error`] as an HTTP response: `{"error": message, "kind": kind}` with the status of
/// its kind, and `Retry-After` (plus `retryAfterMs`) when the error says when to retry.
#[derive(Debug)]
pub(crate) struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.0.kind();
        // Messages may quote client input: never more than 1 KiB of it.
        let mut body =
            json!({ "error": quoted(&self.0.to_string(), QUOTE_MAX), "kind": kind.as_str() });
        let retry = self.0.retry_after();
        if let Some(r) = retry {
            body["retryAfterMs"] = json!(r.as_millis() as u64);
        }
        let mut response = (status_of(kind), Json(body)).into_response();
        if let Some(r) = retry {
            let secs = r.as_millis().div_ceil(1000).max(1);
            if let Ok(v) = header::HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

/// A JSON error response (see [`ApiError`]).
pub(crate) fn error_response(e: &Error) -> Response {
    let message = e.to_string();
    let kind = e.kind();
    let copy = match e.retry_after() {
        Some(retry_after) => Error::Busy {
            message,
            retry_after,
        },
        None => Error::Remote { kind, message },
    };
    ApiError(copy).into_response()
}

/// The bearer token of a request: `Authorization` header, else `?token=`.
pub(crate) fn presented_token(headers: &HeaderMap, query: &TokenQuery) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(codec::bearer)
        .map(str::to_string)
        .or_else(|| query.token.clone())
}

async fn health() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

/// Liveness: the process serves requests. Always 200 while it does.
async fn livez() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: 200 while the store can write and the server is not draining, else 503 with
/// why (`{"ready": false, "reason": "draining" | "storage_full" | ...}`). Cheap: while no write
/// failed the store answers from memory; during a failure it tries one small write, so
/// readiness comes back by itself once space is freed.
async fn readyz(State(state): State<Arc<ServerState>>) -> Response {
    let not_ready = |reason: &str, message: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "ready": false, "reason": reason, "error": message })),
        )
            .into_response()
    };
    if state.draining.load(std::sync::atomic::Ordering::Acquire) {
        return not_ready("draining", "the server is shutting down".into());
    }
    let store = state.vm.store().clone();
    match tokio::task::spawn_blocking(move || store.check_writable()).await {
        Ok(Ok(())) => Json(json!({ "ready": true })).into_response(),
        Ok(Err(e)) => not_ready(e.kind().as_str(), e.chain()),
        Err(e) => not_ready("internal", format!("checking the store: {e}")),
    }
}

async fn metrics(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Response {
    // Server-wide counters: with auth on, only a token for all containers may read them.
    match state.authorize(presented_token(&headers, &q).as_deref()) {
        Err(e) => return error_response(&e),
        Ok((scope, _))
            if state
                .require_auth
                .load(std::sync::atomic::Ordering::Relaxed)
                && scope != Scope::All =>
        {
            return error_response(&Error::Unauthorized(
                "/metrics is server-wide: it needs a token for all containers".into(),
            ));
        }
        Ok(_) => {}
    }
    let mut extra = String::new();
    for render in state
        .extra_metrics
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        extra.push_str(&render());
    }
    let scheduler = state.vm.scheduler().map(|s| (s.metrics(), s.latency()));
    let sandbox_usage = match state.vm.scheduler() {
        Some(s) => s.usage_by_node().await,
        None => Vec::new(),
    };
    let body = state.metrics.render(
        &crate::metrics::Sources {
            requests: state.vm.request_metrics(),
            llm: state.vm.llm_latency(),
            agents_running: state.vm.container_manager().len(),
            scheduler: scheduler.as_ref().map(|(m, l)| (m, l)),
            sandbox_usage: &sandbox_usage,
        },
        &extra,
    );
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

async fn ws(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
    pacing: Option<axum::Extension<Arc<crate::paced_reads::ReadPacing>>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if *state.shutdown.borrow() {
        return error_response(&Error::unavailable("the server is shutting down"));
    }
    // The connection limit is applied at accept, to every socket (see `listener`): an
    // upgrade happens on a socket already counted.
    let admission = match presented_token(&headers, &q) {
        Some(token) => match state.authorize(Some(&token)) {
            Ok((scope, token_id)) => Admission::Granted {
                scope,
                // A foreign token ignored with auth off is not tracked for revocation.
                token_hash: token_id.as_ref().map(|_| crate::auth::hash_token(&token)),
                token_id,
            },
            Err(e) => return error_response(&e),
        },
        None if state
            .require_auth
            .load(std::sync::atomic::Ordering::Relaxed) =>
        {
            Admission::AwaitAuthFrame
        }
        None => Admission::Granted {
            scope: crate::runtime::Scope::All,
            token_id: None,
            token_hash: None,
        },
    };
    let max = state.config.max_frame_bytes;
    let addr = Some(addr);
    let forwarding = headers.contains_key(agentvm::FORWARDING_HEADER);
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(32 * 1024)
        .on_upgrade(move |socket| {
            let pacing = pacing.map(|axum::Extension(p)| p);
            serve(socket, state, admission, addr, forwarding, pacing)
        })
}
