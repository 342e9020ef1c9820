#!/bin/bash
# preload_async.sh - the socket thread never waits on the backend (issue
# 10): with every Redis lock call slowed to 6 s (a test fault of
# backend/redis), one client's lock request is in the backend while other
# clients' STATUS, LIST and a second lock must be answered at once, and
# the slow request must still be granted, once.
# shellcheck disable=SC2154
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=pl_lib.sh
. "$(dirname "$0")/pl_lib.sh"
dl_init preload_async
pl_require

dl_tmpdir base
mkdir "$base/app"
S=$base/a.sock
pl_redis port
DLOCKFS_TEST_REDIS_FAULT=delay_lock:6000 pl_agent a "redis://127.0.0.1:$port" "$S" "$base/app"
ctl() { "$DLOCKCTL" --socket "$S" "$@"; }
in_flight() { ctl status -r 2>/dev/null | grep -x "requests=$1" >/dev/null; }

# a client whose lock sits 6 s in the backend
t0=$(date +%s%N)
ctl run --lock slow -- true >"$base/slow.out" 2>&1 &
slow=$!
dl_job "$slow"
# a synchronous socket thread could not answer this before the 6 s end
dl_wait_for 4 in_flight 1 || dl_fail "STATUS was not answered while a lock was in the backend"
for what in status locks; do
	s0=$(date +%s%N)
	timeout 3 "$DLOCKCTL" --socket "$S" "$what" >/dev/null ||
		dl_fail "$what failed or waited while a lock was in the backend"
	ms=$(( ($(date +%s%N) - s0) / 1000000 ))
	dl_log "$what answered in $ms ms while a lock was in the backend"
done
in_flight 1 || dl_fail "the slow lock finished too early for this test to mean anything"
wait "$slow" || dl_fail "the slow client failed: $(cat "$base/slow.out")"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
dl_log "the slow lock took $ms ms"
[[ $ms -ge 5000 ]] || dl_fail "the fault did not slow the lock ($ms ms)"
dl_wait_for 5 in_flight 0 || dl_fail "a request stayed in flight"
pl_stop a
dl_pass
