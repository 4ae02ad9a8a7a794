# mserver/: wire protocol + RPC client -> $(B)/librpc.a (prefix rpc_), and the
# `mserver` program -> $(B)/bin/mserver, whose main() lives in mserver/mserver.c.
# Every other mserver/*.c goes into librpc.a. To give the program more private
# files, list them in mserver_SRCS and filter them out of rpc_SRCS.
mserver_MAIN := $(wildcard mserver/mserver.c)
rpc_SRCS := $(filter-out $(mserver_MAIN),$(wildcard mserver/*.c))
rpc_LIB := librpc.a
rpc_PREFIX := rpc_
LIB_MODULES += rpc
ifneq ($(mserver_MAIN),)
mserver_SRCS := $(mserver_MAIN)
PROGS += mserver
endif
