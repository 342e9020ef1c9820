#!/bin/bash
# redis_be.sh MODE - the Redis backend's races, driven through backend.h by
# redis_be.c (no FUSE): MODE "single" runs the scenarios on one
# redis-server, "redlock" on three independent ones.  Every scenario runs
# even when one fails, so a run shows the whole picture.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/redis_lib.sh"
mode=${1:?single or redlock}
dl_init "redis_be_$mode"
dl_require_prog redis-server redis-cli python3
[[ -n ${REDIS_BE:-} ]] || dl_skip "REDIS_BE is not set (run through meson test)"

if [[ $mode == single ]]; then
	rd_start p1
	ports=$p1
	scenarios=(lease relock_race cancel_race unlock_retry nomem
		cancel_orphan mine_waiting indoubt_relock poke version)
else
	rd_start p1
	rd_start p2
	rd_start p3
	ports=$p1,$p2,$p3
	scenarios=(lease relock_race redlock_revive unlock_retry
		cancel_orphan since indoubt_relock poke version list_union)
fi
# REDIS_BE_SCENARIOS="a b": only those (a developer's quick run)
[[ -z ${REDIS_BE_SCENARIOS:-} ]] || read -ra scenarios <<<"$REDIS_BE_SCENARIOS"
failed=()
for sc in "${scenarios[@]}"; do
	dl_log "scenario $sc"
	# the driver bounds every wait itself; timeout is the last resort
	if ! timeout 120 "$REDIS_BE" "$sc" "$ports"; then
		failed+=("$sc")
	fi
done
((${#failed[@]} == 0)) || dl_fail "failed: ${failed[*]}"
dl_pass
