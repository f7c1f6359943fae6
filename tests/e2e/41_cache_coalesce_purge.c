/* 41_cache_coalesce_purge — request coalescing across workers, purges
 * through the admin API, and the cache field of the access log
 * (docs/cache.md).
 *
 * Coalescing: 100 concurrent GETs of a cold key whose origin answer takes
 * 300 ms reach the origin exactly once (the others wait, on either of the
 * two workers, and are answered from the stored object). An uncacheable
 * answer sends the waiters upstream at once: every request is answered. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tests/e2e/lib/harness.h"

#define TOKEN "c4che-purge-secret"
#define N_CONC 100

static int gw_port, o_port, admin_port;
static const char *log_path;

static long get(const char *path, struct h_resp *r)
{
	char url[1024];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", gw_port, path);
	struct h_req q = {.url = url};
	return h_http(&q, r) == 0 ? r->status : -1;
}

static bool hit(const char *path)
{
	struct h_resp r;
	char v[256] = "";

	get(path, &r);
	bool h = h_resp_header(&r, "Cache-Status", v, sizeof(v)) && strstr(v, "hit");
	h_resp_free(&r);
	return h;
}

struct conc {
	const char *path;
	long status;
	uint64_t hash, bytes;
};

static void *conc_get(void *arg)
{
	struct conc *c = arg;
	struct h_resp r;

	c->status = get(c->path, &r);
	c->hash = r.body_hash;
	c->bytes = r.body_bytes;
	h_resp_free(&r);
	return NULL;
}

/* n concurrent GETs of path; returns how many got 200 with the pattern body */
static int concurrent(const char *path, int n, size_t size)
{
	pthread_t t[N_CONC];
	struct conc c[N_CONC];
	int ok = 0;

	for (int i = 0; i < n; i++) {
		c[i] = (struct conc){.path = path};
		pthread_create(&t[i], NULL, conc_get, &c[i]);
	}
	for (int i = 0; i < n; i++) {
		pthread_join(t[i], NULL);
		ok += c[i].status == 200 && c[i].bytes == size && c[i].hash == h_pattern_hash(size);
	}
	return ok;
}

/* ---- streaming to waiters while the leader's response arrives ----------- */

struct streamed {
	const char *path;
	double t0, first_ms, done_ms;
	long status;
	int curl_rc;
	uint64_t bytes, hash;
	char cs[128];
};

static void on_piece(const char *data, size_t len, double t_ms, void *arg)
{
	struct streamed *s = arg;

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
			  .sink = on_piece,
			  .sink_arg = s,
			  .timeout_ms = 8000,
			  .count_only = true};
	s->t0 = h_now_ms();
	h_http(&q, &r);
	s->done_ms = h_now_ms() - s->t0;
	s->status = r.status;
	s->curl_rc = r.curl_rc;
	s->bytes = r.body_bytes;
	s->hash = r.body_hash;
	h_resp_header(&r, "Cache-Status", s->cs, sizeof(s->cs));
	h_resp_free(&r);
	return NULL;
}

static void test_streaming_waiters(void)
{
	enum { N = 12 };
	pthread_t t[N];
	struct streamed s[N];
	long before = h_origin_requests(o_port);
	/* 240 KB paced at 200 KB/s: the leader's body takes over a second */
	const char *path = "/st/slow?cc=max-age%3D60&size=240000&rate=200000";

	test_begin("coalesced_waiters_stream_while_it_arrives");
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
		/* a waiter's first byte comes long before the whole body */
		early += s[i].first_ms > 0 && s[i].first_ms + 300 < s[i].done_ms;
	}
	CHECK_MSG(ok == N, "%d of %d got the whole body", ok, N);
	CHECK_MSG(streamed >= N - 2, "%d of %d waiters streamed from the leader", streamed, N);
	CHECK_MSG(early >= N - 2, "%d of %d saw the first bytes early", early, N);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("coalesced_stream_failure_reaches_waiters");
	/* the origin promises 100 bytes, sends 10 and closes (after 300 ms) */
	const char *bad = "/st/short?cc=max-age%3D60&malformed=short&delay=300";
	for (int i = 0; i < 6; i++) {
		s[i] = (struct streamed){.path = bad};
		pthread_create(&t[i], NULL, streamed_get, &s[i]);
	}
	int complete = 0, hung = 0;
	for (int i = 0; i < 6; i++) {
		pthread_join(t[i], NULL);
		complete += s[i].curl_rc == 0 && s[i].status == 200 && s[i].bytes == 100;
		hung += s[i].done_ms > 5000;
	}
	CHECK_MSG(complete == 0, "%d clients got a complete body from a truncated upstream",
		  complete);
	CHECK_MSG(hung == 0, "%d clients waited for their timeout", hung);
	struct h_resp r;
	CHECK_INT(get("/st/after?cc=max-age%3D60", &r), 200);
	h_resp_free(&r);
	CHECK_MSG(!hit(bad), "the truncated response was stored");
	test_end();

	/* The leader's client goes away mid-body (an orderly close, then a
	 * reset): its waiters already sent their clients the head, so the
	 * fetch must go on for them — it used to be aborted with the leader's
	 * connection and every waiter got a truncated body. */
	test_begin("coalesced_leader_client_gone_waiters_complete");
	for (int variant = 0; variant < 2; variant++) {
		enum { W = 4 };
		const char *gone = variant ? "/st/gone-rst?cc=max-age%3D60&size=240000&rate=200000"
					   : "/st/gone?cc=max-age%3D60&size=240000&rate=200000&"
					     "chunked=1";
		char rq[256];
		long o0 = h_origin_requests(o_port);
		int fd = h_connect("127.0.0.1", gw_port, 2000);
		if (fd < 0) {
			CHECK_MSG(0, "connect: %d", fd);
			break;
		}
		snprintf(rq, sizeof(rq), "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n", gone,
			 gw_port);
		h_send_str(fd, rq);
		for (double end = h_now_ms() + 5000; h_now_ms() < end; h_sleep_ms(20))
			if (h_origin_requests(o_port) > o0)
				break;
		for (int i = 0; i < W; i++) {
			s[i] = (struct streamed){.path = gone};
			pthread_create(&t[i], NULL, streamed_get, &s[i]);
		}
		h_sleep_ms(300); /* the waiters have their head and some of the body */
		if (variant) {
			struct linger lg = {.l_onoff = 1, .l_linger = 0};
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)); /* RST */
		} else {
			struct h_buf b = {0};
			h_read_all(fd, &b, 200, 100); /* what arrived: close() sends a FIN */
			h_buf_free(&b);
		}
		close(fd);
		int whole = 0;
		for (int i = 0; i < W; i++) {
			pthread_join(t[i], NULL);
			whole += s[i].curl_rc == 0 && s[i].status == 200 && s[i].bytes == 240000 &&
				 s[i].hash == h_pattern_hash(240000);
		}
		CHECK_MSG(whole == W, "%s: %d of %d waiters got the whole body", gone, whole, W);
		CHECK_MSG(hit(gone), "%s: not stored", gone);
		CHECK_INT(h_origin_requests(o_port) - o0, 1);
	}
	test_end();

	/* A chunked response that outgrows max_object (1 MiB - 4 KiB with 64m)
	 * cuts the waiters streaming it (docs/cache.md, limits). The next burst
	 * of misses must not coalesce on it again: a hit-for-miss marker lets
	 * each go upstream. Without it every burst was cut again. */
	test_begin("too_large_chunked_not_coalesced_again");
	const char *huge = "/st/huge?cc=max-age%3D60&chunked=1&size=1200000&rate=2000000";
	for (int round = 0; round < 2; round++) {
		long o0 = h_origin_requests(o_port);
		for (int i = 0; i < 3; i++) {
			s[i] = (struct streamed){.path = huge};
			pthread_create(&t[i], NULL, streamed_get, &s[i]);
			for (double end = h_now_ms() + 5000; i == 0 && h_now_ms() < end;
			     h_sleep_ms(20))
				if (h_origin_requests(o_port) > o0)
					break;
		}
		int whole = 0;
		for (int i = 0; i < 3; i++) {
			pthread_join(t[i], NULL);
			whole += s[i].curl_rc == 0 && s[i].bytes == 1200000 &&
				 s[i].hash == h_pattern_hash(1200000);
		}
		if (round == 1)
			CHECK_MSG(whole == 3, "second burst: %d of 3 got the whole body", whole);
	}
	test_end();
}

static void test_coalescing(void)
{
	long before;

	test_begin("coalesce_100_cold_misses_one_origin_request");
	before = h_origin_requests(o_port);
	int ok = concurrent("/co/cold?cc=max-age%3D60&delay=300&size=20000", N_CONC, 20000);
	CHECK_MSG(ok == N_CONC, "%d of %d answered with the right body", ok, N_CONC);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("coalesce_uncacheable_waiters_go_upstream");
	before = h_origin_requests(o_port);
	ok = concurrent("/co/nostore?cc=no-store&delay=200", 20, 1024);
	CHECK_MSG(ok == 20, "%d of 20 answered", ok);
	CHECK_INT(h_origin_requests(o_port) - before, 20);
	test_end();

	test_begin("coalesce_leader_upstream_fails_waiters_answered");
	/* the origin resets every connection after 300 ms: the leader fails
	 * before any head, and each waiter makes one try of its own
	 * (docs/cache.md) and gets its 502 — nobody hangs */
	before = h_origin_requests(o_port);
	double t0 = h_now_ms();
	struct conc fc[6];
	pthread_t ft[6];
	for (int i = 0; i < 6; i++) {
		fc[i] = (struct conc){.path = "/co/fail?cc=max-age%3D60&delay=300&reset=1"};
		pthread_create(&ft[i], NULL, conc_get, &fc[i]);
	}
	int answered = 0;
	for (int i = 0; i < 6; i++) {
		pthread_join(ft[i], NULL);
		answered += fc[i].status == 502;
	}
	CHECK_MSG(answered == 6, "%d of 6 got their 502", answered);
	CHECK_MSG(h_now_ms() - t0 < 4000, "took %.0f ms", h_now_ms() - t0);
	/* 6 tries, each of which the pool may send once more (a reset on a
	 * reused keep-alive connection is retried: docs/pool.md) */
	CHECK_MSG(h_origin_requests(o_port) - before <= 12, "%ld origin requests for 6 clients",
		  h_origin_requests(o_port) - before);
	test_end();

	test_begin("coalesce_after_expiry_one_refresh");
	CHECK(hit("/co/exp?cc=max-age%3D1&etag=%22e%22") == false);
	h_sleep_ms(2100);
	before = h_origin_requests(o_port);
	ok = concurrent("/co/exp?cc=max-age%3D1&etag=%22e%22&delay=0", 1, 1024); /* another key */
	ok = concurrent("/co/exp?cc=max-age%3D1&etag=%22e%22", 30, 1024);
	CHECK_MSG(ok == 30, "%d of 30", ok);
	CHECK_MSG(h_origin_requests(o_port) - before <= 2, "%ld origin requests for one stale key",
		  h_origin_requests(o_port) - before);
	test_end();
}

static long purge(const char *json, const char *token, struct h_resp *r)
{
	char url[128], auth[128];
	const char *hdrs[] = {auth, "Content-Type: application/json", NULL};

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/cache/purge", admin_port);
	snprintf(auth, sizeof(auth), "Authorization: Bearer %s", token);
	struct h_req q = {.method = "POST",
			  .url = url,
			  .headers = hdrs,
			  .body = json,
			  .body_len = strlen(json),
			  .no_expect = true};
	return h_http(&q, r) == 0 ? r->status : -1;
}

static void test_purges(void)
{
	struct h_resp r;
	char json[512];

	const char *paths[] = {"/pg/a?cc=max-age%3D60", "/pg/b?cc=max-age%3D60",
			       "/pg/sub/c?cc=max-age%3D60&hdr=Surrogate-Key:red%20blue",
			       "/pg/sub/d?cc=max-age%3D60&hdr=Surrogate-Key:blue",
			       "/other/e?cc=max-age%3D60&hdr=Surrogate-Key:red"};
	for (int i = 0; i < 5; i++) {
		hit(paths[i]);
		CHECK(hit(paths[i]));
	}

	test_begin("purge_needs_token");
	CHECK_INT(purge("{\"url\":\"/x\"}", "wrong", &r), 401);
	h_resp_free(&r);
	char purl[128];
	snprintf(purl, sizeof(purl), "http://127.0.0.1:%d/cache/purge", admin_port);
	struct h_req anon = {.method = "POST",
			     .url = purl,
			     .body = "{\"prefix\":\"127.0.0.1\"}",
			     .body_len = 22,
			     .no_expect = true};
	CHECK(h_http(&anon, &r) == 0);
	CHECK_MSG(r.status == 401, "no token: %ld", r.status);
	h_resp_free(&r);
	CHECK_INT(purge("{\"url\":", TOKEN, &r), 400); /* malformed */
	h_resp_free(&r);
	CHECK_INT(purge("{\"nothing\":1}", TOKEN, &r), 400);
	h_resp_free(&r);
	test_end();

	test_begin("purge_empty_prefix_refused");
	/* "" is a prefix of every URL, and so is "." once normalised: a typo
	 * must not flush the cache */
	CHECK_INT(purge("{\"prefix\":\"\"}", TOKEN, &r), 400);
	h_resp_free(&r);
	CHECK_INT(purge("{\"prefix\":\".\"}", TOKEN, &r), 400);
	h_resp_free(&r);
	CHECK_INT(purge("{\"url\":\"\"}", TOKEN, &r), 200);
	CHECK_MSG(r.body && strstr(r.body, "\"purged\":0"), "%s", r.body ? r.body : "");
	h_resp_free(&r);
	size_t big = 1 << 20;
	char *mb = malloc(big + 32);
	if (mb) {
		strcpy(mb, "{\"prefix\":\"");
		memset(mb + 11, 'a', big);
		strcpy(mb + 11 + big, "\"}");
		long st = purge(mb, TOKEN, &r);
		CHECK_MSG(st >= 400 && st < 500, "a 1 MB prefix: %ld", st);
		h_resp_free(&r);
		memcpy(mb, "{\"tag\":\"", 8);
		memset(mb + 8, 'a', 3);
		st = purge(mb, TOKEN, &r);
		CHECK_MSG(st >= 400 && st < 500, "a 1 MB tag: %ld", st);
		h_resp_free(&r);
		free(mb);
	}
	for (int i = 0; i < 5; i++)
		CHECK_MSG(hit(paths[i]), "%s was purged", paths[i]);
	test_end();

	test_begin("purge_by_url");
	snprintf(json, sizeof(json), "{\"url\":\"http://127.0.0.1:%d/pg/a?cc=max-age%%3D60\"}",
		 gw_port);
	CHECK_INT(purge(json, TOKEN, &r), 200);
	CHECK_MSG(r.body && strstr(r.body, "\"purged\":1"), "%s", r.body ? r.body : "");
	h_resp_free(&r);
	CHECK(!hit(paths[0]));
	CHECK(hit(paths[1]));
	test_end();

	test_begin("purge_by_tag");
	CHECK_INT(purge("{\"tag\":\"red\"}", TOKEN, &r), 200);
	CHECK_MSG(r.body && strstr(r.body, "\"purged\":2"), "%s", r.body ? r.body : "");
	h_resp_free(&r);
	CHECK(!hit(paths[2]));
	CHECK(!hit(paths[4]));
	CHECK(hit(paths[3]));
	test_end();

	test_begin("purge_by_prefix");
	hit(paths[2]);
	snprintf(json, sizeof(json), "{\"prefix\":\"127.0.0.1:%d/pg/sub/\"}", gw_port);
	CHECK_INT(purge(json, TOKEN, &r), 200);
	CHECK_MSG(r.body && strstr(r.body, "\"purged\":2"), "%s", r.body ? r.body : "");
	h_resp_free(&r);
	CHECK(!hit(paths[2]));
	CHECK(!hit(paths[3]));
	CHECK(hit(paths[1]));
	test_end();

	test_begin("cache_stats_endpoint");
	char url[128];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/cache", admin_port);
	CHECK_INT(h_get(url, &r), 200);
	CHECK_MSG(r.body && strstr(r.body, "\"enabled\":true") && strstr(r.body, "\"objects\":"),
		  "%s", r.body ? r.body : "");
	h_resp_free(&r);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", admin_port);
	CHECK_INT(h_get(url, &r), 200);
	h_resp_free(&r);
	test_end();
}

/* cache.grace (60 s here): a stale object answers when the origin fails,
 * though the response said nothing about stale-if-error */
static void test_grace(void)
{
	char url[256], v[256] = "";
	const char *fail[] = {"X-Origin-Status: 500", NULL};
	struct h_resp r;

	test_begin("grace_serves_stale_on_origin_error");
	CHECK(!hit("/gr/x?cc=max-age%3D1"));
	h_sleep_ms(2100);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/gr/x?cc=max-age%%3D1", gw_port);
	struct h_req q = {.url = url, .headers = fail};
	CHECK(h_http(&q, &r) == 0);
	CHECK_INT(r.status, 200);
	CHECK_MSG(h_resp_header(&r, "Cache-Status", v, sizeof(v)) && strstr(v, "stale-if-error"),
		  "%s", v);
	h_resp_free(&r);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/gr/must?cc=max-age%%3D1,must-revalidate",
		 gw_port);
	struct h_req q2 = {.url = url};
	h_http(&q2, &r);
	h_resp_free(&r);
	h_sleep_ms(2100);
	q2.headers = fail;
	CHECK(h_http(&q2, &r) == 0);
	CHECK_MSG(r.status == 500, "must-revalidate is never served stale: %ld", r.status);
	h_resp_free(&r);
	test_end();
}

static void test_access_log(void)
{
	test_begin("access_log_cache_field");
	int hits = 0, misses = 0, bypass = 0;
	/* the writer thread drains the queues in its own time: up to 10 s */
	for (double end = h_now_ms() + 10000; h_now_ms() < end; h_sleep_ms(100)) {
		FILE *f = fopen(log_path, "r");
		char line[4096];

		hits = misses = bypass = 0;
		while (f && fgets(line, sizeof(line), f)) {
			hits += strstr(line, "\"cache\":\"hit\"") != NULL;
			misses += strstr(line, "\"cache\":\"miss\"") != NULL;
			bypass += strstr(line, "\"cache\":\"bypass\"") != NULL;
		}
		if (f)
			fclose(f);
		if (hits >= 100 && misses >= 10)
			break;
	}
	CHECK_MSG(hits >= 100 && misses >= 10, "hits %d misses %d bypass %d", hits, misses, bypass);
	test_end();
}

int main(void)
{
	h_init("41_cache_coalesce_purge", 120);
	gw_port = h_free_port();
	o_port = h_free_port();
	admin_port = h_free_port();
	const char *tokens = h_write_config("ops %s\n", TOKEN);
	log_path = h_write_config("%s", "");
	if (!h_start_origin("origin", o_port, 2))
		return test_exit_code();
	const char *cfg = h_write_config(
		"workers: 2\n"
		"listen: [\"127.0.0.1:%d\"]\n"
		"upstream: [\"127.0.0.1:%d\"]\n"
		"access_log: \"%s\"\n"
		"admin: {listen: \"127.0.0.1:%d\", token_file: \"%s\"}\n"
		"cache: {enabled: true, memory: 64m, coalesce_timeout: 5s, grace: 60s}\n"
		/* a rule that matches nothing: every request then carries reflex
		 * state, which a leader whose client left must not need */
		"reflex:\n"
		"  rules:\n"
		"    - {name: never, path_prefix: /never/, detect: [email], in: [url], "
		"action: block}\n",
		gw_port, o_port, log_path, admin_port, tokens);
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw)
		return test_exit_code();
	if (h_wait_port("127.0.0.1", admin_port, 5000)) {
		test_begin("admin_listening");
		CHECK_MSG(0, "the admin API does not listen on %d", admin_port);
		test_end();
		return test_exit_code();
	}
	test_coalescing();
	test_streaming_waiters();
	test_purges();
	test_grace();
	test_access_log();
	h_finish(gw, 5000);
	return test_exit_code();
}
