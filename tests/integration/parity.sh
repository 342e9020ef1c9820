#!/bin/bash
# parity.sh - the mount answers lock queries and close() as the backing
# filesystem (a directory on the host's own filesystem, the reference) does
# (issue 9, item 11):
#  - F_OFD_GETLK with l_type F_UNLCK reports the description's own lock
#    (Linux >= 6.7) or F_UNLCK, never EINVAL;
#  - F_GETLK/F_OFD_GETLK of a classic POSIX holder name the same range and
#    type, and F_GETLK its pid; F_OFD_GETLK's l_pid is -1 on the mount
#    whatever the daemon answers (FUSE keeps the caller's OFD flag), which
#    this test records as the one known difference;
#  - close() never fails with EMFILE when the daemon is out of descriptors;
#  - user.dlock.locks of a file with more locks than fit in an xattr
#    (64 KiB) is a truncated list ending in "… N more", not E2BIG.
# dl_tmpdir assigns through printf -v; single quotes are meant literally
# shellcheck disable=SC2154,SC2016
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
dl_init parity
dl_require_fuse
dl_require_prog python3 getfattr setpriv

dl_tmpdir base
R="$base/ref" B="$base/backing" M="$base/mnt"
mkdir "$R" "$B" "$M"
dl_mount "$B" "$M" socket=none

# probe DIR - the lock queries on DIR/f, one line each
probe() {
	python3 - "$1/f" <<'PY'
import errno, fcntl, os, struct, sys, time
FL = "hhqqi4x"  # struct flock on 64-bit Linux


def getlk(fd, cmd, typ, start, ln, pid_of=None):
    b = struct.pack(FL, typ, os.SEEK_SET, start, ln, 0)
    try:
        t, _, s, l, p = struct.unpack(FL, fcntl.fcntl(fd, cmd, b))
    except OSError as e:
        return "error " + errno.errorcode[e.errno]
    names = {fcntl.F_RDLCK: "rd", fcntl.F_WRLCK: "wr", fcntl.F_UNLCK: "un"}
    pid = "holder" if pid_of is not None and p == pid_of else str(p)
    return "%s %d+%d pid=%s" % (names.get(t, t), s, l, pid)


def setlk(fd, cmd, typ, start, ln):
    fcntl.fcntl(fd, cmd, struct.pack(FL, typ, os.SEEK_SET, start, ln, 0))


p = sys.argv[1]
open(p, "w").close()
a = os.open(p, os.O_RDWR)
b = os.open(p, os.O_RDWR)
OG, G, UN = fcntl.F_OFD_GETLK, fcntl.F_GETLK, fcntl.F_UNLCK
print("unlocked: OFD_GETLK UNLCK", getlk(a, OG, UN, 0, 0))
print("unlocked: GETLK UNLCK", getlk(a, G, UN, 0, 0))
setlk(a, fcntl.F_OFD_SETLK, fcntl.F_WRLCK, 0, 10)
setlk(a, fcntl.F_OFD_SETLK, fcntl.F_RDLCK, 20, 5)
print("own OFD locks: OFD_GETLK UNLCK 0+0", getlk(a, OG, UN, 0, 0))
print("own OFD locks: OFD_GETLK UNLCK 15+0", getlk(a, OG, UN, 15, 0))
print("own OFD locks: OFD_GETLK UNLCK 10+10", getlk(a, OG, UN, 10, 10))
print("other's OFD locks: OFD_GETLK UNLCK", getlk(b, OG, UN, 0, 0))
print("other's OFD locks: OFD_GETLK WRLCK", getlk(b, OG, fcntl.F_WRLCK, 0, 0))
setlk(a, fcntl.F_OFD_SETLK, UN, 0, 0)
held_r, held_w = os.pipe()  # child -> parent: "locked"
go_r, go_w = os.pipe()  # parent -> child: "exit"
pid = os.fork()
if pid == 0:
    c = os.open(p, os.O_RDWR)
    setlk(c, fcntl.F_SETLK, fcntl.F_WRLCK, 5, 5)
    os.write(held_w, b"x")
    os.read(go_r, 1)
    os._exit(0)
os.read(held_r, 1)
print("POSIX holder: GETLK WRLCK", getlk(b, G, fcntl.F_WRLCK, 0, 0, pid))
print("POSIX holder: OFD_GETLK UNLCK", getlk(b, OG, UN, 0, 0))
# recorded, compared below without the pid
print("POSIX holder: OFD_GETLK WRLCK", getlk(b, OG, fcntl.F_WRLCK, 0, 0, pid))
os.write(go_w, b"x")
os.waitpid(pid, 0)
PY
}

dl_log "lock queries on the reference directory and on the mount"
probe "$R" >"$base/ref.out" || dl_fail "probe on the reference failed"
probe "$M" >"$base/mnt.out" || dl_fail "probe on the mount failed"
paste -d '\n' "$base/ref.out" "$base/mnt.out" | sed 's/^/  /' >&2
# F_OFD_GETLK of a classic holder: the kernel's FUSE code reports l_pid -1
# whatever the daemon says (it keeps the caller's FL_OFDLCK); the rest of
# the line must match
sed -i '/^POSIX holder: OFD_GETLK WRLCK/s/pid=.*$/pid=(kernel)/' \
	"$base/ref.out" "$base/mnt.out"
diff -u "$base/ref.out" "$base/mnt.out" >&2 ||
	dl_fail "the mount's lock queries differ from the reference"

dl_log "user.dlock.locks with 1500 locks (more than 64 KiB of text)"
python3 - "$M/many" "$base/ready" "$base/go" <<'PY' &
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
for i in range(1500):
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 2 * i)
open(sys.argv[2], "w").write("held\n")
for _ in range(600):  # at most 30 s
    if os.path.exists(sys.argv[3]):
        break
    time.sleep(0.05)
PY
holder=$!
dl_job "$holder"
dl_wait_for 30 test -s "$base/ready" || dl_fail "the holder did not take its 1500 locks"
rc=0
getfattr --absolute-names --only-values -n user.dlock.locks "$M/many" \
	>"$base/locks" 2>"$base/locks.err" || rc=$?
[[ $rc -eq 0 ]] || dl_fail "getfattr user.dlock.locks failed: $(cat "$base/locks.err")"
size=$(stat -c %s "$base/locks")
last=$(tail -n 1 "$base/locks")
shown=$(($(wc -l <"$base/locks") - 1))
dl_log "value: $size bytes, $shown lines and '$last'"
((size <= 65536)) || dl_fail "user.dlock.locks is $size bytes, more than 64 KiB"
[[ $last =~ ^…\ ([0-9]+)\ more$ ]] || dl_fail "the last line is not '… N more': '$last'"
((shown + BASH_REMATCH[1] == 1500)) ||
	dl_fail "$shown lines + ${BASH_REMATCH[1]} more is not 1500"
((size > 60000)) || dl_fail "only $size bytes used of 64 KiB"
grep -c "pid=$holder " "$base/locks" | grep -qx "$shown" ||
	dl_fail "not every shown line is one of the holder's locks"
touch "$base/go"
dl_wait_jobs 10 "$holder"

dl_log "close() when the daemon is out of descriptors"
# a daemon that cannot raise its limit (no CAP_SYS_RESOURCE) above 96
cat >"$base/lowfd-dlockfs" <<EOF
#!/bin/bash
ulimit -n 96
exec setpriv --inh-caps=-sys_resource --bounding-set=-sys_resource \\
	"$DLOCKFS" "\$@"
EOF
chmod +x "$base/lowfd-dlockfs"
B2="$base/backing2" M2="$base/mnt2"
mkdir "$B2" "$M2"
for i in $(seq 200); do : >"$B2/f$i"; done
DLOCKFS="$base/lowfd-dlockfs" dl_mount "$B2" "$M2" socket=none
out=$(python3 - "$M2" <<'PY'
import errno, os, sys
fds, err = [], None
for i in range(1, 201):
    try:
        fds.append(os.open("%s/f%d" % (sys.argv[1], i), os.O_RDONLY))
    except OSError as e:
        err = errno.errorcode[e.errno]
        break
print("opened", len(fds), "then", err)
for fd in fds:
    try:
        os.close(fd)
    except OSError as e:
        print("close", errno.errorcode[e.errno])
        break
else:
    print("close ok")
PY
)
dl_log "$out"
grep -q '^opened [0-9]* then E' <<<"$out" || dl_fail "the daemon did not run out of descriptors: $out"
grep -qx 'close ok' <<<"$out" || dl_fail "close() failed: $out"
grep -q 'then ENFILE$' <<<"$out" ||
	dl_fail "the daemon's own shortage should be ENFILE, not the caller's EMFILE: $out"
dl_umount "$M2"
dl_umount "$M"
dl_pass
