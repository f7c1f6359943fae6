/* json.c — recursive-descent RFC 8259 reader (see json.h). */
#include "control/json.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 64

struct rd {
	const char *s;
	size_t len, pos;
	unsigned depth;
	char *err;
	size_t errlen;
	bool failed;
};

static int __attribute__((format(printf, 2, 3))) fail(struct rd *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (r->failed)
		return -1;
	r->failed = true;
	n = snprintf(r->err, r->errlen, "offset %zu: ", r->pos);
	if (n >= 0 && (size_t)n < r->errlen) {
		va_start(ap, fmt);
		vsnprintf(r->err + n, r->errlen - (size_t)n, fmt, ap);
		va_end(ap);
	}
	return -1;
}

static void skip_ws(struct rd *r)
{
	while (r->pos < r->len && (r->s[r->pos] == ' ' || r->s[r->pos] == '\t' ||
				   r->s[r->pos] == '\n' || r->s[r->pos] == '\r'))
		r->pos++;
}

static int peek(struct rd *r)
{
	return r->pos < r->len ? (unsigned char)r->s[r->pos] : -1;
}

static void free_inner(struct json *v)
{
	if (!v)
		return;
	free(v->str);
	for (size_t i = 0; i < v->n; i++) {
		free_inner(&v->items[i]);
		if (v->keys)
			free(v->keys[i]);
	}
	free(v->items);
	free(v->keys);
}

void json_free(struct json *v)
{
	free_inner(v);
	free(v);
}

static size_t utf8_valid_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];

	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
	if (c >= 0xe0 && c <= 0xef) {
		unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
		return n >= 3 && s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
	}
	if (c >= 0xf0 && c <= 0xf4) {
		unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
		return n >= 4 && s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 &&
				       (s[3] & 0xc0) == 0x80
			       ? 4
			       : 0;
	}
	return 0;
}

static int hex4(struct rd *r, unsigned *out)
{
	unsigned v = 0;

	if (r->len - r->pos < 4)
		return fail(r, "short \\u escape");
	for (int i = 0; i < 4; i++) {
		char c = r->s[r->pos++];
		v <<= 4;
		if (c >= '0' && c <= '9')
			v |= (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			v |= (unsigned)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			v |= (unsigned)(c - 'A' + 10);
		else
			return fail(r, "bad hex digit in \\u escape");
	}
	*out = v;
	return 0;
}

static size_t put_utf8(char *o, unsigned cp)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	o[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* At the opening quote. Decoded output is never longer than the input. */
static int parse_string(struct rd *r, char **out, size_t *outlen)
{
	size_t start = ++r->pos, o = 0;
	char *buf;

	/* find the end first to size the buffer */
	while (r->pos < r->len && r->s[r->pos] != '"') {
		if (r->s[r->pos] == '\\')
			r->pos++;
		r->pos++;
	}
	if (r->pos >= r->len)
		return fail(r, "unterminated string");
	buf = malloc(r->pos - start + 1);
	if (!buf)
		return fail(r, "out of memory");
	r->pos = start;
	while (r->s[r->pos] != '"') {
		unsigned char c = (unsigned char)r->s[r->pos];

		if (c < 0x20) {
			free(buf);
			return fail(r, "control character in string");
		}
		if (c == '\\') {
			char e = r->s[++r->pos];
			unsigned cp, lo;

			r->pos++;
			switch (e) {
			case '"':
				buf[o++] = '"';
				break;
			case '\\':
				buf[o++] = '\\';
				break;
			case '/':
				buf[o++] = '/';
				break;
			case 'b':
				buf[o++] = '\b';
				break;
			case 'f':
				buf[o++] = '\f';
				break;
			case 'n':
				buf[o++] = '\n';
				break;
			case 'r':
				buf[o++] = '\r';
				break;
			case 't':
				buf[o++] = '\t';
				break;
			case 'u':
				if (hex4(r, &cp))
					goto bad;
				if (cp >= 0xdc00 && cp <= 0xdfff) {
					fail(r, "lone low surrogate");
					goto bad;
				}
				if (cp >= 0xd800 && cp <= 0xdbff) {
					if (r->len - r->pos < 6 || r->s[r->pos] != '\\' ||
					    r->s[r->pos + 1] != 'u') {
						fail(r, "lone high surrogate");
						goto bad;
					}
					r->pos += 2;
					if (hex4(r, &lo))
						goto bad;
					if (lo < 0xdc00 || lo > 0xdfff) {
						fail(r, "bad surrogate pair");
						goto bad;
					}
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				}
				o += put_utf8(buf + o, cp);
				break;
			default:
				fail(r, "bad escape \\%c", e);
				goto bad;
			}
			continue;
		}
		size_t ul = utf8_valid_len((const unsigned char *)r->s + r->pos, r->len - r->pos);
		if (!ul) {
			fail(r, "invalid UTF-8 in string");
			goto bad;
		}
		memcpy(buf + o, r->s + r->pos, ul);
		o += ul;
		r->pos += ul;
	}
	r->pos++;
	buf[o] = 0;
	*out = buf;
	*outlen = o;
	return 0;
bad:
	free(buf);
	return -1;
}

static int parse_number(struct rd *r, double *out)
{
	size_t start = r->pos;
	char tmp[64];

	if (peek(r) == '-')
		r->pos++;
	if (peek(r) == '0') {
		r->pos++;
	} else if (peek(r) >= '1' && peek(r) <= '9') {
		while (peek(r) >= '0' && peek(r) <= '9')
			r->pos++;
	} else {
		return fail(r, "bad number");
	}
	if (peek(r) == '.') {
		r->pos++;
		if (!(peek(r) >= '0' && peek(r) <= '9'))
			return fail(r, "bad fraction");
		while (peek(r) >= '0' && peek(r) <= '9')
			r->pos++;
	}
	if (peek(r) == 'e' || peek(r) == 'E') {
		r->pos++;
		if (peek(r) == '+' || peek(r) == '-')
			r->pos++;
		if (!(peek(r) >= '0' && peek(r) <= '9'))
			return fail(r, "bad exponent");
		while (peek(r) >= '0' && peek(r) <= '9')
			r->pos++;
	}
	if (r->pos - start >= sizeof(tmp))
		return fail(r, "number too long");
	memcpy(tmp, r->s + start, r->pos - start);
	tmp[r->pos - start] = 0;
	*out = strtod(tmp, NULL);
	return 0;
}

static int parse_value(struct rd *r, struct json *v);

static int add_item(struct rd *r, struct json *v, size_t *cap, bool object)
{
	if (v->n == *cap) {
		size_t nc = *cap ? *cap * 2 : 8;
		struct json *items = realloc(v->items, nc * sizeof(*items));
		if (!items)
			return fail(r, "out of memory");
		v->items = items;
		if (object) {
			char **keys = realloc(v->keys, nc * sizeof(*keys));
			if (!keys)
				return fail(r, "out of memory");
			v->keys = keys;
		}
		*cap = nc;
	}
	memset(&v->items[v->n], 0, sizeof(v->items[0]));
	if (object)
		v->keys[v->n] = NULL;
	v->n++;
	return 0;
}

static int parse_container(struct rd *r, struct json *v, bool object)
{
	char close = object ? '}' : ']';
	size_t cap = 0;

	if (++r->depth > JSON_MAX_DEPTH)
		return fail(r, "nested too deeply");
	v->type = object ? JSON_OBJECT : JSON_ARRAY;
	r->pos++;
	skip_ws(r);
	if (peek(r) == close) {
		r->pos++;
		r->depth--;
		return 0;
	}
	for (;;) {
		skip_ws(r);
		if (add_item(r, v, &cap, object))
			return -1;
		if (object) {
			size_t klen;

			if (peek(r) != '"')
				return fail(r, "expected a key string");
			if (parse_string(r, &v->keys[v->n - 1], &klen))
				return -1;
			skip_ws(r);
			if (peek(r) != ':')
				return fail(r, "expected ':'");
			r->pos++;
			skip_ws(r);
		}
		if (parse_value(r, &v->items[v->n - 1]))
			return -1;
		skip_ws(r);
		if (peek(r) == ',') {
			r->pos++;
			continue;
		}
		if (peek(r) == close) {
			r->pos++;
			r->depth--;
			return 0;
		}
		return fail(r, "expected ',' or '%c'", close);
	}
}

static int literal(struct rd *r, const char *lit)
{
	size_t n = strlen(lit);

	if (r->len - r->pos < n || memcmp(r->s + r->pos, lit, n))
		return fail(r, "unexpected character");
	r->pos += n;
	return 0;
}

static int parse_value(struct rd *r, struct json *v)
{
	int c = peek(r);

	switch (c) {
	case '{':
		return parse_container(r, v, true);
	case '[':
		return parse_container(r, v, false);
	case '"':
		v->type = JSON_STRING;
		return parse_string(r, &v->str, &v->len);
	case 't':
		v->type = JSON_BOOL;
		v->b = true;
		return literal(r, "true");
	case 'f':
		v->type = JSON_BOOL;
		return literal(r, "false");
	case 'n':
		v->type = JSON_NULL;
		return literal(r, "null");
	case -1:
		return fail(r, "unexpected end");
	default:
		v->type = JSON_NUMBER;
		return parse_number(r, &v->num);
	}
}

struct json *json_parse(const char *text, size_t len, char *err, size_t errlen)
{
	struct rd r = {.s = text, .len = len, .err = err, .errlen = errlen};
	struct json *v = calloc(1, sizeof(*v));

	if (errlen)
		err[0] = 0;
	if (!v) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	skip_ws(&r);
	if (parse_value(&r, v))
		goto bad;
	skip_ws(&r);
	if (r.pos != r.len) {
		fail(&r, "trailing bytes after the value");
		goto bad;
	}
	return v;
bad:
	json_free(v);
	return NULL;
}

const struct json *json_get(const struct json *obj, const char *key)
{
	if (!obj || obj->type != JSON_OBJECT)
		return NULL;
	for (size_t i = 0; i < obj->n; i++)
		if (!strcmp(obj->keys[i], key))
			return &obj->items[i];
	return NULL;
}

const struct json *json_path(const struct json *v, const char *dotted)
{
	char key[256];

	while (v && *dotted) {
		const char *dot = strchr(dotted, '.');
		size_t n = dot ? (size_t)(dot - dotted) : strlen(dotted);

		if (n >= sizeof(key))
			return NULL;
		memcpy(key, dotted, n);
		key[n] = 0;
		v = json_get(v, key);
		dotted += n + (dot ? 1 : 0);
	}
	return v;
}

double json_num(const struct json *v, double dflt)
{
	return v && v->type == JSON_NUMBER ? v->num : dflt;
}

const char *json_str(const struct json *v, const char *dflt)
{
	return v && v->type == JSON_STRING ? v->str : dflt;
}
