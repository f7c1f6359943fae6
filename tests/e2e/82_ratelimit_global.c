/* 82_ratelimit_global — two reflexd hosts and a real redis-server (started
 * here on a free port) enforce one global limit together: a client limit
 * marked global admits its burst once across both hosts, not once per host.
 * Then Redis is killed: host A (redis_failure: local) falls back to rate/N
 * locally, host B (redis_failure: closed) refuses; both say so in metrics.
 * SKIP when redis-server is not installed. */
#include "lib/harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int a_port, a_admin, b_port, b_admin, o_port, r_port;

static long get(int port, const char *path)
{
	char url[256];
	struct h_req q = {.url = url, .timeout_ms = 5000};
	struct h_resp r;
	long st;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	st = h_http(&q, &r) == 0 ? r.status : -1;
	h_resp_free(&r);
	return st;
}

static double metric(int admin_port, const char *name_and_labels)
{
	char url[256], pat[256];
	struct h_req q = {.url = url, .timeout_ms = 5000};
	struct h_resp r;
	double v = -1;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", admin_port);
	snprintf(pat, sizeof(pat), "\n%s", name_and_labels);
	if (h_http(&q, &r) == 0 && r.status == 200 && r.body) {
		const char *p = strstr(r.body, pat);
		if (p)
			v = strtod(p + strlen(pat), NULL);
	}
	h_resp_free(&r);
	return v;
}

static const char *gw_yaml(int port, int admin, const char *failure)
{
	return h_write_config("workers: 2\n"
			      "listen: [\"127.0.0.1:%d\"]\n"
			      "upstream: [\"127.0.0.1:%d\"]\n"
			      "admin: {listen: \"127.0.0.1:%d\"}\n"
			      "ratelimit:\n"
			      "  client: {rate: 0.2/s, burst: 10, global: true}\n"
			      "  redis: 127.0.0.1:%d\n"
			      "  redis_timeout: 200ms\n"
			      "  hosts: 2\n"
			      "  redis_failure: %s\n",
			      port, o_port, admin, r_port, failure);
}

int main(void)
{
	h_init("82_ratelimit_global", 120);
	if (access("/usr/bin/redis-server", X_OK) != 0) {
		test_skip("ratelimit_global", "redis-server is not installed (apt-get install "
					      "redis-server)");
		return test_exit_code();
	}
	a_port = h_free_port();
	a_admin = h_free_port();
	b_port = h_free_port();
	b_admin = h_free_port();
	o_port = h_free_port();
	r_port = h_free_port();
	char rp[16];
	snprintf(rp, sizeof(rp), "%d", r_port);
	char *rargv[] = {
		"/usr/bin/redis-server", "--port", rp,	"--bind", "127.0.0.1", "--save", "",
		"--appendonly",		 "no",	   NULL};
	struct h_proc *redis = h_spawn("redis", rargv, "127.0.0.1", r_port, 10000);
	if (!redis)
		return test_exit_code();
	if (!h_start_origin("origin", o_port, 1))
		return test_exit_code();
	struct h_proc *a =
		h_start_reflexd_config("reflexd_a", a_port, gw_yaml(a_port, a_admin, "local"));
	struct h_proc *b =
		h_start_reflexd_config("reflexd_b", b_port, gw_yaml(b_port, b_admin, "closed"));
	if (!a || !b || h_wait_port("127.0.0.1", a_admin, 5000) ||
	    h_wait_port("127.0.0.1", b_admin, 5000))
		return test_exit_code();

	test_begin("two_hosts_one_global_limit");
	int ok = 0, ok_a = 0, ok_b = 0;
	for (int i = 0; i < 12; i++) {
		long sa = get(a_port, "/"), sb = get(b_port, "/");
		ok_a += sa == 200;
		ok_b += sb == 200;
		CHECK_MSG((sa == 200 || sa == 429) && (sb == 200 || sb == 429), "status %ld %ld",
			  sa, sb);
	}
	ok = ok_a + ok_b;
	/* burst 10 at 0.2/s shared: 10 (11 if 5 s passed), not 20 */
	CHECK_MSG(ok >= 10 && ok <= 11 && ok_a >= 1 && ok_b >= 1, "admitted %d (A %d, B %d) of 24",
		  ok, ok_a, ok_b);
	CHECK_MSG(metric(a_admin, "reflex_ratelimit_global_total{by=\"redis\"} ") >= 12,
		  "host A decisions by redis: %g",
		  metric(a_admin, "reflex_ratelimit_global_total{by=\"redis\"} "));
	CHECK_INT(metric(a_admin, "reflex_ratelimit_global_total{by=\"fallback\"} "), 0);
	test_end();

	test_begin("redis_clock_jump_back_bounded");
	/* The script runs on Redis's wall clock (TIME). A step back of that
	 * clock by an hour makes every stored TAT look an hour ahead; planted
	 * here directly (the machine's clock is not ours to move). A refused
	 * client must then wait about one interval (5 s), not an hour. */
	{
		char rp2[16];
		snprintf(rp2, sizeof(rp2), "%d", r_port);
		char *cli[] = {"/usr/bin/redis-cli",
			       "-p",
			       rp2,
			       "EVAL",
			       "local t = redis.call('TIME') "
			       "local now = tonumber(t[1]) * 1000000 + tonumber(t[2]) "
			       "local ks = redis.call('KEYS', 'rfx:rl:*') "
			       "for _, k in ipairs(ks) do redis.call('SET', k, "
			       "string.format('%d', now + 3600000000), 'PX', 3700000) end "
			       "return #ks",
			       "0",
			       NULL};
		char *out = NULL;
		int rc = h_run(cli, 5000, &out);
		CHECK_MSG(rc == 0 && out && atoi(out) >= 1, "redis-cli EVAL: rc %d, %s", rc,
			  out ? out : "");
		free(out);
		char url[256], ra[32] = "";
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/", a_port);
		struct h_req q = {.url = url, .timeout_ms = 5000};
		struct h_resp r;
		long st = h_http(&q, &r) == 0 ? r.status : -1;
		bool has_ra = h_resp_header(&r, "Retry-After", ra, sizeof(ra));
		h_resp_free(&r);
		CHECK_MSG(st == 429 && has_ra && atoi(ra) >= 1 && atoi(ra) <= 6,
			  "after the clock step: status %ld, Retry-After %s (want 1..6)", st,
			  has_ra ? ra : "none");
	}
	test_end();

	test_begin("redis_killed_fallback_as_configured");
	h_stop(redis, 5000);
	/* A: local at rate/2, burst 10/2 = 5; its local bucket is fresh */
	int a_ok = 0, b_ok = 0;
	for (int i = 0; i < 8; i++) {
		a_ok += get(a_port, "/") == 200;
		b_ok += get(b_port, "/") == 200;
	}
	CHECK_MSG(a_ok >= 5 && a_ok <= 6, "host A (local, rate/2) admitted %d of 8", a_ok);
	CHECK_MSG(b_ok == 0, "host B (closed) admitted %d of 8", b_ok);
	CHECK_MSG(metric(a_admin, "reflex_ratelimit_global_total{by=\"fallback\"} ") >= 8,
		  "host A fallback decisions %g",
		  metric(a_admin, "reflex_ratelimit_global_total{by=\"fallback\"} "));
	CHECK(metric(b_admin, "reflex_ratelimit_global_total{by=\"fallback\"} ") >= 8);
	CHECK(metric(a_admin, "reflex_ratelimit_redis_errors_total ") >= 1);
	CHECK(h_log_contains(a, "global limits fall back"));
	test_end();

	h_finish(a, 10000);
	h_finish(b, 10000);
	return test_exit_code();
}
