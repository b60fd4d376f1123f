#!/usr/bin/env bash
# Installs (idempotently) the Node MCP server fixture of tests/tests/e2e/mcp_servers.rs, a
# streamable HTTP server written with @modelcontextprotocol/sdk (pinned in
# tests/mcp/node-http/package-lock.json), and prints its directory. Only npm is needed.
# Use it as: export AGENTVM_TEST_MCP_NODE="$(bash scripts/setup-mcp-node.sh)"
set -euo pipefail
cd "$(dirname "$0")/../tests/mcp/node-http"
command -v node >/dev/null || { echo "setup-mcp-node: node is not installed (need >= 20)" >&2; exit 1; }
if [ ! -f node_modules/@modelcontextprotocol/sdk/package.json ]; then
    npm ci --no-audit --no-fund >&2
fi
echo "$PWD"
