#!/usr/bin/env bash
# freeze.sh - issue 8, "a frozen host writes after its lock was re-granted":
# on Redis and on ZooKeeper, a process on host a holds an exclusive lock and
# has a write queued while a's daemon is frozen (SIGSTOP) past its lease;
# host b is granted the lock meanwhile and writes; when a's daemon wakes
# (SIGCONT) the queued write must fail with EIO whatever thread runs
# first, and b's data must survive.  Then the same through the shim: a
# shimmed process's write fails with EIO while its agent is still frozen
# (the shim reads the lease deadline itself).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/redis/redis_lib.sh"
. "$here/zk/zk_lib.sh"
dl_init freeze
dl_require_fuse
rd_require
zk_require
py() { python3 "$here/freeze.py" "$@"; }
dl_tmpdir T
rd_start RPORT
zk_start

exists() { [[ -e $1 ]]; }
for b in redis zk; do
	if [[ $b == redis ]]; then
		uri="redis://127.0.0.1:$RPORT/f$$?ttl_ms=2000"
		lease_ms=2000
	else
		uri=$(zk_uri 2000)
		lease_ms=2000
	fi
	mkdir -p "$T/$b-backing" "$T/$b-a" "$T/$b-b" "$T/$b-sig"
	dl_mount "$T/$b-backing" "$T/$b-a" "backend=$uri,host_id=a,socket=none"
	pa=$DL_LAST_PID
	dl_mount "$T/$b-backing" "$T/$b-b" "backend=$uri,host_id=b,socket=none"
	sig=$T/$b-sig
	py hold "$T/$b-a/f" "$sig" &
	holder=$!
	dl_job "$holder"
	dl_wait_for 20 exists "$sig/ready" || dl_fail "$b: the holder did not lock"
	kill -STOP "$pa"
	dl_wait_for 5 dl_stopped "$pa" || dl_fail "$b: daemon a did not stop"
	touch "$sig/go" # the holder's write now waits in a's queue
	t0=$(date +%s%N)
	out=$(timeout 60 python3 "$here/freeze.py" take "$T/$b-b/f" 0.5) ||
		{ kill -CONT "$pa"; dl_fail "$b: host b was not granted the lock while a was frozen"; }
	t1=$(date +%s%N)
	kill -CONT "$pa"
	dl_wait_for 30 exists "$sig/result" || dl_fail "$b: the holder's write never returned"
	res=$(cat "$sig/result")
	data=$(head -c 2 "$T/$b-backing/f")
	dl_log "$b: b granted after $(((t1 - t0) / 1000000)) ms (lease $lease_ms ms); a's queued write: $res; data: $data"
	[[ $res == EIO ]] || dl_fail "$b: the frozen host's queued write returned '$res', not EIO"
	[[ $data == b1 ]] || dl_fail "$b: file holds '$data' after the freeze, b wrote 'b1'"
	wait "$holder" || true
	dl_umount "$T/$b-a"
	dl_umount "$T/$b-b"
done

# the shim: its own clock check refuses the write while the agent sleeps
if [[ -n ${DLOCK_PRELOAD:-} && -f ${DLOCK_PRELOAD:-} ]]; then
	. "$here/preload/pl_lib.sh"
	mkdir -p "$T/app"
	S=$T/a.sock
	declare -A PL_PID=()
	pl_agent a "redis://127.0.0.1:$RPORT/fs$$?ttl_ms=2000" "$S"
	mkdir -p "$T/ssig"
	pl_shim "$S" "$T/app" python3 "$here/freeze.py" hold "$T/app/f" "$T/ssig" &
	holder=$!
	dl_job "$holder"
	dl_wait_for 20 exists "$T/ssig/ready" || dl_fail "shim: the holder did not lock"
	kill -STOP "${PL_PID[a]}"
	dl_wait_for 5 dl_stopped "${PL_PID[a]}" || dl_fail "shim: daemon a did not stop"
	sleep 2.5 # past the lease by the clock: nothing else to wait for
	touch "$T/ssig/go"
	dl_wait_for 10 exists "$T/ssig/result" || { kill -CONT "${PL_PID[a]}"; dl_fail "shim: the write never returned"; }
	kill -CONT "${PL_PID[a]}"
	res=$(cat "$T/ssig/result")
	dl_log "shim: write with the agent frozen past the lease: $res"
	[[ $res == EIO ]] || dl_fail "shim: write through a lock whose lease ran out returned '$res', not EIO"
	wait "$holder" || true
fi
dl_pass
