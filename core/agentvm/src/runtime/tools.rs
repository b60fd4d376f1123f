//! Where an agent's tool calls go. The built-in tools and sandboxes plug in behind
//! [`ToolRunner`]; without one, every call is refused with a clear result the model can read.

use crate::llm::ToolSpec;
use crate::model::ToolCall;
use crate::toolhost::{StdioCommand, StdioProcess};
use async_trait::async_trait;

/// Who is calling a tool.
#[derive(Debug, Clone)]
pub struct ToolContext {
    /// The container (tenant); tools run in its workspace / sandbox.
    pub container_id: String,
    /// The image.
    pub image_id: String,
    /// The session.
    pub session_id: String,
    /// The tools the image enables.
    pub enabled: Vec<String>,
}

/// A tool's outcome, fed back to the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOutcome {
    /// What the tool printed or returned, or the error text.
    pub output: String,
    /// True when the tool failed.
    pub is_error: bool,
}

/// Runs tool calls for agents.
#[async_trait]
pub trait ToolRunner: Send + Sync + 'static {
    /// The tools offered to the model for an image enabling `enabled`.
    fn specs(&self, enabled: &[String]) -> Vec<ToolSpec>;
    /// Runs one call. Cancel by dropping the future.
    async fn run(&self, ctx: &ToolContext, call: &ToolCall) -> ToolOutcome;

    /// Starts a stdio MCP server where the context's tools run: the container's sandbox, or
    /// this machine where local tools are allowed. Without a place for tools, refused.
    async fn spawn_stdio(
        &self,
        ctx: &ToolContext,
        command: &StdioCommand,
    ) -> crate::error::Result<StdioProcess> {
        let _ = command;
        Err(crate::error::Error::unavailable(format!(
            "container {} has no place to run a stdio MCP server: create it with a \
             sandboxTemplate, or allow local tools for it",
            ctx.container_id
        )))
    }
}

/// The runner used when no tools are configured: offers none, refuses every call.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoTools;

#[async_trait]
impl ToolRunner for NoTools {
    fn specs(&self, _enabled: &[String]) -> Vec<ToolSpec> {
        Vec::new()
    }

    async fn run(&self, _ctx: &ToolContext, call: &ToolCall) -> ToolOutcome {
        ToolOutcome {
            output: format!(
                "tool '{}' is not available: no tools are enabled for this agent",
                call.name
            ),
            is_error: true,
        }
    }
}
