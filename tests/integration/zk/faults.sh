#!/bin/bash
# faults.sh - the session is the lease (short session timeouts):
#  1. kill -9 of a daemon holding a lock: the other host gets it once the
#     session expires, not before, not much later;
#  2. a daemon frozen (SIGSTOP) past its session timeout: the other host
#     gets the lock meanwhile; once resumed, the frozen host reports its
#     lock lost and writes through it fail with EIO;
#  3. ZooKeeper stopped: a new request fails with ENOLCK within the bound
#     (min(session timeout, 5 s)), a held lock is reported lost; restarted:
#     new requests work again.
set -euo pipefail
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/zk_lib.sh"
dl_init zk_faults
dl_require_fuse
dl_require_prog flock python3 getfattr mkfifo
zk_start

T=2000	# ms: session timeout of the hosts that get hurt
dl_tmpdir base
mkdir "$base/backing" "$base/a" "$base/a2" "$base/a3" "$base/b" "$base/ctl"
zk_mount "$base/backing" "$base/b" b 10000
ms() { date +%s%3N; }

# holder FILE TAG: flock LOCK_EX on FILE; writes ctl/TAG.state "locked";
# on a line in ctl/TAG.fifo tries a write through the locked fd and
# writes the outcome ("write=OK" or "write=EIO") to ctl/TAG.result
holder() {
	mkfifo "$base/ctl/$2.fifo"
	python3 - "$1" "$base/ctl/$2" <<'PY' &
import errno, fcntl, os, sys
path, ctl = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
open(ctl + ".state", "w").write("locked\n")
open(ctl + ".fifo").readline()
try:
    os.pwrite(fd, b"late write\n", 0)
    os.fsync(fd)
    r = "write=OK"
except OSError as e:
    r = "write=" + errno.errorcode.get(e.errno, str(e.errno))
open(ctl + ".result", "w").write(r + "\n")
PY
	dl_job "$!"
	dl_wait_for 15 test -s "$base/ctl/$2.state" || dl_fail "holder $2 did not get its lock"
}

# trylock FILE nb|wait: prints "OK|ERRNAME ELAPSED_MS"
trylock() {
	python3 - "$1" "$2" <<'PY'
import errno, fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
t0 = time.monotonic()
try:
    fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if sys.argv[2] == "nb" else 0))
    r = "OK"
except OSError as e:
    r = errno.errorcode.get(e.errno, str(e.errno))
print(r, int((time.monotonic() - t0) * 1000))
PY
}

# ---- 1. kill -9 of a daemon holding a lock
zk_mount "$base/backing" "$base/a" a "$T"
pid_a=$DL_LAST_PID
holder "$base/a/k1" h1
[[ $(trylock "$base/b/k1" nb) == EAGAIN* ]] || dl_fail "k1 not held cluster-wide"
kill -KILL "$pid_a"
t0=$(ms)
flock -w 20 "$base/b/k1" true || dl_fail "host b never got k1 after kill -9 of host a"
dt=$(( $(ms) - t0 ))
dl_log "kill -9: host b got the lock after $dt ms (session timeout $T ms)"
(( dt >= T / 2 )) || dl_fail "host b got k1 after $dt ms: before the dead host's session could expire"
(( dt <= T + 8000 )) || dl_fail "host b got k1 only after $dt ms"
fusermount3 -u "$base/a" 2>/dev/null || fusermount3 -uz "$base/a"

# ---- 2. SIGSTOP past the session timeout
zk_mount "$base/backing" "$base/a2" a2 "$T"
pid_a2=$DL_LAST_PID
holder "$base/a2/k2" h2
kill -STOP "$pid_a2"
t0=$(ms)
flock -w 20 "$base/b/k2" -c "echo b > '$base/ctl/k2.b'" ||
	dl_fail "host b never got k2 while host a2 was frozen"
dt=$(( $(ms) - t0 ))
dl_log "SIGSTOP: host b got the lock after $dt ms"
(( dt >= T / 2 )) || dl_fail "host b got k2 after $dt ms: the frozen host's lease was not respected"
kill -CONT "$pid_a2"
lost_seen() { getfattr --only-values -n user.dlock.locks "$base/a2/k2" 2>/dev/null | grep -q ' lost '; }
dl_wait_for 20 lost_seen || dl_fail "host a2 does not report k2 lost: $(getfattr --only-values -n user.dlock.locks "$base/a2/k2" 2>&1)"
echo write >"$base/ctl/h2.fifo"
dl_wait_for 10 test -s "$base/ctl/h2.result" || dl_fail "holder h2 did not try its write"
[[ $(cat "$base/ctl/h2.result") == write=EIO ]] ||
	dl_fail "write through the lost lock: $(cat "$base/ctl/h2.result"), expected EIO"
[[ $(zk_field "$base/a2" health) == ok ]] || dl_fail "host a2 did not start a new session: $(zk_status "$base/a2")"
[[ $(trylock "$base/a2/k2-new" nb) == OK* ]] || dl_fail "host a2 cannot lock after its new session"
dl_log "SIGSTOP: lost lock reported, write got EIO, new session works"

# ---- 3. ZooKeeper stopped, then restarted
zk_mount "$base/backing" "$base/a3" a3 4000
holder "$base/a3/k3" h3
zk_stop
r=$(trylock "$base/a3/k3-new" nb)
dl_log "ZooKeeper down: non-blocking request: $r"
[[ $r == ENOLCK* ]] || dl_fail "request with ZooKeeper down gave '$r', expected ENOLCK"
(( ${r#* } <= 4000 + 2000 )) || dl_fail "ENOLCK came after ${r#* } ms (bound 4000 ms)"
r=$(timeout 20 bash -c "$(declare -f trylock); trylock '$base/a3/k3-new2' wait") ||
	dl_fail "a blocking request hung with ZooKeeper down"
dl_log "ZooKeeper down: blocking request: $r"
[[ $r == ENOLCK* ]] || dl_fail "blocking request with ZooKeeper down gave '$r', expected ENOLCK"
lost3() { getfattr --only-values -n user.dlock.status "$base/a3" | grep -q ' lost=1'; }
dl_wait_for 15 lost3 || dl_fail "held lock not reported lost with ZooKeeper down: $(getfattr --only-values -n user.dlock.status "$base/a3")"
echo write >"$base/ctl/h3.fifo"
dl_wait_for 10 test -s "$base/ctl/h3.result" || dl_fail "holder h3 did not try its write"
[[ $(cat "$base/ctl/h3.result") == write=EIO ]] ||
	dl_fail "write through the lock lost with ZooKeeper: $(cat "$base/ctl/h3.result")"
zk_start
back() { [[ $(trylock "$base/a3/k3-again" nb) == OK* ]]; }
dl_wait_for 30 back || dl_fail "no lock on host a3 within 30 s of ZooKeeper's restart: $(zk_status "$base/a3")"
# host b reconnects on its own schedule (its session timeout is longer)
back_b() { [[ $(trylock "$base/b/k3-again" nb) == OK* ]]; }
dl_wait_for 30 back_b || dl_fail "host b cannot lock within 30 s of ZooKeeper's restart: $(zk_status "$base/b")"
dl_log "ZooKeeper restarted: new requests work ($(zk_status "$base/a3"))"

dl_umount "$base/a2"
dl_umount "$base/a3"
dl_umount "$base/b"
dl_pass
