#!/bin/bash
# preload_xhost.sh - two agents ("hosts" a and b) on one redis-server: each
# unmodified client under the shim excludes its counterpart on the other
# host.  Exclusion tests give each host its own directory (same label), so
# only the backend can make them exclude each other; counter and SQLite
# tests share one directory, as hosts share an NFS export, with the kernel
# lock off (DLOCK_KERNEL_LOCK=0) so that it cannot hide a missing cluster
# lock.
# shellcheck disable=SC2154,SC2016
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=pl_lib.sh
. "$(dirname "$0")/pl_lib.sh"
dl_init preload_xhost
pl_require
dl_require_prog flock python3 perl sqlite3

dl_tmpdir base
mkdir "$base/a" "$base/b" "$base/shared"
pl_redis port
URI=redis://127.0.0.1:$port/plx$$
pl_agent a "$URI" "$base/a.sock" "app=$base/a:data=$base/shared"
pl_agent b "$URI" "$base/b.sock" "app=$base/b:data=$base/shared"
on_a() { pl_shim "$base/a.sock" "app=$base/a:data=$base/shared" "$@"; }
on_b() { pl_shim "$base/b.sock" "app=$base/b:data=$base/shared" "$@"; }

dl_log "flock(1) with a command"
rc=0
on_a flock "$base/a/f.lock" env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$base/b.sock" \
	DLOCK_PATHS="app=$base/b" flock -n "$base/b/f.lock" true || rc=$?
[[ $rc -eq 1 ]] || dl_fail "host b's flock -n got host a's lock: status $rc"
# a process's exit reaches its daemon asynchronously (its pidfd), as a
# FUSE release does: wait, bounded, for host a's lock to go
dl_wait_for 5 on_b flock -n "$base/b/f.lock" true ||
	dl_fail "host b cannot lock once host a let go"

dl_log "a shell holding a lock across exec"
fifo=$base/ready
mkfifo "$fifo"
# env, not a function: $! must be the process that execs
env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$base/a.sock" DLOCK_PATHS="app=$base/a" \
	bash -c 'exec 9>"$1"; flock 9; echo held >"$2"; exec sleep 60' _ "$base/a/x.lock" "$fifo" &
holder=$!
dl_job "$holder"
read -r -t 10 _ <"$fifo" || dl_fail "the exec holder did not start"
rc=0
on_b flock -n "$base/b/x.lock" true || rc=$?
[[ $rc -eq 1 ]] || dl_fail "host b got the lock host a's exec'd program holds: status $rc"
dl_log "dlockctl locks on host b shows both hosts' holders"
env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$base/a.sock" DLOCK_PATHS="app=$base/a" \
	bash -c 'exec 8>"$1"; flock -s 8; echo held >"$2"; exec sleep 60' _ "$base/a/s.lock" "$fifo" &
sholder=$!
dl_job "$sholder"
read -r -t 10 _ <"$fifo" || dl_fail "the shared holder did not start"
on_b flock -s "$base/b/s.lock" env DLOCK_PATHS="app=$base/b" \
	"$DLOCKCTL" --socket "$base/b.sock" locks -rn -o path,type,mode,start,end,host "$base/b/s.lock" >"$base/locks"
grep -qx "app/s.lock flock READ 0 EOF a" "$base/locks" ||
	dl_fail "no host a holder in: $(cat "$base/locks")"
grep -qx "app/s.lock flock READ 0 EOF b" "$base/locks" ||
	dl_fail "no host b holder in: $(cat "$base/locks")"
kill -KILL "$sholder"
DLOCK_PATHS="app=$base/b" "$DLOCKCTL" --socket "$base/b.sock" --json locks "$base/b/x.lock" |
	python3 -c 'import json,sys; l=json.load(sys.stdin); assert [x["host"] for x in l] == ["a"] and l[0]["path"] == "app/x.lock", l' ||
	dl_fail "locks PATH on host b does not show host a's holder"
kill -KILL "$holder"
wait "$holder" 2>/dev/null || true
dl_wait_for 5 on_b flock -n "$base/b/x.lock" true || dl_fail "host a's killed holder still holds"

dl_log "python fcntl byte ranges"
on_a pl_py xrange "$base/b" "$base/b.sock" "$base/a/r.lock" "$base/b/r.lock"

dl_log "perl flock"
perl_try='use Fcntl qw(:flock); open(my $fh, ">>", $ARGV[0]) or die "open: $!";
	exit(flock($fh, LOCK_EX | LOCK_NB) ? 0 : 3)'
rc=0
on_a perl -e 'use Fcntl qw(:flock); open(my $fh, ">>", $ARGV[0]) or die;
	flock($fh, LOCK_EX) or die "flock: $!"; system(@ARGV[1 .. $#ARGV]); exit($? >> 8)' \
	"$base/a/p.lock" env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$base/b.sock" \
	DLOCK_PATHS="app=$base/b" perl -e "$perl_try" "$base/b/p.lock" || rc=$?
[[ $rc -eq 3 ]] || dl_fail "perl on host b got host a's flock: status $rc"

dl_log "counters: flock(1) and perl, 2 processes per host, shared file"
echo 0 >"$base/shared/count"
echo 0 >"$base/shared/pcount"
pids=()
for h in a b a b; do
	(
		for ((i = 0; i < 50; i++)); do
			DLOCK_KERNEL_LOCK=0 "on_$h" flock -w 60 "$base/shared/c.lock" \
				sh -c 'n=$(cat "$1") && echo $((n + 1)) >"$1"' _ "$base/shared/count" || exit 1
		done
	) &
	pids+=("$!")
	dl_job "$!"
	DLOCK_KERNEL_LOCK=0 "on_$h" perl -e 'use Fcntl qw(:flock);
		my ($lock, $count) = @ARGV;
		for (1 .. 50) {
			open(my $l, ">>", $lock) or die "open: $!";
			flock($l, LOCK_EX) or die "flock: $!";
			open(my $c, "+<", $count) or die "open: $!";
			my $n = <$c>; seek($c, 0, 0); truncate($c, 0);
			print $c $n + 1, "\n"; close($c) or die "close: $!";
			close($l);
		}' "$base/shared/p.lock" "$base/shared/pcount" &
	pids+=("$!")
	dl_job "$!"
done
dl_wait_jobs 120 "${pids[@]}"
[[ $(cat "$base/shared/count") == 200 ]] || dl_fail "flock counter is $(cat "$base/shared/count"), expected 200"
[[ $(cat "$base/shared/pcount") == 200 ]] || dl_fail "perl counter is $(cat "$base/shared/pcount"), expected 200"

dl_log "sqlite3 writers on both hosts, one database"
db=$base/shared/t.db
sqlite3 "$db" 'PRAGMA journal_mode=DELETE; CREATE TABLE t (h TEXT, i INTEGER);' >/dev/null
pids=()
for h in a b a b; do
	(
		for ((i = 0; i < 40; i++)); do
			DLOCK_KERNEL_LOCK=0 "on_$h" sqlite3 -cmd '.timeout 30000' "$db" \
				"BEGIN IMMEDIATE; INSERT INTO t SELECT '$h', COUNT(*) FROM t; COMMIT;" ||
				exit 1
		done
	) &
	pids+=("$!")
	dl_job "$!"
done
dl_wait_jobs 120 "${pids[@]}"
n=$(sqlite3 "$db" 'SELECT COUNT(*) FROM t')
[[ $n == 160 ]] || dl_fail "sqlite has $n rows, expected 160"
# every row saw all rows before it: serialised writers
d=$(sqlite3 "$db" 'SELECT COUNT(DISTINCT i) FROM t')
[[ $d == 160 ]] || dl_fail "sqlite writers overlapped: $d distinct counts for 160 rows"
[[ $(sqlite3 "$db" 'PRAGMA integrity_check') == ok ]] || dl_fail "sqlite integrity_check failed"

dl_log "host b breaks host a's shim-held locks: host a's writes fail with EIO"
if [[ $(id -u) -eq 0 ]]; then
	DLOCK_KERNEL_LOCK=0 on_a pl_py shim_eio "$base/shared" "$base" "$DLOCKCTL" "$base/b.sock"
else
	dl_log "skipped: dlockctl break needs root"
fi

pl_stop a
pl_stop b
dl_pass
