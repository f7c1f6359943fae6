/* 43_cache_background — what the cache does beside the request that asked
 * (docs/cache.md):
 *
 *  - stale-while-revalidate refreshes in the background: a keep-alive
 *    client gets the stale object at once and its next request on the same
 *    connection is answered while the slow refresh (2 s) is still running;
 *    the origin sees exactly one refresh; a 304 refreshes the stored
 *    headers; a HEAD starts the refresh as a GET; a failed refresh leaves
 *    the stale object and is counted; a drain cancels a refresh in flight
 *    (reflexd exits at once);
 *  - coalesced waiters stream a chunked response while it arrives, and a
 *    waiter whose request does not match the response's Vary goes
 *    upstream at once instead of waiting for the leader's end;
 *  - a HEAD miss is fetched as GET and stored: the client gets the head
 *    only, a later GET hits;
 *  - cache.memory follows a reload (shrinking evicts at once);
 *  - a purge that runs while a miss is being fetched keeps the pre-purge
 *    response out of the cache.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/e2e/lib/harness.h"

#define TOKEN "c4che-background-secret"

static int gw_port, o_port, admin_port;
static char cfg_path[1024], tokens_path[1024];

static long get_h(const char *path, const char *const *headers, bool head, struct h_resp *r)
{
	char url[1024];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", gw_port, path);
	struct h_req q = {.url = url, .headers = headers, .head = head};
	return h_http(&q, r) == 0 ? r->status : -1;
}

static const char *cs_of(const struct h_resp *r)
{
	static char v[256];

	if (!h_resp_header(r, "Cache-Status", v, sizeof(v)))
		strcpy(v, "(none)");
	return v;
}

/* GET path once its background refresh is stored: until then a request is
 * answered stale (and starts no second refresh). The refresh finishes in its
 * own time on a busy machine: up to 10 s. */
static long get_refreshed(const char *path, struct h_resp *r)
{
	for (double end = h_now_ms() + 10000;; h_sleep_ms(100)) {
		long st = get_h(path, NULL, false, r);
		const char *cs = cs_of(r);

		if ((st == 200 && strstr(cs, "hit") && !strstr(cs, "stale")) || h_now_ms() >= end)
			return st;
		h_resp_free(r);
	}
}

static long admin(const char *method, const char *path, const char *body, struct h_resp *r)
{
	char url[256], auth[128];
	const char *hdrs[] = {auth, "Content-Type: application/json", NULL};

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", admin_port, path);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", TOKEN);
	struct h_req q = {.method = method,
			  .url = url,
			  .headers = hdrs,
			  .body = body,
			  .body_len = body ? strlen(body) : 0,
			  .no_expect = true};
	return h_http(&q, r) == 0 ? r->status : -1;
}

/* The number right after pat in the body of GET path on the admin API, or -1. */
static long long admin_number(const char *path, const char *pat)
{
	struct h_resp r;
	long long v = -1;

	if (admin("GET", path, NULL, &r) == 200 && r.body) {
		const char *p = strstr(r.body, pat);
		if (p)
			v = atoll(p + strlen(pat));
	}
	h_resp_free(&r);
	return v;
}

/* A number from GET /cache ("key":N), or -1. */
static long long cache_stat(const char *key)
{
	char pat[64];

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	return admin_number("/cache", pat);
}

/* The value of one sample line of /metrics ("name{labels}" as printed), -1 if absent. */
static long long metric(const char *sample)
{
	char pat[160];

	snprintf(pat, sizeof(pat), "\n%s ", sample);
	return admin_number("/metrics", pat);
}

static void write_config(const char *memory)
{
	FILE *f = fopen(cfg_path, "w");

	if (!f)
		return;
	fprintf(f,
		"workers: 2\n"
		"listen: [\"127.0.0.1:%d\"]\n"
		"upstream: [\"127.0.0.1:%d\"]\n"
		"admin: {listen: \"127.0.0.1:%d\", token_file: \"%s\"}\n"
		"cache: {enabled: true, memory: %s, max_object: 1m, coalesce_timeout: 8s}\n",
		gw_port, o_port, admin_port, tokens_path, memory);
	fclose(f);
}

/* ---- stale-while-revalidate --------------------------------------------------- */

/* Send one request on fd and read its response: the status, the
 * Cache-Status value, and how long it took (ms). */
static int raw_get(int fd, const char *path, const char *extra, char *cs, size_t cs_len, double *ms)
{
	char req[2048];
	struct h_buf b = {0};
	struct h_raw_resp rr[2];
	int status = -1;

	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n", path, gw_port,
		 extra ? extra : "");
	double t0 = h_now_ms();
	if (h_send_str(fd, req) == 0 && h_read_responses(fd, &b, 1, 5000) == H_READ_DONE) {
		int k = h_parse_responses(b.data, b.len, rr, 2, NULL);
		if (k >= 1) {
			status = rr[0].status;
			if (!h_head_header(rr[0].head, "Cache-Status", cs, cs_len))
				snprintf(cs, cs_len, "(none)");
		}
		h_raw_resp_free(rr, k);
	}
	*ms = h_now_ms() - t0;
	h_buf_free(&b);
	return status;
}

static void test_swr(void)
{
	char cs1[256] = "", cs2[256] = "", cs3[256] = "";
	double t1, t2, t3;
	struct h_resp r;

	test_begin("swr_refresh_in_background_keepalive");
	/* max-age 4: the refreshed copy must still be fresh a moment later
	 * (Date has a one-second granularity) */
	const char *p = "/bg/swr?cc=max-age%3D4,stale-while-revalidate%3D60";
	int fd = h_connect("127.0.0.1", gw_port, 3000);
	CHECK(fd >= 0);
	if (fd < 0) {
		test_end();
		return;
	}
	CHECK_INT(raw_get(fd, p, NULL, cs1, sizeof(cs1), &t1), 200);
	h_sleep_ms(5100);
	long before = h_origin_requests(o_port);
	/* the refresh carries the request's X-Origin-Delay: the origin takes 2 s */
	double t0 = h_now_ms();
	CHECK_INT(raw_get(fd, p, "X-Origin-Delay: 2000\r\n", cs2, sizeof(cs2), &t2), 200);
	CHECK_MSG(strstr(cs2, "stale-while-revalidate"), "%s", cs2);
	/* the same connection's next request: answered while the refresh runs */
	CHECK_INT(raw_get(fd, p, "X-Origin-Delay: 2000\r\n", cs3, sizeof(cs3), &t3), 200);
	double both = h_now_ms() - t0;
	CHECK_MSG(strstr(cs3, "stale-while-revalidate"), "second: %s", cs3);
	CHECK_MSG(both < 1500, "two stale answers took %.0f ms (the refresh takes 2000)", both);
	close(fd);
	CHECK_INT(get_refreshed(p, &r), 200);
	CHECK_INT(h_origin_requests(o_port) - before, 1); /* one refresh for both */
	CHECK_MSG(strstr(cs_of(&r), "hit") && !strstr(cs_of(&r), "stale"), "refreshed: %s",
		  cs_of(&r));
	CHECK(r.body_hash == h_pattern_hash(1024));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	CHECK_MSG(cache_stat("refreshes") >= 1, "refreshes %lld", cache_stat("refreshes"));
	/* the same figures for Prometheus */
	CHECK_MSG(metric("reflex_cache_background_refreshes_total{result=\"started\"}") ==
			  cache_stat("refreshes"),
		  "metrics: %lld refreshes started",
		  metric("reflex_cache_background_refreshes_total{result=\"started\"}"));
	CHECK_MSG(metric("reflex_cache_objects") >= 1 && metric("reflex_cache_bytes") >= 1024,
		  "metrics: %lld objects, %lld bytes", metric("reflex_cache_objects"),
		  metric("reflex_cache_bytes"));
	CHECK(metric("reflex_cache_budget_bytes") == cache_stat("budget"));
	test_end();

	test_begin("swr_refresh_304_updates_headers");
	const char *p3 = "/bg/swr304?cc=max-age%3D4,stale-while-revalidate%3D60&etag=%22v1%22";
	CHECK_INT(get_h(p3, NULL, false, &r), 200);
	h_resp_free(&r);
	h_sleep_ms(5100);
	before = h_origin_requests(o_port);
	const char *nm[] = {"X-Origin-Status: 304", "X-Origin-Delay: 300", NULL};
	CHECK_INT(get_h(p3, nm, false, &r), 200);
	CHECK_MSG(strstr(cs_of(&r), "stale-while-revalidate"), "%s", cs_of(&r));
	CHECK(r.body_bytes == 1024);
	h_resp_free(&r);
	CHECK_INT(get_refreshed(p3, &r), 200);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	CHECK_MSG(strstr(cs_of(&r), "hit") && !strstr(cs_of(&r), "stale"), "after the 304: %s",
		  cs_of(&r));
	CHECK(r.body_bytes == 1024 && r.body_hash == h_pattern_hash(1024));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("swr_refresh_started_by_head");
	/* max-age 4, as above: the refreshed copy is up to a second old when it
	 * is stored (Date granularity) and must stay fresh while get_refreshed
	 * polls on a busy machine */
	const char *ph = "/bg/swrhead?cc=max-age%3D4,stale-while-revalidate%3D60&size=2000";
	CHECK_INT(get_h(ph, NULL, false, &r), 200);
	h_resp_free(&r);
	h_sleep_ms(5100);
	before = h_origin_requests(o_port);
	CHECK_INT(get_h(ph, NULL, true, &r), 200);
	CHECK_MSG(strstr(cs_of(&r), "stale-while-revalidate"), "%s", cs_of(&r));
	CHECK(r.body_bytes == 0);
	h_resp_free(&r);
	CHECK_INT(get_refreshed(ph, &r), 200);
	CHECK_INT(h_origin_requests(o_port) - before, 1); /* the refresh, as a GET */
	CHECK_MSG(strstr(cs_of(&r), "hit") && !strstr(cs_of(&r), "stale"), "after: %s", cs_of(&r));
	CHECK(r.body_bytes == 2000 && r.body_hash == h_pattern_hash(2000));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("swr_refresh_failure_keeps_stale");
	const char *pf = "/bg/swrfail?cc=max-age%3D2,stale-while-revalidate%3D60";
	CHECK_INT(get_h(pf, NULL, false, &r), 200);
	h_resp_free(&r);
	h_sleep_ms(3100);
	long long failures = cache_stat("refresh_failures");
	const char *fail[] = {"X-Origin-Status: 503", NULL};
	CHECK_INT(get_h(pf, fail, false, &r), 200);
	CHECK_MSG(strstr(cs_of(&r), "stale-while-revalidate"), "%s", cs_of(&r));
	h_resp_free(&r);
	double until = h_now_ms() + 3000;
	while (cache_stat("refresh_failures") <= failures && h_now_ms() < until)
		h_sleep_ms(50);
	CHECK_MSG(cache_stat("refresh_failures") > failures, "the failed refresh was not counted");
	/* still there, stale: the next request is answered from it */
	CHECK_INT(get_h(pf, NULL, false, &r), 200);
	CHECK_MSG(strstr(cs_of(&r), "stale-while-revalidate"), "after the failure: %s", cs_of(&r));
	CHECK(r.body_hash == h_pattern_hash(1024));
	h_resp_free(&r);
	/* that answer started another refresh, in the background: let it reach the
	 * origin and finish before the next test counts origin requests */
	CHECK_INT(get_refreshed(pf, &r), 200);
	h_resp_free(&r);
	test_end();
}

/* ---- coalesced waiters: chunked streaming, Vary ---------------------------------- */

struct streamed {
	const char *path;
	const char *hdr[2];
	double t0, first_ms, done_ms;
	long status;
	uint64_t bytes, hash;
	char cs[160];
};

static void on_piece(const char *data, size_t len, double t_ms, void *arg)
{
	struct streamed *s = arg;

	(void)data;
	if (s->first_ms == 0 && len)
		s->first_ms = t_ms - s->t0;
}

static void *streamed_get(void *arg)
{
	struct streamed *s = arg;
	char url[512];
	struct h_resp r;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", gw_port, s->path);
	struct h_req q = {.url = url,
			  .headers = s->hdr[0] ? s->hdr : NULL,
			  .sink = on_piece,
			  .sink_arg = s,
			  .timeout_ms = 10000,
			  .count_only = true};
	s->t0 = h_now_ms();
	h_http(&q, &r);
	s->done_ms = h_now_ms() - s->t0;
	s->status = r.status;
	s->bytes = r.body_bytes;
	s->hash = r.body_hash;
	h_resp_header(&r, "Cache-Status", s->cs, sizeof(s->cs));
	h_resp_free(&r);
	return NULL;
}

static void test_coalesce_stream(void)
{
	enum { N = 8 };
	pthread_t t[N];
	struct streamed s[N];

	test_begin("coalesced_waiters_stream_chunked");
	/* 240 KB chunked, paced at 200 KB/s: the leader's body takes over a second */
	const char *path =
		"/bg/chunked?cc=max-age%3D60&chunked=1&chunk=8000&size=240000&rate=200000";
	long before = h_origin_requests(o_port);
	for (int i = 0; i < N; i++) {
		s[i] = (struct streamed){.path = path};
		pthread_create(&t[i], NULL, streamed_get, &s[i]);
		/* the first one leads: the others start once it is at the origin */
		for (double end = h_now_ms() + 5000; i == 0 && h_now_ms() < end; h_sleep_ms(20))
			if (h_origin_requests(o_port) > before)
				break;
	}
	int ok = 0, streamed = 0, early = 0;
	for (int i = 0; i < N; i++) {
		pthread_join(t[i], NULL);
		ok += s[i].status == 200 && s[i].bytes == 240000 &&
		      s[i].hash == h_pattern_hash(240000);
		streamed += strstr(s[i].cs, "coalesced-stream") != NULL;
		early += s[i].first_ms > 0 && s[i].first_ms + 300 < s[i].done_ms;
	}
	CHECK_MSG(ok == N, "%d of %d got the whole body", ok, N);
	CHECK_MSG(streamed >= N - 2, "%d of %d waiters streamed from the leader", streamed, N);
	CHECK_MSG(early >= N - 2, "%d of %d saw the first bytes early", early, N);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	struct h_resp r;
	CHECK_INT(get_h(path, NULL, false, &r), 200);
	CHECK_MSG(strstr(cs_of(&r), "hit"), "stored: %s", cs_of(&r));
	CHECK(r.body_bytes == 240000);
	h_resp_free(&r);
	test_end();

	test_begin("coalesced_vary_mismatch_goes_upstream_at_once");
	/* head after 500 ms, then 400 KB at 200 KB/s: the leader ends after ~2.5 s */
	const char *vp = "/bg/vary?cc=max-age%3D60&vary=X-Lang&delay=500&size=400000&rate=200000";
	before = h_origin_requests(o_port);
	for (int i = 0; i < N; i++) {
		s[i] = (struct streamed){.path = vp};
		s[i].hdr[0] = i % 2 ? "X-Lang: b" : "X-Lang: a";
		pthread_create(&t[i], NULL, streamed_get, &s[i]);
		/* the first one leads: the others start once it is at the origin */
		for (double end = h_now_ms() + 5000; i == 0 && h_now_ms() < end; h_sleep_ms(20))
			if (h_origin_requests(o_port) > before)
				break;
	}
	int ok_a = 0, ok_b = 0, b_early = 0, b_upstream = 0, a_streamed = 0;
	for (int i = 0; i < N; i++) {
		pthread_join(t[i], NULL);
		bool good = s[i].status == 200 && s[i].bytes == 400000 &&
			    s[i].hash == h_pattern_hash(400000);
		if (i % 2 == 0) {
			ok_a += good;
			a_streamed += i > 0 && strstr(s[i].cs, "coalesced-stream") != NULL;
		} else {
			ok_b += good;
			b_upstream += strstr(s[i].cs, "coalesced") == NULL;
			/* went upstream when the leader's head came, not at its end */
			b_early += s[i].first_ms > 0 && s[i].first_ms < s[0].done_ms - 300;
		}
	}
	CHECK_MSG(ok_a == N / 2 && ok_b == N / 2, "complete bodies: a %d, b %d", ok_a, ok_b);
	CHECK_MSG(a_streamed >= N / 2 - 2, "%d a-waiters streamed", a_streamed);
	CHECK_MSG(b_upstream == N / 2, "%d of %d b-waiters went upstream", b_upstream, N / 2);
	CHECK_MSG(b_early >= N / 2 - 1, "%d of %d b-waiters had bytes before the leader's end",
		  b_early, N / 2);
	long n = h_origin_requests(o_port) - before;
	CHECK_MSG(n >= 2 && n <= 1 + N / 2, "%ld origin requests", n);
	test_end();
}

/* ---- HEAD miss ---------------------------------------------------------------- */

static void test_head_miss(void)
{
	struct h_resp r;
	char cl[32] = "";
	void *curl = h_curl_new();
	char url[256];

	test_begin("head_miss_stored_as_get");
	long before = h_origin_requests(o_port);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/bg/head?cc=max-age%%3D60&size=3000",
		 gw_port);
	struct h_req q = {.url = url, .head = true, .curl = curl};
	CHECK(h_http(&q, &r) == 0);
	CHECK_INT(r.status, 200);
	CHECK(r.body_bytes == 0);
	CHECK_MSG(h_resp_header(&r, "Content-Length", cl, sizeof(cl)) && atoi(cl) == 3000,
		  "Content-Length '%s'", cl);
	CHECK_MSG(strstr(cs_of(&r), "stored"), "%s", cs_of(&r));
	h_resp_free(&r);
	/* the same connection goes on (nothing of the GET body leaked into it) */
	struct h_req g = {.url = url, .curl = curl};
	CHECK(h_http(&g, &r) == 0);
	CHECK_INT(r.status, 200);
	CHECK_MSG(strstr(cs_of(&r), "hit"), "GET after HEAD: %s", cs_of(&r));
	CHECK(r.body_bytes == 3000 && r.body_hash == h_pattern_hash(3000));
	CHECK_INT(r.num_connects, 0);
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("head_miss_chunked_stored_as_get");
	before = h_origin_requests(o_port);
	snprintf(url, sizeof(url),
		 "http://127.0.0.1:%d/bg/headc?cc=max-age%%3D60&size=5000&chunked=1", gw_port);
	CHECK(h_http(&q, &r) == 0);
	CHECK_INT(r.status, 200);
	CHECK(r.body_bytes == 0);
	h_resp_free(&r);
	CHECK(h_http(&g, &r) == 0);
	CHECK_MSG(strstr(cs_of(&r), "hit"), "GET after HEAD: %s", cs_of(&r));
	CHECK(r.body_bytes == 5000 && r.body_hash == h_pattern_hash(5000));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();
	h_curl_free(curl);
}

/* ---- cache.memory on reload ----------------------------------------------------- */

static void test_memory_reload(void)
{
	struct h_resp r;
	char path[128];

	test_begin("memory_resized_on_reload");
	for (int i = 0; i < 40; i++) { /* 40 × ~100 KB */
		snprintf(path, sizeof(path), "/bg/mem/%d?cc=max-age%%3D60&size=100000", i);
		get_h(path, NULL, false, &r);
		h_resp_free(&r);
	}
	long long bytes = cache_stat("bytes");
	CHECK_MSG(bytes > 3000000, "%lld bytes stored", bytes);
	CHECK_INT(cache_stat("budget"), 64LL << 20);
	write_config("1m");
	CHECK_INT(admin("POST", "/reload", NULL, &r), 200);
	h_resp_free(&r);
	double until = h_now_ms() + 3000;
	while (cache_stat("budget") != 1LL << 20 && h_now_ms() < until)
		h_sleep_ms(50);
	CHECK_INT(cache_stat("budget"), 1LL << 20);
	bytes = cache_stat("bytes");
	CHECK_MSG(bytes >= 0 && bytes <= 1LL << 20, "%lld bytes over a 1 MiB budget", bytes);
	write_config("64m");
	CHECK_INT(admin("POST", "/reload", NULL, &r), 200);
	h_resp_free(&r);
	until = h_now_ms() + 3000;
	while (cache_stat("budget") != 64LL << 20 && h_now_ms() < until)
		h_sleep_ms(50);
	CHECK_INT(cache_stat("budget"), 64LL << 20);
	for (int i = 0; i < 20; i++) {
		snprintf(path, sizeof(path), "/bg/mem2/%d?cc=max-age%%3D60&size=100000", i);
		get_h(path, NULL, false, &r);
		h_resp_free(&r);
	}
	bytes = cache_stat("bytes");
	CHECK_MSG(bytes > 1500000, "grown again: %lld bytes", bytes);
	test_end();
}

/* ---- purge during a fill ------------------------------------------------------- */

struct bg_get {
	const char *path;
	long status;
};

static void *bg_get_fn(void *arg)
{
	struct bg_get *b = arg;
	struct h_resp r;

	b->status = get_h(b->path, NULL, false, &r);
	h_resp_free(&r);
	return NULL;
}

/* GET path (its origin answer takes 1 s); purge with json while it is in
 * flight; then: is the object stored? */
static bool stored_after_purge(const char *path, const char *json)
{
	pthread_t t;
	struct bg_get b = {.path = path};
	struct h_resp r;

	long before = h_origin_requests(o_port);
	pthread_create(&t, NULL, bg_get_fn, &b);
	/* purge once the fill is at the origin (counted before its 1 s delay) */
	for (double end = h_now_ms() + 5000; h_now_ms() < end; h_sleep_ms(20))
		if (h_origin_requests(o_port) > before)
			break;
	CHECK_INT(admin("POST", "/cache/purge", json, &r), 200);
	h_resp_free(&r);
	pthread_join(t, NULL);
	CHECK_INT(b.status, 200);
	get_h(path, NULL, false, &r);
	bool hit = strstr(cs_of(&r), "hit") != NULL;
	h_resp_free(&r);
	return hit;
}

static void test_purge_during_fill(void)
{
	char json[512];

	test_begin("purge_during_fill_not_stored");
	const char *p = "/bg/pf?cc=max-age%3D60&delay=1000";
	snprintf(json, sizeof(json), "{\"url\":\"127.0.0.1:%d%s\"}", gw_port, p);
	long before = h_origin_requests(o_port);
	CHECK_MSG(!stored_after_purge(p, json), "the pre-purge response was stored");
	CHECK_INT(h_origin_requests(o_port) - before, 2);
	test_end();

	test_begin("purge_by_tag_during_fill_not_stored");
	const char *pt = "/bg/pt?cc=max-age%3D60&delay=1000&hdr=Surrogate-Key:grp";
	CHECK_MSG(!stored_after_purge(pt, "{\"tag\":\"grp\"}"), "stored despite the tag purge");
	test_end();

	test_begin("unrelated_purge_during_fill_stores");
	const char *pk = "/bg/pk?cc=max-age%3D60&delay=1000";
	snprintf(json, sizeof(json), "{\"prefix\":\"127.0.0.1:%d/elsewhere/\"}", gw_port);
	CHECK_MSG(stored_after_purge(pk, json), "an unrelated purge dropped the fill");
	test_end();
}

/* A refresh in flight does not hold up a drain: reflexd exits at once. */
static void test_drain_cancels_refresh(struct h_proc *gw)
{
	struct h_resp r;

	test_begin("drain_cancels_refresh");
	const char *p = "/bg/swrdrain?cc=max-age%3D1,stale-while-revalidate%3D60";
	CHECK_INT(get_h(p, NULL, false, &r), 200);
	h_resp_free(&r);
	h_sleep_ms(2100);
	const char *slow[] = {"X-Origin-Delay: 20000", NULL};
	long before = h_origin_requests(o_port);
	CHECK_INT(get_h(p, slow, false, &r), 200);
	CHECK_MSG(strstr(cs_of(&r), "stale-while-revalidate"), "%s", cs_of(&r));
	h_resp_free(&r);
	/* SIGTERM once the refresh is at the origin (it counts a request
	 * before its delay): in flight for sure, also on a busy machine */
	for (double end = h_now_ms() + 5000; h_now_ms() < end; h_sleep_ms(20))
		if (h_origin_requests(o_port) > before)
			break;
	CHECK_MSG(h_origin_requests(o_port) > before, "the refresh did not reach the origin");
	double t0 = h_now_ms();
	CHECK(h_signal(gw, SIGTERM) == 0);
	CHECK_MSG(h_wait_exit(gw, 5000) == 0, "reflexd still runs 5 s after SIGTERM");
	double took = h_now_ms() - t0;
	CHECK_MSG(took < 3000, "the drain took %.0f ms with a refresh in flight", took);
	CHECK_MSG(WIFEXITED(gw->status) && WEXITSTATUS(gw->status) == 0, "exit status 0x%x",
		  gw->status);
	CHECK(!h_log_has_sanitizer_report(gw));
	test_end();
}

int main(void)
{
	h_init("43_cache_background", 150);
	gw_port = h_free_port();
	o_port = h_free_port();
	admin_port = h_free_port();
	snprintf(tokens_path, sizeof(tokens_path), "%s", h_write_config("ops %s\n", TOKEN));
	snprintf(cfg_path, sizeof(cfg_path), "%s", h_write_config("%s", ""));
	write_config("64m");
	if (!h_start_origin("origin", o_port, 2))
		return test_exit_code();
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg_path);
	if (!gw)
		return test_exit_code();
	if (h_wait_port("127.0.0.1", admin_port, 5000)) {
		test_begin("admin_listening");
		CHECK_MSG(0, "the admin API does not listen on %d", admin_port);
		test_end();
		return test_exit_code();
	}
	test_swr();
	test_coalesce_stream();
	test_head_miss();
	test_purge_during_fill();
	test_memory_reload();
	test_begin("reflexd_alive");
	CHECK(h_alive(gw));
	test_end();
	test_drain_cancels_refresh(gw);
	return test_exit_code();
}
