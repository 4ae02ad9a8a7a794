# torture/: each torture/<name>.c is one program, $(B)/torture/<name>.
# They are driven by torture/*.sh scripts (given $(B) as $1 and DURATION in
# seconds in the environment): short mode inside `make test`, long mode by
# `make torture` (scripts/run-torture.sh).
TORTURE_SRCS += $(wildcard torture/*.c)
