#!/bin/bash
# sec_sockpath.sh - issue 9 items 6, 7: the socket's own path.  A missing
# socket directory is made 0755 and root's; one owned by another user, or
# group/world-writable without the sticky bit, is refused (one line, exit
# 2); PATH.lock and PATH are never followed as symlinks; a non-socket at
# PATH is never deleted.  The shim sends a descriptor only to a daemon
# running as root (or DLOCK_SERVER_UID): eve's own daemon on a socket root
# was pointed at gets nothing (ENOLCK, one line).
# shellcheck disable=SC2154
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../preload/pl_lib.sh"
. "$(dirname "$0")/sec_lib.sh"
sec_init sec_sockpath

sec_dir base
mkdir -m 1777 "$base/pub"

# start an agent on socket $1 expecting a refusal: exit 2, one line
# mentioning $2
refused() {
	local sock=$1 want=$2 rc=0
	timeout 10 "$DLOCKFS" --agent -f -o "backend=local:,host_id=r,socket=$sock,paths=$base" \
		>"$base/out" 2>&1 || rc=$?
	[[ $rc -eq 2 ]] || dl_fail "socket $sock: exit $rc, want 2: $(cat "$base/out")"
	[[ $(wc -l <"$base/out") -eq 1 ]] || dl_fail "socket $sock: not one line: $(cat "$base/out")"
	grep -q -- "$want" "$base/out" || dl_fail "socket $sock: '$want' not said: $(cat "$base/out")"
}

dl_log "a missing socket directory is created 0755, root's"
pl_agent a local: "$base/new/sub/d.sock" "$base"
[[ $(stat -c %a:%u "$base/new/sub") == 755:0 ]] ||
	dl_fail "socket directory made $(stat -c %a:%u "$base/new/sub"), want 755:0"
pl_stop a

dl_log "a socket directory owned by eve is refused"
mkdir -m 0755 "$base/eve"
chown dlf_eve: "$base/eve"
refused "$base/eve/d.sock" "owned by"
[[ ! -e $base/eve/d.sock.lock ]] || dl_fail "root created a file in eve's directory"

dl_log "a world-writable directory without the sticky bit is refused"
mkdir -m 0777 "$base/ww"
chmod 0777 "$base/ww"
refused "$base/ww/d.sock" "writable"
dl_log "a missing directory under it is refused too"
refused "$base/ww/x/d.sock" "writable"
[[ ! -e $base/ww/x ]] || dl_fail "root created a directory in a world-writable one"

dl_log "eve's symlink at PATH.lock is not followed"
as_eve ln -s "$base/created-by-root" "$base/pub/s1.sock.lock"
refused "$base/pub/s1.sock" "s1.sock.lock"
[[ ! -e $base/created-by-root ]] || dl_fail "root followed eve's symlink and created its target"

dl_log "eve's symlink at PATH is refused, its target untouched"
touch "$base/target"
as_eve ln -s "$base/target" "$base/pub/s2.sock"
refused "$base/pub/s2.sock" "not a socket"
[[ -f $base/target && -L $base/pub/s2.sock ]] || dl_fail "the symlink or its target was removed"

dl_log "a regular file at PATH is never deleted"
echo keep >"$base/pub/s3.sock"
refused "$base/pub/s3.sock" "not a socket"
[[ $(cat "$base/pub/s3.sock") == keep ]] || dl_fail "the regular file at the socket path was removed"
dl_log "a sticky world-writable directory is fine; a stale socket is replaced"
pl_agent b local: "$base/pub/ok.sock" "$base"
pl_stop b
[[ ! -e $base/pub/ok.sock ]] || dl_fail "the socket was left behind"

dl_log "the shim does not send a descriptor to eve's daemon"
eve_uid=$(id -u dlf_eve)
log=$base/eve-agent.log
touch "$log"
chown dlf_eve: "$log"
as_eve "$DLOCKFS" --agent -f -o "backend=local:,host_id=e,socket=$base/eve/e.sock,paths=$base" >"$log" 2>&1 &
dl_job "$!"
dl_wait_for 10 pl_up "$base/eve/e.sock" || dl_fail "eve's agent did not start: $(cat "$log")"
touch "$base/f"
rc=0
sec_shim "$base/eve/e.sock" "$base" flock -n "$base/f" true 2>"$base/err" || rc=$?
[[ $rc -ne 0 ]] || dl_fail "root's shim locked through eve's daemon"
[[ $(grep -c "^dlock:" "$base/err") -eq 1 ]] || dl_fail "not one dlock line on stderr: $(cat "$base/err")"
grep -q "ENOLCK" "$base/err" && grep -q "uid $eve_uid" "$base/err" ||
	dl_fail "no clear refusal: $(cat "$base/err")"
dl_log "unless told that uid (DLOCK_SERVER_UID)"
DLOCK_SERVER_UID=$eve_uid sec_shim "$base/eve/e.sock" "$base" flock -n "$base/f" true ||
	dl_fail "DLOCK_SERVER_UID=$eve_uid did not let the shim use eve's daemon"
dl_pass
