/* 54_tls_stream — what the plain-TCP scenarios check about streaming holds
 * over TLS too: an 8 MiB download and an 8 MiB upload arrive whole (count
 * and FNV-1a), three pipelined requests in one TLS record get three
 * responses in order, an SSE stream arrives event by event (not buffered
 * until the end), and a streamed keep-alive connection serves many
 * requests. */
#include "50_tls.h"

#define BIG (8u << 20)

static int gw_port, o_port;
static struct h_proc *gw;

static void test_bodies(void)
{
	char u[256];
	struct tls_get g;

	test_begin("tls_download_8m");
	snprintf(u, sizeof(u), "https://127.0.0.1:%d/?size=%u", gw_port, BIG);
	struct tls_opt o = {.timeout_ms = 60000};
	CHECK_MSG(tls_curl1(u, &o, &g) == 0 && g.status == 200, "rc %d (%s) %ld", g.rc, g.err,
		  g.status);
	CHECK_INT(g.bytes, BIG);
	CHECK_MSG(g.hash == h_pattern_hash(BIG), "download hash differs");
	tls_get_free(&g);
	test_end();

	test_begin("tls_upload_8m");
	snprintf(u, sizeof(u), "https://127.0.0.1:%d/echo", gw_port);
	o.upload = BIG;
	CHECK_MSG(tls_curl1(u, &o, &g) == 0 && g.status == 200, "rc %d (%s) %ld", g.rc, g.err,
		  g.status);
	struct h_echo e;
	char want[17];
	if (g.body && h_echo_parse(g.body, g.len, &e) == 0) {
		CHECK_INT(e.body_bytes, BIG);
		CHECK_STR(e.body_hash, h_hex64(h_pattern_hash(BIG), want));
		h_echo_free(&e);
	} else {
		CHECK_MSG(false, "no /echo answer");
	}
	tls_get_free(&g);
	test_end();
}

static void test_pipeline(void)
{
	struct tls_cli c;
	struct h_buf b = {0};
	char req[1024];
	int n = 0;

	test_begin("tls_pipelining");
	CHECK(tls_cli_open(&c, gw_port, "www.example.com") == 0);
	for (int i = 1; i <= 3; i++)
		n += snprintf(req + n, sizeof(req) - n,
			      "GET /?size=%d HTTP/1.1\r\nHost: x\r\n%s\r\n", i * 100,
			      i == 3 ? "Connection: close\r\n" : "");
	if (c.ssl) {
		CHECK(tls_cli_send(&c, req, (size_t)n) == 0);
		int got = tls_cli_read_responses(&c, &b, 3, 10000);
		CHECK_INT(got, 3);
		struct h_raw_resp rs[3];
		int k = h_parse_responses(b.data ? b.data : "", b.len, rs, 3, NULL);
		for (int i = 0; i < k; i++) {
			CHECK_INT(rs[i].status, 200);
			CHECK_INT(rs[i].body_len, (i + 1) * 100);
		}
		h_raw_resp_free(rs, k);
	}
	tls_cli_close(&c);
	h_buf_free(&b);
	test_end();
}

static void test_sse(void)
{
	char u[256];
	struct tls_get g;

	test_begin("tls_sse_event_by_event");
	snprintf(u, sizeof(u), "https://127.0.0.1:%d/?sse=5&interval=300", gw_port);
	CHECK_MSG(tls_curl1(u, NULL, &g) == 0 && g.status == 200, "rc %d (%s) %ld", g.rc, g.err,
		  g.status);
	CHECK_MSG(g.body && strstr(g.body, "data: event 4"), "stream: %s",
		  g.body ? h_excerpt(g.body, g.len, 200) : "");
	/* 5 events 300 ms apart: the first must not wait for the last */
	CHECK_MSG(g.pieces >= 3 && g.t_last_ms - g.t_first_ms >= 700,
		  "%u pieces over %.0f ms: buffered?", g.pieces, g.t_last_ms - g.t_first_ms);
	tls_get_free(&g);
	test_end();
}

static void test_keepalive(void)
{
	char u[256];
	struct tls_get g;
	CURL *c = curl_easy_init();
	long connects = 0;

	test_begin("tls_keepalive_many_requests");
	snprintf(u, sizeof(u), "https://127.0.0.1:%d/?size=2000", gw_port);
	for (int i = 0; i < 50; i++) {
		if (tls_curl(c, u, NULL, &g) != 0 || g.status != 200 || g.bytes != 2000) {
			CHECK_MSG(false, "request %d: rc %d (%s) %ld", i, g.rc, g.err, g.status);
			tls_get_free(&g);
			break;
		}
		connects += g.connects;
		tls_get_free(&g);
	}
	CHECK_INT(connects, 1);
	curl_easy_cleanup(c);
	test_end();
}

int main(void)
{
	h_init("54_tls_stream", 240);
	if (!tls_make_certs("tls_stream"))
		return test_exit_code();
	o_port = h_free_port();
	gw_port = h_free_port();
	if (!h_start_origin("origin", o_port, 1))
		return 1;
	const char *cfg =
		h_write_config("workers: 1\n"
			       "listen:\n"
			       "  - {address: \"127.0.0.1:%d\", tls: {cert: %s, key: %s}}\n"
			       "upstream: [\"127.0.0.1:%d\"]\n"
			       "limits: {body: 0}\n"
			       "admin: {listen: off}\n",
			       gw_port, tls_path("srv.pem"), tls_path("srv.key"), o_port);
	gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw)
		return 1;

	test_bodies();
	test_pipeline();
	test_sse();
	test_keepalive();

	h_finish(gw, 10000);
	return test_exit_code();
}
