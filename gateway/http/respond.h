/* respond.h — what the client is sent: gateway-made responses (errors),
 * the rewritten head of an upstream response, and its body in the framing
 * the client can take (passed through, de-chunked for HTTP/1.0, or
 * chunk-encoded when the upstream delimits by closing).
 */
#ifndef REFLEX_HTTP_RESPOND_H
#define REFLEX_HTTP_RESPOND_H

#include <stdbool.h>
#include <stddef.h>

#include "http/parse.h"

struct request;
struct client;

const char *respond_status_text(int status);

/* Queue a complete gateway-made response: status, a short text body
 * "<status> <text>: <reason>\n", the request id if any, and
 * "Connection: close" when close. Returns the bytes queued. */
size_t respond_error(struct client *c, struct request *r, int status, const char *reason,
		     bool close);

/* Queue the client head for an upstream response and choose r->out.
 * Returns 0, or -1 when the response cannot be relayed (then nothing was
 * queued). */
int respond_head(struct request *r, const struct http_response *res);

/* Queue body bytes in the framing chosen by respond_head (for
 * RESP_OUT_DECHUNK the caller passes payload only). */
void respond_body(struct request *r, const char *p, size_t n);

/* Queue the end of the body where the framing needs one (last chunk). */
void respond_end(struct request *r);

/* "100 Continue" interim response. */
void respond_continue(struct client *c);

#endif
