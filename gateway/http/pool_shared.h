/* pool_shared.h — endpoint and pool state shared by every worker.
 *
 * Most of a pool is per worker (upstream.h: in-flight counts, EWMA latency,
 * keep-alive connections). What must be seen by all workers lives here, in
 * one set per configuration snapshot: active health (written by the one
 * worker that runs the checks, health.c), passive outlier ejection, the
 * circuit breaker, busy-connection counts for the pool limits, and the
 * retry budget. The set is created by the first worker that builds pool
 * states for a snapshot and freed when the last one lets go of them
 * (pool_shared_get/put); a reload starts from a clean set.
 *
 * Cross-thread: every field below marked (atomic) is read and written with
 * relaxed atomics (acquire/release where a comment says so). Values may be a
 * moment old; decisions tolerate that (an endpoint may get one more request
 * after its ejection). The admin thread may read them the same way.
 */
#ifndef REFLEX_HTTP_POOL_SHARED_H
#define REFLEX_HTTP_POOL_SHARED_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "core/config.h"
#include "http/breaker.h"

struct health_pool;

struct ep_shared {
	const struct cfg_endpoint *cfg;
	/* active health: written only by the checking worker */
	unsigned healthy;	 /* (atomic) 1 up (the start state), 0 down */
	unsigned hc_ok, hc_fail; /* consecutive check results */
	/* passive outlier detection */
	unsigned consec_fail;	   /* (atomic) failed exchanges in a row */
	unsigned n_ejections;	   /* (atomic) times ejected; grows the cool-down */
	uint64_t ejected_until_ms; /* (atomic) out of rotation until then (monotonic ms) */
	uint64_t back_ms;	   /* (atomic) when it last came back (slow start), 0 never left */
	struct breaker breaker;
	unsigned busy;	   /* (atomic) requests bound to it now, all workers */
	uint64_t failures; /* (atomic) failed exchanges, all time */
	/* The address to connect to: the config's, or what the name resolves
	 * to now. Written by the resolver thread under a sequence lock (odd
	 * while writing); read with pool_shared_addr(). */
	bool dynamic; /* the address is a host name: re-resolved */
	unsigned addr_seq;
	struct sockaddr_storage addr;
	socklen_t addr_len;
	uint64_t resolve_due_ms; /* resolver thread only */
	/* latency outliers: EWMA of the time to first byte over all workers */
	uint32_t lat_ewma_us; /* (atomic) */
	unsigned lat_n;	      /* (atomic) samples since it (re)joined */
};

struct pool_shared {
	const struct cfg_pool *cfg;
	struct ep_shared *eps;
	unsigned n_eps;
	int64_t budget_milli;	    /* (atomic) retry tokens × 1000 */
	unsigned retries_active;    /* (atomic) retries and hedges in flight */
	int checker;		    /* (atomic) id of the worker running health checks, -1 none */
	struct health_pool *health; /* owned by the checker (health.c) */
};

struct pool_shared_set {
	const struct config *cfg;
	struct pool_shared *pools; /* cfg->n_pools */
	unsigned refs;		   /* guarded by the registry lock */
	bool has_names;		   /* some endpoint is a host name to re-resolve */
	struct pool_shared_set *next;
};

/* The set for cfg, created on first use (any thread; takes a lock: call at
 * generation set-up, never per request). NULL when out of memory. */
struct pool_shared_set *pool_shared_get(const struct config *cfg);
void pool_shared_put(struct pool_shared_set *s);

/* Is the endpoint in rotation now (healthy, not ejected, breaker lets
 * requests through)? */
bool pool_shared_available(const struct pool_shared *p, const struct ep_shared *e, uint64_t now_ms);
/* Slow start: the share (1..1000 per mille) of its weight an endpoint gets
 * now, ramping linearly over cfg slow_start after it came back. */
unsigned pool_shared_ramp(const struct pool_shared *p, const struct ep_shared *e, uint64_t now_ms);

/* The outcome of one exchange with e (ok: a response that is not a 5xx
 * and not a connection failure). Runs the outlier detector: returns true
 * when this call ejected the endpoint (the caller logs and counts). */
bool pool_shared_outcome(struct pool_shared *p, struct ep_shared *e, bool ok, uint64_t now_ms);

/* A latency sample (time to first byte, µs) of a successful try. With
 * outlier.latency_factor set, an endpoint whose latency EWMA (5 samples at
 * least) is above factor × the median of the pool's other endpoints and
 * 10 ms more than it is ejected like a failing one. Returns true when this
 * call ejected it. */
bool pool_shared_latency(struct pool_shared *p, struct ep_shared *e, uint32_t us, uint64_t now_ms);

/* Retry budget (every pool, retries configured or not: a route may turn
 * hedging on): every first try deposits budget percent of a token (up to
 * a cap of min_retries + 10 tokens); a retry or a hedge takes one whole
 * token and a slot of limits.retries. Returns false when either is short
 * (the retry is not made). Tokens start at min_retries. So during an
 * outage, retries ≤ first tries × budget + min_retries + 10. */
void pool_shared_deposit(struct pool_shared *p);
bool pool_shared_retry_take(struct pool_shared *p);
void pool_shared_retry_done(struct pool_shared *p);

/* The endpoint's current address (any thread). */
void pool_shared_addr(const struct ep_shared *e, struct sockaddr_storage *ss, socklen_t *len);

/* Host names are re-resolved by one helper thread (started with the first
 * set that has a name and cfg resolve > 0): getaddrinfo never runs on a
 * worker. A change is published with pool_shared_addr's sequence lock and
 * logged; a failed lookup keeps the last address. Exposed for tests: one
 * pass over every live set, resolving what is due at now_ms. */
void pool_shared_resolve_pass(uint64_t now_ms);

/* Busy counts for limits.connections: take one slot of e (false when it is
 * at the limit), give it back. */
bool pool_shared_busy_take(struct pool_shared *p, struct ep_shared *e);
void pool_shared_busy_put(struct ep_shared *e);

#endif
