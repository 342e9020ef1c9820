#!/bin/bash
# zk_version.sh - the ZooKeeper backend's version and bump (optimistic
# concurrency), driven through backend.h by zk_version.c (no FUSE) against
# a private ZooKeeper server, which the driver kills at its end to see
# both calls fail with ENOLCK.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/zk_lib.sh"
dl_init zk_version
[[ -n ${ZK_VERSION:-} ]] || dl_skip "ZK_VERSION is not set (run through meson test)"
zk_start
# the driver bounds every wait itself; timeout is the last resort
timeout 60 "$ZK_VERSION" "$ZK_URI_HOSTS" "$ZK_PID" || dl_fail "zk_version failed"
zk_stop
dl_pass
