#!/bin/bash
# run.sh - the fault suite of issue 8 (see faults_lib.sh for the topology,
# the faults and the checks): three hosts in network namespaces over one
# shared backing directory, on Redis, ZooKeeper and PostgreSQL, mutex / counter /
# sqlite workloads under a freeze, a partition, kill -9 of workers and of
# a daemon, and a backend restart; plus a negative control without locks.
# Prints the table fault x backend x workload; fails when any fault row
# shows a violation, a lost update or a stall, or the control shows none.
#
# Runs as root (meson test --suite faults, or contrib/soak.sh for the long
# run).  About 3-4 minutes.
set -euo pipefail
. "$(dirname "$0")/faults_lib.sh"
fl_init faults
rc=0
fl_main || rc=$?
[[ $rc -eq 0 ]] || dl_fail "violations, lost updates or stalls: see the table"
dl_pass
