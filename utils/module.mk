# utils/: programs (odbedit, experiment init, logger, simulated front-end).
#
# Convention: each name in utils_PROGS is a program whose main() is in
# utils/<name>.c and which is built as $(B)/bin/<name>. Add a program by
# adding its name here. Every other utils/*.c is shared program code and goes
# into $(B)/libcli.a (prefix cli_), which is linked into every binary.
# Names whose source does not exist yet are skipped.
utils_PROGS := odbedit

utils_MAINS := $(wildcard $(patsubst %,utils/%.c,$(utils_PROGS)))
$(foreach f,$(utils_MAINS),$(eval $(patsubst utils/%.c,%,$(f))_SRCS := $(f)))
PROGS += $(patsubst utils/%.c,%,$(utils_MAINS))

cli_SRCS := $(filter-out $(utils_MAINS),$(wildcard utils/*.c))
cli_LIB := libcli.a
cli_PREFIX := cli_
LIB_MODULES += cli
