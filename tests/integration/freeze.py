#!/usr/bin/env python3
"""freeze.py - the holder side of freeze.sh (issue 8: a frozen host must not
write after its lock was re-granted).

  hold FILE DIR      lock FILE (exclusive fcntl), write "a1", create
                     DIR/ready, wait for DIR/go (bounded), then write "a2"
                     at offset 0 and report the outcome in DIR/result
                     ("ok" or the errno name).
  take FILE SECONDS  lock FILE (blocking, bounded by SIGALRM), write "b1",
                     fsync, hold it SECONDS, print "granted".
"""
import errno
import fcntl
import os
import signal
import sys
import time


def wait_for(path, seconds):
    end = time.monotonic() + seconds
    while not os.path.exists(path):
        if time.monotonic() > end:
            sys.exit("timed out waiting for " + path)
        time.sleep(0.02)


def hold(f, d):
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"a1", 0)
    open(os.path.join(d, "ready"), "w").close()
    wait_for(os.path.join(d, "go"), 120)
    try:
        os.pwrite(fd, b"a2", 0)
        res = "ok"
    except OSError as e:
        res = errno.errorcode.get(e.errno, str(e.errno))
    with open(os.path.join(d, "result.tmp"), "w") as r:
        r.write(res)
    os.rename(os.path.join(d, "result.tmp"), os.path.join(d, "result"))


def take(f, secs):
    signal.alarm(60)
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.lockf(fd, fcntl.LOCK_EX)
    os.pwrite(fd, b"b1", 0)
    os.fsync(fd)
    print("granted", flush=True)
    time.sleep(float(secs))


if __name__ == "__main__":
    {"hold": hold, "take": take}[sys.argv[1]](*sys.argv[2:])
