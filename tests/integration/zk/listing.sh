#!/bin/bash
# listing.sh - issue 8, item 6: what list() reports feeds the lock
# managers' wait-for graphs, so it must not invent holders.
#  1. A queued request is listed with the same "since" on every host (the
#     node's creation time on the server).
#  2. A daemon lists its own queued request as waiting until it has
#     processed the grant, even when its predecessor is already gone: the
#     daemon is made slow to notice (DLOCKFS_TEST_ZK_KICK_DELAY_MS, see
#     backend/zk/internal.h), and while its waiter has not got the lock, the
#     daemon must not list that waiter as a holder.
set -euo pipefail
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/zk_lib.sh"
dl_init zk_listing
dl_require_fuse
dl_require_prog flock getfattr mkfifo
zk_start

dl_tmpdir base
mkdir "$base/backing" "$base/a" "$base/b" "$base/ctl"
DLOCKFS_TEST_ZK_KICK_DELAY_MS=4000 zk_mount "$base/backing" "$base/a" a
zk_mount "$base/backing" "$base/b" b
mkfifo "$base/ctl/go"
: >"$base/backing/f"

xa() { getfattr --only-values -n "user.dlock.$1" "$base/a/f" 2>/dev/null || true; }
xb() { getfattr --only-values -n "user.dlock.$1" "$base/b/f" 2>/dev/null || true; }
queued() { [[ -n $(xb waiters) && -n $(xa waiters) ]]; }

GO=$base/ctl/go flock "$base/b/f" -c 'echo locked >"$(dirname "$GO")/held"; read -r _ <"$GO"' &
holder=$!
dl_job "$holder"
dl_wait_for 15 test -s "$base/ctl/held" || dl_fail "host b did not get the lock"
flock -w 60 "$base/a/f" -c "echo got >'$base/ctl/got'" &
waiter=$!
dl_job "$waiter"
dl_wait_for 15 queued || dl_fail "host a's request is not listed as waiting"

# 1. the same "since" on both hosts
sa=$(xa waiters | grep -o 'since=[^ ]*')
sb=$(xb waiters | grep -o 'since=[^ ]*')
dl_log "waiter listed on a with $sa, on b with $sb"
[[ $sa == "$sb" ]] || dl_fail "the hosts disagree on when the request was queued: a: $sa b: $sb"

# 2. host a is slow to notice its grant: until its waiter has the lock,
# host a lists it as waiting, never as holding
# (the hook holds host a's worker 4 s after the wakeup: a listing taken
# in the first 3 s after the release is taken before the grant is done)
ms() { date +%s%3N; }
t0=$(ms)
echo go >"$base/ctl/go"
seen=0
check() {
	local locks
	locks=$(xa locks)
	[[ -s $base/ctl/got ]] && return 0
	(( $(ms) - t0 < 3000 )) || return 1
	if [[ $locks == *host=a* ]]; then
		dl_fail "host a lists its request as held while it has not processed the grant: $locks"
	fi
	seen=$((seen + 1))
	return 1
}
dl_wait_for 20 check || dl_fail "host a's waiter never got the lock"
dl_log "host a listed its request as waiting $seen times before its grant was processed"
(( seen > 0 )) || dl_fail "the window was not observed (the hook did not delay the grant)"
dl_wait_jobs 10 "$waiter" "$holder"
dl_umount "$base/a"
dl_umount "$base/b"
dl_pass
