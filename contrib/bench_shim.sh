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

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
build=${BUILD:-$repo/build}
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

tmp=""
pids=()
mnt=""

log() { printf 'bench_shim.sh: %s\n' "$*" >&2; }
is_mounted() {
	[ -n "$mnt" ] && awk -v m="$mnt" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}

# shellcheck disable=SC2317  # reached through the traps
cleanup() {
	local rc=$? p _
	trap - EXIT INT TERM HUP
	if is_mounted; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt" || true
	fi
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null || continue
		for _ in $(seq 50); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	if [ -n "$tmp" ] && ! is_mounted; then
		rm -rf --one-file-system "$tmp"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [ ! -f "$build/build.ninja" ]; then
	meson setup "$build" >&2
fi
ninja -C "$build" >&2
daemon=$build/fs/dlockfs
ctl=$build/fs/dlockctl
bench=$build/tests/bench/lockbench
shim=$build/preload/libdlock_preload.so

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dlockfs-bench-shim.XXXXXX")
mkdir "$tmp/local" "$tmp/shim" "$tmp/backing" "$tmp/mnt" "$tmp/redis"
mnt=$tmp/mnt
sock=$tmp/agent.sock

uri=local:
if [ -z "$local_only" ]; then
	port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
	redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
		--dir "$tmp/redis" >"$tmp/redis/log" 2>&1 &
	pids+=("$!")
	for _ in $(seq 100); do
		redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
		sleep 0.1
	done
	uri=redis://127.0.0.1:$port/bench
fi

"$daemon" --agent -f -o "backend=$uri,host_id=agent,socket=$sock" >"$tmp/agent.log" 2>&1 &
pids+=("$!")
"$daemon" -f -o "backend=$uri,host_id=mount,socket=none" "$tmp/backing" "$mnt" \
	>"$tmp/mount.log" 2>&1 &
pids+=("$!")
for _ in $(seq 100); do
	is_mounted && "$ctl" --socket "$sock" status >/dev/null 2>&1 && break
	sleep 0.1
done
is_mounted || { log "the mount did not come up: $(cat "$tmp/mount.log")"; exit 1; }
"$ctl" --socket "$sock" status >/dev/null || { log "agent down: $(cat "$tmp/agent.log")"; exit 1; }

log "backend $uri; columns: local dir (kernel) | shim dir | dlockfs mount"
echo "== shim with the kernel lock too (default) =="
LD_PRELOAD=$shim DLOCK_SOCKET=$sock DLOCK_PATHS=$tmp/shim \
	"$bench" --seconds "$seconds" "$tmp/local" "$tmp/shim" "$mnt"
echo
echo "== shim, cluster lock only (DLOCK_KERNEL_LOCK=0) =="
LD_PRELOAD=$shim DLOCK_SOCKET=$sock DLOCK_PATHS=$tmp/shim DLOCK_KERNEL_LOCK=0 \
	"$bench" --seconds "$seconds" "$tmp/local" "$tmp/shim" "$mnt"
if [ -z "$local_only" ] && [ -x "$build/tests/bench/redisfloor" ]; then
	echo
	echo "== bare backend floor (hiredis SET NX PX + compare-and-delete) =="
	"$build/tests/bench/redisfloor" --seconds "$seconds" 127.0.0.1 "$port"
fi
