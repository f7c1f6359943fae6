#include "http/cache_rules.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* delta-seconds (RFC 9111 §1.2.2): digits; values too large for 32 bits
 * saturate at 2^31 (as the RFC asks). Returns false if not a number. */
static bool delta_seconds(const char *p, size_t n, uint32_t *out)
{
	uint64_t v = 0;

	if (n >= 2 && p[0] == '"' && p[n - 1] == '"') { /* tolerated quoted form */
		p++;
		n -= 2;
	}
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		if (v < (1ULL << 31))
			v = v * 10 + (uint64_t)(p[i] - '0');
	}
	*out = v > (1ULL << 31) ? (1U << 31) : (uint32_t)v;
	return true;
}

static bool name_is(const char *p, size_t n, const char *lit)
{
	return strlen(lit) == n && strncasecmp(p, lit, n) == 0;
}

void cache_cc_parse(struct cache_cc *cc, const char *p, size_t n)
{
	size_t i = 0;

	while (i < n) {
		while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == ','))
			i++;
		size_t ns = i;
		while (i < n && p[i] != '=' && p[i] != ',' && p[i] != ' ' && p[i] != '\t')
			i++;
		const char *name = p + ns;
		size_t nl = i - ns;
		const char *val = NULL;
		size_t vl = 0;
		while (i < n && (p[i] == ' ' || p[i] == '\t'))
			i++;
		if (i < n && p[i] == '=') {
			i++;
			while (i < n && (p[i] == ' ' || p[i] == '\t'))
				i++;
			size_t vs = i;
			if (i < n && p[i] == '"') {
				i++;
				while (i < n && p[i] != '"')
					i += p[i] == '\\' && i + 1 < n ? 2 : 1;
				if (i < n)
					i++;
			} else {
				while (i < n && p[i] != ',' && p[i] != ' ' && p[i] != '\t')
					i++;
			}
			val = p + vs;
			vl = i - vs;
		}
		while (i < n && p[i] != ',')
			i++;
		if (!nl)
			continue;
		uint32_t secs = 0;
		bool ok = val && delta_seconds(val, vl, &secs);
		if (name_is(name, nl, "no-store")) {
			cc->no_store = true;
		} else if (name_is(name, nl, "no-cache")) {
			cc->no_cache = true;
		} else if (name_is(name, nl, "private")) {
			cc->private_ = true;
		} else if (name_is(name, nl, "public")) {
			cc->public_ = true;
		} else if (name_is(name, nl, "must-revalidate")) {
			cc->must_revalidate = true;
		} else if (name_is(name, nl, "proxy-revalidate")) {
			cc->proxy_revalidate = true;
		} else if (name_is(name, nl, "only-if-cached")) {
			cc->only_if_cached = true;
		} else if (name_is(name, nl, "must-understand")) {
			cc->must_understand = true;
		} else if (name_is(name, nl, "max-age")) {
			/* an invalid max-age makes the response stale, and so does a
			 * second one that disagrees (§4.2.1: the first occurrence or
			 * stale; "max-age=0, max-age=60" must not mean 60) */
			if (!ok || (cc->has_max_age && cc->max_age != secs))
				secs = 0;
			cc->has_max_age = true;
			cc->max_age = secs;
		} else if (name_is(name, nl, "s-maxage")) {
			if (ok) {
				if (cc->has_s_maxage && cc->s_maxage != secs)
					secs = 0; /* disagreeing duplicates: stale (§4.2.1) */
				cc->has_s_maxage = true;
				cc->s_maxage = secs;
			}
		} else if (name_is(name, nl, "max-stale")) {
			/* no value: any staleness; an invalid one ("-1", "abc") is
			 * ignored, not read as "any" */
			if (ok || !val) {
				cc->has_max_stale = true;
				cc->max_stale = ok ? secs : 0;
				cc->max_stale_any = !val;
			}
		} else if (name_is(name, nl, "min-fresh")) {
			if (ok) {
				cc->has_min_fresh = true;
				cc->min_fresh = secs;
			}
		} else if (name_is(name, nl, "stale-while-revalidate")) {
			if (ok) {
				cc->has_swr = true;
				cc->swr = secs;
			}
		} else if (name_is(name, nl, "stale-if-error")) {
			if (ok) {
				cc->has_sie = true;
				cc->sie = secs;
			}
		}
	}
}

int64_t cache_age_value(const char *p, size_t n)
{
	uint32_t secs;
	size_t e = 0;

	while (n && (*p == ' ' || *p == '\t')) {
		p++;
		n--;
	}
	while (e < n && p[e] != ',' && p[e] != ' ' && p[e] != '\t')
		e++;
	/* no quotes: Age is a bare delta-seconds */
	if (!e || p[0] == '"' || !delta_seconds(p, e, &secs))
		return -1;
	return secs;
}

/* ---- HTTP-date (RFC 9110 §5.6.7) -------------------------------------------- */

static int month_of(const char *p)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";

	for (int i = 0; i < 12; i++)
		if (strncmp(p, months + i * 3, 3) == 0)
			return i;
	return -1;
}

static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	/* Howard Hinnant's algorithm; m 1..12 */
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static bool num(const char *p, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (p[i] - '0');
	}
	*out = v;
	return true;
}

int64_t cache_http_date(const char *p, size_t n)
{
	char s[64];
	int day, year, hh, mm, ss, mon;

	while (n && (*p == ' ' || *p == '\t')) {
		p++;
		n--;
	}
	while (n && (p[n - 1] == ' ' || p[n - 1] == '\t'))
		n--;
	if (n >= sizeof(s) || n < 24)
		return -1;
	memcpy(s, p, n);
	s[n] = 0;
	const char *comma = strchr(s, ',');
	if (comma && n == 29 && comma == s + 3) {
		/* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
		if (!num(s + 5, 2, &day) || (mon = month_of(s + 8)) < 0 || !num(s + 12, 4, &year) ||
		    !num(s + 17, 2, &hh) || !num(s + 20, 2, &mm) || !num(s + 23, 2, &ss) ||
		    strcmp(s + 25, " GMT") != 0)
			return -1;
	} else if (comma) {
		/* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
		const char *d = comma + 2;
		if (strlen(d) != 22 || !num(d, 2, &day) || (mon = month_of(d + 3)) < 0 ||
		    !num(d + 7, 2, &year) || !num(d + 10, 2, &hh) || !num(d + 13, 2, &mm) ||
		    !num(d + 16, 2, &ss) || strcmp(d + 18, " GMT") != 0)
			return -1;
		year += year < 70 ? 2000 : 1900; /* §5.6.7: 50 years rule, simplified */
	} else if (n == 24) {
		/* asctime: Sun Nov  6 08:49:37 1994 */
		if ((mon = month_of(s + 4)) < 0)
			return -1;
		if (s[8] == ' ') {
			if (!num(s + 9, 1, &day))
				return -1;
		} else if (!num(s + 8, 2, &day)) {
			return -1;
		}
		if (!num(s + 11, 2, &hh) || !num(s + 14, 2, &mm) || !num(s + 17, 2, &ss) ||
		    !num(s + 20, 4, &year))
			return -1;
	} else {
		return -1;
	}
	if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60)
		return -1;
	int64_t days = days_from_civil(year, (unsigned)mon + 1, (unsigned)day);
	return ((days * 86400) + hh * 3600 + mm * 60 + ss) * 1000;
}

size_t cache_http_date_format(int64_t t_s, char *out)
{
	static const char *wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
				   "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	struct tm tm;
	time_t t = (time_t)t_s;

	gmtime_r(&t, &tm);
	return (size_t)snprintf(out, 30, "%s, %02d %s %04d %02d:%02d:%02d GMT", wd[tm.tm_wday],
				tm.tm_mday, mo[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
				tm.tm_sec);
}

/* ---- storing (§3) -------------------------------------------------------------- */

static const char *const nostore_names[CACHE_NOSTORE_MAX] = {
	[CACHE_STORE_OK] = "stored",
	[CACHE_NOSTORE_METHOD] = "method",
	[CACHE_NOSTORE_STATUS] = "status",
	[CACHE_NOSTORE_REQ_NO_STORE] = "request-no-store",
	[CACHE_NOSTORE_NO_STORE] = "no-store",
	[CACHE_NOSTORE_PRIVATE] = "private",
	[CACHE_NOSTORE_AUTHORIZATION] = "authorization",
	[CACHE_NOSTORE_SET_COOKIE] = "set-cookie",
	[CACHE_NOSTORE_VARY_STAR] = "vary-star",
	[CACHE_NOSTORE_NO_FRESHNESS] = "no-freshness",
	[CACHE_NOSTORE_TOO_LARGE] = "too-large",
};

const char *cache_nostore_name(enum cache_nostore why)
{
	return (unsigned)why < CACHE_NOSTORE_MAX ? nostore_names[why] : "unknown";
}

/* Final status codes a cache understands well enough to store (206 needs
 * range support; 304 only refreshes). */
static bool status_storable(int s)
{
	return s >= 200 && s < 600 && s != 206 && s != 304;
}

enum cache_nostore cache_storable(const struct cache_req_facts *rq,
				  const struct cache_resp_facts *rs)
{
	const struct cache_cc *cc = &rs->cc;

	if (!rq->get_or_head || rq->is_head)
		return CACHE_NOSTORE_METHOD;
	if (rq->cc.no_store)
		return CACHE_NOSTORE_REQ_NO_STORE;
	if (!status_storable(rs->status))
		return CACHE_NOSTORE_STATUS;
	if (cc->no_store)
		return CACHE_NOSTORE_NO_STORE;
	if (cc->private_)
		return CACHE_NOSTORE_PRIVATE;
	if (rs->vary_star)
		return CACHE_NOSTORE_VARY_STAR;
	/* §3.5: a request with Authorization is shared only on the response's say-so */
	if (rq->authorization && !cc->public_ && !cc->has_s_maxage && !cc->must_revalidate)
		return CACHE_NOSTORE_AUTHORIZATION;
	if (rs->set_cookie && !cc->public_ && !cc->has_s_maxage)
		return CACHE_NOSTORE_SET_COOKIE;
	if (!cc->has_max_age && !cc->has_s_maxage && !rs->has_expires && !cc->public_)
		return CACHE_NOSTORE_NO_FRESHNESS;
	return CACHE_STORE_OK;
}

int64_t cache_freshness_lifetime(const struct cache_resp_facts *rs, int64_t response_time_ms)
{
	if (rs->cc.has_s_maxage)
		return (int64_t)rs->cc.s_maxage * 1000;
	if (rs->cc.has_max_age)
		return (int64_t)rs->cc.max_age * 1000;
	if (rs->has_expires) {
		if (rs->expires_ms < 0)
			return 0;
		int64_t date = rs->has_date ? rs->date_ms : response_time_ms;
		int64_t l = rs->expires_ms - date;
		return l > 0 ? l : 0;
	}
	return 0;
}

int64_t cache_initial_age(const struct cache_resp_facts *rs, int64_t request_time_ms,
			  int64_t response_time_ms)
{
	int64_t apparent = 0;

	if (rs->has_date && response_time_ms > rs->date_ms)
		apparent = response_time_ms - rs->date_ms;
	int64_t delay = response_time_ms - request_time_ms;
	if (delay < 0)
		delay = 0;
	int64_t corrected = (rs->has_age ? rs->age_s * 1000 : 0) + delay;
	return apparent > corrected ? apparent : corrected;
}

void cache_meta_from(struct cache_meta *m, const struct cache_resp_facts *rs,
		     int64_t request_time_ms, int64_t response_time_ms)
{
	*m = (struct cache_meta){
		.response_time_ms = response_time_ms,
		.initial_age_ms = cache_initial_age(rs, request_time_ms, response_time_ms),
		.lifetime_ms = cache_freshness_lifetime(rs, response_time_ms),
		.swr_s = rs->cc.has_swr ? rs->cc.swr : 0,
		.sie_s = rs->cc.has_sie ? rs->cc.sie : 0,
		/* §5.2.2.10: s-maxage implies proxy-revalidate */
		.must_revalidate =
			rs->cc.must_revalidate || rs->cc.proxy_revalidate || rs->cc.has_s_maxage,
		.no_cache = rs->cc.no_cache,
		.has_validator = rs->has_etag || rs->has_last_modified,
	};
}

int64_t cache_current_age(const struct cache_meta *m, int64_t now_ms)
{
	int64_t resident = now_ms - m->response_time_ms;

	return m->initial_age_ms + (resident > 0 ? resident : 0);
}

enum cache_use cache_use(const struct cache_meta *m, const struct cache_cc *rq, int64_t now_ms)
{
	int64_t age = cache_current_age(m, now_ms);
	int64_t lifetime = m->lifetime_ms;

	if (m->no_cache || rq->no_cache)
		return CACHE_USE_REVALIDATE;
	if (rq->has_max_age && age > (int64_t)rq->max_age * 1000)
		return CACHE_USE_REVALIDATE;
	if (rq->has_min_fresh)
		lifetime -= (int64_t)rq->min_fresh * 1000;
	if (age < lifetime)
		return CACHE_USE_FRESH;
	if (m->must_revalidate)
		return CACHE_USE_REVALIDATE; /* §4.2.4: never serve stale, whatever the client says */
	int64_t stale = age - m->lifetime_ms;
	if (rq->has_max_stale && (rq->max_stale_any || stale <= (int64_t)rq->max_stale * 1000))
		return CACHE_USE_STALE_OK;
	if (m->swr_s && stale <= (int64_t)m->swr_s * 1000)
		return CACHE_USE_STALE_SWR;
	return CACHE_USE_REVALIDATE;
}

bool cache_stale_on_error(const struct cache_meta *m, const struct cache_cc *rq, int64_t grace_ms,
			  int64_t now_ms)
{
	if (m->must_revalidate)
		return false;
	int64_t stale = cache_current_age(m, now_ms) - m->lifetime_ms;
	if (stale < 0)
		stale = 0;
	int64_t window = grace_ms;
	if ((int64_t)m->sie_s * 1000 > window)
		window = (int64_t)m->sie_s * 1000;
	if (rq->has_sie && (int64_t)rq->sie * 1000 > window)
		window = (int64_t)rq->sie * 1000;
	return stale <= window;
}

/* ---- validators ------------------------------------------------------------- */

static void opaque(const char *p, size_t n, const char **o, size_t *on)
{
	if (n >= 2 && p[0] == 'W' && p[1] == '/') {
		p += 2;
		n -= 2;
	}
	*o = p;
	*on = n;
}

bool cache_etag_weak_eq(const char *a, size_t an, const char *b, size_t bn)
{
	const char *ao, *bo;
	size_t aon, bon;

	while (an && (a[an - 1] == ' ' || a[an - 1] == '\t'))
		an--;
	while (bn && (b[bn - 1] == ' ' || b[bn - 1] == '\t'))
		bn--;
	opaque(a, an, &ao, &aon);
	opaque(b, bn, &bo, &bon);
	return aon && aon == bon && memcmp(ao, bo, aon) == 0;
}

bool cache_etag_match(const char *inm, size_t inm_len, const char *etag, size_t etag_len)
{
	const char *eo;
	size_t en;

	opaque(etag, etag_len, &eo, &en);
	size_t i = 0;
	while (i < inm_len) {
		while (i < inm_len && (inm[i] == ' ' || inm[i] == '\t' || inm[i] == ','))
			i++;
		size_t s = i;
		if (i + 1 < inm_len && inm[i] == 'W' && inm[i + 1] == '/')
			i += 2;
		if (i < inm_len && inm[i] == '"') {
			i++;
			while (i < inm_len && inm[i] != '"')
				i++;
			if (i < inm_len)
				i++;
		} else {
			while (i < inm_len && inm[i] != ',' && inm[i] != ' ')
				i++;
		}
		const char *t;
		size_t tn;
		opaque(inm + s, i - s, &t, &tn);
		if (tn == 1 && t[0] == '*')
			return true;
		if (tn && tn == en && memcmp(t, eo, en) == 0)
			return true;
	}
	return false;
}

/* ---- key normalisation ----------------------------------------------------- */

int cache_norm_path(const char *p, size_t n, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		char ch = p[i];
		if (ch == '%' && i + 2 < n + 0 && http_hex_digit(p[i + 1]) >= 0 &&
		    http_hex_digit(p[i + 2]) >= 0) {
			/* Never decoded, even unreserved ones (RFC 3986 §6.2.2.2 would
			 * allow "%7E" = "~"): the origin gets the target as the client
			 * wrote it, and one that does not decode may answer "/%7Ea"
			 * differently (a cacheable 404) — stored under "/~a"'s key,
			 * that poisons it. Hex case is safe (§6.2.2.1). */
			int v = http_hex_digit(p[i + 1]) * 16 + http_hex_digit(p[i + 2]);
			if (o + 3 > cap)
				return -1;
			out[o++] = '%';
			out[o++] = hex[v >> 4];
			out[o++] = hex[v & 15];
			i += 2;
			continue;
		}
		if (o + 1 > cap)
			return -1;
		out[o++] = ch;
	}
	return (int)o;
}

int cache_norm_host(const char *p, size_t n, char *out, size_t cap)
{
	size_t o = 0;

	if (n > 3 && memcmp(p + n - 3, ":80", 3) == 0 && p[n - 4] != ':')
		n -= 3;
	if (n && p[n - 1] == '.')
		n--;
	if (n > cap)
		return -1;
	for (size_t i = 0; i < n; i++)
		out[o++] = (char)tolower((unsigned char)p[i]);
	return (int)o;
}
