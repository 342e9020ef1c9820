#!/usr/bin/env bash
#
# bench_shim.sh - what a lock costs through the LD_PRELOAD shim, side by
# side with the same lock through a dlockfs mount, a plain local directory,
# and the bare backend floor.
#
# Starts a redis-server on a free loopback port (with --local: none, the
# embedded local: backend), one agent (`dlockfs --agent`) serving a socket
# in a temporary directory and one mount on the same backend, then runs:
#   - lockbench LOCAL SHIMDIR MOUNT under LD_PRELOAD (only SHIMDIR is in
#     DLOCK_PATHS, so LOCAL is the kernel and MOUNT the FUSE path): the
#     uncontended fcntl/flock cycles and the same-host ping-pong handoff;
#   - the same with DLOCK_KERNEL_LOCK=0 (cluster lock only);
#   - redisfloor against the same server (the bare hiredis lock cycle).
# Whatever happens, the mount is unmounted, our daemons and redis-server
# are stopped by PID and the temporary directory is removed.
#
# usage: contrib/bench_shim.sh [--local] [--seconds S]

set -euo pipefail
BENCH_NAME=bench_shim
# shellcheck source=bench_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
seconds=2
local_only=""
while [ $# -gt 0 ]; do
	case $1 in
	--local) local_only=1 ;;
	--seconds) seconds=$2; shift ;;
	*) echo "usage: contrib/bench_shim.sh [--local] [--seconds S]" >&2; exit 2 ;;
	esac
	shift
done

bench_build fs/dlockfs fs/dlockctl tests/bench/lockbench preload/libdlock_preload.so
ctl=$build/fs/dlockctl
shim=$build/preload/libdlock_preload.so
bench_tmp
mkdir "$tmp/local" "$tmp/shim" "$tmp/backing" "$tmp/mnt"
sock=$tmp/agent.sock

uri=local:
if [ -z "$local_only" ]; then
	bench_redis
	uri=redis://127.0.0.1:$port/bench
fi

"$build/fs/dlockfs" --agent -f -o "backend=$uri,host_id=agent,socket=$sock,paths=bench=$tmp/shim" \
	>"$tmp/agent.log" 2>&1 &
pids+=("$!")
bench_mount "$tmp/backing" "$tmp/mnt" "backend=$uri,host_id=mount,socket=none"
for _ in $(seq 100); do
	"$ctl" --socket "$sock" status >/dev/null 2>&1 && break
	sleep 0.1
done
"$ctl" --socket "$sock" status >/dev/null || { log "agent down: $(cat "$tmp/agent.log")"; exit 1; }

log "backend $uri; columns: local dir (kernel) | shim dir | dlockfs mount"
echo "== shim with the kernel lock too (default) =="
LD_PRELOAD=$shim DLOCK_SOCKET=$sock DLOCK_PATHS=$tmp/shim \
	"$build/tests/bench/lockbench" --seconds "$seconds" "$tmp/local" "$tmp/shim" "$tmp/mnt"
echo
echo "== shim, cluster lock only (DLOCK_KERNEL_LOCK=0) =="
LD_PRELOAD=$shim DLOCK_SOCKET=$sock DLOCK_PATHS=$tmp/shim DLOCK_KERNEL_LOCK=0 \
	"$build/tests/bench/lockbench" --seconds "$seconds" "$tmp/local" "$tmp/shim" "$tmp/mnt"
if [ -z "$local_only" ] && [ -x "$build/tests/bench/redisfloor" ]; then
	echo
	echo "== bare backend floor (hiredis SET NX PX + compare-and-delete) =="
	"$build/tests/bench/redisfloor" --seconds "$seconds" 127.0.0.1 "$port"
fi
