#!/bin/bash
# sec_list.sh - issue 9 item 8: what a local user can see.  eve's
# "dlockctl locks" shows only locks on files she could open and her own;
# LIST with a chosen name answers the same for a locked file she cannot
# open as for one that does not exist; owner ids are opaque (no daemon
# heap address, no counter); root still sees everything.
# shellcheck disable=SC2154
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../preload/pl_lib.sh"
. "$(dirname "$0")/sec_lib.sh"
sec_init sec_list

sec_dir base
mkdir -m 0700 "$base/private"
mkdir -m 1777 "$base/pub"
S=$base/d.sock
pl_agent a local: "$S" "private=$base/private:pub=$base/pub"
hold() { sec_hold "$base" "$@"; }

touch "$base/private/secret.db"
hold env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$S" DLOCK_PATHS="$base/private" DLOCK_KERNEL_LOCK=0 \
	flock "$base/private/secret.db"
as_bob touch "$base/pub/bob.db"
hold as_bob env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$S" DLOCK_PATHS="$base/pub" DLOCK_KERNEL_LOCK=0 \
	flock "$base/pub/bob.db"
as_bob touch "$base/pub/bob-only.db"
chmod 0600 "$base/pub/bob-only.db"
hold as_bob env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$S" DLOCK_PATHS="$base/pub" DLOCK_KERNEL_LOCK=0 \
	flock "$base/pub/bob-only.db"
hold as_bob "$DLOCKCTL" --socket "$S" run --lock bobs-name --
as_eve touch "$base/pub/eve.db"
hold as_eve env LD_PRELOAD="$DLOCK_PRELOAD" DLOCK_SOCKET="$S" DLOCK_PATHS="$base/pub" DLOCK_KERNEL_LOCK=0 \
	flock "$base/pub/eve.db"
hold as_eve "$DLOCKCTL" --socket "$S" run --lock eves-name --

dl_log "root sees every lock"
timeout 10 "$DLOCKCTL" --socket "$S" locks >"$base/root.out"
for r in private/secret.db pub/bob.db pub/bob-only.db pub/eve.db "name:$(id -u dlf_bob)/bobs-name" \
	"name:$(id -u dlf_eve)/eves-name"; do
	grep -q "^$r " "$base/root.out" || dl_fail "root does not see $r: $(cat "$base/root.out")"
done

dl_log "eve sees what she could open, and her own"
as_eve "$DLOCKCTL" --socket "$S" locks >"$base/eve.out"
grep -q "^pub/bob.db " "$base/eve.out" || dl_fail "eve does not see pub/bob.db (readable): $(cat "$base/eve.out")"
grep -q "^pub/eve.db " "$base/eve.out" || dl_fail "eve does not see her own lock: $(cat "$base/eve.out")"
grep -q "^name:$(id -u dlf_eve)/eves-name " "$base/eve.out" || dl_fail "eve does not see her named lock"
for r in private/secret.db pub/bob-only.db bobs-name; do
	! grep -q "$r" "$base/eve.out" || dl_fail "eve sees $r: $(cat "$base/eve.out")"
done
as_eve "$DLOCKCTL" --socket "$S" --json locks | python3 -c 'import json,sys; json.load(sys.stdin)' ||
	dl_fail "eve's --json listing is not JSON"

dl_log "LIST with a chosen name does not tell a locked private file from a missing one"
locked=$(as_eve "$SEC_PY" "$SEC_DIR/sec_raw.py" list "$S" private/secret.db)
missing=$(as_eve "$SEC_PY" "$SEC_DIR/sec_raw.py" list "$S" private/nothing.db)
[[ $locked == "$missing" && $locked == items=0* ]] ||
	dl_fail "LIST of a name eve cannot open answers '$locked', of a missing one '$missing'"
got=$(as_eve "$SEC_PY" "$SEC_DIR/sec_raw.py" list "$S" pub/bob.db)
[[ $got == "items=1 err=0" ]] || dl_fail "LIST of a readable file answers '$got'"
got=$("$SEC_PY" "$SEC_DIR/sec_raw.py" list "$S" private/secret.db)
[[ $got == "items=1 err=0" ]] || dl_fail "root's LIST of its file answers '$got'"

dl_log "owner ids are opaque"
owners=$(timeout 10 "$DLOCKCTL" --socket "$S" locks -rn -o owner)
[[ -n $owners ]] || dl_fail "no owner ids in: $(cat "$base/root.out")"
for o in $owners; do
	[[ $o != 0000* && $o != d10c* ]] || dl_fail "owner id $o looks like an address or a counter"
done
dl_pass
