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

dl_check_break "$base"

dl_umount "$base/a"
dl_umount "$base/b"
dl_pass
