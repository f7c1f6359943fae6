/* 42_cache_redis — the L2 in a real redis-server (started here on a free
 * port) shared by two gateways A and B (docs/cache.md):
 *  - an object fetched through A is a hit through B with no origin request;
 *  - a purge through A (by URL and by tag) is seen by B;
 *  - a stale-while-revalidate refresh through A writes L2: B finds it fresh;
 *  - an L2 value that fails the integrity check is not used;
 *  - with Redis killed, both keep serving (L1 hits, misses from the
 *    origin) without waiting on it beyond the per-operation timeout.
 * Both gateways are addressed with the same Host, as behind a balancer. */
#include <arpa/inet.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "tests/e2e/lib/harness.h"

#define TOKEN "l2-purge-secret"

static int a_port, b_port, o_port, r_port, a_admin;

static long origin_requests(void)
{
	char url[128];
	struct h_resp r;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/__stats", o_port);
	long st = h_get(url, &r);
	const char *p = r.body ? strstr(r.body, "\"requests\":") : NULL;
	long n = st == 200 && p ? atol(p + 11) : -1;
	h_resp_free(&r);
	return n;
}

/* GET path through the gateway on port; returns the status, *hit whether it
 * was answered from the cache. */
static long get(int port, const char *path, bool *hit, double *ms)
{
	char url[512], v[256] = "";
	const char *hdrs[] = {"Host: shared.example", NULL};
	struct h_resp r;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", port, path);
	struct h_req q = {.url = url, .headers = hdrs, .timeout_ms = 5000};
	long st = h_http(&q, &r) == 0 ? r.status : -1;
	if (hit)
		*hit = h_resp_header(&r, "Cache-Status", v, sizeof(v)) && strstr(v, "hit");
	if (ms)
		*ms = r.time_ms;
	if (st == 200 && r.body_hash != h_pattern_hash(r.body_bytes))
		st = -2;
	h_resp_free(&r);
	return st;
}

static long purge(const char *json)
{
	char url[128];
	const char *hdrs[] = {"Authorization: Bearer " TOKEN, NULL};
	struct h_resp r;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/cache/purge", a_admin);
	struct h_req q = {.method = "POST",
			  .url = url,
			  .headers = hdrs,
			  .body = json,
			  .body_len = strlen(json),
			  .no_expect = true};
	long st = h_http(&q, &r) == 0 ? r.status : -1;
	h_resp_free(&r);
	return st;
}

static void test_shared(void)
{
	bool hit;
	long before = origin_requests();

	test_begin("fetched_through_a_hit_through_b");
	CHECK_INT(get(a_port, "/l2/one?cc=max-age%3D60", &hit, NULL), 200);
	CHECK(!hit);
	h_sleep_ms(100); /* the L2 write is fire-and-forget */
	CHECK_INT(get(b_port, "/l2/one?cc=max-age%3D60", &hit, NULL), 200);
	CHECK_MSG(hit, "B answered from the object A stored in Redis");
	CHECK_INT(origin_requests() - before, 1);
	test_end();

	test_begin("vary_variants_through_l2");
	before = origin_requests();
	const char *p = "/l2/vary?cc=max-age%3D60&vary=Accept-Language";
	char url[256];
	const char *en[] = {"Host: shared.example", "Accept-Language: en", NULL};
	struct h_resp r;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", a_port, p);
	struct h_req q = {.url = url, .headers = en};
	h_http(&q, &r);
	h_resp_free(&r);
	h_sleep_ms(100);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", b_port, p);
	h_http(&q, &r);
	char v[256] = "";
	CHECK_MSG(h_resp_header(&r, "Cache-Status", v, sizeof(v)) && strstr(v, "hit"), "B: %s", v);
	h_resp_free(&r);
	CHECK_INT(origin_requests() - before, 1);
	test_end();

	test_begin("purge_through_a_seen_by_b");
	get(a_port, "/l2/p1?cc=max-age%3D60", NULL, NULL);
	get(a_port, "/l2/p2?cc=max-age%3D60&hdr=Surrogate-Key:grp", NULL, NULL);
	h_sleep_ms(100);
	get(b_port, "/l2/p1?cc=max-age%3D60", &hit, NULL);
	CHECK(hit);
	get(b_port, "/l2/p2?cc=max-age%3D60&hdr=Surrogate-Key:grp", &hit, NULL);
	CHECK(hit);
	CHECK_INT(purge("{\"url\":\"http://shared.example/l2/p1?cc=max-age%3D60\"}"), 200);
	CHECK_INT(purge("{\"tag\":\"grp\"}"), 200);
	h_sleep_ms(300); /* B hears it through Redis pub/sub */
	before = origin_requests();
	get(b_port, "/l2/p1?cc=max-age%3D60", &hit, NULL);
	CHECK_MSG(!hit, "B still had the URL-purged object");
	get(b_port, "/l2/p2?cc=max-age%3D60&hdr=Surrogate-Key:grp", &hit, NULL);
	CHECK_MSG(!hit, "B still had the tag-purged object");
	CHECK_INT(origin_requests() - before, 2);
	test_end();
}

/* A stale-while-revalidate refresh run by A writes its result to L2 too:
 * B (which never fetched the URL) then finds the fresh object there, not
 * the stale one A first stored. */
static void test_refresh_to_l2(void)
{
	const char *p = "/l2/swr?cc=max-age%3D3,stale-while-revalidate%3D60";
	const char *hdrs[] = {"Host: shared.example", NULL};
	char url[256], v[256] = "";
	struct h_resp r;

	test_begin("swr_refresh_result_reaches_l2");
	CHECK_INT(get(a_port, p, NULL, NULL), 200);
	h_sleep_ms(4100);
	long before = origin_requests();
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", a_port, p);
	struct h_req q = {.url = url, .headers = hdrs};
	CHECK(h_http(&q, &r) == 0);
	CHECK_MSG(h_resp_header(&r, "Cache-Status", v, sizeof(v)) &&
			  strstr(v, "stale-while-revalidate"),
		  "A: %s", v);
	h_resp_free(&r);
	h_sleep_ms(600); /* the refresh, then its fire-and-forget L2 write */
	CHECK_INT(origin_requests() - before, 1);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", b_port, p);
	CHECK(h_http(&q, &r) == 0);
	v[0] = 0;
	CHECK_MSG(h_resp_header(&r, "Cache-Status", v, sizeof(v)) && strstr(v, "hit") &&
			  !strstr(v, "stale"),
		  "B: %s", v);
	h_resp_free(&r);
	CHECK_INT(origin_requests() - before, 1);
	test_end();
}

static void test_integrity(void)
{
	bool hit;
	struct timeval tv = {2, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", r_port, tv);

	test_begin("corrupt_l2_value_not_used");
	get(a_port, "/l2/corrupt?cc=max-age%3D60&size=3000", NULL, NULL);
	h_sleep_ms(100);
	/* flip one byte near the end (the body) of every stored value */
	int n = 0;
	redisReply *keys = c && !c->err ? redisCommand(c, "KEYS rfx:*") : NULL;
	for (size_t i = 0; keys && i < keys->elements; i++) {
		const char *k = keys->element[i]->str;
		if (strlen(k) != 36)
			continue;
		redisReply *len = redisCommand(c, "STRLEN %s", k);
		if (len && len->integer > 2000) {
			redisReply *s = redisCommand(c, "SETRANGE %s %lld X", k, len->integer - 5);
			freeReplyObject(s);
			n++;
		}
		if (len)
			freeReplyObject(len);
	}
	if (keys)
		freeReplyObject(keys);
	CHECK_MSG(n >= 1, "no stored object found in Redis");
	long before = origin_requests();
	CHECK_INT(get(b_port, "/l2/corrupt?cc=max-age%3D60&size=3000", &hit, NULL), 200);
	CHECK_MSG(!hit, "B used a value that fails its checksum");
	CHECK_INT(origin_requests() - before, 1);
	test_end();
	if (c)
		redisFree(c);
}

static void test_redis_down(struct h_proc *redis)
{
	bool hit;
	double ms;

	get(a_port, "/l2/survive?cc=max-age%3D60", NULL, NULL);
	h_sleep_ms(100);
	h_signal(redis, SIGKILL);
	h_wait_exit(redis, 3000);

	test_begin("redis_killed_gateways_keep_serving");
	CHECK_INT(get(a_port, "/l2/survive?cc=max-age%3D60", &hit, NULL), 200);
	CHECK_MSG(hit, "A's L1 still answers");
	long before = origin_requests();
	int ok = 0;
	double worst = 0;
	for (int i = 0; i < 20; i++) {
		char p[64];
		snprintf(p, sizeof(p), "/l2/down%d?cc=max-age%%3D60", i);
		ok += get(i % 2 ? b_port : a_port, p, NULL, &ms) == 200;
		if (ms > worst)
			worst = ms;
	}
	CHECK_MSG(ok == 20, "%d of 20 misses answered with Redis down", ok);
	CHECK_INT(origin_requests() - before, 20);
	/* the per-operation timeout is 100 ms: nothing may wait much longer */
	CHECK_MSG(worst < 1500, "a request took %.0f ms with Redis down", worst);
	CHECK_INT(get(b_port, "/l2/down3?cc=max-age%3D60", &hit, NULL), 200);
	CHECK_MSG(hit, "B's L1 still stores and answers");
	test_end();
}

/* A "Redis" that accepts connections and never answers: every L2 lookup
 * costs at most the per-operation timeout (100 ms), then the breaker stops
 * asking. */
static void test_redis_black_hole(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in sa = {.sin_family = AF_INET,
				 .sin_port = htons((uint16_t)r_port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

	test_begin("redis_black_hole_costs_at_most_the_timeout");
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 64) != 0) {
		close(fd);
		test_skip("redis_black_hole_costs_at_most_the_timeout",
			  "cannot listen on the Redis port again");
		return;
	}
	h_sleep_ms(5200); /* the breaker from the previous test closes again */
	int ok = 0;
	double worst = 0, ms;
	for (int i = 0; i < 12; i++) {
		char p[64];
		snprintf(p, sizeof(p), "/l2/hole%d?cc=max-age%%3D60", i);
		ok += get(i % 2 ? b_port : a_port, p, NULL, &ms) == 200;
		if (ms > worst)
			worst = ms;
	}
	CHECK_MSG(ok == 12, "%d of 12 answered", ok);
	CHECK_MSG(worst < 1000, "a request took %.0f ms with a silent Redis (timeout 100 ms)",
		  worst);
	close(fd);
	test_end();
}

int main(void)
{
	h_init("42_cache_redis", 90);
	if (access("/usr/bin/redis-server", X_OK) != 0) {
		test_skip("cache_redis",
			  "redis-server is not installed (apt-get install redis-server)");
		return test_exit_code();
	}
	a_port = h_free_port();
	b_port = h_free_port();
	o_port = h_free_port();
	r_port = h_free_port();
	a_admin = h_free_port();
	char rp[16];
	snprintf(rp, sizeof(rp), "%d", r_port);
	char *rargv[] = {
		"/usr/bin/redis-server", "--port", rp,	"--bind", "127.0.0.1", "--save", "",
		"--appendonly",		 "no",	   NULL};
	struct h_proc *redis = h_spawn("redis", rargv, "127.0.0.1", r_port, 5000);
	if (!redis || !h_start_origin("origin", o_port, 1))
		return test_exit_code();
	const char *tokens = h_write_config("ops %s\n", TOKEN);
	const char *ca =
		h_write_config("workers: 2\nlisten: [\"127.0.0.1:%d\"]\n"
			       "upstream: [\"127.0.0.1:%d\"]\n"
			       "admin: {listen: \"127.0.0.1:%d\", token_file: \"%s\"}\n"
			       "cache: {enabled: true, memory: 32m, redis: \"127.0.0.1:%d\", "
			       "redis_timeout: 100ms}\n",
			       a_port, o_port, a_admin, tokens, r_port);
	const char *cb =
		h_write_config("workers: 2\nlisten: [\"127.0.0.1:%d\"]\n"
			       "upstream: [\"127.0.0.1:%d\"]\n"
			       "admin: {listen: off}\n"
			       "cache: {enabled: true, memory: 32m, redis: \"127.0.0.1:%d\", "
			       "redis_timeout: 100ms}\n",
			       b_port, o_port, r_port);
	struct h_proc *a = h_start_reflexd_config("A", a_port, ca);
	struct h_proc *b = h_start_reflexd_config("B", b_port, cb);
	if (!a || !b || h_wait_port("127.0.0.1", a_admin, 5000))
		return test_exit_code();
	h_sleep_ms(300); /* the purge subscribers connect on first use; warm them */
	get(a_port, "/l2/warm", NULL, NULL);
	get(b_port, "/l2/warm", NULL, NULL);
	h_sleep_ms(300);
	test_shared();
	test_refresh_to_l2();
	test_integrity();
	test_redis_down(redis);
	test_redis_black_hole();
	h_finish(a, 8000);
	h_finish(b, 8000);
	return test_exit_code();
}
