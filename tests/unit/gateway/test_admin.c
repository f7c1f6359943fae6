/* test_admin.c — what the admin API's handlers read from request bodies
 * (admin_body_string) and how they refuse (admin_error). Bodies are placed
 * against a guard page, so reading one byte past them faults. */
#include "admin.h"
#include "tests/lib/test.h"

#include <string.h>

static int body_string(const char *body, const char *key, char *out, size_t cap)
{
	struct admin_req req = {.body = test_guard_place(body, strlen(body)),
				.body_len = strlen(body)};

	return admin_body_string(&req, key, out, cap);
}

static void test_body_string(void)
{
	char v[64];

	test_begin("body_string_plain_and_spacing");
	CHECK_INT(body_string("{\"cidr\":\"10.0.0.0/8\"}", "cidr", v, sizeof(v)), 10);
	CHECK_STR(v, "10.0.0.0/8");
	CHECK_INT(body_string("{ \"ttl_ms\" : 5, \"cidr\" :\n \"::1/128\" }", "cidr", v, sizeof(v)),
		  7);
	CHECK_STR(v, "::1/128");
	CHECK_INT(body_string("{\"url\":\"\"}", "url", v, sizeof(v)), 0);
	CHECK_STR(v, "");
	test_end();

	test_begin("body_string_escapes");
	CHECK_INT(body_string("{\"url\":\"/a\\\"b\\\\c\\/d\\n\"}", "url", v, sizeof(v)), 9);
	CHECK_STR(v, "/a\"b\\c/d\n");
	CHECK_INT(body_string("{\"tag\":\"caf\\u00e9\"}", "tag", v, sizeof(v)), 5);
	CHECK_STR(v, "caf\xc3\xa9");
	CHECK_INT(body_string("{\"tag\":\"caf\xc3\xa9\"}", "tag", v, sizeof(v)), 5); /* raw UTF-8 */
	CHECK_STR(v, "caf\xc3\xa9");
	CHECK_INT(body_string("{\"tag\":\"\\u20ac\"}", "tag", v, sizeof(v)), 3);
	CHECK_STR(v, "\xe2\x82\xac");
	test_end();

	test_begin("body_string_only_top_level_keys");
	/* the key as a value, inside another string, or in a nested object is not the key */
	CHECK_INT(body_string("{\"name\":\"cidr\",\"x\":1}", "cidr", v, sizeof(v)), -1);
	CHECK_INT(body_string("{\"note\":\"\\\"cidr\\\":\\\"1.2.3.4\\\"\"}", "cidr", v, sizeof(v)), -1);
	CHECK_INT(body_string("{\"o\":{\"cidr\":\"1.2.3.4\"},\"cidr\":\"5.6.7.8\"}", "cidr", v,
			      sizeof(v)),
		  7);
	CHECK_STR(v, "5.6.7.8");
	CHECK_INT(body_string("{\"cidrx\":\"1\",\"xcidr\":\"2\"}", "cidr", v, sizeof(v)), -1);
	test_end();

	test_begin("body_string_refuses_what_is_not_a_string");
	CHECK_INT(body_string("{\"cidr\":42}", "cidr", v, sizeof(v)), -1);
	CHECK_INT(body_string("{\"cidr\":\"1.2.3.4", "cidr", v, sizeof(v)), -1); /* cut */
	CHECK_INT(body_string("{\"cidr\":\"a\\", "cidr", v, sizeof(v)), -1);
	CHECK_INT(body_string("{\"cidr\":\"\\u12\"}", "cidr", v, sizeof(v)), -1);
	CHECK_INT(body_string("{\"cidr\":\"\\ud83d\\ude00\"}", "cidr", v, sizeof(v)), -1);
	CHECK_INT(body_string("{\"cidr\":\"\\q\"}", "cidr", v, sizeof(v)), -1);
	CHECK_INT(body_string("{\"cidr\":\"a\tb\"}", "cidr", v, sizeof(v)), -1); /* raw control */
	CHECK_INT(body_string("{\"cidr\":\"\\u0000\"}", "cidr", v, sizeof(v)), -2);
	CHECK_INT(body_string("{\"cidr\":\"12345678\"}", "cidr", v, 8), -2); /* no room for NUL */
	CHECK_INT(body_string("{\"cidr\":\"1234567\"}", "cidr", v, 8), 7);
	CHECK_INT(body_string("", "cidr", v, sizeof(v)), -1);
	struct admin_req none = {0};
	CHECK_INT(admin_body_string(&none, "cidr", v, sizeof(v)), -1);
	test_end();
}

static void test_error(void)
{
	struct admin_resp resp = {0};

	test_begin("error_replaces_the_body");
	buf_appends(&resp.body, "{\"partial\":");
	CHECK_INT(admin_error(&resp, 400, "bad \"cidr\""), 0);
	CHECK_INT(resp.status, 400);
	CHECK(resp.body.len && !memcmp(buf_head(&resp.body), "{\"error\":\"bad \\\"cidr\\\"\"}\n",
				       resp.body.len));
	buf_free(&resp.body);
	test_end();
}

int main(void)
{
	test_body_string();
	test_error();
	return test_exit_code();
}
