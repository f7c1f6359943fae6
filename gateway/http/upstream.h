/* upstream.h — the pool side: endpoint choice, per-worker keep-alive
 * connections to the endpoints, and the exchange of one request with one
 * upstream connection (sending the head and body, parsing and streaming
 * the response back through respond.c).
 *
 * Per worker: a pool_state per configured pool, an endpoint_state per
 * endpoint holding the in-flight count (for power of two choices) and the
 * idle keep-alive connections (most recently used first). Idle connections
 * keep a recv armed, so an upstream that closes one is noticed and the
 * connection dropped before it is handed out.
 */
#ifndef REFLEX_HTTP_UPSTREAM_H
#define REFLEX_HTTP_UPSTREAM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/timer.h"
#include "http/breaker.h"
#include "http/conn.h"
#include "http/parse.h"
#include "http/pool_shared.h"

struct request;
struct worker;
struct upconn;
struct pool_state;

struct endpoint_state {
	const struct cfg_endpoint *cfg;
	unsigned inflight;   /* requests bound to this endpoint now */
	unsigned fails;      /* consecutive failed exchanges (connect, reset, timeout, invalid) */
	uint64_t requests;   /* exchanges started (read racily by the admin thread) */
	int wrr_current;     /* smooth weighted round robin state */
	struct upconn *idle; /* idle keep-alive connections, MRU first */
	unsigned n_idle;

	/* Pool resilience (docs/pool.md). For the admin API (GET /pool), read
	 * racily like the fields above; pool_endpoint_report() gathers them:
	 * - sh: the endpoint's state shared by all workers (pool_shared.h):
	 *   sh->healthy (active checks), sh->ejected_until_ms (passive outlier
	 *   ejection, monotonic ms, clock_ms()), sh->n_ejections, sh->breaker
	 *   (breaker_state_now()), sh->busy, sh->failures; NULL in unit tests;
	 * - ewma_us: this worker's EWMA of the time to first response byte, µs
	 *   (0: no sample yet), decaying by half per second without samples;
 *   the choice ignores it until n_samples >= 2 (a cold first answer);
	 * - ewma_at_ms: when the last sample came (clock_ms()). */
	struct ep_shared *sh;
	uint32_t ewma_us;
	uint32_t n_samples; /* latency samples so far (EWMA counts from the 2nd) */
	uint64_t ewma_at_ms;
	uint64_t id; /* hash of the address text: consistent hashing */
};

/* A snapshot of one endpoint for the admin API and logs: merges the shared
 * state with one worker's view. */
struct pool_ep_report {
	bool healthy;             /* active health checks (true without them) */
	bool ejected;             /* out by outlier detection now */
	uint64_t ejected_for_ms;  /* ... for this much longer */
	unsigned n_ejections;
	const char *breaker;      /* "closed", "open", "half_open" ("closed" when off) */
	bool available;           /* in rotation: healthy, not ejected, breaker admits */
	unsigned ramp_permille;   /* slow start share of its weight, 1000 = full */
	unsigned busy;            /* requests bound now, all workers */
	uint64_t failures;        /* failed exchanges, all workers, all time */
	uint32_t ewma_us;         /* this worker's EWMA (decayed to now) */
};
void pool_endpoint_report(const struct pool_state *p, const struct endpoint_state *e,
			  uint64_t now_ms, struct pool_ep_report *out);

struct request;
struct pool_state {
	const struct cfg_pool *cfg;
	struct endpoint_state *eps;
	unsigned n_eps;

	/* pool resilience (docs/pool.md) */
	struct pool_shared *sh;         /* shared by all workers; NULL in unit tests */
	struct pool_shared_set *set;    /* pools[0] holds the reference to the set */
	struct worker *w;               /* the owning worker (set on first use) */
	struct request *q_head, *q_tail; /* requests waiting for a free connection */
	unsigned q_len;
	struct timer q_timer;           /* polls for capacity freed by other workers */
	uint32_t ttfb_us[64];           /* recent times to first byte: the hedge P95 */
	unsigned ttfb_n;
	uint32_t p95_us;
};

struct upconn {
	struct conn conn;
	struct endpoint_state *ep;
	struct request *r;           /* NULL while idle */
	struct upconn *idle_next, *idle_prev;
	struct io_op connect_op;
	bool in_idle;
	bool reused;                 /* served a request before this one */
	bool got_bytes;              /* any response byte for the current request */
	bool head_done;              /* response head parsed */
	bool reusable;               /* response framing allows reuse */
	bool resp_complete;
	uint64_t connect_start_ns;
	/* the try this connection carries (docs/pool.md) */
	uint64_t try_sent_ns;       /* head handed over: EWMA and P95 samples */
	uint64_t try_deadline_ms;   /* retry.per_try_timeout: the head must come by then; 0 none */
	enum breaker_admit br_how;  /* how the breaker admitted it */
	bool busy;                  /* holds a busy slot of its endpoint */
	bool retry_slot;            /* holds a slot of limits.retries (retry or hedge) */
	bool outcome_done;          /* the outcome went to the outlier detector and breaker */
	struct sockaddr_storage addr; /* where it connects (the endpoint's current address) */
	socklen_t addr_len;
};

/* The per-worker state of every pool of cfg (one generation's worth); NULL
 * when out of memory. */
struct pool_state *pool_states_new(const struct config *cfg);
/* Close every idle upstream connection of these pools (drain, reload). */
void pool_states_close_idle(struct pool_state *pools, unsigned n);
void pool_states_free(struct pool_state *pools, unsigned n);

/* Choose an endpoint of the pool. `rnd` is one random 64-bit value (so the
 * choice is deterministic under test). P2C: two distinct endpoints drawn
 * at random, the one with fewer in-flight requests per unit of weight wins.
 * Round robin: smooth weighted round robin. NULL for an empty pool. */
struct endpoint_state *pool_pick(struct pool_state *p, uint64_t rnd);

/* The full choice (docs/pool.md): only endpoints in rotation (healthy, not
 * ejected, breaker admitting), `avoid` skipped unless it is the only one,
 * weights scaled by slow start. P2C scores (in-flight + 1) × EWMA latency /
 * weight; hash (when has_key) uses rendezvous hashing on key (pool_hash.h);
 * other pools and keyless requests fall back to P2C. need_capacity: skip
 * endpoints at limits.connections. NULL when nothing qualifies. */
struct endpoint_state *pool_pick_ex(struct pool_state *p, uint64_t rnd, uint64_t now_ms,
				    const struct endpoint_state *avoid, bool has_key, uint64_t key,
				    bool need_capacity);

/* Route-time choice for r (r->gen, r->pool set): computes the hash key and
 * whether r may be retried, deposits into the retry budget and picks r->ep.
 * Returns 0, or fails the request itself (503 + Retry-After when nothing is
 * available, unless upstream_serve_stale answered it) and returns -1. */
int upstream_choose(struct request *r);

/* Hook for the cache: called when the pool cannot take r (every endpoint
 * down / ejected / breaker open, or the pool is full). Return true when the
 * request was answered (for example with a stale entry); then no 503 is
 * sent. NULL (the default): always 503. Set once at start-up. */
extern bool (*upstream_serve_stale)(struct request *r);

/* Set r->id: the client's X-Request-ID when it is a sane token (its first
 * 32 bytes), otherwise 32 random hex digits. Every response carries it, so
 * the route step sets it for every request. */
void upstream_request_id(struct request *r);

/* Make sure r->up_head holds the upstream request head: serialized from the
 * parsed client head (r->h) on the first call — hop-by-hop fields removed,
 * X-Forwarded-*, Via and X-Request-ID (after upstream_request_id) added —
 * and left as it is (with what the reflex rules and the cache rewrote in
 * it) on later calls. It is built only when a request may go upstream:
 * whoever reads or rewrites r->up_head calls this first, so a cache hit or
 * a rule's answer never pays for it. Returns 0 or -ENOMEM (not built). */
int upstream_head_ready(struct request *r);

/* Start the exchange: bind r to a kept-alive or new connection to r->ep
 * and queue the head. The response comes back through respond.c and
 * req_resume(). Returns 0, or fails the request itself. */
void upstream_start(struct request *r);
/* Queue request body bytes (raw, as they are framed on the wire). */
void upstream_send_body(struct request *r, const void *data, size_t len);
/* Bytes queued to the upstream and not yet sent. */
size_t upstream_out_pending(const struct request *r);
/* The client's output queue has drained: resume reading the upstream. */
void upstream_client_drained(struct request *r);
/* Abandon the exchange (client gone, request refused mid-body, or the
 * request ended): the connection is closed, never reused; a pending
 * backoff, queue wait or hedge is cancelled. Safe to call on a request with
 * no exchange (does nothing then); must be called before a request with a
 * pending wait is reset or freed. */
void upstream_abort(struct request *r);
/* Hand r's exchange to `to` (the cache keeps a shared fetch going after
 * its client left): only once the response head was relayed, with no
 * hedge, retry or queue wait pending. The connection's receive resumes
 * (it may have been paused for r's client). Returns 0, or -EBUSY (left
 * with r). */
int upstream_move(struct request *r, struct request *to);

#endif
