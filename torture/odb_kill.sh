#!/usr/bin/env bash
# torture/odb_kill.sh BUILD_DIR - random kill -9 of ODB writers
# (torture/odb_kill.c). `make test` runs it with DURATION=10 (short mode),
# `make torture` with the long DURATION; default 10 seconds.
#
# First a quick run with a fixed budget of 50 kills (about 2 s; at most 20 s
# in slow sanitizer builds), then one of
# DURATION seconds with 4 workers and no kill limit. Each prints
# "kills=<n> ops=<n> rollbacks=<n> check=ok" and exits non-zero on any
# integrity, invariant or unexpected-result failure.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
fi
bin=${1%/}/torture/odb_kill
duration=${DURATION:-10}

if [ ! -x "$bin" ]; then
    echo "$0: $bin not built" >&2
    exit 1
fi

echo "odb_kill: quick run, 50 kills"
"$bin" - 20 4 50
echo "odb_kill: ${duration}s run"
"$bin" - "$duration" 4
