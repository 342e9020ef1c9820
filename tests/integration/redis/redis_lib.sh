# redis_lib.sh - helpers of the Redis backend's integration tests (bash).
#
# Source after ../lib.sh.  It starts real redis-server processes on free
# loopback ports in the test's temporary directories, waits for them with a
# bound, and registers them so lib.sh's EXIT trap kills them (by PID) with
# everything else.  Nothing but 127.0.0.1 is ever used.
#
#   rd_require                  skip (fail in CI) without redis-server
#   rd_start VAR [PORT]         start a server, VAR=its port (PORT: reuse)
#   rd_kill PORT                kill -9 the server on PORT, wait it is gone
#   rd_cli PORT ARGS...         redis-cli against it
#   rd_mount2 BACKING URI       two "hosts" a and b on one backing dir:
#                               sets MA, MB (mount points), PA, PB (pids)

declare -A RD_PID=()

rd_require() {
	dl_require_fuse
	dl_require_prog redis-server redis-cli python3
}

rd_free_port() {
	python3 -c "import socket; s=socket.socket(); s.bind(('127.0.0.1',0)); print(s.getsockname()[1])"
}

rd_ping() { redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null | grep -q PONG; }

rd_start() {
	# no locals named like the caller's variable: printf -v must reach it
	local _rd_var=$1 _rd_port=${2:-} _rd_dir
	[[ -n $_rd_port ]] || _rd_port=$(rd_free_port)
	dl_tmpdir _rd_dir
	redis-server --save '' --appendonly no --dir "$_rd_dir" --bind 127.0.0.1 \
		--port "$_rd_port" --daemonize no >"$_rd_dir/log" 2>&1 &
	RD_PID[$_rd_port]=$!
	dl_job "$!"
	dl_wait_for 10 rd_ping "$_rd_port" ||
		dl_fail "redis-server on port $_rd_port did not answer within 10 s: $(tail -5 "$_rd_dir/log")"
	printf -v "$_rd_var" '%s' "$_rd_port"
	dl_log "redis-server on 127.0.0.1:$_rd_port (pid ${RD_PID[$_rd_port]})"
}

rd_kill() {
	local port=$1 pid=${RD_PID[$1]}
	kill -KILL "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	dl_wait_for 5 dl_not_alive "$pid" || dl_fail "redis-server $pid survived kill -9"
	unset 'RD_PID[$port]'
}

rd_cli() {
	local port=$1
	shift
	redis-cli -h 127.0.0.1 -p "$port" "$@"
}

rd_mount2() {
	local backing=$1 uri=$2 base
	base=$(dirname "$backing")
	MA=$base/mnt-a
	MB=$base/mnt-b
	mkdir -p "$MA" "$MB"
	dl_mount "$backing" "$MA" "backend=$uri,host_id=a"
	PA=$DL_LAST_PID
	dl_mount "$backing" "$MB" "backend=$uri,host_id=b"
	PB=$DL_LAST_PID
}

# rd_xhost ARGS... - run the cross-host driver, echo its output, fail on FAIL
rd_xhost() {
	local out rc=0
	out=$(python3 "$(dirname "$0")/xhost.py" "$@" 2>&1) || rc=$?
	printf '%s\n' "$out" | sed 's/^/  /'
	[[ $rc -eq 0 ]] || dl_fail "xhost.py $1: $(printf '%s\n' "$out" | grep -E '^FAIL' | tr '\n' ';')"
}
