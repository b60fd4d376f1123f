//! `/v1/sandboxes/{id}/ports/{port}/…`: a reverse proxy to a TCP port of a sandbox.
//!
//! The caller is authorised like any `/v1` request (its token, its scope), then a
//! `sandbox_port_request` runs through the dispatcher: it refuses a sandbox outside the scope
//! exactly like an unknown one, resumes a paused sandbox, counts as activity, and answers the
//! sandbox's address on its Docker network. The request goes there as it came — method, the
//! path after the port, the query, the headers except the hop-by-hop ones and the agentvm
//! token — with `X-Forwarded-*` added; bodies stream both ways (the request's is limited to
//! `max_frame_bytes`). An `Upgrade` request (a WebSocket) that the sandbox answers with
//! `101` is upgraded on both sides and bytes are copied both ways until either closes.
//! Bytes moving either way are activity of the sandbox (`sandbox_activity`): a long
//! download or an open WebSocket in use keeps it from being paused or ended as idle.
//! Nothing is published on the Docker host.
//!
//! Errors before the sandbox answers are JSON like every `/v1` error: 401 (no or bad token),
//! 404 (unknown sandbox, or outside the token's scope), 400 (a port outside 1..=65535), 409
//! (ended, no network, or a node whose networks are not reachable), 502 (nothing accepts
//! connections on the port, or the connection broke), 503 (no answer within the request
//! timeout). What the sandbox answers, errors included, is passed through untouched.

use crate::error::{Error, ErrorKind};
use crate::http::{presented_token, ApiError, TokenQuery};
use crate::model::{Command, Response as CommandResponse, SandboxPortRequest};
use crate::sandbox_activity::{ActiveIo, Activity};
use crate::ServerState;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;

/// The proxied paths: the port's root, and anything under it.
pub(crate) const PATHS: [&str; 2] = [
    "/v1/sandboxes/{id}/ports/{port}",
    "/v1/sandboxes/{id}/ports/{port}/{*path}",
];

/// The methods the OpenAPI document lists for them (every method is proxied).
pub(crate) const DOCUMENTED_METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

/// How long connecting to the sandbox's port may take. A closed port refuses at once; this
/// bounds a sandbox that drops packets.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Marks a response that came from a sandbox, so the server's JSON-error rewriting leaves the
/// sandbox's own error pages alone.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Proxied;

/// The routes, for every method.
pub(crate) fn router() -> Router<Arc<ServerState>> {
    let mut router = Router::new();
    for path in PATHS {
        router = router.route(path, any(proxy));
    }
    // `{*path}` does not match an empty rest: the root with a trailing slash is its own route.
    router.route("/v1/sandboxes/{id}/ports/{port}/", any(proxy))
}

async fn proxy(
    State(state): State<Arc<ServerState>>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    match forward(&state, remote, request).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

/// The parts of a proxied URL: the sandbox, the port as written, and the rest (`/…?…`).
#[derive(Debug, PartialEq, Eq)]
struct Target<'a> {
    sandbox_id: &'a str,
    port: &'a str,
    /// The path after the port, from its `/` (`/` when there is none).
    path: &'a str,
    /// The prefix the sandbox is mounted under, for `X-Forwarded-Prefix`.
    prefix: &'a str,
}

/// Splits the raw (still percent-encoded) path, so the sandbox sees exactly what was sent.
fn target(path: &str) -> Option<Target<'_>> {
    let rest = path.strip_prefix("/v1/sandboxes/")?;
    let (sandbox_id, rest) = rest.split_once('/')?;
    let rest = rest.strip_prefix("ports/")?;
    let (port, tail) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let prefix = &path[..path.len() - tail.len()];
    Some(Target {
        sandbox_id,
        port,
        path: if tail.is_empty() { "/" } else { tail },
        prefix,
    })
}

/// The query without the agentvm token, when that is where the token came from.
fn query_without_token(query: &str) -> String {
    query
        .split('&')
        .filter(|kv| !(kv.starts_with("token=") || *kv == "token"))
        .collect::<Vec<_>>()
        .join("&")
}

async fn forward(
    state: &Arc<ServerState>,
    remote: SocketAddr,
    mut request: Request,
) -> Result<Response, ApiError> {
    let uri = request.uri().clone();
    let query_token = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("token=").map(str::to_string))
    });
    let from_header = request.headers().contains_key(header::AUTHORIZATION);
    let token = presented_token(request.headers(), &TokenQuery { token: query_token });
    // Who is asking comes first: a stranger learns nothing about the sandbox.
    let caller = state.rest_caller(token.as_deref())?;
    let Some(t) = target(uri.path()) else {
        return Err(ApiError(Error::Internal(format!(
            "the port proxy was routed {}",
            uri.path()
        ))));
    };
    let port: u32 = t.port.parse().map_err(|_| {
        Error::invalid(format!(
            "port must be 1 to 65535, not {}",
            crate::http::quoted(t.port, 16)
        ))
    })?;
    // The dispatch is bounded by the caller's deadline (the request timeout); the proxied
    // exchange after it only by the timeouts below (a WebSocket or a download may last).
    let response = state
        .vm
        .dispatch(
            Command::SandboxPort(SandboxPortRequest {
                sandbox_id: t.sandbox_id.to_string(),
                port,
            }),
            &caller,
        )
        .await?;
    let CommandResponse::SandboxPort(found) = response else {
        return Err(ApiError(Error::Internal(format!(
            "sandbox_port_request answered {}",
            response.type_name()
        ))));
    };
    let address: SocketAddr = found
        .address
        .parse()
        .map_err(|e| Error::Internal(format!("sandbox address {:?}: {e}", found.address)))?;
    // The token is agentvm's (it was verified): the sandbox never sees it. A token agentvm
    // did not issue, ignored with auth off, belongs to the application and goes through.
    let strip_token = caller.token_id.is_some();
    let path_and_query = match uri.query() {
        Some(q) if strip_token && !from_header => {
            let q = query_without_token(q);
            if q.is_empty() {
                t.path.to_string()
            } else {
                format!("{}?{q}", t.path)
            }
        }
        Some(q) => format!("{}?{q}", t.path),
        None => t.path.to_string(),
    };
    let upstream_uri: Uri = path_and_query
        .parse()
        .map_err(|e| Error::invalid(format!("the proxied path is not a valid URI: {e}")))?;

    let upgrade = wants_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let limit = state.config.max_frame_bytes;
    let too_large = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > limit as u64);
    if too_large {
        // The server's error layer words it (the same limit as every request body).
        return Ok(StatusCode::PAYLOAD_TOO_LARGE.into_response());
    }
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers, upgrade);
    if strip_token && from_header {
        headers.remove(header::AUTHORIZATION);
    }
    forwarded_headers(&mut headers, remote, address, t.prefix);
    // Bytes moving either way keep the sandbox from being paused or ended as idle.
    let activity = Activity::new(state.vm.scheduler(), &found.sandbox_id);
    let upload = activity.clone();
    let mut upstream = hyper::Request::builder()
        .method(parts.method)
        .uri(upstream_uri)
        .version(axum::http::Version::HTTP_11)
        .body(
            http_body_util::Limited::new(body, limit).map_frame(move |frame| {
                upload.note();
                frame
            }),
        )
        .map_err(|e| Error::Internal(format!("building the proxied request: {e}")))?;
    *upstream.headers_mut() = headers;

    let unreachable = |what: String| {
        ApiError(Error::Remote {
            kind: ErrorKind::Protocol,
            message: format!(
                "port {} of sandbox {}: {what}",
                found.port, found.sandbox_id
            ),
        })
    };
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(unreachable(format!(
                "nothing accepts connections there ({address}: connection refused)"
            )))
        }
        Ok(Err(e)) => return Err(unreachable(format!("connecting to {address}: {e}"))),
        Err(_) => {
            return Err(ApiError(Error::unavailable(format!(
                "port {} of sandbox {}: connecting to {address} took longer than {} s",
                found.port,
                found.sandbox_id,
                CONNECT_TIMEOUT.as_secs()
            ))))
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| unreachable(format!("starting HTTP with {address}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(%address, error = %e, "proxied connection ended");
        }
    });
    let wait = state.config.request_timeout;
    let mut answer = match tokio::time::timeout(wait, sender.send_request(upstream)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) if body_over_limit(&e) => {
            return Ok(StatusCode::PAYLOAD_TOO_LARGE.into_response())
        }
        Ok(Err(e)) => return Err(unreachable(format!("{address} did not answer: {e}"))),
        Err(_) => {
            return Err(ApiError(Error::unavailable(format!(
                "port {} of sandbox {}: no answer within {} ms",
                found.port,
                found.sandbox_id,
                wait.as_millis()
            ))))
        }
    };
    if answer.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(unreachable(
                "it switched protocols without being asked to".into(),
            ));
        };
        let sandbox_upgrade = hyper::upgrade::on(&mut answer);
        tokio::spawn(async move {
            let (client, sandbox) = match tokio::join!(client_upgrade, sandbox_upgrade) {
                (Ok(c), Ok(s)) => (c, s),
                (c, s) => {
                    tracing::debug!(client = ?c.err(), sandbox = ?s.err(), "a proxied upgrade failed");
                    return;
                }
            };
            let (mut client, mut sandbox) = (
                ActiveIo::new(TokioIo::new(client), activity),
                TokioIo::new(sandbox),
            );
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut sandbox).await {
                tracing::debug!(%address, error = %e, "a proxied upgraded connection ended");
            }
        });
        let (mut parts, _) = answer.into_parts();
        parts.extensions.insert(Proxied);
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = answer.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    parts.extensions = Default::default();
    parts.extensions.insert(Proxied);
    let body = body.map_frame(move |frame| {
        activity.note();
        frame
    });
    Ok(Response::from_parts(parts, Body::new(body)))
}

/// Whether sending failed because the request body went over the limit.
fn body_over_limit(e: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Whether the request asks to switch protocols (`Connection: upgrade` with `Upgrade`).
fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes the headers that concern one connection only (RFC 9110 §7.6.1), and those the
/// `Connection` header names. An upgrade keeps `Connection: upgrade` and `Upgrade`.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named {
        if !(upgrade && name == header::UPGRADE) {
            headers.remove(name);
        }
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        if !(upgrade && (name == header::CONNECTION || name == header::UPGRADE)) {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// `X-Forwarded-For` (appended), `-Host`, `-Proto` and `-Prefix`, and `Host` set to the
/// sandbox's address.
fn forwarded_headers(headers: &mut HeaderMap, remote: SocketAddr, to: SocketAddr, prefix: &str) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let client = remote.ip().to_string();
    let chain = match headers.get(&xff).and_then(|v| v.to_str().ok()) {
        Some(before) => format!("{before}, {client}"),
        None => client,
    };
    if let Ok(v) = HeaderValue::from_str(&chain) {
        headers.insert(xff, v);
    }
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    let proto = HeaderName::from_static("x-forwarded-proto");
    if !headers.contains_key(&proto) {
        headers.insert(proto, HeaderValue::from_static("http"));
    }
    if let Ok(v) = HeaderValue::from_str(prefix) {
        headers.insert(HeaderName::from_static("x-forwarded-prefix"), v);
    }
    if let Ok(v) = HeaderValue::from_str(&to.to_string()) {
        headers.insert(header::HOST, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_after_the_port_is_forwarded_as_sent() {
        assert_eq!(
            target("/v1/sandboxes/sbx_1/ports/8080/a/b%20c/"),
            Some(Target {
                sandbox_id: "sbx_1",
                port: "8080",
                path: "/a/b%20c/",
                prefix: "/v1/sandboxes/sbx_1/ports/8080",
            })
        );
        let root = target("/v1/sandboxes/sbx_1/ports/80").unwrap();
        assert_eq!((root.port, root.path), ("80", "/"));
        assert_eq!(target("/v1/sandboxes/sbx_1/ports/80/").unwrap().path, "/");
        assert_eq!(target("/v1/sandboxes/sbx_1/files"), None);
    }

    #[test]
    fn the_agentvm_token_leaves_the_query() {
        assert_eq!(query_without_token("token=t&x=1&tokens=2"), "x=1&tokens=2");
        assert_eq!(query_without_token("token=t"), "");
    }

    #[test]
    fn hop_by_hop_headers_are_dropped_and_upgrades_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-hop"),
        );
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key(header::ACCEPT));

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn forwarded_headers_name_the_client_and_the_prefix() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("agentvm:7000"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let remote: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let to: SocketAddr = "172.18.0.2:8080".parse().unwrap();
        forwarded_headers(&mut h, remote, to, "/v1/sandboxes/s/ports/8080");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-host"], "agentvm:7000");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-prefix"], "/v1/sandboxes/s/ports/8080");
        assert_eq!(h[header::HOST], "172.18.0.2:8080");
    }
}
