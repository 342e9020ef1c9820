#!/bin/bash
# pg_pooler.sh - a connection pooler between dlockfs and the server
# (pgbouncer in transaction mode) is refused when the daemon starts, with
# one line that says so and exit 1: LISTEN, the lease and the advisory
# locks of a statement need one server session per connection, which
# transaction pooling does not give, and the daemon cannot tell the
# pooler's mode (its backend pid is not the server's).
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_init pg_pooler
pg_require
dl_require_prog pgbouncer

pg_start
dl_tmpdir base
mkdir "$base/backing" "$base/mnt" "$base/pgb"
bport=$(pg_free_port)
cat >"$base/pgb/pgb.ini" <<EOT
[databases]
$PG_DB = host=$PG_SOCK port=$PG_PORT dbname=$PG_DB
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = trust
auth_file = $base/pgb/users.txt
pool_mode = transaction
logfile = $base/pgb/log
pidfile = $base/pgb/pid
EOT
printf '"%s" ""\n' "$PG_ROLE" >"$base/pgb/users.txt"
chmod 755 "$base"
chown -R "$PG_OSUSER" "$base/pgb"
# pgbouncer refuses to run as root; -d: it writes its pid, which the
# cleanup kills (ours only)
runuser -u "$PG_OSUSER" -- pgbouncer -d "$base/pgb/pgb.ini" ||
	dl_fail "pgbouncer did not start"
pgb_running() { [[ -s $base/pgb/pid ]]; }
dl_wait_for 10 pgb_running || dl_fail "pgbouncer wrote no pid: $(cat "$base/pgb/log")"
pgb_pid=$(cat "$base/pgb/pid")
dl_job "$pgb_pid"
dl_log "pgbouncer (transaction mode, pid $pgb_pid) on 127.0.0.1:$bport"
# it does pass statements through
out=$(psql -X -At -h 127.0.0.1 -p "$bport" -U "$PG_ROLE" -d "$PG_DB" -c 'SELECT 1')
[[ $out == 1 ]] || dl_fail "pgbouncer does not work: $out"

rc=0
err=$(timeout -k 2 20 "$DLOCKFS" -f \
	-o "backend=postgresql://$PG_ROLE@127.0.0.1:$bport/$PG_DB?schema=pool,socket=none" \
	"$base/backing" "$base/mnt" 2>&1 >/dev/null) || rc=$?
dl_is_mounted "$base/mnt" && dl_fail "mounted through a transaction pooler"
[[ $rc -eq 1 ]] || dl_fail "exit status $rc, expected 1: $err"
[[ $(wc -l <<<"$err") -eq 1 ]] || dl_fail "expected one line, got: $err"
grep -q 'connection pooler' <<<"$err" || dl_fail "the reason is not clear: $err"
dl_log "refused: $err"
dl_pass
