/* 29_tcp_acks — what reflexd's TCP ACK policy means for a client.
 *
 * Accepted sockets start with delayed ACKs (docs/gateway.md, "TCP options"): the ACK
 * of a request rides on its response, so a connection that sends one request
 * receives no segment of its own for it. A request whose body is still to
 * come is ACKed at once: a client with Nagle's algorithm on (no TCP_NODELAY)
 * holds a small body until its head is ACKed, and must not wait for a
 * delayed-ACK timer (40 ms and more) before it may send the body.
 *
 * A connection that closes after its response (Connection: close, the request
 * read to its end) gets the FIN on the response's last segment: the client
 * receives one packet for the response and the close, not two.
 *
 * A listener with `deferred: true` is handed a connection only once its first
 * bytes are in: a silent client is not accepted at once, a speaking one is
 * served, and the silent one is closed after the kernel hands it over anyway.
 *
 * The checks take the best of five tries: on a loaded machine one answer may
 * take longer than the delayed-ACK timer, never five in a row by chance,
 * while the behaviour they guard against shows on every try. */
#include "lib/harness.h"

#include <netinet/in.h>
#include <linux/tcp.h> /* the kernel's tcp_info: glibc's lacks tcpi_segs_in */
#include <stdlib.h>
#include <unistd.h>

#define TRIES 5

static int gw_port;

/* Segments without payload the client received: the SYN-ACK, the FIN (when
 * it does not ride on data) and every pure ACK. */
static int bare_segments_in(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0)
		return -1;
	return (int)(ti.tcpi_segs_in - ti.tcpi_data_segs_in);
}

/* The fewest segments without data a client received over TRIES connections
 * that each send one request with Connection: close and read to EOF. */
static int best_bare_segments_per_close(void)
{
	int best = 99;

	for (int i = 0; i < TRIES && best > 1; i++) {
		struct h_buf b = {0};
		int fd = h_connect("127.0.0.1", gw_port, 2000);

		CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
		if (fd < 0)
			break;
		h_send_str(fd, "GET /hello?size=64 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
		enum h_read_end end = h_read_all(fd, &b, 5000, 0);
		CHECK_MSG(end == H_READ_CLOSED && b.len > 12 && !memcmp(b.data, "HTTP/1.1 200", 12),
			  "read ended %s, got '%s'", h_read_end_name(end),
			  h_excerpt(b.data, b.len, 200));
		int n = bare_segments_in(fd);
		if (n >= 0 && n < best)
			best = n;
		h_buf_free(&b);
		close(fd);
	}
	return best;
}

static void test_request_ack_rides_on_response(void)
{
	test_begin("request_ack_rides_on_response");
	int best = best_bare_segments_per_close();
	/* SYN-ACK and FIN; a third is an ACK sent for the request alone */
	CHECK_MSG(best <= 2, "the client received %d segments without data (best of %d), want <= 2",
		  best, TRIES);
	test_end();
}

static void test_fin_rides_on_response(void)
{
	test_begin("fin_rides_on_response");
	int best = best_bare_segments_per_close();
	/* the SYN-ACK alone: a second is a FIN sent after the response */
	CHECK_MSG(best <= 1, "the client received %d segments without data (best of %d), want 1: "
			     "the FIN did not ride on the response",
		  best, TRIES);
	test_end();
}

static void test_nagle_body_not_delayed(void)
{
	double best = 1e9;

	test_begin("nagle_client_body_not_held_by_delayed_ack");
	for (int i = 0; i < TRIES && best >= 25; i++) {
		struct h_buf b = {0};
		int zero = 0;
		int fd = h_connect("127.0.0.1", gw_port, 2000);

		CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
		if (fd < 0)
			break;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &zero, sizeof(zero));
		/* a first exchange, so the connection is past its start-up
		 * quick ACKs on both sides */
		h_send_str(fd, "GET /hello?size=8 HTTP/1.1\r\nHost: x\r\n\r\n");
		enum h_read_end end = h_read_responses(fd, &b, 1, 5000);
		CHECK_MSG(end == H_READ_DONE, "first response: read ended %s",
			  h_read_end_name(end));
		h_buf_free(&b);
		double t0 = h_now_ms();
		h_send_str(fd, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
			       "Connection: close\r\n\r\n");
		h_send_str(fd, "0123456789"); /* Nagle holds this until the head is ACKed */
		end = h_read_all(fd, &b, 5000, 0);
		double ms = h_now_ms() - t0;
		CHECK_MSG(end == H_READ_CLOSED && b.len > 12 && !memcmp(b.data, "HTTP/1.1 200", 12),
			  "POST: read ended %s, got '%s'", h_read_end_name(end),
			  h_excerpt(b.data, b.len, 200));
		if (ms < best)
			best = ms;
		h_buf_free(&b);
		close(fd);
	}
	CHECK_MSG(best < 25, "a Nagle client's POST took %.1f ms (best of %d): its body waited "
			     "for a delayed ACK",
		  best, TRIES);
	test_end();
}

static unsigned long long accepted_total(int admin_port)
{
	char url[96];
	struct h_resp r;
	unsigned long long n = ~0ull;
	static const char key[] = "\nreflex_connections_accepted_total ";

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", admin_port);
	if (h_get(url, &r) == 200 && r.body) {
		const char *p = strstr(r.body, key);
		if (p)
			n = strtoull(p + sizeof(key) - 1, NULL, 10);
	}
	h_resp_free(&r);
	return n;
}

/* listen.deferred: the kernel holds a connection until its first bytes arrive, so a
 * client that connects and says nothing costs reflexd nothing; after the first SYN-ACK
 * retransmission (about 1 s) it is handed over anyway and meets the header timeout. */
static void test_deferred_listener(int o_port)
{
	int port = h_free_port(), adm = h_free_port();
	const char *cfg = h_write_config("workers: 1\n"
					 "listen:\n"
					 "  - {address: \"127.0.0.1:%d\", deferred: true}\n"
					 "upstream: [\"127.0.0.1:%d\"]\n"
					 "admin: {listen: \"127.0.0.1:%d\"}\n"
					 "timeouts: {header: 1s}\n",
					 port, o_port, adm);
	struct h_proc *gw = h_start_reflexd_config("reflexd-deferred", port, cfg);

	test_begin("deferred_listener_holds_silent_client");
	CHECK_MSG(gw != NULL, "reflexd did not start (config %s)", cfg);
	if (!gw) {
		test_end();
		return;
	}
	CHECK_INT(h_wait_port("127.0.0.1", adm, 5000), 0);
	/* h_start_reflexd_config's readiness probe connected once: wait until it is counted */
	unsigned long long n0 = accepted_total(adm);
	for (double until = h_now_ms() + 3000; h_now_ms() < until;) {
		h_sleep_ms(100);
		unsigned long long n = accepted_total(adm);
		if (n == n0)
			break;
		n0 = n;
	}
	int silent = h_connect("127.0.0.1", port, 2000);
	CHECK_MSG(silent >= 0, "connect: %s", strerror(-silent));
	h_sleep_ms(300);
	CHECK_MSG(accepted_total(adm) == n0, "a silent client was accepted at once (%llu -> %llu)",
		  n0, accepted_total(adm));

	struct h_buf b = {0};
	int fd = h_connect("127.0.0.1", port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	h_send_str(fd, "GET /hello?size=64 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
	enum h_read_end end = h_read_all(fd, &b, 5000, 0);
	CHECK_MSG(end == H_READ_CLOSED && b.len > 12 && !memcmp(b.data, "HTTP/1.1 200", 12),
		  "a client that speaks: read ended %s, got '%s'", h_read_end_name(end),
		  h_excerpt(b.data, b.len, 200));
	CHECK_MSG(accepted_total(adm) == n0 + 1, "accepted %llu -> %llu, want one more", n0,
		  accepted_total(adm));
	h_buf_free(&b);
	close(fd);

	/* the silent one: handed over after about a second, then the 1 s header timeout */
	double t0 = h_now_ms();
	end = h_read_all(silent, &b, 8000, 0);
	CHECK_MSG(end == H_READ_CLOSED || end == H_READ_RESET,
		  "the silent client was never closed: read ended %s after %.0f ms",
		  h_read_end_name(end), h_now_ms() - t0);
	CHECK_MSG(b.len == 0 || !memcmp(b.data, "HTTP/1.1 408", 12), "silent client got '%s'",
		  h_excerpt(b.data, b.len, 200));
	printf("# silent client closed after %.0f ms more, accepted %llu -> %llu\n",
	       h_now_ms() - t0, n0, accepted_total(adm));
	h_buf_free(&b);
	close(silent);
	test_end();
	h_finish(gw, 5000);
}

int main(void)
{
	h_init("29_tcp_acks", 60);
	gw_port = h_free_port();
	int o_port = h_free_port();
	if (!h_start_origin("origin", o_port, 1)) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	const char *cfg = h_write_config("workers: 1\n"
					 "listen: [\"127.0.0.1:%d\"]\n"
					 "upstream: [\"127.0.0.1:%d\"]\n",
					 gw_port, o_port);
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start (config %s)", cfg);
		return test_exit_code();
	}
	test_request_ack_rides_on_response();
	test_fin_rides_on_response();
	test_nagle_body_not_delayed();
	h_finish(gw, 5000);
	test_deferred_listener(o_port);
	return test_exit_code();
}
