#!/usr/bin/env bash
#
# bench.sh - lock costs on a dlockfs mount next to a plain local directory.
#
# Builds if needed, mounts build/fs/dlockfs (backend=local:) over a temporary
# backing directory, and runs build/tests/bench/lockbench on a temporary local
# directory and on the mount, side by side.  Arguments are passed to
# lockbench (--iters N, --seconds S).  Whatever happens, the mount is
# unmounted, our own daemon is stopped and the temporary directories are
# removed.
#
# usage: contrib/bench.sh [--iters N] [--seconds S]

set -euo pipefail
BENCH_NAME=bench
# shellcheck source=bench_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"

bench_build fs/dlockfs tests/bench/lockbench
bench_tmp
mkdir "$tmp/local" "$tmp/backing" "$tmp/mnt"
bench_mount "$tmp/backing" "$tmp/mnt" backend=local:
log "dlockfs (pid ${pids[-1]}) mounted on $tmp/mnt"

rc=0
"$build/tests/bench/lockbench" "$@" "$tmp/local" "$tmp/mnt" || rc=$?
if [ "$rc" -ne 0 ]; then
	log "lockbench exited with $rc; daemon log (last 40 lines):"
	tail -n 40 "$tmp/mnt.log" >&2
fi
exit "$rc"
