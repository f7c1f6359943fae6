# detect: the reflex detectors (gateway/http/detect.c) need Hyperscan and
# OpenSSL's HMAC; the scan benchmark also needs PCRE2 for its baseline.
DEPS_PKGS += libhyperscan-dev libpcre2-dev libssl-dev
LDLIBS    += -lhs -lcrypto

# Scan throughput, Hyperscan (full detector set) vs PCRE2 JIT pattern by
# pattern. A benchmark, not a test: `make build/scan-bench && build/scan-bench`.
SCAN_BENCH := $(BUILD)/scan-bench
.PHONY: scan-bench
scan-bench: $(SCAN_BENCH)
$(SCAN_BENCH): $(BUILD)/obj/perf/scenarios/scan_bench.o $(LIBGATEWAY)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ -lpcre2-8 $(LDLIBS)
