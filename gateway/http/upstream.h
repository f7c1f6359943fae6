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
#include "http/conn.h"
#include "http/parse.h"

struct request;
struct worker;
struct upconn;

struct endpoint_state {
	const struct cfg_endpoint *cfg;
	unsigned inflight;   /* requests bound to this endpoint now */
	unsigned fails;      /* consecutive failed exchanges (connect, reset, timeout, invalid) */
	uint64_t requests;   /* exchanges started (read racily by the admin thread) */
	int wrr_current;     /* smooth weighted round robin state */
	struct upconn *idle; /* idle keep-alive connections, MRU first */
	unsigned n_idle;
};

struct pool_state {
	const struct cfg_pool *cfg;
	struct endpoint_state *eps;
	unsigned n_eps;
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

/* Serialize the upstream request head for r from the parsed client head
 * into r->up_head: hop-by-hop fields removed, X-Forwarded-*, Via and
 * X-Request-ID added. Returns 0 or -ENOMEM. */
int upstream_build_head(struct request *r, const struct http_request *h, const char *peer);

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
/* Abandon the exchange (client gone, request refused mid-body): the
 * connection is closed, never reused. */
void upstream_abort(struct request *r);

#endif
