/* notify.c — see notify.h. */
#include "core/notify.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Fill sun from $NOTIFY_SOCKET: 0 and *len, -ENOENT when unset, -EINVAL
 * when it is not a usable AF_UNIX address. */
static int notify_addr(struct sockaddr_un *sun, socklen_t *len)
{
	const char *e = getenv("NOTIFY_SOCKET");
	size_t n;

	if (!e || !*e)
		return -ENOENT;
	/* "vsock:" and other schemes are newer systemd features we do not need. */
	if (e[0] != '/' && e[0] != '@')
		return -EINVAL;
	n = strlen(e);
	if (n >= sizeof(sun->sun_path))
		return -EINVAL;
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, e, n);
	if (e[0] == '@')
		sun->sun_path[0] = '\0'; /* abstract: no terminating NUL in the length */
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (e[0] == '/'));
	return 0;
}

bool notify_enabled(void)
{
	struct sockaddr_un sun;
	socklen_t len;

	return notify_addr(&sun, &len) == 0;
}

int notify_send(const char *fmt, ...)
{
	struct sockaddr_un sun;
	socklen_t len;
	char msg[512];
	va_list ap;
	int rc, fd, n;

	rc = notify_addr(&sun, &len);
	if (rc == -ENOENT)
		return 0;
	if (rc)
		return rc;
	va_start(ap, fmt);
	n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return -EMSGSIZE;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	rc = 0;
	if (sendto(fd, msg, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT, (struct sockaddr *)&sun, len) <
	    0)
		rc = -errno;
	close(fd);
	return rc;
}

int notify_ready(void)
{
	return notify_send("READY=1\nSTATUS=serving");
}

int notify_reloading(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return notify_send("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading",
			   (unsigned long long)ts.tv_sec * 1000000ULL +
				   (unsigned long long)ts.tv_nsec / 1000ULL);
}

int notify_stopping(void)
{
	return notify_send("STOPPING=1\nSTATUS=draining");
}

int notify_mainpid_ready(void)
{
	return notify_send("MAINPID=%d\nREADY=1\nSTATUS=serving (upgraded)", (int)getpid());
}
