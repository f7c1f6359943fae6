/* cache_evict_bench — hit ratio of the cache's eviction (SIEVE, the real
 * store in gateway/http/cache_store.c) against plain LRU and FIFO on Zipf
 * traces, at several cache sizes. A benchmark, not a test:
 *
 *   make cache-evict-bench && build/cache-evict-bench [requests] [keys]
 *
 * Objects are all the same size, so a byte budget is an object count. The
 * LRU and FIFO are textbook simulations (hash map + list); SIEVE runs
 * through the store itself (64 shards, refcounted entries, ck_hs), so the
 * number is the one the gateway gets. Deterministic (fixed seed).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http/cache_store.h"

#define OBJ_BODY 512

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* Zipf(alpha) over [0, n) by inverse CDF on a precomputed table. */
static uint32_t *zipf_trace(uint32_t n, double alpha, size_t len)
{
	double *cdf = malloc(n * sizeof(*cdf)), sum = 0;
	uint32_t *t = malloc(len * sizeof(*t));

	for (uint32_t i = 0; i < n; i++)
		sum += 1.0 / pow(i + 1, alpha);
	double acc = 0;
	for (uint32_t i = 0; i < n; i++) {
		acc += 1.0 / pow(i + 1, alpha) / sum;
		cdf[i] = acc;
	}
	for (size_t j = 0; j < len; j++) {
		double u = (double)(rnd() >> 11) * 0x1.0p-53;
		uint32_t lo = 0, hi = n - 1;
		while (lo < hi) {
			uint32_t mid = (lo + hi) / 2;
			if (cdf[mid] < u)
				lo = mid + 1;
			else
				hi = mid;
		}
		/* scatter ranks over the key space so popularity is not key order */
		t[j] = (uint32_t)((lo * 2654435761u) % n);
	}
	free(cdf);
	return t;
}

/* ---- list-based policies (LRU, FIFO) --------------------------------------- */

struct node {
	uint32_t key;
	int32_t prev, next;
};

static double sim_list(const uint32_t *t, size_t len, uint32_t n_keys, uint32_t cap, bool lru)
{
	int32_t *where = malloc(n_keys * sizeof(*where));
	struct node *nodes = malloc(cap * sizeof(*nodes));
	int32_t head = -1, tail = -1, used = 0;
	size_t hits = 0;

	memset(where, 0xff, n_keys * sizeof(*where));
	for (size_t j = 0; j < len; j++) {
		uint32_t k = t[j];
		int32_t i = where[k];
		if (i >= 0) {
			hits++;
			if (lru && head != i) { /* move to the head */
				nodes[nodes[i].prev].next = nodes[i].next;
				if (nodes[i].next >= 0)
					nodes[nodes[i].next].prev = nodes[i].prev;
				else
					tail = nodes[i].prev;
				nodes[i].prev = -1;
				nodes[i].next = head;
				nodes[head].prev = i;
				head = i;
			}
			continue;
		}
		if (used < (int32_t)cap) {
			i = used++;
		} else { /* evict the tail */
			i = tail;
			where[nodes[i].key] = -1;
			tail = nodes[i].prev;
			if (tail >= 0)
				nodes[tail].next = -1;
			else
				head = -1;
		}
		nodes[i] = (struct node){.key = k, .prev = -1, .next = head};
		if (head >= 0)
			nodes[head].prev = i;
		head = i;
		if (tail < 0)
			tail = i;
		where[k] = i;
	}
	free(where);
	free(nodes);
	return (double)hits / (double)len;
}

/* Textbook SIEVE (one queue, no shards): a cross-check of the store. */
static double sim_sieve(const uint32_t *t, size_t len, uint32_t n_keys, uint32_t cap)
{
	int32_t *where = malloc(n_keys * sizeof(*where));
	struct node *nodes = malloc(cap * sizeof(*nodes));
	uint8_t *visited = calloc(cap, 1);
	int32_t head = -1, tail = -1, hand = -1, used = 0;
	size_t hits = 0;

	memset(where, 0xff, n_keys * sizeof(*where));
	for (size_t j = 0; j < len; j++) {
		uint32_t k = t[j];
		int32_t i = where[k];
		if (i >= 0) {
			hits++;
			visited[i] = 1;
			continue;
		}
		if (used < (int32_t)cap) {
			i = used++;
		} else {
			int32_t v = hand >= 0 ? hand : tail;
			while (visited[v]) {
				visited[v] = 0;
				v = nodes[v].prev >= 0 ? nodes[v].prev : tail;
			}
			hand = nodes[v].prev;
			/* unlink v */
			if (nodes[v].prev >= 0)
				nodes[nodes[v].prev].next = nodes[v].next;
			else
				head = nodes[v].next;
			if (nodes[v].next >= 0)
				nodes[nodes[v].next].prev = nodes[v].prev;
			else
				tail = nodes[v].prev;
			where[nodes[v].key] = -1;
			i = v;
		}
		nodes[i] = (struct node){.key = k, .prev = -1, .next = head};
		visited[i] = 0;
		if (head >= 0)
			nodes[head].prev = i;
		head = i;
		if (tail < 0)
			tail = i;
		where[k] = i;
	}
	free(where);
	free(nodes);
	free(visited);
	return (double)hits / (double)len;
}

/* ---- SIEVE through the real store ------------------------------------------------ */

static struct cache_key key_of(uint32_t k, uint32_t round)
{
	uint64_t x = ((uint64_t)round << 32 | k) * 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return (struct cache_key){.lo = x | 1, .hi = x * 0xc4ceb9fe1a85ec53ULL};
}

static double sim_store(const uint32_t *t, size_t len, uint32_t round)
{
	static char body[OBJ_BODY];
	size_t hits = 0;

	for (size_t j = 0; j < len; j++) {
		struct cache_key k = key_of(t[j], round);
		struct cache_entry *e = cache_store_get(&k);
		if (e) {
			hits++;
			cache_entry_put(e);
			continue;
		}
		struct cache_entry_spec s = {.key = k,
					     .primary = k,
					     .kind = CACHE_OBJECT,
					     .status = 200,
					     .expires_ms = INT64_MAX,
					     .url = "b",
					     .url_len = 1,
					     .body = body,
					     .body_len = OBJ_BODY};
		cache_store_put(&s);
		if ((j & 1023) == 0)
			cache_store_quiesce();
	}
	return (double)hits / (double)len;
}

/* The store is process-wide: empty it (a purge of every URL) and give it
 * this cell's budget. */
static void reset_store(uint64_t budget)
{
	if (!cache_store_ready()) {
		cache_store_init(budget);
		cache_store_thread_enter();
	}
	cache_store_purge_url("", 0, false);
	cache_store_barrier();
	cache_store_set_budget(budget);
}

int main(int argc, char **argv)
{
	size_t len = argc > 1 ? strtoull(argv[1], NULL, 10) : 2000000;
	uint32_t n_keys = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 100000;
	const double alphas[] = {0.7, 0.9, 1.1};
	const double fracs[] = {0.01, 0.05, 0.10};
	/* an entry costs its struct and strings: measure one to size the budget */
	size_t per_obj;
	{
		struct cache_entry_spec s = {.url_len = 1, .body_len = OBJ_BODY};
		per_obj = sizeof(struct cache_entry) + s.url_len + s.body_len + 4;
	}

	printf("cache eviction: %zu requests over %u keys (Zipf), hit ratio\n", len, n_keys);
	printf("%-6s %-8s %8s %8s %10s %12s %10s\n", "alpha", "cache", "FIFO", "LRU", "SIEVE-sim",
	       "SIEVE-store", "store-LRU");
	uint32_t round = 0;
	for (size_t a = 0; a < sizeof(alphas) / sizeof(alphas[0]); a++) {
		uint32_t *t = zipf_trace(n_keys, alphas[a], len);
		for (size_t f = 0; f < sizeof(fracs) / sizeof(fracs[0]); f++) {
			uint32_t cap = (uint32_t)(n_keys * fracs[f]);
			double fifo = sim_list(t, len, n_keys, cap, false);
			double lru = sim_list(t, len, n_keys, cap, true);
			/* an empty store per cell, its budget = cap objects */
			reset_store((uint64_t)cap * per_obj);
			double sieve = sim_store(t, len, ++round);
			double sieve_sim = sim_sieve(t, len, n_keys, cap);
			printf("%-6.1f %5.0f %%  %8.4f %8.4f %10.4f %12.4f %+10.4f\n", alphas[a],
			       fracs[f] * 100, fifo, lru, sieve_sim, sieve, sieve - lru);
		}
		free(t);
	}
	return 0;
}
