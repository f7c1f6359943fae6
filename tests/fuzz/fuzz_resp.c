/* fuzz_resp.c — libFuzzer target for the RESP2 reply parser (core/redis.h).
 *
 * The input is parsed from an exactly sized copy (ASan catches a read past
 * its end). A reply it accepts must take at most the input, parse the same
 * from exactly its own bytes, need more when its last byte is missing, and
 * have every string view inside the input. Every proper prefix of an
 * accepted reply must say "need more". The input cut into arguments is also
 * encoded and parsed back, and must come back the same.
 */
#include "core/redis.h"

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

#define NODES 32
#define MAX_BULK 4096

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void check_views(const struct redis_reply *r, const char *buf, long len)
{
	if (r->type == REDIS_R_STATUS || r->type == REDIS_R_ERROR || r->type == REDIS_R_BULK) {
		ASSERT(r->str >= buf && r->str + r->len <= buf + len);
	} else if (r->type == REDIS_R_ARRAY) {
		for (size_t i = 0; i < r->len; i++)
			check_views(&r->elem[i], buf, len);
	}
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	struct redis_reply nodes[NODES];
	char *buf = malloc(size ? size : 1);

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	long rc = redis_parse(buf, size, MAX_BULK, nodes, NODES);
	ASSERT(rc == -1 || rc == -2 || (rc > 0 && (size_t)rc <= size));
	if (rc > 0) {
		check_views(&nodes[0], buf, rc);
		ASSERT(redis_parse(buf, (size_t)rc, MAX_BULK, nodes, NODES) == rc);
		ASSERT(redis_parse(buf, (size_t)rc - 1, MAX_BULK, nodes, NODES) == -2);
		if (rc < 256)
			for (long k = 0; k < rc; k++)
				ASSERT(redis_parse(buf, (size_t)k, MAX_BULK, nodes, NODES) == -2);
	}

	/* encode: the input cut at each ' ' into arguments (at most 16) */
	const char *argv[16];
	size_t lens[16];
	int argc = 0;
	size_t start = 0;
	for (size_t i = 0; i <= size && argc < 16; i++) {
		if (i == size || buf[i] == ' ') {
			argv[argc] = buf + start;
			lens[argc++] = i - start;
			start = i + 1;
		}
	}
	size_t need = redis_encode(NULL, 0, argc, argv, lens);
	char *enc = malloc(need);
	if (enc) {
		ASSERT(redis_encode(enc, need, argc, argv, lens) == need);
		rc = redis_parse(enc, need, size + 1, nodes, NODES);
		ASSERT(rc == (long)need);
		ASSERT(nodes[0].type == REDIS_R_ARRAY && nodes[0].len == (size_t)argc);
		for (int i = 0; i < argc; i++)
			ASSERT(nodes[0].elem[i].type == REDIS_R_BULK &&
			       nodes[0].elem[i].len == lens[i] &&
			       !memcmp(nodes[0].elem[i].str, argv[i], lens[i]));
		free(enc);
	}
	free(buf);
	return 0;
}
