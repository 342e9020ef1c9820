#!/bin/bash
# cancel.sh - issue 8, item 3: a request cancelled while the daemon is
# cut off from ZooKeeper (its session still alive) leaves no queued node
# behind.  Host b holds a lock, host a waits for it; ZooKeeper goes down;
# the waiting process on a is killed (the daemon cancels the request);
# ZooKeeper comes back with the same data (both sessions survive).  Once b
# releases, the lock must be free - not kept by a's forgotten node until
# a's session ends - and no host may list a waiter or holder.
set -euo pipefail
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/zk_lib.sh"
dl_init zk_cancel
dl_require_fuse
dl_require_prog flock python3 mkfifo getfattr
zk_start

T=60000 # ms: long sessions (the most the server allows), so that both
	# survive the server's restart even on a loaded machine
dl_tmpdir base
mkdir "$base/backing" "$base/a" "$base/b" "$base/ctl"
zk_mount "$base/backing" "$base/a" a "$T"
zk_mount "$base/backing" "$base/b" b "$T"
mkfifo "$base/ctl/go"

waiters() { getfattr --only-values -n user.dlock.waiters "$base/b/f" 2>/dev/null | grep -c . || true; }
nwaiters_is() { (( $(waiters) == $1 )); }
healthy() { [[ $(zk_field "$1" health) == ok ]]; }

GO=$base/ctl/go flock "$base/b/f" -c 'echo locked >"$(dirname "$GO")/state"; read -r _ <"$GO"' &
holder=$!
dl_job "$holder"
dl_wait_for 15 test -s "$base/ctl/state" || dl_fail "host b did not get the lock"
flock -w 120 "$base/a/f" true &
waiter=$!
dl_job "$waiter"
dl_wait_for 15 nwaiters_is 1 || dl_fail "host a's request not queued"

zk_stop
kill -TERM "$waiter"
dl_wait_for 15 dl_not_alive "$waiter" || dl_fail "the waiter did not end within 15 s of its signal"
wait "$waiter" 2>/dev/null || true
dl_log "waiter on host a killed while ZooKeeper was down"
zk_start
dl_wait_for 30 healthy "$base/a" || dl_fail "host a did not reconnect: $(zk_status "$base/a")"
dl_wait_for 30 healthy "$base/b" || dl_fail "host b did not reconnect: $(zk_status "$base/b")"
[[ $(zk_field "$base/a" sessions_lost) == 0 && $(zk_field "$base/b" sessions_lost) == 0 ]] ||
	dl_fail "a session was lost across the restart (the test needs both alive): a: $(zk_status "$base/a") b: $(zk_status "$base/b")"

echo go >"$base/ctl/go"
dl_wait_jobs 15 "$holder"
free_on_b() { flock -n "$base/b/f" true; }
if ! dl_wait_for 10 free_on_b; then
	dl_fail "the lock stays taken after its holder released it: locks: $(getfattr --only-values -n user.dlock.locks "$base/b/f" 2>&1) waiters: $(getfattr --only-values -n user.dlock.waiters "$base/b/f" 2>&1)"
fi
[[ $(waiters) -eq 0 ]] || dl_fail "a waiter is left behind: $(getfattr --only-values -n user.dlock.waiters "$base/b/f")"
dl_log "no node left behind by the cancelled request"
dl_umount "$base/a"
dl_umount "$base/b"
dl_pass
