#!/bin/bash
# redis_cache_races.sh - same-host caching (-o cache=on) under races, three
# hosts on Redis (cache_idle_ms=50, so rights come and go):
#
#  1. three hosts alternate on one counter file, in bursts (a revocation
#     every few bursts): the counter is exact;
#  2. a revocation racing a local close: host a's process locks and closes
#     at once while host b asks; b is always granted, nothing is left;
#  3. a revocation racing a signal: a's second process waits behind a's
#     first (a local wait, moved to Redis by b's request) and is
#     interrupted: no queued record is left in Redis;
#  4. a revocation while a's connections to Redis are cut (CLIENT KILL): b's
#     request is served once a is back (b asks again every second), and a's
#     process still holds its lock;
#  5. a poke that arrives while the right is on its way: host d takes in
#     each exclusive right it is granted 400 ms late (a test fault), b's
#     trylock of a free range, made in that window, is granted at once
#     (the poke was dropped: b waited for the next one, a second, and got
#     EAGAIN on a byte nobody held).
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/redis_lib.sh"
dl_init redis_cache_races
rd_require
dl_require_prog ss

dl_tmpdir base
rd_start port
P=rr$$
# a lease long enough to outlive the reconnection of case 4
uri="redis://127.0.0.1:$port/$P?ttl_ms=10000&lock_delay_ms=1000"
mkdir "$base/backing"
for h in a b c; do
	mkdir "$base/m$h"
	dl_mount "$base/backing" "$base/m$h" \
		"backend=$uri,host_id=$h,cache=on,cache_idle_ms=50,socket=none"
	eval "PID_$h=\$DL_LAST_PID"
done
X=$base/x.py
cat >"$X" <<'PY'
import errno, fcntl, os, signal, sys, time

def counter(path, n, burst):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    done = 0
    while done < n:
        for _ in range(min(burst, n - done)):
            fcntl.lockf(fd, fcntl.LOCK_EX)
            v = int(os.pread(fd, 32, 0).decode() or 0)
            os.pwrite(fd, b"%-31d" % (v + 1), 0)
            fcntl.lockf(fd, fcntl.LOCK_UN)
            done += 1
        time.sleep(0.02 * (1 + os.getpid() % 5))

def lock_close(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    os.close(fd)

def lock_wait(path, secs):
    # blocking whole-file lock, given up after secs with a signal
    def interrupted(*a):
        raise InterruptedError(errno.EINTR, "EINTR")
    signal.signal(signal.SIGALRM, interrupted)
    signal.setitimer(signal.ITIMER_REAL, secs)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        print("ok")
    except OSError as e:
        print(errno.errorcode[e.errno])

def hold(path, ready, stop):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
    open(ready, "w").close()
    while not os.path.exists(stop):
        time.sleep(0.01)
    os.pwrite(fd, b"still mine", 0)
    print("wrote")

def range_wait(path, start, n):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX, n, start)
    print("ok")

def range_try(path, start, n):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, n, start)
        print("ok")
    except OSError as e:
        print(errno.errorcode[e.errno])

cmd = sys.argv[1]
if cmd == "counter":
    counter(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
elif cmd == "lock_close":
    lock_close(sys.argv[2])
elif cmd == "lock_wait":
    lock_wait(sys.argv[2], float(sys.argv[3]))
elif cmd == "hold":
    hold(sys.argv[2], sys.argv[3], sys.argv[4])
elif cmd == "range_wait":
    range_wait(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
elif cmd == "range_try":
    range_try(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
PY

left_in_redis() { rd_cli "$port" --scan --pattern "$P:[gw]:*" | grep -v ':g://right/' | head -5; }
queued_in_redis() { rd_cli "$port" --scan --pattern "$P:w:*" | head -5; }
none_queued() { [[ -z $(queued_in_redis) ]]; }

dl_log "1. three hosts alternate on one counter, in bursts"
pids=()
for h in a b c; do
	timeout 120 python3 "$X" counter "$base/m$h/counter" 100 10 &
	pids+=("$!")
done
for p in "${pids[@]}"; do wait "$p" || dl_fail "a counter process failed"; done
v=$(tr -d ' ' <"$base/backing/counter")
[[ $v == 300 ]] || dl_fail "the counter is $v, expected 300 (lost updates)"
revs=0
for h in a b c; do
	st=$(getfattr --absolute-names --only-values -n user.dlock.status "$base/m$h")
	n=$(sed -n 's/.* revocations=\([0-9]*\) .*/\1/p' <<<"$st")
	revs=$((revs + ${n:-0}))
done
dl_log "counter exact (300), $revs revocations"
((revs > 0)) || dl_fail "no revocation happened: the test did not test the cache"

dl_log "2. a revocation racing a local close"
for i in $(seq 10); do
	python3 "$X" lock_close "$base/ma/close" &
	closer=$!
	out=$(timeout 20 python3 "$X" lock_wait "$base/mb/close" 15) || true
	wait "$closer" || dl_fail "round $i: a's lock and close failed"
	[[ $out == ok ]] || dl_fail "round $i: b was not granted after a closed: '$out'"
done

dl_log "3. a revocation racing a signal"
touch "$base/ma/sig"
python3 "$X" hold "$base/ma/sig" "$base/ready3" "$base/stop3" >"$base/hold3.out" &
holder=$!
dl_job "$holder"
dl_wait_for 10 test -e "$base/ready3" || dl_fail "a's holder did not lock"
# a's second process waits behind the first (a local wait), b asks for a
# range nobody holds (the revocation moves the wait to Redis), then the
# waiter's signal comes
python3 "$X" lock_wait "$base/ma/sig" 1.5 >"$base/wait3.out" &
waiter=$!
out=$(timeout 20 python3 "$X" range_wait "$base/mb/sig" 100 10) || true
[[ $out == ok ]] || dl_fail "b's lock on a free range: '$out'"
wait "$waiter" || true
[[ $(cat "$base/wait3.out") == EINTR ]] ||
	dl_fail "a's waiter: '$(cat "$base/wait3.out")', expected EINTR"
dl_wait_for 10 none_queued || dl_fail "a queued record was left: $(queued_in_redis)"
touch "$base/stop3"
wait "$holder" || dl_fail "a's holder failed"
[[ $(cat "$base/hold3.out") == wrote ]] || dl_fail "a's holder could not write"

dl_log "4. a revocation while host a's connections are cut"
rm -f "$base/ready4" "$base/stop4"
python3 "$X" hold "$base/ma/cut" "$base/ready4" "$base/stop4" >"$base/hold4.out" &
holder=$!
dl_job "$holder"
dl_wait_for 10 test -e "$base/ready4" || dl_fail "a's holder did not lock"
# every connection of a's daemon, by its local port
for lport in $(ss -tnpH state established "( dport = :$port )" |
	awk -v p="pid=$PID_a," 'index($0, p) { split($3, a, ":"); print a[2] }'); do
	rd_cli "$port" CLIENT KILL ADDR "127.0.0.1:$lport" >/dev/null || true
done
out=$(timeout 30 python3 "$X" range_wait "$base/mb/cut" 100 10) || true
[[ $out == ok ]] || dl_fail "b was not served after a reconnected: '$out'"
touch "$base/stop4"
wait "$holder" || dl_fail "a's holder failed"
[[ $(cat "$base/hold4.out") == wrote ]] ||
	dl_fail "a's holder lost its lock across the cut: $(cat "$base/hold4.out")"

dl_log "5. a poke while the right is on its way"
mkdir "$base/md"
DLOCKFS_TEST_CACHE_RIGHT_DELAY_MS=400 dl_mount "$base/backing" "$base/md" \
	"backend=$uri,host_id=d,cache=on,socket=none"
touch "$base/backing/way"
python3 "$X" hold "$base/md/way" "$base/ready5" "$base/stop5" >"$base/hold5.out" &
holder=$!
dl_job "$holder"
# granted in Redis, not yet taken in by d's cache
right_granted() { [[ $(rd_cli "$port" EXISTS "$P:g://right/way") == 1 ]]; }
dl_wait_for 10 right_granted || dl_fail "d's right was never granted"
[[ -e $base/ready5 ]] && dl_log "(d's holder was granted before b's try: the window is missed)"
out=$(timeout 20 python3 "$X" range_try "$base/mb/way" 100 10) || true
[[ $out == ok ]] || dl_fail "b's trylock of a free range while d's right was on its way: '$out'"
dl_wait_for 10 test -e "$base/ready5" || dl_fail "d's holder did not lock"
touch "$base/stop5"
wait "$holder" || dl_fail "d's holder failed"
[[ $(cat "$base/hold5.out") == wrote ]] || dl_fail "d's holder could not write"

dl_log "nothing left in Redis once everything ended"
none_left() { [[ -z $(left_in_redis) ]]; }
dl_wait_for 10 none_left || dl_fail "records left: $(left_in_redis)"
dl_pass
