//! The routes of the one port: `/health`, `/ws`, `/metrics`, `/v1/*`.

use super::{rest, ServerState};
use crate::channel::codec;
use crate::connection::{serve, Admission};
use crate::error::{Error, ErrorKind};
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
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/ws", get(ws))
        .route("/metrics", get(metrics))
        .merge(rest::router())
        .with_state(state);
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    app
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
        let mut body = json!({ "error": self.0.to_string(), "kind": kind.as_str() });
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

async fn metrics(
    State(state): State<Arc<ServerState>>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Response {
    if let Err(e) = state.authorize(presented_token(&headers, &q).as_deref()) {
        return error_response(&e);
    }
    let mut extra: String = state
        .vm
        .scheduler()
        .map(|s| crate::metrics::scheduler_text(&s.metrics()))
        .unwrap_or_default();
    for render in state
        .extra_metrics
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        extra.push_str(&render());
    }
    let body = state.metrics.render(
        state.vm.request_metrics(),
        state.vm.container_manager().len(),
        &extra,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn ws(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
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
                token_id,
                token_hash: Some(crate::auth::hash_token(&token)),
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
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(8 * 1024)
        .write_buffer_size(32 * 1024)
        .on_upgrade(move |socket| serve(socket, state, admission, addr))
}
