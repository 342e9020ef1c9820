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
#     against the same server.
# Whatever happens, both mounts are unmounted, our daemons and our
# ZooKeeper are stopped (by PID) and the temporary directory is removed.
#
# usage: contrib/bench_zk.sh [--seconds S]

set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
build=${BUILD:-$repo/build}
seconds=3
if [ "${1:-}" = "--seconds" ] && [ -n "${2:-}" ]; then
	seconds=$2
fi

tmp=""
pids=()
mounts=()
zk_pid=""

log() { printf 'bench_zk.sh: %s\n' "$*" >&2; }

is_mounted() {
	awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}

# shellcheck disable=SC2317  # reached through the traps
cleanup() {
	local rc=$? m p _
	trap - EXIT INT TERM HUP
	for m in "${mounts[@]}"; do
		is_mounted "$m" || continue
		fusermount3 -u "$m" 2>/dev/null || fusermount3 -u -z "$m" || true
	done
	for p in "${pids[@]}"; do
		for _ in $(seq 50); do
			kill -0 "$p" 2>/dev/null || break
			sleep 0.1
		done
		kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
		wait "$p" 2>/dev/null || true
	done
	if [ -n "$zk_pid" ]; then
		kill -KILL "$zk_pid" 2>/dev/null || true
		wait "$zk_pid" 2>/dev/null || true
	fi
	if [ -n "$tmp" ]; then
		for m in "${mounts[@]}"; do
			if is_mounted "$m"; then
				log "$m still mounted, leaving $tmp in place"
				exit "$rc"
			fi
		done
		rm -rf --one-file-system "$tmp"
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
floor=$build/tests/bench/zkfloor
for f in "$daemon" "$bench" "$floor"; do
	[ -x "$f" ] || { log "$f was not built"; exit 1; }
done
command -v java >/dev/null && [ -r /usr/share/java/zookeeper.jar ] ||
	{ log "ZooKeeper is missing (contrib/deps.sh: zookeeperd)"; exit 1; }
[ -e /dev/fuse ] || { log "/dev/fuse is missing: cannot mount"; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dlockfs-bench-zk.XXXXXX")
mkdir "$tmp/backing" "$tmp/a" "$tmp/b" "$tmp/zk" "$tmp/zk/data"
port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
cat >"$tmp/zk/zoo.cfg" <<CFG
tickTime=500
dataDir=$tmp/zk/data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
CFG
printf '%s\n' 'log4j.rootLogger=WARN, C' \
	'log4j.appender.C=org.apache.log4j.ConsoleAppender' \
	'log4j.appender.C.layout=org.apache.log4j.PatternLayout' >"$tmp/zk/log4j.properties"
java -Xmx512m -Dzookeeper.admin.enableServer=false \
	-Dlog4j.configuration="file:$tmp/zk/log4j.properties" \
	-cp "$tmp/zk:/usr/share/java/zookeeper.jar:/usr/share/java/*" \
	org.apache.zookeeper.server.quorum.QuorumPeerMain "$tmp/zk/zoo.cfg" \
	>"$tmp/zk/log" 2>&1 &
zk_pid=$!
zk_ask() {
	timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$port"' && printf %s "'"$1"'" >&3 && cat <&3' 2>/dev/null
}
for _ in $(seq 300); do
	zk_ask srvr | grep -q Mode: && break
	kill -0 "$zk_pid" 2>/dev/null || break
	sleep 0.1
done
zk_ask srvr | grep -q Mode: || { log "ZooKeeper did not start:"; tail "$tmp/zk/log" >&2; exit 1; }
log "ZooKeeper (pid $zk_pid) on 127.0.0.1:$port"

uri="zk://127.0.0.1:$port/bench"
for h in a b; do
	"$daemon" -f -o "backend=$uri,host_id=$h" "$tmp/backing" "$tmp/$h" \
		>"$tmp/$h.log" 2>&1 &
	pids+=("$!")
	mounts+=("$tmp/$h")
	for _ in $(seq 150); do
		is_mounted "$tmp/$h" && break
		kill -0 "${pids[-1]}" 2>/dev/null || break
		sleep 0.1
	done
	is_mounted "$tmp/$h" || { log "dlockfs $h did not mount:"; cat "$tmp/$h.log" >&2; exit 1; }
done
log "hosts a and b mounted on $tmp/a and $tmp/b"

echo "== lockbench on mount A (backend $uri)"
"$bench" --seconds "$seconds" "$tmp/a"
echo
echo "== cross-host ping-pong (A <-> B)"
"$bench" --pair --seconds "$seconds" "$tmp/a" "$tmp/b"
echo
echo "== 8-process throughput on mount A"
"$bench" --procs 8 --seconds "$seconds" "$tmp/a"
echo
echo "== floor: bare libzookeeper_mt against the same server"
"$floor" --seconds "$seconds" "127.0.0.1:$port"
