/* stats.h — counters and latency histograms, one block per worker.
 *
 * Each worker writes only its own block (single writer, no locks on the hot
 * path); the admin thread reads all blocks and merges them on a scrape.
 * Writers use relaxed atomic stores and readers relaxed atomic loads, so a
 * reader sees each 64-bit value whole (maybe a moment old). Nothing here
 * knows HTTP beyond the names of the reason codes, which are the shared
 * vocabulary of the access log, the metrics and the error bodies.
 *
 * Histograms have explicit buckets from 50 µs to 10 s (Prometheus
 * convention: cumulative on output, base unit seconds); observe() takes
 * nanoseconds.
 */
#ifndef REFLEX_CORE_STATS_H
#define REFLEX_CORE_STATS_H

#include <stdint.h>

#define STATS_HIST_BUCKETS 17 /* finite upper bounds; +Inf is count */
extern const uint64_t stats_hist_bounds_ns[STATS_HIST_BUCKETS];
extern const char *const stats_hist_bounds_text[STATS_HIST_BUCKETS]; /* "0.00005" ... "10" */

/* Reflex counters are kept by rule position and detector id, up to: */
#define STATS_RX_RULES 64
#define STATS_RX_DETECTORS 64

struct stats_hist {
	uint64_t bucket[STATS_HIST_BUCKETS]; /* non-cumulative: observations <= bound[i] and > bound[i-1] */
	uint64_t count;                      /* all observations (the +Inf bucket) */
	uint64_t sum_ns;
};

/* Why a request was refused or failed. Every gateway-made error response,
 * access-log line and refusal counter carries one of these. */
enum reason {
	REASON_NONE = 0,
	REASON_BAD_REQUEST,        /* 400: malformed or ambiguous request */
	REASON_URI_TOO_LONG,       /* 414 */
	REASON_HEADER_TOO_LARGE,   /* 431 */
	REASON_BODY_TOO_LARGE,     /* 413 */
	REASON_EXPECTATION,        /* 417 */
	REASON_NOT_IMPLEMENTED,    /* 501: CONNECT, Upgrade, transfer codings; 505: HTTP/2.0 */
	REASON_HEADER_TIMEOUT,     /* 408 */
	REASON_BODY_TIMEOUT,       /* 408 */
	REASON_NO_ROUTE,           /* 404 */
	REASON_NO_ENDPOINT,        /* 503 */
	REASON_UPSTREAM_CONNECT,   /* 502: refused / unreachable */
	REASON_UPSTREAM_CONNECT_TIMEOUT, /* 504 */
	REASON_UPSTREAM_TIMEOUT,   /* 504: no response in time */
	REASON_UPSTREAM_RESET,     /* 502: reset or closed before a response */
	REASON_UPSTREAM_INVALID,   /* 502: malformed response */
	REASON_UPSTREAM_TRUNCATED, /* response cut short after its head */
	REASON_UPSTREAM_TLS,       /* 502: TLS handshake with the upstream failed (verify, version) */
	REASON_CLIENT_ABORT,       /* the client went away mid-request */
	REASON_INTERNAL,           /* 500: out of memory */
	REASON_POOL_UNAVAILABLE,   /* 503: every endpoint down, ejected or its breaker open */
	REASON_POOL_OVERLOAD,      /* 503: pool at its limits, queue full or wait too long */
	REASON_RATE_LIMITED,       /* 429: over a rate limit (http/limit.c) */
	REASON_RULE_BLOCKED,       /* a reflex rule refused it (http/reflex.c) */
	REASON_MAX
};
/* "bad_request", "uri_too_long", ... (snake_case, stable: they are label values) */
const char *reason_name(enum reason r);

/* Where time goes in a request (the access log's timing breakdown and the
 * per-stage histograms). */
enum stage {
	STAGE_PARSE = 0, /* first byte of the head → head parsed */
	STAGE_ROUTE,     /* route + endpoint choice */
	STAGE_LIMIT,     /* the limit step (rate limits; Redis round trip for global ones) */
	STAGE_REFLEX,    /* the reflex step (rules; a held body's scan) */
	STAGE_CACHE,     /* the cache step (lookup, L2, waiting on a coalesced fetch) */
	STAGE_CONNECT,   /* upstream connect (0 on a reused connection) */
	STAGE_TTFB,      /* request sent → first response byte from the upstream */
	STAGE_TOTAL,     /* head parsed → response fully handed to the kernel */
	STAGE_MAX
};
const char *stage_name(enum stage s); /* "parse", "route", ... */

enum conn_close_reason {
	CLOSE_CLIENT = 0, /* the client closed */
	CLOSE_IDLE,       /* keep-alive timeout */
	CLOSE_PROTOCOL,   /* we closed after an error or Connection: close */
	CLOSE_ERROR,      /* reset, send failure */
	CLOSE_DRAIN,      /* shutdown */
	CLOSE_MAX
};
const char *close_reason_name(enum conn_close_reason r);

/* Why a TLS session failed or was degraded (core/tls.c classifies OpenSSL
 * errors into these; the log line carries OpenSSL's own reason text). */
enum tls_fail {
	TLS_FAIL_NONE = 0,
	TLS_FAIL_VERSION,     /* protocol version refused (TLS 1.0/1.1, SSLv3) */
	TLS_FAIL_CIPHER,      /* no shared cipher, group or signature algorithm */
	TLS_FAIL_SNI,         /* unknown server name: the default certificate was used */
	TLS_FAIL_CLIENT_CERT, /* mTLS: no client certificate, or it did not verify */
	TLS_FAIL_PEER_VERIFY, /* upstream certificate did not verify (name, CA, expiry) */
	TLS_FAIL_TIMEOUT,     /* handshake not finished in time */
	TLS_FAIL_PROTOCOL,    /* anything else: garbage, bad record, unexpected message */
	TLS_FAIL_INTERNAL,    /* out of memory */
	TLS_FAIL_MAX
};
/* "version", "cipher", "unknown_sni", "client_cert", "peer_verify",
 * "handshake_timeout", "protocol", "internal" (stable label values) */
const char *tls_fail_name(enum tls_fail f);

/* One worker's block. Sizes that depend on the configuration (per pool)
 * live in the arrays allocated by stats_worker_init. */
struct stats_worker {
	uint64_t conn_accepted;
	uint64_t conn_open; /* gauge: written by the worker, read by the admin */
	uint64_t conn_closed[CLOSE_MAX];
	uint64_t requests;
	uint64_t responses[6]; /* by status class: [1]..[5]; [0] unused */
	uint64_t bytes_in, bytes_out; /* client side, on the wire */
	uint64_t upstream_connects, upstream_reuses, upstream_retries;
	uint64_t upstream_bytes_in, upstream_bytes_out;
	uint64_t refusals[REASON_MAX];
	/* TLS: handshakes completed (resumed ones also counted apart), client
	 * side (listeners) and upstream side; failures by reason, both sides */
	uint64_t tls_handshakes, tls_resumed;
	uint64_t upstream_tls_handshakes, upstream_tls_resumed;
	uint64_t tls_failures[TLS_FAIL_MAX];
	struct stats_hist stage[STAGE_MAX];
	/* pool resilience (docs/pool.md): counted by the worker where it happened */
	uint64_t pool_health_changes; /* active check turned an endpoint up or down */
	uint64_t pool_ejections;      /* passive outlier ejections */
	uint64_t pool_breaker_opens;  /* an endpoint's breaker opened (or re-opened) */
	uint64_t pool_retries;        /* retries started (other endpoint, after backoff) */
	uint64_t pool_retry_budget_denied; /* a retry refused by the budget or the retry limit */
	uint64_t pool_hedges;         /* hedged second tries sent */
	uint64_t pool_hedge_wins;     /* ... that answered first */
	uint64_t pool_queued;         /* requests that waited in a pool queue */
	uint64_t pool_queue_rejected; /* queue full or wait deadline passed: 503 */
	uint64_t pool_fail_fast;      /* 503 at once: nothing available */
	/* the cache (gateway/http/cache.c, docs/cache.md): one of hit, miss,
	 * stale, bypass per request that reached the cache step */
	uint64_t cache_hits, cache_misses, cache_stale, cache_bypass;
	uint64_t cache_stores;        /* objects stored (L1) */
	uint64_t cache_revalidations; /* conditional requests sent to the origin */
	uint64_t cache_refreshed;     /* ... answered 304: the stored object was refreshed */
	uint64_t cache_not_modified;  /* clients answered 304 from the cache */
	uint64_t cache_coalesced;     /* misses that waited for another request's fetch */
	uint64_t cache_invalidations; /* objects dropped by unsafe methods */
	uint64_t cache_l2_hits, cache_l2_misses, cache_l2_errors, cache_l2_skipped;
	/* rate limiting (gateway/http/limit.c, docs/ratelimit.md) */
	uint64_t rl_checked;         /* requests that went through the limit step */
	uint64_t rl_refused_client;  /* 429: per client address */
	uint64_t rl_refused_key;     /* 429: per API key */
	uint64_t rl_refused_route;   /* 429: per route */
	uint64_t rl_escalations;     /* sources handed to the kernel penalty box */
	uint64_t rl_global_checks;   /* global limits decided by Redis */
	uint64_t rl_global_fallback; /* global limits decided locally: Redis unreachable */
	uint64_t rl_redis_errors;    /* Redis errors and timeouts */
	uint64_t rl_accept_refused;  /* connections closed at accept: userspace SYN limit */

	/* reflex rules (gateway/http/reflex.c, docs/rules.md) */
	uint64_t rx_scanned;       /* requests the rules looked at (URL, headers, body) */
	uint64_t rx_body_scanned;  /* request bodies held and scanned */
	uint64_t rx_scan_bytes;    /* bytes through the detectors (URL, headers, bodies) */
	uint64_t rx_blocked;       /* answered by a block rule (or on_oversize: block) */
	uint64_t rx_responded;     /* answered by a respond rule */
	uint64_t rx_redactions;    /* matches rewritten in forwarded bodies */
	uint64_t rx_oversize;      /* bodies over reflex.max_scan_bytes */
	uint64_t rx_resp_redactions; /* matches rewritten in responses (DLP) */
	/* by the rule's name slot (reflex.c: a name keeps its slot across reloads and API
	 * edits, so counters never shift) / by detector id */
	uint64_t rx_rule_hits[STATS_RX_RULES];
	uint64_t rx_detector_hits[STATS_RX_DETECTORS];

	/* per pool (index = the pool's name slot, stats_name_slot): requests by
	 * status class */
	unsigned n_pools;
	uint64_t (*pool_responses)[6];
	/* per route (index = the route's name slot; requests no route matched
	 * are not in it): requests by status class. Same capacity as pools. */
	unsigned n_routes;
	uint64_t (*route_responses)[6];
};

int stats_worker_init(struct stats_worker *s, unsigned n_pools);

/* Counter slots that outlive reloads: pools by name, routes by their label
 * set. A key keeps its slot for the life of the process, so when a reload
 * reorders, adds or removes pools or routes no series takes over another's
 * counts (Prometheus counters stay monotonic per label set). Returns the
 * key's slot, adding it if new; -1 when STATS_NAMES_CAP keys of that kind
 * were seen (the pool or route is then not counted). Thread-safe. */
enum stats_names { STATS_NAMES_POOL, STATS_NAMES_ROUTE, STATS_NAMES_KINDS };
#define STATS_NAMES_CAP 4096
int stats_name_slot(enum stats_names kind, const char *key);
void stats_worker_fini(struct stats_worker *s);

/* Single-writer updates: only the owning worker calls these. */
#define STAT_ADD(field, n) __atomic_store_n(&(field), (field) + (n), __ATOMIC_RELAXED)
#define STAT_INC(field) STAT_ADD(field, 1)
#define STAT_SET(field, v) __atomic_store_n(&(field), (v), __ATOMIC_RELAXED)
#define STAT_LOAD(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

void stats_hist_observe(struct stats_hist *h, uint64_t ns);

/* Reader side: add a worker's block into an accumulator (which must have
 * been initialised with the same n_pools). Safe while the worker runs. */
void stats_worker_merge(struct stats_worker *into, const struct stats_worker *from);
/* Quantile (0..1) of a histogram in ns, interpolated inside the bucket;
 * 0 when empty. */
uint64_t stats_hist_quantile(const struct stats_hist *h, double q);

#endif
