# pg_lib.sh - helpers of the PostgreSQL backend's integration tests (bash).
#
# Source after ../lib.sh, then call pg_init NAME instead of dl_init.  It
# starts real PostgreSQL 15 servers (initdb into a fresh directory owned
# by an unprivileged user - PostgreSQL refuses to run as root - then
# pg_ctl start on a free loopback port, its socket in that directory),
# creates an ordinary role (no superuser, no CREATEDB) that owns one
# database, and stops every server it started (pg_ctl stop, then SIGKILL
# of that server's postmaster pid only) and removes its directory on
# every exit path, after lib.sh's own cleanup (daemons unmounted first,
# so they can still drop their leases).  Nothing but 127.0.0.1 and the
# server's own socket directory is ever used.
#
#   pg_require                skip (fail in CI) without PostgreSQL 15
#   pg_start                  start a server: PG_PORT, PG_SOCK (socket
#                             directory), PG_DATA, PG_ROLE, PG_DB,
#                             PG_SECRET (the role's password)
#   pg_ctl_do ARGS...         pg_ctl on it as its owner (stop, restart...)
#   pg_sql SQL                psql as the superuser over the socket: the
#                             rows, unaligned, '|'-separated
#   pg_role_sql SQL           the same as the ordinary role
#   pg_uri [QUERY]            postgresql://ROLE@127.0.0.1:PORT/DB?QUERY
#   pg_conf FILE              a mode-0600 config file with pg_password
#   pg_mount2 BACKING URI CONF   two "hosts" a and b: MA, MB, PA, PB

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_OSUSER=${PG_OSUSER:-postgres}
PG_DIRS=()
PG_PORT= PG_SOCK= PG_DATA= PG_ROLE=dlt PG_DB=dlt PG_SECRET=

pg_require() {
	dl_require_fuse
	dl_require_prog python3 runuser psql
	[[ -x $PG_BIN/initdb && -x $PG_BIN/pg_ctl ]] ||
		dl_skip "PostgreSQL server binaries not found in $PG_BIN"
	if ! id -u "$PG_OSUSER" >/dev/null 2>&1; then
		useradd --system --no-create-home --shell /usr/sbin/nologin \
			"$PG_OSUSER" || dl_fail "cannot create user $PG_OSUSER"
	fi
}

pg_free_port() {
	python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"
}

pg_ctl_do() {
	runuser -u "$PG_OSUSER" -- "$PG_BIN/pg_ctl" -D "$PG_DATA" "$@"
}

# the options the server runs with (restarts use them again)
pg_server_opts() {
	printf '%s' "-p $PG_PORT -k $PG_SOCK -c listen_addresses=127.0.0.1 -c max_connections=60"
}

pg_start() {
	local dir
	dir=$(mktemp -d "${TMPDIR:-/tmp}/dlockfs-pg.XXXXXX")
	PG_DIRS+=("$dir")
	chmod 755 "$dir"
	chown "$PG_OSUSER" "$dir"
	PG_SOCK=$dir
	PG_DATA=$dir/data
	PG_PORT=$(pg_free_port)
	PG_SECRET="pw-$$-$RANDOM$RANDOM"
	runuser -u "$PG_OSUSER" -- "$PG_BIN/initdb" -D "$PG_DATA" -U postgres \
		-A trust --auth-host=scram-sha-256 --no-sync >"$dir/initdb.log" 2>&1 ||
		dl_fail "initdb failed: $(tail -5 "$dir/initdb.log")"
	pg_ctl_do -l "$dir/log" -w -t 30 -o "$(pg_server_opts)" start >/dev/null ||
		dl_fail "PostgreSQL did not start: $(tail -5 "$dir/log")"
	pg_sql "CREATE ROLE $PG_ROLE LOGIN PASSWORD '$PG_SECRET'" >/dev/null
	pg_sql "CREATE DATABASE $PG_DB OWNER $PG_ROLE" >/dev/null
	dl_log "PostgreSQL on 127.0.0.1:$PG_PORT (socket dir $PG_SOCK, pid $(pg_pid))"
}

# the postmaster's pid (of the server this test started), or nothing
pg_pid() { head -1 "$PG_DATA/postmaster.pid" 2>/dev/null || true; }

pg_sql() {
	psql -X -q -At -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" \
		-U postgres -d "${PG_SQL_DB:-postgres}" -c "$1"
}

pg_role_sql() {
	psql -X -q -At -v ON_ERROR_STOP=1 -h "$PG_SOCK" -p "$PG_PORT" \
		-U "$PG_ROLE" -d "$PG_DB" -c "$1"
}

pg_uri() {
	printf 'postgresql://%s@127.0.0.1:%s/%s%s' "$PG_ROLE" "$PG_PORT" "$PG_DB" \
		"${1:+?$1}"
}

pg_conf() {
	(umask 077 && printf 'pg_password = %s\n' "$PG_SECRET" >"$1")
}

pg_mount2() {
	local backing=$1 uri=$2 conf=$3 base
	base=$(dirname "$backing")
	MA=$base/mnt-a
	MB=$base/mnt-b
	mkdir -p "$MA" "$MB"
	dl_mount "$backing" "$MA" "backend=$uri,host_id=a,config=$conf,socket=$base/a.sock"
	PA=$DL_LAST_PID
	dl_mount "$backing" "$MB" "backend=$uri,host_id=b,config=$conf,socket=$base/b.sock"
	PB=$DL_LAST_PID
}

# pg_xhost ARGS... - the cross-host driver of the Redis suite (it only
# needs two mounts); echo its output, fail on FAIL
pg_xhost() {
	local out rc=0
	out=$(python3 "$(dirname "$0")/../redis/xhost.py" "$@" 2>&1) || rc=$?
	printf '%s\n' "$out" | sed 's/^/  /'
	[[ $rc -eq 0 ]] || dl_fail "xhost.py $1: $(printf '%s\n' "$out" | grep -E '^FAIL' | tr '\n' ';')"
}

# pg_rows SCHEMA - granted and queued locks left, as the operator's views
# show them (live leases only: a dead lease's rows are purged by the next
# request on their resource), without the cache's rights ("//right/...":
# every mount takes one on each file it uses, cache=off too)
pg_rows() {
	PG_SQL_DB=$PG_DB pg_sql "SELECT (SELECT count(*) FROM $1.locks WHERE resource NOT LIKE '//right/%')
		+ (SELECT count(*) FROM $1.waiters WHERE resource NOT LIKE '//right/%')"
}

# pg_forget_daemon PID - a daemon the test killed on purpose: lib.sh's
# dl_umount must not expect it to exit cleanly
pg_forget_daemon() {
	local i
	for i in "${!DL_PIDS[@]}"; do
		[[ ${DL_PIDS[$i]} == "$1" ]] && unset 'DL_MOUNTS[i]' 'DL_PIDS[i]'
	done
	return 0
}

pg_healthy() {
	getfattr --absolute-names --only-values -n user.dlock.status "$1" 2>/dev/null |
		grep -q 'health=ok'
}

# every server we started: stopped, and its directory removed
pg_cleanup() {
	local d pid
	for d in "${PG_DIRS[@]}"; do
		[[ -f $d/data/postmaster.pid ]] || { rm -rf -- "$d"; continue; }
		pid=$(head -1 "$d/data/postmaster.pid")
		runuser -u "$PG_OSUSER" -- "$PG_BIN/pg_ctl" -D "$d/data" -m immediate \
			-w -t 10 stop >/dev/null 2>&1
		if [[ -n $pid ]] && dl_pid_alive "$pid"; then
			kill -KILL "$pid" 2>/dev/null
		fi
		if [[ ${DL_KEEP:-} == 1 ]]; then
			dl_log "keeping $d"
		else
			rm -rf -- "$d"
		fi
	done
}

pg_exit() {
	local rc=$?
	set +e # (exit RC) below must not end the trap under errexit
	(exit "$rc")
	dl_cleanup
	pg_cleanup
	exit "$rc"
}

pg_init() {
	dl_init "$1"
	trap pg_exit EXIT
}
