#!/bin/bash
# preload_socket.sh - the control socket under attack (garbage, truncated
# and oversized frames, huge lengths, descriptors it must refuse), dlockctl's
# errors and exit codes, `run` in opposite orders never deadlocking, and
# break on a lock held through a mount: freed, and the holder's writes get
# EIO.
# shellcheck disable=SC2154,SC2016
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=pl_lib.sh
. "$(dirname "$0")/pl_lib.sh"
dl_init preload_socket
pl_require
dl_require_fuse
dl_require_prog python3

dl_tmpdir base
mkdir "$base/app" "$base/backing" "$base/mnt"
S=$base/a.sock
pl_agent a local: "$S" "$base/app"

ctl() { "$DLOCKCTL" --socket "$S" "$@"; }
expect() {
	local want=$1 rc=0
	shift
	"$@" >/dev/null 2>"$base/err" || rc=$?
	[[ $rc -eq $want ]] || dl_fail "$* exited $rc, expected $want: $(cat "$base/err")"
	[[ $want -eq 0 || $want -gt 4 || -s $base/err ]] || dl_fail "$* failed without a message"
}

dl_log "hostile frames"
pl_py fuzz "$S" "$base/app" "$base/outside.lock"

dl_log "dlockfs --agent: bad input"
expect 2 "$DLOCKFS" --agent "$base/app"
expect 2 "$DLOCKFS" --agent -o socket=relative.sock
expect 2 "$DLOCKFS" --agent -o socket=none
expect 2 "$DLOCKFS" --agent -o "backend=nope:,socket=$base/x.sock"
# a second daemon on a served socket: exit 1, the first keeps serving
expect 1 "$DLOCKFS" --agent -f -o "backend=local:,socket=$S"
grep -q "another daemon serves it" "$base/err" || dl_fail "no clear error: $(cat "$base/err")"
pl_up "$S" || dl_fail "the first agent stopped serving"

dl_log "dlockctl: bad input and exit codes"
expect 2 ctl
expect 2 ctl frobnicate
expect 2 ctl status extra
expect 2 ctl locks a b
expect 2 ctl break
expect 2 ctl run -- true
expect 2 ctl run --lock x
expect 2 ctl run --lock x --timeout -1 -- true
expect 2 ctl run --lock x --timeout abc -- true
expect 2 ctl run --lock '' -- true
expect 2 ctl locks "$base/does-not-exist"
expect 3 "$DLOCKCTL" --socket "$base/nowhere.sock" status
expect 1 ctl break name:nothing-held
expect 4 ctl locks "$base/outside.lock"
expect 0 ctl status
expect 0 ctl --json status
ctl --json status | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["host_id"] == "a" and d["mode"] == "agent", d' ||
	dl_fail "status --json is not the expected JSON"
expect 0 ctl run --lock n1 -- true
expect 7 ctl run --lock n1 -- sh -c 'exit 7'
expect 127 ctl run --lock n1 -- /nonexistent-command

dl_log "run: timeout while another holds the name"
fifo=$base/ready
mkfifo "$fifo"
ctl run --lock held -- sh -c 'echo x >"$1"; exec sleep 60' _ "$fifo" &
holder=$!
dl_job "$holder"
read -r -t 10 _ <"$fifo" || dl_fail "the run holder did not start"
ctl --json locks name:held | python3 -c 'import json,sys; l=json.load(sys.stdin); assert len(l) == 1 and l[0]["host"] == "a", l' ||
	dl_fail "locks name:held does not show the holder"
expect 1 ctl run --lock held --timeout 0.3 -- true
expect 1 ctl run --lock held --timeout 0 -- true
dl_kill_tree "$holder"
wait "$holder" 2>/dev/null || true
dl_wait_for 5 ctl run --lock held --timeout 0 -- true ||
	dl_fail "a killed run's lock was not released"

dl_log "run: two locks in opposite orders, concurrently, never deadlock"
echo 0 >"$base/count"
loop() {
	local i
	for ((i = 0; i < 100; i++)); do
		ctl run --lock "$1" --lock "$2" --timeout 20 -- \
			sh -c 'n=$(cat "$1"); echo $((n + 1)) >"$1"' _ "$base/count" || exit 1
	done
}
loop alpha beta &
p1=$!
loop beta alpha &
p2=$!
dl_job "$p1"
dl_job "$p2"
dl_wait_jobs 60 "$p1" "$p2"
[[ $(cat "$base/count") == 200 ]] || dl_fail "count is $(cat "$base/count"), expected 200"

pl_stop a

dl_log "break on a mount: freed, EIO for the holder"
M=$base/m.sock
dl_mount "$base/backing" "$base/mnt" "socket=$M"
dl_wait_for 10 pl_up "$M" || dl_fail "the mount's socket $M does not answer"
"$DLOCKCTL" --socket "$M" --json status | grep -q '"mode": "mount"' ||
	dl_fail "the mount's status does not say mode mount"
chmod 755 "$base"
DLOCK_SOCKET=$M pl_py eio "$base/mnt/held.lock" "$DLOCKCTL"
dl_umount "$base/mnt"
dl_pass
