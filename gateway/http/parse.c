/* parse.c — strict, incremental HTTP/1.1 head parsing and the chunked decoder.
 *
 * The head parsers re-scan the whole buffer on every call (picohttpparser's
 * model): no state survives between calls, so a half-parsed head can never
 * disagree with a re-parse. Byte classes are table lookups; the long runs (the
 * request target, field values) are skipped eight bytes at a time with a SWAR
 * test, falling back to the tables only on the word that holds the stop byte.
 * Every read is bounded by `end` (itself clamped to the configured limits), so
 * nothing is read at or past buf + len.
 */
#include "http/parse.h"

#include <limits.h>
#include <string.h>
#include <strings.h>

/* ---- byte classes ------------------------------------------------------- */

/* tchar (RFC 9110 §5.6.2): field names, methods, transfer codings, chunk-ext. */
static const uint8_t tchar[256] = {
	['!'] = 1, ['#'] = 1, ['$'] = 1, ['%'] = 1,	    ['&'] = 1,	       ['\''] = 1,
	['*'] = 1, ['+'] = 1, ['-'] = 1, ['.'] = 1,	    ['^'] = 1,	       ['_'] = 1,
	['`'] = 1, ['|'] = 1, ['~'] = 1, ['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1,
};

/* Request-target bytes: VCHAR and obs-text. Space, controls and DEL end or
 * break the target. '#' is excluded: a fragment is never part of a request. */
static const uint8_t target_char[256] = {
	[0x21 ... 0x22] = 1,
	[0x24 ... 0x7e] = 1,
	[0x80 ... 0xff] = 1,
};

/* field-value / reason-phrase bytes: HTAB, SP, VCHAR, obs-text. */
static const uint8_t value_char[256] = {
	['\t'] = 1,
	[0x20 ... 0x7e] = 1,
	[0x80 ... 0xff] = 1,
};

/* uri-host [":" port] (RFC 3986 reg-name / IP-literal / IPv4 + port). No '@':
 * userinfo is refused (RFC 9110 §4.2.4), and no '/', '?', '#', space. */
static const uint8_t authority_char[256] = {
	['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1, ['-'] = 1, ['.'] = 1,	['_'] = 1,
	['~'] = 1,	   ['!'] = 1,	      ['$'] = 1,	 ['&'] = 1, ['\''] = 1, ['('] = 1,
	[')'] = 1,	   ['*'] = 1,	      ['+'] = 1,	 [','] = 1, [';'] = 1,	['='] = 1,
	[':'] = 1,	   ['['] = 1,	      [']'] = 1,	 ['%'] = 1,
};

/* Hex digit value + 1 (0 = not a hex digit). */
static const uint8_t hex_val[256] = {
	['0'] = 1,  ['1'] = 2,	['2'] = 3,  ['3'] = 4,	['4'] = 5,  ['5'] = 6,
	['6'] = 7,  ['7'] = 8,	['8'] = 9,  ['9'] = 10, ['a'] = 11, ['b'] = 12,
	['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16, ['A'] = 11, ['B'] = 12,
	['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

/* quoted-string body (qdtext): HTAB, SP, 0x21, 0x23-0x5B, 0x5D-0x7E, obs-text. */
static const uint8_t qd_char[256] = {
	['\t'] = 1,	     [0x20 ... 0x21] = 1, [0x23 ... 0x5b] = 1,
	[0x5d ... 0x7e] = 1, [0x80 ... 0xff] = 1,
};

#define U8(c) ((uint8_t)(c))
#define IS_WS(c) ((c) == ' ' || (c) == '\t')

/* SWAR (eight bytes per step): nonzero iff some byte of x is < n (n <= 128),
 * or equal to 0x7f. Exact as a boolean; the byte loop then finds the spot. */
#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull
#define HAS_LESS(x, n) (((x)-ONES * (n)) & ~(x)&HIGHS)
#define HAS_ZERO(x) (((x)-ONES) & ~(x)&HIGHS)
#define HAS_DEL(x) HAS_ZERO((x) ^ (ONES * 0x7f))

/* Skip bytes >= 0x21 other than DEL (target) — the loop stops at a word
 * that may hold a stop byte; the caller's table loop takes over from there. */
static inline const char *skip_vchar8(const char *p, const char *end)
{
	uint64_t x;

	while (end - p >= 8) {
		memcpy(&x, p, 8);
		if (HAS_LESS(x, 0x21) | HAS_DEL(x) | HAS_ZERO(x ^ (ONES * '#')))
			break;
		p += 8;
	}
	return p;
}

/* Same for field values: stop on a control byte (HTAB included: rare) or DEL. */
static inline const char *skip_value8(const char *p, const char *end)
{
	uint64_t x;

	while (end - p >= 8) {
		memcpy(&x, p, 8);
		if (HAS_LESS(x, 0x20) | HAS_DEL(x))
			break;
		p += 8;
	}
	return p;
}

static inline unsigned char lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? c | 0x20 : c;
}

static bool mem_ieq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (lower(U8(a[i])) != lower(U8(b[i])))
			return false;
	return true;
}

void http_limits_default(struct http_limits *lim)
{
	lim->max_request_line = 8 * 1024;
	lim->max_head_bytes = 32 * 1024;
	lim->max_headers = 100;
}

int http_hex_digit(char c)
{
	return (int)hex_val[(unsigned char)c] - 1;
}

bool http_str_eq(struct http_str s, const char *lit)
{
	size_t n = strlen(lit);

	return s.len == n && mem_ieq(s.p, lit, n);
}

const struct http_header *http_find_header(const struct http_header *h, unsigned n,
					   const char *name)
{
	size_t nl = strlen(name);

	for (unsigned i = 0; i < n; i++)
		if (h[i].name.len == nl && mem_ieq(h[i].name.p, name, nl))
			return &h[i];
	return NULL;
}

/* Iterate the elements of a comma-separated list (RFC 9110 §5.6.1): each call
 * yields the next element with OWS trimmed (possibly empty). */
struct list_iter {
	const char *p, *end;
};

static bool list_next(struct list_iter *it, struct http_str *el)
{
	const char *s, *e;

	if (!it->p)
		return false;
	s = it->p;
	e = memchr(s, ',', (size_t)(it->end - s));
	if (e)
		it->p = e + 1;
	else {
		e = it->end;
		it->p = NULL;
	}
	while (s < e && IS_WS(*s))
		s++;
	while (e > s && IS_WS(e[-1]))
		e--;
	el->p = s;
	el->len = (size_t)(e - s);
	return true;
}

bool http_named_by_connection(const struct http_header *h, unsigned n, struct http_str name)
{
	char tok[64];

	if (name.len >= sizeof(tok))
		return false;
	memcpy(tok, name.p, name.len);
	tok[name.len] = 0;
	for (unsigned i = 0; i < n; i++)
		if (http_str_eq(h[i].name, "Connection") && http_list_has_token(h[i].value, tok))
			return true;
	return false;
}

bool http_list_has_token(struct http_str value, const char *token)
{
	struct list_iter it = {value.len ? value.p : NULL, value.p + value.len};
	struct http_str el;

	while (list_next(&it, &el))
		if (http_str_eq(el, token))
			return true;
	return false;
}

/* ---- what a request names --------------------------------------------------- */

size_t http_host_key(const struct http_request *h, char *out, size_t cap)
{
	struct http_str hv = h->authority.len ? h->authority : h->host;
	bool v6 = hv.len && hv.p[0] == '[';
	size_t n = 0, i = 0;

	if (!cap)
		return 0;
	for (; i < hv.len; i++) {
		char ch = hv.p[i];
		if (!v6 && ch == ':')
			break; /* the port */
		if (n + 1 >= cap) {
			out[0] = 0; /* did not fit */
			return 0;
		}
		out[n++] = (char)lower((unsigned char)ch);
		if (v6 && ch == ']')
			break; /* [v6]:port → [v6] */
	}
	if (!v6 && n > 1 && out[n - 1] == '.')
		n--;
	out[n] = 0;
	return n;
}

bool http_host_matches(const char *pattern, const char *host)
{
	if (!pattern[0])
		return true;
	if (pattern[0] == '*' && pattern[1] == '.') {
		size_t pl = strlen(pattern + 1), hl = strlen(host);
		return hl > pl && strcasecmp(host + hl - pl, pattern + 1) == 0;
	}
	return strcasecmp(pattern, host) == 0;
}

size_t http_path_resolve(const char *p, size_t len, char *out)
{
	size_t n = 0, o = 0, r = 0, w = 0;

	if (len == 1 && p[0] == '*') {
		out[0] = '*';
		return 1;
	}
	/* 1: decode the path part into out after a leading slash. Decoded
	 * bytes are data, so a decoded '?' does not end the path, but a decoded
	 * '/' does separate segments, as in nginx. */
	out[o++] = '/';
	while (n < len && p[n] != '?' && p[n] != '#') {
		char c = p[n++];
		if (c == '%' && n + 1 < len && http_hex_digit(p[n]) >= 0 &&
		    http_hex_digit(p[n + 1]) >= 0) {
			char d = (char)(http_hex_digit(p[n]) * 16 + http_hex_digit(p[n + 1]));
			if (d) {
				c = d;
				n += 2;
			}
		}
		out[o++] = c;
	}
	/* 2: in place, segment by segment (w <= r always) */
	r = 1;
	w = 0;
	bool trailing = false;
	while (r < o) {
		size_t seg = w, sl;
		out[w++] = '/';
		while (r < o && out[r] == '/')
			r++;
		while (r < o && out[r] != '/')
			out[w++] = out[r++];
		sl = w - seg - 1;
		bool dot = sl == 1 && out[seg + 1] == '.';
		bool dotdot = sl == 2 && out[seg + 1] == '.' && out[seg + 2] == '.';
		trailing = sl == 0 || dot || dotdot;
		if (sl == 0 || dot) {
			w = seg;
		} else if (dotdot) {
			w = seg;
			while (w > 0 && out[w - 1] != '/')
				w--;
			if (w > 0)
				w--; /* the parent's slash */
		}
	}
	if (!w || trailing)
		out[w++] = '/';
	return w;
}

/* ---- header fields (shared by requests and responses) -------------------- */

/* What the fields said about framing and the connection, gathered in the one
 * pass over them so no one re-scans the header array. */
struct field_facts {
	unsigned n_host;
	struct http_str host;
	bool has_cl;
	uint64_t cl;
	unsigned n_te;	      /* Transfer-Encoding fields seen */
	unsigned n_codings;   /* codings across all of them */
	bool te_last_chunked; /* the last coding so far is "chunked" */
	bool te_bad;	      /* chunked not final, or a malformed coding */
	bool conn_close, conn_keep_alive;
	bool expect_continue, expect_other;
	bool has_upgrade;
	bool framing_alias; /* "Content_Length" or "Transfer_Encoding" */
};

#define PARSE_NEED (-2)
#define PARSE_FAIL (-1)

#define FAIL(st, why)                \
	do {                         \
		err->status = (st);  \
		err->reason = (why); \
		return PARSE_FAIL;   \
	} while (0)

static int parse_content_length(struct http_str v, struct field_facts *ff, struct http_error *err)
{
	struct list_iter it = {v.p, v.p + v.len};
	struct http_str el;

	/* An empty value is not 1*DIGIT; the iterator would yield one empty element. */
	while (list_next(&it, &el)) {
		uint64_t n = 0;

		if (el.len == 0)
			FAIL(400, "invalid Content-Length");
		for (size_t i = 0; i < el.len; i++) {
			unsigned d = U8(el.p[i]) - '0';

			if (d > 9)
				FAIL(400, "invalid Content-Length");
			/* Bodies past 2^63 - 1 are refused: the value must fit off_t. */
			if (n > (UINT64_C(0x7fffffffffffffff) - d) / 10)
				FAIL(400, "Content-Length overflows");
			n = n * 10 + d;
		}
		if (ff->has_cl && ff->cl != n)
			FAIL(400, "conflicting Content-Length values");
		ff->has_cl = true;
		ff->cl = n;
	}
	return 0;
}

static void parse_transfer_encoding(struct http_str v, struct field_facts *ff)
{
	struct list_iter it = {v.p, v.p + v.len};
	struct http_str el;

	ff->n_te++;
	while (list_next(&it, &el)) {
		/* Empty list elements are allowed by the list syntax and skipped. */
		if (el.len == 0)
			continue;
		if (ff->te_last_chunked)
			ff->te_bad = true; /* something after chunked: framing unknowable */
		ff->n_codings++;
		ff->te_last_chunked = http_str_eq(el, "chunked");
		if (!ff->te_last_chunked) {
			/* Any coding we would pass along must at least be a token
			 * (parameters are ";"-separated and not tokens: refused). */
			for (size_t i = 0; i < el.len; i++)
				if (!tchar[U8(el.p[i])])
					ff->te_bad = true;
		}
	}
}

static bool authority_ok(struct http_str a)
{
	for (size_t i = 0; i < a.len; i++)
		if (!authority_char[U8(a.p[i])])
			return false;
	return true;
}

/* Is `name` (of length n) `lit` with some '-' written as '_'? CGI-style
 * servers map both to the same variable, so such a field would frame the
 * body for them while the gateway ignores it. */
static bool underscore_alias(const char *name, size_t n, const char *lit)
{
	bool underscore = false;

	for (size_t i = 0; i < n; i++) {
		if (name[i] == '_' && lit[i] == '-')
			underscore = true;
		else if (lower(U8(name[i])) != U8(lit[i]))
			return false;
	}
	return underscore;
}

/* The fields whose meaning the parser derives. Dispatch on length first, so
 * most fields cost one switch and no comparison. */
static int note_field(struct http_str name, struct http_str value, struct field_facts *ff,
		      struct http_error *err)
{
	switch (name.len) {
	case 4:
		if (mem_ieq(name.p, "host", 4)) {
			ff->n_host++;
			ff->host = value;
		}
		break;
	case 6:
		if (mem_ieq(name.p, "expect", 6)) {
			if (http_str_eq(value, "100-continue"))
				ff->expect_continue = true;
			else
				ff->expect_other = true;
		}
		break;
	case 7:
		if (mem_ieq(name.p, "upgrade", 7))
			ff->has_upgrade = true;
		break;
	case 10:
		if (mem_ieq(name.p, "connection", 10)) {
			if (http_list_has_token(value, "close"))
				ff->conn_close = true;
			if (http_list_has_token(value, "keep-alive"))
				ff->conn_keep_alive = true;
		}
		break;
	case 14:
		if (mem_ieq(name.p, "content-length", 14))
			return parse_content_length(value, ff, err);
		ff->framing_alias |= underscore_alias(name.p, 14, "content-length");
		break;
	case 17:
		if (mem_ieq(name.p, "transfer-encoding", 17))
			parse_transfer_encoding(value, ff);
		else
			ff->framing_alias |= underscore_alias(name.p, 17, "transfer-encoding");
		break;
	}
	return 0;
}

/* Parse header field lines from *pp up to and including the empty line.
 * `end` is already clamped to the head limit. Returns 0 with *pp past the
 * empty line, PARSE_NEED when `end` came first, or PARSE_FAIL. */
static int parse_fields(const char **pp, const char *end, struct http_header *hdrs, unsigned cap,
			unsigned *n_out, struct field_facts *ff, struct http_error *err)
{
	const char *p = *pp;
	unsigned n = 0;

	for (;;) {
		const char *name, *name_end, *vs, *ve;

		if (p == end)
			return PARSE_NEED;
		if (*p == '\r') {
			if (p + 1 == end)
				return PARSE_NEED;
			if (p[1] != '\n')
				FAIL(400, "bare CR in header");
			*pp = p + 2;
			*n_out = n;
			return 0;
		}
		name = p;
		while (p < end && tchar[U8(*p)])
			p++;
		if (p == end)
			return PARSE_NEED;
		if (*p != ':') {
			if (p == name) {
				if (*p == '\n')
					FAIL(400, "bare LF in header");
				if (IS_WS(*p))
					FAIL(400, "obs-fold (line folding) in header");
				FAIL(400, "invalid header field name");
			}
			if (IS_WS(*p))
				FAIL(400, "whitespace between field name and colon");
			FAIL(400, "invalid header field name");
		}
		if (p == name)
			FAIL(400, "empty header field name");
		name_end = p++;
		while (p < end && IS_WS(*p))
			p++;
		vs = p;
		for (;;) {
			const char *w;

			p = skip_value8(p, end);
			w = end - p > 8 ? p + 8 : end;
			while (p < w && value_char[U8(*p)])
				p++;
			if (p < w || p == end)
				break;
			/* the word held only HTAB: back to eight at a time */
		}
		if (p == end)
			return PARSE_NEED;
		if (*p != '\r') {
			if (*p == '\n')
				FAIL(400, "bare LF in header");
			FAIL(400, "invalid character in header value");
		}
		if (p + 1 == end)
			return PARSE_NEED;
		if (p[1] != '\n')
			FAIL(400, "bare CR in header");
		ve = p;
		while (ve > vs && IS_WS(ve[-1]))
			ve--;
		if (n >= cap)
			FAIL(431, "too many header fields");
		hdrs[n].name.p = name;
		hdrs[n].name.len = (size_t)(name_end - name);
		hdrs[n].value.p = vs;
		hdrs[n].value.len = (size_t)(ve - vs);
		if (note_field(hdrs[n].name, hdrs[n].value, ff, err) < 0)
			return PARSE_FAIL;
		n++;
		p += 2;
	}
}

/* Check what is there of an HTTP-version ("HTTP/" DIGIT "." DIGIT). `avail`
 * may be short: a prefix that can still become valid is 0. A major version
 * other than 1 is "unsupported" (a request gets 505, RFC 9110 §15.6.6);
 * HTTP/1.2 to 1.9 are read as 1.1, the highest minor we implement (RFC 9110
 * §2.5, as nginx does); anything else is "malformed". "unsupported" is only
 * decided once all eight bytes are there, so a prefix of the input never
 * gives a different error than the whole. Returns 0 (with *minor set once
 * known) or PARSE_FAIL. */
static int check_version(const char *p, size_t avail, int *minor, int status,
			 struct http_error *err)
{
	static const char pre[] = "HTTP/";
	size_t n = avail < 8 ? avail : 8;

	for (size_t i = 0; i < n; i++) {
		bool ok = i < 5	   ? p[i] == pre[i]
			  : i == 6 ? p[i] == '.'
				   : p[i] >= '0' && p[i] <= '9';

		if (!ok)
			FAIL(status, "malformed HTTP version");
	}
	if (n == 8) {
		if (p[5] != '1')
			FAIL(status == 400 ? 505 : status, "unsupported HTTP version");
		*minor = p[7] == '0' ? 0 : 1;
	}
	return 0;
}

/* Clamp a limit to the bytes available. */
static inline const char *clamp(const char *from, size_t lim, const char *end)
{
	return (size_t)(end - from) > lim ? from + lim : end;
}

static const char slash[] = "/";

/* Classify the request-target (RFC 9112 §3.2) and fill path/authority. */
static int parse_target(struct http_request *req, struct http_error *err)
{
	const char *t = req->target.p;
	size_t tl = req->target.len;

	if (t[0] == '/') {
		if (req->is_connect)
			FAIL(400, "CONNECT needs an authority-form target");
		req->path = req->target;
		return 0;
	}
	if (tl == 1 && t[0] == '*') {
		if (req->method.len != 7 || memcmp(req->method.p, "OPTIONS", 7) != 0)
			FAIL(400, "asterisk-form target without OPTIONS");
		req->path = req->target;
		return 0;
	}
	if (req->is_connect) {
		const char *colon = memchr(t, ':', tl);

		if (!authority_ok(req->target) || !colon || colon == t || colon + 1 == t + tl)
			FAIL(400, "invalid authority-form target");
		req->authority = req->target;
		return 0;
	}
	size_t skip = 0;

	if (tl >= 7 && mem_ieq(t, "http://", 7))
		skip = 7;
	else if (tl >= 8 && mem_ieq(t, "https://", 8))
		skip = 8;
	else
		FAIL(400, "invalid request target");

	const char *a = t + skip, *e = t + tl, *q = a;

	while (q < e && *q != '/' && *q != '?')
		q++;
	req->authority.p = a;
	req->authority.len = (size_t)(q - a);
	if (req->authority.len == 0 || !authority_ok(req->authority))
		FAIL(400, "invalid authority in absolute-form target");
	if (q == e) {
		/* "http://host": the origin-form equivalent is "/" (RFC 9112
		 * §3.2.1); the one view that is not inside the caller's buffer. */
		req->path.p = slash;
		req->path.len = 1;
	} else if (*q == '?') {
		/* "http://host?q" would need a synthesized "/?q"; refused
		 * rather than handing on a path that does not start with '/'. */
		FAIL(400, "absolute-form target with a query but no path");
	} else {
		req->path.p = q;
		req->path.len = (size_t)(e - q);
	}
	return 0;
}

int http_parse_request(const char *buf, size_t len, struct http_request *req,
		       const struct http_limits *lim, struct http_error *err)
{
	const char *p = buf, *end = buf + len, *line, *rl_end, *head_end;
	struct field_facts ff;
	unsigned cap;
	int rc;

	/* The result is an int: a head never exceeds INT_MAX bytes. */
	size_t head_max = lim->max_head_bytes < INT_MAX ? lim->max_head_bytes : INT_MAX;

	memset(&ff, 0, sizeof(ff));
	req->method = req->target = req->path = req->authority = req->host = (struct http_str){0};
	req->minor_version = -1;
	req->n_headers = 0;
	req->body = HTTP_BODY_NONE;
	req->content_length = 0;
	req->keep_alive = req->expect_continue = req->is_head = req->is_connect = false;
	req->has_upgrade = false;
	err->status = 0;
	err->reason = NULL;

	head_end = clamp(buf, head_max, end);
	/* RFC 9112 §2.2: empty lines before the request line are ignored
	 * (clients sometimes add CRLF after a POST body). */
	while (head_end - p >= 2 && p[0] == '\r' && p[1] == '\n')
		p += 2;
	line = p;
	rl_end = clamp(line, lim->max_request_line, head_end);

	/* method SP */
	while (p < rl_end && tchar[U8(*p)])
		p++;
	if (p == rl_end)
		goto line_short;
	if (*p != ' ' || p == line) {
		if (p == line && *p == '\r' && p + 1 == rl_end)
			goto line_short;
		if (*p == '\n')
			FAIL(400, "bare LF in request line");
		if (*p == '\r')
			FAIL(400, p == line ? "bare CR in request line" : "malformed request line");
		FAIL(400, "malformed request line");
	}
	req->method.p = line;
	req->method.len = (size_t)(p - line);
	if (req->method.len == 4 && memcmp(line, "HEAD", 4) == 0)
		req->is_head = true;
	else if (req->method.len == 7 && memcmp(line, "CONNECT", 7) == 0)
		req->is_connect = true;
	p++;

	/* request-target SP */
	req->target.p = p;
	p = skip_vchar8(p, rl_end);
	while (p < rl_end && target_char[U8(*p)])
		p++;
	if (p == rl_end)
		goto line_short;
	if (*p != ' ') {
		if (p == req->target.p)
			FAIL(400, "malformed request line");
		if (*p == '#')
			FAIL(400, "fragment in request target");
		FAIL(400, "invalid character in request target");
	}
	if (p == req->target.p)
		FAIL(400, "empty request target");
	req->target.len = (size_t)(p - req->target.p);
	p++;

	/* HTTP-version CRLF */
	{
		size_t avail = (size_t)(rl_end - p);

		if (check_version(p, avail, &req->minor_version, 400, err) < 0)
			return PARSE_FAIL;
		if (avail > 8 && p[8] != '\r')
			FAIL(400,
			     p[8] == '\n' ? "bare LF in request line" : "malformed request line");
		if (avail > 9 && p[9] != '\n')
			FAIL(400, "bare CR in request line");
		if (avail < 10)
			goto line_short;
		p += 10;
	}
	if (parse_target(req, err) < 0)
		return PARSE_FAIL;

	cap = req->max_headers < lim->max_headers ? req->max_headers : lim->max_headers;
	rc = parse_fields(&p, head_end, req->headers, cap, &req->n_headers, &ff, err);
	if (rc == PARSE_NEED) {
		if (len >= head_max)
			FAIL(431, "request header section too large");
		return PARSE_NEED;
	}
	if (rc < 0)
		return rc;

	/* Whole-head rules, in order of how badly they break framing. */
	if (ff.n_host > 1)
		FAIL(400, "more than one Host field");
	if (req->minor_version == 1 && ff.n_host == 0)
		FAIL(400, "HTTP/1.1 request without Host");
	if (ff.n_host && !authority_ok(ff.host))
		FAIL(400, "invalid Host");
	if (ff.framing_alias)
		FAIL(400, "Content-Length or Transfer-Encoding spelled with '_'");
	if (ff.n_te) {
		if (req->minor_version == 0)
			FAIL(400, "Transfer-Encoding in an HTTP/1.0 request");
		if (ff.has_cl)
			FAIL(400, "both Content-Length and Transfer-Encoding");
		if (ff.te_bad || !ff.te_last_chunked)
			FAIL(400, "chunked is not the final transfer coding");
		if (ff.n_codings > 1)
			FAIL(501, "unsupported transfer coding");
		req->body = HTTP_BODY_CHUNKED;
	} else if (ff.has_cl) {
		req->body = HTTP_BODY_LENGTH;
		req->content_length = ff.cl;
	}
	if (ff.expect_other)
		FAIL(417, "unsupported expectation");
	/* An HTTP/1.0 client does not know 100 (Continue): ignore its Expect. */
	req->expect_continue = ff.expect_continue && req->minor_version == 1;
	req->host = ff.host;
	req->has_upgrade = ff.has_upgrade;
	if (req->minor_version == 1)
		req->keep_alive = !ff.conn_close;
	else
		req->keep_alive = ff.conn_keep_alive && !ff.conn_close;
	return (int)(p - buf);

line_short:
	/* The request line did not end inside rl_end: more bytes, or a limit. */
	if ((size_t)(rl_end - line) >= lim->max_request_line)
		FAIL(414, "request line too long");
	if (rl_end != end || len >= head_max)
		FAIL(431, "request header section too large");
	return PARSE_NEED;
}

int http_parse_response(const char *buf, size_t len, struct http_response *res,
			bool request_was_head, const struct http_limits *lim,
			struct http_error *err)
{
	const char *p = buf, *end = buf + len, *rl_end, *head_end;
	struct field_facts ff;
	size_t avail;
	unsigned cap;
	int rc;

	size_t head_max = lim->max_head_bytes < INT_MAX ? lim->max_head_bytes : INT_MAX;

	memset(&ff, 0, sizeof(ff));
	res->minor_version = -1;
	res->status = 0;
	res->reason = (struct http_str){0};
	res->n_headers = 0;
	res->body = HTTP_BODY_NONE;
	res->content_length = 0;
	res->keep_alive = false;
	res->has_content_length = false;
	err->status = 0;
	err->reason = NULL;

	head_end = clamp(buf, head_max, end);
	rl_end = clamp(buf, lim->max_request_line, head_end);

	/* HTTP-version SP 3DIGIT [SP reason-phrase] CRLF. A missing SP before
	 * an empty reason is common enough upstream to accept. */
	avail = (size_t)(rl_end - p);
	if (check_version(p, avail, &res->minor_version, 502, err) < 0)
		return PARSE_FAIL;
	if (avail > 8 && p[8] != ' ')
		FAIL(502, "malformed status line");
	for (size_t i = 9; i < 12 && i < avail; i++)
		if (p[i] < '0' || p[i] > '9' || (i == 9 && p[i] == '0'))
			FAIL(502, "invalid status code");
	if (avail < 13)
		goto line_short;
	res->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	p += 12;
	if (*p == ' ') {
		p++;
		res->reason.p = p;
		while (p < rl_end && value_char[U8(*p)])
			p++;
		res->reason.len = (size_t)(p - res->reason.p);
	} else {
		res->reason.p = p;
	}
	if (p == rl_end)
		goto line_short;
	if (*p != '\r')
		FAIL(502,
		     *p == '\n' ? "bare LF in status line" : "invalid character in status line");
	if (p + 1 == rl_end)
		goto line_short;
	if (p[1] != '\n')
		FAIL(502, "bare CR in status line");
	p += 2;

	cap = res->max_headers < lim->max_headers ? res->max_headers : lim->max_headers;
	rc = parse_fields(&p, head_end, res->headers, cap, &res->n_headers, &ff, err);
	if (rc == PARSE_NEED) {
		if (len >= head_max)
			FAIL(502, "response header section too large");
		return PARSE_NEED;
	}
	if (rc < 0) {
		err->status = 502; /* whatever a request would get, upstream faults are 502 */
		return rc;
	}

	res->has_content_length = ff.has_cl;
	if (ff.n_te) {
		if (ff.has_cl)
			FAIL(502, "both Content-Length and Transfer-Encoding");
		if (res->minor_version == 0)
			FAIL(502, "Transfer-Encoding in an HTTP/1.0 response");
		if (ff.te_bad || !ff.te_last_chunked || ff.n_codings > 1)
			FAIL(502, "unsupported transfer coding");
	}
	if (res->minor_version == 1)
		res->keep_alive = !ff.conn_close;
	else
		res->keep_alive = ff.conn_keep_alive && !ff.conn_close;

	/* A 204 that announces a body (RFC 9110 §8.6 and RFC 9112 §6.1 forbid
	 * both fields on it) may well send one: those bytes would be read as
	 * the next response on a reused connection. */
	if (res->status == 204 && (ff.n_te || (ff.has_cl && ff.cl)))
		res->keep_alive = false;
	if (request_was_head || res->status < 200 || res->status == 204 || res->status == 304)
		res->body = HTTP_BODY_NONE;
	else if (ff.n_te)
		res->body = HTTP_BODY_CHUNKED;
	else if (ff.has_cl) {
		res->body = HTTP_BODY_LENGTH;
		res->content_length = ff.cl;
	} else {
		res->body = HTTP_BODY_UNTIL_CLOSE;
		res->keep_alive = false;
	}
	return (int)(p - buf);

line_short:
	if ((size_t)(rl_end - buf) >= lim->max_request_line)
		FAIL(502, "status line too long");
	if (rl_end != end || len >= head_max)
		FAIL(502, "response header section too large");
	return PARSE_NEED;
}

/* ---- chunked transfer coding (RFC 9112 §7.1) ------------------------------ */

enum chunked_state {
	CK_SIZE_START = 0, /* first hex digit of chunk-size */
	CK_SIZE,	   /* more hex digits, or what follows them */
	CK_EXT_SEMI,	   /* BWS that must end in ';' */
	CK_EXT_NAME_START, /* BWS, then the first tchar of chunk-ext-name */
	CK_EXT_NAME,
	CK_EXT_EQ,	  /* BWS after the name: '=' or ';' */
	CK_EXT_VAL_START, /* BWS, then a token or a quoted-string */
	CK_EXT_VAL_TOKEN,
	CK_EXT_VAL_QUOTED,
	CK_EXT_VAL_QESC, /* after a backslash inside the quoted-string */
	CK_EXT_VAL_END,	 /* after the closing quote */
	CK_SIZE_LF,	 /* CR seen at the end of the size line */
	CK_DATA,
	CK_DATA_CR,
	CK_DATA_LF,
	CK_TRAILER_START, /* a trailer field line or the final CRLF */
	CK_TRAILER_NAME,
	CK_TRAILER_VALUE,
	CK_TRAILER_LF,
	CK_FINAL_LF,
	CK_DONE,
	CK_ERROR,
};

/* A chunk-size line (digits and extensions) may be this long: bounds the
 * work an endless extension can cause. */
#define CHUNK_LINE_MAX 4096

void http_chunked_init(struct http_chunked *d)
{
	memset(d, 0, sizeof(*d));
	d->state = CK_SIZE_START;
	d->max_trailer_bytes = 8 * 1024;
}

#define CK_FAIL(why)                 \
	do {                         \
		d->state = CK_ERROR; \
		err->status = 400;   \
		err->reason = (why); \
		return -1;           \
	} while (0)

ssize_t http_chunked_feed(struct http_chunked *d, const char *buf, size_t len,
			  struct http_str *payload, struct http_error *err)
{
	const char *p = buf, *end = buf + len;

	payload->p = NULL;
	payload->len = 0;
	if (d->state == CK_ERROR) {
		err->status = 400;
		err->reason = "chunked decoder already failed";
		return -1;
	}
	while (p < end) {
		unsigned char c = U8(*p);

		switch (d->state) {
		case CK_DATA: {
			size_t n = (size_t)(end - p);

			if (n > d->remaining)
				n = (size_t)d->remaining;
			payload->p = p;
			payload->len = n;
			d->remaining -= n;
			d->payload_total += n;
			p += n;
			if (d->remaining == 0)
				d->state = CK_DATA_CR;
			/* one span per call: the caller deals with it first */
			return p - buf;
		}
		case CK_SIZE_START:
			if (!hex_val[c])
				CK_FAIL(c == '\n' ? "bare LF in chunked body"
						  : "invalid chunk size");
			d->remaining = hex_val[c] - 1u;
			d->ndigits = 1;
			d->line_len = 1;
			d->state = CK_SIZE;
			p++;
			continue;
		case CK_DATA_CR:
			if (c != '\r')
				CK_FAIL("missing CRLF after chunk data");
			d->state = CK_DATA_LF;
			p++;
			continue;
		case CK_DATA_LF:
			if (c != '\n')
				CK_FAIL("missing CRLF after chunk data");
			d->state = CK_SIZE_START;
			p++;
			continue;
		case CK_DONE:
			return p - buf;
		default:
			break;
		}

		/* The size line (with extensions) and the trailer section. */
		if (d->state <= CK_SIZE_LF && ++d->line_len > CHUNK_LINE_MAX)
			CK_FAIL("chunk extension too long");
		/* Trailer field lines count against the limit; the final CRLF does
		 * not, so max_trailer_bytes = 0 means "no trailers". */
		if (d->state >= CK_TRAILER_START && d->state != CK_FINAL_LF &&
		    !(d->state == CK_TRAILER_START && c == '\r') &&
		    ++d->trailer_bytes > d->max_trailer_bytes)
			CK_FAIL("chunked trailer section too large");

		switch (d->state) {
		case CK_SIZE:
			if (hex_val[c]) {
				/* Refuse sizes of 2^63 and up: one more digit would overflow. */
				if (d->remaining >> 59)
					CK_FAIL("chunk size overflows");
				d->remaining = (d->remaining << 4) | (hex_val[c] - 1u);
				d->ndigits++;
			} else if (c == ';') {
				d->state = CK_EXT_NAME_START;
			} else if (IS_WS(c)) {
				d->state = CK_EXT_SEMI;
			} else if (c == '\r') {
				d->state = CK_SIZE_LF;
			} else {
				CK_FAIL(c == '\n' ? "bare LF in chunked body"
						  : "invalid chunk size");
			}
			break;
		case CK_EXT_SEMI:
			if (c == ';')
				d->state = CK_EXT_NAME_START;
			else if (!IS_WS(c))
				CK_FAIL("invalid chunk extension");
			break;
		case CK_EXT_NAME_START:
			if (tchar[c])
				d->state = CK_EXT_NAME;
			else if (!IS_WS(c))
				CK_FAIL("invalid chunk extension");
			break;
		case CK_EXT_NAME:
			if (tchar[c])
				break;
			if (c == ';')
				d->state = CK_EXT_NAME_START;
			else if (c == '=')
				d->state = CK_EXT_VAL_START;
			else if (IS_WS(c))
				d->state = CK_EXT_EQ;
			else if (c == '\r')
				d->state = CK_SIZE_LF;
			else
				CK_FAIL(c == '\n' ? "bare LF in chunked body"
						  : "invalid chunk extension");
			break;
		case CK_EXT_EQ:
			if (c == '=')
				d->state = CK_EXT_VAL_START;
			else if (c == ';')
				d->state = CK_EXT_NAME_START;
			else if (!IS_WS(c))
				CK_FAIL("invalid chunk extension");
			break;
		case CK_EXT_VAL_START:
			if (tchar[c])
				d->state = CK_EXT_VAL_TOKEN;
			else if (c == '"')
				d->state = CK_EXT_VAL_QUOTED;
			else if (!IS_WS(c))
				CK_FAIL("invalid chunk extension");
			break;
		case CK_EXT_VAL_TOKEN:
		case CK_EXT_VAL_END:
			if (tchar[c] && d->state == CK_EXT_VAL_TOKEN)
				break;
			if (c == ';')
				d->state = CK_EXT_NAME_START;
			else if (IS_WS(c))
				d->state = CK_EXT_SEMI;
			else if (c == '\r')
				d->state = CK_SIZE_LF;
			else
				CK_FAIL(c == '\n' ? "bare LF in chunked body"
						  : "invalid chunk extension");
			break;
		case CK_EXT_VAL_QUOTED:
			if (c == '"')
				d->state = CK_EXT_VAL_END;
			else if (c == '\\')
				d->state = CK_EXT_VAL_QESC;
			else if (!qd_char[c])
				CK_FAIL("invalid chunk extension");
			break;
		case CK_EXT_VAL_QESC:
			if (!value_char[c])
				CK_FAIL("invalid chunk extension");
			d->state = CK_EXT_VAL_QUOTED;
			break;
		case CK_SIZE_LF:
			if (c != '\n')
				CK_FAIL("bare CR in chunked body");
			d->state = d->remaining ? CK_DATA : CK_TRAILER_START;
			d->trailer_bytes = 0;
			break;
		case CK_TRAILER_START:
			if (c == '\r')
				d->state = CK_FINAL_LF;
			else if (tchar[c])
				d->state = CK_TRAILER_NAME;
			else if (c == '\n')
				CK_FAIL("bare LF in chunked trailer");
			else if (IS_WS(c))
				CK_FAIL("obs-fold in chunked trailer");
			else
				CK_FAIL("invalid chunked trailer field");
			break;
		case CK_TRAILER_NAME:
			if (c == ':')
				d->state = CK_TRAILER_VALUE;
			else if (!tchar[c])
				CK_FAIL("invalid chunked trailer field");
			break;
		case CK_TRAILER_VALUE:
			if (c == '\r')
				d->state = CK_TRAILER_LF;
			else if (!value_char[c])
				CK_FAIL(c == '\n' ? "bare LF in chunked trailer"
						  : "invalid chunked trailer field");
			break;
		case CK_TRAILER_LF:
			if (c != '\n')
				CK_FAIL("bare CR in chunked trailer");
			d->state = CK_TRAILER_START;
			break;
		case CK_FINAL_LF:
			if (c != '\n')
				CK_FAIL("bare CR in chunked trailer");
			d->state = CK_DONE;
			d->done = true;
			return p + 1 - buf;
		default:
			CK_FAIL("chunked decoder in an impossible state");
		}
		p++;
	}
	return p - buf;
}
