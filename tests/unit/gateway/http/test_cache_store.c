/* The shared L1 store: put/get/replace, references that outlive eviction,
 * the byte budget with SIEVE (a visited object survives a sweep that
 * evicts unvisited ones), purges by URL, prefix and tag, coalescing claims,
 * and readers on other threads while a writer evicts. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "../../../lib/test.h"
#include "http/cache_store.h"

/* 64 shards share the budget: 64 × 16 KiB */
#define BUDGET (64 * 16384)

static struct cache_key key_n(uint64_t n)
{
	/* every key in shard 0 (hi % 64 == 0) so the per-shard budget is exercised */
	return (struct cache_key){.lo = n * 0x9e3779b97f4a7c15ULL + 1, .hi = n * 64};
}

static int put_n(uint64_t n, size_t body_len, const char *url, const char *tags)
{
	static char body[8192];
	struct cache_entry_spec s = {.key = key_n(n),
				     .primary = key_n(n),
				     .kind = CACHE_OBJECT,
				     .status = 200,
				     .expires_ms = INT64_MAX,
				     .url = url,
				     .url_len = strlen(url),
				     .tags = tags,
				     .tags_len = tags ? strlen(tags) : 0,
				     .head = "HTTP/1.1 200 OK\r\n",
				     .head_len = 17,
				     .body = body,
				     .body_len = body_len};
	return cache_store_put(&s);
}

static bool present(uint64_t n)
{
	struct cache_key k = key_n(n);
	struct cache_entry *e = cache_store_get(&k);

	cache_entry_put(e);
	return e != NULL;
}

static void test_put_get(void)
{
	test_begin("put_get_replace");
	CHECK(put_n(1, 100, "h/a", NULL) == 0);
	struct cache_key k = key_n(1);
	struct cache_entry *e = cache_store_get(&k);
	CHECK(e && e->body_len == 100 && e->status == 200 && e->url_len == 3);
	CHECK(put_n(1, 200, "h/a", NULL) == 0); /* replaces; e stays valid for us */
	struct cache_entry *e2 = cache_store_get(&k);
	CHECK(e2 && e2 != e && e2->body_len == 200);
	CHECK(e && e->body_len == 100 && memcmp(e->url, "h/a", 3) == 0);
	cache_entry_put(e);
	cache_entry_put(e2);
	CHECK(cache_store_remove(&k, NULL));
	CHECK(!present(1));
	CHECK(!cache_store_remove(&k, NULL));
	CHECK_MSG(put_n(2, 20000, "h/big", NULL) == -E2BIG, "larger than a shard's budget");
	cache_store_barrier();
	test_end();
}

static void test_eviction(void)
{
	test_begin("sieve_eviction");
	/* ~4 KiB objects, a 16 KiB shard: room for 3 */
	for (uint64_t i = 10; i < 13; i++)
		CHECK(put_n(i, 4000, "h/e", NULL) == 0);
	CHECK(present(10)); /* sets 10's visited bit */
	CHECK(put_n(13, 4000, "h/e", NULL) == 0);
	CHECK_MSG(present(10), "the visited object survived");
	CHECK_MSG(!present(11), "the oldest unvisited object was evicted");
	CHECK(present(12) && present(13));
	struct cache_stats_global st;
	cache_store_stats(&st);
	CHECK(st.evictions >= 1 && st.bytes <= BUDGET);
	/* a reference keeps an evicted object readable */
	struct cache_key k = key_n(12);
	struct cache_entry *held = cache_store_get(&k);
	for (uint64_t i = 20; i < 30; i++)
		CHECK(put_n(i, 4000, "h/e", NULL) == 0);
	CHECK(held && held->body_len == 4000 && held->status == 200);
	cache_entry_put(held);
	cache_store_barrier();
	test_end();
}

static void test_purge(void)
{
	test_begin("purge_url_prefix_tag");
	for (uint64_t i = 100; i < 164; i++) { /* spread over shards via distinct hi */
		struct cache_entry_spec s = {.key = {.lo = i, .hi = i},
					     .kind = CACHE_OBJECT,
					     .status = 200,
					     .expires_ms = INT64_MAX};
		char url[32], tags[32];
		snprintf(url, sizeof(url), "h/%s/%llu", i % 2 ? "odd" : "even",
			 (unsigned long long)i);
		snprintf(tags, sizeof(tags), "all t%llu", (unsigned long long)(i % 4));
		s.url = url;
		s.url_len = strlen(url);
		s.tags = tags;
		s.tags_len = strlen(tags);
		s.primary = s.key;
		CHECK(cache_store_put(&s) == 0);
	}
	CHECK_INT(cache_store_purge_url("h/odd/101", 9, true), 1);
	CHECK_INT(cache_store_purge_url("h/odd/1", 7, true), 0);
	CHECK_INT(cache_store_purge_url("h/odd/", 6, false), 31);
	CHECK_INT(cache_store_purge_tag("t2", 2), 16);
	CHECK_INT(cache_store_purge_tag("t", 1), 0);
	CHECK_INT(cache_store_purge_tag("all", 3), 16);
	cache_store_barrier();
	test_end();
}

static int done_count, done_result;
static void on_done(struct cache_waiter *w, int result)
{
	done_count++;
	done_result = result;
}

static void test_claims(void)
{
	test_begin("coalescing_claims");
	struct cache_key k = {.lo = 777, .hi = 5};
	struct cache_waiter w1 = {.on_done = on_done}, w2 = {.on_done = on_done};
	struct cache_entry *hit;
	CHECK(cache_store_claim(&k, &w1, NULL, &hit) == CACHE_CLAIM_LEADER);
	CHECK(cache_store_claim(&k, &w1, NULL, &hit) == CACHE_CLAIM_WAITER);
	CHECK(cache_store_claim(&k, &w2, NULL, &hit) == CACHE_CLAIM_WAITER);
	cache_store_finish(&k, 7);
	CHECK(done_count == 2 && done_result == 7);
	struct cache_entry_spec s = {.key = k,
				     .primary = k,
				     .kind = CACHE_OBJECT,
				     .status = 200,
				     .expires_ms = INT64_MAX,
				     .url = "x",
				     .url_len = 1};
	CHECK(cache_store_put(&s) == 0);
	CHECK(cache_store_claim(&k, &w1, NULL, &hit) == CACHE_CLAIM_HIT && hit);
	/* the stale entry being revalidated is not a hit: claim as leader */
	CHECK(cache_store_claim(&k, &w1, hit, &hit) == CACHE_CLAIM_LEADER && !hit);
	cache_store_finish(&k, 1);
	CHECK(done_count == 2);
	cache_store_claim(&k, &w1, NULL, &hit);
	cache_entry_put(hit);
	cache_store_finish(&k, 1); /* nothing pending: harmless */
	CHECK(done_count == 2);
	test_end();
}

/* Readers on another thread while this one evicts: every object a reader
 * holds stays intact (its bytes are checked) until it lets go. */
static volatile int stop;
static uint64_t reads, bad;
static void *reader(void *arg)
{
	cache_store_thread_enter();
	while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
		for (uint64_t i = 1000; i < 1100; i++) {
			struct cache_key k = key_n(i);
			struct cache_entry *e = cache_store_get(&k);
			if (!e)
				continue;
			reads++;
			for (size_t j = 0; j < e->body_len; j++)
				if (e->body[j] != (char)(i & 0x7f))
					bad++;
			cache_entry_put(e);
		}
		cache_store_quiesce();
	}
	cache_store_barrier();
	return NULL;
}

static void test_concurrent(void)
{
	pthread_t t;
	char body[1500];

	test_begin("readers_during_eviction");
	pthread_create(&t, NULL, reader, NULL);
	for (int round = 0; round < 300; round++)
		for (uint64_t i = 1000; i < 1100; i += 7) {
			uint64_t n = 1000 + (i + (uint64_t)round) % 100;
			memset(body, (char)(n & 0x7f), sizeof(body));
			struct cache_entry_spec s = {.key = key_n(n),
						     .primary = key_n(n),
						     .kind = CACHE_OBJECT,
						     .status = 200,
						     .expires_ms = INT64_MAX,
						     .url = "c",
						     .url_len = 1,
						     .body = body,
						     .body_len = sizeof(body)};
			CHECK(cache_store_put(&s) == 0);
		}
	__atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
	pthread_join(t, NULL);
	CHECK_MSG(bad == 0, "%llu corrupted bytes seen by the reader", (unsigned long long)bad);
	CHECK(reads > 0);
	cache_store_barrier();
	test_end();
}

/* cache.memory on reload: shrinking evicts down to the new budget at once,
 * growing lets later inserts keep more. */
static void test_budget_resize(void)
{
	struct cache_stats_global st;

	test_begin("budget_resize");
	for (uint64_t i = 2000; i < 2003; i++) /* shard 0: 3 × ~4 KiB of its 16 KiB */
		CHECK(put_n(i, 4000, "h/r", NULL) == 0);
	CHECK(cache_store_budget() == BUDGET);
	cache_store_set_budget(BUDGET / 2); /* 8 KiB a shard: one ~4 KiB object fits */
	CHECK(cache_store_budget() == BUDGET / 2);
	cache_store_stats(&st);
	CHECK_MSG(st.bytes <= BUDGET / 2, "%llu bytes held over a %d budget",
		  (unsigned long long)st.bytes, BUDGET / 2);
	/* at most one ~4 KiB object fits next to what SIEVE keeps (visited ones) */
	int left = present(2000) + present(2001) + present(2002);
	CHECK_MSG(left <= 1, "%d of 3 objects left in an 8 KiB shard", left);
	CHECK_MSG(put_n(2003, 9000, "h/r", NULL) == -E2BIG, "an object over the new share");
	cache_store_set_budget(BUDGET); /* grow back: it fits again */
	CHECK(put_n(2004, 9000, "h/r", NULL) == 0);
	CHECK(present(2004));
	cache_store_barrier();
	test_end();
}

/* A fill that was in flight when a purge ran learns it (and only of the
 * purges that cover it). */
static void test_purged_since(void)
{
	struct cache_key p1 = {.lo = 1, .hi = 2}, p2 = {.lo = 3, .hi = 4};

	test_begin("purged_since");
	uint64_t g = cache_store_purge_gen();
	CHECK(!cache_store_purged_since(g, &p1, "h/a/x", 5, "red", 3));
	cache_store_purge_url("h/a/x", 5, true);
	CHECK(cache_store_purge_gen() == g + 1);
	CHECK(cache_store_purged_since(g, &p1, "h/a/x", 5, NULL, 0));
	CHECK(!cache_store_purged_since(g, &p1, "h/a/xy", 6, NULL, 0)); /* exact only */
	g = cache_store_purge_gen();
	cache_store_purge_url("h/b/", 4, false);
	CHECK(cache_store_purged_since(g, &p1, "h/b/1", 5, NULL, 0));
	CHECK(!cache_store_purged_since(g, &p1, "h/c/1", 5, NULL, 0));
	g = cache_store_purge_gen();
	cache_store_purge_tag("blue", 4);
	CHECK(cache_store_purged_since(g, &p1, "h/z", 3, "red blue", 8));
	CHECK(!cache_store_purged_since(g, &p1, "h/z", 3, "red", 3));
	g = cache_store_purge_gen();
	cache_store_invalidate(&p2);
	CHECK(cache_store_purged_since(g, &p2, "h/any", 5, NULL, 0));
	CHECK(!cache_store_purged_since(g, &p1, "h/any", 5, NULL, 0));
	g = cache_store_purge_gen();
	for (int i = 0; i < 70; i++) /* more than the log holds: assume the worst */
		cache_store_purge_url("h/unrelated", 11, true);
	CHECK(cache_store_purged_since(g, &p1, "h/a/x", 5, NULL, 0));
	cache_store_barrier();
	test_end();
}

int main(void)
{
	CHECK(cache_store_init(BUDGET) == 0);
	cache_store_thread_enter();
	test_put_get();
	test_eviction();
	test_purge();
	test_claims();
	test_concurrent();
	test_budget_resize();
	test_purged_since();
	return test_exit_code();
}
