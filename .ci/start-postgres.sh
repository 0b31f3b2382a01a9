#!/usr/bin/env bash
# Start a throwaway PostgreSQL server on 127.0.0.1 in a new temporary data directory, as a normal
# (non-root) user, and print two lines: the connection URL, then a script that stops it and
# removes the directory.
# Used by .ci/run and by the test suite (tests/ledger/conftest.py) when no server is given.
set -euo pipefail

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
if [ -z "$bindir" ] && command -v pg_ctl >/dev/null 2>&1; then
  bindir=$(dirname "$(command -v pg_ctl)")
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
  echo "start-postgres: PostgreSQL binaries not found (apt-get install postgresql)" >&2
  exit 1
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/tw-pg.XXXXXX")
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

as_user=()
if [ "$(id -u)" = 0 ]; then
  # PostgreSQL refuses to run as root: use the package's own account, or nobody.
  user=postgres
  id "$user" >/dev/null 2>&1 || user=nobody
  chown "$user" "$dir"
  chmod 700 "$dir"
  as_user=(runuser -u "$user" --)
fi

"${as_user[@]}" "$bindir/initdb" -D "$dir/data" -U tw --auth=trust -E UTF8 --no-locale \
  >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
"${as_user[@]}" "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200" start \
  >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
"${as_user[@]}" "$bindir/createdb" -h 127.0.0.1 -p "$port" -U tw trainwarden

# The stop script also removes the temporary directory.
cat >"$dir.stop" <<STOP
#!/bin/sh
${as_user[*]} $bindir/pg_ctl -D $dir/data -m immediate stop >/dev/null 2>&1
rm -rf "$dir" "$dir.stop"
STOP
chmod 700 "$dir.stop"

echo "postgresql://tw@127.0.0.1:$port/trainwarden"
echo "$dir.stop"
