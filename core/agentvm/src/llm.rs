//! LLM drivers: the trait every provider implements, the Anthropic and OpenAI-compatible
//! drivers, the mock driver, and their configuration.
//!
//! A driver turns a conversation into a stream of [`LlmEvent`]s. It parses; it decides nothing
//! (the agent actor does). Cancelling a reply is dropping its stream, which closes its HTTP
//! connection.
//!
//! The pure parts are separate from the I/O: [`sse`] (bytes to events), [`conversation`]
//! (stored history to a valid provider conversation), the decoders in [`anthropic`] and
//! [`openai`] (events to [`LlmEvent`]s) and the policy in [`retry`]; `http` sends and streams.

pub mod anthropic;
pub mod config;
pub mod conversation;
mod http;
mod latency;
pub mod mock;
pub mod openai;
pub mod retry;
pub mod sse;

use crate::model::{Message, Usage};
use futures::stream::BoxStream;
use serde_json::Value;

pub use anthropic::AnthropicDriver;
pub use config::{LlmConfig, Provider};
pub use http::HttpSettings;
pub(crate) use latency::TimedDriver;
pub use latency::{LlmLatency, PROVIDERS};
pub use mock::{MockDriver, MockScenario};
pub use openai::OpenAiDriver;
pub use retry::RetryPolicy;

/// A tool the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// The tool's name.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// JSON Schema of its input.
    pub input_schema: Value,
}

/// One call to the model.
#[derive(Debug, Clone)]
pub struct LlmRequest {
    /// The model to use.
    pub model: String,
    /// The system prompt.
    pub system: Option<String>,
    /// The conversation so far, oldest first, as stored.
    pub messages: Vec<Message>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// Output token limit.
    pub max_tokens: u32,
}

/// What a driver streams back. A stream ends after `MessageStop` or `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum LlmEvent {
    /// The reply started.
    MessageStart {
        /// The model answering.
        model: String,
    },
    /// Text.
    TextDelta(String),
    /// The model's visible reasoning (Anthropic `thinking`, `reasoning_content` of
    /// OpenAI-compatible servers). Never part of the reply's text; the agent does not publish it.
    ThinkingDelta(String),
    /// A tool call started.
    ToolUseStart {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
    },
    /// Part of a tool call's input JSON.
    InputJsonDelta(String),
    /// A tool call is complete.
    ToolUseStop {
        /// Call id.
        id: String,
        /// Tool name.
        name: String,
        /// The parsed input.
        input: Value,
    },
    /// Stop reason and cumulative usage.
    MessageDelta {
        /// Cumulative usage, when the provider reports it.
        usage: Option<Usage>,
        /// Why the model stopped.
        stop_reason: Option<String>,
    },
    /// The reply is complete.
    MessageStop,
    /// The reply failed.
    Error {
        /// What went wrong.
        message: String,
        /// `rate_limit`, `overloaded`, `authentication`, `invalid_request`, `timeout`, `network`.
        code: Option<String>,
    },
}

/// A streamed reply.
pub type LlmStream = BoxStream<'static, LlmEvent>;

/// An LLM provider.
pub trait LlmDriver: Send + Sync + 'static {
    /// A short name for logs (`mock`, `anthropic`, `openai`).
    fn name(&self) -> &str;
    /// The model used when an image names none.
    fn default_model(&self) -> &str;
    /// Where requests go (a base URL, never a key), for logs; `None` for in-process drivers.
    fn endpoint(&self) -> Option<&str> {
        None
    }
    /// Starts a reply. Errors are reported in the stream, as [`LlmEvent::Error`].
    fn stream(&self, request: LlmRequest) -> LlmStream;
}
