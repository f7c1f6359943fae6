/* 73_reflex_no_avx2 — the detectors' fallback loops behind a real gateway:
 * reflexd started with REFLEX_NO_AVX2=2 (no vector loop: what a build for
 * another arch runs, docs/detect.md) redacts exactly as the default one
 * does. Two gateways share one test upstream; each is asked for the same
 * 6 KiB of text full of personal data and secrets as a Content-Length
 * response and as a chunked one sent in uneven pieces (response scanning,
 * a stream fed per read), and posts it as a request body (the held body,
 * scanned in one block); the upstream echoes what it got. The bodies must
 * be byte for byte the same from both, and redacted. The levels themselves
 * are compared far more widely in test_detect; this checks that the
 * switch reaches the scanner of a running gateway and that nothing in the
 * data path depends on the vector loops. */
#include "lib/harness.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define BODY_LEN 6144
#define BUF_CAP (3 * BODY_LEN) /* a request head and body, with room */

static int up_port;
static char body[BODY_LEN + 1];

/* Text of the kind a prompt or a model's answer carries, with every
 * detector's matches and near misses placed at random (a fixed seed: the
 * same body on every run). */
static void make_body(void)
{
	static const char *const piece[] = {
		"jane.doe@example.com ",
		"write to a.b@mail.example.co.uk, ",
		"x@y@z.org ",
		"(415) 555-0132 ",
		"+1 415 555 0132 ",
		"+44 20 7946 0958 ",
		"SSN 536-22-8745 ",
		"card 4111 1111 1111 1111 ",
		"5500-0000-0000-0004 ",
		"DE89 3704 0044 0532 0130 00 ",
		"from 10.20.30.40 ",
		"2001:db8::1 ",
		"::ffff:192.0.2.128 ",
		"AKIAJ2QW7Z3XK4M5N6PL ",
		"ghp_R8xZt2LqVw9KpYc4NmB7sJd1FgH3aE6uTi0o ",
		"The quick brown fox jumps over the lazy dog. ",
		"Summarize the ticket for the billing team. ",
		"\"role\": \"user\", \"content\": \"",
		"Released on 2024-05-17, version 3.11.4, order 48213. ",
		"99.9 percent of 987 users ",
		"Note: a:b ",
		"\n",
		"  ",
		"caf\xc3\xa9 ",
	};
	uint64_t r = 0x2545f4914f6cdd1dull;
	size_t n = 0;
	while (n < BODY_LEN) {
		r ^= r << 13, r ^= r >> 7, r ^= r << 17;
		const char *p = piece[r % (sizeof(piece) / sizeof(piece[0]))];
		size_t l = strlen(p);
		if (n + l > BODY_LEN)
			l = BODY_LEN - n;
		memcpy(body + n, p, l);
		n += l;
	}
	body[n] = 0;
}

/* One thread per keep-alive connection: GET /dlp/json, GET /dlp/chunked,
 * POST /echo (the body back). */
static void *serve(void *arg)
{
	int c = (int)(intptr_t)arg;
	char *b = malloc(BUF_CAP);
	size_t len = 0;

	while (b) {
		char *end = len ? memmem(b, len, "\r\n\r\n", 4) : NULL;
		size_t head = end ? (size_t)(end - b) + 4 : 0, clen = 0;
		if (end) {
			b[head - 1] = 0;
			const char *cl = strcasestr(b, "\r\ncontent-length:");
			clen = cl ? strtoul(cl + 17, NULL, 10) : 0;
			b[head - 1] = '\n';
		}
		if (!end || len < head + clen) {
			if (len == BUF_CAP || clen > BUF_CAP - head)
				break;
			ssize_t k = recv(c, b + len, BUF_CAP - len, 0);
			if (k <= 0)
				break;
			len += (size_t)k;
			continue;
		}
		char h[256];
		if (!strncmp(b, "GET /dlp/json", 13)) {
			snprintf(h, sizeof(h),
				 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
				 "Content-Length: %d\r\n\r\n",
				 BODY_LEN);
			h_send_all(c, h, strlen(h));
			h_send_all(c, body, BODY_LEN);
		} else if (!strncmp(b, "GET /dlp/chunked", 16)) {
			static const size_t sizes[] = {1000, 333, 77, 1, 2048, 64, 65, 129};
			const char *hh = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
					 "Transfer-Encoding: chunked\r\n\r\n";
			h_send_all(c, hh, strlen(hh));
			for (size_t at = 0, i = 0; at < BODY_LEN; i++) {
				size_t k =
					sizes[i % 8] < BODY_LEN - at ? sizes[i % 8] : BODY_LEN - at;
				snprintf(h, sizeof(h), "%zx\r\n", k);
				h_send_all(c, h, strlen(h));
				h_send_all(c, body + at, k);
				h_send_all(c, "\r\n", 2);
				at += k;
				if (i < 4)
					h_sleep_ms(20); /* separate reads: separate feeds */
			}
			h_send_all(c, "0\r\n\r\n", 5);
		} else if (!strncmp(b, "POST /echo", 10)) {
			snprintf(h, sizeof(h),
				 "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
				 "Cache-Control: no-store\r\nContent-Length: %zu\r\n\r\n",
				 clen);
			h_send_all(c, h, strlen(h));
			h_send_all(c, b + head, clen);
		} else {
			h_send_all(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 45);
		}
		memmove(b, b + head + clen, len - head - clen);
		len -= head + clen;
	}
	free(b);
	close(c);
	return NULL;
}

/* A gateway with a response rule on /dlp/ and a request-body rule on
 * /echo, REFLEX_NO_AVX2 as given (NULL: unset) in its environment. */
static struct h_proc *start_gateway(const char *name, int port, const char *no_avx2)
{
	const char *cfg = h_write_config(
		"workers: 1\n"
		"listen: [\"127.0.0.1:%d\"]\n"
		"admin: {listen: \"127.0.0.1:%d\"}\n"
		"upstream: [\"127.0.0.1:%d\"]\n"
		"reflex:\n"
		"  rules:\n"
		"    - {name: dlp, path_prefix: /dlp/, detect: [pii, secret], in: [response], "
		"action: redact}\n"
		"    - {name: req, path_prefix: /echo, detect: [pii, secret], in: [body], "
		"action: redact}\n",
		port, h_free_port(), up_port);
	if (no_avx2)
		setenv("REFLEX_NO_AVX2", no_avx2, 1);
	else
		unsetenv("REFLEX_NO_AVX2");
	struct h_proc *p = h_start_reflexd_config(name, port, cfg);
	unsetenv("REFLEX_NO_AVX2");
	return p;
}

static long fetch(int port, const char *path, bool post, struct h_resp *r)
{
	char url[256];
	struct h_req q = {.url = url, .timeout_ms = 8000};

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	if (post)
		q.body = body, q.body_len = BODY_LEN, q.no_expect = true;
	if (h_http(&q, r) != 0)
		return -1;
	return r->status;
}

/* The same path from both gateways: 200, the same bytes, redacted. */
static void same_from_both(int port_a, int port_b, const char *path, bool post)
{
	struct h_resp a = {0}, b = {0};
	CHECK_INT(fetch(port_a, path, post, &a), 200);
	CHECK_INT(fetch(port_b, path, post, &b), 200);
	if (a.body && b.body && (a.body_len != b.body_len || memcmp(a.body, b.body, a.body_len))) {
		size_t d = 0;
		while (d < a.body_len && d < b.body_len && a.body[d] == b.body[d])
			d++;
		size_t from = d > 40 ? d - 40 : 0;
		/* h_excerpt has one static buffer: one call per message */
		test_fail(__FILE__, __LINE__,
			  "%s: default gave %zu bytes, REFLEX_NO_AVX2=2 %zu, first difference at "
			  "%zu; default there: \"%s\"",
			  path, a.body_len, b.body_len, d,
			  h_excerpt(a.body + from, a.body_len - from, 120));
		test_fail(__FILE__, __LINE__, "%s: REFLEX_NO_AVX2=2 there: \"%s\"", path,
			  h_excerpt(b.body + from, b.body_len - from, 120));
	}
	CHECK(a.body && b.body);
	CHECK_MSG(a.body && strstr(a.body, "[EMAIL]") && strstr(a.body, "[CARD]") &&
			  !strstr(a.body, "jane.doe@example.com") &&
			  !strstr(a.body, "4111 1111 1111 1111"),
		  "%s: not redacted: \"%s\"", path,
		  a.body ? h_excerpt(a.body, a.body_len, 300) : "");
	h_resp_free(&a);
	h_resp_free(&b);
}

int main(void)
{
	h_init("73_reflex_no_avx2", 120);
	make_body();
	if (h_serve_tcp(serve, &up_port)) {
		test_skip("no_avx2", "cannot start the test upstream");
		return 0;
	}
	int port_a = h_free_port(), port_b = h_free_port();
	struct h_proc *a = start_gateway("reflexd", port_a, NULL);
	struct h_proc *b = start_gateway("reflexd_no_avx2", port_b, "2");
	if (!a || !b) {
		test_begin("start");
		CHECK_MSG(false, "reflexd did not start (default %s, REFLEX_NO_AVX2=2 %s)",
			  a ? "up" : "down", b ? "up" : "down");
		test_end();
		return test_exit_code();
	}

	test_begin("response_redacted_the_same");
	same_from_both(port_a, port_b, "/dlp/json", false);
	test_end();

	test_begin("chunked_response_redacted_the_same");
	same_from_both(port_a, port_b, "/dlp/chunked", false);
	test_end();

	test_begin("request_body_redacted_the_same");
	same_from_both(port_a, port_b, "/echo", true);
	test_end();

	h_finish(a, 10000);
	h_finish(b, 10000);
	return test_exit_code();
}
