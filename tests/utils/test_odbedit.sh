#!/usr/bin/env bash
# tests/utils/test_odbedit.sh BUILD_DIR - end-to-end test of odbedit.
#
# Runs BUILD_DIR/bin/odbedit against a fresh experiment in a mktemp -d
# directory and checks every command through -c (several -c in order, stop
# at the first error with exit status 1), the error line on stderr for bad
# input, `ls -l /System/Clients` showing odbedit itself, a save/load round
# trip (.json and .json.gz), commands from a pipe, `watch` ended by SIGINT,
# and finally `odbedit -c check`.
#
# Cleanup: the experiment directory, and the shared-memory segments of this
# experiment only: their names are /aurum.<FNV-1a 64 of the real path>.<what>
# (base/shm.c ut_shm_name), so segments of other experiments (other tests
# running at the same time) are never touched.
#
# Prints "FAIL: ..." for each failed check, then "N passed, N failed";
# exits non-zero if anything failed.
set -u

B=${1:-build/debug}
ODBEDIT=$(cd "$B" 2>/dev/null && pwd)/bin/odbedit
if [ ! -x "$ODBEDIT" ]; then
    echo "FAIL: $ODBEDIT not built"
    exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/test_odbedit.XXXXXX")
EXP=$TMP/exp # does not exist yet: odbedit must create it
WATCH_PID=

# FNV-1a 64 of a string, as 16 hex digits (bash arithmetic wraps at 64 bits).
fnv1a64() {
    local LC_ALL=C s=$1 h=1469598103934665603 i c
    for ((i = 0; i < ${#s}; i++)); do
        printf -v c '%d' "'${s:i:1}"
        h=$(((h ^ c) * 1099511628211))
    done
    printf '%016x' "$h"
}

cleanup() {
    if [ -n "$WATCH_PID" ]; then
        kill -KILL "$WATCH_PID" 2>/dev/null
        wait "$WATCH_PID" 2>/dev/null
    fi
    if [ -d "$EXP" ]; then
        local h
        h=$(fnv1a64 "$(cd "$EXP" && pwd -P)")
        rm -f /dev/shm/aurum."$h".*
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

passed=0
failed=0
pass() { passed=$((passed + 1)); }
fail() {
    failed=$((failed + 1))
    echo "FAIL: $*"
}

# run ARGS...: runs odbedit on the experiment; sets OUT, ERR, RC.
run() {
    OUT=$(timeout 60 "$ODBEDIT" -e "$EXP" "$@" 2>"$TMP/stderr")
    RC=$?
    ERR=$(cat "$TMP/stderr")
}

# show: what the last run did, for failure messages.
show() {
    printf '    rc=%s\n    stdout: %s\n    stderr: %s\n' "$RC" "${OUT//$'\n'/$'\n'            }" \
        "${ERR//$'\n'/$'\n'            }"
}

# ok NAME -c ... : must succeed silently on stderr.
ok() {
    local name=$1
    shift
    run "$@"
    if [ "$RC" -eq 0 ] && [ -z "$ERR" ]; then pass; else
        fail "$name"
        show
    fi
}

# out NAME EXPECTED -c ... : must succeed and print exactly EXPECTED.
out() {
    local name=$1 want=$2
    shift 2
    run "$@"
    if [ "$RC" -eq 0 ] && [ -z "$ERR" ] && [ "$OUT" = "$want" ]; then pass; else
        fail "$name (expected stdout: $want)"
        show
    fi
}

# has NAME REGEX -c ... : must succeed and print a line matching REGEX.
has() {
    local name=$1 re=$2
    shift 2
    run "$@"
    if [ "$RC" -eq 0 ] && [ -z "$ERR" ] && grep -Eq -- "$re" <<<"$OUT"; then pass; else
        fail "$name (expected a line matching: $re)"
        show
    fi
}

# bad NAME REGEX -c ... : must exit 1 with exactly one stderr line
# "odbedit: <command>: ..." that matches REGEX.
bad() {
    local name=$1 re=$2
    shift 2
    run "$@"
    local lines
    lines=$(printf '%s' "$ERR" | grep -c '')
    if [ "$RC" -eq 1 ] && [ "$lines" -eq 1 ] && grep -Eq -- "^odbedit: .*: " <<<"$ERR" &&
        grep -Eq -- "$re" <<<"$ERR"; then pass; else
        fail "$name (expected exit 1 and one error line matching: $re)"
        show
    fi
}

# ---------------------------------------------------------------------------
# Experiment creation, mkdir, create, set/get of every type
# ---------------------------------------------------------------------------
ok "mkdir creates the experiment and a directory" -c 'mkdir /t'
[ -d "$EXP" ] && pass || fail "experiment directory $EXP was not created"
H=$(fnv1a64 "$(cd "$EXP" && pwd -P)")
[ -e "/dev/shm/aurum.$H.odb" ] && pass || fail "ODB segment /dev/shm/aurum.$H.odb not found"
out "ls shows the directory" $'System/\nt/' -c 'ls'

check_type() { # TYPE VALUE [EXPECTED]
    local t=$1 v=$2 want=${3:-$2} k
    k=$(tr '[:upper:]' '[:lower:]' <<<"$1")
    out "set/get $t $v" "$want" -c "create $t /t/$k" -c "set /t/$k $v" -c "get /t/$k"
}
check_type INT8 -128
check_type UINT8 255
check_type INT16 -32768
check_type UINT16 65535
check_type INT32 -2147483648
check_type UINT32 4294967295
check_type INT64 -9223372036854775808
check_type UINT64 18446744073709551615
check_type FLOAT 1.5
check_type DOUBLE 0.25
check_type BOOL true y
check_type STRING "'hello world'" "hello world"
out "hex integer" 255 -c 'set /t/int32 0xff' -c 'get /t/int32'
out "leading zero is decimal" 10 -c 'set /t/int32 010' -c 'get /t/int32'
out "bool accepts n/0/yes" $'n\nn\ny' -c 'set /t/bool n' -c 'get /t/bool' -c 'set /t/bool 0' \
    -c 'get /t/bool' -c 'set /t/bool yes' -c 'get /t/bool'
out "MIDAS type names" "" -c 'create DWORD /t/dw' -c 'create INT /t/in'
has "MIDAS names map to our types" '^dw +UINT32 ' -c 'ls -l /t/dw'

# ---------------------------------------------------------------------------
# Values out of range and of the wrong kind
# ---------------------------------------------------------------------------
bad "INT8 300 is out of range" "set /t/int8 300: invalid argument .*out of range for INT8" \
    -c 'set /t/int8 300'
out "value unchanged after a failed set" -128 -c 'get /t/int8'
bad "UINT8 -1" "out of range for UINT8" -c 'set /t/uint8 -1'
bad "UINT16 65536" "out of range for UINT16" -c 'set /t/uint16 65536'
bad "INT64 2^63" "out of range for INT64" -c 'set /t/int64 9223372036854775808'
bad "FLOAT 1e39" "out of range for FLOAT" -c 'set /t/float 1e39'
bad "not an integer" "'abc' is not an integer" -c 'set /t/int32 abc'
bad "not a number" "is not a number" -c 'set /t/double 1.5x'
bad "not a bool" "is not a boolean" -c 'set /t/bool maybe'

# ---------------------------------------------------------------------------
# Arrays and indices
# ---------------------------------------------------------------------------
ok "create an array" -c 'create INT32 /t/arr 4'
out "set [*] and one element" $'[0] 7\n[1] 7\n[2] 9\n[3] 7' -c 'set /t/arr[*] 7' \
    -c 'set /t/arr[2] 9' -c 'get /t/arr'
out "get one element" 9 -c 'get /t/arr[2]'
out "set without index is element 0" $'1\n7' -c 'set /t/arr 1' -c 'get /t/arr[0]' -c 'get /t/arr[1]'
bad "set index out of range" "set /t/arr\[4\] 1: array index out of range" -c 'set /t/arr[4] 1'
bad "get index out of range" "array index out of range .*4 elements" -c 'get /t/arr[9]'
bad "malformed index" "malformed path .*malformed index" -c 'get /t/arr[x]'
bad "unclosed index" "malformed path" -c 'get /t/arr[1'
out "MIDAS array syntax for create" $'[0] 0\n[1] 0\n[2] 3' -c 'create UINT8 "/t/marr[3]"' \
    -c 'set /t/marr[2] 3' -c 'get /t/marr'
has "ls -l shows an array as [n] then elements" '^ +\[3\] 7$' -c 'ls -l /t/arr'
has "ls -l array header" '^arr +INT32 +4 +4 rwd .*\[4\]$' -c 'ls -l /t'

# ---------------------------------------------------------------------------
# Strings
# ---------------------------------------------------------------------------
ok "create STRING with n and size" -c 'create STRING /t/sa 2 4' -c 'create STRING /t/s1 1 8'
ok "string element within capacity" -c 'set /t/sa[1] abc'
bad "string element too long" "value too long" -c 'set /t/sa[1] abcd'
out "scalar string grows" "0123456789abcdefghij" -c 'set /t/s1 0123456789abcdefghij' -c 'get /t/s1'
has "ls -l quotes strings" '^s1 +STRING +1 +[0-9]+ rwd .*"0123456789abcdefghij"$' -c 'ls -l /t'
ok "quoted name with a space" -c 'create STRING "/t/with space"' \
    -c "set '/t/with space' \"say \\\"hi\\\"\""
out "double-quote escapes round trip" 'say "hi"' -c 'get "/t/with space"'
out "backslash escapes a space" 'say "hi"' -c 'get /t/with\ space'
bad "unterminated quote" "unterminated double quote" -c 'get "/t/with space'

# ---------------------------------------------------------------------------
# Bad paths, wrong types, unknown commands
# ---------------------------------------------------------------------------
bad "no such key" "get /nope: no such key" -c 'get /nope'
bad "ls of a missing key" "no such key" -c 'ls /nope/deeper'
bad "cd to a missing key" "no such key" -c 'cd /nope'
bad "cd to a value" "not a directory" -c 'cd /t/arr'
bad "set a directory" "is a directory" -c 'set /t 5'
bad "get a directory" "is a directory" -c 'get /t'
bad "name with [ is a malformed path" "malformed path|invalid key name" -c 'mkdir "/t/bad[name"'
bad "name too long" "malformed path|invalid key name" \
    -c "mkdir /t/$(printf 'x%.0s' $(seq 1 70))"
bad "unknown type" "unknown type 'FOO'" -c 'create FOO /t/foo'
bad "create an existing key" "key already exists" -c 'create INT32 /t/arr'
bad "mkdir an existing key" "key already exists" -c 'mkdir /t'
bad "unknown command" "frobnicate: invalid argument .*unknown command" -c 'frobnicate'
bad "usage error" "usage: set path\[index\] value" -c 'set /t/arr'
bad "unknown ls option" "unknown option '-x'" -c 'ls -x'

# ---------------------------------------------------------------------------
# Several -c: all run in order; the first error stops the rest (MIDAS #11)
# ---------------------------------------------------------------------------
out "several -c run in order" 5 -c 'mkdir /m' -c 'create INT32 /m/a' -c 'set /m/a 5' -c 'get /m/a'
run -c 'mkdir /s1' -c 'get /nothere' -c 'mkdir /s2' -c 'get /m/a'
if [ "$RC" -eq 1 ] && [ -z "$OUT" ] &&
    [ "$ERR" = "odbedit: get /nothere: no such key (no key 'nothere' in path '/nothere')" ]; then
    pass
else
    fail "stop at the first failing -c (exit 1, one error line, no later output)"
    show
fi
run -c 'ls /'
grep -qx 's1/' <<<"$OUT" && ! grep -qx 's2/' <<<"$OUT" && pass || {
    fail "/s1 should exist and /s2 should not"
    show
}
ok "quit stops the -c list" -c 'quit' -c 'mkdir /afterquit'
bad "nothing ran after quit" "no such key" -c 'ls /afterquit'

# ---------------------------------------------------------------------------
# cd / pwd / relative paths
# ---------------------------------------------------------------------------
out "cd and pwd" $'/t\n/\n/t' -c 'cd /t' -c 'pwd' -c 'cd ..' -c 'pwd' -c 'cd t' -c 'pwd'
out "relative paths after cd" 9 -c 'cd /t' -c 'get arr[2]'
out "dot-dot in paths" 9 -c 'cd /m' -c 'get ../t/./arr[2]'
out "cd is case-insensitive and shows the real name" /System -c 'cd /system' -c 'pwd'
out "cd without argument goes to the root" / -c 'cd /t' -c 'cd' -c 'pwd'

# ---------------------------------------------------------------------------
# rm, mv, ln, cp, chmod
# ---------------------------------------------------------------------------
ok "set up a tree" -c 'mkdir /d/sub' -c 'create INT32 /d/sub/v' -c 'set /d/sub/v 42'
bad "rm of a non-empty directory needs -r" "directory not empty" -c 'rm /d'
ok "rm -r" -c 'rm -r /d/sub'
out "rm -r removed the subtree" "" -c 'ls /d'
bad "rm of a missing key" "no such key" -c 'rm /d/nope'
ok "rm of a value" -c 'create INT8 /d/x' -c 'rm /d/x'

ok "mv setup" -c 'create INT32 /d/a' -c 'set /d/a 11' -c 'mkdir /e'
ok "mv renames in place" -c 'mv /d/a b'
out "renamed" 11 -c 'get /d/b'
ok "mv into another directory" -c 'mv /d/b /e'
out "moved into the directory" 11 -c 'get /e/b'
bad "the source is gone after mv" "no such key" -c 'get /d/b'
ok "mv to a new path elsewhere" -c 'mv /e/b /d/c'
out "moved to the new path" 11 -c 'get /d/c'
bad "mv onto an existing name" "key already exists" -c 'create INT8 /d/z' -c 'mv /d/z c'

ok "ln" -c 'ln /t/arr /d/lnk'
out "get through a link" 9 -c 'get /d/lnk[2]'
has "ls shows the link" '^lnk -> /t/arr$' -c 'ls /d'
has "ls -l shows the target's type" '^lnk -> /t/arr +INT32 +4 ' -c 'ls -l /d'
ok "ln to a missing target" -c 'ln /nothing/here /d/broken'
has "broken link shown" '^broken -> /nothing/here .*<broken link>$' -c 'ls -l /d'
ok "rm of a link deletes the link only" -c 'rm /d/lnk' -c 'rm /d/broken'
out "link target still there" 9 -c 'get /t/arr[2]'

ok "cp a subtree" -c 'cp /t /t2'
out "cp copied values" $'9\nhello world' -c 'get /t2/arr[2]' -c 'get /t2/string'
ok "cp into an existing directory" -c 'cp /d/c /e'
out "copied into the directory" 11 -c 'get /e/c'
bad "cp onto an existing key" "key already exists" -c 'cp /d/c /e/c'
bad "cp of a missing key" "no such key" -c 'cp /nope /e'

ok "chmod read-only" -c 'chmod r /d/c'
has "ls -l shows the mode" '^c +INT32 +1 +4 r-- ' -c 'ls -l /d'
bad "write to a read-only key" "access mode forbids" -c 'set /d/c 1'
ok "chmod with a number" -c 'chmod 7 /d/c' -c 'set /d/c 12'
bad "bad mode" "not letters from rwd" -c 'chmod xyz /d/c'

# ---------------------------------------------------------------------------
# json, save/load round trip
# ---------------------------------------------------------------------------
has "json of a subtree" '"int8": -128' -c 'json /t'
strip_mtime() { sed -E 's/, "mtime": [0-9]+//'; }
run -c 'json /t'
JSON_T=$(strip_mtime <<<"$OUT")
for f in t.json t.json.gz; do
    ok "save $f" -c 'cd /t' -c "save $TMP/$f"
    [ -s "$TMP/$f" ] && pass || fail "$f was not written"
    ok "load $f into another directory" -c "mkdir /r_$f" -c "cd /r_$f" -c "load $TMP/$f"
    run -c "json /r_$f"
    [ "$(strip_mtime <<<"$OUT")" = "$JSON_T" ] && pass || {
        fail "save/load round trip through $f"
        diff <(echo "$JSON_T") <(strip_mtime <<<"$OUT") | head -20
    }
done
gzip -t "$TMP/t.json.gz" 2>/dev/null && pass || fail "t.json.gz is not gzip"
printf '{"broken": ' >"$TMP/bad.json"
bad "load of malformed JSON" "load .*: malformed JSON" -c "load $TMP/bad.json"
bad "load of a missing file" "No such file" -c "load $TMP/missing.json"

# ---------------------------------------------------------------------------
# Clients: scl, ls -l /System/Clients, names
# ---------------------------------------------------------------------------
run -c 'scl' -c 'ls -l /System/Clients' -c 'json /System/Clients'
SLOT=$(awk '/\(this odbedit\)/ { print $1 }' <<<"$OUT")
if [ "$RC" -eq 0 ] && [ -z "$ERR" ] && [ -n "$SLOT" ] &&
    grep -Eq "^$SLOT +odbedit " <<<"$OUT" &&
    grep -Eq "^$SLOT/ +DIR " <<<"$OUT" &&
    grep -q '"Name": "odbedit"' <<<"$OUT"; then
    pass
else
    fail "scl and ls -l /System/Clients show this odbedit"
    show
fi
has "-n sets the client name" '^[0-9]+ +shifter ' -n shifter -c 'scl'

# MIDAS failure mode 1 (short version of the torture run): many odbedits
# listing /System/Clients while the others connect and disconnect. No error
# may ever be printed.
churn_fail=0
for round in 1 2 3; do
    pids=()
    for i in $(seq 1 20); do
        timeout 60 "$ODBEDIT" -e "$EXP" -c 'ls -l /System/Clients' -c 'scl' -c 'ls /System/Clients' \
            >/dev/null 2>"$TMP/churn.$round.$i" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do
        wait "$p" || churn_fail=1
    done
done
if [ "$churn_fail" -eq 0 ] && ! grep -q . "$TMP"/churn.*; then pass; else
    fail "ls -l /System/Clients during client churn printed errors or failed"
    cat "$TMP"/churn.* | head -5
fi

# ---------------------------------------------------------------------------
# Messages
# ---------------------------------------------------------------------------
ok "msg posts" -c 'msg hello from the test'
has "msg shows it" '^[0-9-]+ [0-9:.]+ \[odbedit,USER\] hello from the test$' -c 'msg 5'
has "msg default count" '\[odbedit,USER\] hello from the test$' -c 'msg'
bad "msg 0" "message count must be at least 1" -c 'msg 0'

# ---------------------------------------------------------------------------
# buffers, help, check
# ---------------------------------------------------------------------------
out "no event buffers" "no event buffers" -c 'buffers'
ok "fake buffer statistics" -c 'create UINT32 /System/Buffers/TEST/Size' \
    -c 'set /System/Buffers/TEST/Size 1024' -c 'create DOUBLE /System/Buffers/TEST/Rate'
has "buffers lists /System/Buffers generically" '^TEST +Size=1024, Rate=0$' -c 'buffers'
ok "remove fake buffer" -c 'rm -r /System/Buffers'
has "help lists commands" '^  create TYPE path \[n\] \[size\] ' -c 'help'
has "help COMMAND" '^usage: watch path$' -c 'help watch'
bad "help of an unknown command" "unknown command 'nope'" -c 'help nope'
out "check" "ODB check: ok" -c 'check'

# ---------------------------------------------------------------------------
# Commands from a pipe (no terminal: no prompt)
# ---------------------------------------------------------------------------
OUT=$(printf 'mkdir /a\nls\n' | timeout 60 "$ODBEDIT" -e "$EXP" 2>"$TMP/stderr")
RC=$?
ERR=$(cat "$TMP/stderr")
if [ "$RC" -eq 0 ] && [ -z "$ERR" ] && grep -qx 'a/' <<<"$OUT" && ! grep -q '\$ ' <<<"$OUT"; then
    pass
else
    fail "commands from a pipe"
    show
fi
OUT=$(printf 'cd /a\nbogus\npwd\n' | timeout 60 "$ODBEDIT" -e "$EXP" 2>"$TMP/stderr")
RC=$?
ERR=$(cat "$TMP/stderr")
if [ "$RC" -eq 1 ] && [ "$OUT" = /a ] && grep -q '^odbedit: bogus: ' <<<"$ERR"; then pass; else
    fail "a pipe keeps going after an error and exits 1"
    show
fi

# ---------------------------------------------------------------------------
# watch: prints changes until SIGINT, then the next -c runs
# ---------------------------------------------------------------------------
ok "watch setup" -c 'create INT32 /wt/x' -c 'create STRING /wt/s'
timeout 60 "$ODBEDIT" -e "$EXP" -c 'watch /wt' -c 'get /wt/x' >"$TMP/watch.out" \
    2>"$TMP/watch.err" &
WATCH_PID=$!
seen=
for i in $(seq 1 100); do # until the watch is registered: at most ~10 s
    "$ODBEDIT" -e "$EXP" -c "set /wt/x $i" 2>>"$TMP/watch.err"
    if grep -q '^/wt/x = ' "$TMP/watch.out"; then
        seen=$i
        break
    fi
    sleep 0.1
done
[ -n "$seen" ] && pass || fail "watch printed nothing for changes of /wt/x"
has "a second odbedit is named odbedit1" '^[0-9]+ +odbedit1 ' -c 'scl'
ok "changes while watching" -c 'set /wt/s hello' -c 'set /wt/x 777'
for i in $(seq 1 100); do
    grep -q '^/wt/x = 777$' "$TMP/watch.out" && break
    sleep 0.1
done
kill -INT "$WATCH_PID"
wait "$WATCH_PID"
RC=$?
WATCH_PID=
OUT=$(cat "$TMP/watch.out")
ERR=$(cat "$TMP/watch.err")
if [ "$RC" -eq 0 ] && [ -z "$ERR" ] && grep -qx '/wt/s = hello' <<<"$OUT" &&
    grep -qx '/wt/x = 777' <<<"$OUT" && [ "$(tail -n 1 <<<"$OUT")" = 777 ]; then
    pass
else
    fail "watch output, SIGINT ends it, the next -c runs"
    show
fi
bad "watch of a missing key" "no such key" -c 'watch /nope'

# ---------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------
run -h localhost:1175 -c 'ls'
[ "$RC" -eq 2 ] && [ "$ERR" = "odbedit: remote experiments (-h) are not supported yet" ] && pass || {
    fail "-h is refused with exit status 2"
    show
}
run -Z
[ "$RC" -eq 2 ] && grep -q '^usage: odbedit' <<<"$ERR" && pass || {
    fail "a bad option prints the usage and exits 2"
    show
}
run extra
[ "$RC" -eq 2 ] && pass || fail "a stray argument exits 2"

# ---------------------------------------------------------------------------
# Finally: the ODB is intact
# ---------------------------------------------------------------------------
out "final integrity check" "ODB check: ok" -c 'check'

echo "test_odbedit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
