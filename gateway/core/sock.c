#include "core/sock.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int sock_listen(const struct sockaddr *sa, socklen_t len, int backlog)
{
	int one = 1, zero = 0, fd, rc;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)))
		goto err;
	if (sa->sa_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)))
		goto err;
	/* Accepted sockets inherit TCP_NODELAY: responses go out at once. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (bind(fd, sa, len) || listen(fd, backlog))
		goto err;
	/* ...and delayed ACKs from the first request on: TCP_QUICKACK 0 on a
	 * listener puts its children in ping-pong mode, as HAProxy's
	 * tcp-smart-accept does (after listen(), which resets the ACK state).
	 * The ACK of a request rides on its response instead of going out as
	 * a packet of its own; a request whose body is still to come gets its
	 * ACK at once (sock_ack_now). */
	setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &zero, sizeof(zero));
	return fd;
err:
	rc = -errno;
	close(fd);
	return rc;
}

int sock_defer_accept(int fd, int on)
{
	/* the value is seconds, which the kernel turns into SYN-ACK retransmissions: 1 s
	 * holds a silent client until the first one, so it is accepted (and meets the header
	 * timeout) a second later instead of never */
	int secs = on ? 1 : 0;

	return setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &secs, sizeof(secs)) ? -errno : 0;
}

int sock_stream_for(const struct sockaddr *sa)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -errno;
	sock_set_nodelay(fd);
	return fd;
}

void sock_set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void sock_ack_now(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &one, sizeof(one));
}

void sock_set_linger0(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

const char *sock_ntop(const struct sockaddr *sa, char *buf, size_t len)
{
	const void *a = NULL;

	if (sa->sa_family == AF_INET)
		a = &((const struct sockaddr_in *)sa)->sin_addr;
	else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
		/* Report v4-mapped peers as plain IPv4 (what logs and XFF want). */
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			if (!inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], buf, (socklen_t)len))
				snprintf(buf, len, "?");
			return buf;
		}
		a = &s6->sin6_addr;
	}
	if (!a || !inet_ntop(sa->sa_family, a, buf, (socklen_t)len))
		snprintf(buf, len, "?");
	return buf;
}
