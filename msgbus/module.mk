# msgbus/: event buffers and the system-message ring.
# -> $(B)/libmb.a; public header msgbus/mb.h; prefix mb_. Empty until sources exist.
mb_SRCS := $(wildcard msgbus/*.c)
mb_LIB := libmb.a
mb_PREFIX := mb_
LIB_MODULES += mb
