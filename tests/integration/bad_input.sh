#!/bin/bash
# bad_input.sh - every kind of bad command line makes dlockfs exit 2 with
# one line on stderr, and leaves nothing mounted.
# dl_tmpdir assigns through printf -v; single quotes are meant literally
# shellcheck disable=SC2154,SC2016,SC2012
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
dl_init bad_input
dl_require_fuse

dl_tmpdir base
B="$base/backing" M="$base/mnt"
mkdir "$B" "$M"
: >"$base/plainfile"
echo "socket = relative/s" >"$base/relsock.conf"
ok_opts="backend=local:,host_id=$DL_HOST_ID"

# expect_exit2 WHAT MNT ARGS... - run dlockfs -f ARGS (bounded), require
# status 2, exactly one line on stderr and MNT not mounted afterwards
expect_exit2() {
	local what=$1 mnt=$2 rc=0 err
	shift 2
	err=$(timeout -k 2 10 "$DLOCKFS" -f "$@" 2>&1 >/dev/null) || rc=$?
	if dl_is_mounted "$mnt"; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" || true
		dl_fail "$what: left $mnt mounted (status $rc)"
	fi
	[[ $rc -ne 124 && $rc -ne 137 ]] ||
		dl_fail "$what: dlockfs did not exit within 10 s (it mounted?)"
	[[ $rc -eq 2 ]] || dl_fail "$what: exit status $rc, expected 2; stderr: $err"
	[[ -n $err && $(wc -l <<<"$err") -eq 1 ]] ||
		dl_fail "$what: expected one line on stderr, got: '$err'"
	dl_log "$what: exit 2: $err"
}

expect_exit2 "unknown option" "$M" -o "$ok_opts,nosuchoption=1" "$B" "$M"
expect_exit2 "unknown backend scheme" "$M" -o backend=nosuch://x "$B" "$M"
expect_exit2 "URI without a scheme" "$M" -o backend=no-scheme-here "$B" "$M"
expect_exit2 "URI with an empty scheme" "$M" -o backend=://x "$B" "$M"
expect_exit2 "empty backend URI" "$M" -o backend= "$B" "$M"
expect_exit2 "bad lock_timeout" "$M" -o "$ok_opts,lock_timeout=soon" "$B" "$M"
expect_exit2 "missing BACKING_DIR" "$M" -o "$ok_opts" "$base/nonexistent" "$M"
expect_exit2 "BACKING_DIR is a file" "$M" -o "$ok_opts" "$base/plainfile" "$M"
expect_exit2 "MOUNTPOINT is a file" "$base/plainfile" -o "$ok_opts" "$B" "$base/plainfile"
expect_exit2 "missing MOUNTPOINT" "$base/nonexistent" -o "$ok_opts" "$B" "$base/nonexistent"
expect_exit2 "no MOUNTPOINT argument" "$M" -o "$ok_opts" "$B"
# found before mounting (issue 9 item 12), not after it
long=$base/$(printf 'x%.0s' {1..120})/s
expect_exit2 "socket path too long" "$M" -o "$ok_opts,socket=$long" "$B" "$M"
expect_exit2 "socket under a file" "$M" -o "$ok_opts,socket=$base/plainfile/d/s" "$B" "$M"
mkdir "$base/sockdir"
expect_exit2 "socket is a directory" "$M" -o "$ok_opts,socket=$base/sockdir" "$B" "$M"
expect_exit2 "socket relative in the config file" "$M" -o "$ok_opts,config=$base/relsock.conf" "$B" "$M"
expect_exit2 "blksize=abc" "$M" -o "$ok_opts,blksize=abc" "$B" "$M"
expect_exit2 "blksize=4096 (fuseblk only)" "$M" -o "$ok_opts,blksize=4096" "$B" "$M"

# already mounted: the second daemon refuses, the first one keeps working
dl_mount "$B" "$M" "socket=$base/sock"
echo still >"$M/file"
expect_exit2 "MOUNTPOINT already mounted" "/nonexistent" -o "$ok_opts" "$B" "$M"
mkdir "$base/mnt2"
expect_exit2 "socket in use by another daemon" "$base/mnt2" -o "$ok_opts,socket=$base/sock" "$B" "$base/mnt2"
[[ -S $base/sock ]] || dl_fail "the first daemon's socket went away"
dl_is_mounted "$M" || dl_fail "the first mount went away"
[[ $(cat "$M/file") == still ]] || dl_fail "the first mount stopped working"
[[ $(grep -c " $(realpath "$M") " /proc/self/mountinfo) -eq 1 ]] ||
	dl_fail "$M is mounted more than once"
dl_umount "$M"
dl_pass
