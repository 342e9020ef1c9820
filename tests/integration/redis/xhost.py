#!/usr/bin/env python3
"""xhost.py - lock scenarios across two dlockfs "hosts".

Two mounts (host a, host b) of one backing directory, each with its own
daemon on the Redis backend: a worker process on mount A and one on mount B
must exclude each other exactly as two processes on one host do.  Workers
are forked processes driven through pipes; every answer is awaited with a
bound, and "still blocked" means no answer for BLOCKED_QUIET s (a negative
check).  Nothing is synchronised by sleeping.

usage: xhost.py core DIR_A DIR_B      the core lock cases across hosts
       xhost.py names DIR_A DIR_B     awkward file names: same key on both
                                      hosts, no two names collide
       xhost.py fairness DIR_A DIR_B  a looper on A cannot starve B
       xhost.py counter DIR_A DIR_B PROCS ITER   fcntl-locked counter
       xhost.py hold FILE             flock FILE, print "held", then on
                                      stdin "write" try a write, print the
                                      errno name (or "ok")
       xhost.py try FILE MODE TIMEOUT_S   one flock attempt: prints
                                      "ok ELAPSED" or "ERRNO ELAPSED"
Prints "ok NAME" / "FAIL NAME: why"; exit 1 when something failed.
"""
import errno
import fcntl
import multiprocessing as mp
import os
import signal
import struct
import sys
import time
import traceback

TIMEOUT = 15.0          # bound of every awaited answer
BLOCKED_QUIET = 0.4     # "still blocked": no answer for this long
F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38
FLOCK_FMT = 'hhxxxxqqixxxx'


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def ename(e):
    return errno.errorcode.get(e, str(e)) if e else 'ok'


# ---------------------------------------------------------------- workers

def worker_main(conn):
    fds = {}
    # Python restarts a syscall after a handler that returns (PEP 475):
    # raise, so the interrupted lock call fails with EINTR as in C
    def on_usr1(*_):
        raise InterruptedError(errno.EINTR, 'interrupted')
    signal.signal(signal.SIGUSR1, on_usr1)
    while True:
        try:
            cmd = conn.recv()
        except EOFError:
            os._exit(0)
        op, args = cmd[0], cmd[1:]
        res = None
        try:
            if op == 'open':
                fds[args[0]] = os.open(args[1], os.O_RDWR | os.O_CREAT, 0o644)
            elif op == 'close':
                os.close(fds.pop(args[0]))
            elif op == 'flock':
                fcntl.flock(fds[args[0]], args[1])
            elif op == 'fcntl':  # name, cmd, type, start, len
                fl = struct.pack(FLOCK_FMT, args[2], os.SEEK_SET, args[3],
                                 args[4], 0)
                r = fcntl.fcntl(fds[args[0]], args[1], fl)
                res = struct.unpack(FLOCK_FMT, r)
            elif op == 'lockf':  # name, cmd, len, start
                os.lseek(fds[args[0]], args[3], os.SEEK_SET)
                os.lockf(fds[args[0]], args[1], args[2])
            elif op == 'pid':
                res = os.getpid()
            conn.send((0, res))
        except OSError as e:
            conn.send((e.errno, None))


class Worker:
    def __init__(self, name):
        self.name = name
        self.conn, child = mp.Pipe()
        self.proc = mp.get_context('fork').Process(target=worker_main,
                                                   args=(child,), daemon=True)
        self.proc.start()
        self.pending = None

    def send(self, *cmd):
        check(self.pending is None, f'{self.name}: command pending')
        self.pending = cmd
        self.conn.send(cmd)

    def wait(self, timeout=TIMEOUT):
        if not self.conn.poll(timeout):
            raise Fail(f'{self.name}: no answer to {self.pending} in {timeout} s')
        self.pending = None
        return self.conn.recv()

    def call(self, *cmd):
        self.send(*cmd)
        return self.wait()

    def ok(self, *cmd):
        e, res = self.call(*cmd)
        check(e == 0, f'{self.name}: {cmd} failed with {ename(e)}')
        return res

    def err(self, want, *cmd):
        e, _ = self.call(*cmd)
        check(e in want, f'{self.name}: {cmd} gave {ename(e)}, expected '
              + '/'.join(ename(w) for w in want))

    def blocked(self, *cmd):
        self.send(*cmd)
        check(not self.conn.poll(BLOCKED_QUIET),
              f'{self.name}: {cmd} did not block')

    def granted(self, timeout=TIMEOUT):
        e, res = self.wait(timeout)
        check(e == 0, f'{self.name}: blocked {self.pending} ended with {ename(e)}')
        return res

    def kill(self):
        if self.proc.is_alive():
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(5)


AGAIN = (errno.EAGAIN, errno.EACCES)
EX, SH, UN, NB = fcntl.LOCK_EX, fcntl.LOCK_SH, fcntl.LOCK_UN, fcntl.LOCK_NB
W, R, U = fcntl.F_WRLCK, fcntl.F_RDLCK, fcntl.F_UNLCK
SETLK, SETLKW, GETLK = fcntl.F_SETLK, fcntl.F_SETLKW, fcntl.F_GETLK


# ---------------------------------------------------------------- scenarios

def sc_flock_exclusive(a, b, fa, fb):
    a.ok('open', 1, fa); b.ok('open', 1, fb)
    a.ok('flock', 1, EX | NB)
    b.err((errno.EWOULDBLOCK,), 'flock', 1, EX | NB)
    b.err((errno.EWOULDBLOCK,), 'flock', 1, SH | NB)
    a.ok('flock', 1, UN)
    b.ok('flock', 1, EX | NB)
    a.err((errno.EWOULDBLOCK,), 'flock', 1, SH | NB)


def sc_flock_shared(a, b, fa, fb):
    a.ok('open', 1, fa); b.ok('open', 1, fb)
    a.ok('flock', 1, SH | NB)
    b.ok('flock', 1, SH | NB)
    # Linux: a failed LOCK_NB conversion leaves no lock at all
    a.err((errno.EWOULDBLOCK,), 'flock', 1, EX | NB)
    b.ok('flock', 1, EX | NB)
    b.ok('flock', 1, SH)        # downgrade in place
    a.ok('flock', 1, SH | NB)


def sc_flock_handoff(a, b, fa, fb):
    a.ok('open', 1, fa); b.ok('open', 1, fb)
    a.ok('flock', 1, EX)
    b.blocked('flock', 1, EX)
    a.ok('flock', 1, UN)
    b.granted()
    a.err((errno.EWOULDBLOCK,), 'flock', 1, EX | NB)
    b.ok('close', 1)            # closing the last descriptor releases
    # FUSE reports the last close asynchronously (FUSE_RELEASE comes after
    # close() returned; README "Lock semantics"): a LOCK_NB at once races
    # it, so host a waits for the lock (bounded by the worker's timeout)
    a.ok('flock', 1, EX)


def sc_flock_close_handoff(a, b, fa, fb):
    a.ok('open', 1, fa); b.ok('open', 1, fb)
    a.ok('flock', 1, EX)
    b.blocked('flock', 1, SH)
    a.ok('close', 1)
    b.granted()


def sc_posix_ranges(a, b, fa, fb):
    a.ok('open', 1, fa); b.ok('open', 1, fb)
    a.ok('fcntl', 1, SETLK, W, 0, 100)
    b.ok('fcntl', 1, SETLK, W, 100, 100)
    b.err(AGAIN, 'fcntl', 1, SETLK, W, 50, 10)
    b.err(AGAIN, 'fcntl', 1, SETLK, R, 99, 1)
    # F_GETLK from the other host reports the remote lock
    r = b.ok('fcntl', 1, GETLK, W, 50, 10)
    check(r[0] == W and r[2] == 0 and r[3] == 100,
          f'F_GETLK across hosts gave {r}, expected F_WRLCK 0+100')
    r = a.ok('fcntl', 1, GETLK, W, 150, 10)
    check(r[0] == W and r[2] == 100 and r[3] == 100,
          f'F_GETLK across hosts gave {r}, expected F_WRLCK 100+100')
    # split: unlock the middle leaves two pieces
    a.ok('fcntl', 1, SETLK, U, 40, 20)
    b.ok('fcntl', 1, SETLK, W, 40, 20)
    b.err(AGAIN, 'fcntl', 1, SETLK, W, 39, 1)
    b.err(AGAIN, 'fcntl', 1, SETLK, W, 60, 1)
    r = b.ok('fcntl', 1, GETLK, W, 0, 0)
    check(r[0] == W and r[2] == 0 and r[3] == 40, f'after split: {r}')
    # merge: a's two pieces and a new lock in between become one
    b.ok('fcntl', 1, SETLK, U, 0, 0)
    a.ok('fcntl', 1, SETLK, W, 40, 20)
    r = b.ok('fcntl', 1, GETLK, R, 0, 0)
    check(r[0] == W and r[2] == 0 and r[3] == 100, f'after merge: {r}')


def sc_posix_convert(a, b, fa, fb):
    a.ok('open', 1, fa); b.ok('open', 1, fb)
    a.ok('fcntl', 1, SETLK, W, 0, 0)
    b.err(AGAIN, 'fcntl', 1, SETLK, R, 10, 10)
    b.blocked('fcntl', 1, SETLKW, R, 10, 10)
    a.ok('fcntl', 1, SETLK, R, 0, 0)   # downgrade: the reader gets in
    b.granted()
    a.err(AGAIN, 'fcntl', 1, SETLK, W, 0, 0)
    b.ok('fcntl', 1, SETLK, U, 0, 0)
    a.ok('fcntl', 1, SETLK, W, 0, 0)   # upgrade in place


def sc_posix_handoff(a, b, fa, fb):
    a.ok('open', 1, fa); b.ok('open', 1, fb); a.ok('open', 2, fa)
    a.ok('fcntl', 1, SETLK, W, 0, 0)
    b.blocked('fcntl', 1, SETLKW, W, 0, 10)
    # closing any descriptor of the file drops the process's locks
    a.ok('close', 2)
    b.granted()
    a.err(AGAIN, 'fcntl', 1, SETLK, W, 5, 1)
    a.ok('fcntl', 1, SETLK, W, 10, 10)


def sc_posix_kill(a, b, fa, fb):
    a.ok('open', 1, fa); b.ok('open', 1, fb)
    a.ok('fcntl', 1, SETLK, W, 0, 0)
    b.blocked('fcntl', 1, SETLKW, W, 0, 0)
    a.kill()                            # the kernel closes its files
    b.granted()


def sc_posix_eintr(a, b, fa, fb):
    c = Worker('c')
    try:
        a.ok('open', 1, fa); b.ok('open', 1, fb); c.ok('open', 1, fa)
        a.ok('fcntl', 1, SETLK, W, 0, 0)
        b.blocked('fcntl', 1, SETLKW, W, 0, 0)
        os.kill(b.proc.pid, signal.SIGUSR1)
        e, _ = b.wait()
        check(e == errno.EINTR, f'interrupted F_SETLKW gave {ename(e)}')
        # nothing left queued: once a lets go, a newcomer gets it at once
        a.ok('fcntl', 1, SETLK, U, 0, 0)
        c.ok('fcntl', 1, SETLK, W, 0, 0)
        b.err(AGAIN, 'fcntl', 1, SETLK, W, 0, 0)
    finally:
        c.kill()


def sc_flock_fcntl_independent(a, b, fa, fb):
    a.ok('open', 1, fa); b.ok('open', 1, fb)
    a.ok('flock', 1, EX | NB)
    b.ok('fcntl', 1, SETLK, W, 0, 0)
    b.err((errno.EWOULDBLOCK,), 'flock', 1, EX | NB)
    a.err(AGAIN, 'fcntl', 1, SETLK, W, 0, 0)


def sc_ofd(a, b, fa, fb):
    a.ok('open', 1, fa); b.ok('open', 1, fb); b.ok('open', 2, fb)
    a.ok('fcntl', 1, F_OFD_SETLK, W, 0, 10)
    b.err(AGAIN, 'fcntl', 1, F_OFD_SETLK, R, 5, 1)
    r = b.ok('fcntl', 1, F_OFD_GETLK, W, 0, 0)
    check(r[0] == W and r[2] == 0 and r[3] == 10 and r[4] == -1,
          f'F_OFD_GETLK across hosts: {r}')
    b.ok('fcntl', 1, F_OFD_SETLK, W, 10, 10)
    # two descriptions of one process on host b conflict with each other
    b.err(AGAIN, 'fcntl', 2, F_OFD_SETLK, W, 15, 1)
    b.blocked('fcntl', 2, F_OFD_SETLKW, W, 0, 1)
    a.ok('close', 1)
    b.granted()


def sc_lockf(a, b, fa, fb):
    a.ok('open', 1, fa); b.ok('open', 1, fb)
    a.ok('lockf', 1, fcntl.F_TLOCK if hasattr(fcntl, 'F_TLOCK') else 2, 10, 0)
    b.err(AGAIN, 'lockf', 1, 2, 10, 5)          # F_TLOCK
    b.ok('lockf', 1, 2, 10, 10)
    b.blocked('lockf', 1, 1, 1, 0)              # F_LOCK
    a.ok('lockf', 1, 0, 10, 0)                  # F_ULOCK
    b.granted()


def sc_many_waiters(a, b, fa, fb):
    """N blocked flock waiters spread over both hosts all get through."""
    ws = [Worker(f'w{i}') for i in range(8)]
    try:
        a.ok('open', 1, fa)
        a.ok('flock', 1, EX)
        for i, w in enumerate(ws):
            w.ok('open', 1, fa if i % 2 else fb)
            w.blocked('flock', 1, EX)
        a.ok('flock', 1, UN)
        left = list(ws)
        deadline = time.monotonic() + TIMEOUT
        while left:
            ready = [w for w in left if w.conn.poll(0.05)]
            check(time.monotonic() < deadline, f'{len(left)} waiters stuck')
            check(len(ready) <= 1, 'two waiters hold an exclusive flock')
            for w in ready:
                w.granted()
                w.ok('flock', 1, UN)
                left.remove(w)
    finally:
        for w in ws:
            w.kill()


CORE = [sc_flock_exclusive, sc_flock_shared, sc_flock_handoff,
        sc_flock_close_handoff, sc_posix_ranges, sc_posix_convert,
        sc_posix_handoff, sc_posix_kill, sc_posix_eintr,
        sc_flock_fcntl_independent, sc_ofd, sc_lockf, sc_many_waiters]


def run_core(da, db):
    failed = 0
    for sc in CORE:
        name = sc.__name__[3:]
        fname = f'xh-{name}-{os.getpid()}'
        a, b = Worker('a'), Worker('b')
        try:
            sc(a, b, os.path.join(da, fname), os.path.join(db, fname))
            print(f'ok {name}', flush=True)
        except Fail as e:
            print(f'FAIL {name}: {e}', flush=True)
            failed += 1
        except Exception:
            print(f'FAIL {name}: {traceback.format_exc()}', flush=True)
            failed += 1
        finally:
            a.kill(); b.kill()
            try:
                os.unlink(os.path.join(da, fname))
            except OSError:
                pass
    return failed


def run_names(da, db):
    names = ['with space', 'new\nline', '100%', 'a:b', 'a', 'b', 'a%3Ab',
             '{x}', 'x', '{', '}', 'g:a:b', 'w', ':', '%', '\\', 'tab\there',
             'x' * 255, 'y' * 254 + ':', "quote'\"", 'utf8-é€']
    wa, wb = Worker('a'), Worker('b')
    try:
        for i, n in enumerate(names):
            wa.ok('open', i, os.path.join(da, n))
            wb.ok('open', i, os.path.join(db, n))
        # disjoint halves held at once by the two hosts: no collision
        for i in range(len(names)):
            (wa if i % 2 == 0 else wb).ok('flock', i, EX | NB)
        # and every name is the same lock on both hosts
        for i, n in enumerate(names):
            other = wb if i % 2 == 0 else wa
            e, _ = other.call('flock', i, EX | NB)
            check(e == errno.EWOULDBLOCK,
                  f'{n!r}: the other host got it too ({ename(e)})')
        print('ok names', flush=True)
        return 0
    except Fail as e:
        print(f'FAIL names: {e}', flush=True)
        return 1
    finally:
        wa.kill(); wb.kill()
        for n in names:
            try:
                os.unlink(os.path.join(da, n))
            except OSError:
                pass


def looper(path, count_path, stop_path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    cfd = os.open(count_path, os.O_RDWR | os.O_CREAT, 0o644)
    n = 0
    while not os.path.exists(stop_path):
        fcntl.flock(fd, EX)
        n += 1
        os.pwrite(cfd, b'%12d' % n, 0)
        fcntl.flock(fd, UN)
    os._exit(0)


def run_fairness(da, db):
    """A loops lock/unlock on host a; a waiter on host b must get the lock
    within a few of the looper's cycles."""
    tmp = os.environ.get('TMPDIR', '/tmp')
    cpath = os.path.join(tmp, f'xh-count-{os.getpid()}')
    spath = cpath + '.stop'
    f = f'xh-fair-{os.getpid()}'
    p = mp.get_context('fork').Process(
        target=looper, args=(os.path.join(da, f), cpath, spath), daemon=True)
    p.start()
    worst = 0
    try:
        def count():
            try:
                with open(cpath) as c:
                    return int(c.read() or 0)
            except (OSError, ValueError):
                return 0
        deadline = time.monotonic() + TIMEOUT
        while count() < 20:
            check(time.monotonic() < deadline, 'looper does not loop')
            time.sleep(0.01)
        fd = os.open(os.path.join(db, f), os.O_RDWR)
        # once first, not counted: with cache=on, host a decides the
        # file's locks itself until this request asks for it back, and
        # its looper runs at local speed until the request reaches it
        t0 = time.monotonic()
        fcntl.flock(fd, EX)
        fcntl.flock(fd, UN)
        check(time.monotonic() - t0 < TIMEOUT, 'waiter starved')
        for _ in range(5):
            before = count()
            t0 = time.monotonic()
            fcntl.flock(fd, EX)
            got = count()
            fcntl.flock(fd, UN)
            worst = max(worst, got - before)
            check(time.monotonic() - t0 < TIMEOUT, 'waiter starved')
            time.sleep(0.05)
        os.close(fd)
        # the looper held and released it at each cycle it made meanwhile
        check(worst <= 5, f'the waiter got the lock only after {worst} '
              'looper cycles')
        print(f'ok fairness (worst: {worst} looper cycles)', flush=True)
        return 0
    except Fail as e:
        print(f'FAIL fairness: {e}', flush=True)
        return 1
    finally:
        open(spath, 'w').close()
        p.join(10)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
        for x in (cpath, spath, os.path.join(da, f)):
            try:
                os.unlink(x)
            except OSError:
                pass


def counter_proc(path, lockpath, iters):
    fd = os.open(lockpath, os.O_RDWR | os.O_CREAT, 0o644)
    for _ in range(iters):
        fcntl.lockf(fd, fcntl.LOCK_EX)
        with open(path, 'r+') as c:
            n = int(c.read() or 0)
            c.seek(0)
            c.write('%d\n' % (n + 1))
            c.truncate()
        fcntl.lockf(fd, fcntl.LOCK_UN)
    os._exit(0)


def run_counter(da, db, procs, iters):
    with open(os.path.join(da, 'fcounter'), 'w') as c:
        c.write('0\n')
    ps = []
    for i in range(2 * procs):
        d = da if i % 2 == 0 else db
        p = mp.get_context('fork').Process(
            target=counter_proc, args=(os.path.join(d, 'fcounter'),
                                       os.path.join(d, 'flock'), iters))
        p.start()
        ps.append(p)
    deadline = time.monotonic() + 150
    for p in ps:
        p.join(max(0.1, deadline - time.monotonic()))
    bad = [p for p in ps if p.exitcode != 0]
    for p in ps:
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)
    if bad:
        print(f'FAIL counter: {len(bad)} processes failed or hung', flush=True)
        return 1
    with open(os.path.join(db, 'fcounter')) as c:
        got = int(c.read())
    want = 2 * procs * iters
    if got != want:
        print(f'FAIL counter: {got}, expected {want}', flush=True)
        return 1
    print(f'ok counter ({got})', flush=True)
    return 0


def run_hold(path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, EX)
    print('held', flush=True)
    for line in sys.stdin:
        if line.strip() == 'write':
            try:
                os.pwrite(fd, b'x', 0)
                os.fsync(fd)
                print('ok', flush=True)
            except OSError as e:
                print(ename(e.errno), flush=True)
    return 0


def run_try(path, mode, timeout):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    how = EX if mode == 'wait' else EX | NB
    signal.signal(signal.SIGALRM, lambda *a: None)
    signal.siginterrupt(signal.SIGALRM, True)
    signal.setitimer(signal.ITIMER_REAL, float(timeout))
    t0 = time.monotonic()
    try:
        fcntl.flock(fd, how)
        res = 'ok'
    except OSError as e:
        res = ename(e.errno)
    signal.setitimer(signal.ITIMER_REAL, 0)
    print(f'{res} {time.monotonic() - t0:.3f}', flush=True)
    return 0


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    cmd = argv[1]
    if cmd == 'core':
        return 1 if run_core(argv[2], argv[3]) else 0
    if cmd == 'names':
        return run_names(argv[2], argv[3])
    if cmd == 'fairness':
        return run_fairness(argv[2], argv[3])
    if cmd == 'counter':
        return run_counter(argv[2], argv[3], int(argv[4]), int(argv[5]))
    if cmd == 'hold':
        return run_hold(argv[2])
    if cmd == 'try':
        return run_try(argv[2], argv[3], argv[4])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == '__main__':
    sys.exit(main(sys.argv))
