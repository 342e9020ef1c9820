#!/bin/bash
# pg_deadlock.sh - deadlock detection spans hosts: process A on host a
# holds byte 0 and waits for byte 1, process B on host b holds byte 1 and
# asks for byte 0 with F_SETLKW: B gets EDEADLK (as two processes on one
# host would), A is still waiting, and gets byte 1 once B lets go.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_init pg_deadlock
pg_require

pg_start
dl_tmpdir base
mkdir "$base/backing"
pg_conf "$base/dlock.conf"
pg_mount2 "$base/backing" "$(pg_uri "schema=dl&ttl_ms=3000")" "$base/dlock.conf"
: >"$MA/f"

mkfifo "$base/a.go" "$base/b.go"
# hold BYTE, say "held", wait for a line, then F_SETLKW on WANT, report,
# and hold on until a second line
cat >"$base/party.py" <<'PY'
import errno, fcntl, os, struct, sys
path, byte, want, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
fd = os.open(path, os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, byte)
print("held", flush=True)
with open(go) as f:
    f.readline()
try:
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, want)
    print("granted", flush=True)
except OSError as e:
    # errorcode[] names EDEADLK by its alias EDEADLOCK
    print("EDEADLK" if e.errno == errno.EDEADLK else errno.errorcode[e.errno],
          flush=True)
with open(go) as f:
    f.readline()
PY
python3 "$base/party.py" "$MA/f" 0 1 "$base/a.go" >"$base/a.out" 2>&1 &
pa=$!
dl_job "$pa"
python3 "$base/party.py" "$MB/f" 1 0 "$base/b.go" >"$base/b.out" 2>&1 &
pb=$!
dl_job "$pb"
dl_wait_for 10 grep -q '^held$' "$base/a.out" || dl_fail "A did not lock byte 0: $(cat "$base/a.out")"
dl_wait_for 10 grep -q '^held$' "$base/b.out" || dl_fail "B did not lock byte 1: $(cat "$base/b.out")"

exec 7>"$base/a.go"
echo go >&7 # A now waits for byte 1, held by B on the other host
waiting() { getfattr --only-values -n user.dlock.waiters "$MB/f" 2>/dev/null | grep -q 'host=a'; }
dl_wait_for 10 waiting || dl_fail "A's wait never showed in user.dlock.waiters"
exec 8>"$base/b.go"
echo go >&8 # B asks for byte 0, held by A, who waits for B: a cycle
dl_wait_for 10 grep -qE '^(granted|E[A-Z]+)$' "$base/b.out" || dl_fail "B neither got EDEADLK nor the lock"
grep -q '^EDEADLK$' "$base/b.out" || dl_fail "B: $(tail -1 "$base/b.out"), expected EDEADLK"
grep -q '^granted$' "$base/a.out" && dl_fail "A was granted byte 1 while B holds it"
waiting || dl_fail "A's wait is gone while B holds byte 1"
echo done >&8
dl_wait_jobs 10 "$pb" # B exits: its byte 1 goes to A
dl_wait_for 10 grep -q '^granted$' "$base/a.out" || dl_fail "A never got byte 1 after B left: $(cat "$base/a.out")"
echo done >&7
exec 7>&- 8>&-
dl_wait_jobs 10 "$pa"

dl_umount "$MA"
dl_umount "$MB"
dl_pass
