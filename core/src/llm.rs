//! LLM drivers: the trait every provider implements, and the mock driver.
//!
//! A driver turns a conversation into a stream of [`LlmEvent`]s. It parses; it decides nothing
//! (the agent actor does). Cancelling a reply is dropping its stream.

pub mod mock;

use crate::model::{Message, Usage};
use futures::stream::BoxStream;
use serde_json::Value;

pub use mock::{MockDriver, MockScenario};

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
    /// Starts a reply. Errors are reported in the stream, as [`LlmEvent::Error`].
    fn stream(&self, request: LlmRequest) -> LlmStream;
}

/// The driver of a real provider (`anthropic` or `openai`), configured from its key, URL and
/// model.
pub fn provider_driver(
    provider: &str,
    _key: Option<String>,
    _url: Option<String>,
    _model: Option<String>,
) -> crate::Result<std::sync::Arc<dyn LlmDriver>> {
    Err(crate::Error::invalid(format!(
        "LLM_PROVIDER={provider} is not available in this build yet; use LLM_PROVIDER=mock"
    )))
}
