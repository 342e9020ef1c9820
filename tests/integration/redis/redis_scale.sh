#!/bin/bash
# redis_scale.sh MODE - the cost of a lock on a file holding many ranges
# (redis_scale.c, through backend.h, no FUSE): MODE "single" on one
# redis-server, "redlock" on three independent ones.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/redis_lib.sh"
mode=${1:?single or redlock}
dl_init "redis_scale_$mode"
dl_require_prog redis-server redis-cli python3
[[ -n ${REDIS_SCALE:-} ]] || dl_skip "REDIS_SCALE is not set (run through meson test)"

rd_start p1
ports=$p1
if [[ $mode == redlock ]]; then
	rd_start p2
	rd_start p3
	ports=$p1,$p2,$p3
fi
# sizes: owner 1's ranges, each other owner's, other owners, block
# (REDIS_SCALE_SIZES to measure another shape by hand)
read -r -a sizes <<<"${REDIS_SCALE_SIZES:-10000 2000 5 1000}"
timeout 500 "$REDIS_SCALE" "$ports" "${sizes[@]}" || dl_fail "redis_scale failed"
dl_pass
