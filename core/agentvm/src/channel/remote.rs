//! The remote runtime: the same [`Runtime`] as [`crate::AgentVm`], over a WebSocket Channel.
//!
//! `agentvm::connect(url, options)` opens the connection; a background task keeps it up:
//! requests are matched to responses by `requestId` under a timeout; events are mirrored onto
//! a local bus with the server's cursors, so subscriptions work exactly as they do locally.
//! When the connection drops the task reconnects with exponential backoff, re-subscribes
//! every session from the last cursor it received, and drops anything it already had — no
//! loss, no duplicates. Connection changes are published as `connection_state` events.
//!
//! A client may know several servers of one cluster ([`ConnectOptions::urls`]): servers on one
//! shared store hand out the same cursors, so the task connects to the first URL that answers
//! (in the order given) and, when that connection drops, reconnects to the next URL in turn
//! and resumes every subscription there from its last cursor.

use super::codec;
use crate::error::{Error, Result};
use crate::model::{now_ms, Command, Event, EventPayload, Response};
use crate::runtime::{Bus, BusConfig, EventFilter, Runtime, Subscription};
use async_trait::async_trait;
use futures::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// The upgrade header a client sends with [`ConnectOptions::follow_sends`] off: the server
/// then joins no topic for the commands of that connection.
pub const FORWARDING_HEADER: &str = "agentvm-forwarding";

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// The servers of one cluster (on one shared store), for failover: tried in this order at
    /// connect, then in turn after each lost connection. When set, pass `""` as `connect`'s
    /// `url`; giving both is an error.
    pub urls: Vec<String>,
    /// Bearer token, sent in the `Authorization` header of the upgrade.
    pub token: Option<String>,
    /// How long a request may wait for its response (and for a connection).
    pub request_timeout: Duration,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// Reconnect after the connection drops.
    pub reconnect: bool,
    /// First reconnection delay; doubles up to `max_backoff`, with jitter.
    pub min_backoff: Duration,
    /// Longest reconnection delay.
    pub max_backoff: Duration,
    /// Largest message accepted from the server.
    pub max_frame_bytes: usize,
    /// Follow the session of each message sent (its events reach this client's subscriptions,
    /// as AgentX clients expect). `false` for a client that only relays commands, such as a
    /// cluster server forwarding to a container's owner: the server is told not to join
    /// topics for it ([`FORWARDING_HEADER`]) and events of sessions it did not subscribe to
    /// are dropped.
    pub follow_sends: bool,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            urls: Vec::new(),
            token: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            reconnect: true,
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            max_frame_bytes: 64 * 1024 * 1024,
            follow_sends: true,
        }
    }
}

impl ConnectOptions {
    /// Options with a bearer token.
    pub fn with_token(token: impl Into<String>) -> Self {
        ConnectOptions {
            token: Some(token.into()),
            ..Default::default()
        }
    }
}

/// Connects to an agentvm server's Channel (`ws://host:port/ws`), or with `url` empty to the
/// first of [`ConnectOptions::urls`] that answers.
pub async fn connect(url: &str, options: ConnectOptions) -> Result<RemoteRuntime> {
    let urls = server_urls(url, &options.urls)?;
    let (close_tx, close_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        urls,
        current: AtomicUsize::new(0),
        options,
        bus: Bus::in_memory(BusConfig::default()),
        pending: Mutex::new(HashMap::new()),
        sender: Mutex::new(None),
        connected: watch::channel(false).0,
        sessions: Mutex::new(HashMap::new()),
        next_id: AtomicU64::new(1),
        last_error: Mutex::new(None),
        refused: Mutex::new(None),
        subscribing: Mutex::new(HashMap::new()),
    });
    let (first_tx, first_rx) = oneshot::channel();
    let task = tokio::spawn(connection_loop(shared.clone(), close_rx, first_tx));
    match first_rx.await {
        Ok(Ok(())) => Ok(RemoteRuntime {
            shared,
            guard: Arc::new(CloseGuard {
                close_tx,
                task: Mutex::new(Some(task)),
            }),
        }),
        Ok(Err(e)) => {
            task.abort();
            Err(e)
        }
        Err(_) => Err(Error::Internal(
            "the connection task ended before connecting".into(),
        )),
    }
}

/// The URLs to use: `url`, or `urls` when `url` is empty; each a `ws://` URL.
fn server_urls(url: &str, urls: &[String]) -> Result<Vec<String>> {
    let urls = match (url.trim().is_empty(), urls.is_empty()) {
        (false, false) => {
            return Err(Error::invalid(
                "give either url or urls (a list of servers), not both",
            ))
        }
        (true, true) => {
            return Err(Error::invalid(
                "no server to connect to: give url, or urls with at least one URL",
            ))
        }
        (false, true) => vec![url.trim().to_string()],
        (true, false) => urls.iter().map(|u| u.trim().to_string()).collect(),
    };
    for url in &urls {
        if url.starts_with("wss://") {
            return Err(Error::invalid(format!("{url:?}: wss:// is not supported by this build: put a TLS proxy in front or use ws:// on a trusted network")));
        }
        if !url.starts_with("ws://") {
            return Err(Error::invalid(format!(
                "{url:?} is not a ws:// or wss:// URL"
            )));
        }
    }
    Ok(urls)
}

struct Shared {
    /// The servers, in the order they are tried.
    urls: Vec<String>,
    /// Index in `urls` of the server connected to (or being tried).
    current: AtomicUsize,
    options: ConnectOptions,
    /// Local mirror of the server's events, with the server's cursors.
    bus: Bus,
    pending: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// Frames to the current connection, `None` while disconnected.
    sender: Mutex<Option<mpsc::UnboundedSender<Message>>>,
    connected: watch::Sender<bool>,
    /// Session topics joined on the server, with the last cursor received from each.
    sessions: Mutex<HashMap<String, Option<u64>>>,
    next_id: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Set when the server closed with a policy violation (authentication): final, no retry.
    refused: Mutex<Option<String>>,
    /// Subscribes waiting for the server's answer (joined, or refused with an error), by
    /// session.
    subscribing: Mutex<HashMap<String, oneshot::Sender<Result<()>>>>,
}

impl Shared {
    /// The server connected to, or being tried.
    fn url(&self) -> &str {
        &self.urls[self.current.load(Ordering::Relaxed) % self.urls.len()]
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct CloseGuard {
    close_tx: watch::Sender<bool>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for CloseGuard {
    fn drop(&mut self) {
        let _ = self.close_tx.send(true);
    }
}

/// A [`Runtime`] on a remote agentvm server. Cheap to clone; the connection closes when the
/// last clone is dropped or [`RemoteRuntime::close`] is called.
#[derive(Clone)]
pub struct RemoteRuntime {
    shared: Arc<Shared>,
    guard: Arc<CloseGuard>,
}

impl std::fmt::Debug for RemoteRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRuntime")
            .field("urls", &self.shared.urls)
            .finish_non_exhaustive()
    }
}

impl RemoteRuntime {
    /// The server connected to now (or being tried while disconnected).
    pub fn current_url(&self) -> String {
        self.shared.url().to_string()
    }

    /// Whether the connection is up right now.
    pub fn is_connected(&self) -> bool {
        *self.shared.connected.borrow()
    }

    /// Closes the connection and stops reconnecting.
    pub async fn close(&self) {
        let _ = self.guard.close_tx.send(true);
        let task = lock(&self.guard.task).take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }

    /// Subscribes to connection-state changes (`connection_state` events).
    pub fn connection_events(&self) -> Result<Subscription> {
        self.shared.bus.subscribe(EventFilter {
            global: true,
            ..Default::default()
        })
    }

    /// Drops the current connection as if the network failed (for tests of reconnection).
    pub fn disconnect_for_test(&self) {
        if let Some(tx) = lock(&self.shared.sender).as_ref() {
            let _ = tx.send(Message::Close(None));
        }
    }

    async fn wait_connected(&self) -> Result<()> {
        if let Some(why) = lock(&self.shared.refused).clone() {
            return Err(Error::Unauthorized(why));
        }
        let mut rx = self.shared.connected.subscribe();
        let timeout = self.shared.options.request_timeout;
        let connected =
            tokio::time::timeout(timeout, async move { rx.wait_for(|c| *c).await.is_ok() }).await;
        match connected {
            Ok(true) => Ok(()),
            _ => {
                let why = lock(&self.shared.last_error)
                    .clone()
                    .unwrap_or_else(|| "not connected".into());
                Err(Error::unavailable(format!(
                    "not connected to {}: {why}",
                    self.shared.url()
                )))
            }
        }
    }

    fn send_frame(&self, frame: String) -> bool {
        match lock(&self.shared.sender).as_ref() {
            Some(tx) => tx.send(Message::Text(frame.into())).is_ok(),
            None => false,
        }
    }

    fn track_session(&self, session_id: &str, after: Option<u64>) -> bool {
        let mut sessions = lock(&self.shared.sessions);
        if sessions.contains_key(session_id) {
            return false;
        }
        sessions.insert(session_id.to_string(), after);
        true
    }
}

/// A subscribe frame asking for the `subscribe_response` (an agentvm extension AgentX's server
/// never sends) that tells this client the topic's cursor.
fn subscribe_frame(session_id: &str, after: Option<u64>) -> String {
    match after {
        Some(c) => json!({
            "type": "subscribe", "sessionId": session_id, "afterCursor": c.to_string(),
            "__subscribeResponse": true,
        }),
        None => {
            json!({ "type": "subscribe", "sessionId": session_id, "__subscribeResponse": true })
        }
    }
    .to_string()
}

#[async_trait]
impl Runtime for RemoteRuntime {
    async fn request(&self, command: Command) -> Result<Response> {
        let n = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let request_id = format!("req_{}_{n}", now_ms());
        let type_name = command.type_name();
        let frame = codec::encode_request(&command, &request_id);
        let deadline = tokio::time::Instant::now() + self.shared.options.request_timeout;
        let rx = loop {
            self.wait_connected().await?;
            let (tx, rx) = oneshot::channel();
            lock(&self.shared.pending).insert(request_id.clone(), tx);
            if self.send_frame(frame.clone()) {
                break rx;
            }
            // The connection went down between the check and the send: nothing reached the
            // server, so the request waits for the next connection (failover) and is sent there.
            lock(&self.shared.pending).remove(&request_id);
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::unavailable(format!(
                    "connection to {} lost before sending {type_name}",
                    self.shared.url()
                )));
            }
            tokio::task::yield_now().await;
        };
        let payload = match tokio::time::timeout(self.shared.options.request_timeout, rx).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => {
                if let Some(why) = lock(&self.shared.refused).clone() {
                    return Err(Error::Unauthorized(why));
                }
                return Err(Error::unavailable(format!(
                    "connection to {} lost before the response to {type_name}; it may or may not have run",
                    self.shared.url()
                )));
            }
            Err(_) => {
                lock(&self.shared.pending).remove(&request_id);
                return Err(Error::unavailable(format!(
                    "no response to {type_name} within {} ms",
                    self.shared.options.request_timeout.as_millis()
                )));
            }
        };
        let response = codec::decode_response(&payload)?;
        // The server joined this connection to the session it answers in: keep it joined
        // across reconnects too.
        if let Response::MessageSend(r) = &response {
            if self.shared.options.follow_sends && self.track_session(&r.session_id, None) {
                self.send_frame(subscribe_frame(&r.session_id, None));
            }
        }
        Ok(response)
    }

    async fn subscribe(&self, filter: EventFilter) -> Result<Subscription> {
        let sessions = filter.sessions.clone();
        // Locally: live only; the server replays what is after each cursor.
        let local = EventFilter {
            sessions: sessions.iter().map(|(s, _)| (s.clone(), None)).collect(),
            ..filter
        };
        let sub = self.shared.bus.subscribe(local)?;
        let mut answers = Vec::new();
        for (session_id, after) in sessions {
            if !self.track_session(&session_id, after) {
                continue; // joined already
            }
            let (tx, rx) = oneshot::channel();
            lock(&self.shared.subscribing).insert(session_id.clone(), tx);
            if self.send_frame(subscribe_frame(&session_id, after)) {
                answers.push((session_id, rx));
            } else {
                // Not connected: joined when the connection is back.
                lock(&self.shared.subscribing).remove(&session_id);
            }
        }
        // As in process: a session that cannot be joined (unknown, or another tenant's) is an
        // error, not a subscription that never yields.
        let deadline = tokio::time::Instant::now() + self.shared.options.request_timeout;
        let mut refused = None;
        for (session_id, rx) in &mut answers {
            if refused.is_some() {
                break;
            }
            if let Ok(Ok(Err(e))) = tokio::time::timeout_at(deadline, rx).await {
                lock(&self.shared.sessions).remove(session_id.as_str());
                refused = Some(e);
            }
            // No answer in time, or the connection went down: joined when it is back.
        }
        let mut subscribing = lock(&self.shared.subscribing);
        for (session_id, _) in &answers {
            subscribing.remove(session_id.as_str());
        }
        drop(subscribing);
        match refused {
            Some(e) => Err(e),
            None => Ok(sub),
        }
    }
}

fn publish_state(
    shared: &Shared,
    state: &str,
    attempt: Option<u32>,
    error: Option<String>,
    url: Option<&str>,
) {
    shared.bus.publish(Event::new(
        EventPayload::ConnectionState {
            state: state.into(),
            attempt,
            error,
            url: url.map(str::to_string),
        },
        None,
    ));
}

/// Connects to the first of the URLs that answers, in order; an authentication refusal ends
/// the search (the servers of one cluster share their tokens).
async fn first_connection(shared: &Shared, close_rx: &watch::Receiver<bool>) -> Result<Ws> {
    let mut failures = Vec::new();
    for i in 0..shared.urls.len() {
        if *close_rx.borrow() {
            break;
        }
        shared.current.store(i, Ordering::Relaxed);
        publish_state(shared, "connecting", None, None, Some(shared.url()));
        match open(shared, shared.url()).await {
            Ok(ws) => return Ok(ws),
            Err(e) => {
                *lock(&shared.last_error) = Some(e.to_string());
                if matches!(e, Error::Unauthorized(_)) || shared.urls.len() == 1 {
                    return Err(e);
                }
                failures.push(e.to_string());
            }
        }
    }
    Err(Error::unavailable(format!(
        "none of the {} servers answered: {}",
        shared.urls.len(),
        failures.join("; ")
    )))
}

/// The delay before reconnection attempt `attempt` (1, 2, ...): exponential with jitter.
fn backoff(options: &ConnectOptions, attempt: u32) -> Duration {
    let base = options.min_backoff.as_millis() as u64;
    let cap = options.max_backoff.as_millis() as u64;
    let exp = base
        .saturating_mul(1u64 << attempt.min(16).saturating_sub(1))
        .min(cap);
    let jitter = rand::rng().random_range(0..=exp / 4 + 1);
    Duration::from_millis(exp + jitter)
}

async fn connection_loop(
    shared: Arc<Shared>,
    mut close_rx: watch::Receiver<bool>,
    first: oneshot::Sender<Result<()>>,
) {
    let mut ws = match first_connection(&shared, &close_rx).await {
        Ok(ws) => {
            let _ = first.send(Ok(()));
            ws
        }
        Err(e) => {
            let _ = first.send(Err(e));
            return;
        }
    };
    'connected: loop {
        let error = run_connection(&shared, ws, &mut close_rx).await;
        *lock(&shared.last_error) = error.clone();
        let _ = shared.connected.send_replace(false);
        *lock(&shared.sender) = None;
        // Requests in flight cannot be answered on another connection.
        lock(&shared.pending).clear();
        if *close_rx.borrow() || lock(&shared.refused).is_some() {
            break;
        }
        publish_state(&shared, "disconnected", None, error, Some(shared.url()));
        if !shared.options.reconnect {
            break;
        }
        // Reconnect: the next server in turn at every attempt, after the backoff.
        let mut attempt: u32 = 0;
        loop {
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(backoff(&shared.options, attempt)) => {}
                _ = async { let _ = close_rx.wait_for(|c| *c).await; } => break 'connected,
            }
            let next = (shared.current.load(Ordering::Relaxed) + 1) % shared.urls.len();
            shared.current.store(next, Ordering::Relaxed);
            publish_state(
                &shared,
                "reconnecting",
                Some(attempt),
                None,
                Some(shared.url()),
            );
            match open(&shared, shared.url()).await {
                Ok(connected) => {
                    ws = connected;
                    continue 'connected;
                }
                Err(e) => *lock(&shared.last_error) = Some(e.to_string()),
            }
        }
    }
    let _ = shared.connected.send_replace(false);
    publish_state(&shared, "closed", None, None, None);
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(shared: &Shared, url: &str) -> Result<Ws> {
    let mut request = url
        .into_client_request()
        .map_err(|e| Error::invalid(format!("bad URL {url}: {e}")))?;
    if let Some(token) = &shared.options.token {
        let value = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| Error::invalid("the token contains characters not allowed in a header"))?;
        request.headers_mut().insert("authorization", value);
    }
    if !shared.options.follow_sends {
        request
            .headers_mut()
            .insert(FORWARDING_HEADER, HeaderValue::from_static("1"));
    }
    let mut config = WebSocketConfig::default();
    config.max_message_size = Some(shared.options.max_frame_bytes);
    config.max_frame_size = Some(shared.options.max_frame_bytes);
    let attempt = tokio_tungstenite::connect_async_with_config(request, Some(config), true);
    match tokio::time::timeout(shared.options.connect_timeout, attempt).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) => {
            let status = resp.status();
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            let message = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                .unwrap_or(body);
            if status.as_u16() == 401 || status.as_u16() == 403 {
                Err(Error::Unauthorized(format!(
                    "{} refused the connection: {message}",
                    url
                )))
            } else {
                Err(Error::unavailable(format!(
                    "{} answered HTTP {status}: {message}",
                    url
                )))
            }
        }
        Ok(Err(e)) => Err(Error::Unavailable {
            message: format!("cannot connect to {}: {e}", url),
            source: Some(Box::new(e)),
        }),
        Err(_) => Err(Error::unavailable(format!(
            "cannot connect to {}: no answer within {} ms",
            url,
            shared.options.connect_timeout.as_millis()
        ))),
    }
}

/// Serves one connection until it drops; returns why.
async fn run_connection(
    shared: &Arc<Shared>,
    ws: Ws,
    close_rx: &mut watch::Receiver<bool>,
) -> Option<String> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    // Re-join every session from the last cursor received.
    let sessions: Vec<(String, Option<u64>)> = lock(&shared.sessions)
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for (sid, after) in sessions {
        let _ = tx.send(Message::Text(subscribe_frame(&sid, after).into()));
    }
    *lock(&shared.sender) = Some(tx.clone());
    let _ = shared.connected.send_replace(true);
    publish_state(shared, "connected", None, None, Some(shared.url()));
    let why = serve_connection(shared, ws, tx, &mut rx, close_rx).await;
    // Marked down before the receiver goes: a request that finds no live sender then waits
    // for the next connection instead of seeing a connection that is "up" but cannot send.
    let _ = shared.connected.send_replace(false);
    *lock(&shared.sender) = None;
    why
}

async fn serve_connection(
    shared: &Arc<Shared>,
    ws: Ws,
    tx: mpsc::UnboundedSender<Message>,
    rx: &mut mpsc::UnboundedReceiver<Message>,
    close_rx: &mut watch::Receiver<bool>,
) -> Option<String> {
    let (mut sink, mut stream) = ws.split();
    loop {
        tokio::select! {
            _ = async { let _ = close_rx.wait_for(|c| *c).await; } => {
                let _ = sink.send(Message::Close(None)).await;
                return None;
            }
            out = rx.recv() => match out {
                Some(Message::Close(_)) => {
                    // A local "disconnect": drop the socket without a handshake.
                    return Some("disconnected".into());
                }
                Some(m) => {
                    if let Err(e) = sink.send(m).await {
                        return Some(format!("send failed: {e}"));
                    }
                }
                None => return Some("sender closed".into()),
            },
            incoming = stream.next() => match incoming {
                None => return Some("the server closed the connection".into()),
                Some(Err(e)) => return Some(format!("connection error: {e}")),
                Some(Ok(Message::Text(text))) => on_frame(shared, &tx, text.as_str()),
                Some(Ok(Message::Close(frame))) => {
                    if let Some(f) = &frame {
                        if u16::from(f.code) == 1008 {
                            *lock(&shared.refused) = Some(format!(
                                "{} refused the connection: {} (connect with a token)",
                                shared.url(), f.reason
                            ));
                        }
                    }
                    return Some(match frame {
                        Some(f) => format!("the server closed the connection ({}: {})", u16::from(f.code), f.reason),
                        None => "the server closed the connection".into(),
                    })
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

fn on_frame(shared: &Shared, tx: &mpsc::UnboundedSender<Message>, text: &str) {
    let frame = match codec::decode_server_frame(text) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring a frame from the server");
            return;
        }
    };
    if let Some(id) = &frame.msg_id {
        let _ = tx.send(Message::Text(json!({ "__ack": id }).to_string().into()));
    }
    let type_name = frame
        .payload
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if type_name == "subscribe_response" {
        let data = &frame.payload["data"];
        if let (Some(sid), Some(c)) = (
            data["sessionId"].as_str(),
            data["cursor"].as_str().and_then(|c| c.parse::<u64>().ok()),
        ) {
            if let Some(entry) = lock(&shared.sessions).get_mut(sid) {
                if entry.is_none() {
                    *entry = Some(c);
                }
            }
            if let Some(waiter) = lock(&shared.subscribing).remove(sid) {
                let _ = waiter.send(Ok(()));
            }
        }
        return;
    }
    if let Some((sid, error)) = codec::refused_subscribe(&frame.payload) {
        if let Some(waiter) = lock(&shared.subscribing).remove(sid) {
            let _ = waiter.send(Err(error));
            return;
        }
    }
    if type_name.ends_with("_response") {
        let request_id = frame.payload["data"]["requestId"]
            .as_str()
            .map(str::to_string);
        if let Some(id) = request_id {
            if let Some(waiter) = lock(&shared.pending).remove(&id) {
                let _ = waiter.send(frame.payload);
            }
        }
        return;
    }
    let event: Event = match serde_json::from_value(frame.payload) {
        Ok(e) => e,
        Err(e) => {
            tracing::debug!(type_name, error = %e, "ignoring an event this client does not know");
            return;
        }
    };
    match (frame.cursor, event.topic().map(str::to_string)) {
        (Some(cursor), Some(sid)) => {
            {
                let mut sessions = lock(&shared.sessions);
                if !shared.options.follow_sends && !sessions.contains_key(&sid) {
                    return; // not subscribed to, and not following sends
                }
                let last = sessions.entry(sid).or_insert(None);
                if last.map(|l| cursor <= l).unwrap_or(false) {
                    return; // already delivered before a reconnect
                }
                *last = Some(cursor);
            }
            shared.bus.inject(event, cursor);
        }
        _ => {
            shared.bus.publish(event);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(list: &[&str]) -> Vec<String> {
        list.iter().map(|u| u.to_string()).collect()
    }

    #[test]
    fn one_url_or_a_list_of_ws_urls() {
        assert_eq!(server_urls("ws://a/ws", &[]).unwrap(), ["ws://a/ws"]);
        assert_eq!(
            server_urls(" ", &urls(&["ws://a/ws", " ws://b/ws "])).unwrap(),
            ["ws://a/ws", "ws://b/ws"]
        );
        for (url, list, says) in [
            ("ws://a/ws", urls(&["ws://b/ws"]), "not both"),
            ("", vec![], "no server"),
            ("", urls(&["ws://a/ws", "http://b/ws"]), "\"http://b/ws\""),
            ("", urls(&["wss://a/ws"]), "wss:// is not supported"),
            ("a:8080", vec![], "not a ws://"),
        ] {
            let e = server_urls(url, &list).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{url} {list:?}");
            assert!(e.to_string().contains(says), "{url} {list:?}: {e}");
        }
    }

    #[test]
    fn the_backoff_doubles_up_to_its_cap() {
        let options = ConnectOptions {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(500),
            ..Default::default()
        };
        let ms = |attempt| backoff(&options, attempt).as_millis();
        assert!((100..=126).contains(&ms(1)), "{}", ms(1));
        assert!((200..=251).contains(&ms(2)), "{}", ms(2));
        assert!((500..=626).contains(&ms(9)), "{}", ms(9));
    }
}
