/* 40_cache_rfc — the cache's HTTP semantics through real sockets
 * (docs/cache.md): every directive observably changes what the origin sees
 * (its /__stats request count) and what the client gets (Cache-Status,
 * Age, the body). reflex-origin sets the response fields from the query
 * (cc=, etag=, vary=, expires=, hdr=), and X-Origin-* request headers (not
 * part of the cache key) change its answer for one request (status, delay). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "tests/e2e/lib/harness.h"

static int gw_port, o_port, o2_port, evil_port;
static struct h_proc *o2;
static long evil_requests; /* requests the scripted upstream read (atomic) */

/* GET (or HEAD) path through the gateway with optional extra headers. */
static long req(const char *path, const char *const *headers, bool head, struct h_resp *r)
{
	char url[1024];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", gw_port, path);
	struct h_req q = {.url = url, .headers = headers, .head = head};
	if (h_http(&q, r) != 0)
		return -1;
	return r->status;
}

static bool cs_has(const struct h_resp *r, const char *needle)
{
	char v[256];

	return h_resp_header(r, "Cache-Status", v, sizeof(v)) && strstr(v, needle);
}

static const char *cs(const struct h_resp *r)
{
	static char v[256];

	if (!h_resp_header(r, "Cache-Status", v, sizeof(v)))
		strcpy(v, "(none)");
	return v;
}

/* Two GETs of path: how many reached the origin, and whether the second
 * was a hit. */
static long twice(const char *path, bool *second_hit)
{
	struct h_resp r;
	long before = h_origin_requests(o_port);

	req(path, NULL, false, &r);
	h_resp_free(&r);
	req(path, NULL, false, &r);
	*second_hit = cs_has(&r, "hit");
	h_resp_free(&r);
	return h_origin_requests(o_port) - before;
}

static void test_miss_hit_age(void)
{
	struct h_resp r;
	long before = h_origin_requests(o_port);
	char age[32];

	test_begin("miss_then_hit_with_age");
	CHECK_INT(req("/t/basic?cc=max-age%3D60", NULL, false, &r), 200);
	CHECK_MSG(cs_has(&r, "fwd=uri-miss") && cs_has(&r, "stored"), "first: %s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(req("/t/basic?cc=max-age%3D60", NULL, false, &r), 200);
	CHECK_MSG(cs_has(&r, "hit"), "second: %s", cs(&r));
	CHECK(r.body_bytes == 1024 && r.body_hash == h_pattern_hash(1024));
	CHECK(h_resp_header(&r, "Age", age, sizeof(age)));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	h_sleep_ms(2100);
	CHECK_INT(req("/t/basic?cc=max-age%3D60", NULL, false, &r), 200);
	CHECK_MSG(h_resp_header(&r, "Age", age, sizeof(age)) && atoi(age) >= 2,
		  "Age grows with time: %s", age);
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();
}

static void test_response_directives(void)
{
	bool hit;
	char path[256], date[40];
	time_t t = time(NULL) + 120;
	struct tm tm;

	test_begin("no_store_not_stored");
	CHECK_INT(twice("/t/ns?cc=no-store,max-age%3D60", &hit), 2);
	CHECK(!hit);
	test_end();

	test_begin("private_not_stored");
	CHECK_INT(twice("/t/priv?cc=private,max-age%3D60", &hit), 2);
	test_end();

	test_begin("no_freshness_not_stored");
	CHECK_INT(twice("/t/plain", &hit), 2);
	test_end();

	test_begin("s_maxage_for_shared_caches");
	CHECK_INT(twice("/t/smax?cc=max-age%3D0,s-maxage%3D60", &hit), 1);
	CHECK(hit);
	test_end();

	test_begin("expires_gives_freshness");
	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a,%%20%d%%20%b%%20%Y%%20%H:%M:%S%%20GMT", &tm);
	snprintf(path, sizeof(path), "/t/exp?expires=%s", date);
	CHECK_INT(twice(path, &hit), 1);
	CHECK(hit);
	test_end();

	test_begin("expires_in_the_past_is_stale");
	CHECK_INT(twice("/t/exp2?expires=Thu,%2001%20Jan%201970%2000:00:00%20GMT", &hit), 2);
	test_end();

	test_begin("set_cookie_not_shared_unless_public");
	CHECK_INT(twice("/t/ck?cc=max-age%3D60&hdr=Set-Cookie:a%3D1", &hit), 2);
	CHECK_INT(twice("/t/ck2?cc=public,max-age%3D60&hdr=Set-Cookie:a%3D1", &hit), 1);
	test_end();

	test_begin("vary_star_not_stored");
	CHECK_INT(twice("/t/vs?cc=max-age%3D60&vary=*", &hit), 2);
	test_end();

	test_begin("chunked_and_close_delimited_stored");
	struct h_resp r;
	char cl[32];
	const char *framings[] = {"/t/chunked?cc=max-age%3D60&chunked=1&chunk=1000&size=5000",
				  "/t/closed?cc=max-age%3D60&close=1&size=5000"};
	for (int i = 0; i < 2; i++) {
		CHECK_INT(twice(framings[i], &hit), 1);
		CHECK_MSG(hit, "%s", framings[i]);
		req(framings[i], NULL, false, &r);
		CHECK(r.body_bytes == 5000 && r.body_hash == h_pattern_hash(5000));
		CHECK(h_resp_header(&r, "Content-Length", cl, sizeof(cl)) && atoi(cl) == 5000);
		h_resp_free(&r);
	}
	test_end();

	test_begin("status_404_stored_500_too");
	CHECK_INT(twice("/t/404?cc=max-age%3D60&status=404", &hit), 1);
	test_end();
}

static void test_request_directives(void)
{
	struct h_resp r;
	const char *p = "/t/reqd?cc=max-age%3D60";
	long before;

	req(p, NULL, false, &r); /* stored */
	h_resp_free(&r);

	test_begin("request_max_age_0_goes_to_origin");
	before = h_origin_requests(o_port);
	const char *ma0[] = {"Cache-Control: max-age=0", NULL};
	req(p, ma0, false, &r);
	CHECK_MSG(!cs_has(&r, "hit"), "%s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("request_no_cache_goes_to_origin");
	before = h_origin_requests(o_port);
	const char *nc[] = {"Cache-Control: no-cache", NULL};
	req(p, nc, false, &r);
	CHECK_MSG(cs_has(&r, "fwd=request"), "%s", cs(&r));
	h_resp_free(&r);
	const char *pragma[] = {"Pragma: no-cache", NULL};
	req(p, pragma, false, &r);
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 2);
	test_end();

	test_begin("request_min_fresh");
	before = h_origin_requests(o_port);
	const char *mf_ok[] = {"Cache-Control: min-fresh=10", NULL};
	req(p, mf_ok, false, &r);
	CHECK_MSG(cs_has(&r, "hit"), "%s", cs(&r));
	h_resp_free(&r);
	const char *mf_no[] = {"Cache-Control: min-fresh=100", NULL};
	req(p, mf_no, false, &r);
	CHECK_MSG(!cs_has(&r, "hit"), "%s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("request_no_store_bypasses");
	before = h_origin_requests(o_port);
	const char *ns[] = {"Cache-Control: no-store", NULL};
	req(p, ns, false, &r);
	CHECK_MSG(cs_has(&r, "bypass"), "%s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("only_if_cached");
	before = h_origin_requests(o_port);
	const char *oic[] = {"Cache-Control: only-if-cached", NULL};
	CHECK_INT(req("/t/never-seen", oic, false, &r), 504);
	h_resp_free(&r);
	CHECK_INT(req(p, oic, false, &r), 200);
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 0);
	test_end();

	test_begin("authorization_not_shared");
	before = h_origin_requests(o_port);
	const char *auth[] = {"Authorization: Bearer x", NULL};
	req("/t/auth?cc=max-age%3D60", auth, false, &r);
	h_resp_free(&r);
	req("/t/auth?cc=max-age%3D60", NULL, false, &r);
	h_resp_free(&r);
	req("/t/auth2?cc=public,max-age%3D60", auth, false, &r);
	h_resp_free(&r);
	req("/t/auth2?cc=public,max-age%3D60", NULL, false, &r);
	CHECK_MSG(cs_has(&r, "hit"), "public response stored from an authorized request: %s",
		  cs(&r));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 3);
	test_end();
}

static void test_stale(void)
{
	struct h_resp r;
	long before;

	test_begin("max_stale_serves_stale");
	req("/t/ms?cc=max-age%3D1", NULL, false, &r);
	h_resp_free(&r);
	req("/t/mr?cc=max-age%3D1,must-revalidate", NULL, false, &r);
	h_resp_free(&r);
	h_sleep_ms(2100);
	before = h_origin_requests(o_port);
	const char *mx[] = {"Cache-Control: max-stale", NULL};
	req("/t/ms?cc=max-age%3D1", mx, false, &r);
	CHECK_MSG(cs_has(&r, "max-stale"), "%s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 0);
	test_end();

	test_begin("must_revalidate_never_stale");
	before = h_origin_requests(o_port);
	req("/t/mr?cc=max-age%3D1,must-revalidate", mx, false, &r);
	CHECK_MSG(!cs_has(&r, "max-stale"), "%s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("stale_while_revalidate");
	/* max-age 4: the refreshed copy must still be fresh a second later
	 * (Date has a one-second granularity) */
	const char *swr = "/t/swr?cc=max-age%3D4,stale-while-revalidate%3D60";
	req(swr, NULL, false, &r);
	h_resp_free(&r);
	h_sleep_ms(5100);
	before = h_origin_requests(o_port);
	/* the refresh takes 2 s at the origin: a stale answer well under that
	 * did not wait for it, even on a busy machine */
	const char *slow[] = {"X-Origin-Delay: 2000", NULL};
	double t0 = h_now_ms();
	CHECK_INT(req(swr, slow, false, &r), 200);
	double took = h_now_ms() - t0;
	CHECK_MSG(cs_has(&r, "stale-while-revalidate"), "%s", cs(&r));
	CHECK_MSG(took < 1500, "the stale answer waited for the refresh: %.0f ms", took);
	CHECK(r.body_hash == h_pattern_hash(1024));
	h_resp_free(&r);
	/* until the refresh is stored (in its own time on a busy machine: up to
	 * 10 s), requests are answered stale and start no second refresh; the
	 * copy it stores is fresh (max-age 4) */
	for (double end = h_now_ms() + 10000;; h_sleep_ms(100)) {
		CHECK_INT(req(swr, NULL, false, &r), 200);
		if ((cs_has(&r, "hit") && !cs_has(&r, "stale")) || h_now_ms() >= end ||
		    test_failed())
			break;
		h_resp_free(&r);
	}
	CHECK_MSG(cs_has(&r, "hit") && !cs_has(&r, "stale"), "refreshed: %s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("stale_if_error_on_5xx");
	req("/t/sie?cc=max-age%3D1,stale-if-error%3D60", NULL, false, &r);
	h_resp_free(&r);
	req("/t/nosie?cc=max-age%3D1", NULL, false, &r);
	h_resp_free(&r);
	h_sleep_ms(2100);
	const char *fail[] = {"X-Origin-Status: 503", NULL};
	CHECK_INT(req("/t/sie?cc=max-age%3D1,stale-if-error%3D60", fail, false, &r), 200);
	CHECK_MSG(cs_has(&r, "stale-if-error"), "%s", cs(&r));
	CHECK(r.body_hash == h_pattern_hash(1024));
	h_resp_free(&r);
	CHECK_INT(req("/t/nosie?cc=max-age%3D1", fail, false, &r), 503);
	h_resp_free(&r);
	test_end();

	test_begin("stale_if_error_on_connect_failure");
	CHECK_INT(req("/o2/sie?cc=max-age%3D1,stale-if-error%3D60", NULL, false, &r), 200);
	h_resp_free(&r);
	h_stop(o2, 3000);
	h_sleep_ms(1100);
	CHECK_INT(req("/o2/sie?cc=max-age%3D1,stale-if-error%3D60", NULL, false, &r), 200);
	CHECK_MSG(cs_has(&r, "stale-if-error"), "%s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(req("/o2/other?cc=max-age%3D1", NULL, false, &r), 502);
	h_resp_free(&r);
	test_end();
}

static void test_revalidation(void)
{
	struct h_resp r;
	long before;
	/* max-age 2, not 1: Date has a one-second granularity, so a copy the
	 * 304 refreshed late in its Date second is up to a second old at once;
	 * with max-age 1 the next request could find it stale again */
	const char *p = "/t/rv?cc=max-age%3D2&etag=%22v1%22";

	test_begin("revalidation_304_refreshes");
	req(p, NULL, false, &r);
	h_resp_free(&r);
	h_sleep_ms(3100);
	before = h_origin_requests(o_port);
	const char *s304[] = {"X-Origin-Status: 304", NULL};
	CHECK_INT(req(p, s304, false, &r), 200);
	CHECK_MSG(cs_has(&r, "fwd-status=304"), "%s", cs(&r));
	CHECK(r.body_bytes == 1024 && r.body_hash == h_pattern_hash(1024));
	h_resp_free(&r);
	CHECK_INT(req(p, NULL, false, &r), 200);
	CHECK_MSG(cs_has(&r, "hit"), "fresh again after the 304: %s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("no_cache_response_revalidates_each_time");
	const char *nc = "/t/ncr?cc=no-cache,max-age%3D60&etag=%22n1%22";
	req(nc, NULL, false, &r);
	h_resp_free(&r);
	before = h_origin_requests(o_port);
	CHECK_INT(req(nc, s304, false, &r), 200);
	CHECK_MSG(cs_has(&r, "fwd-status=304"), "%s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(req(nc, s304, false, &r), 200);
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 2);
	test_end();

	test_begin("client_conditional_answered_304");
	const char *c =
		"/t/cond?cc=max-age%3D60&etag=%22c1%22&lm=Sun,%2006%20Nov%201994%2008:49:37%20GMT";
	req(c, NULL, false, &r);
	h_resp_free(&r);
	before = h_origin_requests(o_port);
	const char *inm[] = {"If-None-Match: \"x\", \"c1\"", NULL};
	CHECK_INT(req(c, inm, false, &r), 304);
	CHECK(r.body_bytes == 0);
	h_resp_free(&r);
	const char *inm_no[] = {"If-None-Match: \"zz\"", NULL};
	CHECK_INT(req(c, inm_no, false, &r), 200);
	h_resp_free(&r);
	const char *ims[] = {"If-Modified-Since: Mon, 07 Nov 1994 08:49:37 GMT", NULL};
	CHECK_INT(req(c, ims, false, &r), 304);
	h_resp_free(&r);
	const char *ims_old[] = {"If-Modified-Since: Sat, 05 Nov 1994 08:49:37 GMT", NULL};
	CHECK_INT(req(c, ims_old, false, &r), 200);
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 0);
	test_end();
}

static void test_vary_head_invalidate(void)
{
	struct h_resp r;
	long before = h_origin_requests(o_port);
	const char *p = "/t/vary?cc=max-age%3D60&vary=Accept-Language";
	const char *en[] = {"Accept-Language: en", NULL}, *fr[] = {"Accept-Language: fr", NULL};
	const char *en2[] = {"Accept-Language:   en  ", NULL};

	test_begin("vary_two_variants");
	req(p, en, false, &r);
	h_resp_free(&r);
	req(p, fr, false, &r);
	CHECK_MSG(!cs_has(&r, "hit"), "fr is another variant: %s", cs(&r));
	h_resp_free(&r);
	req(p, en2, false, &r);
	CHECK_MSG(cs_has(&r, "hit"), "en again: %s", cs(&r));
	h_resp_free(&r);
	req(p, fr, false, &r);
	CHECK_MSG(cs_has(&r, "hit"), "fr again: %s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 2);
	test_end();

	test_begin("head_from_stored_get");
	before = h_origin_requests(o_port);
	char cl[32];
	CHECK_INT(req("/t/basic?cc=max-age%3D60", NULL, true, &r), 200);
	CHECK_MSG(cs_has(&r, "hit"), "%s", cs(&r));
	CHECK(h_resp_header(&r, "Content-Length", cl, sizeof(cl)) && atoi(cl) == 1024);
	CHECK(r.body_bytes == 0);
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 0);
	test_end();

	test_begin("post_invalidates");
	const char *ip = "/t/inv?cc=max-age%3D60";
	req(ip, NULL, false, &r);
	h_resp_free(&r);
	before = h_origin_requests(o_port);
	char url[256];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", gw_port, ip);
	struct h_req post = {.url = url, .body = "x", .body_len = 1};
	h_http(&post, &r);
	CHECK_INT(r.status, 200);
	h_resp_free(&r);
	req(ip, NULL, false, &r);
	CHECK_MSG(!cs_has(&r, "hit"), "after POST: %s", cs(&r));
	h_resp_free(&r);
	req(ip, NULL, false, &r);
	CHECK_MSG(cs_has(&r, "hit"), "stored again: %s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 2);
	test_end();

	test_begin("location_of_another_host_not_invalidated");
	/* RFC 9111 §4.4: an unsafe method's Location / Content-Location
	 * invalidate only URLs of the request's own host; otherwise one origin
	 * purges every other host's objects with its answers */
	const char *other[] = {"Host: other.example", NULL};
	const char *victim = "/t/victim?cc=max-age%3D60";
	req(victim, other, false, &r);
	h_resp_free(&r);
	req("/t/own?cc=max-age%3D60", NULL, false, &r);
	h_resp_free(&r);
	snprintf(url, sizeof(url),
		 "http://127.0.0.1:%d/t/inv2?hdr=Location:http://other.example/t/victim"
		 "%%3Fcc%%3Dmax-age%%253D60&hdr=Content-Location:http://127.0.0.1:%d/t/own"
		 "%%3Fcc%%3Dmax-age%%253D60",
		 gw_port, gw_port);
	h_http(&post, &r);
	CHECK_INT(r.status, 200);
	h_resp_free(&r);
	req(victim, other, false, &r);
	CHECK_MSG(cs_has(&r, "hit"), "another host's object was invalidated: %s", cs(&r));
	h_resp_free(&r);
	req("/t/own?cc=max-age%3D60", NULL, false, &r);
	CHECK_MSG(!cs_has(&r, "hit"), "the same host's Content-Location stays: %s", cs(&r));
	h_resp_free(&r);
	test_end();

	test_begin("route_cache_false");
	bool hit;
	CHECK_INT(twice("/nocache/x?cc=max-age%3D60", &hit), 2);
	req("/nocache/x?cc=max-age%3D60", NULL, false, &r);
	CHECK_MSG(!h_resp_header(&r, "Cache-Status", cl, sizeof(cl)),
		  "no Cache-Status off the cache");
	h_resp_free(&r);
	test_end();
}

static long post(void *curl, const char *path, const char *body, struct h_resp *r)
{
	char url[256];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", gw_port, path);
	struct h_req q = {.url = url,
			  .body = body,
			  .body_len = strlen(body),
			  .no_expect = true,
			  .curl = curl};
	return h_http(&q, r) == 0 ? r->status : -1;
}

/* ---- a hostile upstream and hostile clients -------------------------------- */

/* The scripted upstream behind /evil/: answers by path, byte by byte, what
 * reflex-origin cannot say (trailers, a cut inside a chunk). */
static void *evil_serve(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char buf[8192];
	size_t len = 0;

	for (;;) {
		char *end = memmem(buf, len, "\r\n\r\n", 4);
		if (!end) {
			ssize_t n = len < sizeof(buf) ? read(fd, buf + len, sizeof(buf) - len) : -1;
			if (n <= 0)
				break;
			len += (size_t)n;
			continue;
		}
		size_t head = (size_t)(end - buf) + 4;
		__atomic_add_fetch(&evil_requests, 1, __ATOMIC_SEQ_CST);
		if (memmem(buf, head, " /evil/trailers", 15)) {
			h_send_str(fd, "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n"
				       "Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
				       "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n");
		} else if (memmem(buf, head, " /evil/cut-chunk", 16)) {
			/* promises 0x40 bytes in a chunk, sends 10, closes */
			h_send_str(fd, "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n"
				       "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
				       "40\r\n0123456789");
			h_sleep_ms(100);
			break;
		} else if (memmem(buf, head, " /evil/short-cl", 15)) {
			h_send_str(fd, "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\n"
				       "Content-Length: 100\r\n\r\n0123456789");
			h_sleep_ms(100);
			break;
		} else {
			h_send_str(fd, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
		}
		memmove(buf, buf + head, len - head);
		len -= head;
	}
	close(fd);
	return NULL;
}

static long evil_count(void)
{
	return __atomic_load_n(&evil_requests, __ATOMIC_SEQ_CST);
}

/* GET path on a fresh raw connection: how the response ended. */
static enum h_read_end raw_get(const char *path, struct h_raw_resp *out)
{
	char rq[512];
	struct h_buf b = {0};

	snprintf(rq, sizeof(rq), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
	enum h_read_end end = h_raw_roundtrip("127.0.0.1", gw_port, rq, strlen(rq), &b, 5000);
	*out = (struct h_raw_resp){0};
	if (h_parse_responses(b.data, b.len, out, 1, NULL) < 1)
		out->status = -1;
	h_buf_free(&b);
	return end;
}

static void test_hostile_upstream(void)
{
	struct h_resp r;
	struct h_raw_resp rr;
	bool hit;
	char v[64];
	long before;

	test_begin("upstream_age_counts_against_freshness");
	/* RFC 9111 §4.2.3: Age 30 of max-age 60 leaves 30 s; the stored head
	 * drops Age, and the cache used to forget it: fresh for 60 s more */
	CHECK_INT(twice("/t/age30?cc=max-age%3D60&hdr=Age:30", &hit), 1);
	CHECK(hit);
	CHECK_INT(req("/t/age30?cc=max-age%3D60&hdr=Age:30", NULL, false, &r), 200);
	CHECK_MSG(h_resp_header(&r, "Age", v, sizeof(v)) && atoi(v) >= 30, "Age %s", v);
	CHECK_MSG(cs_has(&r, "ttl=") && atoi(strstr(cs(&r), "ttl=") + 4) <= 30, "%s", cs(&r));
	h_resp_free(&r);
	/* older than its max-age when it arrives: stored stale, never a hit */
	CHECK_INT(twice("/t/age3600?cc=max-age%3D60&hdr=Age:3600", &hit), 2);
	CHECK(!hit);
	/* 20 digits: atoll saturated and the product overflowed (UB) */
	CHECK_INT(twice("/t/agehuge?cc=max-age%3D60&hdr=Age:99999999999999999999", &hit), 2);
	CHECK(!hit);
	/* invalid (negative) Age is ignored: it must not make the object younger */
	CHECK_INT(twice("/t/ageneg?cc=max-age%3D60&hdr=Age:-100000", &hit), 1);
	CHECK_INT(req("/t/ageneg?cc=max-age%3D60&hdr=Age:-100000", NULL, false, &r), 200);
	CHECK_MSG(h_resp_header(&r, "Age", v, sizeof(v)) && atoi(v) >= 0 && atoi(v) < 10, "Age %s",
		  v);
	CHECK_MSG(cs_has(&r, "ttl=") && atoi(strstr(cs(&r), "ttl=") + 4) <= 60, "%s", cs(&r));
	h_resp_free(&r);
	test_end();

	test_begin("conflicting_max_age_is_stale");
	/* RFC 9111 §4.2.1: the first occurrence or stale, never the last */
	CHECK_INT(twice("/t/dup?cc=max-age%3D0,%20max-age%3D60", &hit), 2);
	CHECK_INT(twice("/t/dup2?cc=max-age%3D0&hdr=Cache-Control:max-age%3D60", &hit), 2);
	CHECK_INT(twice("/t/dup3?cc=s-maxage%3D0,s-maxage%3D60", &hit), 2);
	/* overflow saturates (still fresh), a quoted value is tolerated */
	CHECK_INT(twice("/t/big?cc=max-age%3D99999999999999999999", &hit), 1);
	CHECK(hit);
	CHECK_INT(twice("/t/quoted?cc=max-age%3D%2260%22", &hit), 1);
	CHECK_INT(twice("/t/negative?cc=max-age%3D-60", &hit), 2);
	test_end();

	test_begin("revalidation_304_with_another_etag_not_merged");
	/* RFC 9111 §4.3.4: a 304 whose validator is not the stored one must
	 * not update it; merging it labelled the old body with the new ETag,
	 * and a client holding that ETag was then told 304 */
	const char *e1[] = {"X-Origin-Etag: \"e1\"", NULL};
	const char *e2_304[] = {"X-Origin-Etag: \"e2\"", "X-Origin-Status: 304", NULL};
	const char *e2[] = {"X-Origin-Etag: \"e2\"", NULL};
	const char *em = "/t/etag-mismatch?cc=max-age%3D1";
	CHECK_INT(req(em, e1, false, &r), 200);
	h_resp_free(&r);
	h_sleep_ms(2100);
	CHECK_INT(req(em, e2_304, false, &r), 200);
	CHECK_MSG(h_resp_header(&r, "ETag", v, sizeof(v)) && !strcmp(v, "\"e1\""),
		  "the stored body is e1's, it was labelled %s", v);
	CHECK_MSG(cs_has(&r, "validator-mismatch"), "%s", cs(&r));
	CHECK(r.body_bytes == 1024 && r.body_hash == h_pattern_hash(1024));
	h_resp_free(&r);
	/* dropped, not kept (every request would get the same 304 forever),
	 * nor labelled e2 (it used to be a hit with e2's ETag) */
	before = h_origin_requests(o_port);
	CHECK_INT(req(em, e2, false, &r), 200);
	CHECK_MSG(cs_has(&r, "fwd=uri-miss"), "after the mismatch: %s", cs(&r));
	CHECK_MSG(h_resp_header(&r, "ETag", v, sizeof(v)) && !strcmp(v, "\"e2\""), "ETag %s", v);
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("odd_but_valid_response_fields");
	/* qualified no-cache/private are read as unqualified (docs/cache.md) */
	CHECK_INT(twice("/t/ncq?cc=no-cache%3D%22Set-Cookie%22,max-age%3D60&etag=%22q%22", &hit),
		  2);
	CHECK_INT(twice("/t/pq?cc=private%3D%22X-A%22,max-age%3D60", &hit), 2);
	/* Expires 0 is invalid: already expired */
	CHECK_INT(twice("/t/exp0?expires=0", &hit), 2);
	/* Vary names in odd case, spacing and repeated: one set of names */
	const char *vp =
		"/t/vodd?cc=max-age%3D60&vary=Accept-Language%20,%20%20ACCEPT-LANGUAGE,x-a";
	const char *en_a[] = {"Accept-Language: en", "X-A: 1", NULL};
	const char *en_a2[] = {"accept-language: en", "x-a: 1", NULL};
	const char *fr_a[] = {"Accept-Language: fr", "X-A: 1", NULL};
	before = h_origin_requests(o_port);
	req(vp, en_a, false, &r);
	h_resp_free(&r);
	req(vp, en_a2, false, &r);
	CHECK_MSG(cs_has(&r, "hit"), "same values, other case: %s", cs(&r));
	h_resp_free(&r);
	req(vp, fr_a, false, &r);
	CHECK_MSG(!cs_has(&r, "hit"), "other variant: %s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 2);
	/* a 304 to an unconditional request is relayed, never stored */
	const char *s304[] = {"X-Origin-Status: 304", NULL};
	before = h_origin_requests(o_port);
	for (int i = 0; i < 2; i++) {
		CHECK_INT(req("/t/u304?cc=max-age%3D60", s304, false, &r), 304);
		h_resp_free(&r);
	}
	CHECK_INT(h_origin_requests(o_port) - before, 2);
	/* a 304 carrying a Content-Length never changes the stored one */
	const char *cl304[] = {"X-Origin-Status: 304", "X-Origin-Hdr: Content-Length:5", NULL};
	req("/t/cl304?cc=max-age%3D1&etag=%22c%22", NULL, false, &r);
	h_resp_free(&r);
	h_sleep_ms(2100);
	CHECK_INT(req("/t/cl304?cc=max-age%3D1&etag=%22c%22", cl304, false, &r), 200);
	CHECK_MSG(cs_has(&r, "fwd-status=304"), "%s", cs(&r));
	CHECK(r.body_bytes == 1024 && r.body_hash == h_pattern_hash(1024));
	CHECK(h_resp_header(&r, "Content-Length", v, sizeof(v)) && atoi(v) == 1024);
	h_resp_free(&r);
	test_end();

	test_begin("partial_206_never_stored");
	CHECK_INT(twice("/t/p206?cc=max-age%3D60&status=206&hdr=Content-Range:bytes%200-1023/4096",
			&hit),
		  2);
	CHECK(!hit);
	test_end();

	test_begin("truncated_upstream_not_stored");
	/* Content-Length 100, 10 bytes, close: the client sees the cut, and
	 * nothing is stored (the next request goes upstream again) */
	before = evil_count();
	for (int i = 0; i < 2; i++) {
		enum h_read_end end = raw_get("/evil/short-cl", &rr);
		CHECK_MSG(end == H_READ_CLOSED || end == H_READ_RESET, "read ended %s",
			  h_read_end_name(end));
		CHECK_MSG(rr.status != 200 || !rr.complete, "a short body looked complete");
		h_raw_resp_free(&rr, rr.status < 0 ? 0 : 1);
	}
	for (int i = 0; i < 2; i++) {
		raw_get("/evil/cut-chunk", &rr);
		CHECK_MSG(rr.status != 200 || !rr.complete, "a cut chunked body looked complete");
		h_raw_resp_free(&rr, rr.status < 0 ? 0 : 1);
	}
	CHECK_INT(evil_count() - before, 4);
	test_end();

	test_begin("chunked_with_trailers_stored");
	before = evil_count();
	for (int i = 0; i < 2; i++) {
		CHECK_INT(req("/evil/trailers", NULL, false, &r), 200);
		CHECK_MSG(r.body_len == 11 && !memcmp(r.body, "hello world", 11), "body %.*s",
			  (int)r.body_len, r.body ? r.body : "");
		CHECK_MSG(i == 0 || cs_has(&r, "hit"), "%s", cs(&r));
		h_resp_free(&r);
	}
	CHECK_INT(evil_count() - before, 1);
	test_end();
}

static void test_hostile_client(void)
{
	struct h_resp r;
	long before;
	char v[64];

	test_begin("range_on_a_hit_never_a_wrong_slice");
	const char *rp = "/t/range?cc=max-age%3D60&size=4096";
	req(rp, NULL, false, &r);
	h_resp_free(&r);
	const char *range[] = {"Range: bytes=100-199", NULL};
	long st = req(rp, range, false, &r);
	char want[100];
	h_pattern_fill(want, sizeof(want), 100);
	CHECK_MSG((st == 200 && r.body_bytes == 4096 && r.body_hash == h_pattern_hash(4096)) ||
			  (st == 206 && r.body_len == 100 && !memcmp(r.body, want, 100)),
		  "status %ld, %llu bytes", st, (unsigned long long)r.body_bytes);
	h_resp_free(&r);
	test_end();

	test_begin("conditionals_on_a_hit");
	const char *c = "/t/cond2?cc=max-age%3D60&etag=W/%22w1%22"
			"&lm=Sun,%2006%20Nov%201994%2008:49:37%20GMT";
	req(c, NULL, false, &r);
	h_resp_free(&r);
	before = h_origin_requests(o_port);
	const char *star[] = {"If-None-Match: *", NULL};
	CHECK_INT(req(c, star, false, &r), 304);
	h_resp_free(&r);
	const char *weak[] = {"If-None-Match: \"a\", \"w1\"", NULL}; /* weak comparison */
	CHECK_INT(req(c, weak, false, &r), 304);
	h_resp_free(&r);
	/* If-None-Match wins over a matching If-Modified-Since */
	const char *both[] = {"If-None-Match: \"zz\"",
			      "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT", NULL};
	CHECK_INT(req(c, both, false, &r), 200);
	h_resp_free(&r);
	const char *bad_ims[] = {"If-Modified-Since: yesterday", NULL};
	CHECK_INT(req(c, bad_ims, false, &r), 200);
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 0);
	test_end();

	test_begin("invalid_request_max_stale_ignored");
	/* "max-stale=abc" is no "max-stale": it used to accept any staleness */
	const char *ms = "/t/msbad?cc=max-age%3D1";
	req(ms, NULL, false, &r);
	h_resp_free(&r);
	req("/t/msany?cc=max-age%3D1", NULL, false, &r);
	h_resp_free(&r);
	h_sleep_ms(2100);
	const char *bad_ms[] = {"Cache-Control: max-stale=abc", NULL};
	before = h_origin_requests(o_port);
	CHECK_INT(req(ms, bad_ms, false, &r), 200);
	CHECK_MSG(!cs_has(&r, "max-stale"), "%s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	const char *any_ms[] = {"Cache-Control: max-stale", NULL};
	CHECK_INT(req("/t/msany?cc=max-age%3D1", any_ms, false, &r), 200);
	CHECK_MSG(cs_has(&r, "max-stale"), "%s", cs(&r));
	h_resp_free(&r);
	test_end();

	test_begin("key_normalisation");
	bool hit;
	before = h_origin_requests(o_port);
	req("/t/n%7Eu?cc=max-age%3D60", NULL, false, &r);
	h_resp_free(&r);
	req("/t/n%7eu?cc=max-age%3D60", NULL, false, &r); /* hex case: one key */
	CHECK_MSG(cs_has(&r, "hit"), "%%7e vs %%7E: %s", cs(&r));
	h_resp_free(&r);
	/* %7E is not decoded: the origin is sent %7E, and one that does not
	 * decode could answer it otherwise (a cacheable 404) under ~'s key */
	req("/t/n~u?cc=max-age%3D60", NULL, false, &r);
	CHECK_MSG(!cs_has(&r, "hit"), "%%7E vs ~: %s", cs(&r));
	h_resp_free(&r);
	req("/t/a%2Fb?cc=max-age%3D60", NULL, false, &r);
	h_resp_free(&r);
	req("/t/a/b?cc=max-age%3D60", NULL, false, &r); /* %2F is not /: two keys */
	CHECK_MSG(!cs_has(&r, "hit"), "%%2F vs /: %s", cs(&r));
	h_resp_free(&r);
	const char *h1[] = {"Host: EXAMPLE.com:80", NULL}, *h2[] = {"Host: example.com", NULL};
	req("/t/host?cc=max-age%3D60", h1, false, &r);
	h_resp_free(&r);
	req("/t/host?cc=max-age%3D60", h2, false, &r);
	CHECK_MSG(cs_has(&r, "hit"), "Host case and :80: %s", cs(&r));
	h_resp_free(&r);
	/* absolute-form: the same key as origin-form with that Host */
	struct h_buf b = {0};
	struct h_raw_resp rr;
	const char *abs = "GET http://example.com/t/host?cc=max-age%3D60 HTTP/1.1\r\n"
			  "Host: example.com\r\n\r\n";
	int fd = h_connect("127.0.0.1", gw_port, 2000);
	if (fd >= 0) {
		h_send_str(fd, abs);
		h_read_responses(fd, &b, 1, 5000);
		close(fd);
	}
	CHECK(h_parse_responses(b.data, b.len, &rr, 1, NULL) == 1);
	CHECK_MSG(b.len && h_head_header(rr.head, "Cache-Status", v, sizeof(v)) && strstr(v, "hit"),
		  "absolute-form: %s", b.len ? h_excerpt(b.data, b.len, 200) : "(nothing)");
	h_raw_resp_free(&rr, 1);
	h_buf_free(&b);
	CHECK_INT(h_origin_requests(o_port) - before, 5);
	(void)hit;
	test_end();
}

static void test_post(void)
{
	struct h_resp r;
	void *curl = h_curl_new();
	long before = h_origin_requests(o_port);
	const char *p = "/post/complete?cc=max-age%3D60";

	test_begin("post_cached_by_body_when_opted_in");
	CHECK_INT(post(curl, p, "{\"prompt\":\"hello\"}", &r), 200);
	CHECK_MSG(cs_has(&r, "stored"), "%s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(post(curl, p, "{\"prompt\":\"hello\"}", &r), 200);
	CHECK_MSG(cs_has(&r, "hit"), "same body: %s", cs(&r));
	CHECK(r.body_hash == h_pattern_hash(1024));
	h_resp_free(&r);
	CHECK_INT(post(curl, p, "{\"prompt\":\"other\"}", &r), 200);
	CHECK_MSG(!cs_has(&r, "hit"), "another body: %s", cs(&r));
	CHECK_MSG(r.num_connects == 0, "keep-alive survives a POST hit");
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 2);
	test_end();

	test_begin("post_cached_with_expect_100_continue");
	static char big[3000];
	memset(big, 'p', sizeof(big) - 1);
	char url[256];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/post/big?cc=max-age%%3D60", gw_port);
	for (int i = 0; i < 2; i++) {
		struct h_req q = {
			.url = url, .body = big, .body_len = strlen(big), .timeout_ms = 5000};
		CHECK(h_http(&q, &r) == 0);
		CHECK_INT(r.status, 200);
		if (i == 1)
			CHECK_MSG(cs_has(&r, "hit"), "%s", cs(&r));
		h_resp_free(&r);
	}
	test_end();

	test_begin("post_elsewhere_not_cached");
	before = h_origin_requests(o_port);
	CHECK_INT(post(curl, "/t/post?cc=max-age%3D60", "x", &r), 200);
	CHECK_MSG(cs_has(&r, "bypass"), "%s", cs(&r));
	h_resp_free(&r);
	CHECK_INT(post(curl, "/t/post?cc=max-age%3D60", "x", &r), 200);
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 2);
	test_end();
	h_curl_free(curl);
}

int main(void)
{
	h_init("40_cache_rfc", 120);
	gw_port = h_free_port();
	o_port = h_free_port();
	o2_port = h_free_port();
	if (!h_start_origin("origin", o_port, 1) || !(o2 = h_start_origin("o2", o2_port, 1)))
		return test_exit_code();
	if (h_serve_tcp(evil_serve, &evil_port)) {
		test_begin("scripted_upstream");
		test_fail(__FILE__, __LINE__, "cannot start the scripted upstream");
		test_end();
		return test_exit_code();
	}
	const char *cfg =
		h_write_config("workers: 2\n"
			       "listen: [\"127.0.0.1:%d\"]\n"
			       "admin: {listen: off}\n"
			       "pools:\n"
			       "  default: {endpoints: [\"127.0.0.1:%d\"]}\n"
			       "  two: {endpoints: [\"127.0.0.1:%d\"]}\n"
			       "  evil: {endpoints: [\"127.0.0.1:%d\"]}\n"
			       "routes:\n"
			       "  - {path_prefix: /evil/, pool: evil}\n"
			       "  - {path_prefix: /nocache/, pool: default, cache: false}\n"
			       "  - {path_prefix: /o2/, pool: two}\n"
			       "  - {path_prefix: /post/, pool: default, cache: {post: true}}\n"
			       "cache: {enabled: true, memory: 64m}\n",
			       gw_port, o_port, o2_port, evil_port);
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw)
		return test_exit_code();
	test_miss_hit_age();
	test_response_directives();
	test_request_directives();
	test_revalidation();
	test_vary_head_invalidate();
	test_post();
	test_hostile_upstream();
	test_hostile_client();
	test_stale();
	h_finish(gw, 5000);
	return test_exit_code();
}
