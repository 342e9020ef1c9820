#!/bin/bash
# parity_nofile.sh - the daemon's own descriptor limit does not leak
# through (issue 9, items 3 and 12b).  The daemon starts with a soft limit
# of 1024 (and, where this test may raise limits - CAP_SYS_RESOURCE - a
# hard limit of 4096 as well): it raises its own (to the hard limit, and a
# privileged daemon to fs.nr_open), so a process that holds N files open
# on the mount (its own limit has room for them) gets no EMFILE, and N
# more files created and closed (inodes the kernel keeps cached) cost no
# error either.  N is 10,000 when the hard limit could be lowered, else a
# third of the hard limit (the daemon spends two descriptors on each open
# file).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
dl_init parity_nofile
dl_require_fuse
dl_require_prog python3
[[ $(id -u) -eq 0 ]] || dl_skip "needs root (a daemon that may raise its descriptor limit)"

dl_tmpdir base
B="$base/backing" M="$base/mnt"
mkdir "$B" "$M"
hard=$(ulimit -Hn)
if grep -q '^CapEff:' /proc/self/status &&
	(($(sed -n 's/^CapEff:[[:space:]]*//p' /proc/self/status | sed 's/^/0x/') >> 24 & 1)); then
	ulimit -n 4096 # soft and hard: the daemon must go above its hard limit
	n=10000 own=20000
else
	dl_log "no CAP_SYS_RESOURCE here: only the raise to the hard limit ($hard) is tested"
	ulimit -Sn 1024
	n=$((hard / 3)) own=$hard
fi
dl_mount "$B" "$M" socket=none
dl_log "daemon limit: $(grep 'Max open files' "/proc/$DL_LAST_PID/limits")"

out=$(
	ulimit -Sn "$own"
	python3 - "$M" "$n" <<'PY'
import errno, os, sys
d, n = sys.argv[1], int(sys.argv[2])
fds = []
try:
    for i in range(n):
        fds.append(os.open("%s/open%d" % (d, i), os.O_RDWR | os.O_CREAT, 0o644))
    print("held", len(fds))
except OSError as e:
    print("held", len(fds), "then", errno.errorcode[e.errno])
err = None
for fd in fds:
    try:
        os.close(fd)
    except OSError as e:
        err = err or errno.errorcode[e.errno]
print("close", err or "ok")
try:
    for i in range(n):
        os.close(os.open("%s/made%d" % (d, i), os.O_WRONLY | os.O_CREAT, 0o644))
    print("made", n)
except OSError as e:
    print("made", i, "then", errno.errorcode[e.errno])
PY
)
dl_log "$(tr '\n' ';' <<<"$out")"
grep -qx "held $n" <<<"$out" || dl_fail "could not hold $n files open: $out"
grep -qx 'close ok' <<<"$out" || dl_fail "close failed: $out"
grep -qx "made $n" <<<"$out" || dl_fail "could not create $n more files: $out"
dl_umount "$M"
dl_pass
