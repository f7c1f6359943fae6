/* 61_pool_health — active health checks (docs/pool.md): an endpoint that
 * stops answering its check is taken out after `fall` failures and gets
 * no more requests; back after `rise` successes; state changes are logged;
 * an unexpected status counts as a failure. */
#include "lib/harness.h"

#include <stdio.h>
#include <stdlib.h>

static int gw_port, pa, pb, dead;
static struct h_proc *gw, *oa, *ob;

static long fetch(const char *path, char *who, size_t wlen)
{
	char u[256];
	struct h_resp r;
	struct h_req q = {.url = u, .timeout_ms = 8000};

	snprintf(u, sizeof(u), "http://127.0.0.1:%d%s", gw_port, path);
	h_http(&q, &r);
	who[0] = 0;
	h_resp_header(&r, "X-Origin", who, wlen);
	long st = r.status;
	h_resp_free(&r);
	return st;
}

int main(void)
{
	char needle[128], who[32];

	h_init("61_pool_health", 90);
	gw_port = h_free_port();
	pa = h_free_port();
	pb = h_free_port();
	dead = h_free_port(); /* nothing listens there */
	oa = h_start_origin("A", pa, 1);
	ob = h_start_origin("B", pb, 1);
	if (!oa || !ob) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	/* outlier detection off: only the active checks move traffic here;
	 * the "picky" pool expects 204, which the origin never answers /. */
	const char *cfg = h_write_config(
		"workers: 2\n"
		"listen: [\"127.0.0.1:%d\"]\n"
		"admin: {listen: off}\n"
		"timeouts: {upstream_connect: 1s, upstream_response: 5s, drain: 1s}\n"
		"pools:\n"
		"  default:\n"
		"    endpoints: [\"127.0.0.1:%d\", \"127.0.0.1:%d\"]\n"
		"    outlier: off\n"
		"    health: {path: \"/health?size=2\", interval: 100ms, timeout: 300ms, rise: 2, "
		"fall: 2}\n"
		"  picky:\n"
		"    endpoints: [\"127.0.0.1:%d\"]\n"
		"    health: {path: /, expect: 204, interval: 100ms, timeout: 300ms, fall: 1}\n"
		"  mixed:\n"
		"    endpoints: [\"127.0.0.1:%d\", \"127.0.0.1:%d\"]\n"
		"    outlier: {consecutive_failures: 1, ejection_time: 5m, max_ejection_time: "
		"5m}\n"
		"    health: {path: /, expect: 204, interval: 1s, timeout: 300ms, rise: 2, fall: 3}\n"
		"routes:\n"
		"  - {path_prefix: /p/, pool: picky}\n"
		"  - {path_prefix: /m/, pool: mixed}\n",
		gw_port, pa, pb, pa, dead, pa);
	gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start (config %s)", cfg);
		return test_exit_code();
	}

	/* The "mixed" pool: its dead endpoint is ejected for 5 min by the first
	 * request that tries it, before the checks (fall 3 at 1 s) take both
	 * down; A then comes back after rise × interval = 2 s of passing
	 * checks, the dead one after 5 min. Retry-After must give the sooner. */
	test_begin("retry_after_is_the_soonest_comeback");
	snprintf(needle, sizeof(needle), "pool mixed: endpoint 127.0.0.1:%d: ejected for", dead);
	for (double until = h_now_ms() + 2500; !h_log_contains(gw, needle) && h_now_ms() < until;)
		fetch("/m/x", who, sizeof(who));
	CHECK_MSG(h_log_contains(gw, needle), "the dead endpoint was not ejected");
	snprintf(needle, sizeof(needle), "pool mixed: endpoint 127.0.0.1:%d: health check failed",
		 pa);
	CHECK_MSG(h_wait_log(gw, needle, 10000), "mixed pool: no 'down' line for A");
	{
		char u[256], ra[32] = "";
		struct h_resp r;
		struct h_req q = {.url = u, .timeout_ms = 8000};
		snprintf(u, sizeof(u), "http://127.0.0.1:%d/m/x", gw_port);
		h_http(&q, &r);
		CHECK_MSG(r.status == 503, "status %ld", r.status);
		CHECK_MSG(h_resp_header(&r, "Retry-After", ra, sizeof(ra)) && atoi(ra) >= 1 &&
				  atoi(ra) <= 3,
			  "Retry-After '%s', want 2 (A's checks), not the ejection's 300", ra);
		h_resp_free(&r);
	}
	test_end();

	test_begin("health_both_up_share_traffic");
	int a = 0, b = 0;
	for (int i = 0; i < 30; i++) {
		if (fetch("/x", who, sizeof(who)) == 200) {
			a += !strcmp(who, "A");
			b += !strcmp(who, "B");
		}
	}
	CHECK_MSG(a > 0 && b > 0 && a + b == 30, "A %d, B %d of 30", a, b);
	test_end();

	test_begin("health_fall_takes_endpoint_out");
	h_stop(ob, 2000);
	snprintf(needle, sizeof(needle), "endpoint 127.0.0.1:%d: health check failed 2 times", pb);
	CHECK_MSG(h_wait_log(gw, needle, 10000), "no 'down' line for B within 10 s");
	int ok = 0;
	for (int i = 0; i < 30; i++)
		ok += fetch("/x", who, sizeof(who)) == 200 && !strcmp(who, "A");
	CHECK_MSG(ok == 30, "%d of 30 answered by A after B went down", ok);
	test_end();

	test_begin("health_rise_brings_it_back");
	ob = h_start_origin("B", pb, 1);
	CHECK(ob != NULL);
	snprintf(needle, sizeof(needle), "endpoint 127.0.0.1:%d: health check passed 2 times: up",
		 pb);
	CHECK_MSG(h_wait_log(gw, needle, 10000), "no 'up' line for B within 10 s");
	/* P2C avoids an endpoint whose last latency (from before it went down)
	 * was clearly worse than A's now, until it decays (it halves every
	 * second without traffic): on a busy machine that can take longer than
	 * a fixed number of requests. Up to 10 s. */
	b = 0;
	for (double until = h_now_ms() + 10000; b == 0 && h_now_ms() < until; h_sleep_ms(10))
		b += fetch("/x", who, sizeof(who)) == 200 && !strcmp(who, "B");
	CHECK_MSG(b > 0, "B got no traffic within 10 s after it came back");
	test_end();

	test_begin("health_unexpected_status_is_down_503_retry_after");
	snprintf(needle, sizeof(needle), "pool picky: endpoint 127.0.0.1:%d: health check failed",
		 pa);
	CHECK_MSG(h_wait_log(gw, needle, 10000), "picky pool: no 'down' line");
	{
		char u[256], ra[32] = "";
		struct h_resp r;
		struct h_req q = {.url = u, .timeout_ms = 8000};
		snprintf(u, sizeof(u), "http://127.0.0.1:%d/p/x", gw_port);
		h_http(&q, &r);
		CHECK_MSG(r.status == 503, "status %ld", r.status);
		CHECK_MSG(h_resp_header(&r, "Retry-After", ra, sizeof(ra)) && atoi(ra) >= 1,
			  "Retry-After '%s'", ra);
		CHECK_MSG(r.time_ms < 1000, "503 took %.0f ms: should fail fast", r.time_ms);
		h_resp_free(&r);
	}
	test_end();
	h_finish(gw, 5000);
	return test_exit_code();
}
