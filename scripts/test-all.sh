#!/usr/bin/env bash
# Runs every test of agentvm: formatting, lints, and the whole test suite.
# Idempotent; installs what the tests need when it is missing (CI runs it on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> [%s] %s\n' "$(date +%T)" "$*"; }

step "toolchain"
cargo --version
rustc --version
# One full run gains nothing from incremental compilation state, and it costs ~5 GB of disk in
# target/debug/incremental (CI machines have limited disk). Set CARGO_INCREMENTAL=1 to keep it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# The sandbox scheduler's tests run on real Docker: install and start it, and build the offline
# test image (no registry is reachable). They fail loudly without it unless AGENTVM_SKIP_DOCKER=1.
if [ "${AGENTVM_SKIP_DOCKER:-}" = 1 ]; then
    step "docker: skipped (AGENTVM_SKIP_DOCKER=1)"
elif [ "$(id -u)" = 0 ]; then
    step "docker (scripts/setup-docker.sh)"
    bash scripts/setup-docker.sh
else
    step "docker"
    echo "not root: expecting dockerd and agentvm-test/busybox:latest (run scripts/setup-docker.sh as root)"
fi

# The PostgreSQL store's tests run on a real server: install Debian's postgresql and start a
# test cluster on 127.0.0.1 (scripts/setup-postgres.sh prints its URL). They fail loudly
# without it unless AGENTVM_SKIP_POSTGRES=1; an AGENTVM_TEST_POSTGRES already set is used as is.
if [ "${AGENTVM_SKIP_POSTGRES:-}" = 1 ]; then
    step "postgres: skipped (AGENTVM_SKIP_POSTGRES=1)"
elif [ -n "${AGENTVM_TEST_POSTGRES:-}" ]; then
    step "postgres: AGENTVM_TEST_POSTGRES=$AGENTVM_TEST_POSTGRES"
else
    step "postgres (scripts/setup-postgres.sh)"
    AGENTVM_TEST_POSTGRES="$(bash scripts/setup-postgres.sh)"
    export AGENTVM_TEST_POSTGRES
    echo "AGENTVM_TEST_POSTGRES=$AGENTVM_TEST_POSTGRES"
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "layering: the model does no I/O, the scheduler knows no agents"
forbidden="$(cargo tree -p agentvm-model -e normal --prefix none --locked | grep -E '^(tokio|redb|bollard|axum|hyper|reqwest) ' || true)"
if [ -n "$forbidden" ]; then
    echo "agentvm-model must not depend on: $forbidden" >&2
    exit 1
fi
if cargo tree -p agentvm-scheduler -e normal --prefix none --locked | grep -qE '^agentvm v'; then
    echo "agentvm-scheduler must not depend on the agentvm runtime" >&2
    exit 1
fi
echo "ok: agentvm-model has no tokio/redb/bollard/axum; agentvm-scheduler has no agentvm"

step "one build for all: the bindings' builds reuse the workspace's (scripts/check-feature-pins.sh)"
bash scripts/check-feature-pins.sh

# --all-targets type-checks the benches too; building them (a release build) is left to
# `cargo bench`, which is not part of this command.
step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

# The sandbox exec agent is not a crate (core/scheduler/build.rs compiles it with rustc
# alone), so `cargo clippy` never sees it: lint it with the same driver and flags.
step "clippy -D warnings on the sandbox exec agent"
agent_lint="$(mktemp -d)"
clippy-driver --edition 2021 --crate-type bin --crate-name agentvm_exec_agent -D warnings \
  --emit=metadata -o "$agent_lint/agent.rmeta" core/scheduler/agent/main.rs
rm -rf "$agent_lint"

step "python venv for the llama.cpp and MCP tests (scripts/setup-python.sh)"
# With AGENTVM_SKIP_LLAMACPP=1 it installs only the MCP SDK.
AGENTVM_TEST_PYTHON="$(bash scripts/setup-python.sh)"
export AGENTVM_TEST_PYTHON
echo "AGENTVM_TEST_PYTHON=$AGENTVM_TEST_PYTHON"

step "Node MCP server fixture for the MCP tests (scripts/setup-mcp-node.sh)"
AGENTVM_TEST_MCP_NODE="$(bash scripts/setup-mcp-node.sh)"
export AGENTVM_TEST_MCP_NODE
echo "AGENTVM_TEST_MCP_NODE=$AGENTVM_TEST_MCP_NODE"

step "cargo test"
# The C flow (bindings/c/tests) runs here too, under valgrind as well when it is installed:
# install it first (as root), so scripts/test-bindings.sh below finds the tests already built.
if ! command -v valgrind >/dev/null && [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valgrind \
        || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends valgrind; }
fi
if command -v valgrind >/dev/null; then export AGENTVM_REQUIRE_VALGRIND=1; fi
# agentvm-schema is left out, and tested by scripts/test-bindings.sh: its jsonschema would turn on
# features in shared dependencies that the bindings' own builds lack, and cargo would then
# compile the whole tree once more for each binding (scripts/check-feature-pins.sh).
cargo test --workspace --locked --exclude agentvm-schema

step "C and Go bindings: header drift, C flow + valgrind, go test (scripts/test-bindings.sh)"
bash scripts/test-bindings.sh

step "uniffi bindings: generate Kotlin/Swift/Python/Ruby, Ruby and Python flows (scripts/test-uniffi.sh)"
bash scripts/test-uniffi.sh

step "node package (scripts/test-node.sh)"
bash scripts/test-node.sh

step "web console in a real browser (scripts/test-console.sh)"
bash scripts/test-console.sh

step "MCP server through the official SDKs' clients (scripts/test-mcp.sh)"
bash scripts/test-mcp.sh

step "python package (scripts/test-python.sh)"
bash scripts/test-python.sh

step "release artifacts: binary, wheel, npm tarball, image (scripts/test-dist.sh)"
bash scripts/test-dist.sh

step "README snippets, run as written on the built wheel and tarball (scripts/readme_snippets.py)"
python3 scripts/readme_snippets.py

echo
echo "all tests passed"
