#!/usr/bin/env bash
#
# bench_redis.sh - lock costs on the Redis backend, next to their floor.
#
# Starts a redis-server on a free loopback port, mounts two dlockfs daemons
# ("hosts" a and b) over one temporary backing directory with
# backend=redis://..., and runs side by side:
#   - lockbench on mount A: uncontended fcntl/flock cycles, same-host
#     ping-pong, the FUSE round-trip floor;
#   - lockbench --pair A B: the cross-host ping-pong handoff (p50/p99);
#   - lockbench --procs 8 A: 8-process throughput on one file and on 8;
#   - bench_cache: cache=on (hosts c, d, e) next to cache off and local:
#     (the uncontended cycle, SQLite transactions, the cross-host
#     ping-pong, three hosts each on its own file);
#   - redisfloor: a bare hiredis client, SET NX PX + compare-and-delete
#     EVALSHA per cycle, and a bare PING, against the same server; then
#     8 such clients at once, a key each (the floor of 8 processes on 8
#     files).
# Whatever happens, both mounts are unmounted, our daemons and our
# redis-server are stopped (by PID) and the temporary directory is removed.
#
# usage: contrib/bench_redis.sh [--seconds S]

set -euo pipefail
BENCH_NAME=bench_redis
# shellcheck source-path=SCRIPTDIR source=bench_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
seconds=$(bench_arg --seconds 3 "$@")

bench_build fs/dlockfs tests/bench/lockbench tests/bench/redisfloor \
	tests/bench/delayproxy
bench_tmp
mkdir "$tmp/backing" "$tmp/a" "$tmp/b"
bench_redis
uri="redis://127.0.0.1:$port/bench"

bench_two_hosts "$uri" "$seconds"
bench_cache "$uri" "$seconds"
echo "== floor: bare hiredis against the same server"
"$build/tests/bench/redisfloor" --seconds "$seconds" --clients 8 127.0.0.1 "$port"
echo
bench_far "$port"
bench_far_procs "redis://127.0.0.1:$far_port/far" "$seconds"
echo "== floor through the same link: bare hiredis"
"$build/tests/bench/redisfloor" --seconds "$seconds" --clients 8 127.0.0.1 "$far_port"
