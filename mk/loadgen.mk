# reflex-bench, the load generator (perf/loadgen/, issue 4), and its unit tests.
# main.c is the program; every other perf/loadgen/*.c is a module the unit
# tests link too. Of the gateway it needs only the HTTP parser, so it links
# that one object rather than libgateway.a: a half-written gateway module
# elsewhere cannot break the load generator's build.
LOADGEN_GATEWAY_OBJS := $(BUILD)/obj/gateway/http/parse.o

LOADGEN := $(BUILD)/reflex-bench
LOADGEN_MOD_SRCS := $(filter-out perf/loadgen/main.c,$(sort $(wildcard perf/loadgen/*.c)))
LOADGEN_MOD_OBJS := $(LOADGEN_MOD_SRCS:%.c=$(BUILD)/obj/%.o)

build: $(LOADGEN)

$(LOADGEN): $(BUILD)/obj/perf/loadgen/main.o $(LOADGEN_MOD_OBJS) $(LOADGEN_GATEWAY_OBJS)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The generic unit rule links libgateway.a only; these tests also need the
# loadgen modules (an explicit static-pattern rule wins over the pattern rule).
LOADGEN_UNIT_BINS := $(filter $(BUILD)/tests/unit/perf/loadgen/%,$(UNIT_BINS))
$(LOADGEN_UNIT_BINS): $(BUILD)/tests/unit/perf/loadgen/%: $(BUILD)/obj/tests/unit/perf/loadgen/%.o \
		$(LOADGEN_MOD_OBJS) $(TESTLIB_OBJS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# make bench uses reflex-bench for its open-loop section.
bench: $(LOADGEN)
