/* 10_proxy_basic — the ordinary proxy path through reflexd: GET/HEAD/POST of
 * several sizes with body integrity, the forwarding headers (X-Forwarded-*,
 * Via, X-Request-ID), hop-by-hop removal both ways, unknown methods,
 * absolute-form targets, an IPv6 listener, balancing over two upstreams and
 * routing by host + path prefix to a named pool. */
#include "lib/harness.h"

#include <ctype.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static int gw_port, gw_port6 = -1, o1_port, o2_port, api_port;

static void url(char *out, size_t n, const char *path)
{
	snprintf(out, n, "http://127.0.0.1:%d%s", gw_port, path);
}

/* GET path through the gateway with optional extra headers. */
static long get(const char *path, const char *const *hdrs, struct h_resp *r)
{
	char u[512];
	struct h_req q = {.headers = hdrs};

	url(u, sizeof(u), path);
	q.url = u;
	if (h_http(&q, r) != 0)
		test_fail(__FILE__, __LINE__, "GET %s: %s", path, r->error);
	return r->status;
}

static void test_get_sizes(void)
{
	static const unsigned long sizes[] = {0, 1024, 1048576};

	test_begin("get_sizes");
	for (unsigned i = 0; i < 3; i++) {
		char path[64], cl[32];
		struct h_resp r;

		snprintf(path, sizeof(path), "/?size=%lu", sizes[i]);
		CHECK_INT(get(path, NULL, &r), 200);
		CHECK_MSG(r.body_bytes == sizes[i], "size=%lu: got %llu body bytes", sizes[i],
			  (unsigned long long)r.body_bytes);
		CHECK_MSG(r.body_hash == h_pattern_hash(sizes[i]), "size=%lu: body hash differs",
			  sizes[i]);
		if (h_resp_header(&r, "Content-Length", cl, sizeof(cl)))
			CHECK_MSG(strtoul(cl, NULL, 10) == sizes[i], "Content-Length %s", cl);
		h_resp_free(&r);
	}
	test_end();
}

static void test_head(void)
{
	char u[256], cl[32];
	struct h_resp r;
	struct h_req q = {.url = u, .head = true};

	test_begin("head");
	url(u, sizeof(u), "/?size=1024");
	CHECK(h_http(&q, &r) == 0);
	CHECK_INT(r.status, 200);
	CHECK_INT(r.body_bytes, 0);
	CHECK_MSG(h_resp_header(&r, "Content-Length", cl, sizeof(cl)) && !strcmp(cl, "1024"),
		  "HEAD Content-Length: want 1024, headers:\n%s", r.headers);
	h_resp_free(&r);
	/* And the connection is still usable after a HEAD (no body expected). */
	CHECK_INT(get("/?size=10", NULL, &r), 200);
	CHECK_INT(r.body_bytes, 10);
	h_resp_free(&r);
	test_end();
}

static void test_post_integrity(void)
{
	static const size_t sizes[] = {0, 1024, 1048576};
	char u[256];

	test_begin("post_integrity");
	url(u, sizeof(u), "/");
	for (unsigned i = 0; i < 3; i++) {
		size_t n = sizes[i];
		char *body = malloc(n + 1);
		char want[17], got[64] = "", bytes[32] = "";
		struct h_resp r;

		srand(42 + i);
		for (size_t k = 0; k < n; k++)
			body[k] = (char)(rand() & 0xff);
		struct h_req q = {.url = u, .method = "POST", .body = body, .body_len = n};
		CHECK_MSG(h_http(&q, &r) == 0, "POST %zu: %s", n, r.error);
		CHECK_MSG(r.status == 200, "POST %zu: status %ld", n, r.status);
		h_hex64(h_fnv1a(H_FNV_INIT, body, n), want);
		if (n > 0) {
			CHECK_MSG(h_resp_header(&r, "X-Body-Bytes", bytes, sizeof(bytes)) &&
					  strtoull(bytes, NULL, 10) == n,
				  "POST %zu: X-Body-Bytes '%s'", n, bytes);
			CHECK_MSG(h_resp_header(&r, "X-Body-Hash", got, sizeof(got)) &&
					  !strcasecmp(got, want),
				  "POST %zu: X-Body-Hash '%s', local %s", n, got, want);
		} else if (h_resp_header(&r, "X-Body-Bytes", bytes, sizeof(bytes))) {
			CHECK_MSG(!strcmp(bytes, "0"), "POST 0: X-Body-Bytes '%s'", bytes);
		}
		h_resp_free(&r);
		free(body);
	}
	test_end();
}

/* GET /echo through the gateway and parse what the origin saw. */
static int echo(const char *path, const char *const *hdrs, struct h_resp *r, struct h_echo *e)
{
	if (get(path, hdrs, r) != 200) {
		test_fail(__FILE__, __LINE__, "GET %s: status %ld body '%s'", path, r->status,
			  h_excerpt(r->body, r->body_len, 200));
		return -1;
	}
	if (h_echo_parse(r->body, r->body_len, e) != 0) {
		test_fail(__FILE__, __LINE__, "GET %s: unparsable echo '%s'", path,
			  h_excerpt(r->body, r->body_len, 300));
		return -1;
	}
	return 0;
}

static void test_forwarded_headers(void)
{
	struct h_resp r;
	struct h_echo e;
	char via[256] = "";

	test_begin("forwarded_headers");
	if (echo("/echo", NULL, &r, &e) == 0) {
		const char *xff = h_echo_header(&e, "X-Forwarded-For");
		const char *xfp = h_echo_header(&e, "X-Forwarded-Proto");
		const char *v = h_echo_header(&e, "Via");

		CHECK_MSG(xff && !strcmp(xff, "127.0.0.1"), "upstream X-Forwarded-For '%s'",
			  xff ? xff : "(none)");
		CHECK_MSG(xfp && !strcmp(xfp, "http"), "upstream X-Forwarded-Proto '%s'",
			  xfp ? xfp : "(none)");
		CHECK_MSG(v && strstr(v, "1.1 reflex"), "upstream Via '%s'", v ? v : "(none)");
		CHECK_MSG(h_resp_header(&r, "Via", via, sizeof(via)) && strstr(via, "1.1 reflex"),
			  "response Via '%s'", via);
		h_echo_free(&e);
	}
	h_resp_free(&r);

	/* An existing X-Forwarded-For is appended to. */
	const char *hx[] = {"X-Forwarded-For: 10.1.2.3", NULL};
	if (echo("/echo", hx, &r, &e) == 0) {
		const char *xff = h_echo_header(&e, "X-Forwarded-For");

		CHECK_MSG(xff && !strcmp(xff, "10.1.2.3, 127.0.0.1"),
			  "appended X-Forwarded-For '%s', want '10.1.2.3, 127.0.0.1'",
			  xff ? xff : "(none)");
		CHECK_MSG(h_echo_count(&e, "X-Forwarded-For") == 1,
			  "%d X-Forwarded-For fields upstream",
			  h_echo_count(&e, "X-Forwarded-For"));
		h_echo_free(&e);
	}
	h_resp_free(&r);
	test_end();
}

static void test_request_id(void)
{
	struct h_resp r;
	struct h_echo e;
	char rid[256] = "";

	test_begin("request_id");
	/* Generated: 32 hex digits, the same upstream and in the response. */
	if (echo("/echo", NULL, &r, &e) == 0) {
		const char *up = h_echo_header(&e, "X-Request-ID");

		CHECK_MSG(h_is_hex32(up), "generated upstream X-Request-ID '%s'", up ? up : "(none)");
		CHECK_MSG(h_resp_header(&r, "X-Request-ID", rid, sizeof(rid)),
			  "no X-Request-ID in the response");
		CHECK_MSG(up && !strcmp(rid, up), "response X-Request-ID '%s' != upstream '%s'",
			  rid, up ? up : "(none)");
		h_echo_free(&e);
	}
	h_resp_free(&r);
	/* Two requests get different ids. */
	char first[64];
	snprintf(first, sizeof(first), "%s", rid);
	if (get("/?size=1", NULL, &r) == 200) {
		CHECK(h_resp_header(&r, "X-Request-ID", rid, sizeof(rid)));
		CHECK_MSG(strcmp(rid, first) != 0, "two requests share X-Request-ID %s", rid);
	}
	h_resp_free(&r);

	/* Kept: the client's id goes upstream and comes back unchanged. */
	const char *hx[] = {"X-Request-ID: client-chosen-id-42", NULL};
	if (echo("/echo", hx, &r, &e) == 0) {
		const char *up = h_echo_header(&e, "X-Request-ID");

		CHECK_MSG(up && !strcmp(up, "client-chosen-id-42"), "upstream X-Request-ID '%s'",
			  up ? up : "(none)");
		CHECK_MSG(h_echo_count(&e, "X-Request-ID") == 1, "%d X-Request-ID fields upstream",
			  h_echo_count(&e, "X-Request-ID"));
		CHECK_MSG(h_resp_header(&r, "X-Request-ID", rid, sizeof(rid)) &&
				  !strcmp(rid, "client-chosen-id-42"),
			  "response X-Request-ID '%s'", rid);
		h_echo_free(&e);
	}
	h_resp_free(&r);
	test_end();
}

/* Raw request (Connection: close is part of req), returning the one parsed
 * response (caller frees). */
static int raw_one(const char *req, struct h_raw_resp *rr)
{
	struct h_buf b = {0};
	enum h_read_end end = h_raw_roundtrip("127.0.0.1", gw_port, req, strlen(req), &b, 5000);
	int n = h_parse_responses(b.data ? b.data : "", b.len, rr, 1, NULL);

	if (n != 1 || rr->status != 200 || !rr->complete) {
		test_fail(__FILE__, __LINE__, "raw request: read ended %s, got '%s'",
			  h_read_end_name(end), h_excerpt(b.data, b.len, 400));
		if (n == 1)
			h_raw_resp_free(rr, 1);
		h_buf_free(&b);
		return -1;
	}
	h_buf_free(&b);
	return 0;
}

static void test_hop_by_hop_request(void)
{
	struct h_raw_resp rr;
	struct h_echo e;
	char req[1024];

	test_begin("hop_by_hop_request");
	snprintf(req, sizeof(req),
		 "GET /echo HTTP/1.1\r\n"
		 "Host: 127.0.0.1:%d\r\n"
		 "Connection: close, X-Named-Hop\r\n"
		 "X-Named-Hop: must-not-pass\r\n"
		 "Keep-Alive: timeout=5\r\n"
		 "TE: trailers\r\n"
		 "Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
		 "Proxy-Connection: keep-alive\r\n"
		 "X-End-To-End: kept\r\n"
		 "\r\n",
		 gw_port);
	if (raw_one(req, &rr) == 0) {
		if (h_echo_parse(rr.body, rr.body_len, &e) == 0) {
			static const char *gone[] = {"X-Named-Hop", "Keep-Alive", "TE",
						     "Proxy-Authorization", "Proxy-Connection"};
			for (unsigned i = 0; i < sizeof(gone) / sizeof(gone[0]); i++)
				CHECK_MSG(!h_echo_header(&e, gone[i]),
					  "hop-by-hop '%s: %s' reached the origin", gone[i],
					  h_echo_header(&e, gone[i]));
			const char *conn = h_echo_header(&e, "Connection");
			CHECK_MSG(!conn || !strcasestr(conn, "X-Named-Hop"),
				  "upstream Connection '%s' names the client's hop field", conn);
			const char *kept = h_echo_header(&e, "X-End-To-End");
			CHECK_MSG(kept && !strcmp(kept, "kept"), "X-End-To-End '%s'",
				  kept ? kept : "(none)");
			h_echo_free(&e);
		} else {
			test_fail(__FILE__, __LINE__, "unparsable echo '%s'",
				  h_excerpt(rr.body, rr.body_len, 300));
		}
		h_raw_resp_free(&rr, 1);
	}
	test_end();
}

static void test_hop_by_hop_response(void)
{
	struct h_resp r;
	char v[256];

	test_begin("hop_by_hop_response");
	/* The origin adds hop-by-hop fields to its response; the client must
	 * not see them, but must see the end-to-end one. */
	CHECK_INT(get("/?size=5&hdr=Keep-Alive%3Atimeout%3D99&hdr=Proxy-Authenticate%3ABasic"
		      "&hdr=X-Resp-End%3Akept",
		      NULL, &r),
		  200);
	CHECK_MSG(!h_resp_header(&r, "Proxy-Authenticate", v, sizeof(v)),
		  "Proxy-Authenticate '%s' reached the client", v);
	CHECK_MSG(!(h_resp_header(&r, "Keep-Alive", v, sizeof(v)) && strstr(v, "99")),
		  "origin's Keep-Alive '%s' reached the client", v);
	CHECK_MSG(h_resp_header(&r, "X-Resp-End", v, sizeof(v)) && !strcmp(v, "kept"),
		  "X-Resp-End missing; headers:\n%s", r.headers);
	h_resp_free(&r);
	/* A field the origin's Connection header names is hop-by-hop too. */
	CHECK_INT(get("/?size=5&hdr=Connection%3AX-Resp-Hop&hdr=X-Resp-Hop%3Asecret", NULL, &r),
		  200);
	CHECK_MSG(!h_resp_header(&r, "X-Resp-Hop", v, sizeof(v)),
		  "X-Resp-Hop '%s' (named by the origin's Connection) reached the client", v);
	h_resp_free(&r);
	test_end();
}

/* The gateway frames what it forwards: a Connection field naming
 * Content-Length or Transfer-Encoding, duplicates, or an empty extra
 * Transfer-Encoding line must not reach the origin, or it would frame the
 * body differently (the body below is a whole request: smuggled). */
static void framing_case(const char *what, const char *req, long want_bytes, const char *cl,
			 const char *te)
{
	struct h_raw_resp rr;
	struct h_echo e;
	long before = h_origin_requests(o1_port) + h_origin_requests(o2_port);

	if (raw_one(req, &rr) != 0)
		return;
	if (h_echo_parse(rr.body, rr.body_len, &e) == 0) {
		const char *v = h_echo_header(&e, "Content-Length");
		CHECK_MSG(e.body_bytes == want_bytes, "%s: origin read %lld body bytes, want %ld",
			  what, e.body_bytes, want_bytes);
		CHECK_MSG(h_echo_count(&e, "Content-Length") == (cl ? 1 : 0) &&
				  (!cl || (v && !strcmp(v, cl))),
			  "%s: origin saw %d Content-Length field(s), first '%s', want '%s'", what,
			  h_echo_count(&e, "Content-Length"), v ? v : "(none)", cl ? cl : "(none)");
		v = h_echo_header(&e, "Transfer-Encoding");
		CHECK_MSG(h_echo_count(&e, "Transfer-Encoding") == (te ? 1 : 0) &&
				  (!te || (v && !strcmp(v, te))),
			  "%s: origin saw %d Transfer-Encoding field(s), first '%s'", what,
			  h_echo_count(&e, "Transfer-Encoding"), v ? v : "(none)");
		h_echo_free(&e);
	} else {
		test_fail(__FILE__, __LINE__, "%s: unparsable echo '%s'", what,
			  h_excerpt(rr.body, rr.body_len, 300));
	}
	h_raw_resp_free(&rr, 1);
	h_sleep_ms(50); /* a smuggled request would show up by now */
	long after = h_origin_requests(o1_port) + h_origin_requests(o2_port);
	CHECK_MSG(after == before + 1, "%s: the origins served %ld requests for one", what,
		  after - before);
}

static void test_request_framing(void)
{
	static const char smuggled[] = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
	char req[1024];

	test_begin("request_framing_is_the_gateways");
	snprintf(req, sizeof(req),
		 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %zu\r\n"
		 "Connection: close, Content-Length\r\n\r\n%s",
		 sizeof(smuggled) - 1, smuggled);
	char n[16];
	snprintf(n, sizeof(n), "%zu", sizeof(smuggled) - 1);
	framing_case("Connection names Content-Length", req, (long)sizeof(smuggled) - 1, n, NULL);
	snprintf(req, sizeof(req),
		 "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
		 "Connection: close, Transfer-Encoding\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
		 sizeof(smuggled) - 1, smuggled);
	framing_case("Connection names Transfer-Encoding", req, (long)sizeof(smuggled) - 1, NULL,
		     "chunked");
	framing_case("chunked then an empty Transfer-Encoding",
		     "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
		     "Transfer-Encoding: \r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		     5, NULL, "chunked");
	framing_case("repeated Content-Length",
		     "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n"
		     "Content-Length: 5\r\nConnection: close\r\n\r\nhello",
		     5, "5", NULL);
	test_end();
}

/* An origin's Connection field naming Content-Length must not strip the
 * framing of a relayed body: on a kept-alive connection the client would
 * read the next response as part of this one. */
static void test_response_framing(void)
{
	static const char one[] = "GET /?size=5&hdr=Connection%3AContent-Length HTTP/1.1\r\n"
				  "Host: x\r\n\r\n";
	struct h_buf b = {0};
	struct h_raw_resp rr[2];
	char req[512];

	test_begin("response_framing_survives_connection");
	snprintf(req, sizeof(req), "%s%s", one, one);
	int fd = h_connect("127.0.0.1", gw_port, 3000);
	CHECK(fd >= 0);
	if (fd >= 0) {
		CHECK(h_send_str(fd, req) == 0);
		enum h_read_end end = h_read_responses(fd, &b, 2, 5000);
		int k = h_parse_responses(b.data ? b.data : "", b.len, rr, 2, NULL);
		CHECK_MSG(end == H_READ_DONE && k == 2, "read ended %s with %d responses: '%s'",
			  h_read_end_name(end), k, h_excerpt(b.data, b.len, 400));
		for (int i = 0; i < k; i++)
			CHECK_MSG(rr[i].status == 200 && rr[i].has_cl && rr[i].body_len == 5,
				  "response %d: status %d, Content-Length %s, %zu body bytes", i,
				  rr[i].status, rr[i].has_cl ? "kept" : "dropped", rr[i].body_len);
		h_raw_resp_free(rr, k);
		close(fd);
	}
	h_buf_free(&b);
	test_end();
}

static void test_unknown_method(void)
{
	char u[256];
	struct h_resp r;
	struct h_echo e;
	struct h_req q = {.url = u, .method = "FROBNICATE"};

	test_begin("unknown_method");
	url(u, sizeof(u), "/echo");
	CHECK(h_http(&q, &r) == 0);
	CHECK_MSG(r.status == 200, "FROBNICATE: status %ld body '%s'", r.status,
		  h_excerpt(r.body, r.body_len, 200));
	if (r.status == 200 && h_echo_parse(r.body, r.body_len, &e) == 0) {
		CHECK_STR(e.method, "FROBNICATE");
		h_echo_free(&e);
	}
	h_resp_free(&r);
	test_end();
}

static void test_absolute_form(void)
{
	struct h_raw_resp rr;
	struct h_echo e;
	char req[512];

	test_begin("absolute_form");
	snprintf(req, sizeof(req),
		 "GET http://127.0.0.1:%d/echo?abs=1 HTTP/1.1\r\n"
		 "Host: 127.0.0.1:%d\r\n"
		 "Connection: close\r\n\r\n",
		 gw_port, gw_port);
	if (raw_one(req, &rr) == 0) {
		if (h_echo_parse(rr.body, rr.body_len, &e) == 0) {
			CHECK_MSG(!strcmp(e.target, "/echo?abs=1"),
				  "origin saw target '%s', want origin-form '/echo?abs=1'",
				  e.target);
			h_echo_free(&e);
		} else {
			test_fail(__FILE__, __LINE__, "unparsable echo");
		}
		h_raw_resp_free(&rr, 1);
	}
	test_end();
}

static void test_ipv6(void)
{
	char u[256];
	struct h_resp r;
	struct h_req q = {.url = u};

	if (gw_port6 < 0) {
		test_skip("ipv6_listener", "no IPv6 loopback (::1) on this host");
		return;
	}
	test_begin("ipv6_listener");
	snprintf(u, sizeof(u), "http://[::1]:%d/?size=100", gw_port6);
	CHECK_MSG(h_http(&q, &r) == 0, "%s", r.error);
	CHECK_INT(r.status, 200);
	CHECK_INT(r.body_bytes, 100);
	h_resp_free(&r);
	test_end();
}

static void test_two_upstreams(void)
{
	int n1 = 0, n2 = 0, other = 0;

	test_begin("two_upstreams");
	for (int i = 0; i < 40; i++) {
		struct h_resp r;
		char who[64] = "";

		if (get("/?size=1", NULL, &r) == 200 &&
		    h_resp_header(&r, "X-Origin", who, sizeof(who))) {
			if (!strcmp(who, "o1"))
				n1++;
			else if (!strcmp(who, "o2"))
				n2++;
			else
				other++;
		}
		h_resp_free(&r);
	}
	CHECK_MSG(n1 > 0 && n2 > 0 && n1 + n2 == 40,
		  "40 requests: o1 got %d, o2 got %d, other/failed %d", n1, n2, 40 - n1 - n2);
	test_end();
}

/* Weighted round robin: o1 weight 1, o2 weight 2. Each worker keeps its
 * own rotation, so the split is exact per worker up to one cycle. */
static void test_round_robin_weights(void)
{
	int n1 = 0, n2 = 0;

	test_begin("round_robin_weights");
	for (int i = 0; i < 30; i++) {
		struct h_resp r;
		char who[64] = "";

		if (get("/rr/x?size=1", NULL, &r) == 200 &&
		    h_resp_header(&r, "X-Origin", who, sizeof(who))) {
			n1 += !strcmp(who, "o1");
			n2 += !strcmp(who, "o2");
		}
		h_resp_free(&r);
	}
	CHECK_MSG(n1 + n2 == 30 && n2 >= 17 && n2 <= 23,
		  "30 requests over weights 1:2: o1 got %d, o2 got %d (want about 10:20)", n1, n2);
	test_end();
}

static void test_routes(void)
{
	static const struct {
		const char *host, *path, *want;
	} cases[] = {
		{"api.example.com", "/v1/things", "api"},
		{"api.example.com:%d", "/v1/", "api"},
		{"api.example.com", "/v2/things", "default"},
		{"other.example.com", "/v1/things", "default"},
		{"api.example.com", "/v1", "default"},
	};

	test_begin("route_host_prefix");
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char host[128], hdr[160], who[64] = "";
		struct h_resp r;

		snprintf(host, sizeof(host), cases[i].host, gw_port);
		snprintf(hdr, sizeof(hdr), "Host: %s", host);
		const char *hx[] = {hdr, NULL};
		long st = get(cases[i].path, hx, &r);
		h_resp_header(&r, "X-Origin", who, sizeof(who));
		bool ok = st == 200 && (!strcmp(cases[i].want, "default")
						? (!strcmp(who, "o1") || !strcmp(who, "o2"))
						: !strcmp(who, cases[i].want));
		CHECK_MSG(ok, "Host %s path %s: status %ld X-Origin '%s', want pool %s", host,
			  cases[i].path, st, who, cases[i].want);
		h_resp_free(&r);
	}
	test_end();
}

/* Routes match the path and host an origin resolves, not their spelling:
 * each of these is /v1/things on api.example.com (sent raw: curl would
 * resolve the dot segments itself), so it must reach the api pool. */
static void test_route_spellings(void)
{
	static const struct {
		const char *host, *path;
	} cases[] = {
		{"api.example.com", "//v1/things"},
		{"api.example.com", "/./v1/things"},
		{"api.example.com", "/%761/things"},
		{"api.example.com", "/x/../v1/things"},
		{"API.Example.COM.", "/v1/things"},
		{"api.example.com.:80", "/v1//things"},
	};

	test_begin("route_path_and_host_spellings");
	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char who[64] = "";
		struct h_buf b = {0};
		h_raw_get(gw_port, cases[i].host, cases[i].path, &b, 5000);
		const char *o = b.data ? memmem(b.data, b.len, "\r\nX-Origin: ", 12) : NULL;
		if (o)
			sscanf(o + 12, "%63[^\r]", who);
		CHECK_MSG(!strcmp(who, "api"), "Host %s path %s: X-Origin '%s', want api (%s)",
			  cases[i].host, cases[i].path, who, h_excerpt(b.data, b.len, 80));
		h_buf_free(&b);
	}
	test_end();
}

static void test_listening_lines(struct h_proc *gw)
{
	char want[128];

	test_begin("listening_lines");
	snprintf(want, sizeof(want), "reflexd: listening on 127.0.0.1:%d", gw_port);
	CHECK_MSG(h_log_contains(gw, want), "no '%s' on stderr (%s)", want, gw->log);
	if (gw_port6 > 0) {
		snprintf(want, sizeof(want), "reflexd: listening on [::1]:%d", gw_port6);
		CHECK_MSG(h_log_contains(gw, want), "no '%s' on stderr (%s)", want, gw->log);
	}
	test_end();
}

struct slow_get {
	pthread_t thread;
	int port;
	long status;
	char who[64];
};

static void *slow_get_run(void *arg)
{
	struct slow_get *sg = arg;
	struct h_resp r;
	char u[256];

	snprintf(u, sizeof(u), "http://127.0.0.1:%d/?delay=3000&size=1", sg->port);
	sg->status = h_get(u, &r);
	h_resp_header(&r, "X-Origin", sg->who, sizeof(sg->who));
	h_resp_free(&r);
	return NULL;
}

/* reflexd from flags alone (no file): --listen, --upstream twice (the
 * default pool), --workers 1. With one worker its in-flight counts are the
 * whole picture, so P2C must steer around an endpoint that is busy with a
 * slow request: every quick request meanwhile goes to the other one. */
static void test_flags_only_and_p2c(void)
{
	int port = h_free_port();
	char listen[64], up1[64], up2[64], u[256];
	const char *args[] = {"--listen", listen,      "--upstream", up1, "--upstream",
			      up2,	  "--workers", "1",	     NULL};
	struct slow_get sg = {.port = port};
	char who[10][64];
	int ok = 0;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(up1, sizeof(up1), "127.0.0.1:%d", o1_port);
	snprintf(up2, sizeof(up2), "127.0.0.1:%d", o2_port);
	test_begin("flags_only_start");
	struct h_proc *gw = h_start_reflexd("reflexd-flags", port, args);
	CHECK_MSG(gw != NULL, "reflexd --listen --upstream --upstream --workers 1 did not start");
	if (!gw) {
		test_end();
		return;
	}
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/?size=10", port);
	for (int i = 0; i < 10; i++) {
		struct h_resp r;
		char w[64] = "";

		if (h_get(u, &r) == 200 && h_resp_header(&r, "X-Origin", w, sizeof(w)) &&
		    (!strcmp(w, "o1") || !strcmp(w, "o2")))
			ok++;
		h_resp_free(&r);
	}
	CHECK_MSG(ok == 10, "%d of 10 requests answered by o1/o2", ok);
	test_end();

	test_begin("p2c_avoids_busy_endpoint");
	struct h_origin_stats s1, s2;
	long before = h_origin_stats(o1_port, &s1) == 0 && h_origin_stats(o2_port, &s2) == 0
			      ? s1.requests + s2.requests
			      : -1;
	pthread_create(&sg.thread, NULL, slow_get_run, &sg);
	/* The quick requests start once the slow one is at an origin (it is
	 * counted before its delay), and have its 3 s to get done in. */
	for (double end = h_now_ms() + 5000; before >= 0 && h_now_ms() < end; h_sleep_ms(20))
		if (h_origin_stats(o1_port, &s1) == 0 && h_origin_stats(o2_port, &s2) == 0 &&
		    s1.requests + s2.requests > before)
			break;
	for (int i = 0; i < 10; i++) {
		struct h_resp r;

		who[i][0] = 0;
		h_get(u, &r);
		h_resp_header(&r, "X-Origin", who[i], sizeof(who[i]));
		h_resp_free(&r);
	}
	pthread_join(sg.thread, NULL);
	CHECK_MSG(sg.status == 200 && sg.who[0], "slow request: status %ld X-Origin '%s'",
		  sg.status, sg.who);
	int to_busy = 0;
	for (int i = 0; i < 10; i++)
		to_busy += !strcmp(who[i], sg.who);
	CHECK_MSG(to_busy == 0,
		  "%d of 10 quick requests went to %s while it had a request in flight (the other "
		  "endpoint had none)",
		  to_busy, sg.who);
	test_end();
	h_finish(gw, 5000);
}

int main(void)
{
	h_init("10_proxy_basic", 90);
	gw_port = h_free_port();
	gw_port6 = h_free_port6();
	o1_port = h_free_port();
	o2_port = h_free_port();
	api_port = h_free_port();

	struct h_proc *o1 = h_start_origin("o1", o1_port, 1);
	struct h_proc *o2 = h_start_origin("o2", o2_port, 1);
	struct h_proc *api = h_start_origin("api", api_port, 1);
	if (!o1 || !o2 || !api) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	char listen6[64] = "";
	if (gw_port6 > 0)
		snprintf(listen6, sizeof(listen6), ", \"[::1]:%d\"", gw_port6);
	const char *cfg =
		h_write_config("workers: 2\n"
			       "listen: [\"127.0.0.1:%d\"%s]\n"
			       "upstream: [\"127.0.0.1:%d\", \"127.0.0.1:%d\"]\n"
			       "limits: {body: 4m}\n"
			       "timeouts: {drain: 1s}\n"
			       "pools:\n"
			       "  api: {endpoints: [\"127.0.0.1:%d\"]}\n"
			       "  rr:\n"
			       "    balance: round_robin\n"
			       "    endpoints: [\"127.0.0.1:%d\", "
			       "{address: \"127.0.0.1:%d\", weight: 2}]\n"
			       "routes:\n"
			       "  - {host: api.example.com, path_prefix: /v1/, pool: api}\n"
			       "  - {path_prefix: /rr/, pool: rr}\n",
			       gw_port, listen6, o1_port, o2_port, api_port, o1_port, o2_port);
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start (config %s)", cfg);
		return test_exit_code();
	}

	test_get_sizes();
	test_head();
	test_post_integrity();
	test_forwarded_headers();
	test_request_id();
	test_hop_by_hop_request();
	test_hop_by_hop_response();
	test_request_framing();
	test_response_framing();
	test_unknown_method();
	test_absolute_form();
	test_ipv6();
	test_two_upstreams();
	test_routes();
	test_route_spellings();
	test_round_robin_weights();
	test_listening_lines(gw);
	test_flags_only_and_p2c();

	h_finish(gw, 5000);
	return test_exit_code();
}
