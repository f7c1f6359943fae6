/* 14_limits_malformed — every request reflexd must refuse, sent on a raw
 * socket: the precise status, a short text body, the connection closed
 * afterwards, and nothing forwarded (the origin's request counter does not
 * move). A well-formed control request before and after proves the path
 * works and that the counter would have moved. */
#include "lib/harness.h"

#include <stdlib.h>
#include <unistd.h>

#define BODY_LIMIT 65536

static int gw_port, o_port;

struct bad_case {
	const char *name;
	int status;
	char *req; /* malloc'd */
	size_t len;
};

static struct bad_case cases[48];
static int n_cases;

static void add(const char *name, int status, const char *req, size_t len)
{
	struct bad_case *c = &cases[n_cases++];

	c->name = name;
	c->status = status;
	c->req = malloc(len);
	memcpy(c->req, req, len);
	c->len = len;
}

#define ADD_LIT(name, status, lit) add(name, status, lit, sizeof(lit) - 1)

static void build_cases(void)
{
	struct h_buf b = {0};
	char line[256];

	/* Request line over 8 KiB. */
	b.data = malloc(20000);
	b.len = (size_t)sprintf(b.data, "GET /");
	memset(b.data + b.len, 'a', 9000);
	b.len += 9000;
	b.len += (size_t)sprintf(b.data + b.len, " HTTP/1.1\r\nHost: x\r\n\r\n");
	add("request_line_over_8k_414", 414, b.data, b.len);
	free(b.data);

	/* Head over 32 KiB in 40 fields (under the count limit). */
	b.data = malloc(64000);
	b.len = (size_t)sprintf(b.data, "GET / HTTP/1.1\r\nHost: x\r\n");
	for (int i = 0; i < 40; i++) {
		b.len += (size_t)sprintf(b.data + b.len, "X-Big-%02d: ", i);
		memset(b.data + b.len, 'v', 1000);
		b.len += 1000;
		b.len += (size_t)sprintf(b.data + b.len, "\r\n");
	}
	b.len += (size_t)sprintf(b.data + b.len, "\r\n");
	add("head_over_32k_431", 431, b.data, b.len);
	free(b.data);

	/* 101 header fields (small head). */
	b.data = malloc(8000);
	b.len = (size_t)sprintf(b.data, "GET / HTTP/1.1\r\nHost: x\r\n");
	for (int i = 0; i < 100; i++)
		b.len += (size_t)sprintf(b.data + b.len, "X-H%d: %d\r\n", i, i);
	b.len += (size_t)sprintf(b.data + b.len, "\r\n");
	add("101_headers_431", 431, b.data, b.len);
	free(b.data);

	/* Body over the limit, announced by Content-Length (no body sent). */
	snprintf(line, sizeof(line), "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n",
		 BODY_LIMIT * 2);
	add("content_length_over_limit_413", 413, line, strlen(line));

	/* Body over the limit, chunked: 24 chunks of 4 KiB = 96 KiB > 64 KiB. */
	b.data = malloc(120000);
	b.len = (size_t)sprintf(b.data,
				"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 24; i++) {
		b.len += (size_t)sprintf(b.data + b.len, "1000\r\n");
		memset(b.data + b.len, 'c', 4096);
		b.len += 4096;
		b.len += (size_t)sprintf(b.data + b.len, "\r\n");
	}
	b.len += (size_t)sprintf(b.data + b.len, "0\r\n\r\n");
	add("chunked_over_limit_413", 413, b.data, b.len);
	free(b.data);

	ADD_LIT("content_length_with_transfer_encoding_400", 400,
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
		"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
	ADD_LIT("differing_content_lengths_400", 400,
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"
		"hello!");
	ADD_LIT("content_length_not_a_number_400", 400,
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\nh");
	ADD_LIT("content_length_negative_400", 400,
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n");
	ADD_LIT("gzip_chunked_501", 501,
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
	/* Framing that upstreams read differently (request smuggling). */
	ADD_LIT("content_length_underscore_400", 400,
		"GET / HTTP/1.1\r\nHost: x\r\nContent_Length: 35\r\n\r\n"
		"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
	ADD_LIT("transfer_encoding_underscore_400", 400,
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
		"Transfer_Encoding: chunked\r\n\r\n0\r\n\r\n");
	ADD_LIT("chunked_chunked_400", 400,
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"
		"0\r\n\r\n");
	ADD_LIT("transfer_encoding_http10_400", 400,
		"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
	ADD_LIT("content_length_plus_400", 400,
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello");
	ADD_LIT("chunk_size_overflow_400", 400,
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
		"10000000000000005\r\nhello\r\n0\r\n\r\n");
	ADD_LIT("bare_lf_400", 400, "GET / HTTP/1.1\r\nHost: x\nX-A: a\r\n\r\n");
	ADD_LIT("bare_cr_400", 400, "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n");
	ADD_LIT("obs_fold_400", 400, "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n  folded\r\n\r\n");
	ADD_LIT("space_before_colon_400", 400, "GET / HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n");
	ADD_LIT("invalid_chunk_size_400", 400,
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
		"zz\r\nhello\r\n0\r\n\r\n");
	ADD_LIT("invalid_chunk_extension_400", 400,
		"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
		"5;ex\x01t=1\r\nhello\r\n0\r\n\r\n");
	ADD_LIT("nul_in_target_400", 400, "GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n");
	ADD_LIT("control_in_target_400", 400,
		"GET /a\x7f"
		"b HTTP/1.1\r\nHost: x\r\n\r\n");
	ADD_LIT("nul_in_header_value_400", 400, "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\0b\r\n\r\n");
	ADD_LIT("control_in_header_value_400", 400,
		"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01"
		"b\r\n\r\n");
	ADD_LIT("missing_host_http11_400", 400, "GET / HTTP/1.1\r\nX-A: a\r\n\r\n");
	ADD_LIT("duplicate_host_400", 400, "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
	ADD_LIT("connect_501", 501,
		"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
	ADD_LIT("upgrade_501", 501,
		"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
	ADD_LIT("http20_505", 505, "GET / HTTP/2.0\r\nHost: x\r\n\r\n");
	ADD_LIT("expect_unknown_417", 417,
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: foo\r\n\r\nhello");
}

static void control_request(const char *when)
{
	static const char req[] = "GET /?size=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
	struct h_buf b = {0};
	long before = h_origin_requests(o_port);
	char name[64];

	snprintf(name, sizeof(name), "control_request_%s", when);
	test_begin(name);
	h_raw_roundtrip("127.0.0.1", gw_port, req, sizeof(req) - 1, &b, 5000);
	int code = 0;
	h_statuses(b.data ? b.data : "", b.len, &code, 1);
	CHECK_MSG(code == 200, "well-formed request: '%s'", h_excerpt(b.data, b.len, 200));
	CHECK_MSG(h_origin_requests(o_port) == before + 1, "origin counter %ld -> %ld for one request",
		  before, h_origin_requests(o_port));
	h_buf_free(&b);
	test_end();
}

static void run_case(const struct bad_case *c)
{
	struct h_buf b = {0};
	struct h_raw_resp rr[2];
	long before = h_origin_requests(o_port);

	test_begin(c->name);
	enum h_read_end end = h_raw_roundtrip("127.0.0.1", gw_port, c->req, c->len, &b, 3000);
	int k = h_parse_responses(b.data ? b.data : "", b.len, rr, 2, NULL);
	int status = k >= 1 ? rr[0].status : -1;

	CHECK_MSG(status == c->status, "status %d, want %d; read ended %s; got '%s'", status,
		  c->status, h_read_end_name(end), h_excerpt(b.data, b.len, 300));
	CHECK_MSG(end == H_READ_CLOSED,
		  "connection not closed cleanly after the refusal: read ended %s",
		  h_read_end_name(end));
	if (k >= 1 && status == c->status) {
		char conn[64] = "";

		CHECK_MSG(k == 1, "%d responses to one bad request", k);
		CHECK_MSG(rr[0].body_len > 0 && rr[0].body_len < 512,
			  "error body should be a short text naming the reason, got %zu bytes '%s'",
			  rr[0].body_len, h_excerpt(rr[0].body, rr[0].body_len, 100));
		if (c->status == 400)
			CHECK_MSG(h_head_header(rr[0].head, "Connection", conn, sizeof(conn)) &&
					  !strcasecmp(conn, "close"),
				  "400 without 'Connection: close' (got '%s')", conn);
	}
	/* Give a half-forwarded request time to show up at the origin. */
	h_sleep_ms(50);
	long after = h_origin_requests(o_port);
	CHECK_MSG(after == before, "origin served %ld request(s) for it (counter %ld -> %ld)",
		  after - before, before, after);
	h_raw_resp_free(rr, k);
	h_buf_free(&b);
	test_end();
}

int main(void)
{
	h_init("14_limits_malformed", 120);
	gw_port = h_free_port();
	o_port = h_free_port();
	if (!h_start_origin("origin", o_port, 1)) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	const char *cfg = h_write_config(
		"workers: 1\n"
		"listen: [\"127.0.0.1:%d\"]\n"
		"upstream: [\"127.0.0.1:%d\"]\n"
		"limits: {request_line: 8k, header_bytes: 32k, header_count: 100, body: 64k}\n"
		"timeouts: {drain: 1s, header: 2s, body: 2s}\n",
		gw_port, o_port);
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start (config %s)", cfg);
		return test_exit_code();
	}
	build_cases();
	control_request("before");
	for (int i = 0; i < n_cases; i++)
		run_case(&cases[i]);
	control_request("after");
	h_finish(gw, 5000);
	for (int i = 0; i < n_cases; i++)
		free(cases[i].req);
	return test_exit_code();
}
