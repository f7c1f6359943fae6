/* fuzz_response.c — libFuzzer target for http_parse_response.
 *
 * Input: one mode byte (bit 0: tiny limits, bit 1: the request was HEAD),
 * one split byte (the incremental check's cut), then the response head.
 * Checks the documented results (502 for every refusal), views inside the
 * consumed head, framing consistency, and prefix/whole agreement.
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

static void check_result(int rc, const char *b, size_t len, bool head,
			 const struct http_response *r, const struct http_error *e)
{
	ASSERT(rc == -2 || rc == -1 || (rc > 0 && (size_t)rc <= len));
	if (rc == -1) {
		ASSERT(e->status == 502);
		ASSERT(e->reason && e->reason[0]);
		return;
	}
	if (rc < 0)
		return;
	ASSERT(r->minor_version == 0 || r->minor_version == 1);
	ASSERT(r->status >= 100 && r->status <= 999);
	ASSERT(r->n_headers <= r->max_headers);
	check_view(r->reason, b, (size_t)rc);
	if (head || r->status < 200 || r->status == 204 || r->status == 304)
		ASSERT(r->body == HTTP_BODY_NONE);
	else
		ASSERT(r->body != HTTP_BODY_NONE);
	if (r->body == HTTP_BODY_UNTIL_CLOSE)
		ASSERT(!r->keep_alive);
	if (r->body == HTTP_BODY_LENGTH)
		ASSERT(r->has_content_length);
	else
		ASSERT(r->content_length == 0);
	for (unsigned i = 0; i < r->n_headers; i++) {
		const struct http_header *h = &r->headers[i];

		check_view(h->name, b, (size_t)rc);
		check_view(h->value, b, (size_t)rc);
		ASSERT(h->name.len > 0);
		for (size_t k = 0; k < h->value.len; k++) {
			unsigned char c = (unsigned char)h->value.p[k];

			/* header injection: nothing that could end a line */
			ASSERT(c == '\t' || (c >= 0x20 && c != 0x7f));
		}
	}
}

/* Re-derive framing from the header array with independent code. */
static void check_derived(const struct http_response *r, bool head)
{
	unsigned n_te = 0, n_cl = 0, n_codings = 0;
	bool close = false, ka = false, no_body, cl_nonzero = false;

	for (unsigned i = 0; i < r->n_headers; i++) {
		const struct http_header *h = &r->headers[i];

		if (http_str_eq(h->name, "transfer-encoding")) {
			n_te++;
			/* empty list elements are allowed (RFC 9110 §5.6.1): the
			 * codings across all fields are one "chunked" */
			const char *p = h->value.p, *e = p + h->value.len;
			while (p < e) {
				const char *c = memchr(p, ',', (size_t)(e - p)), *q = c ? c : e;
				const char *a = p, *b = q;
				while (a < b && (*a == ' ' || *a == '\t'))
					a++;
				while (b > a && (b[-1] == ' ' || b[-1] == '\t'))
					b--;
				if (b > a) {
					ASSERT(http_str_eq((struct http_str){a, (size_t)(b - a)},
							   "chunked"));
					n_codings++;
				}
				p = c ? c + 1 : e;
			}
		} else if (http_str_eq(h->name, "content-length")) {
			n_cl++;
			/* a valid list of equal values: any non-zero digit means > 0 */
			for (size_t k = 0; k < h->value.len; k++)
				cl_nonzero |= h->value.p[k] >= '1' && h->value.p[k] <= '9';
		} else if (http_str_eq(h->name, "connection")) {
			close |= http_list_has_token(h->value, "close");
			ka |= http_list_has_token(h->value, "keep-alive");
		}
	}
	no_body = head || r->status < 200 || r->status == 204 || r->status == 304;
	ASSERT(!(n_te && n_cl));
	ASSERT(n_te == 0 || n_codings == 1);
	ASSERT(r->has_content_length == (n_cl > 0));
	ASSERT(n_te == 0 || r->minor_version == 1);
	if (no_body)
		ASSERT(r->body == HTTP_BODY_NONE);
	else
		ASSERT(r->body == (n_te	  ? HTTP_BODY_CHUNKED
				   : n_cl ? HTTP_BODY_LENGTH
					  : HTTP_BODY_UNTIL_CLOSE));
	if (r->status == 204 && (n_te || cl_nonzero))
		ASSERT(!r->keep_alive); /* it may send the body it announced */
	else if (r->body != HTTP_BODY_UNTIL_CLOSE)
		ASSERT(r->keep_alive == (r->minor_version == 1 ? !close : ka && !close));
}

static int parse(const char *b, size_t n, bool head, struct http_response *r, struct http_header *h,
		 const struct http_limits *lim, struct http_error *e)
{
	memset(r, 0, sizeof(*r));
	r->headers = h;
	r->max_headers = MAX_H;
	return http_parse_response(b, n, r, head, lim, e);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static struct http_header h1[MAX_H], h2[MAX_H];
	struct http_response r1, r2;
	struct http_error e1, e2;
	struct http_limits lim;
	size_t len, split;
	bool head;
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
	head = data[0] & 2;
	len = size - 2;
	split = (size_t)data[1] * len / 255;
	buf = malloc(len ? len : 1);
	memcpy(buf, data + 2, len);

	rc = parse(buf, len, head, &r1, h1, &lim, &e1);
	check_result(rc, buf, len, head, &r1, &e1);
	if (rc > 0)
		check_derived(&r1, head);

	rc2 = parse(buf, split, head, &r2, h2, &lim, &e2);
	check_result(rc2, buf, split, head, &r2, &e2);
	if (rc > 0 && split < (size_t)rc)
		ASSERT(rc2 == -2);
	if (rc > 0 && split >= (size_t)rc)
		ASSERT(rc2 == rc && r2.status == r1.status && r2.body == r1.body &&
		       r2.content_length == r1.content_length && r2.keep_alive == r1.keep_alive &&
		       r2.n_headers == r1.n_headers);
	if (rc == -2)
		ASSERT(rc2 == -2);
	if (rc2 == -1)
		ASSERT(rc == -1 && e1.reason == e2.reason);
	free(buf);
	return 0;
}
