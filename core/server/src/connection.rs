//! The server side of one Channel connection: frames in, responses and events out.
//!
//! One task per connection. It reads frames, runs requests in order (each under the request
//! timeout) and forwards the events of its bus subscription — `global` plus the session and
//! sandbox topics it joined — wrapped with `__msgId` and, for topic events, `__cursor`. The
//! subscription's bounded queue is the connection's send queue: a consumer too slow to keep up
//! overflows it, and the connection then resumes from the last cursor it sent (replayed from
//! the log, a page at a time), so nothing is lost and the server never waits on a client.
//!
//! Budgets bound what one connection can make the server hold: a write waits at most
//! `send_timeout`, at most `max_subscriptions` topics and `max_requests_in_flight` requests
//! beside the loop; over one, the connection is closed with 4008 and the budget named (WARN).
//! Revoking the connection's token closes it with 1008 and fails its requests in flight.
//!
//! A `sandbox_exec_request` runs beside the loop for as long as its command does (its own
//! timeout bounds it), so its output streams and other requests (a cancel) are answered
//! meanwhile; its response goes out after the exec events already queued for the connection.

use crate::channel::codec::{self, ClientFrame, Decoded};
use crate::error::{Error, Result};
use crate::model::{Command, CommandKind, Event, Response};
use crate::paced_reads::ReadPacing;
use crate::runtime::{
    AgentVm, BusItem, Caller, EventFilter, RequestHook, Scope, ScopedRuntime, Subscription,
};
use crate::{
    ServerState, CLOSE_GOING_AWAY, CLOSE_INVALID_DATA, CLOSE_OVER_BUDGET, CLOSE_POLICY,
    CLOSE_PROTOCOL, CLOSE_TOO_BIG,
};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::SinkExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How long a connection being closed waits for its close frame to be written.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// The most events written before one flush: a burst goes out in one write, and a long one
/// still lets the loop read its client between batches.
const MAX_BATCH: u64 = 256;

/// `{"__msgId":"<conn_id>_<n>","__payload":<escaped>,"__cursor"?:"<cursor>"}`, as
/// [`codec::wrap_escaped`] writes it, built in one allocation (the per-event path of every
/// connection).
fn event_frame(conn_id: &str, n: u64, escaped: &str, cursor: Option<u64>) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(escaped.len() + conn_id.len() + 72);
    // Connection ids are `conn_<n>` and numbers need no escaping.
    out.push_str("{\"__msgId\":\"");
    out.push_str(conn_id);
    let _ = write!(out, "_{n}\",\"__payload\":");
    out.push_str(escaped);
    if let Some(c) = cursor {
        let _ = write!(out, ",\"__cursor\":\"{c}\"");
    }
    out.push('}');
    out
}

/// Who is on a connection, for [`ConnectionHandler`]s.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// `conn_<n>`, the prefix of its `__msgId`s.
    pub id: String,
    /// The peer.
    pub remote_addr: Option<SocketAddr>,
    /// The token it authenticated with, if any.
    pub token_id: Option<String>,
    /// The containers it may use.
    pub scope: Scope,
    /// Its view of the runtime: the same scope.
    pub runtime: ScopedRuntime,
}

/// Hooks an embedder installs on the server to log, meter or veto per connection.
pub trait ConnectionHandler: Send + Sync + 'static {
    /// A connection opened (after authentication). An error refuses it.
    fn on_open(&self, _conn: &ConnectionInfo) -> Result<()> {
        Ok(())
    }
    /// A request arrived. An error vetoes it and is sent as its error response. REST requests
    /// come here too, each as a connection of its own (`rest_<n>`, never opened or closed).
    fn on_request(&self, _conn: &ConnectionInfo, _command: &Command) -> Result<()> {
        Ok(())
    }
    /// An event is about to be sent. `false` drops it for this connection.
    fn on_event(&self, _conn: &ConnectionInfo, _event: &Event) -> bool {
        true
    }
    /// The connection closed.
    fn on_close(&self, _conn: &ConnectionInfo) {}
}

/// How a connection was authenticated at upgrade time.
pub(crate) enum Admission {
    /// Authenticated (or auth is off): this scope.
    Granted {
        scope: Scope,
        token_id: Option<String>,
        /// The hash of the token presented, if any.
        token_hash: Option<String>,
    },
    /// Auth is required and no token came with the upgrade: the first frame must be `auth`.
    AwaitAuthFrame,
}

struct Connection {
    state: Arc<ServerState>,
    info: ConnectionInfo,
    /// Who this connection's requests run as: its scope, the request timeout, the hooks.
    caller: Caller,
    sub: Subscription,
    sent: u64,
    /// Requests that run beside the loop report here when they end.
    done_tx: tokio::sync::mpsc::UnboundedSender<Outcome>,
    /// The loop's end of `done_tx`.
    done_rx: tokio::sync::mpsc::UnboundedReceiver<Outcome>,
    /// Requests running beside the loop (bounded by `max_requests_in_flight`).
    in_flight: usize,
    /// Turns `true` when the connection's token is revoked through this server.
    revoked: watch::Receiver<bool>,
    /// The hash of the token the connection authenticated with, to see a revocation made
    /// elsewhere (another server on the same store) at each ping.
    token_hash: Option<String>,
    /// A client that only relays commands (another server of the cluster, forwarding to this
    /// one: [`agentvm::FORWARDING_HEADER`]): no topic is joined for its commands.
    forwarding: bool,
    /// How its socket reads (see `paced_reads`), when it came through the server's listener.
    pacing: Option<Arc<ReadPacing>>,
    /// When the last batch of events was written: an event arriving within
    /// `ServerConfig::event_coalesce` of it waits out the rest of that window, so a stream's
    /// events go out several to a write.
    last_events_write: Option<tokio::time::Instant>,
    /// The event waiting for the end of that window (the events behind it wait in the queue).
    held: Option<Arc<crate::runtime::Published>>,
}

/// A request that ended, with what its response needs.
struct Outcome {
    /// The client's id for it.
    request_id: Option<String>,
    /// What an error response carries beside `error` (AgentX's fallback fields).
    fallback: serde_json::Map<String, serde_json::Value>,
    /// `x_response`.
    response_type: &'static str,
    /// What it gave.
    result: Result<Response>,
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.into(),
    }))
}

/// The close frame a read error calls for: `None` when the peer is gone (a reset, an I/O
/// error), so there is nobody to tell. The reason fits a close frame (at most 123 bytes).
fn close_for_read_error(e: &axum::Error, max_frame_bytes: usize) -> Option<(u16, String)> {
    use tokio_tungstenite::tungstenite::error::ProtocolError;
    use tokio_tungstenite::tungstenite::Error as WsError;
    let ws = std::error::Error::source(e).and_then(|s| s.downcast_ref::<WsError>())?;
    let (code, reason) = match ws {
        WsError::Capacity(_) => (
            CLOSE_TOO_BIG,
            format!("message larger than {max_frame_bytes} bytes"),
        ),
        WsError::Utf8(_) => (CLOSE_INVALID_DATA, "invalid UTF-8 in a text frame".into()),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return None,
        WsError::Protocol(p) => (CLOSE_PROTOCOL, format!("protocol error: {p}")),
        _ => return None,
    };
    Some((code, close_reason(reason)))
}

/// `reason` cut (on a character boundary) to the 123 bytes a close frame can carry.
fn close_reason(mut reason: String) -> String {
    if reason.len() > 123 {
        let mut end = 123;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// `e` as the client may see it: the same kind, its message quoting at most a short prefix of
/// the client's input (a 3 MB invalid value is not sent back, let alone twice).
fn for_client(e: &Error) -> Error {
    Error::Remote {
        kind: e.kind(),
        message: crate::http::quoted(&e.to_string(), crate::http::QUOTE_MAX),
    }
}

/// Sends a close frame and, as RFC 6455 asks, waits (at most [`CLOSE_WAIT`]) for the client's
/// Close before the connection is dropped; what the client sends meanwhile is read and
/// dropped, so closing does not reset the connection (a reset would discard the close frame
/// on the client's side).
async fn close_handshake(socket: &mut WebSocket, code: u16, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_WAIT, async {
        if socket.send(close(code, reason)).await.is_ok() {
            while let Some(Ok(m)) = socket.recv().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        }
    })
    .await;
}

/// Runs one connection until it closes.
pub(crate) async fn serve(
    mut socket: WebSocket,
    state: Arc<ServerState>,
    admission: Admission,
    remote_addr: Option<SocketAddr>,
    forwarding: bool,
    pacing: Option<Arc<ReadPacing>>,
) {
    let conn_id = state.next_connection_id();
    let (scope, token_id, token_hash) = match admission {
        Admission::Granted {
            scope,
            token_id,
            token_hash,
        } => (scope, token_id, token_hash),
        Admission::AwaitAuthFrame => match await_auth(&mut socket, &state).await {
            Some(granted) => granted,
            None => return,
        },
    };
    let vm: &AgentVm = &state.vm;
    let info = ConnectionInfo {
        id: conn_id,
        remote_addr,
        token_id,
        runtime: vm.scoped(scope.clone()),
        scope: scope.clone(),
    };
    if let Some(h) = state.handler() {
        if let Err(e) = h.on_open(&info) {
            let _ = socket
                .send(Message::Text(
                    state_frame(&info.id, 0, &codec::system_error(&for_client(&e), None)).into(),
                ))
                .await;
            let _ = socket.send(close(CLOSE_POLICY, "refused")).await;
            return;
        }
    }
    let sub = match vm.bus().subscribe(EventFilter {
        global: true,
        all_sessions: false,
        sessions: vec![],
        scope,
        queue: Some(state.config.send_queue),
    }) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e.chain(), "subscribing a connection");
            return;
        }
    };
    state.metrics.connection_opened();
    let caller = Caller {
        scope: info.scope.clone(),
        token_id: info.token_id.clone(),
        deadline: Some(state.config.request_timeout),
        hook: Some(Arc::new(ConnectionHook {
            state: state.clone(),
            info: info.clone(),
        })),
    };
    let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
    let revoked = match &info.token_id {
        Some(id) => state.watch_token(id),
        None => watch::channel(false).1,
    };
    let mut conn = Connection {
        state: state.clone(),
        info,
        caller,
        sub,
        sent: 0,
        done_tx,
        done_rx,
        in_flight: 0,
        revoked,
        token_hash,
        forwarding,
        // A member relaying commands waits on each answer: its frames are always read at once.
        pacing: if forwarding { None } else { pacing },
        last_events_write: None,
        held: None,
    };
    conn.run(&mut socket).await;
    state.metrics.connection_closed();
    if let Some(h) = state.handler() {
        h.on_close(&conn.info);
    }
}

fn state_frame(conn_id: &str, n: u64, event: &Event) -> String {
    let json = serde_json::to_string(event).unwrap_or_default();
    codec::wrap(&format!("{conn_id}_{n}"), &json, None)
}

/// Waits for the `auth` frame of a connection that came without a token.
async fn await_auth(
    socket: &mut WebSocket,
    state: &ServerState,
) -> Option<(Scope, Option<String>, Option<String>)> {
    let refuse = |message: String| {
        let e = Error::Unauthorized(message);
        state_frame("auth", 0, &codec::system_error(&for_client(&e), None))
    };
    let first = tokio::time::timeout(state.config.auth_timeout, socket.recv()).await;
    let text = match first {
        Ok(Some(Ok(Message::Text(t)))) => t,
        // Gone before authenticating: the handshake and the protocol still hold.
        Ok(Some(Ok(Message::Close(_)))) => {
            let _ = tokio::time::timeout(CLOSE_WAIT, socket.flush()).await;
            return None;
        }
        Ok(Some(Err(e))) => {
            if let Some((code, reason)) = close_for_read_error(&e, state.config.max_frame_bytes) {
                close_handshake(socket, code, &reason).await;
            }
            return None;
        }
        Ok(Some(Ok(_))) | Ok(None) | Err(_) => {
            let _ = socket
                .send(Message::Text(refuse("authentication required: send a bearer token in the Authorization header, ?token=, or a first {\"type\":\"auth\"} frame".into()).into()))
                .await;
            let _ = socket
                .send(close(CLOSE_POLICY, "authentication required"))
                .await;
            return None;
        }
    };
    let token = match codec::decode_client_frame(&text).frame {
        Ok(ClientFrame::Auth { token: Some(t) }) => t,
        _ => {
            let _ = socket
                .send(Message::Text(refuse("authentication required: the first frame must be {\"type\":\"auth\",\"headers\":{\"Authorization\":\"Bearer <token>\"}}".into()).into()))
                .await;
            let _ = socket
                .send(close(CLOSE_POLICY, "authentication required"))
                .await;
            return None;
        }
    };
    match crate::auth::verify_token(&**state.vm.store(), &token) {
        Ok((record, scope)) => Some((scope, Some(record.id), Some(record.hash))),
        Err(e) => {
            let _ = socket
                .send(Message::Text(refuse(e.to_string()).into()))
                .await;
            let _ = socket.send(close(CLOSE_POLICY, "invalid token")).await;
            None
        }
    }
}

enum Flow {
    Continue,
    Close,
}

/// Resolves once the token is revoked (never, for a connection without one).
async fn wait_revoked(revoked: &mut watch::Receiver<bool>) {
    if revoked.wait_for(|r| *r).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// The error of a request whose connection's token was revoked while it ran.
fn revoked_error() -> Error {
    Error::Unauthorized("the connection's token has been revoked".into())
}

impl Connection {
    async fn run(&mut self, socket: &mut WebSocket) {
        let mut shutdown = self.state.shutdown.clone();
        let mut revoked = self.revoked.clone();
        // Made once and kept across turns of the loop: made in the loop, each would join and
        // leave its channel's list of waiters at every frame sent and every ack read.
        let shutting_down = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        let revoked = async move { wait_revoked(&mut revoked).await };
        tokio::pin!(shutting_down, revoked);
        // Armed while an event is held back to share a write (`hold_until`); one timer, reset.
        let hold = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(hold);
        let mut ping = tokio::time::interval(self.state.config.ping_interval);
        ping.tick().await;
        let mut awaiting_pong = false;
        loop {
            tokio::select! {
                biased;
                _ = &mut shutting_down => {
                    let _ = tokio::time::timeout(CLOSE_WAIT, socket.send(close(CLOSE_GOING_AWAY, "server shutting down"))).await;
                    return;
                }
                _ = &mut revoked => {
                    self.close_revoked(socket).await;
                    return;
                }
                incoming = socket.recv() => {
                    let flow = match incoming {
                        None => Flow::Close,
                        Some(Err(e)) => {
                            if let Some((code, reason)) = close_for_read_error(&e, self.state.config.max_frame_bytes) {
                                self.state.metrics.frame_refused();
                                tracing::info!(conn = %self.info.id, code, reason, "closing a connection that broke the protocol");
                                close_handshake(socket, code, &reason).await;
                            }
                            Flow::Close
                        }
                        Some(Ok(Message::Text(text))) => self.on_text(socket, text.as_str()).await,
                        Some(Ok(Message::Binary(_))) => {
                            self.state.metrics.frame_refused();
                            let e = Error::invalid("binary frames are not supported: send JSON text frames");
                            self.send_event(socket, &codec::system_error(&e, None)).await
                        }
                        Some(Ok(Message::Pong(_))) => {
                            awaiting_pong = false;
                            Flow::Continue
                        }
                        Some(Ok(Message::Ping(_))) => Flow::Continue,
                        Some(Ok(Message::Close(_))) => {
                            // The reply echoing the client's code is queued: write it, then end.
                            let _ = tokio::time::timeout(CLOSE_WAIT, socket.flush()).await;
                            Flow::Close
                        }
                    };
                    if matches!(flow, Flow::Close) {
                        return;
                    }
                }
                _ = &mut hold, if self.held.is_some() => {
                    if matches!(self.flush_held(socket).await, Flow::Close) {
                        return;
                    }
                }
                item = self.sub.recv(), if self.held.is_none() => {
                    match item {
                        Some(BusItem::Event(p)) => match self.hold_until() {
                            Some(until) => {
                                self.held = Some(p);
                                hold.as_mut().reset(until);
                            }
                            None => {
                                if matches!(self.forward(socket, p).await, Flow::Close) {
                                    return;
                                }
                            }
                        },
                        Some(BusItem::Overflowed { .. }) => self.resume_after_overflow(),
                        None => return,
                    }
                }
                Some(outcome) = self.done_rx.recv() => {
                    self.in_flight = self.in_flight.saturating_sub(1);
                    if matches!(self.drain_events(socket).await, Flow::Close) {
                        return;
                    }
                    if matches!(self.respond(socket, outcome).await, Flow::Close) {
                        return;
                    }
                }
                _ = ping.tick() => {
                    if awaiting_pong {
                        tracing::info!(conn = %self.info.id, "no pong since the last ping: dropping the connection");
                        return;
                    }
                    awaiting_pong = true;
                    if self.token_revoked_in_store() {
                        self.close_revoked(socket).await;
                        return;
                    }
                    if matches!(self.write(socket, Message::Ping(Vec::new().into())).await, Flow::Close) {
                        return;
                    }
                }
            }
        }
    }

    /// When an event that arrives now should go out, if not at once: while the stream is hot
    /// (the last batch went out less than `event_coalesce` ago) it waits out the rest of that
    /// window, and what is published meanwhile goes out in the same write. Nothing wakes the
    /// connection while an event is held (the queue is not polled, so it keeps no waker): one
    /// timer wake-up replaces a wake-up, a write and a read of the client's acks per event. The
    /// first event after a quiet spell goes out at once, so a lone event is never delayed.
    fn hold_until(&self) -> Option<tokio::time::Instant> {
        let window = self.state.config.event_coalesce;
        let until = self.last_events_write? + window;
        (!window.is_zero() && tokio::time::Instant::now() < until).then_some(until)
    }

    /// Writes the held event, if any, and everything queued behind it.
    async fn flush_held(&mut self, socket: &mut WebSocket) -> Flow {
        match self.held.take() {
            Some(p) => self.forward(socket, p).await,
            None => Flow::Continue,
        }
    }

    /// Sends `first` and whatever else is queued right now (up to [`MAX_BATCH`] frames) with
    /// one flush, so a burst of events is one write; the whole batch gets one send budget.
    async fn forward(
        &mut self,
        socket: &mut WebSocket,
        first: Arc<crate::runtime::Published>,
    ) -> Flow {
        let budget = self.state.config.send_timeout;
        match tokio::time::timeout(budget, self.write_batch(socket, first)).await {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err(_)) => Flow::Close,
            Err(_) => self.send_stalled(socket).await,
        }
    }

    /// Frames and queues `first` and the events queued behind it, then flushes.
    async fn write_batch(
        &mut self,
        socket: &mut WebSocket,
        first: Arc<crate::runtime::Published>,
    ) -> std::result::Result<(), axum::Error> {
        // Looked up once per batch, not per event (a lock and a reference count each time).
        let handler = self.state.handler();
        let mut next = Some(first);
        let mut batch = 0;
        while let Some(p) = next.take() {
            if handler
                .as_ref()
                .map(|h| h.on_event(&self.info, &p.event))
                .unwrap_or(true)
            {
                self.sent += 1;
                let frame = event_frame(&self.info.id, self.sent, p.escaped_json(), p.cursor);
                socket.feed(Message::Text(frame.into())).await?;
                batch += 1;
                // AgentX follows every stored message with a `message_persisted` notice.
                if let Some(notice) = codec::message_persisted(&p.event) {
                    let frame = codec::wrap(&self.msg_id(), &notice.to_string(), None);
                    socket.feed(Message::Text(frame.into())).await?;
                }
            }
            if batch < MAX_BATCH {
                match self.sub.try_recv() {
                    Some(BusItem::Event(p)) => next = Some(p),
                    Some(BusItem::Overflowed { .. }) => self.resume_after_overflow(),
                    None => {}
                }
            }
        }
        self.state.metrics.events_sent(batch);
        socket.flush().await?;
        // A batch cut at `MAX_BATCH` left a backlog: the next one goes out at once.
        self.last_events_write = (batch < MAX_BATCH).then(tokio::time::Instant::now);
        // The client's acks for these are read with the next batch.
        if let Some(p) = &self.pacing {
            p.events_written();
        }
        Ok(())
    }

    /// Writes one message within the send budget.
    async fn write(&mut self, socket: &mut WebSocket, message: Message) -> Flow {
        match tokio::time::timeout(self.state.config.send_timeout, socket.send(message)).await {
            Ok(Ok(())) => Flow::Continue,
            Ok(Err(_)) => Flow::Close,
            Err(_) => self.send_stalled(socket).await,
        }
    }

    /// A write waited the whole send budget: the client is not reading.
    async fn send_stalled(&mut self, socket: &mut WebSocket) -> Flow {
        let reason = format!(
            "send budget: nothing read for {} ms",
            self.state.config.send_timeout.as_millis()
        );
        self.over_budget(socket, &reason).await
    }

    /// Closes the connection with [`CLOSE_OVER_BUDGET`] and `reason`, logged at WARN.
    async fn over_budget(&mut self, socket: &mut WebSocket, reason: &str) -> Flow {
        tracing::warn!(
            conn = %self.info.id,
            remote = ?self.info.remote_addr,
            reason,
            "closing a connection over its budget"
        );
        self.state.metrics.over_budget();
        // The close frame goes out after what the client has not read yet.
        close_handshake(socket, CLOSE_OVER_BUDGET, reason).await;
        Flow::Close
    }

    /// Whether the connection's token is revoked in the store (by anyone, anywhere).
    fn token_revoked_in_store(&self) -> bool {
        let Some(hash) = &self.token_hash else {
            return false;
        };
        match self.state.vm.store().token_by_hash(hash) {
            Ok(Some(record)) => record.revoked_at.is_some(),
            Ok(None) => true,
            Err(e) => {
                tracing::warn!(conn = %self.info.id, error = %e.chain(), "checking a connection's token");
                false
            }
        }
    }

    /// The connection's token was revoked: a policy close.
    async fn close_revoked(&mut self, socket: &mut WebSocket) {
        tracing::info!(conn = %self.info.id, token = ?self.info.token_id, "token revoked: closing its connection");
        let e = Error::Unauthorized("the connection's token has been revoked".into());
        let _ = tokio::time::timeout(
            CLOSE_WAIT,
            socket.send(Message::Text(
                state_frame(&self.info.id, 0, &codec::system_error(&e, None)).into(),
            )),
        )
        .await;
        let _ = tokio::time::timeout(
            CLOSE_WAIT,
            socket.send(close(CLOSE_POLICY, "token revoked")),
        )
        .await;
    }

    /// Whether joining `topic` would take the connection over its subscription budget.
    fn joins_over_budget(&self, topic: &str) -> bool {
        !self.sub.has_topic(topic)
            && self.sub.topics().count() >= self.state.config.max_subscriptions
    }

    /// Sends the events queued right now (at most about a queue's worth), so a response that
    /// follows comes after the events its request published.
    async fn drain_events(&mut self, socket: &mut WebSocket) -> Flow {
        if matches!(self.flush_held(socket).await, Flow::Close) {
            return Flow::Close;
        }
        for _ in 0..=self.state.config.send_queue {
            match self.sub.try_recv() {
                Some(BusItem::Event(p)) => {
                    if matches!(self.forward(socket, p).await, Flow::Close) {
                        return Flow::Close;
                    }
                }
                Some(BusItem::Overflowed { .. }) => self.resume_after_overflow(),
                None => break,
            }
        }
        Flow::Continue
    }

    /// The queue overflowed: continue from the last cursor sent, replayed from the log.
    fn resume_after_overflow(&mut self) {
        self.state.metrics.overflowed();
        tracing::info!(conn = %self.info.id, "slow consumer: resuming from its last cursor");
        match self.sub.resume() {
            Ok(s) => self.sub = s,
            Err(e) => tracing::warn!(error = %e.chain(), "resuming a connection"),
        }
    }

    fn msg_id(&mut self) -> String {
        self.sent += 1;
        format!("{}_{}", self.info.id, self.sent)
    }

    async fn send_text(&mut self, socket: &mut WebSocket, payload_json: &str) -> Flow {
        // A response (or an error) may be followed at once by the client's next request.
        if let Some(p) = &self.pacing {
            p.read_now();
        }
        let frame = codec::wrap(&self.msg_id(), payload_json, None);
        self.write(socket, Message::Text(frame.into())).await
    }

    async fn send_event(&mut self, socket: &mut WebSocket, event: &Event) -> Flow {
        let json = serde_json::to_string(event).unwrap_or_default();
        self.send_text(socket, &json).await
    }

    async fn on_text(&mut self, socket: &mut WebSocket, text: &str) -> Flow {
        // A client acks every frame it receives, and acks need nothing from the server: the
        // common form is recognized without parsing JSON (any other goes through the decoder).
        if codec::plain_ack(text).is_some() {
            return Flow::Continue;
        }
        let Decoded { ack, frame } = codec::decode_client_frame(text);
        if let Some(id) = ack {
            let ack = serde_json::json!({ "__ack": id }).to_string();
            if matches!(
                self.write(socket, Message::Text(ack.into())).await,
                Flow::Close
            ) {
                return Flow::Close;
            }
        }
        match frame {
            Ok(ClientFrame::Ack(_)) => Flow::Continue,
            Ok(ClientFrame::Auth { .. }) => Flow::Continue, // already authenticated
            Ok(ClientFrame::Subscribe { session_id, .. })
                if self.joins_over_budget(&session_id) =>
            {
                let reason = format!(
                    "subscription budget: more than {} topics",
                    self.state.config.max_subscriptions
                );
                self.over_budget(socket, &reason).await
            }
            Ok(ClientFrame::Subscribe {
                session_id,
                after_cursor,
                respond,
            }) => match self.join(&session_id, after_cursor).await {
                // AgentX answers no subscribe; agentvm's own client asks for the cursor.
                Ok(_) if !respond => Flow::Continue,
                Err(e) if !respond => {
                    // AgentX accepts a subscribe to a session that is gone, silently; an
                    // unknown and a forbidden session look the same.
                    tracing::debug!(conn = %self.info.id, topic = %session_id, error = %e, "subscribe to a topic that cannot be joined: ignored");
                    Flow::Continue
                }
                Ok(cursor) => {
                    let reply = serde_json::json!({
                        "type": "subscribe_response",
                        "timestamp": crate::model::now_ms(),
                        "data": { "sessionId": session_id, "cursor": cursor.to_string() },
                        "source": "command", "category": "response", "intent": "result",
                    });
                    self.send_text(socket, &reply.to_string()).await
                }
                Err(e) => {
                    self.send_event(
                        socket,
                        &codec::subscribe_refused(&for_client(&e), &session_id),
                    )
                    .await
                }
            },
            Ok(ClientFrame::Unsubscribe { session_id }) => {
                self.sub.leave(&session_id);
                Flow::Continue
            }
            Ok(ClientFrame::Request {
                request_id,
                command,
            }) => self.on_request(socket, request_id, *command).await,
            Err(fe) => {
                self.state.metrics.frame_refused();
                let rid = fe.request_id.as_deref();
                if let Flow::Close = self
                    .send_event(socket, &codec::system_error(&for_client(&fe.error), rid))
                    .await
                {
                    return Flow::Close;
                }
                // Metrics labels come from the fixed set of commands, never from the client:
                // a type the server does not know is counted as `unknown`.
                if fe.unknown_type {
                    self.state.metrics.unknown_request();
                } else if let Some(t) = &fe.response_type {
                    let request_type = format!("{}_request", t.trim_end_matches("_response"));
                    if let Some(kind) = CommandKind::from_type_name(&request_type) {
                        self.state.vm.request_metrics().record_invalid(kind);
                    }
                }
                match (&fe.response_type, rid) {
                    (Some(t), Some(_)) => {
                        let v = codec::error_response_value(t, rid, &for_client(&fe.error));
                        self.send_text(socket, &v.to_string()).await
                    }
                    _ => Flow::Continue,
                }
            }
        }
    }

    /// Joins a session or sandbox topic the connection may see.
    async fn join(&mut self, topic: &str, after: Option<u64>) -> Result<u64> {
        self.state.vm.check_topic(&self.info.scope, topic).await?;
        self.sub.join(topic, after)
    }

    async fn on_request(
        &mut self,
        socket: &mut WebSocket,
        request_id: Option<String>,
        command: Command,
    ) -> Flow {
        let response_type = command.response_type();
        let fallback = codec::error_fallback(response_type, Some(&command));
        // Join the topic the command will publish on before it runs — a message_send's
        // session (docs/protocol.md FIX), a sandbox_exec's sandbox — so nothing is missed.
        let topic = match self.forwarding {
            true => None,
            false => self.state.vm.topic_of(&command, &self.info.scope).await,
        };
        if let Some(topic) = topic {
            if self.joins_over_budget(&topic) {
                let reason = format!(
                    "subscription budget: more than {} topics",
                    self.state.config.max_subscriptions
                );
                return self.over_budget(socket, &reason).await;
            }
            let _ = self.sub.join(&topic, None);
        }
        if matches!(command, Command::SandboxExec(_)) {
            if self.in_flight >= self.state.config.max_requests_in_flight {
                let reason = format!(
                    "request budget: more than {} requests in flight",
                    self.state.config.max_requests_in_flight
                );
                return self.over_budget(socket, &reason).await;
            }
            self.in_flight += 1;
            // Runs beside the loop, so its output streams and a cancel sent on this connection
            // is answered; bounded by the exec's own timeout, not the request timeout.
            let vm = self.state.vm.clone();
            let caller = Caller {
                deadline: None,
                ..self.caller.clone()
            };
            let done = self.done_tx.clone();
            let mut revoked = self.revoked.clone();
            let state = self.state.clone();
            tokio::spawn(async move {
                let result = tokio::select! {
                    r = vm.dispatch(command, &caller) => r,
                    _ = wait_revoked(&mut revoked) => Err(revoked_error()),
                };
                state.after_dispatch(&result);
                let _ = done.send(Outcome {
                    request_id,
                    fallback,
                    response_type,
                    result,
                });
            });
            return Flow::Continue;
        }
        let mut revoked = self.revoked.clone();
        let result = tokio::select! {
            r = self.state.vm.dispatch(command, &self.caller) => r,
            _ = wait_revoked(&mut revoked) => Err(revoked_error()),
        };
        self.state.after_dispatch(&result);
        self.respond(
            socket,
            Outcome {
                request_id,
                fallback,
                response_type,
                result,
            },
        )
        .await
    }

    /// Sends a request's response (or its error, after a `system_error`).
    async fn respond(&mut self, socket: &mut WebSocket, outcome: Outcome) -> Flow {
        // Events held back to share a write go before the response, as they came first.
        if matches!(self.flush_held(socket).await, Flow::Close) {
            return Flow::Close;
        }
        let Outcome {
            request_id,
            fallback,
            response_type,
            result,
        } = outcome;
        let rid = request_id.as_deref();
        match result {
            Ok(response) => {
                let v = codec::response_value(&response, rid);
                if let Flow::Close = self.send_text(socket, &v.to_string()).await {
                    return Flow::Close;
                }
                match &response {
                    // AgentX reports the stored user message as it does every other one.
                    Response::MessageSend(r) => {
                        let notice = codec::user_message_persisted(r);
                        self.send_text(socket, &notice.to_string()).await
                    }
                    _ => Flow::Continue,
                }
            }
            Err(e) => {
                if let Flow::Close = self
                    .send_event(socket, &codec::system_error(&for_client(&e), rid))
                    .await
                {
                    return Flow::Close;
                }
                let v = codec::error_response_with(response_type, rid, &for_client(&e), fallback);
                self.send_text(socket, &v.to_string()).await
            }
        }
    }
}

/// Runs the server's [`ConnectionHandler::on_request`] for one connection's requests.
pub(crate) struct ConnectionHook {
    pub state: Arc<ServerState>,
    pub info: ConnectionInfo,
}

impl RequestHook for ConnectionHook {
    fn on_request(&self, caller: &Caller, command: &Command) -> Result<()> {
        // With auth off every client is an operator, but a token for every container outlives
        // that: it would open the server once auth is on. Only a token holder mints one.
        if let Command::TokenCreate(r) = command {
            if r.all && caller.token_id.is_none() {
                return Err(Error::Unauthorized(
                    "a token for all containers is created with an operator token \
                     (Authorization: Bearer ...), or on the server's machine with \
                     `agentvm-server token create --all`"
                        .into(),
                ));
            }
        }
        match self.state.handler() {
            Some(h) => h.on_request(&self.info, command),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_frames_are_the_codec_s_frames() {
        let escaped = codec::escape(r#"{"type":"text_delta","data":{"text":"a \"b\""}}"#);
        for cursor in [None, Some(0), Some(u64::MAX)] {
            assert_eq!(
                event_frame("conn_7", 42, &escaped, cursor),
                codec::wrap_escaped("conn_7_42", &escaped, cursor)
            );
        }
    }
}
