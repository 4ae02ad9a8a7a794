#!/usr/bin/env bash
# torture/churn.sh BUILD_DIR - client churn torture (torture/clients_churn.c),
# the much harder versions of the MIDAS seed test (torture/seed.sh):
#
#   connect  N clients at once (MIDAS refuses past 64), all killed, all removed
#   kill     random kill -9 during churn, also inside the ODB lock
#   storm    message storm while others hold the ODB lock and write keys
#   stop     SIGSTOP of the ODB lock holder: the timeouts name it
#   fake     dead entries whose PID is a live process are removed
#   watch    batches of watched changes under churn: the final state arrives
#   term     SIGTERM stops clients blocked in waits; they leave cleanly
#   crash    the client removing a dead one dies at each crash point of
#            that pass: every dead client still gets one removal message
#
# DURATION <= 10 (short mode, `make test`): small counts, about 20 s in all.
# Otherwise (`make torture`): 500 clients, and kill/storm/watch share most
# of DURATION seconds. Each test runs in its own temporary experiment and
# prints its own summary line; this script ends with
#   churn: clients=N kills=N removed=N messages=N errors=N check=ok
# and exits non-zero if any test failed. CHURN_TESTS="kill storm" runs a
# subset.
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
fi
bin=${1%/}/torture/clients_churn
duration=${DURATION:-10}
if [ ! -x "$bin" ]; then
    echo "churn: $bin not built" >&2
    exit 1
fi

if [ "$duration" -le 10 ]; then
    n_clients=100
    t_kill=4 t_storm=2 t_watch=3 n_term=20 n_workers=6 crash_stride=5
else
    n_clients=500
    t_kill=$((duration * 35 / 100))
    t_storm=$((duration * 20 / 100))
    t_watch=$((duration * 20 / 100))
    n_term=50 n_workers=8 crash_stride=1
fi
# ThreadSanitizer sees nothing across processes, and its builds wait for a
# contended lock by polling (base/lock.c: TSan does not intercept robust
# lock recovery otherwise), so a hundred processes queueing for the ODB lock
# starve some past the lock timeout. Under tsan the same paths run with
# smaller crowds; the full counts run in the debug and asan variants.
case ${1%/} in
*tsan) n_clients=24 n_term=8 n_workers=3 ;;
esac
tests=${CHURN_TESTS:-connect kill storm stop fake watch term crash}

out=$(mktemp "${TMPDIR:-/tmp}/aurum-churn-log.XXXXXX")
trap 'rm -f "$out"' EXIT
failed=()
start_ns=$(date +%s%N)

for t in $tests; do
    case $t in
    connect) args=(connect 60 "$n_clients") ;;
    kill) args=(kill "$t_kill" "$n_workers") ;;
    storm) args=(storm "$t_storm") ;;
    stop) args=(stop 5 3) ;;
    fake) args=(fake 5) ;;
    watch) args=(watch "$t_watch" 3) ;;
    term) args=(term 5 "$n_term") ;;
    crash) args=(crash 60 "$crash_stride") ;;
    *)
        echo "churn: unknown test '$t'" >&2
        exit 2
        ;;
    esac
    echo "=== churn $t (${args[*]:1})"
    # The program bounds itself; this is the last resort.
    timeout --kill-after=10 $((args[1] + 240)) "$bin" "${args[@]}" | tee -a "$out"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        failed+=("$t (exit $rc)")
    fi
done

# field TEST KEY: the value of KEY= in TEST's summary line (0 if absent).
field() {
    awk -v t="$1:" -v k="$2" '
        $1 == t && / errors=/ {
            for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) v = kv[2] }
        }
        END { print v + 0 }' "$out"
}

clients=$(field connect clients)
kills=$(($(field connect kills) + $(field kill kills) + $(field watch kills)))
removed=$(($(field connect removed) + $(field kill removed) + $(field watch removed)))
messages=$(field storm messages)
errors=0
for t in $tests; do
    errors=$((errors + $(field "$t" errors)))
done
check=ok
[ ${#failed[@]} -eq 0 ] || check=FAILED
wall_ns=$(($(date +%s%N) - start_ns))
printf 'churn: clients=%d kills=%d removed=%d messages=%d errors=%d check=%s wall=%d.%01ds\n' \
    "$clients" "$kills" "$removed" "$messages" "$errors" "$check" \
    $((wall_ns / 1000000000)) $((wall_ns / 100000000 % 10))
for f in "${failed[@]+"${failed[@]}"}"; do
    echo "churn: FAILED: $f" >&2
done
[ ${#failed[@]} -eq 0 ]
