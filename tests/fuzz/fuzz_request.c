/* fuzz_request.c — libFuzzer target for http_parse_request.
 *
 * Input: one mode byte (bit 0: tiny limits, so the 414/431 paths are reached
 * by small inputs), one split byte (where to cut the input for the
 * incremental check), then the bytes to parse. Checked beyond "no crash":
 * the result is one of the documented ones, every view lies inside the
 * consumed head, field names/values obey the grammar, and a prefix of the
 * input agrees with the whole (need more until the head is complete, then
 * the same result; an early error is the same error).
 */
#include "http/parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_H 128

#define ASSERT(c)                                                                                  \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "invariant failed: %s (%s:%d)\n", #c, __FILE__, __LINE__); \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void check_view(struct http_str s, const char *b, size_t n)
{
	if (s.len)
		ASSERT(s.p >= b && s.p + s.len <= b + n);
}

static void check_result(int rc, const char *b, size_t len, const struct http_request *r,
			 const struct http_error *e)
{
	ASSERT(rc == -2 || rc == -1 || (rc > 0 && (size_t)rc <= len));
	if (rc == -1) {
		ASSERT(e->status == 400 || e->status == 414 || e->status == 417 ||
		       e->status == 431 || e->status == 501 || e->status == 505);
		ASSERT(e->reason && e->reason[0]);
		return;
	}
	if (rc < 0)
		return;
	ASSERT(r->minor_version == 0 || r->minor_version == 1);
	ASSERT(r->n_headers <= r->max_headers);
	ASSERT(r->method.len > 0 && r->target.len > 0);
	check_view(r->method, b, (size_t)rc);
	check_view(r->target, b, (size_t)rc);
	check_view(r->authority, b, (size_t)rc);
	check_view(r->host, b, (size_t)rc);
	if (!(r->path.len == 1 && r->path.p[0] == '/'))
		check_view(r->path, b, (size_t)rc);
	ASSERT(r->path.len > 0 || r->is_connect);
	ASSERT(r->body != HTTP_BODY_UNTIL_CLOSE);
	ASSERT(r->body != HTTP_BODY_CHUNKED || r->minor_version == 1);
	ASSERT(r->body == HTTP_BODY_LENGTH || r->content_length == 0);
	ASSERT(r->content_length <= UINT64_C(0x7fffffffffffffff));
	ASSERT(r->minor_version == 0 || r->host.p != NULL);
	for (unsigned i = 0; i < r->n_headers; i++) {
		const struct http_header *h = &r->headers[i];

		check_view(h->name, b, (size_t)rc);
		check_view(h->value, b, (size_t)rc);
		ASSERT(h->name.len > 0);
		for (size_t k = 0; k < h->name.len; k++)
			ASSERT(h->name.p[k] > 0x20 && h->name.p[k] != ':' && h->name.p[k] < 0x7f);
		for (size_t k = 0; k < h->value.len; k++) {
			unsigned char c = (unsigned char)h->value.p[k];

			ASSERT(c == '\t' || (c >= 0x20 && c != 0x7f));
		}
		if (h->value.len) {
			ASSERT(h->value.p[0] != ' ' && h->value.p[0] != '\t');
			ASSERT(h->value.p[h->value.len - 1] != ' ' &&
			       h->value.p[h->value.len - 1] != '\t');
		}
	}
	/* what routes and rules compare (parse.h): within its buffer, a
	 * resolved path with no empty, "." or ".." segment, a bounded host */
	{
		static char path[70000];
		char host[256];
		size_t n = r->path.len + 2 <= sizeof(path) ? http_path_resolve(r->path.p, r->path.len, path) : 0;
		ASSERT(n <= r->path.len + 1);
		if (n && path[0] != '*') {
			ASSERT(path[0] == '/');
			path[n] = 0;
			ASSERT(!strstr(path, "//") && !strstr(path, "/./") && !strstr(path, "/../"));
		}
		size_t hn = http_host_key(r, host, sizeof(host));
		ASSERT(hn < sizeof(host) && strlen(host) == hn);
	}
}

/* Re-derive the framing facts from the header array with independent code
 * and compare them with what the parser computed in its single pass. */
static void check_derived(const struct http_request *r)
{
	unsigned n_host = 0, n_te = 0, n_cl = 0;
	bool close = false, ka = false;

	for (unsigned i = 0; i < r->n_headers; i++) {
		const struct http_header *h = &r->headers[i];

		/* no accepted field is a framing field spelled with '_' */
		if (h->name.len == 14 || h->name.len == 17) {
			char low[17];
			for (size_t k = 0; k < h->name.len; k++) {
				char c = h->name.p[k];
				low[k] = c == '_'		  ? '-'
					 : (c >= 'A' && c <= 'Z') ? (char)(c + 32)
								  : c;
			}
			if (memchr(h->name.p, '_', h->name.len))
				ASSERT(memcmp(low,
					      h->name.len == 14 ? "content-length"
								: "transfer-encoding",
					      h->name.len) != 0);
		}
		if (http_str_eq(h->name, "host")) {
			n_host++;
			ASSERT(h->value.p == r->host.p && h->value.len == r->host.len);
		} else if (http_str_eq(h->name, "transfer-encoding")) {
			n_te++;
		} else if (http_str_eq(h->name, "content-length")) {
			/* every element is the same number */
			const char *p = h->value.p, *e = p + h->value.len;

			n_cl++;
			while (p < e) {
				uint64_t v = 0;

				while (p < e && (*p == ' ' || *p == '\t' || *p == ','))
					p++;
				if (p == e)
					break;
				ASSERT(*p >= '0' && *p <= '9');
				while (p < e && *p >= '0' && *p <= '9')
					v = v * 10 + (uint64_t)(*p++ - '0');
				ASSERT(v == r->content_length);
			}
		} else if (http_str_eq(h->name, "connection")) {
			close |= http_list_has_token(h->value, "close");
			ka |= http_list_has_token(h->value, "keep-alive");
		} else if (http_str_eq(h->name, "expect")) {
			ASSERT(http_str_eq(h->value, "100-continue"));
		} else if (http_str_eq(h->name, "upgrade")) {
			ASSERT(r->has_upgrade);
		}
	}
	ASSERT(n_host <= 1);
	ASSERT(r->minor_version == 0 || n_host == 1);
	ASSERT(!(n_te && n_cl));
	ASSERT(r->body == (n_te ? HTTP_BODY_CHUNKED : n_cl ? HTTP_BODY_LENGTH : HTTP_BODY_NONE));
	ASSERT(r->keep_alive == (r->minor_version == 1 ? !close : ka && !close));
	ASSERT(r->is_head == (r->method.len == 4 && memcmp(r->method.p, "HEAD", 4) == 0));
	for (size_t k = 0; k < r->target.len; k++) {
		unsigned char c = (unsigned char)r->target.p[k];

		ASSERT(c > 0x20 && c != 0x7f && c != '#');
	}
}

static int parse(const char *b, size_t n, struct http_request *r, struct http_header *h,
		 const struct http_limits *lim, struct http_error *e)
{
	memset(r, 0, sizeof(*r));
	r->headers = h;
	r->max_headers = MAX_H;
	return http_parse_request(b, n, r, lim, e);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static struct http_header h1[MAX_H], h2[MAX_H];
	struct http_request r1, r2;
	struct http_error e1, e2;
	struct http_limits lim;
	size_t len, split;
	char *buf;
	int rc, rc2;

	if (size < 2)
		return 0;
	http_limits_default(&lim);
	if (data[0] & 1) {
		lim.max_request_line = 40;
		lim.max_head_bytes = 120;
		lim.max_headers = 4;
	}
	len = size - 2;
	split = (size_t)data[1] * len / 255;
	/* An exact-size copy: ASan reports any read past len. */
	buf = malloc(len ? len : 1);
	memcpy(buf, data + 2, len);

	rc = parse(buf, len, &r1, h1, &lim, &e1);
	check_result(rc, buf, len, &r1, &e1);
	if (rc > 0)
		check_derived(&r1);

	rc2 = parse(buf, split, &r2, h2, &lim, &e2);
	check_result(rc2, buf, split, &r2, &e2);
	if (rc > 0 && split < (size_t)rc)
		ASSERT(rc2 == -2);
	if (rc > 0 && split >= (size_t)rc) {
		ASSERT(rc2 == rc);
		ASSERT(r2.n_headers == r1.n_headers && r2.body == r1.body &&
		       r2.content_length == r1.content_length && r2.keep_alive == r1.keep_alive &&
		       r2.path.len == r1.path.len && r2.host.p == r1.host.p);
	}
	if (rc == -2)
		ASSERT(rc2 == -2);
	if (rc2 == -1)
		ASSERT(rc == -1 && e1.status == e2.status && e1.reason == e2.reason);
	if (rc > 0) {
		/* exactly the head, nothing after it: same answer */
		rc2 = parse(buf, (size_t)rc, &r2, h2, &lim, &e2);
		ASSERT(rc2 == rc);
	}
	free(buf);
	return 0;
}
