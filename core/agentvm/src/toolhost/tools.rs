//! The built-in tools — `bash`, `read_file`, `write_file`, `list_files` — as a [`ToolRunner`]
//! over any [`ToolHost`]: names, JSON schemas, input checks and the text the model reads back.

use super::{ToolCommand, ToolCommandOutput, ToolHost, ToolLimits, Workspace};
use crate::llm::ToolSpec;
use crate::model::ToolCall;
use crate::runtime::{ToolContext, ToolOutcome, ToolRunner};
use async_trait::async_trait;
use serde_json::{json, Value};
use std::sync::Arc;

/// The names of the built-in tools, in the order they are offered.
pub const BUILTIN_TOOLS: [&str; 4] = ["bash", "read_file", "write_file", "list_files"];

/// Runs the built-in tools in a sandbox, for images that enable them.
#[derive(Clone)]
pub struct BuiltinTools {
    sandbox: Arc<dyn ToolHost>,
    limits: ToolLimits,
}

impl std::fmt::Debug for BuiltinTools {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinTools")
            .field("sandbox", &self.sandbox.name())
            .field("limits", &self.limits)
            .finish()
    }
}

impl BuiltinTools {
    /// The built-in tools over `sandbox`, within `limits`.
    pub fn new(sandbox: Arc<dyn ToolHost>, limits: ToolLimits) -> Self {
        BuiltinTools { sandbox, limits }
    }

    /// The spec of a built-in tool.
    pub fn spec(&self, name: &str) -> Option<ToolSpec> {
        let secs = self.limits.exec_timeout.as_secs();
        let (description, schema) = match name {
            "bash" => (
                format!(
                    "Run a bash command in the workspace directory and return its output \
                     (stdout, then stderr, then the exit code when it is not 0). Commands are \
                     killed after {secs} s, along with every process they started."
                ),
                json!({"type": "object", "properties": {
                    "command": {"type": "string", "description": "The bash script to run."}
                }, "required": ["command"]}),
            ),
            "read_file" => (
                "Read a text file of the workspace.".to_string(),
                json!({"type": "object", "properties": {
                    "path": {"type": "string", "description": "Path relative to the workspace."}
                }, "required": ["path"]}),
            ),
            "write_file" => (
                "Write a text file in the workspace, creating parent directories and replacing \
                 what was there."
                    .to_string(),
                json!({"type": "object", "properties": {
                    "path": {"type": "string", "description": "Path relative to the workspace."},
                    "content": {"type": "string", "description": "The whole new content."}
                }, "required": ["path", "content"]}),
            ),
            "list_files" => (
                "List the files of a workspace directory; directories end with '/'.".to_string(),
                json!({"type": "object", "properties": {
                    "path": {"type": "string", "description": "Directory relative to the workspace; default '.'."},
                    "recursive": {"type": "boolean", "description": "Include subdirectories; default false."}
                }}),
            ),
            _ => return None,
        };
        Some(ToolSpec {
            name: name.to_string(),
            description,
            input_schema: schema,
        })
    }

    async fn dispatch(&self, ws: &Workspace, call: &ToolCall) -> Result<String, String> {
        let input = match &call.input {
            Value::Object(map) => map,
            other => return Err(format!("the input must be a JSON object, got: {other}")),
        };
        let text = |key: &str| -> Result<&str, String> {
            input
                .get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("'{key}' (a string) is required"))
        };
        let l = &self.limits;
        match call.name.as_str() {
            "bash" => {
                let request = ToolCommand {
                    command: text("command")?.to_string(),
                    timeout: l.exec_timeout,
                    max_output_bytes: l.max_output_bytes,
                };
                let out = self
                    .sandbox
                    .exec(ws, request)
                    .await
                    .map_err(|e| e.to_string())?;
                exec_report(&out, l)
            }
            "read_file" => {
                let path = text("path")?;
                let file = self
                    .sandbox
                    .read_file(ws, path, l.max_output_bytes)
                    .await
                    .map_err(|e| e.to_string())?;
                let mut s = String::from_utf8_lossy(&file.data).into_owned();
                if file.size > file.data.len() as u64 {
                    s.push_str(&format!(
                        "\n[truncated: the file has {} bytes; showed the first {}]",
                        file.size,
                        file.data.len()
                    ));
                }
                Ok(s)
            }
            "write_file" => {
                let path = text("path")?;
                let content = text("content")?;
                if content.len() > l.max_write_bytes {
                    return Err(format!(
                        "the content is {} bytes; the limit is {}",
                        content.len(),
                        l.max_write_bytes
                    ));
                }
                self.sandbox
                    .write_file(ws, path, content.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(format!("wrote {} bytes to {path}", content.len()))
            }
            "list_files" => {
                let path = input.get("path").and_then(Value::as_str).unwrap_or(".");
                let recursive = input
                    .get("recursive")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                let entries = self
                    .sandbox
                    .list_files(ws, path, recursive, l.max_list_entries)
                    .await
                    .map_err(|e| e.to_string())?;
                if entries.is_empty() {
                    return Ok("(empty directory)".into());
                }
                let mut lines: Vec<String> = entries
                    .iter()
                    .map(|e| {
                        if e.is_dir {
                            format!("{}/", e.path)
                        } else {
                            e.path.clone()
                        }
                    })
                    .collect();
                if entries.len() >= l.max_list_entries {
                    lines.push(format!("[stopped at {} entries]", l.max_list_entries));
                }
                Ok(lines.join("\n"))
            }
            other => Err(format!("'{other}' is not a built-in tool")),
        }
    }
}

/// The text the model reads for a command: its output, then what went wrong. An error when
/// it failed or timed out.
fn exec_report(out: &ToolCommandOutput, limits: &ToolLimits) -> Result<String, String> {
    let mut s = out.stdout.clone();
    if !out.stderr.is_empty() {
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str("[stderr]\n");
        s.push_str(&out.stderr);
    }
    let mut notes = Vec::new();
    if out.truncated {
        notes.push(format!(
            "[output truncated to {} bytes per stream]",
            limits.max_output_bytes
        ));
    }
    let failed = if out.timed_out {
        notes.push(format!(
            "[timed out after {} s; the command and its processes were killed]",
            limits.exec_timeout.as_secs_f64()
        ));
        true
    } else {
        match out.exit_code {
            Some(0) => false,
            Some(code) => {
                notes.push(format!("[exit code {code}]"));
                true
            }
            None => {
                notes.push("[killed by a signal]".into());
                true
            }
        }
    };
    for n in notes {
        if !s.is_empty() && !s.ends_with('\n') {
            s.push('\n');
        }
        s.push_str(&n);
    }
    if s.is_empty() {
        s = "(no output)".into();
    }
    if failed {
        Err(s)
    } else {
        Ok(s)
    }
}

#[async_trait]
impl ToolRunner for BuiltinTools {
    async fn spawn_stdio(
        &self,
        ctx: &ToolContext,
        command: &super::StdioCommand,
    ) -> crate::error::Result<super::StdioProcess> {
        let ws = Workspace {
            container_id: ctx.container_id.clone(),
            image_id: ctx.image_id.clone(),
        };
        self.sandbox.spawn_stdio(&ws, command).await
    }

    fn specs(&self, enabled: &[String]) -> Vec<ToolSpec> {
        BUILTIN_TOOLS
            .iter()
            .filter(|name| enabled.iter().any(|e| e == *name))
            .filter_map(|name| self.spec(name))
            .collect()
    }

    async fn run(&self, ctx: &ToolContext, call: &ToolCall) -> ToolOutcome {
        if !ctx.enabled.contains(&call.name) || !BUILTIN_TOOLS.contains(&call.name.as_str()) {
            return ToolOutcome {
                output: format!("tool '{}' is not available to this agent", call.name),
                is_error: true,
            };
        }
        let ws = Workspace {
            container_id: ctx.container_id.clone(),
            image_id: ctx.image_id.clone(),
        };
        match self.dispatch(&ws, call).await {
            Ok(output) => ToolOutcome {
                output,
                is_error: false,
            },
            Err(output) => ToolOutcome {
                output,
                is_error: true,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn exec_reports() {
        let l = ToolLimits::default();
        let ok = ToolCommandOutput {
            stdout: "hi\n".into(),
            exit_code: Some(0),
            ..Default::default()
        };
        assert_eq!(exec_report(&ok, &l), Ok("hi\n".into()));
        let empty = ToolCommandOutput {
            exit_code: Some(0),
            ..Default::default()
        };
        assert_eq!(exec_report(&empty, &l), Ok("(no output)".into()));
        let failed = ToolCommandOutput {
            stdout: "a".into(),
            stderr: "bad\n".into(),
            exit_code: Some(2),
            ..Default::default()
        };
        assert_eq!(
            exec_report(&failed, &l),
            Err("a\n[stderr]\nbad\n[exit code 2]".into())
        );
        let l = ToolLimits {
            exec_timeout: Duration::from_millis(1500),
            ..l
        };
        let slow = ToolCommandOutput {
            timed_out: true,
            truncated: true,
            ..Default::default()
        };
        let Err(s) = exec_report(&slow, &l) else {
            panic!()
        };
        assert!(
            s.contains("truncated") && s.contains("timed out after 1.5 s"),
            "{s}"
        );
    }

    #[test]
    fn specs_follow_what_is_enabled() {
        let tools = BuiltinTools::new(
            Arc::new(super::super::LocalToolHost::new("/nonexistent")),
            ToolLimits::default(),
        );
        assert!(tools.specs(&[]).is_empty());
        let names: Vec<_> = tools
            .specs(&["list_files".into(), "bash".into(), "mcp_thing".into()])
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(names, ["bash", "list_files"]);
        for name in BUILTIN_TOOLS {
            assert_eq!(tools.spec(name).unwrap().input_schema["type"], "object");
        }
    }
}
