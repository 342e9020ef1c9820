#!/bin/bash
# metrics.sh - -o metrics=ADDR:PORT and dlockctl metrics (issue 13): a live
# daemon on a Redis backend (short lease, so renewals show) is scraped over
# HTTP and its text parsed by the Prometheus client library's own parser
# (Debian python3-prometheus-client); counters must move after known
# operations:
#  - a blocking flock, a refused flock -n, a POSIX lock and unlock, a wait
#    past lock_timeout (edeadlk, lock_timeouts), an administrator's break
#    (lost_locks{cause="broken"}), FUSE requests by opcode, lease renewals;
#  - every family has HELP and TYPE, counters end in _total, histograms
#    have cumulative buckets ending in +Inf with _sum and _count;
#  - dlockctl metrics prints the same families;
#  - / and /metrics answer 200, another path 404, POST 405;
#  - a bad address, and a port already in use, are one line and exit 2.
set -euo pipefail
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../redis/redis_lib.sh"
dl_init metrics
rd_require
dl_require_prog curl flock
[[ -x ${DLOCKCTL:-} ]] || dl_fail "DLOCKCTL is not set (run through meson test)"
# Debian's python, with python3-prometheus-client (a python3 earlier on
# the PATH may not have it)
PY=/usr/bin/python3
$PY -c 'import prometheus_client' 2>/dev/null ||
	dl_fail "python3-prometheus-client is missing (contrib/deps.sh)"

dl_tmpdir base
mkdir -p "$base/backing" "$base/a" "$base/b"
rd_start port
port_m=$(rd_free_port)
uri="redis://127.0.0.1:$port/m?ttl_ms=1500"
dl_mount "$base/backing" "$base/a" \
	"backend=$uri,host_id=a,socket=$base/a.sock,lock_timeout=1,metrics=127.0.0.1:$port_m"
dl_mount "$base/backing" "$base/b" "backend=$uri,host_id=b,socket=$base/b.sock"
url=http://127.0.0.1:$port_m/metrics

# scrape FILE: the text, checked and flattened to "name{labels} value" lines
scrape() {
	curl -sf "$url" >"$1.txt" || dl_fail "GET $url failed"
	$PY - "$1.txt" >"$1" <<'PY' || dl_fail "the metrics do not parse: $(cat "$1.err" 2>/dev/null)"
import sys
from prometheus_client.parser import text_string_to_metric_families
text = open(sys.argv[1]).read()
assert text.endswith("\n"), "no final newline"
seen = set()
for fam in text_string_to_metric_families(text):
    assert fam.name.startswith("dlockfs_"), fam.name
    assert fam.documentation, "no HELP for " + fam.name
    assert fam.type in ("counter", "gauge", "histogram"), (fam.name, fam.type)
    assert fam.name not in seen, "family twice: " + fam.name
    seen.add(fam.name)
    if fam.type == "histogram":
        by = {}
        for s in fam.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            by.setdefault(key, []).append(s)
        for key, ss in by.items():
            b = [s for s in ss if s.name.endswith("_bucket")]
            assert b and b[-1].labels["le"] == "+Inf", (fam.name, key)
            vals = [s.value for s in b]
            assert vals == sorted(vals), ("not cumulative", fam.name, key)
            count = [s.value for s in ss if s.name.endswith("_count")]
            assert count == [vals[-1]], (fam.name, key, count, vals[-1])
            assert any(s.name.endswith("_sum") for s in ss), fam.name
    for s in fam.samples:
        if fam.type == "counter":
            # the parser strips _total from the family, not the samples
            assert s.name.endswith("_total") or s.name.endswith("_created"), s.name
        labels = ",".join('%s="%s"' % kv for kv in sorted(s.labels.items()))
        print("%s{%s} %s" % (s.name, labels, repr(float(s.value))))
PY
}

# value FILE NAME{LABELS}: the sample's value (0 when absent)
value() {
	awk -v k="$2" '$1 == k { print $2; f = 1 } END { if (!f) print 0 }' "$1"
}

# moved BEFORE AFTER NAME{LABELS} MIN: the sample grew by at least MIN
moved() {
	local b a
	b=$(value "$1" "$3")
	a=$(value "$2" "$3")
	$PY -c "import sys; sys.exit(0 if $a - $b >= $4 else 1)" ||
		dl_fail "$3: $b -> $a, expected at least +$4"
}

scrape "$base/s0"
[[ $(value "$base/s0" 'dlockfs_backend_up{}') == 1.0 ]] || dl_fail "backend_up is not 1"

# ---- known operations on host a
: >"$base/a/f"
flock "$base/a/f" true
# a holder on host b, then a refused flock -n and a timed-out wait on a
flock "$base/b/f" sleep 30 &
holder=$!
dl_job "$holder"
dl_wait_for 10 bash -c "! flock -n '$base/a/f' true" || dl_fail "host b's holder never showed on host a"
rc=0
flock "$base/a/f" true 2>/dev/null || rc=$?
[[ $rc -ne 0 ]] || dl_fail "a blocking flock past lock_timeout=1 succeeded"
dl_kill_tree "$holder"
wait "$holder" 2>/dev/null || true
# a POSIX lock and unlock
$PY -c '
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.lockf(fd, fcntl.LOCK_EX)
fcntl.lockf(fd, fcntl.LOCK_UN)
' "$base/a/f"
# an administrator breaks host a's lock
exec 9>"$base/a/held"
flock 9
"$DLOCKCTL" --socket "$base/b.sock" break "$base/b/held" || dl_fail "dlockctl break failed"
dl_wait_for 10 dl_flock_lost "$base/a/held" || dl_fail "host a never learned its lock was broken"
# (descriptor 9 stays open: the lost lock counts in locks_lost until then)
# renewals every ttl/3 = 500 ms: wait for two more
r0=$(value "$base/s0" 'dlockfs_lease_renewals_total{}')
renewed() {
	scrape "$base/s1"
	$PY -c "import sys; sys.exit(0 if $(value "$base/s1" 'dlockfs_lease_renewals_total{}') >= $r0 + 2 else 1)"
}
dl_wait_for 10 renewed || dl_fail "lease renewals did not move: $(grep renewal "$base/s1")"

moved "$base/s0" "$base/s1" 'dlockfs_lock_requests_total{kind="lock",result="ok",space="flock"}' 1
moved "$base/s0" "$base/s1" 'dlockfs_lock_requests_total{kind="trylock",result="conflict",space="flock"}' 1
moved "$base/s0" "$base/s1" 'dlockfs_lock_requests_total{kind="lock",result="edeadlk",space="flock"}' 1
moved "$base/s0" "$base/s1" 'dlockfs_lock_requests_total{kind="lock",result="ok",space="posix"}' 1
moved "$base/s0" "$base/s1" 'dlockfs_lock_requests_total{kind="unlock",result="ok",space="posix"}' 1
moved "$base/s0" "$base/s1" 'dlockfs_lock_timeouts_total{}' 1
moved "$base/s0" "$base/s1" 'dlockfs_lost_locks_total{cause="broken"}' 1
moved "$base/s0" "$base/s1" 'dlockfs_lock_wait_seconds_count{}' 3
moved "$base/s0" "$base/s1" 'dlockfs_backend_request_duration_seconds_count{op="lock"}' 3
moved "$base/s0" "$base/s1" 'dlockfs_fuse_requests_total{opcode="flock"}' 2
moved "$base/s0" "$base/s1" 'dlockfs_fuse_requests_total{opcode="setlk"}' 2
moved "$base/s0" "$base/s1" 'dlockfs_fuse_requests_total{opcode="open"}' 2
[[ $(value "$base/s1" 'dlockfs_locks_lost{}') == 1.0 ]] ||
	dl_fail "locks_lost is $(value "$base/s1" 'dlockfs_locks_lost{}'), expected 1 (the broken lock)"
exec 9>&-
dl_log "after the operations: $(grep -c . "$base/s1") samples, $(grep -E '^dlockfs_lease_renewals_total|^dlockfs_lost_locks_total\{cause="broken"' "$base/s1" | tr '\n' ' ')"

# ---- dlockctl metrics: the same families, from the control socket
"$DLOCKCTL" --socket "$base/a.sock" metrics >"$base/ctl.txt" || dl_fail "dlockctl metrics failed"
fams() { grep '^# TYPE ' "$1" | sort; }
[[ "$(fams "$base/ctl.txt")" == "$(fams "$base/s1.txt")" ]] ||
	dl_fail "dlockctl metrics and /metrics differ in families: $(diff <(fams "$base/ctl.txt") <(fams "$base/s1.txt"))"

# ---- HTTP answers
code() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
[[ $(code "http://127.0.0.1:$port_m/") == 200 ]] || dl_fail "/ is not 200"
[[ $(code "http://127.0.0.1:$port_m/other") == 404 ]] || dl_fail "/other is not 404"
[[ $(code -X POST "$url") == 405 ]] || dl_fail "POST is not 405"

# ---- bad addresses and a port in use: one line, exit 2, nothing mounted
mkdir -p "$base/c"
for m in nonsense 127.0.0.1 127.0.0.1:0 127.0.0.1:70000 localhost:9464 "[::1:9464" "127.0.0.1:$port_m"; do
	rc=0
	err=$(timeout -k 2 20 "$DLOCKFS" -f -o "backend=local:,socket=none,metrics=$m" \
		"$base/backing" "$base/c" 2>&1 >/dev/null) || rc=$?
	[[ $rc == 2 && $(wc -l <<<"$err") == 1 ]] ||
		dl_fail "metrics=$m: exit $rc, want 2 and one line; got: '$err'"
	dl_is_mounted "$base/c" && dl_fail "metrics=$m mounted"
	dl_log "metrics=$m: $err"
done
dl_pass
