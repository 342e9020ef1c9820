#!/bin/bash
# perms.sh - with allow_other,default_permissions other users get what
# the backing filesystem (a directory on the host's own filesystem, the
# reference) gives them (issue 9, item 12b):
#  - a non-owner's write or truncate of a root-owned 04777/02777/06777
#    file succeeds and clears the set-id bits as the kernel does (S_ISGID
#    only with group execute);
#  - an owner may give its file to one of its supplementary groups, and a
#    supplementary group's permissions count when creating a file;
#  - a directory with read but no search permission can be opened and
#    listed.
# Runs as root; creates the users dlf_pu1 (also in group dlf_pg2) and
# dlf_pu2 when they do not exist, and removes only those it created.
# dl_tmpdir assigns through printf -v; single quotes are meant literally
# shellcheck disable=SC2154,SC2016
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"
dl_init perms
dl_require_fuse
dl_require_prog /usr/bin/python3 runuser useradd userdel groupadd groupdel
[[ $(id -u) -eq 0 ]] || dl_skip "needs root (creates users)"

U1=dlf_pu1 U2=dlf_pu2 G2=dlf_pg2
MADE_USERS=() MADE_GROUPS=()
perms_cleanup() {
	dl_cleanup # first, while $? is the script's exit status; sets +e
	local rc=$? u g
	for u in "${MADE_USERS[@]}"; do userdel "$u" 2>/dev/null || dl_log "cannot remove user $u"; done
	for g in "${MADE_GROUPS[@]}"; do groupdel "$g" 2>/dev/null || dl_log "cannot remove group $g"; done
	exit "$rc"
}
trap perms_cleanup EXIT

if ! getent group "$G2" >/dev/null; then
	groupadd "$G2" || dl_fail "groupadd $G2"
	MADE_GROUPS+=("$G2")
fi
for u in "$U1" "$U2"; do
	getent passwd "$u" >/dev/null && continue
	useradd -M -N -g users -s /usr/sbin/nologin "$u" || dl_fail "useradd $u"
	MADE_USERS+=("$u")
done
usermod -a -G "$G2" "$U1" || dl_fail "usermod -a -G $G2 $U1"
id "$U1" | grep -q "($G2)" || dl_fail "$U1 is not in $G2: $(id "$U1")"

dl_tmpdir base
R="$base/ref" B="$base/backing" M="$base/mnt"
mkdir "$R" "$B" "$M"
chmod 0755 "$base" "$R" "$B" "$M"
dl_mount "$B" "$M" allow_other,default_permissions,socket=none

# as USER, run the python snippet on DIR; prints one line per case
as() { # USER DIR CODE
	(cd / && runuser -u "$1" -- /usr/bin/python3 -c "$3" "$2")
}
PY_HEAD='
import errno, grp, os, stat, sys
d = sys.argv[1]
def res(f, *a):
    try:
        r = f(*a)
        if isinstance(r, int) and f is os.open:
            os.close(r)
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
def mode(p):
    return "%04o" % stat.S_IMODE(os.stat(p).st_mode)
'

# setup DIR - root's files for the cases
setup() {
	local d=$1 m
	for m in 4777 2777 6777 2767 4755; do
		printf 'data\n' >"$d/w$m"
		printf 'data\n' >"$d/t$m"
		chmod "$m" "$d/w$m" "$d/t$m"
	done
	: >"$d/mine"
	chown "$U1:users" "$d/mine"
	mkdir "$d/gdir"
	chown "root:$G2" "$d/gdir"
	chmod 0770 "$d/gdir"
	mkdir "$d/rd"
	: >"$d/rd/inside"
	chmod 0704 "$d/rd"
}

# run_cases DIR - every case, one line each
run_cases() {
	local d=$1
	as "$U2" "$d" "$PY_HEAD"'
for m in ("4777", "2777", "6777", "2767", "4755"):
    p = "%s/w%s" % (d, m)
    def w():
        fd = os.open(p, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
    print("write by non-owner", m, res(w), mode(p))
    p = "%s/t%s" % (d, m)
    print("truncate by non-owner", m, res(os.truncate, p, 1), mode(p))
'
	as "$U1" "$d" "$PY_HEAD"'
p = d + "/mine"
g2 = grp.getgrnam("'"$G2"'").gr_gid
print("chgrp to a supplementary group", res(os.chown, p, -1, g2),
      grp.getgrgid(os.stat(p).st_gid).gr_name)
print("chgrp to a foreign group", res(os.chown, p, -1, 0),
      grp.getgrgid(os.stat(p).st_gid).gr_name)
p = d + "/gdir/new"
print("create in a supplementary group dir", res(os.open, p, os.O_CREAT | os.O_WRONLY, 0o644))
print("unlink in a supplementary group dir", res(os.unlink, p))
print("open a read-only dir", res(os.open, d + "/rd", os.O_RDONLY))
print("open a read-only dir O_DIRECTORY", res(os.open, d + "/rd", os.O_RDONLY | os.O_DIRECTORY))
try:
    print("list a read-only dir", sorted(os.listdir(d + "/rd")))
except OSError as e:
    print("list a read-only dir", errno.errorcode[e.errno])
print("open a file in it", res(os.open, d + "/rd/inside", os.O_RDONLY))
'
}

setup "$R"
setup "$B"
dl_log "the cases on the reference directory and on the mount"
run_cases "$R" >"$base/ref.out" 2>&1 || dl_fail "the cases failed on the reference: $(cat "$base/ref.out")"
run_cases "$M" >"$base/mnt.out" 2>&1 || dl_fail "the cases failed on the mount: $(cat "$base/mnt.out")"
paste -d '\n' "$base/ref.out" "$base/mnt.out" | sed 's/^/  /' >&2
diff -u "$base/ref.out" "$base/mnt.out" >&2 ||
	dl_fail "the mount's permissions differ from the reference"
dl_umount "$M"
dl_pass
