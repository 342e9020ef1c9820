#!/bin/bash
# pg_admin.sh - administration of the PostgreSQL backend:
#  - dlockctl against two hosts: `locks` shows the other host's holder,
#    `break` on host b frees a lock held on host a, host a's daemon marks
#    it lost and the holder's writes get EIO (lib.sh's dl_check_break);
#  - the operator's SQL, as the ordinary role: the view SCHEMA.locks shows
#    a holder (readable resource, host, pid, mode, range, token, since),
#    SCHEMA.waiters the host waiting for it; SELECT SCHEMA.break_lock(path)
#    frees it: the holder's daemon reports it lost (writes get EIO), the
#    waiter is served;
#  - user.dlock.status: health, server version, lease age, counts, and
#    never the password.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_init pg_admin
pg_require
X=$(dirname "$0")/../redis/xhost.py

pg_start
dl_tmpdir base
mkdir "$base/backing" "$base/a" "$base/b"
pg_conf "$base/dlock.conf"
URI=$(pg_uri "schema=adm&ttl_ms=3000")
dl_mount "$base/backing" "$base/a" "backend=$URI,host_id=a,config=$base/dlock.conf,socket=$base/a.sock"
dl_mount "$base/backing" "$base/b" "backend=$URI,host_id=b,config=$base/dlock.conf,socket=$base/b.sock"

dl_check_break "$base"
dl_log "dlockctl break: ok"

# ---- the operator's SQL
coproc HOLD { exec python3 "$X" hold "$base/a/sql held.lock"; }
dl_job "$HOLD_PID"
line=""
read -r -t 15 line <&"${HOLD[0]}" || true
[[ $line == held ]] || dl_fail "holder did not lock: '$line'"
python3 "$X" try "$base/b/sql held.lock" wait 60 >"$base/waiter.out" 2>&1 &
waiter=$!
dl_job "$waiter"
waiting() { [[ -n $(pg_role_sql "SELECT host FROM adm.waiters WHERE resource = 'sql held.lock'") ]]; }
dl_wait_for 10 waiting || dl_fail "no waiter in adm.waiters"

row=$(pg_role_sql "SELECT resource, space, mode, range, host, pid, token > 0,
	since <= now() FROM adm.locks WHERE resource = 'sql held.lock'")
[[ $row == "sql held.lock|flock|exclusive|0-EOF|a|$HOLD_PID|t|t" ]] ||
	dl_fail "adm.locks shows '$row'"
dl_log "adm.locks: $row"
row=$(pg_role_sql "SELECT resource, mode, host FROM adm.waiters")
[[ $row == "sql held.lock|exclusive|b" ]] || dl_fail "adm.waiters shows '$row'"

n=$(pg_role_sql "SELECT adm.break_lock('sql held.lock')")
[[ $n == 1 ]] || dl_fail "break_lock returned '$n', expected 1 holder"
lost() { getfattr --only-values -n user.dlock.locks "$base/a/sql held.lock" 2>/dev/null | grep -q '^flock lost '; }
dl_wait_for 10 lost || dl_fail "host a never learned its lock was broken"
echo write >&"${HOLD[1]}"
line=""
read -r -t 15 line <&"${HOLD[0]}" || true
[[ $line == EIO ]] || dl_fail "the holder's write after the SQL break gave '$line', expected EIO"
served() { grep -q '^ok' "$base/waiter.out"; }
dl_wait_for 10 served || dl_fail "the waiter was not served after the break: $(cat "$base/waiter.out")"
dl_wait_jobs 10 "$waiter"
kill -KILL "$HOLD_PID" 2>/dev/null || true
wait "$HOLD_PID" 2>/dev/null || true
n=$(pg_role_sql "SELECT adm.break_lock('no such file')")
[[ $n == 0 ]] || dl_fail "breaking a free lock returned '$n'"
# the bytea form reaches any name
n=$(pg_role_sql "SELECT adm.break_lock('\\x6e6f6e65'::bytea)")
[[ $n == 0 ]] || dl_fail "break_lock(bytea) returned '$n'"
dl_log "SQL break: holder lost its lock, waiter served"

# ---- status
status=$(getfattr --absolute-names --only-values -n user.dlock.status "$base/a")
dl_log "status: $(grep backend_status <<<"$status")"
for f in 'health=ok' 'server=15\.' 'schema=adm' 'lease=[1-9]' 'lease_ms=3000' \
	'last_renew_ms_ago=[0-9]' 'held=[0-9]' 'waiting=[0-9]'; do
	grep -q "$f" <<<"$status" || dl_fail "status lacks $f: $status"
done
grep -q -- "$PG_SECRET" <<<"$status" && dl_fail "the password is in the status"
"$DLOCKCTL" --socket "$base/a.sock" status >"$base/st" 2>&1 || dl_fail "dlockctl status failed"
grep -q -- "$PG_SECRET" "$base/st" && dl_fail "the password is in dlockctl status"

dl_umount "$base/a"
dl_umount "$base/b"
dl_pass
