#!/usr/bin/env bash
# Runs the torture/*.sh scripts (each drives the torture programs built under
# BUILD_DIR/torture/) with DURATION seconds in the environment and BUILD_DIR
# as $1.
#
#   scripts/run-torture.sh [short|long] [BUILD_DIR]
#
# short: DURATION=${AURUM_TORTURE_SHORT:-10}; long: DURATION=${AURUM_TORTURE_LONG:-120}
# (`make torture` runs long). A DURATION already set in the environment wins.
set -uo pipefail

mode=${1:-short}
B=${2:-build/debug}
B=${B%/}
cd "$(dirname "$0")/.." || exit 2

case $mode in
short) default=${AURUM_TORTURE_SHORT:-10} ;;
long) default=${AURUM_TORTURE_LONG:-120} ;;
*)
    echo "usage: $0 [short|long] [BUILD_DIR]" >&2
    exit 2
    ;;
esac
duration=${DURATION:-$default}

shopt -s nullglob
scripts=(torture/*.sh)
if [ ${#scripts[@]} -eq 0 ]; then
    echo "no torture programs yet"
    exit 0
fi

passed=0
failed=0
for sh in "${scripts[@]}"; do
    echo "=== TORTURE $sh ($mode, ${duration}s)"
    if DURATION=$duration AURUM_TEST_ID="tt$$x$((passed + failed))" \
        timeout --kill-after=10 $((duration * 3 + 60)) bash "$sh" "$B"; then
        passed=$((passed + 1))
        echo "=== PASS $sh"
    else
        failed=$((failed + 1))
        echo "=== FAIL $sh"
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
