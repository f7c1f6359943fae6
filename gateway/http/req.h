/* req.h — a client connection and the request it is serving.
 *
 * A client connection serves one request at a time; pipelined requests
 * wait, unparsed, in the connection's input buffer, so responses leave in
 * request order. The request runs through the ordered step table in req.c
 * (the only place that knows the order); each step returns NEXT, WAIT (an
 * I/O completion resumes the request with req_resume) or DONE.
 */
#ifndef REFLEX_HTTP_REQ_H
#define REFLEX_HTTP_REQ_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/timer.h"
#include "http/conn.h"
#include "core/stats.h"
#include "http/parse.h"

struct upconn;
struct cache_req;
struct limit_wait;
struct reflex_req;
struct endpoint_state;
struct wgen;

enum step_result { STEP_NEXT, STEP_WAIT, STEP_DONE };

/* How the response body is written to the client. */
enum resp_out {
	RESP_OUT_NONE,      /* no body */
	RESP_OUT_RAW,       /* bytes as received (Content-Length) */
	RESP_OUT_CHUNKED,   /* chunked passed through, validated */
	RESP_OUT_DECHUNK,   /* chunked from upstream, payload only, close-delimited (1.0 client) */
	RESP_OUT_ENCODE,    /* close-delimited from upstream, chunk-encoded (1.1 client) */
	RESP_OUT_UNTIL_CLOSE, /* close-delimited both sides (1.0 client) */
};

struct request {
	struct client *c;
	unsigned step;
	bool running, rerun; /* req_run re-entrancy guard */
	uint64_t t_start_ns;

	/* facts copied out of the parsed head (the head bytes are consumed) */
	bool is_head, keep_alive, http10, expect_continue, safe;
	enum http_body body;
	uint64_t body_left;        /* HTTP_BODY_LENGTH: bytes still to forward */
	struct http_chunked chunk; /* HTTP_BODY_CHUNKED: request body decoder */
	bool body_done;
	uint64_t body_bytes;
	char id[33];

	/* the head, copied out of the connection buffer so later steps may
	 * wait on I/O while the connection keeps receiving */
	struct buf head;
	struct http_request h; /* views into head */

	/* upstream exchange */
	struct wgen *gen; /* the configuration generation routed with (a reference) */
	int pool;
	int route; /* index of the matching route, -1: the default pool */
	struct endpoint_state *ep;
	struct upconn *up;
	struct buf up_head;  /* serialized upstream request head, kept for a retry */
	bool up_head_built;  /* up_head is built (upstream_head_ready) */
	bool retried;
	bool body_started;   /* body bytes were handed to the upstream (no retry after) */
	bool continue_sent;
	/* pool resilience (upstream.c, docs/pool.md) */
	struct upconn *hedge;     /* a hedged second try racing r->up */
	struct timer up_timer;    /* retry backoff, queue deadline or hedge delay */
	uint8_t up_wait;          /* what up_timer is for (upstream.c) */
	bool retryable;           /* method / idempotency key / route allow a retry */
	bool has_key;             /* balance: hash — the request has a key */
	unsigned tries;           /* tries started (retries and hedges included) */
	uint64_t key;             /* its hash */
	uint64_t t_choose_ms;     /* routed at (retry.timeout) */
	struct request *q_next, *q_prev; /* the pool queue */
	uint32_t retry_after_s;   /* Retry-After of a gateway-made 503 */
	struct buf replay;        /* body bytes sent so far, kept for a retry (bounded) */
	bool replay_off;          /* the body outgrew the replay bound: no retry once sent */
	const char *resp_hdrs;    /* extra fields ("Name: v\r\n"...) for a gateway-made response */
	struct limit_wait *limit; /* the limit step waiting for Redis (http/limit.c), or NULL */
	char limit_fields[128];   /* RateLimit-Policy / RateLimit of an admitted request, or "" */

	/* response */
	int status;
	bool resp_started;   /* the client has been sent (or queued) a response head */
	size_t resp_mark;    /* where that head starts in the client's output buffer */
	uint64_t resp_sends; /* the connection's send count when it was queued */
	bool resp_done;
	bool close_after;    /* close the client connection after this response */
	enum resp_out out;
	uint64_t resp_left;  /* RESP_OUT_RAW: bytes still expected */
	struct http_chunked resp_chunk;
	enum reason reason;  /* why a gateway-made response was sent (REASON_NONE otherwise) */
	struct cache_req *cache; /* the cache's per-request state (http/cache.h), or NULL */
	bool body_discard;   /* the cache answered: the upstream response is not relayed */
	struct reflex_req *rx; /* the reflex step's per-request state (http/reflex.h), or NULL */
	bool nocache;        /* a reflex rule said: skip the cache */
	bool up_get;         /* a HEAD sent upstream as GET (the cache stores it): parse a body */
	bool detached;       /* the cache's background refresh: no client socket (http/cache.h) */

	/* accounting: the access record and the stage histograms */
	uint64_t t_first_ns;   /* first byte of the head */
	uint64_t t_parsed_ns, t_routed_ns;
	uint64_t t_connect_ns; /* upstream connect took this long (0: reused) */
	uint64_t t_sent_ns;    /* the head was handed to the upstream connection */
	uint64_t t_ttfb_ns;    /* first response byte from the upstream */
	uint64_t bytes_in, bytes_out;
	uint64_t stage_ns[STAGE_MAX]; /* policy steps' durations + 1 (0: did not run) */
	uint64_t step_t0_ns;          /* when the timed step was first entered */
	unsigned timed_step;          /* that step's index + 1 */
	bool logged;
};

struct client {
	struct conn conn;
	struct client *next, *prev; /* worker's client list */
	struct http_header *hdrs;   /* parsed header views, one array per client */
	unsigned max_hdrs;          /* its capacity (a reload may raise the worker's) */
	struct request req;
	bool in_request;
	bool head_timer_armed;
	/* A pipelined request waits unparsed until the answers before it have
	 * mostly left (OUT_HIGH in req.c): a client that pipelines and does
	 * not read cannot make the gateway queue answer after answer. */
	bool parse_blocked;
	enum conn_close_reason close_reason; /* for the connections-closed counter */
	uint64_t n_requests;
	char peer[48]; /* client IP as text */
};

/* Called by upstream.c when the exchange has progressed (response complete
 * or failed): re-runs the request's current step. */
void req_resume(struct request *r);

/* Answer the request with a gateway-generated error (status, reason);
 * closes the connection afterwards when `close` or when framing is in
 * doubt. If a response is already under way, the client connection is
 * aborted instead (nothing else can signal the failure). */
void req_fail(struct request *r, int status, enum reason code, const char *reason, bool close);

/* The reason code for a parser refusal status (400, 413, 414, 417, 431, 501). */
enum reason reason_for_status(int status);

/* Accept hand-off: a new client connection on fd; tls: the listener's TLS
 * context (NULL: plain TCP). */
struct tls_ctx;
void client_new(struct worker *w, int fd, struct tls_ctx *tls);

/* Move buffered request body bytes to the upstream (called when the
 * client sent more and when the upstream's send queue drained). */
void req_pump_body(struct request *r);

/* Drain: close the client if it is idle between requests; otherwise (a
 * request in progress, or a new connection whose first request is on its
 * way) answer that request with Connection: close and close after it. */
void client_drain(struct client *c);

#endif
