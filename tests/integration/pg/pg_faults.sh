#!/bin/bash
# pg_faults.sh - failures on the PostgreSQL backend (ttl_ms=6000):
#  1. kill -9 of a daemon holding a lock: the other host gets it only after
#     the lease (+ lock-delay), not before;
#  2. pg_ctl restart -m fast while a lock is held and another host waits:
#     the lock survives (nobody else gets it, its holder still writes),
#     the daemons reconnect, the waiter is served once the holder lets go;
#  3. pg_terminate_backend of every daemon connection, the same way: a
#     network blip, nothing lost, the waiter served;
#  4. server stopped: new requests fail with ENOLCK within the bound
#     (connect timeout + 1 s), never hang, and leave nothing granted;
#     stopped past the lease: the holder reports its lock lost before the
#     lease could end and its writes get EIO; once the server is back the
#     hosts work again and the lost lock is free.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_init pg_faults
pg_require
X=$(dirname "$0")/../redis/xhost.py

TTL=6000
DELAY=$((TTL / 3))
pg_start
dl_tmpdir base
mkdir "$base/backing"
pg_conf "$base/dlock.conf"
URI=$(pg_uri "schema=f&ttl_ms=$TTL")
pg_mount2 "$base/backing" "$URI" "$base/dlock.conf"

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
# waiter_start FILE OUT - a blocking flock in the background, result in OUT
waiter_start() {
	python3 "$X" try "$1" wait 60 >"$2" 2>&1 &
	WAITER=$!
	dl_job "$WAITER"
}
queued() { [[ $(PG_SQL_DB=$PG_DB pg_sql "SELECT count(*) FROM f.queue") -ge 1 ]]; }
granted() { grep -q '^ok' "$1"; }

# the locks survive a disruption: the holder still writes, nobody else
# gets the lock, the waiter is still queued; then the holder lets go and
# the waiter gets it
survives() {
	local what=$1 file=$2 out=$3 w r
	w=$(hold_write)
	[[ $w == ok ]] || dl_fail "$what: the holder's write gave '$w'"
	r=$(try "$MA/$file" nb 5)
	[[ $r == EWOULDBLOCK* || $r == EAGAIN* ]] ||
		dl_fail "$what: host a got a lock host b holds ($r)"
	granted "$out" && dl_fail "$what: the waiter was served while the lock is held"
	dl_wait_for 15 pg_healthy "$MA" || dl_fail "$what: host a did not reconnect"
	dl_wait_for 15 pg_healthy "$MB" || dl_fail "$what: host b did not reconnect"
	hold_stop
	dl_wait_for 15 granted "$out" || dl_fail "$what: the waiter was not served: $(cat "$out")"
	dl_wait_jobs 10 "$WAITER"
	dl_log "$what: lock kept, waiter served after the release"
}

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
r=$(try "$MB/k" wait 30)
t1=$(date +%s%N)
ms=$(((t1 - t0) / 1000000))
[[ $r == ok* ]] || dl_fail "host b never got the lock of the killed host: $r"
dl_log "host b got it ${ms} ms after the kill (lease $TTL ms + lock-delay $DELAY ms)"
((ms >= TTL - 1000)) || dl_fail "took only $ms ms: before the lease could end"
((ms <= TTL + DELAY + 3000)) || dl_fail "took $ms ms: longer than lease + delay + re-check"
dl_wait_for 10 dl_not_alive "$PA" || dl_fail "the killed daemon is still there"
wait "$PA" 2>/dev/null || true
pg_forget_daemon "$PA"
dl_mount "$base/backing" "$MA" "backend=$URI,host_id=a,config=$base/dlock.conf,socket=$base/a2.sock"

# ---- 2. restart of the server while locks are held and a host waits
dl_log "2. pg_ctl restart -m fast while host b holds a lock and host a waits"
hold_start "$MB/r"
waiter_start "$MA/r" "$base/w2"
dl_wait_for 10 queued || dl_fail "the waiter did not queue"
pg_ctl_do -w -t 30 -m fast -o "$(pg_server_opts)" restart >/dev/null ||
	dl_fail "restart failed"
dl_log "server restarted (pid $(pg_pid))"
survives restart r "$base/w2"

# ---- 3. every daemon connection terminated
dl_log "3. pg_terminate_backend of every daemon connection"
hold_start "$MB/t"
waiter_start "$MA/t" "$base/w3"
dl_wait_for 10 queued || dl_fail "the waiter did not queue"
n=$(pg_sql "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
	WHERE application_name LIKE 'dlockfs %'")
((n >= 4)) || dl_fail "only $n daemon connections were terminated"
dl_log "terminated $n connections"
survives terminate t "$base/w3"

# ---- 4. server stopped
dl_log "4. server stopped while host b holds a lock"
hold_start "$MB/h"
pg_ctl_do -w -t 30 -m fast stop >/dev/null || dl_fail "stop failed"
t0=$(date +%s%N)
for mode in nb wait; do
	r=$(try "$MB/z" "$mode" 10)
	set -- $r
	[[ $1 == ENOLCK ]] || dl_fail "flock ($mode) with the server down gave '$r', expected ENOLCK"
	# the bound: connect timeout (ttl/4) + 1 s
	awk -v s="$2" -v b="$((TTL / 4 + 1000))" 'BEGIN { exit !(s * 1000 <= b) }' ||
		dl_fail "ENOLCK ($mode) took $2 s, beyond the bound"
	dl_log "flock ($mode) with the server down: ENOLCK after $2 s"
done
st=$(getfattr --absolute-names --only-values -n user.dlock.status "$MB")
grep -q 'health=down' <<<"$st" || dl_fail "status does not say down: $st"
# the held lock is lost by the local clock, before its lease could end
lost_eio() { [[ $(hold_write) == EIO ]]; }
dl_wait_for $((TTL / 1000 + 3)) lost_eio || dl_fail "writes under a lock whose lease ran out still succeed"
t1=$(date +%s%N)
ms=$(((t1 - t0) / 1000000))
dl_log "writes through the held lock fail with EIO $ms ms after the stop"
((ms < TTL)) || dl_fail "the loss came $ms ms after the stop: not before the lease could end"
pg_ctl_do -l "$PG_SOCK/log" -w -t 30 -o "$(pg_server_opts)" start >/dev/null ||
	dl_fail "the server did not start again"
dl_wait_for 15 pg_healthy "$MB" || dl_fail "host b did not come back"
# (listing needs the server: shown once it is back)
shows_lost() { getfattr --absolute-names --only-values -n user.dlock.locks "$MB/h" 2>/dev/null | grep -q '^flock lost'; }
shows_lost || dl_fail "the lock is not shown lost: $(getfattr -n user.dlock.locks "$MB/h" 2>&1)"
[[ $(hold_write) == EIO ]] || dl_fail "a write through the lost lock succeeded after the restart"
hold_stop
r=$(try "$MB/e2" nb 5)
[[ $r == ok* ]] || dl_fail "no new lock after the restart: $r"
# the lost lock's old lease is ended: the file is free for host a
r=$(try "$MA/h" wait 15)
[[ $r == ok* ]] || dl_fail "the lost lock was never freed: $r"
# nothing was granted while the server was down: no rows left (with
# cache=on, a file's right is given back once unused: wait for it)
no_rows() { left=$(pg_rows f) && [[ $left == 0 ]]; }
dl_wait_for 10 no_rows || dl_fail "$left lock/queue rows left: $(PG_SQL_DB=$PG_DB pg_sql "SELECT f.res_text(res), space, lease, owner, type FROM f.held; SELECT f.res_text(res), lease, wait_id FROM f.queue; SELECT id, host, expires FROM f.leases")"

dl_umount "$MA"
dl_umount "$MB"
dl_pass
