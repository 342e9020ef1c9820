# zk_lib.sh - start and stop a private ZooKeeper server for the dlockfs
# ZooKeeper tests (bash, sourced after ../lib.sh and dl_init).
#
# zk_start starts one standalone server on a free 127.0.0.1 port in a
# temporary directory (tickTime 250 ms, so sessions as short as 500 ms are
# allowed) and waits, bounded, until it answers "ruok".  zk_stop stops it
# (the data directory stays, so zk_start_again brings back the same
# sessions and nodes, as a restarted server would).  The EXIT trap of
# lib.sh kills the server through dl_job, so it never outlives the test.
#
# Sets: ZK_PORT, ZK_PID, ZK_DIR, ZK_URI_HOSTS (127.0.0.1:PORT).

ZK_PID=""
ZK_PORT=""
ZK_DIR=""

zk_free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# zk_4lw WORD - send a four-letter word, print the answer (bounded: 2 s)
zk_4lw() {
	timeout 2 bash -c 'exec 3<>/dev/tcp/127.0.0.1/'"$ZK_PORT"' || exit 1
		printf "%s" "'"$1"'" >&3; cat <&3' 2>/dev/null
}

# "ruok" answers before the server serves requests: wait for "srvr" too
zk_ok() { [[ $(zk_4lw ruok) == imok && $(zk_4lw srvr) == *Mode:* ]]; }

zk_require() {
	dl_require_prog java python3 timeout
	[[ -r /usr/share/java/zookeeper.jar ]] ||
		dl_skip "ZooKeeper is not installed (apt-get install zookeeperd)"
}

# zk_start - a fresh server; fails the test if it does not answer in 30 s
zk_start() {
	zk_require
	if [[ -z $ZK_DIR ]]; then
		dl_tmpdir ZK_DIR
		ZK_PORT=$(zk_free_port)
		mkdir -p "$ZK_DIR/data"
		cat >"$ZK_DIR/zoo.cfg" <<CFG
tickTime=250
dataDir=$ZK_DIR/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
minSessionTimeout=500
maxSessionTimeout=60000
admin.enableServer=false
4lw.commands.whitelist=ruok,stat,srvr,mntr,cons,wchc
CFG
		cat >"$ZK_DIR/log4j.properties" <<'CFG'
log4j.rootLogger=WARN, CONSOLE
log4j.appender.CONSOLE=org.apache.log4j.ConsoleAppender
log4j.appender.CONSOLE.layout=org.apache.log4j.PatternLayout
log4j.appender.CONSOLE.layout.ConversionPattern=%d{ISO8601} %-5p %m%n
CFG
	fi
	ZK_URI_HOSTS=127.0.0.1:$ZK_PORT
	java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
		-Dzookeeper.admin.enableServer=false \
		-Dlog4j.configuration="file:$ZK_DIR/log4j.properties" \
		-cp "$ZK_DIR:/usr/share/java/zookeeper.jar:/usr/share/java/*" \
		org.apache.zookeeper.server.quorum.QuorumPeerMain "$ZK_DIR/zoo.cfg" \
		>>"$ZK_DIR/server.log" 2>&1 &
	ZK_PID=$!
	dl_job "$ZK_PID"
	local i
	for ((i = 0; i < 300; i++)); do
		zk_ok && break
		dl_pid_alive "$ZK_PID" || dl_fail "ZooKeeper exited: $(tail -20 "$ZK_DIR/server.log")"
		sleep 0.1
	done
	zk_ok || dl_fail "ZooKeeper did not answer ruok within 30 s: $(tail -20 "$ZK_DIR/server.log")"
	dl_log "ZooKeeper up on $ZK_URI_HOSTS (pid $ZK_PID)"
}

# zk_stop - kill the server (SIGKILL: a crash, not a clean shutdown)
zk_stop() {
	[[ -n $ZK_PID ]] || return 0
	kill -KILL "$ZK_PID" 2>/dev/null || true
	wait "$ZK_PID" 2>/dev/null || true
	ZK_PID=""
	dl_log "ZooKeeper stopped"
}

# zk_uri [TIMEOUT_MS] - the backend URI of this test's server (a fresh
# chroot per test run, so runs never see each other's nodes)
zk_uri() {
	printf 'zk://%s/dlock-%s?session_timeout_ms=%s' "$ZK_URI_HOSTS" "$$" "${1:-4000}"
}

# zk_mount BACKING MNT HOST [TIMEOUT_MS] [OPTS] - a dlockfs "host" on zk
zk_mount() {
	dl_mount "$1" "$2" "backend=$(zk_uri "${4:-4000}"),host_id=$3${5:+,$5}"
}

# zk_status MNT - the backend_status line of a mount
zk_status() {
	getfattr --only-values -n user.dlock.status "$1" 2>/dev/null |
		sed -n 's/^backend_status=//p'
}

# zk_field MNT NAME - one NAME=value field of zk_status
zk_field() {
	zk_status "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"
}
