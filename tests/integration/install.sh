#!/bin/bash
# install.sh - dlockfs as an operator installs and starts it (issue 13):
#  - DESTDIR=... meson install: dlockfs in sbin, dlockctl in bin, the shim
#    in LIBDIR/dlockfs/, man pages, unit files, the example config (0600);
#    both binaries print the project's version;
#  - the same into the real prefix (files this test added are removed at
#    the end; skipped if any of them was already there);
#  - mount -t fuse.dlockfs (through mount.fuse3) with the options mount(8)
#    and fstab add, umount stops the daemon;
#  - an fstab file (mount -T FILE) whose Redis URI has three nodes, the
#    commas spelled \, as documented;
#  - the daemon itself accepts mount(8)'s own options, still refuses an
#    unknown one with one line and exit 2, and takes log_level;
#  - the units pass systemd-analyze verify; the config-file form of the
#    template unit (backing and mountpoint in the file) mounts and tells
#    NOTIFY_SOCKET "READY=1" only once the mount is there, "STOPPING=1"
#    on SIGTERM.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/redis/redis_lib.sh"
dl_init install
rd_require
dl_require_prog meson python3 flock systemd-analyze mount.fuse3
[[ -n ${MESON_BUILD:-} && -d $MESON_BUILD ]] || dl_fail "MESON_BUILD (the build dir) is not set"

dl_tmpdir base
version=$(meson introspect --projectinfo "$MESON_BUILD" |
	python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])')
dl_log "project version $version"

# ---- DESTDIR install: the layout
dest=$base/dest
DESTDIR=$dest meson install -C "$MESON_BUILD" --no-rebuild --quiet >"$base/install.log" 2>&1 ||
	dl_fail "DESTDIR install failed: $(tail -5 "$base/install.log")"
prefix=$(meson introspect --buildoptions "$MESON_BUILD" |
	python3 -c 'import json, sys; print([o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"][0])')
want=(
	"sbin/dlockfs"
	"bin/dlockctl"
	"share/man/man8/dlockfs.8"
	"share/man/man8/dlockctl.8"
	"share/man/man8/libdlock_preload.8"
	"share/man/man5/dlockfs.conf.5"
	"etc/dlockfs/dlockfs.conf.example"
)
for f in "${want[@]}"; do
	[[ -f $dest$prefix/$f ]] || dl_fail "not installed: $prefix/$f ($(cd "$dest" && find . -type f | tr '\n' ' '))"
done
shim=$(cd "$dest" && find . -path '*/dlockfs/libdlock_preload.so' | head -1)
[[ -n $shim && $shim == .$prefix/lib*/dlockfs/libdlock_preload.so ]] ||
	dl_fail "the shim is not in LIBDIR/dlockfs/: '$shim'"
units=$(cd "$dest" && find . -name 'dlockfs@.service' -o -name 'dlockfs-agent.service' | sort)
[[ $(wc -l <<<"$units") == 2 ]] || dl_fail "unit files not installed: '$units'"
mode=$(stat -c %a "$dest$prefix/etc/dlockfs/dlockfs.conf.example")
[[ $mode == 600 ]] || dl_fail "the example config is installed $mode, not 600"
for b in "sbin/dlockfs" "bin/dlockctl"; do
	out=$("$dest$prefix/$b" --version)
	[[ $out == "$(basename "$b") $version" ]] || dl_fail "$b --version says '$out', not '$(basename "$b") $version'"
done
grep -q "ExecStart=$prefix/sbin/dlockfs " "$dest"/$(sed -n 1p <<<"$units") ||
	dl_fail "the unit does not start $prefix/sbin/dlockfs"

# ---- the daemon takes what mount(8) adds, refuses what nobody knows
dl_tmpdir w
mkdir -p "$w/backing" "$w/mnt"
for o in rw,dev,suid,exec _netdev,nofail,noauto,auto,defaults user,users,nouser \
	x-systemd.requires=redis.service,x-systemd.automount comment=dlock log_level=warning; do
	dl_mount "$w/backing" "$w/mnt" "backend=local:,host_id=opt,socket=none,$o"
	dl_umount "$w/mnt"
done
for o in bogus log_level=loud paths=relative shared_names=x max_conns_per_uid=abc; do
	rc=0
	err=$(timeout -k 2 20 "$DLOCKFS" -f -o "backend=local:,socket=none,$o" \
		"$w/backing" "$w/mnt" 2>&1 >/dev/null) || rc=$?
	[[ $rc == 2 && $(wc -l <<<"$err") == 1 ]] ||
		dl_fail "-o $o: exit $rc, want 2 and one line; got: '$err'"
	dl_is_mounted "$w/mnt" && dl_fail "-o $o mounted"
done
# log_level=err: not even the start-up lines
dl_mount "$w/backing" "$w/mnt" "backend=local:,host_id=quiet,socket=none,log_level=err"
dl_umount "$w/mnt"
[[ ! -s ${DL_LOGS[-1]} ]] || dl_fail "log_level=err still logs: $(head -3 "${DL_LOGS[-1]}")"

# ---- systemd: the units verify; readiness through NOTIFY_SOCKET
for u in $units; do
	inst=$base/verify/$(basename "$u")
	mkdir -p "$base/verify"
	# the template's instance, checked as the unit systemd would load
	[[ $inst == *@.service ]] && inst=${inst%@.service}@data.service
	sed "s|$prefix/sbin/dlockfs|$DLOCKFS|" "$dest/$u" >"$inst"
	out=$(systemd-analyze verify --man=no "$inst" 2>&1) ||
		dl_fail "systemd-analyze verify $(basename "$inst"): $out"
	[[ -z $out ]] || dl_fail "systemd-analyze verify $(basename "$inst") warns: $out"
done
dl_log "units verified: $(tr '\n' ' ' <<<"$units")"

conf=$w/data.conf
printf 'backing = %s\nmountpoint = %s\nbackend = local:\nhost_id = unit\n' \
	"$w/backing" "$w/mnt" >"$conf"
notify=$w/notify.sock
python3 - "$notify" "$w/notes" "$w/mnt" <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(30)
with open(sys.argv[2], "w") as out:
    while True:
        try:
            msg = s.recv(4096).decode()
        except socket.timeout:
            break
        # was the mount there when READY came?
        mounted = any(l.split()[4] == sys.argv[3]
                      for l in open("/proc/self/mountinfo"))
        out.write("%s mounted=%d\n" % (msg.replace("\n", "|"), mounted))
        out.flush()
        if "STOPPING=1" in msg:
            break
PY
dl_job $!
dl_wait_for 10 test -S "$notify" || dl_fail "the notify socket did not appear"
NOTIFY_SOCKET=$notify "$DLOCKFS" -f -o "config=$conf,socket=none" >"$w/unit.log" 2>&1 &
upid=$!
DL_PIDS+=("$upid")
DL_MOUNTS+=("$w/mnt")
dl_wait_for 10 grep -q READY=1 "$w/notes" || dl_fail "no READY=1: $(cat "$w/unit.log")"
grep -q "READY=1.*MAINPID=$upid.*mounted=1" "$w/notes" ||
	dl_fail "READY=1 before the mount, or from another pid: $(cat "$w/notes")"
flock -n "$w/mnt/f" true || dl_fail "no lock through the config-file mount"
kill -TERM "$upid"
dl_wait_for 10 dl_not_alive "$upid" || dl_fail "the daemon did not stop on SIGTERM"
dl_wait_for 10 grep -q STOPPING=1 "$w/notes" || dl_fail "no STOPPING=1: $(cat "$w/notes")"
dl_is_mounted "$w/mnt" && dl_fail "still mounted after SIGTERM"
dl_log "notifications: $(tr '\n' ' ' <<<"$(cat "$w/notes")")"

# ---- the real prefix: mount -t fuse.dlockfs and fstab need dlockfs on
# mount.fuse3's PATH
mapfile -t installed < <(meson introspect --installed "$MESON_BUILD" |
	python3 -c 'import json, sys; [print(v) for v in json.load(sys.stdin).values()]')
for f in "${installed[@]}"; do
	[[ -e $f ]] && dl_skip "$f is already installed: not touching the real prefix"
done
# remove exactly what we add, and the directories we made, at exit
made_dirs=()
for f in "${installed[@]}"; do
	d=$(dirname "$f")
	while [[ ! -d $d ]]; do
		made_dirs+=("$d")
		d=$(dirname "$d")
	done
done
uninstall() {
	local rc=$? d
	set +e
	rm -f -- "${installed[@]}"
	# deepest first
	while read -r d; do
		rmdir -- "$d" 2>/dev/null
	done < <(printf '%s\n' "${made_dirs[@]}" | sort -u | awk '{ print length, $0 }' |
		sort -rn | cut -d' ' -f2-)
	(exit "$rc")
	dl_cleanup
}
trap 'uninstall' EXIT
meson install -C "$MESON_BUILD" --no-rebuild --quiet >"$base/install2.log" 2>&1 ||
	dl_fail "install into $prefix failed: $(tail -5 "$base/install2.log")"
dl_log "installed into $prefix: ${#installed[@]} files"

# the daemon of a mount made by mount(8): it detaches, so find it
mount_pid() { pgrep -f -n -- "dlockfs $1 $2" || true; }

mkdir -p "$w/m2"
mount -t fuse.dlockfs "$w/backing" "$w/m2" \
	-o "backend=local:,host_id=mt,socket=none,_netdev,nofail,x-systemd.requires=x.service" ||
	dl_fail "mount -t fuse.dlockfs failed"
DL_MOUNTS+=("$w/m2")
grep -q " $w/m2 fuse.dlockfs " /proc/mounts || dl_fail "not a fuse.dlockfs mount: $(grep " $w/m2 " /proc/mounts)"
mpid=$(mount_pid "$w/backing" "$w/m2")
[[ -n $mpid ]] && DL_PIDS+=("$mpid")
flock -n "$w/m2/f" true || dl_fail "no lock through mount -t"
umount "$w/m2" || dl_fail "umount failed"
[[ -z $mpid ]] || dl_wait_for 10 dl_not_alive "$mpid" || dl_fail "the daemon outlived umount"

# fstab: a Redis URI with three nodes (Redlock), commas spelled \,
rd_start p1
rd_start p2
rd_start p3
fstab=$w/fstab
printf '%s %s fuse.dlockfs backend=redis://127.0.0.1:%s\\,127.0.0.1:%s\\,127.0.0.1:%s/inst,host_id=fstab,socket=none,_netdev,nofail 0 0\n' \
	"$w/backing" "$w/m2" "$p1" "$p2" "$p3" >"$fstab"
dl_log "fstab: $(cat "$fstab")"
mount -T "$fstab" "$w/m2" || dl_fail "mount -T $fstab failed"
mpid=$(mount_pid "$w/backing" "$w/m2")
[[ -n $mpid ]] && DL_PIDS+=("$mpid")
status=$(getfattr --absolute-names --only-values -n user.dlock.status "$w/m2")
for p in "$p1" "$p2" "$p3"; do
	[[ $status == *"127.0.0.1:$p"* ]] || dl_fail "node $p not in the status: $status"
done
flock -n "$w/m2/f" true || dl_fail "no lock through the fstab mount"
keys=$(rd_cli "$p2" --scan --pattern 'inst*' | wc -l)
dl_log "status: $status; keys on node 2 after a lock: $keys"
umount "$w/m2" || dl_fail "umount of the fstab mount failed"
[[ -z $mpid ]] || dl_wait_for 10 dl_not_alive "$mpid" || dl_fail "the daemon outlived umount"
dl_pass
