# reflex-origin's unit tests (perf/origin/, docs/origin.md). The program itself
# is built by the Makefile's $(ORIGIN) rule. The generic unit rule links
# libgateway.a only; these tests link the origin's modules (all but main.c)
# and the HTTP parser instead (an explicit static-pattern rule wins).
ORIGIN_MOD_OBJS := $(filter-out $(BUILD)/obj/perf/origin/main.o,$(ORIGIN_SRCS:%.c=$(BUILD)/obj/%.o))
ORIGIN_UNIT_BINS := $(filter $(BUILD)/tests/unit/perf/origin/%,$(UNIT_BINS))
$(ORIGIN_UNIT_BINS): $(BUILD)/tests/unit/perf/origin/%: $(BUILD)/obj/tests/unit/perf/origin/%.o \
		$(ORIGIN_MOD_OBJS) $(ORIGIN_GATEWAY_OBJS) $(TESTLIB_OBJS)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
