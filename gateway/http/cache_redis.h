/* cache_redis.h — the cache's L2 in Redis (docs/cache.md).
 *
 * Worker side: one Redis connection per worker, driven by the worker's own
 * io_uring through the shared client of core/redis.h (never a blocking
 * call), commands pipelined in order. Every operation has a deadline
 * (cache.redis_timeout); when the oldest one passes it, every pending
 * operation fails, the connection is dropped, and after 3 consecutive
 * failures a breaker skips L2 for 5 s (counted as cache_l2_skipped). A host
 * without Redis keeps serving from L1.
 *
 * Process side (any thread but a worker): purges, which need answers
 * before they can go on (blocking hiredis with the same timeout), and one
 * subscriber thread that applies purges published by other gateways to
 * this gateway's L1.
 *
 * Purges that the subscriber could not hear (it was reconnecting, or not
 * yet listening) are not lost: every purge increments the counter
 * "rfx:purge:seq" in the same MULTI/EXEC as its PUBLISH, and at each
 * (re)subscription the subscriber compares how far the counter moved with
 * how many purges it received; when they differ, or Redis is another
 * instance (its run_id changed), it flushes the whole L1 (cache_store_flush),
 * counted by reason (l2_subscriber_flushes). The first subscription of a
 * process flushes too: L1 may have stored objects before anyone listened.
 *
 * Stored format: "rfx:" + 32 hex digits of the key → an integrity header
 * (magic, the key, lengths, a XXH3-64 checksum of everything) followed by
 * the entry's strings; an index for purges: the sorted set "rfx:urls"
 * holds "url\tkeyhex" (prefix purges by ZRANGEBYLEX), the sets "rfx:t:TAG"
 * hold keyhex.
 */
#ifndef REFLEX_HTTP_CACHE_REDIS_H
#define REFLEX_HTTP_CACHE_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "http/cache_store.h"

struct worker;
struct l2_op;

/* Called once with the stored bytes (NULL, 0 for a miss) or err < 0. The
 * data is valid during the call only. */
typedef void l2_get_cb(void *arg, const char *data, size_t len, int err);

/* Look key up in L2. Returns the operation (cancel it with l2_cancel when
 * the caller goes away first), or NULL when L2 is off, the breaker is open
 * or out of memory (then cb is never called). */
struct l2_op *l2_get(struct worker *w, const struct cfg_cache *cc, const struct cache_key *k,
		     l2_get_cb *cb, void *arg);
void l2_cancel(struct l2_op *op);
/* Store an entry with its TTL and index it (fire and forget). */
void l2_put(struct worker *w, const struct cfg_cache *cc, const struct cache_entry_spec *s,
	    int64_t now_ms);
/* Delete a key (fire and forget): invalidations. */
void l2_del(struct worker *w, const struct cfg_cache *cc, const struct cache_key *k);

/* Serialise / check an entry (exposed for tests). l2_decode fills s with
 * views into data after checking the header against want (the key asked
 * for) and the checksum; -EINVAL when anything is off. */
int l2_encode(const struct cache_entry_spec *s, char **out, size_t *len);
int l2_decode(const char *data, size_t len, const struct cache_key *want,
	      struct cache_entry_spec *s);

/* Purge in L2 and tell the other gateways (blocking: admin thread only).
 * kind: "url", "prefix" or "tag". Returns L2 objects deleted, or -errno. */
long l2_purge(const struct cfg_cache *cc, const char *kind, const char *value, size_t len);
/* Start the purge subscriber once (any thread; no-op when L2 is off). Its
 * Redis connection is named "reflexd-purge-PID" (CLIENT SETNAME). */
void l2_subscriber_start(const struct cfg_cache *cc);

/* Why the subscriber flushed L1. */
enum l2_flush_reason {
	L2_FLUSH_FIRST,	 /* the process's first subscription: nothing to compare with */
	L2_FLUSH_MISSED, /* the counter moved by more than the purges received */
	L2_FLUSH_UNSURE, /* another Redis instance (run_id), the counter went back, or
			    * more purges arrived than it counted: cannot tell */
	L2_FLUSH_REASONS,
};
/* Flushes so far by reason (process-wide; any thread). */
uint64_t l2_subscriber_flushes(enum l2_flush_reason why);

/* The counting, apart from Redis (exposed for tests). One per subscriber. */
struct l2_purge_seq {
	bool known;	   /* a subscription was counted */
	char run_id[41];   /* the Redis instance (INFO server run_id) */
	uint64_t base;	   /* the counter read just before that SUBSCRIBE */
	uint64_t received; /* purge messages received since it */
};
/* At a confirmed subscription: pre is the counter read just before
 * SUBSCRIBE, post the counter read (on another connection) once it was
 * confirmed, both from instance run_id. Returns -1 when L1 must be flushed
 * (*why says why; *missed how many purges went by unheard, 0 when it
 * cannot tell), else 0; either way counting restarts from this
 * subscription. Purges published between pre and post are counted as
 * missed although they arrive: a spurious flush, never a kept object.
 * A missing counter (a fresh Redis) reads as 0. */
int l2_purge_seq_check(struct l2_purge_seq *s, const char *run_id, uint64_t pre, uint64_t post,
		       enum l2_flush_reason *why, uint64_t *missed);

#endif
