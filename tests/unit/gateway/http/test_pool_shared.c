/* Shared pool state: the breaker's closed → open → half-open → closed
 * cycle, outlier ejection with a growing cool-down and a cap on the
 * ejected share, slow start, the retry budget, busy limits, and endpoint
 * choice skipping what is out of rotation. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../lib/test.h"
#include "core/config.h"
#include "core/timer.h"
#include "http/breaker.h"
#include "http/pool_shared.h"
#include "http/upstream.h"

static struct config cfg;
static struct cfg_pool cp;
static struct cfg_endpoint ce[4];

static void setup_cfg(void)
{
	memset(&cfg, 0, sizeof(cfg));
	memset(&cp, 0, sizeof(cp));
	strcpy(cp.name, "t");
	cp.endpoints = ce;
	cp.n_endpoints = 4;
	for (unsigned i = 0; i < 4; i++) {
		memset(&ce[i], 0, sizeof(ce[i]));
		ce[i].weight = 1;
		snprintf(ce[i].addr.text, sizeof(ce[i].addr.text), "127.0.0.1:%u", 9000 + i);
	}
	cp.outlier = (struct cfg_outlier){.consecutive_failures = 3,
					  .ejection_time = 1000,
					  .max_ejection_time = 5000,
					  .max_ejected = 50};
	cp.breaker = (struct cfg_breaker){.enabled = true,
					  .window = 20,
					  .min_requests = 4,
					  .error_rate = 50,
					  .open_time = 1000,
					  .probes = 1};
	cp.retry = (struct cfg_retry){.attempts = 3, .budget = 20, .min_retries = 2};
	cp.limits = (struct cfg_pool_limits){.connections = 2, .retries = 0};
	cp.slow_start = 1000;
	cfg.pools = &cp;
	cfg.n_pools = 1;
}

int main(void)
{
	setup_cfg();

	test_begin("breaker_cycle");
	{
		struct breaker b = {0};
		const struct cfg_breaker *c = &cp.breaker;
		uint64_t t = 10000;
		CHECK_INT(breaker_admit(&b, c, t), BREAKER_PASS);
		CHECK(!breaker_result(&b, c, BREAKER_PASS, true, t));
		CHECK(!breaker_result(&b, c, BREAKER_PASS, false, t));
		CHECK(!breaker_result(&b, c, BREAKER_PASS, true, t));
		/* 2 of 4 failed: 50 % → open */
		CHECK(breaker_result(&b, c, BREAKER_PASS, false, t));
		CHECK_STR(breaker_state_name(breaker_state_now(&b, t)), "open");
		CHECK(!breaker_available(&b, c, t + 500));
		CHECK_INT(breaker_admit(&b, c, t + 500), BREAKER_DENY);
		/* after open_time: half-open, one probe */
		CHECK(breaker_available(&b, c, t + 1000));
		CHECK_INT(breaker_admit(&b, c, t + 1000), BREAKER_PROBE);
		CHECK_INT(breaker_admit(&b, c, t + 1000), BREAKER_DENY);
		CHECK_STR(breaker_state_name(breaker_state_now(&b, t + 1000)), "half_open");
		/* the probe fails: open again */
		CHECK(breaker_result(&b, c, BREAKER_PROBE, false, t + 1001));
		CHECK_INT(breaker_admit(&b, c, t + 1500), BREAKER_DENY);
		CHECK_INT(breaker_admit(&b, c, t + 2001), BREAKER_PROBE);
		CHECK(!breaker_result(&b, c, BREAKER_PROBE, true, t + 2002));
		CHECK_STR(breaker_state_name(breaker_state_now(&b, t + 2002)), "closed");
		CHECK_INT(breaker_admit(&b, c, t + 2003), BREAKER_PASS);
		/* a released probe frees its slot */
		struct breaker b2 = {.state = BREAKER_OPEN, .open_until_ms = 1};
		CHECK_INT(breaker_admit(&b2, c, 5), BREAKER_PROBE);
		breaker_release(&b2, BREAKER_PROBE);
		CHECK_INT(breaker_admit(&b2, c, 5), BREAKER_PROBE);
	}
	test_end();

	/* probes: 2. One probe fails and reopens the breaker while the other
	 * is still in flight; that one ends (client gone, or its verdict) in
	 * the next half-open period. Its slot must neither wrap the count
	 * (the endpoint would stay half-open and refused until a reload) nor
	 * let more than `probes` requests through at once. */
	test_begin("breaker_stale_probe_keeps_the_count");
	{
		struct cfg_breaker c2 = cp.breaker;
		c2.probes = 2;
		struct breaker b = {.state = BREAKER_OPEN, .open_until_ms = 1000};
		CHECK_INT(breaker_admit(&b, &c2, 1000), BREAKER_PROBE);
		CHECK_INT(breaker_admit(&b, &c2, 1000), BREAKER_PROBE);
		CHECK(breaker_result(&b, &c2, BREAKER_PROBE, false, 1001)); /* reopens */
		/* next half-open period: the stale probe still holds its slot */
		CHECK_INT(breaker_admit(&b, &c2, 2001), BREAKER_PROBE);
		CHECK_INT(breaker_admit(&b, &c2, 2001), BREAKER_DENY);
		breaker_release(&b, BREAKER_PROBE); /* the stale one ends */
		CHECK(breaker_available(&b, &c2, 2002));
		CHECK_INT(breaker_admit(&b, &c2, 2002), BREAKER_PROBE);
		CHECK_INT(breaker_admit(&b, &c2, 2002), BREAKER_DENY);
		breaker_release(&b, BREAKER_PROBE);
		breaker_release(&b, BREAKER_PROBE);
		CHECK_INT(b.probes, 0);
		CHECK_INT(breaker_admit(&b, &c2, 2003), BREAKER_PROBE);
		CHECK(!breaker_result(&b, &c2, BREAKER_PROBE, true, 2004));
		CHECK_STR(breaker_state_name(breaker_state_now(&b, 2004)), "closed");
	}
	test_end();

	struct pool_shared_set *set = pool_shared_get(&cfg);
	test_begin("shared_set_per_config");
	CHECK(set != NULL);
	CHECK(pool_shared_get(&cfg) == set);
	pool_shared_put(set);
	test_end();
	if (!set)
		return test_exit_code();
	struct pool_shared *p = &set->pools[0];

	test_begin("outlier_ejection_grows_and_is_capped");
	{
		uint64_t t = 100000;
		struct ep_shared *e0 = &p->eps[0], *e1 = &p->eps[1], *e2 = &p->eps[2];
		CHECK(!pool_shared_outcome(p, e0, false, t));
		CHECK(!pool_shared_outcome(p, e0, false, t));
		CHECK(pool_shared_outcome(p, e0, false, t)); /* 3rd in a row */
		CHECK(!pool_shared_available(p, e0, t + 999));
		CHECK(pool_shared_available(p, e0, t + 1000));
		/* a success resets the count */
		CHECK(!pool_shared_outcome(p, e1, false, t));
		CHECK(!pool_shared_outcome(p, e1, true, t));
		CHECK(!pool_shared_outcome(p, e1, false, t));
		CHECK(!pool_shared_outcome(p, e1, false, t));
		CHECK(pool_shared_outcome(p, e1, false, t)); /* 2 of 4 out: 50 % */
		for (int i = 0; i < 5; i++)
			CHECK(!pool_shared_outcome(p, e2, false, t)); /* a third would be 75 % */
		CHECK(pool_shared_available(p, e2, t));
		/* second ejection of e0 lasts twice as long */
		uint64_t t2 = t + 2000;
		pool_shared_outcome(p, e0, false, t2);
		pool_shared_outcome(p, e0, false, t2);
		CHECK(pool_shared_outcome(p, e0, false, t2));
		CHECK(!pool_shared_available(p, e0, t2 + 1999));
		CHECK(pool_shared_available(p, e0, t2 + 2000));
		/* slow start after it comes back */
		CHECK(pool_shared_ramp(p, e0, t2 + 2000) < 100);
		unsigned mid = pool_shared_ramp(p, e0, t2 + 2500);
		CHECK_MSG(mid > 400 && mid < 600, "ramp half way: %u", mid);
		CHECK_INT(pool_shared_ramp(p, e0, t2 + 3000), 1000);
	}
	test_end();

	test_begin("retry_budget");
	{
		/* starts with min_retries (2) tokens; each request deposits 0.2 */
		CHECK(pool_shared_retry_take(p));
		CHECK(pool_shared_retry_take(p));
		CHECK(!pool_shared_retry_take(p));
		for (int i = 0; i < 4; i++)
			pool_shared_deposit(p);
		CHECK(!pool_shared_retry_take(p)); /* 0.8 */
		pool_shared_deposit(p);
		CHECK(pool_shared_retry_take(p)); /* 1.0 */
		CHECK(!pool_shared_retry_take(p));
		/* over many requests: retries ≤ 20 % + the start */
		unsigned taken = 0;
		for (int i = 0; i < 1000; i++) {
			pool_shared_deposit(p);
			taken += pool_shared_retry_take(p);
		}
		CHECK_MSG(taken >= 199 && taken <= 201, "retries: %u per 1000 requests", taken);
		for (unsigned i = 0; i < taken + 3; i++)
			pool_shared_retry_done(p);
	}
	test_end();

	test_begin("busy_limit");
	{
		struct ep_shared *e3 = &p->eps[3];
		CHECK(pool_shared_busy_take(p, e3));
		CHECK(pool_shared_busy_take(p, e3));
		CHECK(!pool_shared_busy_take(p, e3));
		pool_shared_busy_put(e3);
		CHECK(pool_shared_busy_take(p, e3));
		pool_shared_busy_put(e3);
		pool_shared_busy_put(e3);
	}
	test_end();

	test_begin("pick_skips_unavailable");
	{
		struct endpoint_state es[4];
		struct pool_state ps = {.cfg = &cp, .eps = es, .n_eps = 4, .sh = p};
		for (unsigned i = 0; i < 4; i++)
			es[i] = (struct endpoint_state){.cfg = &ce[i], .sh = &p->eps[i]};
		uint64_t t = 500000; /* all ejections are over */
		__atomic_store_n(&p->eps[0].healthy, 0, __ATOMIC_RELAXED);
		p->eps[1].ejected_until_ms = t + 10000;
		p->eps[2].breaker =
			(struct breaker){.state = BREAKER_OPEN, .open_until_ms = t + 10000};
		for (int i = 0; i < 50; i++)
			CHECK(pool_pick_ex(&ps, (uint64_t)i * 0x9e3779b97f4a7c15ull, t, NULL, false,
					   0, false) == &es[3]);
		/* avoid is ignored when it is the only one left */
		CHECK(pool_pick_ex(&ps, 1, t, &es[3], false, 0, false) == &es[3]);
		/* at its connection limit: not for need_capacity */
		p->eps[3].busy = 2;
		CHECK(pool_pick_ex(&ps, 1, t, NULL, false, 0, true) == NULL);
		p->eps[3].busy = 0;
		__atomic_store_n(&p->eps[3].healthy, 0, __ATOMIC_RELAXED);
		CHECK(pool_pick_ex(&ps, 1, t, NULL, false, 0, false) == NULL);
		struct pool_ep_report rep;
		pool_endpoint_report(&ps, &es[1], t, &rep);
		CHECK(rep.ejected && rep.ejected_for_ms == 10000 && !rep.available);
		pool_endpoint_report(&ps, &es[2], t, &rep);
		CHECK_STR(rep.breaker, "open");
	}
	test_end();

	test_begin("p2c_prefers_fast_endpoint");
	{
		struct cfg_pool cp2 = cp;
		cp2.breaker.enabled = false;
		struct endpoint_state es[2];
		struct pool_state ps = {.cfg = &cp2, .eps = es, .n_eps = 2};
		es[0] = (struct endpoint_state){
			.cfg = &ce[0], .ewma_us = 800, .n_samples = 5, .ewma_at_ms = 1000};
		es[1] = (struct endpoint_state){
			.cfg = &ce[1], .ewma_us = 50000, .n_samples = 5, .ewma_at_ms = 1000};
		unsigned fast = 0;
		for (int i = 0; i < 100; i++)
			fast += pool_pick_ex(&ps, (uint64_t)i * 0x9e3779b97f4a7c15ull, 1000, NULL,
					     false, 0, false) == &es[0];
		CHECK_INT(fast, 100);
		/* even with a few requests in flight on the fast one */
		es[0].inflight = 3;
		fast = 0;
		for (int i = 0; i < 100; i++)
			fast += pool_pick_ex(&ps, (uint64_t)i * 0x9e3779b97f4a7c15ull, 1000, NULL,
					     false, 0, false) == &es[0];
		CHECK_INT(fast, 100);
		/* similar latencies spread: both get traffic */
		es[0].inflight = 0;
		es[1].ewma_us = 600;
		fast = 0;
		for (int i = 0; i < 100; i++)
			fast += pool_pick_ex(&ps, (uint64_t)i * 0x9e3779b97f4a7c15ull, 1000, NULL,
					     false, 0, false) == &es[0];
		CHECK_MSG(fast > 20 && fast < 80, "fast got %d of 100", fast);
		/* the slow one's EWMA decays when it gets no samples */
		es[1].ewma_us = 50000;
		fast = 0;
		for (int i = 0; i < 100; i++)
			fast += pool_pick_ex(&ps, (uint64_t)i * 0x9e3779b97f4a7c15ull, 1000 + 10000,
					     NULL, false, 0, false) == &es[0];
		CHECK_MSG(fast < 100, "a long-idle slow endpoint gets probed again");
	}
	test_end();

	pool_shared_put(set);

	test_begin("latency_outlier_ejection");
	{
		setup_cfg();
		cp.outlier.latency_factor = 5;
		struct pool_shared_set *s3 = pool_shared_get(&cfg);
		CHECK(s3 != NULL);
		if (s3) {
			struct pool_shared *q = &s3->pools[0];
			uint64_t t = 700000;
			for (int i = 0; i < 6; i++) {
				CHECK(!pool_shared_latency(q, &q->eps[0], 1000, t));
				CHECK(!pool_shared_latency(q, &q->eps[1], 1200, t));
				CHECK(!pool_shared_latency(q, &q->eps[2], 900, t));
			}
			/* 4× slower (and 10 ms more) is not far enough; way slower is */
			bool out = false;
			for (int i = 0; i < 4; i++)
				out |= pool_shared_latency(q, &q->eps[3], 4000, t);
			CHECK(!out);
			for (int i = 0; i < 10 && !out; i++)
				out = pool_shared_latency(q, &q->eps[3], 60000, t);
			CHECK(out);
			CHECK(!pool_shared_available(q, &q->eps[3], t + 1));
			CHECK_INT(q->eps[3].lat_n, 0); /* back with a clean slate */
			pool_shared_put(s3);
		}
		cp.outlier.latency_factor = 0;
	}
	test_end();

	test_begin("reload_carries_endpoint_state_over");
	{
		setup_cfg();
		struct pool_shared_set *a = pool_shared_get(&cfg);
		static struct config cfg3;
		static struct cfg_pool cp3;
		static struct cfg_endpoint ce3[2];
		CHECK(a != NULL);
		if (a) {
			__atomic_store_n(&a->pools[0].eps[1].healthy, 0, __ATOMIC_RELAXED);
			a->pools[0].eps[2].ejected_until_ms = 123456;
			a->pools[0].eps[2].n_ejections = 2;
			/* the new snapshot: same pool, endpoints 2 and a new one */
			cp3 = cp;
			ce3[0] = ce[2];
			ce3[1] = ce[0];
			strcpy(ce3[1].addr.text, "127.0.0.1:9999");
			cp3.endpoints = ce3;
			cp3.n_endpoints = 2;
			cfg3 = cfg;
			cfg3.pools = &cp3;
			struct pool_shared_set *b = pool_shared_get(&cfg3);
			CHECK(b && b != a);
			if (b) {
				CHECK_INT(b->pools[0].eps[0].ejected_until_ms, 123456);
				CHECK_INT(b->pools[0].eps[0].n_ejections, 2);
				CHECK_INT(b->pools[0].eps[1].ejected_until_ms, 0); /* new: clean */
				CHECK_INT(b->pools[0].eps[1].healthy, 1);
				pool_shared_put(b);
			}
			pool_shared_put(a);
		}
	}
	test_end();

	test_begin("names_are_re_resolved_off_the_workers");
	{
		/* endpoint 0 is a name whose address at load was wrong; 1 is a literal */
		static struct config cfg2;
		static struct cfg_pool cp2;
		static struct cfg_endpoint ce2[2];
		struct sockaddr_in *bogus = (struct sockaddr_in *)&ce2[0].addr.ss;
		cfg2.pools = &cp2;
		cfg2.n_pools = 1;
		strcpy(cp2.name, "dns");
		cp2.endpoints = ce2;
		cp2.n_endpoints = 2;
		cp2.resolve = 1000;
		strcpy(ce2[0].addr.text, "localhost:8080");
		bogus->sin_family = AF_INET;
		bogus->sin_port = htons(8080);
		inet_pton(AF_INET, "10.255.255.1", &bogus->sin_addr);
		ce2[0].addr.len = sizeof(*bogus);
		strcpy(ce2[1].addr.text, "127.0.0.1:9");
		ce2[1].addr.len = sizeof(struct sockaddr_in);
		struct pool_shared_set *s2 = pool_shared_get(&cfg2);
		CHECK(s2 && s2->has_names);
		if (s2) {
			struct ep_shared *e = &s2->pools[0].eps[0];
			struct sockaddr_storage ss;
			socklen_t sl;
			CHECK(e->dynamic && !s2->pools[0].eps[1].dynamic);
			pool_shared_addr(e, &ss, &sl);
			CHECK(((struct sockaddr_in *)&ss)->sin_addr.s_addr ==
			      bogus->sin_addr.s_addr);
			pool_shared_resolve_pass(clock_ms() + 5000);
			pool_shared_addr(e, &ss, &sl);
			bool loop4 = ss.ss_family == AF_INET &&
				     ((struct sockaddr_in *)&ss)->sin_addr.s_addr ==
					     htonl(INADDR_LOOPBACK);
			bool loop6 = ss.ss_family == AF_INET6 &&
				     IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)&ss)->sin6_addr);
			CHECK_MSG(loop4 || loop6, "localhost re-resolved to family %d",
				  ss.ss_family);
			CHECK_INT(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
			pool_shared_put(s2);
		}
	}
	test_end();
	return test_exit_code();
}
