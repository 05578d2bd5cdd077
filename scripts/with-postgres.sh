#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL cluster on 127.0.0.1, then remove the cluster.
# The command sees POSTHORN_TEST_POSTGRES_URL. initdb refuses to run as root, so the cluster
# belongs to the postgres user when we are root.
set -euo pipefail

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bindir" ]; then
  echo "with-postgres: PostgreSQL is not installed (run scripts/system-deps.sh)" >&2
  exit 1
fi
tmp=$(mktemp -d /tmp/posthorn-pg.XXXXXX)
chmod 755 "$tmp"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg=()
if [ "$(id -u)" -eq 0 ]; then
  chown postgres:postgres "$tmp"
  as_pg=(runuser -u postgres --)
fi

cleanup() {
  "${as_pg[@]}" "$bindir/pg_ctl" -D "$tmp/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

"${as_pg[@]}" "$bindir/initdb" -D "$tmp/data" -U posthorn --auth=trust -E UTF8 --no-locale >/dev/null
"${as_pg[@]}" "$bindir/pg_ctl" -D "$tmp/data" -l "$tmp/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $tmp -c fsync=${POSTHORN_PG_FSYNC:-off} -c max_connections=300" start >/dev/null
"$bindir/psql" -h 127.0.0.1 -p "$port" -U posthorn -d postgres -qc "CREATE DATABASE posthorn" >/dev/null

export POSTHORN_TEST_POSTGRES_URL="postgresql://posthorn@127.0.0.1:$port/posthorn"
echo "with-postgres: cluster on 127.0.0.1:$port" >&2
"$@"
