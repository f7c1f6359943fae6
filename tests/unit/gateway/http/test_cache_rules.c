/* RFC 9111 rules of the cache, table by table: Cache-Control parsing,
 * HTTP dates, what a shared cache may store, freshness lifetime and age,
 * how a stored object may answer a request (fresh, max-stale, min-fresh,
 * max-age, no-cache, must-revalidate, stale-while-revalidate), stale on
 * error, entity-tag matching, key normalisation. */
#include <stdlib.h>

#include "../../../lib/test.h"
#include "http/cache_rules.h"

static struct cache_cc cc_of(const char *s)
{
	struct cache_cc cc = {0};

	cache_cc_parse(&cc, s, strlen(s));
	return cc;
}

static void test_cc_parse(void)
{
	test_begin("cc_parse");
	struct cache_cc c = cc_of("public, max-age=60, s-maxage=\"30\", stale-while-revalidate=5");
	CHECK(c.public_ && c.has_max_age && c.max_age == 60 && c.has_s_maxage && c.s_maxage == 30);
	CHECK(c.has_swr && c.swr == 5 && !c.no_store && !c.private_);
	c = cc_of("no-store,no-cache=\"Set-Cookie\" , private=\"x, y\", must-revalidate");
	CHECK(c.no_store && c.no_cache && c.private_ && c.must_revalidate);
	c = cc_of("max-age=abc");
	CHECK_MSG(c.has_max_age && c.max_age == 0, "an invalid max-age means stale");
	c = cc_of("max-stale, min-fresh=10, only-if-cached, stale-if-error=99");
	CHECK(c.has_max_stale && c.max_stale_any && c.min_fresh == 10 && c.only_if_cached);
	CHECK(c.has_sie && c.sie == 99);
	c = cc_of("max-stale=7, PROXY-REVALIDATE, Max-Age=99999999999");
	CHECK(c.has_max_stale && !c.max_stale_any && c.max_stale == 7 && c.proxy_revalidate);
	CHECK_MSG(c.max_age == (1U << 31), "delta-seconds saturate at 2^31, got %u", c.max_age);
	c = cc_of("");
	CHECK(!c.has_max_age && !c.no_store);
	test_end();

	test_begin("cc_duplicates_disagreeing_are_stale");
	c = cc_of("max-age=0, max-age=60");
	CHECK_MSG(c.has_max_age && c.max_age == 0, "max-age=0, max-age=60 → %u", c.max_age);
	c = cc_of("max-age=60, max-age=0");
	CHECK(c.has_max_age && c.max_age == 0);
	c = cc_of("max-age=60, max-age=60");
	CHECK_MSG(c.max_age == 60, "agreeing duplicates keep their value, got %u", c.max_age);
	c = cc_of("max-age=60");
	cache_cc_parse(&c, "max-age=3600", 12); /* a second field line */
	CHECK(c.max_age == 0);
	c = cc_of("s-maxage=10, s-maxage=99");
	CHECK(c.has_s_maxage && c.s_maxage == 0);
	c = cc_of("max-age=-5");
	CHECK(c.has_max_age && c.max_age == 0);
	c = cc_of("max-stale=-1");
	CHECK_MSG(!c.has_max_stale && !c.max_stale_any, "an invalid max-stale is not \"any\"");
	c = cc_of("max-stale=abc, max-stale");
	CHECK(c.has_max_stale && c.max_stale_any);
	test_end();

	test_begin("age_value");
	static const struct {
		const char *s;
		int64_t want;
	} ages[] = {
		{"0", 0},
		{"30", 30},
		{" 30 ", 30},
		{"30, 40", 30},
		{"-100000", -1},
		{"abc", -1},
		{"", -1},
		{"\"30\"", -1},
		{"99999999999999999999", 1LL << 31},
		{"2147483648", 1LL << 31},
		{"1.5", -1},
	};
	for (size_t i = 0; i < sizeof(ages) / sizeof(ages[0]); i++)
		CHECK_MSG(cache_age_value(ages[i].s, strlen(ages[i].s)) == ages[i].want,
			  "Age '%s': %lld", ages[i].s,
			  (long long)cache_age_value(ages[i].s, strlen(ages[i].s)));
	test_end();

	test_begin("etag_weak_eq");
	CHECK(cache_etag_weak_eq("\"v1\"", 4, "\"v1\"", 4));
	CHECK(cache_etag_weak_eq("W/\"v1\"", 6, "\"v1\"", 4));
	CHECK(!cache_etag_weak_eq("\"v2\"", 4, "\"v1\"", 4));
	CHECK(!cache_etag_weak_eq("", 0, "", 0));
	test_end();
}

static void test_dates(void)
{
	static const struct {
		const char *s;
		int64_t ms;
	} t[] = {
		{"Sun, 06 Nov 1994 08:49:37 GMT", 784111777000LL},
		{"Sunday, 06-Nov-94 08:49:37 GMT", 784111777000LL},
		{"Sun Nov  6 08:49:37 1994", 784111777000LL},
		{"Thu, 01 Jan 1970 00:00:00 GMT", 0},
		{"0", -1},
		{"Sun, 06 Nov 1994 08:49:37 UTC", -1},
		{"Sun, 32 Nov 1994 08:49:37 GMT", -1},
		{"", -1},
	};
	char buf[32];

	test_begin("http_dates");
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		CHECK_MSG(cache_http_date(t[i].s, strlen(t[i].s)) == t[i].ms, "case %zu: %s", i,
			  t[i].s);
	size_t n = cache_http_date_format(784111777, buf);
	CHECK_STR(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
	CHECK(n == 29);
	test_end();
}

/* ---- storing ---------------------------------------------------------------- */

static void test_storable(void)
{
	static const struct {
		const char *req_cc;
		bool auth, head;
		int status;
		const char *resp_cc;
		bool expires, cookie, vary_star;
		enum cache_nostore want;
	} t[] = {
		{"", 0, 0, 200, "max-age=60", 0, 0, 0, CACHE_STORE_OK},
		{"", 0, 0, 200, "s-maxage=60", 0, 0, 0, CACHE_STORE_OK},
		{"", 0, 0, 200, "", 1, 0, 0, CACHE_STORE_OK}, /* Expires */
		{"", 0, 0, 200, "public", 0, 0, 0, CACHE_STORE_OK},
		{"", 0, 0, 200, "", 0, 0, 0, CACHE_NOSTORE_NO_FRESHNESS}, /* no heuristics */
		{"", 0, 0, 200, "max-age=60, no-store", 0, 0, 0, CACHE_NOSTORE_NO_STORE},
		{"", 0, 0, 200, "max-age=60, private", 0, 0, 0, CACHE_NOSTORE_PRIVATE},
		{"no-store", 0, 0, 200, "max-age=60", 0, 0, 0, CACHE_NOSTORE_REQ_NO_STORE},
		{"", 1, 0, 200, "max-age=60", 0, 0, 0, CACHE_NOSTORE_AUTHORIZATION},
		{"", 1, 0, 200, "max-age=60, public", 0, 0, 0, CACHE_STORE_OK},
		{"", 1, 0, 200, "s-maxage=60", 0, 0, 0, CACHE_STORE_OK},
		{"", 1, 0, 200, "max-age=60, must-revalidate", 0, 0, 0, CACHE_STORE_OK},
		{"", 0, 0, 200, "max-age=60", 0, 1, 0, CACHE_NOSTORE_SET_COOKIE},
		{"", 0, 0, 200, "max-age=60, public", 0, 1, 0, CACHE_STORE_OK},
		{"", 0, 0, 200, "max-age=60", 0, 0, 1, CACHE_NOSTORE_VARY_STAR},
		{"", 0, 0, 206, "max-age=60", 0, 0, 0, CACHE_NOSTORE_STATUS},
		{"", 0, 0, 304, "max-age=60", 0, 0, 0, CACHE_NOSTORE_STATUS},
		{"", 0, 0, 404, "max-age=60", 0, 0, 0, CACHE_STORE_OK},
		{"", 0, 0, 500, "max-age=60", 0, 0, 0, CACHE_STORE_OK},
		{"", 0, 1, 200, "max-age=60", 0, 0, 0, CACHE_NOSTORE_METHOD},
	};

	test_begin("storable");
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct cache_req_facts rq = {.get_or_head = true,
					     .is_head = t[i].head,
					     .authorization = t[i].auth,
					     .cc = cc_of(t[i].req_cc)};
		struct cache_resp_facts rs = {.status = t[i].status,
					      .cc = cc_of(t[i].resp_cc),
					      .has_expires = t[i].expires,
					      .expires_ms = t[i].expires ? 1000 : 0,
					      .set_cookie = t[i].cookie,
					      .vary_star = t[i].vary_star};
		enum cache_nostore got = cache_storable(&rq, &rs);
		CHECK_MSG(got == t[i].want, "case %zu: got %s, want %s", i, cache_nostore_name(got),
			  cache_nostore_name(t[i].want));
	}
	test_end();
}

static void test_lifetime_and_age(void)
{
	test_begin("lifetime_and_age");
	struct cache_resp_facts rs = {.cc = cc_of("max-age=60, s-maxage=10"),
				      .has_expires = true,
				      .expires_ms = 500000,
				      .has_date = true,
				      .date_ms = 100000};
	CHECK_MSG(cache_freshness_lifetime(&rs, 100000) == 10000, "s-maxage wins");
	rs.cc = cc_of("max-age=60");
	CHECK_MSG(cache_freshness_lifetime(&rs, 100000) == 60000, "then max-age");
	rs.cc = cc_of("");
	CHECK_MSG(cache_freshness_lifetime(&rs, 100000) == 400000, "then Expires - Date");
	rs.expires_ms = -1;
	CHECK_MSG(cache_freshness_lifetime(&rs, 100000) == 0, "an invalid Expires is the past");
	rs.has_expires = false;
	CHECK(cache_freshness_lifetime(&rs, 100000) == 0);

	/* §4.2.3: apparent age 5 s (Date 5 s before arrival), Age 2 s + 1 s delay */
	struct cache_resp_facts a = {
		.has_date = true, .date_ms = 95000, .has_age = true, .age_s = 2};
	CHECK_INT(cache_initial_age(&a, 99000, 100000), 5000);
	a.age_s = 10;
	CHECK_INT(cache_initial_age(&a, 99000, 100000), 11000);
	struct cache_meta m;
	a.cc = cc_of("max-age=60");
	cache_meta_from(&m, &a, 99000, 100000);
	CHECK_INT(cache_current_age(&m, 130000), 41000);
	test_end();
}

/* ---- using a stored object ------------------------------------------------- */

static void test_use(void)
{
	static const struct {
		const char *resp_cc;
		const char *req_cc;
		int64_t age_s;
		enum cache_use want;
	} t[] = {
		{"max-age=60", "", 10, CACHE_USE_FRESH},
		{"max-age=60", "", 61, CACHE_USE_REVALIDATE},
		{"max-age=60", "max-age=5", 10, CACHE_USE_REVALIDATE},
		{"max-age=60", "max-age=20", 10, CACHE_USE_FRESH},
		{"max-age=60", "min-fresh=55", 10, CACHE_USE_REVALIDATE},
		{"max-age=60", "min-fresh=20", 10, CACHE_USE_FRESH},
		{"max-age=60", "no-cache", 10, CACHE_USE_REVALIDATE},
		{"max-age=60, no-cache", "", 10, CACHE_USE_REVALIDATE},
		{"max-age=60", "max-stale", 1000, CACHE_USE_STALE_OK},
		{"max-age=60", "max-stale=30", 80, CACHE_USE_STALE_OK},
		{"max-age=60", "max-stale=10", 80, CACHE_USE_REVALIDATE},
		{"max-age=60, must-revalidate", "max-stale", 80, CACHE_USE_REVALIDATE},
		{"max-age=60, proxy-revalidate", "max-stale", 80, CACHE_USE_REVALIDATE},
		{"s-maxage=60", "max-stale", 80, CACHE_USE_REVALIDATE},
		{"max-age=60, stale-while-revalidate=30", "", 80, CACHE_USE_STALE_SWR},
		{"max-age=60, stale-while-revalidate=30", "", 100, CACHE_USE_REVALIDATE},
		{"max-age=60, stale-while-revalidate=30", "", 30, CACHE_USE_FRESH},
	};

	test_begin("use");
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct cache_resp_facts rs = {.cc = cc_of(t[i].resp_cc)};
		struct cache_meta m;
		struct cache_cc rq = cc_of(t[i].req_cc);
		cache_meta_from(&m, &rs, 1000000, 1000000);
		enum cache_use got = cache_use(&m, &rq, 1000000 + t[i].age_s * 1000);
		CHECK_MSG(got == t[i].want, "case %zu (%s / %s, age %lld): got %d want %d", i,
			  t[i].resp_cc, t[i].req_cc, (long long)t[i].age_s, got, t[i].want);
	}
	test_end();
}

static void test_stale_on_error(void)
{
	static const struct {
		const char *resp_cc, *req_cc;
		int64_t grace_s, age_s;
		bool want;
	} t[] = {
		{"max-age=10", "", 0, 20, false},
		{"max-age=10, stale-if-error=60", "", 0, 20, true},
		{"max-age=10, stale-if-error=5", "", 0, 20, false},
		{"max-age=10", "stale-if-error=30", 0, 20, true},
		{"max-age=10", "", 30, 20, true},
		{"max-age=10", "", 5, 20, false},
		{"max-age=10, must-revalidate, stale-if-error=60", "", 60, 20, false},
		{"max-age=10", "", 0, 5, true}, /* still fresh */
	};

	test_begin("stale_on_error");
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct cache_resp_facts rs = {.cc = cc_of(t[i].resp_cc)};
		struct cache_meta m;
		struct cache_cc rq = cc_of(t[i].req_cc);
		cache_meta_from(&m, &rs, 0, 0);
		bool got = cache_stale_on_error(&m, &rq, t[i].grace_s * 1000, t[i].age_s * 1000);
		CHECK_MSG(got == t[i].want, "case %zu", i);
	}
	test_end();
}

static void test_etags(void)
{
	static const struct {
		const char *inm, *etag;
		bool want;
	} t[] = {
		{"\"a\"", "\"a\"", true},   {"W/\"a\"", "\"a\"", true},
		{"\"a\"", "W/\"a\"", true}, {"\"b\", \"a\"", "\"a\"", true},
		{"\"b\"", "\"a\"", false},  {"*", "\"a\"", true},
		{"\"ab\"", "\"a\"", false}, {"", "\"a\"", false},
	};

	test_begin("etag_match");
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++)
		CHECK_MSG(cache_etag_match(t[i].inm, strlen(t[i].inm), t[i].etag,
					   strlen(t[i].etag)) == t[i].want,
			  "case %zu", i);
	test_end();
}

static void test_norm(void)
{
	static const struct {
		const char *in, *out;
	} paths[] =
		{
			{"/a/b?x=1", "/a/b?x=1"}, {"/%7euser/%2fx", "/%7Euser/%2Fx"},
			{"/%41%42c", "/%41%42c"}, {"/%zz", "/%zz"},
			{"/a%", "/a%"},
		},
	  hosts[] = {
		  {"Example.COM", "example.com"},
		  {"example.com:80", "example.com"},
		  {"example.com:8080", "example.com:8080"},
		  {"example.com.", "example.com"},
		  {"[::1]:80", "[::1]"},
	  };
	char out[64];

	test_begin("key_normalisation");
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		int n = cache_norm_path(paths[i].in, strlen(paths[i].in), out, sizeof(out));
		CHECK(n >= 0);
		out[n < 0 ? 0 : n] = 0;
		CHECK_STR(out, paths[i].out);
	}
	for (size_t i = 0; i < sizeof(hosts) / sizeof(hosts[0]); i++) {
		int n = cache_norm_host(hosts[i].in, strlen(hosts[i].in), out, sizeof(out));
		CHECK(n >= 0);
		out[n < 0 ? 0 : n] = 0;
		CHECK_STR(out, hosts[i].out);
	}
	CHECK(cache_norm_path("/abcdef", 7, out, 4) == -1);
	test_end();
}

int main(void)
{
	test_cc_parse();
	test_dates();
	test_storable();
	test_lifetime_and_age();
	test_use();
	test_stale_on_error();
	test_etags();
	test_norm();
	return test_exit_code();
}
