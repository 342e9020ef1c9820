#!/bin/bash
# pg_failover.sh - a failover to an asynchronous replica: the daemons'
# URI lists the primary and its streaming standby with
# target_session_attrs=read-write.  Host b holds a lock; the primary dies
# (stop -m immediate) and the standby is promoted.  libpq's failover list
# finds the new primary; the daemons see that the server's history forked
# (its WAL timeline changed: recent grants may be missing there), so host
# b reports its lock lost and its writes get EIO; then both hosts work on
# the new primary and host a gets the lock.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_init pg_failover
pg_require
X=$(dirname "$0")/../redis/xhost.py

pg_start
P_PORT=$PG_PORT P_DATA=$PG_DATA P_SOCK=$PG_SOCK
# the standby: a base backup of the primary, streaming from it
sdir=$(mktemp -d "${TMPDIR:-/tmp}/dlockfs-pg.XXXXXX")
PG_DIRS+=("$sdir")
chmod 755 "$sdir"
chown "$PG_OSUSER" "$sdir"
S_PORT=$(pg_free_port)
runuser -u "$PG_OSUSER" -- "$PG_BIN/pg_basebackup" -c fast -h "$P_SOCK" -p "$P_PORT" \
	-U postgres -D "$sdir/data" -R -X stream >"$sdir/basebackup.log" 2>&1 ||
	dl_fail "pg_basebackup failed: $(tail -3 "$sdir/basebackup.log")"
runuser -u "$PG_OSUSER" -- "$PG_BIN/pg_ctl" -D "$sdir/data" -l "$sdir/log" -w -t 30 \
	-o "-p $S_PORT -k $sdir -c listen_addresses=127.0.0.1 -c max_connections=60" \
	start >/dev/null || dl_fail "the standby did not start: $(tail -5 "$sdir/log")"
streaming() { [[ $(pg_sql "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'") == 1 ]]; }
dl_wait_for 20 streaming || dl_fail "the standby does not stream"
dl_log "standby on 127.0.0.1:$S_PORT (pid $(head -1 "$sdir/data/postmaster.pid"))"
s_sql() {
	psql -X -q -At -h "$sdir" -p "$S_PORT" -U postgres -d "$PG_DB" -c "$1"
}

dl_tmpdir base
mkdir "$base/backing"
pg_conf "$base/dlock.conf"
uri="postgresql://$PG_ROLE@127.0.0.1:$P_PORT\\,127.0.0.1:$S_PORT/$PG_DB?schema=fo&ttl_ms=6000&target_session_attrs=read-write"
pg_mount2 "$base/backing" "$uri" "$base/dlock.conf"

coproc HOLD { exec python3 "$X" hold "$MB/f"; }
dl_job "$HOLD_PID"
line=""
read -r -t 15 line <&"${HOLD[0]}" || true
[[ $line == held ]] || dl_fail "holder did not lock: '$line'"
# the lock is on the standby: its row (cache=off: the file's shared right
# is a row too), or, with the cache on, host b's exclusive right under
# which it was granted
replicated() { [[ $(s_sql "SELECT count(*) FROM fo.locks WHERE resource NOT LIKE '//right/%' OR mode = 'exclusive'") == 1 ]]; }
dl_wait_for 10 replicated || dl_fail "the lock row did not reach the standby"
hold_write() {
	local l=""
	echo write >&"${HOLD[1]}"
	read -r -t 15 l <&"${HOLD[0]}" || true
	printf '%s' "$l"
}
[[ $(hold_write) == ok ]] || dl_fail "write under the lock failed"

dl_log "the primary dies, the standby is promoted"
runuser -u "$PG_OSUSER" -- "$PG_BIN/pg_ctl" -D "$P_DATA" -m immediate -w stop >/dev/null ||
	dl_fail "cannot stop the primary"
runuser -u "$PG_OSUSER" -- "$PG_BIN/pg_ctl" -D "$sdir/data" -w -t 30 promote >/dev/null ||
	dl_fail "cannot promote the standby"
promoted() { [[ $(s_sql "SELECT pg_is_in_recovery()") == f ]]; }
dl_wait_for 20 promoted || dl_fail "the standby was not promoted"

lost_eio() { [[ $(hold_write) == EIO ]]; }
dl_wait_for 15 lost_eio || dl_fail "host b still writes under a lock granted before the failover"
shows_lost() { getfattr --absolute-names --only-values -n user.dlock.locks "$MB/f" 2>/dev/null | grep -q '^flock lost'; }
dl_wait_for 10 shows_lost || dl_fail "the lock is not shown lost"
for l in "${DL_LOGS[@]}"; do
	grep -q "timeline changed" "$l" && dl_log "$(grep -h 'timeline changed' "$l" | head -1)"
done
kill -KILL "$HOLD_PID" 2>/dev/null || true
wait "$HOLD_PID" 2>/dev/null || true

r=$(python3 "$X" try "$MA/f" wait 20)
[[ $r == ok* ]] || dl_fail "host a did not get the lock on the new primary: $r"
r=$(python3 "$X" try "$MB/g" nb 5)
[[ $r == ok* ]] || dl_fail "host b cannot lock on the new primary: $r"
pg_healthy "$MA" && pg_healthy "$MB" || dl_fail "the hosts are not healthy on the new primary"

dl_umount "$MA"
dl_umount "$MB"
dl_pass
