#!/bin/bash
# pg_names.sh - file names on the PostgreSQL backend are bytea resources:
# a 255-byte name and awkward bytes (newline, %, quotes, backslash, ':',
# invalid UTF-8) map to distinct rows, the same row from both hosts.  The
# daemons reach the server through its Unix socket (a percent-encoded
# socket directory as the host, local trust: no password).
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/pg_lib.sh"
pg_init pg_names
pg_require

pg_start
dl_tmpdir base
mkdir "$base/backing"
: >"$base/empty.conf"
chmod 600 "$base/empty.conf"
sockdir=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$PG_SOCK")
URI="postgresql://$PG_ROLE@$sockdir:$PG_PORT/$PG_DB?schema=nm&ttl_ms=3000"
pg_mount2 "$base/backing" "$URI" "$base/empty.conf"

dl_log "xhost.py names: the text names, across hosts"
pg_xhost names "$MA" "$MB"

dl_log "byte names: every one held at once by one host, refused to the other"
mkfifo "$base/go"
cat >"$base/names.py" <<'PY'
import errno, fcntl, os, sys
a, b, out, go = (sys.argv[1].encode(), sys.argv[2].encode(), sys.argv[3],
                 sys.argv[4])
names = [b'x' * 255, b'x' * 254 + b'y', b'new\nline', b'100%', b'%25',
         b"quote'", b'dq"', b'back\\slash', b'a:b', b'\xff', b'\xfe',
         b'\xff\xfe', b'caf\xc3\xa9', b'caf\xe9', b'\x01ctl', b' ']
fds = []
for n in names:
    fd = os.open(os.path.join(a, n), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    fds.append(fd)
for n in names:
    fd = os.open(os.path.join(b, n), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        sys.exit('host b got %r held by host a' % n)
    except OSError as e:
        if e.errno != errno.EWOULDBLOCK:
            raise
    os.close(fd)
with open(out, 'w') as f:
    f.write('%d %s\n' % (len(names), ','.join(n.hex() for n in names)))
with open(go) as f:
    f.readline()
PY
python3 "$base/names.py" "$MA" "$MB" "$base/names.out" "$base/go" >"$base/names.log" 2>&1 &
holder=$!
dl_job "$holder"
ready() { [[ -s $base/names.out ]] || ! dl_pid_alive "$holder"; }
dl_wait_for 20 ready || dl_fail "the byte-name holder hangs"
[[ -s $base/names.out ]] || dl_fail "byte names: $(cat "$base/names.log")"
read -r count hexes <"$base/names.out"
# one row per name, byte for byte
rows=$(PG_SQL_DB=$PG_DB pg_sql "SELECT count(DISTINCT res) FROM nm.held
	WHERE host = 'a' AND encode(res, 'hex') = ANY (string_to_array('$hexes', ','))")
[[ $rows == "$count" ]] || dl_fail "$rows distinct rows for $count byte names"
# (with cache=on, a file's right is a lock on "//right/" + its name)
long=$(PG_SQL_DB=$PG_DB pg_sql "SELECT max(length(res)) FROM nm.held
	WHERE position('\\x2f2f72696768742f'::bytea IN res) <> 1")
[[ $long == 255 ]] || dl_fail "the longest resource has $long bytes, expected 255"
# the view shows valid UTF-8 as text and the rest escaped
v=$(PG_SQL_DB=$PG_DB pg_sql "SELECT count(*) FROM nm.locks WHERE resource IN ('café', 'caf\\351', '\\377\\376')")
[[ $v == 3 ]] || dl_fail "nm.locks shows the names as: $(PG_SQL_DB=$PG_DB pg_sql 'SELECT resource FROM nm.locks')"
echo go >"$base/go"
dl_wait_jobs 10 "$holder"
left() { [[ $(pg_rows nm) == 0 ]]; }
dl_wait_for 10 left || dl_fail "rows left after the holder exited: $(pg_rows nm)"

dl_umount "$MA"
dl_umount "$MB"
dl_pass
