#!/bin/bash
# redis_locks.sh - the lock cases across two hosts on the Redis backend.
#
# A redis-server that requires a password (given to the daemons through a
# root-only config file, never on the command line), two daemons "a" and
# "b" mounting one backing directory.  Then: every core lock case with one
# process on each host (xhost.py core), awkward file names (same key on
# both hosts, no collisions), fairness across hosts, the whole lockdriver
# suite on one Redis-backed mount, and the password shows nowhere.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/redis_lib.sh"
dl_init redis_locks
rd_require
dl_require_driver

SECRET="s3cr3t-$$-pw"
dl_tmpdir base
port=$(rd_free_port)
redis-server --save '' --appendonly no --dir "$base" --bind 127.0.0.1 \
	--port "$port" --daemonize no --requirepass "$SECRET" >"$base/redis.log" 2>&1 &
RD_PID[$port]=$!
dl_job "$!"
dl_wait_for 10 bash -c "redis-cli -p $port -a '$SECRET' --no-auth-warning ping | grep -q PONG" ||
	dl_fail "redis-server did not start"

uri="redis://127.0.0.1:$port/it$$?ttl_ms=3000"
mkdir "$base/backing"
umask 077
printf 'redis_password = %s\n' "$SECRET" >"$base/dlock.conf"
printf 'redis_password = wrong-%s\n' "$SECRET" >"$base/bad.conf"
umask 022

# a wrong password: refused at mount time with the server's reason
mkdir "$base/mnt-x"
rc=0
out=$("$DLOCKFS" -f -o "backend=$uri,host_id=x,config=$base/bad.conf" \
	"$base/backing" "$base/mnt-x" 2>&1) || rc=$?
[[ $rc -ne 0 ]] || dl_fail "a wrong password mounted"
grep -qi 'AUTH\|WRONGPASS\|invalid' <<<"$out" || dl_fail "no AUTH reason: $out"
grep -q "$SECRET" <<<"$out" && dl_fail "the password was printed: $out"
dl_is_mounted "$base/mnt-x" && dl_fail "mounted despite the failure"
# a password in the URI is refused
rc=0
out=$("$DLOCKFS" -f -o "backend=redis://u:pw@127.0.0.1:$port" \
	"$base/backing" "$base/mnt-x" 2>&1) || rc=$?
[[ $rc -eq 2 ]] && grep -q 'config file' <<<"$out" ||
	dl_fail "a password in the URI was not refused properly ($rc): $out"

MA=$base/mnt-a MB=$base/mnt-b
mkdir "$MA" "$MB"
dl_mount "$base/backing" "$MA" "backend=$uri,host_id=a,config=$base/dlock.conf"
dl_mount "$base/backing" "$MB" "backend=$uri,host_id=b,config=$base/dlock.conf"

dl_log "core cases across hosts (one backing directory, two mounts)"
rd_xhost core "$MA" "$MB"
dl_log "awkward names"
rd_xhost names "$MA" "$MB"
dl_log "fairness"
rd_xhost fairness "$MA" "$MB"

dl_log "lockdriver's whole suite on one Redis-backed mount"
mkdir -p "$MA/ld"
out=$("$LOCKDRIVER" --dlockfs --churn=300 --waiters=30 "$MA/ld" all 2>&1) || {
	printf '%s\n' "$out" | sed 's/^/  /'
	dl_fail "lockdriver: $(grep -E '^FAIL' <<<"$out" | tr '\n' ';')"
}
printf '%s\n' "$out" | sed 's/^/  [lockdriver] /'

# no secret anywhere we show
status=$(getfattr --absolute-names --only-values -n user.dlock.status "$MA")
grep -q 'health=ok' <<<"$status" || dl_fail "status: $status"
grep -q "$SECRET" <<<"$status" && dl_fail "the password is in the status xattr"
ps -eo args | grep -v grep | grep -q -- "$SECRET" && dl_fail "the password shows in ps"
for l in "${DL_LOGS[@]}"; do
	grep -q -- "$SECRET" "$l" && dl_fail "the password is in a daemon log"
done
# everything released: no lock records left in Redis (with cache=on, a
# right is given back once unused for cache_idle_ms: wait for it)
left_in_redis() {
	redis-cli -p "$port" -a "$SECRET" --no-auth-warning --scan --pattern "it$$:[gw]:*" | head -5
}
none_left() { [[ -z $(left_in_redis) ]]; }
dl_wait_for 10 none_left ||
	dl_fail "records left in Redis: $(left_in_redis)"

dl_umount "$MA"
dl_umount "$MB"
dl_pass
