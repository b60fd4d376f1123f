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

step "cargo test"
cargo test --workspace --locked

step "benches compile"
cargo bench -p agentvm-benches --no-run --locked

echo
echo "all tests passed"
