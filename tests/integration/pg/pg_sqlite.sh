#!/bin/bash
# pg_sqlite.sh - sqlite3 writers on two hosts (two mounts of one backing
# directory, PostgreSQL backend) insert into one database in rollback-journal
# mode: no lost rows, integrity_check ok.  Besides the locks this needs
# cross-host coherence of file data *and directory entries* (a journal one
# host deleted must not look present to the other).
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_init pg_sqlite
pg_require
dl_require_prog sqlite3

pg_start
dl_tmpdir base
mkdir "$base/backing"
pg_conf "$base/dlock.conf"
pg_mount2 "$base/backing" "$(pg_uri "schema=s&ttl_ms=3000")" "$base/dlock.conf"

dl_log "sqlite3 writers on both mounts"
WRITERS=4
ROWS=50
sqlite3 -bail "$MA/test.db" 'PRAGMA journal_mode=DELETE;
	CREATE TABLE t(w INTEGER, i INTEGER, PRIMARY KEY (w, i));' >/dev/null
pids=()
for ((w = 1; w <= WRITERS; w++)); do
	m=$MA
	((w % 2)) && m=$MB
	{
		echo '.timeout 30000'
		for ((i = 1; i <= ROWS; i++)); do
			echo "BEGIN IMMEDIATE; INSERT INTO t VALUES ($w, $i); COMMIT;"
		done
	} | sqlite3 -bail "$m/test.db" >"$base/writer$w.log" 2>&1 &
	pids+=("$!")
	dl_job "$!"
done
dl_wait_for 120 dl_all_dead "${pids[@]}" || dl_fail "sqlite3 writers still running"
for ((w = 1; w <= WRITERS; w++)); do
	rc=0
	wait "${pids[w - 1]}" || rc=$?
	[[ $rc -eq 0 && ! -s $base/writer$w.log ]] ||
		dl_fail "writer $w: status $rc: $(cat "$base/writer$w.log")"
done
count=$(sqlite3 "$MB/test.db" 'SELECT count(*) FROM t;')
[[ $count == $((WRITERS * ROWS)) ]] || dl_fail "$count rows, expected $((WRITERS * ROWS))"
check=$(sqlite3 "$MA/test.db" 'PRAGMA integrity_check;')
[[ $check == ok ]] || dl_fail "integrity_check: $check"

dl_umount "$MA"
dl_umount "$MB"
dl_pass
