//! The scheduler's HTTP interface for `agentvm-server` (feature `server`): REST under `/v1`
//! and the runtime protocol under `/internal/runtime/*`.
//!
//! | method and path | what |
//! |---|---|
//! | `GET/POST /v1/nodes`, `GET/DELETE /v1/nodes/{id}`, `POST /v1/nodes/{id}/status` | nodes |
//! | `GET/POST /v1/templates`, `GET/PUT/DELETE /v1/templates/{id}` | templates |
//! | `GET/POST /v1/sandboxes`, `GET/DELETE /v1/sandboxes/{id}`, `POST /v1/sandboxes/{id}/terminate` | sandboxes |
//! | `POST /v1/sandboxes/{id}/exec` | NDJSON stream: `{"stream":"stdout","data":…}` lines, then the execution (`exitCode`, `status`, …) |
//! | `GET /v1/sandboxes/{id}/executions`, `GET /v1/executions/{id}` | executions |
//! | `PUT/GET /v1/sandboxes/{id}/files?path=…`, `GET /v1/sandboxes/{id}/files/list?path=…` | files (raw bytes) |
//! | `GET /v1/metrics` | [`SchedulerMetrics`](agentvm::scheduler::SchedulerMetrics) |
//! | `POST /internal/runtime/nodes/register`, `/heartbeat`, `/containers/ready`, `/containers/exited` | node agents and executors |
//!
//! Node records and the `/internal` bodies use the seed's snake_case field names (camelCase is
//! accepted on input); templates, sandboxes and executions are camelCase like the rest of
//! agentvm's wire. Errors are `{"error": message, "kind": kind}` with the HTTP status of the kind; a busy
//! answer is 503 with `Retry-After`. The `/internal` routes require
//! `Authorization: Bearer <token>` when [`SchedulerConfig::internal_token`](agentvm::scheduler::SchedulerConfig) is set.

use crate::error::{Error, ErrorKind};
use agentvm::scheduler::{
    ContainerExited, ContainerReady, ExecRequest, Heartbeat, NodeRegistration, NodeStatus,
    SandboxRequest, Scheduler, TemplateSpec,
};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

/// An [`Error`] as an HTTP response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

/// The HTTP status of an error kind.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
        ErrorKind::Unavailable | ErrorKind::Cancelled => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::Protocol => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let kind = self.0.kind();
        let mut body = json!({"error": self.0.to_string(), "kind": kind.as_str()});
        let retry = self.0.retry_after();
        if let Some(r) = retry {
            body["retryAfterMs"] = json!(r.as_millis() as u64);
        }
        let mut response = (status_of(kind), Json(body)).into_response();
        if let Some(r) = retry {
            let secs = r.as_millis().div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError(Error::invalid(format!("invalid request body: {e}"))))
}

#[derive(Debug, Deserialize)]
struct PathQuery {
    /// The file or directory.
    path: Option<String>,
}

impl PathQuery {
    fn get(self, default: &str) -> String {
        self.path.unwrap_or_else(|| default.to_string())
    }
}

/// The router: mount it on `agentvm-server` (or serve it alone).
pub fn router(scheduler: Scheduler) -> Router {
    let max_body = scheduler.config().max_file_bytes + 64 * 1024;
    let internal = Router::new()
        .route("/internal/runtime/nodes/register", post(internal_register))
        .route("/internal/runtime/heartbeat", post(internal_heartbeat))
        .route("/internal/runtime/containers/ready", post(internal_ready))
        .route("/internal/runtime/containers/exited", post(internal_exited))
        .route_layer(middleware::from_fn_with_state(
            scheduler.clone(),
            require_token,
        ));
    Router::new()
        .route("/v1/nodes", get(list_nodes).post(register_node))
        .route("/v1/nodes/{id}", get(get_node).delete(remove_node))
        .route("/v1/nodes/{id}/status", post(set_node_status))
        .route("/v1/templates", get(list_templates).post(create_template))
        .route(
            "/v1/templates/{id}",
            get(get_template)
                .put(update_template)
                .delete(delete_template),
        )
        .route("/v1/sandboxes", get(list_sandboxes).post(create_sandbox))
        .route(
            "/v1/sandboxes/{id}",
            get(get_sandbox).delete(delete_sandbox),
        )
        .route("/v1/sandboxes/{id}/terminate", post(terminate_sandbox))
        .route("/v1/sandboxes/{id}/exec", post(exec))
        .route("/v1/sandboxes/{id}/executions", get(list_executions))
        .route("/v1/executions/{id}", get(get_execution))
        .route("/v1/sandboxes/{id}/files", get(read_file).put(write_file))
        .route("/v1/sandboxes/{id}/files/list", get(list_files))
        .route("/v1/metrics", get(metrics))
        .merge(internal)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(scheduler)
}

async fn require_token(State(s): State<Scheduler>, request: Request, next: Next) -> Response {
    if let Some(token) = &s.config().internal_token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_str()) {
            return ApiError(Error::Unauthorized(
                "the /internal/runtime endpoints need `Authorization: Bearer <token>` with the node token".into(),
            ))
            .into_response();
        }
    }
    next.run(request).await
}

// ----- nodes -----

async fn list_nodes(State(s): State<Scheduler>) -> impl IntoResponse {
    Json(s.list_nodes())
}

async fn register_node(State(s): State<Scheduler>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let reg: NodeRegistration = parse(&body)?;
    Ok((StatusCode::CREATED, Json(s.register_node(reg).await?)))
}

async fn get_node(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        s.get_node(&id)?
            .ok_or_else(|| Error::not_found("Node", id))?,
    ))
}

async fn remove_node(State(s): State<Scheduler>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    s.remove_node(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusBody {
    /// `online`, `draining` or `maintenance`.
    status: NodeStatus,
}

async fn set_node_status(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let b: StatusBody = parse(&body)?;
    Ok(Json(s.set_node_status(&id, b.status).await?))
}

// ----- templates -----

async fn list_templates(State(s): State<Scheduler>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.list_templates().await?))
}

async fn create_template(State(s): State<Scheduler>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let mut v: Value = parse(&body)?;
    let id = v
        .as_object_mut()
        .and_then(|o| o.remove("id"))
        .and_then(|id| id.as_str().map(str::to_string))
        .ok_or_else(|| Error::invalid("a template needs a string \"id\""))?;
    let spec: TemplateSpec =
        serde_json::from_value(v).map_err(|e| Error::invalid(format!("invalid template: {e}")))?;
    Ok((
        StatusCode::CREATED,
        Json(s.create_template(&id, spec).await?),
    ))
}

async fn get_template(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.template(&id).await?))
}

async fn update_template(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let spec: TemplateSpec = parse(&body)?;
    Ok(Json(s.update_template(&id, spec).await?))
}

async fn delete_template(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.delete_template(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- sandboxes -----

async fn list_sandboxes(State(s): State<Scheduler>) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.list_sandboxes().await?))
}

async fn create_sandbox(State(s): State<Scheduler>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let req: SandboxRequest = parse(&body)?;
    Ok((StatusCode::CREATED, Json(s.create_sandbox(req).await?)))
}

async fn get_sandbox(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        s.get_sandbox(&id)
            .await?
            .ok_or_else(|| Error::not_found("Sandbox", id))?,
    ))
}

async fn delete_sandbox(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.delete_sandbox(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn terminate_sandbox(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.terminate_sandbox(&id).await?))
}

async fn exec(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let req: ExecRequest = parse(&body)?;
    let stream = s.exec(&id, req).await?;
    let lines = stream.map(|event| {
        let mut line = serde_json::to_vec(&event).unwrap_or_else(|e| {
            format!("{{\"error\":\"encoding an exec event: {e}\",\"kind\":\"internal\"}}")
                .into_bytes()
        });
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(Bytes::from(line))
    });
    let mut response = Body::from_stream(lines).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

async fn list_executions(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.list_executions(&id).await?))
}

async fn get_execution(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(
        s.get_execution(&id)
            .await?
            .ok_or_else(|| Error::not_found("Execution", id))?,
    ))
}

async fn read_file(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<Response> {
    let path = q
        .path
        .ok_or_else(|| Error::invalid("give the file as ?path=…"))?;
    let data = s.read_file(&id, &path).await?;
    let mut response = Body::from(data).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response)
}

async fn write_file(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let path = q
        .path
        .ok_or_else(|| Error::invalid("give the file as ?path=…"))?;
    s.write_file(&id, &path, body.to_vec()).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_files(
    State(s): State<Scheduler>,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> ApiResult<impl IntoResponse> {
    Ok(Json(s.list_files(&id, &q.get(".")).await?))
}

async fn metrics(State(s): State<Scheduler>) -> impl IntoResponse {
    Json(s.metrics())
}

// ----- /internal/runtime -----

async fn internal_register(
    State(s): State<Scheduler>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let mut v: Value = parse(&body)?;
    // A node registering itself has an agent that heartbeats, unless it says otherwise.
    if let Some(o) = v.as_object_mut() {
        o.entry("liveness").or_insert(json!("heartbeat"));
    }
    let reg: NodeRegistration = serde_json::from_value(v)
        .map_err(|e| Error::invalid(format!("invalid registration: {e}")))?;
    Ok(Json(s.register_node(reg).await?))
}

async fn internal_heartbeat(
    State(s): State<Scheduler>,
    body: Bytes,
) -> ApiResult<impl IntoResponse> {
    let hb: Heartbeat = parse(&body)?;
    Ok(Json(s.heartbeat(hb).await?))
}

async fn internal_ready(State(s): State<Scheduler>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let r: ContainerReady = parse(&body)?;
    Ok(Json(s.container_ready(r).await?))
}

async fn internal_exited(State(s): State<Scheduler>, body: Bytes) -> ApiResult<impl IntoResponse> {
    let r: ContainerExited = parse(&body)?;
    Ok(Json(s.container_exited(r).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_statuses() {
        assert_eq!(status_of(ErrorKind::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(status_of(ErrorKind::InvalidInput), StatusCode::BAD_REQUEST);
        assert_eq!(
            status_of(ErrorKind::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(status_of(ErrorKind::Conflict), StatusCode::CONFLICT);
        assert_eq!(
            status_of(ErrorKind::Internal),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn busy_answers_carry_retry_after() {
        let r = ApiError(Error::Busy {
            message: "node n is busy; retry after 1500 ms".into(),
            retry_after: std::time::Duration::from_millis(1500),
        })
        .into_response();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.headers()[header::RETRY_AFTER], "2");
    }
}
