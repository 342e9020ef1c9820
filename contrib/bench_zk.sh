#!/usr/bin/env bash
#
# bench_zk.sh - lock costs on the ZooKeeper backend, next to their floor.
#
# Starts a standalone ZooKeeper server on a free loopback port, mounts two
# dlockfs daemons ("hosts" a and b) over one temporary backing directory
# with backend=zk://..., and runs side by side:
#   - lockbench on mount A: uncontended fcntl/flock cycles, same-host
#     ping-pong, the FUSE round-trip floor;
#   - lockbench --pair A B: the cross-host ping-pong handoff (p50/p99);
#   - lockbench --procs 8 A: 8-process throughput on one file and on 8;
#   - zkfloor: a bare libzookeeper_mt client, create EPHEMERAL|SEQUENTIAL
#     + delete per cycle (and the recipe's create + get_children + delete),
#     against the same server; then 8 such clients at once, a session and
#     a parent node each (the floor of 8 processes on 8 files).
# Whatever happens, both mounts are unmounted, our daemons and our
# ZooKeeper are stopped (by PID) and the temporary directory is removed.
#
# usage: contrib/bench_zk.sh [--seconds S]

set -euo pipefail
BENCH_NAME=bench_zk
# shellcheck source=bench_lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/bench_lib.sh"
seconds=3
if [ "${1:-}" = "--seconds" ] && [ -n "${2:-}" ]; then
	seconds=$2
fi

bench_build fs/dlockfs tests/bench/lockbench tests/bench/zkfloor
command -v java >/dev/null && [ -r /usr/share/java/zookeeper.jar ] ||
	{ log "ZooKeeper is missing (contrib/deps.sh: zookeeperd)"; exit 1; }
bench_tmp
mkdir "$tmp/backing" "$tmp/a" "$tmp/b" "$tmp/zk" "$tmp/zk/data"
port=$(bench_free_port)
cat >"$tmp/zk/zoo.cfg" <<CFG
tickTime=500
dataDir=$tmp/zk/data
clientPort=$port
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
CFG
printf '%s\n' 'log4j.rootLogger=WARN, C' \
	'log4j.appender.C=org.apache.log4j.ConsoleAppender' \
	'log4j.appender.C.layout=org.apache.log4j.PatternLayout' >"$tmp/zk/log4j.properties"
java -Xmx512m -Dzookeeper.admin.enableServer=false \
	-Dlog4j.configuration="file:$tmp/zk/log4j.properties" \
	-cp "$tmp/zk:/usr/share/java/zookeeper.jar:/usr/share/java/*" \
	org.apache.zookeeper.server.quorum.QuorumPeerMain "$tmp/zk/zoo.cfg" \
	>"$tmp/zk/log" 2>&1 &
zk_pid=$!
servers+=("$zk_pid")
zk_ask() {
	timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$port"' && printf %s "'"$1"'" >&3 && cat <&3' 2>/dev/null
}
for _ in $(seq 300); do
	zk_ask srvr | grep -q Mode: && break
	kill -0 "$zk_pid" 2>/dev/null || break
	sleep 0.1
done
zk_ask srvr | grep -q Mode: || { log "ZooKeeper did not start:"; tail "$tmp/zk/log" >&2; exit 1; }
log "ZooKeeper (pid $zk_pid) on 127.0.0.1:$port"

uri="zk://127.0.0.1:$port/bench"

bench_two_hosts "$uri" "$seconds"
bench_cache "$uri" "$seconds"
echo "== floor: bare libzookeeper_mt against the same server"
"$build/tests/bench/zkfloor" --seconds "$seconds" --clients 8 "127.0.0.1:$port"
