/* client.h — reflexctl's HTTP/1.1 client for the admin API.
 *
 * One request per connection (Connection: close), over TCP or a Unix
 * socket, with a deadline on the whole exchange. The response head is
 * parsed with the gateway's own parser (http/parse.h); bodies framed by
 * Content-Length, chunked coding or the close are read whole (bounded by
 * CTL_BODY_MAX).
 */
#ifndef REFLEX_CONTROL_CLIENT_H
#define REFLEX_CONTROL_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#define CTL_BODY_MAX (64u << 20)

struct ctl_target {
	bool is_unix;
	char path[108]; /* Unix socket */
	char host[256]; /* TCP: numeric address or name */
	char port[8];
	char text[300]; /* as given, for messages */
};

/* "http://HOST:PORT[/]", "HOST:PORT", "[::1]:PORT", "unix:/path", "/path" or
 * "./path" (a Unix socket). 0, or -1 with a reason in err. */
int ctl_target_parse(const char *s, struct ctl_target *t, char *err, size_t errlen);

struct ctl_resp {
	int status;
	char *body; /* NUL-terminated; free with ctl_resp_free */
	size_t len;
	char content_type[128];
};

enum {
	CTL_OK = 0,
	CTL_ECONNECT = -1,  /* could not connect (reflexctl exit code 3) */
	CTL_EPROTOCOL = -2, /* connected, but no valid response (timeout, garbage) */
};

/* Perform one request. token may be NULL (no Authorization header). */
int ctl_request(const struct ctl_target *t, const char *method, const char *path, const char *token,
		const char *body, size_t body_len, unsigned timeout_ms, struct ctl_resp *resp,
		char *err, size_t errlen);
void ctl_resp_free(struct ctl_resp *r);

/* A connected socket to the target (blocking), or -1 with a reason in err;
 * for streaming endpoints (GET /events?stream=1) that ctl_request, which
 * reads whole bodies, cannot serve. */
int ctl_connect(const struct ctl_target *t, unsigned timeout_ms, char *err, size_t errlen);

#endif
