//! The OpenAPI 3.1 document of the `/v1` REST API, served at `/v1/openapi.json`.

use serde_json::{json, Map, Value};

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
        "Text": { "type": "string" },
        "Health": obj(json!({ "status": s("string"), "version": s("string") }), &["status", "version"]),
        "Error": obj(json!({ "error": s("string"), "kind": { "type": "string", "enum": ["not_found","already_exists","invalid_input","conflict","unavailable","storage","storage_full","protocol","cancelled","unauthorized","internal"] } }), &["error", "kind"]),
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
        "Messages": obj(json!({ "messages": { "type": "array", "items": r("Message") }, "hasMore": { "type": "boolean" }, "nextCursor": { "type": "integer", "minimum": 0 } }), &["messages", "hasMore"]),
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

/// Schemas of the scheduler, token and runtime-node routes.
fn scheduler_schemas() -> Map<String, Value> {
    let s = |t: &str| json!({ "type": t });
    let mut m = Map::new();
    m.insert("TokenInfo".into(), obj(json!({ "id": s("string"), "containers": { "type": ["array", "null"], "items": s("string") }, "createdAt": s("integer"), "revokedAt": { "type": ["integer", "null"] } }), &["id", "containers", "createdAt"]));
    m.insert(
        "TokenList".into(),
        obj(
            json!({ "tokens": { "type": "array", "items": r("TokenInfo") } }),
            &["tokens"],
        ),
    );
    m.insert(
        "TokenCreate".into(),
        obj(
            json!({ "containers": { "type": ["array", "null"], "items": s("string") } }),
            &[],
        ),
    );
    m.insert("TokenCreated".into(), obj(json!({ "token": s("string"), "id": s("string"), "containers": { "type": ["array", "null"], "items": s("string") }, "createdAt": s("integer") }), &["token", "id", "createdAt"]));
    m.insert(
        "TokenRevoked".into(),
        obj(
            json!({ "id": s("string"), "revoked": s("boolean"), "revokedAt": s("integer") }),
            &["id", "revoked"],
        ),
    );
    m.insert("NodeRegistration".into(), obj(json!({ "node_id": s("string"), "api_endpoint": s("string"), "hostname": s("string"), "runtime_type": s("string"), "ip_address": s("string"), "total_cpu_cores": s("number"), "total_memory_mb": s("integer"), "max_containers": s("integer"), "cached_images": { "type": "array", "items": s("string") }, "labels": s("object"), "tls": s("object"), "liveness": { "type": "string", "enum": ["probe", "heartbeat"] } }), &["node_id", "api_endpoint"]));
    m.insert("Heartbeat".into(), obj(json!({ "node_id": s("string"), "container_id": s("string"), "timestamp": s("string"), "cached_images": { "type": "array", "items": s("string") } }), &["node_id"]));
    m.insert("Node".into(), obj(json!({ "node_id": s("string"), "api_endpoint": s("string"), "status": { "type": "string", "enum": ["online", "offline", "draining", "maintenance"] } }), &["node_id", "api_endpoint", "status"]));
    m.insert(
        "NodeList".into(),
        json!({ "type": "array", "items": r("Node") }),
    );
    m.insert("NodeStatus".into(), obj(json!({ "status": { "type": "string", "enum": ["online", "draining", "maintenance"] } }), &["status"]));
    m.insert("TemplateSpec".into(), obj(json!({ "name": s("string"), "image": s("string"), "defaultCpuCores": s("number"), "defaultMemoryMb": s("integer"), "defaultDiskMb": s("integer"), "defaultTimeoutS": s("integer"), "idleTimeoutS": s("integer"), "idleAction": { "type": "string", "enum": ["terminate", "pause"] }, "env": s("object"), "network": {}, "security": s("object"), "workdir": s("string"), "command": { "type": "array", "items": s("string") }, "warmPoolSize": s("integer") }), &["name", "image"]));
    m.insert(
        "TemplateCreate".into(),
        json!({ "allOf": [r("TemplateSpec"), obj(json!({ "id": s("string") }), &["id"])] }),
    );
    m.insert(
        "Template".into(),
        obj(
            json!({ "id": s("string"), "name": s("string"), "image": s("string") }),
            &["id", "name", "image"],
        ),
    );
    m.insert(
        "TemplateList".into(),
        json!({ "type": "array", "items": r("Template") }),
    );
    m.insert("SandboxCreate".into(), obj(json!({ "templateId": s("string"), "owner": s("string"), "cpuCores": s("number"), "memoryMb": s("integer"), "diskMb": s("integer"), "env": s("object"), "timeoutS": s("integer"), "idleTimeoutS": s("integer"), "nodeId": s("string") }), &["templateId"]));
    m.insert("Sandbox".into(), obj(json!({ "id": s("string"), "templateId": s("string"), "nodeId": s("string"), "status": s("string"), "owner": s("string"), "createdAt": s("integer") }), &["id", "templateId", "nodeId", "status"]));
    m.insert(
        "SandboxList".into(),
        json!({ "type": "array", "items": r("Sandbox") }),
    );
    m.insert("WebhookCreate".into(), obj(json!({ "url": s("string"), "templateId": s("string"), "events": { "type": "array", "items": s("string") }, "secret": s("string") }), &["url"]));
    m.insert("Webhook".into(), obj(json!({ "id": s("string"), "url": s("string"), "templateId": s("string"), "events": { "type": "array", "items": s("string") }, "secret": s("string"), "createdAt": s("integer") }), &["id", "url", "createdAt"]));
    m.insert(
        "WebhookList".into(),
        json!({ "type": "array", "items": r("Webhook") }),
    );
    m.insert("Delivery".into(), obj(json!({ "id": s("string"), "webhookId": s("string"), "eventType": s("string"), "sandboxId": s("string"), "status": { "type": "string", "enum": ["retrying", "delivered", "failed"] }, "attempts": s("integer"), "lastStatus": s("integer"), "lastError": s("string"), "createdAt": s("integer"), "lastAttemptAt": s("integer") }), &["id", "webhookId", "eventType", "status", "attempts"]));
    m.insert(
        "DeliveryList".into(),
        json!({ "type": "array", "items": r("Delivery") }),
    );
    m.insert(
        "SandboxExtend".into(),
        obj(json!({ "ttlS": s("integer") }), &["ttlS"]),
    );
    m.insert(
        "SandboxSnapshot".into(),
        obj(
            json!({ "templateId": s("string"), "name": s("string"), "template": r("Template"), "image": s("string") }),
            &[],
        ),
    );
    m.insert("SandboxUsage".into(), obj(json!({ "sandboxId": s("string"), "nodeId": s("string"), "status": s("string"), "cpuTotalNs": s("integer"), "cpuPercent": s("number"), "memoryBytes": s("integer"), "memoryLimitBytes": s("integer"), "pids": s("integer"), "netRxBytes": s("integer"), "netTxBytes": s("integer"), "at": s("integer") }), &["sandboxId", "memoryBytes", "pids"]));
    m.insert("Exec".into(), obj(json!({ "command": { "type": "array", "items": s("string") }, "code": s("string"), "language": s("string"), "env": s("object"), "workdir": s("string"), "timeoutMs": s("integer"), "maxOutputBytes": s("integer"), "executionId": s("string") }), &[]));
    m.insert("Execution".into(), obj(json!({ "id": s("string"), "sandboxId": s("string"), "command": { "type": "array", "items": s("string") }, "status": { "type": "string", "enum": ["pending", "running", "completed", "failed", "timeout", "cancelled", "crashed"] }, "stdout": s("string"), "stderr": s("string"), "exitCode": s("integer"), "truncated": s("boolean"), "createdAt": s("integer"), "durationMs": s("integer") }), &["id", "sandboxId", "status"]));
    m.insert("ExecLine".into(), json!({ "oneOf": [obj(json!({ "stream": { "type": "string", "enum": ["stdout", "stderr"] }, "data": s("string") }), &["stream", "data"]), r("Execution"), r("Error")] }));
    m.insert(
        "ExecutionList".into(),
        json!({ "type": "array", "items": r("Execution") }),
    );
    m.insert(
        "ExecCancelled".into(),
        obj(
            json!({ "execution": r("Execution"), "cancelled": s("boolean") }),
            &["execution", "cancelled"],
        ),
    );
    m.insert("FileEntry".into(), obj(json!({ "name": s("string"), "path": s("string"), "kind": { "type": "string", "enum": ["file", "dir", "symlink", "other"] }, "size": s("integer"), "mode": s("integer"), "modified": s("integer"), "linkTarget": s("string") }), &["name", "path", "kind", "size"]));
    m.insert(
        "FileList".into(),
        json!({ "type": "array", "items": r("FileEntry") }),
    );
    m.insert("SchedulerMetrics".into(), obj(json!({ "poolHits": s("integer"), "poolMisses": s("integer"), "coldStarts": s("integer"), "executions": s("integer"), "liveSandboxes": s("integer"), "nodesOnline": s("integer") }), &[]));
    m.insert("ExecutorReport".into(), obj(json!({ "container_id": s("string"), "session_id": s("string"), "executor_url": s("string"), "exit_code": s("integer") }), &["container_id"]));
    m
}

/// Routes served outside the REST table, documented here (and checked against the router by
/// the tests).
pub(crate) const FIXED: &[(&str, &str, &str, &str)] = &[
    (
        "get",
        "/health",
        "Liveness and the server's version",
        "Health",
    ),
    (
        "get",
        "/metrics",
        "Prometheus text: connections, requests, latency, agents, sandboxes",
        "Text",
    ),
    (
        "get",
        "/ws",
        "The Channel: upgrade to the WebSocket protocol (docs/protocol.md)",
        "Object",
    ),
    ("get", "/v1/openapi.json", "This document", "Object"),
    (
        "post",
        "/v1/commands",
        "Run any command: {type, data}",
        "Object",
    ),
];

/// Every (method, path) the server routes, from the same tables the router is built from.
#[cfg(test)]
pub(crate) fn served() -> Vec<(&'static str, &'static str)> {
    FIXED
        .iter()
        .map(|(m, p, _, _)| (*m, *p))
        .chain(
            crate::rest::routes::ROUTES
                .iter()
                .map(|r| (r.method, r.path)),
        )
        .chain(port_paths().flat_map(|path| {
            crate::port_proxy::DOCUMENTED_METHODS
                .into_iter()
                .map(move |m| (m, path))
        }))
        .collect()
}

/// The port proxy's paths as the document writes them (`{path}` for the router's `{*path}`).
fn port_paths() -> impl Iterator<Item = &'static str> {
    crate::port_proxy::PATHS.into_iter().map(|p| match p {
        "/v1/sandboxes/{id}/ports/{port}/{*path}" => "/v1/sandboxes/{id}/ports/{port}/{path}",
        _ => p,
    })
}

/// The operation of a proxied path (every method is proxied; the common ones are listed).
fn port_operation(method: &str, path: &str) -> Value {
    let mut parameters = vec![
        json!({ "name": "id", "in": "path", "required": true, "description": "The sandbox", "schema": { "type": "string" } }),
        json!({ "name": "port", "in": "path", "required": true, "description": "A TCP port of the sandbox, 1 to 65535", "schema": { "type": "integer", "minimum": 1, "maximum": 65535 } }),
    ];
    if path.ends_with("{path}") {
        parameters.push(json!({ "name": "path", "in": "path", "required": true, "description": "The path sent to the sandbox's server (any number of segments)", "schema": { "type": "string" } }));
    }
    let mut responses = error_responses();
    responses["default"] = json!({ "description": "Whatever the sandbox's server answers, passed through (101 for a WebSocket upgrade)" });
    responses["502"] = json!({ "description": "Nothing accepts connections on the port, or the connection broke", "content": { "application/json": { "schema": r("Error") } } });
    json!({
        "summary": "Reverse proxy to a port of the sandbox (HTTP and WebSocket upgrades); runs sandbox_port_request",
        "description": "The request goes to the sandbox's address on its Docker network as it came (method, the path after the port, query, headers), without hop-by-hop headers or the agentvm token, with X-Forwarded-For/-Host/-Proto/-Prefix. Bodies stream both ways; the request body is limited like every request's. No Docker port is published on the host.",
        "operationId": operation_id(method, path),
        "x-command": ["sandbox_port_request"],
        "parameters": parameters,
        "responses": responses,
    })
}

fn error_responses() -> Value {
    let e = |d: &str| json!({ "description": d, "content": { "application/json": { "schema": r("Error") } } });
    json!({
        "400": e("Invalid input: malformed JSON, a missing or unknown field, a bad value"),
        "401": e("Missing, invalid or revoked token, or not allowed for this token"),
        "404": e("Not found (or outside the token's containers)"),
        "409": e("Conflicts with the current state, or already exists"),
        "503": e("A dependency is unavailable or busy (see Retry-After); retry"),
        "507": e("The store's disk is full (kind storage_full); retry once space is freed"),
    })
}

/// The document, generated from the route table.
pub(crate) fn document() -> Value {
    use crate::rest::routes::{Body, Output, ROUTES};
    let mut paths: Map<String, Value> = Map::new();
    let mut add = |method: &str, path: &str, op: Value| {
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[method] = op;
    };
    for (method, path, summary, response) in FIXED {
        let mut o = json!({
            "summary": summary,
            "operationId": operation_id(method, path),
            "responses": { "200": { "description": "OK", "content": { "application/json": { "schema": r(response) } } } },
        });
        if *path == "/v1/commands" {
            o["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": r("CommandEnvelope") } } });
            o["responses"] = merge(o["responses"].clone(), error_responses());
        }
        if *path == "/ws" {
            o["responses"] =
                json!({ "101": { "description": "Switching protocols to the Channel" } });
        }
        add(method, path, o);
    }
    for path in port_paths() {
        for method in crate::port_proxy::DOCUMENTED_METHODS {
            add(method, path, port_operation(method, path));
        }
    }
    for route in ROUTES {
        let ok = route.status.to_string();
        let success = match route.output {
            Output::Empty => json!({ "description": "Done" }),
            Output::Bytes(_) => {
                json!({ "description": "The file's bytes", "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } })
            }
            Output::Terminal => {
                json!({ "description": "Switching protocols to a WebSocket of the terminal: binary (or text) frames from the client are its input, except a text frame {\"type\":\"resize\",\"cols\",\"rows\"}; binary frames to the client are its output, and a last text frame {\"type\":\"exit\",\"exitCode\"} comes before the close (docs/sandboxes.md, Terminal)" })
            }
            Output::ExecStream => {
                json!({ "description": "NDJSON: one {stream, data} line per output chunk as it comes, then the execution", "content": { "application/x-ndjson": { "schema": r(route.schemas.1) } } })
            }
            _ => {
                json!({ "description": "OK", "content": { "application/json": { "schema": r(route.schemas.1) } } })
            }
        };
        let mut responses = error_responses();
        responses[ok.as_str()] = success;
        let mut o = json!({
            "summary": route.summary,
            "operationId": operation_id(route.method, route.path),
            "x-command": route.commands(),
            "responses": responses,
        });
        if let Some(schema) = route.schemas.0 {
            o["requestBody"] = match route.body {
                Body::Bytes(_) => {
                    json!({ "required": true, "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary" } } } })
                }
                _ => {
                    json!({ "required": true, "content": { "application/json": { "schema": r(schema) } } })
                }
            };
        }
        let mut parameters = Vec::new();
        if let Some(field) = route.param {
            let name = if route.path.contains("{name}") {
                "name"
            } else {
                "id"
            };
            parameters.push(json!({ "name": name, "in": "path", "required": true, "description": format!("The command's `{field}`"), "schema": { "type": "string" } }));
        }
        for (q, kind) in route.query {
            let t = match kind {
                crate::rest::routes::Param::Text => "string",
                crate::rest::routes::Param::Flag => "boolean",
                crate::rest::routes::Param::Number => "integer",
            };
            parameters.push(
                json!({ "name": q, "in": "query", "required": false, "schema": { "type": t } }),
            );
        }
        if !parameters.is_empty() {
            o["parameters"] = Value::Array(parameters);
        }
        if route.access == crate::rest::routes::Access::Node {
            o["description"] =
                json!("For runtime nodes: needs the scheduler's node token when one is set.");
        }
        add(route.method, route.path, o);
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "agentvm", "version": env!("CARGO_PKG_VERSION"), "description": "Management API of agentvm-server. Every route runs one command; the same commands run over the WebSocket Channel at /ws (docs/protocol.md, docs/commands.md)." },
        "components": {
            "schemas": merge(schemas(), Value::Object(scheduler_schemas())),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
    })
}

fn operation_id(method: &str, path: &str) -> String {
    format!(
        "{}_{}",
        method,
        path.trim_start_matches('/')
            .trim_start_matches("v1/")
            .replace(['/', '{', '}', '.'], "_")
    )
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Value::Object(a), Value::Object(b)) = (&mut a, b) {
        a.extend(b);
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_route_is_documented_with_its_schemas() {
        let doc = document();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for (method, path) in served() {
            let op = &doc["paths"][path][method];
            assert!(
                op.is_object(),
                "{method} {path} is served but not documented"
            );
            for (_, response) in op["responses"].as_object().unwrap() {
                if let Some(content) = response.get("content") {
                    for (_, media) in content.as_object().unwrap() {
                        if let Some(reference) = media["schema"]["$ref"].as_str() {
                            let name = reference.trim_start_matches("#/components/schemas/");
                            assert!(schemas.contains_key(name), "{method} {path}: schema {name}");
                        }
                    }
                }
            }
        }
        let documented: usize = doc["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum();
        assert_eq!(
            documented,
            served().len(),
            "the document lists only served routes"
        );
    }
}
