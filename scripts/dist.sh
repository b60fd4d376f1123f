#!/usr/bin/env bash
# Builds agentvm's release artifacts into dist/ (docs/install.md says what each one is):
#
#   dist/agentvm-server                 the server binary for any x86-64 Linux with glibc >= 2.17
#   dist/agentvm_runtime-*.whl          the Python package (abi3, manylinux2014: CPython >= 3.10)
#   dist/agentvm-*.tgz                  the npm package with its native module (Node >= 20)
#   dist/image/                         the container image's files; with Docker running, the
#                                       image agentvm-server:<version> itself (Dockerfile)
#
# Everything is linked by zig against glibc 2.17 (cargo-zigbuild's wrappers, for maturin too),
# with the `dist` cargo profile, in one target dir (AGENTVM_DIST_TARGET_DIR, default
# target/dist), so the dependencies the three share compile once.
# The tools come from PyPI through scripts/setup-dist.sh. Idempotent and incremental.
# AGENTVM_DIST_NO_IMAGE=1 skips `docker build`. scripts/test-dist.sh checks the artifacts.
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"

step() { printf '\n==> [%s] dist: %s\n' "$(date +%T)" "$*"; }
die() { printf 'dist: error: %s\n' "$*" >&2; exit 1; }
started=$(date +%s)

TRIPLE="x86_64-unknown-linux-gnu"
GLIBC="2.17"
PROFILE="dist"
IMAGE_UID="10001"

PATH="$(bash scripts/setup-dist.sh):$PATH"
export PATH
export CARGO_TARGET_DIR="${AGENTVM_DIST_TARGET_DIR:-$root/target/dist}"
out="$root/dist"
mkdir -p "$out"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)"
[ -n "$version" ] || die "no version in Cargo.toml's [workspace.package]"

step "server binary and Node module (cargo zigbuild --target $TRIPLE.$GLIBC)"
t=$(date +%s)
cargo zigbuild --locked --profile "$PROFILE" --target "$TRIPLE.$GLIBC" \
    -p agentvm-server -p agentvm-node
built="$CARGO_TARGET_DIR/$TRIPLE/$PROFILE"
install -m 0755 "$built/agentvm-server" "$out/agentvm-server"
echo "built in $(( $(date +%s) - t )) s: $out/agentvm-server"

step "Python wheel (maturin, manylinux2014, linked by cargo-zigbuild's zig)"
t=$(date +%s)
# `maturin --zig` links through zig wrappers of its own: another linker path, which cargo counts
# as a change, so every dependency would compile a second time. Instead maturin runs without
# --zig in the environment cargo-zigbuild gives cargo (its CC, AR and linker wrappers for glibc
# 2.17), recorded by a stand-in cargo that builds nothing.
recorder="$CARGO_TARGET_DIR/zigbuild-env"
mkdir -p "$recorder"
cat >"$recorder/cargo" <<'SH'
#!/bin/sh
case " $* " in *" metadata "*) exec "$AGENTVM_REAL_CARGO" "$@" ;; esac
env | grep -E '^((CC|CXX|AR|RANLIB|CMAKE_TOOLCHAIN_FILE|BINDGEN_EXTRA_CLANG_ARGS)_x86_64_unknown_linux_gnu|CARGO_TARGET_[A-Z0-9_]+|CARGO_UNSTABLE_[A-Z0-9_]+|CARGO_ZIGBUILD_[A-Za-z0-9_]+|__CARGO_[A-Z_]+)=' >"$AGENTVM_ZIGBUILD_ENV"
SH
chmod +x "$recorder/cargo"
AGENTVM_REAL_CARGO="$(command -v cargo)" AGENTVM_ZIGBUILD_ENV="$recorder/env" CARGO="$recorder/cargo" \
    cargo-zigbuild zigbuild --locked --profile "$PROFILE" --target "$TRIPLE.$GLIBC" -p agentvm-python
grep -q '^CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=' "$recorder/env" \
    || die "cargo-zigbuild set no linker (recorded: $recorder/env)"
rm -f "$out"/agentvm_runtime-*.whl
python="$(command -v python3)"
(
    # Each line is NAME=value: export it as it stands.
    # shellcheck disable=SC2163
    while IFS= read -r assignment; do export "$assignment"; done <"$recorder/env"
    maturin build --manifest-path python/Cargo.toml --profile "$PROFILE" --target "$TRIPLE" \
        --compatibility manylinux2014 --interpreter "$python" --out "$out"
)
wheel="$(ls "$out"/agentvm_runtime-*.whl)"
echo "built in $(( $(date +%s) - t )) s: $wheel"

step "npm package (npm pack)"
stage="$CARGO_TARGET_DIR/npm-package"
rm -rf "$stage"
mkdir -p "$stage"
# The files package.json lists; the native module is the one just built for glibc 2.17.
for f in package.json README.md index.js index.d.ts native.d.ts protocol.d.ts; do
    cp "node/$f" "$stage/$f"
done
cp LICENSE "$stage/LICENSE"
cp "$built/libagentvm_node.so" "$stage/agentvm.node"
rm -f "$out"/agentvm-[0-9]*.tgz
(cd "$stage" && npm pack --silent --pack-destination "$out" >/dev/null)
tarball="$(ls "$out"/agentvm-[0-9]*.tgz)"
echo "packed: $tarball"

step "container image files (dist/image)"
image="$out/image"
rm -rf "$image"
mkdir -p "$image/rootfs/usr/local/bin" "$image/rootfs/etc/ssl/certs" "$image/rootfs/tmp" "$image/data"
install -m 0755 "$out/agentvm-server" "$image/rootfs/usr/local/bin/agentvm-server"
# The binary links glibc dynamically (zig cannot link it statically): the image carries the
# shared libraries it names and the loader, from this machine (any glibc >= 2.17 does).
interp="$(readelf -l "$out/agentvm-server" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')"
[ -n "$interp" ] || die "agentvm-server names no program interpreter"
libs="$(ldd "$out/agentvm-server" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }')"
copied=0
for lib in "$interp" $libs; do
    mkdir -p "$image/rootfs$(dirname "$lib")"
    cp -L "$lib" "$image/rootfs$lib"
    copied=$((copied + 1))
done
# TLS to Docker engines over tcp:// trusts the system's roots (the LLM clients carry their own).
if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$image/rootfs/etc/ssl/certs/ca-certificates.crt"
fi
chmod 1777 "$image/rootfs/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nagentvm:x:%s:%s:agentvm:/data:/sbin/nologin\n' \
    "$IMAGE_UID" "$IMAGE_UID" >"$image/rootfs/etc/passwd"
printf 'root:x:0:\nagentvm:x:%s:\n' "$IMAGE_UID" >"$image/rootfs/etc/group"
echo "$image: agentvm-server, $copied shared libraries, /etc/passwd (agentvm = $IMAGE_UID)"

if [ "${AGENTVM_DIST_NO_IMAGE:-}" = 1 ]; then
    step "container image: skipped (AGENTVM_DIST_NO_IMAGE=1)"
elif ! timeout 5 docker version >/dev/null 2>&1; then
    step "container image: skipped (no Docker daemon answers; scripts/setup-docker.sh starts one)"
else
    step "container image agentvm-server:$version (docker build, FROM scratch)"
    DOCKER_BUILDKIT=0 docker build --quiet -t "agentvm-server:$version" -t agentvm-server:latest . >/dev/null
    docker image inspect -f '{{.Id}} {{.Size}} bytes' "agentvm-server:$version"
fi

echo
echo "dist: built in $(( $(date +%s) - started )) s:"
ls -l "$out"
