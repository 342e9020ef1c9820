#!/usr/bin/env bash
# soak.sh - the fault suite of tests/faults for longer: every fault
# (freeze, partition, kill -9 of workers and of a daemon, backend
# restart) is injected again and again for MINUTES on each backend
# (Redis, then ZooKeeper), with the same three hosts in network
# namespaces, the same workloads and checks, and the same table at the
# end.  Takes about 10 x MINUTES + 2 minutes.  Needs root and a build.
#
#   bash contrib/soak.sh [MINUTES [BUILD_DIR]]     default: 5, ./build
#
# Environment: FL_BACKENDS="redis zk pg", FL_FAULTS="freeze ...", DL_KEEP=1
# (keep the logs), as in tests/faults/faults_lib.sh.  Exit status 0 when
# no row shows a violation, a lost update or a stall.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
minutes=${1:-5}
build=${2:-$top/build}
if ! [[ $minutes =~ ^[1-9][0-9]*$ ]]; then
	echo "usage: $0 [MINUTES [BUILD_DIR]]" >&2
	exit 2
fi
export DLOCKFS=${DLOCKFS:-$build/fs/dlockfs}
if [[ ! -x $DLOCKFS ]]; then
	echo "soak.sh: no daemon at $DLOCKFS: meson setup build && ninja -C build" >&2
	exit 2
fi
export FL_PHASE_SECS=$((minutes * 60))
n=$(wc -w <<<"${FL_FAULTS:-freeze partition kill9_worker kill9_daemon backend_restart}")
b=$(wc -w <<<"${FL_BACKENDS:-redis zk pg}")
echo "soak: $minutes min per fault x $n faults x $b backends" \
	"(about $((minutes * n * b + 2)) min)" >&2
exec bash "$top/tests/faults/run.sh"
