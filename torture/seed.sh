#!/usr/bin/env bash
# torture/seed.sh BUILD_DIR - the MIDAS "seed" torture test (SPEC.md, MIDAS
# failure modes 1-3; background/midas-cm_msg-deadlock-note.txt):
#
#     start 50 `odbedit -c 'ls -l /System/Clients'` at once, repeatedly,
#     while the watchdog runs.
#
# In a fresh temporary experiment, K=3 idle clients (torture/clients_idle,
# watchdog period 200 ms, an INFO message every 300 ms) run throughout.
# Then R rounds each start 50 odbedits at once and wait for all of them,
# with a global deadline (a hang is reported as a deadlock, with the
# kernel wait channel of every process still running). R is 5 when
# DURATION <= 10 (short mode, `make test`); otherwise rounds run until
# DURATION seconds have passed (at least 5).
#
# Pass means:
#   - every odbedit exits 0, writes nothing to stderr, and lists at least
#     the idle clients and itself under /System/Clients;
#   - no ERROR message in the message ring/log (`odbedit -c 'msg 1000'`):
#     no client dies here, so not even a "removed" message may appear;
#   - `odbedit -c check` passes;
#   - the idle clients stop cleanly on SIGTERM (exit 0, empty stderr);
#   - afterwards /System/Clients holds nothing but the entry of the
#     odbedit doing the listing (its own slot, from `scl`).
# Prints "seed: rounds=R clients=50xR errors=N wall=Xs" and exits non-zero
# on any failure, after showing what failed.
set -uo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
fi
B=${1%/}
ODBEDIT=$B/bin/odbedit
IDLE=$B/torture/clients_idle
duration=${DURATION:-10}
K=3
N=${SEED_CLIENTS:-50}
ROUND_TIMEOUT=${SEED_ROUND_TIMEOUT:-45}

for bin in "$ODBEDIT" "$IDLE"; do
    if [ ! -x "$bin" ]; then
        echo "seed: $bin not built" >&2
        exit 1
    fi
done

EXP=$(mktemp -d "${TMPDIR:-/tmp}/aurum-seed.XXXXXX")
WORK=$(mktemp -d "${TMPDIR:-/tmp}/aurum-seed-out.XXXXXX")
idle_pids=()
errors=0

cleanup() {
    local p
    for p in "${idle_pids[@]+"${idle_pids[@]}"}"; do
        kill -KILL "$p" 2>/dev/null
    done
    wait 2>/dev/null
    "$IDLE" --remove-segments "$EXP" 2>/dev/null
    rm -rf "$EXP" "$WORK"
}
trap cleanup EXIT

# fail TEXT: counts one error and prints it.
fail() {
    errors=$((errors + 1))
    echo "seed: FAIL: $*" >&2
}

# show FILE: prints a file's first lines, indented (for failure reports).
show() {
    sed -n '1,20s/^/    | /p' "$1" >&2
}

# Prints the wait channel of a process and of its threads.
describe_stuck() {
    local p=$1 t
    echo "    pid $p: $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)" >&2
    for t in /proc/"$p"/task/*; do
        [ -d "$t" ] || continue
        echo "      tid ${t##*/}: state $(awk '/^State:/ {print $2}' "$t/status" 2>/dev/null)" \
            "wchan $(cat "$t/wchan" 2>/dev/null)" >&2
    done
}

# odbedit_ok OUT ERR CMD...: runs one odbedit; checks exit 0 and empty stderr.
odbedit_ok() {
    local out=$1 err=$2 rc
    shift 2
    timeout -k 5 30 "$ODBEDIT" -e "$EXP" "$@" >"$out" 2>"$err"
    rc=$?
    if [ $rc -ne 0 ] || [ -s "$err" ]; then
        fail "odbedit $* exited $rc"
        show "$err"
        return 1
    fi
    return 0
}

start_ns=$(date +%s%N)

# ---- idle "watchdog" clients --------------------------------------------
for k in $(seq 1 $K); do
    "$IDLE" "$EXP" "idle$k" 200 300 >"$WORK/idle$k.out" 2>"$WORK/idle$k.err" &
    idle_pids+=($!)
done
for k in $(seq 1 $K); do
    for _ in $(seq 1 200); do
        grep -q '^ready' "$WORK/idle$k.out" 2>/dev/null && break
        sleep 0.05
    done
    if ! grep -q '^ready' "$WORK/idle$k.out"; then
        fail "idle client $k did not connect"
        show "$WORK/idle$k.err"
        exit 1
    fi
done

# ---- rounds ---------------------------------------------------------------
# round R: starts N odbedits at once, waits for all (bounded), checks them.
round() {
    local r=$1 i rc n_ent pids=()
    local d="$WORK/r$r"
    mkdir -p "$d"
    for i in $(seq 1 "$N"); do
        "$ODBEDIT" -e "$EXP" -c 'ls -l /System/Clients' >"$d/out.$i" 2>"$d/err.$i" &
        pids+=($!)
    done
    # Global deadline for the round: whatever still runs then is stuck.
    (
        trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
        sleep "$ROUND_TIMEOUT" &
        sleeper=$!
        wait "$sleeper"
        echo "seed: round $r: still running after ${ROUND_TIMEOUT}s (deadlock?):" >&2
        for p in "${pids[@]}"; do
            [ -d "/proc/$p" ] && describe_stuck "$p"
        done
        kill -KILL "${pids[@]}" 2>/dev/null
    ) &
    local guard=$!
    for i in $(seq 1 "$N"); do
        wait "${pids[$((i - 1))]}"
        rc=$?
        if [ $rc -ne 0 ]; then
            fail "round $r odbedit $i exited $rc"
            show "$d/err.$i"
        elif [ -s "$d/err.$i" ]; then
            fail "round $r odbedit $i wrote to stderr"
            show "$d/err.$i"
        else
            # Itself and the idle clients at least; no garbage.
            n_ent=$(grep -cE '^[0-9]+/ +DIR ' "$d/out.$i")
            if [ "$n_ent" -lt $((K + 1)) ]; then
                fail "round $r odbedit $i listed $n_ent clients (< $((K + 1)))"
                show "$d/out.$i"
            fi
            if grep -qiE 'null|error' "$d/out.$i"; then
                fail "round $r odbedit $i printed an error"
                show "$d/out.$i"
            fi
        fi
    done
    kill "$guard" 2>/dev/null
    wait "$guard" 2>/dev/null
    rm -rf "$d"
}

rounds=0
while :; do
    rounds=$((rounds + 1))
    round $rounds
    [ $errors -eq 0 ] || break
    elapsed=$((($(date +%s%N) - start_ns) / 1000000000))
    if [ "$duration" -le 10 ]; then
        [ $rounds -ge 5 ] && break
    elif [ $rounds -ge 5 ] && [ "$elapsed" -ge "$duration" ]; then
        break
    fi
done

# ---- checks with the idle clients still running ---------------------------
if odbedit_ok "$WORK/msg.out" "$WORK/msg.err" -c 'msg 1000'; then
    if grep -q ',ERROR\]' "$WORK/msg.out"; then
        fail "ERROR messages in the message ring:"
        grep ',ERROR\]' "$WORK/msg.out" | sed -n '1,20s/^/    | /p' >&2
    fi
    if ! grep -q 'idle client idle1 tick' "$WORK/msg.out"; then
        fail "the idle clients' messages are missing"
        show "$WORK/msg.out"
    fi
fi
if odbedit_ok "$WORK/check.out" "$WORK/check.err" -c check; then
    if ! grep -q 'ODB check: ok' "$WORK/check.out"; then
        fail "ODB check failed"
        show "$WORK/check.out"
    fi
fi

# ---- stop the idle clients -----------------------------------------------
for k in $(seq 1 $K); do
    kill -TERM "${idle_pids[$((k - 1))]}"
done
for k in $(seq 1 $K); do
    if ! timeout 10 tail --pid="${idle_pids[$((k - 1))]}" -f /dev/null; then
        fail "idle client $k did not stop on SIGTERM"
        describe_stuck "${idle_pids[$((k - 1))]}"
        kill -KILL "${idle_pids[$((k - 1))]}" 2>/dev/null
    fi
    wait "${idle_pids[$((k - 1))]}"
    rc=$?
    if [ $rc -ne 0 ] || [ -s "$WORK/idle$k.err" ]; then
        fail "idle client $k exited $rc"
        show "$WORK/idle$k.err"
        show "$WORK/idle$k.out"
    fi
done
idle_pids=()

# ---- the end state ---------------------------------------------------------
if odbedit_ok "$WORK/end.out" "$WORK/end.err" -c scl -c 'ls /System/Clients'; then
    self=$(awk '/\(this odbedit\)/ {print $1}' "$WORK/end.out")
    others=$(grep -E '^[0-9]+/$' "$WORK/end.out" | grep -vx "$self/")
    if [ -z "$self" ] || ! grep -qx "$self/" "$WORK/end.out" || [ -n "$others" ]; then
        fail "/System/Clients is not empty after all clients left (own slot '$self'):"
        show "$WORK/end.out"
    fi
fi
if odbedit_ok "$WORK/msg2.out" "$WORK/msg2.err" -c 'msg 1000'; then
    if grep -q ',ERROR\]' "$WORK/msg2.out"; then
        fail "ERROR messages after the idle clients stopped:"
        grep ',ERROR\]' "$WORK/msg2.out" | sed -n '1,20s/^/    | /p' >&2
    fi
fi

wall_ns=$(($(date +%s%N) - start_ns))
printf 'seed: rounds=%d clients=%dx%d errors=%d wall=%d.%01ds\n' "$rounds" "$N" "$rounds" \
    "$errors" $((wall_ns / 1000000000)) $((wall_ns / 100000000 % 10))
[ $errors -eq 0 ]
