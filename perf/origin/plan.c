#include "plan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define XO_PREFIX "x-origin-"
#define XO_PREFIX_LEN 9

/* Values longer than this are refused: they end up in a response head. */
#define MAX_VALUE 4096

void plan_init(struct plan *pl)
{
	memset(pl, 0, sizeof(*pl));
	pl->status = 200;
	pl->size = PLAN_DEFAULT_SIZE;
	pl->chunk = PLAN_DEFAULT_CHUNK;
}

void plan_reset(struct plan *pl)
{
	for (int i = 0; i < PF_COUNT; i++)
		free(pl->field[i]);
	free(pl->hdr);
	plan_init(pl);
}

uint64_t plan_fnv1a(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static struct http_str path_only(struct http_str path)
{
	const char *q = memchr(path.p, '?', path.len);

	if (q)
		path.len = (size_t)(q - path.p);
	return path;
}

static bool str_is(struct http_str s, const char *lit)
{
	size_t n = strlen(lit);

	return s.len == n && memcmp(s.p, lit, n) == 0;
}

bool plan_headers_neutral(const struct http_request *req)
{
	for (unsigned i = 0; i < req->n_headers; i++) {
		const struct http_str *n = &req->headers[i].name;

		if (n->len > XO_PREFIX_LEN && strncasecmp(n->p, XO_PREFIX, XO_PREFIX_LEN) == 0)
			return false;
	}
	return true;
}

bool plan_is_default(const struct http_request *req)
{
	if (memchr(req->path.p, '?', req->path.len))
		return false;
	if (str_is(req->path, "/echo") || str_is(req->path, "/__stats"))
		return false;
	return plan_headers_neutral(req);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Percent-decoding only: '+' stays a plus (values like "application/atom+xml"
 * are common in the fields this sets). Returns the decoded length, or -1. */
static ssize_t url_decode(const char *s, size_t n, char *out)
{
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '%') {
			int hi, lo;

			if (i + 2 >= n)
				return -1;
			hi = hexval(s[i + 1]);
			lo = hexval(s[i + 2]);
			if (hi < 0 || lo < 0)
				return -1;
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else {
			out[o++] = s[i];
		}
	}
	return (ssize_t)o;
}

static int parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 20)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		if (v > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return -1;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return 0;
}

static bool parse_bool(const char *s, size_t n)
{
	return !(n == 0 || (n == 1 && s[0] == '0') || (n == 5 && strncasecmp(s, "false", 5) == 0) ||
		 (n == 2 && strncasecmp(s, "no", 2) == 0));
}

/* Values go into a response head: no CR, LF or NUL (the malformed= kinds are
 * the only way to get a broken head). */
static bool value_ok(const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
			return false;
	return true;
}

static bool name_ok(const char *s, size_t n)
{
	static const char tchar[] = "!#$%&'*+-.^_`|~";

	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      strchr(tchar, c)))
			return false;
	}
	return true;
}

static int set_field(struct plan *pl, enum plan_field f, const char *v, size_t n)
{
	char *s;

	if (!value_ok(v, n))
		return -1;
	s = strndup(v, n);
	if (!s)
		return -1;
	free(pl->field[f]);
	pl->field[f] = s;
	return 0;
}

/* hdr=Name:Value → "Name: Value\r\n" appended to pl->hdr. */
static int add_hdr(struct plan *pl, const char *v, size_t n)
{
	const char *colon = memchr(v, ':', n);
	size_t nlen, vlen, need;
	const char *val;
	char *p;

	if (!colon)
		return -1;
	nlen = (size_t)(colon - v);
	val = colon + 1;
	vlen = n - nlen - 1;
	while (vlen && (*val == ' ' || *val == '\t'))
		val++, vlen--;
	if (!name_ok(v, nlen) || !value_ok(val, vlen))
		return -1;
	need = pl->hdr_len + nlen + vlen + 5;
	p = realloc(pl->hdr, need);
	if (!p)
		return -1;
	pl->hdr = p;
	p += pl->hdr_len;
	memcpy(p, v, nlen);
	p += nlen;
	*p++ = ':';
	*p++ = ' ';
	memcpy(p, val, vlen);
	p += vlen;
	*p++ = '\r';
	*p++ = '\n';
	*p = '\0';
	pl->hdr_len = need - 1;
	return 0;
}

static const struct {
	const char *name;
	enum plan_malformed kind;
} malformed_kinds[] = {
	{"status", MAL_STATUS}, {"cl", MAL_CL}, {"cl_te", MAL_CL_TE}, {"injection", MAL_INJECTION},
	{"chunk", MAL_CHUNK},	{"lf", MAL_LF}, {"short", MAL_SHORT},
};

/* Apply one parameter (value already decoded). Unknown names are ignored so
 * that tests can tag requests freely. */
static int set_param(struct plan *pl, const char *k, size_t kn, const char *v, size_t vn,
		     const char **reason)
{
#define KEY(lit) (kn == sizeof(lit) - 1 && strncasecmp(k, lit, kn) == 0)
#define NUM(dst)                                                 \
	do {                                                     \
		if (parse_u64(v, vn, &(dst)) != 0) {             \
			*reason = "invalid number in parameter"; \
			return -1;                               \
		}                                                \
	} while (0)
	uint64_t n;

	if (KEY("status")) {
		NUM(n);
		if (n < 100 || n > 999) {
			*reason = "status out of range";
			return -1;
		}
		pl->status = (unsigned)n;
	} else if (KEY("size")) {
		NUM(n);
		if (n > PLAN_MAX_SIZE) {
			*reason = "size over 2^40";
			return -1;
		}
		pl->size = n;
	} else if (KEY("delay")) {
		NUM(pl->delay_ms);
	} else if (KEY("chunked")) {
		pl->chunked = parse_bool(v, vn);
	} else if (KEY("chunk")) {
		NUM(n);
		pl->chunk = n ? n : PLAN_DEFAULT_CHUNK;
	} else if (KEY("close")) {
		pl->close = parse_bool(v, vn);
	} else if (KEY("rate")) {
		NUM(pl->rate);
	} else if (KEY("sse")) {
		NUM(pl->sse_events);
		pl->sse = true;
	} else if (KEY("interval")) {
		NUM(pl->interval_ms);
	} else if (KEY("hang")) {
		if (parse_bool(v, vn))
			pl->action = PLAN_HANG;
	} else if (KEY("reset")) {
		if (parse_bool(v, vn))
			pl->action = PLAN_RESET;
	} else if (KEY("drop")) {
		if (parse_bool(v, vn))
			pl->action = PLAN_DROP;
	} else if (KEY("malformed")) {
		size_t i;

		for (i = 0; i < sizeof(malformed_kinds) / sizeof(malformed_kinds[0]); i++)
			if (strlen(malformed_kinds[i].name) == vn &&
			    strncasecmp(malformed_kinds[i].name, v, vn) == 0)
				break;
		if (i == sizeof(malformed_kinds) / sizeof(malformed_kinds[0])) {
			*reason = "unknown malformed kind";
			return -1;
		}
		pl->action = PLAN_MALFORMED;
		pl->malformed = malformed_kinds[i].kind;
	} else if (KEY("hdr")) {
		if (add_hdr(pl, v, vn) != 0) {
			*reason = "invalid hdr parameter";
			return -1;
		}
	} else {
		static const char *const names[PF_COUNT] = {"cc",   "etag",    "lm",
							    "vary", "expires", "ctype"};

		for (int f = 0; f < PF_COUNT; f++) {
			if (kn == strlen(names[f]) && strncasecmp(k, names[f], kn) == 0) {
				if (set_field(pl, (enum plan_field)f, v, vn) != 0) {
					*reason = "invalid header value in parameter";
					return -1;
				}
				break;
			}
		}
	}
	return 0;
#undef KEY
#undef NUM
}

int plan_build(struct plan *pl, const struct http_request *req, const char **reason)
{
	struct http_str path = path_only(req->path);
	const char *q, *end;
	char *dec = NULL;

	if (str_is(path, "/echo"))
		pl->action = PLAN_ECHO;
	else if (str_is(path, "/__stats"))
		pl->action = PLAN_STATS;

	/* Headers first, so that the query overrides them. */
	for (unsigned i = 0; i < req->n_headers; i++) {
		const struct http_header *h = &req->headers[i];

		if (h->name.len <= XO_PREFIX_LEN ||
		    strncasecmp(h->name.p, XO_PREFIX, XO_PREFIX_LEN) != 0)
			continue;
		if (set_param(pl, h->name.p + XO_PREFIX_LEN, h->name.len - XO_PREFIX_LEN,
			      h->value.p, h->value.len, reason) != 0)
			return -1;
	}

	q = memchr(req->path.p, '?', req->path.len);
	if (!q)
		return 0;
	q++;
	end = req->path.p + req->path.len;
	dec = malloc((size_t)(end - q) + 1);
	if (!dec) {
		*reason = "out of memory";
		return -1;
	}
	while (q < end) {
		const char *amp = memchr(q, '&', (size_t)(end - q));
		const char *pe = amp ? amp : end;
		const char *eq = memchr(q, '=', (size_t)(pe - q));
		const char *k = q, *v = eq ? eq + 1 : pe;
		size_t kn = (size_t)((eq ? eq : pe) - q);
		ssize_t vn;

		q = amp ? amp + 1 : end;
		if (kn == 0)
			continue;
		if ((size_t)(pe - v) > MAX_VALUE) {
			*reason = "parameter value too long";
			goto fail;
		}
		vn = url_decode(v, (size_t)(pe - v), dec);
		if (vn < 0) {
			*reason = "bad percent-encoding in query";
			goto fail;
		}
		if (set_param(pl, k, kn, dec, (size_t)vn, reason) != 0)
			goto fail;
	}
	free(dec);
	return 0;
fail:
	free(dec);
	return -1;
}
