#!/bin/bash
# pg_creds.sh - the credentials and transport PostgreSQL users already
# have, used as libpq uses them (issue 11):
#  - a password from PGPASSFILE (the ~/.pgpass format), with no pg_password
#    in any config: the daemon mounts over TCP (scram-sha-256) and locks;
#    the password is in no log line, no status, no process argument;
#  - with no password anywhere, the mount is refused with one line;
#  - sslmode=require against a server with ssl=on (a self-signed
#    certificate made here): the daemon's connections are encrypted
#    (pg_stat_ssl says so);
#  - sslmode=verify-full with a root certificate that did not sign the
#    server's: refused at mount time with one line, nothing mounted;
#  - ~/.pgpass (HOME of the daemon), no PGPASSFILE: mounts and locks;
#  - a client certificate in ~/.postgresql/ (postgresql.crt, .key,
#    root.crt), the server asking for it (pg_hba "cert"): mounts with no
#    password anywhere, pg_stat_ssl shows the certificate's DN; the same
#    HOME without the certificate is refused with one line.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_init pg_creds
pg_require
dl_require_prog openssl getfattr flock

dl_tmpdir base
chmod 755 "$base"
mkdir -p "$base/backing" "$base/mnt" "$base/ssl" "$base/other"

# a CA, a server certificate it signs (CN 127.0.0.1), and an unrelated CA
ssl() { openssl "$@" >>"$base/ssl/openssl.log" 2>&1 || dl_fail "openssl $1 failed: $(tail -3 "$base/ssl/openssl.log")"; }
ssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=dlockfs test CA" \
	-keyout "$base/ssl/ca.key" -out "$base/ssl/ca.crt"
ssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" \
	-keyout "$base/ssl/server.key" -out "$base/ssl/server.csr"
ssl x509 -req -in "$base/ssl/server.csr" -CA "$base/ssl/ca.crt" -CAkey "$base/ssl/ca.key" \
	-CAcreateserial -days 2 -out "$base/ssl/server.crt"
# a client certificate for the test's role, signed by the same CA
ssl req -newkey rsa:2048 -nodes -subj "/CN=$PG_ROLE" \
	-keyout "$base/ssl/client.key" -out "$base/ssl/client.csr"
ssl x509 -req -in "$base/ssl/client.csr" -CA "$base/ssl/ca.crt" -CAkey "$base/ssl/ca.key" \
	-CAcreateserial -days 2 -out "$base/ssl/client.crt"
ssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=another CA" \
	-keyout "$base/other/ca.key" -out "$base/other/ca.crt"
chown "$PG_OSUSER" "$base/ssl/server.key" "$base/ssl/server.crt"
chmod 600 "$base/ssl/server.key"

# the server as pg_start makes it, with TLS on
pg_server_opts() {
	printf '%s' "-p $PG_PORT -k $PG_SOCK -c listen_addresses=127.0.0.1 -c max_connections=60 -c ssl=on -c ssl_cert_file=$base/ssl/server.crt -c ssl_key_file=$base/ssl/server.key -c ssl_ca_file=$base/ssl/ca.crt"
}
pg_start

# no password in any config: only what libpq finds itself
: >"$base/empty.conf"
chmod 600 "$base/empty.conf"
(umask 077 && printf '127.0.0.1:%s:%s:%s:%s\n' "$PG_PORT" "$PG_DB" "$PG_ROLE" "$PG_SECRET" \
	>"$base/pgpass")
uri="postgresql://$PG_ROLE@127.0.0.1:$PG_PORT/$PG_DB?schema=creds&ttl_ms=4000"

# ---- refused without a password: one line, nothing mounted
rc=0
err=$(PGPASSFILE=$base/nowhere timeout -k 2 20 "$DLOCKFS" -f \
	-o "backend=$uri,host_id=x,config=$base/empty.conf,socket=none" \
	"$base/backing" "$base/mnt" 2>&1 >/dev/null) || rc=$?
dl_is_mounted "$base/mnt" && dl_fail "mounted without a password"
[[ $rc -ne 0 && -n $err && $(wc -l <<<"$err") -eq 1 ]] ||
	dl_fail "no password: exit $rc, expected one line and a failure; got: '$err'"
dl_log "no password: exit $rc: $err"

# ---- PGPASSFILE, over TLS (sslmode=require)
export PGPASSFILE=$base/pgpass
dl_mount "$base/backing" "$base/mnt" \
	"backend=$uri&sslmode=require,host_id=a,config=$base/empty.conf,socket=none"
unset PGPASSFILE
pid=$DL_LAST_PID
: >"$base/mnt/f"
flock -n "$base/mnt/f" true || dl_fail "no lock through a mount that read PGPASSFILE"
(
	# blocking (bounded): the release of the flock above is asynchronous
	# (FUSE_RELEASE follows the close), as in xhost.py's handoff
	flock -w 10 9 || exit 1
	# a row of this host's on the server: the lock's, or with the cache
	# on the file's right it was granted under
	[[ $(PG_SQL_DB=$PG_DB pg_sql "SELECT count(*) FROM creds.locks WHERE host = 'a'") -ge 1 ]] || exit 2
) 9>"$base/mnt/f" || dl_fail "the lock is not a row on the server (status $?)"
ssl_rows=$(pg_sql "SELECT count(*) FILTER (WHERE s.ssl), count(*)
	FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
	WHERE a.usename = '$PG_ROLE' AND a.client_addr IS NOT NULL")
dl_log "the daemon's connections (encrypted|all): $ssl_rows"
[[ $ssl_rows =~ ^([0-9]+)\|([0-9]+)$ && ${BASH_REMATCH[2]} -gt 0 &&
	${BASH_REMATCH[1]} == "${BASH_REMATCH[2]}" ]] ||
	dl_fail "not every connection of the daemon is encrypted: $ssl_rows"
status=$(getfattr --absolute-names --only-values -n user.dlock.status "$base/mnt")
for where in "$status" "$(tr '\0' ' ' </proc/"$pid"/cmdline)" "$(cat "${DL_LOGS[@]}")"; do
	grep -qF -- "$PG_SECRET" <<<"$where" && dl_fail "the password shows: $where"
done
dl_umount "$base/mnt"

# ---- verify-full against a CA that did not sign the server's certificate
rc=0
err=$(PGPASSFILE=$base/pgpass PGSSLROOTCERT=$base/other/ca.crt timeout -k 2 20 "$DLOCKFS" -f \
	-o "backend=$uri&sslmode=verify-full,host_id=x,config=$base/empty.conf,socket=none" \
	"$base/backing" "$base/mnt" 2>&1 >/dev/null) || rc=$?
dl_is_mounted "$base/mnt" && dl_fail "mounted with a server certificate nobody vouches for"
[[ $rc -ne 0 && -n $err && $(wc -l <<<"$err") -eq 1 ]] ||
	dl_fail "verify-full, wrong CA: exit $rc, expected one line and a failure; got: '$err'"
dl_log "verify-full with another CA: exit $rc: $err"

# ---- and with the CA that signed it: mounts
export PGPASSFILE=$base/pgpass PGSSLROOTCERT=$base/ssl/ca.crt
dl_mount "$base/backing" "$base/mnt" \
	"backend=$uri&sslmode=verify-full,host_id=b,config=$base/empty.conf,socket=none"
unset PGPASSFILE PGSSLROOTCERT
flock -n "$base/mnt/f" true || dl_fail "no lock through the verify-full mount"
dl_umount "$base/mnt"

# ---- ~/.pgpass: libpq's default place, found through the daemon's HOME
home=$base/home
mkdir -p "$home/.postgresql"
cp "$base/pgpass" "$home/.pgpass"
chmod 600 "$home/.pgpass"
HOME=$home dl_mount "$base/backing" "$base/mnt" \
	"backend=$uri&sslmode=require,host_id=c,config=$base/empty.conf,socket=none"
flock -n "$base/mnt/f" true || dl_fail "no lock through a mount that read ~/.pgpass"
dl_umount "$base/mnt"
rm "$home/.pgpass"

# ---- a client certificate instead of a password: the server asks for one
# on TLS connections from 127.0.0.1 (pg_hba "cert": the certificate's CN
# is the role), so the password of the role is no use any more
hba=$PG_DATA/pg_hba.conf
{ printf 'hostssl all all 127.0.0.1/32 cert\n'; cat "$hba"; } >"$hba.new"
chown "$PG_OSUSER" "$hba.new"
mv "$hba.new" "$hba"
pg_ctl_do reload >/dev/null
# the same HOME without a certificate: refused, one line
rc=0
err=$(HOME=$home PGSSLROOTCERT=$base/ssl/ca.crt timeout -k 2 20 "$DLOCKFS" -f \
	-o "backend=$uri&sslmode=verify-full,host_id=x,config=$base/empty.conf,socket=none" \
	"$base/backing" "$base/mnt" 2>&1 >/dev/null) || rc=$?
dl_is_mounted "$base/mnt" && dl_fail "mounted without the client certificate the server asks for"
[[ $rc -ne 0 && -n $err && $(wc -l <<<"$err") -eq 1 ]] ||
	dl_fail "no client certificate: exit $rc, expected one line and a failure; got: '$err'"
dl_log "no client certificate: exit $rc: $err"
# with it, in libpq's default places (~/.postgresql/)
cp "$base/ssl/client.crt" "$home/.postgresql/postgresql.crt"
cp "$base/ssl/client.key" "$home/.postgresql/postgresql.key"
cp "$base/ssl/ca.crt" "$home/.postgresql/root.crt"
chmod 600 "$home/.postgresql/postgresql.key"
HOME=$home dl_mount "$base/backing" "$base/mnt" \
	"backend=$uri&sslmode=verify-full,host_id=d,config=$base/empty.conf,socket=none"
flock -n "$base/mnt/f" true || dl_fail "no lock through the client-certificate mount"
dn=$(pg_sql "SELECT string_agg(DISTINCT coalesce(s.client_dn, '-'), ',')
	FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
	WHERE a.usename = '$PG_ROLE' AND a.client_addr IS NOT NULL")
dl_log "client certificates of the daemon's connections: $dn"
[[ $dn == "/CN=$PG_ROLE" ]] || dl_fail "the daemon's connections do not show the client certificate: '$dn'"
dl_umount "$base/mnt"
dl_pass
