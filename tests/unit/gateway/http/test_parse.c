/* test_parse.c — the strict HTTP/1.1 parser (gateway/http/parse.c).
 *
 * Table-driven. Every input is placed against a guard page with
 * test_guard_place(), so a read past `len` faults instead of passing.
 */
#include "http/parse.h"
#include "tests/lib/test.h"

#include <stdlib.h>

/* The case tables leave the fields a case does not check zero. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#define S(lit) lit, sizeof(lit) - 1
#define ALL (-100) /* expected consumed: the whole input */

static struct http_limits lim;
static struct http_header hdrs[128];

static bool view_inside(struct http_str s, const char *buf, size_t len)
{
	if (s.len == 0)
		return true;
	return s.p >= buf && s.p + s.len <= buf + len;
}

/* ---- requests ----------------------------------------------------------- */

struct req_case {
	const char *name;
	const char *in;
	size_t len;
	int rc;	    /* consumed (ALL = len), -2, or -1 */
	int status; /* err.status when rc == -1 */
	const char *method, *path, *authority, *host;
	int minor;
	enum http_body body;
	uint64_t cl;
	bool keep_alive, expect_continue, is_head, is_connect, has_upgrade;
	int n_headers;
};

static const struct req_case valid_reqs[] = {
	{"get", S("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"), ALL, 0, "GET", "/", "",
	 "example.com", 1, HTTP_BODY_NONE, 0, true, false, false, false, false, 1},
	{"get_query_ows",
	 S("GET /a/b?c=d&e HTTP/1.1\r\nHost:example.com:8080 \t\r\nX-A: \t v 1 \r\n\r\n"), ALL, 0,
	 "GET", "/a/b?c=d&e", "", "example.com:8080", 1, HTTP_BODY_NONE, 0, true, false, false,
	 false, false, 2},
	{"head", S("HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n"), ALL, 0, "HEAD", "/x", "", "h", 1,
	 HTTP_BODY_NONE, 0, true, false, true, false, false, 1},
	{"post_cl_body_follows", S("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello"),
	 48, 0, "POST", "/p", "", "h", 1, HTTP_BODY_LENGTH, 5, true, false, false, false, false, 2},
	{"post_cl_zero", S("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n"), ALL, 0,
	 "POST", "/p", "", "h", 1, HTTP_BODY_LENGTH, 0, true, false, false, false, false, 2},
	{"post_chunked", S("POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"),
	 ALL, 0, "POST", "/p", "", "h", 1, HTTP_BODY_CHUNKED, 0, true, false, false, false, false,
	 2},
	{"post_chunked_case",
	 S("POST /p HTTP/1.1\r\nHost: h\r\ntransfer-encoding: ChUnKeD\r\n\r\n"), ALL, 0, "POST",
	 "/p", "", "h", 1, HTTP_BODY_CHUNKED, 0, true, false, false, false, false, 2},
	{"http10_no_keepalive", S("GET / HTTP/1.0\r\n\r\n"), ALL, 0, "GET", "/", "", "", 0,
	 HTTP_BODY_NONE, 0, false, false, false, false, false, 0},
	{"http10_keepalive", S("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\nHost: h\r\n\r\n"), ALL,
	 0, "GET", "/", "", "h", 0, HTTP_BODY_NONE, 0, true, false, false, false, false, 2},
	{"http10_expect_ignored",
	 S("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n"), ALL, 0, "POST",
	 "/", "", "", 0, HTTP_BODY_LENGTH, 1, false, false, false, false, false, 2},
	/* a higher minor of a major we implement is read as 1.1 (RFC 9110 §2.5) */
	{"http12_as_11", S("GET / HTTP/1.2\r\nHost: h\r\n\r\n"), ALL, 0, "GET", "/", "", "h", 1,
	 HTTP_BODY_NONE, 0, true, false, false, false, false, 1},
	{"http11_close", S("GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n"), ALL, 0, "GET",
	 "/", "", "h", 1, HTTP_BODY_NONE, 0, false, false, false, false, false, 2},
	{"connection_list",
	 S("GET / HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, , CLOSE ,foo\r\n\r\n"), ALL, 0, "GET",
	 "/", "", "h", 1, HTTP_BODY_NONE, 0, false, false, false, false, false, 2},
	{"connection_list_10", S("GET / HTTP/1.0\r\nConnection: foo,keep-alive\r\n\r\n"), ALL, 0,
	 "GET", "/", "", "", 0, HTTP_BODY_NONE, 0, true, false, false, false, false, 1},
	{"connection_close_wins", S("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n"), ALL,
	 0, "GET", "/", "", "", 0, HTTP_BODY_NONE, 0, false, false, false, false, false, 1},
	{"connection_token_not_substring",
	 S("GET / HTTP/1.1\r\nHost: h\r\nConnection: closed\r\n\r\n"), ALL, 0, "GET", "/", "", "h",
	 1, HTTP_BODY_NONE, 0, true, false, false, false, false, 2},
	{"absolute_form",
	 S("GET http://example.com:81/a?b HTTP/1.1\r\nHost: example.com:81\r\n\r\n"), ALL, 0, "GET",
	 "/a?b", "example.com:81", "example.com:81", 1, HTTP_BODY_NONE, 0, true, false, false,
	 false, false, 1},
	{"absolute_form_https_no_path", S("GET HTTPS://[::1]:8443 HTTP/1.1\r\nHost: x\r\n\r\n"),
	 ALL, 0, "GET", "/", "[::1]:8443", "x", 1, HTTP_BODY_NONE, 0, true, false, false, false,
	 false, 1},
	{"options_star", S("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n"), ALL, 0, "OPTIONS", "*", "",
	 "h", 1, HTTP_BODY_NONE, 0, true, false, false, false, false, 1},
	{"unknown_method", S("PURGE-X /k HTTP/1.1\r\nHost: h\r\n\r\n"), ALL, 0, "PURGE-X", "/k", "",
	 "h", 1, HTTP_BODY_NONE, 0, true, false, false, false, false, 1},
	{"connect", S("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"), ALL, 0,
	 "CONNECT", "", "example.com:443", "example.com:443", 1, HTTP_BODY_NONE, 0, true, false,
	 false, true, false, 1},
	{"upgrade",
	 S("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"), ALL,
	 0, "GET", "/ws", "", "h", 1, HTTP_BODY_NONE, 0, true, false, false, false, true, 3},
	{"expect_continue",
	 S("PUT /u HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n"), ALL,
	 0, "PUT", "/u", "", "h", 1, HTTP_BODY_LENGTH, 3, true, true, false, false, false, 3},
	{"cl_repeated_list", S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n"), ALL,
	 0, "POST", "/", "", "h", 1, HTTP_BODY_LENGTH, 5, true, false, false, false, false, 2},
	{"cl_repeated_fields",
	 S("POST / HTTP/1.1\r\nContent-Length: 7\r\nHost: h\r\ncontent-length: 007\r\n\r\n"), ALL,
	 0, "POST", "/", "", "h", 1, HTTP_BODY_LENGTH, 7, true, false, false, false, false, 3},
	{"cl_max", S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775807\r\n\r\n"),
	 ALL, 0, "POST", "/", "", "h", 1, HTTP_BODY_LENGTH, UINT64_C(9223372036854775807), true,
	 false, false, false, false, 2},
	{"underscore_other_name", S("GET / HTTP/1.1\r\nHost: h\r\nContent_Lengths: 4\r\n\r\n"),
	 ALL, 0, "GET", "/", "", "h", 1, HTTP_BODY_NONE, 0, true, false, false, false, false, 2},
	{"leading_crlf", S("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"), ALL, 0, "GET", "/", "",
	 "h", 1, HTTP_BODY_NONE, 0, true, false, false, false, false, 1},
	{"empty_value_and_obs_text",
	 S("GET / HTTP/1.1\r\nHost: h\r\nX-E:\r\nX-U: caf\xc3\xa9\tok\r\n\r\n"), ALL, 0, "GET", "/",
	 "", "h", 1, HTTP_BODY_NONE, 0, true, false, false, false, false, 3},
	{"empty_host_11", S("GET / HTTP/1.1\r\nHost:\r\n\r\n"), ALL, 0, "GET", "/", "", "", 1,
	 HTTP_BODY_NONE, 0, true, false, false, false, false, 1},
	{"pipelined", S("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n"), 28,
	 0, "GET", "/1", "", "h", 1, HTTP_BODY_NONE, 0, true, false, false, false, false, 1},
	{"long_values_swar",
	 S("GET /aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xff HTTP/1.1\r\nHost: h\r\n"
	   "User-Agent: Mozilla/5.0 (X11; Linux x86_64)\tAppleWebKit/537.36 (KHTML, like "
	   "Gecko)\r\n\r\n"),
	 ALL, 0, "GET", "/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xff", "", "h", 1,
	 HTTP_BODY_NONE, 0, true, false, false, false, false, 2},
};

static const struct req_case bad_reqs[] = {
	/* framing */
	{"cl_underscore", S("GET / HTTP/1.1\r\nHost: h\r\nContent_Length: 40\r\n\r\n"), -1,
	 400},
	{"te_underscore", S("POST / HTTP/1.1\r\nHost: h\r\ntransfer_encoding: chunked\r\n\r\n"),
	 -1, 400},
	{"cl_and_te",
	 S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"),
	 -1, 400},
	{"te_and_cl",
	 S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"),
	 -1, 400},
	{"cl_differ_fields",
	 S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"), -1,
	 400},
	{"cl_differ_list", S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n"), -1,
	 400},
	{"cl_non_digit", S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5a\r\n\r\n"), -1, 400},
	{"cl_sign", S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n"), -1, 400},
	{"cl_hex", S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x5\r\n\r\n"), -1, 400},
	{"cl_empty", S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: \r\n\r\n"), -1, 400},
	{"cl_empty_element", S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,,5\r\n\r\n"), -1,
	 400},
	{"cl_inner_space", S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n"), -1, 400},
	{"cl_overflow_2p63",
	 S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9223372036854775808\r\n\r\n"), -1, 400},
	{"cl_overflow_u64",
	 S("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999999\r\n\r\n"), -1,
	 400},
	{"te_gzip_chunked",
	 S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), -1, 501},
	{"te_gzip_chunked_split",
	 S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: "
	   "chunked\r\n\r\n"),
	 -1, 501},
	{"te_chunked_gzip",
	 S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), -1, 400},
	{"te_chunked_chunked",
	 S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n"), -1, 400},
	{"te_chunked_twice_fields",
	 S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
	   "chunked\r\n\r\n"),
	 -1, 400},
	{"te_gzip_only", S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n"), -1,
	 400},
	{"te_empty", S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \r\n\r\n"), -1, 400},
	{"te_chunked_param",
	 S("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n"), -1, 400},
	{"te_on_http10", S("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"), -1, 400},
	/* line endings and field syntax */
	{"bare_lf_request_line", S("GET / HTTP/1.1\nHost: h\r\n\r\n"), -1, 400},
	{"bare_lf_header", S("GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n"), -1, 400},
	{"bare_lf_end", S("GET / HTTP/1.1\r\nHost: h\r\n\n"), -1, 400},
	{"bare_cr_request_line", S("GET / HTTP/1.1\rHost: h\r\n\r\n"), -1, 400},
	{"bare_cr_header", S("GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n"), -1, 400},
	{"bare_cr_end", S("GET / HTTP/1.1\r\nHost: h\r\n\rX"), -1, 400},
	{"obs_fold", S("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n"), -1, 400},
	{"obs_fold_tab", S("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n"), -1, 400},
	{"ws_before_colon", S("GET / HTTP/1.1\r\nHost : h\r\n\r\n"), -1, 400},
	{"tab_before_colon", S("GET / HTTP/1.1\r\nHost\t: h\r\n\r\n"), -1, 400},
	{"empty_name", S("GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n"), -1, 400},
	{"bad_name_char", S("GET / HTTP/1.1\r\nHost: h\r\nX(y): v\r\n\r\n"), -1, 400},
	{"no_colon", S("GET / HTTP/1.1\r\nHost: h\r\nXy\r\n\r\n"), -1, 400},
	{"nul_in_value", S("GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n"), -1, 400},
	{"ctl_in_value", S("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01z\r\n\r\n"), -1, 400},
	{"del_in_value", S("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7fz\r\n\r\n"), -1, 400},
	{"esc_in_long_value",
	 S("GET / HTTP/1.1\r\nHost: h\r\nX: abcdefghijklmnopqrstuvwxyz\x1b[0m\r\n\r\n"), -1, 400},
	/* request line and target */
	{"nul_in_target", S("GET /a\0b HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"ctl_in_target", S("GET /a\x01 HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"del_in_target", S("GET /abcdefghijklmnop\x7f HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"tab_in_target", S("GET /a\tb HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"space_in_target", S("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"double_space", S("GET  / HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"fragment", S("GET /a#b HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"http09", S("GET /\r\n\r\n"), -1, 400},
	{"no_method", S(" / HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"bad_method_char", S("GE(T / HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"relative_target", S("GET a/b HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"ftp_target", S("GET ftp://h/a HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"absolute_userinfo", S("GET http://u@h/a HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"absolute_empty_authority", S("GET http:///a HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"absolute_query_no_path", S("GET http://h?x HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"star_without_options", S("GET * HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"connect_origin_form", S("CONNECT / HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"connect_no_port", S("CONNECT example.com HTTP/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"authority_form_without_connect", S("GET example.com:80 HTTP/1.1\r\nHost: h\r\n\r\n"), -1,
	 400},
	{"http20", S("GET / HTTP/2.0\r\nHost: h\r\n\r\n"), -1, 505},
	{"http09", S("GET / HTTP/0.9\r\nHost: h\r\n\r\n"), -1, 505},
	{"http_lower", S("GET / http/1.1\r\nHost: h\r\n\r\n"), -1, 400},
	{"version_trailing", S("GET / HTTP/1.1 \r\nHost: h\r\n\r\n"), -1, 400},
	{"version_short", S("GET / HTTP/1\r\nHost: h\r\n\r\n"), -1, 400},
	/* Host */
	{"missing_host_11", S("GET / HTTP/1.1\r\nX: y\r\n\r\n"), -1, 400},
	{"duplicate_host", S("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n"), -1, 400},
	{"duplicate_host_10", S("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n"), -1, 400},
	{"host_with_slash", S("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), -1, 400},
	{"host_with_space", S("GET / HTTP/1.1\r\nHost: a b\r\n\r\n"), -1, 400},
	/* Expect */
	{"expect_other", S("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n"), -1, 417},
	/* early detection: invalid before the head is complete */
	{"early_bare_lf", S("GET / HTTP/1.1\r\nHost: h\n"), -1, 400},
	{"early_bad_version", S("GET / HTTP/2.0"), -1, 505},
	{"early_malformed_version", S("GET / HTTP/x"), -1, 400},
	{"early_malformed_version", S("GET / HTTP/x"), -1, 400},
	{"early_version_bare_lf", S("GET / HTTP/1.1\n"), -1, 400},
};

static void check_req_fields(const struct req_case *c, const struct http_request *r,
			     const char *buf, size_t len)
{
	CHECK_MSG(http_str_eq(r->method, c->method), "method %.*s", (int)r->method.len,
		  r->method.p);
	CHECK_MSG(r->path.len == strlen(c->path) &&
			  (r->path.len == 0 || memcmp(r->path.p, c->path, r->path.len) == 0),
		  "path \"%.*s\", expected \"%s\"", (int)r->path.len, r->path.p, c->path);
	CHECK_MSG(http_str_eq(r->authority, c->authority), "authority %.*s", (int)r->authority.len,
		  r->authority.p);
	CHECK_MSG(http_str_eq(r->host, c->host), "host %.*s", (int)r->host.len, r->host.p);
	CHECK_INT(r->minor_version, c->minor);
	CHECK_INT(r->body, c->body);
	if (c->body == HTTP_BODY_LENGTH)
		CHECK(r->content_length == c->cl);
	CHECK_INT(r->keep_alive, c->keep_alive);
	CHECK_INT(r->expect_continue, c->expect_continue);
	CHECK_INT(r->is_head, c->is_head);
	CHECK_INT(r->is_connect, c->is_connect);
	CHECK_INT(r->has_upgrade, c->has_upgrade);
	CHECK_INT(r->n_headers, c->n_headers);
	CHECK(view_inside(r->method, buf, len));
	CHECK(view_inside(r->target, buf, len));
	CHECK(view_inside(r->authority, buf, len));
	CHECK(view_inside(r->host, buf, len));
	/* path is inside the input, or the static "/" of "http://host" */
	CHECK(view_inside(r->path, buf, len) || (r->path.len == 1 && r->path.p[0] == '/'));
	for (unsigned i = 0; i < r->n_headers && i < r->max_headers; i++) {
		CHECK(view_inside(r->headers[i].name, buf, len));
		CHECK(view_inside(r->headers[i].value, buf, len));
		CHECK(r->headers[i].name.len > 0);
	}
}

static int parse_req_placed(const char *in, size_t len, struct http_request *r,
			    struct http_error *e, const char **placed)
{
	const char *b = test_guard_place(in, len);

	memset(r, 0, sizeof(*r));
	r->headers = hdrs;
	r->max_headers = 128;
	*placed = b;
	return http_parse_request(b, len, r, &lim, e);
}

static void test_valid_requests(void)
{
	for (size_t i = 0; i < sizeof(valid_reqs) / sizeof(valid_reqs[0]); i++) {
		const struct req_case *c = &valid_reqs[i];
		char name[128];
		struct http_request r;
		struct http_error e;
		const char *b;
		int want = c->rc == ALL ? (int)c->len : c->rc;
		int rc;

		snprintf(name, sizeof(name), "request_valid_%s", c->name);
		test_begin(name);
		rc = parse_req_placed(c->in, c->len, &r, &e, &b);
		CHECK_MSG(rc == want, "rc %d, expected %d (%d %s)", rc, want, e.status,
			  e.reason ? e.reason : "");
		if (rc == want)
			check_req_fields(c, &r, b, c->len);

		/* Every strict prefix of the head needs more; the full head then
		 * gives the same result. */
		for (size_t k = 0; k < (size_t)want && !test_failed(); k++) {
			rc = parse_req_placed(c->in, k, &r, &e, &b);
			CHECK_MSG(rc == -2, "prefix %zu: rc %d (%s)", k, rc,
				  e.reason ? e.reason : "");
		}
		if (!test_failed()) {
			rc = parse_req_placed(c->in, c->len, &r, &e, &b);
			CHECK_INT(rc, want);
			if (rc == want)
				check_req_fields(c, &r, b, c->len);
		}
		test_end();
	}
}

static void test_bad_requests(void)
{
	for (size_t i = 0; i < sizeof(bad_reqs) / sizeof(bad_reqs[0]); i++) {
		const struct req_case *c = &bad_reqs[i];
		char name[128];
		struct http_request r;
		struct http_error e;
		const char *b;
		int rc;

		snprintf(name, sizeof(name), "request_bad_%s", c->name);
		test_begin(name);
		rc = parse_req_placed(c->in, c->len, &r, &e, &b);
		CHECK_MSG(rc == -1, "rc %d, expected -1", rc);
		CHECK_MSG(e.status == c->status, "status %d (%s), expected %d", e.status,
			  e.reason ? e.reason : "(null)", c->status);
		CHECK(e.reason && e.reason[0]);
		/* a prefix never turns an error into success */
		for (size_t k = 0; k < c->len; k++) {
			rc = parse_req_placed(c->in, k, &r, &e, &b);
			CHECK_MSG(rc == -1 || rc == -2, "prefix %zu: rc %d", k, rc);
		}
		test_end();
	}
}

/* Build "GET /aaa... HTTP/1.1\r\n" with a request line of exactly `line` bytes. */
static char *long_line_request(size_t line, const char *rest, size_t *out_len)
{
	size_t rl = strlen(rest);
	char *s = malloc(line + rl + 1);
	size_t tl = line - strlen("GET  HTTP/1.1\r\n");

	memcpy(s, "GET /", 5);
	memset(s + 5, 'a', tl - 1);
	memcpy(s + 4 + tl, " HTTP/1.1\r\n", 11);
	memcpy(s + line, rest, rl + 1);
	*out_len = line + rl;
	return s;
}

static void test_limits(void)
{
	struct http_request r;
	struct http_error e;
	const char *b;
	size_t n;
	char *s;
	int rc;

	test_begin("request_line_at_limit_ok");
	s = long_line_request(lim.max_request_line, "Host: h\r\n\r\n", &n);
	rc = parse_req_placed(s, n, &r, &e, &b);
	CHECK_INT(rc, (int)n);
	/* incomplete but still within the limit: need more */
	rc = parse_req_placed(s, lim.max_request_line - 1, &r, &e, &b);
	CHECK_INT(rc, -2);
	free(s);
	test_end();

	test_begin("request_line_over_limit_414_complete");
	s = long_line_request(lim.max_request_line + 1, "Host: h\r\n\r\n", &n);
	rc = parse_req_placed(s, n, &r, &e, &b);
	CHECK_INT(rc, -1);
	CHECK_INT(e.status, 414);
	test_end();

	test_begin("request_line_over_limit_414_incomplete");
	/* The first max_request_line bytes of a too-long line: it cannot fit. */
	rc = parse_req_placed(s, lim.max_request_line, &r, &e, &b);
	CHECK_INT(rc, -1);
	CHECK_INT(e.status, 414);
	rc = parse_req_placed(s, lim.max_request_line + 5, &r, &e, &b);
	CHECK_INT(rc, -1);
	CHECK_INT(e.status, 414);
	free(s);
	test_end();

	test_begin("request_line_long_target_incomplete_needs_more");
	s = long_line_request(lim.max_request_line, "", &n);
	rc = parse_req_placed(s, 7000, &r, &e, &b);
	CHECK_INT(rc, -2);
	free(s);
	test_end();

	/* max_headers fields are fine, one more is 431 */
	char *big = malloc(64 * 1024);
	size_t off;

	test_begin("headers_at_count_limit_ok");
	off = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\n");
	for (unsigned i = 1; i < lim.max_headers; i++)
		off += (size_t)sprintf(big + off, "X-%u: v\r\n", i);
	off += (size_t)sprintf(big + off, "\r\n");
	rc = parse_req_placed(big, off, &r, &e, &b);
	CHECK_INT(rc, (int)off);
	CHECK_INT(r.n_headers, lim.max_headers);
	test_end();

	test_begin("headers_over_count_431");
	off = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\n");
	for (unsigned i = 0; i < lim.max_headers; i++)
		off += (size_t)sprintf(big + off, "X-%u: v\r\n", i);
	off += (size_t)sprintf(big + off, "\r\n");
	rc = parse_req_placed(big, off, &r, &e, &b);
	CHECK_INT(rc, -1);
	CHECK_INT(e.status, 431);
	test_end();

	test_begin("headers_capacity_smaller_than_limit_431");
	{
		const char *in = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";

		b = test_guard_place(in, strlen(in));
		memset(&r, 0, sizeof(r));
		r.headers = hdrs;
		r.max_headers = 2;
		rc = http_parse_request(b, strlen(in), &r, &lim, &e);
		CHECK_INT(rc, -1);
		CHECK_INT(e.status, 431);
	}
	test_end();

	test_begin("head_over_32k_431");
	off = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\n");
	for (unsigned i = 0; off < lim.max_head_bytes + 100; i++) {
		off += (size_t)sprintf(big + off, "X-%u: ", i);
		memset(big + off, 'v', 1000);
		off += 1000;
		off += (size_t)sprintf(big + off, "\r\n");
	}
	off += (size_t)sprintf(big + off, "\r\n");
	rc = parse_req_placed(big, off, &r, &e, &b);
	CHECK_INT(rc, -1);
	CHECK_INT(e.status, 431);
	/* incomplete, at the limit: it cannot fit any more */
	rc = parse_req_placed(big, lim.max_head_bytes, &r, &e, &b);
	CHECK_INT(rc, -1);
	CHECK_INT(e.status, 431);
	/* incomplete, under the limit: need more */
	rc = parse_req_placed(big, lim.max_head_bytes - 1, &r, &e, &b);
	CHECK_INT(rc, -2);
	test_end();

	test_begin("head_exactly_at_limit_ok");
	off = (size_t)sprintf(big, "GET / HTTP/1.1\r\nHost: h\r\nX: ");
	memset(big + off, 'v', lim.max_head_bytes - off - 4);
	off = lim.max_head_bytes - 4;
	memcpy(big + off, "\r\n\r\n", 4);
	off += 4;
	rc = parse_req_placed(big, off, &r, &e, &b);
	CHECK_INT(rc, (int)off);
	big[off - 5] = 'v';
	memcpy(big + off - 4, "v\r\n\r\n", 5);
	rc = parse_req_placed(big, off + 1, &r, &e, &b);
	CHECK_INT(rc, -1);
	CHECK_INT(e.status, 431);
	test_end();
	free(big);
}

/* ---- responses ---------------------------------------------------------- */

struct res_case {
	const char *name;
	const char *in;
	size_t len;
	bool head;
	int rc;
	int status; /* response status, or err.status when rc == -1 */
	const char *reason;
	enum http_body body;
	uint64_t cl;
	bool keep_alive, has_cl;
};

static const struct res_case res_cases[] = {
	{"ok", S("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"), false, 38, 200, "OK",
	 HTTP_BODY_LENGTH, 2, true, true},
	{"reason_spaces",
	 S("HTTP/1.0 404 Not  Found\t!\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"),
	 false, ALL, 404, "Not  Found\t!", HTTP_BODY_LENGTH, 0, true, true},
	{"empty_reason", S("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n"), false, ALL, 200, "",
	 HTTP_BODY_LENGTH, 0, true, true},
	{"no_reason", S("HTTP/1.1 503\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"), false,
	 ALL, 503, "", HTTP_BODY_LENGTH, 0, false, true},
	{"obs_text_reason", S("HTTP/1.1 200 \xc3\xa9t\xc3\xa9\r\nContent-Length: 0\r\n\r\n"), false,
	 ALL, 200, "\xc3\xa9t\xc3\xa9", HTTP_BODY_LENGTH, 0, true, true},
	{"chunked", S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), false, ALL, 200,
	 "OK", HTTP_BODY_CHUNKED, 0, true, false},
	{"until_close", S("HTTP/1.1 200 OK\r\nServer: x\r\n\r\n"), false, ALL, 200, "OK",
	 HTTP_BODY_UNTIL_CLOSE, 0, false, false},
	{"until_close_10", S("HTTP/1.0 200 OK\r\n\r\n"), false, ALL, 200, "OK",
	 HTTP_BODY_UNTIL_CLOSE, 0, false, false},
	{"http10_cl_no_keepalive", S("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n"), false, ALL,
	 200, "OK", HTTP_BODY_LENGTH, 3, false, true},
	{"204_no_body", S("HTTP/1.1 204 No Content\r\n\r\n"), false, ALL, 204, "No Content",
	 HTTP_BODY_NONE, 0, true, false},
	/* a 204 that announces a body may send it: never reused */
	{"204_with_cl_not_reused", S("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"),
	 false, ALL, 204, "No Content", HTTP_BODY_NONE, 0, false, true},
	{"204_with_te_not_reused",
	 S("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n"), false, ALL, 204,
	 "No Content", HTTP_BODY_NONE, 0, false, false},
	{"204_with_cl_0_reused", S("HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"),
	 false, ALL, 204, "No Content", HTTP_BODY_NONE, 0, true, true},
	{"304_keeps_cl", S("HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n"), false, ALL,
	 304, "Not Modified", HTTP_BODY_NONE, 0, true, true},
	{"head_with_cl", S("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"), true, ALL, 200, "OK",
	 HTTP_BODY_NONE, 0, true, true},
	{"head_with_chunked", S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), true, ALL,
	 200, "OK", HTTP_BODY_NONE, 0, true, false},
	{"100_continue", S("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"), false, 25, 100,
	 "Continue", HTTP_BODY_NONE, 0, true, false},
	{"cl_repeat", S("HTTP/1.1 200 OK\r\nContent-Length: 4, 4\r\ncontent-length: 4\r\n\r\n"),
	 false, ALL, 200, "OK", HTTP_BODY_LENGTH, 4, true, true},
	{"status_999", S("HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n"), false, ALL, 999, "Odd",
	 HTTP_BODY_LENGTH, 0, true, true},
	/* malformed: all 502 */
	{"bad_status_short", S("HTTP/1.1 20 OK\r\n\r\n"), false, -1, 502},
	{"bad_status_long", S("HTTP/1.1 2000 OK\r\n\r\n"), false, -1, 502},
	{"bad_status_zero", S("HTTP/1.1 099 OK\r\n\r\n"), false, -1, 502},
	{"bad_status_alpha", S("HTTP/1.1 2x0 OK\r\n\r\n"), false, -1, 502},
	{"bad_version", S("HTTP/2.0 200 OK\r\n\r\n"), false, -1, 502},
	{"bad_version_30", S("HTTP/3.0 200 OK\r\n\r\n"), false, -1, 502},
	{"not_http", S("ICY 200 OK\r\n\r\n"), false, -1, 502},
	{"bare_lf_status", S("HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n"), false, -1, 502},
	{"bare_lf_header", S("HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n"), false, -1, 502},
	{"cr_in_value", S("HTTP/1.1 200 OK\r\nX: a\rSet-Cookie: x\r\n\r\n"), false, -1, 502},
	{"nul_in_value", S("HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n"), false, -1, 502},
	{"nul_in_reason", S("HTTP/1.1 200 O\0K\r\n\r\n"), false, -1, 502},
	{"obs_fold", S("HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n"), false, -1, 502},
	{"ws_before_colon", S("HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\n"), false, -1, 502},
	{"cl_conflict", S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"),
	 false, -1, 502},
	{"cl_invalid", S("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"), false, -1, 502},
	{"cl_and_te",
	 S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), false, -1,
	 502},
	{"cl_and_te_head",
	 S("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"), true, -1,
	 502},
	{"te_gzip_chunked", S("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"), false,
	 -1, 502},
	{"te_chunked_gzip", S("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"), false,
	 -1, 502},
	{"te_on_10", S("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"), false, -1, 502},
};

static void test_responses(void)
{
	struct http_limits rl = lim;

	for (size_t i = 0; i < sizeof(res_cases) / sizeof(res_cases[0]); i++) {
		const struct res_case *c = &res_cases[i];
		int want = c->rc == ALL ? (int)c->len : c->rc;
		struct http_response res;
		struct http_error e;
		char name[128];
		const char *b;
		int rc;

		snprintf(name, sizeof(name), "response_%s", c->name);
		test_begin(name);
		for (size_t k = 0; k <= c->len; k++) {
			size_t n = k < c->len ? k : c->len;

			b = test_guard_place(c->in, n);
			memset(&res, 0, sizeof(res));
			res.headers = hdrs;
			res.max_headers = 128;
			rc = http_parse_response(b, n, &res, c->head, &rl, &e);
			if (n < c->len) {
				/* prefixes of a valid head need more; of a bad one, -1 or -2 */
				if (want >= 0 && n < (size_t)want)
					CHECK_MSG(rc == -2, "prefix %zu: rc %d", n, rc);
				else if (want < 0)
					CHECK_MSG(rc == -1 || rc == -2, "prefix %zu: rc %d", n, rc);
				continue;
			}
			CHECK_MSG(rc == want, "rc %d, expected %d (%d %s)", rc, want, e.status,
				  e.reason ? e.reason : "");
			if (want < 0) {
				CHECK_INT(e.status, c->status);
				continue;
			}
			if (rc != want)
				continue;
			CHECK_INT(res.status, c->status);
			CHECK_MSG(res.reason.len == strlen(c->reason) &&
					  (res.reason.len == 0 ||
					   memcmp(res.reason.p, c->reason, res.reason.len) == 0),
				  "reason \"%.*s\"", (int)res.reason.len, res.reason.p);
			CHECK_INT(res.body, c->body);
			if (c->body == HTTP_BODY_LENGTH)
				CHECK(res.content_length == c->cl);
			CHECK_INT(res.keep_alive, c->keep_alive);
			CHECK_INT(res.has_content_length, c->has_cl);
			CHECK(view_inside(res.reason, b, n));
			for (unsigned h = 0; h < res.n_headers; h++)
				CHECK(view_inside(res.headers[h].value, b, n));
		}
		test_end();
	}

	test_begin("response_status_line_too_long_502");
	{
		char *s = malloc(lim.max_request_line + 64);
		struct http_response res = {.headers = hdrs, .max_headers = 128};
		struct http_error e;
		size_t n = (size_t)sprintf(s, "HTTP/1.1 200 ");

		memset(s + n, 'r', lim.max_request_line);
		n += lim.max_request_line;
		memcpy(s + n, "\r\n\r\n", 4);
		n += 4;
		const char *b = test_guard_place(s, n);

		CHECK_INT(http_parse_response(b, n, &res, false, &lim, &e), -1);
		CHECK_INT(e.status, 502);
		free(s);
	}
	test_end();
}

/* ---- helpers ------------------------------------------------------------ */

static void test_helpers(void)
{
	const char *v = "Keep-Alive ,\tUpgrade,, close ";
	struct http_str s = {v, strlen(v)};
	struct http_header h[2] = {{{"Host", 4}, {"a", 1}}, {{"X-Y", 3}, {"b", 1}}};

	test_begin("helpers_list_and_find");
	CHECK(http_list_has_token(s, "keep-alive"));
	CHECK(http_list_has_token(s, "UPGRADE"));
	CHECK(http_list_has_token(s, "close"));
	CHECK(!http_list_has_token(s, "clos"));
	CHECK(!http_list_has_token((struct http_str){"", 0}, "close"));
	CHECK(http_str_eq((struct http_str){"HoSt", 4}, "host"));
	CHECK(!http_str_eq((struct http_str){"Hos", 3}, "host"));
	CHECK(http_find_header(h, 2, "x-y") == &h[1]);
	CHECK(http_find_header(h, 2, "host") == &h[0]);
	CHECK(http_find_header(h, 2, "x") == NULL);
	test_end();
}

/* What a request names: the path an origin resolves and the host, as routes,
 * limits and rules compare them (a table, the resolved form on the right). */
static void test_names(void)
{
	static const struct {
		const char *in, *out;
	} paths[] = {
		{"/", "/"},
		{"", "/"},
		{"*", "*"},
		{"/admin", "/admin"},
		{"/admin/", "/admin/"},
		{"//admin", "/admin"},
		{"/./admin", "/admin"},
		{"/x/../admin", "/admin"},
		{"/../../admin", "/admin"},
		{"/%61dmin", "/admin"},
		{"/%2e%2e/admin", "/admin"},
		{"/a%2Fb/../admin", "/a/admin"},
		{"/admin/.", "/admin/"},
		{"/admin/..", "/"},
		{"/admin?x=/../y", "/admin"},
		{"/admin%3Fx", "/admin?x"},
		{"/a%00b", "/a%00b"},
		{"/a%zzb%4", "/a%zzb%4"},
		{"/a#frag", "/a"},
	};
	char out[64];

	test_begin("path_resolve_as_an_origin_does");
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		size_t n = http_path_resolve(paths[i].in, strlen(paths[i].in), out);
		out[n] = 0;
		CHECK_MSG(strcmp(out, paths[i].out) == 0, "%s → %s, want %s", paths[i].in, out,
			  paths[i].out);
	}
	test_end();

	static const struct {
		const char *host, *authority, *out;
	} hosts[] = {
		{"Example.COM", "", "example.com"},
		{"example.com:8080", "", "example.com"},
		{"example.com.", "", "example.com"},
		{"EXAMPLE.com.:80", "", "example.com"},
		{"[::1]:8080", "", "[::1]"},
		{"[::1]", "", "[::1]"},
		{"ignored", "Abs.Example:443", "abs.example"},
		{".", "", "."},
		{"", "", ""},
	};
	char host[16];

	test_begin("host_key_lower_case_no_port_no_root_dot");
	for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
		struct http_request h = {0};
		h.host = (struct http_str){hosts[i].host, strlen(hosts[i].host)};
		h.authority = (struct http_str){hosts[i].authority, strlen(hosts[i].authority)};
		size_t n = http_host_key(&h, host, sizeof(host));
		CHECK_MSG(strcmp(host, hosts[i].out) == 0 && n == strlen(host), "%s → %s, want %s",
			  hosts[i].host, host, hosts[i].out);
	}
	/* 16 bytes of room: a longer name matches only rules for any host */
	struct http_request h = {0};
	h.host = (struct http_str){"sixteen-chars.io", 16};
	CHECK_INT(http_host_key(&h, host, sizeof(host)), 0);
	CHECK_STR(host, "");
	h.host = (struct http_str){"fifteen-char.io:1", 17};
	CHECK_INT(http_host_key(&h, host, sizeof(host)), 15);
	test_end();

	test_begin("host_matches_route_patterns");
	CHECK(http_host_matches("", "anything.example"));
	CHECK(http_host_matches("api.example.com", "api.example.com"));
	CHECK(http_host_matches("API.example.com", "api.example.com"));
	CHECK(!http_host_matches("api.example.com", "api.example.co"));
	CHECK(http_host_matches("*.example.com", "a.b.example.com"));
	CHECK(!http_host_matches("*.example.com", "example.com"));
	CHECK(!http_host_matches("*.example.com", "badexample.com"));
	CHECK(!http_host_matches("api.example.com", ""));
	test_end();
}

/* ---- chunked -------------------------------------------------------------- */

struct ck_result {
	int rc;		 /* 0 done, 1 consumed all but not done, -1 invalid */
	size_t consumed; /* total bytes consumed */
	char payload[512];
	size_t payload_len;
	uint64_t payload_total;
};

/* Feed `in` in pieces of `step` bytes (0: all at once), each piece placed
 * against the guard page, re-feeding the unconsumed rest like a caller. */
static void ck_run(const char *in, size_t len, size_t step, size_t max_trailer,
		   struct ck_result *out)
{
	struct http_chunked d;
	struct http_error e;
	size_t off = 0, avail = 0;

	http_chunked_init(&d);
	if (max_trailer)
		d.max_trailer_bytes = max_trailer;
	memset(out, 0, sizeof(*out));
	out->rc = 1;
	while (off < len) {
		struct http_str pl;
		const char *b;
		ssize_t n;

		/* bytes "received" so far that are not consumed yet */
		avail = step ? (avail < off + step ? off + step : avail) : len;
		if (avail > len)
			avail = len;
		b = test_guard_place(in + off, avail - off);
		n = http_chunked_feed(&d, b, avail - off, &pl, &e);
		if (n < 0) {
			out->rc = -1;
			CHECK_INT(e.status, 400);
			break;
		}
		CHECK(n <= (ssize_t)(avail - off));
		if (pl.len) {
			CHECK(pl.p >= b && pl.p + pl.len <= b + n);
			if (out->payload_len + pl.len <= sizeof(out->payload)) {
				memcpy(out->payload + out->payload_len, pl.p, pl.len);
				out->payload_len += pl.len;
			}
		} else {
			CHECK(pl.p == NULL);
		}
		off += (size_t)n;
		if (d.done) {
			out->rc = 0;
			/* done: nothing more is consumed */
			if (off < len) {
				b = test_guard_place(in + off, len - off);
				CHECK_INT(http_chunked_feed(&d, b, len - off, &pl, &e), 0);
			}
			break;
		}
		if (n == 0 && avail == len)
			break; /* cannot happen: the decoder consumes what it is given */
	}
	out->consumed = off;
	out->payload_total = d.payload_total;
}

struct ck_case {
	const char *name;
	const char *in;
	size_t len;
	int rc;	      /* 0 done, 1 need more, -1 invalid */
	int consumed; /* ALL or a count (for done) */
	const char *payload;
	size_t max_trailer;
};

static const struct ck_case ck_cases[] = {
	{"simple", S("5\r\nhello\r\n0\r\n\r\n"), 0, ALL, "hello"},
	{"multi", S("5\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\n\r\n"), 0, ALL,
	 "hello 0123456789"},
	{"hex_case_leading_zeros", S("000a\r\n0123456789\r\nB\r\nabcdefghijk\r\n00\r\n\r\n"), 0,
	 ALL, "0123456789abcdefghijk"},
	{"only_last", S("0\r\n\r\n"), 0, ALL, ""},
	{"ext_name", S("3;foo\r\nabc\r\n0;bar\r\n\r\n"), 0, ALL, "abc"},
	{"ext_token_value", S("3;foo=bar;baz\r\nabc\r\n0\r\n\r\n"), 0, ALL, "abc"},
	{"ext_quoted", S("3;n=\"a \\\"q\\\" ;=\"\r\nabc\r\n0\r\n\r\n"), 0, ALL, "abc"},
	{"ext_bws", S("3 ; a = b\t;\tc\r\nabc\r\n0\r\n\r\n"), 0, ALL, "abc"},
	{"trailers", S("3\r\nabc\r\n0\r\nX-Sum: 12\r\nY:\r\n\r\n"), 0, ALL, "abc"},
	{"done_then_stop", S("2\r\nhi\r\n0\r\n\r\nGET / HTTP/1.1\r\n"), 0, 12, "hi"},
	{"incomplete", S("5\r\nhel"), 1, ALL, "hel"},
	{"incomplete_size_max", S("7fffffffffffffff\r\nab"), 1, ALL, "ab"},
	{"bad_size_zz", S("zz\r\n"), -1},
	{"bad_size_empty", S("\r\nabc\r\n"), -1},
	{"bad_size_neg", S("-1\r\n"), -1},
	{"bad_size_0x", S("0x5\r\nhello\r\n0\r\n\r\n"), -1},
	{"hex_overflow", S("8000000000000000\r\n"), -1},
	{"hex_overflow_long", S("ffffffffffffffffff\r\n"), -1},
	{"missing_crlf_after_data", S("5\r\nhelloX\r\n0\r\n\r\n"), -1},
	{"missing_lf_after_data", S("5\r\nhello\rX0\r\n\r\n"), -1},
	{"data_too_long", S("3\r\nhello\r\n0\r\n\r\n"), -1},
	{"bare_lf_size", S("5\nhello\r\n0\r\n\r\n"), -1},
	{"bare_lf_data", S("5\r\nhello\n0\r\n\r\n"), -1},
	{"bare_lf_last", S("5\r\nhello\r\n0\n\r\n"), -1},
	{"bare_lf_final", S("0\r\n\n"), -1},
	{"bare_cr_size", S("5\rhello\r\n0\r\n\r\n"), -1},
	{"bare_cr_final", S("0\r\n\rX"), -1},
	{"ws_after_size", S("5 \r\nhello\r\n0\r\n\r\n"), -1},
	{"ext_empty_name", S("5;\r\nhello\r\n0\r\n\r\n"), -1},
	{"ext_eq_no_name", S("5;=b\r\nhello\r\n0\r\n\r\n"), -1},
	{"ext_no_value", S("5;a=\r\nhello\r\n0\r\n\r\n"), -1},
	{"ext_unterminated_quote", S("5;a=\"x\r\nhello\r\n0\r\n\r\n"), -1},
	{"ext_space_in_name", S("5;a b\r\nhello\r\n0\r\n\r\n"), -1},
	{"ext_ctl_in_quote", S("5;a=\"\x01\"\r\nhello\r\n0\r\n\r\n"), -1},
	{"ext_after_quote", S("5;a=\"x\"y\r\nhello\r\n0\r\n\r\n"), -1},
	{"trailer_obs_fold", S("0\r\nX: a\r\n b\r\n\r\n"), -1},
	{"trailer_no_colon", S("0\r\nXa\r\n\r\n"), -1},
	{"trailer_ws_before_colon", S("0\r\nX : a\r\n\r\n"), -1},
	{"trailer_ctl", S("0\r\nX: a\x01\r\n\r\n"), -1},
	{"trailer_bare_lf", S("0\r\nX: a\n\r\n"), -1},
	{"trailer_too_large", S("0\r\nX-Long: 0123456789012345678901234567890123456789\r\n\r\n"),
	 -1, 0, NULL, 32},
	{"trailer_at_limit", S("0\r\nX: 1\r\n\r\n"), 0, ALL, "", 6},
	{"trailer_over_limit", S("0\r\nX: 12\r\n\r\n"), -1, 0, NULL, 6},
};

static void test_chunked(void)
{
	for (size_t i = 0; i < sizeof(ck_cases) / sizeof(ck_cases[0]); i++) {
		const struct ck_case *c = &ck_cases[i];
		size_t steps[] = {0, 1, 2, 3, 7};
		struct ck_result ref, r;
		char name[128];

		snprintf(name, sizeof(name), "chunked_%s", c->name);
		test_begin(name);
		ck_run(c->in, c->len, 0, c->max_trailer, &ref);
		CHECK_MSG(ref.rc == c->rc, "rc %d, expected %d", ref.rc, c->rc);
		if (c->rc >= 0) {
			size_t want = c->consumed == ALL ? c->len : (size_t)c->consumed;

			CHECK_INT(ref.consumed, want);
			CHECK_INT(ref.payload_len, strlen(c->payload));
			CHECK(memcmp(ref.payload, c->payload, ref.payload_len) == 0);
			CHECK(ref.payload_total == strlen(c->payload));
		}
		/* Any split of the stream gives the same outcome and payload. */
		for (size_t s = 1; s < sizeof(steps) / sizeof(steps[0]); s++) {
			ck_run(c->in, c->len, steps[s], c->max_trailer, &r);
			CHECK_MSG(r.rc == ref.rc, "step %zu: rc %d vs %d", steps[s], r.rc, ref.rc);
			if (ref.rc >= 0) {
				CHECK_MSG(r.consumed == ref.consumed,
					  "step %zu: consumed %zu vs %zu", steps[s], r.consumed,
					  ref.consumed);
				CHECK(r.payload_len == ref.payload_len &&
				      memcmp(r.payload, ref.payload, r.payload_len) == 0);
				CHECK(r.payload_total == ref.payload_total);
			}
		}
		test_end();
	}

	test_begin("chunked_ext_line_too_long");
	{
		size_t n = 5000;
		char *s = malloc(n + 16);
		struct ck_result r;

		s[0] = '1';
		for (size_t i = 1; i + 1 < n; i += 2)
			memcpy(s + i, ";a", 2);
		memcpy(s + n - 1, "\r\nx\r\n0\r\n\r\n", 11);
		ck_run(s, n + 10, 0, 0, &r);
		CHECK_INT(r.rc, -1);
		free(s);
	}
	test_end();

	test_begin("chunked_no_trailers_allowed");
	{
		struct http_chunked d;
		struct http_error e;
		struct http_str pl;

		http_chunked_init(&d);
		CHECK_INT(d.max_trailer_bytes, 8192);
		d.max_trailer_bytes = 0;
		CHECK_INT(http_chunked_feed(&d, test_guard_place("0\r\n\r\n", 5), 5, &pl, &e), 5);
		CHECK(d.done);
		http_chunked_init(&d);
		d.max_trailer_bytes = 0;
		CHECK_INT(http_chunked_feed(&d, test_guard_place("0\r\nX: 1\r\n\r\n", 11), 11, &pl,
					    &e),
			  -1);
	}
	test_end();

	test_begin("chunked_error_is_sticky");
	{
		struct http_chunked d;
		struct http_error e;
		struct http_str pl;

		http_chunked_init(&d);
		CHECK_INT(http_chunked_feed(&d, test_guard_place("z", 1), 1, &pl, &e), -1);
		CHECK_INT(http_chunked_feed(&d, test_guard_place("5\r\n", 3), 3, &pl, &e), -1);
		CHECK_INT(e.status, 400);
	}
	test_end();
}

int main(void)
{
	http_limits_default(&lim);
	test_begin("limits_default");
	CHECK_INT(lim.max_request_line, 8192);
	CHECK_INT(lim.max_head_bytes, 32768);
	CHECK_INT(lim.max_headers, 100);
	test_end();

	test_valid_requests();
	test_bad_requests();
	test_limits();
	test_responses();
	test_helpers();
	test_names();
	test_chunked();
	return test_exit_code();
}
