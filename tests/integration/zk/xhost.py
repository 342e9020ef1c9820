#!/usr/bin/env python3
"""xhost.py - lock scenarios across two dlockfs "hosts" (two mounts).

Usage: xhost.py DIR_A DIR_B [SCENARIO...]

Each scenario starts worker processes ("xhost.py --worker"), some working
in DIR_A (host a), some in DIR_B (host b), that open files and take locks
on command (flock, fcntl, OFD) and answer every call with its outcome.
The controller asserts each outcome.  A grant is a bounded wait for the
worker's answer; "still blocked" is a worker that gives no answer for
QUIET seconds (a negative check, as in lockdriver).  The two directories
may sit on different backing directories: then only the lock backend can
make the workers exclude each other.

Prints "ok NAME" or "FAIL NAME: why" per scenario; exit 1 if any failed.
"""
import errno
import fcntl
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time

QUIET = 0.6        # s without an answer: "still blocked"
WAIT = 20.0        # s: bound of every expected answer
F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38


# ---------------------------------------------------------------- worker

class Interrupted(Exception):
    pass


def _on_usr1(signum, frame):
    raise Interrupted()


def worker():
    signal.signal(signal.SIGUSR1, _on_usr1)
    fds = {}
    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        res = {"ok": True}
        try:
            if op == "open":
                fds[cmd["name"]] = os.open(cmd["path"], os.O_RDWR | os.O_CREAT, 0o644)
            elif op == "close":
                os.close(fds.pop(cmd["name"]))
            elif op == "flock":
                how = {"ex": fcntl.LOCK_EX, "sh": fcntl.LOCK_SH, "un": fcntl.LOCK_UN}[cmd["mode"]]
                if cmd.get("nb"):
                    how |= fcntl.LOCK_NB
                fcntl.flock(fds[cmd["name"]], how)
            elif op in ("setlk", "getlk"):
                t = {"r": fcntl.F_RDLCK, "w": fcntl.F_WRLCK, "u": fcntl.F_UNLCK}[cmd["type"]]
                ofd = cmd.get("ofd", False)
                if op == "getlk":
                    c = F_OFD_GETLK if ofd else fcntl.F_GETLK
                else:
                    c = (F_OFD_SETLKW if ofd else fcntl.F_SETLKW) if cmd.get("wait") \
                        else (F_OFD_SETLK if ofd else fcntl.F_SETLK)
                arg = struct.pack("hhqqixxxx", t, 0, cmd["start"], cmd["len"], 0)
                out = fcntl.fcntl(fds[cmd["name"]], c, arg)
                if op == "getlk":
                    lt, _, ls, ll, lp = struct.unpack("hhqqixxxx", out)
                    res["lock"] = [{fcntl.F_RDLCK: "r", fcntl.F_WRLCK: "w",
                                    fcntl.F_UNLCK: "u"}[lt], ls, ll, lp]
            elif op == "write":
                os.pwrite(fds[cmd["name"]], cmd["data"].encode(), 0)
            elif op == "xattr":
                res["value"] = os.getxattr(cmd["path"], cmd["attr"]).decode()
            elif op == "pid":
                res["pid"] = os.getpid()
        except Interrupted:
            res = {"ok": False, "err": "EINTR"}
        except OSError as e:
            res = {"ok": False, "err": errno.errorcode.get(e.errno, str(e.errno))}
        sys.stdout.write(json.dumps(res) + "\n")
        sys.stdout.flush()


# ------------------------------------------------------------ controller

class Fail(Exception):
    pass


class W:
    """one worker process; @host is 'a' or 'b'"""

    def __init__(self, host, d):
        self.host, self.dir = host, d
        self.p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)
        self.buf = ""
        self.pending = False
        self.pid = self.call(op="pid")["pid"]

    def send(self, **cmd):
        assert not self.pending
        self.p.stdin.write(json.dumps(cmd) + "\n")
        self.p.stdin.flush()
        self.pending = True

    def answer(self, timeout):
        end = time.monotonic() + timeout
        while "\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([self.p.stdout], [], [], left)
            if r:
                chunk = os.read(self.p.stdout.fileno(), 65536).decode()
                if not chunk:
                    raise Fail("worker %d (host %s) died" % (self.pid, self.host))
                self.buf += chunk
        line, self.buf = self.buf.split("\n", 1)
        self.pending = False
        return json.loads(line)

    def call(self, **cmd):
        self.send(**cmd)
        r = self.answer(WAIT)
        if r is None:
            raise Fail("host %s: %s got no answer in %ss" % (self.host, cmd, WAIT))
        return r

    def ok(self, **cmd):
        r = self.call(**cmd)
        if not r["ok"]:
            raise Fail("host %s: %s failed with %s" % (self.host, cmd, r["err"]))
        return r

    def err(self, e, **cmd):
        r = self.call(**cmd)
        if r["ok"] or r["err"] != e:
            raise Fail("host %s: %s gave %s, expected %s" % (
                self.host, cmd, "success" if r["ok"] else r["err"], e))

    def blocks(self, **cmd):
        """send @cmd and check it is still blocked QUIET seconds later"""
        self.send(**cmd)
        r = self.answer(QUIET)
        if r is not None:
            raise Fail("host %s: %s returned %s, expected it to block" % (self.host, cmd, r))

    def granted(self, what=""):
        r = self.answer(WAIT)
        if r is None:
            raise Fail("host %s: blocked request %s not granted in %ss" % (self.host, what, WAIT))
        if not r["ok"]:
            raise Fail("host %s: blocked request %s failed: %s" % (self.host, what, r["err"]))

    def still_blocked(self):
        r = self.answer(QUIET)
        if r is not None:
            raise Fail("host %s: a blocked request returned %s too early" % (self.host, r))

    def open(self, name, fname):
        self.ok(op="open", name=name, path=os.path.join(self.dir, fname))

    def kill(self):
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait()


class Ctx:
    def __init__(self, da, db, name):
        self.da, self.db, self.fname = da, db, "xh-" + name
        self.workers = []
        for d in (da, db):
            open(os.path.join(d, self.fname), "a").close()

    def w(self, host):
        w = W(host, self.da if host == "a" else self.db)
        self.workers.append(w)
        w.open("f", self.fname)
        return w

    def xattr(self, host, attr):
        d = self.da if host == "a" else self.db
        try:
            return os.getxattr(os.path.join(d, self.fname), attr).decode()
        except OSError as e:
            return "<%s>" % errno.errorcode.get(e.errno)

    def done(self):
        for w in self.workers:
            w.kill()
        for d in (self.da, self.db):
            try:
                os.unlink(os.path.join(d, self.fname))
            except OSError:
                pass


def expect(cond, msg):
    if not cond:
        raise Fail(msg)


def wait_for(pred, what, timeout=WAIT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise Fail("timed out waiting for " + what)


# --------------------------------------------------------------- scenarios

def sc_flock_ex_ex(c):
    a, b = c.w("a"), c.w("b")
    a.ok(op="flock", name="f", mode="ex")
    b.err("EAGAIN", op="flock", name="f", mode="ex", nb=True)
    b.err("EAGAIN", op="flock", name="f", mode="sh", nb=True)
    expect("host=a" in c.xattr("b", "user.dlock.locks"),
           "host b does not see a's lock: " + c.xattr("b", "user.dlock.locks"))
    b.blocks(op="flock", name="f", mode="ex")
    expect("host=b" in c.xattr("a", "user.dlock.waiters"),
           "host a does not see b's waiter: " + c.xattr("a", "user.dlock.waiters"))
    a.ok(op="flock", name="f", mode="un")
    b.granted("flock ex")
    a.err("EAGAIN", op="flock", name="f", mode="ex", nb=True)


def sc_flock_sh_sh(c):
    a, b = c.w("a"), c.w("b")
    a.ok(op="flock", name="f", mode="sh")
    b.ok(op="flock", name="f", mode="sh", nb=True)
    # a failed LOCK_NB conversion leaves no lock at all (Linux)
    b.err("EAGAIN", op="flock", name="f", mode="ex", nb=True)
    a.ok(op="flock", name="f", mode="ex", nb=True)
    b.blocks(op="flock", name="f", mode="sh")
    a.ok(op="flock", name="f", mode="sh")   # conversion drops ex first
    b.granted("flock sh after a's downgrade")


def sc_flock_upgrade_wait(c):
    a, b = c.w("a"), c.w("b")
    a.ok(op="flock", name="f", mode="sh")
    b.ok(op="flock", name="f", mode="sh")
    a.blocks(op="flock", name="f", mode="ex")
    b.ok(op="flock", name="f", mode="un")
    a.granted("flock upgrade")


def sc_flock_close_kill(c):
    a, b = c.w("a"), c.w("b")
    a.ok(op="flock", name="f", mode="ex")
    b.blocks(op="flock", name="f", mode="ex")
    a.ok(op="close", name="f")
    b.granted("flock after close on the other host")
    a.open("f", c.fname)
    a.blocks(op="flock", name="f", mode="ex")
    b.kill()
    a.granted("flock after kill -9 on the other host")


def sc_posix_overlap(c):
    a, b = c.w("a"), c.w("b")
    a.ok(op="setlk", name="f", type="w", start=0, len=10)
    b.err("EAGAIN", op="setlk", name="f", type="w", start=5, len=10)
    b.err("EAGAIN", op="setlk", name="f", type="r", start=9, len=1)
    b.ok(op="setlk", name="f", type="w", start=10, len=10)   # adjacent
    lk = b.ok(op="getlk", name="f", type="r", start=0, len=0)["lock"]
    expect(lk[:3] == ["w", 0, 10], "getlk on b reported %s, expected a's w 0+10" % lk)
    lk = a.ok(op="getlk", name="f", type="r", start=12, len=1)["lock"]
    expect(lk[:3] == ["w", 10, 10], "getlk on a reported %s, expected b's w 10+10" % lk)
    lk = a.ok(op="getlk", name="f", type="w", start=0, len=10)["lock"]
    expect(lk[0] == "u", "getlk of own range reported %s" % lk)
    b.blocks(op="setlk", name="f", type="w", start=0, len=1, wait=True)
    a.ok(op="setlk", name="f", type="u", start=0, len=0)
    b.granted("F_SETLKW after unlock on the other host")


def sc_posix_split_merge(c):
    a, b = c.w("a"), c.w("b")
    a.ok(op="setlk", name="f", type="w", start=0, len=100)
    a.ok(op="setlk", name="f", type="u", start=40, len=20)
    b.ok(op="setlk", name="f", type="w", start=40, len=20)
    b.err("EAGAIN", op="setlk", name="f", type="w", start=39, len=1)
    b.err("EAGAIN", op="setlk", name="f", type="w", start=60, len=1)
    b.ok(op="setlk", name="f", type="u", start=0, len=0)
    # merge: a's two pieces and the middle are one lock again
    a.ok(op="setlk", name="f", type="w", start=40, len=20)
    lk = b.ok(op="getlk", name="f", type="w", start=50, len=1)["lock"]
    expect(lk[:3] == ["w", 0, 100], "getlk after merge reported %s" % lk)
    a.ok(op="setlk", name="f", type="u", start=0, len=50)
    b.ok(op="setlk", name="f", type="w", start=0, len=50)
    b.err("EAGAIN", op="setlk", name="f", type="r", start=50, len=1)


def sc_posix_convert(c):
    a, b = c.w("a"), c.w("b")
    a.ok(op="setlk", name="f", type="r", start=0, len=10)
    b.ok(op="setlk", name="f", type="r", start=0, len=10)
    b.err("EAGAIN", op="setlk", name="f", type="w", start=0, len=10)
    # b still holds its read lock after the failed upgrade
    a.err("EAGAIN", op="setlk", name="f", type="w", start=5, len=1)
    a.blocks(op="setlk", name="f", type="w", start=0, len=10, wait=True)
    b.ok(op="setlk", name="f", type="u", start=0, len=0)
    a.granted("upgrade")
    b.err("EAGAIN", op="setlk", name="f", type="r", start=0, len=1)
    # downgrade in place
    a.ok(op="setlk", name="f", type="r", start=0, len=10)
    b.ok(op="setlk", name="f", type="r", start=0, len=10)


def sc_upgrade_past_waiter(c):
    """a holds read, b waits to write, a upgrades: a must not deadlock
    behind b (Linux grants it), b waits until a unlocks"""
    a, b = c.w("a"), c.w("b")
    a.ok(op="setlk", name="f", type="r", start=0, len=10)
    b.blocks(op="setlk", name="f", type="w", start=0, len=10, wait=True)
    a.ok(op="setlk", name="f", type="w", start=0, len=10, wait=True)
    b.still_blocked()
    a.ok(op="setlk", name="f", type="r", start=0, len=10)   # downgrade
    b.still_blocked()
    a.ok(op="setlk", name="f", type="u", start=0, len=0)
    b.granted("write after the upgrader unlocked")


def sc_posix_kill_close(c):
    a, b = c.w("a"), c.w("b")
    a.ok(op="setlk", name="f", type="w", start=0, len=0)
    b.blocks(op="setlk", name="f", type="w", start=0, len=0, wait=True)
    a.kill()
    b.granted("after kill -9 on the other host")
    a2 = c.w("a")
    a2.blocks(op="setlk", name="f", type="r", start=0, len=1, wait=True)
    b.ok(op="open", name="g", path=os.path.join(c.db, c.fname))
    b.ok(op="close", name="g")      # closing any fd drops POSIX locks
    a2.granted("after close of another fd on the other host")


def sc_eintr(c):
    a, b = c.w("a"), c.w("b")
    a.ok(op="flock", name="f", mode="ex")
    b.blocks(op="flock", name="f", mode="ex")
    os.kill(b.pid, signal.SIGUSR1)
    r = b.answer(WAIT)
    expect(r is not None and not r["ok"] and r["err"] == "EINTR",
           "interrupted flock gave %s" % r)
    wait_for(lambda: c.xattr("a", "user.dlock.waiters") in ("", "<ENODATA>"),
             "the interrupted waiter to leave the queue (%s)" % c.xattr("a", "user.dlock.waiters"))
    a.ok(op="setlk", name="f", type="w", start=0, len=0)
    b.blocks(op="setlk", name="f", type="w", start=0, len=0, wait=True)
    os.kill(b.pid, signal.SIGUSR1)
    r = b.answer(WAIT)
    expect(r is not None and not r["ok"] and r["err"] == "EINTR",
           "interrupted F_SETLKW gave %s" % r)
    a.ok(op="flock", name="f", mode="un")
    a.ok(op="setlk", name="f", type="u", start=0, len=0)
    b.ok(op="flock", name="f", mode="ex", nb=True)


def sc_ofd(c):
    a, b = c.w("a"), c.w("b")
    a.ok(op="setlk", name="f", type="w", start=0, len=10, ofd=True)
    b.err("EAGAIN", op="setlk", name="f", type="r", start=0, len=1, ofd=True)
    b.err("EAGAIN", op="setlk", name="f", type="r", start=0, len=1)
    b.blocks(op="setlk", name="f", type="w", start=5, len=1, ofd=True, wait=True)
    a.ok(op="close", name="f")
    b.granted("OFD lock after the other host's close")


def sc_fifo(c):
    """waiters from both hosts are served in arrival order"""
    h = c.w("a")
    ws = [c.w("b"), c.w("a"), c.w("b"), c.w("a")]
    h.ok(op="flock", name="f", mode="ex")
    for w in ws:
        w.blocks(op="flock", name="f", mode="ex")
    h.ok(op="flock", name="f", mode="un")
    for i, w in enumerate(ws):
        w.granted("waiter %d" % i)
        if i + 1 < len(ws):
            ws[i + 1].still_blocked()   # served strictly in order
        w.ok(op="flock", name="f", mode="un")


def sc_spaces(c):
    a, b = c.w("a"), c.w("b")
    a.ok(op="flock", name="f", mode="ex")
    b.ok(op="setlk", name="f", type="w", start=0, len=0)   # independent
    b.err("EAGAIN", op="flock", name="f", mode="sh", nb=True)
    a.err("EAGAIN", op="setlk", name="f", type="r", start=0, len=1)


def sc_token(c):
    a, b = c.w("a"), c.w("b")
    a.ok(op="flock", name="f", mode="ex")
    t1 = int(a.ok(op="xattr", path=os.path.join(c.da, c.fname), attr="user.dlock.token")["value"])
    a.ok(op="flock", name="f", mode="un")
    b.ok(op="flock", name="f", mode="ex")
    t2 = int(b.ok(op="xattr", path=os.path.join(c.db, c.fname), attr="user.dlock.token")["value"])
    expect(t2 > t1, "fencing token did not grow across hosts: %d then %d" % (t1, t2))


SCENARIOS = [
    ("flock_ex_ex", sc_flock_ex_ex),
    ("flock_sh_sh", sc_flock_sh_sh),
    ("flock_upgrade_wait", sc_flock_upgrade_wait),
    ("flock_close_kill", sc_flock_close_kill),
    ("posix_overlap", sc_posix_overlap),
    ("posix_split_merge", sc_posix_split_merge),
    ("posix_convert", sc_posix_convert),
    ("upgrade_past_waiter", sc_upgrade_past_waiter),
    ("posix_kill_close", sc_posix_kill_close),
    ("eintr", sc_eintr),
    ("ofd", sc_ofd),
    ("fifo", sc_fifo),
    ("spaces", sc_spaces),
    ("token", sc_token),
]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker()
        return 0
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    da, db = sys.argv[1], sys.argv[2]
    names = sys.argv[3:] or [n for n, _ in SCENARIOS]
    failed = 0
    for name in names:
        fn = dict(SCENARIOS).get(name)
        if not fn:
            print("unknown scenario " + name, file=sys.stderr)
            return 2
        c = Ctx(da, db, name)
        t0 = time.monotonic()
        try:
            fn(c)
            print("ok %s (%.1fs)" % (name, time.monotonic() - t0), flush=True)
        except Fail as e:
            print("FAIL %s: %s" % (name, e), flush=True)
            failed += 1
        finally:
            c.done()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
