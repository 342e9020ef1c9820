#!/usr/bin/env python3
"""pl_check.py - lock scenarios of the shim's integration tests.

Run by the .sh tests, usually under LD_PRELOAD (the shim), so that this
process's and its children's lock calls go to the daemon.  Every wait is
bounded; "free at once" is a bounded poll of a condition, never a sleep.
Prints "ok NAME" or "FAIL NAME: why"; exits 1 if anything failed.

  semantics DIR            fork/close/kill/EINTR rules on one host
  fuzz SOCK DIR OUTSIDE    hostile frames against the control socket
  xrange DIR_B SOCK_B FILE_A FILE_B   byte ranges across two hosts
  eio FILE DLOCKCTL        break a lock held through a mount: EIO
  shim_eio DIR OUTSIDE DLOCKCTL [SOCK]   break locks held through the
                           shim (from the daemon at SOCK): EIO
"""
import errno
import fcntl
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time

FAILED = []


def ok(name):
    print("ok", name, flush=True)


def fail(name, why):
    print("FAIL %s: %s" % (name, why), flush=True)
    FAILED.append(name)


def until(cond, seconds=5.0):
    """poll cond() every 10 ms for at most seconds; True once it holds"""
    end = time.monotonic() + seconds
    while True:
        if cond():
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.01)


# a fresh process (so a different lock owner) tries a lock: 0 got it, 3 busy
TRY = r"""
import errno, fcntl, os, sys
kind, path = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDWR)
try:
    if kind == "flock":
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    else:
        start = int(sys.argv[3]) if len(sys.argv) > 3 else 0
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, start)
except OSError as e:
    sys.exit(3 if e.errno in (errno.EAGAIN, errno.EACCES) else 4)
"""


def try_lock(kind, path, *args, env=None):
    return subprocess.run([sys.executable, "-c", TRY, kind, path, *args],
                          timeout=30, env=env).returncode


def semantics(d):
    path = os.path.join(d, "sem.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    # flock follows the open file description into a child
    fcntl.flock(fd, fcntl.LOCK_EX)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(w)
        os.read(r, 1)  # hold the inherited description until told
        os._exit(0)
    os.close(r)
    os.close(fd)  # the child still has the description
    if try_lock("flock", path) != 3:
        fail("fork_inherits_flock", "lock gone while the child holds it")
    else:
        ok("fork_inherits_flock")
    os.close(w)
    os.waitpid(pid, 0)
    if not until(lambda: try_lock("flock", path) == 0):
        fail("flock_last_close", "lock survived the last descriptor")
    else:
        ok("flock_last_close")

    # POSIX locks are not inherited: the child conflicts with its parent
    fd = os.open(path, os.O_RDWR)
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
    pid = os.fork()
    if pid == 0:
        fd2 = os.open(path, os.O_RDWR)
        try:
            fcntl.lockf(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)
            os._exit(0)
        except OSError:
            os._exit(3)
    _, st = os.waitpid(pid, 0)
    if os.WEXITSTATUS(st) != 3:
        fail("fork_no_posix", "the child got its parent's POSIX lock")
    else:
        ok("fork_no_posix")

    # closing any descriptor of the file drops the process's POSIX locks
    other = os.open(path, os.O_RDONLY)
    if try_lock("posix", path) != 3:
        fail("close_any_fd", "POSIX lock not held before the close")
    os.close(other)
    rc = try_lock("posix", path)
    if rc != 0:
        fail("close_any_fd", "lock still held after closing another fd (%d)" % rc)
    else:
        ok("close_any_fd")
    os.close(fd)

    # kill -9 of the holder frees its locks at once
    holder = subprocess.Popen([sys.executable, "-c", r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
fd2 = os.open(sys.argv[1] + ".p", os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd2, fcntl.LOCK_EX, 0, 0)
print("ready", flush=True)
time.sleep(120)
""", path], stdout=subprocess.PIPE)
    if holder.stdout.readline() != b"ready\n":
        fail("kill9", "holder did not start")
    elif try_lock("flock", path) != 3 or try_lock("posix", path + ".p") != 3:
        fail("kill9", "holder's locks not held")
    else:
        t0 = time.monotonic()
        holder.kill()
        holder.wait(10)
        freed = until(lambda: try_lock("flock", path) == 0 and
                      try_lock("posix", path + ".p") == 0, 5)
        dt = time.monotonic() - t0
        if not freed:
            fail("kill9", "locks not freed within 5 s of kill -9")
        else:
            ok("kill9 (freed after %.0f ms)" % (dt * 1000))

    # a signal interrupts a blocked wait; nothing stays queued
    fd = os.open(path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    waiter = subprocess.Popen([sys.executable, "-c", r"""
import fcntl, os, signal, sys
class Alarm(Exception): pass
def h(*a): raise Alarm()
signal.signal(signal.SIGALRM, h)
fd = os.open(sys.argv[1], os.O_RDWR)
signal.setitimer(signal.ITIMER_REAL, 0.3)
try:
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("granted", flush=True)
except Alarm:
    print("interrupted", flush=True)
""", path], stdout=subprocess.PIPE)
    out = waiter.stdout.readline()
    waiter.wait(10)
    if out != b"interrupted\n":
        fail("eintr", "waiter said %r" % out)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        if try_lock("flock", path) != 0:
            fail("eintr", "the interrupted wait left something behind")
        else:
            ok("eintr")
    os.close(fd)


# ---- the socket, spoken to directly -------------------------------------
MAGIC, VERSION = 0x4B4C4C44, 3
LOCK, STATUS, REPLY = 1, 6, 64


def frame(typ, body, version=VERSION, length=None, ident=7):
    n = len(body) if length is None else length
    return struct.pack("<IHHII", MAGIC, version, typ, n, ident) + body


def strs(*ss):
    return b"".join(struct.pack("<H", len(s)) + s for s in ss)


def lock_body(kind=0, ltype=2, flags=2, start=0, length=0):
    return struct.pack("<BBBBIqq", kind, ltype, flags, 0, 0, start, length)


def talk(sock, data, fd=None, wait=5.0):
    """send one packet; return the reply's errno (negative), or 'closed'"""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(wait)
    s.connect(sock)
    try:
        if fd is None:
            s.send(data)
        else:
            s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                                struct.pack("i", fd))])
        r = s.recv(70000)
        if not r:
            return "closed"
        if len(r) >= 20 and struct.unpack("<H", r[6:8])[0] == REPLY:
            return struct.unpack("<i", r[16:20])[0]
        return "bad reply"
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    except socket.timeout:
        return "no answer"
    finally:
        s.close()


def alive(sock):
    return talk(sock, frame(STATUS, b"")) == 0


def fuzz(sock, d, outside):
    inside = os.path.join(d, "fz.lock")
    open(inside, "a").close()
    prefix = os.path.realpath(d).encode()
    cases = [
        ("garbage", b"\x00garbage\xff" * 3, None),
        ("truncated", frame(LOCK, lock_body())[:10], None),
        ("huge_length", frame(LOCK, lock_body(), length=0xFFFFFFFF), None),
        ("oversized", frame(LOCK, b"x" * 69000), None),
        ("bad_type", frame(999, b""), None),
        ("string_overrun", frame(LOCK, lock_body() + struct.pack("<H", 500) + b"ab"), None),
    ]
    for name, data, fd in cases:
        got = talk(sock, data, fd)
        if got not in ("closed",) and not (isinstance(got, int) and got < 0):
            fail("fuzz_" + name, "answer %r" % (got,))
        elif not alive(sock):
            fail("fuzz_" + name, "daemon stopped serving")
        else:
            ok("fuzz_" + name)

    got = talk(sock, frame(STATUS, b"", version=99))
    if got != -errno.EPROTONOSUPPORT:
        fail("fuzz_version", "answer %r" % (got,))
    else:
        ok("fuzz_version")

    def lock_with(name, fd, expect, body=None, label=b"fz"):
        b = body or lock_body()
        got = talk(sock, frame(LOCK, b + strs(label, prefix)), fd)
        if got != expect:
            fail(name, "answer %r, expected %r" % (got, expect))
        else:
            ok(name)
        if not alive(sock):
            fail(name, "daemon stopped serving")

    out = os.open(outside, os.O_RDWR | os.O_CREAT, 0o644)
    # the daemon's paths= names files, whatever label the frame carries
    lock_with("fd_outside_prefix", out, -errno.ENOLCK)
    ro = os.open(inside, os.O_RDONLY)
    lock_with("write_lock_on_readonly_fd", ro, -errno.EBADF)
    op = os.open(inside, os.O_PATH)
    lock_with("o_path_fd", op, -errno.EBADF)
    r, w = os.pipe()
    lock_with("pipe_fd", r, -errno.EBADF)
    lock_with("fd_announced_missing", None, -errno.EBADMSG)
    lock_with("label_ignored", ro, 0,
              body=lock_body(kind=2, ltype=1), label=b"name:x")
    # a well-formed request still works after all that
    rw = os.open(inside, os.O_RDWR)
    lock_with("valid_after_fuzz", rw, 0, body=lock_body(kind=2, ltype=1, flags=2))

    rnd = random.Random(5)
    bad = 0
    for i in range(300):
        body = bytes(rnd.randrange(256) for _ in range(rnd.randrange(0, 80)))
        typ = rnd.choice([1, 2, 3, 4, 5, 6, 7, 8, 64, 65, rnd.randrange(1 << 16)])
        data = frame(typ, body, length=None if rnd.random() < 0.8 else rnd.randrange(1 << 32))
        cut = rnd.random()
        if cut < 0.2:
            data = data[:rnd.randrange(len(data) + 1)]
        try:
            fd = rw if rnd.random() < 0.3 else None
            talk(sock, data, fd, wait=2.0)
        except OSError:
            bad += 1
    if not alive(sock):
        fail("fuzz_random", "daemon stopped serving after random frames")
    else:
        ok("fuzz_random (300 frames)")
    for x in (out, ro, op, r, w, rw):
        os.close(x)


def xrange_(dir_b, sock_b, file_a, file_b):
    """this process (shim for host A) holds bytes 0..9 of file_a; host B's
    view of the same name must see them"""
    env_b = dict(os.environ, DLOCK_SOCKET=sock_b, DLOCK_PATHS="app=" + dir_b)
    open(file_b, "a").close()
    fd = os.open(file_a, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX, 10, 0)
    rc5 = try_lock("posix", file_b, "5", env=env_b)
    rc10 = try_lock("posix", file_b, "10", env=env_b)
    if rc5 != 3 or rc10 != 0:
        fail("xhost_byte_range", "host b: byte 5 -> %d (want 3), byte 10 -> %d (want 0)" % (rc5, rc10))
    else:
        ok("xhost_byte_range")
    # F_GETLK on host b reports host a's lock
    code = r"""
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDWR)
lk = struct.pack("hhqqi", fcntl.F_WRLCK, 0, 3, 1, 0)
r = fcntl.fcntl(fd, fcntl.F_GETLK, lk)
t, w, s, l, p = struct.unpack("hhqqi", r)
print(t == fcntl.F_WRLCK and s == 0 and l == 10, p)
"""
    out = subprocess.run([sys.executable, "-c", code, file_b], env=env_b,
                         stdout=subprocess.PIPE, timeout=30).stdout
    if not out.startswith(b"True"):
        fail("xhost_getlk", "host b F_GETLK said %r" % out)
    else:
        ok("xhost_getlk")
    fcntl.lockf(fd, fcntl.LOCK_UN, 10, 0)
    if try_lock("posix", file_b, "5", env=env_b) != 0:
        fail("xhost_unlock", "host b cannot lock after host a unlocked")
    else:
        ok("xhost_unlock")
    os.close(fd)


def eio(path, dlockctl):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    os.write(fd, b"before\n")
    # not root: refused
    # (by name: without allow_other, nobody cannot reach the mount)
    r = subprocess.run([dlockctl, "break", "name:x"], timeout=30,
                       preexec_fn=lambda: os.setuid(65534),
                       stderr=subprocess.PIPE)
    if r.returncode != 4 or b"Operation not permitted" not in r.stderr:
        fail("break_needs_root", "status %d, %r" % (r.returncode, r.stderr))
    else:
        ok("break_needs_root")
    r = subprocess.run([dlockctl, "break", path], timeout=30)
    if r.returncode != 0:
        fail("break", "dlockctl break: status %d" % r.returncode)
        return
    ok("break")
    try:
        os.write(fd, b"after\n")
        fail("break_eio", "write after the break succeeded")
    except OSError as e:
        if e.errno != errno.EIO:
            fail("break_eio", "write failed with %s, not EIO" % errno.errorcode[e.errno])
        else:
            ok("break_eio")
    if try_lock("flock", path) != 0:
        fail("break_frees", "the lock is not free after the break")
    else:
        ok("break_frees")
    os.close(fd)


def write_eio(name, fd, expect_eio):
    """every fenced write call on fd: EIO (expect_eio) or success"""
    calls = [("write", lambda: os.write(fd, b"w")),
             ("pwrite", lambda: os.pwrite(fd, b"p", 0)),
             ("writev", lambda: os.writev(fd, [b"v", b"v"])),
             ("ftruncate", lambda: os.ftruncate(fd, 4))]
    if hasattr(os, "pwritev"):
        calls.append(("pwritev", lambda: os.pwritev(fd, [b"x"], 1)))
    if hasattr(os, "posix_fallocate"):
        calls.append(("posix_fallocate",
                      lambda: os.posix_fallocate(fd, 0, 8)))
    for what, call in calls:
        try:
            call()
            if expect_eio:
                fail(name, "%s succeeded" % what)
                return
        except OSError as e:
            if not expect_eio or e.errno != errno.EIO:
                fail(name, "%s: %s" % (what, errno.errorcode[e.errno]))
                return
    ok(name)


def lost(fd):
    """has the holder learnt that its lock is gone?  The probe writes
    byte 0 over itself: until the break reaches this host the write is
    allowed, and must not change what the read check compares"""
    first = os.pread(fd, 1, 0)
    try:
        os.write(fd, b"")
        os.pwrite(fd, first, 0)
        return False
    except OSError as e:
        return e.errno == errno.EIO


def shim_eio(d, outside, dlockctl, sock=None):
    """a lock held through the shim is broken: the holder's writes through
    that descriptor fail with EIO, its reads do not, a new one works"""
    fl, px = os.path.join(d, "eio_flock"), os.path.join(d, "eio_posix")
    free, out = os.path.join(d, "eio_free"), os.path.join(outside, "eio")
    fds = {p: os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
           for p in (fl, px, free, out)}
    fcntl.flock(fds[fl], fcntl.LOCK_EX)
    fcntl.lockf(fds[px], fcntl.LOCK_EX)
    dup = os.dup(fds[px])  # a duplicate shares the fence
    write_eio("shim_eio_before_flock", fds[fl], False)
    write_eio("shim_eio_before_posix", fds[px], False)
    data = {p: os.pread(fds[p], 64, 0) for p in (fl, px)}
    for p in (fl, px):
        r = subprocess.run([dlockctl] + (["--socket", sock] if sock else [])
                           + ["break", p], timeout=30)
        if r.returncode != 0:
            fail("shim_eio_break", "dlockctl break %s: status %d" %
                 (p, r.returncode))
            return
    ok("shim_eio_break")
    for name, p in (("flock", fl), ("posix", px)):
        if not until(lambda: lost(fds[p])):
            fail("shim_eio_" + name, "writes still succeed 5 s after the "
                 "break")
            continue
        write_eio("shim_eio_" + name, fds[p], True)
        try:
            got = os.pread(fds[p], 64, 0)
            if got != data[p] or not got:
                fail("shim_eio_read_" + name, "read %r, not %r" %
                     (got, data[p]))
            else:
                ok("shim_eio_read_" + name)
        except OSError as e:
            fail("shim_eio_read_" + name, errno.errorcode[e.errno])
    write_eio("shim_eio_unlocked_covered", fds[free], False)
    write_eio("shim_eio_uncovered", fds[out], False)
    write_eio("shim_eio_dup", dup, True)
    if try_lock("flock", fl) != 0:
        fail("shim_eio_frees", "the lock is not free after the break")
    else:
        ok("shim_eio_frees")
    os.close(dup)
    for name, p in (("flock", fl), ("posix", px)):
        os.close(fds[p])
        fd = os.open(p, os.O_RDWR)
        write_eio("shim_eio_reopen_" + name, fd, False)
        if p == fl:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        write_eio("shim_eio_relock_" + name, fd, False)
        os.close(fd)
    for p in (free, out):
        os.close(fds[p])


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"semantics": semantics, "fuzz": fuzz, "xrange": xrange_,
     "eio": eio, "shim_eio": shim_eio}[cmd](*args)
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
