#!/bin/bash
# pg_be.sh - the PostgreSQL backend's races, driven through backend.h by
# pg_be.c (no FUSE): a grant handed over on release, a cancel racing a
# grant, an answer lost after the send (in doubt: asked again), a lease
# the server ended, interrupted waits.  Every scenario runs even when one
# fails, so a run shows the whole picture.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_init pg_be
dl_require_prog python3 runuser psql
[[ -x $PG_BIN/initdb ]] || dl_skip "PostgreSQL server binaries not found in $PG_BIN"
[[ -x ${PG_BE:-} ]] || dl_skip "PG_BE is not set (run through meson test)"
id -u "$PG_OSUSER" >/dev/null 2>&1 || pg_require

pg_start
sockdir=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$PG_SOCK")
uri="postgresql://$PG_ROLE@$sockdir:$PG_PORT/$PG_DB?schema=be&ttl_ms=3000"
ci="host=$PG_SOCK port=$PG_PORT user=$PG_ROLE dbname=$PG_DB"
failed=()
for sc in handoff cancel_race indoubt lease_lost eintr indoubt_relock; do
	dl_log "scenario $sc"
	# the driver bounds every wait itself; timeout is the last resort
	if ! timeout 120 "$PG_BE" "$sc" "$uri" "$ci"; then
		failed+=("$sc")
	fi
done
((${#failed[@]} == 0)) || dl_fail "failed: ${failed[*]}"
dl_pass
