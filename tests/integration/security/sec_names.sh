#!/bin/bash
# sec_names.sh - issue 9 item 1: the daemon names resources itself.
# eve forges the label of root's private prefix on her own file (raw
# frame, and through the shim's DLOCK_PATHS); root's lock on its 0700 file
# must stay free.  eve holding the named lock "backup" must not block
# root's or bob's "backup"; a name shared with group dlf_team is one lock
# for its members only.
# shellcheck disable=SC2154
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../preload/pl_lib.sh"
. "$(dirname "$0")/sec_lib.sh"
sec_init sec_names

sec_dir base
mkdir -m 0700 "$base/private"
mkdir -m 1777 "$base/pub"
mkdir -m 0755 "$base/eve"
chown dlf_eve: "$base/eve"
S=$base/d.sock
pl_agent a local: "$S" "private=$base/private:pub=$base/pub" "shared_names=team*=dlf_team"
DL="$DLOCKCTL --socket $S"

dl_log "forged label in a raw frame: eve's file does not become private/other.db"
as_eve touch "$base/eve/other.db"
as_eve "$SEC_PY" "$SEC_DIR/sec_raw.py" lock "$S" "$base/eve/other.db" private "$base/eve" 30 >"$base/eve.out" &
dl_job "$!"
dl_wait_for 10 test -s "$base/eve.out" || dl_fail "the raw client did not answer"
got=$(head -1 "$base/eve.out")
[[ $got == "-$(python3 -c 'import errno; print(errno.ENOLCK)')" ]] ||
	dl_fail "eve's forged label was answered $got, want -ENOLCK (not under any paths=)"
touch "$base/private/other.db"
sec_shim "$S" "$base/private" flock -n "$base/private/other.db" true ||
	dl_fail "root's flock -n on its private file failed: eve's forged label took its name"

dl_log "through the shim: eve's DLOCK_PATHS label is ignored, the file refused"
rc=0
as_eve env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$S" DLOCK_PATHS="private=$base/eve" \
	DLOCK_KERNEL_LOCK=0 flock -n "$base/eve/other.db" true 2>"$base/err" || rc=$?
[[ $rc -ne 0 ]] || dl_fail "a file under no configured prefix was locked"
grep -q "paths=" "$base/err" || dl_fail "no clear refusal: $(cat "$base/err")"

dl_log "a file under a configured prefix is named by the daemon's label"
as_eve touch "$base/pub/e.lock"
as_eve env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$S" DLOCK_PATHS="bogus=$base/pub" \
	DLOCK_KERNEL_LOCK=0 flock "$base/pub/e.lock" \
	"$DLOCKCTL" --socket "$S" locks "$base/pub/e.lock" >"$base/l.out" ||
	dl_fail "eve cannot lock her file under pub: $(cat "$base/l.out")"
grep -q "^pub/e.lock " "$base/l.out" || dl_fail "not named pub/e.lock: $(cat "$base/l.out")"

dl_log "named locks: eve's 'backup' does not block root's or bob's"
sec_hold "$base" as_eve "$DLOCKCTL" --socket "$S" run --lock backup --
timeout 10 $DL run --lock backup --timeout 2 -- true ||
	dl_fail "root's run --lock backup blocked behind eve's"
as_bob "$DLOCKCTL" --socket "$S" run --lock backup --timeout 2 -- true ||
	dl_fail "bob's run --lock backup blocked behind eve's"

dl_log "shared_names: team* is one lock for dlf_team, private to others"
sec_hold "$base" as_bob "$DLOCKCTL" --socket "$S" run --lock team1 --
rc=0
as_bob "$DLOCKCTL" --socket "$S" run --lock team1 --timeout 0 -- true || rc=$?
[[ $rc -eq 1 ]] || dl_fail "a second team member got the shared lock team1 (status $rc)"
as_eve "$DLOCKCTL" --socket "$S" run --lock team1 --timeout 2 -- true ||
	dl_fail "eve (not in dlf_team) was blocked by the team's lock"
timeout 10 $DL run --lock team1 --timeout 2 -- true ||
	dl_fail "root (not in dlf_team) was blocked by the team's lock"

pl_stop a
dl_pass
