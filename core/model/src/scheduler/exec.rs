//! Executions as clients see them: what to run, its status, and the finished record.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecRequest {
    /// The argv to run (no shell unless you name one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Source code to run with `language`, instead of a command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// `sh`, `bash`, `python` or `node`, for `code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Extra environment of this exec.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Working directory; the sandbox's when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Kill the process group after this many ms; the scheduler's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Bytes kept per stream; at most the scheduler's cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<usize>,
    /// The id to give the execution (`exec_…`, unused); one is made when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
}

impl ExecRequest {
    /// Runs `script` with `/bin/sh -c`.
    pub fn shell(script: impl Into<String>) -> Self {
        ExecRequest {
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            ..Default::default()
        }
    }

    /// Runs an argv.
    pub fn command<I: IntoIterator<Item = S>, S: Into<String>>(argv: I) -> Self {
        ExecRequest {
            command: argv.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout_ms = Some(timeout.as_millis().min(u128::from(u64::MAX)) as u64);
        self
    }

    /// The argv to run and the language, refusing ambiguous or unsupported requests.
    pub fn argv(&self) -> Result<Vec<String>> {
        match (&self.code, self.command.is_empty()) {
            (Some(_), false) => Err(Error::invalid("give either command or code, not both")),
            (None, true) => Err(Error::invalid("command must not be empty")),
            (None, false) => Ok(self.command.clone()),
            (Some(code), true) => {
                let lang = self.language.as_deref().unwrap_or("sh");
                let (bin, flag) = match lang {
                    "sh" | "shell" => ("/bin/sh", "-c"),
                    "bash" => ("bash", "-c"),
                    "python" | "python3" => ("python3", "-c"),
                    "node" | "javascript" | "js" => ("node", "-e"),
                    other => {
                        return Err(Error::invalid(format!(
                            "language {other:?} is not supported: use sh, bash, python or node"
                        )))
                    }
                };
                Ok(vec![bin.into(), flag.into(), code.clone()])
            }
        }
    }
}

/// Where an execution is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ExecStatus {
    /// Accepted, not started.
    Pending,
    /// Running.
    Running,
    /// Exited 0.
    Completed,
    /// Exited non-zero.
    Failed,
    /// Killed by its timeout.
    Timeout,
    /// Killed by a cancel request.
    Cancelled,
    /// Lost: the stream broke or Docker reported no exit code.
    Crashed,
}

/// One execution, as stored and as the last line of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Execution {
    /// `exec_…`.
    pub id: String,
    /// The sandbox it ran in.
    pub sandbox_id: String,
    /// The argv run.
    pub command: Vec<String>,
    /// The language of `code`, when code was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Where it is.
    pub status: ExecStatus,
    /// Standard output, up to the cap.
    pub stdout: String,
    /// Standard error, up to the cap.
    pub stderr: String,
    /// Output beyond the cap was dropped.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// The exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// What went wrong, for timeouts and crashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was accepted, ms.
    pub created_at: i64,
    /// When it finished, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<i64>,
    /// How long it ran, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum OutputStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One item of an exec stream: output as it comes, then the finished execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum ExecEvent {
    /// A chunk of output (whole UTF-8 characters; invalid bytes become U+FFFD).
    Output {
        /// Which stream.
        stream: OutputStream,
        /// The text.
        data: String,
    },
    /// The end: status, exit code and the (capped) full output.
    Finished(Box<Execution>),
}
