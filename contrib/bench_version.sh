#!/usr/bin/env bash
#
# bench_version.sh - the cost of optimistic concurrency (issue 14) on
# every backend, next to a plain flock-protected cycle on the same mount.
#
# Starts a redis-server, a standalone ZooKeeper and a PostgreSQL server on
# free loopback ports, mounts one dlockfs daemon per backend (local:,
# redis, zk, pg), each over its own temporary backing directory, and
# measures on each mount, one operation after the other (N each):
#   - write temp: create + write 64 bytes + close of the temp file (one
#     writing session: one bump of the temp name);
#   - dlockctl replace: `dlockctl replace --if-version V TMP F` (the
#     process, the lock, the version check, fsync, rename, two bumps);
#   - dlockctl read: `dlockctl read F` of a 64-byte file;
#   - dlockctl --version: the process start alone (no daemon involved);
#   - raw replace: os.setxattr(TMP, "user.dlock.replace", "V F") after
#     the same temp write, in one Python process (the daemon's cost);
#   - raw version: os.getxattr(F, "user.dlock.version");
#   - raw read: getxattr version, read, getxattr version; getxattr
#     user.dlock.locks alone; and the whole protocol of dlockctl read
#     (version, locks, read, locks, version);
#   - flock cycle: open, flock -x, read, write, close (one bump), in the
#     same Python process: the lock-based way to do the same update.
# Prints one table: p50 and p99 latency, operations per second (N over
# the time they took back to back).  Not run in CI.
# Whatever happens, the mounts are unmounted, our daemons and servers
# stopped (by PID) and the temporary directory removed.
#
# usage: contrib/bench_version.sh [--n N]
#        PG_BIN (default /usr/lib/postgresql/15/bin) names PostgreSQL's
#        binaries; PG_OSUSER (default postgres) the user it runs as

set -euo pipefail
BENCH_NAME=bench_version
# shellcheck source=bench_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
n=200
if [ "${1:-}" = "--n" ] && [ -n "${2:-}" ]; then
	n=$2
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

# as bench_pg.sh: unmount first, stop our PostgreSQL (fast shutdown, then
# SIGKILL of its pid), then bench_lib's cleanup
# shellcheck disable=SC2317  # reached through the trap
version_bench_exit() {
	local rc=$? _ m
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
trap version_bench_exit EXIT

bench_build fs/dlockfs fs/dlockctl
if ! command -v java >/dev/null || [ ! -r /usr/share/java/zookeeper.jar ]; then
	log "ZooKeeper is missing (contrib/deps.sh: zookeeperd)"
	exit 1
fi
[ -x "$PG_BIN/initdb" ] || { log "no PostgreSQL in $PG_BIN (contrib/deps.sh)"; exit 1; }
bench_tmp
chmod 755 "$tmp"

# ---- servers --------------------------------------------------------
bench_redis
redis_port=$port

# ZooKeeper, as bench_zk.sh starts it
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
zk_ask() {
	timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$zk_port"' && printf %s "'"$1"'" >&3 && cat <&3' 2>/dev/null
}
for _ in $(seq 300); do
	zk_ask srvr | grep -q Mode: && break
	kill -0 "$zk_pid" 2>/dev/null || break
	sleep 0.1
done
zk_ask srvr | grep -q Mode: || { log "ZooKeeper did not start:"; tail "$tmp/zk/log" >&2; exit 1; }
log "ZooKeeper (pid $zk_pid) on 127.0.0.1:$zk_port"

# PostgreSQL, as bench_pg.sh starts it
mkdir "$tmp/pg"
run_pg() { "$@"; }
if [ "$(id -u)" -eq 0 ]; then
	chown "$PG_OSUSER" "$tmp/pg"
	run_pg() { setpriv --reuid="$PG_OSUSER" --regid="$(id -g "$PG_OSUSER")" --init-groups "$@"; }
fi
run_pg "$PG_BIN/initdb" -D "$tmp/pg/data" -U postgres -A trust --no-sync >"$tmp/pg/initdb.log" 2>&1 ||
	{ log "initdb failed"; cat "$tmp/pg/initdb.log" >&2; exit 1; }
pg_port=$(bench_free_port)
# setpriv execs: $! is the postmaster itself
run_pg "$PG_BIN/postgres" -D "$tmp/pg/data" -p "$pg_port" -k "$tmp/pg" \
	-c listen_addresses=127.0.0.1 >"$tmp/pg/log" 2>&1 &
pgpid=$!
for _ in $(seq 100); do
	"$PG_BIN/pg_isready" -q -h "$tmp/pg" -p "$pg_port" && break
	sleep 0.1
done
"$PG_BIN/pg_isready" -q -h "$tmp/pg" -p "$pg_port" || { log "PostgreSQL did not start"; exit 1; }
psql -X -q -h "$tmp/pg" -p "$pg_port" -U postgres -c "CREATE ROLE bench LOGIN" \
	-c "CREATE DATABASE bench OWNER bench" postgres
log "PostgreSQL (pid $pgpid) on 127.0.0.1:$pg_port"
sock=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$tmp/pg")

# ---- one mount per backend ------------------------------------------
declare -A uri=(
	[local]="local:"
	[redis]="redis://127.0.0.1:$redis_port/bench"
	[zk]="zk://127.0.0.1:$zk_port/bench"
	[pg]="postgresql://bench@$sock:$pg_port/bench?schema=bench"
)
backends=(local redis zk pg)
for b in "${backends[@]}"; do
	mkdir "$tmp/backing-$b" "$tmp/m-$b"
	bench_mount "$tmp/backing-$b" "$tmp/m-$b" \
		"backend=${uri[$b]},host_id=bench-$b,socket=none"
	getfattr --absolute-names --only-values -n user.dlock.version "$tmp/m-$b" >/dev/null ||
		{ log "the $b mount answers no user.dlock.version"; exit 1; }
done
log "mounted: ${backends[*]} ($n operations each)"

# ---- measure ----------------------------------------------------------
measure() { # measure BACKEND MNT
	python3 - "$1" "$2" "$build/fs/dlockctl" "$n" <<'PY'
import fcntl, os, subprocess, sys, time

backend, mnt, ctl, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
F = os.path.join(mnt, "bench-target")
TMP = os.path.join(mnt, "bench-target.tmp")
SMALL = os.path.join(mnt, "bench-small")
BODY = b"x" * 63 + b"\n"


def put(path):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, BODY)
    os.close(fd)


def ver(path):
    return int(os.getxattr(path, "user.dlock.version"))


def ctl_run(*args):
    p = subprocess.run([ctl] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE)
    if p.returncode != 0:
        sys.exit("%s: dlockctl %s: exit %d: %s" % (
            backend, " ".join(args), p.returncode, p.stderr.decode().strip()))
    return p.stdout


def row(name, lat):
    lat.sort()
    k = len(lat)
    print("%-6s %-52s %5d %9.3f %9.3f %9.0f" % (
        backend, name, k, lat[k // 2] * 1e3,
        lat[min(k - 1, k * 99 // 100)] * 1e3, k / sum(lat)), flush=True)


def bench(fn):
    lat = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t0)
    return lat


put(F)
put(SMALL)
state = {"v": ver(F)}

# the replace cycle, its two halves timed apart
wr, rp = [], []
for _ in range(n):
    t0 = time.perf_counter()
    put(TMP)
    t1 = time.perf_counter()
    out = ctl_run("replace", "--if-version", str(state["v"]), TMP, F)
    t2 = time.perf_counter()
    state["v"] = int(out.split()[0])
    wr.append(t1 - t0)
    rp.append(t2 - t1)
row("write temp (create, write 64 B, close)", wr)
row("dlockctl replace --if-version", rp)
row("dlockctl read (64 B)", bench(lambda: ctl_run("read", SMALL)))
row("dlockctl --version (process start only)", bench(lambda: ctl_run("--version")))


def raw_replace():
    put(TMP)
    os.setxattr(TMP, "user.dlock.replace", b"%d bench-target" % state["v"])
    state["v"] += 1


row("raw: write temp + setxattr replace", bench(raw_replace))
if ver(F) != state["v"]:
    sys.exit("%s: version %d after the replaces, expected %d" % (
        backend, ver(F), state["v"]))
row("raw: getxattr version", bench(lambda: ver(SMALL)))


def raw_read():
    v1 = ver(SMALL)
    with open(SMALL, "rb") as f:
        f.read()
    if ver(SMALL) != v1:
        sys.exit("the version changed under a read")


row("raw: getxattr version, read, getxattr version", bench(raw_read))
row("raw: getxattr locks", bench(lambda: os.getxattr(SMALL, "user.dlock.locks")))


def raw_read_protocol():
    v1 = ver(SMALL)
    os.getxattr(SMALL, "user.dlock.locks")
    with open(SMALL, "rb") as f:
        f.read()
    os.getxattr(SMALL, "user.dlock.locks")
    if ver(SMALL) != v1:
        sys.exit("the version changed under a read")


row("raw: version, locks, read, locks, version", bench(raw_read_protocol))


def flock_cycle():
    fd = os.open(F, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.pread(fd, 4096, 0)
    os.pwrite(fd, BODY, 0)
    os.close(fd)


row("flock cycle: open, flock -x, read, write, close", bench(flock_cycle))
PY
}

printf '%-6s %-52s %5s %9s %9s %9s\n' backend operation n "p50 ms" "p99 ms" "ops/s"
for b in "${backends[@]}"; do
	measure "$b" "$tmp/m-$b"
done
