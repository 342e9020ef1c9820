#!/bin/bash
# zk_poke.sh - the ZooKeeper backend's poke and cb->revoke, driven through
# backend.h by zk_poke.c (no FUSE) against a private ZooKeeper server.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/zk_lib.sh"
dl_init zk_poke
[[ -n ${ZK_POKE:-} ]] || dl_skip "ZK_POKE is not set (run through meson test)"
zk_start
# the driver bounds every wait itself; timeout is the last resort
timeout 120 "$ZK_POKE" "$ZK_URI_HOSTS" || dl_fail "zk_poke failed"
dl_pass
