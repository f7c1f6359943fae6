/* 42_cache_redis — the L2 in a real redis-server (started here on a free
 * port) shared by two gateways A and B (docs/cache.md):
 *  - an object fetched through A is a hit through B with no origin request;
 *  - a purge through A (by URL and by tag) is seen by B;
 *  - a purge published while B's purge subscriber is away (its connection
 *    killed in Redis, within its 1 s reconnect backoff) is not lost: B sees
 *    the purge counter moved past what it heard and flushes its L1;
 *  - a stale-while-revalidate refresh through A writes L2: B finds it fresh;
 *  - an L2 value that fails the integrity check is not used;
 *  - with Redis killed, both keep serving (L1 hits, misses from the
 *    origin) without waiting on it beyond the per-operation timeout;
 *  - a Redis restarted in its place is another instance (run_id): purges
 *    published to the old one while a gateway was cut off cannot be
 *    counted, so both flush their L1 when they subscribe again.
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

static int a_port, b_port, o_port, r_port, a_admin, b_admin;

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

/* One sample of a gateway's /metrics ("name{labels}" as printed), -1 when
 * absent or unreadable. */
static long long metric(int admin_port, const char *sample)
{
	char url[128];
	struct h_resp r;
	long long v = -1;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", admin_port);
	if (h_get(url, &r) == 200 && r.body) {
		size_t n = strlen(sample);
		for (const char *p = r.body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
			if (!strncmp(p, sample, n) && p[n] == ' ') {
				v = atoll(p + n + 1);
				break;
			}
	}
	h_resp_free(&r);
	return v;
}

/* ---- Redis, asked directly ------------------------------------------------------ */

static redisContext *redis_open(void)
{
	struct timeval tv = {2, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", r_port, tv);

	if (c && c->err) {
		redisFree(c);
		c = NULL;
	}
	return c;
}

/* The L2 index entries ("url\tkeyhex" members of rfx:urls) for path on
 * shared.example: how many there are (-1 when Redis cannot be asked), and
 * the key of the first in key[37] when key is not NULL. */
static long l2_entries(const char *path, char *key)
{
	char url[512];
	redisContext *c = redis_open();
	long n = -1;

	if (!c)
		return -1;
	int ul = snprintf(url, sizeof(url), "shared.example%s\t", path);
	redisReply *r = redisCommand(c, "ZRANGE rfx:urls 0 -1");
	if (r && r->type == REDIS_REPLY_ARRAY) {
		n = 0;
		for (size_t i = 0; i < r->elements; i++) {
			const redisReply *m = r->element[i];
			if (m->type != REDIS_REPLY_STRING || m->len != (size_t)ul + 32 ||
			    memcmp(m->str, url, (size_t)ul) != 0)
				continue;
			if (key && n == 0)
				snprintf(key, 37, "rfx:%.32s", m->str + ul);
			n++;
		}
	}
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return n;
}

/* One integer reply of a command on a fresh connection, or -1. */
static long long redis_int(const char *cmd, const char *arg)
{
	redisContext *c = redis_open();
	long long v = -1;

	if (!c)
		return -1;
	redisReply *r = redisCommand(c, cmd, arg);
	if (r && r->type == REDIS_REPLY_INTEGER)
		v = r->integer;
	else if (r && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
		 r->element[1]->type == REDIS_REPLY_INTEGER)
		v = r->element[1]->integer; /* PUBSUB NUMSUB: [channel, count] */
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return v;
}

#define L2_WAIT_MS 5000

/* A gateway's L2 writes are fire and forget: the SET, then the index entry
 * (ZADD rfx:urls), then the tag sets (SADD rfx:t:TAG), pipelined in that
 * order on one connection, so once the last of them is in Redis the object
 * is too. Wait up to L2_WAIT_MS until path has `want` index entries (an
 * object with Vary has two: the marker and the variant) and, with tag, the
 * tag's set is not empty. A check of the current test fails, naming what was
 * last seen, when that does not happen. */
static bool l2_wait_stored(const char *path, long want, const char *tag)
{
	double end = h_now_ms() + L2_WAIT_MS;
	long n;
	long long tagged;

	for (;;) {
		n = l2_entries(path, NULL);
		tagged = tag ? redis_int("SCARD rfx:t:%s", tag) : 1;
		if ((n >= want && tagged > 0) || h_now_ms() >= end)
			break;
		h_sleep_ms(20);
	}
	char t[128] = "";
	if (tag)
		snprintf(t, sizeof(t), ", %lld members in rfx:t:%s", tagged, tag);
	CHECK_MSG(n >= want && tagged > 0,
		  "L2 write of %s not in Redis after %d ms: %ld of %ld index entries%s", path,
		  L2_WAIT_MS, n, want, t);
	return n >= want && tagged > 0;
}

/* GET path through B until it is not answered from the cache: B dropped the
 * object when the purge reached it through Redis pub/sub. Hits have no side
 * effect, so only the final miss reaches the origin. */
static bool b_wait_miss(const char *path)
{
	double end = h_now_ms() + L2_WAIT_MS;
	bool hit = true;
	long st;

	do {
		st = get(b_port, path, &hit, NULL);
		if (st != 200 || !hit)
			break;
		h_sleep_ms(20);
	} while (h_now_ms() < end);
	CHECK_MSG(st == 200 && !hit, "B: %s still %s after %d ms (status %ld)", path,
		  hit ? "a cache hit" : "not a plain miss", L2_WAIT_MS, st);
	return st == 200 && !hit;
}

static void test_shared(void)
{
	bool hit;
	long before = h_origin_requests(o_port);

	test_begin("fetched_through_a_hit_through_b");
	CHECK_INT(get(a_port, "/l2/one?cc=max-age%3D60", &hit, NULL), 200);
	CHECK(!hit);
	l2_wait_stored("/l2/one?cc=max-age%3D60", 1, NULL);
	CHECK_INT(get(b_port, "/l2/one?cc=max-age%3D60", &hit, NULL), 200);
	CHECK_MSG(hit, "B answered from the object A stored in Redis");
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("vary_variants_through_l2");
	before = h_origin_requests(o_port);
	const char *p = "/l2/vary?cc=max-age%3D60&vary=Accept-Language";
	char url[256];
	const char *en[] = {"Host: shared.example", "Accept-Language: en", NULL};
	struct h_resp r;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", a_port, p);
	struct h_req q = {.url = url, .headers = en};
	h_http(&q, &r);
	h_resp_free(&r);
	l2_wait_stored(p, 2, NULL);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", b_port, p);
	h_http(&q, &r);
	char v[256] = "";
	CHECK_MSG(h_resp_header(&r, "Cache-Status", v, sizeof(v)) && strstr(v, "hit"), "B: %s", v);
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();

	test_begin("purge_through_a_seen_by_b");
	get(a_port, "/l2/p1?cc=max-age%3D60", NULL, NULL);
	get(a_port, "/l2/p2?cc=max-age%3D60&hdr=Surrogate-Key:grp", NULL, NULL);
	l2_wait_stored("/l2/p1?cc=max-age%3D60", 1, NULL);
	l2_wait_stored("/l2/p2?cc=max-age%3D60&hdr=Surrogate-Key:grp", 1, "grp");
	get(b_port, "/l2/p1?cc=max-age%3D60", &hit, NULL);
	CHECK(hit);
	get(b_port, "/l2/p2?cc=max-age%3D60&hdr=Surrogate-Key:grp", &hit, NULL);
	CHECK(hit);
	/* a purge published before B's subscriber listens would never reach B */
	long long subs = 0;
	for (double end = h_now_ms() + L2_WAIT_MS; h_now_ms() < end; h_sleep_ms(20))
		if ((subs = redis_int("PUBSUB NUMSUB %s", "rfx:purge")) >= 2)
			break;
	CHECK_MSG(subs >= 2, "%lld of 2 gateways subscribed to rfx:purge after %d ms", subs,
		  L2_WAIT_MS);
	CHECK_INT(purge("{\"url\":\"http://shared.example/l2/p1?cc=max-age%3D60\"}"), 200);
	CHECK_INT(purge("{\"tag\":\"grp\"}"), 200);
	before = h_origin_requests(o_port);
	b_wait_miss("/l2/p1?cc=max-age%3D60");			     /* by URL */
	b_wait_miss("/l2/p2?cc=max-age%3D60&hdr=Surrogate-Key:grp"); /* by tag */
	CHECK_INT(h_origin_requests(o_port) - before, 2);
	test_end();
}

/* A stale-while-revalidate refresh run by A writes its result to L2 too:
 * B (which never fetched the URL) then finds the fresh object there, not
 * the stale one A first stored. */
static void test_refresh_to_l2(void)
{
	const char *p = "/l2/swr?cc=max-age%3D3,stale-while-revalidate%3D60";
	const char *hdrs[] = {"Host: shared.example", NULL};
	char url[256], v[256] = "", key[37] = "";
	struct h_resp r;

	test_begin("swr_refresh_result_reaches_l2");
	CHECK_INT(get(a_port, p, NULL, NULL), 200);
	l2_wait_stored(p, 1, NULL);
	l2_entries(p, key);
	h_sleep_ms(4100); /* max-age 3 runs out: the point of the test */
	/* the refresh writes the same key with a new lifetime: its PTTL jumps
	 * back up by about the 4 s slept here */
	long long ttl0 = redis_int("PTTL %s", key);
	long before = h_origin_requests(o_port);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", a_port, p);
	struct h_req q = {.url = url, .headers = hdrs};
	CHECK(h_http(&q, &r) == 0);
	CHECK_MSG(h_resp_header(&r, "Cache-Status", v, sizeof(v)) &&
			  strstr(v, "stale-while-revalidate"),
		  "A: %s", v);
	h_resp_free(&r);
	/* the refresh runs after the answer, then writes L2 (fire and forget) */
	long fetched = 0;
	long long ttl = ttl0;
	for (double end = h_now_ms() + L2_WAIT_MS; h_now_ms() < end; h_sleep_ms(20)) {
		fetched = h_origin_requests(o_port) - before;
		ttl = redis_int("PTTL %s", key);
		if (fetched >= 1 && ttl > ttl0 + 1000)
			break;
	}
	CHECK_MSG(fetched >= 1 && ttl > ttl0 + 1000,
		  "no refresh after %d ms: %ld origin requests, PTTL of %s %lld ms (was %lld)",
		  L2_WAIT_MS, fetched, key, ttl, ttl0);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", b_port, p);
	CHECK(h_http(&q, &r) == 0);
	v[0] = 0;
	CHECK_MSG(h_resp_header(&r, "Cache-Status", v, sizeof(v)) && strstr(v, "hit") &&
			  !strstr(v, "stale"),
		  "B: %s", v);
	h_resp_free(&r);
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();
}

static void test_integrity(void)
{
	bool hit;
	struct timeval tv = {2, 0};
	redisContext *c = redisConnectWithTimeout("127.0.0.1", r_port, tv);

	test_begin("corrupt_l2_value_not_used");
	get(a_port, "/l2/corrupt?cc=max-age%3D60&size=3000", NULL, NULL);
	l2_wait_stored("/l2/corrupt?cc=max-age%3D60&size=3000", 1, NULL);
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
	long before = h_origin_requests(o_port);
	CHECK_INT(get(b_port, "/l2/corrupt?cc=max-age%3D60&size=3000", &hit, NULL), 200);
	CHECK_MSG(!hit, "B used a value that fails its checksum");
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	test_end();
	if (c)
		redisFree(c);
}

/* Kill the connection named name in Redis: 1 when one was killed, 0 when
 * none has that name, -1 when Redis cannot be asked. */
static int redis_kill_named(const char *name)
{
	redisContext *c = redis_open();
	int killed = -1;

	if (!c)
		return -1;
	redisReply *r = redisCommand(c, "CLIENT LIST");
	if (r && r->type == REDIS_REPLY_STRING) {
		killed = 0;
		char want[80];
		snprintf(want, sizeof(want), " name=%s ", name);
		for (const char *line = r->str; line && *line && !killed;) {
			const char *end = strchr(line, '\n');
			const char *hit = strstr(line, want);
			if (hit && (!end || hit < end) && !strncmp(line, "id=", 3)) {
				redisReply *k =
					redisCommand(c, "CLIENT KILL ID %lld", atoll(line + 3));
				killed = k && k->type == REDIS_REPLY_INTEGER && k->integer == 1;
				if (k)
					freeReplyObject(k);
			}
			line = end ? end + 1 : NULL;
		}
	}
	if (r)
		freeReplyObject(r);
	redisFree(c);
	return killed;
}

/* B's purge subscriber is away (its connection killed in Redis; it waits
 * 1 s before it reconnects) while A purges: the message never reaches B,
 * but the purge counter does. When B subscribes again it finds the counter
 * moved by one purge more than it heard, and drops its whole L1. */
static void test_missed_purge(const struct h_proc *b)
{
	const char *p = "/l2/missed?cc=max-age%3D60";
	const char *flushed = "reflex_cache_l1_flushes_total{reason=\"missed_purge\"}";
	char name[64];
	bool hit;

	test_begin("purge_missed_by_b_flushes_its_l1");
	long long a_flushes = metric(a_admin, flushed), b_flushes = metric(b_admin, flushed);
	CHECK_MSG(a_flushes == 0 && b_flushes == 0, "flushes before: A %lld, B %lld", a_flushes,
		  b_flushes);
	long before = h_origin_requests(o_port);
	CHECK_INT(get(a_port, p, NULL, NULL), 200);
	l2_wait_stored(p, 1, NULL);
	CHECK_INT(get(b_port, p, &hit, NULL), 200); /* from L2 into B's L1 */
	CHECK(hit);
	CHECK_INT(get(b_port, p, &hit, NULL), 200); /* from B's L1 */
	CHECK(hit);
	CHECK_INT(h_origin_requests(o_port) - before, 1);

	snprintf(name, sizeof(name), "reflexd-purge-%d", (int)b->pid);
	CHECK_MSG(redis_kill_named(name) == 1, "no Redis connection named %s", name);
	CHECK_INT(purge("{\"url\":\"http://shared.example/l2/missed?cc=max-age%3D60\"}"), 200);
	/* only A listened when the purge was published (B is back after 1 s) */
	long long subs = redis_int("PUBSUB NUMSUB %s", "rfx:purge");
	CHECK_MSG(subs == 1, "%lld gateways subscribed right after the purge (want 1: A)", subs);

	before = h_origin_requests(o_port);
	b_wait_miss(p); /* B reconnects, sees the missed purge, flushes */
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	for (double end = h_now_ms() + L2_WAIT_MS; h_now_ms() < end; h_sleep_ms(20))
		if ((b_flushes = metric(b_admin, flushed)) >= 1)
			break;
	CHECK_MSG(b_flushes == 1, "B: %s %lld", flushed, b_flushes);
	CHECK_MSG(h_log_contains(b, "1 purge(s) went by while the purge subscriber was away"),
		  "B logged no missed purge");
	CHECK_MSG(metric(a_admin, flushed) == 0, "A (never away) flushed its L1");
	test_end();
}

static void test_redis_down(struct h_proc *redis)
{
	bool hit;
	double ms;

	test_begin("redis_killed_gateways_keep_serving");
	get(a_port, "/l2/survive?cc=max-age%3D60", NULL, NULL);
	/* no write still in flight when Redis dies */
	l2_wait_stored("/l2/survive?cc=max-age%3D60", 1, NULL);
	h_signal(redis, SIGKILL);
	CHECK_MSG(h_wait_exit(redis, 3000) == 0, "redis-server did not die of SIGKILL in 3 s");
	CHECK_INT(get(a_port, "/l2/survive?cc=max-age%3D60", &hit, NULL), 200);
	CHECK_MSG(hit, "A's L1 still answers");
	long before = h_origin_requests(o_port);
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
	CHECK_INT(h_origin_requests(o_port) - before, 20);
	/* the per-operation timeout is 100 ms: nothing may wait much longer */
	CHECK_MSG(worst < 1500, "a request took %.0f ms with Redis down", worst);
	CHECK_INT(get(b_port, "/l2/down3?cc=max-age%3D60", &hit, NULL), 200);
	CHECK_MSG(hit, "B's L1 still stores and answers");
	test_end();
}

/* Redis comes back (a new process, empty: no persistence here). The
 * counters of two instances cannot be compared, so each gateway flushes
 * its L1 when its subscriber is back (reason "unverifiable"): B's L1 object
 * from the previous test is gone. The new Redis is killed again at the end
 * (the next test listens on its port). */
static void test_redis_restarted(char *const rargv[])
{
	const char *unsure = "reflex_cache_l1_flushes_total{reason=\"unverifiable\"}";
	long long a_n = 0, b_n = 0;

	test_begin("redis_restarted_flushes_l1");
	struct h_proc *redis = h_spawn("redis-again", rargv, "127.0.0.1", r_port, 5000);
	CHECK_MSG(redis, "redis-server did not start again on port %d", r_port);
	for (double end = h_now_ms() + L2_WAIT_MS; redis && h_now_ms() < end; h_sleep_ms(20)) {
		a_n = metric(a_admin, unsure);
		b_n = metric(b_admin, unsure);
		if (a_n >= 1 && b_n >= 1)
			break;
	}
	CHECK_MSG(a_n == 1 && b_n == 1, "%s: A %lld, B %lld after %d ms", unsure, a_n, b_n,
		  L2_WAIT_MS);
	long before = h_origin_requests(o_port);
	b_wait_miss("/l2/down3?cc=max-age%3D60");
	CHECK_INT(h_origin_requests(o_port) - before, 1);
	if (redis) {
		h_signal(redis, SIGKILL);
		CHECK_MSG(h_wait_exit(redis, 3000) == 0, "redis-server did not die of SIGKILL");
	}
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
	h_sleep_ms(1200); /* the breaker from the previous test (1 s) closes again */
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
	test_end();

	/* cache.redis_breaker (1 s here): once open, A's workers skip L2 without asking;
	 * a second later they ask again, and the silent Redis costs them a timeout again */
	test_begin("redis_breaker_skips_then_retries_after_its_time");
	const char *skipped = "reflex_cache_l2_requests_total{result=\"skipped\"}";
	const char *errors = "reflex_cache_l2_requests_total{result=\"error\"}";
	long long s0 = metric(a_admin, skipped), e0, e1 = -1;
	int n = 0;
	for (; n < 40 && metric(a_admin, skipped) <= s0; n++) {
		char p[64];
		snprintf(p, sizeof(p), "/l2/brk%d?cc=max-age%%3D60", n);
		get(a_port, p, NULL, NULL);
	}
	CHECK_MSG(metric(a_admin, skipped) > s0, "no L2 lookup skipped after %d requests", n);
	e0 = metric(a_admin, errors);
	h_sleep_ms(1300);
	for (int i = 0; i < 20 && (e1 = metric(a_admin, errors)) <= e0; i++) {
		char p[64];
		snprintf(p, sizeof(p), "/l2/brk-again%d?cc=max-age%%3D60", i);
		get(a_port, p, NULL, NULL);
	}
	CHECK_MSG(e1 > e0, "after redis_breaker (1 s) no worker asked the silent Redis again "
			   "(errors %lld -> %lld)", e0, e1);
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
	b_admin = h_free_port();
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
			       "redis_timeout: 100ms, redis_breaker: 1s}\n",
			       a_port, o_port, a_admin, tokens, r_port);
	const char *cb =
		h_write_config("workers: 2\nlisten: [\"127.0.0.1:%d\"]\n"
			       "upstream: [\"127.0.0.1:%d\"]\n"
			       "admin: {listen: \"127.0.0.1:%d\", token_file: \"%s\"}\n"
			       "cache: {enabled: true, memory: 32m, redis: \"127.0.0.1:%d\", "
			       "redis_timeout: 100ms, redis_breaker: 1s}\n",
			       b_port, o_port, b_admin, tokens, r_port);
	struct h_proc *a = h_start_reflexd_config("A", a_port, ca);
	struct h_proc *b = h_start_reflexd_config("B", b_port, cb);
	if (!a || !b || h_wait_port("127.0.0.1", a_admin, 5000) ||
	    h_wait_port("127.0.0.1", b_admin, 5000))
		return test_exit_code();
	/* the purge subscribers start on first use, and their first
	 * subscription flushes L1 (and drops fills in flight): wait until both
	 * listen before anything is stored */
	get(a_port, "/l2/warm", NULL, NULL);
	get(b_port, "/l2/warm", NULL, NULL);
	test_begin("purge_subscribers_listen");
	CHECK_MSG(h_wait_log(a, "purge subscriber listening", L2_WAIT_MS), "A's subscriber");
	CHECK_MSG(h_wait_log(b, "purge subscriber listening", L2_WAIT_MS), "B's subscriber");
	test_end();
	test_shared();
	test_refresh_to_l2();
	test_integrity();
	test_missed_purge(b);
	test_redis_down(redis);
	test_redis_restarted(rargv);
	test_redis_black_hole();
	h_finish(a, 8000);
	h_finish(b, 8000);
	return test_exit_code();
}
