#!/bin/bash
# lock_timeout.sh - a mount with -o lock_timeout=1: a blocked F_SETLKW
# gives up with EDEADLK after about a second and leaves no waiter behind.
# dl_tmpdir assigns through printf -v; single quotes are meant literally
# shellcheck disable=SC2154,SC2016,SC2012
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
dl_init lock_timeout
dl_require_fuse
dl_require_driver

dl_tmpdir base
mkdir "$base/backing" "$base/mnt"
dl_mount "$base/backing" "$base/mnt" lock_timeout=1
out=$("$LOCKDRIVER" --dlockfs --lock-timeout=1 "$base/mnt" lock_timeout 2>&1) ||
	dl_fail "$(printf '%s\n' "$out" | grep -E '^FAIL' | tr '\n' ';')"
printf '%s\n' "$out" | sed 's/^/  /'
grep -q '^ok lock_timeout$' <<<"$out" || dl_fail "lock_timeout did not run: $out"
dl_umount "$base/mnt"
dl_pass
