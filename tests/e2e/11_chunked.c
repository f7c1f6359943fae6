/* 11_chunked — chunked framing through reflexd: a chunked request body stays
 * chunked upstream (byte-exact), chunked responses stay chunked for 1.1
 * clients and are de-chunked for 1.0 clients, close-delimited upstream bodies
 * arrive complete (chunked to 1.1 clients), and request trailers are consumed
 * without breaking the connection's framing. */
#include "lib/harness.h"

#include <stdlib.h>
#include <unistd.h>

static int gw_port, o_port;

static void gen_bytes(char *buf, size_t len, uint64_t off, void *arg)
{
	/* Not the origin pattern, so an echo of the wrong thing cannot match. */
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)(((off + i) * 2654435761u) >> 13);
}

static void test_chunked_request(void)
{
	char u[256];
	struct h_resp r;
	struct h_echo e;
	const uint64_t n = 300000;
	struct h_req q = {.url = u,
			  .method = "POST",
			  .gen = gen_bytes,
			  .gen_len = n,
			  .chunked = true,
			  .no_expect = true};

	test_begin("chunked_request_stays_chunked");
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/echo", gw_port);
	CHECK_MSG(h_http(&q, &r) == 0, "%s", r.error);
	CHECK_MSG(r.status == 200, "status %ld body '%s'", r.status,
		  h_excerpt(r.body, r.body_len, 200));
	CHECK_INT(r.upload_bytes, n);
	if (r.status == 200 && h_echo_parse(r.body, r.body_len, &e) == 0) {
		const char *te = h_echo_header(&e, "Transfer-Encoding");
		const char *cl = h_echo_header(&e, "Content-Length");
		char want[17];

		CHECK_MSG(te && strcasestr(te, "chunked"), "origin saw Transfer-Encoding '%s'",
			  te ? te : "(none)");
		CHECK_MSG(!cl, "origin saw Content-Length '%s' on a chunked request", cl);
		CHECK_MSG(e.body_bytes == (long long)n, "origin body_bytes %lld, sent %llu",
			  e.body_bytes, (unsigned long long)n);
		CHECK_MSG(!strcasecmp(e.body_hash, h_hex64(r.upload_hash, want)),
			  "origin body_hash %s, sent %s", e.body_hash, want);
		h_echo_free(&e);
	} else if (r.status == 200) {
		test_fail(__FILE__, __LINE__, "unparsable echo");
	}
	h_resp_free(&r);
	test_end();
}

/* Send one raw request, read until close, parse the single response. */
static int raw(const char *req, size_t len, struct h_raw_resp *rr, int max, const char *what)
{
	struct h_buf b = {0};
	enum h_read_end end = h_raw_roundtrip("127.0.0.1", gw_port, req, len, &b, 8000);
	int n = h_parse_responses(b.data ? b.data : "", b.len, rr, max, NULL);

	if (end != H_READ_CLOSED)
		test_fail(__FILE__, __LINE__, "%s: read ended %s (want the server to close)", what,
			  h_read_end_name(end));
	if (n < 1)
		test_fail(__FILE__, __LINE__, "%s: no response: '%s'", what,
			  h_excerpt(b.data, b.len, 300));
	h_buf_free(&b);
	return n;
}

static void test_chunked_response_11(void)
{
	char req[256];
	struct h_raw_resp rr[2];
	const size_t n = 100000;

	test_begin("chunked_response_to_http11");
	snprintf(req, sizeof(req),
		 "GET /?size=%zu&chunked=1&chunk=1000 HTTP/1.1\r\nHost: x\r\nConnection: "
		 "close\r\n\r\n",
		 n);
	int k = raw(req, strlen(req), rr, 2, "chunked 1.1");
	if (k >= 1) {
		CHECK_INT(rr[0].status, 200);
		CHECK_MSG(rr[0].chunked, "response not chunked to a 1.1 client; head:\n%s",
			  rr[0].head);
		CHECK_MSG(rr[0].complete, "chunked body incomplete (%zu bytes decoded)",
			  rr[0].body_len);
		CHECK_INT(rr[0].body_len, n);
		CHECK_MSG(h_fnv1a(H_FNV_INIT, rr[0].body, rr[0].body_len) == h_pattern_hash(n),
			  "de-chunked body differs from the origin pattern");
		CHECK_MSG(!h_head_header(rr[0].head, "Content-Length", NULL, 0),
			  "both chunked and Content-Length in the response");
	}
	h_raw_resp_free(rr, k);
	test_end();
}

static void test_chunked_response_10(void)
{
	char req[256], te[128] = "";
	struct h_raw_resp rr[2];
	const size_t n = 100000;

	test_begin("chunked_response_dechunked_for_http10");
	snprintf(req, sizeof(req), "GET /?size=%zu&chunked=1&chunk=1000 HTTP/1.0\r\n\r\n", n);
	int k = raw(req, strlen(req), rr, 2, "chunked 1.0");
	if (k >= 1) {
		CHECK_INT(rr[0].status, 200);
		CHECK_MSG(!h_head_header(rr[0].head, "Transfer-Encoding", te, sizeof(te)),
			  "Transfer-Encoding '%s' sent to a 1.0 client", te);
		CHECK_MSG(rr[0].body_len == n, "1.0 client got %zu body bytes, want %zu",
			  rr[0].body_len, n);
		CHECK_MSG(h_fnv1a(H_FNV_INIT, rr[0].body, rr[0].body_len) == h_pattern_hash(n),
			  "body differs from the origin pattern (still chunk-framed?) '%s'",
			  h_excerpt(rr[0].body, rr[0].body_len, 40));
	}
	h_raw_resp_free(rr, k);
	test_end();
}

static void test_close_delimited(void)
{
	char req[512];
	struct h_raw_resp rr[3];
	const size_t n = 200000;

	test_begin("close_delimited_upstream_body");
	/* 1.1 client: must be framed (chunked) since the gateway keeps the
	 * client connection; a second pipelined request proves the framing. */
	snprintf(req, sizeof(req),
		 "GET /?size=%zu&close=1 HTTP/1.1\r\nHost: x\r\n\r\n"
		 "GET /?size=7 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
		 n);
	int k = raw(req, strlen(req), rr, 3, "close-delimited 1.1");
	if (k >= 1) {
		CHECK_INT(rr[0].status, 200);
		CHECK_MSG(rr[0].chunked,
			  "close-delimited body not chunked to a 1.1 client; head:\n%s",
			  rr[0].head);
		CHECK_MSG(rr[0].body_len == n, "1.1 client got %zu bytes, want %zu", rr[0].body_len,
			  n);
		CHECK_MSG(h_fnv1a(H_FNV_INIT, rr[0].body, rr[0].body_len) == h_pattern_hash(n),
			  "body differs from the origin pattern");
	}
	CHECK_MSG(k == 2 && rr[1].status == 200 && rr[1].body_len == 7,
		  "second request on the connection: %d responses, second status %d len %zu", k,
		  k >= 2 ? rr[1].status : -1, k >= 2 ? rr[1].body_len : 0);
	h_raw_resp_free(rr, k);

	/* 1.0 client: close-delimited is fine, but the body must be complete. */
	snprintf(req, sizeof(req), "GET /?size=%zu&close=1 HTTP/1.0\r\n\r\n", n);
	k = raw(req, strlen(req), rr, 2, "close-delimited 1.0");
	if (k >= 1) {
		CHECK_INT(rr[0].status, 200);
		CHECK_MSG(rr[0].body_len == n, "1.0 client got %zu bytes, want %zu", rr[0].body_len,
			  n);
		CHECK_MSG(h_fnv1a(H_FNV_INIT, rr[0].body, rr[0].body_len) == h_pattern_hash(n),
			  "body differs from the origin pattern");
	}
	h_raw_resp_free(rr, k);
	test_end();
}

static void test_trailers(void)
{
	static const char req[] = "POST /echo HTTP/1.1\r\n"
				  "Host: x\r\n"
				  "Transfer-Encoding: chunked\r\n"
				  "\r\n"
				  "5;name=value\r\nhello\r\n"
				  "6\r\n world\r\n"
				  "0\r\n"
				  "X-Trailer-One: t1\r\n"
				  "X-Trailer-Two: t2\r\n"
				  "\r\n"
				  "GET /echo?second=1 HTTP/1.1\r\n"
				  "Host: x\r\n"
				  "Connection: close\r\n"
				  "\r\n";
	struct h_raw_resp rr[3];
	struct h_echo e;
	char want[17];

	test_begin("request_trailers");
	int k = raw(req, sizeof(req) - 1, rr, 3, "trailers");
	CHECK_MSG(k == 2, "%d responses, want 2", k);
	if (k >= 1) {
		CHECK_MSG(rr[0].status == 200, "chunked POST with trailers: status %d body '%s'",
			  rr[0].status, h_excerpt(rr[0].body, rr[0].body_len, 200));
		if (rr[0].status == 200 && h_echo_parse(rr[0].body, rr[0].body_len, &e) == 0) {
			CHECK_MSG(e.body_bytes == 11, "origin body_bytes %lld, want 11",
				  e.body_bytes);
			CHECK_MSG(
				!strcasecmp(e.body_hash,
					    h_hex64(h_fnv1a(H_FNV_INIT, "hello world", 11), want)),
				"origin body_hash %s, want %s", e.body_hash, want);
			h_echo_free(&e);
		}
	}
	if (k >= 2) {
		CHECK_INT(rr[1].status, 200);
		if (rr[1].status == 200 && h_echo_parse(rr[1].body, rr[1].body_len, &e) == 0) {
			CHECK_STR(e.target, "/echo?second=1");
			h_echo_free(&e);
		}
	}
	h_raw_resp_free(rr, k);
	test_end();
}

/* Responses without a body even though their framing headers say
 * otherwise: HEAD of a chunked / close-delimited resource, 204 and 304. The
 * gateway must not wait for a body, and the next pipelined response on the
 * same connection must come out intact. */
static void test_bodyless(void)
{
	static const char req[] = "HEAD /?size=5000&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n"
				  "GET /?size=11 HTTP/1.1\r\nHost: x\r\n\r\n"
				  "HEAD /?size=5000&close=1 HTTP/1.1\r\nHost: x\r\n\r\n"
				  "GET /?size=12 HTTP/1.1\r\nHost: x\r\n\r\n"
				  "GET /?status=204 HTTP/1.1\r\nHost: x\r\n\r\n"
				  "GET /?size=13 HTTP/1.1\r\nHost: x\r\n\r\n"
				  "GET /?status=304&etag=%22v1%22 HTTP/1.1\r\nHost: x\r\n\r\n"
				  "GET /?size=14 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	static const bool is_head[] = {true, false, true, false, false, false, false, false};
	static const int want_status[] = {200, 200, 200, 200, 204, 200, 304, 200};
	static const size_t want_len[] = {0, 11, 0, 12, 0, 13, 0, 14};
	struct h_buf b = {0};
	struct h_raw_resp rr[10];

	test_begin("head_204_304_keep_framing");
	enum h_read_end end = h_raw_roundtrip("127.0.0.1", gw_port, req, sizeof(req) - 1, &b, 8000);
	int k = h_parse_responses(b.data ? b.data : "", b.len, rr, 10, is_head);
	CHECK_MSG(end == H_READ_CLOSED, "read ended %s", h_read_end_name(end));
	CHECK_MSG(k == 8, "%d responses to 8 pipelined requests: '%s'", k,
		  h_excerpt(b.data, b.len, 400));
	for (int i = 0; i < k && i < 8; i++)
		CHECK_MSG(rr[i].status == want_status[i] && rr[i].complete &&
				  rr[i].body_len == want_len[i],
			  "response %d: status %d (want %d), %zu body bytes (want %zu), head '%s'",
			  i, rr[i].status, want_status[i], rr[i].body_len, want_len[i],
			  h_excerpt(rr[i].head, strlen(rr[i].head), 200));
	h_raw_resp_free(rr, k);
	h_buf_free(&b);
	test_end();
}

int main(void)
{
	h_init("11_chunked", 60);
	gw_port = h_free_port();
	o_port = h_free_port();
	if (!h_start_origin("origin", o_port, 1)) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	const char *cfg = h_write_config("workers: 1\n"
					 "listen: [\"127.0.0.1:%d\"]\n"
					 "upstream: [\"127.0.0.1:%d\"]\n"
					 "limits: {body: 4m}\n"
					 "timeouts: {drain: 1s}\n",
					 gw_port, o_port);
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start (config %s)", cfg);
		return test_exit_code();
	}
	test_chunked_request();
	test_chunked_response_11();
	test_chunked_response_10();
	test_close_delimited();
	test_trailers();
	test_bodyless();
	h_finish(gw, 5000);
	return test_exit_code();
}
