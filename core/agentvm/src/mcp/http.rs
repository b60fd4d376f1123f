//! The streamable HTTP client of MCP over the runtime's own reqwest (rustls with ring): rmcp
//! drives the protocol (sessions, SSE streams, JSON replies), this file only sends requests.
//!
//! A server's configured `headers` are the client's default headers, so they go with every
//! request.

use futures::stream::BoxStream;
use futures::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
};
use sse_stream::{Sse, SseStream};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

const SESSION_ID: &str = "Mcp-Session-Id";
const LAST_EVENT_ID: &str = "Last-Event-Id";
const EVENT_STREAM: &str = "text/event-stream";
const JSON: &str = "application/json";

/// A reqwest client speaking to one MCP server.
#[derive(Clone, Debug)]
pub(crate) struct McpHttpClient(reqwest::Client);

type HttpError = StreamableHttpError<reqwest::Error>;

impl McpHttpClient {
    /// A client sending `headers` with every request.
    pub(crate) fn new(headers: &BTreeMap<String, String>) -> crate::error::Result<Self> {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            let name = HeaderName::try_from(k.as_str())
                .map_err(|e| crate::error::Error::invalid(format!("header name {k:?}: {e}")))?;
            let value = HeaderValue::try_from(v.as_str()).map_err(|e| {
                crate::error::Error::invalid(format!("the value of header {k:?}: {e}"))
            })?;
            map.insert(name, value);
        }
        let client = reqwest::Client::builder()
            .default_headers(map)
            .build()
            .map_err(|e| crate::error::Error::Internal(format!("an HTTP client: {e}")))?;
        Ok(McpHttpClient(client))
    }
}

fn content_type(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.to_ascii_lowercase())
}

fn sse(r: reqwest::Response) -> BoxStream<'static, Result<Sse, SseError>> {
    SseStream::from_bytes_stream(r.bytes_stream()).boxed()
}

fn with_headers(
    mut b: reqwest::RequestBuilder,
    auth: Option<String>,
    custom: HashMap<HeaderName, HeaderValue>,
) -> reqwest::RequestBuilder {
    if let Some(token) = auth {
        b = b.bearer_auth(token);
    }
    for (k, v) in custom {
        b = b.header(k, v);
    }
    b
}

impl StreamableHttpClient for McpHttpClient {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, HttpError> {
        let mut b = self
            .0
            .post(uri.as_ref())
            .header(reqwest::header::ACCEPT, format!("{EVENT_STREAM}, {JSON}"));
        let had_session = session_id.is_some();
        if let Some(s) = session_id {
            b = b.header(SESSION_ID, s.as_ref());
        }
        let r = with_headers(b, auth_header, custom_headers)
            .json(&message)
            .send()
            .await
            .map_err(StreamableHttpError::Client)?;
        let status = r.status();
        if status == reqwest::StatusCode::ACCEPTED || status == reqwest::StatusCode::NO_CONTENT {
            return Ok(StreamableHttpPostResponse::Accepted);
        }
        if status == reqwest::StatusCode::NOT_FOUND && had_session {
            return Err(StreamableHttpError::SessionExpired);
        }
        let session = r
            .headers()
            .get(SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let ct = content_type(&r);
        let no_reply = !matches!(message, ClientJsonRpcMessage::Request(_));
        if !status.is_success() {
            let body = r.text().await.unwrap_or_default();
            if let Ok(m @ ServerJsonRpcMessage::Error(_)) = serde_json::from_str(&body) {
                return Ok(StreamableHttpPostResponse::Json(m, session));
            }
            let body: String = body.chars().take(1024).collect();
            return Err(StreamableHttpError::UnexpectedServerResponse(Cow::Owned(
                format!("HTTP {status}: {body}"),
            )));
        }
        match ct.as_deref() {
            Some(c) if c.starts_with(EVENT_STREAM) => {
                Ok(StreamableHttpPostResponse::Sse(sse(r), session))
            }
            Some(c) if c.starts_with(JSON) => {
                let body = r.bytes().await.map_err(StreamableHttpError::Client)?;
                match serde_json::from_slice::<ServerJsonRpcMessage>(&body) {
                    Ok(m) => Ok(StreamableHttpPostResponse::Json(m, session)),
                    Err(_) if no_reply => Ok(StreamableHttpPostResponse::Accepted),
                    Err(e) => Err(StreamableHttpError::Deserialize(e)),
                }
            }
            _ if no_reply => Ok(StreamableHttpPostResponse::Accepted),
            _ => Err(StreamableHttpError::UnexpectedContentType(ct)),
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), HttpError> {
        let b = self
            .0
            .delete(uri.as_ref())
            .header(SESSION_ID, session_id.as_ref());
        let r = with_headers(b, auth_header, custom_headers)
            .send()
            .await
            .map_err(StreamableHttpError::Client)?;
        if r.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED {
            return Ok(());
        }
        r.error_for_status()
            .map(|_| ())
            .map_err(StreamableHttpError::Client)
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        custom_headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, HttpError> {
        let mut b = self
            .0
            .get(uri.as_ref())
            .header(reqwest::header::ACCEPT, format!("{EVENT_STREAM}, {JSON}"));
        if let Some(s) = session_id {
            b = b.header(SESSION_ID, s.as_ref());
        }
        if let Some(id) = last_event_id {
            b = b.header(LAST_EVENT_ID, id);
        }
        let r = with_headers(b, auth_header, custom_headers)
            .send()
            .await
            .map_err(StreamableHttpError::Client)?;
        if r.status() == reqwest::StatusCode::METHOD_NOT_ALLOWED {
            return Err(StreamableHttpError::ServerDoesNotSupportSse);
        }
        let r = r.error_for_status().map_err(StreamableHttpError::Client)?;
        match content_type(&r) {
            Some(c) if c.starts_with(EVENT_STREAM) || c.starts_with(JSON) => Ok(sse(r)),
            other => Err(StreamableHttpError::UnexpectedContentType(other)),
        }
    }
}
