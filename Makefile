# aurum top-level Makefile: plain GNU make, non-recursive (STYLE.md section 7).
#
# Each folder's module.mk only sets its own variables and appends to the lists
# below; this file holds every rule. Module kinds:
#
#   library   LIB_MODULES += <m>;  <m>_SRCS := ...;  <m>_LIB := lib<x>.a;
#             <m>_PREFIX := <m>_   (checked by `make check-symbols`)
#             A library with no sources yet is skipped entirely.
#   program   PROGS += <p>;  <p>_SRCS := ...   ->  $(B)/bin/<p>
#   tests     TEST_SRCS += tests/<mod>/test_<topic>.c  ->  $(B)/tests/<mod>/test_<topic>
#             TESTHELP_SRCS += other tests/ .c files -> $(B)/libtesthelp.a (tests only)
#   bench     BENCH_SRCS += bench/<name>.c      ->  $(B)/bench/<name>
#   torture   TORTURE_SRCS += torture/<name>.c  ->  $(B)/torture/<name>
#
# Every binary links every library (with --start-group, so order is free),
# plus $(LDLIBS); tests add -lcmocka.
#
# Variants: make V=debug (default) | release | asan | tsan; objects go to
# build/$(V) so variants never mix. WERROR=1 adds -Werror. A change of
# compiler or flags (e.g. CC=clang, WERROR=1) rebuilds that variant's tree.

V ?= debug
B := build/$(V)
VARIANTS := debug release asan tsan
ifeq ($(filter $(V),$(VARIANTS)),)
$(error V=$(V) is not one of: $(VARIANTS))
endif

MAKEFLAGS += --no-builtin-rules
.SUFFIXES:
.DELETE_ON_ERROR:
.DEFAULT_GOAL := all

# ---- flags ---------------------------------------------------------------
WARNINGS := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 -Wvla \
            -Wpointer-arith -Wcast-align -fno-common
BASE_CFLAGS := -std=c11 -g -O1 -pthread $(WARNINGS)

VARIANT_CFLAGS_debug   :=
VARIANT_CFLAGS_release := -O2
VARIANT_CFLAGS_asan    := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
VARIANT_CFLAGS_tsan    := -fsanitize=thread
SAN_FLAGS := $(filter -fsanitize%,$(VARIANT_CFLAGS_$(V)))

# release replaces -O1 with -O2 and keeps asserts (no -DNDEBUG).
ifeq ($(V),release)
BASE_CFLAGS := $(filter-out -O1,$(BASE_CFLAGS))
endif

# CFLAGS, CPPFLAGS, LDFLAGS given by the user are appended, never replace ours.
AU_CPPFLAGS := -I. -D_GNU_SOURCE $(CPPFLAGS)
AU_CFLAGS   := $(BASE_CFLAGS) $(VARIANT_CFLAGS_$(V)) $(if $(filter 1,$(WERROR)),-Werror) $(CFLAGS)
DEPFLAGS    := -MMD -MP
AU_LDFLAGS  := -pthread $(SAN_FLAGS) $(LDFLAGS)
# One list for every binary; unused libraries are dropped by --as-needed.
LDLIBS      := -ljansson -lz -lsqlite3 -lmicrohttpd -ledit -lm -pthread
TEST_LDLIBS := -lcmocka

AR ?= ar

# ---- modules ---------------------------------------------------------------
LIB_MODULES :=
LIBS :=
PROGS :=
TEST_SRCS :=
TESTHELP_SRCS :=
BENCH_SRCS :=
TORTURE_SRCS :=

MODULE_MKS := $(sort $(wildcard */module.mk))
include $(MODULE_MKS)

# Directories holding project sources (used by format, check-includes).
SRC_DIRS := $(patsubst %/module.mk,%,$(MODULE_MKS))

obj = $(patsubst %.c,$(B)/%.o,$(1))

# Write $(2) into file $(1) only when its content changes, so that files
# depending on $(1) rebuild exactly when $(2) changes (git's GIT-CFLAGS).
define write-if-changed
	@mkdir -p $(dir $(1))
	@printf '%s\n' '$(2)' | cmp -s - $(1) || printf '%s\n' '$(2)' > $(1)
endef

FLAGS_STAMP := $(B)/.flags
$(FLAGS_STAMP): FORCE
	$(call write-if-changed,$@,$(CC) $(AU_CPPFLAGS) $(AU_CFLAGS) $(AU_LDFLAGS) $(LDLIBS))

# Libraries: one archive per module that has sources.
define LIB_template
$(1)_OBJS := $$(call obj,$$($(1)_SRCS))
ifneq ($$(strip $$($(1)_SRCS)),)
LIBS += $$(B)/$$($(1)_LIB)
BUILT_LIB_MODULES += $(1)
$$(B)/.$(1).members: FORCE
	$$(call write-if-changed,$$@,$$($(1)_OBJS))
$$(B)/$$($(1)_LIB): $$($(1)_OBJS) $$(B)/.$(1).members
	@rm -f $$@
	$$(AR) rcs $$@ $$($(1)_OBJS)
endif
endef
BUILT_LIB_MODULES :=
$(foreach m,$(LIB_MODULES),$(eval $(call LIB_template,$(m))))

LINK_LIBS = -Wl,--start-group $(LIBS) -Wl,--end-group
LINK = $(CC) $(AU_CFLAGS) $(AU_LDFLAGS) -Wl,--as-needed -o $@

# Test helper library (tests only).
TESTHELP_OBJS := $(call obj,$(TESTHELP_SRCS))
TESTHELP_LIB := $(if $(TESTHELP_SRCS),$(B)/libtesthelp.a)
ifneq ($(TESTHELP_LIB),)
$(B)/.testhelp.members: FORCE
	$(call write-if-changed,$@,$(TESTHELP_OBJS))
$(TESTHELP_LIB): $(TESTHELP_OBJS) $(B)/.testhelp.members
	@rm -f $@
	$(AR) rcs $@ $(TESTHELP_OBJS)
endif

# Programs: $(B)/bin/<p> from <p>_SRCS.
define PROG_template
$(1)_OBJS := $$(call obj,$$($(1)_SRCS))
$$(B)/bin/$(1): $$($(1)_OBJS) $$(LIBS)
	@mkdir -p $$(@D)
	$$(LINK) $$($(1)_OBJS) $$(LINK_LIBS) $$(LDLIBS)
endef
$(foreach p,$(PROGS),$(eval $(call PROG_template,$(p))))
PROG_BINS := $(addprefix $(B)/bin/,$(PROGS))
PROG_SRCS := $(foreach p,$(PROGS),$($(p)_SRCS))

# Single-source binaries.
TEST_BINS    := $(patsubst %.c,$(B)/%,$(TEST_SRCS))
BENCH_BINS   := $(patsubst %.c,$(B)/%,$(BENCH_SRCS))
TORTURE_BINS := $(patsubst %.c,$(B)/%,$(TORTURE_SRCS))

$(TEST_BINS): $(B)/%: $(B)/%.o $(LIBS) $(TESTHELP_LIB)
	@mkdir -p $(@D)
	$(LINK) $< $(TESTHELP_LIB) $(LINK_LIBS) $(TEST_LDLIBS) $(LDLIBS)

$(BENCH_BINS) $(TORTURE_BINS): $(B)/%: $(B)/%.o $(LIBS)
	@mkdir -p $(@D)
	$(LINK) $< $(LINK_LIBS) $(LDLIBS)

ALL_SRCS := $(sort $(foreach m,$(LIB_MODULES),$($(m)_SRCS)) $(PROG_SRCS) $(TEST_SRCS) \
                   $(TESTHELP_SRCS) $(BENCH_SRCS) $(TORTURE_SRCS))
ALL_OBJS := $(call obj,$(ALL_SRCS))

$(B)/%.o: %.c $(FLAGS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(AU_CPPFLAGS) $(AU_CFLAGS) $(DEPFLAGS) -c -o $@ $<

-include $(ALL_OBJS:.o=.d)

# ---- main targets ------------------------------------------------------------
.PHONY: all libs bin tests bench-bins torture-bins test asan tsan bench torture \
        format format-check tidy compdb cppcheck check-includes check-symbols check clean FORCE

# Binaries whose source was deleted or renamed are removed, so that the test
# and bench runners (which run every executable in their folder) never see them.
STALE_BINS = $(filter-out $(TEST_BINS) $(BENCH_BINS) $(TORTURE_BINS),\
               $(shell find $(B)/tests $(B)/bench $(B)/torture -type f -perm -u+x 2>/dev/null))
all: libs bin tests bench-bins torture-bins
	$(if $(STALE_BINS),rm -f $(STALE_BINS))
libs: $(LIBS)
bin: $(PROG_BINS)
tests: $(TEST_BINS)
bench-bins: $(BENCH_BINS)
torture-bins: $(TORTURE_BINS)

# Runs every test binary (and tests/**/*.sh, torture/*.sh short mode) as its own process.
test: all
	@bash scripts/run-tests.sh $(B)

asan:
	@$(MAKE) --no-print-directory V=asan test
tsan:
	@$(MAKE) --no-print-directory V=tsan test

# Benchmarks always use the release variant.
bench:
	@$(MAKE) --no-print-directory V=release all
	@bash scripts/run-bench.sh build/release

torture: all
	@bash scripts/run-torture.sh long $(B)

# ---- style and static analysis ------------------------------------------------
FMT_FILES = $(sort $(shell find $(SRC_DIRS) -type f \( -name '*.c' -o -name '*.h' \) 2>/dev/null))

format:
	$(if $(FMT_FILES),clang-format -i $(FMT_FILES),@echo "format: no sources")

format-check:
	$(if $(FMT_FILES),clang-format --dry-run --Werror $(FMT_FILES),@echo "format-check: no sources")

# compile_commands.json is written from the make variables (same flags as the
# build, no rebuild needed); `bear -- make -B` would give the same result.
COMPDB := build/compile_commands.json
COMPILE_CMD := $(CC) $(AU_CPPFLAGS) $(AU_CFLAGS)
compdb:
	@mkdir -p build
	@{ printf '['; sep=''; \
	   for f in $(ALL_SRCS); do \
	     printf '%s\n  {"directory": "%s", "file": "%s", "command": "%s -c -o %s %s"}' \
	       "$$sep" "$(CURDIR)" "$$f" "$(COMPILE_CMD)" "$(B)/$${f%.c}.o" "$$f"; \
	     sep=','; \
	   done; printf '\n]\n'; } > $(COMPDB).tmp && mv $(COMPDB).tmp $(COMPDB)
	@echo "compdb: wrote $(COMPDB) ($(words $(ALL_SRCS)) files)"

# One file per clang-tidy process: clang-tidy 14 run on several files at once
# forgets va_start after the first one and reports every later vsnprintf as
# clang-analyzer-valist.Uninitialized (a false positive).
tidy: compdb
	$(if $(ALL_SRCS),printf '%s\n' $(ALL_SRCS) | xargs -r -P2 -n1 clang-tidy -p build --quiet,@echo "tidy: no sources")

CPPCHECK_FLAGS := --enable=warning,performance,portability --std=c11 -I. --inline-suppr \
                  --error-exitcode=1 -D_GNU_SOURCE --quiet -j2
cppcheck:
	$(if $(ALL_SRCS),cppcheck $(CPPCHECK_FLAGS) $(ALL_SRCS),@echo "cppcheck: no sources")

# A private header X/*_int.h may be included only from X/ and tests/X/.
check-includes:
	@bad=$$(grep -nE '^[[:space:]]*#[[:space:]]*include[[:space:]]*"[^"]*_int\.h"' \
	        $(FMT_FILES) /dev/null | \
	  awk -F: '{ split($$0, q, "\""); inc = q[2]; \
	             if (inc !~ /\//) next; dir = inc; sub(/\/[^\/]*$$/, "", dir); \
	             if (index($$1, dir "/") == 1 || index($$1, "tests/" dir "/") == 1) next; \
	             print }'); \
	if [ -n "$$bad" ]; then \
	  echo "check-includes: private headers included from outside their module:"; \
	  echo "$$bad"; exit 1; \
	fi; echo "check-includes: ok"

# Every defined global symbol of a library must start with its prefix.
check-symbols: libs
	@fail=0; \
	$(foreach m,$(BUILT_LIB_MODULES), \
	  bad=$$(nm -g --defined-only $(B)/$($(m)_LIB) | \
	         awk 'NF == 3 && $$3 !~ /^$($(m)_PREFIX)/ { print "  " $$3 }' | sort -u); \
	  if [ -n "$$bad" ]; then \
	    echo "check-symbols: $($(m)_LIB): symbols without prefix $($(m)_PREFIX):"; \
	    echo "$$bad"; fail=1; \
	  fi;) \
	[ $$fail = 0 ] && echo "check-symbols: ok ($(words $(BUILT_LIB_MODULES)) libraries)"

check: format-check cppcheck tidy check-includes check-symbols test

clean:
	rm -rf build

FORCE:
