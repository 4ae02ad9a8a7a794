# odb/: the shared-memory online database.
# -> $(B)/libodb.a; public header odb/odb.h, private odb/odb_int.h; prefix odb_.
odb_SRCS := $(wildcard odb/*.c)
odb_LIB := libodb.a
odb_PREFIX := odb_
LIB_MODULES += odb
