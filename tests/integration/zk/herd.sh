#!/bin/bash
# herd.sh - 20 blocked flock waiters from two hosts on one file.  Each
# release must wake exactly one waiter - the next one - (the backends'
# "wakeups" counters, summed over both hosts, grow by exactly one per
# release: each waiter watches only its predecessor) and the lock must be
# served in arrival order across hosts.
set -euo pipefail
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/zk_lib.sh"
dl_init zk_herd
dl_require_fuse
dl_require_prog flock getfattr mkfifo
zk_start

N=20
dl_tmpdir base
mkdir "$base/backing" "$base/a" "$base/b" "$base/ctl"
zk_mount "$base/backing" "$base/a" a
zk_mount "$base/backing" "$base/b" b
: >"$base/backing/herd"
: >"$base/ctl/order"

wakeups() { echo $(( $(zk_field "$base/a" wakeups) + $(zk_field "$base/b" wakeups) )); }
nwaiters() { getfattr --only-values -n user.dlock.waiters "$base/a/herd" 2>/dev/null | grep -c . || true; }
order_len() { wc -l <"$base/ctl/order"; }
order_ge() { (( $(order_len) >= $1 )); }
nwaiters_is() { (( $(nwaiters) == $1 )); }

# waiter ID HOST: takes the lock, logs its id, holds until its fifo speaks
start_waiter() {
	local id=$1 h=$2
	mkfifo "$base/ctl/go-$id"
	ID=$id ORDER=$base/ctl/order GO=$base/ctl/go-$id \
		flock -w 120 "$base/$h/herd" -c 'echo "$ID" >>"$ORDER"; read -r _ <"$GO"' &
	dl_job "$!"
}

# the holder (id 0, host a), then N waiters alternating hosts, each one
# queued (visible cluster-wide) before the next arrives
start_waiter 0 a
dl_wait_for 10 order_ge 1 || dl_fail "holder did not get the lock"
for ((i = 1; i <= N; i++)); do
	h=$([[ $((i % 2)) -eq 1 ]] && echo b || echo a)
	start_waiter "$i" "$h"
	dl_wait_for 10 nwaiters_is "$i" ||
		dl_fail "waiter $i ($h) not queued: $(getfattr --only-values -n user.dlock.waiters "$base/a/herd")"
done
[[ $(order_len) -eq 1 ]] || dl_fail "a waiter got the lock while it was held"
base_wk=$(wakeups)
dl_log "$N waiters queued; wakeups so far: $base_wk"

for ((k = 0; k < N; k++)); do
	before=$(wakeups)
	echo go >"$base/ctl/go-$k"
	dl_wait_for 15 order_ge $((k + 2)) ||
		dl_fail "release $k: nobody got the lock within 15 s"
	got=$(tail -n 1 "$base/ctl/order")
	[[ $got == $((k + 1)) ]] ||
		dl_fail "release $k: waiter $got got the lock, expected $((k + 1)) (arrival order)"
	after=$(wakeups)
	[[ $((after - before)) -eq 1 ]] ||
		dl_fail "release $k woke $((after - before)) waiters, expected exactly 1"
done
echo go >"$base/ctl/go-$N"
dl_wait_for 10 nwaiters_is 0 || dl_fail "waiters left behind"
dl_log "$N releases, $(( $(wakeups) - base_wk )) wakeups, served in arrival order"
dl_umount "$base/a"
dl_umount "$base/b"
dl_pass
