#!/bin/bash
# counter.sh - 2 hosts x 3 processes x 150 increments of one counter file
# in a shared backing directory, first under flock(1), then under fcntl
# record locks (Python's fcntl.lockf): the count must be exact.
set -euo pipefail
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/zk_lib.sh"
dl_init zk_counter
dl_require_fuse
dl_require_prog flock python3
zk_start

PROCS=3
ITER=${ZK_COUNTER_ITER:-150}
dl_tmpdir base
mkdir "$base/backing" "$base/a" "$base/b"
zk_mount "$base/backing" "$base/a" a
zk_mount "$base/backing" "$base/b" b

# run_all KIND - start PROCS workers per host, wait, check the count
run_all() {
	local kind=$1 pids=() h p got
	echo 0 >"$base/backing/counter-$kind"
	for h in a b; do
		for ((p = 0; p < PROCS; p++)); do
			if [[ $kind == flock ]]; then
				(
					export C="$base/$h/counter-flock"
					for ((i = 0; i < ITER; i++)); do
						flock -w 60 "$base/$h/lock-flock" \
							-c 'n=$(cat "$C") && echo $((n + 1)) >"$C"' ||
							exit 1
					done
				) &
			else
				python3 - "$base/$h/counter-fcntl" "$ITER" <<'PY' &
import fcntl, os, sys
path, n = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDWR)
for _ in range(n):
    fcntl.lockf(fd, fcntl.LOCK_EX)          # F_SETLKW, whole file
    v = int(os.pread(fd, 64, 0) or b"0")
    data = b"%d\n" % (v + 1)
    os.pwrite(fd, data, 0)
    os.ftruncate(fd, len(data))
    fcntl.lockf(fd, fcntl.LOCK_UN)
PY
			fi
			pids+=("$!")
			dl_job "$!"
		done
	done
	dl_wait_jobs 150 "${pids[@]}"
	got=$(cat "$base/a/counter-$kind")
	[[ $got == $((2 * PROCS * ITER)) ]] ||
		dl_fail "$kind: counter is $got, expected $((2 * PROCS * ITER)): updates were lost"
	[[ $(cat "$base/b/counter-$kind") == "$got" ]] ||
		dl_fail "$kind: host b reads $(cat "$base/b/counter-$kind"), host a $got"
	dl_log "$kind: $got increments from 2 hosts, none lost"
}

SECONDS=0
run_all flock
dl_log "flock round took ${SECONDS}s"
SECONDS=0
run_all fcntl
dl_log "fcntl round took ${SECONDS}s"
dl_umount "$base/a"
dl_umount "$base/b"
dl_pass
