//! agentvm's end-to-end tests, one module per area, linked into one test binary.
//!
//! One binary instead of one per file: each of these links the whole runtime, the server and
//! the scheduler (~120 MB of test executable apiece), so forty binaries cost minutes of linking
//! and gigabytes of disk for nothing. Tests still run in parallel threads, as they did inside
//! each file: every test makes its own data dir, server, port, Docker instance label and
//! network, and none changes process-wide state (environment, limits, working directory).
//! Tests that do measure this process (its resident memory) live in their own binary beside
//! this one (`tests/server_budgets.rs`).
//!
//! Run one area with a filter: `cargo test -p agentvm-e2e --test e2e scheduler_pool::`.

mod bad_input;
mod commands;
mod concurrency;
mod crash;
mod events;
mod failover;
mod history;
mod isolation;
mod llm_agent_loop;
mod llm_anthropic;
mod llm_llamacpp;
mod llm_openai;
mod llm_retries;
mod local_tools_policy;
mod mcp_servers;
mod persistence;
mod remote;
mod rest_table;
mod sandbox_commands;
mod scheduler_agent_tools;
mod scheduler_bad_input;
mod scheduler_egress;
mod scheduler_exec_agent;
mod scheduler_http;
mod scheduler_lifecycle;
mod scheduler_nodes;
mod scheduler_pool;
mod scheduler_ports;
mod scheduler_reconcile;
mod scheduler_sandbox;
mod scheduler_server;
mod scheduler_terminal;
mod scheduler_tool_confinement;
mod scheduler_webhooks;
mod server_acking_client;
mod server_agentx_wire;
mod server_auth;
mod server_limits;
mod server_metrics;
mod server_rest_errors;
mod server_ws;
mod server_ws_protocol;
mod storage_full;
