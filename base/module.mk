# base/: error codes, logging, alloc, time, shm mapping, rank-checked lock.
# -> $(B)/libut.a; public header base/ut.h; every global symbol starts with ut_.
ut_SRCS := $(wildcard base/*.c)
ut_LIB := libut.a
ut_PREFIX := ut_
LIB_MODULES += ut
