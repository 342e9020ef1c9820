#!/bin/bash
# pg_counters.sh - data under contention across two hosts sharing one
# backing directory: a counter incremented by 2 hosts x 3 processes x 300
# times under flock(1), the same under fcntl locks.  Exact counts.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_init pg_counters
pg_require
dl_require_prog flock

PROCS=3
ITER=150
pg_start
dl_tmpdir base
mkdir "$base/backing"
pg_conf "$base/dlock.conf"
pg_mount2 "$base/backing" "$(pg_uri "schema=c&ttl_ms=3000")" "$base/dlock.conf"

dl_log "flock(1) counter: 2 hosts x $PROCS processes x $ITER"
echo 0 >"$MA/counter"
pids=()
for ((w = 0; w < 2 * PROCS; w++)); do
	m=$MA
	((w % 2)) && m=$MB
	(
		export C=$m/counter
		for ((i = 0; i < ITER; i++)); do
			flock -w 60 "$m/lockfile" \
				-c 'n=$(cat "$C") && echo $((n + 1)) >"$C"' || exit 1
		done
	) &
	pids+=("$!")
	dl_job "$!"
done
dl_wait_jobs 150 "${pids[@]}"
got=$(cat "$MB/counter")
[[ $got == $((2 * PROCS * ITER)) ]] ||
	dl_fail "flock counter is $got, expected $((2 * PROCS * ITER))"
dl_log "flock counter: $got"

dl_log "fcntl counter: 2 hosts x $PROCS processes x $ITER"
pg_xhost counter "$MA" "$MB" "$PROCS" "$ITER"

dl_umount "$MA"
dl_umount "$MB"
dl_pass
