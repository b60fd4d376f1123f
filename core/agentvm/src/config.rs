//! Configuration: input limits and agent tuning. The LLM provider's configuration is
//! [`crate::llm::LlmConfig`]; the built-in tools' is [`crate::toolhost::ToolLimits`].

use std::time::Duration;

/// Limits on what callers may send. Anything larger is refused with `InvalidInput`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Image names and session titles, bytes.
    pub max_name_bytes: usize,
    /// Descriptions, bytes.
    pub max_description_bytes: usize,
    /// System prompts, bytes.
    pub max_system_prompt_bytes: usize,
    /// A whole image config or definition as JSON (MCP servers included), bytes.
    pub max_config_bytes: usize,
    /// One user message's content, bytes. Well under the server's frame limit, so a stored
    /// message always fits a response, and a history page holds several.
    pub max_content_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_name_bytes: 1024,
            max_description_bytes: 64 * 1024,
            max_system_prompt_bytes: 1024 * 1024,
            max_config_bytes: 2 * 1024 * 1024,
            max_content_bytes: 1024 * 1024,
        }
    }
}

impl Limits {
    /// `InvalidInput` when `value` is longer than `max` bytes.
    pub(crate) fn check(what: &str, value: &str, max: usize) -> crate::Result<()> {
        if value.len() > max {
            return Err(crate::Error::invalid(format!(
                "{what} is {} bytes long; the limit is {max}",
                value.len()
            )));
        }
        Ok(())
    }
}

/// How agents behave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// Model calls allowed for one user message before the turn fails (tool loops).
    pub max_turns: u32,
    /// Output token limit per model call.
    pub max_tokens: u32,
    /// The longest an agent waits for the model's next event (the first one included): a
    /// stalled reply is cancelled and the turn fails with `errorCode: timeout`. It bounds any
    /// driver, including ones without timeouts of their own.
    pub request_timeout: Duration,
    /// User messages that may wait for one agent.
    pub mailbox: usize,
    /// The most messages of its history an agent holds in memory and sends the model; older
    /// ones stay in the store (whole turns leave the window, oldest first).
    pub history_messages: usize,
    /// The most bytes of history (stored JSON) an agent holds in memory and sends the model.
    pub history_bytes: usize,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            max_turns: 25,
            max_tokens: 4096,
            request_timeout: Duration::from_secs(600),
            mailbox: 1024,
            history_messages: 500,
            history_bytes: 16 * 1024 * 1024,
        }
    }
}
