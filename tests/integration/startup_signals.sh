#!/bin/bash
# startup_signals.sh - starting and stopping (issue 9, items 12 and 13):
#  - SIGINT stops a daemon started as a background job of a non-interactive
#    shell (which starts it with SIGINT ignored) as cleanly as SIGTERM:
#    unmounted, exit 0; the same for --agent;
#  - a daemon whose backend cannot be reached at start exits 1 within a
#    documented bound (ZooKeeper: 10 s; Redis: at once) with a bounded
#    number of log lines, and leaves nothing mounted.
# dl_tmpdir assigns through printf -v
# shellcheck disable=SC2154
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
dl_init startup_signals
dl_require_fuse
dl_require_prog python3

dl_tmpdir base
B=$base/backing M=$base/mnt
mkdir "$B" "$M"

# sigint_ignored PID - is SIGINT ignored by PID (SigIgn bit 2)?
sigint_ignored() {
	local mask
	mask=$(awk '/^SigIgn:/ { print $2 }' "/proc/$1/status")
	(((0x$mask >> 1) & 1))
}

# bg_start CMD... - start CMD as a background job of a non-interactive
# bash, as a script's `cmd &` does; sets PID (the job itself, not bash)
bg_start() {
	PID=$(bash -c '"$@" >"$0" 2>&1 & echo $!' "$base/daemon.log" "$@")
	DL_PIDS+=("$PID")
}

# stop_with SIG WHAT - send SIG to PID, require exit 0 within 10 s
stop_with() {
	local sig=$1 what=$2
	kill "-$sig" "$PID"
	dl_wait_for 10 dl_not_alive "$PID" ||
		dl_fail "$what: still running 10 s after SIG$sig: $(cat "$base/daemon.log")"
	# not our child: the exit status is in the log line
	grep -q "signal [0-9]*: \(unmounting\|stopping\)" "$base/daemon.log" ||
		dl_fail "$what: no clean stop after SIG$sig: $(cat "$base/daemon.log")"
}

for sig in INT TERM; do
	dl_log "mount started in the background, then SIG$sig"
	bg_start "$DLOCKFS" -f -o "backend=local:,host_id=$DL_HOST_ID,socket=$base/sock" "$B" "$M"
	dl_wait_for 10 dl_mounted_or_dead "$M" "$PID" || dl_fail "no mount within 10 s"
	dl_is_mounted "$M" || dl_fail "did not mount: $(cat "$base/daemon.log")"
	DL_MOUNTS+=("$M")
	# the shell did ignore it for the job: the daemon undid that
	sigint_ignored "$PID" && dl_fail "the daemon ignores SIGINT"
	echo x >"$M/f"
	stop_with "$sig" "mount"
	! dl_is_mounted "$M" || dl_fail "SIG$sig left $M mounted"
	[[ ! -e $base/sock ]] || dl_fail "SIG$sig left the socket behind"

	dl_log "agent started in the background, then SIG$sig"
	bg_start "$DLOCKFS" --agent -f -o "backend=local:,host_id=$DL_HOST_ID,socket=$base/sock"
	dl_wait_for 10 test -S "$base/sock" || dl_fail "no agent socket: $(cat "$base/daemon.log")"
	stop_with "$sig" "agent"
done

# the shell really starts background jobs with SIGINT ignored (else this
# test proves nothing)
sleep 30 &
s=$!
dl_job "$s"
bash -c 'sleep 30 & echo $! >"$0"; wait' "$base/sleep.pid" &
dl_job "$!"
dl_wait_for 5 test -s "$base/sleep.pid" || dl_fail "no sleep pid"
sigint_ignored "$(cat "$base/sleep.pid")" ||
	dl_log "note: this bash does not ignore SIGINT in background jobs"

free_port() {
	python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"
}

# unreachable URI BOUND MAXLINES - start against an unreachable backend:
# exit 1 within BOUND s, at most MAXLINES lines, nothing mounted
unreachable() {
	local uri=$1 bound=$2 maxlines=$3 rc=0 t0 t1 lines
	t0=$(date +%s%N)
	timeout -k 2 $((bound + 10)) "$DLOCKFS" -f \
		-o "backend=$uri,host_id=$DL_HOST_ID,socket=none" "$B" "$M" \
		>"$base/unreach.log" 2>&1 || rc=$?
	t1=$(date +%s%N)
	lines=$(wc -l <"$base/unreach.log")
	dl_log "$uri: exit $rc after $(((t1 - t0) / 1000000)) ms, $lines lines; last: $(tail -1 "$base/unreach.log")"
	! dl_is_mounted "$M" || dl_fail "$uri: left $M mounted"
	[[ $rc -eq 1 ]] || dl_fail "$uri: exit $rc, expected 1: $(tail -3 "$base/unreach.log")"
	(((t1 - t0) / 1000000000 <= bound)) || dl_fail "$uri: took more than $bound s"
	((lines <= maxlines)) || dl_fail "$uri: $lines lines of log (at most $maxlines): $(head -5 "$base/unreach.log")"
}

p1=$(free_port) p2=$(free_port) p3=$(free_port)
# a long session timeout must not stretch the start (it waited 600 s)
unreachable "zk://127.0.0.1:$p1/dlock?session_timeout_ms=600000" 32 10
unreachable "zk://127.0.0.1:$p1\,127.0.0.1:$p2\,127.0.0.1:$p3/dlock" 12 6
unreachable "redis://127.0.0.1:$p1" 5 3
dl_pass
