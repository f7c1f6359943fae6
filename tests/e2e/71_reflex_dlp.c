/* 71_reflex_dlp — response scanning (rules with in: [response], docs/rules.md):
 * an SSE stream whose e-mail address is split across two events (sent
 * 150 ms apart) reaches the client redacted, the events and their order
 * kept; a Content-Length JSON answer is redacted and re-framed (chunked for
 * HTTP/1.1, close-delimited for HTTP/1.0); a route without the rule is
 * relayed as it was; a scanned response is never cached. The upstream is a
 * small server thread in this test (reflex-origin's bodies are generated
 * text without personal data). */
#include "lib/harness.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

static int gw_port, up_port;
static atomic_int up_requests;
static struct h_proc *gw;

static void send_chunk(int fd, const char *s)
{
	char hdr[32];
	snprintf(hdr, sizeof(hdr), "%zx\r\n", strlen(s));
	h_send_all(fd, hdr, strlen(hdr));
	h_send_all(fd, s, strlen(s));
	h_send_all(fd, "\r\n", 2);
}

/* One thread per keep-alive connection: /dlp/sse, /dlp/json, /plain/json */
static void *serve(void *arg)
{
	int c = (int)(intptr_t)arg;
	{
		char buf[8192];
		size_t len = 0;
		for (;;) {
			char *end = len ? memmem(buf, len, "\r\n\r\n", 4) : NULL;
			if (!end) {
				ssize_t k = recv(c, buf + len, sizeof(buf) - len - 1, 0);
				if (k <= 0)
					break;
				len += (size_t)k;
				continue;
			}
			size_t head = (size_t)(end - buf) + 4;
			buf[len] = 0;
			atomic_fetch_add(&up_requests, 1);
			if (strstr(buf, "GET /dlp/sse")) {
				const char *h =
					"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
					"Transfer-Encoding: chunked\r\n\r\n";
				h_send_all(c, h, strlen(h));
				send_chunk(c, "id: 1\ndata: write to john.doe@exa\n\n");
				h_sleep_ms(150);
				send_chunk(c, "id: 2\ndata: mple.com please\n\n");
				h_sleep_ms(150);
				send_chunk(c, "data: card 4111 1111 1111 1111 ok\n\n");
				send_chunk(c, "data: [DONE]\n\n");
				h_send_all(c, "0\r\n\r\n", 5);
			} else if (strstr(buf, "GET /dlp/crlf")) {
				/* CRLF line ends, no space after "data:", a comment line */
				const char *h = "HTTP/1.1 200 OK\r\nContent-Type: "
						"text/event-stream; charset=utf-8\r\n"
						"Transfer-Encoding: chunked\r\n\r\n";
				h_send_all(c, h, strlen(h));
				send_chunk(c, ": keep-alive\r\n\r\n");
				send_chunk(c, "data:contact jane.roe@exa\r\n\r\n");
				h_sleep_ms(100);
				send_chunk(c, "data:mple.org\r\n\r\n");
				h_send_all(c, "0\r\n\r\n", 5);
			} else if (strstr(buf, "GET /dlp/json") || strstr(buf, "GET /plain/json")) {
				const char *body =
					"{\"reply\":\"mail me at jane.roe@example.org or not\"}";
				char h[256];
				snprintf(h, sizeof(h),
					 "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
					 "Cache-Control: max-age=60\r\nContent-Length: %zu\r\n\r\n",
					 strlen(body));
				h_send_all(c, h, strlen(h));
				h_send_all(c, body, strlen(body));
			} else {
				h_send_all(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
					 45);
			}
			memmove(buf, buf + head, len - head);
			len -= head;
		}
		close(c);
	}
	return NULL;
}

static long get(const char *path, bool http10, struct h_resp *r)
{
	char url[256];
	struct h_req q = {.url = url, .http10 = http10, .timeout_ms = 8000};

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", gw_port, path);
	if (h_http(&q, r) != 0)
		return -1;
	return r->status;
}

int main(void)
{
	struct h_resp r;
	char v[64];

	h_init("71_reflex_dlp", 120);
	gw_port = h_free_port();
	if (h_serve_tcp(serve, &up_port)) {
		test_skip("dlp", "cannot start the test upstream");
		return 0;
	}
	const char *cfg = h_write_config(
		"workers: 2\n"
		"listen: [\"127.0.0.1:%d\"]\n"
		"admin: {listen: \"127.0.0.1:%d\"}\n"
		"upstream: [\"127.0.0.1:%d\"]\n"
		"cache: {enabled: true}\n"
		"reflex:\n"
		"  rules:\n"
		"    - {name: dlp, path_prefix: /dlp/, detect: [email, card], in: [response], "
		"action: redact}\n",
		gw_port, h_free_port(), up_port);
	gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw) {
		test_begin("start");
		CHECK_MSG(false, "reflexd did not start");
		test_end();
		return test_exit_code();
	}

	test_begin("sse_split_across_events_redacted");
	CHECK_INT(get("/dlp/sse", false, &r), 200);
	CHECK_MSG(r.body && !strcmp(r.body, "id: 1\ndata: write to [EMAIL]\n\n"
					    "id: 2\ndata:  please\n\n"
					    "data: card [CARD] ok\n\n"
					    "data: [DONE]\n\n"),
		  "body: %s", h_excerpt(r.body, r.body_len, 400));
	CHECK(h_resp_header(&r, "Transfer-Encoding", v, sizeof(v)) && !strcmp(v, "chunked"));
	h_resp_free(&r);
	test_end();

	test_begin("sse_crlf_and_no_space");
	CHECK_INT(get("/dlp/crlf", false, &r), 200);
	CHECK_MSG(r.body &&
			  !strcmp(r.body,
				  ": keep-alive\r\n\r\ndata:contact [EMAIL]\r\n\r\ndata:\r\n\r\n"),
		  "body: %s", h_excerpt(r.body, r.body_len, 300));
	h_resp_free(&r);
	test_end();

	test_begin("content_length_redacted_and_reframed");
	CHECK_INT(get("/dlp/json", false, &r), 200);
	CHECK_MSG(r.body && !strcmp(r.body, "{\"reply\":\"mail me at [EMAIL] or not\"}"),
		  "body: %s", h_excerpt(r.body, r.body_len, 300));
	CHECK(!h_resp_header(&r, "Content-Length", v, sizeof(v)));
	h_resp_free(&r);
	CHECK_INT(get("/dlp/json", true, &r), 200); /* HTTP/1.0: close-delimited */
	CHECK(r.body && !strcmp(r.body, "{\"reply\":\"mail me at [EMAIL] or not\"}"));
	h_resp_free(&r);
	test_end();

	test_begin("scanned_responses_are_not_cached");
	int before = atomic_load(&up_requests);
	CHECK_INT(get("/dlp/json", false, &r), 200);
	h_resp_free(&r);
	CHECK_INT(atomic_load(&up_requests) - before, 1);
	test_end();

	test_begin("other_routes_untouched");
	CHECK_INT(get("/plain/json", false, &r), 200);
	CHECK(r.body && strstr(r.body, "jane.roe@example.org"));
	CHECK(h_resp_header(&r, "Content-Length", v, sizeof(v)));
	h_resp_free(&r);
	test_end();

	h_finish(gw, 10000);
	return test_exit_code();
}
