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
#[derive(Debug, Deserialize, Default)]
pub(crate) struct TokenQuery {
    pub token: Option<String>,
}

pub(crate) fn router(state: Arc<ServerState>, extra: Option<Router>) -> Router {
    let mut app = Router::new()
        .route("/health", get(health))
        .route("/ws", get(ws))
        .route("/metrics", get(metrics))
        .merge(rest::routes())
        .with_state(state);
    if let Some(extra) = extra {
        app = app.merge(extra);
    }
    app
}

/// HTTP status for an error kind.
pub(crate) fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Conflict | ErrorKind::Cancelled => {
            StatusCode::CONFLICT
        }
        ErrorKind::InvalidInput | ErrorKind::Protocol => StatusCode::BAD_REQUEST,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A JSON error response: `{"error": message, "kind": kind}`.
pub(crate) fn error_response(e: &Error) -> Response {
    (
        status_of(e.kind()),
        Json(json!({ "error": e.to_string(), "kind": e.kind().as_str() })),
    )
        .into_response()
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
    let extra: String = state
        .extra_metrics
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|f| f())
        .collect();
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
    if state.metrics.connections_open() as usize >= state.config.max_connections {
        return error_response(&Error::unavailable(format!(
            "too many connections (limit {}); retry later",
            state.config.max_connections
        )));
    }
    let admission = match presented_token(&headers, &q) {
        Some(token) => match state.authorize(Some(&token)) {
            Ok((scope, token_id)) => Admission::Granted { scope, token_id },
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
