//! `GET /v1/sandboxes/{id}/terminal`: a `sandbox_terminal_open_request` whose terminal is
//! spoken over a WebSocket.
//!
//! Everything runs through the dispatcher as the token's caller, like any REST route: the
//! route joins the sandbox's topic, opens the terminal (a failure is an ordinary JSON error
//! with its status, before any upgrade), and upgrades. Then:
//!
//! - a binary frame from the client, or a text frame that is not a control message, is input
//!   (`sandbox_terminal_input_request`, in pieces of at most 64 KiB);
//! - a text frame `{"type":"resize","cols":C,"rows":R}` resizes it
//!   (`sandbox_terminal_resize_request`);
//! - each `sandbox_terminal_output` of the terminal goes to the client as a binary frame;
//! - a failed command is reported as a text frame `{"type":"error","error","kind"}`;
//! - when the command ends, a text frame `{"type":"exit","exitCode":N}` (`null` when Docker
//!   gave none), then a close (1000).
//!
//! When the client closes first, or the server shuts down (close 1001), the terminal is
//! closed (`sandbox_terminal_close_request`).
//! A client slower than the output is caught up rather than cut off: the route resumes its
//! subscription from the last event it forwarded (the bus's replay log, as far as it reaches).

use crate::http::ApiError;
use crate::model::{
    new_id, Command, EventPayload, FileEncoding, SandboxTerminalCloseRequest,
    SandboxTerminalInputRequest, SandboxTerminalResizeRequest,
};
use crate::rest::routes::Route;
use crate::runtime::{BusItem, Caller, EventFilter, Runtime, Subscription};
use crate::ServerState;
use agentvm::scheduler::terminal::MAX_TERMINAL_INPUT_BYTES;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodRouter;
use base64::Engine;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The handler of the terminal route of the REST table.
pub(crate) fn route(route: &'static Route) -> MethodRouter<Arc<ServerState>> {
    axum::routing::get(
        move |State(state): State<Arc<ServerState>>,
              headers: HeaderMap,
              Path(id): Path<String>,
              Query(query): Query<HashMap<String, String>>,
              upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>| async move {
            match open(route, &state, &headers, id, &query, upgrade).await {
                Ok(r) => r,
                Err(e) => e.into_response(),
            }
        },
    )
}

/// Checks the caller, opens the terminal and upgrades.
async fn open(
    route: &'static Route,
    state: &Arc<ServerState>,
    headers: &HeaderMap,
    sandbox_id: String,
    query: &HashMap<String, String>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let (caller, command) = crate::rest::prepare(
        route,
        state,
        headers,
        Some(sandbox_id),
        query,
        Default::default(),
    )?;
    let upgrade = upgrade.map_err(|e| {
        ApiError(crate::error::Error::invalid(format!(
            "{} upgrades to a WebSocket: {e}",
            route.path
        )))
    })?;
    let Command::SandboxTerminalOpen(mut request) = command else {
        return Err(ApiError(crate::error::Error::Internal(
            "the terminal route runs sandbox_terminal_open_request".into(),
        )));
    };
    let terminal_id = request
        .terminal_id
        .get_or_insert_with(|| new_id("term"))
        .clone();
    // Joined first, so no output is missed; a sandbox the caller may not see is refused here
    // exactly as the command would refuse it.
    let events = state
        .vm
        .for_caller(caller.clone())
        .subscribe(EventFilter {
            sessions: vec![(request.sandbox_id.clone(), None)],
            ..Default::default()
        })
        .await?;
    let opened = state
        .vm
        .dispatch(Command::SandboxTerminalOpen(request), &caller)
        .await;
    state.after_dispatch(&opened);
    opened?;
    let max = state.config.max_frame_bytes;
    let state = state.clone();
    let closer = (state.clone(), caller.clone(), terminal_id.clone());
    Ok(upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_failed_upgrade(move |_| {
            let (state, caller, terminal_id) = closer;
            tokio::spawn(async move { close(&state, &caller, &terminal_id).await });
        })
        .on_upgrade(move |socket| async move {
            let mut session = Session {
                state,
                caller,
                terminal_id,
                socket,
                refused: false,
            };
            if !session.run(events).await {
                close(&session.state, &session.caller, &session.terminal_id).await;
            }
        }))
}

/// Ends the terminal (its client left); a terminal already ended is not an error.
async fn close(state: &Arc<ServerState>, caller: &Caller, terminal_id: &str) {
    let command = Command::SandboxTerminalClose(SandboxTerminalCloseRequest {
        terminal_id: terminal_id.to_string(),
    });
    let result = state.vm.dispatch(command, caller).await;
    state.after_dispatch(&result);
    let result = match (result, state.vm.scheduler()) {
        // A token revoked meanwhile may not close it; the route that opened it still does.
        (Err(e), Some(s)) if e.kind() == crate::error::ErrorKind::Unauthorized => {
            s.close_terminal(terminal_id).await.map(|_| ())
        }
        (r, _) => r.map(|_| ()),
    };
    if let Err(e) = result {
        if e.kind() != crate::error::ErrorKind::NotFound {
            tracing::warn!(terminal = %terminal_id, error = %e.chain(), "closing a terminal its client left");
        }
    }
}

/// One upgraded terminal connection.
struct Session {
    /// The server, for the dispatcher.
    state: Arc<ServerState>,
    /// Who opened it: every input and resize runs as them.
    caller: Caller,
    /// The terminal.
    terminal_id: String,
    /// The client.
    socket: WebSocket,
    /// The caller was refused (its token revoked): the session ends.
    refused: bool,
}

/// What a sandbox-topic event means for this terminal.
enum Seen {
    Output(String),
    Exited(Option<i64>),
    Other,
}

impl Session {
    /// Forwards frames both ways until the terminal ends (`true`) or the client leaves
    /// (`false`).
    async fn run(&mut self, mut events: Subscription) -> bool {
        let mut shutdown = self.state.shutdown.clone();
        loop {
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                    let _ = self
                        .socket
                        .send(Message::Close(Some(CloseFrame {
                            code: crate::CLOSE_GOING_AWAY,
                            reason: "server shutting down".into(),
                        })))
                        .await;
                    return false;
                }
                item = events.recv() => match item {
                    Some(BusItem::Overflowed { .. }) => match events.resume() {
                        Ok(resumed) => events = resumed,
                        Err(e) => {
                            self.error(&e).await;
                            return false;
                        }
                    },
                    Some(BusItem::Event(e)) => match self.classify(&e.event.payload) {
                        Seen::Output(data) => {
                            if self.socket.send(Message::Binary(data.into_bytes().into())).await.is_err() {
                                return false;
                            }
                        }
                        Seen::Exited(code) => {
                            let frame = json!({ "type": "exit", "exitCode": code }).to_string();
                            let _ = self.socket.send(Message::Text(frame.into())).await;
                            let _ = self
                                .socket
                                .send(Message::Close(Some(CloseFrame {
                                    code: 1000,
                                    reason: "the terminal's command ended".into(),
                                })))
                                .await;
                            return true;
                        }
                        Seen::Other => {}
                    },
                    None => return false,
                },
                frame = self.socket.recv() => match frame {
                    Some(Ok(Message::Binary(bytes))) => self.input(&bytes).await,
                    Some(Ok(Message::Text(text))) => self.text(text.as_str()).await,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return false,
                },
            }
            if self.refused {
                let _ = self
                    .socket
                    .send(Message::Close(Some(CloseFrame {
                        code: crate::CLOSE_POLICY,
                        reason: "the token was refused".into(),
                    })))
                    .await;
                return false;
            }
        }
    }

    fn classify(&self, payload: &EventPayload) -> Seen {
        match payload {
            EventPayload::SandboxTerminalOutput {
                terminal_id, data, ..
            } if *terminal_id == self.terminal_id => Seen::Output(data.clone()),
            EventPayload::SandboxTerminalExited {
                terminal_id,
                exit_code,
                ..
            } if *terminal_id == self.terminal_id => Seen::Exited(*exit_code),
            _ => Seen::Other,
        }
    }

    /// A text frame: a control message (a JSON object with a `type`), or input.
    async fn text(&mut self, text: &str) {
        let control = serde_json::from_str::<Value>(text)
            .ok()
            .filter(|v| v.get("type").is_some_and(Value::is_string));
        let Some(control) = control else {
            return self.input(text.as_bytes()).await;
        };
        match control["type"].as_str() {
            Some("resize") => {
                let size = |k: &str| control.get(k).and_then(Value::as_u64);
                let (Some(cols), Some(rows)) = (size("cols"), size("rows")) else {
                    return self
                        .error(&crate::error::Error::invalid(
                            "a resize frame needs cols and rows, numbers 1 to 1000",
                        ))
                        .await;
                };
                let command = Command::SandboxTerminalResize(SandboxTerminalResizeRequest {
                    terminal_id: self.terminal_id.clone(),
                    cols: u16::try_from(cols).unwrap_or(0),
                    rows: u16::try_from(rows).unwrap_or(0),
                });
                self.dispatch(command).await;
            }
            other => {
                let e = crate::error::Error::invalid(format!(
                    "unknown control frame type {:?}; the terminal takes \"resize\" (any other text is input)",
                    other.unwrap_or_default()
                ));
                self.error(&e).await;
            }
        }
    }

    /// Input, in pieces the command takes.
    async fn input(&mut self, bytes: &[u8]) {
        for piece in bytes.chunks(MAX_TERMINAL_INPUT_BYTES) {
            let command = Command::SandboxTerminalInput(SandboxTerminalInputRequest {
                terminal_id: self.terminal_id.clone(),
                data: base64::engine::general_purpose::STANDARD.encode(piece),
                encoding: FileEncoding::Base64,
            });
            if !self.dispatch(command).await {
                return;
            }
        }
    }

    /// Runs a command as the caller; a failure becomes an error frame. `true` on success.
    async fn dispatch(&mut self, command: Command) -> bool {
        let result = self.state.vm.dispatch(command, &self.caller).await;
        self.state.after_dispatch(&result);
        match result {
            Ok(_) => true,
            Err(e) => {
                self.refused = e.kind() == crate::error::ErrorKind::Unauthorized;
                self.error(&e).await;
                false
            }
        }
    }

    async fn error(&mut self, e: &crate::error::Error) {
        let frame = json!({ "type": "error", "error": e.to_string(), "kind": e.kind().as_str() });
        let _ = self
            .socket
            .send(Message::Text(frame.to_string().into()))
            .await;
    }
}
