//! Commands of the sandbox scheduler (nodes, templates, sandboxes, executions, files, metrics)
//! and of access tokens: their request and response data (docs/commands.md).
//!
//! Requests are camelCase and refuse unknown fields. Responses wrap the scheduler's records in
//! named fields (`{"sandbox": {...}}`, `{"nodes": [...]}`); the records themselves are the JSON
//! the REST API returns (node records keep the seed's snake_case).

use crate::scheduler::{
    Delivery, Execution, FileEntry, IdleAction, Liveness, NetworkPolicy, NodeStatus, RuntimeNode,
    Sandbox, SandboxUsage, SchedulerMetrics, SecurityPolicy, Template, TemplateSpec, Terminal,
    TlsFiles, Webhook,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

// ----- nodes -----

/// `node_register_request`: registers a runtime node or updates its registration (upsert).
/// Operator only. snake_case names of the seed's `/internal/runtime/nodes/register` body are
/// accepted as aliases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeRegisterRequest {
    /// Unique id.
    #[serde(alias = "node_id")]
    pub node_id: String,
    /// Host name; the node id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `docker` (the only runtime type, and the default).
    #[serde(
        default,
        alias = "runtime_type",
        skip_serializing_if = "Option::is_none"
    )]
    pub runtime_type: Option<String>,
    /// Host address.
    #[serde(default, alias = "ip_address", skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
    /// The Docker endpoint (`unix:///var/run/docker.sock`, `tcp://host:2376` with `tls`).
    #[serde(alias = "api_endpoint")]
    pub api_endpoint: String,
    /// Client TLS files for a `tcp://` endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsFiles>,
    /// Cpu offered, cores; the daemon's cpu count when absent.
    #[serde(
        default,
        alias = "total_cpu_cores",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_cpu_cores: Option<f64>,
    /// Memory offered, MiB; the daemon's memory when absent.
    #[serde(
        default,
        alias = "total_memory_mb",
        skip_serializing_if = "Option::is_none"
    )]
    pub total_memory_mb: Option<u64>,
    /// Containers it may run at once; 100 when absent.
    #[serde(
        default,
        alias = "max_containers",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_containers: Option<u32>,
    /// Images it holds; asked from the daemon when absent.
    #[serde(
        default,
        alias = "cached_images",
        skip_serializing_if = "Option::is_none"
    )]
    pub cached_images: Option<Vec<String>>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `probe` (agentvm pings the daemon; the default) or `heartbeat` (a node agent sends
    /// `node_heartbeat_request`s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Liveness>,
}

/// `node_register_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeRegisterResponse {
    /// The node with its load (snake_case, as REST returns it).
    pub node: RuntimeNode,
}

/// `node_heartbeat_request`: a node agent says its node is alive. Operator only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeHeartbeatRequest {
    /// The node.
    #[serde(alias = "node_id")]
    pub node_id: String,
    /// Set when an executor inside a sandbox sends it (its Docker container id).
    #[serde(
        default,
        alias = "container_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    /// The sender's clock, for people (agentvm uses its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Images the node holds now.
    #[serde(
        default,
        alias = "cached_images",
        skip_serializing_if = "Option::is_none"
    )]
    pub cached_images: Option<Vec<String>>,
}

/// `node_heartbeat_response`.
pub type NodeHeartbeatResponse = NodeRegisterResponse;

/// `node_list_request`. Operator only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct NodeListRequest {}

/// `node_list_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeListResponse {
    /// Every node with its load, by id.
    pub nodes: Vec<RuntimeNode>,
}

/// `node_get_request`. Operator only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeGetRequest {
    /// The node.
    pub node_id: String,
}

/// `node_get_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeGetResponse {
    /// The node, `null` when unknown.
    pub node: Option<RuntimeNode>,
}

/// `node_update_request`: what an operator wants of a node. Operator only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeUpdateRequest {
    /// The node.
    pub node_id: String,
    /// `online`, `draining` (keeps its sandboxes, takes no new ones) or `maintenance`.
    /// `offline` is refused: health decides it.
    pub status: NodeStatus,
}

/// `node_update_response`.
pub type NodeUpdateResponse = NodeRegisterResponse;

/// `node_delete_request`: removes a node that runs no sandboxes. Operator only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NodeDeleteRequest {
    /// The node.
    pub node_id: String,
}

/// `node_delete_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct NodeDeleteResponse {
    /// The node removed.
    pub node_id: String,
}

/// `executor_ready_request`: the executor inside a sandbox reports it is up (the seed's
/// `POST /internal/runtime/containers/ready`). Operators and runtime nodes only. The seed's
/// snake_case names (`container_id`, `session_id`, `executor_url`) are accepted too.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecutorReadyRequest {
    /// The Docker container id (or name) of the sandbox.
    #[serde(rename = "containerId", alias = "container_id")]
    pub docker_container_id: String,
    /// The sandbox id (the seed calls sandboxes sessions).
    #[serde(
        default,
        alias = "session_id",
        alias = "sessionId",
        alias = "sandbox_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub sandbox_id: Option<String>,
    /// Where the executor listens.
    #[serde(
        default,
        alias = "executor_url",
        skip_serializing_if = "Option::is_none"
    )]
    pub executor_url: Option<String>,
}

/// `executor_ready_response`, `executor_exited_response`: the sandbox as it is now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExecutorReadyResponse {
    /// The sandbox.
    pub sandbox: Sandbox,
}

/// `executor_exited_response`.
pub type ExecutorExitedResponse = ExecutorReadyResponse;

/// `executor_exited_request`: a sandbox's main process ended (the seed's
/// `POST /internal/runtime/containers/exited`). Operators and runtime nodes only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecutorExitedRequest {
    /// The Docker container id (or name) of the sandbox.
    #[serde(rename = "containerId", alias = "container_id")]
    pub docker_container_id: String,
    /// The sandbox id.
    #[serde(
        default,
        alias = "session_id",
        alias = "sessionId",
        alias = "sandbox_id",
        skip_serializing_if = "Option::is_none"
    )]
    pub sandbox_id: Option<String>,
    /// Its exit code.
    #[serde(default, alias = "exit_code", skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

// ----- templates -----

/// The fields of a template request: the id and the [`TemplateSpec`] fields, flat.
macro_rules! template_request {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        pub struct $name {
            /// The template's id (letters, digits, `-`, `_`, `.`); `id` is accepted too (the
            /// REST body's name).
            #[serde(alias = "id")]
            pub template_id: String,
            /// Display name.
            pub name: String,
            /// The Docker image (`repo:tag`); it must be present on the nodes.
            #[serde(rename = "image")]
            pub docker_image: String,
            /// `docker` (the default; anything else is refused).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub runtime_type: Option<String>,
            /// Cpu quota, cores (default 1).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub default_cpu_cores: Option<f64>,
            /// Memory limit, MiB (default 512).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub default_memory_mb: Option<u64>,
            /// Disk limit, MiB.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub default_disk_mb: Option<u64>,
            /// Longest life of a sandbox, seconds (default 3600).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub default_timeout_s: Option<u64>,
            /// Idle timeout, seconds.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub idle_timeout_s: Option<u64>,
            /// What the idle timeout does: `terminate` (the default) or `pause`.
            #[serde(default, skip_serializing_if = "IdleAction::is_terminate")]
            pub idle_action: IdleAction,
            /// Environment of every sandbox.
            #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
            pub env: BTreeMap<String, String>,
            /// The network (default `{"mode":"none"}`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub network: Option<NetworkPolicy>,
            /// Secrets the egress proxy adds to requests for their hosts (needs an
            /// `allowlist` network; values are never returned: docs/sandboxes.md, *Egress*).
            #[serde(default, skip_serializing_if = "Vec::is_empty")]
            pub credentials: Vec<crate::scheduler::Credential>,
            /// The lock-down (defaults: see [`SecurityPolicy`]).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub security: Option<SecurityPolicy>,
            /// Working directory of execs and files (default `/tmp`).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub workdir: Option<String>,
            /// The container's long-running command (default: sleep forever).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub command: Option<Vec<String>>,
            /// Pre-started sandboxes kept ready (default 0).
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub warm_pool_size: Option<u32>,
        }

        impl $name {
            /// The template id and the spec, defaults filled in.
            pub fn into_parts(self) -> (String, TemplateSpec) {
                let mut spec = TemplateSpec::new(self.name, self.docker_image);
                if let Some(v) = self.runtime_type {
                    spec.runtime_type = v;
                }
                if let Some(v) = self.default_cpu_cores {
                    spec.default_cpu_cores = v;
                }
                if let Some(v) = self.default_memory_mb {
                    spec.default_memory_mb = v;
                }
                spec.default_disk_mb = self.default_disk_mb;
                if let Some(v) = self.default_timeout_s {
                    spec.default_timeout_s = v;
                }
                spec.idle_timeout_s = self.idle_timeout_s;
                spec.idle_action = self.idle_action;
                spec.env = self.env;
                if let Some(v) = self.network {
                    spec.network = v;
                }
                spec.credentials = self.credentials;
                if let Some(v) = self.security {
                    spec.security = v;
                }
                spec.workdir = self.workdir;
                spec.command = self.command;
                if let Some(v) = self.warm_pool_size {
                    spec.warm_pool_size = v;
                }
                (self.template_id, spec)
            }
        }
    };
}

template_request!(
    /// `template_create_request`: a new template (`AlreadyExists` when the id is taken).
    /// Operator only.
    TemplateCreateRequest
);

template_request!(
    /// `template_update_request`: replaces a template's whole spec (fields left out take their
    /// defaults). Its warm pool is drained and refilled; existing sandboxes keep theirs.
    /// Operator only.
    TemplateUpdateRequest
);

/// `template_create_response`, `template_update_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TemplateCreateResponse {
    /// The template (camelCase, as REST returns it).
    pub template: Template,
}

/// `template_update_response`.
pub type TemplateUpdateResponse = TemplateCreateResponse;

/// `template_get_request`. Every caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateGetRequest {
    /// The template.
    pub template_id: String,
}

/// `template_get_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TemplateGetResponse {
    /// The template, `null` when unknown.
    pub template: Option<Template>,
}

/// `template_list_request`. Every caller.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TemplateListRequest {}

/// `template_list_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TemplateListResponse {
    /// Every template, by id.
    pub templates: Vec<Template>,
}

/// `template_delete_request`: deletes a template and drains its warm pool; sandboxes made
/// from it keep running. Operator only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TemplateDeleteRequest {
    /// The template.
    pub template_id: String,
}

/// `template_delete_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TemplateDeleteResponse {
    /// The template deleted.
    pub template_id: String,
}

// ----- sandboxes -----

/// `sandbox_create_request`: places a sandbox and answers once an exec works in it. A
/// container-scoped caller must name an `owner` in its scope. The request is the scheduler's
/// [`SandboxRequest`](crate::scheduler::SandboxRequest) itself: one type, one set of fields.
pub type SandboxCreateRequest = crate::scheduler::SandboxRequest;

/// `sandbox_create_response`, `sandbox_terminate_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxCreateResponse {
    /// The sandbox (camelCase, as REST returns it).
    pub sandbox: Sandbox,
}

/// `sandbox_terminate_response`.
pub type SandboxTerminateResponse = SandboxCreateResponse;

/// `sandbox_get_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxGetRequest {
    /// The sandbox.
    pub sandbox_id: String,
}

/// `sandbox_get_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxGetResponse {
    /// The sandbox, `null` when unknown or outside the caller's scope.
    pub sandbox: Option<Sandbox>,
}

/// `sandbox_list_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxListRequest {
    /// Only this owner's sandboxes (it must be in the caller's scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// `sandbox_list_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxListResponse {
    /// The sandboxes the caller may see (unclaimed warm ones left out), oldest first.
    pub sandboxes: Vec<Sandbox>,
}

/// `sandbox_terminate_request`: stops and removes the sandbox's Docker container; the record
/// stays (`terminated`, reason `requested`). An ended sandbox is returned unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxTerminateRequest {
    /// The sandbox.
    pub sandbox_id: String,
}

/// `sandbox_delete_request`: terminates the sandbox if it is live, then deletes its record
/// and its executions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxDeleteRequest {
    /// The sandbox.
    pub sandbox_id: String,
}

/// `sandbox_delete_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxDeleteResponse {
    /// The sandbox deleted.
    pub sandbox_id: String,
}

/// `sandbox_pause_request`: freezes a running sandbox's processes (Docker pause). It keeps
/// its memory and files; the next exec or file operation, or `sandbox_resume_request`,
/// resumes it. Pausing a paused sandbox is a `Conflict`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxPauseRequest {
    /// The sandbox.
    pub sandbox_id: String,
}

/// `sandbox_pause_response`, `sandbox_resume_response`, `sandbox_extend_response`.
pub type SandboxPauseResponse = SandboxCreateResponse;

/// `sandbox_resume_request`: lets a paused sandbox run again. Resuming a running sandbox
/// returns it unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxResumeRequest {
    /// The sandbox.
    pub sandbox_id: String,
}

/// `sandbox_resume_response`.
pub type SandboxResumeResponse = SandboxCreateResponse;

/// `sandbox_extend_request`: moves a live sandbox's deadline to `ttlS` seconds from now
/// (longer or shorter); past it, the sweep stops and removes the sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxExtendRequest {
    /// The sandbox.
    pub sandbox_id: String,
    /// Seconds from now, 1 to 2 592 000 (30 days). Signed so a negative value is refused
    /// with a clear message rather than a parse error.
    pub ttl_s: i64,
}

/// `sandbox_extend_response`.
pub type SandboxExtendResponse = SandboxCreateResponse;

/// `sandbox_snapshot_request`: commits a sandbox's filesystem into a new image on its node
/// (labelled `agentvm.snapshot-of=<sandboxId>`) and registers a template for it, a copy of
/// the sandbox's template with the new image. Sandboxes created from it see the files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxSnapshotRequest {
    /// The sandbox (running or paused).
    pub sandbox_id: String,
    /// The new template's id; `snap-<sandboxId>-<ms>` when absent. Must be unused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// The new template's display name; its id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `sandbox_snapshot_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxSnapshotResponse {
    /// The template made from the snapshot.
    pub template: Template,
    /// The image committed (`agentvm-snapshot/<sandboxId>:<ms>`), on the sandbox's node.
    pub image: String,
}

/// `sandbox_usage_request`: one sample of a live sandbox's cpu, memory, processes and
/// network (Docker stats, one shot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxUsageRequest {
    /// The sandbox.
    pub sandbox_id: String,
}

/// `sandbox_usage_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxUsageResponse {
    /// The sample.
    pub usage: SandboxUsage,
}

/// `sandbox_port_request`: where a TCP port of a live sandbox is reached from the runtime's
/// host — what agentvm-server's port proxy (`/v1/sandboxes/{id}/ports/{port}/…`) connects
/// to. A paused sandbox is resumed first; each call counts as activity. Only sandboxes on a
/// network (a template with a `bridge` network) on a node whose container networks the runtime
/// can route to (a local Docker) have reachable ports; Docker publishes none on the host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxPortRequest {
    /// The sandbox.
    pub sandbox_id: String,
    /// The TCP port, 1 to 65535. Wider than `u16` so 0 or 70000 is refused by name rather
    /// than by a parse error.
    pub port: u32,
}

/// `sandbox_port_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxPortResponse {
    /// The sandbox.
    pub sandbox_id: String,
    /// The port asked for.
    pub port: u16,
    /// `ip:port` of the sandbox on its Docker network (`[ip]:port` for IPv6).
    pub address: String,
}

/// `webhook_create_request`: registers a webhook (operator only). Sandbox events are POSTed
/// to `url` as `{deliveryId, webhookId, event}`, signed in the `X-Agentvm-Signature` header
/// (`sha256=<hex HMAC-SHA256 of the body with the secret>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookCreateRequest {
    /// Where to POST (`http://` or `https://`).
    pub url: String,
    /// Only sandboxes of this template; all sandboxes when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// Event types to send; all sandbox lifecycle and exec start/finish events when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<String>,
    /// The signing key (at least 16 bytes); a random one is made when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

/// `webhook_create_response`: the registration, with its secret (shown only here).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct WebhookCreateResponse {
    /// The webhook, secret included.
    pub webhook: Webhook,
}

/// `webhook_list_request` (operator only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct WebhookListRequest {}

/// `webhook_list_response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct WebhookListResponse {
    /// Every webhook, by id, secrets left out.
    pub webhooks: Vec<Webhook>,
}

/// `webhook_delete_request` (operator only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookDeleteRequest {
    /// The webhook.
    pub webhook_id: String,
}

/// `webhook_delete_response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeleteResponse {
    /// The webhook deleted.
    pub webhook_id: String,
}

/// `webhook_deliveries_request` (operator only): the deliveries this process made recently
/// (the last 1000, in memory), oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookDeliveriesRequest {
    /// Only this webhook's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_id: Option<String>,
}

/// `webhook_deliveries_response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeliveriesResponse {
    /// The deliveries with their attempts.
    pub deliveries: Vec<Delivery>,
}

/// `sandbox_exec_request`: runs a command; its output streams as `sandbox_exec_output` events
/// on the sandbox's topic, and the response is the finished execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxExecRequest {
    /// The sandbox.
    pub sandbox_id: String,
    /// The argv to run (no shell unless you name one). In JSON also one string, run with
    /// `/bin/sh -c`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "argv_or_shell"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "CommandLine"))]
    pub command: Vec<String>,
    /// Source code to run with `language`, instead of a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `sh` (default), `bash`, `python` or `node`, for `code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Extra environment of this exec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory; the sandbox's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Kill the process group after this many ms; the scheduler's default (60 s) when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Bytes kept (and streamed) per stream; at most the scheduler's cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<usize>,
    /// The id to give the execution (`exec_…`, unused), so its output events can be told
    /// apart before the response arrives; one is made when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
}

/// `command` in JSON: an argv array, or one string run with `/bin/sh -c`.
#[cfg(feature = "schema")]
#[derive(schemars::JsonSchema)]
#[schemars(untagged)]
#[allow(dead_code)]
enum CommandLine {
    /// The argv.
    Argv(Vec<String>),
    /// A shell command line.
    Shell(String),
}

/// Reads `command`: an argv array as it is, a string as `["/bin/sh", "-c", line]`.
fn argv_or_shell<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    struct Argv;
    impl<'de> serde::de::Visitor<'de> for Argv {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an argv array of strings, or one string run with /bin/sh -c")
        }
        fn visit_str<E: serde::de::Error>(self, line: &str) -> Result<Self::Value, E> {
            Ok(vec!["/bin/sh".into(), "-c".into(), line.into()])
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut argv = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
            while let Some(arg) = seq.next_element::<String>()? {
                argv.push(arg);
            }
            Ok(argv)
        }
    }
    d.deserialize_any(Argv)
}

impl SandboxExecRequest {
    /// The sandbox id and the scheduler's request.
    pub fn into_parts(self) -> (String, crate::scheduler::ExecRequest) {
        (
            self.sandbox_id,
            crate::scheduler::ExecRequest {
                command: self.command,
                code: self.code,
                language: self.language,
                env: self.env,
                workdir: self.workdir,
                timeout_ms: self.timeout_ms,
                max_output_bytes: self.max_output_bytes,
                execution_id: self.execution_id,
            },
        )
    }
}

/// `sandbox_exec_response`, `execution_get_response` of a known execution.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxExecResponse {
    /// The finished execution: status, exit code, the (capped) stdout and stderr.
    pub execution: Execution,
}

/// `sandbox_exec_cancel_request`: stops a running execution (kills its process group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxExecCancelRequest {
    /// The execution (from `sandbox_exec_started` or `execution_list_response`).
    pub execution_id: String,
}

/// `sandbox_exec_cancel_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxExecCancelResponse {
    /// The execution as it ended (status `cancelled` when this request stopped it).
    pub execution: Execution,
    /// False when it had already ended.
    pub cancelled: bool,
}

// ----- terminals -----

/// `sandbox_terminal_open_request`: opens an interactive terminal (a pseudo-terminal) in a
/// sandbox. Its output streams as `sandbox_terminal_output` events on the sandbox's topic and
/// its end as `sandbox_terminal_exited`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxTerminalOpenRequest {
    /// The sandbox.
    pub sandbox_id: String,
    /// The argv to run (`/bin/sh` when absent). In JSON also one string, run with
    /// `/bin/sh -c`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "argv_or_shell"
    )]
    #[cfg_attr(feature = "schema", schemars(with = "CommandLine"))]
    pub command: Vec<String>,
    /// Columns, 1 to 1000 (80 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u16>,
    /// Rows, 1 to 1000 (24 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u16>,
    /// Extra environment (`TERM` is `xterm` unless given).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The id to give the terminal (`term_…`, unused), so its output events can be told
    /// apart before the response arrives; one is made when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
}

impl SandboxTerminalOpenRequest {
    /// The sandbox id and the scheduler's request.
    pub fn into_parts(self) -> (String, crate::scheduler::TerminalRequest) {
        use crate::scheduler::terminal::{DEFAULT_TERMINAL_COLS, DEFAULT_TERMINAL_ROWS};
        (
            self.sandbox_id,
            crate::scheduler::TerminalRequest {
                command: self.command,
                cols: self.cols.unwrap_or(DEFAULT_TERMINAL_COLS),
                rows: self.rows.unwrap_or(DEFAULT_TERMINAL_ROWS),
                env: self.env,
                terminal_id: self.terminal_id,
            },
        )
    }
}

/// `sandbox_terminal_open_response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxTerminalOpenResponse {
    /// The open terminal.
    pub terminal: Terminal,
}

/// `sandbox_terminal_input_request`: keystrokes (or a paste) for a terminal's input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxTerminalInputRequest {
    /// The terminal.
    pub terminal_id: String,
    /// The bytes, as text (`utf8`, the default) or standard base64 (`base64`); at most
    /// 64 KiB once decoded.
    pub data: String,
    /// How `data` is encoded.
    #[serde(default)]
    pub encoding: FileEncoding,
}

/// `sandbox_terminal_input_response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxTerminalInputResponse {
    /// The terminal.
    pub terminal_id: String,
    /// Bytes written.
    pub bytes: usize,
}

/// `sandbox_terminal_resize_request`: a new window size for a terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxTerminalResizeRequest {
    /// The terminal.
    pub terminal_id: String,
    /// Columns, 1 to 1000.
    pub cols: u16,
    /// Rows, 1 to 1000.
    pub rows: u16,
}

/// `sandbox_terminal_resize_response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxTerminalResizeResponse {
    /// The terminal at its new size.
    pub terminal: Terminal,
}

/// `sandbox_terminal_close_request`: ends a terminal (kills its process group and every
/// process it started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxTerminalCloseRequest {
    /// The terminal.
    pub terminal_id: String,
}

/// `sandbox_terminal_close_response`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxTerminalCloseResponse {
    /// The terminal.
    pub terminal_id: String,
    /// Its command's exit code, when Docker reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
}

/// `execution_get_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecutionGetRequest {
    /// The execution.
    pub execution_id: String,
}

/// `execution_get_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExecutionGetResponse {
    /// The execution (a running one as it started), `null` when unknown or outside the
    /// caller's scope.
    pub execution: Option<Execution>,
}

/// `execution_list_request`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecutionListRequest {
    /// The sandbox.
    pub sandbox_id: String,
}

/// `execution_list_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct ExecutionListResponse {
    /// Its executions, oldest first.
    pub executions: Vec<Execution>,
}

/// How file content travels in `sandbox_file_*` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum FileEncoding {
    /// The content is the text itself (UTF-8).
    #[default]
    Utf8,
    /// The content is standard base64 (with padding) of the bytes.
    Base64,
}

/// `sandbox_file_read_request`: a regular file's content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxFileReadRequest {
    /// The sandbox.
    pub sandbox_id: String,
    /// The file; relative paths are relative to the sandbox's workdir.
    pub path: String,
    /// `utf8` (default; a file that is not UTF-8 is refused) or `base64`.
    #[serde(default)]
    pub encoding: FileEncoding,
}

/// `sandbox_file_read_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxFileReadResponse {
    /// The path as asked.
    pub path: String,
    /// The content, in `encoding`.
    pub content: String,
    /// How `content` is encoded.
    pub encoding: FileEncoding,
    /// The file's size, bytes.
    pub size: u64,
}

/// `sandbox_file_write_request`: writes (creates or replaces) a file; its directory must exist.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxFileWriteRequest {
    /// The sandbox.
    pub sandbox_id: String,
    /// The file; relative paths are relative to the sandbox's workdir.
    pub path: String,
    /// The content, in `encoding`.
    pub content: String,
    /// `utf8` (default) or `base64`.
    #[serde(default)]
    pub encoding: FileEncoding,
}

/// `sandbox_file_write_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxFileWriteResponse {
    /// The path as given.
    pub path: String,
    /// Bytes written.
    pub size: u64,
}

/// `sandbox_file_list_request`: one level of a directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxFileListRequest {
    /// The sandbox.
    pub sandbox_id: String,
    /// The directory; the workdir when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// `sandbox_file_list_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxFileListResponse {
    /// The entries, by name.
    pub files: Vec<FileEntry>,
}

/// `sandbox_file_delete_request`: deletes a file or symbolic link, or a directory with
/// `recursive`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SandboxFileDeleteRequest {
    /// The sandbox.
    pub sandbox_id: String,
    /// The path; relative paths are relative to the sandbox's workdir.
    pub path: String,
    /// Delete a directory and everything in it.
    #[serde(default)]
    pub recursive: bool,
}

/// `sandbox_file_delete_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SandboxFileDeleteResponse {
    /// The path as given.
    pub path: String,
}

/// `scheduler_metrics_request`. Operator only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SchedulerMetricsRequest {}

/// `scheduler_metrics_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct SchedulerMetricsResponse {
    /// The counters and gauges now (as `/v1/metrics` returns them).
    pub metrics: SchedulerMetrics,
}

// ----- tokens -----

/// A token as operators see it: never the secret, never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TokenInfo {
    /// `tok_…`, to revoke it.
    pub id: String,
    /// The containers it may use; `null`: all (an operator token).
    pub containers: Option<Vec<String>>,
    /// Creation time, ms.
    pub created_at: i64,
    /// Revocation time, ms; `null` while it is valid.
    pub revoked_at: Option<i64>,
}

/// `token_create_request`. Operator only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenCreateRequest {
    /// The containers the token may use. Give either these or `all`.
    #[serde(default)]
    pub containers: Option<Vec<String>>,
    /// An operator token, for every container: said explicitly, never implied by a missing
    /// `containers`. Over a server it needs an operator token (a client without one, on a
    /// loopback server with auth off, cannot mint it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub all: bool,
}

/// `token_create_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TokenCreateResponse {
    /// The secret (`avm_…`), shown this once: only its hash is kept.
    pub token: String,
    /// The token's record (its fields sit beside `token`).
    #[serde(flatten)]
    pub record: TokenInfo,
}

/// `token_list_request`. Operator only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenListRequest {}

/// `token_list_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TokenListResponse {
    /// Every token, revoked ones included, oldest first.
    pub tokens: Vec<TokenInfo>,
}

/// `token_revoke_request`: the token is refused from now on. Operator only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRevokeRequest {
    /// The token's id (`tok_…`).
    pub token_id: String,
}

/// `token_revoke_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct TokenRevokeResponse {
    /// The token, with `revokedAt` set (the first revocation's time); its fields sit beside
    /// `revoked`.
    #[serde(flatten)]
    pub record: TokenInfo,
    /// Always `true` (an unknown token is `NotFound`).
    pub revoked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;
    use serde_json::json;

    #[test]
    fn requests_refuse_unknown_fields_and_name_missing_ones() {
        let e = Command::from_wire(
            "sandbox_get_request",
            json!({"sandboxId":"sbx_1","sandboxID":"x","requestId":"r"}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("unknown field `sandboxID`"), "{e}");
        let e =
            Command::from_wire("sandbox_exec_request", json!({"command":["true"]})).unwrap_err();
        assert!(e.to_string().contains("missing field `sandboxId`"), "{e}");
        let c = Command::from_wire(
            "sandbox_file_write_request",
            json!({"sandboxId":"sbx_1","path":"a","content":"aGk=","encoding":"base64","requestId":"r"}),
        )
        .unwrap();
        let Command::SandboxFileWrite(w) = c else {
            panic!("{c:?}")
        };
        assert_eq!(w.encoding, FileEncoding::Base64);
    }

    #[test]
    fn exec_takes_an_argv_or_one_shell_line() {
        let argv = |v: serde_json::Value| match Command::from_wire("sandbox_exec_request", v) {
            Ok(Command::SandboxExec(e)) => Ok(e.command),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.to_string()),
        };
        assert_eq!(
            argv(json!({"sandboxId":"s","command":["echo","hi"]})).unwrap(),
            ["echo", "hi"]
        );
        assert_eq!(
            argv(json!({"sandboxId":"s","command":"echo hi | tr a-z A-Z"})).unwrap(),
            ["/bin/sh", "-c", "echo hi | tr a-z A-Z"]
        );
        assert!(argv(json!({"sandboxId":"s"})).unwrap().is_empty());
        let e = argv(json!({"sandboxId":"s","command":7})).unwrap_err();
        assert!(e.contains("an argv array of strings, or one string"), "{e}");
        let e = argv(json!({"sandboxId":"s","command":["a",1]})).unwrap_err();
        assert!(e.contains("expected a string"), "{e}");
    }

    #[test]
    fn template_requests_fill_in_the_spec_defaults() {
        let c = Command::from_wire(
            "template_create_request",
            json!({"templateId":"busybox","name":"b","image":"busybox:latest","defaultMemoryMb":128}),
        )
        .unwrap();
        let Command::TemplateCreate(t) = c else {
            panic!("{c:?}")
        };
        let (id, spec) = t.into_parts();
        assert_eq!(id, "busybox");
        let mut want = TemplateSpec::new("b", "busybox:latest");
        want.default_memory_mb = 128;
        assert_eq!(spec, want);
    }

    #[test]
    fn node_registration_takes_camel_case_and_the_seeds_snake_case() {
        let camel = Command::from_wire(
            "node_register_request",
            json!({"nodeId":"n","apiEndpoint":"unix:///x.sock","totalCpuCores":2.0}),
        )
        .unwrap();
        let snake = Command::from_wire(
            "node_register_request",
            json!({"node_id":"n","api_endpoint":"unix:///x.sock","total_cpu_cores":2.0}),
        )
        .unwrap();
        assert_eq!(camel, snake);
    }
}
