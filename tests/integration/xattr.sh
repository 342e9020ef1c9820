#!/bin/bash
# xattr.sh - inspection through getfattr: user.dlock.locks shows the
# holder's pid and mode while a lock is held, user.dlock.token is a
# number, user.dlock.status on the mount root names the host and backend.
# dl_tmpdir assigns through printf -v; single quotes are meant literally
# shellcheck disable=SC2154,SC2016,SC2012
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
dl_init xattr
dl_require_fuse
dl_require_prog getfattr flock

dl_tmpdir base
B="$base/backing" M="$base/mnt"
mkdir "$B" "$M"
dl_mount "$B" "$M"
f="$M/locked file"
: >"$f"
mkfifo "$base/ready" "$base/go"

val() { getfattr --absolute-names --only-values -n "$1" "$2" 2>&1; }

# hold_lock KIND... - start a holder that takes the lock, says "held" on
# the ready fifo and keeps it until a line arrives on the go fifo
hold_flock() {
	flock -x "$f" sh -c 'echo held >"$1"; read -r x <"$2"' _ \
		"$base/ready" "$base/go" &
	holder=$!
	dl_job "$holder"
	read -r -t 10 line <"$base/ready" || dl_fail "flock(1) holder did not start"
}
release() {
	echo go >"$base/go"
	dl_wait_jobs 10 "$holder"
}

# a line that names PID among its fields ("1234" or "pid=1234")
line_of() {
	awk -v p="$1" '{ for (i = 1; i <= NF; i++)
		if ($i == p || $i == "pid=" p) { print; exit } }'
}

[[ -z $(val user.dlock.locks "$f" | tr -d ' \n') ]] ||
	dl_fail "user.dlock.locks of an unlocked file: $(val user.dlock.locks "$f")"

hold_flock
locks=$(val user.dlock.locks "$f")
dl_log "user.dlock.locks with flock(1) (pid $holder) holding:"
printf '  %s\n' "$locks" >&2
line=$(line_of "$holder" <<<"$locks")
[[ -n $line ]] || dl_fail "no line for holder pid $holder in: $locks"
grep -Eiq '(^|[^a-z])(ex|excl|exclusive|w|wr|wrlck|write|write-lock)([^a-z]|$)' <<<"$line" ||
	dl_fail "the holder's line does not say exclusive: $line"
grep -Fq "$DL_HOST_ID" <<<"$line" || dl_fail "the holder's line lacks host id $DL_HOST_ID: $line"
[[ $(wc -l <<<"$locks") -eq 1 ]] || dl_fail "expected one lock line: $locks"
# the token is the caller's own: getfattr does not hold the lock
token=$(val user.dlock.token "$f") || true
[[ $token =~ ^[0-9]+$ || $token == *"No such attribute"* ]] ||
	dl_fail "user.dlock.token of a non-holder: '$token'"
waiters=$(val user.dlock.waiters "$f")
[[ -z ${waiters//[[:space:]]/} ]] || dl_fail "user.dlock.waiters should be empty: $waiters"
release
[[ -z $(val user.dlock.locks "$f" | tr -d ' \n') ]] ||
	dl_fail "user.dlock.locks after release: $(val user.dlock.locks "$f")"

# a shared POSIX lock taken by Python, if there is one
if command -v python3 >/dev/null 2>&1; then
	python3 -c '
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_SH, 10, 5)
token = os.getxattr(sys.argv[1], "user.dlock.token").decode().strip()
open(sys.argv[2], "w").write("held %s\n" % token)
open(sys.argv[3]).read()
' "$f" "$base/ready" "$base/go" &
	holder=$!
	dl_job "$holder"
	read -r -t 10 _ token <"$base/ready" || dl_fail "python holder did not start"
	dl_log "the holder's own user.dlock.token: $token"
	[[ $token =~ ^[0-9]+$ ]] || dl_fail "user.dlock.token of the holder is not a number: '$token'"
	locks=$(val user.dlock.locks "$f")
	dl_log "user.dlock.locks with python (pid $holder) holding a read lock on [5,15):"
	printf '  %s\n' "$locks" >&2
	line=$(line_of "$holder" <<<"$locks")
	[[ -n $line ]] || dl_fail "no line for holder pid $holder in: $locks"
	grep -Eiq '(^|[^a-z])(sh|shared|r|rd|rdlck|read|read-lock)([^a-z]|$)' <<<"$line" ||
		dl_fail "the holder's line does not say shared: $line"
	grep -Eq '(^|[^0-9])5([^0-9]|$)' <<<"$line" ||
		dl_fail "the holder's line does not show the range start 5: $line"
	release
else
	[[ ${CI:-} != true ]] || dl_fail "python3 is required when CI=true"
	dl_log "no python3: the POSIX lock piece is skipped"
fi

status=$(val user.dlock.status "$M")
dl_log "user.dlock.status: $status"
grep -Fq "$DL_HOST_ID" <<<"$status" || dl_fail "status does not name host id $DL_HOST_ID: $status"
grep -Fq "local" <<<"$status" || dl_fail "status does not name the backend (local:): $status"
list=$(getfattr -d -m - --absolute-names "$M" "$f" 2>&1 || true)
if grep -q 'user\.dlock\.' <<<"$list"; then
	dl_fail "listxattr lists virtual names: $list"
fi
if setfattr -n user.dlock.locks -v x "$f" 2>/dev/null; then
	dl_fail "setfattr user.dlock.locks accepted"
fi
dl_umount "$M"
dl_pass
