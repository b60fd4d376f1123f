#!/usr/bin/env bash
# Runs every test of agentvm: formatting, lints, and the whole test suite.
# Idempotent; installs what the tests need when it is missing (CI runs it on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
cargo --version
rustc --version

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "python venv for the llama.cpp test (scripts/setup-python.sh)"
if [ "${AGENTVM_SKIP_LLAMACPP:-}" = 1 ]; then
    echo "skipped: AGENTVM_SKIP_LLAMACPP=1"
else
    AGENTVM_TEST_PYTHON="$(bash scripts/setup-python.sh)"
    export AGENTVM_TEST_PYTHON
    echo "AGENTVM_TEST_PYTHON=$AGENTVM_TEST_PYTHON"
fi

step "cargo test"
cargo test --workspace --locked

step "benches compile"
cargo bench -p agentvm-benches --no-run --locked

echo
echo "all tests passed"
