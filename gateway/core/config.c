/* config.c — command line + YAML file → struct config (see config.h).
 *
 * The file is loaded with libyaml's document API and walked as a tree, so
 * every node keeps its line for messages. Each top-level key is one entry of
 * `sections[]` with one parse function: a new section (cache, tls, admin…)
 * is a new function and a new row. Anything not in a table is an error that
 * names its line; nothing is silently ignored.
 *
 * Load order: defaults, then the file, then the flags, then checks that need
 * the whole picture (routes → pools, a listen address, an upstream).
 * Addresses are resolved here, once, with getaddrinfo: this runs on the main
 * thread before workers start (or on reload, never on a worker).
 */
#include "core/config.h"
#include "core/tls.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <yaml.h>

#define CFG_WORKERS_MAX 1024
#define CFG_KEEPALIVE_MAX 65535
#define CFG_WEIGHT_MAX 10000
#define CFG_DEFAULT_LISTEN "127.0.0.1:8080"
#define CFG_DEFAULT_POOL "default"
#define CFG_DEFAULT_ADMIN "127.0.0.1:9901"
/* Far above any real configuration; a file this big is a mistake. */
#define CFG_FILE_MAX (16 << 20)

/* Loading state, alive from the first default to the last check. */
struct cfg_ctx {
	const char *file; /* for messages; NULL when there is no file */
	struct config *c;
	yaml_document_t *doc;
	char *err;
	size_t errlen;
	/* Routes name pools that may come later in the file or from --upstream;
	 * names wait here until finalize() resolves them. */
	char (*route_pools)[CFG_NAME_MAX];
	unsigned upstream_line; /* line of the top-level "upstream:" key, 0 if none */
	unsigned *pool_lines;	/* per pool: line of its key, 0 from flags */
	unsigned admin_line;	/* line of admin.listen, 0 if none */
};

/* ---- messages ----------------------------------------------------------- */

static int __attribute__((format(printf, 3, 4)))
fail_at(struct cfg_ctx *x, unsigned line, const char *fmt, ...)
{
	va_list ap;
	int n = 0;

	if (x->file && line)
		n = snprintf(x->err, x->errlen, "%s:%u: ", x->file, line);
	else if (x->file)
		n = snprintf(x->err, x->errlen, "%s: ", x->file);
	if (n < 0 || (size_t)n >= x->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(x->err + n, x->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

static unsigned line_of(const yaml_node_t *n)
{
	return (unsigned)n->start_mark.line + 1;
}

#define fail_node(x, node, ...) fail_at((x), line_of(node), __VA_ARGS__)

/* Command-line errors: "--flag: reason". */
static int __attribute__((format(printf, 3, 4)))
fail_flag(struct cfg_ctx *x, const char *flag, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(x->err, x->errlen, "%s: ", flag);

	if (n < 0 || (size_t)n >= x->errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(x->err + n, x->errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- value parsers (return 0, or -1 with a reason in why) ---------------- */

static int parse_uint(const char *s, uint64_t max, uint64_t *out, char *why, size_t whylen)
{
	uint64_t v = 0;
	const char *p = s;

	if (*p == '-') {
		snprintf(why, whylen, "\"%s\" is negative", s);
		return -1;
	}
	if (*p == '+')
		p++;
	if (!isdigit((unsigned char)*p)) {
		snprintf(why, whylen, "\"%s\" is not a number", s);
		return -1;
	}
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');

		if (v > (UINT64_MAX - d) / 10)
			goto too_large;
		v = v * 10 + d;
	}
	if (*p) {
		snprintf(why, whylen, "\"%s\" is not a whole number", s);
		return -1;
	}
	if (v > max)
		goto too_large;
	*out = v;
	return 0;
too_large:
	snprintf(why, whylen, "%s is too large (max %llu)", s, (unsigned long long)max);
	return -1;
}

/* Leading digits of s into *v; returns the rest, or NULL on overflow/none. */
static const char *leading_number(const char *s, uint64_t *v)
{
	const char *p = s;

	*v = 0;
	if (*p == '+')
		p++;
	if (!isdigit((unsigned char)*p))
		return NULL;
	for (; isdigit((unsigned char)*p); p++) {
		unsigned d = (unsigned)(*p - '0');

		if (*v > (UINT64_MAX - d) / 10)
			return NULL;
		*v = *v * 10 + d;
	}
	return p;
}

/* "123", "8k", "32K", "1m", "2g": binary units. */
static int parse_size(const char *s, uint64_t max, uint64_t *out, char *why, size_t whylen)
{
	uint64_t v;
	unsigned shift;
	const char *unit;

	if (*s == '-') {
		snprintf(why, whylen, "size \"%s\" is negative", s);
		return -1;
	}
	unit = leading_number(s, &v);
	if (!unit) {
		if (isdigit((unsigned char)*s) || (*s == '+' && isdigit((unsigned char)s[1])))
			goto too_large;
		snprintf(why, whylen, "\"%s\" is not a size (like 512, 8k, 1m, 2g)", s);
		return -1;
	}
	if (!*unit)
		shift = 0;
	else if (!unit[1] && (*unit == 'k' || *unit == 'K'))
		shift = 10;
	else if (!unit[1] && (*unit == 'm' || *unit == 'M'))
		shift = 20;
	else if (!unit[1] && (*unit == 'g' || *unit == 'G'))
		shift = 30;
	else {
		snprintf(why, whylen, "size \"%s\" has an unknown unit \"%s\" (use k, m or g)", s,
			 unit);
		return -1;
	}
	if (v > max >> shift)
		goto too_large;
	*out = v << shift;
	return 0;
too_large:
	snprintf(why, whylen, "size %s is too large (max %llu bytes)", s, (unsigned long long)max);
	return -1;
}

/* "250ms", "10s", "2m", "1h", or a plain number of seconds → ms. */
static int parse_duration(const char *s, uint64_t max_ms, uint64_t *out, char *why, size_t whylen)
{
	uint64_t v, mul;
	const char *unit;

	if (*s == '-') {
		snprintf(why, whylen, "duration \"%s\" is negative", s);
		return -1;
	}
	unit = leading_number(s, &v);
	if (!unit) {
		if (isdigit((unsigned char)*s) || (*s == '+' && isdigit((unsigned char)s[1])))
			goto too_large;
		snprintf(why, whylen, "\"%s\" is not a duration (like 250ms, 10s, 2m, 1h)", s);
		return -1;
	}
	if (!*unit || !strcmp(unit, "s"))
		mul = 1000;
	else if (!strcmp(unit, "ms"))
		mul = 1;
	else if (!strcmp(unit, "m"))
		mul = 60 * 1000;
	else if (!strcmp(unit, "h"))
		mul = 3600 * 1000;
	else {
		snprintf(why, whylen,
			 "duration \"%s\" has an unknown unit \"%s\" (use ms, s, m or h)", s, unit);
		return -1;
	}
	if (v > max_ms / mul)
		goto too_large;
	*out = v * mul;
	return 0;
too_large:
	snprintf(why, whylen, "duration %s is too large (max %llu ms)", s,
		 (unsigned long long)max_ms);
	return -1;
}

static int parse_workers(const char *s, unsigned *out, char *why, size_t whylen)
{
	uint64_t v;

	if (!strcmp(s, "auto")) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		*out = n > 0 ? (unsigned)n : 1;
		return 0;
	}
	if (parse_uint(s, CFG_WORKERS_MAX, &v, why, whylen))
		return -1;
	if (v == 0) {
		snprintf(why, whylen, "must be at least 1 (or \"auto\")");
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

static int parse_log_level(const char *s, int *out, char *why, size_t whylen)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};

	for (int i = 0; i < 4; i++) {
		if (!strcasecmp(s, names[i]) || (s[0] == '0' + i && !s[1])) {
			*out = i;
			return 0;
		}
	}
	if (!strcasecmp(s, "warning")) {
		*out = 1;
		return 0;
	}
	snprintf(why, whylen, "\"%s\" is not a log level (error, warn, info, debug)", s);
	return -1;
}

/* "127.0.0.1:80", "[::1]:80", "name:80" → resolved address. A listen
 * address may also be "*:80" or ":80" (every IPv4 address) and port 0 (the
 * kernel picks one). */
static int parse_addr(const char *text, bool listen, struct cfg_addr *a, char *why, size_t whylen)
{
	char host[CFG_HOST_MAX];
	const char *colon, *port;
	struct addrinfo hints = {0}, *res = NULL;
	uint64_t portnum;
	size_t hlen;
	int rc;

	if (strlen(text) >= sizeof(a->text)) {
		snprintf(why, whylen, "address is too long");
		return -1;
	}
	if (text[0] == '[') {
		const char *close = strchr(text, ']');

		if (!close || close[1] != ':') {
			snprintf(why, whylen, "\"%s\" is not [IPv6]:PORT", text);
			return -1;
		}
		hlen = (size_t)(close - text - 1);
		if (hlen >= sizeof(host)) {
			snprintf(why, whylen, "host name is too long");
			return -1;
		}
		memcpy(host, text + 1, hlen);
		host[hlen] = 0;
		port = close + 2;
		hints.ai_family = AF_INET6;
		hints.ai_flags |= AI_NUMERICHOST;
	} else {
		colon = strrchr(text, ':');
		if (!colon) {
			snprintf(why, whylen, "\"%s\" has no port (HOST:PORT)", text);
			return -1;
		}
		if (memchr(text, ':', (size_t)(colon - text))) {
			snprintf(why, whylen,
				 "\"%s\": an IPv6 address needs brackets, like [::1]:80", text);
			return -1;
		}
		hlen = (size_t)(colon - text);
		if (hlen >= sizeof(host)) {
			snprintf(why, whylen, "host name is too long");
			return -1;
		}
		memcpy(host, text, hlen);
		host[hlen] = 0;
		port = colon + 1;
		hints.ai_family = AF_UNSPEC;
	}
	if (!host[0] || !strcmp(host, "*")) {
		if (!listen || hints.ai_family == AF_INET6) {
			snprintf(why, whylen, "\"%s\" has no host", text);
			return -1;
		}
		strcpy(host, "0.0.0.0");
	}
	if (!isdigit((unsigned char)*port) || parse_uint(port, 65535, &portnum, why, whylen) ||
	    (!listen && !portnum)) {
		snprintf(why, whylen, "\"%s\" has a bad port (1-65535)", text);
		return -1;
	}
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags |= AI_NUMERICSERV;
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc && hints.ai_family == AF_INET6) {
		snprintf(why, whylen, "\"%s\" is not an IPv6 address", host);
		return -1;
	}
	if (rc) {
		snprintf(why, whylen, "cannot resolve \"%s\": %s", host,
			 rc == EAI_SYSTEM ? strerror(errno) : gai_strerror(rc));
		return -1;
	}
	memset(a, 0, sizeof(*a));
	memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
	a->len = res->ai_addrlen;
	strcpy(a->text, text);
	freeaddrinfo(res);
	return 0;
}

/* YAML 1.1's booleans, as people write them. */
static int parse_bool(const char *s, bool *out, char *why, size_t whylen)
{
	static const char *const yes[] = {"true", "yes", "on", "y"};
	static const char *const no[] = {"false", "no", "off", "n"};

	for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		if (!strcasecmp(s, yes[i])) {
			*out = true;
			return 0;
		}
		if (!strcasecmp(s, no[i])) {
			*out = false;
			return 0;
		}
	}
	snprintf(why, whylen, "\"%s\" is not true or false", s);
	return -1;
}

/* A share from 0 to 1 ("0.25", "1", "0"). */
static int parse_fraction(const char *s, double *out, char *why, size_t whylen)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (!*s || *end || errno || isspace((unsigned char)*s) || strpbrk(s, "xX") ||
	    !(v >= 0.0 && v <= 1.0)) {
		snprintf(why, whylen, "\"%s\" is not a number from 0 to 1", s);
		return -1;
	}
	*out = v;
	return 0;
}

/* A percentage: "20%" or "20", at most max. */
static int parse_percent(const char *s, uint64_t max, uint64_t *out, char *why, size_t whylen)
{
	char num[32];
	size_t n = strlen(s);

	if (n && s[n - 1] == '%')
		n--;
	if (!n || n >= sizeof(num)) {
		snprintf(why, whylen, "\"%s\" is not a percentage (like 20%%)", s);
		return -1;
	}
	memcpy(num, s, n);
	num[n] = 0;
	if (parse_uint(num, max, out, why, whylen)) {
		snprintf(why, whylen, "\"%s\" is not a percentage from 0%% to %llu%%", s,
			 (unsigned long long)max);
		return -1;
	}
	return 0;
}

/* The admin listener: "off", a Unix socket path (starts with '/' or '.'),
 * or a TCP HOST:PORT like a listen address. */
static int parse_admin_listen(const char *s, struct cfg_admin *a, char *why, size_t whylen)
{
	if (!strcmp(s, "off")) {
		a->enabled = false;
		memset(&a->listen, 0, sizeof(a->listen));
		return 0;
	}
	a->enabled = true;
	if (s[0] == '/' || s[0] == '.') {
		struct sockaddr_un *un = (struct sockaddr_un *)&a->listen.ss;
		size_t n = strlen(s);

		if (n >= sizeof(un->sun_path)) {
			snprintf(why, whylen, "unix socket path is too long (max %zu bytes)",
				 sizeof(un->sun_path) - 1);
			return -1;
		}
		memset(&a->listen, 0, sizeof(a->listen));
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path, s, n + 1);
		a->listen.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
		memcpy(a->listen.text, s, n + 1);
		return 0;
	}
	return parse_addr(s, true, &a->listen, why, whylen);
}

/* ---- small helpers ------------------------------------------------------- */

static void *grow(void *arr, unsigned n, size_t size)
{
	return realloc(arr, (size_t)(n + 1) * size);
}

static int copy_str(char *dst, size_t cap, const char *src)
{
	size_t n = strlen(src);

	if (n >= cap)
		return -1;
	memcpy(dst, src, n + 1);
	return 0;
}

static const char *node_kind(const yaml_node_t *n)
{
	switch (n->type) {
	case YAML_SCALAR_NODE:
		return "a scalar";
	case YAML_SEQUENCE_NODE:
		return "a list";
	case YAML_MAPPING_NODE:
		return "a mapping";
	default:
		return "nothing";
	}
}

/* The scalar's text, or NULL after reporting "expected a scalar". */
static const char *scalar(struct cfg_ctx *x, yaml_node_t *n, const char *what)
{
	if (n->type != YAML_SCALAR_NODE) {
		fail_node(x, n, "%s: expected a value, found %s", what, node_kind(n));
		return NULL;
	}
	return (const char *)n->data.scalar.value;
}

static int expect_mapping(struct cfg_ctx *x, yaml_node_t *n, const char *what)
{
	if (n->type != YAML_MAPPING_NODE)
		return fail_node(x, n, "%s: expected a mapping, found %s", what, node_kind(n));
	return 0;
}

#define for_each_pair(map, p)                                       \
	for (yaml_node_pair_t *p = (map)->data.mapping.pairs.start; \
	     p < (map)->data.mapping.pairs.top; p++)
#define for_each_item(seq, it)                                        \
	for (yaml_node_item_t *it = (seq)->data.sequence.items.start; \
	     it < (seq)->data.sequence.items.top; it++)

static yaml_node_t *node(struct cfg_ctx *x, int id)
{
	return yaml_document_get_node(x->doc, id);
}

/* Every mapping's keys must be scalars and unique. Returns the key text of
 * pair p, or NULL after reporting. */
static const char *pair_key(struct cfg_ctx *x, yaml_node_t *map, yaml_node_pair_t *p,
			    const char *what)
{
	yaml_node_t *k = node(x, p->key);
	const char *key;

	if (k->type != YAML_SCALAR_NODE) {
		fail_node(x, k, "%s: keys must be plain names, found %s", what, node_kind(k));
		return NULL;
	}
	key = (const char *)k->data.scalar.value;
	for (yaml_node_pair_t *q = map->data.mapping.pairs.start; q < p; q++) {
		yaml_node_t *qk = node(x, q->key);

		if (qk->type == YAML_SCALAR_NODE &&
		    !strcmp((const char *)qk->data.scalar.value, key)) {
			fail_node(x, k, "%s%s%s: given twice (first at line %u)", what,
				  *what ? "." : "", key, line_of(qk));
			return NULL;
		}
	}
	return key;
}

/* Optimal string alignment distance (insert, delete, substitute, swap two
 * neighbours) between two keys; keys longer than 63 bytes count as far. */
static unsigned key_distance(const char *a, const char *b)
{
	unsigned d[64][64];
	size_t la = strlen(a), lb = strlen(b);

	if (la > 63 || lb > 63)
		return UINT_MAX;
	for (size_t i = 0; i <= la; i++)
		d[i][0] = (unsigned)i;
	for (size_t j = 0; j <= lb; j++)
		d[0][j] = (unsigned)j;
	for (size_t i = 1; i <= la; i++) {
		for (size_t j = 1; j <= lb; j++) {
			unsigned cost = a[i - 1] != b[j - 1], v = d[i - 1][j - 1] + cost;

			if (d[i - 1][j] + 1 < v)
				v = d[i - 1][j] + 1;
			if (d[i][j - 1] + 1 < v)
				v = d[i][j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    d[i - 2][j - 2] + 1 < v)
				v = d[i - 2][j - 2] + 1;
			d[i][j] = v;
		}
	}
	return d[la][lb];
}

/* For "unknown key" messages: " (did you mean \"listen\"?)" when one of the
 * n known keys (a `const char *` at the start of each stride-sized row) is
 * a typo away from key, else "". Returns buf. */
static const char *key_hint(char *buf, size_t len, const char *key, const void *rows, size_t n,
			    size_t stride)
{
	const char *best = NULL;
	unsigned best_d = strlen(key) <= 3 ? 1 : 2;

	buf[0] = 0;
	for (size_t i = 0; i < n; i++) {
		const char *cand = *(const char *const *)((const char *)rows + i * stride);
		unsigned dist = key_distance(key, cand);

		if (dist && dist <= best_d && (!best || dist < key_distance(key, best)))
			best = cand;
	}
	if (best)
		snprintf(buf, len, " (did you mean \"%s\"?)", best);
	return buf;
}

static bool key_known(const char *key, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(key, names[i]))
			return true;
	return false;
}

#define KEY_HINT(buf, key, names)                                                        \
	key_hint((buf), sizeof(buf), (key), (names), sizeof(names) / sizeof((names)[0]), \
		 sizeof((names)[0]))

/* Known keys, for the "did you mean" of an unknown one. */
static const char *const pool_keys[] = {
	"endpoints", "balance", "keepalive", "tls",   "hash_key", "health",	"outlier",
	"breaker",   "limits",	"retry",     "hedge", "queue",	  "slow_start", "resolve",
};
static const char *const admin_keys[] = {"listen", "token_file", "audit_log"};
static const char *const access_log_keys[] = {"path", "sample", "query"};
static const char *const listen_keys[] = {"address", "tls", "deferred"};
static const char *const reflex_keys[] = {"rules", "detectors", "max_scan_bytes", "hash_key"};
static const char *const ratelimit_keys[] = {
	"client",	 "api_key", "routes",	     "escalate", "redis",
	"redis_timeout", "hosts",   "redis_failure", "kernel",
};
/* for hints; a key of cache_fields or trace_fields is known even when it
 * is missing here */
static const char *const cache_keys[] = {
	"enabled",	 "tag_header",	  "redis", "memory",
	"max_object",	 "post_body_max", "grace", "coalesce_timeout",
	"redis_timeout", "redis_breaker",
};
static const char *const trace_keys[] = {
	"enabled",	  "eject",	 "penalty",	"window",	"slow_connect",
	"events_per_sec", "sensitivity", "min_samples", "min_requests", "eject_time",
	"penalty_time",	  "events_kept", "prefix_v4",	"prefix_v6",
};
static const char *const route_keys[] = {
	"host", "path_prefix", "pool", "access_log", "cache", "hedge", "retry_unsafe",
};

/* A list, or one scalar standing for a list of one; fn checks item types. */
static int each_item(struct cfg_ctx *x, yaml_node_t *n, const char *what,
		     int (*fn)(struct cfg_ctx *x, yaml_node_t *item, const char *what))
{
	if (n->type == YAML_SCALAR_NODE)
		return fn(x, n, what);
	if (n->type != YAML_SEQUENCE_NODE)
		return fail_node(x, n, "%s: expected a list, found %s", what, node_kind(n));
	for_each_item(n, it)
	{
		if (fn(x, node(x, *it), what))
			return -1;
	}
	return 0;
}

/* ---- pools ---------------------------------------------------------------- */

static int pool_find(const struct config *c, const char *name)
{
	for (unsigned i = 0; i < c->n_pools; i++)
		if (!strcmp(c->pools[i].name, name))
			return (int)i;
	return -1;
}

static void pool_resilience_defaults(struct cfg_pool *p)
{
	p->health = (struct cfg_health){.path = "/", .method = "GET", .expect_lo = 200,
					.expect_hi = 399, .interval = 5000, .timeout = 2000,
					.rise = 2, .fall = 3};
	p->outlier = (struct cfg_outlier){.consecutive_failures = 5, .ejection_time = 10000,
					  .max_ejection_time = 300000, .max_ejected = 50};
	p->breaker = (struct cfg_breaker){.window = 20, .min_requests = 10, .error_rate = 50,
					  .open_time = 5000, .probes = 1};
	p->limits = (struct cfg_pool_limits){.connections = 0, .retries = 16};
	p->retry = (struct cfg_retry){.attempts = 1, .statuses = {502, 503, 504}, .n_statuses = 3,
				      .budget = 20, .min_retries = 3, .backoff = 25,
				      .max_backoff = 250, .idempotency_header = "Idempotency-Key"};
	p->hedge = (struct cfg_hedge){.p95 = true, .delay = 10};
	p->queue = (struct cfg_queue){.size = 0, .timeout = 1000};
	p->resolve = 30000;
}

static struct cfg_pool *pool_add(struct cfg_ctx *x, const char *name, unsigned line)
{
	struct config *c = x->c;
	struct cfg_pool *pools, *p;
	unsigned *lines;

	pools = grow(c->pools, c->n_pools, sizeof(*pools));
	if (!pools)
		return NULL;
	c->pools = pools;
	lines = grow(x->pool_lines, c->n_pools, sizeof(*lines));
	if (!lines)
		return NULL;
	x->pool_lines = lines;
	p = &c->pools[c->n_pools];
	memset(p, 0, sizeof(*p));
	strcpy(p->name, name); /* callers checked the length */
	p->balance = CFG_BALANCE_P2C;
	p->keepalive = 64;
	pool_resilience_defaults(p);
	x->pool_lines[c->n_pools] = line;
	c->n_pools++;
	return p;
}

/* -EEXIST for an address already in the pool as written: /pool and the
 * per-endpoint metrics name an endpoint by that text, and two series with
 * the same labels make Prometheus refuse the whole scrape. */
static int endpoint_add(struct cfg_pool *p, const struct cfg_addr *a, unsigned weight)
{
	struct cfg_endpoint *e;

	for (unsigned i = 0; i < p->n_endpoints; i++)
		if (!strcmp(p->endpoints[i].addr.text, a->text))
			return -EEXIST;
	e = grow(p->endpoints, p->n_endpoints, sizeof(*e));
	if (!e)
		return -ENOMEM;
	p->endpoints = e;
	e[p->n_endpoints].addr = *a;
	e[p->n_endpoints].weight = weight;
	p->n_endpoints++;
	return 0;
}

static int valid_name(const char *s)
{
	if (!*s || strlen(s) >= CFG_NAME_MAX)
		return 0;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("_-.", *s))
			return 0;
	return 1;
}

/* The pool being filled by endpoint parsers (one at a time). */
static struct cfg_pool *cur_pool_of(struct cfg_ctx *x)
{
	return &x->c->pools[x->c->n_pools - 1];
}

static int add_endpoint_text(struct cfg_ctx *x, yaml_node_t *n, const char *text, unsigned weight,
			     const char *what)
{
	struct cfg_addr a;
	char why[512];

	int rc;

	if (parse_addr(text, false, &a, why, sizeof(why)))
		return fail_node(x, n, "%s: %s", what, why);
	rc = endpoint_add(cur_pool_of(x), &a, weight);
	if (rc == -EEXIST)
		return fail_node(x, n,
				 "%s: \"%s\" is listed twice (a weight gives it more traffic)",
				 what, text);
	if (rc)
		return fail_node(x, n, "out of memory");
	return 0;
}

/* "HOST:PORT" or {address: "HOST:PORT", weight: N} */
static int parse_endpoint(struct cfg_ctx *x, yaml_node_t *n, const char *what)
{
	yaml_node_t *addr = NULL;
	uint64_t weight = 1;
	char why[256];
	const char *s;

	if (n->type == YAML_SCALAR_NODE)
		return add_endpoint_text(x, n, (const char *)n->data.scalar.value, 1, what);
	if (n->type != YAML_MAPPING_NODE)
		return fail_node(x, n,
				 "%s: an endpoint is \"HOST:PORT\" or {address, weight}, found %s",
				 what, node_kind(n));
	for_each_pair(n, p)
	{
		const char *key = pair_key(x, n, p, what);
		yaml_node_t *v = node(x, p->value);

		if (!key)
			return -1;
		if (!strcmp(key, "address")) {
			if (!scalar(x, v, "address"))
				return -1;
			addr = v;
		} else if (!strcmp(key, "weight")) {
			if (!(s = scalar(x, v, "weight")))
				return -1;
			if (parse_uint(s, CFG_WEIGHT_MAX, &weight, why, sizeof(why)))
				return fail_node(x, v, "%s.weight: %s", what, why);
			if (!weight)
				return fail_node(x, v, "%s.weight: must be at least 1", what);
		} else {
			return fail_node(x, node(x, p->key), "%s: unknown key \"%s\"", what, key);
		}
	}
	if (!addr)
		return fail_node(x, n, "%s: endpoint has no address", what);
	return add_endpoint_text(x, addr, (const char *)addr->data.scalar.value, (unsigned)weight,
				 what);
}

/* ---- sections -------------------------------------------------------------- */

static int sec_workers(struct cfg_ctx *x, yaml_node_t *v)
{
	const char *s = scalar(x, v, "workers");
	char why[256];

	if (!s)
		return -1;
	if (parse_workers(s, &x->c->workers, why, sizeof(why)))
		return fail_node(x, v, "workers: %s", why);
	return 0;
}

/* ---- tls ------------------------------------------------------------------ */

static int tls_path(struct cfg_ctx *x, yaml_node_t *v, const char *what, char *dst)
{
	const char *s = scalar(x, v, what);

	if (!s)
		return -1;
	if (!*s)
		return fail_node(x, v, "%s: empty path", what);
	if (copy_str(dst, CFG_PATH_MAX, s))
		return fail_node(x, v, "%s: path is too long", what);
	return 0;
}

/* {cert: PEM, key: PEM, ocsp: DER} */
static int parse_tls_cert(struct cfg_ctx *x, yaml_node_t *n, const char *what,
			  struct cfg_tls_cert *cc)
{
	if (expect_mapping(x, n, what))
		return -1;
	for_each_pair(n, p)
	{
		const char *key = pair_key(x, n, p, what);
		yaml_node_t *v = node(x, p->value);
		char sub[128];
		char *dst;

		if (!key)
			return -1;
		snprintf(sub, sizeof(sub), "%s.%s", what, key);
		if (!strcmp(key, "cert"))
			dst = cc->cert;
		else if (!strcmp(key, "key"))
			dst = cc->key;
		else if (!strcmp(key, "ocsp"))
			dst = cc->ocsp;
		else
			return fail_node(x, node(x, p->key), "unknown key \"%s\"", sub);
		if (tls_path(x, v, sub, dst))
			return -1;
	}
	if (!cc->cert[0] || !cc->key[0])
		return fail_node(x, n, "%s: needs both cert and key", what);
	return 0;
}

static int tls_cert_add(struct cfg_listen_tls *t)
{
	struct cfg_tls_cert *arr = grow(t->certs, t->n_certs, sizeof(*arr));

	if (!arr)
		return -1;
	t->certs = arr;
	memset(&arr[t->n_certs++], 0, sizeof(*arr));
	return 0;
}

/* tickets: {rotate: DURATION, key_file: PATH} */
static int parse_tls_tickets(struct cfg_ctx *x, yaml_node_t *n, struct cfg_listen_tls *t)
{
	if (expect_mapping(x, n, "listen.tls.tickets"))
		return -1;
	for_each_pair(n, p)
	{
		const char *key = pair_key(x, n, p, "listen.tls.tickets"), *s;
		yaml_node_t *v = node(x, p->value);
		char why[256];
		uint64_t ms;

		if (!key)
			return -1;
		if (!strcmp(key, "key_file")) {
			if (tls_path(x, v, "listen.tls.tickets.key_file", t->ticket_key_file))
				return -1;
		} else if (!strcmp(key, "rotate")) {
			if (!(s = scalar(x, v, "listen.tls.tickets.rotate")))
				return -1;
			if (parse_duration(s, UINT32_MAX, &ms, why, sizeof(why)))
				return fail_node(x, v, "listen.tls.tickets.rotate: %s", why);
			if (ms < 60000)
				return fail_node(x, v, "listen.tls.tickets.rotate: must be at least 1m");
			t->ticket_rotate = (uint32_t)ms;
		} else {
			return fail_node(x, node(x, p->key), "unknown key \"listen.tls.tickets.%s\"",
					 key);
		}
	}
	return 0;
}

/* tls: {cert, key, ocsp, certs: [{cert, key, ocsp}], client_ca,
 *       client_subject_header, session_cache, tickets: {rotate, key_file}} */
static int parse_listen_tls(struct cfg_ctx *x, yaml_node_t *n, struct cfg_listen_tls *t)
{
	const char *what = "listen.tls";
	yaml_node_t *certs = NULL;

	if (expect_mapping(x, n, what))
		return -1;
	*t = (struct cfg_listen_tls){ .enabled = true, .line = line_of(n),
				      .ticket_rotate = 12 * 3600 * 1000, .session_cache = 20480 };
	strcpy(t->client_subject_header, "X-Client-Subject");
	if (tls_cert_add(t))
		return fail_node(x, n, "out of memory");
	for_each_pair(n, p)
	{
		const char *key = pair_key(x, n, p, what), *s;
		yaml_node_t *v = node(x, p->value);
		char why[256];
		uint64_t num;

		if (!key)
			return -1;
		if (!strcmp(key, "cert")) {
			if (tls_path(x, v, "listen.tls.cert", t->certs[0].cert))
				return -1;
		} else if (!strcmp(key, "key")) {
			if (tls_path(x, v, "listen.tls.key", t->certs[0].key))
				return -1;
		} else if (!strcmp(key, "ocsp")) {
			if (tls_path(x, v, "listen.tls.ocsp", t->certs[0].ocsp))
				return -1;
		} else if (!strcmp(key, "client_ca")) {
			if (tls_path(x, v, "listen.tls.client_ca", t->client_ca))
				return -1;
		} else if (!strcmp(key, "client_subject_header")) {
			if (!(s = scalar(x, v, "listen.tls.client_subject_header")))
				return -1;
			if (!valid_name(s) || strchr(s, '.'))
				return fail_node(x, v,
						 "listen.tls.client_subject_header: \"%s\" is not a "
						 "header name",
						 s);
			strcpy(t->client_subject_header, s);
		} else if (!strcmp(key, "session_cache")) {
			if (!(s = scalar(x, v, "listen.tls.session_cache")))
				return -1;
			if (parse_uint(s, 1 << 24, &num, why, sizeof(why)))
				return fail_node(x, v, "listen.tls.session_cache: %s", why);
			t->session_cache = (uint32_t)num;
		} else if (!strcmp(key, "tickets")) {
			if (parse_tls_tickets(x, v, t))
				return -1;
		} else if (!strcmp(key, "certs")) {
			certs = v;
		} else {
			return fail_node(x, node(x, p->key), "unknown key \"%s.%s\"", what, key);
		}
	}
	if (!t->certs[0].cert[0] || !t->certs[0].key[0])
		return fail_node(x, n, "%s: needs cert and key (the default certificate)", what);
	if (certs) {
		if (certs->type != YAML_SEQUENCE_NODE)
			return fail_node(x, certs, "listen.tls.certs: expected a list, found %s",
					 node_kind(certs));
		for_each_item(certs, it)
		{
			if (tls_cert_add(t))
				return fail_node(x, certs, "out of memory");
			if (parse_tls_cert(x, node(x, *it), "listen.tls.certs[]",
					   &t->certs[t->n_certs - 1]))
				return -1;
		}
	}
	return 0;
}

static void listen_tls_free(struct cfg_listen_tls *t)
{
	tls_ctx_unref(t->ctx);
	free(t->certs);
	memset(t, 0, sizeof(*t));
}

/* tls: true | {ca: PEM, sni: NAME, verify: BOOL} */
static int parse_pool_tls(struct cfg_ctx *x, struct cfg_pool *pool, yaml_node_t *n,
			  const char *what)
{
	struct cfg_pool_tls *t = &pool->tls;
	char why[256];
	const char *s;

	*t = (struct cfg_pool_tls){ .enabled = true, .verify = true };
	if (n->type == YAML_SCALAR_NODE) {
		if (parse_bool((const char *)n->data.scalar.value, &t->enabled, why, sizeof(why)))
			return fail_node(x, n, "%s: %s", what, why);
		return 0;
	}
	if (expect_mapping(x, n, what))
		return -1;
	for_each_pair(n, p)
	{
		const char *key = pair_key(x, n, p, what);
		yaml_node_t *v = node(x, p->value);
		char sub[CFG_NAME_MAX + 64];

		if (!key)
			return -1;
		snprintf(sub, sizeof(sub), "%s.%s", what, key);
		if (!strcmp(key, "ca")) {
			if (tls_path(x, v, sub, t->ca))
				return -1;
		} else if (!strcmp(key, "sni")) {
			if (!(s = scalar(x, v, sub)))
				return -1;
			if (!*s || copy_str(t->sni, sizeof(t->sni), s))
				return fail_node(x, v, "%s: empty or too long", sub);
		} else if (!strcmp(key, "verify")) {
			if (!(s = scalar(x, v, sub)))
				return -1;
			if (parse_bool(s, &t->verify, why, sizeof(why)))
				return fail_node(x, v, "%s: %s", sub, why);
		} else {
			return fail_node(x, node(x, p->key), "unknown key \"%s\"", sub);
		}
	}
	return 0;
}

/* The contexts: built last, once the whole snapshot is valid. */
static int build_tls(struct cfg_ctx *x)
{
	struct config *c = x->c;
	char why[600];

	for (unsigned i = 0; i < c->n_listens; i++) {
		struct cfg_listen_tls *t = &c->listen_tls[i];
		if (!t->enabled)
			continue;
		if (!(t->ctx = tls_server_ctx_new(t, why, sizeof(why))))
			return fail_at(x, t->line, "listen %s: %s", c->listens[i].text, why);
	}
	for (unsigned i = 0; i < c->n_pools; i++) {
		struct cfg_pool_tls *t = &c->pools[i].tls;
		if (!t->enabled)
			continue;
		if (!(t->ctx = tls_client_ctx_new(t, why, sizeof(why))))
			return fail_at(x, x->pool_lines ? x->pool_lines[i] : 0, "pools.%s.tls: %s",
				       c->pools[i].name, why);
	}
	return 0;
}

/* "HOST:PORT" or {address: "HOST:PORT", tls: {...}} */
static int add_listen(struct cfg_ctx *x, yaml_node_t *n, const char *what)
{
	struct config *c = x->c;
	struct cfg_addr a, *arr;
	struct cfg_listen_tls tls = { 0 }, *tarr;
	yaml_node_t *an = n;
	const char *s;
	char why[512];
	bool deferred = false, *darr;

	if (n->type == YAML_MAPPING_NODE) {
		an = NULL;
		for_each_pair(n, p)
		{
			const char *key = pair_key(x, n, p, what);

			if (!key)
				goto fail;
			if (!strcmp(key, "address")) {
				an = node(x, p->value);
			} else if (!strcmp(key, "tls")) {
				if (parse_listen_tls(x, node(x, p->value), &tls))
					goto fail;
			} else if (!strcmp(key, "deferred")) {
				yaml_node_t *v = node(x, p->value);
				char sub[96];
				const char *d;

				snprintf(sub, sizeof(sub), "%s.deferred", what);
				if (!(d = scalar(x, v, sub)))
					goto fail;
				if (parse_bool(d, &deferred, why, sizeof(why))) {
					fail_node(x, v, "%s: %s", sub, why);
					goto fail;
				}
			} else {
				char hint[96];

				fail_node(x, node(x, p->key), "unknown key \"%s.%s\"%s", what, key,
					  KEY_HINT(hint, key, listen_keys));
				goto fail;
			}
		}
		if (!an) {
			fail_node(x, n, "%s: a listen entry needs an address", what);
			goto fail;
		}
	}
	if (!(s = scalar(x, an, what)))
		goto fail;
	if (parse_addr(s, true, &a, why, sizeof(why))) {
		fail_node(x, an, "%s: %s", what, why);
		goto fail;
	}
	for (unsigned i = 0; i < c->n_listens; i++)
		if (c->listens[i].len == a.len && !memcmp(&c->listens[i].ss, &a.ss, a.len)) {
			fail_node(x, an, "%s: \"%s\" is listed twice", what, s);
			goto fail;
		}
	arr = grow(c->listens, c->n_listens, sizeof(*arr));
	if (arr)
		c->listens = arr;
	tarr = arr ? grow(c->listen_tls, c->n_listens, sizeof(*tarr)) : NULL;
	if (!tarr) {
		fail_node(x, n, "out of memory");
		goto fail;
	}
	c->listen_tls = tarr;
	darr = grow(c->listen_deferred, c->n_listens, sizeof(*darr));
	if (!darr) {
		fail_node(x, n, "out of memory");
		goto fail;
	}
	c->listen_deferred = darr;
	darr[c->n_listens] = deferred;
	tarr[c->n_listens] = tls;
	arr[c->n_listens++] = a;
	return 0;
fail:
	listen_tls_free(&tls);
	return -1;
}

static int sec_listen(struct cfg_ctx *x, yaml_node_t *v)
{
	if (v->type == YAML_SEQUENCE_NODE &&
	    v->data.sequence.items.start == v->data.sequence.items.top)
		return fail_node(x, v, "listen: no listen address (leave the key out for %s)",
				 CFG_DEFAULT_LISTEN);
	return each_item(x, v, "listen", add_listen);
}

static int sec_upstream(struct cfg_ctx *x, yaml_node_t *v)
{
	unsigned line = line_of(v);
	int i = pool_find(x->c, CFG_DEFAULT_POOL);

	if (i >= 0)
		return fail_node(x, v, "upstream: conflicts with pools.default (line %u); use one",
				 x->pool_lines[i]);
	if (v->type == YAML_SEQUENCE_NODE &&
	    v->data.sequence.items.start == v->data.sequence.items.top)
		return fail_node(x, v, "upstream: empty list");
	if (x->c->n_pools >= CFG_POOLS_MAX)
		return fail_node(x, v, "upstream: more than %d pools with pool default",
				 CFG_POOLS_MAX);
	if (!pool_add(x, CFG_DEFAULT_POOL, line))
		return fail_node(x, v, "out of memory");
	x->upstream_line = line;
	return each_item(x, v, "upstream", parse_endpoint);
}

/* libyaml does not resolve tags: a plain ~ or null is just text to it. */
static bool is_null(const yaml_node_t *n)
{
	const char *s = (const char *)n->data.scalar.value;

	return n->type == YAML_SCALAR_NODE && n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
	       (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") ||
		!strcmp(s, "NULL"));
}

/* access_log: PATH | "-" | null, or {path, sample, query}. */
static int sec_access_log(struct cfg_ctx *x, yaml_node_t *v)
{
	struct config *c = x->c;
	const char *s;
	char why[256];

	if (v->type != YAML_MAPPING_NODE) {
		if (!(s = scalar(x, v, "access_log")))
			return -1;
		if (is_null(v))
			s = ""; /* off */
		if (copy_str(c->access_log, sizeof(c->access_log), s))
			return fail_node(x, v, "access_log: path is too long");
		return 0;
	}
	for_each_pair(v, p)
	{
		const char *key = pair_key(x, v, p, "access_log");
		yaml_node_t *pv = node(x, p->value);
		char what[64], hint[96];

		if (!key)
			return -1;
		snprintf(what, sizeof(what), "access_log.%s", key);
		if (strcmp(key, "path") && strcmp(key, "sample") && strcmp(key, "query"))
			return fail_node(x, node(x, p->key), "unknown key \"%s\"%s", what,
					 KEY_HINT(hint, key, access_log_keys));
		if (!(s = scalar(x, pv, what)))
			return -1;
		if (!strcmp(key, "path")) {
			if (is_null(pv))
				s = "";
			if (copy_str(c->access_log, sizeof(c->access_log), s))
				return fail_node(x, pv, "%s: path is too long", what);
		} else if (!strcmp(key, "sample")) {
			if (parse_fraction(s, &c->access_log_sample, why, sizeof(why)))
				return fail_node(x, pv, "%s: %s", what, why);
		} else if (parse_bool(s, &c->access_log_query, why, sizeof(why))) {
			return fail_node(x, pv, "%s: %s", what, why);
		}
	}
	return 0;
}

/* admin: {listen: ADDR | PATH | off, token_file: PATH, audit_log: PATH} */
static int sec_admin(struct cfg_ctx *x, yaml_node_t *v)
{
	struct cfg_admin *a = &x->c->admin;

	if (expect_mapping(x, v, "admin"))
		return -1;
	for_each_pair(v, p)
	{
		const char *key = pair_key(x, v, p, "admin"), *s;
		yaml_node_t *pv = node(x, p->value);
		char what[64], why[512], hint[96];

		if (!key)
			return -1;
		snprintf(what, sizeof(what), "admin.%s", key);
		if (strcmp(key, "listen") && strcmp(key, "token_file") && strcmp(key, "audit_log"))
			return fail_node(x, node(x, p->key), "unknown key \"%s\"%s", what,
					 KEY_HINT(hint, key, admin_keys));
		if (!(s = scalar(x, pv, what)))
			return -1;
		if (!strcmp(key, "listen")) {
			if (parse_admin_listen(s, a, why, sizeof(why)))
				return fail_node(x, pv, "%s: %s", what, why);
			x->admin_line = line_of(pv);
			continue;
		}
		if (is_null(pv))
			s = "";
		if (copy_str(!strcmp(key, "token_file") ? a->token_file : a->audit_log,
			     sizeof(a->token_file), s))
			return fail_node(x, pv, "%s: path is too long", what);
	}
	return 0;
}

static int sec_log_level(struct cfg_ctx *x, yaml_node_t *v)
{
	const char *s = scalar(x, v, "log_level");
	char why[256];

	if (!s)
		return -1;
	if (parse_log_level(s, &x->c->log_level, why, sizeof(why)))
		return fail_node(x, v, "log_level: %s", why);
	return 0;
}

/* user: NAME — who reflexd runs as once its listeners are bound and its BPF
 * programs attached (core/privs.h). Only the spelling is checked here: the
 * name is looked up at start, so a file can be validated on another host. */
static int sec_user(struct cfg_ctx *x, yaml_node_t *v)
{
	const char *s = scalar(x, v, "user");

	if (!s)
		return -1;
	if (is_null(v))
		s = "";
	if (copy_str(x->c->user, sizeof(x->c->user), s))
		return fail_node(x, v, "user: name is too long");
	for (const char *p = s; *p; p++)
		if (!(*p >= 'a' && *p <= 'z') && !(*p >= 'A' && *p <= 'Z') && *p != '_' &&
		    (p == s || (!(*p >= '0' && *p <= '9') && *p != '-' && *p != '.')))
			return fail_node(x, v, "user: \"%s\" is not a user name", s);
	return 0;
}

/* Plain numeric fields of a struct, described by a table. */
enum field_kind { FIELD_SIZE32, FIELD_SIZE64, FIELD_COUNT32, FIELD_DURATION, FIELD_PERCENT };

struct field {
	const char *key;
	enum field_kind kind;
	size_t off;
	uint64_t min, max; /* allowed range */
};

static int parse_fields(struct cfg_ctx *x, yaml_node_t *map, const char *section,
			const struct field *fields, size_t n_fields, void *base)
{
	if (expect_mapping(x, map, section))
		return -1;
	for_each_pair(map, p)
	{
		const char *key = pair_key(x, map, p, section), *s;
		yaml_node_t *v = node(x, p->value);
		const struct field *f = NULL;
		char hint[96];
		char why[256], what[128];
		uint64_t val;
		int rc;

		if (!key)
			return -1;
		for (size_t i = 0; i < n_fields; i++)
			if (!strcmp(fields[i].key, key))
				f = &fields[i];
		snprintf(what, sizeof(what), "%s.%s", section, key);
		if (!f)
			return fail_node(x, node(x, p->key), "unknown key \"%s\"%s", what,
					 key_hint(hint, sizeof(hint), key, fields, n_fields,
						  sizeof(*fields)));
		if (!(s = scalar(x, v, what)))
			return -1;
		switch (f->kind) {
		case FIELD_SIZE32:
			rc = parse_size(s, f->max, &val, why, sizeof(why));
			break;
		case FIELD_SIZE64:
			rc = parse_size(s, f->max, &val, why, sizeof(why));
			break;
		case FIELD_COUNT32:
			rc = parse_uint(s, f->max, &val, why, sizeof(why));
			break;
		case FIELD_DURATION:
			rc = parse_duration(s, f->max, &val, why, sizeof(why));
			break;
		case FIELD_PERCENT: /* "20%" or "20" */
			rc = parse_percent(s, f->max, &val, why, sizeof(why));
			break;
		default:
			rc = -1;
			snprintf(why, sizeof(why), "internal: bad field kind");
		}
		if (rc)
			return fail_node(x, v, "%s: %s", what, why);
		if (val < f->min)
			return fail_node(x, v, "%s: must be at least %llu%s", what,
					 (unsigned long long)f->min,
					 f->kind == FIELD_DURATION ? " ms" : "");
		if (f->kind == FIELD_SIZE64)
			*(uint64_t *)((char *)base + f->off) = val;
		else
			*(uint32_t *)((char *)base + f->off) = (uint32_t)val;
	}
	return 0;
}

/* Bounds: the minimums keep a gateway usable; the maximums keep what a
 * worker allocates from them (header arrays, head buffers) sane. */
static bool field_known(const char *key, const struct field *f, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!strcmp(key, f[i].key))
			return true;
	return false;
}

static const struct field limit_fields[] = {
	{"request_line", FIELD_SIZE32, offsetof(struct cfg_limits, request_line), 16, 16 << 20},
	{"header_bytes", FIELD_SIZE32, offsetof(struct cfg_limits, header_bytes), 64, 64 << 20},
	{"header_count", FIELD_COUNT32, offsetof(struct cfg_limits, header_count), 1, 32767},
	{"body", FIELD_SIZE64, offsetof(struct cfg_limits, body), 0, UINT64_MAX},
};

static const struct field timeout_fields[] = {
	{"header", FIELD_DURATION, offsetof(struct cfg_timeouts, header), 1, UINT32_MAX},
	{"body", FIELD_DURATION, offsetof(struct cfg_timeouts, body), 1, UINT32_MAX},
	{"keepalive", FIELD_DURATION, offsetof(struct cfg_timeouts, keepalive), 1, UINT32_MAX},
	{"upstream_connect", FIELD_DURATION, offsetof(struct cfg_timeouts, upstream_connect), 1,
	 UINT32_MAX},
	{"upstream_response", FIELD_DURATION, offsetof(struct cfg_timeouts, upstream_response), 1,
	 UINT32_MAX},
	{"upstream_idle", FIELD_DURATION, offsetof(struct cfg_timeouts, upstream_idle), 1,
	 UINT32_MAX},
	{"send", FIELD_DURATION, offsetof(struct cfg_timeouts, send), 1, UINT32_MAX},
	{"drain", FIELD_DURATION, offsetof(struct cfg_timeouts, drain), 0, UINT32_MAX},
	{"tls_handshake", FIELD_DURATION, offsetof(struct cfg_timeouts, tls_handshake), 1,
	 UINT32_MAX},
};

static int sec_limits(struct cfg_ctx *x, yaml_node_t *v)
{
	const struct cfg_limits *l = &x->c->limits;

	if (parse_fields(x, v, "limits", limit_fields,
			 sizeof(limit_fields) / sizeof(limit_fields[0]), &x->c->limits))
		return -1;
	/* the request line is part of the head */
	if (l->request_line > l->header_bytes)
		return fail_node(x, v, "limits: request_line (%u) is larger than header_bytes (%u)",
				 l->request_line, l->header_bytes);
	return 0;
}

static int sec_timeouts(struct cfg_ctx *x, yaml_node_t *v)
{
	return parse_fields(x, v, "timeouts", timeout_fields,
			    sizeof(timeout_fields) / sizeof(timeout_fields[0]), &x->c->timeouts);
}

/* ---- pool resilience (docs/pool.md) ---------------------------------------- */

#define PF(member) offsetof(struct cfg_pool, member)

static const struct field health_fields[] = {
	{"interval", FIELD_DURATION, PF(health.interval), 10, 24 * 3600 * 1000},
	{"timeout", FIELD_DURATION, PF(health.timeout), 1, 3600 * 1000},
	{"rise", FIELD_COUNT32, PF(health.rise), 1, 1000},
	{"fall", FIELD_COUNT32, PF(health.fall), 1, 1000},
};
static const struct field outlier_fields[] = {
	{"consecutive_failures", FIELD_COUNT32, PF(outlier.consecutive_failures), 0, 1000000},
	{"ejection_time", FIELD_DURATION, PF(outlier.ejection_time), 1, 24 * 3600 * 1000},
	{"max_ejection_time", FIELD_DURATION, PF(outlier.max_ejection_time), 1, 24 * 3600 * 1000},
	{"max_ejected", FIELD_PERCENT, PF(outlier.max_ejected), 0, 100},
	{"latency_factor", FIELD_COUNT32, PF(outlier.latency_factor), 0, 1000},
};
static const struct field breaker_fields[] = {
	{"window", FIELD_COUNT32, PF(breaker.window), 1, 1000000},
	{"min_requests", FIELD_COUNT32, PF(breaker.min_requests), 1, 1000000},
	{"error_rate", FIELD_PERCENT, PF(breaker.error_rate), 1, 100},
	{"open_time", FIELD_DURATION, PF(breaker.open_time), 1, 24 * 3600 * 1000},
	{"probes", FIELD_COUNT32, PF(breaker.probes), 1, 1000},
};
static const struct field pool_limit_fields[] = {
	{"connections", FIELD_COUNT32, PF(limits.connections), 0, 10000000},
	{"retries", FIELD_COUNT32, PF(limits.retries), 0, 10000000},
};
static const struct field retry_fields[] = {
	{"attempts", FIELD_COUNT32, PF(retry.attempts), 1, 10},
	{"budget", FIELD_PERCENT, PF(retry.budget), 0, 1000},
	{"min_retries", FIELD_COUNT32, PF(retry.min_retries), 0, 1000000},
	{"backoff", FIELD_DURATION, PF(retry.backoff), 0, 60000},
	{"max_backoff", FIELD_DURATION, PF(retry.max_backoff), 0, 600000},
	{"per_try_timeout", FIELD_DURATION, PF(retry.per_try_timeout), 0, UINT32_MAX},
	{"timeout", FIELD_DURATION, PF(retry.timeout), 0, UINT32_MAX},
};
static const struct field queue_fields[] = {
	{"size", FIELD_COUNT32, PF(queue.size), 0, 1000000},
	{"timeout", FIELD_DURATION, PF(queue.timeout), 1, 3600 * 1000},
};
#define N_FIELDS(t) (sizeof(t) / sizeof((t)[0]))

/* Keys of a pool subsection that are not plain numbers: returns 0 when
 * handled, 1 when the key is not special, -1 on error. */
typedef int pool_special_fn(struct cfg_ctx *x, struct cfg_pool *p, const char *key,
			    yaml_node_t *v, const char *what);

/* A subsection mapping: special keys first, then the numeric table. */
static int parse_pool_sub(struct cfg_ctx *x, struct cfg_pool *pool, yaml_node_t *map,
			  const char *section, const struct field *fields, size_t n_fields,
			  pool_special_fn *special)
{
	if (expect_mapping(x, map, section))
		return -1;
	for_each_pair(map, p)
	{
		const char *key = pair_key(x, map, p, section), *s;
		yaml_node_t *v = node(x, p->value);
		const struct field *f = NULL;
		char hint[96];
		char why[256], what[160];
		uint64_t val;
		int rc;

		if (!key)
			return -1;
		snprintf(what, sizeof(what), "%s.%s", section, key);
		if (special) {
			rc = special(x, pool, key, v, what);
			if (rc <= 0) {
				if (rc < 0)
					return -1;
				continue;
			}
		}
		for (size_t i = 0; i < n_fields; i++)
			if (!strcmp(fields[i].key, key))
				f = &fields[i];
		if (!f)
			return fail_node(x, node(x, p->key), "unknown key \"%s\"%s", what,
					 key_hint(hint, sizeof(hint), key, fields, n_fields,
						  sizeof(*fields)));
		if (!(s = scalar(x, v, what)))
			return -1;
		if (f->kind == FIELD_DURATION)
			rc = parse_duration(s, f->max, &val, why, sizeof(why));
		else if (f->kind == FIELD_PERCENT)
			rc = parse_percent(s, f->max, &val, why, sizeof(why));
		else
			rc = parse_uint(s, f->max, &val, why, sizeof(why));
		if (rc)
			return fail_node(x, v, "%s: %s", what, why);
		if (val < f->min)
			return fail_node(x, v, "%s: must be at least %llu%s", what,
					 (unsigned long long)f->min,
					 f->kind == FIELD_DURATION ? " ms" : "");
		*(uint32_t *)((char *)pool + f->off) = (uint32_t)val;
	}
	return 0;
}

/* "200-399" or "200" */
static int parse_status_range(const char *s, uint16_t *lo, uint16_t *hi)
{
	char *end;
	long a = strtol(s, &end, 10), b = a;

	if (end == s)
		return -1;
	if (*end == '-') {
		const char *t = end + 1;
		b = strtol(t, &end, 10);
		if (end == t)
			return -1;
	}
	if (*end || a < 100 || b > 599 || a > b)
		return -1;
	*lo = (uint16_t)a;
	*hi = (uint16_t)b;
	return 0;
}

static bool valid_token(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
			return false;
	return true;
}

static int health_special(struct cfg_ctx *x, struct cfg_pool *p, const char *key, yaml_node_t *v,
			  const char *what)
{
	const char *s;

	if (strcmp(key, "path") && strcmp(key, "method") && strcmp(key, "expect"))
		return 1;
	if (!(s = scalar(x, v, what)))
		return -1;
	if (!strcmp(key, "path")) {
		if (s[0] != '/' || strpbrk(s, " \r\n\t") || copy_str(p->health.path,
								      sizeof(p->health.path), s))
			return fail_node(x, v, "%s: a path starting with / (no spaces, < 256 bytes)",
					 what);
	} else if (!strcmp(key, "method")) {
		if (!valid_token(s) || copy_str(p->health.method, sizeof(p->health.method), s))
			return fail_node(x, v, "%s: \"%s\" is not a method", what, s);
	} else if (parse_status_range(s, &p->health.expect_lo, &p->health.expect_hi)) {
		return fail_node(x, v, "%s: \"%s\" is not a status range like 200-399", what, s);
	}
	return 0;
}

static int add_retry_status(struct cfg_ctx *x, yaml_node_t *n, const char *what)
{
	struct cfg_retry *r = &x->c->pools[x->c->n_pools - 1].retry;
	const char *s = scalar(x, n, what);
	char why[128];
	uint64_t v;

	if (!s)
		return -1;
	if (parse_uint(s, 599, &v, why, sizeof(why)) || v < 100)
		return fail_node(x, n, "%s: \"%s\" is not a status code", what, s);
	if (r->n_statuses >= CFG_RETRY_STATUSES_MAX)
		return fail_node(x, n, "%s: at most %d statuses", what, CFG_RETRY_STATUSES_MAX);
	r->statuses[r->n_statuses++] = (uint16_t)v;
	return 0;
}

static int retry_special(struct cfg_ctx *x, struct cfg_pool *p, const char *key, yaml_node_t *v,
			 const char *what)
{
	const char *s;
	char why[128];

	if (!strcmp(key, "statuses")) {
		p->retry.n_statuses = 0;
		if (v->type == YAML_SEQUENCE_NODE &&
		    v->data.sequence.items.start == v->data.sequence.items.top)
			return 0; /* [] : retry on connection failures only */
		return each_item(x, v, what, add_retry_status);
	}
	if (strcmp(key, "methods") && strcmp(key, "idempotency_header"))
		return 1;
	if (!(s = scalar(x, v, what)))
		return -1;
	if (!strcmp(key, "methods")) {
		if (!strcmp(s, "idempotent"))
			p->retry.all_methods = false;
		else if (!strcmp(s, "all"))
			p->retry.all_methods = true;
		else
			return fail_node(x, v, "%s: \"%s\" is not idempotent or all", what, s);
		return 0;
	}
	if (is_null(v))
		s = "";
	if ((*s && !valid_token(s)) ||
	    copy_str(p->retry.idempotency_header, sizeof(p->retry.idempotency_header), s))
		return fail_node(x, v, "%s: \"%s\" is not a header name", what, s);
	(void)why;
	return 0;
}

/* hedge: {delay: p95 | DURATION, min_delay: DURATION} or hedge: off */
static int hedge_special(struct cfg_ctx *x, struct cfg_pool *p, const char *key, yaml_node_t *v,
			 const char *what)
{
	const char *s;
	char why[256];
	uint64_t ms;

	if (strcmp(key, "delay") && strcmp(key, "min_delay"))
		return fail_node(x, v, "unknown key \"%s\"", what);
	if (!(s = scalar(x, v, what)))
		return -1;
	if (!strcmp(key, "delay") && !strcmp(s, "p95")) {
		p->hedge.p95 = true;
		return 0;
	}
	if (parse_duration(s, 600000, &ms, why, sizeof(why)))
		return fail_node(x, v, "%s: %s%s", what, why,
				 strcmp(key, "delay") ? "" : " (or p95)");
	if (!strcmp(key, "delay"))
		p->hedge.p95 = false;
	p->hedge.delay = (uint32_t)ms;
	return 0;
}

/* "header:NAME", "cookie:NAME" or "cache_key" */
static int parse_hash_key(struct cfg_pool *p, const char *s)
{
	const char *name = NULL;

	if (!strcmp(s, "cache_key")) {
		p->hash_key = CFG_HASH_CACHE_KEY;
		p->hash_name[0] = 0;
		return 0;
	}
	if (!strncmp(s, "header:", 7)) {
		p->hash_key = CFG_HASH_HEADER;
		name = s + 7;
	} else if (!strncmp(s, "cookie:", 7)) {
		p->hash_key = CFG_HASH_COOKIE;
		name = s + 7;
	}
	if (!name || !valid_token(name) || copy_str(p->hash_name, sizeof(p->hash_name), name))
		return -1;
	return 0;
}

/* One pool key of the resilience family: 0 handled, 1 not ours, -1 error. */

static int parse_pool_resilience(struct cfg_ctx *x, struct cfg_pool *pool, const char *key,
				 yaml_node_t *pv, const char *sub)
{
	const char *s;
	char why[256];
	uint64_t ms;

	if (!strcmp(key, "health")) {
		pool->health.enabled = true;
		return parse_pool_sub(x, pool, pv, sub, health_fields, N_FIELDS(health_fields),
				      health_special) ? -1 : 0;
	}
	if (!strcmp(key, "outlier")) {
		if (pv->type == YAML_SCALAR_NODE && (s = scalar(x, pv, sub)) && !strcmp(s, "off")) {
			pool->outlier.consecutive_failures = 0;
			return 0;
		}
		return parse_pool_sub(x, pool, pv, sub, outlier_fields, N_FIELDS(outlier_fields),
				      NULL) ? -1 : 0;
	}
	if (!strcmp(key, "breaker")) {
		pool->breaker.enabled = true;
		return parse_pool_sub(x, pool, pv, sub, breaker_fields, N_FIELDS(breaker_fields),
				      NULL) ? -1 : 0;
	}
	if (!strcmp(key, "limits"))
		return parse_pool_sub(x, pool, pv, sub, pool_limit_fields,
				      N_FIELDS(pool_limit_fields), NULL) ? -1 : 0;
	if (!strcmp(key, "retry")) {
		pool->retry.attempts = 3;
		if (parse_pool_sub(x, pool, pv, sub, retry_fields, N_FIELDS(retry_fields),
				   retry_special))
			return -1;
		if (pool->retry.max_backoff < pool->retry.backoff)
			pool->retry.max_backoff = pool->retry.backoff;
		return 0;
	}
	if (!strcmp(key, "hedge")) {
		if (pv->type == YAML_SCALAR_NODE && (s = scalar(x, pv, sub)) && !strcmp(s, "off")) {
			pool->hedge.enabled = false;
			return 0;
		}
		pool->hedge.enabled = true;
		return parse_pool_sub(x, pool, pv, sub, NULL, 0, hedge_special) ? -1 : 0;
	}
	if (!strcmp(key, "queue"))
		return parse_pool_sub(x, pool, pv, sub, queue_fields, N_FIELDS(queue_fields),
				      NULL) ? -1 : 0;
	if (!strcmp(key, "slow_start") || !strcmp(key, "resolve")) {
		if (!(s = scalar(x, pv, sub)))
			return -1;
		if (parse_duration(s, 24 * 3600 * 1000, &ms, why, sizeof(why)))
			return fail_node(x, pv, "%s: %s", sub, why);
		if (!strcmp(key, "resolve") && ms && ms < 1000)
			return fail_node(x, pv, "%s: at least 1s (or 0: off)", sub);
		*(!strcmp(key, "resolve") ? &pool->resolve : &pool->slow_start) = (uint32_t)ms;
		return 0;
	}
	if (!strcmp(key, "hash_key")) {
		if (!(s = scalar(x, pv, sub)))
			return -1;
		if (parse_hash_key(pool, s))
			return fail_node(x, pv,
					 "%s: \"%s\" is not header:NAME, cookie:NAME or cache_key",
					 sub, s);
		return 0;
	}
	return 1;
}

static int parse_pool(struct cfg_ctx *x, yaml_node_t *k, yaml_node_t *v, const char *name)
{
	struct cfg_pool *pool;
	char what[CFG_NAME_MAX + 32], why[256];
	bool has_endpoints = false;
	int i;

	snprintf(what, sizeof(what), "pools.%s", name);
	if (!valid_name(name))
		return fail_node(x, k, "%s: a pool name is 1-%d of A-Z a-z 0-9 _ - .", what,
				 CFG_NAME_MAX - 1);
	i = pool_find(x->c, name);
	if (i >= 0 && x->upstream_line && !strcmp(name, CFG_DEFAULT_POOL))
		return fail_node(x, k, "%s: conflicts with upstream (line %u); use one", what,
				 x->upstream_line);
	if (i >= 0)
		return fail_node(x, k, "%s: duplicate pool (first at line %u)", what,
				 x->pool_lines[i]);
	if (expect_mapping(x, v, what))
		return -1;
	if (x->c->n_pools >= CFG_POOLS_MAX)
		return fail_node(x, k, "%s: more than %d pools", what, CFG_POOLS_MAX);
	pool = pool_add(x, name, line_of(k));
	if (!pool)
		return fail_node(x, k, "out of memory");
	for_each_pair(v, p)
	{
		const char *key = pair_key(x, v, p, what), *s;
		yaml_node_t *pv = node(x, p->value);
		char sub[CFG_NAME_MAX + 48], hint[96];
		uint64_t n;

		if (!key)
			return -1;
		snprintf(sub, sizeof(sub), "%s.%s", what, key);
		if (!strcmp(key, "endpoints")) {
			if (pv->type == YAML_SEQUENCE_NODE &&
			    pv->data.sequence.items.start == pv->data.sequence.items.top)
				return fail_node(x, pv, "%s: pool \"%s\" has no endpoints", sub,
						 name);
			if (each_item(x, pv, sub, parse_endpoint))
				return -1;
			has_endpoints = true;
		} else if (!strcmp(key, "balance")) {
			if (!(s = scalar(x, pv, sub)))
				return -1;
			if (!strcmp(s, "p2c"))
				pool->balance = CFG_BALANCE_P2C;
			else if (!strcmp(s, "round_robin"))
				pool->balance = CFG_BALANCE_ROUND_ROBIN;
			else if (!strcmp(s, "hash"))
				pool->balance = CFG_BALANCE_HASH;
			else
				return fail_node(x, pv, "%s: \"%s\" is not p2c, round_robin or hash",
						 sub, s);
		} else if (!strcmp(key, "keepalive")) {
			if (!(s = scalar(x, pv, sub)))
				return -1;
			if (parse_uint(s, CFG_KEEPALIVE_MAX, &n, why, sizeof(why)))
				return fail_node(x, pv, "%s: %s", sub, why);
			pool->keepalive = (unsigned)n;
		} else if (!strcmp(key, "tls")) {
			if (parse_pool_tls(x, pool, pv, sub))
				return -1;
		} else {
			int rc = parse_pool_resilience(x, pool, key, pv, sub);
			if (rc < 0)
				return -1;
			if (rc > 0)
				return fail_node(x, node(x, p->key), "unknown key \"%s\"%s", sub,
						 KEY_HINT(hint, key, pool_keys));
		}
	}
	if (!has_endpoints)
		return fail_node(x, k, "%s: pool \"%s\" has no endpoints", what, name);
	if (pool->balance == CFG_BALANCE_HASH && pool->hash_key != CFG_HASH_CACHE_KEY &&
	    !pool->hash_name[0])
		return fail_node(x, k, "%s: balance: hash needs hash_key", what);
	return 0;
}

static int sec_pools(struct cfg_ctx *x, yaml_node_t *v)
{
	if (expect_mapping(x, v, "pools"))
		return -1;
	for_each_pair(v, p)
	{
		const char *name = pair_key(x, v, p, "pools");

		if (!name || parse_pool(x, node(x, p->key), node(x, p->value), name))
			return -1;
	}
	return 0;
}

static int valid_route_host(const char *h)
{
	if (h[0] == '*' && h[1] != '.')
		return 0;
	for (const char *p = h[0] == '*' ? h + 1 : h; *p; p++)
		if (!isalnum((unsigned char)*p) && *p != '-' && *p != '.' && *p != '_')
			return 0;
	return 1;
}

/* cache: false | true | {post: BOOL} (docs/cache.md) */
static int parse_route_cache(struct cfg_ctx *x, yaml_node_t *v, struct cfg_route *r,
			     const char *what)
{
	char why[128];
	const char *s;

	if (v->type == YAML_SCALAR_NODE) {
		if (!(s = scalar(x, v, "cache")))
			return -1;
		if (parse_bool(s, &r->cache, why, sizeof(why)))
			return fail_node(x, v, "%s.cache: %s", what, why);
		return 0;
	}
	if (expect_mapping(x, v, "cache"))
		return -1;
	r->cache = true;
	for_each_pair(v, p)
	{
		const char *key = pair_key(x, v, p, "cache");
		yaml_node_t *pv = node(x, p->value);

		if (!key)
			return -1;
		if (strcmp(key, "post"))
			return fail_node(x, node(x, p->key), "%s.cache: unknown key \"%s\"", what, key);
		if (!(s = scalar(x, pv, "cache.post")))
			return -1;
		if (parse_bool(s, &r->cache_post, why, sizeof(why)))
			return fail_node(x, pv, "%s.cache.post: %s", what, why);
	}
	return 0;
}

static int parse_route(struct cfg_ctx *x, yaml_node_t *n, const char *section)
{
	struct config *c = x->c;
	struct cfg_route *r, *routes;
	char(*names)[CFG_NAME_MAX];
	char what[64];
	bool has_pool = false;

	snprintf(what, sizeof(what), "%s[%u]", section, c->n_routes);
	if (expect_mapping(x, n, what))
		return -1;
	routes = grow(c->routes, c->n_routes, sizeof(*routes));
	if (!routes)
		return fail_node(x, n, "out of memory");
	c->routes = routes;
	names = grow(x->route_pools, c->n_routes, sizeof(*names));
	if (!names)
		return fail_node(x, n, "out of memory");
	x->route_pools = names;
	r = &routes[c->n_routes];
	memset(r, 0, sizeof(*r));
	r->line = line_of(n);
	r->access_log = true;
	r->cache = true;
	for_each_pair(n, p)
	{
		const char *key = pair_key(x, n, p, what), *s;
		yaml_node_t *v = node(x, p->value);

		if (!key)
			return -1;
		bool known = false;
		char hint[96];

		for (size_t i = 0; i < sizeof(route_keys) / sizeof(route_keys[0]); i++)
			known |= !strcmp(key, route_keys[i]);
		if (!known)
			return fail_node(x, node(x, p->key), "%s: unknown key \"%s\"%s", what, key,
					 KEY_HINT(hint, key, route_keys));
		if (!strcmp(key, "cache")) {
			if (parse_route_cache(x, v, r, what))
				return -1;
			continue;
		}
		if (!(s = scalar(x, v, key)))
			return -1;
		if (!strcmp(key, "access_log")) {
			char why[128];

			if (parse_bool(s, &r->access_log, why, sizeof(why)))
				return fail_node(x, v, "%s.access_log: %s", what, why);
		} else if (!strcmp(key, "hedge") || !strcmp(key, "retry_unsafe")) {
			char why[128];
			bool on;

			if (parse_bool(s, &on, why, sizeof(why)))
				return fail_node(x, v, "%s.%s: %s", what, key, why);
			if (!strcmp(key, "hedge"))
				r->hedge = on ? CFG_ROUTE_HEDGE_ON : CFG_ROUTE_HEDGE_OFF;
			else
				r->retry_unsafe = on;
		} else if (!strcmp(key, "host")) {
			if (copy_str(r->host, sizeof(r->host), s))
				return fail_node(x, v, "%s.host: too long", what);
			for (char *h = r->host; *h; h++)
				*h = (char)tolower((unsigned char)*h);
			if (!strcmp(r->host, "*"))
				r->host[0] = 0; /* any host, like "" */
			if (!valid_route_host(r->host))
				return fail_node(x, v,
						 "%s.host: \"%s\" is not a host name (no port; "
						 "\"*.\" only as a prefix)",
						 what, s);
		} else if (!strcmp(key, "path_prefix")) {
			if (*s && *s != '/')
				return fail_node(x, v, "%s.path_prefix: must start with /", what);
			if (copy_str(r->path_prefix, sizeof(r->path_prefix), s))
				return fail_node(x, v, "%s.path_prefix: too long", what);
		} else {
			if (!valid_name(s))
				return fail_node(x, v, "%s.pool: \"%s\" is not a pool name", what,
						 s);
			strcpy(names[c->n_routes], s);
			has_pool = true;
		}
	}
	if (!has_pool)
		return fail_node(x, n, "%s: a route needs a pool", what);
	c->n_routes++;
	return 0;
}

static int sec_routes(struct cfg_ctx *x, yaml_node_t *v)
{
	if (v->type != YAML_SEQUENCE_NODE)
		return fail_node(x, v, "routes: expected a list, found %s", node_kind(v));
	for_each_item(v, it)
	{
		if (x->c->n_routes >= CFG_ROUTES_MAX)
			return fail_node(x, node(x, *it), "routes: more than %d routes",
					 CFG_ROUTES_MAX);
		if (parse_route(x, node(x, *it), "routes"))
			return -1;
	}
	return 0;
}

/* ---- cache (docs/cache.md) ------------------------------------------------- */

static const struct field cache_fields[] = {
	{"memory", FIELD_SIZE64, offsetof(struct cfg_cache, memory), 1 << 20, UINT64_MAX},
	{"max_object", FIELD_SIZE64, offsetof(struct cfg_cache, max_object), 1, 1ULL << 32},
	{"post_body_max", FIELD_SIZE64, offsetof(struct cfg_cache, post_body_max), 1, 16 << 20},
	{"grace", FIELD_DURATION, offsetof(struct cfg_cache, grace), 0, UINT32_MAX},
	{"coalesce_timeout", FIELD_DURATION, offsetof(struct cfg_cache, coalesce_timeout), 1,
	 UINT32_MAX},
	{"redis_timeout", FIELD_DURATION, offsetof(struct cfg_cache, redis_timeout), 1, 60000},
	{"redis_breaker", FIELD_DURATION, offsetof(struct cfg_cache, redis_breaker), 100, 600000},
};

/* cache: {enabled, memory, max_object, post_body_max, grace, coalesce_timeout,
 *         tag_header, redis, redis_timeout, redis_breaker} */
static int sec_cache(struct cfg_ctx *x, yaml_node_t *v)
{
	struct cfg_cache *cc = &x->c->cache;

	if (expect_mapping(x, v, "cache"))
		return -1;
	for_each_pair(v, p)
	{
		const char *key = pair_key(x, v, p, "cache"), *s;
		yaml_node_t *pv = node(x, p->value);
		char why[256];

		if (!key)
			return -1;
		if (!key_known(key, cache_keys, sizeof(cache_keys) / sizeof(cache_keys[0])) &&
		    !field_known(key, cache_fields,
				 sizeof(cache_fields) / sizeof(cache_fields[0]))) {
			char hint[96];

			return fail_node(x, node(x, p->key), "unknown key \"cache.%s\"%s", key,
					 KEY_HINT(hint, key, cache_keys));
		}
		if (strcmp(key, "enabled") && strcmp(key, "tag_header") && strcmp(key, "redis")) {
			/* the numeric fields, one at a time so errors keep their line */
			yaml_node_pair_t one = *p;
			yaml_node_t tmp = *v;
			tmp.data.mapping.pairs.start = &one;
			tmp.data.mapping.pairs.top = &one + 1;
			tmp.data.mapping.pairs.end = &one + 1;
			if (parse_fields(x, &tmp, "cache", cache_fields,
					 sizeof(cache_fields) / sizeof(cache_fields[0]), cc))
				return -1;
			continue;
		}
		if (is_null(pv) && !strcmp(key, "redis")) {
			cc->redis.len = 0;
			continue;
		}
		if (!(s = scalar(x, pv, key)))
			return -1;
		if (!strcmp(key, "enabled")) {
			if (parse_bool(s, &cc->enabled, why, sizeof(why)))
				return fail_node(x, pv, "cache.enabled: %s", why);
		} else if (!strcmp(key, "tag_header")) {
			if (!valid_name(s) || strchr(s, '.'))
				return fail_node(x, pv, "cache.tag_header: \"%s\" is not a header name", s);
			strcpy(cc->tag_header, s);
		} else {
			if (!strcmp(s, "off") || !*s) {
				cc->redis.len = 0;
				continue;
			}
			if (parse_addr(s, false, &cc->redis, why, sizeof(why)))
				return fail_node(x, pv, "cache.redis: %s", why);
		}
	}
	return 0;
}

/* ---- ratelimit (docs/ratelimit.md) ---------------------------------------- */

/* "100", "100/s", "600/m", "3600/h", "0.5/s": requests per second. */
static int parse_rate(const char *s, double *out, char *why, size_t whylen)
{
	char *end;
	double v, per = 1;

	/* decimal only: strtod would also take "inf", "nan" and hex */
	if ((!isdigit((unsigned char)*s) && *s != '.') || strpbrk(s, "xX"))
		goto bad;
	errno = 0;
	v = strtod(s, &end);
	if (end == s || errno || !(v > 0) || v > 1e9)
		goto bad;
	if (*end == '/') {
		if (!strcmp(end, "/s"))
			per = 1;
		else if (!strcmp(end, "/m"))
			per = 60;
		else if (!strcmp(end, "/h"))
			per = 3600;
		else
			goto bad;
	} else if (*end) {
		goto bad;
	}
	/* below it the GCRA interval (1e9 / rate ns) leaves 64 bits */
	if (v / per < CFG_RL_RATE_MIN) {
		snprintf(why, whylen, "\"%s\" is too slow (at least 0.0036/h, one per 11.6 days)",
			 s);
		return -1;
	}
	*out = v / per;
	return 0;
bad:
	snprintf(why, whylen, "\"%s\" is not a rate (N, N/s, N/m or N/h, N > 0)", s);
	return -1;
}

/* A full burst must refill in at most CFG_RL_REFILL_MAX_S: the limiter
 * keeps burst / rate in nanoseconds in 64 bits. */
static int rl_check(struct cfg_ctx *x, yaml_node_t *n, const char *what,
		    const struct cfg_rl_limit *l)
{
	if ((double)l->burst / l->rate > CFG_RL_REFILL_MAX_S)
		return fail_node(x, n,
				 "%s: burst %u at %g/s takes more than 30 years to refill; lower "
				 "burst or raise rate",
				 what, l->burst, l->rate);
	return 0;
}

/* "10.0.0.0/8", "2001:db8::/32" or a bare address; bits past the prefix must
 * be zero (the kernel layer refuses them too). */
static int parse_cidr(const char *s, char *why, size_t whylen)
{
	char a[CFG_RL_CIDR_LEN];
	unsigned char bin[16];
	const char *slash = strchr(s, '/');
	uint64_t plen;
	int fam, max;

	if (strlen(s) >= sizeof(a))
		goto bad;
	strcpy(a, s);
	if (slash)
		a[slash - s] = 0;
	fam = strchr(a, ':') ? AF_INET6 : AF_INET;
	max = fam == AF_INET6 ? 128 : 32;
	if (inet_pton(fam, a, bin) != 1)
		goto bad;
	plen = (uint64_t)max;
	if (slash && parse_uint(slash + 1, (uint64_t)max, &plen, why, whylen))
		goto bad;
	for (int i = (int)plen; i < max; i++)
		if (bin[i / 8] & (0x80 >> (i % 8))) {
			snprintf(why, whylen, "\"%s\" has bits set past /%u", s, (unsigned)plen);
			return -1;
		}
	return 0;
bad:
	snprintf(why, whylen, "\"%s\" is not an address or CIDR prefix", s);
	return -1;
}

/* {rate, burst, global} */
static int rl_limit(struct cfg_ctx *x, yaml_node_pair_t *p, const char *what,
		    struct cfg_rl_limit *l)
{
	const char *key = (const char *)node(x, p->key)->data.scalar.value, *s;
	yaml_node_t *v = node(x, p->value);
	char why[256];
	uint64_t n;

	if (!(s = scalar(x, v, key)))
		return -1;
	if (!strcmp(key, "rate")) {
		if (parse_rate(s, &l->rate, why, sizeof(why)))
			return fail_node(x, v, "%s.rate: %s", what, why);
		l->enabled = true;
	} else if (!strcmp(key, "burst")) {
		if (parse_uint(s, 1000000000, &n, why, sizeof(why)))
			return fail_node(x, v, "%s.burst: %s", what, why);
		if (!n)
			return fail_node(x, v, "%s.burst: must be at least 1", what);
		l->burst = (uint32_t)n;
	} else if (!strcmp(key, "global")) {
		if (parse_bool(s, &l->global, why, sizeof(why)))
			return fail_node(x, v, "%s.global: %s", what, why);
	} else {
		return fail_node(x, node(x, p->key), "unknown key \"%s.%s\"", what, key);
	}
	return 0;
}

static int rl_limit_map(struct cfg_ctx *x, yaml_node_t *v, const char *what,
			struct cfg_rl_limit *l, char *header, size_t header_cap)
{
	if (expect_mapping(x, v, what))
		return -1;
	for_each_pair(v, p)
	{
		const char *key = pair_key(x, v, p, what);

		if (!key)
			return -1;
		if (header && !strcmp(key, "header")) {
			yaml_node_t *pv = node(x, p->value);
			const char *s = scalar(x, pv, key);
			if (!s)
				return -1;
			if (!valid_name(s) || strchr(s, '.') || strlen(s) >= header_cap)
				return fail_node(x, pv, "%s.header: \"%s\" is not a header name", what, s);
			strcpy(header, s);
			continue;
		}
		if (rl_limit(x, p, what, l))
			return -1;
	}
	if (!l->enabled)
		return fail_node(x, v, "%s: rate is missing", what);
	if (!l->burst)
		l->burst = l->rate >= 1 ? (uint32_t)l->rate : 1;
	return rl_check(x, v, what, l);
}

static int rl_routes(struct cfg_ctx *x, yaml_node_t *v)
{
	struct cfg_ratelimit *rl = &x->c->ratelimit;

	if (v->type != YAML_SEQUENCE_NODE)
		return fail_node(x, v, "ratelimit.routes: expected a list, found %s", node_kind(v));
	for_each_item(v, it)
	{
		yaml_node_t *m = node(x, *it);
		struct cfg_rl_route *r;

		if (rl->n_routes >= CFG_RL_ROUTES_MAX)
			return fail_node(x, m, "ratelimit.routes: at most %d entries", CFG_RL_ROUTES_MAX);
		r = &rl->routes[rl->n_routes];
		memset(r, 0, sizeof(*r));
		if (expect_mapping(x, m, "ratelimit.routes[]"))
			return -1;
		for_each_pair(m, p)
		{
			const char *key = pair_key(x, m, p, "ratelimit.routes[]"), *s;
			yaml_node_t *pv = node(x, p->value);

			if (!key)
				return -1;
			if (strcmp(key, "host") && strcmp(key, "path_prefix")) {
				if (rl_limit(x, p, "ratelimit.routes[]", &r->lim))
					return -1;
				continue;
			}
			if (!(s = scalar(x, pv, key)))
				return -1;
			if (!strcmp(key, "host")) {
				if (copy_str(r->host, sizeof(r->host), s))
					return fail_node(x, pv, "ratelimit.routes[].host: too long");
				for (char *c = r->host; *c; c++)
					*c = (char)tolower((unsigned char)*c);
			} else {
				if (*s != '/' || copy_str(r->path_prefix, sizeof(r->path_prefix), s))
					return fail_node(x, pv,
							 "ratelimit.routes[].path_prefix: \"%s\" must "
							 "start with / (at most 255 bytes)",
							 s);
			}
		}
		if (!r->lim.enabled)
			return fail_node(x, m, "ratelimit.routes[]: rate is missing");
		if (!r->lim.burst)
			r->lim.burst = r->lim.rate >= 1 ? (uint32_t)r->lim.rate : 1;
		if (rl_check(x, m, "ratelimit.routes[]", &r->lim))
			return -1;
		rl->n_routes++;
	}
	return 0;
}

static int rl_escalate(struct cfg_ctx *x, yaml_node_t *v)
{
	struct cfg_ratelimit *rl = &x->c->ratelimit;
	const struct field f[] = {
		{"refusals", FIELD_COUNT32, offsetof(struct cfg_ratelimit, escalate_refusals), 0,
		 UINT32_MAX},
		{"window", FIELD_DURATION, offsetof(struct cfg_ratelimit, escalate_window), 1,
		 86400000},
		{"penalty", FIELD_DURATION, offsetof(struct cfg_ratelimit, escalate_penalty), 1,
		 86400000},
	};

	return parse_fields(x, v, "ratelimit.escalate", f, sizeof(f) / sizeof(f[0]), rl);
}

static int rl_cidrs(struct cfg_ctx *x, yaml_node_t *v, const char *what,
		    char (*list)[CFG_RL_CIDR_LEN], unsigned *n)
{
	char why[256];

	if (v->type != YAML_SEQUENCE_NODE)
		return fail_node(x, v, "%s: expected a list, found %s", what, node_kind(v));
	*n = 0;
	for_each_item(v, it)
	{
		yaml_node_t *in = node(x, *it);
		const char *s = scalar(x, in, what);

		if (!s)
			return -1;
		if (*n >= CFG_RL_CIDRS_MAX)
			return fail_node(x, in, "%s: at most %d entries", what, CFG_RL_CIDRS_MAX);
		if (parse_cidr(s, why, sizeof(why)))
			return fail_node(x, in, "%s: %s", what, why);
		strcpy(list[(*n)++], s);
	}
	return 0;
}

static int rl_kernel(struct cfg_ctx *x, yaml_node_t *v)
{
	struct cfg_rl_kernel *k = &x->c->ratelimit.kernel;
	static const struct field f[] = {
		{"syn_rate", FIELD_COUNT32, offsetof(struct cfg_rl_kernel, syn_rate), 0, 100000000},
		{"syn_burst", FIELD_COUNT32, offsetof(struct cfg_rl_kernel, syn_burst), 0, 100000000},
		{"pkt_rate", FIELD_COUNT32, offsetof(struct cfg_rl_kernel, pkt_rate), 0, 100000000},
		{"pkt_burst", FIELD_COUNT32, offsetof(struct cfg_rl_kernel, pkt_burst), 0, 100000000},
		{"prefix_v4", FIELD_COUNT32, offsetof(struct cfg_rl_kernel, prefix_v4), 1, 32},
		{"prefix_v6", FIELD_COUNT32, offsetof(struct cfg_rl_kernel, prefix_v6), 1, 128},
	};

	if (expect_mapping(x, v, "ratelimit.kernel"))
		return -1;
	for_each_pair(v, p)
	{
		const char *key = pair_key(x, v, p, "ratelimit.kernel"), *s;
		yaml_node_t *pv = node(x, p->value);
		char why[256], what[64];
		uint64_t n;

		if (!key)
			return -1;
		snprintf(what, sizeof(what), "ratelimit.kernel.%s", key);
		if (!strcmp(key, "allow")) {
			if (rl_cidrs(x, pv, what, k->allow, &k->n_allow))
				return -1;
		} else if (!strcmp(key, "deny")) {
			if (rl_cidrs(x, pv, what, k->deny, &k->n_deny))
				return -1;
		} else if (!strcmp(key, "interfaces") || !strcmp(key, "ports")) {
			bool ifs = key[0] == 'i';
			if (pv->type != YAML_SEQUENCE_NODE)
				return fail_node(x, pv, "%s: expected a list, found %s", what,
						 node_kind(pv));
			if (ifs)
				k->n_interfaces = 0;
			else
				k->n_ports = 0;
			for_each_item(pv, it)
			{
				yaml_node_t *in = node(x, *it);
				if (!(s = scalar(x, in, what)))
					return -1;
				if (ifs) {
					if (k->n_interfaces >= CFG_RL_IFACES_MAX)
						return fail_node(x, in, "%s: at most %d", what,
								 CFG_RL_IFACES_MAX);
					if (!*s || copy_str(k->interfaces[k->n_interfaces++], 16, s))
						return fail_node(x, in, "%s: \"%s\" is not an interface name",
								 what, s);
				} else {
					if (k->n_ports >= CFG_RL_PORTS_MAX)
						return fail_node(x, in, "%s: at most %d", what,
								 CFG_RL_PORTS_MAX);
					if (parse_uint(s, 65535, &n, why, sizeof(why)) || !n)
						return fail_node(x, in, "%s: \"%s\" is not a port", what, s);
					k->ports[k->n_ports++] = (uint16_t)n;
				}
			}
		} else if (!strcmp(key, "attach")) {
			if (!(s = scalar(x, pv, what)))
				return -1;
			if (strcmp(s, "auto") && strcmp(s, "tc") && strcmp(s, "xdp") &&
			    strcmp(s, "xdp_generic"))
				return fail_node(x, pv, "%s: \"%s\" is not auto, tc, xdp or xdp_generic",
						 what, s);
			strcpy(k->attach, s);
		} else if (!strcmp(key, "dry_run")) {
			if (!(s = scalar(x, pv, what)))
				return -1;
			if (parse_bool(s, &k->dry_run, why, sizeof(why)))
				return fail_node(x, pv, "%s: %s", what, why);
		} else {
			/* the numeric fields, one at a time so errors keep their line */
			yaml_node_pair_t one = *p;
			yaml_node_t tmp = *v;
			tmp.data.mapping.pairs.start = &one;
			tmp.data.mapping.pairs.top = &one + 1;
			tmp.data.mapping.pairs.end = &one + 1;
			if (parse_fields(x, &tmp, "ratelimit.kernel", f, sizeof(f) / sizeof(f[0]), k))
				return -1;
		}
	}
	if (k->syn_rate && !k->syn_burst)
		k->syn_burst = k->syn_rate;
	if (k->pkt_rate && !k->pkt_burst)
		k->pkt_burst = k->pkt_rate;
	return 0;
}

/* ratelimit: {client, api_key, routes, escalate, redis, redis_timeout, hosts,
 *             redis_failure, kernel} */
static int sec_ratelimit(struct cfg_ctx *x, yaml_node_t *v)
{
	struct cfg_ratelimit *rl = &x->c->ratelimit;

	if (expect_mapping(x, v, "ratelimit"))
		return -1;
	for_each_pair(v, p)
	{
		const char *key = pair_key(x, v, p, "ratelimit"), *s;
		yaml_node_t *pv = node(x, p->value);
		char why[256], what[64];
		uint64_t n;
		int rc = 0;

		if (!key)
			return -1;
		snprintf(what, sizeof(what), "ratelimit.%s", key);
		if (!strcmp(key, "client")) {
			rc = rl_limit_map(x, pv, what, &rl->client, NULL, 0);
		} else if (!strcmp(key, "api_key")) {
			rc = rl_limit_map(x, pv, what, &rl->api_key, rl->key_header,
					  sizeof(rl->key_header));
		} else if (!strcmp(key, "routes")) {
			rc = rl_routes(x, pv);
		} else if (!strcmp(key, "escalate")) {
			rc = rl_escalate(x, pv);
		} else if (!strcmp(key, "kernel")) {
			rc = rl_kernel(x, pv);
		} else if (!strcmp(key, "redis")) {
			if (is_null(pv)) {
				rl->redis.len = 0;
				continue;
			}
			if (!(s = scalar(x, pv, what)))
				return -1;
			if (!strcmp(s, "off") || !*s)
				rl->redis.len = 0;
			else if (parse_addr(s, false, &rl->redis, why, sizeof(why)))
				return fail_node(x, pv, "%s: %s", what, why);
		} else if (!strcmp(key, "redis_timeout")) {
			if (!(s = scalar(x, pv, what)))
				return -1;
			if (parse_duration(s, 60000, &n, why, sizeof(why)) || !n)
				return fail_node(x, pv, "%s: %s", what, n ? why : "must be at least 1 ms");
			rl->redis_timeout = (uint32_t)n;
		} else if (!strcmp(key, "hosts")) {
			if (!(s = scalar(x, pv, what)))
				return -1;
			if (parse_uint(s, 10000, &n, why, sizeof(why)) || !n)
				return fail_node(x, pv, "%s: %s", what, n ? why : "must be at least 1");
			rl->hosts = (uint32_t)n;
		} else if (!strcmp(key, "redis_failure")) {
			if (!(s = scalar(x, pv, what)))
				return -1;
			if (!strcmp(s, "local"))
				rl->fallback = CFG_RL_FALLBACK_LOCAL;
			else if (!strcmp(s, "open"))
				rl->fallback = CFG_RL_FALLBACK_OPEN;
			else if (!strcmp(s, "closed"))
				rl->fallback = CFG_RL_FALLBACK_CLOSED;
			else
				return fail_node(x, pv, "%s: \"%s\" is not local, open or closed", what, s);
		} else {
			char hint[96];

			return fail_node(x, node(x, p->key), "unknown key \"%s\"%s", what,
					 KEY_HINT(hint, key, ratelimit_keys));
		}
		if (rc)
			return -1;
	}
	return 0;
}

/* ---- reflex rules (docs/rules.md) --------------------------------------- */

int (*config_reflex_build)(struct config *c, char *err, size_t errlen);
static int yaml_error(struct cfg_ctx *x, const yaml_parser_t *p);
static void ctx_init(struct cfg_ctx *x, struct config *c, char *err, size_t errlen);
void (*config_reflex_release)(void *compiled);

/* A list of names (or one name) into a fixed array. */
static int rx_names(struct cfg_ctx *x, yaml_node_t *v, const char *what,
		    char (*dst)[CFG_NAME_MAX], unsigned *n)
{
	yaml_node_item_t one_item, *start, *top;

	if (v->type == YAML_SCALAR_NODE) {
		one_item = 0;
		start = &one_item;
		top = start + 1;
	} else if (v->type == YAML_SEQUENCE_NODE) {
		start = v->data.sequence.items.start;
		top = v->data.sequence.items.top;
	} else {
		return fail_node(x, v, "%s: expected a list of names, found %s", what,
				 node_kind(v));
	}
	for (yaml_node_item_t *it = start; it < top; it++) {
		yaml_node_t *item = v->type == YAML_SCALAR_NODE ? v : node(x, *it);
		const char *s = scalar(x, item, what);

		if (!s)
			return -1;
		if (*n >= CFG_RX_LIST_MAX)
			return fail_node(x, item, "%s: at most %d names", what, CFG_RX_LIST_MAX);
		if (!valid_name(s))
			return fail_node(x, item, "%s: \"%s\" is not a name", what, s);
		strcpy(dst[(*n)++], s);
	}
	return 0;
}

static char *rx_strdup(const char *s)
{
	size_t n = strlen(s);
	char *d = malloc(n + 1);

	if (d)
		memcpy(d, s, n + 1);
	return d;
}

/* respond headers: {Name: value, ...} → "Name: value\r\n"... */
static int rx_resp_headers(struct cfg_ctx *x, yaml_node_t *v, const char *what,
			   struct cfg_rx_rule *r)
{
	size_t len = 0, cap = 0;
	char *out = NULL;

	if (expect_mapping(x, v, what))
		return -1;
	for_each_pair(v, p)
	{
		const char *k = pair_key(x, v, p, what), *val;
		yaml_node_t *pv = node(x, p->value);

		if (!k || !(val = scalar(x, pv, k)))
			goto fail;
		if (!valid_token(k) || strchr(val, '\r') || strchr(val, '\n')) {
			fail_node(x, pv, "%s: \"%s\" is not a valid header", what, k);
			goto fail;
		}
		size_t need = strlen(k) + strlen(val) + 5;
		if (len + need > cap) {
			cap = (len + need) * 2;
			char *n = realloc(out, cap);
			if (!n) {
				fail_node(x, v, "out of memory");
				goto fail;
			}
			out = n;
		}
		len += (size_t)snprintf(out + len, cap - len, "%s: %s\r\n", k, val);
	}
	free(r->resp_headers);
	r->resp_headers = out;
	return 0;
fail:
	free(out);
	return -1;
}

static const char *const rx_actions[] = { "block", "redact", "respond", "route", "nocache", "tag" };

/* One rule: a flat mapping (docs/rules.md). */
static int parse_rx_rule(struct cfg_ctx *x, yaml_node_t *n, const char *what,
			 struct cfg_rx_rule *r)
{
	bool has_action = false, has_in = false;

	if (expect_mapping(x, n, what))
		return -1;
	memset(r, 0, sizeof(*r));
	r->line = line_of(n);
	for_each_pair(n, p)
	{
		const char *key = pair_key(x, n, p, what), *s;
		yaml_node_t *v = node(x, p->value);
		char why[256];

		if (!key)
			return -1;
		if (!strcmp(key, "detect")) {
			if (rx_names(x, v, "detect", r->detect, &r->n_detect))
				return -1;
			continue;
		}
		if (!strcmp(key, "headers")) {
			if (rx_names(x, v, "headers", r->headers, &r->n_headers))
				return -1;
			continue;
		}
		if (!strcmp(key, "in")) {
			char places[CFG_RX_LIST_MAX][CFG_NAME_MAX];
			unsigned np = 0;

			if (rx_names(x, v, "in", places, &np))
				return -1;
			r->in = 0;
			for (unsigned i = 0; i < np; i++) {
				if (!strcmp(places[i], "url"))
					r->in |= CFG_RX_IN_URL;
				else if (!strcmp(places[i], "headers"))
					r->in |= CFG_RX_IN_HEADERS;
				else if (!strcmp(places[i], "body"))
					r->in |= CFG_RX_IN_BODY;
				else if (!strcmp(places[i], "response"))
					r->in |= CFG_RX_IN_RESPONSE;
				else
					return fail_node(x, v,
							 "%s.in: \"%s\" is not url, headers, body "
							 "or response",
							 what, places[i]);
			}
			has_in = true;
			continue;
		}
		if (!strcmp(key, "respond_headers")) {
			if (rx_resp_headers(x, v, "respond_headers", r))
				return -1;
			continue;
		}
		if (!(s = scalar(x, v, key)))
			return -1;
		if (!strcmp(key, "name")) {
			if (!valid_name(s))
				return fail_node(x, v, "%s.name: \"%s\" is not a name", what, s);
			strcpy(r->name, s);
		} else if (!strcmp(key, "method")) {
			if (!valid_token(s) || copy_str(r->method, sizeof(r->method), s))
				return fail_node(x, v, "%s.method: \"%s\" is not a method", what, s);
		} else if (!strcmp(key, "host")) {
			if (copy_str(r->host, sizeof(r->host), s))
				return fail_node(x, v, "%s.host: too long", what);
			for (char *h = r->host; *h; h++)
				*h = (char)tolower((unsigned char)*h);
		} else if (!strcmp(key, "path") || !strcmp(key, "path_prefix")) {
			if (r->path[0])
				return fail_node(x, v, "%s: give path or path_prefix, not both", what);
			if (*s != '/')
				return fail_node(x, v, "%s.%s: must start with /", what, key);
			if (copy_str(r->path, sizeof(r->path), s))
				return fail_node(x, v, "%s.%s: too long", what, key);
			r->path_exact = !strcmp(key, "path");
		} else if (!strcmp(key, "header")) {
			/* "Name" (present) or "Name: value" (equal) */
			const char *colon = strchr(s, ':');
			size_t nl = colon ? (size_t)(colon - s) : strlen(s);

			if (!nl || nl >= sizeof(r->header))
				return fail_node(x, v, "%s.header: \"%s\" is not a header name", what, s);
			memcpy(r->header, s, nl);
			r->header[nl] = 0;
			if (!valid_token(r->header))
				return fail_node(x, v, "%s.header: \"%s\" is not a header name", what, s);
			if (colon) {
				const char *val = colon + 1;
				while (*val == ' ' || *val == '\t')
					val++;
				if (copy_str(r->header_value, sizeof(r->header_value), val))
					return fail_node(x, v, "%s.header: value too long", what);
				r->has_header_value = true;
			}
		} else if (!strcmp(key, "query")) {
			/* "name" (present) or "name=value" (equal) */
			const char *eq = strchr(s, '=');
			size_t nl = eq ? (size_t)(eq - s) : strlen(s);

			if (!nl || nl >= sizeof(r->query))
				return fail_node(x, v, "%s.query: \"%s\" is not a parameter", what, s);
			memcpy(r->query, s, nl);
			r->query[nl] = 0;
			if (eq) {
				if (copy_str(r->query_value, sizeof(r->query_value), eq + 1))
					return fail_node(x, v, "%s.query: value too long", what);
				r->has_query_value = true;
			}
		} else if (!strcmp(key, "action")) {
			unsigned i;

			for (i = 0; i < sizeof(rx_actions) / sizeof(rx_actions[0]); i++)
				if (!strcmp(s, rx_actions[i]))
					break;
			if (i == sizeof(rx_actions) / sizeof(rx_actions[0]))
				return fail_node(x, v,
						 "%s.action: \"%s\" is not block, redact, respond, "
						 "route, nocache or tag",
						 what, s);
			r->action = (enum cfg_rx_action)i;
			has_action = true;
		} else if (!strcmp(key, "status")) {
			uint64_t st;

			if (parse_uint(s, 599, &st, why, sizeof(why)) || st < 200)
				return fail_node(x, v, "%s.status: \"%s\" is not a status 200..599",
						 what, s);
			r->status = (unsigned)st;
		} else if (!strcmp(key, "redact")) {
			if (!strcmp(s, "mask"))
				r->redact = CFG_RX_MASK;
			else if (!strcmp(s, "hash"))
				r->redact = CFG_RX_HASH;
			else if (!strcmp(s, "last4"))
				r->redact = CFG_RX_LAST4;
			else
				return fail_node(x, v, "%s.redact: \"%s\" is not mask, hash or last4",
						 what, s);
		} else if (!strcmp(key, "pool")) {
			if (!valid_name(s))
				return fail_node(x, v, "%s.pool: \"%s\" is not a pool name", what, s);
			strcpy(r->pool, s);
		} else if (!strcmp(key, "tag")) {
			if (copy_str(r->tag, sizeof(r->tag), s) || strchr(s, '\r') || strchr(s, '\n'))
				return fail_node(x, v, "%s.tag: not a header value", what);
		} else if (!strcmp(key, "tag_header")) {
			if (!valid_token(s) || copy_str(r->tag_header, sizeof(r->tag_header), s))
				return fail_node(x, v, "%s.tag_header: \"%s\" is not a header name",
						 what, s);
		} else if (!strcmp(key, "content_type")) {
			if (copy_str(r->content_type, sizeof(r->content_type), s) ||
			    strchr(s, '\r') || strchr(s, '\n'))
				return fail_node(x, v, "%s.content_type: not a header value", what);
		} else if (!strcmp(key, "body")) {
			free(r->body);
			if (!(r->body = rx_strdup(s)))
				return fail_node(x, v, "out of memory");
		} else if (!strcmp(key, "on_oversize")) {
			if (!strcmp(s, "block"))
				r->oversize_block = true;
			else if (!strcmp(s, "pass"))
				r->oversize_block = false;
			else
				return fail_node(x, v, "%s.on_oversize: \"%s\" is not pass or block",
						 what, s);
		} else {
			return fail_node(x, node(x, p->key), "%s: unknown key \"%s\"", what, key);
		}
	}
	if (!r->name[0])
		return fail_node(x, n, "%s: a rule needs a name", what);
	if (!has_action)
		return fail_node(x, n, "%s: a rule needs an action", what);
	if (!has_in)
		r->in = r->n_headers ? CFG_RX_IN_URL | CFG_RX_IN_HEADERS | CFG_RX_IN_BODY
				     : CFG_RX_IN_URL | CFG_RX_IN_BODY;
	if ((r->in & CFG_RX_IN_HEADERS) && !r->n_headers)
		return fail_node(x, n, "%s: in: headers needs headers: [names]", what);
	if (r->action == CFG_RX_REDACT && !r->n_detect)
		return fail_node(x, n, "%s: redact needs detect: [detectors]", what);
	if ((r->in & CFG_RX_IN_RESPONSE) && r->action != CFG_RX_REDACT)
		return fail_node(x, n, "%s: in: response only works with action: redact", what);
	if (r->action == CFG_RX_ROUTE && !r->pool[0])
		return fail_node(x, n, "%s: route needs a pool", what);
	if (!r->status)
		r->status = r->action == CFG_RX_RESPOND ? 200 : 403;
	if (!r->tag_header[0])
		strcpy(r->tag_header, "X-Reflex-Tag");
	if (!r->tag[0])
		strcpy(r->tag, r->name);
	if (!r->content_type[0])
		strcpy(r->content_type, "application/json");
	return 0;
}

void config_rx_rule_fini(struct cfg_rx_rule *r)
{
	free(r->body);
	free(r->resp_headers);
	r->body = r->resp_headers = NULL;
}

static int rx_rules(struct cfg_ctx *x, yaml_node_t *v)
{
	struct cfg_reflex *rc = &x->c->reflex;

	if (v->type != YAML_SEQUENCE_NODE)
		return fail_node(x, v, "reflex.rules: expected a list, found %s", node_kind(v));
	for_each_item(v, it)
	{
		char what[64];
		struct cfg_rx_rule *rules = grow(rc->rules, rc->n_rules, sizeof(*rules));

		if (!rules)
			return fail_node(x, v, "out of memory");
		rc->rules = rules;
		snprintf(what, sizeof(what), "reflex.rules[%u]", rc->n_rules);
		if (parse_rx_rule(x, node(x, *it), what, &rules[rc->n_rules])) {
			config_rx_rule_fini(&rules[rc->n_rules]);
			return -1;
		}
		for (unsigned i = 0; i < rc->n_rules; i++)
			if (!strcmp(rules[i].name, rules[rc->n_rules].name)) {
				config_rx_rule_fini(&rules[rc->n_rules]);
				return fail_node(x, node(x, *it),
						 "%s: rule \"%s\" given twice (first at line %u)",
						 what, rules[i].name, rules[i].line);
			}
		rc->n_rules++;
	}
	return 0;
}

static int rx_detectors(struct cfg_ctx *x, yaml_node_t *v)
{
	struct cfg_reflex *rc = &x->c->reflex;

	if (v->type != YAML_SEQUENCE_NODE)
		return fail_node(x, v, "reflex.detectors: expected a list, found %s",
				 node_kind(v));
	for_each_item(v, it)
	{
		yaml_node_t *n = node(x, *it);
		struct cfg_rx_detector *ds = grow(rc->detectors, rc->n_detectors, sizeof(*ds)), *d;
		char what[64];

		if (!ds)
			return fail_node(x, v, "out of memory");
		rc->detectors = ds;
		d = &ds[rc->n_detectors];
		memset(d, 0, sizeof(*d));
		d->severity = 2;
		d->line = line_of(n);
		snprintf(what, sizeof(what), "reflex.detectors[%u]", rc->n_detectors);
		if (expect_mapping(x, n, what))
			return -1;
		rc->n_detectors++; /* counted now so config_free frees the pattern */
		for_each_pair(n, p)
		{
			const char *key = pair_key(x, n, p, what), *s;
			yaml_node_t *pv = node(x, p->value);
			char why[128];

			if (!key || !(s = scalar(x, pv, key)))
				return -1;
			if (!strcmp(key, "name")) {
				if (copy_str(d->name, sizeof(d->name), s))
					return fail_node(x, pv, "%s.name: too long", what);
			} else if (!strcmp(key, "pattern")) {
				free(d->pattern);
				if (!(d->pattern = rx_strdup(s)))
					return fail_node(x, pv, "out of memory");
			} else if (!strcmp(key, "severity")) {
				static const char *const sev[] = { "low", "medium", "high", "critical" };
				d->severity = 0;
				for (unsigned i = 0; i < 4; i++)
					if (!strcmp(s, sev[i]))
						d->severity = i + 1;
				if (!d->severity)
					return fail_node(x, pv,
							 "%s.severity: \"%s\" is not low, medium, "
							 "high or critical",
							 what, s);
			} else if (!strcmp(key, "caseless")) {
				if (parse_bool(s, &d->caseless, why, sizeof(why)))
					return fail_node(x, pv, "%s.caseless: %s", what, why);
			} else {
				return fail_node(x, node(x, p->key), "%s: unknown key \"%s\"", what,
						 key);
			}
		}
		if (!d->name[0] || !d->pattern)
			return fail_node(x, n, "%s: a detector needs a name and a pattern", what);
	}
	return 0;
}

/* reflex: {max_scan_bytes, hash_key, detectors: [...], rules: [...]} */
static int sec_reflex(struct cfg_ctx *x, yaml_node_t *v)
{
	struct cfg_reflex *rc = &x->c->reflex;

	if (expect_mapping(x, v, "reflex"))
		return -1;
	rc->present = true;
	for_each_pair(v, p)
	{
		const char *key = pair_key(x, v, p, "reflex"), *s;
		yaml_node_t *pv = node(x, p->value);
		char why[256];

		if (!key)
			return -1;
		if (!strcmp(key, "rules")) {
			if (rx_rules(x, pv))
				return -1;
			continue;
		}
		if (!strcmp(key, "detectors")) {
			if (rx_detectors(x, pv))
				return -1;
			continue;
		}
		if (strcmp(key, "max_scan_bytes") && strcmp(key, "hash_key")) {
			char hint[96];

			return fail_node(x, node(x, p->key), "reflex: unknown key \"%s\"%s", key,
					 KEY_HINT(hint, key, reflex_keys));
		}
		if (!(s = scalar(x, pv, key)))
			return -1;
		if (!strcmp(key, "max_scan_bytes")) {
			if (parse_size(s, 1ULL << 30, &rc->max_scan_bytes, why, sizeof(why)) ||
			    !rc->max_scan_bytes)
				return fail_node(x, pv, "reflex.max_scan_bytes: %s",
						 rc->max_scan_bytes ? why : "must be at least 1");
		} else if (!strcmp(key, "hash_key")) {
			if (copy_str(rc->hash_key, sizeof(rc->hash_key), s))
				return fail_node(x, pv, "reflex.hash_key: too long");
		} else {
			return fail_node(x, node(x, p->key), "reflex: unknown key \"%s\"", key);
		}
	}
	return 0;
}

int config_parse_rx_rule(const char *text, size_t len, struct cfg_rx_rule *out, char *err,
			 size_t errlen)
{
	yaml_parser_t parser;
	yaml_document_t doc;
	struct cfg_ctx x;
	yaml_node_t *root;
	int rc = -1;

	memset(out, 0, sizeof(*out));
	ctx_init(&x, NULL, err, errlen);
	x.file = "rule";
	if (!yaml_parser_initialize(&parser))
		return fail_at(&x, 0, "out of memory");
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	if (!yaml_parser_load(&parser, &doc)) {
		yaml_error(&x, &parser);
		yaml_parser_delete(&parser);
		return -1;
	}
	x.doc = &doc;
	root = yaml_document_get_root_node(&doc);
	if (!root)
		fail_at(&x, 0, "empty rule");
	else
		rc = parse_rx_rule(&x, root, "rule", out);
	if (rc) {
		config_rx_rule_fini(out);
	} else {
		out->line = 0;
	}
	yaml_document_delete(&doc);
	yaml_parser_delete(&parser);
	return rc;
}

static void reflex_free(struct cfg_reflex *rc)
{
	if (rc->compiled && config_reflex_release)
		config_reflex_release(rc->compiled);
	rc->compiled = NULL;
	for (unsigned i = 0; i < rc->n_rules; i++)
		config_rx_rule_fini(&rc->rules[i]);
	for (unsigned i = 0; i < rc->n_detectors; i++)
		free(rc->detectors[i].pattern);
	free(rc->rules);
	free(rc->detectors);
}

/* ---- trace (docs/anomaly.md) ---------------------------------------------- */

static const struct field trace_fields[] = {
	{"window", FIELD_DURATION, offsetof(struct cfg_trace, window), 100, 3600000},
	{"slow_connect", FIELD_DURATION, offsetof(struct cfg_trace, slow_connect), 1, 60000},
	{"events_per_sec", FIELD_COUNT32, offsetof(struct cfg_trace, events_per_sec), 1, 1000000},
	{"prefix_v4", FIELD_COUNT32, offsetof(struct cfg_trace, prefix_v4), 8, 32},
	{"prefix_v6", FIELD_COUNT32, offsetof(struct cfg_trace, prefix_v6), 16, 128},
	{"sensitivity", FIELD_COUNT32, offsetof(struct cfg_trace, sensitivity), 1, 100},
	{"min_samples", FIELD_COUNT32, offsetof(struct cfg_trace, min_samples), 2, 100000},
	{"min_requests", FIELD_COUNT32, offsetof(struct cfg_trace, min_requests), 1, 1000000},
	{"eject_time", FIELD_DURATION, offsetof(struct cfg_trace, eject_time), 100, 3600000},
	{"penalty_time", FIELD_DURATION, offsetof(struct cfg_trace, penalty_time), 100, 86400000},
	{"events_kept", FIELD_COUNT32, offsetof(struct cfg_trace, events_kept), 1, 100000},
};

/* trace: {enabled, eject, penalty, and the numeric fields above} */
static int sec_trace(struct cfg_ctx *x, yaml_node_t *v)
{
	struct cfg_trace *t = &x->c->trace;

	if (expect_mapping(x, v, "trace"))
		return -1;
	for_each_pair(v, p)
	{
		const char *key = pair_key(x, v, p, "trace"), *s;
		yaml_node_t *pv = node(x, p->value);
		char why[256];
		bool *flag;

		if (!key)
			return -1;
		if (!key_known(key, trace_keys, sizeof(trace_keys) / sizeof(trace_keys[0])) &&
		    !field_known(key, trace_fields,
				 sizeof(trace_fields) / sizeof(trace_fields[0]))) {
			char hint[96];

			return fail_node(x, node(x, p->key), "unknown key \"trace.%s\"%s", key,
					 KEY_HINT(hint, key, trace_keys));
		}
		if (!strcmp(key, "enabled"))
			flag = &t->enabled;
		else if (!strcmp(key, "eject"))
			flag = &t->eject;
		else if (!strcmp(key, "penalty"))
			flag = &t->penalty;
		else
			flag = NULL;
		if (!flag) { /* one numeric field at a time so errors keep their line */
			yaml_node_pair_t one = *p;
			yaml_node_t tmp = *v;
			tmp.data.mapping.pairs.start = &one;
			tmp.data.mapping.pairs.top = &one + 1;
			tmp.data.mapping.pairs.end = &one + 1;
			if (parse_fields(x, &tmp, "trace", trace_fields,
					 sizeof(trace_fields) / sizeof(trace_fields[0]), t))
				return -1;
			continue;
		}
		if (!(s = scalar(x, pv, key)))
			return -1;
		if (parse_bool(s, flag, why, sizeof(why)))
			return fail_node(x, pv, "trace.%s: %s", key, why);
	}
	return 0;
}

/* The top level: one row per key. Sections run in file order; ones that
 * depend on others (routes → pools) defer the check to finalize(). */
static const struct cfg_section {
	const char *key;
	int (*parse)(struct cfg_ctx *x, yaml_node_t *value);
} sections[] = {
	{"workers", sec_workers},	{"listen", sec_listen},	      {"upstream", sec_upstream},
	{"access_log", sec_access_log}, {"log_level", sec_log_level}, {"limits", sec_limits},
	{"timeouts", sec_timeouts},	{"pools", sec_pools},	      {"routes", sec_routes},
	{"admin", sec_admin},		{"cache", sec_cache},
	{"ratelimit", sec_ratelimit},	{"reflex", sec_reflex},
	{"trace", sec_trace},		{"user", sec_user},
};

/* ---- loading -------------------------------------------------------------- */

static void set_defaults(struct config *c)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	memset(c, 0, sizeof(*c));
	c->workers = n > 0 ? (unsigned)n : 1;
	c->limits = (struct cfg_limits){
		.request_line = 8 << 10,
		.header_bytes = 32 << 10,
		.header_count = 100,
		.body = 1 << 20,
	};
	c->timeouts = (struct cfg_timeouts){
		.header = 10000,
		.body = 60000,
		.keepalive = 75000,
		.upstream_connect = 5000,
		.upstream_response = 60000,
		.upstream_idle = 60000,
		.send = 60000,
		.drain = 30000,
		.tls_handshake = 10000,
	};
	c->log_level = 2;
	c->access_log_sample = 1.0;
	c->admin.enabled = true; /* the address is filled in by finalize() */
	c->cache = (struct cfg_cache){ .memory = 256ULL << 20, .max_object = 4ULL << 20,
				       .post_body_max = 64 << 10, .coalesce_timeout = 10000,
				       .tag_header = "Surrogate-Key", .redis_timeout = 50,
				       .redis_breaker = 5000 };
	c->reflex.max_scan_bytes = 1 << 20;
	c->trace = (struct cfg_trace){ .window = 5000, .slow_connect = 200, .events_per_sec = 1000,
				       .prefix_v4 = 24, .prefix_v6 = 64, .sensitivity = 5,
				       .min_samples = 8, .min_requests = 20, .eject_time = 30000,
				       .penalty_time = 60000, .events_kept = 256 };
	c->ratelimit = (struct cfg_ratelimit){ .key_header = "X-API-Key", .redis_timeout = 50,
					       .hosts = 1, .escalate_window = 10000,
					       .escalate_penalty = 60000,
					       .kernel = { .attach = "auto", .prefix_v4 = 32,
							   .prefix_v6 = 64 } };
}

static int walk_root(struct cfg_ctx *x, yaml_node_t *root)
{
	if (root->type != YAML_MAPPING_NODE)
		return fail_node(x, root, "the file must be a mapping of keys (found %s)",
				 node_kind(root));
	for_each_pair(root, p)
	{
		const char *key = pair_key(x, root, p, "");
		const struct cfg_section *s = NULL;
		char hint[96];

		if (!key)
			return -1;
		for (size_t i = 0; i < sizeof(sections) / sizeof(sections[0]); i++)
			if (!strcmp(sections[i].key, key))
				s = &sections[i];
		if (!s)
			return fail_node(x, node(x, p->key), "unknown key \"%s\"%s", key,
					 KEY_HINT(hint, key, sections));
		if (s->parse(x, node(x, p->value)))
			return -1;
	}
	return 0;
}

/* libyaml's own message, at the problem's line, with where the construct
 * it was parsing started (an unclosed "[" is reported at the end). */
static int yaml_error(struct cfg_ctx *x, const yaml_parser_t *p)
{
	unsigned line = (unsigned)p->problem_mark.line + 1;
	const char *problem = p->problem ? p->problem : "invalid YAML";

	if (p->error == YAML_MEMORY_ERROR)
		return fail_at(x, 0, "out of memory");
	if (p->context)
		return fail_at(x, line, "%s (%s started at line %u)", problem, p->context,
			       (unsigned)p->context_mark.line + 1);
	return fail_at(x, line, "%s", problem);
}

/* Only a regular file of sane size: a FIFO or a terminal would block the
 * loader (the main thread, which holds the reload lock) forever, a
 * directory reads as an obscure "input error", and a device or a runaway
 * generated file could take all memory. O_NONBLOCK keeps open() itself from
 * waiting for a FIFO's writer. */
static FILE *open_regular(struct cfg_ctx *x, const char *path)
{
	struct stat st;
	FILE *f;
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0) {
		fail_at(x, 0, "cannot open: %s", strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st)) {
		fail_at(x, 0, "cannot open: %s", strerror(errno));
		goto fail;
	}
	if (S_ISDIR(st.st_mode)) {
		fail_at(x, 0, "is a directory, not a configuration file");
		goto fail;
	}
	if (!S_ISREG(st.st_mode)) {
		fail_at(x, 0,
			"is not a regular file (a pipe or device cannot be re-read on reload)");
		goto fail;
	}
	if (st.st_size > CFG_FILE_MAX) {
		fail_at(x, 0, "is %lld bytes; a configuration file is at most %d MiB",
			(long long)st.st_size, CFG_FILE_MAX >> 20);
		goto fail;
	}
	f = fdopen(fd, "rb");
	if (!f) {
		fail_at(x, 0, "cannot open: %s", strerror(errno));
		goto fail;
	}
	return f;
fail:
	close(fd);
	return NULL;
}

static int load_file(struct cfg_ctx *x, const char *path)
{
	yaml_parser_t parser;
	yaml_document_t doc, extra;
	yaml_node_t *root;
	FILE *f;
	int rc = -1;

	x->file = path;
	if (copy_str(x->c->source, sizeof(x->c->source), path))
		return fail_at(x, 0, "path is too long");
	f = open_regular(x, path);
	if (!f)
		return -1;
	if (!yaml_parser_initialize(&parser)) {
		fclose(f);
		return fail_at(x, 0, "out of memory");
	}
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &doc)) {
		yaml_error(x, &parser);
		goto out_parser;
	}
	x->doc = &doc;
	root = yaml_document_get_root_node(&doc);
	if (root) {
		if (walk_root(x, root))
			goto out_doc;
		/* a second document ("---") would be silently ignored otherwise */
		if (!yaml_parser_load(&parser, &extra)) {
			yaml_error(x, &parser);
			goto out_doc;
		}
		root = yaml_document_get_root_node(&extra);
		if (root)
			fail_node(x, root, "only one YAML document is allowed");
		yaml_document_delete(&extra);
		if (root)
			goto out_doc;
	}
	rc = 0;
out_doc:
	x->doc = NULL;
	yaml_document_delete(&doc);
out_parser:
	yaml_parser_delete(&parser);
	fclose(f);
	return rc;
}

/* Two TCP addresses that cannot both be bound: the same family and port
 * (not 0), and the same address or either one the wildcard (IPv6 sockets
 * are IPV6_V6ONLY, core/sock.c, so [::] leaves IPv4 alone). */
static bool addr_overlaps(const struct cfg_addr *a, const struct cfg_addr *b)
{
	const struct sockaddr_in *a4 = (const void *)&a->ss, *b4 = (const void *)&b->ss;
	const struct sockaddr_in6 *a6 = (const void *)&a->ss, *b6 = (const void *)&b->ss;
	bool a_any, b_any;

	if (a->ss.ss_family == AF_UNIX || a->ss.ss_family != b->ss.ss_family)
		return false;
	/* sin_port and sin6_port sit at the same offset */
	if (a4->sin_port != b4->sin_port || !a4->sin_port)
		return false;
	a_any = a->ss.ss_family == AF_INET ? a4->sin_addr.s_addr == htonl(INADDR_ANY)
					   : IN6_IS_ADDR_UNSPECIFIED(&a6->sin6_addr);
	b_any = b->ss.ss_family == AF_INET ? b4->sin_addr.s_addr == htonl(INADDR_ANY)
					   : IN6_IS_ADDR_UNSPECIFIED(&b6->sin6_addr);
	if (a_any || b_any)
		return true;
	return a->len == b->len && !memcmp(&a->ss, &b->ss, a->len);
}

/* Checks that need the file and the flags together. */
static int finalize(struct cfg_ctx *x)
{
	struct config *c = x->c;
	char why[512];

	for (unsigned i = 0; i < c->n_routes; i++) {
		int p = pool_find(c, x->route_pools[i]);

		if (p < 0)
			return fail_at(x, c->routes[i].line, "routes[%u].pool: unknown pool \"%s\"",
				       i, x->route_pools[i]);
		c->routes[i].pool = (unsigned)p;
	}
	if (!c->n_listens) {
		c->listens = calloc(1, sizeof(*c->listens));
		if (!c->listens)
			return fail_at(x, 0, "out of memory");
		if (parse_addr(CFG_DEFAULT_LISTEN, true, c->listens, why, sizeof(why)))
			return fail_at(x, 0, "default listen address: %s", why);
		c->n_listens = 1;
	}
	if (!c->listen_tls && !(c->listen_tls = calloc(c->n_listens, sizeof(*c->listen_tls))))
		return fail_at(x, 0, "out of memory");
	if (c->admin.enabled && !c->admin.listen.len &&
	    parse_addr(CFG_DEFAULT_ADMIN, true, &c->admin.listen, why, sizeof(why)))
		return fail_at(x, 0, "default admin address: %s", why);
	/* The admin API binds without SO_REUSEPORT: on a data port it would
	 * wait for the address forever, retrying, and never serve. */
	for (unsigned i = 0; c->admin.enabled && i < c->n_listens; i++)
		if (addr_overlaps(&c->admin.listen, &c->listens[i]))
			return fail_at(
				x, x->admin_line, "admin.listen %s%s: is also listen %s",
				c->admin.listen.text,
				x->admin_line ? "" : " (the default; set admin.listen or --admin)",
				c->listens[i].text);
	if (!c->n_pools) {
		/* not a place in the file: say it plainly */
		snprintf(x->err, x->errlen, "no upstream: give --upstream or pools.default");
		return -1;
	}
	if (build_tls(x))
		return -1;
	if (config_reflex_build && c->reflex.present) {
		/* the reflex module formats "FILE:LINE: reason" itself */
		if (config_reflex_build(c, x->err, x->errlen))
			return -1;
	}
	return 0;
}

static void ctx_init(struct cfg_ctx *x, struct config *c, char *err, size_t errlen)
{
	memset(x, 0, sizeof(*x));
	x->c = c;
	x->err = err;
	x->errlen = errlen;
	if (errlen)
		err[0] = 0;
}

static void ctx_fini(struct cfg_ctx *x)
{
	free(x->route_pools);
	free(x->pool_lines);
}

int config_load_file(const char *path, struct config **out, char *err, size_t errlen)
{
	struct config *c = malloc(sizeof(*c));
	struct cfg_ctx x;
	int rc;

	*out = NULL;
	ctx_init(&x, c, err, errlen);
	if (!c) {
		snprintf(err, errlen, "%s: out of memory", path);
		return -1;
	}
	set_defaults(c);
	rc = load_file(&x, path);
	if (!rc)
		rc = finalize(&x);
	ctx_fini(&x);
	if (rc) {
		config_free(c);
		return -1;
	}
	*out = c;
	return 0;
}

/* ---- command line ------------------------------------------------------------ */

struct cli {
	const char *config;
	const char **listens, **upstreams; /* point into argv */
	unsigned n_listens, n_upstreams;
	const char *workers, *access_log, *log_level, *admin;
	enum config_action action;
	bool want_help, want_version;
};

enum { OPT_NOARG, OPT_ARG, OPT_LIST };

static const struct cli_opt {
	const char *name;
	int kind;
	size_t off; /* into struct cli: const char * or list */
} cli_opts[] = {
	{"--config", OPT_ARG, offsetof(struct cli, config)},
	{"--listen", OPT_LIST, offsetof(struct cli, listens)},
	{"--upstream", OPT_LIST, offsetof(struct cli, upstreams)},
	{"--workers", OPT_ARG, offsetof(struct cli, workers)},
	{"--access-log", OPT_ARG, offsetof(struct cli, access_log)},
	{"--log-level", OPT_ARG, offsetof(struct cli, log_level)},
	{"--admin", OPT_ARG, offsetof(struct cli, admin)},
	{"--check-config", OPT_NOARG, 0},
	{"--version", OPT_NOARG, 0},
	{"--help", OPT_NOARG, 0},
	{"-h", OPT_NOARG, 0},
};

static int parse_argv(struct cfg_ctx *x, int argc, char **argv, struct cli *cli)
{
	cli->listens = calloc((size_t)argc + 1, sizeof(char *));
	cli->upstreams = calloc((size_t)argc + 1, sizeof(char *));
	if (!cli->listens || !cli->upstreams)
		return fail_flag(x, argv[0] ? argv[0] : "reflexd", "out of memory");
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *eq = strchr(a, '='), *val = NULL;
		size_t nlen = eq && a[0] == '-' && a[1] == '-' ? (size_t)(eq - a) : strlen(a);
		const struct cli_opt *o = NULL;
		char flag[64];

		for (size_t k = 0; k < sizeof(cli_opts) / sizeof(cli_opts[0]); k++)
			if (strlen(cli_opts[k].name) == nlen && !strncmp(cli_opts[k].name, a, nlen))
				o = &cli_opts[k];
		snprintf(flag, sizeof(flag), "%.*s", (int)(nlen < 48 ? nlen : 48), a);
		if (!o) {
			if (a[0] == '-')
				return fail_flag(x, flag, "unknown option (see --help)");
			return fail_flag(x, flag, "unexpected argument (see --help)");
		}
		if (o->kind == OPT_NOARG) {
			if (nlen != strlen(a))
				return fail_flag(x, flag, "takes no value");
			if (!strcmp(o->name, "--check-config"))
				cli->action = CONFIG_CHECK;
			else if (!strcmp(o->name, "--version"))
				cli->want_version = true;
			else
				cli->want_help = true;
			continue;
		}
		if (nlen != strlen(a))
			val = eq + 1;
		else if (i + 1 < argc)
			val = argv[++i];
		else
			return fail_flag(x, flag, "needs a value");
		if (o->kind == OPT_LIST) {
			const char ***list = (const char ***)((char *)cli + o->off);
			unsigned *n = o->off == offsetof(struct cli, listens) ? &cli->n_listens
									      : &cli->n_upstreams;

			(*list)[(*n)++] = val;
		} else {
			*(const char **)((char *)cli + o->off) = val;
		}
	}
	return 0;
}

static int apply_flags(struct cfg_ctx *x, struct cli *cli)
{
	struct config *c = x->c;
	char why[512];

	if (cli->workers && parse_workers(cli->workers, &c->workers, why, sizeof(why)))
		return fail_flag(x, "--workers", "%s", why);
	if (cli->log_level && parse_log_level(cli->log_level, &c->log_level, why, sizeof(why)))
		return fail_flag(x, "--log-level", "%s", why);
	if (cli->access_log && copy_str(c->access_log, sizeof(c->access_log), cli->access_log))
		return fail_flag(x, "--access-log", "path is too long");
	if (cli->admin && parse_admin_listen(cli->admin, &c->admin, why, sizeof(why)))
		return fail_flag(x, "--admin", "%s", why);
	if (cli->n_listens) {
		struct cfg_addr *arr = calloc(cli->n_listens, sizeof(*arr));

		if (!arr)
			return fail_flag(x, "--listen", "out of memory");
		for (unsigned i = 0; i < cli->n_listens; i++) {
			if (parse_addr(cli->listens[i], true, &arr[i], why, sizeof(why))) {
				free(arr);
				return fail_flag(x, "--listen", "%s", why);
			}
			for (unsigned j = 0; j < i; j++) {
				if (arr[j].len == arr[i].len &&
				    !memcmp(&arr[j].ss, &arr[i].ss, arr[i].len)) {
					free(arr);
					return fail_flag(x, "--listen", "\"%s\" is given twice",
							 cli->listens[i]);
				}
			}
		}
		/* --listen addresses are plain TCP: the file's tls and deferred settings go */
		for (unsigned i = 0; c->listen_tls && i < c->n_listens; i++)
			listen_tls_free(&c->listen_tls[i]);
		free(c->listen_tls);
		c->listen_tls = NULL;
		free(c->listen_deferred);
		c->listen_deferred = NULL;
		free(c->listens);
		c->listens = arr;
		c->n_listens = cli->n_listens;
	}
	if (cli->n_upstreams) {
		int i = pool_find(c, CFG_DEFAULT_POOL);
		struct cfg_pool *p;

		if (i >= 0) {
			p = &c->pools[i];
			free(p->endpoints);
			p->endpoints = NULL;
			p->n_endpoints = 0;
		} else if (c->n_pools >= CFG_POOLS_MAX) {
			return fail_flag(x, "--upstream", "more than %d pools with pool default",
					 CFG_POOLS_MAX);
		} else if (!(p = pool_add(x, CFG_DEFAULT_POOL, 0))) {
			return fail_flag(x, "--upstream", "out of memory");
		}
		for (unsigned k = 0; k < cli->n_upstreams; k++) {
			struct cfg_addr a;

			if (parse_addr(cli->upstreams[k], false, &a, why, sizeof(why)))
				return fail_flag(x, "--upstream", "%s", why);
			int rc = endpoint_add(p, &a, 1);

			if (rc == -EEXIST)
				return fail_flag(x, "--upstream", "\"%s\" is given twice",
						 cli->upstreams[k]);
			if (rc)
				return fail_flag(x, "--upstream", "out of memory");
		}
	}
	return 0;
}

int config_from_args(int argc, char **argv, struct config **out, enum config_action *action,
		     char *err, size_t errlen)
{
	struct config *c = malloc(sizeof(*c));
	struct cli cli = {0};
	struct cfg_ctx x;
	int rc = -1;

	*out = NULL;
	*action = CONFIG_RUN;
	ctx_init(&x, c, err, errlen);
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	set_defaults(c);
	if (parse_argv(&x, argc, argv, &cli))
		goto out;
	/* set before loading so a caller can tell a failed --check-config */
	*action = cli.action;
	/* --help and --version answer even when the rest would not load; the
	 * snapshot handed back is then the unchecked defaults. */
	if (cli.want_help || cli.want_version) {
		*action = cli.want_help ? CONFIG_HELP : CONFIG_VERSION;
		rc = 0;
		goto out;
	}
	if (cli.config && load_file(&x, cli.config))
		goto out;
	/* flag errors name the flag, not the file */
	x.file = NULL;
	if (apply_flags(&x, &cli))
		goto out;
	x.file = cli.config;
	if (finalize(&x))
		goto out;
	rc = 0;
out:
	free(cli.listens);
	free(cli.upstreams);
	ctx_fini(&x);
	if (rc)
		config_free(c);
	else
		*out = c;
	return rc;
}

const char *config_usage(void)
{
	return "usage: reflexd [options]\n"
	       "  --config FILE         YAML configuration (see docs/config.md)\n"
	       "  --listen ADDR:PORT    listen address; repeatable; replaces the file's list\n"
	       "                        (default 127.0.0.1:8080; IPv6 as [::1]:8080)\n"
	       "  --upstream HOST:PORT  upstream endpoint of pool \"default\"; repeatable;\n"
	       "                        replaces the file's default pool endpoints\n"
	       "  --workers N           worker threads (default: online CPUs; \"auto\")\n"
	       "  --access-log PATH     access log file, \"-\" for stdout (default: off)\n"
	       "  --log-level LEVEL     error, warn, info (default) or debug\n"
	       "  --admin ADDR|PATH     admin API address or unix socket path\n"
	       "                        (default 127.0.0.1:9901; \"off\" disables it)\n"
	       "  --check-config        load and validate the configuration, then exit\n"
	       "  --version             print the version and exit\n"
	       "  -h, --help            print this help and exit\n";
}

int config_pool_index(const struct config *c, const char *name)
{
	return pool_find(c, name);
}

void config_free(struct config *c)
{
	if (!c)
		return;
	for (unsigned i = 0; i < c->n_pools; i++) {
		free(c->pools[i].endpoints);
		tls_ctx_unref(c->pools[i].tls.ctx);
	}
	free(c->pools);
	for (unsigned i = 0; c->listen_tls && i < c->n_listens; i++)
		listen_tls_free(&c->listen_tls[i]);
	free(c->listen_tls);
	free(c->listen_deferred);
	free(c->listens);
	free(c->routes);
	reflex_free(&c->reflex);
	free(c);
}
