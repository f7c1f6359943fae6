/* cache_rules.h — the HTTP caching rules of RFC 9111 for a shared cache,
 * as pure functions over parsed facts (no I/O, no clock: "now" is an
 * argument), so they can be tested table by table against the RFC.
 *
 * Times are Unix milliseconds (wall clock: Date, Expires and Age are wall
 * clock quantities); durations are milliseconds.
 */
#ifndef REFLEX_HTTP_CACHE_RULES_H
#define REFLEX_HTTP_CACHE_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/parse.h"

/* Cache-Control, request and response directives (RFC 9111 §5.2). A
 * qualified no-cache="f" or private="f" is treated as the unqualified form
 * (the conservative reading a shared cache may take). */
struct cache_cc {
	bool no_store, no_cache, private_, public_, must_revalidate, proxy_revalidate;
	bool only_if_cached, must_understand;
	bool has_max_age, has_s_maxage, has_max_stale, has_min_fresh, has_swr, has_sie;
	bool max_stale_any; /* "max-stale" without a value: any staleness */
	uint32_t max_age, s_maxage, max_stale, min_fresh, swr, sie; /* seconds */
};

/* Add the directives of one Cache-Control field value to cc (call once per
 * field line; start from a zeroed struct). Unknown directives are ignored,
 * an invalid delta-seconds makes its directive absent except for max-age,
 * which then means "stale" (RFC 9111 §4.2.1: treat as 0). A max-age or
 * s-maxage given twice with different values is 0 (stale), across field
 * lines too (§4.2.1). */
void cache_cc_parse(struct cache_cc *cc, const char *p, size_t n);

/* The Age field's value in seconds (RFC 9111 §5.1): the first member of a
 * list, a delta-seconds saturating at 2^31; -1 when it is invalid (a
 * negative or non-numeric Age is ignored: it must never make an object
 * younger than it is). */
int64_t cache_age_value(const char *p, size_t n);

/* An HTTP-date (IMF-fixdate, RFC 850 or asctime) → Unix ms; -1 if invalid. */
int64_t cache_http_date(const char *p, size_t n);
/* IMF-fixdate of Unix seconds t into out (at least 30 bytes); returns the length. */
size_t cache_http_date_format(int64_t t_s, char *out);

/* What the storing decision needs from a response and its request. */
struct cache_resp_facts {
	int status;
	struct cache_cc cc;
	bool has_date, has_expires, has_age, has_last_modified, has_etag;
	int64_t date_ms, expires_ms; /* expires_ms -1: invalid Expires (= already expired) */
	int64_t age_s;
	bool set_cookie;
	bool vary_star;
	bool has_vary;
};

struct cache_req_facts {
	bool get_or_head; /* GET or HEAD (or a POST the route caches) */
	bool is_head;
	bool authorization;
	bool has_body;
	bool range;
	bool pragma_no_cache; /* Pragma: no-cache and no Cache-Control (RFC 9111 §5.4) */
	struct cache_cc cc;
};

/* Why a response is not stored (Cache-Status "detail"), CACHE_STORE_OK if it is. */
enum cache_nostore {
	CACHE_STORE_OK = 0,
	CACHE_NOSTORE_METHOD, /* not GET (nor an opted-in POST), or HEAD */
	CACHE_NOSTORE_STATUS, /* not a final status a cache may store, or 206/304 */
	CACHE_NOSTORE_REQ_NO_STORE,
	CACHE_NOSTORE_NO_STORE,
	CACHE_NOSTORE_PRIVATE,
	CACHE_NOSTORE_AUTHORIZATION, /* request had Authorization, response does not allow sharing */
	CACHE_NOSTORE_SET_COOKIE,
	CACHE_NOSTORE_VARY_STAR,
	CACHE_NOSTORE_NO_FRESHNESS, /* nothing says it may be stored: no max-age, s-maxage, Expires, public */
	CACHE_NOSTORE_TOO_LARGE,
	CACHE_NOSTORE_MAX
};
const char *cache_nostore_name(enum cache_nostore why);

/* May a shared cache store this response (RFC 9111 §3, §3.5)? No
 * heuristic freshness: a response is stored only when it says so
 * (max-age, s-maxage, Expires, or public). */
enum cache_nostore cache_storable(const struct cache_req_facts *rq,
				  const struct cache_resp_facts *rs);

/* Freshness lifetime in ms (§4.2.1): s-maxage, then max-age, then
 * Expires − Date (Date defaults to the response time); 0 if none. */
int64_t cache_freshness_lifetime(const struct cache_resp_facts *rs, int64_t response_time_ms);

/* The corrected initial age (§4.2.3) in ms: what Age is when the response
 * is received. request_time / response_time: when it was sent / received. */
int64_t cache_initial_age(const struct cache_resp_facts *rs, int64_t request_time_ms,
			  int64_t response_time_ms);

/* What is stored with an object to decide later how it may be used. */
struct cache_meta {
	int64_t response_time_ms; /* when the response (or a 304 refreshing it) arrived */
	int64_t initial_age_ms;	  /* corrected initial age at that time */
	int64_t lifetime_ms;	  /* freshness lifetime */
	uint32_t swr_s, sie_s;	  /* stale-while-revalidate, stale-if-error windows */
	bool must_revalidate; /* must-revalidate, proxy-revalidate or s-maxage: never serve stale */
	bool no_cache;	      /* stored, but validated before every use */
	bool has_validator;   /* ETag or Last-Modified */
};

void cache_meta_from(struct cache_meta *m, const struct cache_resp_facts *rs,
		     int64_t request_time_ms, int64_t response_time_ms);
/* Current age in ms (§4.2.3). */
int64_t cache_current_age(const struct cache_meta *m, int64_t now_ms);

/* How a stored object may answer a request. */
enum cache_use {
	CACHE_USE_FRESH,      /* serve it */
	CACHE_USE_STALE_OK,   /* stale, but the client accepts it (max-stale): serve */
	CACHE_USE_STALE_SWR,  /* stale within stale-while-revalidate: serve, refresh once */
	CACHE_USE_REVALIDATE, /* ask the origin (conditionally when there is a validator) */
};

/* Decide for a request with directives rq at now_ms (§4, §4.2.4, §5.2.1,
 * RFC 5861). `grace_ms` extends nothing here (it is for errors only). */
enum cache_use cache_use(const struct cache_meta *m, const struct cache_cc *rq, int64_t now_ms);

/* May the stale object answer when the origin failed (5xx, connect error,
 * timeout)? stale-if-error from the response or the request (RFC 5861), or
 * the gateway's grace period; never for must-revalidate objects. */
bool cache_stale_on_error(const struct cache_meta *m, const struct cache_cc *rq, int64_t grace_ms,
			  int64_t now_ms);

/* Weak comparison of an If-None-Match list with an entity tag (RFC 9110
 * §13.1.2): true when "*" or any listed tag matches weakly. */
bool cache_etag_match(const char *inm, size_t inm_len, const char *etag, size_t etag_len);

/* Weak comparison of two entity tags (RFC 9110 §8.8.3.2: W/ ignored). */
bool cache_etag_weak_eq(const char *a, size_t an, const char *b, size_t bn);

/* Normalise a request target's path+query for the key: percent-encodings
 * get upper case hex (RFC 3986 §6.2.2.1) and are never decoded — not even
 * unreserved characters: the key must name what the origin is sent ("%7E"
 * and "~" are two keys). Writes at most cap bytes; returns the length or
 * -1 when it does not fit. */
int cache_norm_path(const char *p, size_t n, char *out, size_t cap);
/* Normalise a host for the key: lower case, no trailing dot, no default
 * port (":80"). Returns the length or -1. */
int cache_norm_host(const char *p, size_t n, char *out, size_t cap);

#endif
