/* test_json — the strict JSON reader (control/json.c) and the writer's
 * escaper (gateway/core/jsonw.c) against each other: everything jsonw
 * writes parses back to the same bytes (or, for bytes that are not UTF-8,
 * to their Latin-1 code points), and the reader refuses what RFC 8259
 * refuses. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control/json.h"
#include "core/jsonw.h"
#include "tests/lib/test.h"

static uint64_t rng = 0x9e3779b97f4a7c15ULL;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static bool parses(const char *s)
{
	char err[128];
	struct json *j = json_parse(s, strlen(s), err, sizeof(err));

	json_free(j);
	return j != NULL;
}

static void test_strict(void)
{
	static const char *const good[] = {
		"{}",
		"[]",
		"0",
		"-0",
		"1.5e-3",
		"\"\"",
		"true",
		"null",
		" {\"a\":[1,2,{\"b\":null}]} ",
		"\"\\u00e9\\ud83d\\ude00\\n\"",
		"[-1E+2]",
	};
	static const char *const bad[] = {
		"",	 "{",	"[1,]",	       "{\"a\":1,}",  "01",	  "1.",
		".5",	 "+1",	"\"\\x\"",     "\"a\nb\"",    "tru",	  "[1] [2]",
		"{a:1}", "'a'", "\"\\ud800\"", "\"\\udc00\"", "\"\xff\"", "\"\xc0\xaf\"",
		"[1 2]", "NaN", "/*c*/1",
	};

	test_begin("reader_is_strict");
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
		CHECK_MSG(parses(good[i]), "refused valid: %s", good[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		CHECK_MSG(!parses(bad[i]), "accepted invalid: %s", bad[i]);
	/* nesting is bounded */
	char deep[200];
	memset(deep, '[', 100);
	memset(deep + 100, ']', 100);
	char err[128];
	struct json *j = json_parse(deep, 200, err, sizeof(err));
	CHECK(j == NULL);
	json_free(j);
	test_end();
}

static void test_accessors(void)
{
	const char *s = "{\"a\":{\"b\":{\"c\":42}},\"s\":\"x\\u0000y\",\"a2\":1}";
	char err[128];
	struct json *j = json_parse(s, strlen(s), err, sizeof(err));

	test_begin("accessors");
	CHECK(j != NULL);
	CHECK_INT(json_num(json_path(j, "a.b.c"), 0), 42);
	CHECK(json_path(j, "a.x.c") == NULL);
	CHECK_INT(json_get(j, "s")->len, 3); /* an embedded NUL keeps its length */
	CHECK_STR(json_str(json_get(j, "nope"), "dflt"), "dflt");
	CHECK_INT(json_num(json_get(j, "s"), -1), -1);
	json_free(j);
	test_end();
}

/* Decode a jsonw-escaped string back and compare with the input. */
static void test_roundtrip(void)
{
	unsigned bad = 0;

	test_begin("jsonw_output_parses_back");
	for (int iter = 0; iter < 20000; iter++) {
		unsigned char in[64];
		size_t n = next() % sizeof(in);
		char out[JSONW_MAX(64)], err[128];

		for (size_t i = 0; i < n; i++) {
			uint64_t r = next();
			/* mostly ASCII, some controls, some UTF-8 pieces, some junk */
			in[i] = r % 4 == 0 ? (unsigned char)(r >> 8)
					   : (unsigned char)(0x20 + (r >> 8) % 95);
		}
		size_t len = jsonw_escape(out, sizeof(out), (const char *)in, n);
		if (!len) {
			bad++;
			continue;
		}
		struct json *j = json_parse(out, len, err, sizeof(err));
		if (!j || j->type != JSON_STRING) {
			if (bad++ < 3)
				test_fail(__FILE__, __LINE__, "not a JSON string (%s): %.*s", err,
					  (int)len, out);
			json_free(j);
			continue;
		}
		/* expected: valid UTF-8 sequences as they are, other bytes as U+00XX */
		unsigned char want[64 * 2];
		size_t w = 0;
		for (size_t i = 0; i < n;) {
			size_t k = 0;
			char tmp[8];
			/* is in[i..] a valid sequence? ask the escaper about it alone */
			for (size_t L = 4; L >= 2; L--) {
				if (i + L <= n && in[i] >= 0x80) {
					size_t e = jsonw_escape(tmp, sizeof(tmp),
								(const char *)in + i, L);
					if (e == L + 2 && !memcmp(tmp + 1, in + i, L)) {
						k = L;
						break;
					}
				}
			}
			if (k) {
				memcpy(want + w, in + i, k);
				w += k;
				i += k;
			} else if (in[i] >= 0x80) {
				want[w++] = (unsigned char)(0xc0 | in[i] >> 6);
				want[w++] = (unsigned char)(0x80 | (in[i] & 0x3f));
				i++;
			} else {
				want[w++] = in[i++];
			}
		}
		if (j->len != w || memcmp(j->str, want, w)) {
			if (bad++ < 3)
				test_fail(__FILE__, __LINE__, "round trip differs for %.*s",
					  (int)len, out);
		}
		json_free(j);
	}
	CHECK_INT(bad, 0);
	/* too small an output buffer: 0, never a cut string */
	char small[4];
	CHECK_INT(jsonw_escape(small, sizeof(small), "abcdef", 6), 0);
	test_end();
}

int main(void)
{
	test_strict();
	test_accessors();
	test_roundtrip();
	return test_exit_code();
}
