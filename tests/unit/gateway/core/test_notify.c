/* test_notify — the sd_notify datagrams of gateway/core/notify.c, received
 * on a path socket and on an abstract one the test creates. */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/notify.h"
#include "tests/lib/test.h"

/* Bind a datagram socket to `name` ("/path" or "@abstract"); fd or -1. */
static int bind_dgram(const char *name)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	size_t n = strlen(name);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	memcpy(sun.sun_path, name, n);
	if (name[0] == '@')
		sun.sun_path[0] = '\0';
	struct timeval tv = {.tv_sec = 2};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	if (bind(fd, (struct sockaddr *)&sun,
		 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (name[0] == '/')))) {
		close(fd);
		return -1;
	}
	return fd;
}

static void recv_str(int fd, char *buf, size_t len)
{
	ssize_t n = recv(fd, buf, len - 1, 0);

	buf[n > 0 ? n : 0] = '\0';
}

static void check_socket(const char *name)
{
	char buf[512];
	int fd = bind_dgram(name);

	CHECK_MSG(fd >= 0, "bind %s: %s", name, strerror(errno));
	if (fd < 0)
		return;
	setenv("NOTIFY_SOCKET", name, 1);
	CHECK(notify_enabled());
	CHECK_INT(notify_ready(), 0);
	recv_str(fd, buf, sizeof(buf));
	CHECK_MSG(strncmp(buf, "READY=1\n", 8) == 0, "got \"%s\"", buf);
	CHECK_INT(notify_reloading(), 0);
	recv_str(fd, buf, sizeof(buf));
	CHECK_MSG(strncmp(buf, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0, "got \"%s\"", buf);
	CHECK_INT(notify_stopping(), 0);
	recv_str(fd, buf, sizeof(buf));
	CHECK_MSG(strncmp(buf, "STOPPING=1", 10) == 0, "got \"%s\"", buf);
	CHECK_INT(notify_mainpid_ready(), 0);
	recv_str(fd, buf, sizeof(buf));
	char want[64];
	snprintf(want, sizeof(want), "MAINPID=%d\nREADY=1\n", (int)getpid());
	CHECK_MSG(strncmp(buf, want, strlen(want)) == 0, "got \"%s\"", buf);
	close(fd);
}

int main(void)
{
	char path[128], abstract[64];

	test_begin("notify_none");
	unsetenv("NOTIFY_SOCKET");
	CHECK(!notify_enabled());
	CHECK_INT(notify_ready(), 0); /* no manager: a no-op */
	setenv("NOTIFY_SOCKET", "vsock:2:1", 1);
	CHECK_INT(notify_ready(), -EINVAL);
	setenv("NOTIFY_SOCKET", "/nonexistent-dir/notify", 1);
	CHECK(notify_ready() < 0); /* a real error is reported, not swallowed */
	test_end();

	test_begin("notify_path_socket");
	snprintf(path, sizeof(path), "%s/reflex-notify-%d",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
	unlink(path);
	check_socket(path);
	unlink(path);
	test_end();

	test_begin("notify_abstract_socket");
	snprintf(abstract, sizeof(abstract), "@reflex-notify-test-%d", (int)getpid());
	check_socket(abstract);
	test_end();
	return test_exit_code();
}
