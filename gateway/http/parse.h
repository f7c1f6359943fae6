/* parse.h — strict, incremental HTTP/1.1 message parsing (RFC 9112).
 *
 * The parsers are stateless views into the caller's buffer (picohttpparser's
 * model): they allocate nothing, and every string they return points into the
 * bytes the caller passed in, valid as long as those bytes are. The caller
 * re-invokes them with the whole (grown) buffer when more bytes arrive.
 *
 * Return convention (STYLE.md §5): bytes consumed by the message head (request
 * line or status line + header fields + the empty line), -2 for "need more
 * bytes", -1 for "invalid" — then `err` holds the HTTP status to answer with
 * (400, 414, 431, 501; 502 for a response) and a short reason for the body and
 * the log. "Need more" is only returned while the head is still within the
 * configured limits: a head that cannot fit is -1 with 414 or 431 at once.
 *
 * Strictness: a message is refused whenever its framing is in doubt (see the
 * http_parse_request comment). Nothing the gateway could not parse
 * unambiguously is ever forwarded.
 */
#ifndef REFLEX_HTTP_PARSE_H
#define REFLEX_HTTP_PARSE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A byte range inside the caller's buffer. Not NUL-terminated. */
struct http_str {
	const char *p;
	size_t len;
};

struct http_header {
	struct http_str name;  /* as sent; compare case-insensitively */
	struct http_str value; /* leading/trailing OWS stripped */
};

/* Limits that the client controls. Defaults (nginx/HAProxy-like) come from
 * http_limits_default(). */
struct http_limits {
	size_t max_request_line; /* bytes incl. CRLF; over → 414 (status line → 502) */
	size_t max_head_bytes;   /* whole head incl. request line; over → 431 */
	unsigned max_headers;    /* header field count; over → 431 */
};

void http_limits_default(struct http_limits *lim); /* 8 KiB, 32 KiB, 100 */

/* Why a message was refused. `status` is the HTTP status to answer with;
 * `reason` is a static string (never points into the input). */
struct http_error {
	int status;
	const char *reason;
};

/* How the body of a message is framed. */
enum http_body {
	HTTP_BODY_NONE = 0,   /* no body (no CL/TE on a request; HEAD/1xx/204/304 responses) */
	HTTP_BODY_LENGTH,     /* Content-Length: content_length bytes (may be 0) */
	HTTP_BODY_CHUNKED,    /* Transfer-Encoding: chunked (final coding) */
	HTTP_BODY_UNTIL_CLOSE /* responses only: read until the upstream closes */
};

/* The result of parsing a request head. `headers` is caller-provided storage
 * of `max_headers` entries (at least http_limits.max_headers). */
struct http_request {
	struct http_str method;
	struct http_str target;    /* request-target exactly as sent */
	struct http_str path;      /* origin-form part of the target: "/a?b" ("*" for OPTIONS *) */
	struct http_str authority; /* from an absolute-form target ("host:port"), else empty */
	int minor_version;         /* HTTP/1.<minor>: 0 or 1 */

	struct http_header *headers;
	unsigned max_headers; /* capacity of headers[] — set by the caller */
	unsigned n_headers;

	/* Derived facts, computed by the parser so no one re-scans headers. */
	struct http_str host;       /* Host field value (empty if absent on 1.0) */
	enum http_body body;        /* NONE, LENGTH or CHUNKED */
	uint64_t content_length;    /* valid when body == HTTP_BODY_LENGTH */
	bool keep_alive;            /* 1.1 default on, 1.0 default off; Connection: close/keep-alive */
	bool expect_continue;       /* Expect: 100-continue (other expectations → 417 by the parser) */
	bool is_head;               /* method is HEAD */
	bool is_connect;            /* method is CONNECT (the gateway answers 501) */
	bool has_upgrade;           /* an Upgrade field is present (the gateway answers 501) */
};

/* Parse a request head from buf[0..len).
 *
 * Refused with -1 (and err filled), the connection to be closed after the
 * error response:
 *  - malformed request line, unknown HTTP version (only HTTP/1.0 and 1.1),
 *    a method that is not a token;
 *  - control characters (incl. NUL, DEL) or spaces in the target; targets
 *    that are neither origin-form, absolute-form (http/https), authority-form
 *    with CONNECT, nor "*" with OPTIONS;
 *  - bare LF or bare CR as a line ending anywhere in the head;
 *  - obs-fold (a field line starting with SP/HTAB); whitespace between the
 *    field name and the colon; a field name that is not a token; control
 *    characters other than HTAB in a field value;
 *  - Content-Length that is not 1*DIGIT (or overflows), or several
 *    Content-Length values that differ (identical repeats are accepted,
 *    "5, 5" included);
 *  - Content-Length together with Transfer-Encoding;
 *  - a field named like Content-Length or Transfer-Encoding with '_' for
 *    '-' ("Content_Length"): CGI-style upstreams read it as the real one;
 *  - Transfer-Encoding whose codings are anything but a single final
 *    "chunked" (e.g. "gzip, chunked" → 501 "unsupported transfer coding";
 *    "chunked, gzip" or "chunked, chunked" → 400), or Transfer-Encoding on
 *    an HTTP/1.0 request → 400;
 *  - HTTP/1.1 without Host, or with more than one Host → 400;
 *  - Expect other than "100-continue" → 417;
 *  - request line over max_request_line → 414, head over max_head_bytes or
 *    more than max_headers fields → 431.
 */
int http_parse_request(const char *buf, size_t len, struct http_request *req,
		       const struct http_limits *lim, struct http_error *err);

/* The result of parsing a response head (from an upstream). */
struct http_response {
	int minor_version;
	int status; /* 100..999 */
	struct http_str reason;

	struct http_header *headers;
	unsigned max_headers; /* capacity — set by the caller */
	unsigned n_headers;

	enum http_body body;     /* framing as it applies to this response */
	uint64_t content_length; /* valid when body == HTTP_BODY_LENGTH */
	bool keep_alive;         /* the upstream connection may be reused */
	bool has_content_length; /* a Content-Length field was present (HEAD/304 keep it) */
};

/* Parse a response head. `request_was_head` tells that the request was HEAD,
 * so the response has no body whatever its fields say; 1xx, 204 and 304
 * never have one either. Refused (-1, err->status 502) on: a bad status line,
 * bare LF/CR, obs-fold, whitespace before colon, invalid field names or
 * values (header injection: CR/LF/NUL inside a value), conflicting or invalid
 * Content-Length, Content-Length with Transfer-Encoding, a transfer coding
 * other than a final chunked, a head over the limits. A response with
 * neither Content-Length nor chunked is HTTP_BODY_UNTIL_CLOSE (and not
 * keep_alive); neither is a 204 that carries Transfer-Encoding or a non-zero
 * Content-Length (its upstream may send the body it announced). */
int http_parse_response(const char *buf, size_t len, struct http_response *res,
			bool request_was_head, const struct http_limits *lim,
			struct http_error *err);

/* Find a header by name (case-insensitive). Returns the first match or NULL. */
const struct http_header *http_find_header(const struct http_header *h, unsigned n,
					   const char *name);

/* Case-insensitive comparison of a view with a NUL-terminated string. */
bool http_str_eq(struct http_str s, const char *lit);

/* The value (0-15) of the hex digit c, either case; -1 when c is not one.
 * Percent-decoding (reflex.c, cache_rules.c) and JSON \uXXXX escapes
 * (admin.c) read their digits through it; chunk sizes use the same table. */
int http_hex_digit(char c);

/* True if the comma-separated list in `value` (e.g. a Connection field)
 * contains `token`, case-insensitively. */
bool http_list_has_token(struct http_str value, const char *token);

/* True if a Connection field among h[0..n) names `name` (such a field is
 * hop-by-hop, RFC 9110 §7.6.1). Names of 64 bytes or more are never named. */
bool http_named_by_connection(const struct http_header *h, unsigned n, struct http_str name);

/* ---- what a request names, as rules compare it ------------------------------
 *
 * Routes, rate-limit route rules and reflex rules match the host and path a
 * request names, not its spelling: an origin serves "/admin" for "//admin",
 * "/./admin", "/%61dmin" and "/x/../admin", and example.com for
 * "EXAMPLE.com.:80", so a rule that compared the text could be walked around.
 * The request itself is forwarded as sent. */

/* The host of h (its absolute-form authority, else Host): lower case, without
 * the port and without one trailing dot ("example.com." is example.com; an
 * IPv6 literal keeps its brackets). Writes a NUL-terminated string to out and
 * returns its length; a host that does not fit in cap - 1 bytes gives ""
 * (no DNS name is that long; "" matches only rules for any host). */
size_t http_host_key(const struct http_request *h, char *out, size_t cap);

/* Does host (as http_host_key gives it) match a rule's host pattern? "" is
 * any host, "*.example.com" any subdomain of example.com, anything else that
 * name; case-insensitive. Routes and rate-limit route rules share it. */
bool http_host_matches(const char *pattern, const char *host);

/* The path of a request target as an origin resolves it (RFC 3986 §5.2.4, as
 * nginx does for locations): the query and fragment dropped, every %XX
 * decoded except %00, then repeated slashes merged and "." and ".." segments
 * removed; a trailing slash is kept. out must hold len + 2 bytes (the result
 * is never longer than the input, plus a leading slash); returns its length.
 * "*" stays "*". */
size_t http_path_resolve(const char *p, size_t len, char *out);

/* ---- chunked transfer coding ------------------------------------------------
 *
 * An incremental decoder: a byte-level state machine that consumes all the
 * input it is given (it never needs to see a line whole), so the caller can
 * feed it whatever recv returned. It validates the framing and reports where
 * the payload bytes are, so the caller can either forward the raw chunked
 * bytes unchanged (validated) or forward only the payload (de-chunking).
 *
 * Refused: chunk-size that is not 1*HEXDIG or overflows 2^63, chunk
 * extensions that are not `;token[=token|quoted-string]` (with optional
 * BWS), a chunk-ext over 4 KiB per line, bare LF/CR, missing CRLF after the
 * chunk data, invalid trailer field lines, trailers over max_trailer_bytes.
 */
struct http_chunked {
	int state;                   /* private */
	uint64_t remaining;          /* private: payload bytes left in this chunk */
	unsigned ndigits, line_len;  /* private */
	size_t trailer_bytes;        /* private */
	size_t max_trailer_bytes;    /* set by init: 8 KiB; the caller may change it */
	uint64_t payload_total;      /* payload bytes seen so far (for body limits) */
	bool done;                   /* the last-chunk, trailers and final CRLF were consumed */
};

void http_chunked_init(struct http_chunked *d);

/* Consume bytes from buf[0..len). Returns the number of bytes consumed
 * (0 <= n <= len), or -1 on invalid input (err filled, status 400).
 * At most one payload span is reported per call: *payload is set to the span
 * (inside buf, within the consumed bytes) or to {NULL, 0}. Call again with
 * the rest until everything is consumed or d->done. Once done, it consumes
 * nothing more: bytes after the message belong to the next message. */
ssize_t http_chunked_feed(struct http_chunked *d, const char *buf, size_t len,
			  struct http_str *payload, struct http_error *err);

#endif
