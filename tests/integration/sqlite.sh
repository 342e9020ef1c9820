#!/bin/bash
# sqlite.sh - 4 concurrent sqlite3 writers, 100 transactions each, into
# one database on the mount (SQLite's rollback journal relies on fcntl
# byte-range locks); the row count is exact and the database intact.
# dl_tmpdir assigns through printf -v; single quotes are meant literally
# shellcheck disable=SC2154,SC2016,SC2012
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
dl_init sqlite
dl_require_fuse
dl_require_prog sqlite3

WRITERS=4
ROWS=100
dl_tmpdir base
mkdir "$base/backing" "$base/mnt"
dl_mount "$base/backing" "$base/mnt"
db="$base/mnt/test.db"
sqlite3 -bail "$db" 'PRAGMA journal_mode=DELETE;
	CREATE TABLE t(w INTEGER, i INTEGER, PRIMARY KEY (w, i));' >/dev/null

pids=()
for ((w = 1; w <= WRITERS; w++)); do
	{
		echo '.timeout 20000'
		for ((i = 1; i <= ROWS; i++)); do
			echo "BEGIN IMMEDIATE; INSERT INTO t VALUES ($w, $i); COMMIT;"
		done
	} | sqlite3 -bail "$db" >"$base/writer$w.log" 2>&1 &
	pids+=("$!")
	dl_job "$!"
done
dl_wait_for 180 dl_all_dead "${pids[@]}" ||
	dl_fail "sqlite3 writers still running after 180 s"
for ((w = 1; w <= WRITERS; w++)); do
	rc=0
	wait "${pids[w - 1]}" || rc=$?
	if [[ $rc -ne 0 || -s $base/writer$w.log ]]; then
		dl_fail "writer $w: status $rc: $(cat "$base/writer$w.log")"
	fi
done
count=$(sqlite3 "$db" 'SELECT count(*) FROM t;')
[[ $count == $((WRITERS * ROWS)) ]] ||
	dl_fail "$count rows, expected $((WRITERS * ROWS))"
per=$(sqlite3 "$db" 'SELECT count(DISTINCT w) FROM t GROUP BY w HAVING count(*) = '$ROWS';' | wc -l)
[[ $per == "$WRITERS" ]] || dl_fail "not every writer has $ROWS rows"
check=$(sqlite3 "$db" 'PRAGMA integrity_check;')
[[ $check == ok ]] || dl_fail "integrity_check: $check"
[[ ! -e $db-journal ]] || dl_fail "a hot journal was left behind"
dl_umount "$base/mnt"
dl_pass
