#!/usr/bin/env bash
# test.sh - the whole test suite, as CI runs it: dependencies, a -Werror
# build, the unit tests plain and under AddressSanitizer/UBSan, then the
# integration tests (real FUSE mounts; needs root and /dev/fuse).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

bash contrib/deps.sh

setup() { # setup DIR [meson options...]
	local dir=$1
	shift
	if [ -d "$dir" ]; then
		meson setup --reconfigure "$dir" "$@" >/dev/null
	else
		meson setup "$dir" "$@" >/dev/null
	fi
}

# the C sources follow .clang-format (kernel style)
git ls-files -z '*.c' '*.h' | xargs -0 clang-format --style=file --dry-run -Werror

# ninja prints its errors on stdout: show them when a build fails
build() { # build DIR
	ninja -C "$1" >"$1/ninja.out" 2>&1 || {
		cat "$1/ninja.out"
		echo "build in $1 failed" >&2
		exit 1
	}
}

setup build-ci -Dwerror=true
build build-ci
setup build-asan -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false
build build-asan

rm -f build-ci/meson-logs/unit.json build-asan/meson-logs/unit.json \
	build-ci/meson-logs/integration.json \
	build-ci/meson-logs/integration-cache.json
status=0
meson test -C build-ci --suite unit --logbase unit --print-errorlogs || status=1
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	meson test -C build-asan --suite unit --logbase unit --print-errorlogs || status=1
meson test -C build-ci --suite integration --logbase integration \
	--print-errorlogs || status=1
# same-host lock caching (issue 12): the cross-host lock cases, the lock
# driver and SQLite across mounts again with every mount cache=on (the
# model test runs every remote backend with --cache; the whole suite twice
# does not fit CI's time yet)
DL_MOUNT_OPTS=cache=on meson test -C build-ci --logbase integration-cache \
	--print-errorlogs redis_locks redis_sqlite pg_sqlite || status=1

# one closing line over all four runs
python3 - build-ci/meson-logs/unit.json build-asan/meson-logs/unit.json \
	build-ci/meson-logs/integration.json \
	build-ci/meson-logs/integration-cache.json <<'PY'
import json, sys
ok = bad = skip = 0
for f in sys.argv[1:]:
    try:
        lines = open(f).read().splitlines()
    except OSError:
        continue
    for line in lines:
        r = json.loads(line)["result"]
        if r in ("OK", "EXPECTEDFAIL"):
            ok += 1
        elif r == "SKIP":
            skip += 1
        else:
            bad += 1
print(f"{ok} passed, {bad} failed, {skip} skipped")
PY
exit $status
