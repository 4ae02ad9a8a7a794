# client/: connect/disconnect, /System/Clients, watchdog, local-or-remote facade.
# -> $(B)/libaurum.a; prefix au_. Empty until sources exist.
au_SRCS := $(wildcard client/*.c)
au_LIB := libaurum.a
au_PREFIX := au_
LIB_MODULES += au
