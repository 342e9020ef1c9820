#!/bin/bash
# locks.sh - the lock scenarios of lockdriver, first against a plain local
# directory (the kernel's own semantics: a failure there is a bug of the
# test), then against a dlockfs mount, where every scenario must give the
# same result, plus the dlockfs-only ones (user.dlock.* xattrs).
# dl_tmpdir assigns through printf -v; single quotes are meant literally
# shellcheck disable=SC2154,SC2016,SC2012
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
dl_init locks
dl_require_fuse
dl_require_driver

# run_driver WHAT ARGS... - run lockdriver, show its output, fail on FAIL
run_driver() {
	local what=$1 out rc=0
	shift
	out=$("$LOCKDRIVER" "$@" 2>&1) || rc=$?
	printf '%s\n' "$out" | sed "s/^/  [$what] /"
	if [[ $rc -ne 0 ]]; then
		dl_fail "lockdriver on $what: $(printf '%s\n' "$out" | grep -E '^FAIL' | tr '\n' ';')"
	fi
}

dl_tmpdir ref
dl_log "reference run on a local directory ($ref)"
run_driver reference --reference --strict "$ref" all

dl_tmpdir base
mkdir "$base/backing" "$base/mnt"
dl_mount "$base/backing" "$base/mnt"
# a nested directory with a blank in its name: resources are paths
mkdir -p "$base/mnt/a dir/nested"
dl_log "dlockfs run ($base/mnt/a dir/nested)"
# 200 blocked processes: waits must not hold daemon threads
run_driver dlockfs --dlockfs --waiters=200 "$base/mnt/a dir/nested" all
# nothing left behind by the scenarios
left=$(find "$base/backing/a dir/nested" -mindepth 1 | head -5)
[[ -z $left ]] || dl_fail "lockdriver left files behind: $left"
dl_umount "$base/mnt"
dl_pass
