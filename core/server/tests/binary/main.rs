//! Tests of the `agentvm-server` binary, run as a child process: its command line, signals,
//! the MCP stdio mode, tracing export, and (on a real PostgreSQL) the store, cluster and
//! failover. One test binary with a module per area, so the server's dependencies link once.
#![allow(clippy::unwrap_used)]

mod common;

mod cluster_bin;
mod failover_bin;
mod mcp_bin;
mod postgres_bin;
mod server_bin;
mod tracing_bin;
