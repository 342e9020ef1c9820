#!/bin/bash
# sqlite.sh - sqlite3 writers on two hosts (two mounts of one backing
# directory) insert into one database; SQLite's rollback journal relies
# on fcntl byte-range locks: no row may be lost, the file stays intact.
#
# The default rollback journal (journal_mode=DELETE) also needs cross-host
# coherence of directory entries: host b must not find a journal host a
# has already unlinked (the mount caches no entries with a shared backend).
set -euo pipefail
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/zk_lib.sh"
dl_init zk_sqlite
dl_require_fuse
dl_require_prog sqlite3
zk_start

PER_HOST=2
ROWS=60
dl_tmpdir base
mkdir "$base/backing" "$base/a" "$base/b"
zk_mount "$base/backing" "$base/a" a
zk_mount "$base/backing" "$base/b" b
sqlite3 -bail "$base/a/test.db" 'PRAGMA journal_mode=DELETE;
	CREATE TABLE t(w TEXT, i INTEGER, PRIMARY KEY (w, i));' >/dev/null

pids=()
for h in a b; do
	for ((w = 1; w <= PER_HOST; w++)); do
		{
			echo '.timeout 60000'
			for ((i = 1; i <= ROWS; i++)); do
				echo "BEGIN IMMEDIATE; INSERT INTO t VALUES ('$h$w', $i); COMMIT;"
			done
		} | sqlite3 -bail "$base/$h/test.db" >"$base/writer-$h$w.log" 2>&1 &
		pids+=("$!")
		dl_job "$!"
	done
done
dl_wait_for 150 dl_all_dead "${pids[@]}" || dl_fail "sqlite3 writers still running after 150 s"
i=0
for h in a b; do
	for ((w = 1; w <= PER_HOST; w++)); do
		rc=0
		wait "${pids[i]}" || rc=$?
		i=$((i + 1))
		[[ $rc -eq 0 && ! -s $base/writer-$h$w.log ]] ||
			dl_fail "writer $h$w: status $rc: $(cat "$base/writer-$h$w.log")"
	done
done
for h in a b; do
	count=$(sqlite3 "$base/$h/test.db" 'SELECT count(*) FROM t;')
	[[ $count == $((2 * PER_HOST * ROWS)) ]] ||
		dl_fail "host $h sees $count rows, expected $((2 * PER_HOST * ROWS))"
	check=$(sqlite3 "$base/$h/test.db" 'PRAGMA integrity_check;')
	[[ $check == ok ]] || dl_fail "host $h: integrity_check: $check"
done
# in DELETE mode a finished transaction leaves no journal behind
[[ ! -e $base/backing/test.db-journal ]] || dl_fail "a hot journal was left behind"
dl_umount "$base/a"
dl_umount "$base/b"
dl_pass
