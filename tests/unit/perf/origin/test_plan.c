/* Unit tests for perf/origin/plan.c: how reflex-origin turns a request's
 * query and X-Origin-* headers into a behaviour (docs/origin.md). */
#include "perf/origin/plan.h"
#include "tests/lib/test.h"

#include <stdlib.h>

static struct http_header hdrs[128];
static struct http_request req;

/* Parse a request head (must be valid) into the static req. */
static bool parse(const char *head)
{
	struct http_limits lim;
	struct http_error err;

	http_limits_default(&lim);
	memset(&req, 0, sizeof(req));
	req.headers = hdrs;
	req.max_headers = 128;
	return http_parse_request(head, strlen(head), &req, &lim, &err) == (int)strlen(head);
}

/* Build a plan for a GET of target with extra header lines; returns
 * plan_build's result. */
static int build(struct plan *pl, const char *target, const char *extra, const char **reason)
{
	char head[2048];

	snprintf(head, sizeof(head), "GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n", target,
		 extra ? extra : "");
	plan_reset(pl);
	*reason = NULL;
	if (!parse(head)) {
		test_fail(__FILE__, __LINE__, "head did not parse: %s", head);
		return -99;
	}
	return plan_build(pl, &req, reason);
}

static void test_defaults(void)
{
	struct plan pl;

	test_begin("defaults");
	plan_init(&pl);
	CHECK_INT(pl.action, PLAN_RESPOND);
	CHECK_INT(pl.status, 200);
	CHECK_INT(pl.size, 1024);
	CHECK_INT(pl.chunk, 16384);
	CHECK(!pl.chunked && !pl.close && !pl.sse && !pl.rate && !pl.delay_ms);
	CHECK(pl.hdr == NULL && pl.field[PF_CC] == NULL);
	test_end();
}

static void test_is_default(void)
{
	test_begin("is_default");
	CHECK(parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n") && plan_is_default(&req));
	CHECK(parse("GET /a/b HTTP/1.1\r\nHost: x\r\nX-Origin: o\r\n\r\n") &&
	      plan_is_default(&req));
	CHECK(parse("GET /?a=1 HTTP/1.1\r\nHost: x\r\n\r\n") && !plan_is_default(&req));
	CHECK(parse("GET /echo HTTP/1.1\r\nHost: x\r\n\r\n") && !plan_is_default(&req));
	CHECK(parse("GET /__stats HTTP/1.1\r\nHost: x\r\n\r\n") && !plan_is_default(&req));
	CHECK(parse("GET / HTTP/1.1\r\nHost: x\r\nx-origin-delay: 5\r\n\r\n") &&
	      !plan_is_default(&req) && !plan_headers_neutral(&req));
	test_end();
}

static void test_query(void)
{
	struct plan pl;
	const char *why;

	plan_init(&pl);
	test_begin("query_parameters");
	CHECK_INT(build(&pl,
			"/p?status=404&size=5&delay=30&chunked=1&chunk=7&close=1&rate=100"
			"&unknown=zz&flag",
			NULL, &why),
		  0);
	CHECK_INT(pl.status, 404);
	CHECK_INT(pl.size, 5);
	CHECK_INT(pl.delay_ms, 30);
	CHECK(pl.chunked && pl.close);
	CHECK_INT(pl.chunk, 7);
	CHECK_INT(pl.rate, 100);
	CHECK_INT(build(&pl, "/?chunked=0&close=false&size=1099511627776", NULL, &why), 0);
	CHECK(!pl.chunked && !pl.close);
	CHECK(pl.size == (1ULL << 40));
	CHECK_INT(build(&pl, "/?sse=3&interval=250", NULL, &why), 0);
	CHECK(pl.sse && pl.sse_events == 3 && pl.interval_ms == 250);
	CHECK_INT(build(&pl, "/?hang=1", NULL, &why), 0);
	CHECK_INT(pl.action, PLAN_HANG);
	CHECK_INT(build(&pl, "/?reset=1", NULL, &why), 0);
	CHECK_INT(pl.action, PLAN_RESET);
	CHECK_INT(build(&pl, "/?drop=1", NULL, &why), 0);
	CHECK_INT(pl.action, PLAN_DROP);
	CHECK_INT(build(&pl, "/echo?status=201", NULL, &why), 0);
	CHECK(pl.action == PLAN_ECHO && pl.status == 201);
	CHECK_INT(build(&pl, "/__stats", NULL, &why), 0);
	CHECK_INT(pl.action, PLAN_STATS);
	/* /echo is the path, not a prefix. */
	CHECK_INT(build(&pl, "/echo/x", NULL, &why), 0);
	CHECK_INT(pl.action, PLAN_RESPOND);
	plan_reset(&pl);
	test_end();
}

static void test_malformed_kinds(void)
{
	static const struct {
		const char *name;
		enum plan_malformed kind;
	} kinds[] = {{"status", MAL_STATUS},	   {"cl", MAL_CL},	 {"cl_te", MAL_CL_TE},
		     {"injection", MAL_INJECTION}, {"chunk", MAL_CHUNK}, {"lf", MAL_LF},
		     {"short", MAL_SHORT}};
	struct plan pl;
	const char *why;

	plan_init(&pl);
	test_begin("malformed_kinds");
	for (unsigned i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		char t[64];

		snprintf(t, sizeof(t), "/?malformed=%s", kinds[i].name);
		CHECK_INT(build(&pl, t, NULL, &why), 0);
		CHECK(pl.action == PLAN_MALFORMED && pl.malformed == kinds[i].kind);
	}
	CHECK_INT(build(&pl, "/?malformed=other", NULL, &why), -1);
	CHECK(why != NULL);
	plan_reset(&pl);
	test_end();
}

static void test_fields(void)
{
	struct plan pl;
	const char *why;

	plan_init(&pl);
	test_begin("header_fields");
	CHECK_INT(build(&pl,
			"/?cc=public%2C%20max-age%3D60&etag=%22x%22&lm=a&vary=b&expires=0"
			"&ctype=application/atom+xml&hdr=X-A:1&hdr=X-B:%20two%20words",
			NULL, &why),
		  0);
	CHECK_STR(pl.field[PF_CC], "public, max-age=60");
	CHECK_STR(pl.field[PF_ETAG], "\"x\"");
	CHECK_STR(pl.field[PF_LM], "a");
	CHECK_STR(pl.field[PF_VARY], "b");
	CHECK_STR(pl.field[PF_EXPIRES], "0");
	/* '+' is not a space. */
	CHECK_STR(pl.field[PF_CTYPE], "application/atom+xml");
	CHECK_STR(pl.hdr, "X-A: 1\r\nX-B: two words\r\n");
	CHECK_INT(pl.hdr_len, strlen("X-A: 1\r\nX-B: two words\r\n"));
	/* An empty value is allowed (an empty header). */
	CHECK_INT(build(&pl, "/?cc=", NULL, &why), 0);
	CHECK_STR(pl.field[PF_CC], "");
	plan_reset(&pl);
	test_end();
}

static void test_headers_and_precedence(void)
{
	struct plan pl;
	const char *why;

	plan_init(&pl);
	test_begin("headers_and_precedence");
	CHECK_INT(build(&pl, "/",
			"X-Origin-Status: 503\r\nx-origin-delay: 12\r\nX-Origin-Cc: a%20b\r\n"
			"X-Origin-Hdr: X-H: v\r\n",
			&why),
		  0);
	CHECK_INT(pl.status, 503);
	CHECK_INT(pl.delay_ms, 12);
	/* Header values are taken as they are. */
	CHECK_STR(pl.field[PF_CC], "a%20b");
	CHECK_STR(pl.hdr, "X-H: v\r\n");
	/* The query wins; hdr= adds up from both. */
	CHECK_INT(build(&pl, "/?status=201&cc=q&hdr=X-Q:1",
			"X-Origin-Status: 503\r\nX-Origin-Cc: h\r\nX-Origin-Hdr: X-H:2\r\n", &why),
		  0);
	CHECK_INT(pl.status, 201);
	CHECK_STR(pl.field[PF_CC], "q");
	CHECK_STR(pl.hdr, "X-H: 2\r\nX-Q: 1\r\n");
	plan_reset(&pl);
	test_end();
}

static void test_invalid(void)
{
	static const char *const bad[] = {
		"/?status=abc",
		"/?status=99",
		"/?status=1000",
		"/?size=1099511627777",
		"/?delay=-1",
		"/?size=99999999999999999999999",
		"/?cc=%zz",
		"/?cc=%4",
		"/?cc=a%0d%0aX-Evil:1",
		"/?etag=a%00b",
		"/?hdr=nocolon",
		"/?hdr=bad%20name:v",
		"/?hdr=:v",
		"/?hdr=X-A:a%0ab",
		"/?rate=1x",
	};
	struct plan pl;
	const char *why;

	plan_init(&pl);
	test_begin("invalid_values");
	for (unsigned i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int r = build(&pl, bad[i], NULL, &why);

		CHECK_MSG(r == -1 && why, "%s: %d (%s)", bad[i], r, why ? why : "no reason");
	}
	/* Invalid in a header too. */
	CHECK_INT(build(&pl, "/", "X-Origin-Size: lots\r\n", &why), -1);
	plan_reset(&pl);
	test_end();
}

static void test_fnv(void)
{
	test_begin("fnv1a64");
	CHECK(plan_fnv1a(PLAN_FNV_INIT, "", 0) == 0xcbf29ce484222325ULL);
	CHECK(plan_fnv1a(PLAN_FNV_INIT, "a", 1) == 0xaf63dc4c8601ec8cULL);
	CHECK(plan_fnv1a(PLAN_FNV_INIT, "foobar", 6) == 0x85944171f73967e8ULL);
	/* Incremental == one shot. */
	CHECK(plan_fnv1a(plan_fnv1a(PLAN_FNV_INIT, "foo", 3), "bar", 3) ==
	      plan_fnv1a(PLAN_FNV_INIT, "foobar", 6));
	test_end();
}

int main(void)
{
	test_defaults();
	test_is_default();
	test_query();
	test_malformed_kinds();
	test_fields();
	test_headers_and_precedence();
	test_invalid();
	test_fnv();
	return test_exit_code();
}
