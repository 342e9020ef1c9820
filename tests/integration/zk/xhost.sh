#!/bin/bash
# xhost.sh - the lock cases across two hosts on ZooKeeper: two daemons
# (host ids a and b) over two separate backing directories, so that only
# the backend can make their processes exclude each other (DESIGN §6);
# then lockdriver's whole single-host suite through the zk backend.
set -euo pipefail
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/zk_lib.sh"
dl_init zk_xhost
dl_require_fuse
dl_require_driver
dl_require_prog python3 getfattr
zk_start

dl_tmpdir base
mkdir "$base/back_a" "$base/back_b" "$base/a" "$base/b"
zk_mount "$base/back_a" "$base/a" a
zk_mount "$base/back_b" "$base/b" b

dl_log "cross-host scenarios"
out=$(python3 "$here/xhost.py" "$base/a" "$base/b" 2>&1) || rc=$?
printf '%s\n' "$out" | sed 's/^/  [xhost] /'
[[ ${rc:-0} -eq 0 ]] || dl_fail "$(grep -E '^FAIL' <<<"$out" | tr '\n' ';')"

dl_log "lockdriver through the zk backend (host a)"
out=$("$LOCKDRIVER" --dlockfs --waiters=20 --churn=300 "$base/a" all 2>&1) || rc=$?
printf '%s\n' "$out" | sed 's/^/  [lockdriver] /'
[[ ${rc:-0} -eq 0 ]] || dl_fail "$(grep -E '^FAIL' <<<"$out" | tr '\n' ';')"

# nothing held or queued afterwards, on either host (with cache=on, a
# file's right is given back once unused for cache_idle_ms: wait for it)
idle_state() {
	st=$(zk_status "$base/$1")
	[[ $st == *health=ok* && $st == *" held=0 "* && $st == *" waiting=0 "* ]]
}
for h in a b; do
	dl_wait_for 10 idle_state "$h" ||
		dl_fail "host $h left state behind: $st"
done
dl_umount "$base/a"
dl_umount "$base/b"
dl_pass
