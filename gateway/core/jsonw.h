/* jsonw.h — writing JSON strings: the one escaper the access log, the audit
 * log and the admin API share, so they agree on what a hostile byte
 * becomes.
 *
 * Rules: '"' and '\' are escaped, \n \r \t by name, other control bytes
 * and DEL as \u00XX; valid UTF-8 (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF) is copied as is; every byte that is not part of
 * valid UTF-8 becomes \u00XX (its Latin-1 reading), so the output is always
 * valid JSON and the byte value stays visible.
 */
#ifndef REFLEX_CORE_JSONW_H
#define REFLEX_CORE_JSONW_H

#include <stddef.h>

#include "core/buf.h"

/* The worst case: every byte becomes \u00XX, plus the quotes. */
#define JSONW_MAX(n) ((n)*6 + 2)

/* Write s[0..n) as a quoted JSON string into out; returns its length, or 0
 * when it does not fit in cap (nothing useful is left in out then). */
size_t jsonw_escape(char *out, size_t cap, const char *s, size_t n);
/* Append a quoted JSON string for s[0..n) / the C string s: 0 or -ENOMEM. */
int jsonw_buf_strn(struct buf *b, const char *s, size_t n);
int jsonw_buf_str(struct buf *b, const char *s);

#endif
