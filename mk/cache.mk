# cache: the Reflex cache (gateway/http/cache*.c, gateway/core/redis.c;
# docs/cache.md). Concurrency Kit for the shared L1 (ck_hs, ck_epoch),
# XXH3 for keys, hiredis's reader/formatter for the Redis L2; redis-server
# is only for the e2e tests that share an L2 between two gateways.
DEPS_PKGS += libck-dev libhiredis-dev libxxhash-dev redis-server
LDLIBS    += -lck -lhiredis -lxxhash

# Eviction micro-benchmark (SIEVE vs LRU hit ratio on a Zipf trace). Not a
# test: `make cache-evict-bench && build/cache-evict-bench`.
CACHE_EVICT_BENCH := $(BUILD)/cache-evict-bench
.PHONY: cache-evict-bench
cache-evict-bench: $(CACHE_EVICT_BENCH)
$(CACHE_EVICT_BENCH): $(BUILD)/obj/perf/scenarios/cache_evict_bench.o $(LIBGATEWAY)
	@mkdir -p $(@D)
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(LDLIBS)
