#!/bin/bash
# pg_badinput.sh - a bad postgresql:// URI makes dlockfs exit 2 with one
# line on stderr before anything starts (malformed, a password in it, a
# bad schema name, bad options), and leaves nothing mounted.  A server that
# cannot be used - nothing listening, no such database, a role that may
# not create the schema - is found when the backend connects: one line,
# exit 1 (fs/main.c: exit 2 is for what is wrong on the command line,
# exit 1 for a backend that cannot be reached, as for redis:// and zk://),
# within the connect timeout, nothing mounted.  No message holds the
# password.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_init pg_badinput
pg_require

pg_start
dl_tmpdir base
B="$base/backing" M="$base/mnt"
mkdir "$B" "$M"
pg_conf "$base/dlock.conf"

# expect_exit WANT WHAT URI [BOUND_S] - run dlockfs -f (bounded), require
# status WANT, exactly one line on stderr, nothing mounted, no password
expect_exit() {
	local want=$1 what=$2 uri=$3 bound=${4:-10} rc=0 err t0 t1
	t0=$(date +%s%N)
	err=$(timeout -k 2 20 "$DLOCKFS" -f \
		-o "backend=$uri,host_id=x,config=$base/dlock.conf,socket=none" \
		"$B" "$M" 2>&1 >/dev/null) || rc=$?
	t1=$(date +%s%N)
	if dl_is_mounted "$M"; then
		fusermount3 -u "$M" 2>/dev/null || fusermount3 -uz "$M" || true
		dl_fail "$what: left $M mounted (status $rc)"
	fi
	[[ $rc -eq $want ]] || dl_fail "$what: exit status $rc, expected $want; stderr: $err"
	[[ -n $err && $(wc -l <<<"$err") -eq 1 ]] ||
		dl_fail "$what: expected one line on stderr, got: '$err'"
	grep -q -- "$PG_SECRET" <<<"$err" && dl_fail "$what: the password was printed"
	(((t1 - t0) / 1000000 <= bound * 1000)) ||
		dl_fail "$what: took $(((t1 - t0) / 1000000)) ms (bound $bound s)"
	dl_log "$what: exit $rc: $err"
}

P=127.0.0.1:$PG_PORT
bad() { expect_exit 2 "$1" "$2"; }
bad "no host" "postgresql:///dlt"
bad "no database" "postgresql://$P"
bad "empty database" "postgresql://$P/"
bad "no //" "postgresql:$P/dlt"
bad "bad port" "postgresql://127.0.0.1:99999/dlt"
bad "port not a number" "postgresql://127.0.0.1:x/dlt"
bad "empty host in the list" "postgresql://$P\\,/dlt"
bad "the same host twice" "postgresql://$P\\,$P/dlt"
bad "IPv6 without brackets" "postgresql://::1:5432/dlt"
bad "password in the user part" "postgresql://dlt:$PG_SECRET@$P/dlt"
bad "password as a query key" "postgresql://dlt@$P/dlt?password=$PG_SECRET"
bad "upper-case schema" "postgresql://$P/dlt?schema=Locks"
bad "schema with a dash" "postgresql://$P/dlt?schema=my-locks"
bad "schema with a quote" "postgresql://$P/dlt?schema=a%22b"
bad "schema starting with pg_" "postgresql://$P/dlt?schema=pg_locks"
bad "schema starting with a digit" "postgresql://$P/dlt?schema=1x"
bad "schema too long" "postgresql://$P/dlt?schema=$(printf 'x%.0s' {1..41})"
bad "empty schema" "postgresql://$P/dlt?schema="
bad "unknown query key" "postgresql://$P/dlt?options=-cfoo"
bad "query key twice" "postgresql://$P/dlt?ttl_ms=3000&ttl_ms=4000"
bad "ttl_ms too small" "postgresql://$P/dlt?ttl_ms=10"
bad "connect timeout not below ttl/2" "postgresql://$P/dlt?ttl_ms=2000&connect_timeout_ms=1000"
bad "bad sslmode" "postgresql://$P/dlt?sslmode=sometimes"
bad "bad target_session_attrs" "postgresql://$P/dlt?target_session_attrs=any-old"
bad "bad socket directory" "postgresql://%2Fno%ZZ/dlt"
bad "relative socket directory" "postgresql://%2e%2Frun/dlt"
bad "postgres:// alias, password" "postgres://dlt:x@$P/dlt"

# the server cannot be used: found at connect time, exit 1, one line,
# within the connect timeout (+ the start-up of the daemon)
free=$(pg_free_port)
expect_exit 1 "nothing listening" \
	"postgresql://dlt@127.0.0.1:$free/dlt?ttl_ms=4000" 5
expect_exit 1 "no such database" "$(pg_uri ttl_ms=4000 | sed 's|/dlt?|/nosuchdb?|')" 5
# an ordinary role that may neither create schemas in the database nor
# use an existing one
pg_sql "CREATE ROLE weak LOGIN PASSWORD '$PG_SECRET'" >/dev/null
PG_SQL_DB=$PG_DB pg_sql "REVOKE CREATE ON DATABASE $PG_DB FROM PUBLIC" >/dev/null
expect_exit 1 "a role without CREATE on the database" \
	"postgresql://weak@$P/dlt?ttl_ms=4000&schema=weak" 5
# both hosts of a failover list unreachable
expect_exit 1 "no host of the list" \
	"postgresql://dlt@127.0.0.1:$free\\,127.0.0.2:$free/dlt?ttl_ms=4000" 5
dl_pass
