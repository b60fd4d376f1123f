//! `POST /v1/sandboxes/{id}/exec`: a `sandbox_exec_request` whose output is streamed as NDJSON.
//!
//! The route picks the execution id, joins the sandbox's topic, then runs the command through
//! the dispatcher like any other. Until the command has started, a failure is an ordinary JSON
//! error with its status (an unknown sandbox is a 404); from then on each `sandbox_exec_output`
//! event of that execution becomes a `{"stream", "data"}` line as it arrives, and the last line
//! is the execution (the command's response) — or `{"error", "kind"}` if it failed after all.

use crate::http::ApiError;
use crate::model::{new_id, Command, EventPayload, Response as CommandResponse};
use crate::runtime::{BusItem, EventFilter, Runtime, Subscription};
use crate::ServerState;
use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Lines buffered between the exec and a slow HTTP reader (the scheduler caps output anyway).
const LINES_IN_FLIGHT: usize = 256;

type Run = JoinHandle<crate::error::Result<CommandResponse>>;

/// What an event of the sandbox topic means for this execution.
enum Seen {
    Started,
    Output(Bytes),
    Other,
}

fn classify(item: BusItem, execution_id: &str) -> Seen {
    let BusItem::Event(e) = item else {
        return Seen::Other;
    };
    match &e.event.payload {
        EventPayload::SandboxExecStarted {
            execution_id: id, ..
        } if id == execution_id => Seen::Started,
        EventPayload::SandboxExecOutput {
            execution_id: id,
            stream,
            data,
            ..
        } if id == execution_id => Seen::Output(output_line(stream, data)),
        _ => Seen::Other,
    }
}

pub(crate) async fn respond(
    state: &Arc<ServerState>,
    caller: crate::runtime::Caller,
    command: Command,
) -> Result<Response, ApiError> {
    let Command::SandboxExec(mut request) = command else {
        return Err(ApiError(crate::error::Error::Internal(
            "the exec route runs sandbox_exec_request".into(),
        )));
    };
    let execution_id = request
        .execution_id
        .get_or_insert_with(|| new_id("exec"))
        .clone();
    // Join first, so no output can be missed; a sandbox the caller may not see is refused
    // here exactly as the command would refuse it.
    let mut events = state
        .vm
        .for_caller(caller.clone())
        .subscribe(EventFilter {
            global: false,
            all_sessions: false,
            sessions: vec![(request.sandbox_id.clone(), None)],
            ..Default::default()
        })
        .await?;
    let vm = state.vm.clone();
    let mut run: Run =
        tokio::spawn(async move { vm.dispatch(Command::SandboxExec(request), &caller).await });
    // Until it starts, a failure is the response's status.
    let mut early = Vec::new();
    loop {
        tokio::select! {
            item = events.recv() => match item.map(|i| classify(i, &execution_id)) {
                Some(Seen::Started) => break,
                Some(Seen::Output(l)) => early.push(l),
                Some(Seen::Other) => {}
                None => break,
            },
            result = &mut run => {
                return match result {
                    Ok(Err(e)) => Err(ApiError(e)),
                    other => Ok(ndjson(finished(events, &execution_id, early, other))),
                };
            }
        }
    }
    let (tx, rx) = mpsc::channel::<Bytes>(LINES_IN_FLIGHT);
    tokio::spawn(stream(events, run, execution_id, early, tx));
    Ok(ndjson(Body::from_stream(futures::stream::unfold(
        rx,
        |mut rx| async move {
            rx.recv()
                .await
                .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
        },
    ))))
}

/// Forwards the execution's output as it comes, then its result.
async fn stream(
    mut events: Subscription,
    mut run: Run,
    execution_id: String,
    early: Vec<Bytes>,
    tx: mpsc::Sender<Bytes>,
) {
    for l in early {
        if tx.send(l).await.is_err() {
            return;
        }
    }
    loop {
        tokio::select! {
            biased;
            item = events.recv() => match item.map(|i| classify(i, &execution_id)) {
                Some(Seen::Output(l)) => {
                    if tx.send(l).await.is_err() {
                        return; // the client left; the command runs to its end
                    }
                }
                Some(_) => {}
                None => break,
            },
            result = &mut run => {
                // Output published before the response is already queued: send it first.
                while let Some(item) = events.try_recv() {
                    if let Seen::Output(l) = classify(item, &execution_id) {
                        let _ = tx.send(l).await;
                    }
                }
                let _ = tx.send(last_line(result)).await;
                return;
            }
        }
    }
    let _ = tx.send(last_line(run.await)).await;
}

/// The whole body of an exec that ended before the route saw it start.
fn finished(
    mut events: Subscription,
    execution_id: &str,
    mut lines: Vec<Bytes>,
    result: Result<crate::error::Result<CommandResponse>, tokio::task::JoinError>,
) -> Body {
    while let Some(item) = events.try_recv() {
        if let Seen::Output(l) = classify(item, execution_id) {
            lines.push(l);
        }
    }
    lines.push(last_line(result));
    Body::from(lines.concat())
}

fn last_line(
    result: Result<crate::error::Result<CommandResponse>, tokio::task::JoinError>,
) -> Bytes {
    let v = match result {
        Ok(Ok(CommandResponse::SandboxExec(r))) => {
            serde_json::to_value(&r.execution).unwrap_or(Value::Null)
        }
        Ok(Ok(other)) => {
            json!({ "error": format!("unexpected {}", other.type_name()), "kind": "internal" })
        }
        Ok(Err(e)) => json!({ "error": e.to_string(), "kind": e.kind().as_str() }),
        Err(e) => json!({ "error": format!("the exec task failed: {e}"), "kind": "internal" }),
    };
    line(&v)
}

fn ndjson(body: Body) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    response
}

/// `{"stream":…,"data":…}` in that order (the order the lines have always had).
fn output_line(stream: &str, data: &str) -> Bytes {
    #[derive(serde::Serialize)]
    struct Output<'a> {
        stream: &'a str,
        data: &'a str,
    }
    let mut bytes = serde_json::to_vec(&Output { stream, data }).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

fn line(v: &Value) -> Bytes {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    Bytes::from(bytes)
}
