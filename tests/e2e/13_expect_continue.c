/* 13_expect_continue — reflexd answers "Expect: 100-continue" itself: the
 * interim "HTTP/1.1 100 Continue" comes before the client sends the body,
 * Expect is not forwarded, the final response follows; a Content-Length over
 * the body limit gets 413 without any 100 and nothing reaches the origin. */
#include "lib/harness.h"

#include <stdlib.h>
#include <unistd.h>

static int gw_port, o_port;

static void test_continue(void)
{
	struct h_buf b = {0};
	struct h_raw_resp rr[4];
	struct h_echo e;
	int fd, k;

	test_begin("expect_100_continue");
	fd = h_connect("127.0.0.1", gw_port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd < 0)
		goto out;
	h_send_str(fd, "POST /echo HTTP/1.1\r\n"
		       "Host: x\r\n"
		       "Content-Length: 10\r\n"
		       "Expect: 100-continue\r\n"
		       "Connection: close\r\n"
		       "\r\n");
	/* Nothing of the body has been sent: the 100 must come anyway. */
	enum h_read_end end = h_read_until(fd, &b, "\r\n\r\n", 3000);
	CHECK_MSG(end == H_READ_DONE, "waiting for 100 Continue: read ended %s, got '%s'",
		  h_read_end_name(end), h_excerpt(b.data, b.len, 200));
	CHECK_MSG(b.len >= 25 && !memcmp(b.data, "HTTP/1.1 100 Continue\r\n", 23),
		  "first bytes '%s', want 'HTTP/1.1 100 Continue\\r\\n'",
		  h_excerpt(b.data, b.len, 200));
	h_send_str(fd, "0123456789");
	end = h_read_all(fd, &b, 5000, 0);
	CHECK_MSG(end == H_READ_CLOSED, "final response: read ended %s", h_read_end_name(end));
	close(fd);
	k = h_parse_responses(b.data ? b.data : "", b.len, rr, 4, NULL);
	CHECK_MSG(k >= 2 && rr[0].status == 100 && rr[k - 1].status == 200,
		  "statuses: %d responses, stream '%s'", k, h_excerpt(b.data, b.len, 400));
	for (int i = 1; i < k - 1; i++)
		CHECK_MSG(rr[i].status == 100, "response %d between 100 and the final: %d", i,
			  rr[i].status);
	if (k >= 2 && rr[k - 1].status == 200 &&
	    h_echo_parse(rr[k - 1].body, rr[k - 1].body_len, &e) == 0) {
		char want[17];

		CHECK_MSG(!h_echo_header(&e, "Expect"), "Expect '%s' was forwarded upstream",
			  h_echo_header(&e, "Expect"));
		CHECK_MSG(e.body_bytes == 10, "origin body_bytes %lld, want 10", e.body_bytes);
		CHECK_MSG(!strcasecmp(e.body_hash,
				      h_hex64(h_fnv1a(H_FNV_INIT, "0123456789", 10), want)),
			  "origin body_hash %s, want %s", e.body_hash, want);
		h_echo_free(&e);
	}
	h_raw_resp_free(rr, k);
out:
	h_buf_free(&b);
	test_end();
}

static void test_over_limit(void)
{
	struct h_buf b = {0};
	struct h_origin_stats s0, s1;
	struct h_raw_resp rr[4];
	int fd, k;

	test_begin("expect_over_limit_413_without_100");
	CHECK(h_origin_stats(o_port, &s0) == 0);
	fd = h_connect("127.0.0.1", gw_port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd < 0)
		goto out;
	h_send_str(fd, "POST /echo HTTP/1.1\r\n"
		       "Host: x\r\n"
		       "Content-Length: 2000000\r\n"
		       "Expect: 100-continue\r\n"
		       "\r\n");
	enum h_read_end end = h_read_all(fd, &b, 4000, 0);
	close(fd);
	CHECK_MSG(end == H_READ_CLOSED, "read ended %s (want the gateway to close)",
		  h_read_end_name(end));
	k = h_parse_responses(b.data ? b.data : "", b.len, rr, 4, NULL);
	CHECK_MSG(k >= 1 && rr[0].status == 413, "first response %d, want 413; stream '%s'",
		  k >= 1 ? rr[0].status : -1, h_excerpt(b.data, b.len, 300));
	/* the status line itself: " 100 " alone could be part of a header value */
	CHECK_MSG(!memmem(b.data ? b.data : "", b.len, "HTTP/1.1 100 ", 13),
		  "a 100 Continue was sent for an over-limit body: '%s'",
		  h_excerpt(b.data, b.len, 300));
	h_raw_resp_free(rr, k);
	CHECK(h_origin_stats(o_port, &s1) == 0);
	CHECK_MSG(s1.requests == s0.requests, "origin served %ld requests for a refused one",
		  s1.requests - s0.requests);
out:
	h_buf_free(&b);
	test_end();
}

/* libcurl sends Expect: 100-continue itself for larger POSTs. */
static void test_curl_expect(void)
{
	const size_t n = 600000;
	char *body = malloc(n), u[256], hash[64] = "", want[17];
	struct h_resp r;

	test_begin("curl_post_with_expect");
	for (size_t i = 0; i < n; i++)
		body[i] = (char)(i * 7 + 3);
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/", gw_port);
	const char *hx[] = {"Expect: 100-continue", NULL};
	struct h_req q = {.url = u, .method = "POST", .body = body, .body_len = n, .headers = hx};
	CHECK_MSG(h_http(&q, &r) == 0, "%s", r.error);
	CHECK_INT(r.status, 200);
	printf("  curl POST of %zu bytes with Expect: %.0f ms\n", n, r.time_ms);
	CHECK_MSG(h_resp_header(&r, "X-Body-Hash", hash, sizeof(hash)) &&
			  !strcasecmp(hash, h_hex64(h_fnv1a(H_FNV_INIT, body, n), want)),
		  "X-Body-Hash '%s', local %s", hash, want);
	h_resp_free(&r);
	free(body);
	test_end();
}

int main(void)
{
	h_init("13_expect_continue", 60);
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
					 "limits: {body: 1m}\n"
					 "timeouts: {drain: 1s, body: 3s}\n",
					 gw_port, o_port);
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start (config %s)", cfg);
		return test_exit_code();
	}
	test_continue();
	test_over_limit();
	test_curl_expect();
	h_finish(gw, 5000);
	return test_exit_code();
}
