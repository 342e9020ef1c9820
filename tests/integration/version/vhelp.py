#!/usr/bin/env python3
"""vhelp.py - the parts of version.sh that need syscalls (issue 14).

usage: vhelp.py lockbump FA FB      flock -x, write, unlock: the version
                                    (read through FB, another mount's name
                                    of FA) is +1 before the close, and
                                    still +1 after it
       vhelp.py fdver NEW TARGET REL
                                    setxattr user.dlock.replace on NEW
                                    (TARGET = REL in the mount) with a
                                    descriptor open on NEW: afterwards
                                    that descriptor's version is TARGET's
       vhelp.py errors MNT          the daemon's errno for each malformed
                                    or refused user.dlock.replace
       vhelp.py writer F STOP MAXSEC
                                    rewrite F in place under flock -x
                                    (truncate, 64 KiB of a random token in
                                    4, 16 or 64 KiB writes, "sum=SHA256"),
                                    a few ms apart, until the file STOP
                                    exists or MAXSEC passed; prints the
                                    number of rewrites
       vhelp.py reader DLOCKCTL F N RETRIES
                                    N x `dlockctl read --retries RETRIES F`:
                                    every copy printed must carry a valid
                                    checksum; prints "ok=A none=B bad=C"
       vhelp.py torn F N            N plain reads of F (no protocol): how
                                    many copies were torn (informational)
Prints "FAIL ..." and exits 1 when a check fails.
"""
import errno
import fcntl
import hashlib
import os
import secrets
import subprocess
import sys
import time

VER = "user.dlock.version"
REPLACE = "user.dlock.replace"


def fail(msg):
    print("FAIL " + msg, flush=True)
    sys.exit(1)


def ver(path_or_fd):
    return int(os.getxattr(path_or_fd, VER))


def ename(e):
    return errno.errorcode.get(e, str(e)) if e else "ok"


def lockbump(fa, fb):
    v0 = ver(fb)
    fd = os.open(fa, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if ver(fb) != v0:
            fail("lockbump: flock -x without a write bumped %d -> %d"
                 % (v0, ver(fb)))
        os.pwrite(fd, b"locked write\n", 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        v1 = ver(fb)
        if v1 != v0 + 1:
            fail("lockbump: after write + unlock (fd still open) the other "
                 "mount reads version %d, expected %d" % (v1, v0 + 1))
    finally:
        os.close(fd)
    v2 = ver(fb)
    if v2 != v0 + 1:
        fail("lockbump: the close after write + unlock bumped again: %d, "
             "expected %d" % (v2, v0 + 1))
    print("lockbump: %d -> %d at the unlock, no bump at the close" % (v0, v1))


def fdver(new, target, rel):
    v = ver(target)
    fd = os.open(new, os.O_RDONLY)
    try:
        os.setxattr(new, REPLACE, ("%d %s" % (v, rel)).encode(), 0)
        got = ver(fd)
        if got != v + 1:
            fail("fdver: the descriptor open on NEWFILE reads version %d "
                 "after the replace, expected TARGET's %d" % (got, v + 1))
    finally:
        os.close(fd)
    if ver(target) != v + 1:
        fail("fdver: TARGET's version is %d, expected %d" % (ver(target), v + 1))
    print("fdver: %d -> %d, seen through the descriptor on NEWFILE" % (v, v + 1))


def errors(mnt):
    """each (value, NEWFILE, expected errno) leaves everything unchanged"""
    new = os.path.join(mnt, "err-new")
    tgt = os.path.join(mnt, "err-target")
    with open(new, "w") as f:
        f.write("new\n")
    with open(tgt, "w") as f:
        f.write("target\n")
    os.makedirs(os.path.join(mnt, "err-dir"), exist_ok=True)
    v = ver(tgt)
    vd = ver(os.path.join(mnt, "err-dir"))
    cases = [
        ("x err-target", new, errno.EINVAL),
        ("-1 err-target", new, errno.EINVAL),
        ("99999999999999999999999 err-target", new, errno.EINVAL),
        ("%d" % v, new, errno.EINVAL),
        ("%d " % v, new, errno.EINVAL),
        (" %d err-target" % v, new, errno.EINVAL),
        ("%d /err-target" % v, new, errno.EINVAL),
        ("%d ../err-target" % v, new, errno.EINVAL),
        ("%d ./err-target" % v, new, errno.EINVAL),
        ("%d err-dir/../err-target" % v, new, errno.EINVAL),
        ("%d err-dir//x" % v, new, errno.EINVAL),
        # (with the versions they have: not ESTALE)
        ("%d err-dir" % vd, new, errno.EISDIR),
        ("0 no-such-dir/x", new, errno.ENOENT),
        ("%d err-target" % v, os.path.join(mnt, "err-dir"), errno.EINVAL),
        ("%d err-target" % (v + 1), new, errno.ESTALE),
    ]
    bad = []
    for value, nf, want in cases:
        got = 0
        try:
            os.setxattr(nf, REPLACE, value.encode(), 0)
        except OSError as e:
            got = e.errno
        if got != want:
            bad.append("'%s' on %s: %s, expected %s" % (
                value, os.path.basename(nf), ename(got), ename(want)))
    if ver(tgt) != v or open(tgt).read() != "target\n":
        bad.append("TARGET changed: version %d (was %d), content %r"
                   % (ver(tgt), v, open(tgt).read()))
    if open(new).read() != "new\n":
        bad.append("NEWFILE changed: %r" % open(new).read())
    if not os.path.isdir(os.path.join(mnt, "err-dir")):
        bad.append("err-dir is no longer a directory")
    if bad:
        fail("errors: " + "; ".join(bad))
    print("errors: %d malformed/refused replaces, each the expected errno, "
          "nothing changed" % len(cases))


def body():
    token = secrets.token_hex(8).encode()
    data = (token * (65536 // len(token) + 1))[:65536]
    return data + b"sum=" + hashlib.sha256(data).hexdigest().encode() + b"\n"


def valid(copy):
    i = copy.rfind(b"sum=")
    if i < 0 or not copy.endswith(b"\n"):
        return False
    return hashlib.sha256(copy[:i]).hexdigest().encode() == copy[i + 4:-1]


def writer(path, stop, maxsec):
    end = time.monotonic() + float(maxsec)
    n = 0
    while not os.path.exists(stop) and time.monotonic() < end:
        b = body()
        fd = os.open(path, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            # writes of 4, 16 or 64 KiB: short and long sessions
            chunk = 4096 << 2 * secrets.randbelow(3)
            for off in range(0, len(b), chunk):
                os.pwrite(fd, b[off:off + chunk], off)
        finally:
            os.close(fd)  # the close drops the flock: the bump
        n += 1
        time.sleep(0.002 + 0.01 * secrets.randbelow(100) / 100)
    print(n, flush=True)


def reader(dlockctl, path, n, retries):
    ok = none = bad = 0
    why = ""
    for _ in range(int(n)):
        p = subprocess.run([dlockctl, "read", "--retries", retries, path],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           timeout=30)
        if p.returncode == 5:
            none += 1
        elif p.returncode == 0 and valid(p.stdout):
            ok += 1
        else:
            bad += 1
            why = "exit %d, %d bytes, stderr %r" % (
                p.returncode, len(p.stdout), p.stderr[:200])
    print("ok=%d none=%d bad=%d" % (ok, none, bad), flush=True)
    if bad:
        fail("reader: %d inconsistent copies or errors (last: %s)" % (bad, why))


def torn(path, n):
    t = 0
    for _ in range(int(n)):
        with open(path, "rb") as f:
            if not valid(f.read()):
                t += 1
    print(t, flush=True)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"lockbump": lockbump, "fdver": fdver, "errors": errors,
     "writer": writer, "reader": reader, "torn": torn}[cmd](*args)


if __name__ == "__main__":
    main()
