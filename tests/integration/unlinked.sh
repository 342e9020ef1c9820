#!/usr/bin/env bash
# unlinked.sh - a lock on an unlinked-but-open file never collides with a
# live file (issue 8: /proc names it "x (deleted)", a name a live file can
# have), and a file locked before its unlink keeps the name it was locked
# under until its locks are gone.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
dl_init unlinked
dl_require_fuse
dl_tmpdir T
mkdir -p "$T/backing" "$T/mnt"
dl_mount "$T/backing" "$T/mnt" "socket=none"

out=$(python3 - "$T/mnt" <<'PY' 2>&1) || dl_fail "$out"
import fcntl, os, sys
m = sys.argv[1]
# 1. unlinked first, then locked: no collision with "x (deleted)"
fd = os.open(m + "/x", os.O_RDWR | os.O_CREAT, 0o644)
os.unlink(m + "/x")
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
live = os.open(m + "/x (deleted)", os.O_RDWR | os.O_CREAT, 0o644)
try:
    fcntl.flock(live, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit("FAIL: the live file 'x (deleted)' is locked by the unlinked x")
fcntl.flock(live, fcntl.LOCK_UN)
# 2. locked first, then unlinked: another open of the same inode still
# conflicts (the name is kept), and the live file does not
fd2 = os.open(m + "/y", os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB)
fd3 = os.open(m + "/y", os.O_RDWR)
os.unlink(m + "/y")
try:
    fcntl.flock(fd3, fcntl.LOCK_EX | fcntl.LOCK_NB)
    sys.exit("FAIL: a second description of the unlinked y got its lock")
except BlockingIOError:
    pass
live2 = os.open(m + "/y (deleted)", os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(live2, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("OK")
PY
dl_log "$out"
dl_umount "$T/mnt"
dl_pass
