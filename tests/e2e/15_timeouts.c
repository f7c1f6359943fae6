/* 15_timeouts — client-side deadlines of reflexd with small configured
 * values: a head that never finishes (slowloris trickle) gets 408 and a close
 * within timeouts.header; a body that stalls gets 408 within timeouts.body;
 * an idle keep-alive connection is closed after timeouts.keepalive without
 * any response bytes; a client that pauses reading longer than
 * timeouts.upstream_response still gets its whole response. */
#include "lib/harness.h"

#include <stdlib.h>
#include <unistd.h>

#define HEADER_MS 1000
#define BODY_MS 1000
#define KEEPALIVE_MS 1000
#define SLACK_MS 1500
#define UPSTREAM_MS 1500
#define SEND_MS 6000

static int gw_port, o_port;

static void test_slowloris(void)
{
	struct h_buf b = {0};
	struct h_raw_resp rr[2];
	enum h_read_end end = H_READ_TIMEOUT;
	int fd, k;

	test_begin("slowloris_head_408");
	/* before the connect: reflexd may start the head deadline at its accept
	 * before this thread gets back from connect() */
	double t0 = h_now_ms();
	fd = h_connect("127.0.0.1", gw_port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd < 0)
		goto out;
	h_send_str(fd, "GET / HTTP/1.1\r\nHost: x\r\n");
	/* Keep trickling header lines: the deadline is for the whole head, so
	 * progress must not extend it. */
	for (int i = 0; i < 40; i++) {
		end = h_read_all(fd, &b, 250, 0);
		if (end == H_READ_TIMEOUT && b.len) /* answered: now it must close */
			end = h_read_all(fd, &b, 1000, 0);
		if (end != H_READ_TIMEOUT || b.len)
			break;
		if (h_send_str(fd, "X-Slow: 1\r\n") != 0) {
			end = h_read_all(fd, &b, 1000, 0);
			break;
		}
	}
	double dt = h_now_ms() - t0;
	close(fd);
	k = h_parse_responses(b.data ? b.data : "", b.len, rr, 2, NULL);
	CHECK_MSG(k >= 1 && rr[0].status == 408, "got '%s' (read ended %s after %.0f ms), want 408",
		  h_excerpt(b.data, b.len, 200), h_read_end_name(end), dt);
	CHECK_MSG(end == H_READ_CLOSED || end == H_READ_RESET,
		  "connection still open after %.0f ms", dt);
	CHECK_MSG(dt >= HEADER_MS - 100 && dt <= HEADER_MS + SLACK_MS,
		  "closed after %.0f ms; header timeout is %d ms", dt, HEADER_MS);
	h_raw_resp_free(rr, k);
out:
	h_buf_free(&b);
	test_end();
}

static void test_body_stall(void)
{
	struct h_buf b = {0};
	struct h_raw_resp rr[2];
	int fd, k;

	test_begin("body_stall_408");
	fd = h_connect("127.0.0.1", gw_port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd < 0)
		goto out;
	double t0 = h_now_ms();
	h_send_str(fd, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789");
	enum h_read_end end = h_read_all(fd, &b, BODY_MS + SLACK_MS + 1000, 0);
	double dt = h_now_ms() - t0;
	close(fd);
	k = h_parse_responses(b.data ? b.data : "", b.len, rr, 2, NULL);
	CHECK_MSG(k >= 1 && rr[0].status == 408, "got '%s' (read ended %s after %.0f ms), want 408",
		  h_excerpt(b.data, b.len, 200), h_read_end_name(end), dt);
	CHECK_MSG(end == H_READ_CLOSED || end == H_READ_RESET,
		  "connection still open after %.0f ms", dt);
	CHECK_MSG(dt >= BODY_MS - 100 && dt <= BODY_MS + SLACK_MS,
		  "answered after %.0f ms; body timeout is %d ms", dt, BODY_MS);
	h_raw_resp_free(rr, k);
out:
	h_buf_free(&b);
	test_end();
}

/* timeouts.body bounds the gap between body reads: an upload that
 * trickles for longer than the timeout but never pauses that long is fine. */
static void test_slow_steady_body(void)
{
	struct h_buf b = {0};
	struct h_raw_resp rr[2];
	char bytes[32] = "";
	int fd, k;

	test_begin("slow_steady_body_not_408");
	fd = h_connect("127.0.0.1", gw_port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd < 0)
		goto out;
	h_send_str(fd, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n"
		       "Connection: close\r\n\r\n");
	for (int i = 0; i < 10; i++) {
		h_sleep_ms(BODY_MS / 4);
		h_send_str(fd, "012345");
	}
	enum h_read_end end = h_read_all(fd, &b, 5000, 0);
	close(fd);
	k = h_parse_responses(b.data ? b.data : "", b.len, rr, 2, NULL);
	CHECK_MSG(k >= 1 && rr[0].status == 200, "got '%s' (read ended %s)",
		  h_excerpt(b.data, b.len, 200), h_read_end_name(end));
	if (k >= 1 && rr[0].status == 200)
		CHECK_MSG(h_head_header(rr[0].head, "X-Body-Bytes", bytes, sizeof(bytes)) &&
				  !strcmp(bytes, "60"),
			  "origin X-Body-Bytes '%s', want 60", bytes);
	h_raw_resp_free(rr, k);
out:
	h_buf_free(&b);
	test_end();
}

/* A connection that never sends a byte is a slowloris too: it must be
 * gone by the header timeout (a 408 first is allowed, nothing else). */
static void test_silent_connection(void)
{
	struct h_buf b = {0};
	int code = 0;

	test_begin("silent_connection_closed_at_header_timeout");
	int fd = h_connect("127.0.0.1", gw_port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd < 0)
		goto out;
	double t0 = h_now_ms();
	enum h_read_end end = h_read_all(fd, &b, HEADER_MS + SLACK_MS + 1000, 0);
	double dt = h_now_ms() - t0;
	close(fd);
	CHECK_MSG(end == H_READ_CLOSED || end == H_READ_RESET,
		  "silent connection: read ended %s after %.0f ms (header timeout %d ms)",
		  h_read_end_name(end), dt, HEADER_MS);
	CHECK_MSG(dt <= HEADER_MS + SLACK_MS, "silent connection closed after %.0f ms", dt);
	if (b.len)
		CHECK_MSG(h_statuses(b.data, b.len, &code, 1) == 1 && code == 408,
			  "silent connection got '%s' (only a 408 is acceptable)",
			  h_excerpt(b.data, b.len, 200));
out:
	h_buf_free(&b);
	test_end();
}

static void test_idle_keepalive(void)
{
	struct h_buf b = {0};
	int fd;

	test_begin("idle_keepalive_closed_silently");
	fd = h_connect("127.0.0.1", gw_port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd < 0)
		goto out;
	/* before the request: the keep-alive timer starts when the response
	 * went out, which may be well before this thread read it */
	double t0 = h_now_ms();
	h_send_str(fd, "GET /?size=10 HTTP/1.1\r\nHost: x\r\n\r\n");
	enum h_read_end end = h_read_responses(fd, &b, 1, 5000);
	CHECK_MSG(end == H_READ_DONE, "first response: read ended %s: '%s'", h_read_end_name(end),
		  h_excerpt(b.data, b.len, 200));
	size_t first = b.len;
	end = h_read_all(fd, &b, KEEPALIVE_MS + SLACK_MS + 1000, 0);
	double dt = h_now_ms() - t0;
	close(fd);
	CHECK_MSG(end == H_READ_CLOSED || end == H_READ_RESET,
		  "idle connection: read ended %s after %.0f ms (keepalive timeout %d ms)",
		  h_read_end_name(end), dt, KEEPALIVE_MS);
	CHECK_MSG(dt >= KEEPALIVE_MS - 100 && dt <= KEEPALIVE_MS + SLACK_MS,
		  "idle connection closed after %.0f ms; keepalive timeout is %d ms", dt,
		  KEEPALIVE_MS);
	CHECK_MSG(b.len == first, "%zu bytes sent on an idle connection: '%s'", b.len - first,
		  h_excerpt(b.data + first, b.len - first, 200));
out:
	h_buf_free(&b);
	test_end();
}

/* A client that stops reading for longer than upstream_response (but far
 * less than the send timeout) pauses the upstream read: the wait is the
 * client's, bounded by timeouts.send, so the response must not be cut with
 * an "upstream timed out" it did not commit. */
static void test_paused_reader_not_upstream_timeout(void)
{
	static const char req[] = "GET /?size=16000000 HTTP/1.1\r\nHost: x\r\n"
				  "Connection: close\r\n\r\n";
	struct h_buf b = {0};
	struct h_raw_resp rr[2];
	int k;

	test_begin("paused_reader_not_upstream_timeout");
	int fd = h_connect("127.0.0.1", gw_port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd < 0)
		goto out;
	h_send_str(fd, req);
	h_sleep_ms(UPSTREAM_MS * 2 + 500);
	enum h_read_end end = h_read_all(fd, &b, 15000, 0);
	close(fd);
	k = h_parse_responses(b.data ? b.data : "", b.len, rr, 2, NULL);
	CHECK_MSG(end == H_READ_CLOSED && k == 1 && rr[0].status == 200 && rr[0].complete &&
			  rr[0].body_len == 16000000,
		  "read ended %s, %d response(s), %zu bytes in all, head '%s'",
		  h_read_end_name(end), k, b.len,
		  k ? h_excerpt(rr[0].head, strlen(rr[0].head), 200) : "");
	h_raw_resp_free(rr, k);
out:
	h_buf_free(&b);
	test_end();
}

/* A client that never reads its response is reaped when a send has made no
 * progress for timeouts.send: its connection is reset and the upstream
 * connection feeding it is closed too (nothing stays held for it). */
static void test_never_reading_client_reaped(void)
{
	static const char req[] = "GET /?size=64000000 HTTP/1.1\r\nHost: x\r\n\r\n";
	struct h_origin_stats st0, st1;
	struct h_buf b = {0};

	test_begin("never_reading_client_reaped");
	int fd = h_connect("127.0.0.1", gw_port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd < 0)
		goto out;
	h_send_str(fd, req);
	h_sleep_ms(1000);
	CHECK(h_origin_stats(o_port, &st0) == 0);
	h_sleep_ms(SEND_MS + 1500); /* never reading */
	CHECK(h_origin_stats(o_port, &st1) == 0);
	CHECK_MSG(st1.open == st0.open - 1,
		  "origin connections open %ld while the client stalled, %ld after the send "
		  "timeout: the upstream connection should be gone",
		  st0.open, st1.open);
	/* what the kernel holds still arrives, then the reset */
	enum h_read_end end = h_read_all(fd, &b, 5000, 1000);
	CHECK_MSG((end == H_READ_RESET || end == H_READ_CLOSED) && b.len < 64000000,
		  "read ended %s after %zu bytes", h_read_end_name(end), b.len);
	close(fd);
out:
	h_buf_free(&b);
	test_end();
}

int main(void)
{
	h_init("15_timeouts", 90);
	gw_port = h_free_port();
	o_port = h_free_port();
	if (!h_start_origin("origin", o_port, 1)) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	const char *cfg = h_write_config("workers: 1\n"
					 "listen: [\"127.0.0.1:%d\"]\n"
					 "upstream: [\"127.0.0.1:%d\"]\n"
					 "timeouts: {header: %dms, body: %dms, keepalive: %dms, "
					 "upstream_response: %dms, send: %dms, drain: 1s}\n",
					 gw_port, o_port, HEADER_MS, BODY_MS, KEEPALIVE_MS,
					 UPSTREAM_MS, SEND_MS);
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start (config %s)", cfg);
		return test_exit_code();
	}
	test_slowloris();
	test_body_stall();
	test_slow_steady_body();
	test_silent_connection();
	test_idle_keepalive();
	test_paused_reader_not_upstream_timeout();
	test_never_reading_client_reaped();
	h_finish(gw, 5000);
	return test_exit_code();
}
