# sec_lib.sh - helpers of the security tests (issue 9; bash); source it
# after ../lib.sh and ../preload/pl_lib.sh.  The tests run as root, play a
# hostile local user (dlf_eve) against root and another user (dlf_bob),
# and check that the attack fails and the others' locks keep working.
#
#   sec_init NAME               dl_init + root check + users + cleanup trap
#   as_eve CMD... / as_bob CMD...  run CMD as that user (setpriv), 90 s at most
#   sec_raw ARGS...             sec_raw.py (the raw-protocol attacker)
#   sec_shim SOCK PATHS CMD...  CMD with the shim, at most 20 s
#   sec_dir VAR                 a temporary directory others can search
#   sec_hold DIR CMD...         run CMD... sh -c 'report; sleep 60' in the
#                               background; return once it reported

SEC_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SEC_CREATED=()
SEC_PY=/usr/bin/python3

sec_no_procs() { ! pgrep -u "$1" >/dev/null; }

sec_users_del() {
	local u
	for u in "${SEC_CREATED[@]}"; do
		pkill -KILL -u "$u" 2>/dev/null # only that test user's processes
		dl_wait_for 5 sec_no_procs "$u"
		userdel "$u" || dl_log "cannot remove user $u"
	done
	[[ -n ${SEC_GROUP_CREATED:-} ]] && groupdel "$SEC_GROUP_CREATED" 2>/dev/null
	return 0
}

sec_user() {
	id -u "$1" >/dev/null 2>&1 && return 0
	useradd --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin "$1" ||
		dl_fail "cannot create user $1"
	SEC_CREATED+=("$1")
}

sec_init() {
	dl_init "$1"
	[[ $(id -u) -eq 0 ]] || dl_skip "the security tests run as root (they create users)"
	dl_require_prog useradd setpriv flock
	[[ -x $SEC_PY ]] || dl_skip "no $SEC_PY for the unprivileged users"
	pl_require
	trap '_sec_rc=$?; (exit $_sec_rc); dl_cleanup; sec_users_del; exit $_sec_rc' EXIT
	sec_user dlf_eve
	sec_user dlf_bob
	if ! getent group dlf_team >/dev/null; then
		groupadd dlf_team || dl_fail "cannot create group dlf_team"
		SEC_GROUP_CREATED=dlf_team
	fi
	usermod -a -G dlf_team dlf_bob || dl_fail "cannot add dlf_bob to dlf_team"
	# the build tree must be readable by the test users
	for f in "$DLOCK_PRELOAD" "$DLOCKCTL"; do
		setpriv --reuid=dlf_eve --regid=dlf_eve --clear-groups test -r "$f" ||
			dl_skip "$f is not readable by other users"
	done
}

as_user() {
	local u=$1
	shift
	timeout 90 setpriv --reuid="$u" --regid="$u" --init-groups --reset-env -- \
		env PATH=/usr/local/bin:/usr/bin:/bin "$@"
}
as_eve() { as_user dlf_eve "$@"; }
as_bob() { as_user dlf_bob "$@"; }

sec_raw() { timeout 60 "$SEC_PY" "$SEC_DIR/sec_raw.py" "$@"; }

sec_shim() {
	local sock=$1 paths=$2
	shift 2
	timeout 20 env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$sock" DLOCK_PATHS="$paths" DLOCK_KERNEL_LOCK=0 "$@"
}

sec_dir() {
	local _d
	dl_tmpdir _d
	chmod 0755 "$_d"
	printf -v "$1" '%s' "$_d"
}

# A fresh fifo per holder: a reused one could pair our read with the
# previous holder's writer, still open after its line, and read its EOF.
SEC_NHOLD=0
sec_hold() {
	local dir=$1 fifo
	shift
	fifo=$dir/held.$((++SEC_NHOLD))
	mkfifo -m 0666 "$fifo"
	"$@" sh -c 'echo held >"$1"; exec sleep 60' _ "$fifo" &
	dl_job "$!"
	read -r -t 10 _ <"$fifo" || dl_fail "holder did not start: $*"
}
