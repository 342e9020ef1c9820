#!/bin/bash
# flock_counter.sh - N shells each increment a counter file ITER times
# under flock(1) on the mount; the final count must be exact.
# dl_tmpdir assigns through printf -v; single quotes are meant literally
# shellcheck disable=SC2154,SC2016,SC2012
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
dl_init flock_counter
dl_require_fuse
dl_require_prog flock

N=4
ITER=200
dl_tmpdir base
mkdir "$base/backing" "$base/mnt"
dl_mount "$base/backing" "$base/mnt"
export COUNTER="$base/mnt/counter"
echo 0 >"$COUNTER"

pids=()
for ((w = 0; w < N; w++)); do
	(
		for ((i = 0; i < ITER; i++)); do
			# -w: a lock that never comes fails the job, not the run
			flock -w 60 "$base/mnt/lockfile" \
				-c 'n=$(cat "$COUNTER") && echo $((n + 1)) >"$COUNTER"' ||
				exit 1
		done
	) &
	pids+=("$!")
	dl_job "$!"
done
dl_wait_jobs 200 "${pids[@]}"
got=$(cat "$COUNTER")
[[ $got == $((N * ITER)) ]] ||
	dl_fail "counter is $got, expected $((N * ITER)): updates were lost"
[[ $(cat "$base/backing/counter") == "$got" ]] ||
	dl_fail "backing file disagrees: $(cat "$base/backing/counter")"
dl_umount "$base/mnt"
dl_pass
