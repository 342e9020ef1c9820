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
# shellcheck source-path=SCRIPTDIR source=bench_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
n=$(bench_arg --n 200 "$@")

bench_build fs/dlockfs fs/dlockctl
bench_need_zk
bench_need_pg
bench_tmp

# ---- servers --------------------------------------------------------
bench_redis
redis_port=$port
bench_zk_start
bench_pg_start

# ---- one mount per backend ------------------------------------------
declare -A uri=(
	[local]="local:"
	[redis]="redis://127.0.0.1:$redis_port/bench"
	[zk]="zk://127.0.0.1:$zk_port/bench"
	[pg]="$pg_uri"
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
