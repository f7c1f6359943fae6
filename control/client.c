/* client.c — see client.h. */
#include "control/client.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "http/parse.h"

int ctl_target_parse(const char *s, struct ctl_target *t, char *err, size_t errlen)
{
	const char *hp = s, *colon;
	size_t hlen;

	memset(t, 0, sizeof(*t));
	snprintf(t->text, sizeof(t->text), "%s", s);
	if (!strncmp(s, "unix:", 5))
		s += 5;
	if (s[0] == '/' || s[0] == '.') {
		if (strlen(s) >= sizeof(t->path)) {
			snprintf(err, errlen, "socket path too long: %s", s);
			return -1;
		}
		t->is_unix = true;
		strcpy(t->path, s);
		return 0;
	}
	if (!strncmp(hp, "http://", 7))
		hp += 7;
	else if (strstr(hp, "://")) {
		snprintf(err, errlen, "%s: only http:// is supported", s);
		return -1;
	}
	hlen = strcspn(hp, "/");
	if (hp[hlen] && strcmp(hp + hlen, "/")) {
		snprintf(err, errlen, "%s: give the admin address without a path", s);
		return -1;
	}
	if (hp[0] == '[') {
		const char *close = memchr(hp, ']', hlen);
		if (!close || close[1] != ':') {
			snprintf(err, errlen, "%s: expected [IPv6]:PORT", s);
			return -1;
		}
		snprintf(t->host, sizeof(t->host), "%.*s", (int)(close - hp - 1), hp + 1);
		colon = close + 1;
	} else {
		colon = memchr(hp, ':', hlen);
		if (!colon) {
			snprintf(err, errlen, "%s: expected HOST:PORT", s);
			return -1;
		}
		if ((size_t)(colon - hp) >= sizeof(t->host)) {
			snprintf(err, errlen, "%s: host too long", s);
			return -1;
		}
		snprintf(t->host, sizeof(t->host), "%.*s", (int)(colon - hp), hp);
	}
	size_t plen = hlen - (size_t)(colon + 1 - hp);
	if (!plen || plen >= sizeof(t->port) || strspn(colon + 1, "0123456789") < plen ||
	    atoi(colon + 1) < 1 || atoi(colon + 1) > 65535) {
		snprintf(err, errlen, "%s: bad port (1-65535)", s);
		return -1;
	}
	memcpy(t->port, colon + 1, plen);
	t->port[plen] = 0;
	return 0;
}

void ctl_resp_free(struct ctl_resp *r)
{
	free(r->body);
	r->body = NULL;
	r->len = 0;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for fd to become ready for events until the deadline: 0 or -ETIMEDOUT. */
static int wait_fd(int fd, short events, long long deadline)
{
	for (;;) {
		long long left = deadline - now_ms();
		struct pollfd p = {.fd = fd, .events = events};

		if (left <= 0)
			return -ETIMEDOUT;
		int rc = poll(&p, 1, (int)left);
		if (rc > 0)
			return 0;
		if (rc < 0 && errno != EINTR)
			return -errno;
	}
}

static int connect_target(const struct ctl_target *t, long long deadline, char *err, size_t errlen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL, *ai;
	int fd = -1, last = 0;

	if (t->is_unix) {
		struct sockaddr_un un = {.sun_family = AF_UNIX};

		strcpy(un.sun_path, t->path);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&un, sizeof(un))) {
			snprintf(err, errlen, "cannot connect to %s: %s", t->path, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		return fd;
	}
	int rc = getaddrinfo(t->host, t->port, &hints, &res);
	if (rc) {
		snprintf(err, errlen, "cannot resolve %s: %s", t->host, gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
		if (fd < 0) {
			last = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) == 0) {
			int soerr = 0;
			socklen_t sl = sizeof(soerr);
			getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
			if (!soerr)
				break;
			last = soerr;
		} else {
			last = errno == EINPROGRESS ? ETIMEDOUT : errno;
		}
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		snprintf(err, errlen, "cannot connect to %s:%s: %s", t->host, t->port,
			 strerror(last ? last : ECONNREFUSED));
		return -1;
	}
	return fd;
}

static int send_all(int fd, const char *p, size_t n, long long deadline)
{
	while (n) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			int rc = wait_fd(fd, POLLOUT, deadline);
			if (rc)
				return rc;
			continue;
		}
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int ctl_request(const struct ctl_target *t, const char *method, const char *path, const char *token,
		const char *body, size_t body_len, unsigned timeout_ms, struct ctl_resp *resp,
		char *err, size_t errlen)
{
	long long deadline = now_ms() + timeout_ms;
	char head[2048];
	char *in = NULL;
	size_t len = 0, cap = 0;
	bool eof = false;
	int fd, rc = CTL_EPROTOCOL;

	memset(resp, 0, sizeof(*resp));
	fd = connect_target(t, deadline, err, errlen);
	if (fd < 0)
		return CTL_ECONNECT;
	int n = snprintf(head, sizeof(head),
			 "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: reflexctl\r\n"
			 "Accept: application/json\r\nConnection: close\r\n%s%s%s"
			 "Content-Length: %zu\r\n\r\n",
			 method, path, t->is_unix ? "localhost" : t->host,
			 token ? "Authorization: Bearer " : "", token ? token : "",
			 token ? "\r\n" : "", body_len);
	if (n < 0 || (size_t)n >= sizeof(head)) {
		snprintf(err, errlen, "request head too long");
		goto out;
	}
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) ||
	    send_all(fd, head, (size_t)n, deadline) ||
	    (body_len && send_all(fd, body, body_len, deadline))) {
		snprintf(err, errlen, "sending to %s: %s", t->text, strerror(errno));
		goto out;
	}

	struct http_header hdrs[64];
	struct http_response res;
	struct http_limits lim = {
		.max_request_line = 8192, .max_head_bytes = 65536, .max_headers = 64};
	struct http_error perr;
	int head_len = -2;

	for (;;) {
		if (head_len >= 0) {
			size_t have = len - (size_t)head_len;

			if (res.body == HTTP_BODY_LENGTH && have >= res.content_length)
				break;
			if (res.body == HTTP_BODY_NONE)
				break;
			if (res.body == HTTP_BODY_CHUNKED) {
				struct http_chunked d;
				size_t off = (size_t)head_len;
				http_chunked_init(&d);
				while (off < len && !d.done) {
					struct http_str pl;
					ssize_t c = http_chunked_feed(&d, in + off, len - off, &pl,
								      &perr);
					if (c < 0) {
						snprintf(err, errlen, "bad chunked body from %s",
							 t->text);
						goto out;
					}
					off += (size_t)c;
				}
				if (d.done)
					break;
			}
			if (eof) {
				if (res.body == HTTP_BODY_UNTIL_CLOSE)
					break;
				snprintf(err, errlen, "%s closed the connection mid-response",
					 t->text);
				goto out;
			}
		} else if (eof) {
			snprintf(err, errlen, "%s closed the connection without a response",
				 t->text);
			goto out;
		}
		if (len + 65536 > cap) {
			if (cap > CTL_BODY_MAX) {
				snprintf(err, errlen, "response too large");
				goto out;
			}
			cap = cap ? cap * 2 : 65536;
			char *nb = realloc(in, cap + 1);
			if (!nb) {
				snprintf(err, errlen, "out of memory");
				goto out;
			}
			in = nb;
		}
		if (wait_fd(fd, POLLIN, deadline)) {
			snprintf(err, errlen, "no response from %s within %u ms", t->text,
				 timeout_ms);
			goto out;
		}
		ssize_t r = recv(fd, in + len, cap - len, 0);
		if (r < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (r < 0) {
			snprintf(err, errlen, "reading from %s: %s", t->text, strerror(errno));
			goto out;
		}
		if (r == 0)
			eof = true;
		len += (size_t)r;
		if (head_len < 0) {
			memset(&res, 0, sizeof(res));
			res.headers = hdrs;
			res.max_headers = 64;
			head_len = http_parse_response(in, len, &res, !strcmp(method, "HEAD"), &lim,
						       &perr);
			if (head_len == -1) {
				snprintf(err, errlen, "invalid response from %s: %s", t->text,
					 perr.reason ? perr.reason : "?");
				goto out;
			}
			/* skip interim responses (100 Continue) */
			if (head_len >= 0 && res.status >= 100 && res.status < 200) {
				memmove(in, in + head_len, len - (size_t)head_len);
				len -= (size_t)head_len;
				head_len = -2;
			}
		}
	}
	/* the body: decode chunked in place, or cut to its length */
	size_t blen = len - (size_t)head_len;
	char *b = malloc(blen + 1);
	if (!b) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (res.body == HTTP_BODY_CHUNKED) {
		struct http_chunked d;
		size_t off = (size_t)head_len, o = 0;
		http_chunked_init(&d);
		while (off < len && !d.done) {
			struct http_str pl;
			ssize_t c = http_chunked_feed(&d, in + off, len - off, &pl, &perr);
			if (c < 0)
				break;
			if (pl.len) {
				memcpy(b + o, pl.p, pl.len);
				o += pl.len;
			}
			off += (size_t)c;
		}
		blen = o;
	} else {
		if (res.body == HTTP_BODY_LENGTH && blen > res.content_length)
			blen = res.content_length;
		if (res.body == HTTP_BODY_NONE)
			blen = 0;
		memcpy(b, in + head_len, blen);
	}
	b[blen] = 0;
	resp->status = res.status;
	resp->body = b;
	resp->len = blen;
	const struct http_header *ct = http_find_header(res.headers, res.n_headers, "Content-Type");
	if (ct)
		snprintf(resp->content_type, sizeof(resp->content_type), "%.*s", (int)ct->value.len,
			 ct->value.p);
	rc = CTL_OK;
out:
	free(in);
	close(fd);
	return rc;
}

int ctl_connect(const struct ctl_target *t, unsigned timeout_ms, char *err, size_t errlen)
{
	int fd = connect_target(t, now_ms() + timeout_ms, err, errlen);

	/* the caller streams with plain blocking reads */
	if (fd >= 0)
		fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	return fd;
}
