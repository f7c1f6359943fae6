/* config.h — the gateway's configuration as an immutable snapshot.
 *
 * Built once from the command line and the YAML file (--config), validated,
 * with every address resolved, then never changed: a reload builds a new
 * snapshot and swaps a pointer (STYLE.md §9). Components receive these plain
 * structs, never the YAML.
 *
 * Errors name their place: "FILE:LINE: reason" for the file, "--flag: reason"
 * for the command line. Flags override the file. The schema is in
 * docs/config.md.
 */
#ifndef REFLEX_CORE_CONFIG_H
#define REFLEX_CORE_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define CFG_NAME_MAX 64
#define CFG_HOST_MAX 256

struct cfg_addr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[CFG_HOST_MAX + 8]; /* as written: "127.0.0.1:8080", "[::1]:8080", "name:80" */
};

struct cfg_endpoint {
	struct cfg_addr addr; /* resolved at load (first address of the name) */
	unsigned weight;      /* >= 1; default 1 */
};

#define CFG_PATH_MAX 4096

/* TLS (docs/tls.md). The contexts are built from these when the snapshot is
 * loaded (core/tls.h), so a bad certificate refuses the config, and belong
 * to the snapshot: config_free() drops its references. */
struct tls_ctx;

struct cfg_tls_cert {
	char cert[CFG_PATH_MAX]; /* PEM: the certificate, then its chain */
	char key[CFG_PATH_MAX];  /* PEM private key */
	char ocsp[CFG_PATH_MAX]; /* DER OCSP response to staple; "" = none */
};

struct cfg_listen_tls { /* one per listen address; enabled = false: plain TCP */
	bool enabled;
	unsigned line;               /* where it was defined (for messages) */
	struct cfg_tls_cert *certs;  /* [0] = tls.cert/key, the default; then tls.certs */
	unsigned n_certs;
	char client_ca[CFG_PATH_MAX]; /* mTLS: verify client certificates; "" = off */
	char client_subject_header[CFG_NAME_MAX]; /* default X-Client-Subject */
	char ticket_key_file[CFG_PATH_MAX];       /* shared ticket keys; "" = generated */
	uint32_t ticket_rotate;                   /* ms; default 12 h */
	uint32_t session_cache;                   /* sessions kept; default 20480; 0 = off */
	struct tls_ctx *ctx;
};

struct cfg_pool_tls { /* enabled = false: plain TCP to the endpoints */
	bool enabled;
	bool verify;            /* check the certificate and name; default true */
	char ca[CFG_PATH_MAX];  /* PEM CA bundle; "" = the system store */
	char sni[CFG_HOST_MAX]; /* name sent and verified; "" = the endpoint's host */
	struct tls_ctx *ctx;
};

enum cfg_balance {
	CFG_BALANCE_P2C = 0,     /* power of two choices on in-flight × EWMA latency (default) */
	CFG_BALANCE_ROUND_ROBIN, /* weighted round robin */
	CFG_BALANCE_HASH,        /* consistent (rendezvous) hashing on hash_key */
};

/* What balance: hash hashes (docs/pool.md). */
enum cfg_hash_key {
	CFG_HASH_HEADER = 0, /* the value of a request header (name in hash_name) */
	CFG_HASH_COOKIE,     /* the value of a cookie (name in hash_name) */
	CFG_HASH_CACHE_KEY,  /* method + host + target: what the cache keys on */
};

/* Pool resilience (docs/pool.md). Durations in ms; 0 disables a feature
 * where the comment says so. */
struct cfg_health { /* active checks; off unless configured */
	bool enabled;
	char path[256];
	char method[16];
	uint16_t expect_lo, expect_hi; /* accepted status range; default 200-399 */
	uint32_t interval, timeout;    /* default 5 s, 2 s */
	uint32_t rise, fall;           /* successes to come up, failures to go down: 2, 3 */
};

struct cfg_outlier { /* passive ejection; on by default */
	uint32_t consecutive_failures; /* 5; 0 = off */
	uint32_t ejection_time;        /* 10 s, doubled per repeated ejection ... */
	uint32_t max_ejection_time;    /* ... up to 5 min */
	uint32_t max_ejected;          /* percent of the pool that may be out at once: 50 */
	uint32_t latency_factor;       /* eject at this × the pool's median latency; 0 = off */
};

struct cfg_breaker { /* per endpoint; off unless configured */
	bool enabled;
	uint32_t window;       /* outcomes per evaluation window: 20 */
	uint32_t min_requests; /* fewer outcomes never trip it: 10 */
	uint32_t error_rate;   /* percent of failures that opens it: 50 */
	uint32_t open_time;    /* open this long, then half-open: 5 s */
	uint32_t probes;       /* concurrent requests let through half-open: 1 */
};

struct cfg_pool_limits { /* per pool, whole process (Envoy's circuit breakers) */
	uint32_t connections; /* busy upstream connections per endpoint; 0 = unlimited */
	uint32_t retries;     /* concurrent retries and hedges; default 16, 0 = unlimited */
};

#define CFG_RETRY_STATUSES_MAX 8
struct cfg_retry { /* off (attempts 1) unless configured */
	uint32_t attempts;        /* tries in all, first included: 1 (off); "retry:" → 3 */
	uint16_t statuses[CFG_RETRY_STATUSES_MAX]; /* retried statuses: 502 503 504 */
	unsigned n_statuses;
	uint32_t budget;          /* retries as percent of the pool's requests: 20 */
	uint32_t min_retries;     /* retries always allowed on top of the budget: 3 */
	uint32_t backoff;         /* base of the exponential backoff (full jitter): 25 ms */
	uint32_t max_backoff;     /* cap: 250 ms */
	uint32_t per_try_timeout; /* response head of one try must come this fast; 0 = off */
	uint32_t timeout;         /* no retry starts later than this after the request; 0 = off */
	bool all_methods;         /* also retry non-idempotent methods */
	char idempotency_header[64]; /* a request with this field is retryable: Idempotency-Key */
};

struct cfg_hedge { /* off unless configured */
	bool enabled;
	bool p95;       /* delay = the pool's recent P95 time to first byte */
	uint32_t delay; /* fixed delay (ms) when !p95; floor when p95 */
};

struct cfg_queue { /* off (size 0): a full pool answers 503 at once */
	uint32_t size;    /* waiting requests per worker */
	uint32_t timeout; /* longest wait: 1 s */
};

struct cfg_pool {
	char name[CFG_NAME_MAX];
	enum cfg_balance balance;
	unsigned keepalive; /* idle connections kept per endpoint per worker; default 64 */
	struct cfg_endpoint *endpoints;
	unsigned n_endpoints;

	enum cfg_hash_key hash_key; /* balance: hash */
	char hash_name[64];         /* header or cookie name */
	struct cfg_health health;
	struct cfg_outlier outlier;
	struct cfg_breaker breaker;
	struct cfg_pool_limits limits;
	struct cfg_retry retry;
	struct cfg_hedge hedge;
	struct cfg_queue queue;
	uint32_t slow_start; /* ramp of a returning endpoint's share; default 0 = off */
	uint32_t resolve;    /* re-resolve endpoint names this often; default 30 s, 0 = off */
	struct cfg_pool_tls tls;
};

/* At most this many routes and pools: per-route and per-pool metrics are
 * kept for 4096 names (STATS_NAMES_CAP), routes are matched one by one,
 * and a generated file with 100 000 routes took 330 MB to load. */
#define CFG_ROUTES_MAX 4096
#define CFG_POOLS_MAX 4096

/* A route sends matching requests to a pool. Routes are tried in order; the
 * first whose host and path prefix match wins; requests no route matches go
 * to the pool named "default" (404 when there is none). */
struct cfg_route {
	char host[CFG_HOST_MAX];   /* lower case, no port; "" matches any host;
				      "*.example.com" matches any subdomain */
	char path_prefix[1024];    /* "" or "/" matches any path */
	unsigned pool;             /* index into config.pools */
	unsigned line;             /* where it was defined (for messages) */
	bool access_log;           /* log requests of this route; default true */
	bool cache;                /* the cache applies to this route; default true */
	bool cache_post;           /* cache POST responses keyed by the body; default false */
	uint8_t hedge;             /* CFG_ROUTE_HEDGE_*: hedging for this route (docs/pool.md) */
	bool retry_unsafe;         /* retries may repeat non-idempotent methods; default false */
};
enum { CFG_ROUTE_HEDGE_POOL = 0, CFG_ROUTE_HEDGE_ON, CFG_ROUTE_HEDGE_OFF };

/* The response cache (gateway/http/cache.c, docs/cache.md). */
struct cfg_cache {
	bool enabled;           /* default false: opt in */
	uint64_t memory;        /* L1 byte budget, shared by the workers; default 256 MiB */
	uint64_t max_object;    /* largest stored body; default 4 MiB (at most memory/64) */
	uint64_t post_body_max; /* POST caching: largest request body keyed; default 64 KiB */
	uint32_t grace;         /* ms a stale object may answer when the origin fails; default 0 */
	uint32_t coalesce_timeout; /* ms a coalesced miss waits before going upstream; default 10 s */
	char tag_header[64];    /* response header with purge tags; default "Surrogate-Key" */
	struct cfg_addr redis;  /* L2; redis.len == 0: off (default) */
	uint32_t redis_timeout; /* ms per L2 operation; default 50 */
	uint32_t redis_breaker; /* ms L2 is skipped after 3 failures in a row; default 5 s */
};

/* Limits of a rate limit, shared by the config and the admin API: rates
 * below CFG_RL_RATE_MIN per second, or a burst that takes longer than
 * CFG_RL_REFILL_MAX_S to refill, would overflow the limiter's 64-bit
 * nanosecond arithmetic. */
#define CFG_RL_RATE_MIN 1e-6
#define CFG_RL_REFILL_MAX_S 1e9

/* Rate limiting (gateway/http/limit.c, docs/ratelimit.md): the `ratelimit:`
 * section. (`limits:` is the request size limits above.) */
struct cfg_rl_limit {
	bool enabled;
	double rate;    /* requests per second (> 0 when enabled) */
	uint32_t burst; /* requests admitted at once; >= 1 */
	bool global;    /* enforced across hosts through ratelimit.redis */
};

#define CFG_RL_ROUTES_MAX 16
struct cfg_rl_route { /* requests whose host and path match share one bucket */
	char host[CFG_HOST_MAX]; /* "" = any host; as in cfg_route */
	char path_prefix[256];
	struct cfg_rl_limit lim;
};

#define CFG_RL_IFACES_MAX 8
#define CFG_RL_PORTS_MAX 16
#define CFG_RL_CIDRS_MAX 64
#define CFG_RL_CIDR_LEN 64

/* The kernel layer (bpf/ratelimit.bpf.c). Nothing is attached unless
 * interfaces are listed; syn_rate without an active kernel layer is enforced
 * in userspace at accept. */
struct cfg_rl_kernel {
	char interfaces[CFG_RL_IFACES_MAX][16];
	unsigned n_interfaces;
	char attach[16]; /* "auto" (default), "tc", "xdp", "xdp_generic" */
	uint16_t ports[CFG_RL_PORTS_MAX]; /* none: the listen ports */
	unsigned n_ports;
	uint32_t syn_rate, syn_burst; /* new connections per second per source; 0 = off */
	uint32_t pkt_rate, pkt_burst; /* packets per second per source; 0 = off */
	uint32_t prefix_v4, prefix_v6; /* source bits per bucket: 32, 64 */
	char allow[CFG_RL_CIDRS_MAX][CFG_RL_CIDR_LEN];
	unsigned n_allow;
	char deny[CFG_RL_CIDRS_MAX][CFG_RL_CIDR_LEN];
	unsigned n_deny;
	bool dry_run;
};

enum cfg_rl_fallback {
	CFG_RL_FALLBACK_LOCAL = 0, /* Redis down: enforce rate/hosts locally (default) */
	CFG_RL_FALLBACK_OPEN,      /* Redis down: admit */
	CFG_RL_FALLBACK_CLOSED,    /* Redis down: refuse (429) */
};

struct cfg_ratelimit {
	struct cfg_rl_limit client;  /* per client address */
	struct cfg_rl_limit api_key; /* per API key (hashed value of key_header) */
	char key_header[64];         /* default "X-API-Key" */
	struct cfg_rl_route routes[CFG_RL_ROUTES_MAX];
	unsigned n_routes;
	/* escalation into the kernel penalty box: more than `refusals` 429s in
	 * `window` ms boxes the source for `penalty` ms; refusals 0 = off */
	uint32_t escalate_refusals, escalate_window, escalate_penalty;
	struct cfg_addr redis;  /* global limits; len == 0: off */
	uint32_t redis_timeout; /* ms; default 50 */
	uint32_t hosts;         /* gateway hosts sharing the global limits: rate/hosts on fallback */
	enum cfg_rl_fallback fallback;
	struct cfg_rl_kernel kernel;
};

struct cfg_limits {
	uint32_t request_line; /* bytes; default 8 KiB → 414 */
	uint32_t header_bytes; /* whole head; default 32 KiB → 431 */
	uint32_t header_count; /* default 100 → 431 */
	uint64_t body;         /* request body bytes; default 1 MiB (nginx); 0 = unlimited → 413 */
};

struct cfg_timeouts { /* all in milliseconds */
	uint32_t header;            /* whole request head must arrive: default 10 s → 408 */
	uint32_t body;              /* between body reads: default 60 s → 408 */
	uint32_t keepalive;         /* idle client connection: default 75 s → close */
	uint32_t upstream_connect;  /* default 5 s → 502 */
	uint32_t upstream_response; /* between upstream reads: default 60 s → 504 */
	uint32_t upstream_idle;     /* idle pooled upstream connection: default 60 s */
	uint32_t send;              /* a send to a client/upstream making no progress: default 60 s */
	uint32_t drain;             /* graceful shutdown deadline: default 30 s */
	uint32_t tls_handshake;     /* TLS handshake must finish: default 10 s → close */
};

/* The admin API (gateway/admin.c, docs/admin.md). */
struct cfg_admin {
	bool enabled;          /* false with "--admin off" / "admin: {listen: off}" */
	struct cfg_addr listen; /* TCP address, or AF_UNIX (text is the path) */
	char token_file[4096]; /* "NAME SECRET" lines; "" = no tokens: mutations get 401 */
	char audit_log[4096];  /* hash-chained audit file; "" = off */
};

/* Reflex rules (gateway/http/reflex.c, docs/rules.md). Plain values here;
 * the rule set is compiled (one Hyperscan database) by the reflex module
 * through config_reflex_build when the snapshot is loaded, and belongs to
 * the snapshot (`compiled`, released by config_free). */
struct config;
#define CFG_RX_LIST_MAX 16  /* detectors / places / headers named by one rule */
#define CFG_RX_VALUE_MAX 256

enum cfg_rx_action {
	CFG_RX_BLOCK = 0, /* status + JSON error naming rule and detector */
	CFG_RX_REDACT,    /* rewrite matched body bytes (mask, hash, last4) */
	CFG_RX_RESPOND,   /* canned status, headers, body; no upstream */
	CFG_RX_ROUTE,     /* send to a named pool */
	CFG_RX_NOCACHE,   /* skip the cache */
	CFG_RX_TAG,       /* add a header for the orchestrator */
};

enum cfg_rx_redact { CFG_RX_MASK = 0, CFG_RX_HASH, CFG_RX_LAST4 };

/* where detectors look (bit mask) */
#define CFG_RX_IN_URL 1u     /* path and query */
#define CFG_RX_IN_HEADERS 2u /* the fields named in headers[] */
#define CFG_RX_IN_BODY 4u    /* the request body (streamed, up to max_scan_bytes) */
#define CFG_RX_IN_RESPONSE 8u /* the response body, SSE included (redact only: DLP) */

struct cfg_rx_rule {
	char name[CFG_NAME_MAX];
	unsigned line; /* where it was defined (0: added through the admin API) */
	/* match: every condition given must hold ("" = any) */
	char method[16];
	char host[CFG_HOST_MAX];
	char path[CFG_RX_VALUE_MAX]; /* prefix, or exact when path_exact */
	bool path_exact;
	char header[CFG_NAME_MAX];          /* present ... */
	char header_value[CFG_RX_VALUE_MAX]; /* ... and equal to this (when has_header_value) */
	bool has_header_value;
	char query[CFG_NAME_MAX];           /* query parameter present ... */
	char query_value[CFG_RX_VALUE_MAX];  /* ... and equal to this */
	bool has_query_value;
	/* detector hits: any of these (names, families "pii", "secret",
	 * "injection", "user", or "any") in any of the places `in` */
	char detect[CFG_RX_LIST_MAX][CFG_NAME_MAX];
	unsigned n_detect;
	unsigned in; /* CFG_RX_IN_*; default url | body */
	char headers[CFG_RX_LIST_MAX][CFG_NAME_MAX]; /* scanned with CFG_RX_IN_HEADERS */
	unsigned n_headers;
	/* action */
	enum cfg_rx_action action;
	unsigned status;                   /* block (403) / respond (200) */
	enum cfg_rx_redact redact;
	char pool[CFG_NAME_MAX];           /* route */
	char tag_header[CFG_NAME_MAX];     /* tag: default "X-Reflex-Tag" */
	char tag[CFG_RX_VALUE_MAX];        /* tag: the value (default the rule name) */
	char content_type[CFG_NAME_MAX * 2]; /* respond; default "application/json" */
	char *body;                        /* respond (malloc'd, may be NULL) */
	char *resp_headers;                /* respond: "Name: value\r\n"... (malloc'd, may be NULL) */
	bool oversize_block;               /* on_oversize: block (fail closed) | pass (default) */
};

struct cfg_rx_detector { /* a user regex detector */
	char name[CFG_NAME_MAX];
	char *pattern; /* Hyperscan syntax (malloc'd) */
	unsigned severity; /* 1 low .. 4 critical; default 2 */
	bool caseless;
	unsigned line;
};

/* trace: eBPF TCP signals and the anomaly detector (docs/anomaly.md) */
struct cfg_trace {
	bool enabled;            /* default false */
	bool eject;              /* action: eject an anomalous upstream endpoint; default false */
	bool penalty;            /* action: box an anomalous client prefix (kernel limiter) */
	uint32_t window;         /* ms: one detector window; default 5 s */
	uint32_t slow_connect;   /* ms: an upstream connect slower than this is an event; 200 */
	uint32_t events_per_sec; /* kernel events per CPU per second; default 1000 */
	uint32_t prefix_v4;      /* client prefixes: /24 ... */
	uint32_t prefix_v6;      /* ... and /64 */
	uint32_t sensitivity;    /* threshold in robust standard deviations; default 5 */
	uint32_t min_samples;    /* windows of history before anything is judged; default 8 */
	uint32_t min_requests;   /* requests in a window to judge its HTTP signals; default 20 */
	uint32_t eject_time;     /* ms: cool-down of an ejection; default 30 s */
	uint32_t penalty_time;   /* ms: time in the penalty box; default 60 s */
	uint32_t events_kept;    /* GET /events history; default 256 */
};

struct cfg_reflex {
	bool present; /* the file has a reflex: section: compiled even without rules (admin API) */
	uint64_t max_scan_bytes; /* body bytes held and scanned; default 1 MiB */
	char hash_key[256];      /* key of the keyed hashes; "" = a random key per snapshot */
	struct cfg_rx_detector *detectors;
	unsigned n_detectors;
	struct cfg_rx_rule *rules;
	unsigned n_rules;
	void *compiled; /* the reflex module's compiled set (NULL: no rules) */
};

/* Set by the reflex module before any config is loaded (reflex_install):
 * build compiles c->reflex into c->reflex.compiled at the end of a load
 * (an error is "FILE:LINE: reason" in err, returns -1); release frees it
 * from config_free. NULL: reflex sections are parsed but not compiled. */
extern int (*config_reflex_build)(struct config *c, char *err, size_t errlen);
extern void (*config_reflex_release)(void *compiled);

/* Parse one rule given as a YAML/JSON mapping text (the admin API's
 * POST /rules body) with the same checks as the file. 0, or -1 with the
 * reason in err. The rule's malloc'd fields are freed by
 * config_rx_rule_fini. */
int config_parse_rx_rule(const char *text, size_t len, struct cfg_rx_rule *out, char *err,
			 size_t errlen);
void config_rx_rule_fini(struct cfg_rx_rule *r);

struct config {
	char source[4096]; /* the config file path, or "" when from flags only */
	unsigned workers;  /* default: number of online CPUs */

	struct cfg_addr *listens;
	unsigned n_listens;
	struct cfg_listen_tls *listen_tls; /* n_listens entries, parallel to listens */
	/* n_listens entries, parallel to listens, or NULL (none): TCP_DEFER_ACCEPT, the
	 * kernel hands a connection over once its first bytes are in (docs/config.md) */
	bool *listen_deferred;

	struct cfg_pool *pools;
	unsigned n_pools;

	struct cfg_route *routes;
	unsigned n_routes;

	struct cfg_limits limits;
	struct cfg_timeouts timeouts;

	char access_log[4096]; /* "" = off, "-" = stdout, else a file path */
	double access_log_sample; /* 0..1: share of requests logged; default 1 */
	bool access_log_query;    /* keep the query string in "path"; default false */

	struct cfg_admin admin;
	int log_level;         /* 0 error, 1 warn, 2 info (default), 3 debug */
	char user[64];         /* switch to this user once bound (core/privs.h); "" = stay */
	struct cfg_cache cache;
	struct cfg_ratelimit ratelimit;
	struct cfg_reflex reflex;
	struct cfg_trace trace;
};

enum config_action {
	CONFIG_RUN = 0,
	CONFIG_CHECK,   /* --check-config: validate and exit */
	CONFIG_VERSION, /* --version */
	CONFIG_HELP,    /* --help */
};

/* Build a snapshot from argv: defaults, then --config FILE if given, then
 * the flags (--listen and --upstream are repeatable; given on the command
 * line they replace the file's listen list / default pool). Returns 0 and
 * *out, or -1 with a message "FILE:LINE: reason" or "--flag: reason" in
 * err. *action tells what main should do. */
int config_from_args(int argc, char **argv, struct config **out, enum config_action *action,
		     char *err, size_t errlen);

/* Load a YAML file on top of defaults (used by reload). */
int config_load_file(const char *path, struct config **out, char *err, size_t errlen);

/* The --help text. */
const char *config_usage(void);

/* Index of the pool named `name`, or -1. */
int config_pool_index(const struct config *c, const char *name);

void config_free(struct config *c);

#endif
