#!/usr/bin/env bash
# The README's demo command: brings up an experiment and shows it working.
#
# What exists so far: the shared-memory ODB, the client list with its
# watchdog, system messages with their SQLite log, and odbedit. The demo
# creates (or reuses) an experiment directory, fills a few ODB keys, starts
# two background clients that keep their watchdogs running, kills one of
# them to show the watchdog removing it, and runs an odbedit session.
#
#   scripts/demo.sh [--duration SECONDS] [EXPDIR]
set -euo pipefail
cd "$(dirname "$0")/.."

duration=5
exp=""
while [ $# -gt 0 ]; do
    case $1 in
    --duration) duration=$2; shift 2 ;;
    --duration=*) duration=${1#--duration=}; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) exp=$1; shift ;;
    esac
done
exp=${exp:-${AURUM_EXP:-$PWD/demo-exp}}

bash scripts/setup.sh
make -j2 V=release all >/dev/null
bin=build/release/bin
idle=build/release/torture/clients_idle
export AURUM_EXP=$exp
mkdir -p "$exp"

odbedit() { "$bin/odbedit" -e "$exp" "$@"; }

echo "== experiment: $exp"
odbedit -c 'mkdir /Equipment/Sim/Variables' 2>/dev/null || true
odbedit -c 'create DOUBLE /Equipment/Sim/Variables/Temperature 4' 2>/dev/null || true
odbedit -c 'set /Equipment/Sim/Variables/Temperature[*] 21.5' \
        -c 'set /Equipment/Sim/Variables/Temperature[2] 23.25' \
        -c 'msg demo: ODB initialised'

pids=()
if [ -x "$idle" ]; then
    "$idle" "$exp" frontend 1000 3000 & pids+=($!)
    "$idle" "$exp" analyzer 1000 & pids+=($!)
    sleep 1
    echo "== clients while two demo clients run"
    odbedit -c scl
    echo "== killing 'analyzer' with SIGKILL; the watchdog removes it within a second"
    kill -9 "${pids[1]}"
    wait "${pids[1]}" 2>/dev/null || true
    sleep 1.5
    odbedit -c scl
fi

echo "== an odbedit session"
odbedit -c 'ls -l /Equipment/Sim/Variables' -c 'json /Equipment' -c 'check' -c 'msg 10'

sleep "$duration"
for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
echo "== done. Look at $exp (odb.json, messages.sqlite3), or run:"
echo "   $bin/odbedit -e $exp"
