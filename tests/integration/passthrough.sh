#!/bin/bash
# passthrough.sh - dlockfs is an ordinary file system over its backing
# directory: create, write, read, rename (also mv -T and mv --exchange),
# hard and symbolic links, chmod, chown, truncate, timestamps, user
# xattrs; the virtual user.dlock.* names are neither listed nor settable.
# dl_tmpdir assigns through printf -v; single quotes are meant literally
# shellcheck disable=SC2154,SC2016,SC2012
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
dl_init passthrough
dl_require_fuse
dl_require_prog getfattr setfattr

dl_tmpdir base
B="$base/backing" M="$base/mnt"
mkdir "$B" "$M"
dl_mount "$B" "$M"

expect_eq() { # WHAT GOT WANT
	[[ $2 == "$3" ]] || dl_fail "$1: got '$2', expected '$3'"
}

# a tree, written and read back, visible in the backing directory
mkdir -p "$M/a/b/c"
echo hello >"$M/a/b/c/f"
expect_eq "read back" "$(cat "$M/a/b/c/f")" hello
expect_eq "backing file" "$(cat "$B/a/b/c/f")" hello
head -c 1048576 /dev/urandom >"$base/random"
cp "$base/random" "$M/a/big"
cmp -s "$base/random" "$M/a/big" || dl_fail "1 MiB file differs when read back"
cmp -s "$base/random" "$B/a/big" || dl_fail "1 MiB file differs in the backing dir"
echo more >>"$M/a/b/c/f"
expect_eq "append" "$(cat "$M/a/b/c/f")" $'hello\nmore'
# written on the backing side, seen through the mount
echo outside >"$B/a/outside"
expect_eq "backing-side file" "$(cat "$M/a/outside")" outside
expect_eq "readdir" "$(cd "$M/a" && ls | tr '\n' ' ')" "b big outside "

# renames
mv "$M/a/b/c/f" "$M/a/g"
[[ ! -e $M/a/b/c/f && -f $M/a/g ]] || dl_fail "rename of a file"
expect_eq "renamed content" "$(cat "$M/a/g")" $'hello\nmore'
echo victim >"$M/a/victim"
mv -f "$M/a/outside" "$M/a/victim"
expect_eq "rename over a file" "$(cat "$M/a/victim")" outside
mkdir "$M/d1" "$M/d2"
echo in-d1 >"$M/d1/x"
mv -T "$M/d1" "$M/d2"
[[ ! -e $M/d1 ]] || dl_fail "mv -T left the source"
expect_eq "mv -T onto an empty dir" "$(cat "$M/d2/x")" in-d1
mkdir "$M/d3"
echo y >"$M/d3/y"
if mv -T "$M/d2" "$M/d3" 2>/dev/null; then
	dl_fail "mv -T onto a non-empty directory succeeded"
fi
if mv --help 2>&1 | grep -q -- '--exchange'; then
	echo one >"$M/x1"
	echo two >"$M/x2"
	mv --exchange "$M/x1" "$M/x2"
	expect_eq "exchange (1)" "$(cat "$M/x1")" two
	expect_eq "exchange (2)" "$(cat "$M/x2")" one
	rm "$M/x1" "$M/x2"
else
	dl_log "mv has no --exchange here: that piece is skipped"
fi

# links
ln "$M/a/g" "$M/a/h"
expect_eq "link count" "$(stat -c %h "$M/a/g")" 2
expect_eq "same inode" "$(stat -c %i "$M/a/h")" "$(stat -c %i "$M/a/g")"
echo via-h >"$M/a/h"
expect_eq "write through a hard link" "$(cat "$M/a/g")" via-h
ln -s g "$M/a/sym"
expect_eq "readlink" "$(readlink "$M/a/sym")" g
expect_eq "read via symlink" "$(cat "$M/a/sym")" via-h
expect_eq "backing symlink" "$(readlink "$B/a/sym")" g
rm "$M/a/h"
expect_eq "link count after unlink" "$(stat -c %h "$M/a/g")" 1

# attributes
chmod 640 "$M/a/g"
expect_eq "chmod" "$(stat -c %a "$M/a/g")" 640
expect_eq "chmod (backing)" "$(stat -c %a "$B/a/g")" 640
chown 1234:5678 "$M/a/g"
expect_eq "chown" "$(stat -c %u:%g "$M/a/g")" 1234:5678
expect_eq "chown (backing)" "$(stat -c %u:%g "$B/a/g")" 1234:5678
touch -d '2001-02-03 04:05:06 UTC' "$M/a/g"
expect_eq "mtime" "$(stat -c %Y "$M/a/g")" 981173106
truncate -s 3 "$M/a/g"
expect_eq "truncate down" "$(stat -c %s "$M/a/g")" 3
expect_eq "truncated content" "$(cat "$M/a/g")" via
truncate -s 100000 "$M/a/g"
expect_eq "truncate up" "$(stat -c %s "$M/a/g")" 100000
df "$M" >/dev/null || dl_fail "statfs on the mount failed"

# extended attributes (when the backing file system has user xattrs)
if setfattr -n user.probe -v 1 "$B/a/big" 2>/dev/null; then
	setfattr -x user.probe "$B/a/big"
	setfattr -n user.test -v value "$M/a/g"
	expect_eq "getxattr" "$(getfattr --absolute-names --only-values -n user.test "$M/a/g")" value
	expect_eq "getxattr (backing)" \
		"$(getfattr --absolute-names --only-values -n user.test "$B/a/g")" value
	list=$(getfattr -d -m - --absolute-names "$M/a/g")
	grep -q '^user.test=' <<<"$list" || dl_fail "listxattr misses user.test: $list"
	setfattr -x user.test "$M/a/g"
	if getfattr --absolute-names -n user.test "$M/a/g" >/dev/null 2>&1; then
		dl_fail "user.test still there after removexattr"
	fi
else
	dl_log "the backing file system has no user xattrs: that piece is skipped"
fi
# the virtual names: readable, not listed, not settable or removable
for n in user.dlock.locks user.dlock.waiters user.dlock.token; do
	if [[ $n != user.dlock.token ]]; then # no token: nothing held
		getfattr --absolute-names -n "$n" "$M/a/g" >/dev/null 2>&1 ||
			dl_fail "getfattr -n $n failed"
	fi
	if setfattr -n "$n" -v 1 "$M/a/g" 2>/dev/null; then
		dl_fail "setfattr -n $n was accepted"
	fi
	if setfattr -x "$n" "$M/a/g" 2>/dev/null; then
		dl_fail "setfattr -x $n was accepted"
	fi
done
if setfattr -n user.dlock.status -v 1 "$M" 2>/dev/null; then
	dl_fail "setfattr -n user.dlock.status on the root was accepted"
fi
for f in "$M/a/g" "$M"; do
	list=$(getfattr -d -m - --absolute-names "$f" 2>&1) ||
		dl_fail "listxattr of $f failed: $list"
	if grep -q 'user\.dlock\.' <<<"$list"; then
		dl_fail "listxattr of $f lists a virtual name: $list"
	fi
done
if getfattr -d -m - --absolute-names "$B/a/g" 2>/dev/null | grep -q dlock; then
	dl_fail "a user.dlock.* name was stored in the backing file"
fi

# removal
rm "$M/a/sym" "$M/a/g" "$M/a/big" "$M/a/victim"
rm -r "$M/d2" "$M/d3"
rmdir "$M/a/b/c" "$M/a/b" "$M/a"
expect_eq "mount is empty" "$(ls -A "$M")" ""
expect_eq "backing is empty" "$(ls -A "$B")" ""
dl_umount "$M"
dl_pass
