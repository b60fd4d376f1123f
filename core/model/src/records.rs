//! Persisted records: definitions, images, containers, sessions.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A named agent template, the Dockerfile of the analogy: what an agent is before it is built
/// into an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    /// Unique name; images record which definition they came from by this name.
    pub name: String,
    /// Human description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The system prompt sent with every turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Model override; `None` uses the runtime's configured model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Built-in tools the agent may call (`bash`, `read_file`, ...). Empty: no tools.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// MCP servers whose tools the agent may call, as `mcp__<server>__<tool>`: by name, a
    /// stdio server `{command, args, env}` or a streamable HTTP one `{type: "http", url,
    /// headers}` (docs/mcp.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<crate::mcp::McpServers>,
}

/// The `config` of `image_create_request` / `image_build_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    /// Display name; defaults to `"New Conversation"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// System prompt; overrides the definition's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// MCP servers; override the definition's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mcp_servers: Option<crate::mcp::McpServers>,
    /// A registered definition's name, or an inline definition object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<Value>,
    /// Model override for this image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Built-in tools to enable; overrides the definition's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<String>>,
}

/// A built image as stored: the configuration an agent runs with, frozen at build time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageRecord {
    /// `img_…`
    pub image_id: String,
    /// The container (tenant) that owns it.
    pub container_id: String,
    /// Its first session, the one `message_send_request {imageId}` talks to.
    pub session_id: String,
    /// Display name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The registered definition it was built from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_name: Option<String>,
    /// The effective definition (registered definition merged with the config) at build time.
    /// Agents run from this snapshot, never from the live registry.
    pub definition: Definition,
    /// Creation time, ms.
    pub created_at: i64,
    /// Last update, ms.
    pub updated_at: i64,
}

/// An image as the protocol shows it (AgentX's `ImageListItem`): the record plus whether an
/// agent is running for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageListItem {
    /// `img_…`
    pub image_id: String,
    /// Owning container.
    pub container_id: String,
    /// The image's first session.
    pub session_id: String,
    /// Display name.
    pub name: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Effective system prompt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system_prompt: Option<String>,
    /// Creation time, ms.
    pub created_at: i64,
    /// Last update, ms.
    pub updated_at: i64,
    /// Whether an agent is running for this image.
    pub online: bool,
    /// The running agent, when online.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The registered definition it was built from (agentvm extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition_name: Option<String>,
    /// Model override (agentvm extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

impl ImageListItem {
    /// The wire view of `record`, online when `agent_id` is set.
    pub fn new(record: &ImageRecord, agent_id: Option<String>) -> Self {
        ImageListItem {
            image_id: record.image_id.clone(),
            container_id: record.container_id.clone(),
            session_id: record.session_id.clone(),
            name: record.name.clone(),
            description: record.description.clone(),
            system_prompt: record.definition.system_prompt.clone(),
            created_at: record.created_at,
            updated_at: record.updated_at,
            online: agent_id.is_some(),
            agent_id,
            definition_name: record.definition_name.clone(),
            model: record.definition.model.clone(),
        }
    }
}

/// A container: one tenant's isolation unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ContainerRecord {
    /// Caller-chosen id (`user-alice`).
    pub container_id: String,
    /// Creation time, ms.
    pub created_at: i64,
    /// The scheduler template whose sandbox runs this container's agents' tools; `None`:
    /// the runtime's default (local tools, if enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_template: Option<String>,
}

/// One conversation on an image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    /// `sess_…`
    pub session_id: String,
    /// The image it talks to.
    pub image_id: String,
    /// The owning container.
    pub container_id: String,
    /// Optional title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Creation time, ms.
    pub created_at: i64,
    /// Last change (title or a new message), ms.
    pub updated_at: i64,
}
