/* Unit tests for perf/loadgen/reqlist.c: request-list files become exact
 * wire-format requests, and malformed files are refused with a line number. */
#include "perf/loadgen/reqlist.h"
#include "tests/lib/test.h"

#include <errno.h>
#include <stdlib.h>

static const char *const no_extra[] = {NULL};

static void init(struct reqlist *l, bool close, const char *const *extra, size_t n_extra)
{
	memset(l, 0, sizeof(*l));
	l->host = "127.0.0.1:8080";
	l->extra = extra;
	l->n_extra = n_extra;
	l->close = close;
}

static int parse(struct reqlist *l, const char *text, unsigned *line, const char **why)
{
	*line = 0;
	*why = NULL;
	return reqlist_parse(l, text, strlen(text), line, why);
}

static void test_wire_format(void)
{
	test_begin("reqlist_wire_format");
	struct reqlist l;
	unsigned line;
	const char *why;
	const char *text = "# comment\n"
			   "GET /a?x=1\n"
			   "\n"
			   "HEAD /b\r\n"
			   "X-Test: 1\r\n"
			   "Host: example.com\r\n"
			   "\r\n"
			   "POST /c\n"
			   "Content-Type: text/plain\n"
			   "Content-Length: 7\n"
			   "\n"
			   "two\nnl\n"
			   "\n"
			   "DELETE /d\n";

	init(&l, false, no_extra, 0);
	CHECK_INT(parse(&l, text, &line, &why), 0);
	CHECK_INT(l.n, 4);
	if (l.n == 4) {
		CHECK_STR(l.v[0].wire, "GET /a?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n");
		CHECK(!l.v[0].is_head);
		/* The entry's own Host wins. */
		CHECK_STR(l.v[1].wire,
			  "HEAD /b HTTP/1.1\r\nX-Test: 1\r\nHost: example.com\r\n\r\n");
		CHECK(l.v[1].is_head);
		CHECK_STR(l.v[2].wire,
			  "POST /c HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
			  "Content-Type: text/plain\r\nContent-Length: 7\r\n\r\ntwo\nnl\n");
		CHECK_INT(l.v[2].len, strlen(l.v[2].wire));
		CHECK_STR(l.v[3].wire, "DELETE /d HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n");
	}
	reqlist_free(&l);
	CHECK_INT(l.n, 0);
	test_end();
}

static void test_extra_and_close(void)
{
	test_begin("reqlist_extra_headers_and_churn");
	static const char *const extra[] = {"X-A: 1", "Connection: keep-alive"};
	struct reqlist l;

	init(&l, true, extra, 1);
	CHECK_INT(reqlist_add(&l, "GET", "/", NULL, NULL, 0), 0);
	CHECK_INT(reqlist_add(&l, "PUT", "/u", NULL, "abc", 3), 0);
	CHECK_STR(l.v[0].wire, "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-A: 1\r\n"
			       "Connection: close\r\n\r\n");
	/* A body without Content-Length gets one. */
	CHECK_STR(l.v[1].wire, "PUT /u HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-A: 1\r\n"
			       "Connection: close\r\nContent-Length: 3\r\n\r\nabc");
	reqlist_free(&l);

	/* A Connection header given by the user is not doubled. */
	init(&l, true, extra, 2);
	CHECK_INT(reqlist_add(&l, "GET", "/", NULL, NULL, 0), 0);
	CHECK_STR(l.v[0].wire, "GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-A: 1\r\n"
			       "Connection: keep-alive\r\n\r\n");
	reqlist_free(&l);
	test_end();
}

static void test_errors(void)
{
	test_begin("reqlist_errors");
	static const struct {
		const char *text;
		unsigned line;
	} bad[] = {
		{"", 0},
		{"# only a comment\n\n", 2},
		{"GET\n", 1},
		{"GET /a b\n", 1},
		{"G(T /a\n", 1},
		{"GET /a\nno colon here\n", 2},
		{"GET /a\nBad Name: x\n", 2},
		{"\n\nPOST /p\nContent-Length: x\n\n", 4},
		{"POST /p\nContent-Length: 10\n\nshort\n", 3},
		{"GET /a\n\nGET /b\n: empty name\n", 4},
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct reqlist l;
		unsigned line;
		const char *why;

		init(&l, false, no_extra, 0);
		CHECK_MSG(parse(&l, bad[i].text, &line, &why) == -EINVAL, "case %zu accepted", i);
		CHECK_MSG(line == bad[i].line, "case %zu: line %u, want %u (%s)", i, line,
			  bad[i].line, why ? why : "");
		CHECK(why != NULL);
		reqlist_free(&l);
	}
	test_end();
}

int main(void)
{
	test_wire_format();
	test_extra_and_close();
	test_errors();
	return test_exit_code();
}
