#!/bin/bash
# pg_locks.sh - the lock cases across two hosts on the PostgreSQL backend.
#
# A PostgreSQL 15 server that requires a password for TCP connections
# (scram-sha-256), an ordinary role owning one database; the password
# reaches the daemons through a root-only config file, never the command
# line.  Two daemons "a" and "b" mount one backing directory.  Then: a
# wrong password and a password in the URI are refused; every core lock
# case with one process on each host (xhost.py core, including an
# interrupted F_SETLKW), awkward file names, fairness across hosts, the
# whole lockdriver suite on one PostgreSQL-backed mount; no lock or queue
# row is left behind (the interrupted waits removed theirs); the password
# shows nowhere.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_init pg_locks
pg_require
dl_require_driver

pg_start
dl_tmpdir base
mkdir "$base/backing"
pg_conf "$base/dlock.conf"
(umask 077 && printf 'pg_password = wrong-%s\n' "$PG_SECRET" >"$base/bad.conf")
uri=$(pg_uri "schema=it&ttl_ms=3000")

# a wrong password: refused at mount time with the server's reason
mkdir "$base/mnt-x"
rc=0
out=$("$DLOCKFS" -f -o "backend=$uri,host_id=x,config=$base/bad.conf,socket=none" \
	"$base/backing" "$base/mnt-x" 2>&1) || rc=$?
[[ $rc -ne 0 ]] || dl_fail "a wrong password mounted"
grep -q 'password authentication failed' <<<"$out" || dl_fail "no reason: $out"
grep -q -- "$PG_SECRET" <<<"$out" && dl_fail "the password was printed: $out"
dl_is_mounted "$base/mnt-x" && dl_fail "mounted despite the failure"
dl_log "wrong password: $out"
# a password in the URI is refused before anything starts
rc=0
out=$("$DLOCKFS" -f -o "backend=postgresql://u:pw@127.0.0.1:$PG_PORT/$PG_DB" \
	"$base/backing" "$base/mnt-x" 2>&1) || rc=$?
[[ $rc -eq 2 ]] && grep -q 'config file' <<<"$out" ||
	dl_fail "a password in the URI was not refused properly ($rc): $out"
# and so is a secret on -o
rc=0
out=$("$DLOCKFS" -f -o "backend=$uri,pg_password=$PG_SECRET" \
	"$base/backing" "$base/mnt-x" 2>&1) || rc=$?
[[ $rc -eq 2 ]] || dl_fail "pg_password on -o: status $rc: $out"
grep -q -- "$PG_SECRET" <<<"$out" && dl_fail "the -o secret was echoed: $out"

pg_mount2 "$base/backing" "$uri" "$base/dlock.conf"

dl_log "core cases across hosts (one backing directory, two mounts)"
pg_xhost core "$MA" "$MB"
dl_log "awkward names"
pg_xhost names "$MA" "$MB"
dl_log "fairness"
pg_xhost fairness "$MA" "$MB"

dl_log "lockdriver's whole suite on one PostgreSQL-backed mount"
mkdir -p "$MA/ld"
out=$("$LOCKDRIVER" --dlockfs --churn=300 --waiters=30 "$MA/ld" all 2>&1) || {
	printf '%s\n' "$out" | sed 's/^/  /'
	dl_fail "lockdriver: $(grep -E '^FAIL' <<<"$out" | tr '\n' ';')"
}
printf '%s\n' "$out" | sed 's/^/  [lockdriver] /'

# no secret anywhere we show
status=$(getfattr --absolute-names --only-values -n user.dlock.status "$MA")
grep -q 'health=ok' <<<"$status" || dl_fail "status: $status"
grep -q 'server=15' <<<"$status" || dl_fail "no server version in status: $status"
grep -q -- "$PG_SECRET" <<<"$status" && dl_fail "the password is in the status xattr"
ps -eo args | grep -v grep | grep -q -- "$PG_SECRET" && dl_fail "the password shows in ps"
for l in "${DL_LOGS[@]}"; do
	grep -q -- "$PG_SECRET" "$l" && dl_fail "the password is in a daemon log"
done
# everything released, every interrupted wait removed: no rows left
# (with cache=on, a file's right is given back once unused for
# cache_idle_ms: wait for it)
no_rows() { left=$(pg_rows it) && [[ $left == 0 ]]; }
dl_wait_for 10 no_rows || dl_fail "$left lock/queue rows left: $(PG_SQL_DB=$PG_DB pg_sql 'SELECT * FROM it.locks; SELECT * FROM it.waiters')"

dl_umount "$MA"
dl_umount "$MB"
# a clean stop ends the leases
n=$(PG_SQL_DB=$PG_DB pg_sql "SELECT count(*) FROM it.leases")
[[ $n == 0 ]] || dl_fail "$n leases left after both daemons stopped"
dl_pass
