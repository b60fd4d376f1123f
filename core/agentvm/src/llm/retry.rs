//! Retries as the official Anthropic and OpenAI SDKs do them, and the error codes of a failed
//! request.
//!
//! - `x-should-retry: true` or `false` from the server decides; otherwise 408, 409, 429 and
//!   every 5xx (529 "overloaded" included) are retried, and so are connection errors and
//!   timeouts before the response headers.
//! - The wait is `retry-after-ms`, else `retry-after` (seconds or an HTTP date), when it is
//!   between 0 and 60 s; otherwise exponential backoff from 0.5 s doubling up to 8 s, minus up
//!   to 25 % jitter.
//! - At most [`RetryPolicy::max_retries`] retries (default 2).
//! - Only the request is retried: once a reply has started streaming, a failure is the reply's
//!   error (the client has already seen part of it).
//!
//! A request that fails for good becomes one [`LlmEvent::Error`] whose code is one of
//! `rate_limit`, `overloaded`, `authentication`, `invalid_request`, `timeout` or `network`, and
//! whose message carries the provider's own.

use super::LlmEvent;
use reqwest::header::HeaderMap;
use std::time::{Duration, SystemTime};

/// How failed requests are retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// The first backoff.
    pub initial_backoff: Duration,
    /// The longest backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 2,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(8),
        }
    }
}

/// The longest `retry-after` honoured; a longer one falls back to backoff, as in the SDKs.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How much of an error body is read for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

impl RetryPolicy {
    /// The backoff before retry number `retries_done + 1`, with jitter.
    pub fn backoff(&self, retries_done: u32) -> Duration {
        let exp = 2f64.powi(retries_done.min(30) as i32);
        let base = (self.initial_backoff.as_secs_f64() * exp).min(self.max_backoff.as_secs_f64());
        let jitter = 1.0 - 0.25 * rand::random::<f64>();
        Duration::from_secs_f64(base * jitter)
    }

    /// The wait before retrying a response with `status` and `headers`, or `None` when it must
    /// not be retried (not retryable, or no retries left).
    pub fn after_response(
        &self,
        status: u16,
        headers: &HeaderMap,
        retries_done: u32,
    ) -> Option<Duration> {
        if retries_done >= self.max_retries || !should_retry(status, headers) {
            return None;
        }
        Some(
            retry_after(headers, SystemTime::now())
                .filter(|d| !d.is_zero() && *d <= MAX_RETRY_AFTER)
                .unwrap_or_else(|| self.backoff(retries_done)),
        )
    }

    /// The wait before retrying after a connection error or timeout, or `None` when no retries
    /// are left.
    pub fn after_connection_error(&self, retries_done: u32) -> Option<Duration> {
        (retries_done < self.max_retries).then(|| self.backoff(retries_done))
    }
}

/// Whether a response with this status is worth another try: `x-should-retry` when the server
/// sent it, else 408, 409, 429 and 5xx.
pub fn should_retry(status: u16, headers: &HeaderMap) -> bool {
    match header(headers, "x-should-retry") {
        Some("true") => true,
        Some("false") => false,
        _ => matches!(status, 408 | 409 | 429) || status >= 500,
    }
}

/// The wait the server asks for: `retry-after-ms` (milliseconds), else `retry-after` (seconds,
/// or an HTTP date measured from `now`).
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if let Some(ms) = header(headers, "retry-after-ms").and_then(|v| v.trim().parse::<f64>().ok()) {
        return secs(ms / 1000.0);
    }
    let value = header(headers, "retry-after")?.trim();
    if let Ok(s) = value.parse::<f64>() {
        return secs(s);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn secs(s: f64) -> Option<Duration> {
    (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(1e9)))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The error code for a failed HTTP status.
pub fn code_for_status(status: u16) -> &'static str {
    match status {
        401 | 403 => "authentication",
        408 => "timeout",
        429 => "rate_limit",
        409 | 500.. => "overloaded",
        _ => "invalid_request",
    }
}

/// The error code for a provider's error `type` (Anthropic's `overloaded_error`, OpenAI's
/// `rate_limit_exceeded`, ...), reported in a body or mid-stream.
pub fn code_for_error_type(kind: &str) -> &'static str {
    let kind = kind.to_ascii_lowercase();
    if kind.contains("rate_limit") {
        "rate_limit"
    } else if kind.contains("authentication") || kind.contains("permission") {
        "authentication"
    } else if kind.contains("invalid_request")
        || kind.contains("not_found")
        || kind.contains("too_large")
        || kind.contains("badrequest")
    {
        "invalid_request"
    } else if kind.contains("timeout") {
        "timeout"
    } else {
        "overloaded"
    }
}

/// The message and type inside a provider's error JSON: `{"error":{"message","type"}}` (both
/// APIs), `{"error":"text"}`, or `{"message"}`.
pub fn provider_error(body: &str) -> Option<(String, Option<String>)> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    let e = v.get("error").unwrap_or(&v);
    if let Some(s) = e.as_str() {
        return Some((s.to_string(), None));
    }
    let message = e.get("message")?.as_str()?.to_string();
    let kind = e.get("type").and_then(|t| t.as_str()).map(String::from);
    Some((message, kind))
}

/// The error event for a response that failed with `status`.
pub fn status_error(provider: &str, status: u16, body: &str) -> LlmEvent {
    let (message, kind) = match provider_error(body) {
        Some((m, k)) => (m, k),
        None => {
            let mut text: String = body.trim().chars().take(500).collect();
            if text.is_empty() {
                text = "no error message".into();
            }
            (text, None)
        }
    };
    let kind = kind.map(|k| format!(" ({k})")).unwrap_or_default();
    LlmEvent::Error {
        message: format!("{provider} returned HTTP {status}{kind}: {message}"),
        code: Some(code_for_status(status).into()),
    }
}

/// The message of an error with its causes, `: `-separated (reqwest's own message is terse).
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Sends a request, retrying as the policy says. `build` makes a fresh request per attempt;
/// `timeout` bounds each attempt until the response headers arrive. A success is returned as
/// is (its body not read); a failure for good is the error event to report.
pub(crate) async fn send(
    policy: &RetryPolicy,
    provider: &str,
    timeout: Duration,
    build: impl Fn() -> reqwest::RequestBuilder,
) -> Result<reqwest::Response, LlmEvent> {
    let mut retries = 0;
    loop {
        let (wait, reason) = match tokio::time::timeout(timeout, build().send()).await {
            Ok(Ok(response)) if response.status().is_success() => return Ok(response),
            Ok(Ok(response)) => {
                let status = response.status().as_u16();
                match policy.after_response(status, response.headers(), retries) {
                    Some(wait) => (wait, format!("HTTP {status}")),
                    None => {
                        let body = read_error_body(response, timeout).await;
                        return Err(status_error(provider, status, &body));
                    }
                }
            }
            Ok(Err(e)) if e.is_builder() => {
                return Err(LlmEvent::Error {
                    message: format!("could not build the request to {provider}: {e}"),
                    code: Some("invalid_request".into()),
                });
            }
            Ok(Err(e)) => {
                let timed_out = e.is_timeout();
                let message = error_chain(&e);
                match policy.after_connection_error(retries) {
                    Some(wait) => (wait, message),
                    None => {
                        let code = if timed_out { "timeout" } else { "network" };
                        return Err(LlmEvent::Error {
                            message: format!("could not reach {provider}: {message}"),
                            code: Some(code.into()),
                        });
                    }
                }
            }
            Err(_) => match policy.after_connection_error(retries) {
                Some(wait) => (wait, format!("no response within {timeout:?}")),
                None => {
                    return Err(LlmEvent::Error {
                        message: format!("{provider} did not answer within {timeout:?}"),
                        code: Some("timeout".into()),
                    });
                }
            },
        };
        retries += 1;
        tracing::info!(provider, %reason, ?wait, retry = retries, "retrying the LLM request");
        tokio::time::sleep(wait).await;
    }
}

/// Reads up to 64 KiB of a body that is not a stream (an error, or JSON instead of SSE).
pub(crate) async fn read_error_body(mut response: reqwest::Response, timeout: Duration) -> String {
    let mut body = Vec::new();
    let read = async {
        while let Ok(Some(chunk)) = response.chunk().await {
            body.extend_from_slice(&chunk);
            if body.len() >= MAX_ERROR_BODY {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(timeout, read).await;
    String::from_utf8_lossy(&body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn retryable_statuses_as_in_the_sdks() {
        let none = HeaderMap::new();
        for s in [408, 409, 429, 500, 502, 503, 504, 529] {
            assert!(should_retry(s, &none), "{s}");
        }
        for s in [400, 401, 403, 404, 413, 422] {
            assert!(!should_retry(s, &none), "{s}");
        }
        assert!(!should_retry(529, &headers(&[("x-should-retry", "false")])));
        assert!(should_retry(400, &headers(&[("x-should-retry", "true")])));
    }

    #[test]
    fn retry_after_ms_then_seconds_then_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let h = headers(&[("retry-after-ms", "250"), ("retry-after", "9")]);
        assert_eq!(retry_after(&h, now), Some(Duration::from_millis(250)));
        assert_eq!(
            retry_after(&headers(&[("retry-after", "1.5")]), now),
            Some(Duration::from_millis(1500))
        );
        let date = httpdate::fmt_http_date(now + Duration::from_secs(3));
        assert_eq!(
            retry_after(&headers(&[("retry-after", &date)]), now),
            Some(Duration::from_secs(3))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-3")]), now), None);
    }

    #[test]
    fn waits_honour_the_server_within_a_minute_else_back_off() {
        let p = RetryPolicy::default();
        let h = headers(&[("retry-after-ms", "20")]);
        assert_eq!(
            p.after_response(429, &h, 0),
            Some(Duration::from_millis(20))
        );
        // Too long or zero: backoff instead.
        let long = headers(&[("retry-after", "3600")]);
        let w = p.after_response(429, &long, 0).unwrap();
        assert!(
            w <= Duration::from_millis(500) && w >= Duration::from_millis(375),
            "{w:?}"
        );
        // No retries left, or not retryable.
        assert_eq!(p.after_response(429, &h, 2), None);
        assert_eq!(p.after_response(400, &h, 0), None);
        assert!(p.after_connection_error(1).is_some());
        assert_eq!(p.after_connection_error(2), None);
    }

    #[test]
    fn backoff_doubles_to_eight_seconds_with_jitter() {
        let p = RetryPolicy::default();
        for (n, base) in [
            (0, 0.5),
            (1, 1.0),
            (2, 2.0),
            (3, 4.0),
            (4, 8.0),
            (10, 8.0),
            (1000, 8.0),
        ] {
            let w = p.backoff(n).as_secs_f64();
            assert!(w <= base && w >= base * 0.75, "{n}: {w}");
        }
    }

    #[test]
    fn codes_and_messages_of_failed_requests() {
        assert_eq!(code_for_status(401), "authentication");
        assert_eq!(code_for_status(429), "rate_limit");
        assert_eq!(code_for_status(529), "overloaded");
        assert_eq!(code_for_status(404), "invalid_request");
        assert_eq!(code_for_error_type("overloaded_error"), "overloaded");
        assert_eq!(code_for_error_type("rate_limit_exceeded"), "rate_limit");
        assert_eq!(
            code_for_error_type("invalid_request_error"),
            "invalid_request"
        );
        let body = r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
        assert_eq!(
            status_error("Anthropic", 401, body),
            LlmEvent::Error {
                message: "Anthropic returned HTTP 401 (authentication_error): invalid x-api-key"
                    .into(),
                code: Some("authentication".into()),
            }
        );
        let LlmEvent::Error { message, .. } =
            status_error("OpenAI", 502, "<html>Bad gateway</html>")
        else {
            panic!()
        };
        assert_eq!(
            message,
            "OpenAI returned HTTP 502: <html>Bad gateway</html>"
        );
    }
}
