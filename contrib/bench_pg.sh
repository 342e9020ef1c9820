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
#     floor of 8 processes on 8 files; and 8 clients calling dlockfs's
#     lock() + unlock() directly, a file each: the same floor with our
#     SQL), and dlockfs's own lock() + release() SQL functions called
#     directly.
# Whatever happens, both mounts are unmounted, our daemons stopped, our
# server stopped (by PID) and the temporary directory removed.
#
# usage: contrib/bench_pg.sh [--seconds S]
#        PG_BIN (default /usr/lib/postgresql/15/bin) names the server's
#        binaries; PG_OSUSER (default postgres) the user it runs as

set -euo pipefail
BENCH_NAME=bench_pg
# shellcheck source-path=SCRIPTDIR source=bench_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
seconds=$(bench_arg --seconds 3 "$@")

bench_build fs/dlockfs tests/bench/lockbench tests/bench/pgfloor \
	tests/bench/delayproxy
bench_need_pg
bench_tmp
mkdir "$tmp/backing" "$tmp/a" "$tmp/b"
bench_pg_start
uri=$pg_uri

bench_two_hosts "$uri" "$seconds"
bench_cache "$uri" "$seconds"
echo "== floor: bare libpq against the same server (Unix socket)"
"$build/tests/bench/pgfloor" --seconds "$seconds" --clients 8 \
	"host=$tmp/pg port=$pg_port user=bench dbname=bench" bench
echo "== floor: bare libpq over TCP (127.0.0.1)"
"$build/tests/bench/pgfloor" --seconds "$seconds" --clients 8 \
	"host=127.0.0.1 port=$pg_port user=bench dbname=bench" bench
echo
bench_far "$pg_port"
bench_far_procs "postgresql://bench@127.0.0.1:$far_port/bench?schema=far" "$seconds"
echo "== floor through the same link: bare libpq"
"$build/tests/bench/pgfloor" --seconds "$seconds" --clients 8 \
	"host=127.0.0.1 port=$far_port user=bench dbname=bench" far
