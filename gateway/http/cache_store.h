/* cache_store.h — the L1 object store, shared by every worker.
 *
 * A fixed number of shards (by key); each holds a Concurrency Kit ck_hs
 * hash set in SPMC mode: lookups are lock-free inside a ck_epoch section,
 * writers (insert, remove, evict) take the shard's spinlock. Entries are
 * immutable once published and reference counted: the table holds one
 * reference, every reader that is using an entry (a hit being sent) holds
 * one; the memory goes back through ck_epoch once the count reaches zero,
 * so a reader that found the pointer just before an eviction never touches
 * freed memory.
 *
 * Eviction: SIEVE (a FIFO queue with a "visited" bit and a moving hand) per
 * shard, within the shard's share of the byte budget. A hit only sets the
 * bit — no lock, no list move, unlike LRU.
 *
 * Coalescing: a shard also keeps the keys being fetched. The first miss
 * claims a key (leader); later misses are recorded as waiters and told when
 * the leader ends (cache_store_finish), through a callback that runs on the
 * leader's thread outside any lock.
 *
 * Threads: any thread may call anything here once it has called
 * cache_store_thread_enter() (workers do it on first use; the admin thread
 * before a purge). Reclamation progresses when threads call
 * cache_store_quiesce() (the worker loop via the cache, and after purges).
 */
#ifndef REFLEX_HTTP_CACHE_STORE_H
#define REFLEX_HTTP_CACHE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/cache_rules.h"

struct cache_key {
	uint64_t lo, hi; /* XXH3-128 */
};

enum cache_kind {
	CACHE_OBJECT = 0, /* a stored response */
	CACHE_VARY,	  /* the response for this URL varies: the body lists the header names */
	CACHE_PASS,	  /* hit-for-miss: recently uncacheable, do not coalesce */
};

struct cache_entry {
	struct cache_key key;	  /* first: ck_hs compares keys and entries alike */
	struct cache_key primary; /* the URL key (equals key unless a Vary variant) */
	enum cache_kind kind;
	uint64_t vary_gen; /* CACHE_VARY: variants are keyed with it */
	int status;
	struct cache_meta meta;
	int64_t expires_ms; /* when the table may drop it (stale windows included) */
	const char *url;    /* "host/path?query", normalised: prefix purges */
	size_t url_len;
	const char *tags; /* the tag header's value: tag purges */
	size_t tags_len;
	const char *head; /* stored header lines "Name: value\r\n" (no framing, no Age) */
	size_t head_len;
	const char *etag, *last_modified; /* views into head's values, or NULL */
	size_t etag_len, last_modified_len;
	const char *body;
	size_t body_len;
	size_t charge; /* bytes held against the budget */

	/* store-private */
	uint32_t refs;
	uint8_t visited;
	uint8_t linked;
	uint8_t refreshing; /* one stale-while-revalidate refresh at a time */
	struct cache_entry *q_prev, *q_next;
	char epoch_entry[16] __attribute__((aligned(8))); /* ck_epoch_entry_t */
	char data[];
};

struct cache_entry_spec {
	struct cache_key key, primary;
	enum cache_kind kind;
	uint64_t vary_gen;
	int status;
	struct cache_meta meta;
	int64_t expires_ms;
	const char *url, *tags, *head, *body;
	size_t url_len, tags_len, head_len, body_len;
	/* offsets of ETag / Last-Modified values inside head; len 0: absent */
	size_t etag_off, etag_len, lm_off, lm_len;
};

struct cache_stats_global {
	uint64_t bytes, objects, evictions, inserts, purged;
};

/* One process-wide store. memory: the byte budget (split evenly between
 * shards); 0 or -errno. Idempotent: a second call with the store running
 * changes nothing. */
int cache_store_init(uint64_t memory);
bool cache_store_ready(void);
/* Change the byte budget: each shard evicts down to its new share at once
 * (SIEVE order); a larger budget lets later inserts keep more. A reload
 * calls it (cache_reconfigure); any thread. */
void cache_store_set_budget(uint64_t memory);
/* The byte budget now. */
uint64_t cache_store_budget(void);
void cache_store_thread_enter(void);
/* Run deferred frees whose grace period has passed (cheap; any thread). */
void cache_store_quiesce(void);
/* Wait until every deferred free of this thread has run (admin thread). */
void cache_store_barrier(void);

/* A reference to the entry with this key, or NULL. Sets its SIEVE bit. */
struct cache_entry *cache_store_get(const struct cache_key *k);
void cache_entry_get(struct cache_entry *e);
void cache_entry_put(struct cache_entry *e);
/* Also a release callback for conn_write_ext(). */
void cache_entry_release(void *e);

/* Build an entry (one allocation, every string copied in) and publish it,
 * replacing any entry with that key. Evicts to stay in budget. Returns 0,
 * -E2BIG when it exceeds a shard's budget, -ENOMEM. */
int cache_store_put(const struct cache_entry_spec *s);
/* Remove the entry with this key if it is `only` (or any when only NULL).
 * Returns whether one was removed. */
bool cache_store_remove(const struct cache_key *k, const struct cache_entry *only);

/* Remove every entry whose URL starts with prefix (exact when `exact`), or
 * whose tags contain `tag` (prefix NULL). Returns how many were removed. */
size_t cache_store_purge_url(const char *url, size_t len, bool exact);
size_t cache_store_purge_tag(const char *tag, size_t len);
/* Remove every entry, and make every fill in flight drop what it stores
 * (a purge that matches every URL, remembered like one): for when purges
 * may have been missed (the L2 purge subscriber). Returns how many were
 * removed. */
size_t cache_store_flush(void);
/* Remove the entry with this key (an unsafe method's invalidation) and
 * remember it like a purge. Returns whether one was removed. */
bool cache_store_invalidate(const struct cache_key *k);

/* Purges and fills in flight: a response being fetched when a purge that
 * covers it runs must not be stored afterwards. Every purge (and
 * invalidation) gets the next generation and is remembered (the last 64)
 * before it scans. A fill takes cache_store_purge_gen() before its request
 * goes upstream and, after publishing its object, asks
 * cache_store_purged_since(): true when a later purge matches its URL
 * ("host/path?query", normalised), tags or primary key — or when more than
 * 64 purges ran since (then it cannot tell) — and it removes what it put. */
uint64_t cache_store_purge_gen(void);
bool cache_store_purged_since(uint64_t since, const struct cache_key *primary, const char *url,
			      size_t url_len, const char *tags, size_t tags_len);

/* ---- coalescing ------------------------------------------------------------- */

struct cache_waiter {
	struct cache_waiter *next;
	/* called once, on the finishing thread, outside the store's locks */
	void (*on_done)(struct cache_waiter *wt, int result);
	void *stream; /* set (with a reference) when woken to a stream */
};

enum cache_claim { CACHE_CLAIM_LEADER, CACHE_CLAIM_WAITER, CACHE_CLAIM_HIT };

/* Claim a missed key: a HIT (an entry other than `skip` — the stale one
 * being revalidated — appeared meanwhile; *hit holds a reference), WAITER (wt was queued; it will be told), or LEADER (fetch it,
 * then call cache_store_finish). -ENOMEM is reported as LEADER without a
 * claim (the caller just fetches). */
enum cache_claim cache_store_claim(const struct cache_key *k, struct cache_waiter *wt,
				   const struct cache_entry *skip, struct cache_entry **hit);
/* The leader is done with k: every waiter's on_done(result) runs. */
void cache_store_finish(const struct cache_key *k, int result);
/* The leader's response streams from `stream` (the caller's object): the
 * waiters queued so far, and every claim of k until cache_store_finish,
 * get wt->stream = stream (after get(stream), under the shard lock) and
 * on_done(result) at once. */
void cache_store_stream(const struct cache_key *k, void *stream, void (*get)(void *stream),
			int result);

void cache_store_stats(struct cache_stats_global *out);

#endif
