#!/bin/bash
# sec_limits.sh - issue 9 items 3 and 4: bounded resources on the
# socket.  eve opens 2000 connections (cap: max_conns_per_uid=64), queues
# 32768 waits on one connection (cap: max_waits_per_uid=1000) and takes
# 300 named locks (cap: max_locks_per_uid=100); root's dlockctl and bob's
# shimmed flock must keep working within bounded time, the refusals must
# be logged rate-limited, and the caps must count back down.
# shellcheck disable=SC2154
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../preload/pl_lib.sh"
. "$(dirname "$0")/sec_lib.sh"
sec_init sec_limits

sec_dir base
mkdir -m 1777 "$base/app"
S=$base/d.sock
pl_agent a local: "$S" "app=$base/app" "max_conns_per_uid=64,max_waits_per_uid=1000,max_locks_per_uid=100"

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

dl_log "queue flood: eve queues 32768 waits on one connection"
out=$(as_eve timeout 60 "$SEC_PY" "$SEC_DIR/sec_raw.py" waits "$S" 32768)
dl_log "eve's queue flood: $out"
[[ $out == *"refused=31768" ]] || dl_fail "want 1000 waits queued and 31768 refused: $out"
timeout 5 "$DLOCKCTL" --socket "$S" status >/dev/null || dl_fail "root's status after the queue flood"

dl_log "held locks: eve takes 300 named locks, twice"
out=$(as_eve timeout 60 "$SEC_PY" "$SEC_DIR/sec_raw.py" locks "$S" 300 | tr '\n' ' ')
dl_log "eve's locks: $out"
# ENOLCK is 37: the cap refuses the 101st, and a closed connection's
# locks no longer count
[[ $out == "granted=100 err=-37 granted=100 err=-37 " ]] || dl_fail "max_locks_per_uid not enforced: $out"
as_bob env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$S" DLOCK_PATHS="$base/app" \
	DLOCK_KERNEL_LOCK=0 timeout 5 flock -n "$base/app/b.lock" true ||
	dl_fail "bob's flock failed after eve's locks"
pl_stop a
dl_pass
