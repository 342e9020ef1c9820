#!/bin/bash
# pg_range.sh - backend/pg/schema.sql's range rules (merge, split,
# convert, unlock up to a token, release, conflicts) against
# backend/range.c: pg_range applies the same random operations to both
# and compares the locks after each (several seeds).  No FUSE needed.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_init pg_range
dl_require_prog python3 runuser psql
[[ -x $PG_BIN/initdb ]] || dl_skip "PostgreSQL server binaries not found in $PG_BIN"
[[ -x ${PG_RANGE:-} && -r ${PG_SCHEMA_SQL:-} ]] || dl_skip "PG_RANGE/PG_SCHEMA_SQL not set (run through meson test)"
id -u "$PG_OSUSER" >/dev/null 2>&1 || pg_require

pg_start
sed 's/@SCHEMA@/rg/g; s/@VERSION@/1/g' "$PG_SCHEMA_SQL" >"$PG_SOCK/schema.sql"
pg_role_sql "CREATE SCHEMA rg" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" -U "$PG_ROLE" -d "$PG_DB" \
	-1 -f "$PG_SOCK/schema.sql" >/dev/null || dl_fail "the schema does not load"
for seed in 1 2 3 4; do
	pg_role_sql "DELETE FROM rg.held" >/dev/null
	out=$("$PG_RANGE" "host=$PG_SOCK port=$PG_PORT user=$PG_ROLE dbname=$PG_DB" \
		rg 1500 "$seed" 2>&1) || dl_fail "seed $seed: $out"
	dl_log "seed $seed: $out"
done
dl_pass
