#!/bin/bash
# ctl_locks.sh - `dlockctl locks` and `dlockctl status` for people, on a
# mount with backend=local: and its socket (paths= a shim directory too):
# real holders (flock(1), python lockf, OFD through the shim, a named
# lock, a waiter) on files with awkward names; the table's header and
# alignment, -o (a subset, an unknown column), -n, -r escaping, JSON that
# gives every name back exactly, TYPE, WAITING, COMMAND, final newlines,
# and the status in words.
# shellcheck disable=SC2154,SC2015
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
dl_init ctl_locks
dl_require_fuse
dl_require_prog flock python3
[[ -x ${DLOCKCTL:-} ]] || dl_skip "DLOCKCTL is not set (run through meson test)"
[[ -f ${DLOCK_PRELOAD:-} ]] || dl_skip "DLOCK_PRELOAD is not set (run through meson test)"

dl_tmpdir base
mkdir "$base/backing" "$base/mnt" "$base/app"
S=$base/s.sock
dl_mount "$base/backing" "$base/mnt" "socket=$S,paths=app=$base/app"
ctl() { "$DLOCKCTL" --socket "$S" "$@"; }
export LC_ALL=C

# the awkward names, made and locked (flock, shared) by one python holder
python3 - "$base/mnt" "$base/names.json" >"$base/holder.out" 2>&1 <<'PY' &
import fcntl, json, os, sys, time
names = [b"new\nline", b"tab\there", b"100%", b'quo"te', b"back\\slash",
         b"bad\xffutf8\xfe", b"sp ace", b"\xc3\xbc-utf8", b"x" * 255]
d = os.fsencode(sys.argv[1])
json.dump([n.hex() for n in names], open(sys.argv[2], "w"))
fds = []
for n in names:
    fd = os.open(os.path.join(d, n), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_SH)
    fds.append(fd)
fd = os.open(os.path.join(d, b"posix.lock"), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd, fcntl.LOCK_EX, 10, 10)   # bytes 10..19
print("held", flush=True)
time.sleep(60)
PY
dl_job "$!"
dl_wait_for 10 grep -qx held "$base/holder.out" || dl_fail "the name holder did not lock: $(cat "$base/holder.out")"

# an OFD and a POSIX lock through the shim, on files under paths=
env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$S" DLOCK_PATHS="app=$base/app" DLOCK_KERNEL_LOCK=0 \
	python3 - "$base/app" >"$base/shim.out" 2>&1 <<'PY' &
import fcntl, os, struct, sys, time
F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
fd = os.open(os.path.join(sys.argv[1], "ofd.lock"), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.fcntl(fd, F_OFD_SETLK, struct.pack("hhqqi", fcntl.F_WRLCK, 0, 0, 0, 0))
fd2 = os.open(os.path.join(sys.argv[1], "shimposix.lock"), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.lockf(fd2, fcntl.LOCK_SH)
print("held", flush=True)
time.sleep(60)
PY
dl_job "$!"
dl_wait_for 10 grep -qx held "$base/shim.out" || dl_fail "the shim holder did not lock: $(cat "$base/shim.out")"

# flock(1) holds plain.lock; a second flock(1) waits for it; a named lock
touch "$base/mnt/plain.lock"
flock "$base/mnt/plain.lock" sleep 60 &
dl_job "$!"
# (no grep -q after ctl: an early exit of grep would SIGPIPE it, and
# pipefail fail the pipeline)
has_row() { ctl locks -rn -o "$1" | grep -x -- "$2" >/dev/null; }
dl_wait_for 10 has_row path,waiting "plain.lock no" || dl_fail "flock(1) did not lock plain.lock"
flock "$base/mnt/plain.lock" true &
dl_job "$!"
dl_wait_for 10 has_row path,waiting "plain.lock yes" || dl_fail "the waiter does not show as waiting"
ctl run --lock mine -- sleep 60 &
dl_job "$!"
dl_wait_for 10 has_row path,type "name:0/mine named" || dl_fail "the named lock does not show"
nlocks=15 # 9 names + posix.lock + 2 shim + plain.lock holder, waiter + named

# ends_nl FILE - FILE is not empty and ends with a newline
ends_nl() { [[ -s $1 && $(tail -c 1 "$1" | od -An -tx1 | tr -d ' ') == 0a ]]; }

dl_log "the table: header, one line per lock, alignment"
ctl locks >"$base/table" || dl_fail "dlockctl locks failed"
ends_nl "$base/table" || dl_fail "the table does not end with a newline"
read -r -a hdr <"$base/table"
[[ ${hdr[*]} == "PATH TYPE MODE START END HOST PID COMMAND TOKEN SINCE WAITING" ]] ||
	dl_fail "header: ${hdr[*]}"
[[ $(wc -l <"$base/table") -eq $((nlocks + 1)) ]] || dl_fail "not one line per lock: $(cat -A "$base/table")"
# no name here holds a space but sp ace: leave it out of the column check
grep -v '^sp ace' "$base/table" | python3 -c '
import re, sys
right = {"START", "END", "PID", "TOKEN"}
lines = sys.stdin.read().splitlines()
head = [(m.group(), m.start(), m.end()) for m in re.finditer(r"\S+", lines[0])]
for l in lines[1:]:
    cells = [(m.start(), m.end()) for m in re.finditer(r"\S+", l)]
    assert len(cells) == len(head), (l, head)
    for (name, s, e), (cs, ce) in zip(head, cells):
        ok = ce == e if name in right else cs == s
        assert ok, "column %s not aligned in %r" % (name, l)
' || dl_fail "columns are not aligned: $(cat "$base/table")"
grep -q '^sp ace ' "$base/table" || dl_fail "a space in a name is not kept in the table"

dl_log "TYPE, MODE, range, COMMAND, WAITING, TOKEN"
row() { ctl locks -rn -o path,type,mode,start,end,command,waiting,token | grep "^$1 " || true; }
[[ $(row posix.lock) == "posix.lock posix WRITE 10 19 python3 no "* ]] || dl_fail "posix.lock: $(row posix.lock)"
[[ $(row app/ofd.lock) == "app/ofd.lock ofd WRITE 0 EOF python3 no "* ]] || dl_fail "ofd.lock: $(row app/ofd.lock)"
[[ $(row app/shimposix.lock) == "app/shimposix.lock posix READ 0 EOF python3 no "* ]] ||
	dl_fail "shimposix.lock: $(row app/shimposix.lock)"
row plain.lock | grep -x 'plain.lock flock WRITE 0 EOF flock no [0-9]*' >/dev/null || dl_fail "plain.lock holder: $(row plain.lock)"
row plain.lock | grep -x 'plain.lock flock WRITE 0 EOF flock yes -' >/dev/null || dl_fail "plain.lock waiter: $(row plain.lock)"

dl_log "-o: a subset, any case, +COLUMNS; an unknown column"
ctl locks -o path,MODE,Pid >"$base/sub"
[[ $(head -1 "$base/sub" | tr -s ' ') == "PATH MODE PID" ]] || dl_fail "-o subset header: $(head -1 "$base/sub")"
ctl locks --output +owner -n | grep '^posix.lock .* [0-9a-f]\{16\}$' >/dev/null || dl_fail "+owner does not add OWNER"
rc=0
ctl locks -o path,bogus >"$base/bad.out" 2>"$base/bad.err" || rc=$?
[[ $rc -eq 2 ]] || dl_fail "an unknown column: status $rc, expected 2"
[[ ! -s $base/bad.out && $(wc -l <"$base/bad.err") -eq 1 ]] || dl_fail "an unknown column: not one line: $(cat "$base/bad.err")"
grep -q bogus "$base/bad.err" || dl_fail "the error does not name the column: $(cat "$base/bad.err")"

dl_log "--noheadings, --raw escaping"
ctl locks --noheadings >"$base/nohead"
[[ $(wc -l <"$base/nohead") -eq $nlocks ]] && ! grep -q '^PATH ' "$base/nohead" || dl_fail "-n: $(cat "$base/nohead")"
ctl locks -r -n -o path >"$base/raw"
ends_nl "$base/raw" || dl_fail "raw output does not end with a newline"
python3 - "$base/raw" "$base/names.json" <<'PY' || dl_fail "raw names: $(cat -A "$base/raw")"
import json, sys
got = set(open(sys.argv[1], "rb").read().decode("ascii").splitlines())
def esc(b):  # C locale: every unsafe byte as \xHH
    return "".join(chr(c) if 0x20 < c < 0x7f and c != 0x5c else "\\x%02x" % c for c in b)
for h in json.load(open(sys.argv[2])):
    want = esc(bytes.fromhex(h))
    assert want in got, (want, sorted(got))
PY
LC_ALL=C.UTF-8 ctl locks -rn -o path | grep -x $'\xc3\xbc-utf8' >/dev/null || dl_fail "UTF-8 name not kept under C.UTF-8"
LC_ALL=C.UTF-8 ctl locks -rn -o path | grep -xF 'bad\xffutf8\xfe' >/dev/null || dl_fail "invalid UTF-8 not escaped under C.UTF-8"

dl_log "--json: valid, and every name exactly"
ctl locks --json >"$base/json"
ends_nl "$base/json" || dl_fail "JSON does not end with a newline"
python3 -m json.tool "$base/json" >/dev/null || dl_fail "not JSON: $(cat "$base/json")"
ctl --json locks | cmp -s - "$base/json" || dl_fail "--json before and after the command differ"
python3 - "$base/json" "$base/names.json" "$nlocks" <<'PY' || dl_fail "JSON names: $(cat "$base/json")"
import json, sys
items = json.loads(open(sys.argv[1], "rb").read())
assert len(items) == int(sys.argv[3]), len(items)
def path(i):  # the documented representation
    return bytes.fromhex(i["path_hex"]) if "path_hex" in i else i["path"].encode()
got = {path(i) for i in items}
for h in json.load(open(sys.argv[2])):
    assert bytes.fromhex(h) in got, (bytes.fromhex(h), got)
bad = [i for i in items if "path_hex" in i]
assert len(bad) == 1 and bad[0]["path"] == "bad\ufffdutf8\ufffd", bad
keys = ["path", "type", "mode", "start", "end", "host", "pid", "command",
        "token", "since", "waiting", "owner"]
for i in items:
    assert [k for k in i if k != "path_hex"] == keys, list(i)
w = [i for i in items if i["waiting"]]
assert len(w) == 1 and w[0]["token"] is None and w[0]["path"] == "plain.lock", w
p = [i for i in items if i["path"] == "posix.lock"][0]
assert (p["type"], p["mode"], p["start"], p["end"]) == ("posix", "WRITE", 10, 19), p
assert [i["end"] for i in items if i["path"] == "app/ofd.lock"] == [None]
PY
ctl locks -J -o PATH,type | python3 -c 'import json,sys; l=json.load(sys.stdin); assert all(list(i) in (["path","type"],["path","path_hex","type"]) for i in l), l' ||
	dl_fail "-J -o does not restrict the keys"
ctl locks "$base/mnt/plain.lock" -J | python3 -c 'import json,sys; l=json.load(sys.stdin); assert sorted(i["waiting"] for i in l) == [False, True], l' ||
	dl_fail "locks PATH --json"
ctl locks "$base/mnt/missing" 2>/dev/null && dl_fail "locks of a missing file succeeded"
touch "$base/mnt/free"
ctl locks -J "$base/mnt/free" | cmp -s - <(printf '[]\n') || dl_fail "an empty JSON list is not []"
ctl locks "$base/mnt/free" >"$base/free"
[[ $(wc -l <"$base/free") -eq 1 && $(tr -s ' ' <"$base/free") == "${hdr[*]}" ]] ||
	dl_fail "not just the header for an empty list: $(cat "$base/free")"
ends_nl "$base/free" || dl_fail "an empty table does not end with a newline"

dl_log "status in words"
ctl status >"$base/status" || dl_fail "dlockctl status failed"
ends_nl "$base/status" || dl_fail "status does not end with a newline"
grep -qx 'backend: *local: (healthy)' "$base/status" || dl_fail "no backend health: $(cat "$base/status")"
grep -qx "host: *$DL_HOST_ID" "$base/status" || dl_fail "no host: $(cat "$base/status")"
grep -qx "mode: *mount on $base/mnt" "$base/status" || dl_fail "no mode: $(cat "$base/status")"
grep -qx 'held locks: *[0-9]*' "$base/status" && grep -qx 'waiting requests: *[0-9]*' "$base/status" ||
	dl_fail "no held/waiting counts: $(cat "$base/status")"
python3 -c '
import sys
cols = {len(l) - len(l.split(":", 1)[1].lstrip(" ")) for l in open(sys.argv[1])}
assert len(cols) == 1, cols
' "$base/status" || dl_fail "status values are not aligned: $(cat "$base/status")"
ctl --json status | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["mode"] == "mount" and d["backend_state"]["health"] == "ok", d' ||
	dl_fail "status --json"
ctl status -r | grep -x 'requests=[0-9]*' >/dev/null || dl_fail "status -r does not give key=value lines"
dl_pass
