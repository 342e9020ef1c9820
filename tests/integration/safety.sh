#!/usr/bin/env bash
# safety.sh - the no-fault checks of issue 8 on every backend (local:,
# Redis, ZooKeeper), through real mounts; safety.py does the work.
#  - three hosts x one counter file for SAFETY_SECONDS (20; more for a
#    soak): no EDEADLK, no lost increment (hosts of one backend share one
#    backing directory;
#    local: is one host, so there it is three processes on one mount);
#  - two hosts close a two-owner cycle at the same instant, 20 times:
#    exactly one EDEADLK each time (each host its own backing directory,
#    so only the backend makes them exclude each other);
#  - threads mixing OFD and classic POSIX locks: no EDEADLK, as on ext4.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
. "$here/redis/redis_lib.sh"
. "$here/zk/zk_lib.sh"
dl_init safety
dl_require_fuse
rd_require
zk_require
secs=${SAFETY_SECONDS:-20}
py() { python3 "$here/safety.py" "$@"; }

dl_tmpdir T
rd_start RPORT
zk_start
redis_uri="redis://127.0.0.1:$RPORT/s$$?ttl_ms=3000"

# mount HOSTS... on backend $1 over backing dir $2 (one per host if "own")
mounts=()
mount_hosts() { # BACKEND_URI NAME SHARED(yes|own) HOST...
	local uri=$1 name=$2 shared=$3 h b
	shift 3
	mounts=()
	for h in "$@"; do
		b=$T/$name-backing
		[[ $shared == own ]] && b=$T/$name-backing-$h
		mkdir -p "$b" "$T/$name-$h"
		dl_mount "$b" "$T/$name-$h" "backend=$uri,host_id=$h,socket=none"
		mounts+=("$T/$name-$h")
	done
}

# -- no false EDEADLK, all backends at once
mkdir -p "$T/local-backing" "$T/local-a"
dl_mount "$T/local-backing" "$T/local-a" "backend=local:,host_id=l,socket=none"
mount_hosts "$redis_uri" rnf yes a b c
rn=("${mounts[@]}")
mount_hosts "$(zk_uri 4000)" znf yes a b c
zn=("${mounts[@]}")
pids=()
py nofault "$secs" "$T/local-a/n" "$T/local-a/n" "$T/local-a/n" >"$T/nf-local" 2>&1 &
pids+=($!)
py nofault "$secs" "${rn[0]}/n" "${rn[1]}/n" "${rn[2]}/n" >"$T/nf-redis" 2>&1 &
pids+=($!)
py nofault "$secs" "${zn[0]}/n" "${zn[1]}/n" "${zn[2]}/n" >"$T/nf-zk" 2>&1 &
pids+=($!)
for p in "${pids[@]}"; do dl_job "$p"; done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
for b in local redis zk; do
	sed "s/^/  $b: /" "$T/nf-$b"
done
[[ $rc -eq 0 ]] || dl_fail "no-fault run: $(grep -h '^FAIL' "$T"/nf-* | tr '\n' ';')"

# -- a cycle closed by two hosts at once: exactly one EDEADLK
for b in redis zk; do
	if [[ $b == redis ]]; then uri=$redis_uri; else uri=$(zk_uri 4000); fi
	mount_hosts "$uri" "cy$b" own a b
	out=$(py cycle 20 "${mounts[0]}/c" "${mounts[1]}/c" 2>&1) ||
		dl_fail "$b: $(printf '%s\n' "$out" | grep FAIL)"
	printf '  %s: %s\n' "$b" "$out"
done

# -- OFD and classic waits of one process: as on ext4, never EDEADLK
mkdir -p "$T/ref"
for m in "$T/local-a" "${rn[0]}" "${zn[0]}"; do
	out=$(py mixed "$m/mixed" "$T/ref/mixed" 2>&1) ||
		dl_fail "$m: $(printf '%s\n' "$out" | grep FAIL)"
	printf '  %s: %s\n' "$(basename "$m")" "$out"
done
dl_pass
