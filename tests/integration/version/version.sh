#!/bin/bash
# version.sh BACKEND - issue 14, optimistic concurrency, on one backend
# (local, redis, zk or pg): the cluster-wide version of a file
# (user.dlock.version, user.dlock.lastchange), the compare-and-swap
# replace (user.dlock.replace, `dlockctl replace --if-version`) and the
# consistent lockless read (`dlockctl read`), through two "hosts": two
# daemons with host ids a and b mounting one backing directory (local:
# one mount, used by two client processes).
#   1. counter: each host loops version / read / write a temp file /
#      replace --if-version; conflicts (exit 5) retry.  No update lost,
#      conflicts happened, the version grew by exactly the replaces.
#   2. bumps: one per writing session; none for reads, locks, getxattr or
#      a write elsewhere; seen through the other host right after the
#      close; truncate by path, rm, rename (both names) bump.
#   3. a stale replace exits 5 with the current version and changes
#      nothing; a fresh one replaces (rename: NEWFILE's inode).
#   4. --if-version 0 creates a never-used name, once.
#   5. dlockctl read under a flock -x writer: only consistent copies.
#   6. bad input: exit 2, one line on stderr, nothing changed; the
#      daemon's errno for malformed user.dlock.replace values.
# Servers (redis, zk, pg) come from the backend's own test library, on
# 127.0.0.1 only, and go with everything else in lib.sh's EXIT trap.
# Counts: VERSION_ITER successful replaces per host (default 200).
# dl_tmpdir and the libraries assign; A && B || fail is meant
# shellcheck disable=SC2154,SC2015
set -euo pipefail
here=$(dirname "$0")
# shellcheck source=../lib.sh
. "$here/../lib.sh"
BACKEND=${1:-}
case $BACKEND in
local)
	dl_init version_local
	dl_require_fuse
	;;
redis)
	# shellcheck source=../redis/redis_lib.sh
	. "$here/../redis/redis_lib.sh"
	dl_init version_redis
	rd_require
	;;
zk)
	# shellcheck source=../zk/zk_lib.sh
	. "$here/../zk/zk_lib.sh"
	dl_init version_zk
	dl_require_fuse
	;;
pg)
	# shellcheck source=../pg/pg_lib.sh
	. "$here/../pg/pg_lib.sh"
	pg_init version_pg
	pg_require
	;;
*)
	echo "usage: version.sh local|redis|zk|pg" >&2
	exit 2
	;;
esac
dl_require_prog getfattr flock python3 sha256sum stat
[[ -n ${DLOCKCTL:-} ]] || dl_skip "DLOCKCTL is not set (run through meson test)"
[[ -x $DLOCKCTL ]] || dl_fail "DLOCKCTL=$DLOCKCTL is not executable"
VH=(python3 "$here/vhelp.py")
SECONDS=0

dl_tmpdir base
B=$base/backing
mkdir "$B"
case $BACKEND in
local)
	# one daemon: both "hosts" are client processes of one mount
	MA=$base/mnt
	mkdir "$MA"
	dl_mount "$B" "$MA"
	MB=$MA HA=$DL_HOST_ID HB=$DL_HOST_ID
	# another mount (its own backing dir) for "different mounts"
	MO=$base/mnt-other
	mkdir "$MO" "$base/backing-other"
	dl_mount "$base/backing-other" "$MO"
	ITER=${VERSION_ITER:-200}
	;;
redis)
	rd_start port
	rd_mount2 "$B" "redis://127.0.0.1:$port/v$$?ttl_ms=3000"
	MO=$MB HA=a HB=b
	ITER=${VERSION_ITER:-200}
	;;
zk)
	zk_start
	MA=$base/mnt-a MB=$base/mnt-b
	mkdir "$MA" "$MB"
	zk_mount "$B" "$MA" a
	zk_mount "$B" "$MB" b
	MO=$MB HA=a HB=b
	ITER=${VERSION_ITER:-200}
	;;
pg)
	pg_start
	pg_conf "$base/dlock.conf"
	pg_mount2 "$B" "$(pg_uri "schema=v&ttl_ms=3000")" "$base/dlock.conf"
	MO=$MB HA=a HB=b
	ITER=${VERSION_ITER:-200}
	;;
esac
dl_log "set up in ${SECONDS}s: A=$MA B=$MB (hosts $HA, $HB)"

# ver PATH - the version through getxattr (fails the test on an error)
ver() {
	local v
	v=$(getfattr --absolute-names --only-values -n user.dlock.version "$1" 2>&1) ||
		dl_fail "getfattr user.dlock.version $1: $v"
	[[ $v =~ ^[0-9]+$ ]] || dl_fail "user.dlock.version of $1 is '$v', not a number"
	printf '%s' "$v"
}

# expect_ver PATH WANT WHAT
expect_ver() {
	local got
	got=$(ver "$1")
	[[ $got == "$2" ]] || dl_fail "$3: version of ${1#"$base"/} is $got, expected $2"
}

# put PATH TEXT - one writing session (open O_CREAT|O_TRUNC, write,
# close): tee opens PATH itself, where a shell redirection opens it,
# moves it with dup2 and closes the original (a flush: creating or
# truncating it is then a session of its own)
put() { printf '%s\n' "$2" | tee "$1" >/dev/null; }

# sum PATH - a file's content, as a checksum
sum() { sha256sum <"$1" | cut -d' ' -f1; }

# ---- 2. bumps (first: it also checks the xattrs exist at all) ---------
dl_log "2. bumps"
: >"$B/untouched"
expect_ver "$MA/untouched" 0 "a file never changed through a mount"
ver "$MA" >/dev/null # a directory answers too
lc=$(getfattr --absolute-names --only-values -n user.dlock.lastchange "$MA/untouched")
[[ $lc == "0 - 0" ]] || dl_fail "user.dlock.lastchange of an unchanged file: '$lc'"

printf 'one\n' >"$MA/f"
v=$(ver "$MA/f")
[[ $v -ge 1 ]] || dl_fail "creating and writing f left version $v"
# (in Python: bash's `printf >&3` dups the descriptor, and every close
# of a duplicate is a flush: a session of its own)
python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND)
os.write(fd, b"two\n")
os.write(fd, b"three\n")
os.close(fd)' "$MA/f"
expect_ver "$MB/f" $((v + 1)) "open, write, write, close through A, read once through B"
v=$((v + 1))
# the last change: by host a, just now
lc=$(getfattr --absolute-names --only-values -n user.dlock.lastchange "$MB/f")
now=$(date +%s%3N)
read -r lv lh lms <<<"$lc"
[[ $lv == "$v" && $lh == "$HA" && $lms =~ ^[0-9]+$ ]] &&
	((lms <= now + 1000 && lms > now - 60000)) ||
	dl_fail "user.dlock.lastchange of f is '$lc', expected '$v $HA <ms near $now>'"

cat "$MA/f" >/dev/null
flock -s "$MA/f" true
flock -x "$MB/f" true
python3 -c 'import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_SH); fcntl.lockf(fd, fcntl.LOCK_UN)
fcntl.lockf(fd, fcntl.LOCK_EX); fcntl.lockf(fd, fcntl.LOCK_UN)
os.close(fd)' "$MA/f"
exec 3<>"$MA/f" # opened for writing, never written
exec 3>&-
for x in version lastchange locks; do
	getfattr --absolute-names -n "user.dlock.$x" "$MA/f" >/dev/null
done
printf 'x\n' >"$MA/other"
printf 'y\n' >>"$MB/other"
expect_ver "$MB/f" "$v" "read, flock -s/-x, fcntl locks, open O_RDWR without a write, getxattr, writes to another file"

# a write through B, then immediately through A
printf 'four\n' >>"$MB/f"
expect_ver "$MA/f" $((v + 1)) "append through B, read once through A"
v=$((v + 1))
lc=$(getfattr --absolute-names --only-values -n user.dlock.lastchange "$MA/f")
[[ ${lc%% *} == "$v" && $(cut -d' ' -f2 <<<"$lc") == "$HB" ]] ||
	dl_fail "user.dlock.lastchange after B's write: '$lc', expected '$v $HB ...'"

# a locked session: the unlock bumps (before the close), the close not again
"${VH[@]}" lockbump "$MA/f" "$MB/f" >&2 || dl_fail "lockbump"
v=$((v + 1))

python3 -c 'import os, sys; os.truncate(sys.argv[1], 2)' "$MA/f"
expect_ver "$MB/f" $((v + 1)) "truncate(2) by path through A"
v=$((v + 1))
[[ $(stat -c %s "$B/f") == 2 ]] || dl_fail "truncate by path did not truncate"

# rm bumps the name: recreating it (one more writing session) gives +2
rm "$MA/f"
if out=$("$DLOCKCTL" version "$MB/f" 2>/dev/null); then
	[[ ${out%%$'\n'*} == $((v + 1)) ]] ||
		dl_fail "dlockctl version of the removed name: '${out%%$'\n'*}', expected $((v + 1))"
fi
put "$MB/f" again
expect_ver "$MA/f" $((v + 2)) "rm through A, then create+write through B"
v=$((v + 2))

# rename over a target: the target's name and the old name both bump
printf 'g\n' >"$MA/g"
vg=$(ver "$MA/g")
mv -f "$MA/g" "$MA/f"
expect_ver "$MB/f" $((v + 1)) "rename g over f through A (target)"
[[ $(cat "$MB/f") == g ]] || dl_fail "rename over f: content '$(cat "$MB/f")'"
put "$MB/g" g2
expect_ver "$MA/g" $((vg + 2)) "rename g away, then create+write g (old name)"
rm "$MA/g" "$MA/other"
dl_log "2. bumps: ok (${SECONDS}s)"

# ---- 3. a stale replace, then a fresh one ------------------------------
dl_log "3. replace conflict"
printf 'base\n' >"$MA/r"
v=$(ver "$MA/r")
printf 'from b\n' >>"$MB/r"
expect_ver "$MA/r" $((v + 1)) "B's write to r"
sum0=$(sum "$B/r") ino0=$(stat -c %i "$B/r")
printf 'from a\n' >"$MA/r.new"
sumn=$(sum "$B/r.new") inon=$(stat -c %i "$B/r.new")
rc=0
out=$("$DLOCKCTL" replace --if-version "$v" "$MA/r.new" "$MA/r" 2>"$base/err") || rc=$?
[[ $rc == 5 ]] || dl_fail "replace --if-version $v after B's write: exit $rc, expected 5 ($(cat "$base/err"))"
[[ ${out%%$'\n'*} == $((v + 1)) ]] ||
	dl_fail "the stale replace printed '$out', expected the current version $((v + 1))"
[[ $(sum "$B/r") == "$sum0" && $(stat -c %i "$B/r") == "$ino0" ]] ||
	dl_fail "the stale replace changed r (content or inode)"
[[ -f $MA/r.new && $(sum "$B/r.new") == "$sumn" ]] || dl_fail "the stale replace lost r.new"
expect_ver "$MB/r" $((v + 1)) "after the stale replace"
# the same through the raw xattr: ESTALE
python3 -c 'import errno, os, sys
try:
    os.setxattr(sys.argv[1], "user.dlock.replace", sys.argv[2].encode())
except OSError as e:
    sys.exit(0 if e.errno == errno.ESTALE else "errno %d, expected ESTALE" % e.errno)
sys.exit("the stale setxattr succeeded")' "$MA/r.new" "$v r" ||
	dl_fail "raw user.dlock.replace with a stale version"
[[ $(sum "$B/r") == "$sum0" ]] || dl_fail "the stale setxattr changed r"
# and now with the current version, through the other host
v=$((v + 1))
out=$("$DLOCKCTL" replace --if-version "$v" "$MB/r.new" "$MB/r") ||
	dl_fail "replace --if-version $v (current): exit $?"
[[ ${out%%$'\n'*} == $((v + 1)) ]] || dl_fail "the replace printed '$out', expected $((v + 1))"
[[ ! -e $MA/r.new && $(sum "$B/r") == "$sumn" && $(stat -c %i "$B/r") == "$inon" ]] ||
	dl_fail "after the replace r is not the former r.new (or r.new is still there)"
expect_ver "$MA/r" $((v + 1)) "after the replace, through A"
# a descriptor open on NEWFILE reads TARGET's version afterwards
printf 'fd\n' >"$MA/r.fd"
"${VH[@]}" fdver "$MA/r.fd" "$MA/r" r >&2 || dl_fail "fdver"
dl_log "3. replace conflict: ok (${SECONDS}s)"

# ---- 4. --if-version 0 ------------------------------------------------
dl_log "4. --if-version 0"
new=fresh-$$-$RANDOM
printf 'first\n' >"$MA/c.1"
out=$("$DLOCKCTL" replace --if-version 0 "$MA/c.1" "$MA/$new") ||
	dl_fail "replace --if-version 0 onto a never-used name: exit $?"
[[ ${out%%$'\n'*} == 1 && $(cat "$MB/$new") == first ]] ||
	dl_fail "--if-version 0 printed '$out', content '$(cat "$MB/$new")'; expected 1, 'first'"
expect_ver "$MB/$new" 1 "the created name"
printf 'second\n' >"$MB/c.2"
rc=0
out=$("$DLOCKCTL" replace --if-version 0 "$MB/c.2" "$MB/$new" 2>/dev/null) || rc=$?
[[ $rc == 5 && ${out%%$'\n'*} == 1 ]] ||
	dl_fail "a second --if-version 0: exit $rc, printed '$out'; expected 5 and 1"
[[ $(cat "$MA/$new") == first && -f $MA/c.2 ]] || dl_fail "the second --if-version 0 changed something"
dl_log "4. --if-version 0: ok (${SECONDS}s)"

# ---- 6. bad input -----------------------------------------------------
dl_log "6. bad input"
printf 'target\n' >"$MA/t"
printf 'newfile\n' >"$MA/t.new"
printf 'outside\n' >"$base/outside"
printf 'elsewhere\n' >"$MO/t.other"
mkdir "$MA/adir"
vt=$(ver "$MA/t") st=$(sum "$B/t") sn=$(sum "$B/t.new")
# bad ARGS... - dlockctl ARGS must exit 2 with one message on stderr
bad() {
	local rc=0 n
	"$DLOCKCTL" "$@" >"$base/out" 2>"$base/err" || rc=$?
	[[ $rc == 2 ]] || dl_fail "dlockctl $*: exit $rc, expected 2 ($(cat "$base/err"))"
	# one message; a syntax error may add dlockctl's usage lines (as
	# every command's does, cli_usage())
	n=$(grep -cv -e '^usage: dlockctl ' -e '^       dlockctl ' "$base/err" || true)
	[[ $n == 1 && $(head -1 "$base/err") == "dlockctl: "* ]] ||
		dl_fail "dlockctl $*: $n message lines on stderr, expected one 'dlockctl: ...': $(cat "$base/err")"
	[[ $(ver "$MA/t") == "$vt" && $(sum "$B/t") == "$st" ]] ||
		dl_fail "dlockctl $* changed t"
	[[ $(sum "$B/t.new") == "$sn" ]] || dl_fail "dlockctl $* changed or removed t.new"
}
bad replace --if-version "$vt" "$MA/no-such-file" "$MA/t"
bad replace --if-version "$vt" "$MA/t.new" "$MA/adir"
[[ -d $MA/adir ]] || dl_fail "adir is gone"
for n in x -1 "1 2" 99999999999999999999999 "" "${vt}x" 0x1; do
	bad replace --if-version "$n" "$MA/t.new" "$MA/t"
done
bad replace --if-version "$vt" "$base/outside" "$MA/t"
[[ $(cat "$base/outside") == outside ]] || dl_fail "the file outside the mount changed"
bad replace --if-version "$vt" "$MO/t.other" "$MA/t"
[[ $(cat "$MO/t.other") == elsewhere ]] || dl_fail "the other mount's file changed"
rm "$MO/t.other"
# the daemon's own checks, through the raw xattr
"${VH[@]}" errors "$MA" >&2 || dl_fail "errors"
dl_log "6. bad input: ok (${SECONDS}s)"

# ---- 5. dlockctl read under a writer ----------------------------------
dl_log "5. read under a writer"
: >"$MB/big"
"${VH[@]}" writer "$MB/big" "$base/stop" 60 >"$base/writes" &
wpid=$!
dl_job "$wpid"
dl_wait_for 10 grep -q 'sum=' "$B/big" || dl_fail "the writer did not write"
torn=$("${VH[@]}" torn "$MA/big" 50)
if ! res=$("${VH[@]}" reader "$DLOCKCTL" "$MA/big" 50 20); then
	dl_fail "dlockctl read: $res"
fi
touch "$base/stop"
dl_wait_jobs 10 "$wpid"
dl_log "5. dlockctl read x50 under $(cat "$base/writes") rewrites: $res" \
	"(plain reads: $torn of 50 torn)"
[[ $res =~ ok=([0-9]+) ]] && ((BASH_REMATCH[1] > 0)) ||
	dl_fail "no dlockctl read succeeded under the writer: $res"
dl_log "5. read under a writer: ok (${SECONDS}s)"

# ---- 1. the counter (last: the longest) -------------------------------
dl_log "1. counter: 2 hosts x $ITER successful replaces"
F=counter.json
printf '{"n": 0}\n' >"$MA/$F"
v0=$(ver "$MA/$F")
# worker MNT TAG - ITER read-modify-replace cycles; "SUCCESSES CONFLICTS"
worker() {
	local m=$1 tag=$2 ok=0 conflicts=0 v body out rc _
	local f=$m/$F tmp=$m/$F.$tag.tmp
	for _ in $(seq 200); do # both start together (bounded: 10 s)
		[[ -e $base/go ]] && break
		sleep 0.05
	done
	while ((ok < ITER)); do
		v=$("$DLOCKCTL" version "$f") || dl_fail "$tag: dlockctl version: exit $?"
		v=${v%%$'\n'*}
		IFS= read -r body <"$f" || dl_fail "$tag: cannot read $F"
		[[ $body =~ ^\{\"n\":\ ([0-9]+)\}$ ]] || dl_fail "$tag: $F holds '$body'"
		printf '{"n": %d}\n' $((BASH_REMATCH[1] + 1)) >"$tmp"
		rc=0
		out=$("$DLOCKCTL" replace --if-version "$v" "$tmp" "$f" 2>"$base/err.$tag") || rc=$?
		case $rc in
		0)
			[[ ${out%%$'\n'*} == $((v + 1)) ]] ||
				dl_fail "$tag: replace --if-version $v printed '$out'"
			ok=$((ok + 1))
			;;
		5) conflicts=$((conflicts + 1)) ;;
		*) dl_fail "$tag: dlockctl replace: exit $rc: $(cat "$base/err.$tag")" ;;
		esac
	done
	echo "$ok $conflicts" >"$base/result.$tag"
}
SECONDS=0
worker "$MA" a &
pa=$!
dl_job "$pa"
worker "$MB" b &
pb=$!
dl_job "$pb"
touch "$base/go"
dl_wait_jobs 120 "$pa" "$pb"
read -r oka ca <"$base/result.a"
read -r okb cb <"$base/result.b"
total=$((oka + okb))
IFS= read -r body <"$MB/$F"
dl_log "1. counter: $total replaces ($oka on $HA, $okb on $HB), conflicts:" \
	"$ca on $HA, $cb on $HB, ${SECONDS}s; $F: $body"
[[ $body == "{\"n\": $total}" ]] ||
	dl_fail "the counter holds '$body' after $total successful replaces: updates were lost"
((ca + cb > 0)) || dl_fail "no conflict in $total concurrent replaces: the hosts never raced"
# every replace bumped the target once; writes to the temp names bump
# those names, never counter.json
expect_ver "$MA/$F" $((v0 + total)) "counter.json after $total replaces from version $v0"
dl_log "1. counter: ok"

case $BACKEND in
local)
	dl_umount "$MA"
	dl_umount "$MO"
	;;
*)
	dl_umount "$MA"
	dl_umount "$MB"
	;;
esac
dl_pass
