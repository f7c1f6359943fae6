/* buf.h — a growable byte buffer with a consumed prefix.
 *
 * Valid bytes are data[off .. off+len). Appending may move the bytes
 * (compaction or realloc), so no pointer into a buf survives an append;
 * code that hands a buf's bytes to the kernel (a send in flight) must not
 * append to that buf until the send completes (see conn.h's two-buffer
 * output queue). Allocation failure returns -ENOMEM and leaves the buf as
 * it was. buf_free() is NULL-safe and leaves an empty, reusable buf.
 */
#ifndef REFLEX_CORE_BUF_H
#define REFLEX_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
	char *data;
	size_t off, len, cap;
};

static inline char *buf_head(const struct buf *b)
{
	return b->data + b->off;
}

/* Make room for `extra` more bytes after the valid ones. */
int buf_reserve(struct buf *b, size_t extra);
int buf_append(struct buf *b, const void *p, size_t n);
int buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int buf_appends(struct buf *b, const char *s);
/* Append NUL-terminated strings, the list ending with NULL: the
 * per-request head builders' alternative to buf_appendf. */
int buf_appendv(struct buf *b, ...) __attribute__((sentinel));
/* Drop n bytes from the front. */
void buf_consume(struct buf *b, size_t n);
/* Empty it; keep the memory unless it is larger than keep_cap. */
void buf_reset(struct buf *b, size_t keep_cap);
void buf_free(struct buf *b);

#include <string.h>
static inline int buf_appends(struct buf *b, const char *s)
{
	return buf_append(b, s, strlen(s));
}

#endif
