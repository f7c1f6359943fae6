/* admin.h — the admin API: HTTP/1.1 + JSON on its own thread.
 *
 * The admin server runs on a dedicated thread (never on a worker), listens
 * on config.admin.listen (TCP "127.0.0.1:9901" by default, or a Unix socket
 * path), parses requests with the gateway's own parser (http/parse.h) under
 * small limits of its own, and answers the endpoints registered in its route
 * table. Read endpoints are open; mutations need "Authorization: Bearer T"
 * with a token from config.admin.token_file (constant-time compare), and
 * each mutation is appended to the audit log (a SHA-256 hash chain).
 */
#ifndef REFLEX_ADMIN_H
#define REFLEX_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"
#include "http/parse.h"

struct gateway;
struct admin;
struct config;

/* A request as a handler sees it; body is complete (bounded by the admin
 * limits). `who` is the token's name for authenticated requests. */
struct admin_req {
	struct http_str method, path, query;
	const struct http_header *headers;
	unsigned n_headers;
	const char *body;
	size_t body_len;
	const char *who;
	int fd; /* the connection, for handlers that take it over (resp.takeover) */
};

/* A handler fills status, content type and body; returns 0 (or -1 for an
 * internal error → 500). For mutations, `audit` is a short text of what was
 * done, recorded in the audit log with the result. */
struct admin_resp {
	int status;
	const char *content_type; /* default "application/json" */
	struct buf body;
	char audit[256];
	/* streaming responses (server-sent events, e.g. GET /events) set this:
	 * the handler keeps the connection and writes to fd itself until done */
	bool takeover;
};

typedef int admin_handler(struct gateway *g, const struct admin_req *req, struct admin_resp *resp);

/* Answer status with {"error": msg} (replacing whatever the body held);
 * returns the handler's 0 (or -1 when out of memory). */
int admin_error(struct admin_resp *resp, int status, const char *msg);
/* The string value of "key" at the top level of a flat JSON object body,
 * unescaped (\uXXXX to UTF-8), NUL-terminated in out. Returns its length;
 * -1 when the key is absent or its value is not a valid JSON string; -2 when it does
 * not fit in cap or holds a NUL. Handlers of small bodies ({"cidr": ...},
 * {"url": ...}) need no more than this. */
int admin_body_string(const struct admin_req *req, const char *key, char *out, size_t cap);

/* Register an endpoint (before admin_start): exact path, or a prefix when
 * the path ends with '*'. Mutations require the bearer token. */
int admin_register(const char *method, const char *path, bool mutation, admin_handler *h);

/* What admin_start would refuse in cfg, checked without starting anything
 * (for --check-config): the token file must be a readable regular file of
 * valid lines. 0, or -1 with "token file PATH: reason" in err. */
int admin_check(const struct config *cfg, char *err, size_t errlen);

/* Start the admin thread. NULL with err filled when the listener cannot be
 * opened or the token file cannot be read. */
struct admin *admin_start(struct gateway *g, char *err, size_t errlen);
void admin_stop(struct admin *a); /* NULL-safe */
/* The address actually bound ("127.0.0.1:9901", "[::1]:9901", or the socket
 * path): 0 or -errno. */
int admin_address(const struct admin *a, char *out, size_t len);

#endif
