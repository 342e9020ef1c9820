#!/usr/bin/env bash
#
# bench.sh - lock costs on a dlockfs mount next to a plain local directory.
#
# Builds if needed, mounts build/fs/dlockfs (backend=local:) over a temporary
# backing directory, and runs build/tests/bench/lockbench on a temporary local
# directory and on the mount, side by side.  Arguments are passed to
# lockbench (--iters N, --seconds S).  Whatever happens, the mount is
# unmounted, our own daemon is stopped and the temporary directories are
# removed.
#
# usage: contrib/bench.sh [--iters N] [--seconds S]

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
build=$repo/build

tmp=""
daemon_pid=""
mnt=""

log() { printf 'bench.sh: %s\n' "$*" >&2; }

# from the mount table, not stat(): a dead daemon's mount fails every stat
is_mounted() {
	[ -n "$mnt" ] &&
		awk -v m="$mnt" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}

# shellcheck disable=SC2317  # reached through the traps
cleanup() {
	local rc=$? _ was_mounted=""
	trap - EXIT INT TERM HUP
	if is_mounted; then
		was_mounted=1
		for _ in 1 2 3 4 5; do
			fusermount3 -u "$mnt" 2>/dev/null && break
			sleep 0.2
		done
		if is_mounted; then
			log "unmount of $mnt failed, detaching lazily"
			fusermount3 -u -z "$mnt" || true
		fi
	fi
	if [ -n "$daemon_pid" ] && kill -0 "$daemon_pid" 2>/dev/null; then
		# unmounting ends a -f daemon: give it 5 s to exit by itself
		for _ in $(seq 50); do
			[ -n "$was_mounted" ] || break
			kill -0 "$daemon_pid" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$daemon_pid" 2>/dev/null; then
			log "daemon $daemon_pid still running, sending SIGTERM"
			kill "$daemon_pid" 2>/dev/null || true
			for _ in $(seq 30); do
				kill -0 "$daemon_pid" 2>/dev/null || break
				sleep 0.1
			done
			kill -KILL "$daemon_pid" 2>/dev/null || true
		fi
	fi
	if [ -n "$daemon_pid" ]; then
		wait "$daemon_pid" 2>/dev/null || true
	fi
	if [ -n "$tmp" ]; then
		if is_mounted; then
			# never recurse into a live mount: it would empty the backing dir
			log "$mnt still mounted, leaving $tmp in place"
		else
			rm -rf --one-file-system "$tmp"
		fi
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

if [ ! -f "$build/build.ninja" ]; then
	log "configuring $build"
	meson setup "$build"
fi
ninja -C "$build" >&2

daemon=$build/fs/dlockfs
bench=$build/tests/bench/lockbench
for f in "$daemon" "$bench"; do
	if [ ! -x "$f" ]; then
		log "$f was not built"
		exit 1
	fi
done
if [ ! -e /dev/fuse ]; then
	log "/dev/fuse is missing: cannot mount"
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dlockfs-bench.XXXXXX")
mkdir "$tmp/local" "$tmp/backing" "$tmp/mnt"
mnt=$tmp/mnt

# -f keeps the daemon our child, so it is ours to stop by its pid
"$daemon" -f -o backend=local: "$tmp/backing" "$mnt" \
	>"$tmp/daemon.log" 2>&1 &
daemon_pid=$!

# bounded wait for the mount (10 s)
for _ in $(seq 100); do
	is_mounted && break
	if ! kill -0 "$daemon_pid" 2>/dev/null; then
		log "dlockfs exited before mounting; its log:"
		cat "$tmp/daemon.log" >&2
		exit 1
	fi
	sleep 0.1
done
if ! is_mounted; then
	log "dlockfs did not mount $mnt within 10 s; its log:"
	cat "$tmp/daemon.log" >&2
	exit 1
fi
log "dlockfs (pid $daemon_pid) mounted on $mnt"

rc=0
"$bench" "$@" "$tmp/local" "$mnt" || rc=$?
if [ "$rc" -ne 0 ]; then
	log "lockbench exited with $rc; daemon log (last 40 lines):"
	tail -n 40 "$tmp/daemon.log" >&2
fi
exit "$rc"
