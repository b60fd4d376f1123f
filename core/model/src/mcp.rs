//! MCP servers of a definition or image: `mcpServers`, in the shape Claude Code, the Claude
//! Agent SDK and AgentX use.
//!
//! ```json
//! {"files": {"command": "python3", "args": ["-m", "files_server"], "env": {"ROOT": "/data"}},
//!  "search": {"type": "http", "url": "https://mcp.example/mcp", "headers": {"Authorization": "Bearer …"}}}
//! ```
//!
//! A server without `type` (or with `"type": "stdio"`) is a process speaking MCP over its
//! stdin and stdout; `"type": "http"` is a streamable HTTP endpoint. Fields other than the ones
//! below are accepted and ignored, as Claude Code does. Server names become part of tool names
//! (`mcp__<server>__<tool>`), so they are limited to letters, digits, `_` and `-`.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The longest server name (tool names are at most 128 characters for the providers).
pub const MAX_MCP_SERVER_NAME: usize = 64;

/// The MCP servers of a definition or image, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct McpServers(pub BTreeMap<String, McpServer>);

/// One MCP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum McpServer {
    /// A process speaking MCP over stdin / stdout.
    Stdio(McpStdioServer),
    /// A streamable HTTP endpoint.
    Http(McpHttpServer),
}

/// A stdio MCP server: `{"command": "...", "args": [...], "env": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct McpStdioServer {
    /// `stdio`, when given (it is the default).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<McpStdioType>,
    /// The program (looked up in `PATH` where it runs).
    pub command: String,
    /// Its arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// The `type` of a stdio server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum McpStdioType {
    /// Stdin / stdout.
    Stdio,
}

/// The `type` of an HTTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum McpHttpType {
    /// Streamable HTTP.
    Http,
}

/// A streamable HTTP MCP server: `{"type": "http", "url": "...", "headers": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct McpHttpServer {
    /// Always `http`.
    #[serde(rename = "type")]
    pub kind: McpHttpType,
    /// The endpoint, `http://` or `https://`.
    pub url: String,
    /// Headers sent with every request (an `Authorization` header, say).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
}

impl McpServers {
    /// Checks and converts a JSON value; errors name the field (`mcpServers.<name>.<field>`).
    pub fn from_value(value: &Value) -> Result<McpServers, String> {
        let Value::Object(servers) = value else {
            return Err("mcpServers must be an object of servers by name".into());
        };
        let mut out = BTreeMap::new();
        for (name, server) in servers {
            check_name(name)?;
            out.insert(name.clone(), McpServer::from_value(name, server)?);
        }
        Ok(McpServers(out))
    }

    /// True when no server is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_MCP_SERVER_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !name.contains("__");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "mcpServers.{name:?}: a server name is 1 to {MAX_MCP_SERVER_NAME} letters, digits, '_' or '-', without '__' (it separates the server from the tool in tool names)"
        ))
    }
}

fn string_field(
    name: &str,
    obj: &Map<String, Value>,
    field: &str,
) -> Result<Option<String>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("mcpServers.{name}.{field} must be a string")),
    }
}

fn string_map(
    name: &str,
    obj: &Map<String, Value>,
    field: &str,
) -> Result<BTreeMap<String, String>, String> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(BTreeMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) if !k.is_empty() && !k.contains(['=', '\0']) => {
                    Ok((k.clone(), s.clone()))
                }
                Value::String(_) => Err(format!(
                    "mcpServers.{name}.{field}: {k:?} is not a valid name"
                )),
                _ => Err(format!("mcpServers.{name}.{field}.{k} must be a string")),
            })
            .collect(),
        Some(_) => Err(format!(
            "mcpServers.{name}.{field} must be an object of strings"
        )),
    }
}

impl McpServer {
    /// Checks and converts one server's JSON (see the module docs).
    pub fn from_value(name: &str, value: &Value) -> Result<McpServer, String> {
        let Value::Object(obj) = value else {
            return Err(format!("mcpServers.{name} must be an object"));
        };
        let kind = string_field(name, obj, "type")?;
        match kind.as_deref() {
            None | Some("stdio") => {
                let command = string_field(name, obj, "command")?
                    .filter(|c| !c.trim().is_empty())
                    .ok_or_else(|| {
                        format!(
                            "mcpServers.{name}.command is required (a stdio server), \
                             or set \"type\": \"http\" and a url"
                        )
                    })?;
                let args = match obj.get("args") {
                    None | Some(Value::Null) => Vec::new(),
                    Some(Value::Array(a)) => a
                        .iter()
                        .map(|v| {
                            v.as_str().map(str::to_string).ok_or_else(|| {
                                format!("mcpServers.{name}.args must be an array of strings")
                            })
                        })
                        .collect::<Result<_, _>>()?,
                    Some(_) => {
                        return Err(format!(
                            "mcpServers.{name}.args must be an array of strings"
                        ))
                    }
                };
                if command.contains('\0') || args.iter().any(|a| a.contains('\0')) {
                    return Err(format!(
                        "mcpServers.{name}: command and args cannot contain NUL bytes"
                    ));
                }
                Ok(McpServer::Stdio(McpStdioServer {
                    kind: kind.map(|_| McpStdioType::Stdio),
                    command,
                    args,
                    env: string_map(name, obj, "env")?,
                }))
            }
            Some("http") => {
                let url = string_field(name, obj, "url")?
                    .ok_or_else(|| format!("mcpServers.{name}.url is required"))?;
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(format!(
                        "mcpServers.{name}.url must be an http:// or https:// URL"
                    ));
                }
                Ok(McpServer::Http(McpHttpServer {
                    kind: McpHttpType::Http,
                    url,
                    headers: string_map(name, obj, "headers")?,
                }))
            }
            Some("sse") => Err(format!(
                "mcpServers.{name}.type: the legacy \"sse\" transport is not supported; \
                 use \"http\" (streamable HTTP)"
            )),
            Some(other) => Err(format!(
                "mcpServers.{name}.type {other:?} is not one of \"stdio\", \"http\""
            )),
        }
    }
}

impl<'de> Deserialize<'de> for McpServers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        McpServers::from_value(&value).map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for McpServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        McpServer::from_value("server", &value).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claude_code_shapes_round_trip() {
        let wire = json!({
            "files": {"command": "python3", "args": ["-m", "srv"], "env": {"A": "1"}},
            "plain": {"type": "stdio", "command": "srv"},
            "web": {"type": "http", "url": "http://127.0.0.1:1/mcp", "headers": {"X-Key": "k"}}
        });
        let parsed: McpServers = serde_json::from_value(wire).unwrap();
        assert!(matches!(parsed.0["files"], McpServer::Stdio(ref s) if s.args == ["-m", "srv"]));
        assert!(matches!(parsed.0["web"], McpServer::Http(ref h) if h.headers["X-Key"] == "k"));
        let back = serde_json::to_value(&parsed).unwrap();
        assert_eq!(back["web"]["type"], "http");
        assert_eq!(back["plain"], json!({"type": "stdio", "command": "srv"}));
        assert_eq!(back["files"]["command"], "python3");
        assert!(back["files"].get("type").is_none());
        let again: McpServers = serde_json::from_value(back).unwrap();
        assert_eq!(again, parsed);
    }

    #[test]
    fn bad_shapes_name_the_field() {
        for (wire, field) in [
            (json!([]), "mcpServers must be"),
            (json!({"a b": {"command": "x"}}), "server name"),
            (json!({"a__b": {"command": "x"}}), "server name"),
            (json!({"s": {"args": ["x"]}}), "mcpServers.s.command"),
            (
                json!({"s": {"command": "x", "args": "y"}}),
                "mcpServers.s.args",
            ),
            (
                json!({"s": {"command": "x", "env": {"A": 1}}}),
                "mcpServers.s.env.A",
            ),
            (json!({"s": {"type": "http"}}), "mcpServers.s.url"),
            (
                json!({"s": {"type": "http", "url": "ftp://x"}}),
                "mcpServers.s.url",
            ),
            (
                json!({"s": {"type": "sse", "url": "http://x"}}),
                "mcpServers.s.type",
            ),
            (json!({"s": {"type": "ws"}}), "mcpServers.s.type"),
            (json!({"s": 3}), "mcpServers.s must"),
        ] {
            let e = serde_json::from_value::<McpServers>(wire.clone()).unwrap_err();
            assert!(e.to_string().contains(field), "{wire}: {e}");
        }
    }
}
