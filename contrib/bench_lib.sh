# bench_lib.sh - what the benchmark scripts share (bash, sourced under
# `set -euo pipefail` with BENCH_NAME set): the build, a temporary
# directory, dlockfs daemons and servers started in the background, and one
# EXIT trap that unmounts what was mounted, stops what was started (by PID,
# never by name) and removes the temporary directory, whatever happens.
# It never recurses into a live mount: that would empty a backing dir.

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
build=${BUILD:-$repo/build}
tmp=""
pids=()	   # our dlockfs daemons: unmounting ends them; killed if they linger
servers=() # our backend servers: killed
mounts=()

log() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; }

# from the mount table, not stat(): a dead daemon's mount fails every stat
is_mounted() {
	awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}

# shellcheck disable=SC2317  # reached through the traps
bench_cleanup() {
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
	for p in "${servers[@]}"; do
		kill -KILL "$p" 2>/dev/null || true
		wait "$p" 2>/dev/null || true
	done
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
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# bench_build PROGRAM... - build (configure first if needed); each PROGRAM,
# a path below the build directory, must then exist
bench_build() {
	local f
	if [ ! -f "$build/build.ninja" ]; then
		log "configuring $build"
		meson setup "$build" >&2
	fi
	ninja -C "$build" >&2
	for f in "$@"; do
		[ -x "$build/$f" ] || { log "$build/$f was not built"; exit 1; }
	done
	[ -e /dev/fuse ] || { log "/dev/fuse is missing: cannot mount"; exit 1; }
}

# bench_tmp - make the temporary directory $tmp
bench_tmp() {
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/dlockfs-$BENCH_NAME.XXXXXX")
}

bench_free_port() {
	python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"
}

# bench_mount BACKING MNT OPTS - start dlockfs -f (so it stays our child)
# and wait, at most 10 s, for MNT to be mounted
bench_mount() {
	local backing=$1 mnt=$2 opts=$3 out _
	out=$tmp/$(basename "$mnt").log
	"$build/fs/dlockfs" -f -o "$opts" "$backing" "$mnt" >"$out" 2>&1 &
	pids+=("$!")
	mounts+=("$mnt")
	for _ in $(seq 100); do
		is_mounted "$mnt" && return 0
		kill -0 "${pids[-1]}" 2>/dev/null || break
		sleep 0.1
	done
	log "dlockfs did not mount $mnt:"
	cat "$out" >&2
	exit 1
}

# bench_redis - start redis-server on a free loopback port in $tmp/redis;
# sets $port
bench_redis() {
	command -v redis-server >/dev/null ||
		{ log "redis-server is missing (contrib/deps.sh)"; exit 1; }
	mkdir -p "$tmp/redis"
	port=$(bench_free_port)
	redis-server --save '' --appendonly no --dir "$tmp/redis" \
		--bind 127.0.0.1 --port "$port" --daemonize no \
		>"$tmp/redis/log" 2>&1 &
	servers+=("$!")
	for _ in $(seq 100); do
		redis-cli -p "$port" ping 2>/dev/null | grep -q PONG && break
		sleep 0.1
	done
	redis-cli -p "$port" ping | grep -q PONG ||
		{ log "redis-server did not start"; exit 1; }
	log "redis-server (pid ${servers[-1]}) on 127.0.0.1:$port"
}

# bench_two_hosts URI SECONDS - mount hosts a and b on URI over
# $tmp/backing at $tmp/a and $tmp/b, then measure: lockbench on mount A
# (uncontended cycles, same-host ping-pong, FUSE round trip), the
# cross-host ping-pong A <-> B, and 8-process throughput on mount A
bench_two_hosts() {
	local uri=$1 seconds=$2 h bench=$build/tests/bench/lockbench
	for h in a b; do
		bench_mount "$tmp/backing" "$tmp/$h" "backend=$uri,host_id=$h"
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
}

# bench_sqlite DIR SECONDS - small SQLite transactions (one INSERT each,
# default rollback journal) in DIR for SECONDS: prints tx/s and p50/p99 ms
bench_sqlite() {
	python3 - "$1" "$2" <<'PY'
import os, sqlite3, sys, time
d, secs = sys.argv[1], float(sys.argv[2])
path = os.path.join(d, "bench-%d.db" % os.getpid())
db = sqlite3.connect(path, isolation_level=None, timeout=30)
db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
lat = []
end = time.monotonic() + secs
while time.monotonic() < end and len(lat) < 20000:
    t0 = time.monotonic()
    db.execute("BEGIN")
    db.execute("INSERT INTO t (v) VALUES ('x')")
    db.execute("COMMIT")
    lat.append(time.monotonic() - t0)
db.close()
for suffix in ("", "-journal"):
    try:
        os.unlink(path + suffix)
    except OSError:
        pass
lat.sort()
n = len(lat)
print("  %-34s %8.0f tx/s   p50 %7.3f ms   p99 %7.3f ms   (%d tx)" % (
    d, n / sum(lat), lat[n // 2] * 1e3, lat[min(n - 1, n * 99 // 100)] * 1e3, n))
PY
}

# bench_cache URI SECONDS - same-host caching (-o cache=on) on URI next to
# cache off (mount $tmp/a, from bench_two_hosts) and local: (a mount of its
# own): the uncontended cycle, SQLite transactions on one host, the
# cross-host ping-pong (every handoff is a revocation or a grant through
# the store), three hosts each on its own file at once
bench_cache() {
	local uri=$1 seconds=$2 h bench=$build/tests/bench/lockbench
	mkdir -p "$tmp/lbacking" "$tmp/l" "$tmp/c" "$tmp/d" "$tmp/e"
	bench_mount "$tmp/lbacking" "$tmp/l" "backend=local:,host_id=l"
	for h in c d e; do
		bench_mount "$tmp/backing" "$tmp/$h" \
			"backend=$uri,host_id=$h,cache=on,socket=none"
	done
	log "cache=on hosts c, d, e mounted; local: on $tmp/l"

	echo "== same-host caching: local: [1], cache off [2], cache on [3]"
	"$bench" --seconds "$seconds" "$tmp/l" "$tmp/a" "$tmp/c"
	echo
	echo "== SQLite, one INSERT per transaction, one host"
	bench_sqlite "$tmp/l" "$seconds"
	bench_sqlite "$tmp/a" "$seconds"
	bench_sqlite "$tmp/c" "$seconds"
	echo
	echo "== cross-host ping-pong with cache=on (C <-> D): revocations"
	"$bench" --pair --seconds "$seconds" "$tmp/c" "$tmp/d"
	echo
	echo "== three cache=on hosts at once, each on its own file (a, b, c:"
	echo "   the uncontended fcntl cycle of each, then local: alone)"
	local three=()
	for h in c d e; do
		mkdir -p "$tmp/$h/own-$h"
		"$bench" --seconds "$seconds" "$tmp/$h/own-$h" \
			>"$tmp/three-$h.out" 2>/dev/null &
		three+=("$!")
	done
	wait "${three[@]}" # not the daemons: they are our children too
	for h in c d e; do
		printf '  host %s: ' "$h"
		awk '/^\(a\)/ { a = 1 } a && /cycles\/s/ { print $2 " cycles/s"; exit }' \
			"$tmp/three-$h.out"
	done
	printf '  local: alone: '
	"$bench" --seconds "$seconds" "$tmp/l" 2>/dev/null |
		awk '/^\(a\)/ { a = 1 } a && /cycles\/s/ { print $2 " cycles/s"; exit }'
	echo
}
