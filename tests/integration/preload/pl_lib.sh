# pl_lib.sh - helpers of the shim's integration tests (bash); source it
# after ../lib.sh.  Agents ("hosts") are `dlockfs --agent -f` processes with
# their socket in the test's temporary directory; redis-server runs on a
# free 127.0.0.1 port.  Both are registered with lib.sh, so its EXIT trap
# kills them (by PID) whatever happens.
#
#   pl_require                  DLOCKCTL and DLOCK_PRELOAD must be set
#   pl_agent NAME URI SOCK [PATHS [OPTS]]  start host NAME on backend URI
#                               at SOCK; PATHS: its paths= (the files it
#                               names), default: all of $TMPDIR, named as
#                               is; OPTS: more -o options
#   pl_stop NAME                SIGTERM it and require exit status 0
#   pl_redis VAR                start redis-server, VAR=its port
#   pl_shim SOCK PATHS CMD...   run CMD with the shim for SOCK and PATHS

declare -A PL_PID=()
PL_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

pl_require() {
	dl_require_driver
	[[ -n ${DLOCKFS:-} && -x ${DLOCKFS:-} ]] || dl_skip "DLOCKFS is not set (run through meson test)"
	[[ -n ${DLOCKCTL:-} && -x ${DLOCKCTL:-} ]] || dl_skip "DLOCKCTL is not set (run through meson test)"
	[[ -n ${DLOCK_PRELOAD:-} && -f ${DLOCK_PRELOAD:-} ]] || dl_skip "DLOCK_PRELOAD is not set"
}

pl_up() { "$DLOCKCTL" --socket "$1" status >/dev/null 2>&1; }

pl_agent() {
	local name=$1 uri=$2 sock=$3 paths=${4:-${TMPDIR:-/tmp}} opts=${5:-} log
	opts=$(dl_mount_opts "$opts")
	log=$(mktemp "${TMPDIR:-/tmp}/dlockfs-it-log.XXXXXX")
	DL_LOGS+=("$log")
	"$DLOCKFS" --agent -f -o "backend=$uri,host_id=$name,socket=$sock,paths=$paths${opts:+,$opts}" >"$log" 2>&1 &
	PL_PID[$name]=$!
	dl_job "$!"
	dl_wait_for 10 pl_up "$sock" ||
		dl_fail "agent $name did not serve $sock within 10 s: $(cat "$log")"
	dl_log "agent $name (pid ${PL_PID[$name]}) on $sock, backend $uri"
}

pl_stop() {
	local name=$1 pid=${PL_PID[$1]} rc=0
	kill -TERM "$pid"
	dl_wait_for 10 dl_not_alive "$pid" || dl_fail "agent $name still runs 10 s after SIGTERM"
	wait "$pid" || rc=$?
	[[ $rc -eq 0 ]] || dl_fail "agent $name exited with status $rc"
	unset 'PL_PID[$name]'
}

pl_ping() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

pl_redis() {
	local _pl_var=$1 _pl_port _pl_dir
	dl_require_prog redis-server redis-cli python3
	_pl_port=$(python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])")
	dl_tmpdir _pl_dir
	redis-server --port "$_pl_port" --bind 127.0.0.1 --save '' --appendonly no \
		--dir "$_pl_dir" >"$_pl_dir/log" 2>&1 &
	dl_job "$!"
	dl_wait_for 10 pl_ping "$_pl_port" ||
		dl_fail "redis-server on port $_pl_port did not answer: $(tail -5 "$_pl_dir/log")"
	printf -v "$_pl_var" '%s' "$_pl_port"
}

pl_shim() {
	local sock=$1 paths=$2
	shift 2
	LD_PRELOAD=$DLOCK_PRELOAD DLOCK_SOCKET=$sock DLOCK_PATHS=$paths "$@"
}

# pl_py SCENARIO ARGS... - run pl_check.py; its FAIL lines fail the test
pl_py() {
	python3 "$PL_DIR/pl_check.py" "$@" || dl_fail "pl_check.py $1 failed (see above)"
}
