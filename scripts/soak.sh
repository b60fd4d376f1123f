#!/usr/bin/env bash
# The soak/abuse run (not part of the test command): builds a release agentvm-server, starts it
# on a fresh data dir with the mock LLM and auth required, and runs every abuse the hardening
# work closed against it at once for SECONDS (default 300), while a probe client measures
# latency and a writer and a subscriber check that nothing acknowledged is lost. Prints the
# server's RSS, the probe's p99 and what was lost; exits 1 when a bound is broken.
#
#   bash scripts/soak.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-300}"
cargo build --release --locked -p agentvm-server -p agentvm-e2e --bin agentvm-server --bin agentvm-soak
target="${CARGO_TARGET_DIR:-target}/release"
data="$(mktemp -d)"
log="$data/server.log"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
token="$("$target/agentvm-server" token create --all --data-dir "$data" 2>/dev/null | grep -o 'avm_[A-Za-z0-9_-]*' | head -1)"
if [ -z "$token" ]; then
    echo "could not create an operator token" >&2
    exit 1
fi
LLM_PROVIDER=mock "$target/agentvm-server" serve --host 127.0.0.1 --port "$port" \
    --data-dir "$data" --require-auth >"$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/health" >/dev/null 2>&1 && break
    sleep 0.1
done
ulimit -n 8192 || true
"$target/agentvm-soak" --addr "127.0.0.1:$port" --pid "$pid" --token "$token" --seconds "$seconds"
echo "server log: $(grep -c WARN "$log" || true) WARN lines, $(grep -c ERROR "$log" || true) ERROR lines"
