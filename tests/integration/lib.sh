# lib.sh - shared helpers of the dlockfs integration tests (bash).
#
# Source it from a test script that runs under `set -euo pipefail`:
#     . "$(dirname "$0")/lib.sh"
#     dl_init NAME
# It gives temporary directories, dlockfs mounts started in the foreground
# and waited for with a bound, and one EXIT trap that unmounts every mount
# the script made, kills only the processes the script started and removes
# its temporary directories, whether the test passed or failed.
#
# Environment: DLOCKFS (the daemon), LOCKDRIVER (tests/integration's
# driver), CI=true turns every "skip" into a failure, DL_KEEP=1 keeps the
# temporary directories for a post-mortem.
#
# It deliberately does not start backend servers: these tests use
# backend=local:.

DL_NAME=${DL_NAME:-test}
DL_TMPDIRS=()
DL_MOUNTS=()
DL_PIDS=()
DL_LOGS=()
DL_JOBS=()
DL_HOST_ID=${DL_HOST_ID:-ithost$$}

dl_log() { printf '%s: %s\n' "$DL_NAME" "$*" >&2; }

# dl_fail MESSAGE - the test failed: say what, and exit 1 (the trap cleans up)
dl_fail() {
	printf 'FAIL: %s: %s\n' "$DL_NAME" "$*" >&2
	exit 1
}

# dl_skip REASON - exit 77 (meson's "skipped"), or fail when CI=true
dl_skip() {
	if [[ ${CI:-} == true ]]; then
		dl_fail "cannot run: $* (CI=true, so this is a failure)"
	fi
	printf 'SKIP: %s: %s\n' "$DL_NAME" "$*" >&2
	exit 77
}

# dl_require_prog PROG... - skip (or fail in CI) unless every PROG exists
dl_require_prog() {
	local p
	for p in "$@"; do
		command -v "$p" >/dev/null 2>&1 || dl_skip "program '$p' not found"
	done
}

# dl_require_fuse - /dev/fuse, fusermount3 and the daemon must be there
dl_require_fuse() {
	[[ -c /dev/fuse ]] || dl_skip "/dev/fuse is missing"
	dl_require_prog fusermount3
	[[ -n ${DLOCKFS:-} ]] || dl_skip "DLOCKFS is not set (run through meson test)"
	[[ -x $DLOCKFS ]] || dl_fail "DLOCKFS=$DLOCKFS is not executable"
}

dl_require_driver() {
	[[ -n ${LOCKDRIVER:-} ]] || dl_skip "LOCKDRIVER is not set (run through meson test)"
	[[ -x $LOCKDRIVER ]] || dl_fail "LOCKDRIVER=$LOCKDRIVER is not executable"
}

# dl_tmpdir VAR - make a fresh temporary directory and store its path in VAR
dl_tmpdir() {
	local d
	d=$(mktemp -d "${TMPDIR:-/tmp}/dlockfs-it.XXXXXX")
	d=$(realpath -- "$d") # canonical, as /proc/self/mountinfo shows it
	DL_TMPDIRS+=("$d")
	printf -v "$1" '%s' "$d"
}

# dl_is_mounted DIR - is DIR a mount point right now?  Reads mountinfo, so
# it never touches the (possibly hung) file system itself.
dl_is_mounted() {
	local dir
	dir=$(realpath -m -s -- "$1") # -s: no lookups on a possibly hung mount
	awk -v d="$dir" '$5 == d { found = 1 } END { exit !found }' \
		/proc/self/mountinfo
}

# dl_wait_for SECONDS COMMAND... - poll COMMAND every 50 ms until it
# succeeds; returns 1 after SECONDS
dl_wait_for() {
	local limit=$(( $1 * 20 )) i=0
	shift
	until "$@"; do
		(( ++i > limit )) && return 1
		sleep 0.05
	done
}

dl_pid_alive() { kill -0 "$1" 2>/dev/null; }

# dl_stopped PID - is every thread of PID stopped (SIGSTOP)?  kill returns
# before the threads of a busy process have all stopped: a test that
# freezes a daemon waits for this before it counts on the freeze
dl_stopped() {
	local st n=0
	for st in /proc/"$1"/task/*/stat; do
		[[ $(sed 's/.*) //' "$st" 2>/dev/null | cut -d' ' -f1) == [Tt] ]] || return 1
		n=$((n + 1))
	done
	((n > 0))
}

# dl_mount_opts OPTS - OPTS and DL_MOUNT_OPTS, the options for every daemon
# of a run (contrib/test.sh runs the suite once more with cache=off): a
# mount, a shim's agent, a fault-suite host.  An option the test gives
# itself (cache=) wins.
dl_mount_opts() {
	local opts=$1
	[[ -z ${DL_MOUNT_OPTS:-} || ,$opts, == *,cache=* ]] ||
		opts="${opts:+$opts,}$DL_MOUNT_OPTS"
	printf '%s\n' "$opts"
}

# dl_mount BACKING MNT [OPTS] - start dlockfs in the foreground and wait
# (at most 10 s) until MNT is mounted.  OPTS is a -o list added to
# "backend=local:,host_id=$DL_HOST_ID" (either may be overridden in OPTS).
# Sets DL_LAST_PID to the daemon's pid.
dl_mount() {
	local backing=$1 mnt=$2 opts=${3:-} all log pid
	all=$opts
	[[ ,$opts, == *,host_id=* ]] || all="host_id=$DL_HOST_ID${all:+,$all}"
	[[ ,$opts, == *,backend=* ]] || all="backend=local:,$all"
	all=$(dl_mount_opts "$all")
	log=$(mktemp "${TMPDIR:-/tmp}/dlockfs-it-log.XXXXXX")
	DL_LOGS+=("$log")
	"$DLOCKFS" -f -o "$all" "$backing" "$mnt" >"$log" 2>&1 &
	pid=$!
	DL_PIDS+=("$pid")
	DL_MOUNTS+=("$mnt")
	# shellcheck disable=SC2034 # for the tests that need it
	DL_LAST_PID=$pid
	if ! dl_wait_for 10 dl_mounted_or_dead "$mnt" "$pid"; then
		dl_fail "dlockfs did not mount $mnt within 10 s; its output:
$(cat "$log")"
	fi
	if ! dl_is_mounted "$mnt"; then
		local rc=0
		wait "$pid" || rc=$?
		dl_fail "dlockfs exited with status $rc instead of mounting $mnt; its output:
$(cat "$log")"
	fi
	dl_log "mounted $mnt (pid $pid, -o $all)"
}

dl_mounted_or_dead() { dl_is_mounted "$1" || ! dl_pid_alive "$2"; }

# dl_umount MNT - unmount, and require the daemon to exit with status 0
# within 10 s
dl_umount() {
	local mnt=$1 i pid rc=0
	fusermount3 -u "$mnt" || dl_fail "fusermount3 -u $mnt failed"
	for i in "${!DL_MOUNTS[@]}"; do
		[[ ${DL_MOUNTS[$i]} == "$mnt" ]] || continue
		pid=${DL_PIDS[$i]}
		dl_wait_for 10 dl_not_alive "$pid" ||
			dl_fail "dlockfs (pid $pid) still runs 10 s after unmounting $mnt"
		wait "$pid" || rc=$?
		[[ $rc -eq 0 ]] || dl_fail "dlockfs exited with status $rc after unmount of $mnt; its output:
$(cat "${DL_LOGS[$i]}")"
		unset 'DL_MOUNTS[i]' 'DL_PIDS[i]'
	done
}

dl_not_alive() { ! dl_pid_alive "$1"; }

# dl_job PID - a background job of the test: killed by the trap if it is
# still running then
dl_job() { DL_JOBS+=("$1"); }

# dl_wait_jobs SECONDS PID... - wait (bounded) for the jobs to end; fails
# the test on a timeout or when one ended with a nonzero status
dl_wait_jobs() {
	local limit=$1 pid rc
	shift
	dl_wait_for "$limit" dl_all_dead "$@" ||
		dl_fail "background jobs still running after $limit s"
	for pid in "$@"; do
		rc=0
		wait "$pid" || rc=$?
		[[ $rc -eq 0 ]] || dl_fail "background job $pid ended with status $rc"
	done
}

dl_all_dead() {
	local pid
	for pid in "$@"; do
		dl_pid_alive "$pid" && return 1
	done
	return 0
}

# dl_children PID - the pids of PID's children
dl_children() {
	if command -v pgrep >/dev/null 2>&1; then
		pgrep -P "$1" 2>/dev/null || true
	else
		ps -o pid= --ppid "$1" 2>/dev/null || true
	fi
}

# dl_kill_tree PID - SIGKILL a job and everything it started (a killed
# `flock FILE -c CMD` would otherwise leave CMD running with the file open)
dl_kill_tree() {
	local c
	kill -STOP "$1" 2>/dev/null || return 0 # no new children meanwhile
	for c in $(dl_children "$1"); do
		dl_kill_tree "$c"
	done
	kill -KILL "$1" 2>/dev/null || true
}

# the EXIT trap: everything this script made, and nothing else
dl_cleanup() {
	local rc=$? i mnt pid d
	set +e
	# first the jobs, so that no open file keeps a mount busy
	for pid in "${DL_JOBS[@]}"; do
		dl_kill_tree "$pid"
	done
	for pid in "${DL_JOBS[@]}"; do
		wait "$pid" 2>/dev/null
	done
	for i in "${!DL_MOUNTS[@]}"; do
		mnt=${DL_MOUNTS[$i]}
		if dl_is_mounted "$mnt"; then
			fusermount3 -u "$mnt" 2>/dev/null ||
				fusermount3 -uz "$mnt" 2>/dev/null ||
				dl_log "cannot unmount $mnt"
		fi
	done
	for pid in "${DL_PIDS[@]}"; do
		dl_pid_alive "$pid" || continue
		# a daemon gets a moment to exit after its unmount
		dl_wait_for 5 dl_not_alive "$pid" && continue
		kill -TERM "$pid" 2>/dev/null
		dl_wait_for 5 dl_not_alive "$pid" || kill -KILL "$pid" 2>/dev/null
	done
	for pid in "${DL_PIDS[@]}"; do
		wait "$pid" 2>/dev/null
	done
	if [[ $rc -ne 0 && $rc -ne 77 ]]; then
		for d in "${DL_LOGS[@]}"; do
			[[ -s $d ]] || continue
			dl_log "--- daemon output ($d), last 30 lines:"
			tail -n 30 "$d" >&2
		done
	fi
	if [[ ${DL_KEEP:-} == 1 ]]; then
		dl_log "keeping ${DL_TMPDIRS[*]} ${DL_LOGS[*]}"
	else
		for d in "${DL_TMPDIRS[@]}"; do
			# never recurse into something still mounted
			if grep -qF " $d" /proc/self/mountinfo; then
				dl_log "not removing $d: something is mounted below it"
				continue
			fi
			rm -rf --one-file-system -- "$d"
		done
		rm -f -- "${DL_LOGS[@]}"
	fi
	return "$rc"
}

# dl_init NAME - name the test and install the trap
dl_init() {
	DL_NAME=$1
	trap dl_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
}

# dl_pass - the test's last word
dl_pass() { printf 'PASS: %s\n' "$DL_NAME"; }

# dl_check_break BASE - dlockctl against two hosts: mounts BASE/a and BASE/b
# (sockets BASE/a.sock, BASE/b.sock) share one backend.  A holder on host
# a flocks BASE/a/held.lock and writes; `dlockctl locks` on host b shows
# it; `dlockctl break` on host b frees it, host a's daemon marks it lost
# (user.dlock.locks), the holder's next write gets EIO, host b can lock,
# and breaking the free lock exits 1.  Needs DLOCKCTL.
dl_check_break() {
	local base=$1 fifo holder rc
	[[ -x ${DLOCKCTL:-} ]] || dl_fail "DLOCKCTL is not set (run through meson test)"
	# the holder on host a: lock, write, report, then write again on request
	fifo=$base/go
	mkfifo "$fifo"
	python3 - "$base/a/held.lock" "$fifo" >"$base/holder.out" 2>&1 <<'PY' &
import errno, fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, b"before\n")
print("held", flush=True)
with open(sys.argv[2]) as go:
    go.readline()
try:
    os.write(fd, b"after\n")
    print("write-ok", flush=True)
except OSError as e:
    print("write-" + errno.errorcode[e.errno], flush=True)
PY
	holder=$!
	dl_job "$holder"
	dl_wait_for 10 grep -q '^held$' "$base/holder.out" || dl_fail "the holder did not lock: $(cat "$base/holder.out")"

	dl_log "dlockctl locks on host b shows host a's holder"
	"$DLOCKCTL" --socket "$base/b.sock" locks -rn -o path,type,mode,start,end,host >"$base/all" ||
		dl_fail "dlockctl locks failed"
	grep -qx "held.lock flock WRITE 0 EOF a" "$base/all" ||
		dl_fail "no host a holder of held.lock in: $(cat "$base/all")"
	"$DLOCKCTL" --socket "$base/b.sock" --json locks "$base/b/held.lock" |
		python3 -c 'import json,sys; l=json.load(sys.stdin); assert [x["host"] for x in l] == ["a"], l' ||
		dl_fail "locks PATH on host b does not show host a's holder"
	rc=0
	flock -n "$base/b/held.lock" true || rc=$?
	[[ $rc -eq 1 ]] || dl_fail "host b got host a's lock before the break: status $rc"

	dl_log "dlockctl break on host b"
	"$DLOCKCTL" --socket "$base/b.sock" break "$base/b/held.lock" || dl_fail "dlockctl break failed"
	dl_wait_for 10 dl_flock_lost "$base/a/held.lock" || dl_fail "host a never learned its lock was broken"
	flock -n "$base/b/held.lock" true || dl_fail "the lock is not free on host b after the break"
	echo go >"$fifo"
	dl_wait_for 10 grep -q '^write-' "$base/holder.out" || dl_fail "the holder did not write"
	grep -q '^write-EIO$' "$base/holder.out" ||
		dl_fail "the holder's write after the break: $(tail -1 "$base/holder.out"), expected EIO"
	dl_wait_jobs 10 "$holder"
	rc=0
	"$DLOCKCTL" --socket "$base/b.sock" break "$base/b/held.lock" || rc=$?
	[[ $rc -eq 1 ]] || dl_fail "breaking a free lock: status $rc, expected 1"
}

dl_flock_lost() {
	getfattr --only-values -n user.dlock.locks "$1" 2>/dev/null | grep -q '^flock lost '
}
