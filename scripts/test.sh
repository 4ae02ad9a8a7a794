#!/usr/bin/env bash
# The project's test command (README "Quick start"; CI runs it via .ci/run).
#
# Installs missing packages, then builds and runs the whole test suite three
# times: debug with -Werror, then under ASan+UBSan, then under TSan, stopping
# at the first failing run; then checks that clang builds everything too.
# The last line sums the three runs' results as "N passed, N failed".
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2

bash scripts/setup.sh || {
    echo "test.sh: scripts/setup.sh failed" >&2
    exit 1
}

total_passed=0
total_failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

status=0
for variant in debug asan tsan; do
    echo "=== make -j2 WERROR=1 V=$variant test"
    make -j2 WERROR=1 V="$variant" test 2>&1 | tee "$log"
    status=${PIPESTATUS[0]}
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -n 1 || true)
    if [ -n "$line" ]; then
        read -r p _ f _ <<<"$line"
        total_passed=$((total_passed + p))
        total_failed=$((total_failed + f))
    fi
    if [ "$status" -ne 0 ]; then
        echo "test.sh: V=$variant failed (exit $status)" >&2
        # A build failure ran no tests: count it as one failure.
        [ -z "$line" ] && total_failed=$((total_failed + 1))
        break
    fi
done

# A clang build (compile and link only) catches what gcc lets through.
if [ "$status" -eq 0 ]; then
    echo "=== make -j2 WERROR=1 CC=clang V=release all"
    if ! make -j2 WERROR=1 CC=clang V=release all; then
        echo "test.sh: the clang build failed" >&2
        status=1
        total_failed=$((total_failed + 1))
    fi
fi

echo
echo "$total_passed passed, $total_failed failed"
[ "$status" -eq 0 ] && [ "$total_failed" -eq 0 ]
