//! The management REST API under `/v1`: the table in [`routes`] run by one handler.
//!
//! A request becomes a command — the path parameter, the allowed query fields and the body
//! merged into its data, parsed strictly (an unknown field is a 400 naming it) — and runs
//! through the one dispatcher as the token's caller. Responses are the command's response
//! `data` (internal `__` fields removed) or the part of it the route names; errors are
//! `{"error", "kind"}` with the status of the kind ([`ApiError`]).

pub(crate) mod routes;

use crate::error::Error;
use crate::http::{presented_token, ApiError, TokenQuery};
use crate::model::{Command, CommandKind};
use crate::ServerState;
use axum::body::{Body as HttpBody, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::{Json, Router};
use routes::{Access, Body, Output, Param, Route, ROUTES};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;

type St = State<Arc<ServerState>>;

/// The router of every route in the table, plus `/v1/commands` and `/v1/openapi.json`.
pub(crate) fn router() -> Router<Arc<ServerState>> {
    let mut router = Router::new()
        .route("/v1/openapi.json", axum::routing::get(openapi))
        .route("/v1/commands", axum::routing::post(command));
    for route in ROUTES {
        let filter = match route.method {
            "get" => MethodFilter::GET,
            "post" => MethodFilter::POST,
            "put" => MethodFilter::PUT,
            "patch" => MethodFilter::PATCH,
            _ => MethodFilter::DELETE,
        };
        if let Output::Terminal = route.output {
            router = router.route(route.path, crate::terminal::route(route));
            continue;
        }
        router = router.route(
            route.path,
            on(
                filter,
                move |state: St,
                      headers: HeaderMap,
                      path: Option<Path<String>>,
                      Query(query): Query<HashMap<String, String>>,
                      body: Bytes| async move {
                    serve(route, state, headers, path.map(|p| p.0), query, body).await
                },
            ),
        );
    }
    router
}

async fn openapi() -> Json<Value> {
    Json(crate::openapi::document())
}

/// `POST /v1/commands`: any command as `{type, data}`.
async fn command(State(s): St, h: HeaderMap, Query(q): Query<TokenQuery>, b: Bytes) -> Response {
    // Who is asking comes before what is asked: a stranger's malformed body is a 401.
    let token = presented_token(&h, &q);
    let caller = match s.rest_caller(token.as_deref()) {
        Ok(c) => c,
        Err(e) => return ApiError(e).into_response(),
    };
    let envelope: Value = match json_body(&b) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let type_name = envelope.get("type").and_then(Value::as_str).unwrap_or("");
    let data = envelope.get("data").cloned().unwrap_or(Value::Null);
    let command = match Command::from_wire(type_name, data) {
        Ok(c) => c,
        Err(e) => return ApiError(e).into_response(),
    };
    match run(&s, caller, command).await {
        Ok(data) => Json(strip_internal(data)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// Runs one route of the table.
async fn serve(
    route: &'static Route,
    State(state): St,
    headers: HeaderMap,
    param: Option<String>,
    query: HashMap<String, String>,
    body: Bytes,
) -> Response {
    match serve_inner(route, &state, &headers, param, &query, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The caller and the command of a request to `route`: the token checked first (a stranger's
/// malformed body is a 401), then the command parsed strictly.
pub(crate) fn prepare(
    route: &'static Route,
    state: &Arc<ServerState>,
    headers: &HeaderMap,
    param: Option<String>,
    query: &HashMap<String, String>,
    body: Bytes,
) -> Result<(crate::runtime::Caller, Command), ApiError> {
    let token = presented_token(
        headers,
        &TokenQuery {
            token: query.get("token").cloned(),
        },
    );
    let caller = match route.access {
        Access::Token => state.rest_caller(token.as_deref())?,
        Access::Node => state.node_caller(token.as_deref())?,
    };
    let data = command_data(route, param.as_deref(), query, body)?;
    let type_name = route.command.type_for(&data);
    let kind = CommandKind::from_type_name(type_name)
        .ok_or_else(|| Error::Internal(format!("route {} runs no command", route.path)))?;
    let command = kind.parse_strict(Value::Object(data)).map_err(|e| {
        state.vm.request_metrics().record_invalid(kind);
        ApiError(e)
    })?;
    Ok((caller, command))
}

async fn serve_inner(
    route: &'static Route,
    state: &Arc<ServerState>,
    headers: &HeaderMap,
    param: Option<String>,
    query: &HashMap<String, String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (mut caller, command) = prepare(route, state, headers, param.clone(), query, body)?;
    if let Output::ExecStream = route.output {
        // Bounded by the exec's own timeout, like on the Channel.
        caller.deadline = None;
        return crate::exec_stream::respond(state, caller, command).await;
    }
    let data = run(state, caller, command).await?;
    let status = StatusCode::from_u16(route.status).unwrap_or(StatusCode::OK);
    Ok(match route.output {
        Output::Data => (status, Json(strip_internal(data))).into_response(),
        Output::Found { field, what } => {
            if data.get(field).is_none_or(Value::is_null) {
                return Err(ApiError(Error::not_found(what, param.unwrap_or_default())));
            }
            (status, Json(strip_internal(data))).into_response()
        }
        Output::Field(field) => {
            let mut data = data;
            let v = data.get_mut(field).map(Value::take).unwrap_or(Value::Null);
            (status, Json(v)).into_response()
        }
        Output::Record { field, what } => {
            let mut data = data;
            match data.get_mut(field).map(Value::take) {
                Some(v) if !v.is_null() => (status, Json(v)).into_response(),
                _ => return Err(ApiError(Error::not_found(what, param.unwrap_or_default()))),
            }
        }
        Output::Empty => StatusCode::NO_CONTENT.into_response(),
        Output::Bytes(field) => {
            let bytes = file_bytes(&data, field)?;
            let mut r = (status, HttpBody::from(bytes)).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r
        }
        Output::ExecStream | Output::Terminal => StatusCode::NO_CONTENT.into_response(),
    })
}

/// The command's data: the defaults, the body, the allowed query fields and the path parameter.
fn command_data(
    route: &Route,
    param: Option<&str>,
    query: &HashMap<String, String>,
    body: Bytes,
) -> Result<Map<String, Value>, ApiError> {
    let mut data = match route.body {
        Body::None => {
            if !body.is_empty() && json_body(&body)? != Value::Object(Map::new()) {
                return Err(ApiError(Error::invalid(format!(
                    "{} {} takes no request body",
                    route.method.to_uppercase(),
                    route.path
                ))));
            }
            Map::new()
        }
        Body::Fields => match json_body(&body)? {
            Value::Object(m) => m,
            _ => {
                return Err(ApiError(Error::invalid(
                    "the request body must be a JSON object",
                )))
            }
        },
        Body::Into(field) => {
            let mut m = Map::new();
            m.insert(field.to_string(), json_body(&body)?);
            m
        }
        Body::Bytes(field) => {
            let mut m = Map::new();
            m.insert(field.to_string(), Value::String(base64_encode(&body)));
            m.insert("encoding".into(), Value::String("base64".into()));
            m
        }
    };
    for (name, kind) in route.query {
        if let Some(v) = query.get(*name) {
            let value = match kind {
                Param::Text => Value::String(v.clone()),
                Param::Number => match v.parse::<u64>() {
                    Ok(n) => Value::from(n),
                    Err(_) => {
                        return Err(ApiError(Error::invalid(format!(
                            "?{name}= takes a non-negative integer, not {}",
                            crate::http::quoted(v, 64)
                        ))))
                    }
                },
                Param::Flag => match v.as_str() {
                    "true" | "1" => Value::Bool(true),
                    "false" | "0" => Value::Bool(false),
                    other => {
                        return Err(ApiError(Error::invalid(format!(
                            "?{name}= takes true or false, not {other:?}"
                        ))))
                    }
                },
            };
            set(&mut data, name, value)?;
        }
    }
    if let (Some(field), Some(value)) = (route.param, param) {
        set(&mut data, field, Value::String(value.to_string()))?;
    }
    for (field, literal) in route.defaults {
        if !data.contains_key(*field) {
            let v = serde_json::from_str(literal)
                .map_err(|e| Error::Internal(format!("default of {field}: {e}")))?;
            data.insert(field.to_string(), v);
        }
    }
    Ok(data)
}

/// Sets a field the URL fills, refusing a body that says otherwise.
fn set(data: &mut Map<String, Value>, field: &str, value: Value) -> Result<(), ApiError> {
    match data.get(field) {
        Some(existing) if *existing != value => Err(ApiError(Error::invalid(format!(
            "`{field}` is given by the URL as {value}; the body says {existing}"
        )))),
        _ => {
            data.insert(field.to_string(), value);
            Ok(())
        }
    }
}

/// Runs a command through the dispatcher as `caller` (the presented token's).
async fn run(
    state: &Arc<ServerState>,
    caller: crate::runtime::Caller,
    command: Command,
) -> Result<Value, ApiError> {
    let response = state.vm.dispatch(command, &caller).await;
    state.after_dispatch(&response);
    let response = response?;
    let mut v = serde_json::to_value(&response)
        .map_err(|e| Error::Internal(format!("encoding a response: {e}")))?;
    Ok(v.get_mut("data").map(Value::take).unwrap_or(Value::Null))
}

/// A JSON body, `{}` when empty, with a clear 400 otherwise.
fn json_body(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError(Error::invalid(format!("invalid JSON body: {e}"))))
}

/// Internal fields (`__subscriptions`) are for Channel clients, never for REST.
fn strip_internal(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|k, _| !k.starts_with("__"));
    }
    v
}

/// The bytes of a file read response: `content` in its `encoding`.
fn file_bytes(data: &Value, field: &str) -> Result<Vec<u8>, ApiError> {
    let content = data.get(field).and_then(Value::as_str).unwrap_or("");
    match data.get("encoding").and_then(Value::as_str) {
        Some("base64") => base64_decode(content).map_err(ApiError),
        _ => Ok(content.as_bytes().to_vec()),
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn base64_decode(text: &str) -> Result<Vec<u8>, Error> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|e| Error::Internal(format!("a file response is not base64: {e}")))
}

#[cfg(test)]
mod fuzz;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(path: &str, method: &str) -> &'static Route {
        ROUTES
            .iter()
            .find(|r| r.path == path && r.method == method)
            .expect("the route exists")
    }

    #[test]
    fn path_query_and_body_fill_the_command() {
        let r = one("/v1/images/{id}/messages", "post");
        let data = command_data(
            r,
            Some("img_1"),
            &HashMap::new(),
            Bytes::from_static(br#"{"content":"hi"}"#),
        )
        .unwrap();
        assert_eq!(
            Value::Object(data),
            json!({"imageId": "img_1", "content": "hi"})
        );
    }

    #[test]
    fn a_body_contradicting_the_url_is_refused() {
        let r = one("/v1/images/{id}/messages", "post");
        let e = command_data(
            r,
            Some("img_1"),
            &HashMap::new(),
            Bytes::from_static(br#"{"content":"hi","imageId":"img_2"}"#),
        )
        .unwrap_err();
        assert!(e.0.to_string().contains("imageId"), "{}", e.0);
    }

    #[test]
    fn routes_without_a_body_refuse_one() {
        let r = one("/v1/images/{id}/run", "post");
        assert!(command_data(r, Some("i"), &HashMap::new(), Bytes::from_static(b"{}")).is_ok());
        assert!(command_data(
            r,
            Some("i"),
            &HashMap::new(),
            Bytes::from_static(b"{\"x\":1}")
        )
        .is_err());
    }

    #[test]
    fn internal_fields_never_reach_rest() {
        assert_eq!(
            strip_internal(json!({"record": 1, "__subscriptions": ["s"]})),
            json!({"record": 1})
        );
    }
}
