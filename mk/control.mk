# control plane: reflexctl (control/), the audit log's hashes (OpenSSL
# libcrypto, used by gateway/core/audit.c and reflexctl), and the JSON reader
# (control/json.c) that reflexctl and the control-plane tests share.
DEPS_PKGS += libssl-dev
LDLIBS    += -lcrypto

REFLEXCTL := $(BUILD)/reflexctl
REFLEXCTL_SRCS := $(sort $(wildcard control/*.c))
REFLEXCTL_OBJS := $(REFLEXCTL_SRCS:%.c=$(BUILD)/obj/%.o)
# Of the gateway reflexctl needs the HTTP parser (responses) and the audit
# chain verifier; linking those objects alone keeps a half-written data-path
# module from breaking the CLI.
REFLEXCTL_GATEWAY_OBJS := $(addprefix $(BUILD)/obj/gateway/,http/parse.o core/audit.o core/buf.o core/jsonw.o)
CONTROL_JSON_OBJ := $(BUILD)/obj/control/json.o

build: $(REFLEXCTL)
$(REFLEXCTL): $(REFLEXCTL_OBJS) $(REFLEXCTL_GATEWAY_OBJS)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ -lcrypto -lm

# Tests that read JSON link the reader (extra prerequisites land in $^).
$(BUILD)/tests/unit/gateway/core/test_accesslog $(BUILD)/tests/unit/gateway/core/test_audit \
		$(BUILD)/tests/unit/control/test_json: $(CONTROL_JSON_OBJ)
CONTROL_E2E_BINS := $(filter $(foreach n,21 22 23 24,$(BUILD)/tests/e2e/$(n)_%),$(E2E_BINS))
$(CONTROL_E2E_BINS): $(CONTROL_JSON_OBJ)
# the e2e scenarios run reflexctl
$(CONTROL_E2E_BINS): | $(REFLEXCTL)
