#!/bin/bash
# lockdelay.sh - issue 8, item 2: lock-delay (Chubby, Consul).  Host b
# waits for a lock held on host a; b's daemon has lock_delay_ms=D.
#  1. a's holder releases cleanly: b gets the lock at once (well under D);
#  2. a's daemon is killed (kill -9): its session expires after about T,
#     and b gets the lock only D later - not as soon as the session ends.
set -euo pipefail
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/zk_lib.sh"
dl_init zk_lockdelay
dl_require_fuse
dl_require_prog flock getfattr mkfifo
zk_start

T=2000 # ms: session timeout of host a
D=3000 # ms: lock-delay of host b
dl_tmpdir base
mkdir "$base/backing" "$base/a" "$base/a2" "$base/b" "$base/ctl"
dl_mount "$base/backing" "$base/b" \
	"backend=zk://$ZK_URI_HOSTS/dlock-$$?session_timeout_ms=10000&lock_delay_ms=$D,host_id=b"
zk_mount "$base/backing" "$base/a" a "$T"
pid_a=$DL_LAST_PID
ms() { date +%s%3N; }
waiters() { getfattr --only-values -n user.dlock.waiters "$base/b/$1" 2>/dev/null | grep -c . || true; }
queued() { (( $(waiters "$1") == 1 )); }

# hold FILE TAG: flock on host a until ctl/TAG.go speaks
hold() {
	mkfifo "$base/ctl/$2.go"
	GO=$base/ctl/$2.go flock "$base/a/$1" -c 'echo locked >"$GO.state"; read -r _ <"$GO"' &
	dl_job "$!"
	dl_wait_for 15 test -s "$base/ctl/$2.go.state" || dl_fail "host a did not get $1"
}
# wait_b FILE TAG: a blocking flock on host b; writes the time it got it
wait_b() {
	flock -w 60 "$base/b/$1" -c "date +%s%3N >'$base/ctl/$2.got'" &
	dl_job "$!"
	dl_wait_for 15 queued "$1" || dl_fail "host b's request for $1 is not queued"
}

# 1. a clean release hands over at once
hold f1 h1
wait_b f1 w1
t0=$(ms)
echo go >"$base/ctl/h1.go"
dl_wait_for 15 test -s "$base/ctl/w1.got" || dl_fail "host b never got f1 after a clean release"
dt=$(( $(cat "$base/ctl/w1.got") - t0 ))
dl_log "clean release: host b got the lock after $dt ms (lock-delay $D ms)"
(( dt < D / 2 )) || dl_fail "a clean release took $dt ms to hand over: the lock-delay applied"

# 2. an expiry: the lock stays unavailable for D after the session ends
hold f2 h2
wait_b f2 w2
kill -KILL "$pid_a"
t0=$(ms)
dl_wait_for 40 test -s "$base/ctl/w2.got" || dl_fail "host b never got f2 after host a was killed"
dt=$(( $(cat "$base/ctl/w2.got") - t0 ))
dl_log "kill -9: host b got the lock after $dt ms (session timeout $T ms, lock-delay $D ms)"
# the session ends between 4/5 T (last heartbeat) and T after the kill
(( dt >= T * 4 / 5 + D - 200 )) || dl_fail "host b got the lock $dt ms after the kill: no lock-delay after the expiry"
(( dt <= T + D + 8000 )) || dl_fail "host b got the lock only $dt ms after the kill"
fusermount3 -u "$base/a" 2>/dev/null || fusermount3 -uz "$base/a"
dl_umount "$base/b"
dl_pass
