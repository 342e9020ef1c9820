#!/usr/bin/env bash
# many_lockers.sh - issue 8: about 100 processes over two mounts of one
# shared backend (Redis, then ZooKeeper) lock byte ranges of one file,
# shared and exclusive, and read and write those bytes for
# MANY_SECONDS (15; more for a soak): every process finishes (none stuck
# in the kernel, as when a grant's cache invalidation waited on a page
# only a daemon thread could unlock), every read is consistent, no update
# is lost.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/redis/redis_lib.sh"
. "$here/zk/zk_lib.sh"
dl_init many_lockers
dl_require_fuse
rd_require
zk_require
secs=${MANY_SECONDS:-15}
nproc=${MANY_PROCS:-100}

dl_tmpdir T
rd_start RPORT
zk_start
for b in redis zk; do
	if [[ $b == redis ]]; then
		uri="redis://127.0.0.1:$RPORT/m$$?ttl_ms=5000"
	else
		uri=$(zk_uri 6000)
	fi
	mkdir -p "$T/$b-backing" "$T/$b-a" "$T/$b-b"
	dl_mount "$T/$b-backing" "$T/$b-a" "backend=$uri,host_id=a,socket=none"
	dl_mount "$T/$b-backing" "$T/$b-b" "backend=$uri,host_id=b,socket=none"
	out=$(timeout $((secs + 240)) python3 "$here/safety.py" many "$secs" \
		"$nproc" "$T/$b-a/data" "$T/$b-b/data" 2>&1) ||
		dl_fail "$b: $(printf '%s\n' "$out" | grep -E 'FAIL|Error' | head -3)"
	printf '  %s: %s\n' "$b" "$out"
	dl_umount "$T/$b-a"
	dl_umount "$T/$b-b"
done
dl_pass
