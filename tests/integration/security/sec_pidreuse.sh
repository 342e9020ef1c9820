#!/bin/bash
# sec_pidreuse.sh - issue 9 item 2: a connection cannot outlive the
# process that made it.  With the daemon stopped (SIGSTOP: its accept
# stalls), eve connects, forks and exits; her pid is made to serve bob's
# shimmed process (ns_last_pid), which then takes a POSIX lock once the
# daemon runs again; eve's child sends a forged CLOSED of bob's file on
# the connection her dead parent made.  Bob's lock must stay held.
# shellcheck disable=SC2154
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../preload/pl_lib.sh"
. "$(dirname "$0")/sec_lib.sh"
sec_init sec_pidreuse
[[ -w /proc/sys/kernel/ns_last_pid ]] || dl_skip "cannot set ns_last_pid here"

sec_dir base
mkdir -m 1777 "$base/app"
S=$base/d.sock
pl_agent a local: "$S" "app=$base/app"
f=$base/app/bob.db
as_bob touch "$f"
chmod 0644 "$f"
read -r dev ino < <(python3 -c 'import os,sys; s=os.stat(sys.argv[1]); print(s.st_dev, s.st_ino)' "$f")
mkfifo -m 0666 "$base/go" "$base/held"

attempt() {
	local epid bpid n
	kill -STOP "${PL_PID[a]}"
	dl_wait_for 5 dl_stopped "${PL_PID[a]}" || dl_fail "the daemon did not stop"
	# eve: connect (queued, not accepted), fork, the parent exits
	setpriv --reuid=dlf_eve --regid=dlf_eve --init-groups -- \
		"$SEC_PY" "$SEC_DIR/sec_raw.py" closed_after "$S" "$dev" "$ino" "$base/go" \
		>"$base/eve.out" 2>&1 &
	epid=$!
	wait "$epid" || true
	# bob's shimmed holder gets eve's pid
	echo $((epid - 1)) >/proc/sys/kernel/ns_last_pid
	setpriv --reuid=dlf_bob --regid=dlf_bob --init-groups -- env LD_PRELOAD="$DLOCK_PRELOAD" \
		DLOCK_SOCKET="$S" DLOCK_PATHS="$base/app" DLOCK_KERNEL_LOCK=0 "$SEC_PY" -c '
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
open(sys.argv[2], "w").write("held\n")
time.sleep(60)' "$f" "$base/held" &
	bpid=$!
	dl_job "$bpid"
	kill -CONT "${PL_PID[a]}"
	read -r -t 10 _ <"$base/held" || dl_fail "bob's holder did not take its lock"
	[[ $bpid -eq $epid ]] && return 0
	# not reused this time (another process took the pid): try again
	echo go >"$base/go" &
	sleep 0.2
	kill "$bpid"
	wait "$bpid" 2>/dev/null || true
	n=0
	return 1
}
reused=0
for _ in 1 2 3 4 5; do
	if attempt; then
		reused=1
		break
	fi
done
[[ $reused -eq 1 ]] || dl_skip "could not make bob's process reuse eve's pid in 5 tries"
dl_log "bob's holder reuses eve's pid; eve sends CLOSED on her dead parent's connection"
echo go >"$base/go"
dl_wait_for 10 test -s "$base/eve.out" || dl_fail "eve's child did not send"
dl_log "eve's child got: $(cat "$base/eve.out")"
sleep 0.5
# root tries bob's lock: it must still be held
rc=0
sec_shim "$S" "$base/app" "$SEC_PY" -c '
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit(1)
sys.exit(0)' "$f" || rc=$?
[[ $rc -eq 1 ]] || dl_fail "bob's lock was dropped by eve's forged CLOSED (root's lockf: status $rc)"
pl_stop a
dl_pass
