//! The management REST API under `/v1`: the same commands as the Channel, for tooling.
//!
//! Every route builds a [`Command`] and runs it through the caller's scoped runtime, so REST,
//! WebSocket and in-process callers share one implementation. Responses are the command's
//! response `data`; errors are `{"error", "kind"}` with a status per kind.

// Handlers return early with a ready HTTP response as the error: that is axum's idiom.
#![allow(clippy::result_large_err)]

use super::http::{error_response, presented_token, TokenQuery};
use super::ServerState;
use crate::error::Error;
use crate::model::*;
use crate::runtime::Runtime;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

type St = State<Arc<ServerState>>;

pub(crate) fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/commands", post(command))
        .route(
            "/v1/containers",
            get(list_containers).post(create_container),
        )
        .route(
            "/v1/containers/{id}",
            get(get_container).delete(delete_container),
        )
        .route(
            "/v1/containers/{id}/images",
            get(list_images).post(create_image),
        )
        .route(
            "/v1/containers/{id}/agents",
            get(list_agents).delete(destroy_agents),
        )
        .route(
            "/v1/images/{id}",
            get(get_image).patch(update_image).delete(delete_image),
        )
        .route(
            "/v1/images/{id}/messages",
            get(image_messages).post(send_to_image),
        )
        .route(
            "/v1/images/{id}/sessions",
            get(list_sessions).post(create_session),
        )
        .route("/v1/images/{id}/run", post(run_image))
        .route("/v1/images/{id}/stop", post(stop_image))
        .route("/v1/images/{id}/interrupt", post(interrupt_image))
        .route(
            "/v1/sessions/{id}",
            get(get_session)
                .patch(update_session)
                .delete(delete_session),
        )
        .route(
            "/v1/sessions/{id}/messages",
            get(session_messages).post(send_to_session),
        )
        .route("/v1/agents/{id}", get(get_agent).delete(destroy_agent))
        .route(
            "/v1/definitions",
            get(list_definitions).post(register_definition),
        )
        .route("/v1/definitions/{name}", get(get_definition))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token))
}

/// Token management needs a caller allowed to see every container.
fn admin(state: &ServerState, headers: &HeaderMap, query: &TokenQuery) -> Result<(), Response> {
    match state.authorize(presented_token(headers, query).as_deref()) {
        Ok((crate::runtime::Scope::All, _)) => Ok(()),
        Ok(_) => Err(error_response(&Error::Unauthorized(
            "managing tokens needs a token for all containers".into(),
        ))),
        Err(e) => Err(error_response(&e)),
    }
}

async fn list_tokens(State(s): St, h: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    if let Err(r) = admin(&s, &h, &q) {
        return r;
    }
    match s.vm.store().list_tokens() {
        Ok(tokens) => {
            let tokens: Vec<Value> = tokens
                .into_iter()
                .map(|t| json!({ "id": t.id, "containers": t.containers, "createdAt": t.created_at, "revokedAt": t.revoked_at }))
                .collect();
            Json(json!({ "tokens": tokens })).into_response()
        }
        Err(e) => error_response(&e),
    }
}

async fn create_token(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    b: Bytes,
) -> Response {
    if let Err(r) = admin(&s, &h, &q) {
        return r;
    }
    #[derive(Deserialize)]
    struct Body {
        containers: Option<Vec<String>>,
    }
    let body: Body = match body(&b) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let store = s.vm.store().clone();
    let created =
        tokio::task::spawn_blocking(move || crate::auth::create_token(&*store, body.containers))
            .await;
    match created {
        Ok(Ok((token, record))) => (
            StatusCode::CREATED,
            Json(json!({ "id": record.id, "token": token, "containers": record.containers, "createdAt": record.created_at })),
        )
            .into_response(),
        Ok(Err(e)) => error_response(&e),
        Err(e) => error_response(&Error::Internal(e.to_string())),
    }
}

async fn revoke_token(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = admin(&s, &h, &q) {
        return r;
    }
    match s.vm.store().revoke_token(&id, now_ms()) {
        Ok(true) => Json(json!({ "id": id, "revoked": true })).into_response(),
        Ok(false) => error_response(&Error::not_found("Token", id)),
        Err(e) => error_response(&e),
    }
}

async fn openapi() -> Json<Value> {
    Json(super::openapi::document())
}

/// Runs `command` for the caller; the response's `data` as JSON.
async fn run(
    state: &ServerState,
    headers: &HeaderMap,
    query: &TokenQuery,
    command: Command,
) -> Response {
    let (scope, _) = match state.authorize(presented_token(headers, query).as_deref()) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let kind = command.type_name().trim_end_matches("_request").to_string();
    let started = std::time::Instant::now();
    let rt = state.vm.scoped(scope);
    let result = match tokio::time::timeout(state.config.request_timeout, rt.request(command)).await
    {
        Ok(r) => r,
        Err(_) => Err(Error::unavailable("the request timed out")),
    };
    match result {
        Ok(response) => {
            state.metrics.request(&kind, "ok", Some(started.elapsed()));
            let v = serde_json::to_value(&response).unwrap_or(Value::Null);
            Json(v.get("data").cloned().unwrap_or(Value::Null)).into_response()
        }
        Err(e) => {
            state
                .metrics
                .request(&kind, e.kind().as_str(), Some(started.elapsed()));
            error_response(&e)
        }
    }
}

/// Parses a JSON body with a clear 400 on failure.
fn body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, Response> {
    let bytes: &[u8] = if bytes.is_empty() { b"{}" } else { bytes };
    serde_json::from_slice(bytes)
        .map_err(|e| error_response(&Error::invalid(format!("invalid JSON body: {e}"))))
}

async fn command(State(s): St, h: HeaderMap, Query(q): Query<TokenQuery>, b: Bytes) -> Response {
    #[derive(Deserialize)]
    struct Envelope {
        r#type: String,
        #[serde(default)]
        data: Value,
    }
    let env: Envelope = match body(&b) {
        Ok(e) => e,
        Err(r) => return r,
    };
    match Command::from_wire(&env.r#type, env.data) {
        Ok(c) => run(&s, &h, &q, c).await,
        Err(e) => error_response(&e),
    }
}

async fn list_containers(State(s): St, h: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    run(&s, &h, &q, ContainerListRequest {}.into()).await
}

async fn create_container(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    b: Bytes,
) -> Response {
    match body::<ContainerCreateRequest>(&b) {
        Ok(r) => with_status(StatusCode::CREATED, run(&s, &h, &q, r.into()).await),
        Err(r) => r,
    }
}

async fn get_container(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(&s, &h, &q, ContainerGetRequest { container_id: id }.into()).await
}

async fn delete_container(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(
        &s,
        &h,
        &q,
        ContainerDeleteRequest { container_id: id }.into(),
    )
    .await
}

async fn list_images(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(
        &s,
        &h,
        &q,
        ImageListRequest {
            container_id: Some(id),
        }
        .into(),
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CreateImageBody {
    #[serde(default)]
    config: ImageConfig,
    #[serde(default)]
    definition_name: Option<String>,
}

async fn create_image(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
    b: Bytes,
) -> Response {
    let r: CreateImageBody = match body(&b) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let cmd: Command = match r.definition_name {
        Some(def) => ImageBuildRequest {
            container_id: id,
            definition_name: def,
            config: r.config,
        }
        .into(),
        None => ImageCreateRequest {
            container_id: id,
            config: r.config,
        }
        .into(),
    };
    with_status(StatusCode::CREATED, run(&s, &h, &q, cmd).await)
}

async fn list_agents(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(
        &s,
        &h,
        &q,
        AgentListRequest {
            container_id: Some(id),
        }
        .into(),
    )
    .await
}

async fn destroy_agents(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(
        &s,
        &h,
        &q,
        AgentDestroyAllRequest { container_id: id }.into(),
    )
    .await
}

async fn get_image(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    let r = run(
        &s,
        &h,
        &q,
        ImageGetRequest {
            image_id: id.clone(),
        }
        .into(),
    )
    .await;
    not_found_if_null(r, "record", &format!("Image not found: {id}")).await
}

async fn update_image(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
    b: Bytes,
) -> Response {
    match body::<ImageUpdates>(&b) {
        Ok(updates) => {
            run(
                &s,
                &h,
                &q,
                ImageUpdateRequest {
                    image_id: id,
                    updates,
                }
                .into(),
            )
            .await
        }
        Err(r) => r,
    }
}

async fn delete_image(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(&s, &h, &q, ImageDeleteRequest { image_id: id }.into()).await
}

async fn image_messages(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(&s, &h, &q, ImageMessagesRequest { image_id: id }.into()).await
}

#[derive(Deserialize)]
struct SendBody {
    content: Content,
}

async fn send_to_image(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
    b: Bytes,
) -> Response {
    match body::<SendBody>(&b) {
        Ok(r) => {
            let cmd = MessageSendRequest {
                image_id: Some(id),
                agent_id: None,
                session_id: None,
                content: r.content,
            };
            with_status(StatusCode::ACCEPTED, run(&s, &h, &q, cmd.into()).await)
        }
        Err(r) => r,
    }
}

async fn list_sessions(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(&s, &h, &q, SessionListRequest { image_id: id }.into()).await
}

#[derive(Deserialize, Default)]
struct TitleBody {
    #[serde(default)]
    title: Option<String>,
}

async fn create_session(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
    b: Bytes,
) -> Response {
    match body::<TitleBody>(&b) {
        Ok(r) => with_status(
            StatusCode::CREATED,
            run(
                &s,
                &h,
                &q,
                SessionCreateRequest {
                    image_id: id,
                    title: r.title,
                }
                .into(),
            )
            .await,
        ),
        Err(r) => r,
    }
}

async fn run_image(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(&s, &h, &q, ImageRunRequest { image_id: id }.into()).await
}

async fn stop_image(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(&s, &h, &q, ImageStopRequest { image_id: id }.into()).await
}

async fn interrupt_image(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(
        &s,
        &h,
        &q,
        AgentInterruptRequest {
            image_id: Some(id),
            ..Default::default()
        }
        .into(),
    )
    .await
}

async fn get_session(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    let r = run(
        &s,
        &h,
        &q,
        SessionGetRequest {
            session_id: id.clone(),
        }
        .into(),
    )
    .await;
    not_found_if_null(r, "session", &format!("Session not found: {id}")).await
}

async fn update_session(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
    b: Bytes,
) -> Response {
    match body::<TitleBody>(&b) {
        Ok(r) => {
            run(
                &s,
                &h,
                &q,
                SessionUpdateRequest {
                    session_id: id,
                    title: r.title,
                }
                .into(),
            )
            .await
        }
        Err(r) => r,
    }
}

async fn delete_session(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(&s, &h, &q, SessionDeleteRequest { session_id: id }.into()).await
}

async fn session_messages(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(&s, &h, &q, SessionMessagesRequest { session_id: id }.into()).await
}

async fn send_to_session(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
    b: Bytes,
) -> Response {
    match body::<SendBody>(&b) {
        Ok(r) => {
            let cmd = MessageSendRequest {
                image_id: None,
                agent_id: None,
                session_id: Some(id),
                content: r.content,
            };
            with_status(StatusCode::ACCEPTED, run(&s, &h, &q, cmd.into()).await)
        }
        Err(r) => r,
    }
}

async fn get_agent(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(&s, &h, &q, AgentGetRequest { agent_id: id }.into()).await
}

async fn destroy_agent(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(id): Path<String>,
) -> Response {
    run(&s, &h, &q, AgentDestroyRequest { agent_id: id }.into()).await
}

async fn list_definitions(State(s): St, h: HeaderMap, Query(q): Query<TokenQuery>) -> Response {
    run(&s, &h, &q, DefinitionListRequest {}.into()).await
}

async fn register_definition(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    b: Bytes,
) -> Response {
    match body::<Definition>(&b) {
        Ok(definition) => run(&s, &h, &q, DefinitionRegisterRequest { definition }.into()).await,
        Err(r) => r,
    }
}

async fn get_definition(
    State(s): St,
    h: HeaderMap,
    Query(q): Query<TokenQuery>,
    Path(name): Path<String>,
) -> Response {
    let r = run(
        &s,
        &h,
        &q,
        DefinitionGetRequest { name: name.clone() }.into(),
    )
    .await;
    not_found_if_null(r, "definition", &format!("Definition not found: {name}")).await
}

fn with_status(status: StatusCode, r: Response) -> Response {
    if r.status() == StatusCode::OK {
        (status, r).into_response()
    } else {
        r
    }
}

/// A `GET` of one thing answers 404 rather than `{"record": null}`.
async fn not_found_if_null(r: Response, field: &str, message: &str) -> Response {
    if r.status() != StatusCode::OK {
        return r;
    }
    let (parts, body) = r.into_parts();
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => return error_response(&Error::Internal(e.to_string())),
    };
    let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    if v.get(field).map(Value::is_null).unwrap_or(true) {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": message, "kind": "not_found" })),
        )
            .into_response();
    }
    Response::from_parts(parts, axum::body::Body::from(bytes))
}
