#include "core/buf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int buf_reserve(struct buf *b, size_t extra)
{
	if (b->cap - b->off - b->len >= extra)
		return 0;
	/* Slide the valid bytes down first when that is enough: cheaper than
	 * growing, and keeps a streaming buffer at its working size. */
	if (b->off && b->cap - b->len >= extra) {
		memmove(b->data, b->data + b->off, b->len);
		b->off = 0;
		return 0;
	}
	size_t need = b->len + extra, cap = b->cap ? b->cap : 1024;
	while (cap < need) {
		if (cap > ((size_t)-1) / 2)
			return -ENOMEM;
		cap *= 2;
	}
	char *p = malloc(cap);
	if (!p)
		return -ENOMEM;
	if (b->len)
		memcpy(p, b->data + b->off, b->len);
	free(b->data);
	b->data = p;
	b->cap = cap;
	b->off = 0;
	return 0;
}

int buf_append(struct buf *b, const void *p, size_t n)
{
	if (!n)
		return 0;
	int rc = buf_reserve(b, n);
	if (rc)
		return rc;
	memcpy(b->data + b->off + b->len, p, n);
	b->len += n;
	return 0;
}

int buf_appendf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	char tmp[512];

	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return -EINVAL;
	if ((size_t)n < sizeof(tmp))
		return buf_append(b, tmp, (size_t)n);
	int rc = buf_reserve(b, (size_t)n + 1);
	if (rc)
		return rc;
	va_start(ap, fmt);
	vsnprintf(b->data + b->off + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}

int buf_appendv(struct buf *b, ...)
{
	va_list ap;
	const char *s;
	int rc = 0;

	va_start(ap, b);
	while (!rc && (s = va_arg(ap, const char *)))
		rc = buf_append(b, s, strlen(s));
	va_end(ap);
	return rc;
}

void buf_consume(struct buf *b, size_t n)
{
	if (n >= b->len) {
		b->off = b->len = 0;
		return;
	}
	b->off += n;
	b->len -= n;
}

void buf_reset(struct buf *b, size_t keep_cap)
{
	b->off = b->len = 0;
	if (b->cap > keep_cap) {
		free(b->data);
		b->data = NULL;
		b->cap = 0;
	}
}

void buf_free(struct buf *b)
{
	if (!b)
		return;
	free(b->data);
	b->data = NULL;
	b->off = b->len = b->cap = 0;
}
