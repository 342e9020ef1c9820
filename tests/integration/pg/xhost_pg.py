#!/usr/bin/env python3
"""xhost_pg.py - the Redis suite's cross-host driver (../redis/xhost.py),
for the PostgreSQL backend: the same commands and scenarios, with one step
adapted.

flock_handoff ends with "host b closes its descriptor, host a takes the
lock with LOCK_NB at once".  FUSE reports the last close of a description
asynchronously (FUSE_RELEASE is sent after close() has returned, README
"Lock semantics"), and on this backend the release is a committed
transaction, a millisecond or more away, so that LOCK_NB races the
release; here host a waits for the lock instead (bounded), which checks
the same thing - closing releases the flock - without the race.
"""
import errno
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', 'redis'))
import xhost  # noqa: E402
from xhost import EX, NB, UN  # noqa: E402


def sc_flock_handoff(a, b, fa, fb):
    a.ok('open', 1, fa); b.ok('open', 1, fb)
    a.ok('flock', 1, EX)
    b.blocked('flock', 1, EX)
    a.ok('flock', 1, UN)
    b.granted()
    a.err((errno.EWOULDBLOCK,), 'flock', 1, EX | NB)
    b.ok('close', 1)            # closing the last descriptor releases
    a.ok('flock', 1, EX)        # once FUSE_RELEASE is through


xhost.CORE = [sc_flock_handoff if f.__name__ == 'sc_flock_handoff' else f
              for f in xhost.CORE]

if __name__ == '__main__':
    sys.exit(xhost.main(sys.argv))
