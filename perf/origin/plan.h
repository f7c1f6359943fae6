/* plan.h — what reflex-origin will answer to one request.
 *
 * The behaviour of a response is chosen by query parameters and by request
 * headers named X-Origin-<Name> (see docs/origin.md); plan_build() turns a
 * parsed request head into a struct plan so that nothing of the head is needed
 * afterwards (the head lives in recv buffers that are recycled at once).
 *
 * Ownership: a plan owns its strings (malloc'd); plan_reset() frees them and
 * returns the plan to the defaults. A plan with default values allocates
 * nothing, so the hot path pays nothing for it.
 */
#ifndef REFLEX_ORIGIN_PLAN_H
#define REFLEX_ORIGIN_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gateway/http/parse.h"

#define PLAN_MAX_SIZE (1ULL << 40)
#define PLAN_DEFAULT_SIZE 1024
#define PLAN_DEFAULT_CHUNK 16384

enum plan_action {
	PLAN_RESPOND = 0, /* a generated (or SSE) response */
	PLAN_ECHO,	  /* /echo: JSON description of the request */
	PLAN_STATS,	  /* /__stats */
	PLAN_HANG,	  /* never answer */
	PLAN_RESET,	  /* close with RST */
	PLAN_DROP,	  /* close with FIN */
	PLAN_MALFORMED,	  /* a broken response, then close */
};

enum plan_malformed {
	MAL_STATUS = 0, /* "HTTP/1.1 2x0 OK" */
	MAL_CL,		/* two different Content-Length values */
	MAL_CL_TE,	/* Content-Length and Transfer-Encoding: chunked */
	MAL_INJECTION,	/* a header value with a bare CR */
	MAL_CHUNK,	/* chunk size "zz" */
	MAL_LF,		/* bare LF line endings */
	MAL_SHORT,	/* Content-Length: 100, 10 bytes, close */
};

/* Named response fields settable by cc=, etag=, lm=, vary=, expires=, ctype=. */
enum plan_field { PF_CC = 0, PF_ETAG, PF_LM, PF_VARY, PF_EXPIRES, PF_CTYPE, PF_COUNT };

struct plan {
	enum plan_action action;
	enum plan_malformed malformed;
	unsigned status;
	uint64_t size;
	uint64_t delay_ms;
	bool chunked;
	uint64_t chunk;
	bool close;
	uint64_t rate; /* bytes per second, 0 = unpaced */
	bool sse;
	uint64_t sse_events;
	uint64_t interval_ms;

	char *field[PF_COUNT]; /* values (NUL-terminated) or NULL */
	char *hdr;	       /* "Name: value\r\n" lines from hdr= (NUL-terminated) or NULL */
	size_t hdr_len;
};

void plan_init(struct plan *pl);
void plan_reset(struct plan *pl);

/* True if the request asks for nothing special: no query string, no
 * X-Origin-* header, and a plain path (not /echo or /__stats). */
bool plan_is_default(const struct http_request *req);

/* True if no request header is an X-Origin-* parameter: the response then
 * depends on the request-target alone (and on the body, if any). */
bool plan_headers_neutral(const struct http_request *req);

/* Fill pl from the request's path, query and X-Origin-* headers (the query
 * wins over the headers). Returns 0, or -1 with *reason set (static string)
 * when a parameter is invalid: the origin answers 400 then. */
int plan_build(struct plan *pl, const struct http_request *req, const char **reason);

/* FNV-1a 64, continued from h (start with PLAN_FNV_INIT). */
#define PLAN_FNV_INIT 0xcbf29ce484222325ULL
uint64_t plan_fnv1a(uint64_t h, const void *data, size_t len);

#endif
