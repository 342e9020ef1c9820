#!/bin/bash
# redis_cache.sh - same-host lock caching (-o cache=on) across two hosts on
# Redis: what the cache itself must get right, beyond the suite (which runs
# with the cache on by default, and once more with cache=off).
#
#  - a file locked on host a is cached there (no record of its locks in
#    Redis, one right); host b's non-blocking request on bytes a does not
#    hold is granted at once, on bytes a holds it gets EAGAIN (a's exact
#    locks were written back at the revocation);
#  - b's blocking request waits only for a's conflicting range and is
#    granted when a's process unlocks;
#  - a's daemon killed with -9 while it caches a file it holds nothing on:
#    b's F_GETLK reports a's whole-file right and b's non-blocking request
#    gets EAGAIN (each after at most about a second waiting for an
#    answer), its blocking one waits at most for the lease
#    (ttl_ms=6000, lock-delay 1000 ms);
#  - the status and the metrics count the revocations;
#  - a listing (user.dlock.locks) on b of a file a caches shows a's exact
#    locks (the listing takes the file back first);
#  - a third host c with cache=off shares the cluster safely: it takes a
#    file a caches back before its first request there (EAGAIN on a's
#    bytes, a grant on others, a wait only for a's range), and caches
#    nothing itself.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/redis_lib.sh"
dl_init redis_cache
rd_require

dl_tmpdir base
rd_start port
uri="redis://127.0.0.1:$port/rc$$?ttl_ms=6000&lock_delay_ms=1000"
mkdir "$base/backing"
MA=$base/mnt-a MB=$base/mnt-b
mkdir "$MA" "$MB"
mport=$(rd_free_port)
dl_mount "$base/backing" "$MA" "backend=$uri,host_id=a,cache=on,socket=none,metrics=127.0.0.1:$mport"
PA=$DL_LAST_PID
dl_mount "$base/backing" "$MB" "backend=$uri,host_id=b,cache=on,socket=none"
MC=$base/mnt-c
mkdir "$MC"
dl_mount "$base/backing" "$MC" "backend=$uri,host_id=c,cache=off,socket=none"

status() { getfattr --absolute-names --only-values -n user.dlock.status "$1"; }

# hold START LEN on FILE in the background until STOP exists
hold() { # FILE START LEN READY STOP
	python3 - "$@" <<'PY' &
import fcntl, os, sys, time
f, s, n, ready, stop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX, n, s)
open(ready, "w").close()
while not os.path.exists(stop):
    time.sleep(0.01)
fcntl.lockf(fd, fcntl.LOCK_UN, n, s)
PY
	dl_job $!
}

# try FILE START LEN [wait]: prints ok or EAGAIN
try() {
	python3 - "$@" <<'PY'
import errno, fcntl, os, sys
f, s, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
flags = fcntl.LOCK_EX | (0 if len(sys.argv) > 4 else fcntl.LOCK_NB)
try:
    fcntl.lockf(fd, flags, n, s)
    print("ok")
except OSError as e:
    print(errno.errorcode[e.errno])
PY
}

dl_log "a caches a file it locks"
hold "$MA/f" 0 10 "$base/ready1" "$base/stop1"
dl_wait_for 10 test -e "$base/ready1" || dl_fail "a's holder did not lock"
st=$(status "$MA")
[[ $st == *" cached=1 "* ]] || dl_fail "a does not cache f: $st"
left=$(rd_cli "$port" --scan --pattern "rc$$:g:f")
[[ -z $left ]] || dl_fail "a cached lock is in Redis already: $left"

dl_log "b: the right answer at once, on exact records"
out=$(try "$MB/f" 20 10)
[[ $out == ok ]] || dl_fail "b's lock on bytes a does not hold: $out"
out=$(try "$MB/f" 5 10)
[[ $out == EAGAIN || $out == EACCES ]] || dl_fail "b got bytes a holds: $out"
st=$(status "$MA")
[[ $st == *" revocations=1 "* ]] || dl_fail "a's status counts no revocation: $st"
m=$(curl -sf "http://127.0.0.1:$mport/metrics") || dl_fail "no metrics from a"
grep -qx 'dlockfs_cache_revocations_total 1' <<<"$m" &&
	grep -qx 'dlockfs_cache_rights_taken_total 1' <<<"$m" &&
	grep -q '^dlockfs_cache_local_grants_total [1-9]' <<<"$m" ||
	dl_fail "a's cache metrics: $(grep dlockfs_cache <<<"$m")"

dl_log "a listing on b shows a's exact locks under its right"
hold "$MA/f2" 0 10 "$base/ready2" "$base/stop2"
dl_wait_for 10 test -e "$base/ready2" || dl_fail "a's holder did not lock f2"
locks=$(getfattr --absolute-names --only-values -n user.dlock.locks "$MB/f2")
grep -q '^posix exclusive 0-9 host=a pid=[1-9]' <<<"$locks" ||
	dl_fail "b's listing of f2 does not show a's lock: $locks"
touch "$base/stop2"

dl_log "b's blocking request waits only for a's range"
python3 - "$MB/f" "$base/got" <<'PY' &
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 5)
open(sys.argv[2], "w").close()
PY
waiter=$!
dl_job $waiter
dl_wait_for 2 test -e "$base/got" && dl_fail "b was granted a range a holds"
touch "$base/stop1"
dl_wait_for 10 test -e "$base/got" || dl_fail "b was not granted after a unlocked"
wait "$waiter"

dl_log "c (cache=off) asks a file a caches back before it decides"
hold "$MA/m" 0 10 "$base/ready3" "$base/stop3"
dl_wait_for 10 test -e "$base/ready3" || dl_fail "a's holder did not lock m"
[[ $(status "$MA") =~ \ cached=[1-9] ]] || dl_fail "a does not cache m: $(status "$MA")"
out=$(try "$MC/m" 5 10)
[[ $out == EAGAIN || $out == EACCES ]] || dl_fail "c (cache=off) got bytes a holds under its right: $out"
out=$(try "$MC/m" 20 10)
[[ $out == ok ]] || dl_fail "c's lock on bytes a does not hold: $out"
timeout 20 bash -c "$(declare -f try); try '$MC/m' 5 10 wait" >"$base/c.out" 2>&1 &
cw=$!
dl_job "$cw"
dl_wait_for 2 test -s "$base/c.out" && dl_fail "c was granted a range a holds: $(cat "$base/c.out")"
touch "$base/stop3"
dl_wait_for 10 test -s "$base/c.out" || dl_fail "c was not granted after a unlocked"
[[ $(cat "$base/c.out") == ok ]] || dl_fail "c's blocking request: $(cat "$base/c.out")"
st=$(status "$MC")
[[ $st == *" cache=off cached=0 "* ]] || dl_fail "c's status: $st"
out=$(try "$MC/m2" 0 0)
[[ $out == ok && $(status "$MC") == *" cached=0 "* ]] || dl_fail "c (cache=off) cached m2: $(status "$MC")"

dl_log "a killed -9 while caching a file it holds nothing on"
out=$(try "$MA/g" 0 0) # a caches g, then holds nothing there
[[ $out == ok ]] || dl_fail "a could not lock g: $out"
# the try exited: its lock is gone, the right stays for cache_idle_ms
st=$(status "$MA")
[[ $st == *" cached=1 "* ]] || dl_fail "a does not cache g: $st"
kill -KILL "$PA"
wait "$PA" 2>/dev/null || true
fusermount3 -u "$MA" 2>/dev/null || umount -l "$MA" 2>/dev/null || true
t0=$(date +%s%N)
# F_GETLK: the dead host's whole-file right is what conflicts (after a
# bounded wait for an answer; the FUSE worker is not held for the lease)
out=$(python3 - "$MB/g" <<'PY'
import fcntl, os, struct, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
t0 = time.monotonic()
r = fcntl.fcntl(fd, fcntl.F_GETLK,
                struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0) + bytes(4))
t, _, start, length, pid = struct.unpack("hhqqi", r[:28])
print("%s %d %d %.1f" % ("W" if t == fcntl.F_WRLCK else t, start, length,
                         time.monotonic() - t0))
PY
)
read -r typ start len secs <<<"$out"
[[ $typ == W && $start == 0 && $len == 0 ]] ||
	dl_fail "b's F_GETLK on a file a dead host caches: $out"
python3 -c "import sys; sys.exit(0 if float('$secs') < 3 else 1)" ||
	dl_fail "b's F_GETLK waited $secs s for a dead host"
# a non-blocking request: the dead host's right still holds the file (its
# lease runs): EAGAIN after a bounded wait for an answer, not a grant
out=$(try "$MB/g" 0 0)
[[ $out == EAGAIN || $out == EACCES ]] ||
	dl_fail "b's trylock on a file a dead host caches: $out"
out=$(timeout 20 bash -c "$(declare -f try); try '$MB/g' 0 0 wait" 2>&1) || dl_fail "b: $out"
t1=$(date +%s%N)
[[ $out == ok ]] || dl_fail "b could not lock g after a died: $out"
ms=$(((t1 - t0) / 1000000))
dl_log "b got g ${ms} ms after a died"
((ms < 15000)) || dl_fail "b waited ${ms} ms for a dead host's right (lease 6 s)"

dl_pass
