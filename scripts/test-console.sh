#!/usr/bin/env bash
# Runs the web console's browser tests (tests/console): Debian's chromium driven by
# playwright-core (pinned in tests/console/package-lock.json; no browser is downloaded) against
# agentvm-server started by the tests on free loopback ports with the mock LLM and fresh data
# dirs. Idempotent: installs chromium (as root, through apt) and the npm packages when missing,
# builds the server (debug). The sandbox test runs on the local Docker daemon with
# agentvm-test/busybox:latest (scripts/setup-docker.sh); AGENTVM_SKIP_DOCKER=1 skips it.
# The tests rewrite the screenshots in docs/console/. Fails when a test fails or none ran.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { printf '[test-console] %s\n' "$*"; }
die() { printf '[test-console] error: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null || die "node is not installed (need >= 20)"
major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$major" -ge 20 ] || die "node $(node --version) is too old (need >= 20)"

chromium="${AGENTVM_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
    [ "$(id -u)" = 0 ] || die "$chromium is missing: apt-get install chromium (as root)"
    say "installing chromium (apt)"
    apt-get install -y chromium >/dev/null 2>&1 || { apt-get update >/dev/null && apt-get install -y chromium >/dev/null; }
fi
say "$("$chromium" --version 2>/dev/null || echo "$chromium")"

cd tests/console
if [ ! -d node_modules/playwright-core ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    say "npm ci"
    npm ci --no-audit --no-fund
fi
cd "$root"

say "cargo build -p agentvm-server"
cargo build -p agentvm-server --locked
target="${CARGO_TARGET_DIR:-$root/target}"
export AGENTVM_SERVER_BIN="$target/debug/agentvm-server"
export AGENTVM_CHROMIUM="$chromium"
[ -x "$AGENTVM_SERVER_BIN" ] || die "no server binary at $AGENTVM_SERVER_BIN"

cd tests/console
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
set +e
node --test --test-concurrency=1 --test-reporter=spec console.test.mjs 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
set -e
passed="$(sed -n 's/^ℹ pass \([0-9]*\).*/\1/p' "$log" | tail -1)"
failed="$(sed -n 's/^ℹ fail \([0-9]*\).*/\1/p' "$log" | tail -1)"
skipped="$(sed -n 's/^ℹ skipped \([0-9]*\).*/\1/p' "$log" | tail -1)"
[ "$status" -eq 0 ] || die "browser tests failed (exit $status)"
if [ -z "$passed" ] || [ "$passed" -eq 0 ]; then die "no test ran"; fi
say "console: ${passed} passed, ${failed:-0} failed, ${skipped:-0} skipped"
