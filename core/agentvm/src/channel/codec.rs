//! Frames of the Channel protocol (docs/protocol.md §2–§3), decoded and encoded without I/O.
//!
//! Client → server: command requests (`{"type":"x_request","data":{...,"requestId"}}`),
//! `{"__ack":id}`, `{"type":"subscribe","sessionId",afterCursor?}`, `{"type":"auth",...}`,
//! optionally wrapped as `{"__msgId","__payload"}`. Server → client: every event and response
//! wrapped as `{"__msgId":"<connId>_<n>","__payload":"<json>","__cursor"?:"<cursor>"}`.

use crate::error::{Error, ErrorKind, Result};
use crate::model::{now_ms, Command, Event, EventPayload, Response};
use serde_json::{json, Map, Value};

/// A decoded client frame.
#[derive(Debug)]
pub enum ClientFrame {
    /// `{"__ack": msgId}`: the client received a frame.
    Ack(String),
    /// Join a session topic, replaying after `after_cursor`.
    Subscribe {
        /// The session topic.
        session_id: String,
        /// Replay events after this cursor first.
        after_cursor: Option<u64>,
        /// The client asked (`"__subscribeResponse": true`, an agentvm extension) for a
        /// `subscribe_response {sessionId, cursor}`, or an error when the topic cannot be
        /// joined. AgentX never answers a subscribe, so without it the server says nothing.
        respond: bool,
    },
    /// Leave a session topic.
    Unsubscribe {
        /// The session topic.
        session_id: String,
    },
    /// The browser client's first frame: credentials.
    Auth {
        /// The bearer token, if one was given.
        token: Option<String>,
    },
    /// A command.
    Request {
        /// The client's id for it, echoed in the response.
        request_id: Option<String>,
        /// The command (boxed: commands are large, acks and subscribes small).
        command: Box<Command>,
    },
}

/// A frame that could not be used, with what the client needs to hear about it.
#[derive(Debug)]
pub struct FrameError {
    /// Why.
    pub error: Error,
    /// The request id, when the frame had one.
    pub request_id: Option<String>,
    /// The response type to answer with, when the frame named a request type.
    pub response_type: Option<String>,
    /// The frame named a type the server does not know (counted as `unknown`, never by name).
    pub unknown_type: bool,
}

/// What decoding one text frame gave.
#[derive(Debug)]
pub struct Decoded {
    /// When the client wrapped its frame with a `__msgId`, the id to acknowledge.
    pub ack: Option<String>,
    /// The frame, or why it is refused.
    pub frame: std::result::Result<ClientFrame, FrameError>,
}

fn frame_error(
    message: impl Into<String>,
    request_id: Option<String>,
    type_name: Option<&str>,
) -> FrameError {
    FrameError {
        error: Error::invalid(message),
        request_id,
        response_type: type_name.and_then(response_type_of),
        unknown_type: false,
    }
}

/// The longest frame type accepted; every real one is far shorter.
pub const MAX_TYPE_LEN: usize = 128;

/// Client input quoted in an error message: at most 64 characters, with how long it was when
/// it was cut, so an error never echoes a large input back.
pub fn quoted(input: &str) -> String {
    const MAX: usize = 64;
    match input.char_indices().nth(MAX) {
        None => input.to_string(),
        Some((end, _)) => format!("{}… ({} bytes)", &input[..end], input.len()),
    }
}

/// `x_request` → `x_response`.
pub fn response_type_of(request_type: &str) -> Option<String> {
    request_type
        .strip_suffix("_request")
        .map(|base| format!("{base}_response"))
}

fn parse_cursor(v: Option<&Value>) -> std::result::Result<Option<u64>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => s
            .parse::<u64>()
            .map(Some)
            .map_err(|_| format!("afterCursor {s:?} is not a cursor")),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("afterCursor {n} is not a cursor")),
        Some(other) => Err(format!("afterCursor must be a string, got {other}")),
    }
}

/// The message id of an ack frame exactly as stock clients write it, `{"__ack":"<id>"}` with an
/// id that needs no escaping, found without parsing JSON; `None` for anything else (which
/// [`decode_client_frame`] then reads, acks written any other way included). A client acks
/// every frame it receives, so this is on the per-frame path of every connection.
pub fn plain_ack(text: &str) -> Option<&str> {
    let id = text.strip_prefix("{\"__ack\":\"")?.strip_suffix("\"}")?;
    id.bytes()
        .all(|b| b != b'"' && b != b'\\' && b >= 0x20)
        .then_some(id)
}

/// Decodes one text frame from a client.
pub fn decode_client_frame(text: &str) -> Decoded {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Decoded {
                ack: None,
                frame: Err(frame_error(
                    format!("frame is not valid JSON: {e}"),
                    None,
                    None,
                )),
            }
        }
    };
    let Value::Object(mut obj) = value else {
        return Decoded {
            ack: None,
            frame: Err(frame_error("frame is not a JSON object", None, None)),
        };
    };
    if let Some(id) = obj.get("__ack") {
        return Decoded {
            ack: None,
            frame: match id.as_str() {
                Some(id) => Ok(ClientFrame::Ack(id.to_string())),
                None => Err(frame_error("__ack must be a string", None, None)),
            },
        };
    }
    let mut ack = None;
    if let Some(payload) = obj.remove("__payload") {
        ack = obj
            .get("__msgId")
            .and_then(Value::as_str)
            .map(str::to_string);
        let inner = match payload {
            Value::String(s) => serde_json::from_str::<Value>(&s),
            other => Ok(other),
        };
        obj = match inner {
            Ok(Value::Object(o)) => o,
            Ok(_) => {
                return Decoded {
                    ack,
                    frame: Err(frame_error("__payload is not a JSON object", None, None)),
                }
            }
            Err(e) => {
                return Decoded {
                    ack,
                    frame: Err(frame_error(
                        format!("__payload is not valid JSON: {e}"),
                        None,
                        None,
                    )),
                }
            }
        };
    }
    Decoded {
        ack,
        frame: decode_object(obj),
    }
}

fn decode_object(mut obj: Map<String, Value>) -> std::result::Result<ClientFrame, FrameError> {
    let data = match obj.remove("data") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(v @ Value::Object(_)) => v,
        Some(_) => {
            let type_name = obj.get("type").and_then(Value::as_str).map(str::to_string);
            return Err(frame_error(
                "data must be a JSON object",
                None,
                type_name.as_deref(),
            ));
        }
    };
    let request_id = data
        .get("requestId")
        .and_then(Value::as_str)
        .map(str::to_string);
    let type_name = match obj.get("type") {
        Some(Value::String(t)) if t.len() > MAX_TYPE_LEN => {
            // No typed response: it would echo the whole name back.
            return Err(FrameError {
                unknown_type: true,
                ..frame_error(
                    format!(
                        "Unknown frame type: {} (longer than {MAX_TYPE_LEN} bytes)",
                        quoted(t)
                    ),
                    request_id,
                    None,
                )
            });
        }
        Some(Value::String(t)) => t.clone(),
        Some(_) => return Err(frame_error("\"type\" must be a string", request_id, None)),
        None => return Err(frame_error("frame has no \"type\"", request_id, None)),
    };
    // Fields of subscribe/auth may be at the top level (stock client) or in data.
    let field = |name: &str| obj.get(name).or_else(|| data.get(name)).cloned();
    match type_name.as_str() {
        "subscribe" | "unsubscribe" => {
            let session_id = match field("sessionId") {
                Some(Value::String(s)) if !s.is_empty() => s,
                _ => {
                    return Err(frame_error(
                        format!("{type_name} needs a sessionId string"),
                        request_id,
                        None,
                    ))
                }
            };
            if type_name == "unsubscribe" {
                return Ok(ClientFrame::Unsubscribe { session_id });
            }
            let after_cursor = parse_cursor(field("afterCursor").as_ref())
                .map_err(|m| frame_error(m, request_id.clone(), None))?;
            let respond = field("__subscribeResponse").and_then(|v| v.as_bool()) == Some(true);
            Ok(ClientFrame::Subscribe {
                session_id,
                after_cursor,
                respond,
            })
        }
        "auth" => {
            let header = field("headers")
                .and_then(|h| {
                    h.as_object().and_then(|h| {
                        h.iter()
                            .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                            .and_then(|(_, v)| v.as_str().map(str::to_string))
                    })
                })
                .and_then(|v| bearer(&v).map(str::to_string));
            let token =
                header.or_else(|| field("token").and_then(|t| t.as_str().map(str::to_string)));
            Ok(ClientFrame::Auth { token })
        }
        t if t.ends_with("_request") => match Command::from_wire(t, data) {
            Ok(command) => Ok(ClientFrame::Request {
                request_id,
                command: Box::new(command),
            }),
            Err(error) => Err(FrameError {
                error,
                request_id,
                response_type: response_type_of(t),
                unknown_type: crate::model::CommandKind::from_type_name(t).is_none(),
            }),
        },
        other => Err(FrameError {
            unknown_type: true,
            ..frame_error(
                format!("Unknown frame type: {}", quoted(other)),
                request_id,
                None,
            )
        }),
    }
}

/// The token of an `Authorization: Bearer <token>` value.
pub fn bearer(value: &str) -> Option<&str> {
    let value = value.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn envelope(type_name: &str, data: Value, source: &str, category: &str, intent: &str) -> Value {
    json!({
        "type": type_name,
        "timestamp": now_ms(),
        "data": data,
        "source": source,
        "category": category,
        "intent": intent,
    })
}

/// A command request as the stock client sends it.
pub fn encode_request(command: &Command, request_id: &str) -> String {
    let mut v = serde_json::to_value(command).unwrap_or(Value::Null);
    let data = match v.get_mut("data").map(Value::take) {
        Some(Value::Object(mut d)) => {
            d.insert("requestId".into(), Value::String(request_id.into()));
            Value::Object(d)
        }
        _ => json!({ "requestId": request_id }),
    };
    envelope(command.type_name(), data, "command", "request", "request").to_string()
}

/// A successful response envelope.
pub fn response_value(response: &Response, request_id: Option<&str>) -> Value {
    let mut v = serde_json::to_value(response).unwrap_or(Value::Null);
    let mut data = match v.get_mut("data").map(Value::take) {
        Some(Value::Object(d)) => d,
        _ => Map::new(),
    };
    if let Some(id) = request_id {
        data.insert("requestId".into(), Value::String(id.into()));
    }
    envelope(
        response.type_name(),
        Value::Object(data),
        "command",
        "response",
        "result",
    )
}

/// An error response envelope: `data = {requestId, error, errorKind}` and the fallback fields
/// AgentX 1.9 puts there for `response_type` ([`error_fallback`] without a request).
pub fn error_response_value(response_type: &str, request_id: Option<&str>, error: &Error) -> Value {
    error_response_with(
        response_type,
        request_id,
        error,
        error_fallback(response_type, None),
    )
}

/// The fields AgentX 1.9's command handlers put beside `error` in a failed response, so a
/// client reading them finds what it expects: empty lists (`records`, `messages`),
/// `success:false`, `reused:false`, `agentId:""` where a string is promised, and the ids of
/// the request echoed (from `command` when there is one).
pub fn error_fallback(response_type: &str, command: Option<&Command>) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Value| {
        m.insert(k.to_string(), v);
    };
    match response_type {
        "image_list_response" => put("records", json!([])),
        "image_messages_response" => put("messages", json!([])),
        "image_run_response" => {
            put("agentId", json!(""));
            put("reused", json!(false));
        }
        "agent_destroy_response" => put("success", json!(false)),
        "message_send_response" => put("agentId", json!("")),
        _ => {}
    }
    let mut echo = |k: &str, v: Option<&str>| {
        if let Some(v) = v {
            m.insert(k.to_string(), Value::String(v.to_string()));
        }
    };
    match command {
        Some(Command::ContainerCreate(r)) => echo("containerId", Some(&r.container_id)),
        Some(Command::AgentDestroyAll(r)) => echo("containerId", Some(&r.container_id)),
        Some(Command::AgentDestroy(r)) => echo("agentId", Some(&r.agent_id)),
        Some(Command::ImageRun(r)) => echo("imageId", Some(&r.image_id)),
        Some(Command::ImageStop(r)) => echo("imageId", Some(&r.image_id)),
        Some(Command::ImageDelete(r)) => echo("imageId", Some(&r.image_id)),
        Some(Command::ImageMessages(r)) => echo("imageId", Some(&r.image_id)),
        Some(Command::MessageSend(r)) => {
            echo("imageId", r.image_id.as_deref());
            echo("agentId", r.agent_id.as_deref());
        }
        Some(Command::AgentInterrupt(r)) => {
            echo("imageId", r.image_id.as_deref());
            echo("agentId", r.agent_id.as_deref());
        }
        _ => {}
    }
    m
}

/// An error response envelope with `fallback` (see [`error_fallback`]) beside
/// `{requestId, error, errorKind}`.
pub fn error_response_with(
    response_type: &str,
    request_id: Option<&str>,
    error: &Error,
    fallback: Map<String, Value>,
) -> Value {
    let mut data = fallback;
    if let Some(id) = request_id {
        data.insert("requestId".into(), Value::String(id.into()));
    }
    data.insert("error".into(), Value::String(error.to_string()));
    data.insert(
        "errorKind".into(),
        Value::String(error.kind().as_str().into()),
    );
    envelope(
        response_type,
        Value::Object(data),
        "command",
        "response",
        "result",
    )
}

/// AgentX's `message_persisted` notice for an event that carries a stored message
/// (`assistant_message`, `tool_call_message`, `tool_result_message`, `error_message`: agentvm
/// stores each before publishing it): `source:"session"`, `category:"persist"`,
/// `intent:"result"`, `data {sessionId, messageId, savedAt}`. `None` for other events.
pub fn message_persisted(event: &Event) -> Option<Value> {
    let message = match &event.payload {
        EventPayload::AssistantMessage(m)
        | EventPayload::ToolCallMessage(m)
        | EventPayload::ToolResultMessage(m)
        | EventPayload::ErrorMessage(m) => m,
        _ => return None,
    };
    let context = event.context.as_ref()?;
    let session_id = context.session_id.as_deref()?;
    Some(persisted_notice(
        session_id,
        &message.id,
        event.timestamp,
        serde_json::to_value(context).unwrap_or(Value::Null),
    ))
}

/// AgentX's `message_persisted` for the user message a `message_send_request` stored.
pub fn user_message_persisted(r: &crate::model::MessageSendResponse) -> Value {
    persisted_notice(
        &r.session_id,
        &r.message_id,
        now_ms(),
        json!({ "imageId": r.image_id, "agentId": r.agent_id, "sessionId": r.session_id }),
    )
}

fn persisted_notice(session_id: &str, message_id: &str, saved_at: i64, context: Value) -> Value {
    let mut v = envelope(
        "message_persisted",
        json!({ "sessionId": session_id, "messageId": message_id, "savedAt": saved_at }),
        "session",
        "persist",
        "result",
    );
    v["timestamp"] = json!(saved_at);
    v["context"] = context;
    v
}

/// The `system_error` event sent to one client before an error response.
pub fn system_error(error: &Error, request_id: Option<&str>) -> Event {
    Event::new(
        EventPayload::SystemError {
            message: error.to_string(),
            request_id: request_id.map(str::to_string),
            severity: "error".into(),
            details: Some(json!({ "kind": error.kind().as_str() })),
        },
        None,
    )
}

/// The `system_error` answering a subscribe that asked for an answer (`__subscribeResponse`)
/// and could not join `session_id`: `details.sessionId` says which subscribe it answers.
pub fn subscribe_refused(error: &Error, session_id: &str) -> Event {
    Event::new(
        EventPayload::SystemError {
            message: error.to_string(),
            request_id: None,
            severity: "error".into(),
            details: Some(json!({ "kind": error.kind().as_str(), "sessionId": session_id })),
        },
        None,
    )
}

/// The session a [`subscribe_refused`] event answers for, and the error it carries.
pub fn refused_subscribe(payload: &Value) -> Option<(&str, Error)> {
    if payload.get("type").and_then(Value::as_str) != Some("system_error") {
        return None;
    }
    let data = payload.get("data")?;
    let details = data.get("details")?;
    let session_id = details.get("sessionId").and_then(Value::as_str)?;
    let kind = details
        .get("kind")
        .and_then(Value::as_str)
        .map(ErrorKind::parse)
        .unwrap_or(ErrorKind::Internal);
    let message = data
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("the server refused the subscription")
        .to_string();
    Some((session_id, Error::Remote { kind, message }))
}

/// Wraps a payload (already JSON) for reliable delivery.
pub fn wrap(msg_id: &str, payload_json: &str, cursor: Option<u64>) -> String {
    wrap_escaped(msg_id, &escape(payload_json), cursor)
}

/// `s` as a JSON string literal, quotes included: byte for byte what `serde_json` writes
/// (`\"`, `\\`, `\b \f \n \r \t`, other control characters as `\u00XX`, everything else as
/// is), in one pass that copies the runs between escapes and skips eight plain bytes at a
/// time. Every event is escaped once to be framed for its connections, so this is on the
/// delivery path: about as fast as `serde_json` on a small event's JSON (a quote every few
/// bytes), five times faster on long text.
pub fn escape(s: &str) -> String {
    let bytes = s.as_bytes();
    // JSON text (the usual input) escapes a quote or two per field.
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 4 + 2);
    out.push(b'"');
    escape_into(&mut out, bytes);
    out.push(b'"');
    // Only ASCII was added, and only between whole characters of `s`: still UTF-8.
    String::from_utf8(out).unwrap_or_else(|_| String::from("\"\""))
}

/// Appends `bytes` (UTF-8) escaped as the inside of a JSON string literal, as [`escape`] does.
pub(crate) fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let (mut i, mut run) = (0, 0);
    while i < bytes.len() {
        if let Some(word) = bytes[i..].first_chunk::<8>() {
            if !needs_escape(u64::from_le_bytes(*word)) {
                i += 8;
                continue;
            }
        }
        let b = bytes[i];
        let e = ESCAPE[usize::from(b)];
        i += 1;
        if e == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[run..i - 1]);
        out.push(b'\\');
        out.push(e);
        if e == b'u' {
            out.extend_from_slice(b"00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
        run = i;
    }
    out.extend_from_slice(&bytes[run..]);
}

/// What follows the backslash when a byte is escaped (`u`: `\u00XX`); 0 when it is not.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = b'u';
        b += 1;
    }
    t[0x08] = b'b';
    t[0x0c] = b'f';
    t[b'\n' as usize] = b'n';
    t[b'\r' as usize] = b'r';
    t[b'\t' as usize] = b't';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// Whether any byte of `bytes` needs escaping in a JSON string: eight at a time, the tail
/// padded with spaces (which need none).
#[inline]
pub(crate) fn any_needs_escape(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        if let Ok(word) = <[u8; 8]>::try_from(word) {
            if needs_escape(u64::from_le_bytes(word)) {
                return true;
            }
        }
    }
    let tail = words.remainder();
    let mut padded = [b' '; 8];
    padded[..tail.len()].copy_from_slice(tail);
    needs_escape(u64::from_le_bytes(padded))
}

/// Whether any of the eight bytes of `w` is a quote, a backslash or a control character.
fn needs_escape(w: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // The high bit of each byte that is zero (that is below 0x20, for `below_space`).
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let below_space = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    (zero(w ^ (ONES * u64::from(b'"'))) | zero(w ^ (ONES * u64::from(b'\\'))) | below_space) != 0
}

/// [`wrap`] with the payload already escaped by [`escape`]: fan-out escapes an event once and
/// frames it for every connection with a copy.
pub fn wrap_escaped(msg_id: &str, escaped_payload: &str, cursor: Option<u64>) -> String {
    let mut out = String::with_capacity(escaped_payload.len() + msg_id.len() + 64);
    // Connection message ids are `conn_<n>_<n>`: nothing in them needs escaping.
    out.push_str("{\"__msgId\":\"");
    out.push_str(msg_id);
    out.push_str("\",\"__payload\":");
    out.push_str(escaped_payload);
    if let Some(c) = cursor {
        out.push_str(",\"__cursor\":\"");
        out.push_str(&c.to_string());
        out.push('"');
    }
    out.push('}');
    out
}

/// A frame received by the remote runtime, unwrapped.
#[derive(Debug)]
pub struct ServerFrame {
    /// The id to acknowledge, when wrapped.
    pub msg_id: Option<String>,
    /// The session cursor, when it is a session event.
    pub cursor: Option<u64>,
    /// The payload.
    pub payload: Value,
}

/// Unwraps a server frame (wrapped or not).
pub fn decode_server_frame(text: &str) -> Result<ServerFrame> {
    let mut v: Value = serde_json::from_str(text)
        .map_err(|e| Error::Protocol(format!("server sent invalid JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(Error::Protocol(
            "server sent a frame that is not an object".into(),
        ));
    };
    if let Some(payload) = obj.remove("__payload") {
        let msg_id = obj
            .get("__msgId")
            .and_then(Value::as_str)
            .map(str::to_string);
        let cursor = parse_cursor(obj.get("__cursor")).map_err(Error::Protocol)?;
        let payload = match payload {
            Value::String(s) => serde_json::from_str(&s)
                .map_err(|e| Error::Protocol(format!("server sent an invalid __payload: {e}")))?,
            other => other,
        };
        return Ok(ServerFrame {
            msg_id,
            cursor,
            payload,
        });
    }
    Ok(ServerFrame {
        msg_id: None,
        cursor: None,
        payload: v,
    })
}

/// Reads a response payload back: `Ok(Response)` or the error it carries.
pub fn decode_response(payload: &Value) -> Result<Response> {
    let type_name = payload
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let data = payload.get("data").cloned().unwrap_or(Value::Null);
    if let Some(error) = data.get("error").and_then(Value::as_str) {
        let kind = data
            .get("errorKind")
            .and_then(Value::as_str)
            .map(ErrorKind::parse)
            .unwrap_or(ErrorKind::Internal);
        return Err(Error::Remote {
            kind,
            message: error.to_string(),
        });
    }
    serde_json::from_value(json!({ "type": type_name, "data": data }))
        .map_err(|e| Error::Protocol(format!("server sent an unreadable {type_name}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_writes_what_serde_json_writes() {
        let every_control: String = (0u8..0x20).map(char::from).collect();
        // Long enough for the eight-byte skips, with escapes at every offset of a word.
        let long_plain = "abcdefgh日本語".repeat(40);
        let long_mixed: String = (0..400)
            .map(|i| ["x", "\"", "\\", "\u{1}", "é", "\n"][i % 6].repeat(i % 11))
            .collect();
        for s in [
            long_plain.as_str(),
            long_mixed.as_str(),
            "",
            "plain",
            r#"{"type":"text_delta","data":{"text":"a \"b\" c\\d"}}"#,
            "\"\"\\\\",
            every_control.as_str(),
            "tab\there\r\nline\u{7f}\u{80}",
            "héllo wörld — 日本語 🎉 \u{2028}\u{2029}",
            "\"é\"",
        ] {
            let expected = serde_json::to_string(s).expect("serde_json escapes any str");
            assert_eq!(escape(s), expected, "{s:?}");
            let back: String = serde_json::from_str(&escape(s)).expect("a JSON string");
            assert_eq!(back, s);
        }
    }

    #[test]
    fn any_needs_escape_finds_every_escape_at_every_offset() {
        let needs = |b: u8| b < 0x20 || b == b'"' || b == b'\\';
        for len in 0..20 {
            let plain = vec![b'a'; len];
            assert!(!any_needs_escape(&plain), "{len} plain bytes");
            for at in 0..len {
                for b in [b'"', b'\\', 0, 0x1f, b'\n', b' ', 0x7f, 0xc3] {
                    let mut bytes = plain.clone();
                    bytes[at] = b;
                    assert_eq!(
                        any_needs_escape(&bytes),
                        needs(b),
                        "{b:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn escape_agrees_with_serde_json_on_any_string(s in "\\PC*|[\\x00-\\x7f]*") {
            proptest::prop_assert_eq!(escape(&s), serde_json::to_string(&s).expect("escapes"));
        }
    }

    #[test]
    fn plain_acks_are_read_without_parsing_and_agree_with_the_decoder() {
        for (text, id) in [
            (r#"{"__ack":"conn_1_42"}"#, Some("conn_1_42")),
            (r#"{"__ack":""}"#, Some("")),
            (r#"{"__ack":"a\"b"}"#, None),
            (r#"{"__ack":"a"b"}"#, None),
            (r#"{ "__ack":"x"}"#, None),
            (r#"{"__ack":"x","type":"y"}"#, None),
            (r#"{"__ack":1}"#, None),
        ] {
            assert_eq!(plain_ack(text), id, "{text}");
            if let Some(id) = id {
                match decode_client_frame(text).frame {
                    Ok(ClientFrame::Ack(decoded)) => assert_eq!(decoded, id),
                    other => panic!("{text}: {other:?}"),
                }
            }
        }
    }
    use crate::model::{ImageGetRequest, ImageGetResponse};

    #[test]
    fn long_frame_types_are_refused_without_being_echoed() {
        let long = format!("{}_request", "t".repeat(100_000));
        let d = decode_client_frame(
            &serde_json::json!({"type": long, "data": {"requestId": "r"}}).to_string(),
        );
        let e = d.frame.unwrap_err();
        assert_eq!(e.response_type, None);
        assert!(e.unknown_type);
        assert_eq!(e.request_id.as_deref(), Some("r"));
        let message = e.error.to_string();
        assert!(message.len() < 200, "{message}");
        assert!(message.contains("100008 bytes"), "{message}");
        assert_eq!(quoted("short"), "short");
    }

    #[test]
    fn decodes_requests_acks_subscribes_and_auth() {
        let d = decode_client_frame(
            r#"{"type":"image_get_request","data":{"imageId":"i","requestId":"req_1"},"timestamp":1}"#,
        );
        match d.frame.unwrap() {
            ClientFrame::Request {
                request_id,
                command,
            } => {
                assert_eq!(request_id.as_deref(), Some("req_1"));
                assert_eq!(
                    *command,
                    Command::ImageGet(ImageGetRequest {
                        image_id: "i".into()
                    })
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(
            matches!(decode_client_frame(r#"{"__ack":"c_1"}"#).frame.unwrap(), ClientFrame::Ack(id) if id == "c_1")
        );
        match decode_client_frame(r#"{"type":"subscribe","sessionId":"s","afterCursor":"42"}"#)
            .frame
            .unwrap()
        {
            ClientFrame::Subscribe {
                session_id,
                after_cursor,
                respond,
            } => {
                assert_eq!(session_id, "s");
                assert_eq!(after_cursor, Some(42));
                assert!(!respond, "AgentX's subscribe asks for no response");
            }
            other => panic!("{other:?}"),
        }
        match decode_client_frame(r#"{"type":"auth","headers":{"Authorization":"Bearer tok"}}"#)
            .frame
            .unwrap()
        {
            ClientFrame::Auth { token } => assert_eq!(token.as_deref(), Some("tok")),
            other => panic!("{other:?}"),
        }
        // A wrapped client frame is unwrapped and its id returned for acknowledgement.
        let inner = r#"{"type":"container_list_request","data":{"requestId":"r"}}"#;
        let wrapped = json!({"__msgId":"m1","__payload": inner}).to_string();
        let d = decode_client_frame(&wrapped);
        assert_eq!(d.ack.as_deref(), Some("m1"));
        assert!(matches!(d.frame.unwrap(), ClientFrame::Request { .. }));
    }

    #[test]
    fn refuses_bad_frames_with_what_to_answer() {
        let e = decode_client_frame("not json").frame.unwrap_err();
        assert!(e.error.to_string().starts_with("frame is not valid JSON"));
        let e = decode_client_frame(r#"{"data":{"requestId":"r"}}"#)
            .frame
            .unwrap_err();
        assert_eq!(e.error.to_string(), "frame has no \"type\"");
        assert_eq!(e.request_id.as_deref(), Some("r"));
        let e = decode_client_frame(r#"{"type":"bogus_request","data":{"requestId":"r"}}"#)
            .frame
            .unwrap_err();
        assert_eq!(e.error.to_string(), "Unknown request type: bogus_request");
        assert_eq!(e.response_type.as_deref(), Some("bogus_response"));
        let e = decode_client_frame(r#"{"type":"image_get_request","data":{"requestId":"r"}}"#)
            .frame
            .unwrap_err();
        assert!(e.error.to_string().contains("missing field `imageId`"));
        assert_eq!(e.response_type.as_deref(), Some("image_get_response"));
        assert!(decode_client_frame("[1,2]").frame.is_err());
        assert!(decode_client_frame(r#"{"type":"subscribe"}"#)
            .frame
            .is_err());
    }

    #[test]
    fn wrap_round_trips_through_the_remote_decoder() {
        let payload = r#"{"type":"text_delta","data":{"text":"a \"quoted\" line\n"}}"#;
        let framed = wrap("c_7", payload, Some(99));
        let f = decode_server_frame(&framed).unwrap();
        assert_eq!(f.msg_id.as_deref(), Some("c_7"));
        assert_eq!(f.cursor, Some(99));
        assert_eq!(f.payload["data"]["text"], "a \"quoted\" line\n");
    }

    #[test]
    fn responses_carry_request_ids_and_errors_their_kind() {
        let r = Response::ImageGet(ImageGetResponse {
            record: None,
            subscriptions: None,
        });
        let v = response_value(&r, Some("req_1"));
        assert_eq!(v["type"], "image_get_response");
        assert_eq!(v["data"], json!({"record": null, "requestId": "req_1"}));
        assert_eq!(
            (
                v["source"].as_str(),
                v["category"].as_str(),
                v["intent"].as_str()
            ),
            (Some("command"), Some("response"), Some("result"))
        );
        assert_eq!(decode_response(&v).unwrap(), r);
        let e = error_response_value(
            "image_get_response",
            Some("r"),
            &Error::not_found("Image", "x"),
        );
        assert_eq!(
            e["data"],
            json!({"requestId":"r","error":"Image not found: x","errorKind":"not_found"})
        );
        let back = decode_response(&e).unwrap_err();
        assert_eq!(back.kind(), ErrorKind::NotFound);
        assert_eq!(back.to_string(), "Image not found: x");
    }

    #[test]
    fn encoded_requests_are_what_the_stock_client_sends() {
        let c = Command::ImageGet(ImageGetRequest {
            image_id: "i".into(),
        });
        let v: Value = serde_json::from_str(&encode_request(&c, "req_1")).unwrap();
        assert_eq!(v["type"], "image_get_request");
        assert_eq!(v["data"], json!({"imageId":"i","requestId":"req_1"}));
        assert_eq!(v["intent"], "request");
    }
}
