# tests/: tests/<mod>/test_<topic>.c is one cmocka binary each,
# $(B)/tests/<mod>/test_<topic>, linked with every library and -lcmocka.
# Any other .c under tests/ (shared fixtures) goes into $(B)/libtesthelp.a,
# linked into the test binaries only.
# Executable tests/**/*.sh scripts are run by `make test` too (with $(B) as $1).
TEST_SRCS += $(wildcard tests/*/test_*.c)
TESTHELP_SRCS += $(filter-out $(wildcard tests/*/test_*.c),$(wildcard tests/*.c tests/*/*.c))
