#!/bin/bash
# lease.sh - issue 8, item 1: the backend maintains the lease fence
# (struct dl_lease) and every grant names its session.  A daemon frozen
# (SIGSTOP) past its session timeout while a holder's write waits in the
# kernel must refuse that write once it resumes, whichever of its threads
# runs first: the write is checked against the session's trusted-until
# deadline, not against a "lost" mark that arrives later.  The daemon is
# made slow to notice the loss (DLOCKFS_TEST_ZK_ABANDON_DELAY_MS, see
# backend/zk/internal.h), so only the clock can refuse the write.
set -euo pipefail
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/zk_lib.sh"
dl_init zk_lease
dl_require_fuse
dl_require_prog flock python3 mkfifo
zk_start

T=2000 # ms: session timeout of the frozen host
dl_tmpdir base
mkdir "$base/backing" "$base/a" "$base/b" "$base/ctl"
DLOCKFS_TEST_ZK_ABANDON_DELAY_MS=5000 zk_mount "$base/backing" "$base/a" a "$T"
pid_a=$DL_LAST_PID
zk_mount "$base/backing" "$base/b" b 10000
mkfifo "$base/ctl/go"

# the holder: flock LOCK_EX, then on a line in the fifo a write + fsync
# through the locked descriptor; the outcome goes to ctl/result
python3 - "$base/a/f" "$base/ctl" <<'PY' &
import errno, fcntl, os, sys
path, ctl = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
open(ctl + "/state", "w").write("locked\n")
open(ctl + "/go").readline()
try:
    os.pwrite(fd, b"written during the freeze\n", 0)
    os.fsync(fd)
    r = "write=OK"
except OSError as e:
    r = "write=" + errno.errorcode.get(e.errno, str(e.errno))
open(ctl + "/result", "w").write(r + "\n")
PY
holder=$!
dl_job "$holder"
dl_wait_for 15 test -s "$base/ctl/state" || dl_fail "holder did not get its lock"

kill -STOP "$pid_a"
dl_wait_for 5 dl_stopped "$pid_a" || dl_fail "daemon a did not stop"
echo go >"$base/ctl/go" # the write now waits for the frozen daemon
# the session expires: host b gets the lock (bounded)
flock -w 30 "$base/b/f" true || { kill -CONT "$pid_a"; dl_fail "host b never got the lock while host a was frozen"; }
dl_log "host b got the lock while host a was frozen"
kill -CONT "$pid_a"
dl_wait_for 20 test -s "$base/ctl/result" || dl_fail "the queued write never finished"
r=$(cat "$base/ctl/result")
dl_log "write queued during the freeze: $r"
[[ $r == write=EIO ]] || dl_fail "write queued during the freeze: $r, expected EIO (lease not fenced)"
dl_wait_jobs 10 "$holder"
dl_umount "$base/a"
dl_umount "$base/b"
dl_pass
