//! The OpenAI-compatible chat completions driver: `POST {url}/v1/chat/completions` with
//! `stream: true` and `stream_options.include_usage`. Works with OpenAI, vLLM, llama.cpp and
//! Ollama; `{url}` may end in `/v1` or not.
//!
//! Request: the system prompt as the first message; the history as [`conversation`] normalizes
//! it, with tool calls as the assistant's `tool_calls` and results as `tool` messages (a failed
//! result is prefixed `[error] `, since the format has no error flag); `tools` as functions; the
//! output limit as `max_completion_tokens` for api.openai.com (its newer models refuse
//! `max_tokens`) and `max_tokens` for every other server.
//!
//! Stream: `content` deltas; `reasoning_content` / `reasoning` deltas (vLLM, llama.cpp,
//! DeepSeek) as [`LlmEvent::ThinkingDelta`]; `tool_calls` fragments assembled by `index`, one call
//! streamed at a time (a call is closed when the next index starts or the choice finishes); a
//! call that comes whole in one chunk without an `id` or an `index` (Ollama) gets a synthesized
//! id; `finish_reason` `null` and `""` mean "not yet"; the usage-only last chunk; `data: [DONE]`;
//! and errors sent mid-stream as `{"error": ...}` data or as llama.cpp's `error:` lines. A stream
//! that ends after a `finish_reason` but without `[DONE]` is complete; one that ends before is
//! cut.

use super::conversation::{conversation, Turn, UserBlock};
use super::http::{self, HttpSettings, ReplyDecoder};
use super::retry::code_for_error_type;
use super::sse::SseEvent;
use super::{LlmDriver, LlmEvent, LlmRequest, LlmStream};
use crate::model::{ContentPart, Message, Usage};
use futures::StreamExt;
use serde_json::{json, Map, Value};
use std::sync::Arc;
use std::time::Duration;

/// The public API's base URL.
pub const DEFAULT_URL: &str = "https://api.openai.com";

/// A driver for OpenAI-compatible chat completions servers.
pub struct OpenAiDriver {
    settings: HttpSettings,
    client: reqwest::Client,
    default_model: String,
    token_limit_field: &'static str,
    /// Without a default model: the one the server's `/v1/models` lists first, once known.
    listed_model: Arc<tokio::sync::OnceCell<String>>,
}

impl std::fmt::Debug for OpenAiDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiDriver")
            .field("url", &self.settings.base_url)
            .field("default_model", &self.default_model)
            .finish_non_exhaustive()
    }
}

impl OpenAiDriver {
    /// A driver talking to `settings.base_url`, answering with `default_model` when an image
    /// names none. The key, when set, is sent as a bearer token.
    pub fn new(settings: HttpSettings, default_model: impl Into<String>) -> crate::Result<Self> {
        let official = settings.base_url.contains("://api.openai.com");
        Ok(OpenAiDriver {
            client: http::client(&settings)?,
            settings,
            default_model: default_model.into(),
            token_limit_field: if official {
                "max_completion_tokens"
            } else {
                "max_tokens"
            },
            listed_model: Arc::new(tokio::sync::OnceCell::new()),
        })
    }
}

impl LlmDriver for OpenAiDriver {
    fn name(&self) -> &str {
        "openai"
    }

    fn default_model(&self) -> &str {
        &self.default_model
    }

    fn endpoint(&self) -> Option<&str> {
        Some(&self.settings.base_url)
    }

    fn stream(&self, mut request: LlmRequest) -> LlmStream {
        if !request.model.is_empty() {
            return send(
                &self.client,
                &self.settings,
                self.token_limit_field,
                request,
            );
        }
        // Neither the image nor LLM_PROVIDER_MODEL names a model: ask the server which it
        // serves (Ollama, vLLM and llama.cpp list theirs), once.
        let (client, settings, field) = (
            self.client.clone(),
            self.settings.clone(),
            self.token_limit_field,
        );
        let listed = self.listed_model.clone();
        futures::stream::once(async move {
            match listed
                .get_or_try_init(|| first_listed_model(&client, &settings))
                .await
            {
                Ok(model) => {
                    request.model = model.clone();
                    send(&client, &settings, field, request)
                }
                Err(message) => futures::stream::iter([LlmEvent::Error {
                    message,
                    code: Some("invalid_request".into()),
                }])
                .boxed(),
            }
        })
        .flatten()
        .boxed()
    }
}

/// Streams one chat completion of `request` (its model named).
fn send(
    client: &reqwest::Client,
    settings: &HttpSettings,
    token_limit_field: &'static str,
    request: LlmRequest,
) -> LlmStream {
    let body = request_body(&request, token_limit_field).to_string();
    let url = settings.endpoint("chat/completions");
    let client = client.clone();
    let key = settings.api_key.clone().filter(|k| !k.is_empty());
    let build = move || {
        let mut r = client
            .post(&url)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream");
        if let Some(key) = &key {
            r = r.bearer_auth(key);
        }
        r.body(body.clone())
    };
    http::reply_stream(
        "OpenAI-compatible server",
        settings,
        build,
        OpenAiDecoder::default(),
    )
}

/// The first model `GET /v1/models` lists, or why there is none.
async fn first_listed_model(
    client: &reqwest::Client,
    settings: &HttpSettings,
) -> Result<String, String> {
    let url = settings.endpoint("models");
    let refuse = |why: String| {
        format!(
            "no model named: neither the image nor LLM_PROVIDER_MODEL names one, and {url} {why}; \
             set LLM_PROVIDER_MODEL (or the image's model) to a model this server serves"
        )
    };
    let mut r = client
        .get(&url)
        .timeout(settings.timeout.min(Duration::from_secs(30)));
    if let Some(key) = settings.api_key.as_deref().filter(|k| !k.is_empty()) {
        r = r.bearer_auth(key);
    }
    let response = r
        .send()
        .await
        .map_err(|e| refuse(format!("could not be read ({e})")))?;
    let status = response.status();
    if !status.is_success() {
        return Err(refuse(format!("answered HTTP {status}")));
    }
    let listing: Value = response.json().await.map_err(|e| {
        refuse(format!(
            "answered with something other than a model list ({e})"
        ))
    })?;
    listing["data"]
        .as_array()
        .and_then(|models| models.iter().find_map(|m| m["id"].as_str()))
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .ok_or_else(|| refuse("lists no model".into()))
}

/// The JSON body of a streaming chat completions request. `token_limit_field` is
/// `max_tokens` or `max_completion_tokens`.
pub fn request_body(request: &LlmRequest, token_limit_field: &str) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = request.system.as_deref().filter(|s| !s.is_empty()) {
        messages.push(json!({"role": "system", "content": system}));
    }
    messages.extend(history(&request.messages));
    let mut body = json!({
        "model": request.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    body[token_limit_field] = json!(request.max_tokens);
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.input_schema}}))
            .collect();
    }
    body
}

/// The stored history as chat completions messages (no system message).
pub fn history(messages: &[Message]) -> Vec<Value> {
    let mut out = Vec::new();
    for turn in conversation(messages) {
        match turn {
            Turn::Assistant { text, calls } => {
                let mut m = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { json!(text) }});
                if !calls.is_empty() {
                    m["tool_calls"] = calls
                        .iter()
                        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.input.to_string()}}))
                        .collect();
                }
                out.push(m);
            }
            Turn::User(blocks) => {
                let mut parts = Vec::new();
                for b in blocks {
                    match b {
                        UserBlock::ToolResult(r) => {
                            let content = if r.is_error {
                                format!("[error] {}", r.output)
                            } else {
                                r.output
                            };
                            out.push(json!({"role": "tool", "tool_call_id": r.tool_call_id, "content": content}));
                        }
                        UserBlock::Part(p) => parts.push(p),
                    }
                }
                if !parts.is_empty() {
                    out.push(json!({"role": "user", "content": user_content(parts)}));
                }
            }
        }
    }
    out
}

/// Text only: one string (what every server accepts); otherwise an array of parts.
fn user_content(parts: Vec<ContentPart>) -> Value {
    if parts.iter().all(|p| matches!(p, ContentPart::Text { .. })) {
        let texts: Vec<String> = parts
            .into_iter()
            .filter_map(|p| match p {
                ContentPart::Text { text } => Some(text),
                _ => None,
            })
            .collect();
        return json!(texts.join("\n\n"));
    }
    parts
        .into_iter()
        .map(|p| match p {
            ContentPart::Text { text } => json!({"type": "text", "text": text}),
            ContentPart::Image { data, media_type } => {
                json!({"type": "image_url", "image_url": {"url": format!("data:{media_type};base64,{data}")}})
            }
            ContentPart::File { data, media_type, filename } => json!({"type": "file", "file": {
                "filename": filename.unwrap_or_else(|| "file".into()),
                "file_data": format!("data:{media_type};base64,{data}"),
            }}),
        })
        .collect()
}

/// A tool call being assembled.
#[derive(Debug)]
struct Call {
    index: u64,
    id: String,
    name: String,
    args: String,
    started: bool,
    stopped: bool,
}

/// Decodes a chat completions stream. Pure: SSE events in, [`LlmEvent`]s out.
#[derive(Debug, Default)]
pub struct OpenAiDecoder {
    started: bool,
    done: bool,
    calls: Vec<Call>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl OpenAiDecoder {
    /// A decoder at the start of a reply.
    pub fn new() -> Self {
        Self::default()
    }

    /// Handles one SSE event.
    pub fn decode(&mut self, event: &SseEvent, out: &mut Vec<LlmEvent>) {
        if self.done {
            return;
        }
        let data = event.data.trim();
        if data == "[DONE]" {
            self.complete(out);
            return;
        }
        let v: Value = match serde_json::from_str(data) {
            Ok(v) => v,
            Err(e) => {
                let message = format!(
                    "the server sent an event that is not JSON ({e}): {}",
                    clip(data)
                );
                return self.fail(out, message, "network");
            }
        };
        if event.event == "error" || v.get("error").is_some_and(|e| !e.is_null()) {
            let e = v.get("error").unwrap_or(&v);
            let message = e
                .get("message")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| e.to_string());
            let kind = e
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("server_error");
            return self.fail(
                out,
                format!("the server reported an error ({kind}): {message}"),
                code_for_error_type(kind),
            );
        }
        if !self.started {
            self.started = true;
            let model = v
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            out.push(LlmEvent::MessageStart { model });
        }
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(Usage {
                input_tokens: u["prompt_tokens"].as_u64().unwrap_or(0),
                output_tokens: u["completion_tokens"].as_u64().unwrap_or(0),
            });
        }
        let Some(choice) = v.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        let delta = &choice["delta"];
        for key in ["reasoning_content", "reasoning"] {
            if let Some(t) = delta[key].as_str().filter(|t| !t.is_empty()) {
                out.push(LlmEvent::ThinkingDelta(t.to_string()));
            }
        }
        if let Some(t) = delta["content"].as_str().filter(|t| !t.is_empty()) {
            out.push(LlmEvent::TextDelta(t.to_string()));
        }
        if let Some(fragments) = delta["tool_calls"].as_array() {
            for f in fragments {
                if let Err(message) = self.tool_fragment(f, out) {
                    return self.fail(out, message, "network");
                }
            }
        }
        if let Some(reason) = choice["finish_reason"].as_str().filter(|r| !r.is_empty()) {
            self.finish_reason = Some(reason.to_string());
            self.close_calls(out);
        }
    }

    fn tool_fragment(&mut self, f: &Value, out: &mut Vec<LlmEvent>) -> Result<(), String> {
        let function = &f["function"];
        let name = function["name"].as_str().unwrap_or_default();
        let args = match &function["arguments"] {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            // Some servers send the arguments as an object.
            other => other.to_string(),
        };
        let index = match f["index"].as_u64() {
            Some(i) => i,
            // No index (older Ollama): a fragment with a name is a new call.
            None if !name.is_empty() || self.calls.is_empty() => self.calls.len() as u64,
            None => self.calls.last().map(|c| c.index).unwrap_or(0),
        };
        let pos = match self.calls.iter().position(|c| c.index == index) {
            Some(pos) => pos,
            None => {
                // A new call closes the one streaming before it.
                self.close_calls(out);
                let id = f["id"].as_str().filter(|s| !s.is_empty()).map(String::from);
                self.calls.push(Call {
                    index,
                    id: id.unwrap_or_else(|| crate::model::new_id("call")),
                    name: String::new(),
                    args: String::new(),
                    started: false,
                    stopped: false,
                });
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[pos];
        if call.stopped {
            return Err(format!(
                "the server sent more of tool call {} after the next one began",
                call.id
            ));
        }
        if call.name.is_empty() {
            call.name = name.to_string();
        }
        call.args.push_str(&args);
        if !call.started && !call.name.is_empty() {
            call.started = true;
            out.push(LlmEvent::ToolUseStart {
                id: call.id.clone(),
                name: call.name.clone(),
            });
            if !call.args.is_empty() {
                out.push(LlmEvent::InputJsonDelta(call.args.clone()));
            }
        } else if call.started && !args.is_empty() {
            out.push(LlmEvent::InputJsonDelta(args));
        }
        Ok(())
    }

    fn close_calls(&mut self, out: &mut Vec<LlmEvent>) {
        for call in self.calls.iter_mut().filter(|c| !c.stopped) {
            call.stopped = true;
            if !call.started {
                call.started = true;
                out.push(LlmEvent::ToolUseStart {
                    id: call.id.clone(),
                    name: call.name.clone(),
                });
            }
            let input = if call.args.trim().is_empty() {
                Value::Object(Map::new())
            } else {
                serde_json::from_str(&call.args)
                    .unwrap_or_else(|_| Value::String(call.args.clone()))
            };
            out.push(LlmEvent::ToolUseStop {
                id: call.id.clone(),
                name: call.name.clone(),
                input,
            });
        }
    }

    fn complete(&mut self, out: &mut Vec<LlmEvent>) {
        if !self.started {
            self.started = true;
            out.push(LlmEvent::MessageStart {
                model: String::new(),
            });
        }
        self.close_calls(out);
        let has_calls = !self.calls.is_empty();
        let stop_reason = match self.finish_reason.as_deref() {
            _ if has_calls => "tool_use",
            Some("stop") | None => "end_turn",
            Some("length") => "max_tokens",
            Some("tool_calls" | "function_call") => "tool_use",
            Some("content_filter") => "refusal",
            Some(other) => other,
        };
        out.push(LlmEvent::MessageDelta {
            usage: self.usage,
            stop_reason: Some(stop_reason.to_string()),
        });
        out.push(LlmEvent::MessageStop);
        self.done = true;
    }

    /// The body ended: complete when the choice finished, else an error.
    pub fn finish(&mut self, out: &mut Vec<LlmEvent>) {
        if self.done {
            return;
        }
        if self.finish_reason.is_some() {
            self.complete(out);
        } else {
            let what = if self.started {
                "before the reply finished"
            } else {
                "before the reply started"
            };
            self.fail(out, format!("the stream ended {what}"), "network");
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

impl ReplyDecoder for OpenAiDecoder {
    fn event(&mut self, event: SseEvent, out: &mut Vec<LlmEvent>) {
        self.decode(&event, out);
    }

    fn end(&mut self, out: &mut Vec<LlmEvent>) {
        self.finish(out);
    }
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

#[cfg(test)]
mod tests;
