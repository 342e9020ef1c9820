#!/bin/bash
# preload_local.sh - the shim on one host (backend local:): lock semantics
# (lockdriver's non-blocking scenarios, fork/close/kill -9/EINTR), files
# outside DLOCK_PATHS, fail-closed ENOLCK and DLOCK_FALLBACK=local, the
# kernel lock that excludes processes without the shim, `flock FILE CMD`
# plus a shell holding a lock across exec, and EIO on writes through a
# shim-held lock that an administrator broke.
# shellcheck disable=SC2154,SC2016
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=pl_lib.sh
. "$(dirname "$0")/pl_lib.sh"
dl_init preload_local
pl_require
dl_require_prog flock python3

dl_tmpdir base
mkdir "$base/app" "$base/other"
S=$base/a.sock
pl_agent a local: "$S" "$base/app"

# kernel locks off: what excludes here is the daemon, nothing else
dl_log "lockdriver (non-blocking scenarios) under the shim"
out=$(DLOCK_KERNEL_LOCK=0 pl_shim "$S" "$base/app" "$LOCKDRIVER" --timeout=5000 \
	--churn=200 "$base/app" flock_ex_ex flock_sh_sh flock_sh_ex flock_close \
	posix_adjacent posix_overlap posix_split posix_merge posix_convert \
	posix_whence posix_close_any_fd flock_fcntl_independent getlk \
	flock_churn posix_churn ofd_churn 2>&1) || dl_fail "lockdriver: $out"
printf '%s\n' "$out" | sed 's/^/  /'

dl_log "fork, close, kill -9, EINTR"
DLOCK_KERNEL_LOCK=0 pl_shim "$S" "$base/app" pl_py semantics "$base/app"

dl_log "flock(1) with a command, and a shell holding a lock across exec"
f=$base/app/cmd.lock
rc=0
pl_shim "$S" "$base/app" flock "$f" env DLOCK_KERNEL_LOCK=0 flock -n "$f" true || rc=$?
[[ $rc -eq 1 ]] || dl_fail "flock -n inside flock FILE CMD: status $rc, expected 1"
fifo=$base/ready
mkfifo "$fifo"
# env, not a function: $! must be the process that execs
env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$S" DLOCK_PATHS="$base/app" \
	bash -c 'exec 9>"$1"; flock 9; echo held >"$2"; exec sleep 60' \
	_ "$base/app/exec.lock" "$fifo" &
holder=$!
dl_job "$holder"
read -r -t 10 line <"$fifo" || dl_fail "the exec holder did not start"
rc=0
DLOCK_KERNEL_LOCK=0 pl_shim "$S" "$base/app" flock -n "$base/app/exec.lock" true || rc=$?
[[ $rc -eq 1 ]] || dl_fail "lock not held by the exec'd program: status $rc"
DLOCK_PATHS=$base/app "$DLOCKCTL" --socket "$S" locks -n -o pid "$base/app/exec.lock" | grep '^ *[1-9][0-9]*$' >/dev/null ||
	dl_fail "dlockctl locks does not show the exec holder"
kill -KILL "$holder"
wait "$holder" 2>/dev/null || true
dl_wait_for 5 env DLOCK_KERNEL_LOCK=0 LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$S" \
	DLOCK_PATHS="$base/app" flock -n "$base/app/exec.lock" true ||
	dl_fail "the exec'd holder's lock survived its kill -9"

dl_log "the kernel lock excludes a process without the shim"
rc=0
pl_shim "$S" "$base/app" flock "$base/app/k.lock" \
	env -u LD_PRELOAD flock -n "$base/app/k.lock" true || rc=$?
[[ $rc -eq 1 ]] || dl_fail "a process without the shim got the lock: status $rc"

dl_log "a lock held through the shim is broken: its writes fail with EIO"
# dlockctl break (root) from outside the holder; the holder's fenced
# descriptors (the locked ones and their dups) get EIO, reads work, other
# files and a new descriptor after close are untouched
if [[ $(id -u) -eq 0 ]]; then
	DLOCK_KERNEL_LOCK=0 pl_shim "$S" "$base/app" pl_py shim_eio "$base/app" "$base/other" "$DLOCKCTL"
else
	dl_log "skipped: dlockctl break needs root"
fi

dl_log "files outside DLOCK_PATHS go to libc"
err=$base/err
pl_shim "$base/nowhere.sock" "$base/app" flock -n "$base/other/o.lock" true 2>"$err" ||
	dl_fail "flock outside DLOCK_PATHS failed: $(cat "$err")"
[[ ! -s $err ]] || dl_fail "the shim spoke about a file outside DLOCK_PATHS: $(cat "$err")"

dl_log "daemon unreachable: ENOLCK, one line; DLOCK_FALLBACK=local"
rc=0
pl_shim "$base/nowhere.sock" "$base/app" flock -n "$base/app/x.lock" true 2>"$err" || rc=$?
[[ $rc -ne 0 ]] || dl_fail "a lock was granted with no daemon"
grep -q "No locks available" "$err" || dl_fail "no ENOLCK: $(cat "$err")"
[[ $(grep -c '^dlock:' "$err") -eq 1 ]] || dl_fail "want one dlock: line, got: $(cat "$err")"
DLOCK_FALLBACK=local pl_shim "$base/nowhere.sock" "$base/app" flock -n "$base/app/x.lock" true 2>"$err" ||
	dl_fail "DLOCK_FALLBACK=local did not lock: $(cat "$err")"
grep -q "DLOCK_FALLBACK=local" "$err" || dl_fail "no fallback warning: $(cat "$err")"

pl_stop a
dl_pass
