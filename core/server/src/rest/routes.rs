//! The REST API as data: each route maps (method, path, body) to one command.
//!
//! The router and the OpenAPI document are both built from [`ROUTES`], so a route cannot be
//! served without being documented. Adding a route is one entry here; adding a command is the
//! model's table and its handler — no HTTP code.

/// Which command a route runs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    /// Always this request type.
    One(&'static str),
    /// `with` when the body has `field`, else `without` (image create vs build).
    IfField {
        field: &'static str,
        with: &'static str,
        without: &'static str,
    },
}

impl Target {
    /// The request type this route runs for a request whose fields are `data`.
    pub(crate) fn type_for(
        self,
        data: &serde_json::Map<String, serde_json::Value>,
    ) -> &'static str {
        match self {
            Target::One(t) => t,
            Target::IfField {
                field,
                with,
                without,
            } => {
                if data.get(field).is_some_and(|v| !v.is_null()) {
                    with
                } else {
                    without
                }
            }
        }
    }
}

/// What the request body becomes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Body {
    /// No body (an empty one is accepted; anything else is refused).
    None,
    /// A JSON object: its fields are the command's fields (unknown fields are refused).
    Fields,
    /// A JSON value that becomes this one field of the command.
    Into(&'static str),
    /// Raw bytes, sent as this base64 field (with `"encoding": "base64"`).
    Bytes(&'static str),
}

/// What the response body is.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Output {
    /// The response's `data` (internal `__` fields removed).
    Data,
    /// The response's `data`, but 404 `<what> not found: <id>` when `field` is null.
    Found {
        field: &'static str,
        what: &'static str,
    },
    /// Only this field of the response (a record, or a list).
    Field(&'static str),
    /// Only this field, a record; 404 `<what> not found: <id>` when it is null.
    Record {
        field: &'static str,
        what: &'static str,
    },
    /// No body (204).
    Empty,
    /// The file content of this field, decoded, as `application/octet-stream`.
    Bytes(&'static str),
    /// NDJSON: each output chunk of the exec as it comes, then the execution.
    ExecStream,
    /// A WebSocket upgrade: the terminal the command opens, as frames (`crate::terminal`).
    Terminal,
}

/// The JSON type a query parameter becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Param {
    /// A string, as given.
    Text,
    /// `true` or `false`.
    Flag,
    /// A non-negative integer.
    Number,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// A caller's token (or none on a loopback server with auth off); its scope applies.
    Token,
    /// A runtime node: the scheduler's node token when one is set (`/internal/runtime/*`).
    Node,
}

/// One REST route.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Route {
    /// `get`, `post`, `put`, `patch` or `delete`.
    pub method: &'static str,
    /// The axum path, with at most one parameter (`{id}` or `{name}`).
    pub path: &'static str,
    /// The command it runs.
    pub command: Target,
    /// The command field the path parameter fills.
    pub param: Option<&'static str>,
    /// The request body.
    pub body: Body,
    /// Query parameters copied into the command as fields of the same name, with their type.
    pub query: &'static [(&'static str, Param)],
    /// Fields set when the caller gives none (JSON literals).
    pub defaults: &'static [(&'static str, &'static str)],
    /// The status of success.
    pub status: u16,
    /// The response body.
    pub output: Output,
    /// Who may call it.
    pub access: Access,
    /// One line for the OpenAPI document.
    pub summary: &'static str,
    /// OpenAPI schema names of the request body and of the success response.
    pub schemas: (Option<&'static str>, &'static str),
}

/// The query of a messages route: its page.
const PAGE: &[(&str, Param)] = &[
    ("limit", Param::Number),
    ("after", Param::Number),
    ("before", Param::Number),
];

const fn route(method: &'static str, path: &'static str, command: &'static str) -> Route {
    Route {
        method,
        path,
        command: Target::One(command),
        param: None,
        body: Body::None,
        query: &[],
        defaults: &[],
        status: 200,
        output: Output::Data,
        access: Access::Token,
        summary: "",
        schemas: (None, "Object"),
    }
}

impl Route {
    const fn param(mut self, field: &'static str) -> Self {
        self.param = Some(field);
        self
    }
    const fn body(mut self, body: Body, schema: &'static str) -> Self {
        self.body = body;
        self.schemas.0 = Some(schema);
        self
    }
    const fn query(mut self, fields: &'static [(&'static str, Param)]) -> Self {
        self.query = fields;
        self
    }
    const fn defaults(mut self, fields: &'static [(&'static str, &'static str)]) -> Self {
        self.defaults = fields;
        self
    }
    const fn status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
    const fn output(mut self, output: Output) -> Self {
        self.output = output;
        self
    }
    const fn node(mut self) -> Self {
        self.access = Access::Node;
        self
    }
    const fn doc(mut self, summary: &'static str, response: &'static str) -> Self {
        self.summary = summary;
        self.schemas.1 = response;
        self
    }
    const fn target(mut self, target: Target) -> Self {
        self.command = target;
        self
    }

    /// The request types this route may run.
    pub(crate) fn commands(&self) -> Vec<&'static str> {
        match self.command {
            Target::One(c) => vec![c],
            Target::IfField { with, without, .. } => vec![with, without],
        }
    }
}

use Body::{Bytes, Fields, Into};
use Output::{Empty, ExecStream, Field, Found, Record};
use Param::{Flag, Text};

/// Every REST route, in the order the OpenAPI document lists them.
pub(crate) const ROUTES: &[Route] = &[
    // ----- containers -----
    route("get", "/v1/containers", "container_list_request")
        .doc("List visible containers", "ContainerList"),
    route("post", "/v1/containers", "container_create_request")
        .body(Fields, "ContainerCreate")
        .status(201)
        .doc("Get or create a container", "ContainerId"),
    route("get", "/v1/containers/{id}", "container_get_request")
        .param("containerId")
        .doc("Whether a container exists", "ContainerGet"),
    route("delete", "/v1/containers/{id}", "container_delete_request")
        .param("containerId")
        .doc("Delete a container and everything in it", "ContainerDelete"),
    route("get", "/v1/containers/{id}/images", "image_list_request")
        .param("containerId")
        .doc("List a container's images", "ImageList"),
    route("post", "/v1/containers/{id}/images", "image_create_request")
        .target(Target::IfField {
            field: "definitionName",
            with: "image_build_request",
            without: "image_create_request",
        })
        .param("containerId")
        .body(Fields, "ImageCreate")
        .status(201)
        .doc(
            "Create an image (and its first session); with definitionName, build from a definition",
            "ImageCreated",
        ),
    route("get", "/v1/containers/{id}/agents", "agent_list_request")
        .param("containerId")
        .doc("Running agents of a container", "AgentList"),
    route(
        "delete",
        "/v1/containers/{id}/agents",
        "agent_destroy_all_request",
    )
    .param("containerId")
    .doc("Stop every agent of a container", "Object"),
    // ----- images -----
    route("get", "/v1/images/{id}", "image_get_request")
        .param("imageId")
        .output(Found {
            field: "record",
            what: "Image",
        })
        .doc("One image", "ImageGet"),
    route("patch", "/v1/images/{id}", "image_update_request")
        .param("imageId")
        .body(Into("updates"), "ImageUpdates")
        .doc("Rename or re-describe an image", "ImageRecord"),
    route("delete", "/v1/images/{id}", "image_delete_request")
        .param("imageId")
        .doc("Delete an image, its sessions and messages", "Object"),
    route("get", "/v1/images/{id}/messages", "image_messages_request")
        .param("imageId")
        .query(PAGE)
        .doc(
            "A page of the history of the image's first session (?limit=, ?after= or ?before=)",
            "Messages",
        ),
    route("post", "/v1/images/{id}/messages", "message_send_request")
        .param("imageId")
        .body(Fields, "Send")
        .status(202)
        .doc(
            "Send a user message; the reply streams on the Channel",
            "Sent",
        ),
    route("get", "/v1/images/{id}/sessions", "session_list_request")
        .param("imageId")
        .doc("The sessions of an image", "SessionList"),
    route("post", "/v1/images/{id}/sessions", "session_create_request")
        .param("imageId")
        .body(Fields, "Title")
        .status(201)
        .doc("Another conversation on an image", "SessionCreated"),
    route("post", "/v1/images/{id}/run", "image_run_request")
        .param("imageId")
        .doc("Start (or reuse) the image's agent", "Run"),
    route("post", "/v1/images/{id}/stop", "image_stop_request")
        .param("imageId")
        .doc("Stop the image's agent", "Object"),
    route(
        "post",
        "/v1/images/{id}/interrupt",
        "agent_interrupt_request",
    )
    .param("imageId")
    .doc("Interrupt the current turn", "Object"),
    // ----- sessions -----
    route("get", "/v1/sessions/{id}", "session_get_request")
        .param("sessionId")
        .output(Found {
            field: "session",
            what: "Session",
        })
        .doc("One session", "SessionGet"),
    route("patch", "/v1/sessions/{id}", "session_update_request")
        .param("sessionId")
        .body(Fields, "Title")
        .doc("Set a session's title", "SessionGet"),
    route("delete", "/v1/sessions/{id}", "session_delete_request")
        .param("sessionId")
        .doc("Delete a session and its messages", "Object"),
    route(
        "get",
        "/v1/sessions/{id}/messages",
        "session_messages_request",
    )
    .param("sessionId")
    .query(PAGE)
    .doc(
        "A page of a session's history (?limit=, ?after= or ?before=)",
        "Messages",
    ),
    route("post", "/v1/sessions/{id}/messages", "message_send_request")
        .param("sessionId")
        .body(Fields, "Send")
        .status(202)
        .doc("Send a user message to a session", "Sent"),
    // ----- agents -----
    route("get", "/v1/agents/{id}", "agent_get_request")
        .param("agentId")
        .doc("Whether an agent runs", "Object"),
    route("delete", "/v1/agents/{id}", "agent_destroy_request")
        .param("agentId")
        .doc("Stop an agent", "Object"),
    // ----- definitions -----
    route("get", "/v1/definitions", "definition_list_request")
        .doc("Registered definitions", "DefinitionList"),
    route("post", "/v1/definitions", "definition_register_request")
        .body(Into("definition"), "Definition")
        .doc("Register (or replace) a definition", "Object"),
    route("get", "/v1/definitions/{name}", "definition_get_request")
        .param("name")
        .output(Found {
            field: "definition",
            what: "Definition",
        })
        .doc("One definition", "DefinitionGet"),
    // ----- tokens (operators) -----
    route("get", "/v1/tokens", "token_list_request").doc(
        "Every token, revoked ones included (never a secret)",
        "TokenList",
    ),
    route("post", "/v1/tokens", "token_create_request")
        .body(Fields, "TokenCreate")
        .status(201)
        .doc(
            "Create a token; the secret is in this response only",
            "TokenCreated",
        ),
    route("delete", "/v1/tokens/{id}", "token_revoke_request")
        .param("tokenId")
        .doc("Revoke a token", "TokenRevoked"),
    // ----- runtime nodes (operators) -----
    route("get", "/v1/nodes", "node_list_request")
        .output(Field("nodes"))
        .doc("Runtime nodes", "NodeList"),
    route("post", "/v1/nodes", "node_register_request")
        .body(Fields, "NodeRegistration")
        .status(201)
        .output(Field("node"))
        .doc(
            "Register (or re-register) a Docker engine as a runtime node",
            "Node",
        ),
    route("get", "/v1/nodes/{id}", "node_get_request")
        .param("nodeId")
        .output(Record {
            field: "node",
            what: "Node",
        })
        .doc("One runtime node", "Node"),
    route("delete", "/v1/nodes/{id}", "node_delete_request")
        .param("nodeId")
        .status(204)
        .output(Empty)
        .doc("Remove a node (its sandboxes must have ended)", "Object"),
    route("post", "/v1/nodes/{id}/status", "node_update_request")
        .param("nodeId")
        .body(Fields, "NodeStatus")
        .output(Field("node"))
        .doc(
            "Drain a node, take it into maintenance, or back online",
            "Node",
        ),
    // ----- templates -----
    route("get", "/v1/webhooks", "webhook_list_request")
        .output(Field("webhooks"))
        .doc("Webhooks, secrets left out (operators)", "WebhookList"),
    route("post", "/v1/webhooks", "webhook_create_request")
        .body(Fields, "WebhookCreate")
        .status(201)
        .output(Field("webhook"))
        .doc(
            "Register a webhook for sandbox events; the secret is shown only here (operators)",
            "Webhook",
        ),
    route(
        "get",
        "/v1/webhook-deliveries",
        "webhook_deliveries_request",
    )
    .query(&[("webhookId", Text)])
    .output(Field("deliveries"))
    .doc(
        "Recent webhook deliveries with their attempts (operators)",
        "DeliveryList",
    ),
    route("delete", "/v1/webhooks/{id}", "webhook_delete_request")
        .param("webhookId")
        .status(204)
        .output(Empty)
        .doc("Remove a webhook (operators)", "Object"),
    route("get", "/v1/templates", "template_list_request")
        .output(Field("templates"))
        .doc("Sandbox templates", "TemplateList"),
    route("post", "/v1/templates", "template_create_request")
        .body(Fields, "TemplateCreate")
        .status(201)
        .output(Field("template"))
        .doc("Create a template (operators)", "Template"),
    route("get", "/v1/templates/{id}", "template_get_request")
        .param("templateId")
        .output(Record {
            field: "template",
            what: "Template",
        })
        .doc("One template", "Template"),
    route("put", "/v1/templates/{id}", "template_update_request")
        .param("templateId")
        .body(Fields, "TemplateSpec")
        .output(Field("template"))
        .doc("Replace a template's spec (operators)", "Template"),
    route("delete", "/v1/templates/{id}", "template_delete_request")
        .param("templateId")
        .status(204)
        .output(Empty)
        .doc("Delete a template (operators)", "Object"),
    // ----- sandboxes -----
    route("get", "/v1/sandboxes", "sandbox_list_request")
        .query(&[("owner", Text)])
        .output(Field("sandboxes"))
        .doc(
            "The sandboxes the caller may see (?owner= narrows)",
            "SandboxList",
        ),
    route("post", "/v1/sandboxes", "sandbox_create_request")
        .body(Fields, "SandboxCreate")
        .status(201)
        .output(Field("sandbox"))
        .doc(
            "Create a sandbox from a template; returns once it is ready",
            "Sandbox",
        ),
    route("get", "/v1/sandboxes/{id}", "sandbox_get_request")
        .param("sandboxId")
        .output(Record {
            field: "sandbox",
            what: "Sandbox",
        })
        .doc("One sandbox", "Sandbox"),
    route("delete", "/v1/sandboxes/{id}", "sandbox_delete_request")
        .param("sandboxId")
        .status(204)
        .output(Empty)
        .doc("End a sandbox and forget it", "Object"),
    route(
        "post",
        "/v1/sandboxes/{id}/terminate",
        "sandbox_terminate_request",
    )
    .param("sandboxId")
    .output(Field("sandbox"))
    .doc("End a sandbox, keeping its record", "Sandbox"),
    route("post", "/v1/sandboxes/{id}/pause", "sandbox_pause_request")
        .param("sandboxId")
        .output(Field("sandbox"))
        .doc(
            "Freeze a running sandbox; the next exec or file operation resumes it",
            "Sandbox",
        ),
    route(
        "post",
        "/v1/sandboxes/{id}/resume",
        "sandbox_resume_request",
    )
    .param("sandboxId")
    .output(Field("sandbox"))
    .doc("Let a paused sandbox run again", "Sandbox"),
    route(
        "post",
        "/v1/sandboxes/{id}/extend",
        "sandbox_extend_request",
    )
    .param("sandboxId")
    .body(Fields, "SandboxExtend")
    .output(Field("sandbox"))
    .doc(
        "Move a live sandbox's deadline to ttlS seconds from now",
        "Sandbox",
    ),
    route(
        "post",
        "/v1/sandboxes/{id}/snapshot",
        "sandbox_snapshot_request",
    )
    .param("sandboxId")
    .body(Fields, "SandboxSnapshot")
    .status(201)
    .doc(
        "Commit a sandbox's filesystem into a new image and template",
        "SandboxSnapshot",
    ),
    route("get", "/v1/sandboxes/{id}/usage", "sandbox_usage_request")
        .param("sandboxId")
        .output(Field("usage"))
        .doc(
            "One sample of a sandbox's cpu, memory, processes and network",
            "SandboxUsage",
        ),
    route("post", "/v1/sandboxes/{id}/exec", "sandbox_exec_request")
        .param("sandboxId")
        .body(Fields, "Exec")
        .output(ExecStream)
        .doc(
            "Run a command; its output streams as NDJSON lines, the execution last",
            "ExecLine",
        ),
    route(
        "get",
        "/v1/sandboxes/{id}/terminal",
        "sandbox_terminal_open_request",
    )
    .param("sandboxId")
    .query(&[
        ("cols", Param::Number),
        ("rows", Param::Number),
        ("command", Param::Text),
    ])
    .status(101)
    .output(Output::Terminal)
    .doc(
        "An interactive terminal: upgrades to a WebSocket of input and output frames",
        "Terminal",
    ),
    route(
        "get",
        "/v1/sandboxes/{id}/executions",
        "execution_list_request",
    )
    .param("sandboxId")
    .output(Field("executions"))
    .doc("A sandbox's executions, oldest first", "ExecutionList"),
    route("get", "/v1/executions/{id}", "execution_get_request")
        .param("executionId")
        .output(Record {
            field: "execution",
            what: "Execution",
        })
        .doc("One execution", "Execution"),
    route(
        "post",
        "/v1/executions/{id}/cancel",
        "sandbox_exec_cancel_request",
    )
    .param("executionId")
    .doc(
        "Cancel a running execution (kills its process group)",
        "ExecCancelled",
    ),
    route(
        "get",
        "/v1/sandboxes/{id}/files",
        "sandbox_file_read_request",
    )
    .param("sandboxId")
    .query(&[("path", Text)])
    .defaults(&[("encoding", "\"base64\"")])
    .output(Output::Bytes("content"))
    .doc("Download a file (?path=)", "Object"),
    route(
        "put",
        "/v1/sandboxes/{id}/files",
        "sandbox_file_write_request",
    )
    .param("sandboxId")
    .query(&[("path", Text)])
    .body(Bytes("content"), "Object")
    .status(204)
    .output(Empty)
    .doc("Upload a file (?path=), the body as its bytes", "Object"),
    route(
        "delete",
        "/v1/sandboxes/{id}/files",
        "sandbox_file_delete_request",
    )
    .param("sandboxId")
    .query(&[("path", Text), ("recursive", Flag)])
    .status(204)
    .output(Empty)
    .doc(
        "Delete a file (?path=); a directory with ?recursive=true",
        "Object",
    ),
    route(
        "get",
        "/v1/sandboxes/{id}/files/list",
        "sandbox_file_list_request",
    )
    .param("sandboxId")
    .query(&[("path", Text)])
    .output(Field("files"))
    .doc("List a directory (?path=, default the workdir)", "FileList"),
    route("get", "/v1/metrics", "scheduler_metrics_request")
        .output(Field("metrics"))
        .doc(
            "The scheduler's counters and gauges (operators)",
            "SchedulerMetrics",
        ),
    // ----- the runtime-node protocol (SCHEDULER.md) -----
    route(
        "post",
        "/internal/runtime/nodes/register",
        "node_register_request",
    )
    .body(Fields, "NodeRegistration")
    .defaults(&[("liveness", "\"heartbeat\"")])
    .output(Field("node"))
    .node()
    .doc(
        "A node agent registers its Docker engine (then heartbeats)",
        "Node",
    ),
    route(
        "post",
        "/internal/runtime/heartbeat",
        "node_heartbeat_request",
    )
    .body(Fields, "Heartbeat")
    .output(Field("node"))
    .node()
    .doc("A node agent's heartbeat", "Node"),
    route(
        "post",
        "/internal/runtime/containers/ready",
        "executor_ready_request",
    )
    .body(Fields, "ExecutorReport")
    .output(Field("sandbox"))
    .node()
    .doc("An executor inside a sandbox is up", "Sandbox"),
    route(
        "post",
        "/internal/runtime/containers/exited",
        "executor_exited_request",
    )
    .body(Fields, "ExecutorReport")
    .output(Field("sandbox"))
    .node()
    .doc("A sandbox's main process ended", "Sandbox"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use agentvm::model::CommandKind;

    #[test]
    fn every_route_names_a_command_and_a_documented_method() {
        for r in ROUTES {
            for c in r.commands() {
                assert!(
                    CommandKind::from_type_name(c).is_some(),
                    "{} {} runs {c}, which is no command",
                    r.method,
                    r.path
                );
            }
            assert!(
                ["get", "post", "put", "patch", "delete"].contains(&r.method),
                "{}",
                r.method
            );
            assert!(
                !r.summary.is_empty(),
                "{} {} has a summary",
                r.method,
                r.path
            );
            assert_eq!(
                r.path.contains('{'),
                r.param.is_some(),
                "{} {}: a path parameter fills a field",
                r.method,
                r.path
            );
        }
    }

    #[test]
    fn no_two_routes_share_a_method_and_path() {
        let mut seen = std::collections::HashSet::new();
        for r in ROUTES {
            assert!(seen.insert((r.method, r.path)), "{} {}", r.method, r.path);
        }
    }
}
