#!/usr/bin/python3
"""sec_raw.py - a hostile local client of the control socket (issue 9).

Speaks the wire protocol (fs/proto.h) directly, as an attacker would, and
prints what the daemon answered, one result per line, for sec_*.sh to
check.  Every socket wait is bounded.

  lock SOCK FILE LABEL PREFIX HOLD_S   forged label: LOCK(flock, EX) with
                                       FILE's descriptor; print the errno,
                                       hold HOLD_S seconds on success
  conns SOCK N HOLD_S                  open N connections; print how many
                                       the daemon kept open
  waits SOCK N                         queue N waits on one connection
                                       behind our own named lock; print
                                       queue and close times (s)
  locks SOCK N                         take N distinct named locks on one
                                       connection, twice (a new connection
                                       after closing the first); print
                                       "granted=G err=E" for each round
  opath SOCK FILE TYPE                 LIST or FENCE with an O_PATH
                                       descriptor; print the errno
  list SOCK NAME                       LIST with a chosen resource NAME (no
                                       descriptor); print "items=N err=E"
  closed_after SOCK DEV INO FIFO       connect, fork; the parent exits; the
                                       child waits for a line on FIFO, then
                                       sends CLOSED(DEV, INO) on the
                                       connection its dead parent made
"""
import os
import select
import socket
import struct
import sys
import time

MAGIC, VERSION = 0x4B4C4C44, 3
LOCK, CLOSED, LIST, FENCE, REPLY = 1, 4, 7, 9, 64
F_WAIT, F_FD = 1, 2


def frame(typ, body, ident=7):
    return struct.pack("<IHHII", MAGIC, VERSION, typ, len(body), ident) + body


def strs(*ss):
    return b"".join(struct.pack("<H", len(s)) + s for s in ss)


def lock_body(kind=2, ltype=2, flags=F_FD):
    return struct.pack("<BBBBIqq", kind, ltype, flags, 0, 0, 0, 0)


def connect(path, wait=5.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    s.settimeout(wait)
    s.connect(path)
    return s


def send(s, data, fd=None):
    if fd is None:
        s.send(data)
    else:
        s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                            struct.pack("i", fd))])


def answer(s, ident=None):
    """the errno of the next REPLY (to @ident), or 'closed'/'timeout'"""
    try:
        while True:
            r = s.recv(70000)
            if not r:
                return "closed"
            typ, rid = struct.unpack("<H", r[6:8])[0], struct.unpack("<I", r[12:16])[0]
            if typ == REPLY and (ident is None or rid == ident):
                return struct.unpack("<i", r[16:20])[0]
    except (ConnectionResetError, BrokenPipeError):
        return "closed"
    except socket.timeout:
        return "timeout"


def cmd_lock(sock, path, label, prefix, hold):
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    s = connect(sock)
    send(s, frame(LOCK, lock_body() + strs(label.encode(), prefix.encode())), fd)
    got = answer(s)
    print(got, flush=True)
    if got == 0:
        time.sleep(float(hold))


def cmd_conns(sock, n, hold):
    kept = []
    for _ in range(int(n)):
        try:
            kept.append(connect(sock, 2.0))
        except OSError:
            break
    time.sleep(0.5)
    alive = 0
    for s in kept:
        s.setblocking(False)
        try:
            alive += s.recv(1) != b""
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    print(alive, flush=True)
    time.sleep(float(hold))


def cmd_waits(sock, n):
    n = int(n)
    holder = connect(sock)
    send(holder, frame(LOCK, lock_body(kind=3, flags=0) + strs(b"qflood")))
    if answer(holder) != 0:
        print("cannot take the lock", flush=True)
        return
    s = connect(sock, 30.0)
    t0 = time.monotonic()
    refused = 0
    for i in range(n):
        send(s, frame(LOCK, lock_body(kind=3, flags=F_WAIT) + strs(b"qflood"),
                      ident=i + 1))
        # read the refusals as they come, as a client that reads would
        # (select: a socket with a timeout waits even with MSG_DONTWAIT)
        while select.select([s], [], [], 0)[0]:
            if not s.recv(70000):
                print("closed", flush=True)
                return
            refused += 1
    # a STATUS round trip: everything before it was read and queued
    send(s, frame(6, b"", ident=n + 1))
    while True:
        try:
            r = s.recv(70000)
        except socket.timeout:
            print("timeout", flush=True)
            return
        if not r:
            break
        rid = struct.unpack("<I", r[12:16])[0]
        if rid == n + 1:
            break
        refused += 1
    t1 = time.monotonic()
    s.close()
    # the daemon serves again once the close is done
    st = connect(sock, 30.0)
    send(st, frame(6, b"", ident=1))
    answer(st)
    t2 = time.monotonic()
    print("queue=%.2f close=%.2f refused=%d" % (t1 - t0, t2 - t1, refused),
          flush=True)


def cmd_locks(sock, n):
    for rnd in range(2):
        s = connect(sock)
        granted, err = 0, 0
        for i in range(int(n)):
            send(s, frame(LOCK, lock_body(kind=3, flags=0) +
                          strs(b"held%d" % i), ident=i + 1))
            got = answer(s, i + 1)
            if got != 0:
                err = got
                break
            granted += 1
        print("granted=%d err=%s" % (granted, err), flush=True)
        s.close()
        # the close is done once a request on a new connection is answered
        st = connect(sock)
        send(st, frame(6, b"", ident=1))
        answer(st)
        st.close()


def cmd_opath(sock, path, typ):
    fd = os.open(path, os.O_PATH)
    s = connect(sock)
    t = {"LIST": LIST, "FENCE": FENCE}[typ]
    send(s, frame(t, bytes([F_FD]) + bytes(7)), fd)
    print(answer(s), flush=True)


def cmd_list(sock, name):
    s = connect(sock)
    send(s, frame(LIST, bytes(8) + strs(name.encode())))
    items = 0
    try:
        while True:
            r = s.recv(70000)
            if not r:
                print("closed", flush=True)
                return
            if struct.unpack("<H", r[6:8])[0] == REPLY:
                err = struct.unpack("<i", r[16:20])[0]
                break
            items += 1
    except socket.timeout:
        print("timeout", flush=True)
        return
    print("items=%d err=%d" % (items, err), flush=True)


def cmd_closed_after(sock, dev, ino, fifo):
    s = connect(sock)
    if os.fork() != 0:
        os._exit(0)  # the pid that connected is gone
    with open(fifo) as f:
        f.readline()
    send(s, frame(CLOSED, struct.pack("<QQ", int(dev), int(ino))))
    print(answer(s), flush=True)


def main():
    cmds = {"lock": cmd_lock, "conns": cmd_conns, "waits": cmd_waits, "locks": cmd_locks,
            "opath": cmd_opath, "list": cmd_list,
            "closed_after": cmd_closed_after}
    cmds[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
