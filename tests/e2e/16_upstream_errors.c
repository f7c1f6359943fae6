/* 16_upstream_errors — upstream trouble becomes a precise status, never a
 * hung client: refused → 502, no answer within upstream_response → 504,
 * reset / closed before a response → 502, every malformed response kind →
 * 502; and after each, the gateway still serves a good request. A scripted
 * upstream adds what reflex-origin will not do: interim 1xx and an unasked
 * 101, a 204 that sends the body it announced, an early 413 followed by a
 * reset. */
#include "lib/harness.h"

#include <curl/curl.h>
#include <stdlib.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

/* Above the origin's pacing step for rate= (it sends once a second). */
#define RESPONSE_MS 1500

static int gw_port, o_port, dead_port;

static long fetch(const char *path, struct h_resp *r)
{
	char u[512];
	struct h_req q = {.url = u, .timeout_ms = 8000};

	snprintf(u, sizeof(u), "http://127.0.0.1:%d%s", gw_port, path);
	h_http(&q, r);
	return r->status;
}

static void still_serving(const char *after)
{
	struct h_resp r;
	long st = fetch("/?size=64", &r);

	CHECK_MSG(st == 200 && r.body_bytes == 64 && r.curl_rc == 0,
		  "good request after %s: status %ld, %llu bytes, %s", after, st,
		  (unsigned long long)r.body_bytes, r.error);
	h_resp_free(&r);
}

static void expect_status(const char *name, const char *path, long want)
{
	struct h_resp r;

	test_begin(name);
	long st = fetch(path, &r);
	CHECK_MSG(st == want, "GET %s: status %ld, want %ld (%s) body '%s'", path, st, want,
		  r.error, h_excerpt(r.body, r.body_len, 200));
	if (st == want)
		CHECK_MSG(r.body_len > 0 && r.body_len < 512,
			  "error body should be a short text with the reason: %zu bytes",
			  r.body_len);
	h_resp_free(&r);
	still_serving(path);
	test_end();
}

static void test_hang(void)
{
	struct h_resp r;

	test_begin("upstream_hang_504");
	long st = fetch("/?hang=1", &r);
	CHECK_MSG(st == 504, "hang=1: status %ld, want 504 (%s) body '%s'", st, r.error,
		  h_excerpt(r.body, r.body_len, 200));
	CHECK_MSG(r.time_ms >= RESPONSE_MS - 100 && r.time_ms <= RESPONSE_MS + 2000,
		  "504 after %.0f ms; upstream_response is %d ms", r.time_ms, RESPONSE_MS);
	h_resp_free(&r);
	still_serving("hang=1");
	test_end();
}

/* upstream_response bounds the wait between upstream reads, not the whole
 * response: a slow start under the limit and a body that trickles for
 * longer than the limit (but never pauses that long) both succeed. */
static void test_slow_but_alive(void)
{
	struct h_resp r;

	test_begin("slow_but_alive_upstream_not_504");
	long st = fetch("/?delay=500&size=100", &r);
	CHECK_MSG(st == 200 && r.body_bytes == 100,
		  "delay=500 (< %d ms): status %ld, %llu bytes %s", RESPONSE_MS, st,
		  (unsigned long long)r.body_bytes, r.error);
	h_resp_free(&r);
	st = fetch("/?size=36000&rate=12000", &r);
	CHECK_MSG(st == 200 && r.body_bytes == 36000 && r.body_hash == h_pattern_hash(36000),
		  "body paced at 12000 B/s for ~3 s: status %ld, %llu bytes after %.0f ms %s", st,
		  (unsigned long long)r.body_bytes, r.time_ms, r.error);
	CHECK_MSG(r.time_ms >= 2000, "the paced body took only %.0f ms (origin not pacing?)",
		  r.time_ms);
	h_resp_free(&r);
	test_end();
}

static void test_malformed(const char *kind)
{
	char name[64], path[64];
	struct h_resp r;

	snprintf(name, sizeof(name), "malformed_%s_502", kind);
	snprintf(path, sizeof(path), "/?malformed=%s", kind);
	test_begin(name);
	long st = fetch(path, &r);
	if (!strcmp(kind, "short")) {
		/* The head was valid and may already be on its way to the client
		 * when the upstream closes early: then the only honest signal is
		 * a truncated body (the client must see an incomplete transfer). */
		bool truncated = st == 200 && r.curl_rc == CURLE_PARTIAL_FILE;
		CHECK_MSG(st == 502 || truncated,
			  "short body: status %ld curl %d (%s), %llu body bytes: want 502 or a "
			  "200 the client sees truncated",
			  st, r.curl_rc, r.error, (unsigned long long)r.body_bytes);
	} else {
		CHECK_MSG(st == 502, "malformed=%s: status %ld, want 502 (%s) body '%s'", kind, st,
			  r.error, h_excerpt(r.body, r.body_len, 200));
	}
	h_resp_free(&r);
	still_serving(path);
	test_end();
}

/* ---- a scripted upstream for what reflex-origin will not do ------------- */

static int script_port;
static int script_conns; /* connections the scripted upstream accepted */

/* Serves requests on one keep-alive connection; the path says how:
 *  /s/204body  a 204 announcing "Content-Length: 5", then those 5 bytes
 *              300 ms later (a reused connection would read them as the
 *              next response);
 *  /s/early413  (a POST) 413 with Connection: close at once, then a close
 *              with the body unread, which resets the connection;
 *  /s/interim  100 and 103 (Early Hints), then 200 "ok";
 *  /s/101      a 101 Switching Protocols nobody asked for;
 *  anything else: 200 "ok". */
static void *script_serve(void *arg)
{
	int c = (int)(intptr_t)arg;
	char buf[8192];
	size_t len = 0;

	__atomic_add_fetch(&script_conns, 1, __ATOMIC_RELAXED);
	for (;;) {
		ssize_t n = recv(c, buf + len, sizeof(buf) - len - 1, 0);
		if (n <= 0)
			break;
		len += (size_t)n;
		buf[len] = 0;
		char *e;
		while ((e = strstr(buf, "\r\n\r\n"))) {
			size_t head = (size_t)(e + 4 - buf);
			if (!strncmp(buf, "POST /s/early413 ", 17)) {
				h_send_str(c, "HTTP/1.1 413 Too Big\r\nContent-Length: 4\r\n"
					      "Connection: close\r\n\r\nbig!");
				goto out;
			}
			if (!strncmp(buf, "GET /s/interim ", 15))
				h_send_str(c, "HTTP/1.1 100 Continue\r\n\r\n"
					      "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; "
					      "rel=preload\r\n\r\n");
			if (!strncmp(buf, "GET /s/101 ", 11)) {
				h_send_str(
					c,
					"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
					"Connection: Upgrade\r\n\r\n");
			} else if (!strncmp(buf, "GET /s/204body ", 15)) {
				h_send_str(c,
					   "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n");
				h_sleep_ms(300);
				h_send_str(c, "hello");
			} else {
				h_send_str(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
			}
			memmove(buf, buf + head, len - head + 1);
			len -= head;
		}
	}
out:
	close(c);
	return NULL;
}

static void zeros(char *buf, size_t len, uint64_t offset, void *arg)
{
	(void)offset;
	(void)arg;
	memset(buf, 0, len);
}

/* An upstream that answers a large upload early and closes without reading
 * it: the reset that follows fails the gateway's send, and the answer that
 * came before it must still reach the client (a 502 "reset" lost it in
 * about one try in ten). */
static void test_early_answer_then_reset(void)
{
	char u[256];
	int bad = 0;
	long last = 0;

	test_begin("upstream_early_413_then_reset_relayed");
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/s/early413", gw_port);
	for (int i = 0; i < 100; i++) {
		struct h_resp r;
		struct h_req q = {.url = u,
				  .method = "POST",
				  .gen = zeros,
				  .gen_len = 900000,
				  .no_expect = true,
				  .timeout_ms = 5000};
		h_http(&q, &r);
		if (r.status != 413) {
			bad++;
			last = r.status;
		}
		h_resp_free(&r);
	}
	CHECK_MSG(bad == 0, "%d of 100 uploads answered early got another status (last %ld)", bad,
		  last);
	test_end();
}

/* Interim responses from the upstream are not relayed (the gateway answers
 * Expect itself); a 101 nobody asked for is a 502. */
static void test_interim(void)
{
	char req[256];
	struct h_buf b = {0};
	int codes[4], n;

	test_begin("upstream_1xx_dropped_101_refused");
	snprintf(req, sizeof(req),
		 "GET /s/interim HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
	h_raw_roundtrip("127.0.0.1", gw_port, req, strlen(req), &b, 5000);
	n = h_statuses(b.data ? b.data : "", b.len, codes, 4);
	CHECK_MSG(n == 1 && codes[0] == 200, "100 + 103 + 200 upstream: the client saw '%s'",
		  h_excerpt(b.data, b.len, 300));
	h_buf_free(&b);
	snprintf(req, sizeof(req), "GET /s/101 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
	h_raw_roundtrip("127.0.0.1", gw_port, req, strlen(req), &b, 5000);
	n = h_statuses(b.data ? b.data : "", b.len, codes, 4);
	CHECK_MSG(n == 1 && codes[0] == 502, "unasked 101 upstream: the client saw '%s'",
		  h_excerpt(b.data, b.len, 300));
	h_buf_free(&b);
	test_end();
}

/* A 204 that announces a body: the client gets the 204, and the bytes the
 * upstream sends after it never reach the next request that would reuse
 * the connection. */
static void test_204_with_body(void)
{
	char u[256];
	struct h_resp r;
	struct h_req q = {.url = u, .timeout_ms = 5000};

	test_begin("upstream_204_with_body_not_reused");
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/s/204body", gw_port);
	h_http(&q, &r);
	CHECK_MSG(r.status == 204 && r.body_len == 0, "204 with a body: status %ld, %zu bytes (%s)",
		  r.status, r.body_len, r.error);
	h_resp_free(&r);
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/s/next", gw_port);
	h_http(&q, &r);
	CHECK_MSG(r.status == 200 && r.body_len == 2 && !memcmp(r.body, "ok", 2),
		  "the request after it: status %ld, body '%s' (%s)", r.status,
		  h_excerpt(r.body, r.body_len, 200), r.error);
	h_resp_free(&r);
	test_end();
}

int main(void)
{
	static const char *kinds[] = {"status", "cl", "cl_te", "injection", "chunk", "lf", "short"};

	h_init("16_upstream_errors", 90);
	gw_port = h_free_port();
	o_port = h_free_port();
	dead_port = h_free_port(); /* nothing listens there */
	if (!h_start_origin("origin", o_port, 1)) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	if (h_serve_tcp(script_serve, &script_port)) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "the scripted upstream did not start");
		return test_exit_code();
	}
	const char *cfg = h_write_config(
		"workers: 1\n"
		"listen: [\"127.0.0.1:%d\"]\n"
		"upstream: [\"127.0.0.1:%d\"]\n"
		"timeouts: {upstream_connect: 1s, upstream_response: %dms, drain: 1s}\n"
		"pools:\n"
		"  dead: {endpoints: [\"127.0.0.1:%d\"]}\n"
		"  script: {endpoints: [\"127.0.0.1:%d\"]}\n"
		"routes:\n"
		"  - {path_prefix: /dead/, pool: dead}\n"
		"  - {path_prefix: /s/, pool: script}\n",
		gw_port, o_port, RESPONSE_MS, dead_port, script_port);
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start (config %s)", cfg);
		return test_exit_code();
	}
	expect_status("upstream_refused_502", "/dead/x", 502);
	test_hang();
	test_slow_but_alive();
	expect_status("upstream_reset_502", "/?reset=1", 502);
	expect_status("upstream_drop_502", "/?drop=1", 502);
	for (unsigned i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		test_malformed(kinds[i]);

	test_interim();
	test_204_with_body();
	test_early_answer_then_reset();

	test_begin("gateway_still_serving");
	for (int i = 0; i < 5; i++)
		still_serving("all upstream errors");
	test_end();
	h_finish(gw, 5000);
	return test_exit_code();
}
