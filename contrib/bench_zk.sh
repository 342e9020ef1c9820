#!/usr/bin/env bash
#
# bench_zk.sh - lock costs on the ZooKeeper backend, next to their floor.
#
# Starts a standalone ZooKeeper server on a free loopback port, mounts two
# dlockfs daemons ("hosts" a and b) over one temporary backing directory
# with backend=zk://..., and runs side by side:
#   - lockbench on mount A: uncontended fcntl/flock cycles, same-host
#     ping-pong, the FUSE round-trip floor;
#   - lockbench --pair A B: the cross-host ping-pong handoff (p50/p99);
#   - lockbench --procs 8 A: 8-process throughput on one file and on 8;
#   - zkfloor: a bare libzookeeper_mt client, create EPHEMERAL|SEQUENTIAL
#     + delete per cycle (and the recipe's create + get_children + delete),
#     against the same server; then 8 such clients at once, a session and
#     a parent node each (the floor of 8 processes on 8 files).
# Whatever happens, both mounts are unmounted, our daemons and our
# ZooKeeper are stopped (by PID) and the temporary directory is removed.
#
# usage: contrib/bench_zk.sh [--seconds S]

set -euo pipefail
BENCH_NAME=bench_zk
# shellcheck source-path=SCRIPTDIR source=bench_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
seconds=$(bench_arg --seconds 3 "$@")

bench_build fs/dlockfs tests/bench/lockbench tests/bench/zkfloor \
	tests/bench/delayproxy
bench_need_zk
bench_tmp
mkdir "$tmp/backing" "$tmp/a" "$tmp/b"
bench_zk_start
uri="zk://127.0.0.1:$zk_port/bench"

bench_two_hosts "$uri" "$seconds"
bench_cache "$uri" "$seconds"
echo "== floor: bare libzookeeper_mt against the same server"
"$build/tests/bench/zkfloor" --seconds "$seconds" --clients 8 "127.0.0.1:$zk_port"
echo
bench_far "$zk_port"
bench_far_procs "zk://127.0.0.1:$far_port/far" "$seconds"
echo "== floor through the same link: bare libzookeeper_mt"
"$build/tests/bench/zkfloor" --seconds "$seconds" --clients 8 "127.0.0.1:$far_port"
