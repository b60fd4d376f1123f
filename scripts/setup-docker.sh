#!/usr/bin/env bash
# Prepares Docker for agentvm's sandbox tests, offline. Idempotent; run as root.
#
# 1. Installs docker.io and busybox-static when missing (one `apt-get update` first, only then).
# 2. Starts `dockerd` in the background when nothing answers on /var/run/docker.sock, and waits
#    until it answers (AGENTVM_DOCKERD_TIMEOUT seconds, default 60).
# 3. Builds the test image agentvm-test/busybox:latest with `docker import` from a rootfs made of
#    Debian's static busybox: applet symlinks, /tmp, /etc/passwd with root and a non-root
#    `sandbox` user (uid 1000), /home/sandbox and /workspace owned by it. No registry is used.
#
# The image carries a version label; it is rebuilt only when that version changes.
set -euo pipefail

IMAGE="agentvm-test/busybox:latest"
IMAGE_VERSION="2"
SOCKET="/var/run/docker.sock"
TIMEOUT="${AGENTVM_DOCKERD_TIMEOUT:-60}"
LOG="/var/log/agentvm-dockerd.log"

say() { printf '[setup-docker] %s\n' "$*"; }
die() { printf '[setup-docker] error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts dockerd)"

# --- 1. packages ---
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
[ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || missing+=(busybox-static)
if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    say "docker.io and busybox-static are installed"
fi
# A static busybox is what goes into the image; Debian's busybox-static installs /bin/busybox.
file_out="$(LC_ALL=C od -An -c -N4 /bin/busybox | tr -d ' ')"
[ "$file_out" = '177ELF' ] || die "/bin/busybox is not an ELF binary"
if ldd /bin/busybox 2>&1 | grep -q '=>'; then
    die "/bin/busybox is dynamically linked; install busybox-static (apt-get install busybox-static)"
fi

# --- 2. the daemon ---
docker_answers() { timeout 5 docker -H "unix://$SOCKET" version >/dev/null 2>&1; }
if docker_answers; then
    say "dockerd answers on $SOCKET"
else
    say "starting dockerd (log: $LOG)"
    # setsid + nohup: the daemon outlives this script and the shell job that ran it.
    setsid nohup dockerd -H "unix://$SOCKET" >"$LOG" 2>&1 </dev/null &
    started=$(date +%s)
    until docker_answers; do
        if [ $(( $(date +%s) - started )) -ge "$TIMEOUT" ]; then
            tail -n 30 "$LOG" >&2 || true
            die "dockerd did not answer on $SOCKET within ${TIMEOUT}s (see $LOG above)"
        fi
        sleep 0.5
    done
    say "dockerd answers after $(( $(date +%s) - started ))s"
fi

# --- 3. the offline test image ---
have="$(docker image inspect -f '{{ index .Config.Labels "agentvm.test-image" }}' "$IMAGE" 2>/dev/null || true)"
if [ "$have" = "$IMAGE_VERSION" ]; then
    say "$IMAGE is up to date (version $IMAGE_VERSION)"
    exit 0
fi
say "building $IMAGE (version $IMAGE_VERSION) from /bin/busybox"
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,proc,sys,dev,home/sandbox,workspace,var/tmp}
cp /bin/busybox "$root/bin/busybox"
for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 700 "$root/root"
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
sandbox:x:1000:1000:sandbox:/home/sandbox:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
sandbox:x:1000:
nogroup:x:65534:
EOF
chown -R 1000:1000 "$root/home/sandbox" "$root/workspace"
tar --numeric-owner -C "$root" -cf "$root.tar" .
docker import \
    --change 'ENV PATH=/bin:/usr/bin:/sbin:/usr/sbin' \
    --change 'CMD ["/bin/sh"]' \
    --change "LABEL agentvm.test-image=$IMAGE_VERSION" \
    --change 'LABEL agentvm.sandbox-user=sandbox' \
    "$root.tar" "$IMAGE" >/dev/null
rm -f "$root.tar"
docker run --rm --network none "$IMAGE" /bin/sh -c 'echo hi' | grep -qx hi \
    || die "$IMAGE was built but cannot run a shell"
say "$IMAGE is ready"
