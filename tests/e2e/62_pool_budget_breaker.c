/* 62_pool_budget_breaker — a failing pool is never hit with a retry storm,
 * and an endpoint's breaker fails requests fast (docs/pool.md):
 * - full outage (every endpoint answers 503, retries on): the requests the
 *   origins see stay within client requests × (1 + budget) + a constant;
 * - breaker: closed → open after the error rate (503 + Retry-After at once,
 *   nothing reaches the endpoint, logged) → half-open after open_time → one
 *   good probe closes it. The open breaker is checked in the log and in the
 *   admin API's GET /pool ("breaker": "open"; skipped with a note when the
 *   admin API in this tree does not report it). */
#include "lib/harness.h"

#include <stdio.h>
#include <stdlib.h>

#define N_REQ 100
#define BUDGET 20
#define MIN_RETRIES 3

static int gw_port, admin_port, p[3], pk;
static struct h_proc *gw;

static long origin_requests(void)
{
	long total = 0;
	struct h_origin_stats st;

	for (int i = 0; i < 3; i++)
		if (h_origin_stats(p[i], &st) == 0)
			total += st.requests;
	return total;
}

static long fetch(const char *path, struct h_resp *r)
{
	char u[256];
	struct h_req q = {.url = u, .timeout_ms = 8000};

	snprintf(u, sizeof(u), "http://127.0.0.1:%d%s", gw_port, path);
	h_http(&q, r);
	return r->status;
}

static void test_budget(void)
{
	test_begin("retry_budget_caps_upstream_requests_in_outage");
	long before = origin_requests();
	int s503 = 0;
	for (int i = 0; i < N_REQ; i++) {
		struct h_resp r;
		s503 += fetch("/?status=503", &r) == 503;
		h_resp_free(&r);
	}
	long seen = origin_requests() - before;
	long cap = N_REQ + N_REQ * BUDGET / 100 + MIN_RETRIES + 10 + 2;
	printf("# full outage: %d client requests, %ld at the origins (cap %ld)\n", N_REQ, seen,
	       cap);
	CHECK_MSG(s503 == N_REQ, "%d of %d answered 503", s503, N_REQ);
	CHECK_MSG(seen <= cap, "origins saw %ld requests for %d client requests (cap %ld)", seen,
		  N_REQ, cap);
	CHECK_MSG(seen >= N_REQ + N_REQ * BUDGET / 100 - 2,
		  "origins saw %ld requests: the budget was not used (%d client requests)", seen,
		  N_REQ);
	test_end();
}

static void test_breaker(void)
{
	struct h_origin_stats st0, st1;
	struct h_resp r;
	char ra[32] = "", needle[128];

	test_begin("breaker_opens_fails_fast_and_closes_after_probe");
	/* open_time 2 s: the checks of the open breaker below (the log, GET
	 * /pool, the fast 503) must all fall inside it, also on a busy machine */
	for (int i = 0; i < 4; i++) {
		CHECK_INT(fetch("/k/?status=503", &r), 503);
		h_resp_free(&r);
	}
	snprintf(needle, sizeof(needle), "endpoint 127.0.0.1:%d: breaker open", pk);
	CHECK_MSG(h_log_contains(gw, needle), "no 'breaker open' line");
	/* GET /pool of the admin API shows it (when the admin API has the field) */
	{
		char u[128];
		struct h_resp pr;
		snprintf(u, sizeof(u), "http://127.0.0.1:%d/pool", admin_port);
		long st = h_get(u, &pr);
		if (st == 200 && pr.body && strstr(pr.body, "\"breaker\"")) {
			char want[96];
			snprintf(want, sizeof(want), "\"address\":\"127.0.0.1:%d\"", pk);
			const char *at = strstr(pr.body, want);
			const char *next = at ? strstr(at + 1, "\"address\"") : NULL;
			const char *open = at ? strstr(at, "\"breaker\":\"open\"") : NULL;
			CHECK_MSG(open && (!next || open < next), "GET /pool: %s",
				  h_excerpt(pr.body, pr.body_len, 600));
		} else {
			printf("# GET /pool has no breaker field (status %ld): checked the log "
			       "only\n",
			       st);
		}
		h_resp_free(&pr);
	}
	h_origin_stats(pk, &st0);
	CHECK_INT(fetch("/k/good", &r), 503);
	CHECK_MSG(h_resp_header(&r, "Retry-After", ra, sizeof(ra)) && atoi(ra) >= 1,
		  "Retry-After '%s'", ra);
	CHECK_MSG(r.body && strstr(r.body, "no upstream endpoint is available"), "body '%s'",
		  h_excerpt(r.body, r.body_len, 200));
	h_resp_free(&r);
	h_origin_stats(pk, &st1);
	CHECK_MSG(st1.requests == st0.requests, "the open breaker let %ld requests through",
		  st1.requests - st0.requests);
	h_sleep_ms(2200);		      /* open_time 2 s: half-open */
	CHECK_INT(fetch("/k/good", &r), 200); /* the probe */
	h_resp_free(&r);
	for (int i = 0; i < 5; i++) {
		CHECK_INT(fetch("/k/good", &r), 200);
		h_resp_free(&r);
	}
	test_end();
}

int main(void)
{
	h_init("62_pool_budget_breaker", 90);
	gw_port = h_free_port();
	admin_port = h_free_port();
	struct h_proc *o[4];
	for (int i = 0; i < 3; i++) {
		char name[8];
		snprintf(name, sizeof(name), "o%d", i);
		p[i] = h_free_port();
		o[i] = h_start_origin(name, p[i], 1);
	}
	pk = h_free_port();
	o[3] = h_start_origin("k", pk, 1);
	if (!o[0] || !o[1] || !o[2] || !o[3]) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	const char *cfg = h_write_config(
		"workers: 2\n"
		"listen: [\"127.0.0.1:%d\"]\n"
		"admin: {listen: \"127.0.0.1:%d\"}\n"
		"timeouts: {upstream_connect: 1s, upstream_response: 5s, drain: 1s}\n"
		"pools:\n"
		"  default:\n"
		"    endpoints: [\"127.0.0.1:%d\", \"127.0.0.1:%d\", \"127.0.0.1:%d\"]\n"
		"    outlier: off\n"
		"    retry: {attempts: 3, budget: %d%%, min_retries: %d, backoff: 1ms}\n"
		"  brk:\n"
		"    endpoints: [\"127.0.0.1:%d\"]\n"
		"    outlier: off\n"
		"    breaker: {window: 20, min_requests: 4, error_rate: 50%%, open_time: 2s, "
		"probes: 1}\n"
		"routes:\n"
		"  - {path_prefix: /k/, pool: brk}\n",
		gw_port, admin_port, p[0], p[1], p[2], BUDGET, MIN_RETRIES, pk);
	gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start (config %s)", cfg);
		return test_exit_code();
	}
	test_budget();
	test_breaker();
	h_finish(gw, 5000);
	return test_exit_code();
}
