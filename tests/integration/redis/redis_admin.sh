#!/bin/bash
# redis_admin.sh - dlockctl against two hosts on one Redis: `locks` shows
# the other host's holder, `break` on host b frees a lock held on host a,
# host a's daemon learns it lost the lock (user.dlock.locks says "lost")
# and the holder's writes through it then fail with EIO.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/redis_lib.sh"
dl_init redis_admin
rd_require

rd_start port
dl_tmpdir base
mkdir "$base/backing" "$base/a" "$base/b"
URI="redis://127.0.0.1:$port/adm$$?ttl_ms=3000"
dl_mount "$base/backing" "$base/a" "backend=$URI,host_id=a,socket=$base/a.sock"
dl_mount "$base/backing" "$base/b" "backend=$URI,host_id=b,socket=$base/b.sock"

dl_check_break "$base"

dl_umount "$base/a"
dl_umount "$base/b"
dl_pass
