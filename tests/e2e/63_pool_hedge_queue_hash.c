/* 63_pool_hedge_queue_hash — (docs/pool.md)
 * - hedging: with one slow endpoint, a hedged route's worst latency stays
 *   near the hedge delay while the unhedged one waits for the slow answer;
 * - queueing: at limits.connections, requests wait in a bounded queue and
 *   are served when a slot frees; overflow and the wait deadline get 503 +
 *   Retry-After; a burst of overflow does not grow memory;
 * - consistent hashing on a header keeps each key on one endpoint. */
#include "lib/harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int gw_port, pa, ps, pq, ph[3];
static struct h_proc *gw;

static double worst_of(const char *path, int n, int *ok)
{
	char u[256];
	double worst = 0;

	*ok = 0;
	snprintf(u, sizeof(u), "http://127.0.0.1:%d%s", gw_port, path);
	for (int i = 0; i < n; i++) {
		struct h_resp r;
		struct h_req q = {.url = u, .timeout_ms = 8000};
		h_http(&q, &r);
		*ok += r.status == 200;
		if (r.time_ms > worst)
			worst = r.time_ms;
		h_resp_free(&r);
	}
	return worst;
}

static void test_hedge(void)
{
	int ok1, ok2;

	test_begin("hedging_cuts_worst_latency_with_one_slow_endpoint");
	double plain = worst_of("/plain/x", 20, &ok1);
	double hedged = worst_of("/hedge/x", 20, &ok2);
	printf("# worst of 20: unhedged %.0f ms, hedged (50 ms) %.0f ms\n", plain, hedged);
	CHECK_MSG(ok1 == 20 && ok2 == 20, "ok: %d plain, %d hedged", ok1, ok2);
	CHECK_MSG(plain >= 390, "unhedged worst %.0f ms: the slow endpoint should show", plain);
	CHECK_MSG(hedged < 300, "hedged worst %.0f ms (delay 50 ms, slow endpoint 400 ms)", hedged);
	test_end();

	test_begin("hedging_per_route_opt_in_and_out");
	double off = worst_of("/hedge-off/x", 10, &ok1);
	double on = worst_of("/hedge-on/x", 10, &ok2);
	printf("# per route: hedge: false %.0f ms, hedge: true %.0f ms\n", off, on);
	CHECK_MSG(ok1 == 10 && ok2 == 10, "ok: %d off, %d on", ok1, ok2);
	CHECK_MSG(off >= 390, "route hedge: false, worst %.0f ms", off);
	CHECK_MSG(on < 300, "route hedge: true, worst %.0f ms", on);
	test_end();
}

/* Send n requests on n connections at once; statuses into st (0: none). */
static void burst(const char *path, int n, int *st, bool *retry_after)
{
	int fds[64];
	char req[256];

	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
	for (int i = 0; i < n; i++) {
		fds[i] = h_connect("127.0.0.1", gw_port, 2000);
		if (fds[i] >= 0)
			h_send_str(fds[i], req);
		h_sleep_ms(5); /* in order, so the first is the one in flight */
	}
	for (int i = 0; i < n; i++) {
		struct h_buf b = {0};
		st[i] = 0;
		retry_after[i] = false;
		if (fds[i] < 0)
			continue;
		h_read_all(fds[i], &b, 6000, 0);
		int codes[2];
		if (h_statuses(b.data, b.len, codes, 2) >= 1)
			st[i] = codes[0];
		retry_after[i] = b.data && strstr(b.data, "\r\nRetry-After: ") != NULL;
		h_buf_free(&b);
		close(fds[i]);
	}
}

static void test_queue(void)
{
	int st[64];
	bool ra[64];

	test_begin("queue_serves_waiting_requests");
	burst("/q/?delay=150", 3, st, ra); /* 1 in flight + 2 queued (timeout 2 s) */
	CHECK_MSG(st[0] == 200 && st[1] == 200 && st[2] == 200, "statuses %d %d %d", st[0], st[1],
		  st[2]);
	test_end();

	test_begin("queue_overflow_and_deadline_503_retry_after");
	burst("/qs/?delay=1500", 5, st, ra); /* 1 in flight, 2 queued (400 ms), 2 overflow */
	int n200 = 0, n503 = 0, n_ra = 0;
	for (int i = 0; i < 5; i++) {
		n200 += st[i] == 200;
		n503 += st[i] == 503;
		n_ra += st[i] == 503 && ra[i];
	}
	CHECK_MSG(n200 == 1 && n503 == 4, "200: %d, 503: %d (want 1 and 4)", n200, n503);
	CHECK_MSG(n_ra == n503, "%d of %d 503s carry Retry-After", n_ra, n503);
	test_end();

	test_begin("queue_overflow_bounded_memory");
	long before = h_rss_kb(gw->pid);
	for (int round = 0; round < 5; round++)
		burst("/qs/?delay=300", 40, st, ra);
	long after = h_rss_kb(gw->pid);
	printf("# RSS before %ld KiB, after 200 overflowing requests %ld KiB\n", before, after);
	CHECK_MSG(before > 0 && after - before < 16 * 1024, "RSS grew from %ld to %ld KiB", before,
		  after);
	test_end();
}

static void test_hash(void)
{
	test_begin("hash_on_header_keeps_key_on_one_endpoint");
	char u[256], first[10][32];
	int distinct = 0, moved = 0;
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/hash/x", gw_port);
	for (int k = 0; k < 10; k++) {
		char hdr[64];
		const char *hs[] = {hdr, NULL};
		snprintf(hdr, sizeof(hdr), "X-User: user-%d", k);
		for (int i = 0; i < 5; i++) {
			struct h_resp r;
			struct h_req q = {.url = u, .headers = hs, .timeout_ms = 8000};
			char who[32] = "";
			h_http(&q, &r);
			h_resp_header(&r, "X-Origin", who, sizeof(who));
			h_resp_free(&r);
			if (i == 0) {
				snprintf(first[k], sizeof(first[k]), "%s", who);
				bool seen = false;
				for (int j = 0; j < k; j++)
					seen |= !strcmp(first[j], who);
				distinct += !seen;
			} else if (strcmp(first[k], who)) {
				moved++;
			}
		}
	}
	CHECK_MSG(moved == 0, "%d requests left their key's endpoint", moved);
	CHECK_MSG(distinct >= 2, "10 keys landed on %d endpoint(s)", distinct);
	test_end();
}

int main(void)
{
	h_init("63_pool_hedge_queue_hash", 120);
	gw_port = h_free_port();
	pa = h_free_port();
	ps = h_free_port();
	pq = h_free_port();
	struct h_proc *oa = h_start_origin("A", pa, 1), *oq = h_start_origin("Q", pq, 1);
	char listen[64];
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", ps);
	char *argv[] = {
		(char *)h_origin_path(), "--listen", listen, "--name", "S", "--slow", "400", NULL};
	struct h_proc *os = h_spawn("S", argv, "127.0.0.1", ps, 10000);
	struct h_proc *oh[3];
	for (int i = 0; i < 3; i++) {
		char name[8];
		snprintf(name, sizeof(name), "h%d", i);
		ph[i] = h_free_port();
		oh[i] = h_start_origin(name, ph[i], 1);
	}
	if (!oa || !os || !oq || !oh[0] || !oh[1] || !oh[2]) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	h_signal(os, SIGUSR1);
	const char *cfg = h_write_config(
		"workers: 1\n"
		"listen: [\"127.0.0.1:%d\"]\n"
		"admin: {listen: off}\n"
		"timeouts: {upstream_connect: 1s, upstream_response: 5s, drain: 1s}\n"
		"pools:\n"
		"  plain:\n"
		"    endpoints: [\"127.0.0.1:%d\", \"127.0.0.1:%d\"]\n"
		"    balance: round_robin\n"
		"  hedge:\n"
		"    endpoints: [\"127.0.0.1:%d\", \"127.0.0.1:%d\"]\n"
		"    balance: round_robin\n"
		"    hedge: {delay: 50ms}\n"
		"    retry: {attempts: 1, budget: 100%%}  # hedges spend the retry budget\n"
		"  plain2:\n"
		"    endpoints: [\"127.0.0.1:%d\", \"127.0.0.1:%d\"]\n"
		"    balance: round_robin\n"
		"    retry: {attempts: 1, budget: 100%%}\n"
		"  q:\n"
		"    endpoints: [\"127.0.0.1:%d\"]\n"
		"    limits: {connections: 1}\n"
		"    queue: {size: 2, timeout: 2s}\n"
		"  qs:\n"
		"    endpoints: [\"127.0.0.1:%d\"]\n"
		"    limits: {connections: 1}\n"
		"    queue: {size: 2, timeout: 400ms}\n"
		"  hash:\n"
		"    endpoints: [\"127.0.0.1:%d\", \"127.0.0.1:%d\", \"127.0.0.1:%d\"]\n"
		"    balance: hash\n"
		"    hash_key: \"header:X-User\"\n"
		"routes:\n"
		"  - {path_prefix: /plain/, pool: plain}\n"
		"  - {path_prefix: /hedge/, pool: hedge}\n"
		"  - {path_prefix: /hedge-off/, pool: hedge, hedge: false}\n"
		"  - {path_prefix: /hedge-on/, pool: plain2, hedge: true}\n"
		"  - {path_prefix: /qs/, pool: qs}\n"
		"  - {path_prefix: /q/, pool: q}\n"
		"  - {path_prefix: /hash/, pool: hash}\n",
		gw_port, pa, ps, pa, ps, pa, ps, pq, pq, ph[0], ph[1], ph[2]);
	gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start (config %s)", cfg);
		return test_exit_code();
	}
	test_hedge();
	test_queue();
	test_hash();
	h_finish(gw, 5000);
	return test_exit_code();
}
