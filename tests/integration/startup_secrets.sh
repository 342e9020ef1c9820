#!/bin/bash
# startup_secrets.sh - the daemon keeps its secrets to itself (issue 9,
# item 13):
#  - a secret given as -o (redis_password=..., zk_password=...) is refused
#    with one line that does not contain the value;
#  - with a Redis password in the config file, the running daemon's memory
#    holds at most 2 copies of it, after a connection of every kind has
#    been used (command pool, subscriber);
#  - the daemon is not dumpable once mounted (no core dump holds the
#    password), and is with -d (for debugging).
# Dumpability is checked as the kernel does for ptrace: a root process
# without CAP_SYS_PTRACE (setpriv) may read /proc/PID/syscall (a
# PTRACE_MODE_ATTACH check) of a root process only if that process is
# dumpable.  The daemon is started with the same reduced bounding set, so
# capabilities alone do not decide.
# dl_tmpdir assigns through printf -v
# shellcheck disable=SC2154
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
# shellcheck source=redis/redis_lib.sh
. "$(dirname "$0")/redis/redis_lib.sh"
dl_init startup_secrets
rd_require
dl_require_prog setpriv

SECRET="S3cr3t-$$-$RANDOM-pw#x"
dl_tmpdir base
B=$base/backing M=$base/mnt
mkdir "$B" "$M"

dl_log "a secret on the command line is refused without echoing it"
for key in redis_password zk_password password; do
	rc=0
	err=$(timeout -k 2 10 "$DLOCKFS" -f -o "socket=none,$key=$SECRET" "$B" "$M" 2>&1) || rc=$?
	! dl_is_mounted "$M" || dl_fail "-o $key=...: mounted"
	[[ $rc -eq 2 ]] || dl_fail "-o $key=...: exit $rc, expected 2: $err"
	[[ $(wc -l <<<"$err") -eq 1 ]] || dl_fail "-o $key=...: more than one line: $err"
	[[ $err != *"$SECRET"* ]] || dl_fail "-o $key=...: the error line shows the secret: $err"
	[[ $err == *"$key"* ]] || dl_fail "-o $key=...: the error line does not name the option: $err"
	dl_log "  $err"
done

# copies of $SECRET in the memory of PID (readable mappings)
count_copies() {
	python3 - "$1" "$SECRET" <<'PY'
import re, sys
pid, secret = sys.argv[1], sys.argv[2].encode()
n = 0
with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
    for line in maps:
        m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
        lo, hi, perm = int(m[1], 16), int(m[2], 16), m[3]
        if perm[0] != "r" or line.rstrip().endswith("[vvar]"):
            continue
        try:
            mem.seek(lo)
            data = mem.read(hi - lo)
        except OSError:
            continue
        n += data.count(secret)
print(n)
PY
}

# dumpable PID - 0 if a root process without CAP_SYS_PTRACE can read
# /proc/PID/syscall (the kernel allows it only for a dumpable process)
dumpable() {
	setpriv --bounding-set -sys_ptrace --inh-caps=-all \
		cat "/proc/$1/syscall" >/dev/null 2>&1
}

rd_start port
rd_cli "$port" config set requirepass "$SECRET" >/dev/null
printf 'redis_password = %s\n' "$SECRET" >"$base/conf"
chmod 600 "$base/conf"

# start_daemon [ARG...] - mount with the password; sets PID, LOG
start_daemon() {
	LOG=$base/daemon.log
	# MALLOC_PERTURB_ (set by meson test) would wipe freed copies for us
	env -u MALLOC_PERTURB_ setpriv --bounding-set -sys_ptrace "$DLOCKFS" -f "$@" \
		-o "backend=redis://127.0.0.1:$port/s$$,host_id=h1,config=$base/conf,socket=$base/sock" \
		"$B" "$M" >"$LOG" 2>&1 &
	PID=$!
	DL_PIDS+=("$PID")
	DL_MOUNTS+=("$M")
	dl_wait_for 10 dl_mounted_or_dead "$M" "$PID" || dl_fail "no mount within 10 s: $(cat "$LOG")"
	dl_is_mounted "$M" || dl_fail "the daemon did not mount: $(cat "$LOG")"
}

start_daemon
# use the pool, the lease keeper and the subscriber (a waiter is woken by
# a publish): each connection authenticated once
: >"$M/f"
for _ in 1 2 3 4 5 6; do flock "$M/f" true; done
flock "$M/f" sleep 1 &
w=$!
dl_job "$w"
sleep 0.2
flock -w 10 "$M/f" true || dl_fail "a waiter was not granted"
dl_wait_jobs 10 "$w"
# connections that were cut reconnect and authenticate again (a request
# that finds its connection cut fails with ENOLCK: retry)
rd_cli "$port" -a "$SECRET" --no-auth-warning client kill type normal >/dev/null
for _ in 1 2 3; do
	dl_wait_for 10 flock "$M/f" true 2>/dev/null || dl_fail "no lock after the reconnect"
done

copies=$(count_copies "$PID")
dl_log "copies of the password in the daemon's memory: $copies"
[[ $copies -le 2 ]] || dl_fail "the password is in the daemon's memory $copies times (want at most 2)"
[[ $copies -ge 1 ]] || dl_fail "the scan found no copy at all: is it scanning the right process?"
if dumpable "$PID"; then
	dl_fail "the mounted daemon is dumpable (a core dump would hold the password)"
fi
grep -qF "$SECRET" "$LOG" && dl_fail "the daemon's output shows the password"
dl_umount "$M"

dl_log "with -d the daemon stays dumpable (for debugging)"
start_daemon -d
dumpable "$PID" || dl_fail "with -d the daemon is not dumpable"
grep -qF "$SECRET" "$LOG" && dl_fail "the daemon's debug output shows the password"
dl_umount "$M"
dl_pass
