#!/usr/bin/env bash
# deps.sh - install what dlockfs needs to build and test, from Debian 12's
# archive.  Idempotent and quiet: does nothing when everything is there.
set -euo pipefail

pkgs=(gcc libc6-dev pkg-config meson ninja-build fuse3 libfuse3-dev check
      clang-format git
      util-linux attr sqlite3 python3 perl libhiredis-dev redis-server
      iproute2 passwd procps libmount-dev uthash-dev
      libzookeeper-mt-dev zookeeperd default-jre-headless
      postgresql libpq-dev pgbouncer
      mandoc libjansson-dev libmicrohttpd-dev libsystemd-dev
      python3-prometheus-client bash-completion)

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
		missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps.sh: missing packages: ${missing[*]} (run as root to install)" >&2
	exit 1
fi
echo "deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
