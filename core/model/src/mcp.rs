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
    /// A server whose shape is not one of the above, read from a record stored before shapes
    /// were checked (an AgentX `"sse"` server, say). Kept as it was, so nothing stored is lost
    /// or rewritten; never started (each turn reports why). Commands never create one: their
    /// `mcpServers` are checked with [`McpServers::check`].
    #[cfg_attr(feature = "schema", schemars(skip))]
    Unsupported(UnsupportedMcpServer),
}

/// An MCP server entry that is not a valid shape: its JSON as stored and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedMcpServer {
    /// The entry as it was stored.
    pub raw: Value,
    /// Why it cannot run (the error a command would have got).
    pub problem: String,
}

impl Serialize for UnsupportedMcpServer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
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

    /// The first entry that is not a valid shape, as the error a command gets for it. Reading
    /// JSON keeps such entries (see [`McpServer::Unsupported`]); a command that brings
    /// `mcpServers` must pass this check.
    pub fn check(&self) -> Result<(), String> {
        match self.0.values().find_map(|s| match s {
            McpServer::Unsupported(u) => Some(u.problem.clone()),
            _ => None,
        }) {
            Some(problem) => Err(problem),
            None => Ok(()),
        }
    }

    /// Reads servers leniently: an entry that is not a valid shape (or has an invalid name)
    /// is kept as [`McpServer::Unsupported`] instead of failing the whole record.
    fn from_value_keeping(value: &Value) -> Result<McpServers, String> {
        let Value::Object(servers) = value else {
            return Err("mcpServers must be an object of servers by name".into());
        };
        let out = servers
            .iter()
            .map(|(name, server)| {
                let parsed = check_name(name).and_then(|()| McpServer::from_value(name, server));
                let entry = parsed.unwrap_or_else(|problem| {
                    McpServer::Unsupported(UnsupportedMcpServer {
                        raw: server.clone(),
                        problem,
                    })
                });
                (name.clone(), entry)
            })
            .collect();
        Ok(McpServers(out))
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
        McpServers::from_value_keeping(&value).map_err(D::Error::custom)
    }
}

impl<'de> Deserialize<'de> for McpServer {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(
            McpServer::from_value("server", &value).unwrap_or_else(|problem| {
                McpServer::Unsupported(UnsupportedMcpServer {
                    raw: value,
                    problem,
                })
            }),
        )
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
            let e = McpServers::from_value(&wire).unwrap_err();
            assert!(e.contains(field), "{wire}: {e}");
            // Read from JSON (a stored record), the same entry is kept as it was, and a
            // command's check gives the same error.
            match serde_json::from_value::<McpServers>(wire.clone()) {
                Ok(kept) => {
                    assert_eq!(kept.check().unwrap_err(), e, "{wire}");
                    assert_eq!(serde_json::to_value(&kept).unwrap(), wire);
                }
                Err(whole) => assert!(whole.to_string().contains(field), "{wire}: {whole}"),
            }
        }
    }

    #[test]
    fn a_stored_sse_server_is_kept_and_never_started() {
        let stored = json!({
            "ok": {"command": "srv"},
            "legacy": {"type": "sse", "url": "http://127.0.0.1:1/sse"}
        });
        let read: McpServers = serde_json::from_value(stored.clone()).unwrap();
        assert!(matches!(read.0["ok"], McpServer::Stdio(_)));
        let McpServer::Unsupported(u) = &read.0["legacy"] else {
            panic!("{read:?}")
        };
        assert!(u.problem.contains("sse"), "{}", u.problem);
        assert!(read.check().unwrap_err().contains("mcpServers.legacy.type"));
        assert_eq!(serde_json::to_value(&read).unwrap(), stored);
    }
}
