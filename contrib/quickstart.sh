#!/usr/bin/env bash
# quickstart.sh - install the dependencies, build, and mount a demo dlockfs
# on the embedded local: backend: /srv/dlock-demo (backing) at /mnt/dlock.
# Run it again to remount with a fresh build.  Unmount: fusermount3 -u /mnt/dlock
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

backing=${DLOCK_BACKING:-/srv/dlock-demo}
mnt=${DLOCK_MOUNT:-/mnt/dlock}

bash contrib/deps.sh
[ -d build ] || meson setup build >/dev/null
ninja -C build >/dev/null

if mountpoint -q "$mnt"; then
	fusermount3 -u "$mnt"
fi
mkdir -p "$backing" "$mnt"
./build/fs/dlockfs -o backend=local: "$backing" "$mnt"

# the daemon forks into the background once mounted
for _ in $(seq 100); do
	mountpoint -q "$mnt" && break
	sleep 0.1
done
mountpoint -q "$mnt" || { echo "quickstart: $mnt did not mount" >&2; exit 1; }

cat <<MSG
dlockfs is mounted at $mnt (backing directory $backing, backend local:).
Try:
  flock $mnt/demo.lock -c 'echo holding; sleep 5' &  flock -n $mnt/demo.lock true || echo busy
  getfattr -n user.dlock.locks $mnt/demo.lock
  getfattr -n user.dlock.status $mnt
Unmount with: fusermount3 -u $mnt
MSG
