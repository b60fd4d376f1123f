//! The exec agent's frame kinds and limits, shared by the agent (`main.rs`) and the engine's
//! side of it (`src/engine/docker/agent.rs`), which both include this file.

/// agent → host, once at start (id 0): [`PROTOCOL`].
pub(crate) const HELLO: u8 = 0;
/// host → agent: run a command as exec `id`.
pub(crate) const SPAWN: u8 = 1;
/// agent → host: stdout of exec `id`.
pub(crate) const STDOUT: u8 = 1;
/// agent → host: stderr of exec `id`.
pub(crate) const STDERR: u8 = 2;
/// agent → host: exec `id` ended; its exit code as an `i32`.
pub(crate) const EXIT: u8 = 3;
/// What `HELLO` carries: the host checks it before sending anything.
pub(crate) const PROTOCOL: &[u8] = b"agentvm-exec-agent/1";
/// The largest request the host may send (argv and env of one command).
pub(crate) const MAX_REQUEST: usize = 1 << 20;
