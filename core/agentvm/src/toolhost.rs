//! Tool hosts: where an agent's built-in tools run — this machine ([`local`]) or a sandbox of
//! the scheduler ([`sandboxed`]).
//!
//! A [`ToolHost`] is deliberately small — run a command with a timeout, read, write and list
//! files — so that each backend only implements those four. Everything else about the tools (their names, JSON schemas,
//! input checks, output formatting, which are enabled) lives once, in [`BuiltinTools`], the
//! [`ToolRunner`](crate::runtime::ToolRunner) that turns a model's tool call into sandbox
//! operations.
//!
//! Every operation names a [`Workspace`]: the container (tenant) and the image whose working
//! directory the tool sees. Paths are relative to that directory; a backend refuses any path
//! that leaves it.
//!
//! Tools are off unless an image enables them: `Definition.tools` / `ImageConfig.tools` list
//! the names (`bash`, `read_file`, `write_file`, `list_files`), and only those are offered to
//! the model and run.

pub mod local;
pub mod sandboxed;
mod tools;

pub use local::LocalToolHost;
pub use tools::{BuiltinTools, BUILTIN_TOOLS};

mod stdio;

use crate::error::{Error, Result};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Whose working directory an operation runs in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Workspace {
    /// The container (tenant).
    pub container_id: String,
    /// The image; each image of a container has its own working directory.
    pub image_id: String,
}

/// A command to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCommand {
    /// A `bash -c` script.
    pub command: String,
    /// When to kill it (and every process it started).
    pub timeout: Duration,
    /// Output kept per stream; the rest is read and dropped.
    pub max_output_bytes: usize,
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ToolCommandOutput {
    /// Standard output (lossy UTF-8), at most the requested bytes.
    pub stdout: String,
    /// Standard error (lossy UTF-8), at most the requested bytes.
    pub stderr: String,
    /// The exit code; `None` when it was killed by a signal (a timeout included).
    pub exit_code: Option<i32>,
    /// It ran out of time and was killed.
    pub timed_out: bool,
    /// Some output was dropped.
    pub truncated: bool,
}

/// The start of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolFileContent {
    /// At most the requested bytes.
    pub data: Vec<u8>,
    /// The whole file's size.
    pub size: u64,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolFileEntry {
    /// The path relative to the working directory, `/`-separated.
    pub path: String,
    /// A directory.
    pub is_dir: bool,
    /// Size in bytes (0 for directories).
    pub size: u64,
}

/// A long-lived process talking over its stdin and stdout: a stdio MCP server.
pub struct StdioProcess {
    /// Its standard output.
    pub stdout: Box<dyn AsyncRead + Send + Unpin>,
    /// Its standard input.
    pub stdin: Box<dyn AsyncWrite + Send + Unpin>,
    /// The last bytes of its standard error, for error messages.
    pub stderr: Arc<Mutex<String>>,
    /// Where it runs, for messages (`sandbox sbx_…`, `this host`).
    pub place: String,
    /// Kills it and what it started; dropping it kills it too (in the background).
    pub guard: Box<dyn StdioGuard>,
}

impl std::fmt::Debug for StdioProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioProcess")
            .field("place", &self.place)
            .finish_non_exhaustive()
    }
}

impl StdioProcess {
    /// The end of what it wrote to standard error, trimmed.
    pub fn stderr_tail(&self) -> String {
        self.stderr
            .lock()
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }
}

/// Ends a [`StdioProcess`].
#[async_trait]
pub trait StdioGuard: Send + 'static {
    /// Kills the process and every process it started, and waits for that.
    async fn kill(self: Box<Self>);
}

/// The command of a [`StdioProcess`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StdioCommand {
    /// The program.
    pub command: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
}

/// Where tools run. Implementations confine every operation to the workspace's directory and
/// refuse paths that leave it with `InvalidInput`.
#[async_trait]
pub trait ToolHost: Send + Sync + 'static {
    /// A short name for logs (`local`, `docker`).
    fn name(&self) -> &str;

    /// Runs a command in the working directory. Dropping the future kills it.
    async fn exec(&self, ws: &Workspace, request: ToolCommand) -> Result<ToolCommandOutput>;

    /// Reads up to `max_bytes` of a file.
    async fn read_file(
        &self,
        ws: &Workspace,
        path: &str,
        max_bytes: usize,
    ) -> Result<ToolFileContent>;

    /// Writes a file, creating its parent directories, replacing what was there.
    async fn write_file(&self, ws: &Workspace, path: &str, data: &[u8]) -> Result<()>;

    /// Lists a directory (sorted by path), recursively or not, at most `max_entries`
    /// entries.
    async fn list_files(
        &self,
        ws: &Workspace,
        path: &str,
        recursive: bool,
        max_entries: usize,
    ) -> Result<Vec<ToolFileEntry>>;

    /// Starts a long-lived process in the working directory with stdin and stdout attached
    /// (a stdio MCP server), as the user the tools run as. Hosts that cannot refuse.
    async fn spawn_stdio(&self, ws: &Workspace, command: &StdioCommand) -> Result<StdioProcess> {
        let _ = (ws, command);
        Err(Error::unavailable(format!(
            "the {} tool host cannot run stdio MCP servers",
            self.name()
        )))
    }
}

/// Limits of the built-in tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolLimits {
    /// The longest a `bash` command may run.
    pub exec_timeout: Duration,
    /// Output of a command kept per stream, and of `read_file`, in bytes.
    pub max_output_bytes: usize,
    /// The largest file `write_file` writes, in bytes.
    pub max_write_bytes: usize,
    /// Entries `list_files` returns.
    pub max_list_entries: usize,
}

impl Default for ToolLimits {
    fn default() -> Self {
        ToolLimits {
            exec_timeout: Duration::from_secs(120),
            max_output_bytes: 64 * 1024,
            max_write_bytes: 4 * 1024 * 1024,
            max_list_entries: 1000,
        }
    }
}
