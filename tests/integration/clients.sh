#!/bin/bash
# clients.sh - unmodified lock clients on the mount: Python's fcntl module
# (flock, lockf ranges, a blocked waiter) and Perl's flock.
# dl_tmpdir assigns through printf -v; single quotes are meant literally
# shellcheck disable=SC2154,SC2016,SC2012
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
dl_init clients
dl_require_fuse
dl_require_prog flock

have_python=false have_perl=false
command -v python3 >/dev/null 2>&1 && have_python=true
command -v perl >/dev/null 2>&1 && have_perl=true
if ! $have_python && ! $have_perl; then
	dl_skip "neither python3 nor perl is installed"
fi
if [[ ${CI:-} == true ]] && ! { $have_python && $have_perl; }; then
	dl_fail "python3 and perl are both required when CI=true"
fi

dl_tmpdir base
mkdir "$base/backing" "$base/mnt"
dl_mount "$base/backing" "$base/mnt"

if $have_python; then
	dl_log "python3 fcntl"
	python3 - "$base/mnt/py.lock" <<'PY' || dl_fail "python3 fcntl client (see above)"
import errno, fcntl, os, select, subprocess, sys

path = sys.argv[1]
fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

def child(code, *args):
    return subprocess.run([sys.executable, "-c", code, path, *args],
                          timeout=30).returncode

TRY_FLOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit(3)
"""
TRY_LOCKF = """
import errno, fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, int(sys.argv[2]))
except OSError as e:
    sys.exit(3 if e.errno in (errno.EAGAIN, errno.EACCES) else 4)
"""
WAIT_LOCKF = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
print("waiting", flush=True)
fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
print("got", flush=True)
"""

def check(cond, what):
    if not cond:
        print("python: FAIL:", what, file=sys.stderr)
        sys.exit(1)

fcntl.flock(fd, fcntl.LOCK_EX)
check(child(TRY_FLOCK) == 3, "flock LOCK_NB should fail while held")
fcntl.flock(fd, fcntl.LOCK_UN)
check(child(TRY_FLOCK) == 0, "flock LOCK_NB should succeed once released")

fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)  # bytes 0..9
check(child(TRY_LOCKF, "5") == 3, "lockf on a locked byte should fail")
check(child(TRY_LOCKF, "10") == 0, "lockf next to the range should succeed")

p = subprocess.Popen([sys.executable, "-c", WAIT_LOCKF, path],
                     stdout=subprocess.PIPE, bufsize=0)
check(p.stdout.readline() == b"waiting\n", "waiter did not start")
r, _, _ = select.select([p.stdout], [], [], 0.3)
check(not r, "waiter got the lock while it was held")
fcntl.lockf(fd, fcntl.LOCK_UN, 10, 0)
r, _, _ = select.select([p.stdout], [], [], 10)
check(r and p.stdout.readline() == b"got\n", "waiter not woken by unlock")
check(p.wait(10) == 0, "waiter failed")
# the waiter exited: its lock is gone
check(child(TRY_LOCKF, "0") == 0, "waiter's lock survived its exit")
PY
fi

if $have_perl; then
	dl_log "perl flock"
	f="$base/mnt/perl.lock"
	: >"$f"
	perl_try='use Fcntl qw(:flock); open(my $fh, "+<", $ARGV[0]) or die "open: $!";
		exit(flock($fh, LOCK_EX | LOCK_NB) ? 0 : 3)'
	rc=0
	flock -x "$f" perl -e "$perl_try" "$f" || rc=$?
	[[ $rc -eq 3 ]] || dl_fail "perl flock LOCK_NB under flock(1): status $rc, expected 3"
	perl -e "$perl_try" "$f" || dl_fail "perl flock LOCK_NB on a free file failed"
	rc=0
	perl -e 'use Fcntl qw(:flock); open(my $fh, "+<", $ARGV[0]) or die;
		flock($fh, LOCK_EX) or die "flock: $!";
		system("flock", "-n", $ARGV[0], "true"); exit($? >> 8)' "$f" || rc=$?
	[[ $rc -eq 1 ]] || dl_fail "flock -n while perl holds the lock: status $rc, expected 1"

	# a counter incremented under Perl's flock by 3 processes
	echo 0 >"$base/mnt/perl.count"
	pids=()
	for _ in 1 2 3; do
		perl -e 'use Fcntl qw(:flock);
			my ($lock, $count) = @ARGV;
			for (1 .. 100) {
				open(my $l, ">>", $lock) or die "open: $!";
				flock($l, LOCK_EX) or die "flock: $!";
				open(my $c, "+<", $count) or die "open: $!";
				my $n = <$c>; seek($c, 0, 0); truncate($c, 0);
				print $c $n + 1, "\n"; close($c) or die "close: $!";
				close($l);
			}' "$f" "$base/mnt/perl.count" &
		pids+=("$!")
		dl_job "$!"
	done
	dl_wait_jobs 120 "${pids[@]}"
	n=$(cat "$base/mnt/perl.count")
	[[ $n == 300 ]] || dl_fail "perl counter is $n, expected 300"
fi
dl_umount "$base/mnt"
dl_pass
