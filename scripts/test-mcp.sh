#!/usr/bin/env bash
# Runs the MCP client tests (tests/mcp): agentvm-server as an MCP server, driven by the official
# SDKs' clients — Node's @modelcontextprotocol/sdk (pinned in tests/mcp/package-lock.json) and
# Python's mcp (pinned in scripts/setup-python.sh) — over /mcp and over `mcp --stdio`, with the
# mock LLM, the llama.cpp test model (AGENTVM_SKIP_LLAMACPP=1 skips it) and Docker with
# agentvm-test/busybox:latest (AGENTVM_SKIP_DOCKER=1 skips it). Idempotent: installs the npm
# packages and the venv when missing, builds the server (debug). Fails when a test fails or
# none ran.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { printf '[test-mcp] %s\n' "$*"; }
die() { printf '[test-mcp] error: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null || die "node is not installed (need >= 20)"
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge 20 ] || die "node $(node --version) is too old (need >= 20)"

# The venv with the mcp SDK (and, unless AGENTVM_SKIP_LLAMACPP=1, the llama.cpp test model).
say "python venv (scripts/setup-python.sh)"
AGENTVM_TEST_PYTHON="$(bash scripts/setup-python.sh)"
export AGENTVM_TEST_PYTHON

cd tests/mcp
if [ ! -d node_modules/@modelcontextprotocol/sdk ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    say "npm ci"
    npm ci --no-audit --no-fund
fi
cd "$root"

say "cargo build -p agentvm-server"
cargo build -p agentvm-server --locked
target="${CARGO_TARGET_DIR:-$root/target}"
export AGENTVM_SERVER_BIN="$target/debug/agentvm-server"
[ -x "$AGENTVM_SERVER_BIN" ] || die "no server binary at $AGENTVM_SERVER_BIN"

say "python: the mcp SDK's client"
"$AGENTVM_TEST_PYTHON" tests/mcp/mcp_client.py || die "the python MCP client tests failed"

say "node: the @modelcontextprotocol/sdk client"
cd tests/mcp
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
node --test --test-concurrency=1 --test-reporter=spec mcp_client.test.mjs 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
set -e
passed="$(sed -n 's/^ℹ pass \([0-9]*\).*/\1/p' "$log" | tail -1)"
skipped="$(sed -n 's/^ℹ skipped \([0-9]*\).*/\1/p' "$log" | tail -1)"
[ "$status" -eq 0 ] || die "node MCP client tests failed (exit $status)"
if [ -z "$passed" ] || [ "$passed" -eq 0 ]; then die "no node test ran"; fi
say "node: ${passed} passed, ${skipped:-0} skipped"
