/* selftest.c — see selftest.h. */
#include "selftest.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define BODY_LEN 1024

struct st_conn {
	struct st_conn *prev, *next; /* all open connections, freed at stop */
	int fd;
	unsigned match;	 /* bytes of "\r\n\r\n" matched so far (a head may span reads) */
	size_t owed;	 /* response bytes not yet written */
	size_t resp_off; /* offset inside the response being written */
};

static int listen_fd = -1, stop_fd = -1, ep = -1;
static pthread_t thread;
static char resp[256 + BODY_LEN];
static size_t resp_len;
static struct st_conn *conns; /* owned by the server thread until it stops */

static void conn_free(struct st_conn *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->fd);
	free(c);
}

/* Write what is owed; false when the connection is gone. */
static bool conn_write(struct st_conn *c)
{
	while (c->owed) {
		size_t n = resp_len - c->resp_off;
		ssize_t w = send(c->fd, resp + c->resp_off, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0)
			return errno == EAGAIN;
		c->resp_off += w;
		c->owed -= w;
		if (c->resp_off == resp_len)
			c->resp_off = 0;
	}
	return true;
}

static bool conn_read(struct st_conn *c)
{
	static const char end[] = "\r\n\r\n";
	char buf[16384];

	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n == 0)
			return false;
		if (n < 0)
			return errno == EAGAIN;
		for (ssize_t i = 0; i < n; i++) {
			if (buf[i] == end[c->match]) {
				if (++c->match == 4) {
					c->owed += resp_len;
					c->match = 0;
				}
			} else {
				c->match = buf[i] == '\r' ? 1 : 0;
			}
		}
		if (!conn_write(c))
			return false;
	}
}

static void *serve(void *arg)
{
	struct epoll_event evs[64];

	for (;;) {
		int n = epoll_wait(ep, evs, 64, -1);
		if (n < 0 && errno != EINTR)
			break;
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == &stop_fd)
				return NULL;
			if (p == &listen_fd) {
				int fd;
				while ((fd = accept4(listen_fd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
					int one = 1;
					struct st_conn *c = calloc(1, sizeof(*c));
					struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT |
									   EPOLLET};
					if (!c) {
						close(fd);
						continue;
					}
					setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
					c->fd = fd;
					c->next = conns;
					if (conns)
						conns->prev = c;
					conns = c;
					ev.data.ptr = c;
					if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
						conn_free(c);
				}
				continue;
			}
			struct st_conn *c = p;
			bool ok = true;
			if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
				ok = conn_read(c);
			if (ok && (evs[i].events & EPOLLOUT))
				ok = conn_write(c);
			if (!ok)
				conn_free(c); /* close() also removes it from the epoll set */
		}
	}
	return NULL;
}

int selftest_start(int *port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	struct epoll_event ev = {.events = EPOLLIN};
	int ret;

	resp_len = (size_t)snprintf(resp, sizeof(resp),
				    "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n"
				    "Content-Type: application/octet-stream\r\n\r\n",
				    BODY_LEN);
	for (int i = 0; i < BODY_LEN; i++)
		resp[resp_len++] = 'a' + i % 26;
	listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	stop_fd = eventfd(0, EFD_CLOEXEC);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (listen_fd < 0 || stop_fd < 0 || ep < 0)
		goto fail;
	if (bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
	    listen(listen_fd, 4096) < 0 || getsockname(listen_fd, (struct sockaddr *)&sa, &len) < 0)
		goto fail;
	ev.data.ptr = &listen_fd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, listen_fd, &ev) < 0)
		goto fail;
	ev.data.ptr = &stop_fd;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, stop_fd, &ev) < 0)
		goto fail;
	ret = pthread_create(&thread, NULL, serve, NULL);
	if (ret) {
		errno = ret;
		goto fail;
	}
	*port = ntohs(sa.sin_port);
	return 0;
fail:
	ret = -errno;
	selftest_stop();
	return ret;
}

void selftest_stop(void)
{
	if (stop_fd >= 0 && thread) {
		uint64_t one = 1;
		if (write(stop_fd, &one, sizeof(one)) == sizeof(one))
			pthread_join(thread, NULL);
		thread = 0;
	}
	while (conns)
		conn_free(conns);
	if (ep >= 0)
		close(ep);
	if (listen_fd >= 0)
		close(listen_fd);
	if (stop_fd >= 0)
		close(stop_fd);
	ep = listen_fd = stop_fd = -1;
}
