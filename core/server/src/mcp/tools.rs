//! The MCP tools: a table of commands exposed as tools, their input schemas taken from the
//! command table's JSON Schemas, and `agent_ask` (the one tool that is not a single command).
//!
//! A table tool's name is its command's wire type without `_request` (`image_create`), its
//! description the command's doc, its input schema the request's schema with every definition
//! it refers to. Calling it parses the arguments strictly into the command (an unknown field is
//! an `invalid_input` tool error naming it) and runs it through the runtime it was given — for
//! `/mcp`, the dispatcher as the presented token's caller.

use crate::error::{Error, ErrorKind, Result};
use crate::model::{
    Call, CommandKind, EndReason, EventPayload, ImageGetRequest, MessageSendRequest,
};
use crate::runtime::{BusItem, EventFilter, Runtime};
use rmcp::model::{JsonObject, Tool, ToolAnnotations};
use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The commands exposed as tools: what an MCP client (a model) uses to work with containers,
/// images, sessions and sandboxes. Operator commands (nodes, templates, tokens) are left to
/// the REST API and the CLI.
const TABLE: &[CommandKind] = &[
    CommandKind::ContainerCreate,
    CommandKind::ContainerList,
    CommandKind::ContainerDelete,
    CommandKind::ImageCreate,
    CommandKind::ImageGet,
    CommandKind::ImageList,
    CommandKind::ImageDelete,
    CommandKind::ImageMessages,
    CommandKind::SessionCreate,
    CommandKind::SessionList,
    CommandKind::SessionMessages,
    CommandKind::MessageSend,
    CommandKind::AgentInterrupt,
    CommandKind::TemplateList,
    CommandKind::SandboxCreate,
    CommandKind::SandboxGet,
    CommandKind::SandboxList,
    CommandKind::SandboxExec,
    CommandKind::SandboxFileRead,
    CommandKind::SandboxFileWrite,
    CommandKind::SandboxFileList,
    CommandKind::SandboxDelete,
];

/// The hand-written tool: send a message and wait for the reply.
pub(crate) const AGENT_ASK: &str = "agent_ask";

/// How long `agent_ask` waits when the caller does not say.
const ASK_DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// The longest `agent_ask` may be told to wait: a call holds a request (and, over `/mcp`, a
/// connection) open while it waits.
const ASK_MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// A tool of the table.
struct TableTool {
    kind: CommandKind,
    tool: Tool,
}

/// Every tool, built once.
struct Catalog {
    table: Vec<TableTool>,
    ask: Tool,
}

fn catalog() -> &'static Catalog {
    static CATALOG: OnceLock<Catalog> = OnceLock::new();
    CATALOG.get_or_init(build_catalog)
}

/// The tool name of a command: its wire type without `_request`.
fn tool_name(kind: CommandKind) -> &'static str {
    let t = kind.type_name();
    t.strip_suffix("_request").unwrap_or(t)
}

fn build_catalog() -> Catalog {
    let mut generator = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator();
    let command =
        Value::from(<crate::model::Command as schemars::JsonSchema>::json_schema(&mut generator));
    let schemas: Vec<(CommandKind, Value)> = TABLE
        .iter()
        .map(|&k| (k, Value::from(k.request_schema(&mut generator))))
        .collect();
    let defs = generator.take_definitions(true);
    let table = schemas
        .into_iter()
        .map(|(kind, schema)| {
            let description = variant_description(&command, kind.type_name())
                .unwrap_or_else(|| kind.type_name().to_string());
            let tool = Tool::new(
                tool_name(kind),
                description,
                Arc::new(self_contained(schema, &defs)),
            )
            .with_annotations(annotations(kind));
            TableTool { kind, tool }
        })
        .collect();
    Catalog {
        table,
        ask: ask_tool(),
    }
}

/// The doc of the `Command` variant whose `type` is `type_name`.
fn variant_description(command: &Value, type_name: &str) -> Option<String> {
    let variants = command.get("oneOf").and_then(Value::as_array)?;
    let needle = format!("\"{type_name}\"");
    variants
        .iter()
        .find(|v| {
            v.pointer("/properties/type")
                .is_some_and(|t| t.to_string().contains(&needle))
        })
        .and_then(|v| v.get("description"))
        .and_then(Value::as_str)
        .map(str::to_string)
}

/// `schema` (often a `$ref`) as one object schema: the referenced definition inlined at the
/// top and every definition it may refer to carried along under `$defs`.
fn self_contained(schema: Value, defs: &Map<String, Value>) -> JsonObject {
    let mut top = match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/$defs/")
            .and_then(|name| defs.get(name))
            .cloned()
            .unwrap_or(schema),
        None => schema,
    };
    let mut object = match top.take() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    object.insert("type".into(), json!("object"));
    let text = Value::Object(object.clone()).to_string();
    if text.contains("#/$defs/") {
        // Only the definitions reachable from this schema.
        let mut needed = Map::new();
        let mut pending = vec![text];
        while let Some(text) = pending.pop() {
            for (name, def) in defs {
                if !needed.contains_key(name) && text.contains(&format!("\"#/$defs/{name}\"")) {
                    needed.insert(name.clone(), def.clone());
                    pending.push(def.to_string());
                }
            }
        }
        object.insert("$defs".into(), Value::Object(needed));
    }
    object
}

/// What the tool does to the world, for clients that ask before running tools.
fn annotations(kind: CommandKind) -> ToolAnnotations {
    use CommandKind as K;
    let read_only = matches!(
        kind,
        K::ContainerList
            | K::ImageGet
            | K::ImageList
            | K::ImageMessages
            | K::SessionList
            | K::SessionMessages
            | K::TemplateList
            | K::SandboxGet
            | K::SandboxList
            | K::SandboxFileRead
            | K::SandboxFileList
    );
    let destructive = matches!(
        kind,
        K::ContainerDelete | K::ImageDelete | K::SandboxDelete | K::SandboxFileWrite
    );
    ToolAnnotations::new()
        .read_only(read_only)
        .destructive(destructive)
}

fn ask_tool() -> Tool {
    let schema = json!({
        "type": "object",
        "properties": {
            "imageId": {
                "type": "string",
                "description": "The image whose first session is asked (give this or sessionId)."
            },
            "sessionId": {
                "type": "string",
                "description": "The session asked (give this or imageId)."
            },
            "content": {
                "type": "string",
                "description": "The user message."
            },
            "timeoutMs": {
                "type": "integer",
                "minimum": 1,
                "maximum": ASK_MAX_TIMEOUT.as_millis() as u64,
                "description": "How long to wait for the reply, ms (default 120000, at most 600000). On timeout the turn goes on; read its reply later with session_messages."
            }
        },
        "required": ["content"],
        "additionalProperties": false
    });
    let Value::Object(schema) = schema else {
        unreachable!("a JSON object literal")
    };
    Tool::new(
        AGENT_ASK,
        "Send a user message to an agent (an image's first session, or a session) and wait for \
         its reply. Answers with the assistant's text; a turn that fails, is interrupted or \
         does not end within timeoutMs is a tool error with its kind.",
        Arc::new(schema),
    )
    .with_annotations(ToolAnnotations::new().read_only(false).destructive(false))
}

/// Every tool, in a stable order (the table's, then `agent_ask`).
pub(crate) fn list() -> Vec<Tool> {
    let catalog = catalog();
    let mut tools: Vec<Tool> = catalog.table.iter().map(|t| t.tool.clone()).collect();
    tools.push(catalog.ask.clone());
    tools
}

/// The tool named `name`, if there is one.
pub(crate) fn find(name: &str) -> Option<Tool> {
    let catalog = catalog();
    if name == AGENT_ASK {
        return Some(catalog.ask.clone());
    }
    catalog
        .table
        .iter()
        .find(|t| t.tool.name == name)
        .map(|t| t.tool.clone())
}

/// What a successful call answers: a text for the model and the structured data.
pub(crate) struct Answer {
    /// The text content (the assistant's reply for `agent_ask`, the JSON data otherwise).
    pub(crate) text: String,
    /// The structured content.
    pub(crate) data: Value,
}

/// Runs tool `name` with `arguments` on `runtime`. `Ok(None)`: no such tool.
pub(crate) async fn call(
    runtime: &dyn Runtime,
    name: &str,
    arguments: Map<String, Value>,
) -> Option<Result<Answer>> {
    if name == AGENT_ASK {
        return Some(ask(runtime, arguments).await);
    }
    let kind = catalog().table.iter().find(|t| t.tool.name == name)?.kind;
    Some(run(runtime, kind, arguments).await)
}

/// A table tool: the arguments are the command's data.
async fn run(
    runtime: &dyn Runtime,
    kind: CommandKind,
    arguments: Map<String, Value>,
) -> Result<Answer> {
    let command = kind.parse_strict(Value::Object(arguments))?;
    let response = runtime.request(command).await?;
    let mut v = serde_json::to_value(&response)
        .map_err(|e| Error::Internal(format!("encoding a response: {e}")))?;
    let mut data = v.get_mut("data").map(Value::take).unwrap_or(Value::Null);
    // Internal fields (`__subscriptions`) are for Channel clients.
    if let Value::Object(m) = &mut data {
        m.retain(|k, _| !k.starts_with("__"));
    }
    Ok(Answer {
        text: data.to_string(),
        data,
    })
}

/// A typed request on a `dyn Runtime` (`RuntimeExt::call` needs a sized one).
async fn typed<C: Call>(runtime: &dyn Runtime, request: C) -> Result<C::Output> {
    let command = request.into_command();
    let expected = command.response_type();
    let response = runtime.request(command).await?;
    C::from_response(response)
        .map_err(|other| Error::Protocol(format!("expected {expected}, got {other}")))
}

/// The arguments of `agent_ask`.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AskArgs {
    image_id: Option<String>,
    session_id: Option<String>,
    content: String,
    timeout_ms: Option<u64>,
}

/// `agent_ask`: subscribe to the session, send the message, and wait for the end of the turn
/// that answers it (its events carry the turn id derived from the message id), whatever else
/// the session is doing.
async fn ask(runtime: &dyn Runtime, arguments: Map<String, Value>) -> Result<Answer> {
    let args: AskArgs = serde_json::from_value(Value::Object(arguments))
        .map_err(|e| Error::invalid(format!("Invalid agent_ask arguments: {e}")))?;
    let timeout = match args.timeout_ms {
        None => ASK_DEFAULT_TIMEOUT,
        Some(0) => return Err(Error::invalid("timeoutMs must be at least 1")),
        Some(ms) if Duration::from_millis(ms) > ASK_MAX_TIMEOUT => {
            return Err(Error::invalid(format!(
                "timeoutMs is at most {} (asked {ms})",
                ASK_MAX_TIMEOUT.as_millis()
            )))
        }
        Some(ms) => Duration::from_millis(ms),
    };
    let session_id = match (&args.image_id, &args.session_id) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid(
                "agent_ask takes imageId or sessionId, not both",
            ))
        }
        (None, None) => return Err(Error::invalid("agent_ask needs imageId or sessionId")),
        (None, Some(s)) => s.clone(),
        (Some(image_id), None) => {
            typed(
                runtime,
                ImageGetRequest {
                    image_id: image_id.clone(),
                },
            )
            .await?
            .record
            .ok_or_else(|| Error::not_found("image", image_id))?
            .session_id
        }
    };
    // Subscribed before sending, so no event of the turn is missed.
    let mut events = runtime.subscribe(EventFilter::session(&session_id)).await?;
    let sent = typed(
        runtime,
        MessageSendRequest {
            image_id: None,
            agent_id: None,
            session_id: Some(session_id.clone()),
            content: args.content.into(),
        },
    )
    .await?;
    // The turn answering this message (and no other) has this id on every event.
    let turn = crate::runtime::agent::turn_id_of(&sent.message_id);
    let wait = async {
        let mut replies: Vec<String> = Vec::new();
        let mut failure: Option<(ErrorKind, String)> = None;
        loop {
            let published = match events.recv().await {
                Some(BusItem::Event(p)) => p,
                Some(BusItem::Overflowed { last_cursors }) => {
                    // Fell behind: resume from the last event received.
                    let cursor = last_cursors.get(&session_id).copied().unwrap_or(0);
                    events = runtime
                        .subscribe(EventFilter {
                            sessions: vec![(session_id.clone(), Some(cursor))],
                            ..Default::default()
                        })
                        .await?;
                    continue;
                }
                None => {
                    return Err(Error::unavailable(
                        "the event stream ended before the reply",
                    ))
                }
            };
            let event = &published.event;
            let ours = event
                .context
                .as_ref()
                .and_then(|c| c.turn_id.as_deref())
                .is_some_and(|t| t == turn);
            if !ours {
                continue;
            }
            match &event.payload {
                EventPayload::AssistantMessage(m) => {
                    if let Some(c) = &m.content {
                        let text = c.text();
                        if !text.is_empty() {
                            replies.push(text);
                        }
                    }
                }
                EventPayload::ErrorReceived {
                    message,
                    error_kind,
                    ..
                } => failure = Some((*error_kind, message.clone())),
                EventPayload::ConversationEnd { reason } => {
                    return Ok((*reason, replies, failure));
                }
                _ => {}
            }
        }
    };
    let (reason, replies, failure) = match tokio::time::timeout(timeout, wait).await {
        Ok(r) => r?,
        Err(_) => {
            return Err(Error::unavailable(format!(
                "no reply within {} ms; the turn goes on (read it with session_messages, session {session_id})",
                timeout.as_millis()
            )))
        }
    };
    match reason {
        EndReason::Completed => {}
        EndReason::Interrupted => {
            return Err(Error::Cancelled("the turn was interrupted".into()));
        }
        EndReason::Error => {
            let (kind, message) =
                failure.unwrap_or((ErrorKind::Unavailable, "the turn failed".to_string()));
            return Err(Error::Remote {
                kind,
                message: format!("the turn failed: {message}"),
            });
        }
    }
    let reply = replies.last().cloned().unwrap_or_default();
    Ok(Answer {
        text: reply.clone(),
        data: json!({
            "reply": reply,
            "replies": replies,
            "sessionId": sent.session_id,
            "agentId": sent.agent_id,
            "imageId": sent.image_id,
            "messageId": sent.message_id,
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_has_an_object_schema_and_a_description() {
        let tools = list();
        assert_eq!(tools.len(), TABLE.len() + 1);
        for tool in &tools {
            assert_eq!(
                tool.input_schema.get("type"),
                Some(&json!("object")),
                "{}",
                tool.name
            );
            let text = Value::Object((*tool.input_schema).clone()).to_string();
            // Every reference resolves inside the tool's own schema.
            for (i, _) in text.match_indices("#/$defs/") {
                let name: String = text[i + 8..].chars().take_while(|c| *c != '"').collect();
                assert!(
                    tool.input_schema
                        .get("$defs")
                        .and_then(|d| d.get(&name))
                        .is_some(),
                    "{}: {name} is not carried along",
                    tool.name
                );
            }
            let description = tool.description.as_deref().unwrap_or("");
            assert!(
                !description.is_empty() && !description.ends_with("_request"),
                "{}: {description:?}",
                tool.name
            );
        }
        let exec = find("sandbox_exec").expect("sandbox_exec");
        let props = exec.input_schema.get("properties").expect("properties");
        assert!(props.get("sandboxId").is_some() && props.get("command").is_some());
        assert_eq!(
            exec.input_schema.get("required"),
            Some(&json!(["sandboxId"]))
        );
        assert!(find("token_create").is_none() && find("node_register").is_none());
    }
}
