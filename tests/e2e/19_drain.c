/* 19_drain — graceful shutdown: SIGTERM while a slow request (3 s at the
 * origin) is in flight: that request still completes with 200, new
 * connections are refused once the signal was handled, and reflexd exits 0
 * within timeouts.drain — and as soon as nothing is in flight, not at the
 * deadline. */
#include "lib/harness.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#define DRAIN_MS 5000
/* The in-flight request's time at the origin: the window in which a new
 * connection must be refused, so long enough for a loaded machine's
 * workers to act on SIGTERM. */
#define SLOW_MS 3000

static int gw_port, o_port;

struct slow {
	pthread_t thread;
	struct h_resp r;
	int rc;
	double done_at;
};

static void *slow_request(void *arg)
{
	struct slow *s = arg;
	char u[256];
	struct h_req q = {.url = u, .timeout_ms = 10000};

	snprintf(u, sizeof(u), "http://127.0.0.1:%d/?delay=%d&size=1000", gw_port, SLOW_MS);
	s->rc = h_http(&q, &s->r);
	s->done_at = h_now_ms();
	return NULL;
}

int main(void)
{
	static struct slow s;

	h_init("19_drain", 60);
	gw_port = h_free_port();
	o_port = h_free_port();
	if (!h_start_origin("origin", o_port, 1)) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	const char *cfg = h_write_config("workers: 2\n"
					 "listen: [\"127.0.0.1:%d\"]\n"
					 "upstream: [\"127.0.0.1:%d\"]\n"
					 "timeouts: {drain: %dms}\n",
					 gw_port, o_port, DRAIN_MS);
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start (config %s)", cfg);
		return test_exit_code();
	}

	/* An idle kept-alive client connection: it has nothing in flight, so
	 * draining must close it rather than wait for it. */
	struct h_buf idle_b = {0};
	int idle_fd = h_connect("127.0.0.1", gw_port, 2000);
	if (idle_fd >= 0) {
		h_send_str(idle_fd, "GET /?size=5 HTTP/1.1\r\nHost: x\r\n\r\n");
		h_read_responses(idle_fd, &idle_b, 1, 3000);
	}

	test_begin("drain_completes_in_flight_request");
	struct h_origin_stats st0, st;
	CHECK(h_origin_stats(o_port, &st0) == 0);
	pthread_create(&s.thread, NULL, slow_request, &s);
	/* SIGTERM only once the slow request is at the origin (it counts a
	 * request before its delay): a busy machine may take long to get
	 * the client thread that far. */
	for (double until = h_now_ms() + 5000; h_now_ms() < until; h_sleep_ms(20))
		if (h_origin_stats(o_port, &st) == 0 && st.requests > st0.requests)
			break;
	double t_sig = h_now_ms();
	CHECK_INT(h_signal(gw, SIGTERM), 0);

	/* New connections: refused once the listener is gone. The workers
	 * act on the signal in their own time: retry until refused, well
	 * before the in-flight request (SLOW_MS) completes. */
	int fd;
	for (double until = h_now_ms() + SLOW_MS - 500;; h_sleep_ms(50)) {
		fd = h_connect("127.0.0.1", gw_port, 1000);
		if (fd < 0 || h_now_ms() >= until)
			break;
		close(fd);
	}
	if (fd >= 0) {
		struct h_buf b = {0};
		static const char req[] =
			"GET /?size=5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

		h_send_all(fd, req, sizeof(req) - 1);
		enum h_read_end end = h_read_all(fd, &b, 2000, 0);
		test_fail(
			__FILE__, __LINE__,
			"a new connection %.0f ms after SIGTERM was accepted (then: read %s, '%s')",
			h_now_ms() - t_sig, h_read_end_name(end), h_excerpt(b.data, b.len, 120));
		close(fd);
		h_buf_free(&b);
	} else {
		CHECK_MSG(fd == -ECONNREFUSED, "new connection after SIGTERM: %s (want refused)",
			  strerror(-fd));
	}

	pthread_join(s.thread, NULL);
	CHECK_MSG(s.rc == 0 && s.r.status == 200 && s.r.body_bytes == 1000,
		  "in-flight request: status %ld, %llu bytes, %s", s.r.status,
		  (unsigned long long)s.r.body_bytes, s.r.error);
	h_resp_free(&s.r);

	int w = h_wait_exit(gw, DRAIN_MS + 1000);
	double t_exit = h_now_ms();
	printf("  SIGTERM at 0 ms, in-flight request done at %.0f ms, reflexd exit at %.0f ms\n",
	       s.done_at - t_sig, t_exit - t_sig);
	CHECK_MSG(w == 0, "reflexd still running %.0f ms after SIGTERM (drain %d ms)",
		  t_exit - t_sig, DRAIN_MS);
	if (w == 0) {
		CHECK_MSG(WIFEXITED(gw->status) && WEXITSTATUS(gw->status) == 0,
			  "reflexd exit status 0x%x, want exit 0", gw->status);
		CHECK_MSG(t_exit >= s.done_at - 50,
			  "reflexd exited %.0f ms before the in-flight request completed",
			  s.done_at - t_exit);
	}
	test_end();

	test_begin("drain_closes_idle_keepalive_connection");
	CHECK_MSG(idle_fd >= 0 && idle_b.len > 0, "idle connection setup failed: '%s'",
		  h_excerpt(idle_b.data, idle_b.len, 120));
	if (idle_fd >= 0) {
		size_t had = idle_b.len;
		enum h_read_end end = h_read_all(idle_fd, &idle_b, 1000, 0);

		CHECK_MSG(end == H_READ_CLOSED || end == H_READ_RESET,
			  "idle keep-alive connection after the drain: read %s",
			  h_read_end_name(end));
		CHECK_MSG(idle_b.len == had, "bytes on the idle connection during drain: '%s'",
			  h_excerpt(idle_b.data + had, idle_b.len - had, 120));
		close(idle_fd);
	}
	h_buf_free(&idle_b);
	test_end();

	/* Draining waits for in-flight requests, not for the deadline: once
	 * the last request is answered and nothing is left, reflexd exits. */
	test_begin("drain_exits_once_idle");
	/* Generous for a busy machine, still well short of the deadline. */
	CHECK_MSG(w == 0 && t_exit - s.done_at < 2000,
		  "reflexd exited %.0f ms after the last in-flight request completed (drain "
		  "deadline %d ms): it waits for something that is not a request",
		  t_exit - s.done_at, DRAIN_MS);
	test_end();

	/* SIGINT drains the same way. */
	test_begin("sigint_exits_0");
	int port2 = h_free_port();
	const char *cfg2 = h_write_config("workers: 1\n"
					  "listen: [\"127.0.0.1:%d\"]\n"
					  "upstream: [\"127.0.0.1:%d\"]\n"
					  "timeouts: {drain: %dms}\n",
					  port2, o_port, DRAIN_MS);
	struct h_proc *gw2 = h_start_reflexd_config("reflexd-sigint", port2, cfg2);
	CHECK_MSG(gw2 != NULL, "second reflexd did not start");
	if (gw2) {
		struct h_resp r;
		char u[128];

		snprintf(u, sizeof(u), "http://127.0.0.1:%d/?size=5", port2);
		CHECK_INT(h_get(u, &r), 200);
		h_resp_free(&r);
		h_signal(gw2, SIGINT);
		CHECK_MSG(h_wait_exit(gw2, 4000) == 0,
			  "reflexd still running 4 s after SIGINT with nothing in flight");
		CHECK_MSG(gw2->exited && WIFEXITED(gw2->status) && WEXITSTATUS(gw2->status) == 0,
			  "exit status 0x%x after SIGINT, want exit 0", gw2->status);
		CHECK_MSG(!h_log_has_sanitizer_report(gw2), "sanitizer report in %s", gw2->log);
	}
	test_end();
	return test_exit_code();
}
