//! The OpenAPI 3.1 document of the `/v1` REST API, served at `/v1/openapi.json`.

use serde_json::{json, Map, Value};

struct Op {
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    body: Option<&'static str>,
    response: &'static str,
    ok: &'static str,
}

const OPS: &[Op] = &[
    Op {
        method: "post",
        path: "/v1/commands",
        summary: "Run any Channel command: {type, data}",
        body: Some("CommandEnvelope"),
        response: "Object",
        ok: "200",
    },
    Op {
        method: "get",
        path: "/v1/containers",
        summary: "List visible containers",
        body: None,
        response: "ContainerList",
        ok: "200",
    },
    Op {
        method: "post",
        path: "/v1/containers",
        summary: "Get or create a container",
        body: Some("ContainerCreate"),
        response: "ContainerId",
        ok: "201",
    },
    Op {
        method: "get",
        path: "/v1/containers/{id}",
        summary: "Whether a container exists",
        body: None,
        response: "ContainerGet",
        ok: "200",
    },
    Op {
        method: "delete",
        path: "/v1/containers/{id}",
        summary: "Delete a container and everything in it",
        body: None,
        response: "ContainerDelete",
        ok: "200",
    },
    Op {
        method: "get",
        path: "/v1/containers/{id}/images",
        summary: "List a container's images",
        body: None,
        response: "ImageList",
        ok: "200",
    },
    Op {
        method: "post",
        path: "/v1/containers/{id}/images",
        summary:
            "Create an image (and its first session); with definitionName, build from a definition",
        body: Some("ImageCreate"),
        response: "ImageCreated",
        ok: "201",
    },
    Op {
        method: "get",
        path: "/v1/containers/{id}/agents",
        summary: "Running agents of a container",
        body: None,
        response: "AgentList",
        ok: "200",
    },
    Op {
        method: "delete",
        path: "/v1/containers/{id}/agents",
        summary: "Stop every agent of a container",
        body: None,
        response: "Object",
        ok: "200",
    },
    Op {
        method: "get",
        path: "/v1/images/{id}",
        summary: "Get an image",
        body: None,
        response: "ImageGet",
        ok: "200",
    },
    Op {
        method: "patch",
        path: "/v1/images/{id}",
        summary: "Rename or re-describe an image",
        body: Some("ImageUpdates"),
        response: "ImageRecord",
        ok: "200",
    },
    Op {
        method: "delete",
        path: "/v1/images/{id}",
        summary: "Delete an image, its sessions, messages and workdir",
        body: None,
        response: "Object",
        ok: "200",
    },
    Op {
        method: "get",
        path: "/v1/images/{id}/messages",
        summary: "History of the image's first session",
        body: None,
        response: "Messages",
        ok: "200",
    },
    Op {
        method: "post",
        path: "/v1/images/{id}/messages",
        summary: "Send a user message; the reply streams on the WebSocket",
        body: Some("Send"),
        response: "Sent",
        ok: "202",
    },
    Op {
        method: "get",
        path: "/v1/images/{id}/sessions",
        summary: "Sessions of an image",
        body: None,
        response: "SessionList",
        ok: "200",
    },
    Op {
        method: "post",
        path: "/v1/images/{id}/sessions",
        summary: "Another session on an image",
        body: Some("Title"),
        response: "SessionCreated",
        ok: "201",
    },
    Op {
        method: "post",
        path: "/v1/images/{id}/run",
        summary: "Start (or reuse) the image's agent",
        body: None,
        response: "Run",
        ok: "200",
    },
    Op {
        method: "post",
        path: "/v1/images/{id}/stop",
        summary: "Stop the image's agent",
        body: None,
        response: "Object",
        ok: "200",
    },
    Op {
        method: "post",
        path: "/v1/images/{id}/interrupt",
        summary: "Interrupt the current turn",
        body: None,
        response: "Object",
        ok: "200",
    },
    Op {
        method: "get",
        path: "/v1/sessions/{id}",
        summary: "Get a session",
        body: None,
        response: "SessionGet",
        ok: "200",
    },
    Op {
        method: "patch",
        path: "/v1/sessions/{id}",
        summary: "Set a session's title",
        body: Some("Title"),
        response: "SessionGet",
        ok: "200",
    },
    Op {
        method: "delete",
        path: "/v1/sessions/{id}",
        summary: "Delete a session and its messages",
        body: None,
        response: "Object",
        ok: "200",
    },
    Op {
        method: "get",
        path: "/v1/sessions/{id}/messages",
        summary: "History of a session",
        body: None,
        response: "Messages",
        ok: "200",
    },
    Op {
        method: "post",
        path: "/v1/sessions/{id}/messages",
        summary: "Send a user message to a session",
        body: Some("Send"),
        response: "Sent",
        ok: "202",
    },
    Op {
        method: "get",
        path: "/v1/agents/{id}",
        summary: "Whether an agent runs",
        body: None,
        response: "Object",
        ok: "200",
    },
    Op {
        method: "delete",
        path: "/v1/agents/{id}",
        summary: "Stop an agent",
        body: None,
        response: "Object",
        ok: "200",
    },
    Op {
        method: "get",
        path: "/v1/definitions",
        summary: "Registered definitions",
        body: None,
        response: "DefinitionList",
        ok: "200",
    },
    Op {
        method: "post",
        path: "/v1/definitions",
        summary: "Register (or replace) a definition",
        body: Some("Definition"),
        response: "Object",
        ok: "200",
    },
    Op {
        method: "get",
        path: "/v1/definitions/{name}",
        summary: "One definition",
        body: None,
        response: "DefinitionGet",
        ok: "200",
    },
];

fn r(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn obj(props: Value, required: &[&str]) -> Value {
    json!({ "type": "object", "properties": props, "required": required })
}

fn schemas() -> Value {
    let s = |t: &str| json!({ "type": t });
    let opt_s = json!({ "type": ["string", "null"] });
    json!({
        "Object": { "type": "object" },
        "Error": obj(json!({ "error": s("string"), "kind": { "type": "string", "enum": ["not_found","already_exists","invalid_input","conflict","unavailable","storage","protocol","cancelled","unauthorized","internal"] } }), &["error", "kind"]),
        "CommandEnvelope": obj(json!({ "type": s("string"), "data": s("object") }), &["type"]),
        "ContainerCreate": obj(json!({ "containerId": s("string") }), &["containerId"]),
        "ContainerId": obj(json!({ "containerId": s("string") }), &["containerId"]),
        "ContainerList": obj(json!({ "containerIds": { "type": "array", "items": s("string") } }), &["containerIds"]),
        "ContainerGet": obj(json!({ "containerId": s("string"), "exists": s("boolean") }), &["exists"]),
        "ContainerDelete": obj(json!({ "containerId": s("string"), "deleted": s("boolean") }), &["containerId", "deleted"]),
        "ImageConfig": obj(json!({ "name": s("string"), "description": s("string"), "systemPrompt": s("string"), "model": s("string"), "mcpServers": s("object"), "definition": {}, "tools": { "type": "array", "items": s("string") } }), &[]),
        "ImageCreate": obj(json!({ "config": r("ImageConfig"), "definitionName": s("string") }), &[]),
        "ImageUpdates": obj(json!({ "name": s("string"), "description": s("string") }), &[]),
        "ImageRecord": obj(json!({ "record": r("ImageListItem") }), &["record"]),
        "ImageListItem": obj(json!({ "imageId": s("string"), "containerId": s("string"), "sessionId": s("string"), "name": s("string"), "description": s("string"), "systemPrompt": s("string"), "createdAt": s("integer"), "updatedAt": s("integer"), "online": s("boolean"), "agentId": s("string"), "definitionName": s("string"), "model": s("string") }), &["imageId", "containerId", "sessionId", "name", "createdAt", "updatedAt", "online"]),
        "ImageCreated": obj(json!({ "record": r("ImageListItem"), "__subscriptions": { "type": "array", "items": s("string") } }), &["record", "__subscriptions"]),
        "ImageGet": obj(json!({ "record": r("ImageListItem"), "__subscriptions": { "type": "array", "items": s("string") } }), &["record"]),
        "ImageList": obj(json!({ "records": { "type": "array", "items": r("ImageListItem") }, "__subscriptions": { "type": "array", "items": s("string") } }), &["records", "__subscriptions"]),
        "Message": obj(json!({ "id": s("string"), "role": { "type": "string", "enum": ["user","assistant","tool","error"] }, "subtype": { "type": "string", "enum": ["user","assistant","tool-call","tool-result","error"] }, "content": {}, "timestamp": s("integer"), "usage": s("object"), "errorCode": s("string"), "toolCall": s("object"), "toolResult": s("object") }), &["id", "role", "subtype", "timestamp"]),
        "Messages": obj(json!({ "messages": { "type": "array", "items": r("Message") } }), &["messages"]),
        "Send": obj(json!({ "content": { "oneOf": [s("string"), { "type": "array", "items": s("object") }] } }), &["content"]),
        "Sent": obj(json!({ "imageId": s("string"), "agentId": s("string"), "sessionId": s("string"), "messageId": s("string") }), &["imageId", "agentId", "sessionId", "messageId"]),
        "Title": obj(json!({ "title": opt_s }), &[]),
        "Session": obj(json!({ "sessionId": s("string"), "imageId": s("string"), "containerId": s("string"), "title": s("string"), "createdAt": s("integer"), "updatedAt": s("integer") }), &["sessionId", "imageId", "containerId", "createdAt", "updatedAt"]),
        "SessionGet": obj(json!({ "session": r("Session") }), &["session"]),
        "SessionCreated": obj(json!({ "session": r("Session"), "__subscriptions": { "type": "array", "items": s("string") } }), &["session"]),
        "SessionList": obj(json!({ "sessions": { "type": "array", "items": r("Session") } }), &["sessions"]),
        "Run": obj(json!({ "imageId": s("string"), "agentId": s("string"), "reused": s("boolean") }), &["imageId", "agentId", "reused"]),
        "AgentList": obj(json!({ "agents": { "type": "array", "items": s("object") } }), &["agents"]),
        "Definition": obj(json!({ "name": s("string"), "description": s("string"), "systemPrompt": s("string"), "model": s("string"), "tools": { "type": "array", "items": s("string") }, "mcpServers": s("object") }), &["name"]),
        "DefinitionList": obj(json!({ "definitions": { "type": "array", "items": r("Definition") } }), &["definitions"]),
        "DefinitionGet": obj(json!({ "definition": r("Definition") }), &["definition"]),
    })
}

/// The document.
pub(crate) fn document() -> Value {
    let mut paths: Map<String, Value> = Map::new();
    for op in OPS {
        let mut o = json!({
            "summary": op.summary,
            "operationId": format!("{}_{}", op.method, op.path.trim_start_matches("/v1/").replace(['/', '{', '}'], "_")),
            "responses": {
                op.ok: { "description": "OK", "content": { "application/json": { "schema": r(op.response) } } },
                "400": { "description": "Invalid input", "content": { "application/json": { "schema": r("Error") } } },
                "401": { "description": "Missing, invalid or revoked token, or out of scope", "content": { "application/json": { "schema": r("Error") } } },
                "404": { "description": "Not found", "content": { "application/json": { "schema": r("Error") } } },
            },
        });
        if let Some(b) = op.body {
            o["requestBody"] =
                json!({ "required": true, "content": { "application/json": { "schema": r(b) } } });
        }
        if op.path.contains("{id}") || op.path.contains("{name}") {
            let name = if op.path.contains("{id}") {
                "id"
            } else {
                "name"
            };
            o["parameters"] = json!([{ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }]);
        }
        let entry = paths
            .entry(op.path.to_string())
            .or_insert_with(|| json!({}));
        entry[op.method] = o;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "agentvm", "version": env!("CARGO_PKG_VERSION"), "description": "Management API of agentvm-server. The same commands run over the WebSocket Channel at /ws." },
        "components": {
            "schemas": schemas(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
    })
}
