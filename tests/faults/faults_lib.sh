# shellcheck shell=bash
# faults_lib.sh - the harness of the fault suite (issue 8), sourced by
# tests/faults/run.sh (the CI test) and contrib/soak.sh (the long run).
#
# Topology, all made by the test and removed on every exit path:
#
#   netns dlf-srv-PID: lo 10.213.0.1/32 (redis-server, ZooKeeper or
#   PostgreSQL 15 listen here), dlfPIDsN 10.213.N.1/30 ──veth── dlfPIDhN 10.213.N.2/30 in netns
#   dlf-hX-PID, X = A, B, C (N = 1, 2, 3), route 10.213.0.1 via 10.213.N.1.
#
# Each host's dlockfs daemon runs in its host's network namespace only
# (nsenter --net: `ip netns exec` would also give it a private mount
# namespace, and its FUSE mount would be invisible to the workers), all
# three over one shared backing directory.  The workers (worker.py) run in
# the root namespaces and use the three mounts.  Host A is the one the
# faults hit; B and C are the other hosts.
#
# A phase = one fault on one backend: nine workers (mutex, counter,
# sqlite on each host, one file per workload in a fresh directory), the
# fault (repeated until FL_PHASE_SECS have passed; once in CI), after each
# injection a recovery until every worker acknowledged work again (at
# most 20 s, else the row notes "stalled" and fails, with where the
# workers sit and the cluster's locks on stderr), a stop (at most 25 s,
# else "hung"), and check.py's verdict.  Every fault is timed to hit
# while a worker of host A holds each lock: the test raises the gate of
# host A (worker.py; for the first injection before the workers start),
# waits until the three workers of A sit in their critical sections, and
# only then strikes:
#
#   freeze          SIGSTOP of A's daemon; once every thread is stopped the
#                   gate opens (A's workers' next writes queue in FUSE);
#                   lease + 2 s later SIGCONT.  Expected: the queued writes
#                   are refused (EIO), B and C get the locks after the lease.
#   partition       A's veth set down (server side) for lease + 2 s, then
#                   up; the gate opens after that.  Expected: A's writes
#                   refused (EIO), B and C served after the lease.
#   kill9_worker    kill -9 of A's three workers in their critical
#                   sections; new workers of A start (new names).
#   kill9_daemon    kill -9 of A's daemon, fusermount3 -uz of its mount, a
#                   new daemon on the same mount point; A's workers reopen.
#   backend_restart kill -9 of the server, started again on the same
#                   address and data (Redis: appendonly yes, appendfsync
#                   always; ZooKeeper: same dataDir; PostgreSQL: the
#                   postmaster and its backends, then crash recovery).
#
# And once, before the faults, a negative control: the workers without
# locks (sqlite with the unix-none VFS) on the Redis mounts.  The mutex
# and counter checks must find violations and lost updates there, or the
# checker is broken and the suite fails.
#
# Environment: DLOCKFS (the daemon), FL_BACKENDS (default "redis zk pg"),
# FL_FAULTS (default all five, in the order above), FL_PHASE_SECS
# (default 0: one injection per phase), FL_CONTROL=0 skips the negative
# control, FL_TABLE (where the table's rows go), CI (set: a missing
# prerequisite fails instead of skipping), DL_KEEP=1 keeps the logs.

FL_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "$FL_HERE/../integration/lib.sh"

FL_HOSTS=(A B C)
FL_KINDS=(mutex counter sqlite)
FL_FAULTED=A
FL_SRV_ADDR=10.213.0.1
FL_NS_SRV=dlf-srv-$$
declare -A FL_NS=() FL_VETH=() FL_DPID=() FL_WPID=() FL_GEN=() FL_ACK0=()
FL_NETNS=()
FL_SRV_PID=""
FL_PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
FL_PG_USER=${PG_OSUSER:-postgres}
FL_PG_DIR="" # the server's directory (owned by FL_PG_USER, outside FL_BASE)
FL_MOUNTN=0
declare -A FL_NOTE=() FL_HITN=()
FL_INJ=0
FL_HIT=""
FL_BASE=""

fl_now() { local t=${EPOCHREALTIME/./}; echo "${t%???}"; }

# fl_wait SECONDS COMMAND... - poll COMMAND (every 0.1 s) until it
# succeeds; 1 once SECONDS have passed by the clock (dl_wait_for counts
# polls, which stretches when every poll is slow on a loaded machine)
fl_wait() {
	local end=$(($(fl_now) + $1 * 1000))
	shift
	until "$@"; do
		(($(fl_now) < end)) || return 1
		sleep 0.1
	done
}
# fl_step WHAT - a timestamped line on stderr, for the post-mortem
fl_step() { dl_log "[$(($(fl_now) - FL_T0)) ms] $FL_PHASE: $*"; }

# fl_skip REASON - skip (exit 77), or fail when CI is set at all
fl_skip() {
	[[ -z ${CI:-} ]] || dl_fail "cannot run: $* (CI is set, so this is a failure)"
	dl_skip "$*"
}

fl_sleep_ms() { sleep "$(printf '%d.%03d' $(($1 / 1000)) $(($1 % 1000)))"; }

# ---- the EXIT trap: lib.sh's cleanup plus what only we make
fl_cleanup() {
	local rc=$? ns pid pgkids=()
	set +e
	# the PostgreSQL server's backends die with it (dl_cleanup kills the
	# postmaster, a job): note them while they are still its children
	if [[ ${FL_BACKEND:-} == pg && -n ${FL_SRV_PID:-} ]]; then
		mapfile -t pgkids < <(pgrep -P "$FL_SRV_PID")
	fi
	# a stopped daemon can neither unmount nor die by SIGTERM
	for pid in "${FL_DPID[@]}"; do
		kill -CONT "$pid" 2>/dev/null
	done
	(exit "$rc")
	dl_cleanup
	rc=$?
	((${#pgkids[@]} == 0)) || kill -KILL "${pgkids[@]}" 2>/dev/null
	[[ -z $FL_PG_DIR ]] || rm -rf "$FL_PG_DIR"
	for ns in "${FL_NETNS[@]}"; do
		ip netns del "$ns" 2>/dev/null || dl_log "cannot delete netns $ns"
	done
	exit "$rc"
}

fl_init() {
	dl_init "$1"
	trap fl_cleanup EXIT
	[[ $(id -u) == 0 ]] || fl_skip "needs root (network namespaces, FUSE)"
	[[ -c /dev/fuse ]] || fl_skip "/dev/fuse is missing"
	local p
	for p in ip nsenter fusermount3 python3 timeout; do
		command -v "$p" >/dev/null 2>&1 || fl_skip "program '$p' not found"
	done
	# the interpreter itself: a version-manager shim costs seconds per
	# start on a loaded machine
	FL_PY=$(python3 -c 'import sys; print(sys.executable)')
	[[ -n ${DLOCKFS:-} ]] || fl_skip "DLOCKFS is not set (run through meson test)"
	[[ -x $DLOCKFS ]] || dl_fail "DLOCKFS=$DLOCKFS is not executable"
	ip netns list >/dev/null 2>&1 || fl_skip "'ip netns' does not work here"
	dl_tmpdir FL_BASE
	FL_BACKING=$FL_BASE/backing
	mkdir -p "$FL_BACKING" "$FL_BASE/log" "$FL_BASE/ctl"
	FL_TABLE=${FL_TABLE:-$FL_BASE/table.tsv}
	: >"$FL_TABLE"
}

# ---- network namespaces
fl_net_up() {
	local i=0 h ns vs vh
	ip netns add "$FL_NS_SRV" 2>/dev/null ||
		fl_skip "cannot create a network namespace (ip netns add)"
	FL_NETNS+=("$FL_NS_SRV")
	ip -n "$FL_NS_SRV" link set lo up
	ip -n "$FL_NS_SRV" addr add "$FL_SRV_ADDR/32" dev lo
	for h in "${FL_HOSTS[@]}"; do
		i=$((i + 1))
		ns=dlf-h$h-$$
		vs=dlf$$s$i
		vh=dlf$$h$i
		ip netns add "$ns" || dl_fail "ip netns add $ns"
		FL_NETNS+=("$ns")
		FL_NS[$h]=$ns
		FL_VETH[$h]=$vs
		ip link add "$vs" netns "$FL_NS_SRV" type veth peer name "$vh" netns "$ns" ||
			dl_fail "cannot create the veth pair of host $h"
		ip -n "$FL_NS_SRV" addr add "10.213.$i.1/30" dev "$vs"
		ip -n "$FL_NS_SRV" link set "$vs" up
		ip -n "$ns" link set lo up
		ip -n "$ns" addr add "10.213.$i.2/30" dev "$vh"
		ip -n "$ns" link set "$vh" up
		ip -n "$ns" route add "$FL_SRV_ADDR/32" via "10.213.$i.1"
	done
	dl_log "namespaces: $FL_NS_SRV (servers on $FL_SRV_ADDR), ${FL_NS[*]}"
}

# fl_in NS CMD... - run CMD in the network namespace NS only.  Started
# in the background, call nsenter itself (fl_ns NS gives the argument):
# through this function $! would be a subshell's pid, not CMD's.
fl_ns() { echo "--net=/run/netns/$1"; }
fl_in() {
	local ns=$1
	shift
	nsenter --net="/run/netns/$ns" -- "$@"
}

fl_link() { # fl_link HOST up|down - from the server side
	ip -n "$FL_NS_SRV" link set "${FL_VETH[$1]}" "$2"
}

# ---- servers, inside the server namespace
fl_redis_ping() {
	fl_in "$FL_NS_SRV" timeout 2 redis-cli -h "$FL_SRV_ADDR" -p 6379 ping 2>/dev/null |
		grep -q PONG
}

fl_zk_4lw() {
	fl_in "$FL_NS_SRV" timeout 2 bash -c 'exec 3<>/dev/tcp/'"$FL_SRV_ADDR"'/2181 || exit 1
		printf "%s" "'"$1"'" >&3; cat <&3' 2>/dev/null
}
fl_zk_ok() { [[ $(fl_zk_4lw ruok) == imok && $(fl_zk_4lw srvr) == *Mode:* ]]; }

# the server answers a query (not while it recovers from a crash)
fl_pg_ok() {
	[[ $(timeout 2 runuser -u "$FL_PG_USER" -- psql -h "$FL_PG_DIR" -p 5432 -U postgres \
		-d postgres -XAtc 'SELECT 1' 2>/dev/null) == 1 ]]
}

# a fresh cluster in FL_PG_DIR: the role dlt owns database dlt; hosts
# connect over TCP from their namespaces without a password (trust, on
# the test's own 10.213.0.0/16 only)
fl_pg_init() {
	FL_PG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/dlockfs-flpg.XXXXXX")
	chmod 755 "$FL_PG_DIR"
	chown "$FL_PG_USER" "$FL_PG_DIR"
	runuser -u "$FL_PG_USER" -- "$FL_PG_BIN/initdb" -D "$FL_PG_DIR/data" -U postgres \
		-A trust --no-sync >"$FL_PG_DIR/initdb.log" 2>&1 ||
		dl_fail "initdb failed: $(tail -5 "$FL_PG_DIR/initdb.log")"
	echo "host all all 10.213.0.0/16 trust" >>"$FL_PG_DIR/data/pg_hba.conf"
}

# once the fresh server answers: the ordinary role and its database
fl_pg_role() {
	local sql
	for sql in "CREATE ROLE dlt LOGIN" "CREATE DATABASE dlt OWNER dlt"; do
		runuser -u "$FL_PG_USER" -- psql -h "$FL_PG_DIR" -p 5432 -U postgres -d postgres \
			-XqAtc "$sql" >/dev/null 2>&1 || dl_fail "PostgreSQL: $sql failed"
	done
}

fl_srv_require() {
	case $1 in
	redis)
		if ! command -v redis-server >/dev/null 2>&1 ||
			! command -v redis-cli >/dev/null 2>&1; then
			fl_skip "redis-server/redis-cli not found"
		fi
		;;
	zk)
		if ! command -v java >/dev/null 2>&1 ||
			[[ ! -r /usr/share/java/zookeeper.jar ]]; then
			fl_skip "ZooKeeper is not installed (apt-get install zookeeperd)"
		fi
		;;
	pg)
		if [[ ! -x $FL_PG_BIN/postgres ]] || ! id "$FL_PG_USER" >/dev/null 2>&1 ||
			! command -v psql >/dev/null 2>&1; then
			fl_skip "PostgreSQL 15 is not installed (apt-get install postgresql)"
		fi
		;;
	esac
}

# fl_srv_start - start (or restart, on the same address and data) the
# server of FL_BACKEND; waits until it answers, at most 30 s
fl_srv_start() {
	local dir=$FL_BASE/$FL_BACKEND i
	mkdir -p "$dir"
	case $FL_BACKEND in
	redis)
		nsenter "$(fl_ns "$FL_NS_SRV")" -- redis-server --bind "$FL_SRV_ADDR" --port 6379 \
			--protected-mode no --dir "$dir" --save '' \
			--appendonly yes --appendfsync always --daemonize no \
			>>"$dir/server.log" 2>&1 &
		;;
	zk)
		if [[ ! -e $dir/zoo.cfg ]]; then
			mkdir -p "$dir/data"
			cat >"$dir/zoo.cfg" <<CFG
tickTime=250
dataDir=$dir/data
clientPort=2181
clientPortAddress=$FL_SRV_ADDR
maxClientCnxns=0
minSessionTimeout=500
maxSessionTimeout=60000
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr
CFG
		fi
		nsenter "$(fl_ns "$FL_NS_SRV")" -- java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
			-Dzookeeper.admin.enableServer=false \
			-cp "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/*" \
			org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
			>>"$dir/server.log" 2>&1 &
		;;
	pg)
		[[ -n $FL_PG_DIR ]] || fl_pg_init
		# nsenter and setpriv exec: $! is the postmaster
		nsenter "$(fl_ns "$FL_NS_SRV")" -- setpriv --reuid="$FL_PG_USER" \
			--regid="$(id -g "$FL_PG_USER")" --init-groups -- \
			"$FL_PG_BIN/postgres" -D "$FL_PG_DIR/data" -p 5432 -k "$FL_PG_DIR" \
			-c listen_addresses="$FL_SRV_ADDR" -c max_connections=100 \
			>>"$dir/server.log" 2>&1 &
		;;
	esac
	FL_SRV_PID=$!
	dl_job "$FL_SRV_PID"
	fl_wait 30 fl_srv_up ||
		dl_fail "$FL_BACKEND server did not answer within 30 s: $(tail -20 "$dir/server.log")"
	if [[ $FL_BACKEND == pg && ! -e $dir/.role ]]; then
		fl_pg_role
		: >"$dir/.role"
	fi
	dl_log "$FL_BACKEND server up on $FL_SRV_ADDR (pid $FL_SRV_PID)"
}

# fl_srv_up - the server answers; fails the test at once if it died
fl_srv_up() {
	dl_pid_alive "$FL_SRV_PID" ||
		dl_fail "$FL_BACKEND server exited: $(tail -20 "$FL_BASE/$FL_BACKEND/server.log")"
	fl_srv_ok
}

fl_srv_ok() {
	case $FL_BACKEND in
	redis) fl_redis_ping ;;
	zk) fl_zk_ok ;;
	pg) fl_pg_ok ;;
	esac
}

# kill -9 of the server; for PostgreSQL the postmaster's backends too
# (the whole server crashes: none may keep the shared memory attached,
# or the restart refuses to start)
fl_srv_kill() {
	local kids=() pid
	[[ -n $FL_SRV_PID ]] || return 0
	if [[ $FL_BACKEND == pg ]]; then
		mapfile -t kids < <(pgrep -P "$FL_SRV_PID" 2>/dev/null || true)
	fi
	kill -KILL "$FL_SRV_PID" "${kids[@]}" 2>/dev/null || true
	wait "$FL_SRV_PID" 2>/dev/null || true
	dl_wait_for 5 dl_not_alive "$FL_SRV_PID" || dl_fail "server $FL_SRV_PID survived kill -9"
	for pid in "${kids[@]}"; do
		dl_wait_for 5 dl_not_alive "$pid" || dl_fail "server process $pid survived kill -9"
	done
	FL_SRV_PID=""
}


# fl_backend redis|zk|pg - select the backend: URI and lease
fl_backend() {
	FL_BACKEND=$1
	case $1 in
	redis)
		FL_LEASE_MS=3000
		FL_URI="redis://$FL_SRV_ADDR:6379/fl$$?ttl_ms=$FL_LEASE_MS"
		;;
	zk)
		FL_LEASE_MS=4000
		FL_URI="zk://$FL_SRV_ADDR:2181/fl$$?session_timeout_ms=$FL_LEASE_MS"
		;;
	pg)
		FL_LEASE_MS=3000
		FL_URI="postgresql://dlt@$FL_SRV_ADDR:5432/dlt?schema=fl$$&ttl_ms=$FL_LEASE_MS"
		;;
	*) dl_fail "unknown backend $1" ;;
	esac
}

# ---- daemons, each in its host's network namespace
fl_mount() {
	local h=$1 mnt=$FL_BASE/mnt-$1 log pid
	FL_MOUNTN=$((FL_MOUNTN + 1))
	log=$FL_BASE/log/daemon-$h-$FL_MOUNTN.log
	mkdir -p "$mnt"
	nsenter "$(fl_ns "${FL_NS[$h]}")" -- "$DLOCKFS" -f -o "$(dl_mount_opts "backend=$FL_URI,host_id=$h,socket=none")" \
		"$FL_BACKING" "$mnt" >"$log" 2>&1 &
	pid=$!
	DL_PIDS+=("$pid")
	DL_MOUNTS+=("$mnt")
	DL_LOGS+=("$log")
	FL_DPID[$h]=$pid
	fl_wait 20 dl_mounted_or_dead "$mnt" "$pid" ||
		dl_fail "host $h: dlockfs did not mount within 20 s: $(cat "$log")"
	dl_is_mounted "$mnt" || dl_fail "host $h: dlockfs exited instead of mounting: $(cat "$log")"
}

fl_umount() {
	local h=$1 pid=${FL_DPID[$1]}
	fusermount3 -u "$FL_BASE/mnt-$h" || fusermount3 -uz "$FL_BASE/mnt-$h" ||
		dl_fail "cannot unmount host $h"
	dl_wait_for 10 dl_not_alive "$pid" || kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
}

# fl_stopped PID - every thread of PID is stopped (SIGSTOP took effect)
fl_stopped() {
	local f line
	for f in /proc/"$1"/task/*/stat; do
		read -r line <"$f" || return 1
		line=${line##*) }
		[[ ${line%% *} == T ]] || return 1
	done
}

# ---- workers
fl_file() {
	case $1 in
	mutex) echo mutex.dat ;;
	counter) echo counter.dat ;;
	sqlite) echo db.sqlite ;;
	esac
}

fl_log_of() { echo "$FL_CTL/logs/$1-$2-${FL_GEN[$1]}.log"; }

# fl_worker HOST KIND [--nolock] - start the current generation's worker
fl_worker() {
	local h=$1 k=$2
	"$FL_PY" "$FL_HERE/worker.py" "$k" "$FL_BASE/mnt-$h/$FL_PHASE/$(fl_file "$k")" \
		"$(fl_log_of "$h" "$k")" "$FL_CTL" "$h-$k-${FL_GEN[$h]}" "$h" ${3:+"$3"} &
	FL_WPID[$h-$k]=$!
	dl_job "$!"
}

# fl_counts - "HOST-KIND COUNT" of acknowledged records of every current
# worker (one grep for all: this is polled)
fl_counts() {
	local h k files=() f n
	for h in "${FL_HOSTS[@]}"; do
		for k in "${FL_KINDS[@]}"; do
			f=$(fl_log_of "$h" "$k")
			[[ -e $f ]] || : >"$f"
			files+=("$f")
		done
	done
	grep -c '^A ' "${files[@]}" | while IFS=: read -r f n; do
		f=${f##*/}
		echo "${f%-*} $n"
	done
}

# fl_snapshot - remember every current worker's acknowledged count
fl_snapshot() {
	local w n
	while read -r w n; do
		FL_ACK0[$w]=$n
	done < <(fl_counts)
}

# fl_lagging N [KIND...] - the current workers (of KINDs) that have not
# acknowledged N more since the snapshot, comma-separated
fl_lagging() {
	local n=$1 w c out=""
	shift
	while read -r w c; do
		if (($# == 0)) || [[ " $* " == *" ${w#*-} "* ]]; then
			((c >= FL_ACK0[$w] + n)) || out+="${out:+,}$w"
		fi
	done < <(fl_counts)
	echo "$out"
}

# fl_progressed N [KIND...] - every current worker (of KINDs) acknowledged
# N more since the snapshot
fl_progressed() { [[ -z $(fl_lagging "$@") ]]; }

# fl_hold - raise host A's gate (unless up already: a phase raises it
# before its workers start, so that A's first locks are caught) and wait
# (at most 15 s) until each of A's workers sits in its critical section;
# FL_HIT lists the ones that do
fl_hold() {
	local k
	fl_gate
	fl_wait 15 fl_all_holding || true
	FL_HIT=""
	FL_INJ=$((FL_INJ + 1))
	for k in "${FL_KINDS[@]}"; do
		[[ -e $FL_CTL/holding.$FL_FAULTED.$k ]] || continue
		FL_HIT+="${FL_HIT:+,}$k"
		FL_HITN[$k]=$((${FL_HITN[$k]:-0} + 1))
	done
	[[ -n $FL_HIT ]] || FL_HIT=none
}
fl_gate() {
	[[ -e $FL_CTL/gate.$FL_FAULTED ]] && return
	rm -f "$FL_CTL"/holding.*
	: >"$FL_CTL/gate.$FL_FAULTED"
}
fl_all_holding() {
	local k
	for k in "${FL_KINDS[@]}"; do
		[[ -e $FL_CTL/holding.$FL_FAULTED.$k ]] || return 1
	done
}
fl_release() { rm -f "$FL_CTL/gate.$FL_FAULTED"; }

# ---- the faults (host A)
fl_fault_freeze() {
	local pid=${FL_DPID[$FL_FAULTED]}
	fl_hold
	fl_step "holding: $FL_HIT"
	kill -STOP "$pid"
	dl_wait_for 5 fl_stopped "$pid" || dl_fail "daemon $pid did not stop"
	fl_release
	fl_sleep_ms $((FL_LEASE_MS + 2000))
	kill -CONT "$pid"
}

fl_fault_partition() {
	fl_hold
	fl_link "$FL_FAULTED" down
	fl_sleep_ms $((FL_LEASE_MS + 2000))
	fl_link "$FL_FAULTED" up
	fl_release
}

fl_fault_kill9_worker() {
	local k pid
	fl_hold
	for k in "${FL_KINDS[@]}"; do
		pid=${FL_WPID[$FL_FAULTED-$k]}
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	fl_release
	FL_GEN[$FL_FAULTED]=$((FL_GEN[$FL_FAULTED] + 1))
	for k in "${FL_KINDS[@]}"; do
		fl_worker "$FL_FAULTED" "$k"
	done
}

fl_fault_kill9_daemon() {
	local pid=${FL_DPID[$FL_FAULTED]}
	fl_hold
	kill -KILL "$pid"
	wait "$pid" 2>/dev/null || true
	fusermount3 -uz "$FL_BASE/mnt-$FL_FAULTED" || dl_fail "fusermount3 -uz after kill -9"
	fl_release
	fl_mount "$FL_FAULTED"
}

fl_fault_backend_restart() {
	fl_hold
	fl_srv_kill
	fl_release
	fl_srv_start
}

# fl_workers_stop - stop every worker of the phase (bounded: 25 s, then
# kill -9, noted as hung)
fl_workers_stop() {
	local pids=() h k pid
	: >"$FL_CTL/stop"
	rm -f "$FL_CTL"/gate.*
	for h in "${FL_HOSTS[@]}"; do
		for k in "${FL_KINDS[@]}"; do
			pids+=("${FL_WPID[$h-$k]}")
		done
	done
	# longer than a lock request may wait (worker.py's LOCK_BOUND)
	if ! fl_wait 25 dl_all_dead "${pids[@]}"; then
		for h in "${FL_HOSTS[@]}"; do
			for k in "${FL_KINDS[@]}"; do
				pid=${FL_WPID[$h-$k]}
				dl_pid_alive "$pid" || continue
				fl_note hung "$h-$k"
				fl_diag hung "$h-$k"
				kill -KILL "$pid" 2>/dev/null || true
			done
		done
	fi
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
}

# fl_phase_setup NAME - a fresh directory for the phase's shared files
fl_phase_setup() {
	local h
	FL_PHASE=$1
	FL_CTL=$FL_BASE/ctl/$1
	FL_NOTE=()
	FL_HITN=()
	FL_INJ=0
	FL_HIT=-
	mkdir -p "$FL_BACKING/$1" "$FL_CTL/logs"
	: >"$FL_BACKING/$1/mutex.dat"
	: >"$FL_BACKING/$1/counter.dat"
	"$FL_PY" -c 'import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
c.execute("CREATE TABLE t(w TEXT, i INTEGER, PRIMARY KEY (w, i))")
c.commit()' "$FL_BACKING/$1/db.sqlite"
	for h in "${FL_HOSTS[@]}"; do
		FL_GEN[$h]=1
		FL_ACK0[$h-mutex]=0 FL_ACK0[$h-counter]=0 FL_ACK0[$h-sqlite]=0
	done
}

# fl_note WHAT HOST-KIND,... - a note for the rows of those workloads
fl_note() {
	local w
	for w in ${2//,/ }; do
		FL_NOTE[${w#*-}]+="${FL_NOTE[${w#*-}]:+,}$1:${w%%-*}"
	done
}

# fl_diag WHY HOST-KIND,... - for the post-mortem of a stall or a hang:
# where each such worker sits in the kernel (syscall number, wait
# channel) and, for each of their files, the locks and waiters the
# cluster shows (through host B's mount)
fl_diag() {
	local w pid sc wchan k done=" "
	for w in ${2//,/ }; do
		pid=${FL_WPID[$w]}
		sc=$(cut -d' ' -f1 "/proc/$pid/syscall" 2>/dev/null) || sc=gone
		wchan=$(cat "/proc/$pid/wchan" 2>/dev/null) || wchan=gone
		dl_log "$1: $w (pid $pid): syscall=$sc wchan=$wchan"
		k=${w#*-}
		[[ $done == *" $k "* ]] && continue
		done+="$k "
		dl_log "$1: $k locks: $(timeout 5 getfattr --absolute-names --only-values -n user.dlock.locks \
			"$FL_BASE/mnt-B/$FL_PHASE/$(fl_file "$k")" 2>&1 | tr '\n' '|')"
		dl_log "$1: $k waiters: $(timeout 5 getfattr --absolute-names --only-values -n user.dlock.waiters \
			"$FL_BASE/mnt-B/$FL_PHASE/$(fl_file "$k")" 2>&1 | tr '\n' '|')"
	done
}

# fl_rows FAULT FAULTED - check.py's verdict, appended to the table
fl_rows() {
	local fault=$1 faulted=$2 line k hit
	while IFS= read -r line; do
		k=${line%%$'\t'*}
		hit=-
		((FL_INJ == 0)) || hit=${FL_HITN[$k]:-0}/$FL_INJ
		printf '%s\t%s\t%s\t%s\t%s\n' "$fault" "$FL_BACKEND" "$hit" "$line" \
			"${FL_NOTE[$k]:--}" >>"$FL_TABLE"
	done < <("$FL_PY" "$FL_HERE/check.py" "$FL_CTL/logs" "$faulted" \
		"$FL_BACKING/$FL_PHASE/mutex.dat" "$FL_BACKING/$FL_PHASE/counter.dat" \
		"$FL_BACKING/$FL_PHASE/db.sqlite")
}

# fl_phase FAULT - one fault on the current backend (see the header)
fl_phase() {
	local fault=$1 h k t0 t_end n=0 lag
	t0=$(fl_now)
	FL_T0=$t0
	fl_phase_setup "$FL_BACKEND-$fault"
	fl_step "setup done"
	fl_gate
	for h in "${FL_HOSTS[@]}"; do
		for k in "${FL_KINDS[@]}"; do
			fl_worker "$h" "$k"
		done
	done
	fl_step "workers started"
	t_end=$(($(fl_now) + ${FL_PHASE_SECS:-0} * 1000))
	while :; do
		n=$((n + 1))
		"fl_fault_$fault"
		fl_step "fault #$n done (hit: $FL_HIT)"
		fl_snapshot
		# recovery: every worker, on every host, works again
		if ! fl_wait 20 fl_progressed 1; then
			lag=$(fl_lagging 1)
			fl_note "stalled#$n" "$lag"
			fl_diag "stalled#$n" "$lag"
		fi
		fl_step "recovered"
		(($(fl_now) < t_end)) || break
	done
	fl_workers_stop
	fl_step "workers stopped"
	fl_rows "$fault" "$FL_FAULTED"
	dl_log "$FL_BACKEND $fault: $n injection(s), $(( ($(fl_now) - t0) / 1000 )) s"
}

# fl_control - the negative control: no locks at all
fl_control() {
	local h k t0
	t0=$(fl_now)
	fl_phase_setup "$FL_BACKEND-control"
	for h in "${FL_HOSTS[@]}"; do
		for k in "${FL_KINDS[@]}"; do
			fl_worker "$h" "$k" --nolock
		done
	done
	# until the checker sees the races (at most 20 s; else the table
	# says the checker is blind)
	fl_wait 20 fl_control_caught || true
	fl_workers_stop
	FL_HIT=-
	fl_rows control -
	dl_log "$FL_BACKEND control: $(( ($(fl_now) - t0) / 1000 )) s"
}

fl_control_caught() {
	"$FL_PY" "$FL_HERE/check.py" "$FL_CTL/logs" - \
		"$FL_BACKING/$FL_PHASE/mutex.dat" "$FL_BACKING/$FL_PHASE/counter.dat" \
		"$FL_BACKING/$FL_PHASE/db.sqlite" mutex counter |
		awk -F'\t' '($1 == "mutex" && $3 > 0) || ($1 == "counter" && $4 > 0) { n++ }
			END { exit n != 2 }'
}

# fl_backend_run BACKEND - servers, three mounts, the phases, teardown
fl_backend_run() {
	local f h
	fl_backend "$1"
	fl_srv_require "$1"
	fl_srv_start
	for h in "${FL_HOSTS[@]}"; do
		fl_mount "$h"
	done
	if [[ $1 == redis && ${FL_CONTROL:-1} == 1 ]]; then
		fl_control
	fi
	for f in ${FL_FAULTS:-freeze partition kill9_worker kill9_daemon backend_restart}; do
		fl_phase "$f"
	done
	for h in "${FL_HOSTS[@]}"; do
		fl_umount "$h"
	done
	fl_srv_kill
}

# fl_main - everything; prints the table; returns 1 when a row failed
fl_main() {
	local b t0 rc=0
	t0=$(fl_now)
	fl_net_up
	for b in ${FL_BACKENDS:-redis zk pg}; do
		fl_backend_run "$b"
	done
	"$FL_PY" "$FL_HERE/check.py" --table "$FL_TABLE" || rc=1
	dl_log "total $(( ($(fl_now) - t0) / 1000 )) s"
	return "$rc"
}
