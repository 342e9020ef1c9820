#!/bin/bash
# sec_escape.sh - issue 9 item 9: names with control bytes (a newline, an
# ESC sequence) in eve's named lock and file name come out of root's
# "dlockctl locks" escaped (\n, \x1b): no fake line, no terminal escape;
# --json keeps the exact names.
# shellcheck disable=SC2154
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../preload/pl_lib.sh"
. "$(dirname "$0")/sec_lib.sh"
sec_init sec_escape

sec_dir base
mkdir -m 1777 "$base/pub"
S=$base/d.sock
pl_agent a local: "$S" "pub=$base/pub"
evil=$'x\nfake 0-EOF host=root pid=1\e[2J\x7f'

sec_hold "$base" as_eve "$DLOCKCTL" --socket "$S" run --lock "$evil" --
as_eve touch "$base/pub/$evil"
sec_hold "$base" as_eve env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$S" DLOCK_PATHS="$base/pub" \
	DLOCK_KERNEL_LOCK=0 flock "$base/pub/$evil"

timeout 10 "$DLOCKCTL" --socket "$S" locks -n >"$base/out"
[[ $(wc -l <"$base/out") -eq 2 ]] || dl_fail "not one line per lock: $(cat -A "$base/out")"
! grep -q $'\e' "$base/out" || dl_fail "an ESC byte reached the terminal: $(cat -A "$base/out")"
! grep -q $'\x7f' "$base/out" || dl_fail "a DEL byte reached the terminal: $(cat -A "$base/out")"
grep -qF 'x\x0afake 0-EOF host=root pid=1\x1b[2J\x7f' "$base/out" ||
	dl_fail "the names are not shown escaped: $(cat -A "$base/out")"
[[ $(grep -c '^name:' "$base/out") -eq 1 && $(grep -c '^pub/' "$base/out") -eq 1 ]] ||
	dl_fail "a forged line: $(cat -A "$base/out")"

timeout 10 "$DLOCKCTL" --socket "$S" --json locks >"$base/json"
EVIL=$evil python3 -c '
import json, os, sys
items = json.load(open(sys.argv[1]))
names = sorted(i["path"] for i in items)
evil = os.environ["EVIL"]
uid = sys.argv[2]
want = sorted(["name:%s/%s" % (uid, evil), "pub/" + evil])
sys.exit(0 if names == want else "json names %r, want %r" % (names, want))
' "$base/json" "$(id -u dlf_eve)" || dl_fail "--json does not keep the names"
dl_pass
