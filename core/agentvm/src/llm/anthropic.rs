//! The Anthropic Messages driver: `POST {url}/v1/messages` with `stream: true`.
//!
//! Request: `x-api-key`, `anthropic-version: 2023-06-01`, the model, `max_tokens`, a top-level
//! `system`, the `tools`, and the history as [`conversation`] normalizes it (one message per
//! turn; tool calls as `tool_use` blocks, results as `tool_result` blocks first in the next user
//! message).
//!
//! Stream: `message_start` (model, input tokens), `content_block_start` / `_delta` / `_stop` for
//! `text`, `tool_use` (its `input_json_delta` fragments are joined and parsed at the block's
//! stop) and `thinking` (thinking deltas go to [`LlmEvent::ThinkingDelta`], signatures are
//! dropped, neither ever reaches the text); `message_delta` (stop reason, cumulative usage);
//! `message_stop`; `ping`; an `error` event, which can arrive after HTTP 200. Unknown events and
//! block types are ignored, as the API's versioning policy asks.

use super::conversation::{conversation, Turn, UserBlock};
use super::http::{self, HttpSettings, ReplyDecoder};
use super::retry::code_for_error_type;
use super::sse::SseEvent;
use super::{LlmDriver, LlmEvent, LlmRequest, LlmStream};
use crate::model::{ContentPart, Usage};
use serde_json::{json, Map, Value};
use std::collections::HashMap;

/// The API version sent with every request.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The public API's base URL.
pub const DEFAULT_URL: &str = "https://api.anthropic.com";

/// A driver for the Anthropic Messages API (and servers that speak it, llama.cpp among them).
pub struct AnthropicDriver {
    settings: HttpSettings,
    client: reqwest::Client,
    default_model: String,
}

impl std::fmt::Debug for AnthropicDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AnthropicDriver")
            .field("url", &self.settings.base_url)
            .field("default_model", &self.default_model)
            .finish_non_exhaustive()
    }
}

impl AnthropicDriver {
    /// A driver talking to `settings.base_url`, answering with `default_model` when an image
    /// names none.
    pub fn new(settings: HttpSettings, default_model: impl Into<String>) -> crate::Result<Self> {
        Ok(AnthropicDriver {
            client: http::client(&settings)?,
            settings,
            default_model: default_model.into(),
        })
    }
}

impl LlmDriver for AnthropicDriver {
    fn name(&self) -> &str {
        "anthropic"
    }

    fn default_model(&self) -> &str {
        &self.default_model
    }

    fn endpoint(&self) -> Option<&str> {
        Some(&self.settings.base_url)
    }

    fn stream(&self, request: LlmRequest) -> LlmStream {
        let body = request_body(&request).to_string();
        let url = self.settings.endpoint("messages");
        let client = self.client.clone();
        let key = self.settings.api_key.clone().unwrap_or_default();
        let build = move || {
            client
                .post(&url)
                .header("x-api-key", &key)
                .header("anthropic-version", ANTHROPIC_VERSION)
                .header("content-type", "application/json")
                .header("accept", "text/event-stream")
                .body(body.clone())
        };
        http::reply_stream(
            "Anthropic",
            &self.settings,
            build,
            AnthropicDecoder::default(),
        )
    }
}

/// The JSON body of a streaming Messages request.
pub fn request_body(request: &LlmRequest) -> Value {
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": messages(&request.messages),
        "stream": true,
    });
    if let Some(system) = request.system.as_deref().filter(|s| !s.is_empty()) {
        body["system"] = json!(system);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "input_schema": t.input_schema}))
            .collect();
    }
    body
}

/// The stored history as Anthropic `messages`.
pub fn messages(history: &[crate::model::Message]) -> Value {
    conversation(history)
        .into_iter()
        .map(|turn| match turn {
            Turn::User(blocks) => {
                let content: Vec<Value> = blocks.into_iter().map(user_block).collect();
                json!({"role": "user", "content": content})
            }
            Turn::Assistant { text, calls } => {
                let mut content = Vec::new();
                if !text.is_empty() {
                    content.push(json!({"type": "text", "text": text}));
                }
                for c in calls {
                    let input = match c.input {
                        Value::Object(_) => c.input,
                        // tool_use input must be an object; keep what the model sent.
                        other => json!({ "input": other }),
                    };
                    content.push(
                        json!({"type": "tool_use", "id": c.id, "name": c.name, "input": input}),
                    );
                }
                json!({"role": "assistant", "content": content})
            }
        })
        .collect()
}

fn user_block(block: UserBlock) -> Value {
    match block {
        UserBlock::ToolResult(r) => {
            let output = if r.output.is_empty() {
                "(no output)".to_string()
            } else {
                r.output
            };
            let mut v =
                json!({"type": "tool_result", "tool_use_id": r.tool_call_id, "content": output});
            if r.is_error {
                v["is_error"] = json!(true);
            }
            v
        }
        UserBlock::Part(ContentPart::Text { text }) => json!({"type": "text", "text": text}),
        UserBlock::Part(ContentPart::Image { data, media_type }) => json!({
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }),
        UserBlock::Part(ContentPart::File {
            data, media_type, ..
        }) if media_type == "application/pdf" => json!({
            "type": "document",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }),
        UserBlock::Part(ContentPart::File {
            media_type,
            filename,
            ..
        }) => json!({
            "type": "text",
            "text": format!(
                "[a file was attached ({}, {media_type}); this provider accepts only PDF documents]",
                filename.as_deref().unwrap_or("unnamed")
            ),
        }),
    }
}

/// A content block being streamed.
#[derive(Debug)]
enum Block {
    ToolUse {
        id: String,
        name: String,
        json: String,
        initial: Value,
    },
    Other,
}

/// Decodes the Messages stream. Pure: SSE events in, [`LlmEvent`]s out.
#[derive(Debug, Default)]
pub struct AnthropicDecoder {
    started: bool,
    done: bool,
    input_tokens: u64,
    blocks: HashMap<u64, Block>,
}

impl AnthropicDecoder {
    /// A decoder at the start of a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles one SSE event.
    pub fn decode(&mut self, event: &SseEvent, out: &mut Vec<LlmEvent>) {
        if self.done {
            return;
        }
        let v: Value = match serde_json::from_str(&event.data) {
            Ok(v) => v,
            Err(e) => {
                self.fail(
                    out,
                    format!(
                        "Anthropic sent an event that is not JSON ({e}): {}",
                        clip(&event.data)
                    ),
                    "network",
                );
                return;
            }
        };
        let kind = v
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or(&event.event);
        match kind {
            "message_start" => {
                let message = &v["message"];
                self.input_tokens = input_tokens(&message["usage"]).unwrap_or(0);
                self.started = true;
                let model = message["model"].as_str().unwrap_or_default().to_string();
                out.push(LlmEvent::MessageStart { model });
            }
            "content_block_start" => {
                let index = v["index"].as_u64().unwrap_or(0);
                let block = &v["content_block"];
                let block = match block["type"].as_str() {
                    Some("tool_use") => {
                        let id = block["id"].as_str().unwrap_or_default().to_string();
                        let name = block["name"].as_str().unwrap_or_default().to_string();
                        out.push(LlmEvent::ToolUseStart {
                            id: id.clone(),
                            name: name.clone(),
                        });
                        let initial = block.get("input").cloned().unwrap_or(Value::Null);
                        Block::ToolUse {
                            id,
                            name,
                            json: String::new(),
                            initial,
                        }
                    }
                    Some("text") => {
                        push_text(out, block["text"].as_str());
                        Block::Other
                    }
                    Some("thinking") => {
                        push_thinking(out, block["thinking"].as_str());
                        Block::Other
                    }
                    _ => Block::Other,
                };
                self.blocks.insert(index, block);
            }
            "content_block_delta" => {
                let index = v["index"].as_u64().unwrap_or(0);
                let delta = &v["delta"];
                match delta["type"].as_str() {
                    Some("text_delta") => push_text(out, delta["text"].as_str()),
                    Some("thinking_delta") => push_thinking(out, delta["thinking"].as_str()),
                    Some("input_json_delta") => {
                        let part = delta["partial_json"].as_str().unwrap_or_default();
                        if let Some(Block::ToolUse { json, .. }) = self.blocks.get_mut(&index) {
                            json.push_str(part);
                            if !part.is_empty() {
                                out.push(LlmEvent::InputJsonDelta(part.to_string()));
                            }
                        }
                    }
                    // signature_delta, citations_delta, and whatever comes later.
                    _ => {}
                }
            }
            "content_block_stop" => {
                let index = v["index"].as_u64().unwrap_or(0);
                if let Some(Block::ToolUse {
                    id,
                    name,
                    json,
                    initial,
                }) = self.blocks.remove(&index)
                {
                    out.push(LlmEvent::ToolUseStop {
                        id,
                        name,
                        input: tool_input(&json, initial),
                    });
                }
            }
            "message_delta" => {
                let usage = &v["usage"];
                if let Some(input) = input_tokens(usage) {
                    self.input_tokens = input;
                }
                let usage = usage["output_tokens"].as_u64().map(|output_tokens| Usage {
                    input_tokens: self.input_tokens,
                    output_tokens,
                });
                let stop_reason = v["delta"]["stop_reason"].as_str().map(String::from);
                out.push(LlmEvent::MessageDelta { usage, stop_reason });
            }
            "message_stop" => {
                self.done = true;
                out.push(LlmEvent::MessageStop);
            }
            "error" => {
                let e = &v["error"];
                let kind = e["type"].as_str().unwrap_or("error");
                let message = e["message"].as_str().unwrap_or("no message");
                self.fail(
                    out,
                    format!("Anthropic stream error ({kind}): {message}"),
                    code_for_error_type(kind),
                );
            }
            // ping, and event types added after this was written.
            _ => {}
        }
    }

    /// The body ended: an error unless `message_stop` was seen.
    pub fn finish(&mut self, out: &mut Vec<LlmEvent>) {
        if !self.done {
            let what = if self.started {
                "before message_stop"
            } else {
                "before the reply started"
            };
            self.fail(out, format!("Anthropic's stream ended {what}"), "network");
        }
    }

    fn fail(&mut self, out: &mut Vec<LlmEvent>, message: String, code: &str) {
        self.done = true;
        out.push(LlmEvent::Error {
            message,
            code: Some(code.into()),
        });
    }
}

impl ReplyDecoder for AnthropicDecoder {
    fn event(&mut self, event: SseEvent, out: &mut Vec<LlmEvent>) {
        self.decode(&event, out);
    }

    fn end(&mut self, out: &mut Vec<LlmEvent>) {
        self.finish(out);
    }
}

/// Prompt tokens: uncached input plus cache writes and reads.
fn input_tokens(usage: &Value) -> Option<u64> {
    let base = usage.get("input_tokens")?.as_u64()?;
    let cached = ["cache_creation_input_tokens", "cache_read_input_tokens"]
        .iter()
        .filter_map(|k| usage.get(*k).and_then(Value::as_u64))
        .sum::<u64>();
    Some(base + cached)
}

/// A tool call's input: the joined JSON, or the block's initial input when nothing streamed.
/// Input that does not parse is kept as a string, so the tool can report it.
fn tool_input(joined: &str, initial: Value) -> Value {
    if joined.trim().is_empty() {
        return match initial {
            Value::Object(_) => initial,
            _ => Value::Object(Map::new()),
        };
    }
    serde_json::from_str(joined).unwrap_or_else(|_| Value::String(joined.to_string()))
}

fn push_text(out: &mut Vec<LlmEvent>, text: Option<&str>) {
    if let Some(t) = text.filter(|t| !t.is_empty()) {
        out.push(LlmEvent::TextDelta(t.to_string()));
    }
}

fn push_thinking(out: &mut Vec<LlmEvent>, text: Option<&str>) {
    if let Some(t) = text.filter(|t| !t.is_empty()) {
        out.push(LlmEvent::ThinkingDelta(t.to_string()));
    }
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests;
