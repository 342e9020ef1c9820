#!/usr/bin/env bash
#
# bench_pg.sh - lock costs on the PostgreSQL backend, next to their floor.
#
# Starts a PostgreSQL server (initdb as an unprivileged user into the
# temporary directory; as root the server runs as user postgres) on a free
# loopback port, creates an ordinary role owning a database, mounts two
# dlockfs daemons ("hosts" a and b) over one temporary backing directory
# with backend=postgresql://... (through the server's Unix socket), and
# runs side by side:
#   - lockbench on mount A: uncontended fcntl/flock cycles, same-host
#     ping-pong, the FUSE round-trip floor;
#   - lockbench --pair A B: the cross-host ping-pong handoff (p50/p99);
#   - lockbench --procs 8 A: 8-process throughput on one file and on 8;
#   - pgfloor: a bare libpq client against the same server: SELECT 1,
#     pg_advisory_lock + unlock, a locks-table INSERT ON CONFLICT DO
#     NOTHING + DELETE cycle (also 8 clients at once, a row each: the
#     floor of 8 processes on 8 files), and dlockfs's own lock() +
#     release() SQL functions called directly.
# Whatever happens, both mounts are unmounted, our daemons stopped, our
# server stopped (by PID) and the temporary directory removed.
#
# usage: contrib/bench_pg.sh [--seconds S]
#        PG_BIN (default /usr/lib/postgresql/15/bin) names the server's
#        binaries; PG_OSUSER (default postgres) the user it runs as

set -euo pipefail
BENCH_NAME=bench_pg
# shellcheck source=bench_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
seconds=3
if [ "${1:-}" = "--seconds" ] && [ -n "${2:-}" ]; then
	seconds=$2
fi
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_OSUSER=${PG_OSUSER:-postgres}
pgpid=""

# alive and not a zombie (the server is our child until we wait for it)
running() {
	local s
	s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[ -n "$s" ] && [ "${s#Z}" = "$s" ]
}

# stop our server (fast shutdown, then SIGKILL of its pid), then the rest
# shellcheck disable=SC2317  # reached through the trap
pg_bench_exit() {
	local rc=$? _
	set +e # (exit RC) below must not end the trap under errexit
	if [ -n "$pgpid" ] && running "$pgpid"; then
		for m in "${mounts[@]}"; do
			is_mounted "$m" && { fusermount3 -u "$m" 2>/dev/null || true; }
		done
		kill -INT "$pgpid" 2>/dev/null || true
		for _ in $(seq 100); do
			running "$pgpid" || break
			sleep 0.1
		done
		running "$pgpid" && kill -KILL "$pgpid" 2>/dev/null
		wait "$pgpid" 2>/dev/null || true
	fi
	(exit "$rc")
	bench_cleanup
}
trap pg_bench_exit EXIT

bench_build fs/dlockfs tests/bench/lockbench tests/bench/pgfloor
[ -x "$PG_BIN/initdb" ] || { log "no PostgreSQL in $PG_BIN (contrib/deps.sh)"; exit 1; }
bench_tmp
mkdir "$tmp/backing" "$tmp/a" "$tmp/b" "$tmp/pg"
chmod 755 "$tmp"
run_pg() { "$@"; }
if [ "$(id -u)" -eq 0 ]; then
	chown "$PG_OSUSER" "$tmp/pg"
	run_pg() { setpriv --reuid="$PG_OSUSER" --regid="$(id -g "$PG_OSUSER")" --init-groups "$@"; }
fi
run_pg "$PG_BIN/initdb" -D "$tmp/pg/data" -U postgres -A trust --no-sync >"$tmp/pg/initdb.log" 2>&1 ||
	{ log "initdb failed"; cat "$tmp/pg/initdb.log" >&2; exit 1; }
port=$(bench_free_port)
# setpriv execs: $! is the postmaster itself
run_pg "$PG_BIN/postgres" -D "$tmp/pg/data" -p "$port" -k "$tmp/pg" \
	-c listen_addresses=127.0.0.1 >"$tmp/pg/log" 2>&1 &
pgpid=$!
for _ in $(seq 100); do
	"$PG_BIN/pg_isready" -q -h "$tmp/pg" -p "$port" && break
	sleep 0.1
done
"$PG_BIN/pg_isready" -q -h "$tmp/pg" -p "$port" || { log "PostgreSQL did not start"; exit 1; }
psql -X -q -h "$tmp/pg" -p "$port" -U postgres -c "CREATE ROLE bench LOGIN" \
	-c "CREATE DATABASE bench OWNER bench" postgres
log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') (pid $pgpid) on 127.0.0.1:$port"

sock=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$tmp/pg")
uri="postgresql://bench@$sock:$port/bench?schema=bench"
bench_two_hosts "$uri" "$seconds"
bench_cache "$uri" "$seconds"
echo "== floor: bare libpq against the same server (Unix socket)"
"$build/tests/bench/pgfloor" --seconds "$seconds" --clients 8 \
	"host=$tmp/pg port=$port user=bench dbname=bench" bench
echo "== floor: bare libpq over TCP (127.0.0.1)"
"$build/tests/bench/pgfloor" --seconds "$seconds" --clients 8 \
	"host=127.0.0.1 port=$port user=bench dbname=bench" bench
