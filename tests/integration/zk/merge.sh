#!/bin/bash
# merge.sh - issue 8, item 5: one owner's adjacent locks cost one node.
# One process takes N adjacent single-byte POSIX write locks on a file, one
# call after another, through a real mount.  As in Linux, they merge into
# one lock; in ZooKeeper the owner must keep a constant number of request
# nodes (else each call reads every node of the resource again and the
# time per call grows with the number of calls).  Asserts the number of
# nodes on the server (the "srvr" node count, this test's private server)
# and that the last block of calls is not much slower than the first;
# prints the time per call of each block.
set -euo pipefail
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/zk_lib.sh"
dl_init zk_merge
dl_require_fuse
dl_require_prog python3 mkfifo getfattr
zk_start

N=${ZK_MERGE_N:-2000}
BLOCK=500
dl_tmpdir base
mkdir "$base/backing" "$base/a" "$base/ctl"
zk_mount "$base/backing" "$base/a" a 10000
mkfifo "$base/ctl/go"
nodes() { zk_4lw srvr | sed -n 's/^Node count: //p'; }
before=$(nodes)

python3 - "$base/a/f" "$N" "$BLOCK" "$base/ctl" <<'PY' &
import fcntl, os, sys, time
path, n, block, ctl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
per = []
t0 = time.monotonic()
for i in range(n):
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, i)
    if (i + 1) % block == 0:
        t = time.monotonic()
        per.append((t - t0) * 1000.0 / block)
        t0 = t
open(ctl + "/timings", "w").write(" ".join("%.2f" % x for x in per) + "\n")
open(ctl + "/go").readline() # hold the locks until the count is taken
PY
driver=$!
dl_job "$driver"
dl_wait_for 220 test -s "$base/ctl/timings" || dl_fail "the driver did not take $N locks in 220 s"
after=$(nodes)
read -ra ms <"$base/ctl/timings"
dl_log "$N adjacent single-byte locks, ms per call per block of $BLOCK: ${ms[*]}"
dl_log "server nodes: $before before, $after while held (+$((after - before)))"
locks=$(getfattr --only-values -n user.dlock.locks "$base/a/f")
dl_log "user.dlock.locks: $locks"
[[ $(grep -c . <<<"$locks") -eq 1 ]] || dl_fail "the $N locks are not reported as one merged lock"
echo go >"$base/ctl/go"
dl_wait_jobs 20 "$driver"
(( after - before <= 4 )) ||
	dl_fail "one owner's $N adjacent locks left $((after - before)) new nodes on the server (expected at most 4)"
python3 -c 'import sys; a = [float(x) for x in sys.argv[1:]]; sys.exit(0 if a[-1] <= 3 * a[0] + 5 else 1)' "${ms[@]}" ||
	dl_fail "time per call grew from ${ms[0]} ms to ${ms[-1]} ms"
dl_umount "$base/a"
dl_pass
