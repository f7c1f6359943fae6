#include "core/upgrade.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static socklen_t abstract_addr(pid_t pid, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	/* sun_path[0] == 0: the abstract namespace */
	int n = snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1, "reflexd-upgrade-%d", (int)pid);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

int upgrade_listen(pid_t self)
{
	struct sockaddr_un sa;
	socklen_t len = abstract_addr(self, &sa);
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, len) || listen(fd, 1)) {
		int rc = -errno;
		close(fd);
		return rc;
	}
	return fd;
}

static int wait_readable(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	int rc = poll(&p, 1, timeout_ms);

	if (rc < 0)
		return -errno;
	return rc == 0 ? -ETIMEDOUT : 0;
}

int upgrade_serve(int lfd, const int *fds, unsigned n, int timeout_ms)
{
	int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC), rc;

	if (c < 0)
		return -errno;
	struct ucred cred;
	socklen_t cl = sizeof(cred);
	if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &cl) || cred.uid != getuid()) {
		rc = -EPERM;
		goto out;
	}
	if (n > UPGRADE_MAX_FDS)
		n = UPGRADE_MAX_FDS;

	char cbuf[CMSG_SPACE(sizeof(int) * UPGRADE_MAX_FDS)];
	char tag[16];
	int tl = snprintf(tag, sizeof(tag), "FDS %u", n);
	struct iovec iov = { .iov_base = tag, .iov_len = (size_t)tl };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	memset(cbuf, 0, sizeof(cbuf));
	if (n) {
		mh.msg_control = cbuf;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * n);
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * n);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * n);
	}
	if (sendmsg(c, &mh, MSG_NOSIGNAL) < 0) {
		rc = -errno;
		goto out;
	}
	rc = wait_readable(c, timeout_ms);
	if (rc)
		goto out;
	char ans[16];
	ssize_t k = recv(c, ans, sizeof(ans), 0);
	rc = (k == 5 && memcmp(ans, "READY", 5) == 0) ? 0 : -EPROTO;
out:
	close(c);
	return rc;
}

int upgrade_fetch(pid_t old, int *fds, unsigned max, int *conn)
{
	struct sockaddr_un sa;
	socklen_t len = abstract_addr(old, &sa);
	int c = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0), rc;

	if (c < 0)
		return -errno;
	if (connect(c, (struct sockaddr *)&sa, len)) {
		rc = -errno;
		close(c);
		return rc;
	}
	rc = wait_readable(c, 10000);
	if (rc) {
		close(c);
		return rc;
	}
	char tag[32];
	char cbuf[CMSG_SPACE(sizeof(int) * UPGRADE_MAX_FDS)];
	struct iovec iov = { .iov_base = tag, .iov_len = sizeof(tag) - 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	ssize_t k = recvmsg(c, &mh, MSG_CMSG_CLOEXEC);
	if (k <= 0 || (mh.msg_flags & MSG_CTRUNC)) {
		close(c);
		return k < 0 ? -errno : -EPROTO;
	}
	unsigned got = 0;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		unsigned n = (unsigned)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		int *p = (int *)CMSG_DATA(cm);
		for (unsigned i = 0; i < n; i++) {
			if (got < max)
				fds[got++] = p[i];
			else
				close(p[i]);
		}
	}
	*conn = c;
	return (int)got;
}

int upgrade_ready(int conn)
{
	int rc = send(conn, "READY", 5, MSG_NOSIGNAL) == 5 ? 0 : -errno;

	close(conn);
	return rc;
}
