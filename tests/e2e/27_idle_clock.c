/* 27_idle_clock — deadlines armed right after a long idle wait start from
 * the time of the wake-up, not from before the wait: after 3 s of silence,
 * a client that connects and waits 500 ms before sending its request (header
 * timeout 2 s) is answered, not closed by a deadline computed from a stale
 * clock. */
#include "lib/harness.h"

#include <string.h>
#include <unistd.h>

int main(void)
{
	h_init("27_idle_clock", 30);
	int gw = h_free_port(), o = h_free_port();

	if (!h_start_origin("origin", o, 1)) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	const char *cfg = h_write_config("workers: 1\nlisten: [\"127.0.0.1:%d\"]\n"
					 "upstream: [\"127.0.0.1:%d\"]\nadmin: {listen: off}\n"
					 "timeouts: {header: 2s}\n",
					 gw, o);
	struct h_proc *p = h_start_reflexd_config("reflexd", gw, cfg);
	if (!p) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start");
		return test_exit_code();
	}

	test_begin("deadline_after_idle_wait_starts_at_wakeup");
	char url[64];
	struct h_resp r;
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/?size=3", gw);
	CHECK_INT(h_get(url, &r), 200);
	h_resp_free(&r);
	h_sleep_ms(3000); /* the worker sleeps: no timer is armed */
	int fd = h_connect("127.0.0.1", gw, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd >= 0) {
		struct h_buf b = { 0 };
		h_sleep_ms(500);
		h_send_str(fd, "GET /?size=3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
		h_read_all(fd, &b, 3000, 0);
		CHECK_MSG(b.len >= 12 && memcmp(b.data, "HTTP/1.1 200", 12) == 0,
			  "a request sent 500 ms after connecting (header timeout 2 s) got '%s'",
			  h_excerpt(b.data, b.len, 60));
		h_buf_free(&b);
		close(fd);
	}
	test_end();
	return test_exit_code();
}
