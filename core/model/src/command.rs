//! Commands and their responses (docs/protocol.md §4).
//!
//! A [`Command`] serializes as `{"type":"<name>_request","data":{...}}` and a [`Response`] as
//! `{"type":"<name>_response","data":{...}}`; the envelope fields and `requestId` are added by
//! Channel codec. Each request struct implements [`Call`], which ties it to its
//! response type so typed helpers can be thin wrappers over `Runtime::request`.

use super::message::{Content, Message};
use super::operations::*;
use super::records::{Definition, ImageConfig, ImageListItem, SessionRecord};
use serde::{Deserialize, Serialize};

/// A request type with a known response type.
pub trait Call: Sized {
    /// What a successful request returns.
    type Output;
    /// Wraps the request as a [`Command`].
    fn into_command(self) -> Command;
    /// Unwraps the matching [`Response`]; `Err` names the type of any other response.
    fn from_response(response: Response) -> Result<Self::Output, &'static str>;
}

/// Deserializes `data` as `T`, failing with `InvalidInput` naming every field `T` ignores.
fn strict<T: serde::de::DeserializeOwned>(
    type_name: &str,
    data: serde_json::Value,
) -> crate::Result<T> {
    let mut unknown = Vec::new();
    let parsed: T = serde_ignored::deserialize(data, |path| unknown.push(path.to_string()))
        .map_err(|e| crate::Error::invalid(format!("Invalid {type_name}: {e}")))?;
    if unknown.is_empty() {
        Ok(parsed)
    } else {
        Err(crate::Error::invalid(format!(
            "Invalid {type_name}: unknown field{} {}",
            if unknown.len() == 1 { "" } else { "s" },
            unknown
                .iter()
                .map(|f| format!("`{f}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )))
    }
}

macro_rules! commands {
    ($( $(#[$doc:meta])* $variant:ident($req_name:literal, $resp_name:literal): $req:ident => $resp:ident; )*) => {
        /// Every command of the protocol, by its wire `type`. Deliberately exhaustive: a new
        /// command does not compile until the dispatcher handles it.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[serde(tag = "type", content = "data")]
        pub enum Command {
            $( $(#[$doc])* #[serde(rename = $req_name)] $variant($req), )*
        }

        /// The successful response of every command.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[serde(tag = "type", content = "data")]
        pub enum Response {
            $( $(#[$doc])* #[serde(rename = $resp_name)] $variant($resp), )*
        }

        /// Which command, without its data: a small copyable key (per-command metrics, tables).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum CommandKind {
            $( $(#[$doc])* $variant, )*
        }

        impl CommandKind {
            /// Every kind, in table order (`ALL[k.index()] == k`).
            pub const ALL: &'static [CommandKind] = &[$(CommandKind::$variant),*];

            /// The position in the table, `0..CommandKind::ALL.len()`.
            pub fn index(self) -> usize {
                self as usize
            }

            /// The wire type of the request (`image_get_request`).
            pub fn type_name(self) -> &'static str {
                match self { $( CommandKind::$variant => $req_name, )* }
            }

            /// The wire type of the response (`image_get_response`).
            pub fn response_type(self) -> &'static str {
                match self { $( CommandKind::$variant => $resp_name, )* }
            }

            /// The kind of a wire request type, if it is one.
            pub fn from_type_name(type_name: &str) -> Option<CommandKind> {
                match type_name { $( $req_name => Some(CommandKind::$variant), )* _ => None }
            }

            /// Parses `data` as this command's request, refusing fields the request does not
            /// have (REST bodies): the error names each unknown field.
            pub fn parse_strict(self, data: serde_json::Value) -> crate::Result<Command> {
                let data = if data.is_null() {
                    serde_json::Value::Object(Default::default())
                } else {
                    data
                };
                match self {
                    $( CommandKind::$variant => strict::<$req>($req_name, data).map(Command::$variant), )*
                }
            }

            /// Deserializes this command's request `data` from `deserializer` (any serde
            /// format): for front ends that read the `type` first and then the data straight
            /// from the text, without the envelope's buffering. Unknown fields are ignored, as
            /// the request types do; wrap `deserializer` (e.g. with `serde_ignored`) to see them.
            pub fn deserialize_data<'de, D: serde::Deserializer<'de>>(
                self,
                deserializer: D,
            ) -> std::result::Result<Command, D::Error> {
                match self {
                    $( CommandKind::$variant => <$req as Deserialize>::deserialize(deserializer).map(Command::$variant), )*
                }
            }
        }

        #[cfg(feature = "schema")]
        impl CommandKind {
            /// The JSON Schema of this command's request `data`, as `generator` makes it (a
            /// `$ref` into its definitions): feature `schema`.
            pub fn request_schema(self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                match self { $( CommandKind::$variant => generator.subschema_for::<$req>(), )* }
            }

            /// The JSON Schema of this command's response `data` (feature `schema`).
            pub fn response_schema(self, generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
                match self { $( CommandKind::$variant => generator.subschema_for::<$resp>(), )* }
            }
        }

        impl Command {
            /// Which command this is.
            pub fn kind(&self) -> CommandKind {
                match self { $( Command::$variant(_) => CommandKind::$variant, )* }
            }

            /// The wire type of this request (`image_get_request`).
            pub fn type_name(&self) -> &'static str {
                match self { $( Command::$variant(_) => $req_name, )* }
            }
            /// The wire type of its response (`image_get_response`).
            pub fn response_type(&self) -> &'static str {
                match self { $( Command::$variant(_) => $resp_name, )* }
            }
        }

        impl Response {
            /// The wire type of this response.
            pub fn type_name(&self) -> &'static str {
                match self { $( Response::$variant(_) => $resp_name, )* }
            }
        }

        /// Every request type the protocol knows.
        pub const REQUEST_TYPES: &[&str] = &[$($req_name),*];

        $(
            impl Call for $req {
                type Output = $resp;
                fn into_command(self) -> Command { Command::$variant(self) }
                fn from_response(response: Response) -> Result<$resp, &'static str> {
                    match response { Response::$variant(r) => Ok(r), other => Err(other.type_name()) }
                }
            }
            impl From<$req> for Command {
                fn from(r: $req) -> Command { Command::$variant(r) }
            }
        )*
    };
}

commands! {
    /// Get or create a container.
    ContainerCreate("container_create_request", "container_create_response"): ContainerCreateRequest => ContainerCreateResponse;
    /// Whether a container exists.
    ContainerGet("container_get_request", "container_get_response"): ContainerGetRequest => ContainerGetResponse;
    /// The containers the caller may see.
    ContainerList("container_list_request", "container_list_response"): ContainerListRequest => ContainerListResponse;
    /// Delete a container and everything in it.
    ContainerDelete("container_delete_request", "container_delete_response"): ContainerDeleteRequest => ContainerDeleteResponse;
    /// Create an image (and its first session) from a raw config.
    ImageCreate("image_create_request", "image_create_response"): ImageCreateRequest => ImageCreateResponse;
    /// Build an image from a registered definition.
    ImageBuild("image_build_request", "image_build_response"): ImageBuildRequest => ImageBuildResponse;
    /// Get an image.
    ImageGet("image_get_request", "image_get_response"): ImageGetRequest => ImageGetResponse;
    /// List images.
    ImageList("image_list_request", "image_list_response"): ImageListRequest => ImageListResponse;
    /// Rename or re-describe an image.
    ImageUpdate("image_update_request", "image_update_response"): ImageUpdateRequest => ImageUpdateResponse;
    /// Delete an image, its sessions, messages and workdir.
    ImageDelete("image_delete_request", "image_delete_response"): ImageDeleteRequest => ImageDeleteResponse;
    /// Start (or reuse) the agent of an image.
    ImageRun("image_run_request", "image_run_response"): ImageRunRequest => ImageRunResponse;
    /// Stop the agent of an image.
    ImageStop("image_stop_request", "image_stop_response"): ImageStopRequest => ImageStopResponse;
    /// The stored history of an image's first session.
    ImageMessages("image_messages_request", "image_messages_response"): ImageMessagesRequest => ImageMessagesResponse;
    /// Send a user message.
    MessageSend("message_send_request", "message_send_response"): MessageSendRequest => MessageSendResponse;
    /// Interrupt the current turn.
    AgentInterrupt("agent_interrupt_request", "agent_interrupt_response"): AgentInterruptRequest => AgentInterruptResponse;
    /// Whether an agent runs.
    AgentGet("agent_get_request", "agent_get_response"): AgentGetRequest => AgentGetResponse;
    /// Running agents.
    AgentList("agent_list_request", "agent_list_response"): AgentListRequest => AgentListResponse;
    /// Stop an agent.
    AgentDestroy("agent_destroy_request", "agent_destroy_response"): AgentDestroyRequest => AgentDestroyResponse;
    /// Stop every agent of a container.
    AgentDestroyAll("agent_destroy_all_request", "agent_destroy_all_response"): AgentDestroyAllRequest => AgentDestroyAllResponse;
    /// Registered definitions.
    DefinitionList("definition_list_request", "definition_list_response"): DefinitionListRequest => DefinitionListResponse;
    /// One registered definition.
    DefinitionGet("definition_get_request", "definition_get_response"): DefinitionGetRequest => DefinitionGetResponse;
    /// Register (or replace) a definition at run time.
    DefinitionRegister("definition_register_request", "definition_register_response"): DefinitionRegisterRequest => DefinitionRegisterResponse;
    /// Another conversation on an image.
    SessionCreate("session_create_request", "session_create_response"): SessionCreateRequest => SessionCreateResponse;
    /// The sessions of an image.
    SessionList("session_list_request", "session_list_response"): SessionListRequest => SessionListResponse;
    /// One session.
    SessionGet("session_get_request", "session_get_response"): SessionGetRequest => SessionGetResponse;
    /// Set a session's title.
    SessionUpdate("session_update_request", "session_update_response"): SessionUpdateRequest => SessionUpdateResponse;
    /// Delete a session and its messages.
    SessionDelete("session_delete_request", "session_delete_response"): SessionDeleteRequest => SessionDeleteResponse;
    /// Start (or reuse) the agent of a session.
    SessionResume("session_resume_request", "session_resume_response"): SessionResumeRequest => SessionResumeResponse;
    /// The stored history of a session.
    SessionMessages("session_messages_request", "session_messages_response"): SessionMessagesRequest => SessionMessagesResponse;

    // --- the sandbox scheduler and tokens (model/operations.rs, docs/commands.md) ---
    /// Register a runtime node, or update its registration (operator).
    NodeRegister("node_register_request", "node_register_response"): NodeRegisterRequest => NodeRegisterResponse;
    /// A node agent's heartbeat (operator).
    NodeHeartbeat("node_heartbeat_request", "node_heartbeat_response"): NodeHeartbeatRequest => NodeHeartbeatResponse;
    /// Every runtime node with its load (operator).
    NodeList("node_list_request", "node_list_response"): NodeListRequest => NodeListResponse;
    /// One runtime node (operator).
    NodeGet("node_get_request", "node_get_response"): NodeGetRequest => NodeGetResponse;
    /// Set a node online, draining or in maintenance (operator).
    NodeUpdate("node_update_request", "node_update_response"): NodeUpdateRequest => NodeUpdateResponse;
    /// Remove a node that runs no sandboxes (operator).
    NodeDelete("node_delete_request", "node_delete_response"): NodeDeleteRequest => NodeDeleteResponse;
    /// Create a sandbox template (operator).
    TemplateCreate("template_create_request", "template_create_response"): TemplateCreateRequest => TemplateCreateResponse;
    /// One template.
    TemplateGet("template_get_request", "template_get_response"): TemplateGetRequest => TemplateGetResponse;
    /// Every template.
    TemplateList("template_list_request", "template_list_response"): TemplateListRequest => TemplateListResponse;
    /// Replace a template's spec (operator).
    TemplateUpdate("template_update_request", "template_update_response"): TemplateUpdateRequest => TemplateUpdateResponse;
    /// Delete a template (operator).
    TemplateDelete("template_delete_request", "template_delete_response"): TemplateDeleteRequest => TemplateDeleteResponse;
    /// Create a sandbox from a template; answers once it is ready.
    SandboxCreate("sandbox_create_request", "sandbox_create_response"): SandboxCreateRequest => SandboxCreateResponse;
    /// One sandbox.
    SandboxGet("sandbox_get_request", "sandbox_get_response"): SandboxGetRequest => SandboxGetResponse;
    /// The sandboxes the caller may see.
    SandboxList("sandbox_list_request", "sandbox_list_response"): SandboxListRequest => SandboxListResponse;
    /// End a sandbox, keeping its record.
    SandboxTerminate("sandbox_terminate_request", "sandbox_terminate_response"): SandboxTerminateRequest => SandboxTerminateResponse;
    /// End a sandbox and delete its record and executions.
    SandboxDelete("sandbox_delete_request", "sandbox_delete_response"): SandboxDeleteRequest => SandboxDeleteResponse;
    /// Freeze a running sandbox (Docker pause); the next exec or file operation resumes it.
    SandboxPause("sandbox_pause_request", "sandbox_pause_response"): SandboxPauseRequest => SandboxPauseResponse;
    /// Let a paused sandbox run again.
    SandboxResume("sandbox_resume_request", "sandbox_resume_response"): SandboxResumeRequest => SandboxResumeResponse;
    /// Move a live sandbox's deadline (its time to live).
    SandboxExtend("sandbox_extend_request", "sandbox_extend_response"): SandboxExtendRequest => SandboxExtendResponse;
    /// Commit a sandbox's filesystem into a new image and template.
    SandboxSnapshot("sandbox_snapshot_request", "sandbox_snapshot_response"): SandboxSnapshotRequest => SandboxSnapshotResponse;
    /// One sample of a sandbox's cpu, memory, processes and network.
    SandboxUsage("sandbox_usage_request", "sandbox_usage_response"): SandboxUsageRequest => SandboxUsageResponse;
    /// Where a sandbox's TCP port is reached (its address on its Docker network), resuming
    /// it when paused: what the server's port proxy connects to.
    SandboxPort("sandbox_port_request", "sandbox_port_response"): SandboxPortRequest => SandboxPortResponse;
    /// Register a webhook for sandbox events (operator).
    WebhookCreate("webhook_create_request", "webhook_create_response"): WebhookCreateRequest => WebhookCreateResponse;
    /// The webhooks, secrets left out (operator).
    WebhookList("webhook_list_request", "webhook_list_response"): WebhookListRequest => WebhookListResponse;
    /// Remove a webhook (operator).
    WebhookDelete("webhook_delete_request", "webhook_delete_response"): WebhookDeleteRequest => WebhookDeleteResponse;
    /// Recent webhook deliveries and their attempts (operator).
    WebhookDeliveries("webhook_deliveries_request", "webhook_deliveries_response"): WebhookDeliveriesRequest => WebhookDeliveriesResponse;
    /// Run a command in a sandbox; output streams as events on the sandbox's topic.
    SandboxExec("sandbox_exec_request", "sandbox_exec_response"): SandboxExecRequest => SandboxExecResponse;
    /// Stop a running execution (kills its process group).
    SandboxExecCancel("sandbox_exec_cancel_request", "sandbox_exec_cancel_response"): SandboxExecCancelRequest => SandboxExecCancelResponse;
    /// Open an interactive terminal in a sandbox; output streams as events on its topic.
    SandboxTerminalOpen("sandbox_terminal_open_request", "sandbox_terminal_open_response"): SandboxTerminalOpenRequest => SandboxTerminalOpenResponse;
    /// Send input to a terminal.
    SandboxTerminalInput("sandbox_terminal_input_request", "sandbox_terminal_input_response"): SandboxTerminalInputRequest => SandboxTerminalInputResponse;
    /// Set a terminal's window size.
    SandboxTerminalResize("sandbox_terminal_resize_request", "sandbox_terminal_resize_response"): SandboxTerminalResizeRequest => SandboxTerminalResizeResponse;
    /// End a terminal.
    SandboxTerminalClose("sandbox_terminal_close_request", "sandbox_terminal_close_response"): SandboxTerminalCloseRequest => SandboxTerminalCloseResponse;
    /// One execution.
    ExecutionGet("execution_get_request", "execution_get_response"): ExecutionGetRequest => ExecutionGetResponse;
    /// The executions of a sandbox.
    ExecutionList("execution_list_request", "execution_list_response"): ExecutionListRequest => ExecutionListResponse;
    /// Read a file in a sandbox.
    SandboxFileRead("sandbox_file_read_request", "sandbox_file_read_response"): SandboxFileReadRequest => SandboxFileReadResponse;
    /// Write a file in a sandbox.
    SandboxFileWrite("sandbox_file_write_request", "sandbox_file_write_response"): SandboxFileWriteRequest => SandboxFileWriteResponse;
    /// List a directory in a sandbox.
    SandboxFileList("sandbox_file_list_request", "sandbox_file_list_response"): SandboxFileListRequest => SandboxFileListResponse;
    /// Delete a file (or, recursively, a directory) in a sandbox.
    SandboxFileDelete("sandbox_file_delete_request", "sandbox_file_delete_response"): SandboxFileDeleteRequest => SandboxFileDeleteResponse;
    /// The scheduler's counters and gauges (operator).
    SchedulerMetrics("scheduler_metrics_request", "scheduler_metrics_response"): SchedulerMetricsRequest => SchedulerMetricsResponse;
    /// An executor inside a sandbox is up (`/internal/runtime/containers/ready`).
    ExecutorReady("executor_ready_request", "executor_ready_response"): ExecutorReadyRequest => ExecutorReadyResponse;
    /// A sandbox's main process ended (`/internal/runtime/containers/exited`).
    ExecutorExited("executor_exited_request", "executor_exited_response"): ExecutorExitedRequest => ExecutorExitedResponse;
    /// Create an access token; the secret is returned once (operator).
    TokenCreate("token_create_request", "token_create_response"): TokenCreateRequest => TokenCreateResponse;
    /// Every access token, without secrets or hashes (operator).
    TokenList("token_list_request", "token_list_response"): TokenListRequest => TokenListResponse;
    /// Revoke an access token (operator).
    TokenRevoke("token_revoke_request", "token_revoke_response"): TokenRevokeRequest => TokenRevokeResponse;
}

/// `container_create_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ContainerCreateRequest {
    /// The container to get or create.
    pub container_id: String,
    /// The sandbox template its agents' tools run in (agentvm extension). Given for an
    /// existing container, it replaces the old one for sandboxes created from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_template: Option<String>,
}
/// `container_create_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ContainerCreateResponse {
    /// The container.
    pub container_id: String,
}

/// `container_get_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ContainerGetRequest {
    /// The container.
    pub container_id: String,
}
/// `container_get_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ContainerGetResponse {
    /// The container, when it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Whether it exists (in the store).
    pub exists: bool,
    /// Its sandbox template, when it has one (agentvm extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_template: Option<String>,
}

/// `container_list_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ContainerListRequest {}
/// `container_list_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ContainerListResponse {
    /// Visible container ids, sorted.
    pub container_ids: Vec<String>,
}

/// `container_delete_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ContainerDeleteRequest {
    /// The container.
    pub container_id: String,
}
/// `container_delete_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ContainerDeleteResponse {
    /// The container.
    pub container_id: String,
    /// False when it did not exist.
    pub deleted: bool,
}

/// `image_create_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageCreateRequest {
    /// The owning container (created if missing).
    pub container_id: String,
    /// The image's configuration.
    #[serde(default)]
    pub config: ImageConfig,
}
/// `image_create_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageCreateResponse {
    /// The new image.
    pub record: ImageListItem,
    /// Session topics the client should subscribe to.
    #[serde(rename = "__subscriptions")]
    pub subscriptions: Vec<String>,
}

/// `image_build_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageBuildRequest {
    /// The owning container (created if missing).
    pub container_id: String,
    /// A registered definition.
    pub definition_name: String,
    /// Overrides on top of the definition.
    #[serde(default)]
    pub config: ImageConfig,
}
/// `image_build_response`.
pub type ImageBuildResponse = ImageCreateResponse;

/// `image_get_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageGetRequest {
    /// The image.
    pub image_id: String,
}
/// `image_get_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageGetResponse {
    /// The image, `null` when unknown.
    pub record: Option<ImageListItem>,
    /// Its first session's topic, when found.
    #[serde(
        rename = "__subscriptions",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub subscriptions: Option<Vec<String>>,
}

/// `image_list_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageListRequest {
    /// One container; `None`: every container the caller may see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}
/// `image_list_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageListResponse {
    /// The images, oldest first.
    pub records: Vec<ImageListItem>,
    /// Their session topics.
    #[serde(rename = "__subscriptions")]
    pub subscriptions: Vec<String>,
}

/// `updates` of `image_update_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageUpdates {
    /// New name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}
/// `image_update_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageUpdateRequest {
    /// The image.
    pub image_id: String,
    /// What to change.
    pub updates: ImageUpdates,
}
/// `image_update_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageUpdateResponse {
    /// The updated image.
    pub record: ImageListItem,
}

/// `image_delete_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageDeleteRequest {
    /// The image.
    pub image_id: String,
}
/// `image_delete_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageDeleteResponse {
    /// The image.
    pub image_id: String,
}

/// `image_run_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageRunRequest {
    /// The image.
    pub image_id: String,
}
/// `image_run_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageRunResponse {
    /// The image.
    pub image_id: String,
    /// Its agent.
    pub agent_id: String,
    /// True when the agent was already running.
    pub reused: bool,
}

/// `image_stop_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageStopRequest {
    /// The image.
    pub image_id: String,
}
/// `image_stop_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageStopResponse {
    /// The image.
    pub image_id: String,
}

/// Messages a page holds when the request gives no `limit`.
pub const MESSAGE_PAGE_DEFAULT: u32 = 100;
/// The largest `limit` a messages request may ask for.
pub const MESSAGE_PAGE_MAX: u32 = 1000;
/// A page stops adding messages once they reach this many bytes (at least one message is
/// always returned), so one response stays under the default 4 MiB frame limit even after
/// escaping, and a server answering several large reads at once holds a few MiB per read.
pub const MESSAGE_PAGE_MAX_BYTES: usize = 2 * 1024 * 1024;

/// `image_messages_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageMessagesRequest {
    /// The image.
    pub image_id: String,
    /// At most this many messages (default 100, at most 1000); a page also stops once it
    /// holds 2 MiB of messages (at least one is always returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only messages after this cursor (a `nextCursor` of a forward page): pages forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Only messages before this cursor (a `nextCursor` of a backward page): pages backward,
    /// newest first; the page itself is still oldest first. Without `after` or `before` the
    /// first page starts at the oldest message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
}
/// `image_messages_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ImageMessagesResponse {
    /// The image.
    pub image_id: String,
    /// Oldest first.
    pub messages: Vec<Message>,
    /// Whether more messages lie beyond this page in its direction.
    #[serde(default)]
    pub has_more: bool,
    /// With `hasMore`: the cursor to pass as `after` (forward) or `before` (backward) for the
    /// next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<u64>,
}

/// `message_send_request`: one of `imageId`, `agentId`, `sessionId` names the conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct MessageSendRequest {
    /// The image (its first session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// A running agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// A session (agentvm extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// What the user says.
    pub content: Content,
}
/// `message_send_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct MessageSendResponse {
    /// The image.
    pub image_id: String,
    /// The agent answering.
    pub agent_id: String,
    /// The session (agentvm extension).
    pub session_id: String,
    /// The stored user message's id (agentvm extension).
    pub message_id: String,
}

/// `agent_interrupt_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentInterruptRequest {
    /// The image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// The session (agentvm extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}
/// `agent_interrupt_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentInterruptResponse {
    /// The image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    /// The agent, when one was running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
}

/// `agent_get_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentGetRequest {
    /// The agent.
    pub agent_id: String,
}
/// `agent_get_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentGetResponse {
    /// The agent, when running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Its container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Whether it runs.
    pub exists: bool,
}

/// `agent_list_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentListRequest {
    /// One container; `None`: all the caller may see.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}
/// A running agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentInfo {
    /// The agent.
    pub agent_id: String,
    /// Its container.
    pub container_id: String,
    /// Its image.
    pub image_id: String,
    /// Its session (agentvm extension).
    pub session_id: String,
}
/// `agent_list_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentListResponse {
    /// Running agents.
    pub agents: Vec<AgentInfo>,
}

/// `agent_destroy_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentDestroyRequest {
    /// The agent.
    pub agent_id: String,
}
/// `agent_destroy_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentDestroyResponse {
    /// The agent.
    pub agent_id: String,
    /// False when it was not running.
    pub success: bool,
}

/// `agent_destroy_all_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentDestroyAllRequest {
    /// The container.
    pub container_id: String,
}
/// `agent_destroy_all_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct AgentDestroyAllResponse {
    /// The container.
    pub container_id: String,
}

/// `definition_list_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DefinitionListRequest {}
/// `definition_list_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DefinitionListResponse {
    /// Registered definitions, by name.
    pub definitions: Vec<Definition>,
}

/// `definition_get_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DefinitionGetRequest {
    /// The definition's name.
    pub name: String,
}
/// `definition_get_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DefinitionGetResponse {
    /// The definition, `null` when unknown.
    pub definition: Option<Definition>,
}

/// `definition_register_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DefinitionRegisterRequest {
    /// The definition; replaces one of the same name. Existing images keep their snapshot.
    pub definition: Definition,
}
/// `definition_register_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct DefinitionRegisterResponse {
    /// The definition's name.
    pub name: String,
    /// True when it replaced an earlier one.
    pub replaced: bool,
}

/// `session_create_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionCreateRequest {
    /// The image to talk to.
    pub image_id: String,
    /// Optional title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
}
/// `session_create_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionCreateResponse {
    /// The new session.
    pub session: SessionRecord,
    /// Its topic.
    #[serde(rename = "__subscriptions")]
    pub subscriptions: Vec<String>,
}

/// `session_list_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionListRequest {
    /// The image.
    pub image_id: String,
}
/// `session_list_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionListResponse {
    /// Its sessions, oldest first.
    pub sessions: Vec<SessionRecord>,
}

/// `session_get_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionGetRequest {
    /// The session.
    pub session_id: String,
}
/// `session_get_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionGetResponse {
    /// The session, `null` when unknown.
    pub session: Option<SessionRecord>,
}

/// `session_update_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionUpdateRequest {
    /// The session.
    pub session_id: String,
    /// The new title (`null` clears it).
    pub title: Option<String>,
}
/// `session_update_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionUpdateResponse {
    /// The updated session.
    pub session: SessionRecord,
}

/// `session_delete_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionDeleteRequest {
    /// The session.
    pub session_id: String,
}
/// `session_delete_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionDeleteResponse {
    /// The session.
    pub session_id: String,
}

/// `session_resume_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionResumeRequest {
    /// The session.
    pub session_id: String,
}
/// `session_resume_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionResumeResponse {
    /// The session.
    pub session_id: String,
    /// Its image.
    pub image_id: String,
    /// Its agent.
    pub agent_id: String,
    /// True when the agent was already running.
    pub reused: bool,
}

/// `session_messages_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionMessagesRequest {
    /// The session.
    pub session_id: String,
    /// At most this many messages (default 100, at most 1000); a page also stops once it
    /// holds 2 MiB of messages (at least one is always returned).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Only messages after this cursor (a `nextCursor` of a forward page): pages forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<u64>,
    /// Only messages before this cursor (a `nextCursor` of a backward page): pages backward,
    /// newest first; the page itself is still oldest first. Without `after` or `before` the
    /// first page starts at the oldest message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<u64>,
}
/// `session_messages_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SessionMessagesResponse {
    /// The session.
    pub session_id: String,
    /// Oldest first.
    pub messages: Vec<Message>,
    /// Whether more messages lie beyond this page in its direction.
    #[serde(default)]
    pub has_more: bool,
    /// With `hasMore`: the cursor to pass as `after` (forward) or `before` (backward) for the
    /// next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<u64>,
}

impl Command {
    /// Parses a request from its wire `type` and `data` (which may also carry `requestId`).
    /// Unknown types and bad data give `InvalidInput` errors that say what is wrong.
    pub fn from_wire(type_name: &str, data: serde_json::Value) -> crate::Result<Command> {
        if !REQUEST_TYPES.contains(&type_name) {
            return Err(crate::Error::invalid(format!(
                "Unknown request type: {type_name}"
            )));
        }
        let data = match data {
            serde_json::Value::Null => serde_json::Value::Object(Default::default()),
            // `requestId` belongs to the envelope, not to the command: requests that refuse
            // unknown fields must not see it.
            serde_json::Value::Object(mut o) => {
                o.remove("requestId");
                serde_json::Value::Object(o)
            }
            other => other,
        };
        serde_json::from_value(serde_json::json!({"type": type_name, "data": data}))
            .map_err(|e| crate::Error::invalid(format!("Invalid {type_name}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn command_json_is_type_and_data() {
        let c = Command::from(ContainerCreateRequest {
            container_id: "a".into(),
            sandbox_template: None,
        });
        assert_eq!(
            serde_json::to_value(&c).unwrap(),
            json!({"type":"container_create_request","data":{"containerId":"a"}})
        );
        assert_eq!(c.response_type(), "container_create_response");
    }

    #[test]
    fn from_wire_ignores_request_id_and_reports_errors() {
        let c = Command::from_wire("image_get_request", json!({"imageId":"x","requestId":"r"}))
            .unwrap();
        assert_eq!(
            c,
            Command::ImageGet(ImageGetRequest {
                image_id: "x".into()
            })
        );
        let e = Command::from_wire("image_get_request", json!({})).unwrap_err();
        assert!(e.to_string().contains("missing field `imageId`"), "{e}");
        let e = Command::from_wire("image_get_request", json!({"imageId": 5})).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
        let e = Command::from_wire("nope_request", json!({})).unwrap_err();
        assert_eq!(e.to_string(), "Unknown request type: nope_request");
        assert!(Command::from_wire("container_list_request", serde_json::Value::Null).is_ok());
    }

    #[test]
    fn image_get_not_found_serializes_null_record() {
        let r = Response::ImageGet(ImageGetResponse {
            record: None,
            subscriptions: None,
        });
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"type":"image_get_response","data":{"record":null}})
        );
    }
}
