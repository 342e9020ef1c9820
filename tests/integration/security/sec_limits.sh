#!/bin/bash
# sec_limits.sh - issue 9 item 3: bounded resources on the socket.  eve
# opens 2000 connections (cap: max_conns_per_uid=64); root's dlockctl
# and bob's shimmed flock must keep working within bounded time, and the
# refusals must be logged rate-limited.
# shellcheck disable=SC2154
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../preload/pl_lib.sh"
. "$(dirname "$0")/sec_lib.sh"
sec_init sec_limits

sec_dir base
mkdir -m 1777 "$base/app"
S=$base/d.sock
pl_agent a local: "$S" "app=$base/app" "max_conns_per_uid=64,max_waits_per_uid=1000"

dl_log "connection flood: eve opens 2000 connections"
as_eve "$SEC_PY" "$SEC_DIR/sec_raw.py" conns "$S" 2000 20 >"$base/conns.out" &
flood=$!
dl_job "$flood"
dl_wait_for 30 test -s "$base/conns.out" || dl_fail "the flood did not finish"
kept=$(cat "$base/conns.out")
dl_log "the daemon kept $kept of eve's connections"
[[ $kept -le 64 ]] || dl_fail "eve kept $kept connections, cap 64"
t0=$(date +%s%N)
timeout 5 "$DLOCKCTL" --socket "$S" status >/dev/null || dl_fail "root's dlockctl status failed under eve's flood"
as_bob touch "$base/app/b.lock"
as_bob env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$S" DLOCK_PATHS="$base/app" \
	DLOCK_KERNEL_LOCK=0 timeout 5 flock -n "$base/app/b.lock" true ||
	dl_fail "bob's flock failed under eve's flood"
dl_log "root and bob served in $(( ($(date +%s%N) - t0) / 1000000 )) ms"
cnt=$(grep -c "max_conns_per_uid" "${DL_LOGS[-1]}" || true)
[[ $cnt -le 30 ]] || dl_fail "the refusals were logged $cnt times (want rate-limited)"

dl_kill_tree "$flood" # the job is a subshell: its children too
wait "$flood" 2>/dev/null || true
dl_wait_for 10 sec_no_procs dlf_eve || dl_fail "eve's flood did not end"
timeout 5 "$DLOCKCTL" --socket "$S" status >/dev/null || dl_fail "root's status after the flood"
# not yet: the queue flood (sec_raw.py waits 32768) still stalls the
# socket thread with max_waits_per_uid=1000 (issue 9 item 4 is open)
pl_stop a
dl_pass
