/* 44_cache_forward_head — the request head the origin receives when the
 * cache sends a request upstream (docs/cache.md, "Cost of a hit"):
 *
 * reflexd serializes the upstream head only once a request goes upstream
 * (a hit never builds it), so every way the cache forwards is checked
 * against what reflex-origin's /echo saw: a miss, a HEAD miss fetched as a
 * GET, a revalidation, a stale-while-revalidate refresh in the background.
 * Each must carry exactly the head a plain forward carries: Host,
 * X-Forwarded-For and Via appended to, X-Request-ID kept, X-Forwarded-Proto,
 * hop-by-hop fields and the client's conditionals removed, the cache's own
 * conditionals added (before the blank line: a POST's body follows the
 * head byte for byte). A hit answers with its own request's X-Request-ID.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/e2e/lib/harness.h"

static int gw_port, o_port;

static long get(const char *path, const char *const *headers, bool head, struct h_resp *r)
{
	char url[1024];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", gw_port, path);
	struct h_req q = {.url = url, .headers = headers, .head = head};
	return h_http(&q, r) == 0 ? r->status : -1;
}

static bool header_is(const struct h_resp *r, const char *name, const char *want)
{
	char v[256];

	return h_resp_header(r, name, v, sizeof(v)) && !strcmp(v, want);
}

static bool cs_has(const struct h_resp *r, const char *needle)
{
	char v[256];

	return h_resp_header(r, "Cache-Status", v, sizeof(v)) && strstr(v, needle);
}

/* What the origin saw, from a response carrying its /echo body (straight
 * from the origin or from the cache). */
static bool echo_of(const struct h_resp *r, struct h_echo *e)
{
	if (r->status != 200 || !r->body || h_echo_parse(r->body, r->body_len, e) != 0) {
		test_fail(__FILE__, __LINE__, "no /echo body (status %ld)", r->status);
		return false;
	}
	return true;
}

static void check_field(const struct h_echo *e, const char *name, const char *want, int line)
{
	const char *v = h_echo_header(e, name);

	if (want && (!v || strcmp(v, want) || h_echo_count(e, name) != 1))
		test_fail(__FILE__, line, "upstream %s: '%s' (%d fields), want '%s'", name,
			  v ? v : "(none)", h_echo_count(e, name), want);
	if (!want && v)
		test_fail(__FILE__, line, "upstream %s: '%s', want none", name, v);
}
#define FIELD(e, name, want) check_field(e, name, want, __LINE__)

/* The fields every forwarded request carries from a client that sent id. */
static void check_forwarded(const struct h_echo *e, const char *id, int line)
{
	char host[64];

	snprintf(host, sizeof(host), "127.0.0.1:%d", gw_port);
	check_field(e, "Host", host, line);
	check_field(e, "X-Forwarded-For", "127.0.0.1", line);
	check_field(e, "Via", "1.1 reflex", line);
	check_field(e, "X-Forwarded-Proto", "http", line);
	check_field(e, "X-Request-ID", id, line);
}

static void test_miss_and_hit(void)
{
	const char *path = "/echo?cc=max-age%3D60&k=miss";
	const char *miss_hdrs[] = {"X-Forwarded-For: 10.1.2.3",
				   "Via: 1.0 edge",
				   "X-Request-ID: fwd-head-miss-1",
				   "Connection: X-Hop",
				   "X-Hop: 1",
				   "Keep-Alive: timeout=5",
				   "Proxy-Connection: keep-alive",
				   "X-Forwarded-Proto: gopher",
				   "If-None-Match: \"nope\"",
				   "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT",
				   "X-Keep: yes",
				   NULL};
	const char *hit_hdrs[] = {"X-Request-ID: fwd-head-hit-2", NULL};
	struct h_resp r;
	struct h_echo e;
	char host[64];

	test_begin("miss_forwards_the_full_head");
	long before = h_origin_requests(o_port);
	CHECK_INT(get(path, miss_hdrs, false, &r), 200);
	CHECK_MSG(cs_has(&r, "fwd=uri-miss") && cs_has(&r, "stored"), "not a stored miss");
	CHECK(header_is(&r, "X-Request-ID", "fwd-head-miss-1"));
	if (echo_of(&r, &e)) {
		snprintf(host, sizeof(host), "127.0.0.1:%d", gw_port);
		CHECK_MSG(!strcmp(e.method, "GET"), "method %s", e.method);
		FIELD(&e, "Host", host);
		FIELD(&e, "X-Forwarded-For", "10.1.2.3, 127.0.0.1");
		FIELD(&e, "Via", "1.0 edge, 1.1 reflex");
		FIELD(&e, "X-Request-ID", "fwd-head-miss-1");
		FIELD(&e, "X-Forwarded-Proto", "http");
		FIELD(&e, "X-Keep", "yes");
		/* hop-by-hop, and the conditionals the cache answers itself */
		FIELD(&e, "Connection", NULL);
		FIELD(&e, "X-Hop", NULL);
		FIELD(&e, "Keep-Alive", NULL);
		FIELD(&e, "Proxy-Connection", NULL);
		FIELD(&e, "If-None-Match", NULL);
		FIELD(&e, "If-Modified-Since", NULL);
		h_echo_free(&e);
	}
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("hit_answers_with_its_own_request_id");
	before = h_origin_requests(o_port);
	CHECK_INT(get(path, hit_hdrs, false, &r), 200);
	CHECK_MSG(cs_has(&r, "hit"), "not a hit");
	CHECK(header_is(&r, "X-Request-ID", "fwd-head-hit-2"));
	if (echo_of(&r, &e)) { /* the stored answer: what the miss sent */
		FIELD(&e, "X-Request-ID", "fwd-head-miss-1");
		h_echo_free(&e);
	}
	h_resp_free(&r);
	CHECK_INT(get(path, NULL, false, &r), 200);
	char id[128] = "";
	CHECK(h_resp_header(&r, "X-Request-ID", id, sizeof(id)) && h_is_hex32(id));
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 0);
	test_end();
}

static void test_head_miss(void)
{
	const char *path = "/echo?cc=max-age%3D60&k=head";
	const char *hdrs[] = {"X-Request-ID: fwd-head-head-3", "If-None-Match: \"x\"", NULL};
	struct h_resp r;
	struct h_echo e;

	test_begin("head_miss_goes_up_as_get_with_the_full_head");
	long before = h_origin_requests(o_port);
	CHECK_INT(get(path, hdrs, true, &r), 200);
	h_resp_free(&r);
	CHECK_INT(get(path, NULL, false, &r), 200);
	CHECK_MSG(cs_has(&r, "hit"), "the GET after the HEAD is not a hit");
	if (echo_of(&r, &e)) {
		CHECK_MSG(!strcmp(e.method, "GET"), "method %s", e.method);
		check_forwarded(&e, "fwd-head-head-3", __LINE__);
		FIELD(&e, "If-None-Match", NULL);
		h_echo_free(&e);
	}
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();
}

static void test_revalidation(void)
{
	const char *path = "/echo?cc=max-age%3D1&etag=%22v1%22&k=reval";
	const char *h1[] = {"X-Request-ID: fwd-head-reval-4", NULL};
	const char *h2[] = {"X-Request-ID: fwd-head-reval-5", NULL};
	struct h_resp r;
	struct h_echo e;

	test_begin("revalidation_carries_the_full_head");
	CHECK_INT(get(path, h1, false, &r), 200);
	h_resp_free(&r);
	h_sleep_ms(1100);
	long before = h_origin_requests(o_port);
	CHECK_INT(get(path, h2, false, &r), 200);
	/* reflex-origin's /echo ignores conditionals: it shows what came */
	if (echo_of(&r, &e)) {
		check_forwarded(&e, "fwd-head-reval-5", __LINE__);
		FIELD(&e, "If-None-Match", "\"v1\"");
		h_echo_free(&e);
	}
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();
}

static void test_background_refresh(void)
{
	/* reflex-origin takes Cache-Control from an X-Origin-Cc request field
	 * too (not part of the key): the refresh, which sends the second
	 * request's fields, brings an object fresh for a minute, so the poll
	 * below cannot find it stale again (the origin's Date has whole
	 * seconds: a max-age of 1 could be born stale) */
	const char *path = "/echo?k=swr";
	const char *h1[] = {"X-Request-ID: fwd-head-swr-6",
			    "X-Origin-Cc: max-age=1, stale-while-revalidate=30", NULL};
	const char *h2[] = {"X-Request-ID: fwd-head-swr-7", "X-Forwarded-For: 10.9.9.9",
			    "X-Origin-Cc: max-age=60", NULL};
	struct h_resp r;
	struct h_echo e;

	test_begin("background_refresh_carries_the_full_head");
	CHECK_INT(get(path, h1, false, &r), 200);
	h_resp_free(&r);
	h_sleep_ms(1100);
	long before = h_origin_requests(o_port);
	CHECK_INT(get(path, h2, false, &r), 200);
	CHECK_MSG(cs_has(&r, "stale-while-revalidate"), "not served stale");
	h_resp_free(&r);
	/* the refresh is stored once the origin answered: poll, bounded */
	bool fresh = false;
	for (int i = 0; i < 40 && !fresh; i++) {
		h_sleep_ms(50);
		CHECK_INT(get(path, NULL, false, &r), 200);
		if (cs_has(&r, "hit") && !cs_has(&r, "stale") && echo_of(&r, &e)) {
			const char *id = h_echo_header(&e, "X-Request-ID");
			fresh = id && !strcmp(id, "fwd-head-swr-7");
			if (fresh) {
				FIELD(&e, "X-Forwarded-For", "10.9.9.9, 127.0.0.1");
				FIELD(&e, "Via", "1.1 reflex");
				FIELD(&e, "X-Forwarded-Proto", "http");
				FIELD(&e, "X-Request-ID", "fwd-head-swr-7");
			}
			h_echo_free(&e);
		}
		h_resp_free(&r);
	}
	CHECK_MSG(fresh, "the refreshed object never showed the refresh's head");
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();
}

static void test_post_miss(void)
{
	const char *body = "{\"prompt\":\"forward me\"}";
	const char *hdrs[] = {"X-Request-ID: fwd-head-post-8", "Content-Type: application/json",
			      NULL};
	char url[256], want[17];
	struct h_resp r;
	struct h_echo e;

	/* the body follows the rewritten head: it must arrive byte for byte */
	test_begin("post_miss_carries_head_and_body");
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/echo?cc=max-age%%3D60&k=post", gw_port);
	struct h_req q = {.url = url,
			  .headers = hdrs,
			  .body = body,
			  .body_len = strlen(body),
			  .no_expect = true,
			  .timeout_ms = 5000};
	CHECK(h_http(&q, &r) == 0);
	CHECK_MSG(cs_has(&r, "stored"), "POST miss not stored");
	if (echo_of(&r, &e)) {
		CHECK_MSG(!strcmp(e.method, "POST"), "method %s", e.method);
		check_forwarded(&e, "fwd-head-post-8", __LINE__);
		CHECK_INT(e.body_bytes, (long long)strlen(body));
		h_hex64(h_fnv1a(H_FNV_INIT, body, strlen(body)), want);
		CHECK_MSG(!strcmp(e.body_hash, want), "upstream body hash %s, want %s", e.body_hash,
			  want);
		h_echo_free(&e);
	}
	h_resp_free(&r);
	test_end();
}

int main(void)
{
	h_init("44_cache_forward_head", 60);
	gw_port = h_free_port();
	o_port = h_free_port();
	if (!h_start_origin("origin", o_port, 1))
		return test_exit_code();
	const char *cfg =
		h_write_config("workers: 1\n"
			       "listen: [\"127.0.0.1:%d\"]\n"
			       "admin: {listen: off}\n"
			       "pools:\n"
			       "  default: {endpoints: [\"127.0.0.1:%d\"]}\n"
			       "routes:\n"
			       "  - {path_prefix: /echo, pool: default, cache: {post: true}}\n"
			       "cache: {enabled: true, memory: 16m}\n",
			       gw_port, o_port);
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw)
		return test_exit_code();
	test_miss_and_hit();
	test_head_miss();
	test_revalidation();
	test_background_refresh();
	test_post_miss();
	h_finish(gw, 5000);
	return test_exit_code();
}
