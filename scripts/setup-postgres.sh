#!/usr/bin/env bash
# Starts (idempotently) the PostgreSQL cluster the store tests use and prints its URL.
# Debian's `postgresql` package (15) is installed when missing; the cluster is our own, not the
# package's: its data in /tmp/agentvm-test-postgres-<port>, listening on 127.0.0.1:<port> only
# (default 54329, AGENTVM_TEST_POSTGRES_PORT to change), trust auth on loopback, run as the
# `postgres` user when this script runs as root (initdb refuses root), else as the caller.
# Every run recreates the database `agentvm_test`, so each test run starts empty (the tests
# make one schema per test inside it).
# Use it as: export AGENTVM_TEST_POSTGRES="$(bash scripts/setup-postgres.sh)"
set -euo pipefail
cd "$(dirname "$0")/.."

port="${AGENTVM_TEST_POSTGRES_PORT:-54329}"
dir="/tmp/agentvm-test-postgres-$port"
database="agentvm_test"
log() { printf '%s\n' "$*" >&2; }

bindir=""
for candidate in /usr/lib/postgresql/*/bin; do
    [ -x "$candidate/initdb" ] && bindir="$candidate"
done
if [ -z "$bindir" ]; then
    if [ "$(id -u)" != 0 ]; then
        log "PostgreSQL is not installed and this is not root: run scripts/setup-postgres.sh as root"
        exit 1
    fi
    log "installing postgresql (apt)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2 \
        || { apt-get update -q >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >&2; }
    for candidate in /usr/lib/postgresql/*/bin; do
        [ -x "$candidate/initdb" ] && bindir="$candidate"
    done
fi

# Runs a PostgreSQL tool as the cluster's owner.
as_owner() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

if [ ! -f "$dir/PG_VERSION" ]; then
    log "initdb $dir"
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
    chmod 700 "$dir"
    as_owner "$bindir/initdb" -D "$dir" -U postgres -A trust --no-sync -E UTF8 >&2
fi

if ! "$bindir/pg_isready" -q -h 127.0.0.1 -p "$port"; then
    log "starting PostgreSQL on 127.0.0.1:$port"
    as_owner "$bindir/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 30 \
        -o "-h 127.0.0.1 -p $port -k $dir" start >&2
fi

psql() { "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres "$@"; }
psql -d postgres -c "DROP DATABASE IF EXISTS $database WITH (FORCE)" >&2
psql -d postgres -c "CREATE DATABASE $database" >&2

echo "postgres://postgres@127.0.0.1:$port/$database"
