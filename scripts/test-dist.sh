#!/usr/bin/env bash
# Builds the release artifacts (scripts/dist.sh) and checks each one where a user would use it:
#
#   1. dist/agentvm-server: needs no glibc symbol newer than 2.17 (objdump -T), runs --version,
#      and serves /health with the mock LLM;
#   2. the wheel: installed alone into a fresh venv, outside the source tree, runs a chat with
#      the mock LLM, and its native module needs no glibc newer than 2.17 either;
#   3. the npm tarball: `npm install ./agentvm-*.tgz` into an empty project, then an ES module
#      opens a runtime and chats with the mock LLM;
#   4. the container image: `docker run` with a volume answers /health and /livez, its process
#      is not uid 0, and its store is in the volume (skipped with AGENTVM_SKIP_DOCKER=1).
#
# The README snippets (scripts/readme_snippets.py) then run against the same wheel and tarball.
# Ends with a `N passed, 0 failed` line; exits 1 at the first failed check.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
started=$(date +%s)

MAX_GLIBC="2.17"
passed=0
step() { printf '\n==> [%s] test-dist: %s\n' "$(date +%T)" "$*"; }
ok() { passed=$((passed + 1)); printf 'ok: %s\n' "$*"; }
fail() { printf 'test-dist: FAILED: %s\n' "$*" >&2; exit 1; }

work="$(mktemp -d /tmp/agentvm-test-dist.XXXXXX)"
container=""
volume=""
network=""
cleanup() {
    [ -z "$container" ] || docker rm -f "$container" >/dev/null 2>&1 || true
    [ -z "$volume" ] || docker volume rm -f "$volume" >/dev/null 2>&1 || true
    [ -z "$network" ] || docker network rm "$network" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

no_image=0
if [ "${AGENTVM_SKIP_DOCKER:-}" = 1 ]; then no_image=1; fi
AGENTVM_DIST_NO_IMAGE="$no_image" bash scripts/dist.sh
build_s=$(( $(date +%s) - started ))

version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
server="$root/dist/agentvm-server"
wheel="$(ls "$root"/dist/agentvm_runtime-*.whl)"
tarball="$(ls "$root"/dist/agentvm-[0-9]*.tgz)"

# The newest GLIBC_x.y symbol version an ELF file needs.
max_glibc() {
    objdump -T "$1" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -n 1
}
# Fails unless $1's newest glibc symbol is at most MAX_GLIBC.
check_glibc() {
    local found
    found="$(max_glibc "$1")"
    [ -n "$found" ] || fail "$1 names no GLIBC symbol version (is it a dynamic glibc binary?)"
    if [ "$(printf '%s\n%s\n' "$found" "$MAX_GLIBC" | sort -V | tail -n 1)" != "$MAX_GLIBC" ]; then
        fail "$1 needs GLIBC_$found, newer than $MAX_GLIBC"
    fi
    ok "$(basename "$1") needs glibc $found (at most $MAX_GLIBC)"
}

# Waits until $1 answers 200; prints the body.
wait_http() {
    local url="$1" body
    for _ in $(seq 1 100); do
        if body="$(curl -fsS --max-time 2 "$url" 2>/dev/null)"; then
            printf '%s' "$body"
            return 0
        fi
        sleep 0.2
    done
    return 1
}

step "server binary"
check_glibc "$server"
readelf -l "$server" | grep -q 'Requesting program interpreter: /lib64/ld-linux-x86-64.so.2' \
    || fail "agentvm-server's loader is not /lib64/ld-linux-x86-64.so.2"
got="$("$server" --version)"
[ "$got" = "agentvm-server $version" ] || fail "--version printed '$got', expected 'agentvm-server $version'"
ok "agentvm-server --version: $got"
port_file="$work/server.out"
LLM_PROVIDER=mock "$server" serve --port 0 --data-dir "$work/server-data" >"$port_file" 2>&1 &
server_pid=$!
url=""
for _ in $(seq 1 100); do
    url="$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$port_file" | head -n 1 || true)"
    [ -n "$url" ] && break
    sleep 0.2
done
[ -n "$url" ] || { cat "$port_file" >&2; kill "$server_pid"; fail "agentvm-server did not say where it listens"; }
health="$(wait_http "$url/health")" || { kill "$server_pid"; fail "$url/health did not answer"; }
kill -TERM "$server_pid"
wait "$server_pid" || fail "agentvm-server did not exit 0 on SIGTERM"
echo "$health" | grep -q "\"$version\"" || fail "/health did not name version $version: $health"
ok "agentvm-server serve: /health $health, exit 0 on SIGTERM"

step "Python wheel in a fresh venv ($(basename "$wheel"))"
check_glibc_wheel() {
    mkdir -p "$work/wheel"
    (cd "$work/wheel" && python3 -m zipfile -e "$wheel" .)
    local so
    so="$(ls "$work"/wheel/agentvm/_native*.so)"
    check_glibc "$so"
}
check_glibc_wheel
python3 -m zipfile -l "$wheel" | grep -q 'agentvm_runtime-.*dist-info/METADATA' || fail "no agentvm_runtime metadata in $wheel"
case "$(basename "$wheel")" in
    *-cp310-abi3-*manylinux_2_17_x86_64*) ok "wheel tags: abi3 (CPython >= 3.10), manylinux_2_17" ;;
    *) fail "unexpected wheel tags: $(basename "$wheel")" ;;
esac
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --disable-pip-version-check --quiet --no-index "$wheel"
cat >"$work/quickstart.py" <<'PY'
import asyncio, sys, agentvm

async def main():
    vm = await agentvm.open("./data", llm="mock")
    image = await vm.images.create("user-alice", system_prompt="You are a helpful assistant.")
    reply = await vm.agents.ask("Hello!", image_id=image["imageId"])
    await vm.close()
    assert reply, "empty reply"
    assert "site-packages" in agentvm.__file__, agentvm.__file__
    print(f"agentvm {agentvm.__version__} from {agentvm.__file__}: {reply!r}")

asyncio.run(main())
PY
(cd "$work" && "$work/venv/bin/python" quickstart.py) || fail "the Python quick start failed on the installed wheel"
[ -f "$work/data/agentvm.redb" ] || fail "the Python quick start left no $work/data/agentvm.redb"
ok "pip install $(basename "$wheel") into a fresh venv; a mock chat ran and was stored"

step "npm tarball in an empty project ($(basename "$tarball"))"
mkdir -p "$work/npm"
printf '{"name": "agentvm-dist-check", "private": true, "type": "module"}\n' >"$work/npm/package.json"
(cd "$work/npm" && npm install --no-audit --no-fund --silent "$tarball") || fail "npm install $tarball"
[ -f "$work/npm/node_modules/agentvm/agentvm.node" ] || fail "the tarball has no agentvm.node"
check_glibc "$work/npm/node_modules/agentvm/agentvm.node"
cat >"$work/npm/check.mjs" <<'JS'
import { open } from 'agentvm'

const vm = await open({ dataDir: './data', llm: 'mock' })
const image = await vm.images.create('user-alice', { name: 'Helper' })
const { message } = await vm.agents.ask({ imageId: image.imageId, content: 'Hello!' })
const images = await vm.images.list('user-alice')
await vm.close()
if (!message || images.length !== 1) throw new Error(`unexpected: ${JSON.stringify({ message, images })}`)
console.log('agentvm from npm:', JSON.stringify(message).slice(0, 120))
JS
(cd "$work/npm" && node check.mjs) || fail "the ES module over the installed tarball failed"
ok "npm install $(basename "$tarball") into an empty project; an ES module chatted with the mock LLM"

step "container image"
if [ "$no_image" = 1 ]; then
    echo "skipped: AGENTVM_SKIP_DOCKER=1"
else
    image="agentvm-server:$version"
    user="$(docker image inspect -f '{{.Config.User}}' "$image")"
    case "$user" in ""|0|0:*|root|root:*) fail "$image runs as '$user'" ;; esac
    volume="agentvm-dist-test-$$"
    docker volume create "$volume" >/dev/null
    # A network of its own (no published port, no dependence on the default bridge): the
    # server is reached at its address on that network, from this host.
    network="agentvm-dist-test-$$"
    docker network create "$network" >/dev/null
    container="$(docker run -d --network "$network" -v "$volume:/data" -e LLM_PROVIDER=mock "$image")"
    address="$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$container")"
    [ -n "$address" ] || { docker logs "$container" >&2; fail "the container has no address on $network"; }
    base="http://$address:8080"
    health="$(wait_http "$base/health")" || { docker logs "$container" >&2; fail "$base/health did not answer"; }
    livez="$(wait_http "$base/livez")" || fail "$base/livez did not answer"
    ok "docker run $image: /health $health, /livez $livez"
    pid="$(docker inspect -f '{{.State.Pid}}' "$container")"
    uid="$(awk '/^Uid:/ { print $2 }' "/proc/$pid/status")"
    if [ -z "$uid" ] || [ "$uid" = 0 ]; then fail "the container's process runs as uid '$uid'"; fi
    ok "the container's agentvm-server runs as uid $uid (image user $user)"
    # With auth on (0.0.0.0) the first start printed a token for all containers: use it.
    token="$(docker logs "$container" 2>/dev/null | sed -n 's/.*bootstrap token (all containers, shown once): \(.*\)$/\1/p' | head -n 1)"
    [ -n "$token" ] || { docker logs "$container" >&2; fail "the container printed no bootstrap token"; }
    code="$(curl -s -o /dev/null -w '%{http_code}' "$base/v1/containers")"
    [ "$code" = 401 ] || fail "GET /v1/containers without a token answered $code, not 401"
    curl -fsS -X POST -H "Authorization: Bearer $token" -H 'content-type: application/json' \
        -d '{"containerId": "user-alice"}' "$base/v1/containers" >/dev/null \
        || fail "POST /v1/containers with the bootstrap token failed"
    docker stop -t 20 "$container" >/dev/null
    status="$(docker inspect -f '{{.State.ExitCode}}' "$container")"
    [ "$status" = 0 ] || { docker logs "$container" >&2; fail "the container exited $status on docker stop"; }
    mount="$(docker volume inspect -f '{{.Mountpoint}}' "$volume")"
    owner="$(stat -c %u "$mount/agentvm.redb" 2>/dev/null || true)"
    [ "$owner" = "$uid" ] || fail "no agentvm.redb owned by uid $uid in the volume ($mount)"
    ok "the store is in the volume (agentvm.redb, uid $owner); docker stop exits 0"
fi

echo
echo "test-dist: built in ${build_s} s, checked in $(( $(date +%s) - started - build_s )) s"
echo "dist: ${passed} passed, 0 failed"
