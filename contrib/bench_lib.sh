# shellcheck shell=bash
# bench_lib.sh - what the benchmark scripts share (bash, sourced under
# `set -euo pipefail` with BENCH_NAME set): the build, a temporary
# directory, dlockfs daemons and servers (redis-server, ZooKeeper,
# PostgreSQL) started in the background, and one EXIT trap that unmounts
# what was mounted, then stops what was started (by PID, never by name)
# and removes the temporary directory, whatever happens.
# It never recurses into a live mount: that would empty a backing dir.

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit
repo=$PWD
build=${BUILD:-$repo/build}
tmp=""
pids=()	   # our dlockfs daemons: unmounting ends them; killed if they linger
servers=() # our backend servers: killed
pg_pid=""  # our PostgreSQL postmaster: fast shutdown, killed if it lingers
mounts=()
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_OSUSER=${PG_OSUSER:-postgres}

log() { printf '%s: %s\n' "$BENCH_NAME" "$*" >&2; }

# from the mount table, not stat(): a dead daemon's mount fails every stat
is_mounted() {
	awk -v m="$1" '$5 == m { f = 1 } END { exit !f }' /proc/self/mountinfo
}

# alive and not a zombie (a server is our child until we wait for it)
running() {
	local s
	s=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
	[ -n "$s" ] && [ "${s#Z}" = "$s" ]
}

# the one cleanup chain: unmount, wait for our daemons, stop our servers
# (PostgreSQL first, by a fast shutdown), remove the temporary directory
# shellcheck disable=SC2317  # reached through the traps
bench_cleanup() {
	local rc=$? m p _
	set +e # every step runs, whatever an earlier one did
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
	bench_pg_stop
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

# bench_arg OPTION DEFAULT ARG... - the value after OPTION when the
# arguments start with OPTION VALUE, else DEFAULT
bench_arg() {
	if [ "${3:-}" = "$1" ] && [ -n "${4:-}" ]; then
		echo "$4"
	else
		echo "$2"
	fi
}

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

# bench_need_zk, bench_need_pg - fail before anything is started when
# ZooKeeper or PostgreSQL ($PG_BIN) is not installed
bench_need_zk() {
	if ! command -v java >/dev/null || [ ! -r /usr/share/java/zookeeper.jar ]; then
		log "ZooKeeper is missing (contrib/deps.sh: zookeeperd)"
		exit 1
	fi
}

bench_need_pg() {
	[ -x "$PG_BIN/initdb" ] || { log "no PostgreSQL in $PG_BIN (contrib/deps.sh)"; exit 1; }
}

# bench_zk_ask WORD - send a four-letter word to our ZooKeeper, print the answer
bench_zk_ask() {
	timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$zk_port"' && printf %s "'"$1"'" >&3 && cat <&3' 2>/dev/null
}

# bench_zk_start - start a standalone ZooKeeper on a free loopback port in
# $tmp/zk and wait, at most 30 s, until it serves; sets $zk_port and
# $zk_pid (a server: SIGKILLed by bench_cleanup)
bench_zk_start() {
	local _
	mkdir -p "$tmp/zk/data"
	zk_port=$(bench_free_port)
	cat >"$tmp/zk/zoo.cfg" <<CFG
tickTime=500
dataDir=$tmp/zk/data
clientPort=$zk_port
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
	servers+=("$zk_pid")
	for _ in $(seq 300); do
		bench_zk_ask srvr | grep -q Mode: && break
		kill -0 "$zk_pid" 2>/dev/null || break
		sleep 0.1
	done
	bench_zk_ask srvr | grep -q Mode: || { log "ZooKeeper did not start:"; tail "$tmp/zk/log" >&2; exit 1; }
	log "ZooKeeper (pid $zk_pid) on 127.0.0.1:$zk_port"
}

# bench_pg_start - initdb into $tmp/pg/data (as $PG_OSUSER when we are
# root) and start PostgreSQL on a free loopback port, its Unix socket in
# $tmp/pg, with an ordinary role bench owning a database bench; sets
# $pg_port, $pg_pid and $pg_uri (dlockfs's backend=, through the socket)
bench_pg_start() {
	local as=() sock _
	mkdir "$tmp/pg"
	chmod 755 "$tmp"
	if [ "$(id -u)" -eq 0 ]; then
		chown "$PG_OSUSER" "$tmp/pg"
		as=(setpriv --reuid="$PG_OSUSER" --regid="$(id -g "$PG_OSUSER")" --init-groups)
	fi
	"${as[@]}" "$PG_BIN/initdb" -D "$tmp/pg/data" -U postgres -A trust --no-sync >"$tmp/pg/initdb.log" 2>&1 ||
		{ log "initdb failed"; cat "$tmp/pg/initdb.log" >&2; exit 1; }
	pg_port=$(bench_free_port)
	# a simple command (not a function: that would fork a subshell) and
	# setpriv execs: $! is the postmaster itself
	"${as[@]}" "$PG_BIN/postgres" -D "$tmp/pg/data" -p "$pg_port" -k "$tmp/pg" \
		-c listen_addresses=127.0.0.1 >"$tmp/pg/log" 2>&1 &
	pg_pid=$!
	for _ in $(seq 100); do
		"$PG_BIN/pg_isready" -q -h "$tmp/pg" -p "$pg_port" && break
		sleep 0.1
	done
	"$PG_BIN/pg_isready" -q -h "$tmp/pg" -p "$pg_port" || { log "PostgreSQL did not start"; exit 1; }
	psql -X -q -h "$tmp/pg" -p "$pg_port" -U postgres -c "CREATE ROLE bench LOGIN" \
		-c "CREATE DATABASE bench OWNER bench" postgres
	log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') (pid $pg_pid) on 127.0.0.1:$pg_port"
	sock=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$tmp/pg")
	# shellcheck disable=SC2034  # for the scripts
	pg_uri="postgresql://bench@$sock:$pg_port/bench?schema=bench"
}

# bench_pg_stop - stop our PostgreSQL if it runs: a fast shutdown (SIGINT
# to the postmaster, which ends its backends), SIGKILL after 10 s
# shellcheck disable=SC2317  # reached through the traps
bench_pg_stop() {
	local _
	[ -n "$pg_pid" ] || return 0
	if running "$pg_pid"; then
		kill -INT "$pg_pid" 2>/dev/null || true
		for _ in $(seq 100); do
			running "$pg_pid" || break
			sleep 0.1
		done
		running "$pg_pid" && kill -KILL "$pg_pid" 2>/dev/null
	fi
	wait "$pg_pid" 2>/dev/null || true
	pg_pid=""
}

# bench_two_hosts URI SECONDS - mount hosts a and b on URI with cache=off
# (every lock a round trip: the backend's own numbers) over $tmp/backing
# at $tmp/a and $tmp/b, then measure: lockbench on mount A
# (uncontended cycles, same-host ping-pong, FUSE round trip), the
# cross-host ping-pong A <-> B, and 8-process throughput on mount A
bench_two_hosts() {
	local uri=$1 seconds=$2 h bench=$build/tests/bench/lockbench
	for h in a b; do
		bench_mount "$tmp/backing" "$tmp/$h" "backend=$uri,host_id=$h,cache=off"
	done
	log "hosts a and b (cache=off) mounted on $tmp/a and $tmp/b"

	echo "== lockbench on mount A (backend $uri, cache=off)"
	"$bench" --seconds "$seconds" "$tmp/a"
	echo
	echo "== cross-host ping-pong (A <-> B)"
	"$bench" --pair --seconds "$seconds" "$tmp/a" "$tmp/b"
	echo
	echo "== 8-process throughput on mount A"
	"$bench" --procs 8 --seconds "$seconds" "$tmp/a"
	echo
}

# bench_far SERVER_PORT - start a delayproxy in front of SERVER_PORT: the
# server "on another machine", BENCH_FAR_US (default 250) each way, a
# 0.5 ms round trip more, as on a LAN; sets $far_port.  Through it, the
# callers are bound by the link and not by this box's cores: 8 processes
# on 8 files through one daemon against 8 bare clients shows whether the
# daemon keeps a request of every caller in flight
bench_far() {
	local out=$tmp/far-$1.out
	far_port=$(bench_free_port)
	"$build/tests/bench/delayproxy" "${BENCH_FAR_US:-250}" "$far_port" "$1" >"$out" 2>&1 &
	servers+=("$!")
	for _ in $(seq 50); do
		grep -q ready "$out" 2>/dev/null && break
		sleep 0.1
	done
	grep -q ready "$out" || { log "delayproxy did not start: $(cat "$out")"; exit 1; }
	log "delayproxy (pid ${servers[-1]}) on 127.0.0.1:$far_port: ${BENCH_FAR_US:-250} us each way to port $1"
}

# bench_far_procs URI SECONDS - mount host f on URI (the delayproxy's
# port, cache=off) at $tmp/f and run 8 processes on one file and on 8
bench_far_procs() {
	mkdir -p "$tmp/f"
	bench_mount "$tmp/backing" "$tmp/f" "backend=$1,host_id=f,cache=off"
	echo "== 8-process throughput through a ${BENCH_FAR_US:-250} us link each way (host f, cache=off)"
	"$build/tests/bench/lockbench" --procs 8 --seconds "$2" "$tmp/f"
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
	mkdir -p "$tmp/lbacking" "$tmp/l" "$tmp/c" "$tmp/d" "$tmp/e" "$tmp/v"
	bench_mount "$tmp/lbacking" "$tmp/l" "backend=local:,host_id=l"
	for h in c d e; do
		bench_mount "$tmp/backing" "$tmp/$h" \
			"backend=$uri,host_id=$h,cache=on,socket=none"
	done
	# what the file versions cost a cached host: no bump at all
	bench_mount "$tmp/backing" "$tmp/v" \
		"backend=$uri,host_id=v,cache=on,versions=off,socket=none"
	log "cache=on hosts c, d, e (and v, versions=off) mounted; local: on $tmp/l"

	echo "== same-host caching: local: [1], cache off [2], cache on [3]"
	"$bench" --seconds "$seconds" "$tmp/l" "$tmp/a" "$tmp/c"
	echo
	echo "== SQLite, one INSERT per transaction, one host: local:, cache"
	echo "   off, cache on, cache on with versions=off"
	bench_sqlite "$tmp/l" "$seconds"
	bench_sqlite "$tmp/a" "$seconds"
	bench_sqlite "$tmp/c" "$seconds"
	bench_sqlite "$tmp/v" "$seconds"
	echo
	echo "== cross-host ping-pong with cache=on (C <-> D): revocations"
	"$bench" --pair --seconds "$seconds" "$tmp/c" "$tmp/d"
	echo
	echo "== three cache=on hosts at once, each on its own file (c, d, e:"
	echo "   the uncontended fcntl cycle of each); then three lockers at"
	echo "   once on local: (local speed for three at once on these two"
	echo "   cores); then local: alone"
	bench_three "$tmp/c/own-c" "$tmp/d/own-d" "$tmp/e/own-e"
	bench_three "$tmp/l/own-1" "$tmp/l/own-2" "$tmp/l/own-3"
	printf '  local: alone: '
	"$bench" --seconds "$seconds" "$tmp/l" 2>/dev/null | bench_cycles
	echo
}

# the uncontended fcntl cycles/s in lockbench's table on stdin
bench_cycles() {
	awk '/^\(a\)/ { a = 1 } a && /cycles\/s/ { print $2 " cycles/s"; exit }'
}

# bench_three DIR... - a lockbench in each DIR (made if missing; their
# last components differ) at once for $seconds; prints each one's
# uncontended fcntl cycles/s
bench_three() {
	local d pids=()
	for d in "$@"; do
		mkdir -p "$d"
		"$build/tests/bench/lockbench" --seconds "$seconds" "$d" \
			>"$tmp/three-${d##*/}.out" 2>/dev/null &
		pids+=("$!")
	done
	wait "${pids[@]}" # not the daemons: they are our children too
	for d in "$@"; do
		printf '  %s: ' "$d"
		bench_cycles <"$tmp/three-${d##*/}.out"
		rm -f "$tmp/three-${d##*/}.out"
	done
}
