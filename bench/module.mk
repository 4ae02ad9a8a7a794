# bench/: each bench/<name>.c is one program, $(B)/bench/<name>, printing our
# figure, the limit measured in the same run, and the ratio. `make bench`
# builds V=release and runs them all (scripts/run-bench.sh).
BENCH_SRCS += $(wildcard bench/*.c)
