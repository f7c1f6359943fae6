/* jsonw.c — JSON string escaping (see jsonw.h). */
#include "core/jsonw.h"

#include <errno.h>
#include <stdbool.h>
#include <string.h>

/* Length of a valid UTF-8 sequence at s, or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];

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

size_t jsonw_escape(char *out, size_t cap, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *u = (const unsigned char *)s;
	size_t o = 0, i = 0;

#define PUT(p, len)                          \
	do {                                 \
		if (cap - o < (len))         \
			return 0;            \
		memcpy(out + o, (p), (len)); \
		o += (len);                  \
	} while (0)

	if (cap < 2)
		return 0;
	PUT("\"", 1);
	while (i < n) {
		size_t run = i, ul;

		/* the longest run that needs no escape goes in one copy */
		while (run < n && u[run] >= 0x20 && u[run] < 0x7f && u[run] != '"' &&
		       u[run] != '\\')
			run++;
		PUT(s + i, run - i);
		i = run;
		if (i >= n)
			break;
		unsigned char c = u[i];
		if (c == '"' || c == '\\') {
			char e[2] = {'\\', (char)c};
			PUT(e, 2);
			i++;
		} else if (c == '\n') {
			PUT("\\n", 2);
			i++;
		} else if (c == '\r') {
			PUT("\\r", 2);
			i++;
		} else if (c == '\t') {
			PUT("\\t", 2);
			i++;
		} else if (c >= 0x80 && (ul = utf8_len(u + i, n - i))) {
			PUT(s + i, ul);
			i += ul;
		} else {
			char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
			PUT(e, 6);
			i++;
		}
	}
	PUT("\"", 1);
#undef PUT
	return o;
}

int jsonw_buf_strn(struct buf *b, const char *s, size_t n)
{
	size_t len;

	if (buf_reserve(b, JSONW_MAX(n)))
		return -ENOMEM;
	len = jsonw_escape(b->data + b->off + b->len, JSONW_MAX(n), s, n);
	b->len += len;
	return 0;
}

int jsonw_buf_str(struct buf *b, const char *s)
{
	return jsonw_buf_strn(b, s, strlen(s));
}
