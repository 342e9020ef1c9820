#!/bin/bash
# redis_faults.sh - failures on the Redis backend (ttl_ms=3000 to be quick):
#  1. kill -9 of a daemon holding a lock: the other host gets it only after
#     the lease (+ lock-delay), not before;
#  2. redis-server killed: new requests fail with ENOLCK within the bound
#     (connect timeout + 1 s), never hang; a held lock is lost before its
#     lease could end and writes through it get EIO;
#  3. redis-server restarted empty: the daemon notices its lease is gone,
#     reports its held locks lost (user.dlock.locks) and writes get EIO.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/redis_lib.sh"
dl_init redis_faults
rd_require
X=$(dirname "$0")/xhost.py

TTL=3000
rd_start port
dl_tmpdir base
mkdir "$base/backing"
rd_mount2 "$base/backing" "redis://127.0.0.1:$port/f$$?ttl_ms=$TTL"

# hold_start FILE - a process flock()s FILE and waits for "write" lines
hold_start() {
	coproc HOLD { exec python3 "$X" hold "$1"; }
	dl_job "$HOLD_PID"
	local line=""
	read -r -t 15 line <&"${HOLD[0]}" || true
	[[ $line == held ]] || dl_fail "holder did not get $1: '$line'"
}
# hold_write - the holder writes through its descriptor; prints the result
hold_write() {
	local line=""
	echo write >&"${HOLD[1]}"
	read -r -t 15 line <&"${HOLD[0]}" || true
	printf '%s' "$line"
}
hold_stop() {
	kill -KILL "$HOLD_PID" 2>/dev/null || true
	wait "$HOLD_PID" 2>/dev/null || true
}
# try FILE nb|wait TIMEOUT - one flock attempt: "ok SECS" or "ERRNO SECS"
try() { python3 "$X" try "$@"; }

# ---- 1. kill -9 of a daemon holding a lock
dl_log "1. kill -9 of the daemon of host a while it holds a lock"
hold_start "$MA/k"
[[ $(hold_write) == ok ]] || dl_fail "write under a held lock failed"
kill -KILL "$PA"
t0=$(date +%s%N)
hold_stop
fusermount3 -uz "$MA"
r=$(try "$MB/k" nb 5)
[[ $r == EWOULDBLOCK* || $r == EAGAIN* ]] ||
	dl_fail "host b got the lock of a killed host at once ($r): before its lease ended"
r=$(try "$MB/k" wait 15)
t1=$(date +%s%N)
ms=$(( (t1 - t0) / 1000000 ))
[[ $r == ok* ]] || dl_fail "host b never got the lock of the killed host: $r"
dl_log "host b got it ${ms} ms after the kill (lease $TTL ms + lock-delay $((TTL / 3)) ms)"
(( ms <= TTL + TTL / 3 + 3000 )) || dl_fail "took $ms ms: longer than lease + delay + re-check"

# ---- 2. redis-server killed
dl_log "2. redis-server killed while host b holds a lock"
hold_start "$MB/h"
rd_kill "$port"
t0=$(date +%s%N)
for mode in nb wait; do
	r=$(try "$MB/z" "$mode" 10)
	set -- $r
	[[ $1 == ENOLCK ]] || dl_fail "flock ($mode) with Redis down gave '$r', expected ENOLCK"
	# the bound: connect timeout (ttl/4) + 1 s
	awk -v s="$2" -v b="$(( TTL / 4 + 1000 ))" 'BEGIN { exit !(s * 1000 <= b) }' ||
		dl_fail "ENOLCK ($mode) took $2 s, beyond the bound"
	dl_log "flock ($mode) with Redis down: ENOLCK after $2 s"
done
st=$(getfattr --absolute-names --only-values -n user.dlock.status "$MB")
grep -q 'health=down' <<<"$st" || dl_fail "status does not say down: $st"
# the held lock is lost by the local clock, before its lease could end
lost_eio() { [[ $(hold_write) == EIO ]]; }
dl_wait_for 6 lost_eio || dl_fail "writes under a lock whose lease ran out still succeed"
t1=$(date +%s%N)
dl_log "writes through the held lock fail with EIO $(( (t1 - t0) / 1000000 )) ms after the kill"
hold_stop

# ---- 3. redis-server restarted empty
dl_log "3. redis-server restarted empty while host b holds a lock"
rd_start port "$port"
healthy() { getfattr --absolute-names --only-values -n user.dlock.status "$MB" 2>/dev/null | grep -q 'health=ok'; }
dl_wait_for 10 healthy || dl_fail "host b did not reconnect"
hold_start "$MB/e"
[[ $(hold_write) == ok ]] || dl_fail "write under a fresh lock failed"
getfattr --absolute-names --only-values -n user.dlock.locks "$MB/e" | grep -q 'flock exclusive' ||
	dl_fail "the lock is not shown"
rd_kill "$port"
rd_start port "$port"
shows_lost() { getfattr --absolute-names --only-values -n user.dlock.locks "$MB/e" 2>/dev/null | grep -q '^flock lost'; }
dl_wait_for 10 shows_lost || dl_fail "the lock of the emptied Redis is not shown lost: $(getfattr -n user.dlock.locks "$MB/e" 2>&1)"
w=$(hold_write)
[[ $w == EIO ]] || dl_fail "a write through the lost lock gave '$w', expected EIO"
hold_stop
# and the host works again with a fresh lease
r=$(try "$MB/e2" nb 5)
[[ $r == ok* ]] || dl_fail "no new lock after the restart: $r"

dl_umount "$MB"
dl_pass
