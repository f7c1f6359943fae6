/* fuzz_chunked.c — libFuzzer target for the chunked decoder.
 *
 * Input: one mode byte (bit 0: a tiny trailer limit, bit 1: no trailers at
 * all), one split byte, then
 * the chunked stream. The stream is decoded three ways — in one piece, in two
 * pieces cut at the split, and byte by byte (short inputs) — and all must
 * agree on the outcome, the bytes consumed and the payload. Each call must
 * consume at most what it was given, report its payload span inside the
 * consumed bytes, and consume nothing once done.
 */
#include "http/parse.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ASSERT(c)                                                                                  \
	do {                                                                                       \
		if (!(c)) {                                                                        \
			fprintf(stderr, "invariant failed: %s (%s:%d)\n", #c, __FILE__, __LINE__); \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

struct outcome {
	int rc; /* 0 done, 1 all consumed and not done, -1 invalid */
	size_t consumed;
	size_t payload_len;
	uint64_t payload_total;
	char *payload; /* the payload bytes, concatenated (at most the input size) */
};

/* Deliver the stream in pieces that end at the given cut points (the last is
 * len), each piece copied to an exact-size buffer, re-feeding unconsumed
 * bytes as a caller would. */
static void decode(const char *in, size_t len, const size_t *cuts, size_t n_cuts,
		   size_t max_trailer, struct outcome *o)
{
	struct http_chunked d;
	struct http_error e;
	size_t off = 0;

	http_chunked_init(&d);
	if (max_trailer != SIZE_MAX)
		d.max_trailer_bytes = max_trailer;
	o->rc = 1;
	o->payload_len = 0;
	for (size_t c = 0; c < n_cuts && o->rc == 1; c++) {
		while (off < cuts[c]) {
			size_t avail = cuts[c] - off;
			char *b = malloc(avail);
			struct http_str pl;
			ssize_t n;

			memcpy(b, in + off, avail);
			n = http_chunked_feed(&d, b, avail, &pl, &e);
			if (n < 0) {
				ASSERT(e.status == 400 && e.reason);
				free(b);
				o->rc = -1;
				break;
			}
			ASSERT((size_t)n <= avail);
			if (pl.len) {
				ASSERT(pl.p >= b && pl.p + pl.len <= b + n);
				ASSERT(o->payload_len + pl.len <= len);
				memcpy(o->payload + o->payload_len, pl.p, pl.len);
				o->payload_len += pl.len;
			} else {
				ASSERT(pl.p == NULL);
			}
			off += (size_t)n;
			if (d.done) {
				/* done: the rest belongs to the next message */
				if (avail > (size_t)n)
					ASSERT(http_chunked_feed(&d, b + n, avail - (size_t)n, &pl,
								 &e) == 0);
				free(b);
				o->rc = 0;
				break;
			}
			free(b);
			/* Progress: only a data span may stop early, and it consumed bytes. */
			ASSERT(n > 0);
		}
	}
	o->consumed = off;
	o->payload_total = d.payload_total;
	ASSERT(o->payload_total == o->payload_len);
	ASSERT(o->rc != 0 || d.done);
}

static void same(const struct outcome *a, const struct outcome *b)
{
	ASSERT(a->rc == b->rc);
	if (a->rc < 0)
		return;
	ASSERT(a->consumed == b->consumed);
	ASSERT(a->payload_len == b->payload_len);
	ASSERT(memcmp(a->payload, b->payload, a->payload_len) == 0);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	struct outcome whole, two, bytes;
	size_t len, split, max_trailer, cuts[2];
	const char *in;

	if (size < 2)
		return 0;
	max_trailer = (data[0] & 2) ? 0 : (data[0] & 1) ? 16 : SIZE_MAX;
	len = size - 2;
	in = (const char *)data + 2;
	split = (size_t)data[1] * len / 255;

	whole.payload = malloc(len + 1);
	two.payload = malloc(len + 1);
	cuts[0] = len;
	decode(in, len, cuts, 1, max_trailer, &whole);
	cuts[0] = split;
	cuts[1] = len;
	decode(in, len, cuts, 2, max_trailer, &two);
	same(&whole, &two);
	if (len <= 512) {
		size_t *all = malloc(sizeof(size_t) * (len + 1));

		for (size_t i = 0; i < len; i++)
			all[i] = i + 1;
		bytes.payload = malloc(len + 1);
		decode(in, len, all, len, max_trailer, &bytes);
		same(&whole, &bytes);
		free(bytes.payload);
		free(all);
	}
	free(whole.payload);
	free(two.payload);
	return 0;
}
