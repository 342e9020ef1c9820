#!/bin/bash
# pg_be.sh - the PostgreSQL backend's races, driven through backend.h by
# pg_be.c (no FUSE): a grant handed over on release, a cancel racing a
# grant, an answer lost after the send (in doubt: asked again), a lease
# the server ended, interrupted waits, pokes reaching the other holders'
# cb->revoke, a schema of version 1 (made here from schema.sql's first
# section, as a dlockfs without poke made it) upgraded by the first open;
# versions (issue 14): reads, bumps, two hosts racing, awkward names, kept
# through breaks and dead leases, and a schema of version 2 (schema.sql
# up to its version 3 section) upgraded keeping its locks.
# Every scenario runs even when one fails, so a run shows the whole
# picture.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_init pg_be
dl_require_prog python3 runuser psql
[[ -x $PG_BIN/initdb ]] || dl_skip "PostgreSQL server binaries not found in $PG_BIN"
[[ -x ${PG_BE:-} && -r ${PG_SCHEMA_SQL:-} ]] ||
	dl_skip "PG_BE/PG_SCHEMA_SQL not set (run through meson test)"
id -u "$PG_OSUSER" >/dev/null 2>&1 || pg_require

pg_start
sockdir=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$PG_SOCK")
uri="postgresql://$PG_ROLE@$sockdir:$PG_PORT/$PG_DB?schema=be&ttl_ms=3000"
ci="host=$PG_SOCK port=$PG_PORT user=$PG_ROLE dbname=$PG_DB"
# schema "up" at version 1: schema.sql up to its version 2 section
sed '/^-- @@ version 2$/,$d; s/@SCHEMA@/up/g; s/@VERSION@/1/g' \
	"$PG_SCHEMA_SQL" >"$PG_SOCK/schema_v1.sql"
grep -q 'FUNCTION up.poke' "$PG_SOCK/schema_v1.sql" &&
	dl_fail "schema.sql's first section has poke()"
pg_role_sql "CREATE SCHEMA up" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U "$PG_ROLE" -d "$PG_DB" \
	-1 -f "$PG_SOCK/schema_v1.sql" >/dev/null || dl_fail "the version 1 schema does not load"
pg_role_sql "INSERT INTO up.meta (version) VALUES (1)" >/dev/null
# schema "up2" at version 2: schema.sql up to its version 3 section
sed '/^-- @@ version 3$/,$d; s/@SCHEMA@/up2/g; s/@VERSION@/2/g' \
	"$PG_SCHEMA_SQL" >"$PG_SOCK/schema_v2.sql"
grep -q 'FUNCTION up2.poke' "$PG_SOCK/schema_v2.sql" ||
	dl_fail "schema.sql has no version 2 section"
grep -q 'TABLE up2.res_versions' "$PG_SOCK/schema_v2.sql" &&
	dl_fail "schema.sql's version 2 has the versions"
pg_role_sql "CREATE SCHEMA up2" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U "$PG_ROLE" -d "$PG_DB" \
	-1 -f "$PG_SOCK/schema_v2.sql" >/dev/null || dl_fail "the version 2 schema does not load"
pg_role_sql "INSERT INTO up2.meta (version) VALUES (2)" >/dev/null
failed=()
# PG_BE_SCENARIOS: run only these (a developer's shortcut)
scenarios=${PG_BE_SCENARIOS:-handoff cancel_race indoubt lease_lost eintr \
indoubt_relock poke poke_upgrade version version_race version_names \
version_keep version_upgrade}
for sc in $scenarios; do
	dl_log "scenario $sc"
	u=$uri
	[[ $sc == poke_upgrade ]] && u=${uri/schema=be/schema=up}
	[[ $sc == version_upgrade ]] && u=${uri/schema=be/schema=up2}
	# the driver bounds every wait itself; timeout is the last resort
	if ! timeout 120 "$PG_BE" "$sc" "$u" "$ci"; then
		failed+=("$sc")
	fi
done
((${#failed[@]} == 0)) || dl_fail "failed: ${failed[*]}"
dl_pass
