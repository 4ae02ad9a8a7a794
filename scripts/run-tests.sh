#!/usr/bin/env bash
# Runs the aurum test suite of one build tree, each test as its own process.
#
#   scripts/run-tests.sh BUILD_DIR        (e.g. build/debug; `make test` calls this)
#
# Runs, in order:
#   - every executable file under BUILD_DIR/tests (cmocka binaries), under
#     `timeout ${AURUM_TEST_TIMEOUT:-600}`;
#   - every executable tests/**/*.sh script, with BUILD_DIR as $1;
#   - every torture/*.sh script in short mode (DURATION=${AURUM_TORTURE_SHORT:-10}),
#     with BUILD_DIR as $1.
# Each runs in a clean environment (PATH, HOME, TMPDIR, locale, CI and
# sanitizer/cmocka options kept) with its own AURUM_TEST_ID. Output is shown
# as it comes. The last line is "N passed, N failed"; the exit status is
# non-zero if anything failed.
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
fi
B=${1%/}
cd "$(dirname "$0")/.." || exit 2

timeout_s=${AURUM_TEST_TIMEOUT:-600}
torture_s=${AURUM_TORTURE_SHORT:-10}
run_id=$$
n=0
passed=0
failed=0
failures=()

# Sanitizer defaults; a caller's own settings win.
: "${ASAN_OPTIONS:=abort_on_error=0:detect_leaks=1:strict_string_checks=1}"
: "${UBSAN_OPTIONS:=print_stacktrace=1:halt_on_error=1}"
: "${TSAN_OPTIONS:=halt_on_error=1:second_deadlock_stack=1}"

# run NAME CMD...: runs CMD in a clean environment and records the result.
run() {
    local name=$1 rc
    shift
    n=$((n + 1))
    local keep=(PATH="$PATH" HOME="${HOME:-/tmp}" TMPDIR="${TMPDIR:-/tmp}"
        LANG=C.UTF-8 LC_ALL=C.UTF-8
        ASAN_OPTIONS="$ASAN_OPTIONS" UBSAN_OPTIONS="$UBSAN_OPTIONS" TSAN_OPTIONS="$TSAN_OPTIONS"
        AURUM_TEST_ID="at${run_id}x${n}" AURUM_BUILD="$B")
    local v
    for v in CI CMOCKA_MESSAGE_OUTPUT CMOCKA_XML_FILE CMOCKA_TEST_ABORT LSAN_OPTIONS DURATION; do
        if [ -n "${!v+x}" ]; then keep+=("$v=${!v}"); fi
    done
    echo "=== RUN  $name"
    env -i "${keep[@]}" timeout --kill-after=10 "$timeout_s" "$@"
    rc=$?
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
        echo "=== PASS $name"
    else
        failed=$((failed + 1))
        if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
            failures+=("$name (timeout after ${timeout_s}s)")
        else
            failures+=("$name (exit $rc)")
        fi
        echo "=== FAIL $name (exit $rc)"
    fi
}

if [ -d "$B/tests" ]; then
    while IFS= read -r bin; do
        run "${bin#"$B"/}" "./$bin"
    done < <(find "$B/tests" -type f -perm -u+x ! -name '*.[od]' | LC_ALL=C sort)
fi

if [ -d tests ]; then
    while IFS= read -r sh; do
        run "$sh" "./$sh" "$B"
    done < <(find tests -type f -name '*.sh' -perm -u+x | LC_ALL=C sort)
fi

for sh in torture/*.sh; do
    [ -f "$sh" ] || continue
    DURATION=$torture_s run "$sh (short, ${torture_s}s)" bash "$sh" "$B"
done

echo
echo "Summary for $B:"
for f in "${failures[@]+"${failures[@]}"}"; do
    echo "  FAILED: $f"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
