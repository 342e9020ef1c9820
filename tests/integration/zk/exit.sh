#!/bin/bash
# exit.sh - a daemon ends at once when it is unmounted while its lease
# thread sends a heartbeat.  The lease thread drops its mutex to send one;
# a stop broadcast meanwhile woke nobody, and the thread then slept a
# whole period (session timeout / 5: 12 s here) before it saw the stop
# (zk_cancel's "still runs 10 s after unmounting", 2 runs in 80).  The
# test hook DLOCKFS_TEST_ZK_HB_PAUSE_MS widens that moment to 3 s and logs
# its start; the test unmounts inside it, and dl_umount requires the
# daemon gone within 10 s.
set -euo pipefail
here=$(dirname "$0")
. "$here/../lib.sh"
. "$here/zk_lib.sh"
dl_init zk_exit
dl_require_fuse
zk_start

dl_tmpdir base
mkdir "$base/backing" "$base/a"
DLOCKFS_TEST_ZK_HB_PAUSE_MS=3000 zk_mount "$base/backing" "$base/a" a 60000
log=${DL_LOGS[-1]}
pausing() { grep -q "heartbeat sent, pausing" "$log"; }
dl_wait_for 15 pausing || dl_fail "host a sent no heartbeat"
dl_umount "$base/a"
dl_log "the daemon ended within 10 s of an unmount during a heartbeat"
dl_pass
