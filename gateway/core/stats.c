#include "core/stats.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <stddef.h>
#include <string.h>

const uint64_t stats_hist_bounds_ns[STATS_HIST_BUCKETS] = {
	50000ull,      100000ull,      250000ull,      500000ull,     1000000ull,    2500000ull,
	5000000ull,    10000000ull,    25000000ull,    50000000ull,   100000000ull,  250000000ull,
	500000000ull,  1000000000ull,  2500000000ull,  5000000000ull, 10000000000ull,
};
const char *const stats_hist_bounds_text[STATS_HIST_BUCKETS] = {
	"5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
	"0.05",  "0.1",    "0.25",    "0.5",    "1",     "2.5",    "5",     "10",
};

static const char *const reason_names[REASON_MAX] = {
	[REASON_NONE] = "none",
	[REASON_BAD_REQUEST] = "bad_request",
	[REASON_URI_TOO_LONG] = "uri_too_long",
	[REASON_HEADER_TOO_LARGE] = "header_too_large",
	[REASON_BODY_TOO_LARGE] = "body_too_large",
	[REASON_EXPECTATION] = "expectation_failed",
	[REASON_NOT_IMPLEMENTED] = "not_implemented",
	[REASON_HEADER_TIMEOUT] = "header_timeout",
	[REASON_BODY_TIMEOUT] = "body_timeout",
	[REASON_NO_ROUTE] = "no_route",
	[REASON_NO_ENDPOINT] = "no_endpoint",
	[REASON_UPSTREAM_CONNECT] = "upstream_connect",
	[REASON_UPSTREAM_CONNECT_TIMEOUT] = "upstream_connect_timeout",
	[REASON_UPSTREAM_TIMEOUT] = "upstream_timeout",
	[REASON_UPSTREAM_RESET] = "upstream_reset",
	[REASON_UPSTREAM_INVALID] = "upstream_invalid",
	[REASON_UPSTREAM_TRUNCATED] = "upstream_truncated",
	[REASON_UPSTREAM_TLS] = "upstream_tls",
	[REASON_CLIENT_ABORT] = "client_abort",
	[REASON_INTERNAL] = "internal",
	[REASON_POOL_UNAVAILABLE] = "pool_unavailable",
	[REASON_POOL_OVERLOAD] = "pool_overload",
	[REASON_RATE_LIMITED] = "rate_limited",
	[REASON_RULE_BLOCKED] = "rule_blocked",
};

const char *reason_name(enum reason r)
{
	return (unsigned)r < REASON_MAX && reason_names[r] ? reason_names[r] : "unknown";
}

static const char *const stage_names[STAGE_MAX] = {
	[STAGE_PARSE] = "parse",     [STAGE_ROUTE] = "route", [STAGE_LIMIT] = "limit",
	[STAGE_REFLEX] = "reflex",   [STAGE_CACHE] = "cache", [STAGE_CONNECT] = "upstream_connect",
	[STAGE_TTFB] = "upstream_ttfb", [STAGE_TOTAL] = "total",
};

const char *stage_name(enum stage s)
{
	return (unsigned)s < STAGE_MAX ? stage_names[s] : "unknown";
}

static const char *const close_names[CLOSE_MAX] = {
	[CLOSE_CLIENT] = "client", [CLOSE_IDLE] = "idle",   [CLOSE_PROTOCOL] = "protocol",
	[CLOSE_ERROR] = "error",   [CLOSE_DRAIN] = "drain",
};

const char *close_reason_name(enum conn_close_reason r)
{
	return (unsigned)r < CLOSE_MAX ? close_names[r] : "unknown";
}

static const char *const tls_fail_names[TLS_FAIL_MAX] = {
	[TLS_FAIL_NONE] = "none",
	[TLS_FAIL_VERSION] = "version",
	[TLS_FAIL_CIPHER] = "cipher",
	[TLS_FAIL_SNI] = "unknown_sni",
	[TLS_FAIL_CLIENT_CERT] = "client_cert",
	[TLS_FAIL_PEER_VERIFY] = "peer_verify",
	[TLS_FAIL_TIMEOUT] = "handshake_timeout",
	[TLS_FAIL_PROTOCOL] = "protocol",
	[TLS_FAIL_INTERNAL] = "internal",
};

const char *tls_fail_name(enum tls_fail f)
{
	return (unsigned)f < TLS_FAIL_MAX ? tls_fail_names[f] : "unknown";
}

int stats_worker_init(struct stats_worker *s, unsigned n_pools)
{
	memset(s, 0, sizeof(*s));
	s->n_pools = n_pools;
	s->pool_responses = calloc(n_pools ? n_pools : 1, sizeof(*s->pool_responses));
	s->n_routes = n_pools;
	s->route_responses = calloc(n_pools ? n_pools : 1, sizeof(*s->route_responses));
	if (!s->pool_responses || !s->route_responses) {
		stats_worker_fini(s);
		return -ENOMEM;
	}
	return 0;
}

static pthread_mutex_t names_mu = PTHREAD_MUTEX_INITIALIZER;
static char *names[STATS_NAMES_KINDS][STATS_NAMES_CAP];
static unsigned n_names[STATS_NAMES_KINDS];

int stats_name_slot(enum stats_names kind, const char *key)
{
	int slot = -1;

	if ((unsigned)kind >= STATS_NAMES_KINDS)
		return -1;
	pthread_mutex_lock(&names_mu);
	/* Reloads and scrapes only, over a few dozen names: a scan will do. */
	for (unsigned i = 0; i < n_names[kind] && slot < 0; i++)
		if (!strcmp(names[kind][i], key))
			slot = (int)i;
	if (slot < 0 && n_names[kind] < STATS_NAMES_CAP) {
		char *copy = strdup(key);
		if (copy) {
			names[kind][n_names[kind]] = copy;
			slot = (int)n_names[kind]++;
		}
	}
	pthread_mutex_unlock(&names_mu);
	return slot;
}

void stats_worker_fini(struct stats_worker *s)
{
	if (!s)
		return;
	free(s->pool_responses);
	free(s->route_responses);
	s->pool_responses = NULL;
	s->route_responses = NULL;
}

void stats_hist_observe(struct stats_hist *h, uint64_t ns)
{
	/* Binary search over 17 bounds: 5 compares. */
	unsigned lo = 0, hi = STATS_HIST_BUCKETS;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (ns <= stats_hist_bounds_ns[mid])
			hi = mid;
		else
			lo = mid + 1;
	}
	if (lo < STATS_HIST_BUCKETS)
		STAT_INC(h->bucket[lo]);
	STAT_INC(h->count);
	STAT_ADD(h->sum_ns, ns);
}

static void add_u64s(uint64_t *into, const uint64_t *from, size_t n)
{
	for (size_t i = 0; i < n; i++)
		into[i] += __atomic_load_n(&from[i], __ATOMIC_RELAXED);
}

void stats_worker_merge(struct stats_worker *into, const struct stats_worker *from)
{
	/* Every field before n_pools is a run of uint64_t (histograms too). */
	add_u64s((uint64_t *)into, (const uint64_t *)from,
		 offsetof(struct stats_worker, n_pools) / sizeof(uint64_t));
	unsigned n = into->n_pools < from->n_pools ? into->n_pools : from->n_pools;
	for (unsigned i = 0; i < n; i++)
		add_u64s(into->pool_responses[i], from->pool_responses[i], 6);
	n = into->n_routes < from->n_routes ? into->n_routes : from->n_routes;
	for (unsigned i = 0; into->route_responses && from->route_responses && i < n; i++)
		add_u64s(into->route_responses[i], from->route_responses[i], 6);
}

uint64_t stats_hist_quantile(const struct stats_hist *h, double q)
{
	uint64_t total = 0, b[STATS_HIST_BUCKETS];

	for (unsigned i = 0; i < STATS_HIST_BUCKETS; i++)
		total += b[i] = __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED);
	uint64_t count = __atomic_load_n(&h->count, __ATOMIC_RELAXED);
	if (count == 0)
		return 0;
	double rank = q * (double)count, seen = 0;
	for (unsigned i = 0; i < STATS_HIST_BUCKETS; i++) {
		if (seen + (double)b[i] >= rank && b[i]) {
			uint64_t lo = i ? stats_hist_bounds_ns[i - 1] : 0, hi = stats_hist_bounds_ns[i];
			double frac = (rank - seen) / (double)b[i];
			return lo + (uint64_t)(frac * (double)(hi - lo));
		}
		seen += (double)b[i];
	}
	return stats_hist_bounds_ns[STATS_HIST_BUCKETS - 1]; /* in the +Inf bucket */
}
