/* reqlist.h — the requests reflex-bench sends, serialized once up front.
 *
 * Every entry is a complete HTTP/1.1 request in wire format, so the hot path
 * only copies bytes. Entries come either from the URL (one GET) or from a
 * request-list file (--requests) in this format:
 *
 *     # a comment (only between requests)
 *     GET /path?query          <- METHOD TARGET
 *     X-Origin-Delay: 100      <- header lines, "Name: value"
 *                              <- an empty line (or the end of the file) ends it
 *     POST /upload
 *     Content-Type: text/plain
 *     Content-Length: 5
 *
 *     hello                    <- exactly Content-Length bytes of body,
 *                                 then an optional newline
 *
 * Lines may end in LF or CRLF. Host is added from the URL unless the entry
 * has one; headers given with -H are added to every entry; with --churn
 * every entry gets "Connection: close". The order of the file is the rank
 * order used by --zipf (the first entry is the most frequent).
 *
 * Ownership: the list owns its strings; reqlist_free() releases them.
 */
#ifndef REFLEX_LOADGEN_REQLIST_H
#define REFLEX_LOADGEN_REQLIST_H

#include <stdbool.h>
#include <stddef.h>

struct req_entry {
	char *wire;
	size_t len;
	bool is_head; /* HEAD: the response has no body whatever it says */
};

struct reqlist {
	struct req_entry *v;
	size_t n, cap;
	/* Added to every entry: Host value, extra header lines ("Name: value"), churn. */
	const char *host;
	const char *const *extra;
	size_t n_extra;
	bool close;
};

/* Append one request. `headers` is a block of "Name: value\r\n" lines (may be
 * NULL); body may be NULL with body_len 0. 0 or -ENOMEM. */
int reqlist_add(struct reqlist *l, const char *method, const char *target, const char *headers,
		const void *body, size_t body_len);

/* Parse a request-list file's text and append its entries. On a format
 * error returns -EINVAL and sets *err_line (1-based) and *err_reason. */
int reqlist_parse(struct reqlist *l, const char *text, size_t len, unsigned *err_line,
		  const char **err_reason);

void reqlist_free(struct reqlist *l);

#endif
