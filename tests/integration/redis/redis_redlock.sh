#!/bin/bash
# redis_redlock.sh - Redlock mode: three independent redis-servers.  Locks
# exclude across two hosts; with one node down locks are still granted
# (and still exclude); with two of three down a request fails with ENOLCK
# within the bound.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/redis_lib.sh"
dl_init redis_redlock
rd_require
X=$(dirname "$0")/xhost.py
try() { python3 "$X" try "$@"; }

TTL=3000
rd_start p1
rd_start p2
rd_start p3
dl_tmpdir base
mkdir "$base/backing"
# -o splits at commas: the node list escapes them (or use the config file)
rd_mount2 "$base/backing" \
	"redis://127.0.0.1:$p1\\,127.0.0.1:$p2\\,127.0.0.1:$p3/rl$$?ttl_ms=$TTL"

dl_log "all nodes up: the core cases across hosts"
rd_xhost core "$MA" "$MB"

dl_log "one node down"
rd_kill "$p2"
r=$(try "$MA/one" nb 5)
[[ $r == ok* ]] || dl_fail "one node of three down: lock refused: $r"
# still exclusive across hosts
coproc HOLD { exec python3 "$X" hold "$MA/one"; }
dl_job "$HOLD_PID"
read -r -t 15 line <&"${HOLD[0]}" || true
[[ $line == held ]] || dl_fail "holder did not get the lock"
r=$(try "$MB/one" nb 5)
[[ $r == EAGAIN* || $r == EWOULDBLOCK* ]] || dl_fail "two holders with one node down: $r"
kill -KILL "$HOLD_PID"
wait "$HOLD_PID" 2>/dev/null || true
r=$(try "$MB/one" wait 10)
[[ $r == ok* ]] || dl_fail "no handoff with one node down: $r"

dl_log "two nodes down"
rd_kill "$p3"
for mode in nb wait; do
	r=$(try "$MA/two" "$mode" 10)
	set -- $r
	[[ $1 == ENOLCK ]] || dl_fail "two of three nodes down ($mode): '$r', expected ENOLCK"
	awk -v s="$2" -v b="$(( TTL / 4 + 1000 ))" 'BEGIN { exit !(s * 1000 <= b) }' ||
		dl_fail "ENOLCK ($mode) took $2 s, beyond the bound"
	dl_log "two of three down ($mode): ENOLCK after $2 s"
done

dl_umount "$MA"
dl_umount "$MB"
dl_pass
