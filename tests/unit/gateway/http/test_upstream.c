/* Endpoint choice: power of two choices on in-flight requests (weighted)
 * and smooth weighted round robin. */
#include <stdlib.h>

#include "../../../lib/test.h"
#include "core/config.h"
#include "http/upstream.h"

static struct cfg_endpoint cfg_eps[8];
static struct cfg_pool cfg_pool;
static struct endpoint_state eps[8];
static struct pool_state pool;

static void setup(unsigned n, enum cfg_balance bal, const unsigned *weights)
{
	cfg_pool = (struct cfg_pool){ .balance = bal, .endpoints = cfg_eps, .n_endpoints = n };
	pool = (struct pool_state){ .cfg = &cfg_pool, .eps = eps, .n_eps = n };
	for (unsigned i = 0; i < n; i++) {
		cfg_eps[i] = (struct cfg_endpoint){ .weight = weights ? weights[i] : 1 };
		eps[i] = (struct endpoint_state){ .cfg = &cfg_eps[i] };
	}
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

int main(void)
{
	test_begin("pick_empty_and_single");
	setup(0, CFG_BALANCE_P2C, NULL);
	CHECK(pool_pick(&pool, 1) == NULL);
	setup(1, CFG_BALANCE_P2C, NULL);
	CHECK(pool_pick(&pool, 12345) == &eps[0]);
	test_end();

	test_begin("p2c_draws_two_distinct");
	/* With two endpoints the pair is always {0, 1}: the less loaded wins,
	 * whatever the random value. */
	setup(2, CFG_BALANCE_P2C, NULL);
	eps[0].inflight = 5;
	eps[1].inflight = 1;
	for (int i = 0; i < 1000; i++)
		CHECK(pool_pick(&pool, next_rand()) == &eps[1]);
	test_end();

	test_begin("p2c_avoids_the_loaded_endpoint");
	/* One of four endpoints is loaded: it can only win when drawn twice,
	 * which P2C never does (distinct pair) — so it is never picked. */
	setup(4, CFG_BALANCE_P2C, NULL);
	eps[2].inflight = 10;
	unsigned hits[4] = { 0 };
	for (int i = 0; i < 40000; i++)
		hits[pool_pick(&pool, next_rand()) - eps]++;
	CHECK_INT(hits[2], 0);
	for (int i = 0; i < 4; i++)
		if (i != 2)
			CHECK_MSG(hits[i] > 10000 && hits[i] < 16000, "endpoint %d picked %u times", i,
				  hits[i]);
	test_end();

	test_begin("p2c_balances_inflight");
	/* Simulate: each pick adds a request, a random in-flight one finishes.
	 * The spread of in-flight counts stays small. */
	setup(5, CFG_BALANCE_P2C, NULL);
	unsigned total = 0;
	for (int i = 0; i < 100000; i++) {
		struct endpoint_state *e = pool_pick(&pool, next_rand());
		e->inflight++;
		total++;
		if (total > 50) {
			unsigned k;
			do
				k = (unsigned)(next_rand() % 5);
			while (!eps[k].inflight);
			eps[k].inflight--;
			total--;
		}
	}
	unsigned lo = ~0u, hi = 0;
	for (int i = 0; i < 5; i++) {
		if (eps[i].inflight < lo)
			lo = eps[i].inflight;
		if (eps[i].inflight > hi)
			hi = eps[i].inflight;
	}
	CHECK_MSG(hi - lo <= 6, "in-flight spread %u..%u", lo, hi);
	test_end();

	test_begin("p2c_weighted");
	/* Equal load, weight 3 vs 1: the load per unit of weight decides. */
	unsigned w31[] = { 3, 1 };
	setup(2, CFG_BALANCE_P2C, w31);
	eps[0].inflight = 2; /* 2/3 per weight */
	eps[1].inflight = 1; /* 1/1 */
	CHECK(pool_pick(&pool, 7) == &eps[0]);
	eps[0].inflight = 4; /* 4/3 > 1 */
	CHECK(pool_pick(&pool, 7) == &eps[1]);
	test_end();

	test_begin("round_robin_even");
	setup(3, CFG_BALANCE_ROUND_ROBIN, NULL);
	for (int i = 0; i < 9; i++)
		CHECK(pool_pick(&pool, 0) == &eps[i % 3]);
	test_end();

	test_begin("round_robin_weighted_smooth");
	/* weights 5,1,1: in every window of 7 picks, 5/1/1, and endpoint 0
	 * never gets more than 3 in a row (smooth, not bursty) */
	unsigned w511[] = { 5, 1, 1 };
	setup(3, CFG_BALANCE_ROUND_ROBIN, w511);
	for (int round = 0; round < 10; round++) {
		unsigned cnt[3] = { 0 }, run = 0, maxrun = 0;
		for (int i = 0; i < 7; i++) {
			struct endpoint_state *e = pool_pick(&pool, 0);
			cnt[e - eps]++;
			run = (e == &eps[0]) ? run + 1 : 0;
			if (run > maxrun)
				maxrun = run;
		}
		CHECK_INT(cnt[0], 5);
		CHECK_INT(cnt[1], 1);
		CHECK_INT(cnt[2], 1);
		CHECK_MSG(maxrun <= 3, "run of %u picks of the heavy endpoint", maxrun);
	}
	test_end();
	return test_exit_code();
}
