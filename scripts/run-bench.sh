#!/usr/bin/env bash
# Runs every benchmark program of one build tree in name order and shows its
# output (each prints our figure, the limit measured in the same run, and the
# ratio). A failing benchmark is reported and the others still run.
#
#   scripts/run-bench.sh [BUILD_DIR]      (default build/release; `make bench`)
set -uo pipefail

B=${1:-build/release}
B=${B%/}
cd "$(dirname "$0")/.." || exit 2

n=0
failed=()
if [ -d "$B/bench" ]; then
    while IFS= read -r bin; do
        n=$((n + 1))
        echo "=== BENCH ${bin#"$B"/}"
        "./$bin"
        rc=$?
        if [ $rc -ne 0 ]; then
            failed+=("${bin#"$B"/} (exit $rc)")
            echo "=== FAILED ${bin#"$B"/} (exit $rc)"
        fi
    done < <(find "$B/bench" -type f -perm -u+x ! -name '*.[od]' | LC_ALL=C sort)
fi

if [ $n -eq 0 ]; then
    echo "no benchmarks yet"
    exit 0
fi
echo
echo "$n benchmarks run, ${#failed[@]} failed"
for f in "${failed[@]+"${failed[@]}"}"; do
    echo "  FAILED: $f"
done
[ ${#failed[@]} -eq 0 ]
