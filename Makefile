# Reflex — one Makefile, visible steps:
#   deps → gateway objects → reflexd → reflex-origin → tests → fuzz → bench
# Output goes to build/ (BUILD=dir to change). V=1 prints commands.
# SANITIZE=address,undefined builds everything with sanitizers (jemalloc is
# left out then: ASan brings its own allocator).
# Later components (bpf/, userspace/, control/, perf/loadgen/) add their
# rules in mk/<component>.mk, included below, so this file stays the index.

BUILD    ?= build
CC       ?= gcc
CLANG    ?= clang
V        ?= 0
SANITIZE ?=

ifeq ($(V),1)
Q :=
else
Q := @
endif

# The Debian 12 packages the project needs (build, test, run, bench).
DEPS_PKGS := gcc make pkg-config clang libclang-rt-14-dev liburing-dev libyaml-dev \
	libjemalloc-dev libcurl4-openssl-dev libssl-dev libxxhash-dev curl nginx wrk \
	procps iproute2 util-linux

CPPFLAGS += -D_GNU_SOURCE -I. -Igateway -MMD -MP
CFLAGS   ?= -O2 -g
CFLAGS   += -std=gnu11 -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare \
	    -Wshadow -Wstrict-prototypes -Wmissing-prototypes -fno-strict-aliasing \
	    -pthread
LDLIBS   := -luring -lyaml -lm -lpthread
MALLOC_LIB := -ljemalloc

ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=$(SANITIZE)
MALLOC_LIB :=
endif

# ---- gateway objects (everything but main.c goes into libgateway.a) --------
GATEWAY_SRCS := $(sort $(wildcard gateway/core/*.c gateway/http/*.c) $(wildcard gateway/admin.c))
GATEWAY_OBJS := $(GATEWAY_SRCS:%.c=$(BUILD)/obj/%.o)
LIBGATEWAY   := $(BUILD)/libgateway.a

# ---- programs ---------------------------------------------------------------
REFLEXD := $(BUILD)/reflexd
ORIGIN  := $(BUILD)/reflex-origin
ORIGIN_SRCS := $(sort $(wildcard perf/origin/*.c))
# Of the gateway the origin needs only the HTTP parser: linking that object
# alone keeps a half-written gateway module from breaking the origin (and with
# it every e2e test and benchmark).
ORIGIN_GATEWAY_OBJS := $(BUILD)/obj/gateway/http/parse.o

PROGRAMS := $(REFLEXD) $(ORIGIN)

# ---- tests ------------------------------------------------------------------
TESTLIB_OBJS := $(BUILD)/obj/tests/lib/test.o
# tests/unit mirrors the tree: tests/unit/gateway/http/test_parse.c tests
# gateway/http/parse.c and links libgateway.a.
UNIT_SRCS  := $(sort $(shell find tests/unit -name 'test_*.c' 2>/dev/null))
UNIT_BINS  := $(UNIT_SRCS:%.c=$(BUILD)/%)
# tests/e2e: numbered scenarios, each one program linking the e2e harness.
E2E_SRCS   := $(sort $(wildcard tests/e2e/[0-9]*.c))
E2E_BINS   := $(E2E_SRCS:%.c=$(BUILD)/%)
E2E_LIB_SRCS := $(sort $(wildcard tests/e2e/lib/*.c))
E2E_LIB_OBJS := $(E2E_LIB_SRCS:%.c=$(BUILD)/obj/%.o)
# tests/fuzz: libFuzzer targets (clang). Each links the sources it names in
# FUZZ_SRCS_<target> (default: the HTTP parser).
FUZZ_SRCS  := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS  := $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)
FUZZ_DEFAULT_SRCS := gateway/http/parse.c

.PHONY: all deps build test test-unit test-e2e test-fuzz fuzz run bench clean format format-check
all: build

build: $(PROGRAMS) $(UNIT_BINS) $(E2E_BINS)

-include $(sort $(wildcard mk/*.mk))

# `make deps` installs what is missing, and only then runs apt-get update.
deps:
	$(Q)missing=$$(for p in $(DEPS_PKGS); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; \
	done); \
	if [ -n "$$missing" ]; then \
		echo "deps: installing" $$missing; \
		if [ "$$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "deps: all installed"; fi

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(LIBGATEWAY): $(GATEWAY_OBJS)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(REFLEXD): $(BUILD)/obj/gateway/main.o $(LIBGATEWAY) $(REFLEXD_EXTRA_LIBS)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(REFLEXD_LDLIBS) $(LDLIBS) $(MALLOC_LIB)

$(ORIGIN): $(ORIGIN_SRCS:%.c=$(BUILD)/obj/%.o) $(ORIGIN_GATEWAY_OBJS)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(MALLOC_LIB)

$(BUILD)/tests/unit/%: $(BUILD)/obj/tests/unit/%.o $(TESTLIB_OBJS) $(LIBGATEWAY)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/e2e/%: $(BUILD)/obj/tests/e2e/%.o $(E2E_LIB_OBJS) $(TESTLIB_OBJS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ -lcurl $(LDLIBS)

# libFuzzer targets, built with clang and ASan/UBSan from the sources they test.
fuzz: $(FUZZ_BINS)
$(BUILD)/fuzz/%: tests/fuzz/%.c $(FUZZ_DEFAULT_SRCS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  FUZZ    $@")
	$(Q)$(CLANG) -g -O1 -D_GNU_SOURCE -I. -Igateway -fsanitize=fuzzer,address,undefined \
		-o $@ $< $(or $(FUZZ_SRCS_$*),$(FUZZ_DEFAULT_SRCS))

# Every tier; the last line of output is "N passed, N failed".
test: deps
	$(Q)$(MAKE) --no-print-directory build fuzz
	$(Q)tests/run.sh

test-unit: build
	$(Q)tests/run.sh unit
test-e2e: build
	$(Q)tests/run.sh e2e
test-fuzz: fuzz
	$(Q)tests/run.sh fuzz

# The demo: two reflex-origin replicas behind reflexd on 127.0.0.1:8080.
run: deps
	$(Q)$(MAKE) --no-print-directory $(PROGRAMS)
	$(Q)exec deploy/demo/run.sh $(BUILD)

# Benchmarks (not tests): perf/scenarios/*.sh, compared against nginx in one run.
bench: deps
	$(Q)$(MAKE) --no-print-directory $(PROGRAMS)
	$(Q)perf/scenarios/bench.sh $(BUILD)
	$(Q)perf/scenarios/features.sh $(BUILD)

format:
	$(Q)clang-format -i $$(git ls-files '*.c' '*.h')
format-check:
	$(Q)clang-format --dry-run --Werror $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
