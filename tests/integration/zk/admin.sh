#!/bin/bash
# admin.sh - dlockctl break against two hosts on one ZooKeeper: `break` on
# host b removes the flock held on host a, host a's daemon learns it lost
# the lock through the watch on its request node (user.dlock.locks says
# "lost"), the holder's writes through it then fail with EIO, host b can
# take the lock, and breaking a free lock exits 1.
set -euo pipefail
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/zk_lib.sh"
dl_init zk_admin
dl_require_fuse
dl_require_prog flock getfattr mkfifo python3
[[ -x ${DLOCKCTL:-} ]] || dl_fail "DLOCKCTL is not set (run through meson test)"
zk_start

dl_tmpdir base
mkdir "$base/backing" "$base/a" "$base/b"
zk_mount "$base/backing" "$base/a" a 4000 "socket=$base/a.sock"
zk_mount "$base/backing" "$base/b" b 4000 "socket=$base/b.sock"

# the holder on host a: lock, write, report, then write again on request
fifo=$base/go
mkfifo "$fifo"
python3 - "$base/a/held.lock" "$fifo" >"$base/holder.out" 2>&1 <<'PY' &
import errno, fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"before\n")
print("held", flush=True)
with open(sys.argv[2]) as go:
    go.readline()
try:
    os.write(fd, b"after\n")
    print("write-ok", flush=True)
except OSError as e:
    print("write-" + errno.errorcode[e.errno], flush=True)
PY
holder=$!
dl_job "$holder"
dl_wait_for 10 grep -q '^held$' "$base/holder.out" || dl_fail "the holder did not lock: $(cat "$base/holder.out")"

dl_log "dlockctl locks on host b shows host a's holder"
"$DLOCKCTL" --socket "$base/b.sock" locks >"$base/all" || dl_fail "dlockctl locks failed"
grep -q "^held.lock flock exclusive 0-EOF host=a " "$base/all" ||
	dl_fail "no host a holder of held.lock in: $(cat "$base/all")"
rc=0
flock -n "$base/b/held.lock" true || rc=$?
[[ $rc -eq 1 ]] || dl_fail "host b got host a's lock before the break: status $rc"

dl_log "dlockctl break on host b"
"$DLOCKCTL" --socket "$base/b.sock" break "$base/b/held.lock" || dl_fail "dlockctl break failed"
lost() { getfattr --only-values -n user.dlock.locks "$base/a/held.lock" 2>/dev/null | grep -q '^flock lost '; }
dl_wait_for 10 lost || dl_fail "host a never learned its lock was broken"
flock -n "$base/b/held.lock" true || dl_fail "the lock is not free on host b after the break"
echo go >"$fifo"
dl_wait_for 10 grep -q '^write-' "$base/holder.out" || dl_fail "the holder did not write"
grep -q '^write-EIO$' "$base/holder.out" ||
	dl_fail "the holder's write after the break: $(tail -1 "$base/holder.out"), expected EIO"
dl_wait_jobs 10 "$holder"
rc=0
"$DLOCKCTL" --socket "$base/b.sock" break "$base/b/held.lock" || rc=$?
[[ $rc -eq 1 ]] || dl_fail "breaking a free lock: status $rc, expected 1"

dl_umount "$base/a"
dl_umount "$base/b"
dl_pass
