/* 01_origin — reflex-origin itself, checked against its interface
 * (docs/origin.md): every other scenario and the benchmarks trust it, so each
 * behaviour is verified here directly, with libcurl and with raw sockets where
 * the exact bytes on the wire matter (malformed kinds, framing, RST vs FIN). */
#include "lib/harness.h"

#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static int port;
static struct h_proc *origin;

static void mkurl(char *out, size_t n, const char *path)
{
	snprintf(out, n, "http://127.0.0.1:%d%s", port, path);
}

static long get_h(const char *path, const char *const *hdrs, struct h_resp *r)
{
	char u[1024];
	struct h_req q = {.headers = hdrs};

	mkurl(u, sizeof(u), path);
	q.url = u;
	if (h_http(&q, r) != 0)
		test_fail(__FILE__, __LINE__, "GET %s: %s", path, r->error);
	return r->status;
}

static long get(const char *path, struct h_resp *r)
{
	return get_h(path, NULL, r);
}

/* Send req on a fresh connection and read until the origin closes (or the
 * deadline). */
static enum h_read_end raw(const char *req, struct h_buf *b, unsigned timeout_ms)
{
	memset(b, 0, sizeof(*b));
	return h_raw_roundtrip("127.0.0.1", port, req, strlen(req), b, timeout_ms);
}

static bool hdr_is(const struct h_resp *r, const char *name, const char *want)
{
	char v[512];

	return h_resp_header(r, name, v, sizeof(v)) && strcmp(v, want) == 0;
}

/* The line is printed once every worker is serving; the port may accept
 * (kernel backlog) a moment before, so poll the log for it. */
static void test_ready_line(void)
{
	static char log[65536];
	char want[128];
	double end = h_now_ms() + 3000;

	test_begin("ready_line");
	snprintf(want, sizeof(want), "reflex-origin o1 listening on 127.0.0.1:%d\n", port);
	for (;;) {
		FILE *f = fopen(origin->log, "r");
		size_t n = 0;

		if (f) {
			n = fread(log, 1, sizeof(log) - 1, f);
			fclose(f);
		}
		log[n] = '\0';
		if (strstr(log, want) || h_now_ms() > end)
			break;
		h_sleep_ms(20);
	}
	CHECK_MSG(strstr(log, want), "log %s lacks \"%s\"", origin->log, want);
	test_end();
}

static void test_default(void)
{
	struct h_resp r;
	char v[128];

	test_begin("default_response");
	CHECK_INT(get("/", &r), 200);
	CHECK_INT(r.body_bytes, 1024);
	CHECK_MSG(r.body_hash == h_pattern_hash(1024), "body is not the pattern: %s",
		  h_excerpt(r.body, r.body_len, 60));
	CHECK_MSG(hdr_is(&r, "X-Origin", "o1"), "X-Origin missing: %s", r.headers);
	CHECK_MSG(hdr_is(&r, "Content-Length", "1024"), "Content-Length: %s", r.headers);
	CHECK_MSG(h_resp_header(&r, "Date", v, sizeof(v)) && strstr(v, " GMT"), "Date: %s",
		  r.headers);
	CHECK_MSG(!h_resp_header(&r, "X-Body-Bytes", v, sizeof(v)), "X-Body-Bytes on a GET");
	h_resp_free(&r);
	/* Any path, any method. */
	CHECK_INT(get("/some/where", &r), 200);
	CHECK_INT(r.body_bytes, 1024);
	h_resp_free(&r);
	{
		char u[256];
		struct h_req q = {.url = u, .method = "DELETE"};

		mkurl(u, sizeof(u), "/x?status=202&size=3");
		CHECK(h_http(&q, &r) == 0);
		CHECK_INT(r.status, 202);
		CHECK_INT(r.body_bytes, 3);
		h_resp_free(&r);
	}
	test_end();
}

static void test_status_size(void)
{
	static const unsigned long sizes[] = {0, 1, 26, 16384, 16385, 100000, 3 << 20};
	struct h_resp r;
	char v[64];

	test_begin("status_and_size");
	CHECK_INT(get("/?status=404", &r), 404);
	CHECK_INT(r.body_bytes, 1024);
	h_resp_free(&r);
	CHECK_INT(get("/?status=503&size=7", &r), 503);
	CHECK_INT(r.body_bytes, 7);
	h_resp_free(&r);
	CHECK_INT(get("/?status=204", &r), 204);
	CHECK_INT(r.body_bytes, 0);
	CHECK_MSG(!h_resp_header(&r, "Content-Length", v, sizeof(v)), "204 with CL");
	h_resp_free(&r);
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char path[64];

		snprintf(path, sizeof(path), "/?size=%lu", sizes[i]);
		CHECK_INT(get(path, &r), 200);
		CHECK_MSG(r.body_bytes == sizes[i] && r.body_hash == h_pattern_hash(sizes[i]),
			  "size=%lu: %llu bytes, hash ok %d", sizes[i],
			  (unsigned long long)r.body_bytes,
			  r.body_hash == h_pattern_hash(sizes[i]));
		snprintf(path, sizeof(path), "%lu", sizes[i]);
		CHECK_MSG(hdr_is(&r, "Content-Length", path), "size=%lu: %s", sizes[i], r.headers);
		h_resp_free(&r);
	}
	CHECK_INT(get("/?status=99", &r), 400);
	h_resp_free(&r);
	CHECK_INT(get("/?size=1099511627777", &r), 400);
	h_resp_free(&r);
	test_end();
}

/* A 2^40-byte body is announced and streamed, never held: read 4 MiB of it,
 * hang up, and the origin's memory stays small. */
static void test_huge_size(void)
{
	char req[256];
	struct h_buf b = {0};
	int fd;

	test_begin("huge_size_streams");
	fd = h_connect("127.0.0.1", port, 2000);
	CHECK(fd >= 0);
	if (fd < 0) {
		test_end();
		return;
	}
	snprintf(req, sizeof(req), "GET /?size=1099511627776 HTTP/1.1\r\nHost: x\r\n\r\n");
	CHECK(h_send_str(fd, req) == 0);
	double end = h_now_ms() + 5000;
	while (b.len < (4u << 20) && h_now_ms() < end)
		if (h_read_all(fd, &b, 200, 200) != H_READ_TIMEOUT)
			break;
	CHECK_MSG(b.len >= (4u << 20), "only %zu bytes arrived", b.len);
	CHECK_MSG(b.len && strstr(b.data, "Content-Length: 1099511627776\r\n"), "head: %s",
		  h_excerpt(b.data, b.len, 200));
	const char *body = b.len ? strstr(b.data, "\r\n\r\n") : NULL;
	if (body) {
		body += 4;
		size_t n = b.len - (size_t)(body - b.data);
		char *want = malloc(n);

		h_pattern_fill(want, n, 0);
		CHECK_MSG(memcmp(body, want, n) == 0, "streamed body differs from the pattern");
		free(want);
	}
	long rss = h_rss_kb(origin->pid);
	CHECK_MSG(rss > 0 && rss < 200 * 1024, "origin RSS %ld KiB", rss);
	close(fd);
	h_buf_free(&b);
	test_end();
}

static void test_chunked(void)
{
	struct h_buf b;
	struct h_raw_resp rr[2];
	int n;

	test_begin("chunked");
	raw("GET /?size=40000&chunked=1&chunk=1000 HTTP/1.1\r\nHost: x\r\nConnection: "
	    "close\r\n\r\n",
	    &b, 5000);
	n = h_parse_responses(b.data, b.len, rr, 2, NULL);
	CHECK_INT(n, 1);
	if (n == 1) {
		char *want = malloc(40000);

		h_pattern_fill(want, 40000, 0);
		CHECK(rr[0].complete && rr[0].chunked && !rr[0].has_cl);
		CHECK_INT(rr[0].body_len, 40000);
		CHECK(rr[0].body_len == 40000 && memcmp(rr[0].body, want, 40000) == 0);
		/* chunk=1000: the first chunk-size line is 3e8. */
		const char *he = strstr(b.data, "\r\n\r\n");
		CHECK_MSG(he && strncmp(he + 4, "3e8\r\n", 5) == 0, "first chunk: %s",
			  h_excerpt(he ? he + 4 : b.data, 16, 16));
		free(want);
		h_raw_resp_free(rr, n);
	}
	h_buf_free(&b);

	/* Large chunked body (streamed path) through curl. */
	struct h_resp r;
	CHECK_INT(get("/?size=2000000&chunked=1", &r), 200);
	CHECK_MSG(r.body_bytes == 2000000 && r.body_hash == h_pattern_hash(2000000),
		  "chunked 2 MB: %llu bytes", (unsigned long long)r.body_bytes);
	CHECK_MSG(strcasestr(r.headers, "Transfer-Encoding: chunked"), "%s", r.headers);
	h_resp_free(&r);
	/* HTTP/1.0 has no chunked coding: the body is delimited by close. */
	{
		struct h_buf b10;
		struct h_raw_resp r10[1];
		enum h_read_end e = raw("GET /?chunked=1&size=30 HTTP/1.0\r\n\r\n", &b10, 3000);
		int n10 = h_parse_responses(b10.data, b10.len, r10, 1, NULL);

		CHECK_MSG(e == H_READ_CLOSED && n10 == 1 && r10[0].close_delim &&
				  r10[0].body_len == 30 && !r10[0].chunked,
			  "1.0 chunked=1: %s", h_excerpt(b10.data, b10.len, 300));
		if (n10 > 0)
			h_raw_resp_free(r10, n10);
		h_buf_free(&b10);
	}
	/* Zero-length chunked body. */
	CHECK_INT(get("/?size=0&chunked=1", &r), 200);
	CHECK_INT(r.body_bytes, 0);
	h_resp_free(&r);
	test_end();
}

static void test_close_delimited(void)
{
	struct h_buf b;
	struct h_raw_resp rr[2];
	enum h_read_end e;
	int n;

	test_begin("close_delimited");
	e = raw("GET /?close=1&size=5000 HTTP/1.1\r\nHost: x\r\n\r\n", &b, 5000);
	CHECK_MSG(e == H_READ_CLOSED, "read ended with %s", h_read_end_name(e));
	n = h_parse_responses(b.data, b.len, rr, 2, NULL);
	CHECK_INT(n, 1);
	if (n == 1) {
		char v[64];

		CHECK(rr[0].close_delim && !rr[0].chunked && !rr[0].has_cl);
		CHECK_INT(rr[0].body_len, 5000);
		CHECK(h_fnv1a(H_FNV_INIT, rr[0].body, rr[0].body_len) == h_pattern_hash(5000));
		CHECK(h_head_header(rr[0].head, "Connection", v, sizeof(v)) &&
		      !strcasecmp(v, "close"));
		h_raw_resp_free(rr, n);
	}
	h_buf_free(&b);
	/* Large close-delimited body (streamed path). */
	struct h_resp r;
	CHECK_INT(get("/?close=1&size=1000000", &r), 200);
	CHECK(r.body_bytes == 1000000 && r.body_hash == h_pattern_hash(1000000));
	h_resp_free(&r);
	test_end();
}

static void test_delay(void)
{
	struct h_resp r;
	const char *hd[] = {"X-Origin-Delay: 200", NULL};
	const char *slow[] = {"X-Origin-Delay: 3000", NULL};

	test_begin("delay");
	CHECK_INT(get("/?delay=300", &r), 200);
	CHECK_MSG(r.time_ms >= 290 && r.time_ms < 2000, "delay=300 took %.0f ms", r.time_ms);
	h_resp_free(&r);
	CHECK_INT(get_h("/", hd, &r), 200);
	CHECK_MSG(r.time_ms >= 190 && r.time_ms < 2000, "X-Origin-Delay: 200 took %.0f ms",
		  r.time_ms);
	h_resp_free(&r);
	/* The query wins over the header. */
	CHECK_INT(get_h("/?delay=50", slow, &r), 200);
	CHECK_MSG(r.time_ms < 1500, "query delay=50 over header 3000 took %.0f ms", r.time_ms);
	h_resp_free(&r);
	test_end();
}

static void test_headers(void)
{
	struct h_resp r;
	const char *hd[] = {"X-Origin-Status: 201", "X-Origin-Cc: private", NULL};

	test_begin("response_headers");
	CHECK_INT(get("/?cc=public%2C%20max-age%3D60&etag=%22v1%22&lm=Wed,%2021%20Oct%202015%2007:"
		      "28:00%20GMT"
		      "&vary=Accept-Encoding&expires=0&ctype=application/atom+xml"
		      "&hdr=X-One:1&hdr=X-Two:%20two%20words",
		      &r),
		  200);
	CHECK_MSG(hdr_is(&r, "Cache-Control", "public, max-age=60"), "%s", r.headers);
	CHECK_MSG(hdr_is(&r, "ETag", "\"v1\""), "%s", r.headers);
	CHECK_MSG(hdr_is(&r, "Last-Modified", "Wed, 21 Oct 2015 07:28:00 GMT"), "%s", r.headers);
	CHECK_MSG(hdr_is(&r, "Vary", "Accept-Encoding"), "%s", r.headers);
	CHECK_MSG(hdr_is(&r, "Expires", "0"), "%s", r.headers);
	CHECK_MSG(hdr_is(&r, "Content-Type", "application/atom+xml"), "%s", r.headers);
	CHECK_MSG(hdr_is(&r, "X-One", "1") && hdr_is(&r, "X-Two", "two words"), "%s", r.headers);
	h_resp_free(&r);
	/* Request headers X-Origin-<Name>, and the query overrides them. */
	CHECK_INT(get_h("/", hd, &r), 201);
	CHECK_MSG(hdr_is(&r, "Cache-Control", "private"), "%s", r.headers);
	h_resp_free(&r);
	CHECK_INT(get_h("/?status=202&cc=no-store", hd, &r), 202);
	CHECK_MSG(hdr_is(&r, "Cache-Control", "no-store"), "%s", r.headers);
	h_resp_free(&r);
	/* A value that would split the head is refused. */
	CHECK_INT(get("/?cc=a%0D%0AX-Evil:%201", &r), 400);
	h_resp_free(&r);
	test_end();
}

/* Repeated plain GETs of one target are served precomputed: same bytes,
 * still counted, and the Date moves on. */
static void test_repeat_target(void)
{
	struct h_resp r[3];
	char d0[64] = "", d2[64] = "";
	struct h_origin_stats a, b;

	test_begin("repeat_target");
	CHECK(h_origin_stats(port, &a) == 0);
	for (int i = 0; i < 3; i++) {
		if (i == 2)
			h_sleep_ms(1100);
		CHECK_INT(get("/pass/1k?cc=no-store&size=700", &r[i]), 200);
		CHECK(r[i].body_bytes == 700 && r[i].body_hash == h_pattern_hash(700));
		CHECK_MSG(hdr_is(&r[i], "Cache-Control", "no-store"), "%s", r[i].headers);
	}
	h_resp_header(&r[0], "Date", d0, sizeof(d0));
	h_resp_header(&r[2], "Date", d2, sizeof(d2));
	CHECK_MSG(strcmp(d0, d2) != 0, "Date did not change: %s", d0);
	CHECK(h_origin_stats(port, &b) == 0);
	CHECK_MSG(b.requests - a.requests == 3, "requests %ld -> %ld", a.requests, b.requests);
	for (int i = 0; i < 3; i++)
		h_resp_free(&r[i]);
	test_end();
}

struct sse_times {
	double t[16];
	int n;
	char data[1024];
	size_t len;
};

static void on_sse(const char *data, size_t len, double t_ms, void *arg)
{
	struct sse_times *s = arg;

	if (s->n < 16)
		s->t[s->n++] = t_ms;
	if (s->len + len < sizeof(s->data)) {
		memcpy(s->data + s->len, data, len);
		s->len += len;
		s->data[s->len] = '\0';
	}
}

static void test_sse(void)
{
	char u[256];
	struct sse_times s = {0};
	struct h_req q = {.url = u, .sink = on_sse, .sink_arg = &s};
	struct h_resp r;
	const char *want = "id: 1\ndata: event 1\n\nid: 2\ndata: event 2\n\n"
			   "id: 3\ndata: event 3\n\nid: 4\ndata: event 4\n\n";

	test_begin("sse_pacing");
	mkurl(u, sizeof(u), "/?sse=4&interval=150");
	double t0 = h_now_ms();
	CHECK(h_http(&q, &r) == 0);
	CHECK_INT(r.status, 200);
	CHECK_MSG(strcasestr(r.headers, "Content-Type: text/event-stream") &&
			  strcasestr(r.headers, "Transfer-Encoding: chunked"),
		  "%s", r.headers);
	CHECK_MSG(s.len == strlen(want) && strcmp(s.data, want) == 0, "events: %s",
		  h_excerpt(s.data, s.len, 200));
	/* Each event is flushed on its own, 150 ms apart. (A client that was
	 * descheduled may read two at once, hence >= 3 deliveries, and the
	 * first delivery may come late: a spread of one interval at least;
	 * events held back to the end would arrive together.) */
	CHECK_MSG(s.n >= 3, "%d separate deliveries, want 4", s.n);
	CHECK_MSG(s.n < 2 || s.t[s.n - 1] - s.t[0] >= 140, "events spread over %.0f ms",
		  s.t[s.n - 1] - s.t[0]);
	CHECK_MSG(r.time_ms >= 440, "4 events at 150 ms took %.0f ms", r.time_ms);
	CHECK_MSG(s.n == 0 || s.t[0] - t0 < 1000, "first event after %.0f ms", s.t[0] - t0);
	h_resp_free(&r);
	test_end();
}

static void test_hang(void)
{
	char u[256];
	struct h_req q = {.url = u, .timeout_ms = 600};
	struct h_resp r;

	test_begin("hang");
	mkurl(u, sizeof(u), "/?hang=1");
	CHECK(h_http(&q, &r) != 0);
	CHECK_MSG(r.curl_rc == 28, "curl rc %d (%s), want a timeout", r.curl_rc, r.error);
	CHECK_MSG(r.time_ms >= 550, "gave up after %.0f ms", r.time_ms);
	h_resp_free(&r);
	/* The connection really stays open: a raw read times out. */
	struct h_buf b;
	enum h_read_end e = raw("GET /?hang=1 HTTP/1.1\r\nHost: x\r\n\r\n", &b, 400);
	CHECK_MSG(e == H_READ_TIMEOUT && b.len == 0, "read ended %s with %zu bytes",
		  h_read_end_name(e), b.len);
	h_buf_free(&b);
	/* The origin still serves. */
	CHECK_INT(get("/?size=1", &r), 200);
	h_resp_free(&r);
	test_end();
}

static void test_reset_drop(void)
{
	struct h_buf b;
	enum h_read_end e;

	test_begin("reset_and_drop");
	e = raw("GET /?reset=1 HTTP/1.1\r\nHost: x\r\n\r\n", &b, 3000);
	CHECK_MSG(e == H_READ_RESET && b.len == 0, "reset=1: %s with %zu bytes", h_read_end_name(e),
		  b.len);
	h_buf_free(&b);
	e = raw("GET /?drop=1 HTTP/1.1\r\nHost: x\r\n\r\n", &b, 3000);
	CHECK_MSG(e == H_READ_CLOSED && b.len == 0, "drop=1: %s with %zu bytes", h_read_end_name(e),
		  b.len);
	h_buf_free(&b);
	/* Also after a request body (the body is read first). */
	e = raw("POST /?reset=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", &b, 3000);
	CHECK_MSG(e == H_READ_RESET && b.len == 0, "POST reset=1: %s", h_read_end_name(e));
	h_buf_free(&b);
	test_end();
}

static bool has_bare_cr(const char *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i++)
		if (p[i] == '\r' && p[i + 1] != '\n')
			return true;
	return false;
}

static void test_malformed(void)
{
	static const char *const kinds[] = {"status", "cl", "cl_te", "injection",
					    "chunk",  "lf", "short"};
	struct h_buf b;

	test_begin("malformed_kinds");
	for (unsigned i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		char req[128];
		enum h_read_end e;
		const char *k = kinds[i];
		bool ok = false;

		snprintf(req, sizeof(req), "GET /?malformed=%s HTTP/1.1\r\nHost: x\r\n\r\n", k);
		e = raw(req, &b, 3000);
		CHECK_MSG(e == H_READ_CLOSED, "%s: read ended %s", k, h_read_end_name(e));
		const char *d = b.data ? b.data : "";
		size_t n = b.len;

		if (!strcmp(k, "status"))
			ok = !strncmp(d, "HTTP/1.1 2x0 OK\r\n", 17);
		else if (!strcmp(k, "cl"))
			ok = strstr(d, "\r\nContent-Length: 5\r\n") &&
			     strstr(d, "\r\nContent-Length: 6\r\n");
		else if (!strcmp(k, "cl_te"))
			ok = strstr(d, "\r\nContent-Length: 5\r\n") &&
			     strstr(d, "\r\nTransfer-Encoding: chunked\r\n");
		else if (!strcmp(k, "injection"))
			ok = !strncmp(d, "HTTP/1.1 200 OK\r\n", 17) && has_bare_cr(d, n);
		else if (!strcmp(k, "chunk"))
			ok = strstr(d, "chunked\r\n") && strstr(d, "\r\n\r\nzz\r\n");
		else if (!strcmp(k, "lf"))
			ok = !strncmp(d, "HTTP/1.1 200 OK\n", 16) && !memchr(d, '\r', n) &&
			     strstr(d, "\n\nhello");
		else if (!strcmp(k, "short")) {
			const char *he = strstr(d, "\r\n\r\n");

			ok = strstr(d, "\r\nContent-Length: 100\r\n") && he &&
			     n - (size_t)(he + 4 - d) == 10;
		}
		CHECK_MSG(ok, "malformed=%s: got %s", k, h_excerpt(d, n, 300));
		CHECK_MSG(strstr(d, "X-Origin: o1"), "malformed=%s lacks X-Origin", k);
		h_buf_free(&b);
	}
	/* An unknown kind is a 400. */
	struct h_resp r;
	CHECK_INT(get("/?malformed=nope", &r), 400);
	h_resp_free(&r);
	test_end();
}

static void test_echo(void)
{
	char u[256], v[64];
	const char *hd[] = {"X-Test: abc", "X-Test: second", "X-Quote: a\"b\\c", NULL};
	struct h_req q = {
		.url = u, .headers = hd, .body = "hello world", .body_len = 11, .method = "PUT"};
	struct h_resp r;
	struct h_echo e;

	test_begin("echo");
	mkurl(u, sizeof(u), "/echo?a=1&b=%20x");
	CHECK(h_http(&q, &r) == 0);
	CHECK_INT(r.status, 200);
	CHECK_MSG(hdr_is(&r, "Content-Type", "application/json"), "%s", r.headers);
	CHECK(h_echo_parse(r.body, r.body_len, &e) == 0);
	CHECK_STR(e.method, "PUT");
	CHECK_STR(e.target, "/echo?a=1&b=%20x");
	CHECK_STR(e.version, "1.1");
	CHECK_MSG(h_echo_count(&e, "X-Test") == 2, "X-Test seen %d times",
		  h_echo_count(&e, "X-Test"));
	CHECK_STR(h_echo_header(&e, "X-Test"), "abc");
	CHECK_STR(h_echo_header(&e, "X-Quote"), "a\"b\\c");
	CHECK(h_echo_header(&e, "Host") != NULL);
	CHECK_INT(e.body_bytes, 11);
	CHECK_STR(e.body_hash, h_hex64(h_fnv1a(H_FNV_INIT, "hello world", 11), v));
	h_echo_free(&e);
	h_resp_free(&r);
	/* It honours status and headers, and HTTP/1.0 shows as such. */
	struct h_req q10 = {.url = u, .http10 = true};
	mkurl(u, sizeof(u), "/echo?status=201&cc=no-cache");
	CHECK(h_http(&q10, &r) == 0);
	CHECK_INT(r.status, 201);
	CHECK_MSG(hdr_is(&r, "Cache-Control", "no-cache"), "%s", r.headers);
	CHECK(h_echo_parse(r.body, r.body_len, &e) == 0);
	CHECK_STR(e.version, "1.0");
	CHECK_STR(e.method, "GET");
	CHECK_INT(e.body_bytes, 0);
	h_echo_free(&e);
	h_resp_free(&r);
	test_end();
}

static void test_stats(void)
{
	struct h_origin_stats a, b;
	struct h_resp r;

	test_begin("stats_counting");
	CHECK(h_origin_stats(port, &a) == 0);
	for (int i = 0; i < 3; i++) {
		CHECK_INT(get("/?size=1", &r), 200);
		h_resp_free(&r);
	}
	h_sleep_ms(50);
	CHECK(h_origin_stats(port, &b) == 0);
	/* 3 requests (the /__stats ones do not count), and 3 + 1 connections
	 * (the second /__stats came on its own). */
	CHECK_MSG(b.requests - a.requests == 3, "requests %ld -> %ld", a.requests, b.requests);
	CHECK_MSG(b.connections - a.connections == 4, "connections %ld -> %ld", a.connections,
		  b.connections);
	CHECK_MSG(b.open >= 1 && b.open <= 4, "open %ld", b.open);
	test_end();
}

static void gen_pattern(char *buf, size_t len, uint64_t off, void *arg)
{
	h_pattern_fill(buf, len, off);
}

static void test_body_hash(void)
{
	char u[256], v[64], want[17];
	struct h_resp r;

	test_begin("request_body_hash");
	mkurl(u, sizeof(u), "/?size=10");
	/* Content-Length body, 3 MB, generated. */
	struct h_req q = {.url = u, .gen = gen_pattern, .gen_len = 3000000, .no_expect = true};
	CHECK(h_http(&q, &r) == 0);
	CHECK_INT(r.status, 200);
	CHECK_MSG(hdr_is(&r, "X-Body-Bytes", "3000000"), "%s", r.headers);
	h_hex64(r.upload_hash, want);
	CHECK_MSG(h_resp_header(&r, "X-Body-Hash", v, sizeof(v)) && !strcmp(v, want),
		  "X-Body-Hash %s, want %s", v, want);
	CHECK_INT(r.body_bytes, 10);
	h_resp_free(&r);
	/* Chunked upload. */
	struct h_req qc = {.url = u, .gen = gen_pattern, .gen_len = 200000, .chunked = true};
	CHECK(h_http(&qc, &r) == 0);
	CHECK_MSG(hdr_is(&r, "X-Body-Bytes", "200000"), "%s", r.headers);
	h_hex64(h_pattern_hash(200000), want);
	CHECK_MSG(hdr_is(&r, "X-Body-Hash", want), "%s", r.headers);
	h_resp_free(&r);

	/* Expect: 100-continue: the interim response comes before the body is sent. */
	struct h_buf b = {0};
	int fd = h_connect("127.0.0.1", port, 2000);
	CHECK(fd >= 0);
	if (fd >= 0) {
		h_send_str(fd, "POST /?size=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
			       "Expect: 100-continue\r\n\r\n");
		CHECK_INT(h_read_until(fd, &b, "\r\n\r\n", 2000), H_READ_DONE);
		CHECK_MSG(b.len >= 25 && !strncmp(b.data, "HTTP/1.1 100 Continue\r\n\r\n", 25),
			  "got %s", h_excerpt(b.data, b.len, 100));
		h_send_str(fd, "hello");
		h_buf_free(&b);
		CHECK_INT(h_read_responses(fd, &b, 1, 2000), H_READ_DONE);
		h_hex64(h_fnv1a(H_FNV_INIT, "hello", 5), want);
		CHECK_MSG(b.len && strstr(b.data, "X-Body-Bytes: 5\r\n") && strstr(b.data, want),
			  "got %s", h_excerpt(b.data, b.len, 300));
		close(fd);
		h_buf_free(&b);
	}
	/* A broken chunked body is a 400. */
	enum h_read_end e = raw("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
				"zz\r\n",
				&b, 2000);
	CHECK_MSG(e == H_READ_CLOSED && b.len > 12 && !strncmp(b.data, "HTTP/1.1 400", 12),
		  "bad chunked body: %s", h_excerpt(b.data, b.len, 100));
	h_buf_free(&b);
	test_end();
}

static void test_head(void)
{
	char u[256];
	struct h_req q = {.url = u, .head = true};
	struct h_resp r;
	struct h_buf b = {0};
	struct h_raw_resp rr[3];
	bool is_head[3] = {true, false, true};

	test_begin("head");
	mkurl(u, sizeof(u), "/?size=5000");
	CHECK(h_http(&q, &r) == 0);
	CHECK_INT(r.status, 200);
	CHECK_INT(r.body_bytes, 0);
	CHECK_MSG(hdr_is(&r, "Content-Length", "5000"), "%s", r.headers);
	h_resp_free(&r);
	mkurl(u, sizeof(u), "/?size=1099511627776");
	CHECK(h_http(&q, &r) == 0);
	CHECK_MSG(hdr_is(&r, "Content-Length", "1099511627776"), "%s", r.headers);
	h_resp_free(&r);
	/* HEAD, GET, HEAD on one connection: no body bytes after the HEADs. */
	int fd = h_connect("127.0.0.1", port, 2000);
	CHECK(fd >= 0);
	if (fd >= 0) {
		h_send_str(fd, "HEAD /?size=300 HTTP/1.1\r\nHost: x\r\n\r\n"
			       "GET /?size=7 HTTP/1.1\r\nHost: x\r\n\r\n"
			       "HEAD /?size=300&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n");
		h_read_all(fd, &b, 1000, 300);
		int n = h_parse_responses(b.data, b.len, rr, 3, is_head);
		CHECK_INT(n, 3);
		if (n == 3) {
			CHECK(rr[0].status == 200 && rr[0].body_len == 0 && rr[0].complete);
			CHECK(rr[1].status == 200 && rr[1].body_len == 7 && rr[1].complete);
			CHECK(rr[2].status == 200 && rr[2].body_len == 0 && rr[2].complete);
			CHECK_MSG(rr[0].wire_len + rr[1].wire_len + rr[2].wire_len == b.len,
				  "extra bytes on the wire: %s", h_excerpt(b.data, b.len, 400));
		}
		if (n > 0)
			h_raw_resp_free(rr, n);
		close(fd);
		h_buf_free(&b);
	}
	test_end();
}

static void test_keepalive(void)
{
	void *c = h_curl_new();
	char u[256];
	struct h_resp r;
	long connects = 0;
	struct h_origin_stats a, b;

	test_begin("keepalive_reuse");
	CHECK(h_origin_stats(port, &a) == 0);
	for (int i = 0; i < 5; i++) {
		struct h_req q = {.url = u, .curl = c};

		mkurl(u, sizeof(u), i % 2 ? "/?size=100000" : "/");
		CHECK(h_http(&q, &r) == 0);
		CHECK_INT(r.status, 200);
		connects += r.num_connects;
		h_resp_free(&r);
	}
	/* With a POST in between. */
	struct h_req qp = {.url = u, .curl = c, .body = "abc", .body_len = 3};
	CHECK(h_http(&qp, &r) == 0);
	connects += r.num_connects;
	h_resp_free(&r);
	CHECK_MSG(connects == 1, "curl opened %ld connections for 6 requests", connects);
	h_curl_free(c);
	CHECK(h_origin_stats(port, &b) == 0);
	CHECK_MSG(b.connections - a.connections == 2, "origin accepted %ld connections",
		  b.connections - a.connections);

	/* Pipelining: three requests in one write, answered in order. */
	struct h_buf buf = {0};
	struct h_raw_resp rr[3];
	int fd = h_connect("127.0.0.1", port, 2000);
	CHECK(fd >= 0);
	if (fd >= 0) {
		h_send_str(fd, "GET /?size=1 HTTP/1.1\r\nHost: x\r\n\r\n"
			       "POST /?size=2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
			       "GET /?size=30000&chunked=1 HTTP/1.1\r\nHost: x\r\n\r\n");
		CHECK_INT(h_read_responses(fd, &buf, 3, 3000), H_READ_DONE);
		int n = h_parse_responses(buf.data, buf.len, rr, 3, NULL);
		CHECK_INT(n, 3);
		if (n == 3) {
			CHECK_INT(rr[0].body_len, 1);
			CHECK_INT(rr[1].body_len, 2);
			CHECK(strstr(rr[1].head, "X-Body-Bytes: 3\r\n") != NULL);
			CHECK_INT(rr[2].body_len, 30000);
		}
		if (n > 0)
			h_raw_resp_free(rr, n);
		close(fd);
		h_buf_free(&buf);
	}

	/* HTTP/1.0: closes by default, keeps alive when asked. */
	enum h_read_end e = raw("GET /?size=3 HTTP/1.0\r\n\r\n", &buf, 2000);
	CHECK_MSG(e == H_READ_CLOSED && strstr(buf.data ? buf.data : "", "Connection: close"),
		  "1.0: %s %s", h_read_end_name(e), h_excerpt(buf.data, buf.len, 200));
	h_buf_free(&buf);
	fd = h_connect("127.0.0.1", port, 2000);
	if (fd >= 0) {
		h_send_str(fd, "GET /?size=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
		CHECK_INT(h_read_responses(fd, &buf, 1, 2000), H_READ_DONE);
		CHECK(buf.len && strstr(buf.data, "Connection: keep-alive\r\n"));
		h_send_str(fd, "GET /?size=4 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
		CHECK_INT(h_read_responses(fd, &buf, 2, 2000), H_READ_DONE);
		close(fd);
		h_buf_free(&buf);
	}
	/* A request the parser refuses: 400 and close. */
	e = raw("BAD REQUEST\r\n\r\n", &buf, 2000);
	CHECK_MSG(e == H_READ_CLOSED && buf.len > 12 && !strncmp(buf.data, "HTTP/1.1 400", 12),
		  "garbage: %s", h_excerpt(buf.data, buf.len, 100));
	h_buf_free(&buf);
	test_end();
}

static void test_rate(void)
{
	struct h_resp r;

	test_begin("rate");
	/* 100 kB at 200 kB/s with a 50 ms burst: about 450 ms. */
	CHECK_INT(get("/?size=100000&rate=200000", &r), 200);
	CHECK(r.body_bytes == 100000 && r.body_hash == h_pattern_hash(100000));
	CHECK_MSG(r.time_ms >= 350 && r.time_ms < 3000, "took %.0f ms", r.time_ms);
	h_resp_free(&r);
	test_end();
}

/* IPv6 and several listeners and workers in one process, then SIGTERM. */
static void test_multi_listen(void)
{
	int p4 = h_free_port(), p6 = h_free_port6();
	char l4[64], l6[64], u[128];
	struct h_proc *o;
	struct h_resp r;

	test_begin("multi_listen_ipv6_workers");
	snprintf(l4, sizeof(l4), "127.0.0.1:%d", p4);
	if (p6 > 0) {
		snprintf(l6, sizeof(l6), "[::1]:%d", p6);
		char *argv[] = {(char *)h_origin_path(),
				"--listen",
				l4,
				"--listen",
				l6,
				"--workers",
				"2",
				"--name",
				"o2",
				NULL};
		o = h_spawn("o2", argv, "127.0.0.1", p4, 5000);
	} else {
		char *argv[] = {(char *)h_origin_path(),
				"--listen",
				l4,
				"--workers",
				"2",
				"--name",
				"o2",
				NULL};
		o = h_spawn("o2", argv, "127.0.0.1", p4, 5000);
	}
	CHECK(o != NULL);
	if (!o) {
		test_end();
		return;
	}
	for (int i = 0; i < 4; i++) {
		snprintf(u, sizeof(u), "http://127.0.0.1:%d/?size=5", p4);
		CHECK_INT(h_get(u, &r), 200);
		CHECK_MSG(hdr_is(&r, "X-Origin", "o2"), "%s", r.headers);
		h_resp_free(&r);
	}
	if (p6 > 0) {
		CHECK(h_wait_port("::1", p6, 2000) == 0);
		snprintf(u, sizeof(u), "http://[::1]:%d/?size=6", p6);
		CHECK_INT(h_get(u, &r), 200);
		CHECK_INT(r.body_bytes, 6);
		h_resp_free(&r);
	}
	struct h_origin_stats st;
	CHECK(h_origin_stats(p4, &st) == 0);
	CHECK_MSG(st.requests == (p6 > 0 ? 5 : 4), "requests %ld across workers", st.requests);
	int status = h_stop(o, 3000);
	CHECK_MSG(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "exit status 0x%x after SIGTERM", status);
	test_end();
}

int main(void)
{
	h_init("01_origin", 60);
	port = h_free_port();
	origin = h_start_origin("o1", port, 1);
	if (!origin) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	test_ready_line();
	test_default();
	test_status_size();
	test_huge_size();
	test_chunked();
	test_close_delimited();
	test_delay();
	test_headers();
	test_repeat_target();
	test_sse();
	test_hang();
	test_reset_drop();
	test_malformed();
	test_echo();
	test_stats();
	test_body_hash();
	test_head();
	test_keepalive();
	test_rate();
	test_multi_listen();

	test_begin("origin_alive");
	CHECK_MSG(h_alive(origin), "reflex-origin died (status 0x%x)", origin->status);
	int st = h_stop(origin, 3000);
	CHECK_MSG(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "exit status 0x%x", st);
	test_end();
	return test_exit_code();
}
