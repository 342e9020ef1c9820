#!/bin/bash
# ctl_completion.sh - the bash completion of dlockctl and dlockfs: source
# it with bash-completion's helpers and call the functions as bash would.
set -euo pipefail
# shellcheck source=../lib.sh
. "$(dirname "$0")/../lib.sh"
dl_init ctl_completion

BC=/usr/share/bash-completion/bash_completion
[[ -r $BC ]] || dl_skip "bash-completion ($BC) is not installed"
dir=${DLOCK_COMPLETION_DIR:-$(dirname "$0")/../../../contrib/bash-completion}
[[ -r $dir/dlockctl && -r $dir/dlockfs ]] || dl_fail "no completion files in $dir"

# [LINE=COMP_LINE] complete FUNC WORD... - the candidates for the last
# WORD, one a line.
# The WORDs are COMP_WORDS as they are: no word breaks at = or : (the
# default breaks are checked with words split as bash splits them).
# compopt complains outside a real completion: its stderr is dropped.
complete_words() {
	local fn=$1
	shift
	bash --norc --noprofile -c '
		. "$1"; . "$2"; . "$3"; fn=$4; shift 4
		[[ ${BREAKS+set} ]] && COMP_WORDBREAKS=$BREAKS
		COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
		COMP_LINE=${LINE:-$*}; COMP_POINT=${#COMP_LINE}
		"$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
		printf "%s\n" "${COMPREPLY[@]}"' _ "$BC" "$dir/dlockctl" "$dir/dlockfs" "$fn" "$@" 2>/dev/null
}
export BREAKS=$' \t\n"\'><;|&('

# expect WANT FUNC WORD... - WANT is among the candidates
expect() {
	local want=$1 got
	shift
	got=$(complete_words "$@") || dl_fail "completion of '${*:2}' failed"
	grep -qxF -- "$want" <<<"$got" || dl_fail "completing '${*:2}' does not offer '$want': $(tr '\n' ' ' <<<"$got")"
}

expect locks _dlockctl dlockctl ""
expect locks _dlockctl dlockctl lo
expect status _dlockctl dlockctl --socket /tmp/x.sock st
expect --json _dlockctl dlockctl --j
expect --output _dlockctl dlockctl locks --o
expect --noheadings _dlockctl dlockctl locks -
for c in PATH TYPE MODE START END HOST PID COMMAND TOKEN SINCE WAITING OWNER; do
	expect "$c" _dlockctl dlockctl locks -o ""
done
expect path,TYPE _dlockctl dlockctl locks -o path,T
expect +HOST _dlockctl dlockctl locks --output +H
expect --lock _dlockctl dlockctl run --l
for c in metrics version replace read; do
	expect "$c" _dlockctl dlockctl ""
done
expect --if-version _dlockctl dlockctl replace --if
expect --retries _dlockctl dlockctl read --r
expect --json _dlockctl dlockctl version --j
expect backend= _dlockfs dlockfs -o ""
expect backend=local:,paths= _dlockfs dlockfs -o backend=local:,pa
expect max_locks_per_uid= _dlockfs dlockfs -o max_l
expect backend=redis:// _dlockfs dlockfs -o backend=re
expect log_level=debug _dlockfs dlockfs -o log_level=d
expect --agent _dlockfs dlockfs --ag
# bash's default word breaks: "-o log_level=d" arrives as four words, and
# the candidates replace only what follows the = (or :)
unset BREAKS
LINE='dlockfs -o log_level=d' expect debug _dlockfs dlockfs -o log_level = d
LINE='dlockfs -o backend=local:,pa' expect ,paths= _dlockfs dlockfs -o backend = local : ,pa
dl_pass
