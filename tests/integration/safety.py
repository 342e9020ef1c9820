#!/usr/bin/env python3
"""safety.py - no-fault safety checks of issue 8, driven through real mounts.

Each subcommand prints what it measured and ends with one line "OK ..." or
"FAIL ..." (exit status 0 or 1).  Every wait is bounded.

  nofault SECONDS FILE...      one process per FILE (each a path of the same
                               file through another host's mount) increments
                               a counter under an exclusive fcntl lock for
                               SECONDS: no EDEADLK, no lost increment.
  cycle TRIALS FILE_A FILE_B   two hosts close a two-owner cycle at the same
                               instant, TRIALS times: exactly one EDEADLK per
                               trial, and the other request is then granted.
  mixed FILE                   threads of one process mix OFD and classic
                               POSIX locks on one file (ext4's answer is
                               the reference): no EDEADLK, as on Linux.
  many SECONDS NPROC FILE...   NPROC processes spread over the mounts lock
                               byte ranges of one file (shared and exclusive),
                               read and write them: all finish, every read
                               sees a consistent slot, no update is lost.
"""
import errno
import fcntl
import os
import random
import signal
import struct
import sys
import threading
import time
import multiprocessing as mp

F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38


def ofd_lock(fd, ltype, start, length, wait=True):
    """an OFD lock through fcntl(F_OFD_SETLK[W])"""
    arg = struct.pack("hhxxxxqqixxxx", ltype, os.SEEK_SET, start, length, 0)
    fcntl.fcntl(fd, F_OFD_SETLKW if wait else F_OFD_SETLK, arg)


def ename(e):
    """the errno name of OSError @e (EDEADLK, not its alias EDEADLOCK)"""
    if e.errno == errno.EDEADLK:
        return "EDEADLK"
    return errno.errorcode.get(e.errno, str(e.errno))


def fail(msg):
    print("FAIL " + msg, flush=True)
    sys.exit(1)


# ---- nofault ---------------------------------------------------------------

def nofault_worker(path, seconds, q):
    fd = os.open(path, os.O_RDWR)
    end = time.monotonic() + seconds
    n = dead = other = 0
    while time.monotonic() < end:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
        except OSError as e:
            if e.errno == errno.EDEADLK:
                dead += 1
            else:
                other += 1
            continue
        v = int(os.pread(fd, 32, 0).split(b"\0")[0] or b"0")
        os.pwrite(fd, b"%-31d\0" % (v + 1), 0)
        os.fsync(fd)
        n += 1
        fcntl.lockf(fd, fcntl.LOCK_UN)
    os.close(fd)
    q.put((n, dead, other))


def cmd_nofault(seconds, paths):
    seconds = float(seconds)
    with open(paths[0], "wb") as f:
        f.write(b"%-31d\0" % 0)
    q = mp.Queue()
    procs = [mp.Process(target=nofault_worker, args=(p, seconds, q))
             for p in paths]
    for p in procs:
        p.start()
    res = [q.get(timeout=seconds + 120) for _ in procs]
    for p in procs:
        p.join(30)
    total = sum(r[0] for r in res)
    dead = sum(r[1] for r in res)
    other = sum(r[2] for r in res)
    with open(paths[0], "rb") as f:
        final = int(f.read(32).split(b"\0")[0])
    print("nofault: %d hosts, %.0f s: %d increments (%.0f/s), EDEADLK %d, "
          "other errors %d, counter %d" % (len(paths), seconds, total,
                                           total / seconds, dead, other, final))
    if dead or other:
        fail("nofault: %d EDEADLK, %d other errors without any fault" %
             (dead, other))
    if final != total:
        fail("nofault: counter %d != %d increments" % (final, total))
    print("OK nofault")


# ---- cycle -----------------------------------------------------------------

def cycle_side(path, mine, theirs, at, q):
    """hold byte @mine, then at time @at ask for byte @theirs"""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, mine)
    q.put(("ready", None))
    delay = at.value - time.time()
    while delay <= 0 or delay > 30:  # the parent sets the instant
        time.sleep(0.01)
        delay = at.value - time.time()
    time.sleep(delay)
    signal.alarm(30)  # a lost wakeup must not hang the test
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX, 1, theirs)
        res = "granted"
    except OSError as e:
        res = ename(e)
    q.put(("done", res))
    os.close(fd)  # drops both bytes: the other side can go on


def cmd_cycle(trials, path_a, path_b):
    trials = int(trials)
    counts = {}
    for t in range(trials):
        name_a = "%s.%d" % (path_a, t)
        name_b = "%s.%d" % (path_b, t)
        for n in (name_a, name_b):
            open(n, "a").close()
        at = mp.Value("d", 0.0)
        qa, qb = mp.Queue(), mp.Queue()
        # daemons: a trial that fails must not leave the run waiting
        # for a side stuck before its instant
        pa = mp.Process(target=cycle_side, args=(name_a, 0, 1, at, qa),
                        daemon=True)
        pb = mp.Process(target=cycle_side, args=(name_b, 1, 0, at, qb),
                        daemon=True)
        pa.start()
        pb.start()
        qa.get(timeout=20)
        qb.get(timeout=20)
        at.value = time.time() + 0.2
        ra = qa.get(timeout=60)[1]
        rb = qb.get(timeout=60)[1]
        pa.join(20)
        pb.join(20)
        key = "/".join(sorted((ra, rb)))
        counts[key] = counts.get(key, 0) + 1
        if sorted((ra, rb)) != ["EDEADLK", "granted"]:
            fail("cycle trial %d: host a got %s, host b got %s (want exactly "
                 "one EDEADLK and one grant)" % (t, ra, rb))
    print("cycle: %d trials: %s" % (trials, counts))
    print("OK cycle")


# ---- mixed -----------------------------------------------------------------

def mixed_child(path, q):
    """A thread holding a classic lock waits for an OFD lock of the same
    process, and the OFD side waits for the classic one: a deadlock that
    Linux does not detect (OFD locks are left out of it), so both wait.
    Each outcome is reported as it happens; the parent kills us."""
    fd_c = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fd_o = os.open(path, os.O_RDWR)
    fcntl.lockf(fd_c, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0)  # classic: 0
    ofd_lock(fd_o, fcntl.F_WRLCK, 1, 1, wait=False)  # OFD: byte 1

    def classic():
        try:
            fcntl.lockf(fd_c, fcntl.LOCK_EX, 1, 1)
            q.put(("classic", "granted"))
        except OSError as e:
            q.put(("classic", ename(e)))

    def ofd():
        try:
            ofd_lock(fd_o, fcntl.F_WRLCK, 0, 1)
            q.put(("ofd", "granted"))
        except OSError as e:
            q.put(("ofd", ename(e)))

    tc = threading.Thread(target=classic, daemon=True)
    to = threading.Thread(target=ofd, daemon=True)
    tc.start()
    time.sleep(0.3)  # order the requests: the classic one waits first
    to.start()
    q.put(("started", ""))
    time.sleep(60)


def mixed_run(path, seconds=3.0):
    q = mp.Queue()
    c = mp.Process(target=mixed_child, args=(path, q))
    c.start()
    res = {}
    end = time.monotonic() + seconds + 5
    while time.monotonic() < end:
        try:
            k, v = q.get(timeout=0.2)
        except Exception:
            continue
        if k == "started":
            end = time.monotonic() + seconds
        else:
            res[k] = v
    c.kill()
    c.join(20)
    return res


def cmd_mixed(path, reference=None):
    out = {}
    for name, p in (("mount", path), ("ext4", reference)):
        if p:
            out[name] = mixed_run(p)
    print("mixed (what ended within 3 s; {} = both still wait): %s" % out)
    for name, r in out.items():
        if "EDEADLK" in r.values():
            fail("mixed OFD/classic waits got EDEADLK on %s: %s" % (name, r))
    if reference and out["mount"] != out["ext4"]:
        fail("mixed: mount %s differs from ext4 %s" % (out["mount"],
                                                       out["ext4"]))
    print("OK mixed")


# ---- many ------------------------------------------------------------------

SLOT = int(os.environ.get("MANY_SLOT", "4096"))
NSLOT = 64


def slot_pack(seq, who):
    body = b"%d %s" % (seq, who.encode())
    body = body[:SLOT - 9]
    data = body.ljust(SLOT - 9, b".")
    return b"%08x" % (sum(data) & 0xffffffff) + b"|" + data


def slot_parse(b):
    """(seq, who) of a slot, or None when it is torn or garbage"""
    if len(b) != SLOT or b[8:9] != b"|":
        return None
    data = b[9:]
    try:
        if int(b[:8], 16) != sum(data) & 0xffffffff:
            return None
        seq, who = data.rstrip(b".").split(b" ", 1)
        return int(seq), who.decode()
    except ValueError:
        return None


def many_worker(path, seconds, wid, seed, q):
    rnd = random.Random(seed)
    fd = os.open(path, os.O_RDWR)
    end = time.monotonic() + seconds
    writes = [0] * NSLOT
    reads = bad = errs = 0
    while time.monotonic() < end:
        a = rnd.randrange(NSLOT)
        b = min(NSLOT, a + rnd.randint(1, 4))
        excl = rnd.random() < 0.5
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX if excl else fcntl.LOCK_SH,
                        (b - a) * SLOT, a * SLOT)
        except OSError:
            errs += 1
            continue
        buf = os.pread(fd, (b - a) * SLOT, a * SLOT)
        slots = [slot_parse(buf[i * SLOT:(i + 1) * SLOT])
                 for i in range(b - a)]
        if None in slots:
            bad += 1
        elif excl:
            out = b"".join(slot_pack(s[0] + 1, "w%d" % wid) for s in slots)
            os.pwrite(fd, out, a * SLOT)
            if os.pread(fd, len(out), a * SLOT) != out:
                bad += 1
            for i in range(a, b):
                writes[i] += 1
        else:
            reads += 1
        fcntl.lockf(fd, fcntl.LOCK_UN, (b - a) * SLOT, a * SLOT)
    os.close(fd)
    q.put((writes, reads, bad, errs))


def cmd_many(seconds, nproc, paths):
    seconds, nproc = float(seconds), int(nproc)
    with open(paths[0], "wb") as f:
        f.write(b"".join(slot_pack(0, "init") for _ in range(NSLOT)))
    q = mp.Queue()
    procs = []
    for i in range(nproc):
        p = mp.Process(target=many_worker,
                       args=(paths[i % len(paths)], seconds, i, 1000 + i, q))
        p.start()
        procs.append(p)
    res = []
    limit = time.monotonic() + seconds + 120
    while len(res) < nproc:
        left = limit - time.monotonic()
        if left <= 0:
            stuck = [p.pid for p in procs if p.is_alive()]
            fail("many: %d of %d processes still running %.0f s after the "
                 "end (stuck: %s)" % (nproc - len(res), nproc, seconds + 120,
                                      stuck[:10]))
        try:
            res.append(q.get(timeout=left))
        except Exception:
            continue
    for p in procs:
        p.join(10)
    writes = [sum(r[0][i] for r in res) for i in range(NSLOT)]
    reads = sum(r[1] for r in res)
    bad = sum(r[2] for r in res)
    errs = sum(r[3] for r in res)
    with open(paths[0], "rb") as f:
        data = f.read()
    final = [slot_parse(data[i * SLOT:(i + 1) * SLOT]) for i in range(NSLOT)]
    lost = sum(1 for i in range(NSLOT)
               if final[i] is None or final[i][0] != writes[i])
    print("many: %d processes, %.0f s: %d exclusive updates, %d shared "
          "reads, %d inconsistent, %d lock errors, %d slots with lost "
          "updates" % (nproc, seconds, sum(writes), reads, bad, errs, lost))
    if bad or lost or errs:
        fail("many: %d inconsistent reads, %d slots lost updates, %d lock "
             "errors" % (bad, lost, errs))
    print("OK many")


def main():
    if len(sys.argv) < 2:
        fail("usage: see the module docstring")
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "nofault":
        cmd_nofault(args[0], args[1:])
    elif cmd == "cycle":
        cmd_cycle(*args)
    elif cmd == "mixed":
        cmd_mixed(*args)
    elif cmd == "many":
        cmd_many(args[0], args[1], args[2:])
    else:
        fail("unknown command " + cmd)


if __name__ == "__main__":
    main()
