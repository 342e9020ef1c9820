#!/usr/bin/env python3
"""worker.py - one worker of the fault suite (tests/faults/faults_lib.sh).

    worker.py KIND FILE LOG CTL NAME HOST [--nolock]

KIND is the workload, FILE its shared file in a dlockfs mount, LOG the
worker's record (outside the mount, one line per event, written with one
write(2) each so that a kill -9 loses nothing already recorded), CTL the
phase's control directory, NAME the worker's name (unique in the phase),
HOST its host letter.

  mutex    flock(LOCK_EX); write "NAME SEQ" at offset 0; pause 5 ms; drop
           the cached pages and read it back; write a commit marker at
           offset 64; unlock.  "A SEQ T1 T2 WAIT" when every write of the
           critical section succeeded and the read-back matched; "V ..."
           when they succeeded but the read-back did not (someone wrote
           inside our critical section).  T1 = lock granted, T2 = commit
           marker written (CLOCK_MONOTONIC, shared by all processes).
  counter  lockf(F_LOCK); read the integer; "W V+1"; write V+1; fsync;
           "A V+1 WAIT"; unlock.
  sqlite   BEGIN IMMEDIATE; INSERT (NAME, SEQ); "C SEQ"; COMMIT;
           "A SEQ WAIT" once COMMIT returned.  Rollback journal
           (journal_mode=DELETE): SQLite's own fcntl locks.

Every error is recorded ("R ERRNAME WAIT_MS"), the file is closed and
reopened (a descriptor that saw EIO stays fenced until closed), and the
worker goes on.  A lock request is bounded by a 20 s alarm ("R TIMEOUT";
for SQLite, its busy timeout).

The fault test stops a worker inside its critical section through a gate:
while CTL/gate.HOST exists, a worker of HOST that holds its lock creates
CTL/holding.HOST.KIND and waits (at most 60 s) for the gate to go.  The
gate sits where an unfenced write does the most harm: mutex before its
write, counter between its read and its write, sqlite before COMMIT.
The worker ends at the top of its loop once CTL/stop exists.

--nolock: the same without any lock (the negative control); for sqlite
the "unix-none" VFS (no file locks at all).
"""
import errno
import fcntl
import os
import signal
import sqlite3
import sys
import time

PAUSE = 0.005  # s inside the mutex critical section
THINK = 0.003  # s between cycles, outside the lock
LOCK_BOUND = 20  # s: a lock request longer than this is recorded TIMEOUT


class Timeout(Exception):
    pass


def on_alarm(_sig, _frame):
    raise Timeout()


def ms(s):
    return int(s * 1000)


class Worker:
    def __init__(self, argv):
        (self.kind, self.file, logpath, self.ctl, self.name,
         self.host) = argv[:6]
        self.lock = "--nolock" not in argv[6:]
        self.log = os.open(logpath, os.O_WRONLY | os.O_APPEND | os.O_CREAT,
                           0o644)
        self.gate_path = os.path.join(self.ctl, "gate." + self.host)
        self.stop_path = os.path.join(self.ctl, "stop")
        signal.signal(signal.SIGALRM, on_alarm)
        self.rec("S", os.getpid())

    def rec(self, *fields):
        """one line, the monotonic time last ("@T", for post-mortems)"""
        line = " ".join(str(f) for f in fields)
        os.write(self.log, ("%s @%.3f\n" % (line, time.monotonic())).encode())

    def stopped(self):
        return os.path.exists(self.stop_path)

    def gate(self):
        if not os.path.exists(self.gate_path):
            return
        holding = os.path.join(self.ctl,
                               "holding.%s.%s" % (self.host, self.kind))
        with open(holding, "w") as f:
            f.write("%d\n" % os.getpid())
        self.rec("G", time.monotonic())
        end = time.monotonic() + 60
        while os.path.exists(self.gate_path) and time.monotonic() < end:
            time.sleep(0.002)

    def bounded(self, fn, *args):
        """a lock call under the alarm"""
        signal.setitimer(signal.ITIMER_REAL, LOCK_BOUND)
        try:
            return fn(*args)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def refused(self, name, waited):
        self.rec("R", name, waited)
        time.sleep(0.05)

    def think(self):
        time.sleep(THINK)

    # ---- mutex: flock, write, pause, read back
    def run_mutex(self):
        fd, seq = None, 0
        while not self.stopped():
            t0 = t1 = None
            try:
                if fd is None:
                    fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
                t0 = time.monotonic()
                if self.lock:
                    self.bounded(fcntl.flock, fd, fcntl.LOCK_EX)
                t1 = time.monotonic()
                seq += 1
                self.gate()
                msg = ("%s %d" % (self.name, seq)).ljust(63).encode() + b"\n"
                os.pwrite(fd, msg, 0)
                time.sleep(PAUSE)
                # read the backing file, not our own cached page
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                back = os.pread(fd, len(msg), 0)
                os.pwrite(fd, ("done %s %d" % (self.name, seq))
                          .ljust(63).encode() + b"\n", 64)
                t2 = time.monotonic()
                if back == msg:
                    self.rec("A", seq, t1, t2, ms(t1 - t0))
                else:
                    self.rec("V", seq, t1, t2, ms(t1 - t0),
                             "/".join(back[:40].decode(errors="replace")
                                      .split()[:2]))
                if self.lock:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                self.think()
            except (OSError, Timeout) as e:
                fd = self.fail(fd, e, t0, t1)

    def fail(self, fd, e, t0, t1):
        name = ("TIMEOUT" if isinstance(e, Timeout)
                else errno.errorcode.get(e.errno, str(e.errno)))
        waited = ms(time.monotonic() - t0) if t0 is not None and t1 is None \
            else 0
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass
        self.refused(name, waited)
        return None

    # ---- counter: lockf, read, +1, write, fsync
    def run_counter(self):
        fd = None
        while not self.stopped():
            t0 = t1 = None
            try:
                if fd is None:
                    fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
                t0 = time.monotonic()
                if self.lock:
                    self.bounded(fcntl.lockf, fd, fcntl.LOCK_EX)
                t1 = time.monotonic()
                data = os.pread(fd, 64, 0)
                try:
                    v = int(data.strip() or b"0")
                except ValueError:
                    self.rec("V", "garbage", data[:20].hex())
                    v = 0
                self.gate()
                self.rec("W", v + 1)
                os.pwrite(fd, b"%012d\n" % (v + 1), 0)
                os.fsync(fd)
                self.rec("A", v + 1, ms(t1 - t0))
                if self.lock:
                    fcntl.lockf(fd, fcntl.LOCK_UN)
                self.think()
            except (OSError, Timeout) as e:
                fd = self.fail(fd, e, t0, t1)

    # ---- sqlite: one row per transaction
    def run_sqlite(self):
        con, seq = None, 0
        while not self.stopped():
            t0 = t1 = None
            try:
                if con is None:
                    uri = "file:%s%s" % (self.file, "" if self.lock
                                         else "?vfs=unix-none")
                    con = sqlite3.connect(uri, uri=True, timeout=LOCK_BOUND,
                                          isolation_level=None)
                t0 = time.monotonic()
                con.execute("BEGIN IMMEDIATE")
                t1 = time.monotonic()
                seq += 1
                con.execute("INSERT INTO t VALUES (?, ?)", (self.name, seq))
                self.gate()
                self.rec("C", seq)
                con.execute("COMMIT")
                self.rec("A", seq, ms(t1 - t0))
                self.think()
            except sqlite3.Error as e:
                name = getattr(e, "sqlite_errorname", None) or type(e).__name__
                if "CORRUPT" in name or "malformed" in str(e):
                    self.rec("V", "corrupt", name)
                waited = ms(time.monotonic() - t0) \
                    if t0 is not None and t1 is None else 0
                if con is not None:
                    try:
                        con.close()
                    except sqlite3.Error:
                        pass
                con = None
                self.refused(name, waited)
        if con is not None:
            con.close()


def main():
    if len(sys.argv) < 7:
        sys.exit(__doc__)
    w = Worker(sys.argv[1:])
    getattr(w, "run_" + w.kind)()
    w.rec("E")


if __name__ == "__main__":
    main()
