# mk/bpf.mk — kernel side (bpf/) and its userspace library (userspace/), included by the Makefile.
#   vmlinux.h (from the running kernel's BTF) → bpf/*.bpf.c → build/bpf/*.bpf.o (CO-RE)
#   → build/bpf/*.skel.h (bpftool gen skeleton) → userspace/*.c → build/libreflexbpf.a
#   → tests/bpf/test_*.c → build/tests/bpf/test_*
# The gateway links $(LIBREFLEXBPF) with $(REFLEXBPF_LDLIBS).

DEPS_PKGS += libbpf-dev bpftool
# nft(8): tests/bpf/test_trace.c induces packet loss with an nftables rule in its own netns
DEPS_PKGS += nftables

BPFTOOL ?= $(or $(shell command -v bpftool 2>/dev/null),/usr/sbin/bpftool)
VMLINUX_BTF ?= /sys/kernel/btf/vmlinux
VMLINUX_H := $(BUILD)/vmlinux.h
BPF_ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/' -e 's/ppc64le/powerpc/' \
	-e 's/s390x/s390/' -e 's/riscv64/riscv/')
# -mcpu=v3: atomics (the GCRA compare-and-swap) and 32-bit jumps.
BPF_CFLAGS := -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_$(BPF_ARCH) -Wall -Wno-unused-function \
	-I$(BUILD) -Ibpf

BPF_SRCS  := $(sort $(wildcard bpf/*.bpf.c))
BPF_OBJS  := $(BPF_SRCS:%.bpf.c=$(BUILD)/%.bpf.o)
BPF_SKELS := $(BPF_OBJS:%.bpf.o=%.skel.h)

USERSPACE_SRCS := $(sort $(wildcard userspace/*.c))
USERSPACE_OBJS := $(USERSPACE_SRCS:%.c=$(BUILD)/obj/%.o)
LIBREFLEXBPF   := $(BUILD)/libreflexbpf.a
REFLEXBPF_LDLIBS := -lbpf -lelf -lz

BPF_TEST_SRCS := $(sort $(wildcard tests/bpf/test_*.c))
BPF_TEST_BINS := $(BPF_TEST_SRCS:%.c=$(BUILD)/%)

.PHONY: bpf test-bpf
.SECONDARY: $(BPF_OBJS) $(VMLINUX_H) $(BPF_TEST_SRCS:%.c=$(BUILD)/obj/%.o)
bpf: $(BPF_SKELS) $(LIBREFLEXBPF) $(BPF_TEST_BINS)
build: bpf
test-bpf: bpf
	$(Q)tests/run.sh bpf

$(VMLINUX_H):
	@mkdir -p $(@D)
	@$(if $(Q),echo "  BTF     $@")
	$(Q)$(BPFTOOL) btf dump file $(VMLINUX_BTF) format c >$@.tmp && mv $@.tmp $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c bpf/%.h $(VMLINUX_H)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  BPF     $@")
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/bpf/%.skel.h: $(BUILD)/bpf/%.bpf.o
	@$(if $(Q),echo "  SKEL    $@")
	$(Q)$(BPFTOOL) gen skeleton $< name $*_bpf >$@.tmp && mv $@.tmp $@

# userspace/ includes the skeletons it drives.
$(USERSPACE_OBJS): CPPFLAGS += -I$(BUILD)/bpf
$(USERSPACE_OBJS): $(BPF_SKELS)

$(LIBREFLEXBPF): $(USERSPACE_OBJS)
	@$(if $(Q),echo "  AR      $@")
	$(Q)rm -f $@ && ar rcs $@ $^

$(BUILD)/tests/bpf/%: $(BUILD)/obj/tests/bpf/%.o $(TESTLIB_OBJS) $(LIBREFLEXBPF)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(REFLEXBPF_LDLIBS) $(LDLIBS)

# reflexd owns the kernel limiter (gateway/http/limit_kernel.c): link the library into it.
REFLEXD_EXTRA_LIBS += $(LIBREFLEXBPF)
REFLEXD_LDLIBS += $(REFLEXBPF_LDLIBS)

# tests/bpf/test_trace_gateway drives reflexd and reflex-origin through the e2e harness.
$(BUILD)/tests/bpf/test_trace_gateway: $(E2E_LIB_OBJS)
$(BUILD)/tests/bpf/test_trace_gateway: LDLIBS += -lcurl
