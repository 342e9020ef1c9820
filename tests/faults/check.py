#!/usr/bin/env python3
"""check.py - the verdict of one phase of the fault suite.

    check.py LOGDIR FAULTED_HOST MUTEX_FILE COUNTER_FILE SQLITE_DB [KIND...]

LOGDIR holds the worker records HOST-KIND-GEN.log written by worker.py;
FAULTED_HOST is the host the fault hit ("-" for none); the files are the
workloads' shared files, read after every worker has stopped.  Prints one
tab-separated line per workload (only KINDs given, default all three):

    KIND ACKS VIOLATIONS LOST REFUSALS WAIT_OTHERS_MS WAIT_FAULTED_MS DETAIL

Definitions (the same in the table legend of faults_lib.sh):
- mutex: a violation is an acknowledged critical section (all its writes
  succeeded) whose read-back did not match what it wrote, or that
  overlaps in time (lock granted .. commit marker written, on the common
  monotonic clock) an acknowledged section of another worker.  No lost
  updates are defined for it.
- counter: the acknowledged values must be distinct (a duplicate is two
  increments from one value); an increment whose write was issued but
  not acknowledged (worker killed, write or fsync refused) is "in
  flight" and may or may not be in the file.  Lost updates = max(
  duplicated acknowledged values, acks - final, acknowledged values
  above final).  A final value above acks + in flight is a violation.
- sqlite: lost = acknowledged rows (COMMIT returned) missing from the
  table; a violation is integrity_check != ok, a worker that saw
  SQLITE_CORRUPT, or more unacknowledged rows than commits in flight.
- refusals: EIO, ENOLCK, EDEADLK and SQLite's IOERR family (how SQLite
  reports an EIO or ENOLCK of its file calls).  Other errors (ENOTCONN of
  a killed daemon's mount, a lock wait over 20 s = TIMEOUT, ...) are
  listed in DETAIL.
- waits: the longest lock wait (request .. grant, or .. refusal) of a
  worker on a host other than the faulted one, and on the faulted one.
"""
import collections
import glob
import os
import sqlite3
import sys

REFUSALS = ("EIO", "ENOLCK", "EDEADLK", "EDEADLOCK")  # one errno, two names


def is_refusal(name):
    return name in REFUSALS or name.startswith("SQLITE_IOERR")


def read_logs(logdir, kind):
    """{worker: (host, [fields...])}"""
    out = {}
    for path in sorted(glob.glob(os.path.join(logdir, "*-%s-*.log" % kind))):
        worker = os.path.basename(path)[:-4]
        host = worker.split("-")[0]
        with open(path, errors="replace") as f:
            recs = [line.split() for line in f if line.strip()]
        out[worker] = (host, recs)
    return out


class Tally:
    def __init__(self, faulted):
        self.faulted = faulted
        self.refusals = 0
        self.errors = collections.Counter()
        self.wait_other = 0
        self.wait_faulted = 0
        self.acks = 0
        self.viol = 0
        self.lost = 0
        self.notes = []
        self.flags = collections.Counter()

    def wait(self, host, w):
        w = int(w)
        if host == self.faulted:
            self.wait_faulted = max(self.wait_faulted, w)
        else:
            self.wait_other = max(self.wait_other, w)

    def refusal(self, host, rec):
        self.errors[rec[1]] += 1
        if is_refusal(rec[1]):
            self.refusals += 1
        if len(rec) > 2:
            self.wait(host, rec[2])

    def line(self, kind):
        detail = " ".join("%s:%d" % kv for kv in sorted(self.errors.items()))
        flags = " ".join("%s:%d" % kv for kv in sorted(self.flags.items()))
        detail = ";".join(filter(None, [detail, flags] + self.notes)) or "-"
        return "\t".join(str(x) for x in (
            kind, self.acks, self.viol, self.lost, self.refusals,
            self.wait_other, self.wait_faulted, detail))


def check_mutex(logs, t):
    sections = []
    for worker, (host, recs) in logs.items():
        for r in recs:
            if r[0] in ("A", "V"):
                sections.append((float(r[2]), float(r[3]), worker))
                t.wait(host, r[4])
                if r[0] == "A":
                    t.acks += 1
                else:
                    t.viol += 1
                    t.flags["readback:%s" % worker] += 1
            elif r[0] == "R":
                t.refusal(host, r)
    sections.sort()
    overlapping = set()
    end, who, who_idx = float("-inf"), None, None
    for i, (t1, t2, worker) in enumerate(sections):
        if t1 < end and worker != who:
            overlapping.add(i)
            overlapping.add(who_idx)
        if t2 > end:
            end, who, who_idx = t2, worker, i
    if overlapping:
        t.viol += len(overlapping)
        t.notes.append("overlaps:%d" % len(overlapping))


def check_counter(logs, t, path):
    acked, inflight = [], 0
    for worker, (host, recs) in logs.items():
        pending = False
        for r in recs:
            if r[0] == "W":
                inflight += pending
                pending = True
            elif r[0] == "A":
                pending = False
                acked.append(int(r[1]))
                t.wait(host, r[2])
            elif r[0] == "R":
                t.refusal(host, r)
            elif r[0] == "V":
                t.viol += 1
                t.flags["garbage:%s" % worker] += 1
        inflight += pending
    try:
        with open(path, "rb") as f:
            final = int(f.read().strip() or b"0")
    except (OSError, ValueError) as e:
        t.notes.append("unreadable:%s" % e)
        final = 0
        t.viol += 1
    t.acks = len(acked)
    dup = len(acked) - len(set(acked))
    above = sum(1 for v in acked if v > final)
    t.lost = max(dup, len(acked) - final, above, 0)
    extra = final - len(acked)
    t.notes.append("final=%d inflight=%d" % (final, inflight))
    if dup:
        t.notes.append("dup=%d" % dup)
    if extra > inflight:
        t.viol += extra - inflight
        t.notes.append("phantom=%d" % (extra - inflight))


def check_sqlite(logs, t, db):
    acked, inflight = set(), 0
    for worker, (host, recs) in logs.items():
        pending = False
        for r in recs:
            if r[0] == "C":
                inflight += pending
                pending = True
            elif r[0] == "A":
                pending = False
                acked.add((worker, int(r[1])))
                t.wait(host, r[2])
            elif r[0] == "R":
                t.refusal(host, r)
            elif r[0] == "V":
                t.viol += 1
                t.flags["corrupt-seen:%s" % worker] += 1
        inflight += pending
    t.acks = len(acked)
    try:
        con = sqlite3.connect(db, timeout=30)
        rows = set(con.execute("SELECT w, i FROM t"))
        check = [r[0] for r in con.execute("PRAGMA integrity_check")]
        con.close()
    except sqlite3.Error as e:
        t.notes.append("unreadable:%s" % e)
        t.viol += 1
        t.lost = len(acked)
        return
    t.lost = len(acked - rows)
    extra = len(rows - acked)
    t.notes.append("rows=%d inflight=%d" % (len(rows), inflight))
    if check != ["ok"]:
        t.viol += 1
        t.notes.append("integrity:%s" % "|".join(check)[:80])
    if extra > inflight:
        t.viol += extra - inflight
        t.notes.append("phantom=%d" % (extra - inflight))


LEGEND = """\
Fault suite: 3 hosts (A, B, C), each daemon in its own network namespace,
one shared backing directory; the fault hits host A, timed while a worker
of A holds each lock ("hit": in how many of the phase's injections a
worker of A of that workload sat in its critical section).  Leases: Redis
ttl_ms=3000 (lock-delay 1000), ZooKeeper session_timeout_ms=4000,
PostgreSQL ttl_ms=3000 (lock-delay 1000).  Redis runs with appendonly yes
+ appendfsync always, ZooKeeper keeps its dataDir, PostgreSQL recovers
from its WAL (synchronous_commit on): a restart keeps locks and sessions.
freeze/partition last lease + 2 s.
viol: mutex = acknowledged critical section whose read-back changed or
  that overlaps another worker's; counter = final value above acks + in
  flight; sqlite = integrity_check not ok / SQLITE_CORRUPT / phantom rows.
lost: counter = max(duplicated acked values, acks - final, acked values
  above final); sqlite = acknowledged rows missing.
refusals: EIO, ENOLCK, EDEADLK, SQLITE_IOERR* seen by workers (detail:
  every error by name).  wait B/C, wait A: longest lock wait (ms) of a
  worker on the other hosts / on host A (includes the time A's workers
  sat at the gate).  A row fails on viol > 0, lost > 0, or a note:
  stalled#N:HOSTS = those workers did no work within 20 s of the end of
  injection N; hung:HOST = a worker did not stop within 25 s.
control: no locks at all; mutex and counter must show violations / lost
  updates (else the checker is broken); sqlite (unix-none VFS) is shown
  for information.
"""

COLS = ("fault", "backend", "workload", "hit", "acks", "viol", "lost",
        "refusals", "wait B/C", "wait A", "verdict", "detail")


def table(path):
    rows, bad = [], 0
    with open(path) as f:
        for line in f:
            if not line.strip():
                continue
            (fault, backend, hit, kind, acks, viol, lost, ref, w_o, w_f,
             detail, note) = line.rstrip("\n").split("\t")
            viol, lost = int(viol), int(lost)
            if note != "-":
                detail = detail + ";" + note
            if fault == "control":
                if kind == "mutex":
                    verdict = "caught" if viol > 0 else "FAIL(blind)"
                elif kind == "counter":
                    verdict = "caught" if lost > 0 else "FAIL(blind)"
                else:
                    verdict = "info"
                hit = "-"
            else:
                verdict = "ok" if viol == 0 and lost == 0 and note == "-" \
                    else "FAIL"
            bad += verdict.startswith("FAIL")
            rows.append((fault, backend, kind, hit, acks, str(viol),
                         str(lost), ref, w_o, w_f, verdict, detail))
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c)
              for i, c in enumerate(COLS[:-1])]
    print(LEGEND)

    def fmt(r):
        return "  ".join(x.ljust(w) for x, w in zip(r, widths)) + "  " + r[-1]
    print(fmt(COLS))
    for r in rows:
        print(fmt(r))
    print("%d row(s), %d failed" % (len(rows), bad))
    return 1 if bad or not rows else 0


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--table":
        sys.exit(table(sys.argv[2]))
    if len(sys.argv) < 6:
        sys.exit(__doc__)
    logdir, faulted, mutex, counter, db = sys.argv[1:6]
    kinds = sys.argv[6:] or ["mutex", "counter", "sqlite"]
    for kind in kinds:
        t = Tally(faulted)
        logs = read_logs(logdir, kind)
        if kind == "mutex":
            check_mutex(logs, t)
        elif kind == "counter":
            check_counter(logs, t, counter)
        else:
            check_sqlite(logs, t, db)
        print(t.line(kind))


if __name__ == "__main__":
    main()
