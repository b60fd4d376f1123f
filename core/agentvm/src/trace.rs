//! The spans agentvm opens for OpenTelemetry, all under [`TRACE_TARGET`], named and attributed
//! after the OpenTelemetry semantic conventions (GenAI for the model and tool calls). The
//! `otel.*` fields are how `tracing-opentelemetry` sets a span's name, kind and status.
//!
//! Nothing here exports: a subscriber does (agentvm-server's OTLP exporter). Without one that
//! wants [`TRACE_TARGET`], each of these is a disabled callsite and records nothing.

use crate::llm::LlmDriver;
use crate::model::{ToolCall, Usage, TRACE_TARGET};
use tracing::field::Empty;
use tracing::Span;

/// One command through the dispatcher.
pub(crate) fn request(command: &'static str) -> Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        "request",
        otel.name = command,
        otel.kind = "server",
        agentvm.command = command,
        otel.status_code = Empty,
        otel.status_description = Empty,
        error.type = Empty,
    )
}

/// An agent answering one user message: its model calls and tool calls are its children.
pub(crate) fn turn(agent_id: &str, session_id: &str, container_id: &str) -> Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        "invoke_agent",
        otel.name = "invoke_agent agentvm",
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.id = agent_id,
        gen_ai.conversation.id = session_id,
        agentvm.container.id = container_id,
        otel.status_code = Empty,
        otel.status_description = Empty,
        error.type = Empty,
    )
}

/// One request to the model.
pub(crate) fn chat(driver: &dyn LlmDriver, model: &str, max_tokens: u32) -> Span {
    let span = tracing::info_span!(
        target: TRACE_TARGET,
        "chat",
        otel.name = format!("chat {model}"),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = driver.name(),
        gen_ai.request.model = model,
        gen_ai.request.max_tokens = max_tokens,
        server.address = Empty,
        gen_ai.response.model = Empty,
        gen_ai.response.finish_reasons = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
        error.type = Empty,
    );
    if let Some(endpoint) = driver.endpoint() {
        span.record("server.address", endpoint);
    }
    span
}

/// What the model reported about its reply.
pub(crate) fn chat_reply(
    span: &Span,
    model: Option<&str>,
    usage: Option<&Usage>,
    stop: Option<&str>,
) {
    if let Some(m) = model {
        span.record("gen_ai.response.model", m);
    }
    if let Some(u) = usage {
        span.record("gen_ai.usage.input_tokens", u.input_tokens);
        span.record("gen_ai.usage.output_tokens", u.output_tokens);
    }
    if let Some(s) = stop {
        span.record("gen_ai.response.finish_reasons", s);
    }
}

/// One tool call the model asked for.
pub(crate) fn tool(call: &ToolCall) -> Span {
    tracing::info_span!(
        target: TRACE_TARGET,
        "execute_tool",
        otel.name = format!("execute_tool {}", call.name),
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = call.name.as_str(),
        gen_ai.tool.call.id = call.id.as_str(),
        gen_ai.tool.type = "function",
        otel.status_code = Empty,
        otel.status_description = Empty,
        error.type = Empty,
    )
}

/// Marks `span` failed: `error.type` is the error's kind, the status says what went wrong.
pub(crate) fn failed(span: &Span, kind: &str, description: &dyn std::fmt::Display) {
    if span.is_disabled() {
        return;
    }
    span.record("otel.status_code", "ERROR");
    span.record("error.type", kind);
    let mut text = description.to_string();
    if text.len() > MAX_DESCRIPTION {
        let mut end = MAX_DESCRIPTION;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    span.record("otel.status_description", text);
}

/// The longest status description a span carries (a tool's error output can be large).
const MAX_DESCRIPTION: usize = 512;
