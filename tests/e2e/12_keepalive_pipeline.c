/* 12_keepalive_pipeline — connection reuse on both sides of reflexd:
 * pipelined requests answered in order, upstream keep-alive reuse within and
 * across client connections (counted with the origin's /__stats), HTTP/1.0
 * with and without keep-alive, many concurrent clients, and recovery when a pooled upstream
 * connection was closed by the origin (retry on a fresh connection). */
#include "lib/harness.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORKERS 2

static int gw_port, o_port;

static void test_pipeline(void)
{
	struct h_buf req = {0}, b = {0};
	struct h_raw_resp rr[16];
	char one[256];
	int fd, k = 0;

	test_begin("pipeline_10_in_order");
	for (int i = 0; i < 10; i++) {
		/* Vary the delay so a gateway that answers out of order shows it. */
		int len = snprintf(one, sizeof(one),
				   "GET /echo?i=%d&delay=%d HTTP/1.1\r\nHost: x\r\n%s\r\n", i,
				   (i % 3 == 0) ? 60 : 0, i == 9 ? "Connection: close\r\n" : "");
		size_t off = req.len;
		req.len += (size_t)len;
		req.data = realloc(req.data, req.len + 1);
		memcpy(req.data + off, one, (size_t)len + 1);
	}
	fd = h_connect("127.0.0.1", gw_port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd >= 0) {
		/* One write: all ten requests arrive together. */
		CHECK_INT(h_send_all(fd, req.data, req.len), 0);
		enum h_read_end end = h_read_all(fd, &b, 10000, 0);
		CHECK_MSG(end == H_READ_CLOSED, "read ended %s", h_read_end_name(end));
		close(fd);
		k = h_parse_responses(b.data ? b.data : "", b.len, rr, 16, NULL);
		CHECK_MSG(k == 10, "%d responses to 10 pipelined requests; stream '%s'", k,
			  h_excerpt(b.data, b.len, 300));
		for (int i = 0; i < k && i < 10; i++) {
			struct h_echo e;
			char want[64];

			snprintf(want, sizeof(want), "/echo?i=%d&delay=%d", i,
				 (i % 3 == 0) ? 60 : 0);
			if (rr[i].status != 200 || h_echo_parse(rr[i].body, rr[i].body_len, &e)) {
				test_fail(__FILE__, __LINE__, "response %d: status %d body '%s'", i,
					  rr[i].status, h_excerpt(rr[i].body, rr[i].body_len, 100));
				continue;
			}
			CHECK_MSG(!strcmp(e.target, want), "response %d answers '%s', want '%s'", i,
				  e.target, want);
			h_echo_free(&e);
		}
		h_raw_resp_free(rr, k);
	}
	h_buf_free(&req);
	h_buf_free(&b);
	test_end();
}

/* A client that pipelines and then half-closes (printf ... | nc) gets an
 * answer to every request it sent, in order, then the FIN; a last request
 * cut short by the FIN is dropped without holding the connection. */
static void test_pipeline_half_close(void)
{
	static const char req[] =
		"GET /echo?i=0&delay=60 HTTP/1.1\r\nHost: x\r\n\r\n"
		"POST /echo?i=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
		"GET /echo?i=2 HTTP/1.1\r\nHost: x\r\n\r\n"
		"POST /echo?i=3 HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc";
	struct h_buf b = {0};
	struct h_raw_resp rr[8];
	int k = 0;

	test_begin("pipeline_then_half_close_all_answered");
	int fd = h_connect("127.0.0.1", gw_port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd >= 0) {
		CHECK_INT(h_send_all(fd, req, sizeof(req) - 1), 0);
		shutdown(fd, SHUT_WR);
		double t0 = h_now_ms();
		enum h_read_end end = h_read_all(fd, &b, 5000, 0);
		CHECK_MSG(end == H_READ_CLOSED && h_now_ms() - t0 < 3000,
			  "read ended %s after %.0f ms", h_read_end_name(end), h_now_ms() - t0);
		close(fd);
		k = h_parse_responses(b.data ? b.data : "", b.len, rr, 8, NULL);
		CHECK_MSG(k == 3, "%d responses to 3 complete pipelined requests; stream '%s'", k,
			  h_excerpt(b.data, b.len, 300));
		for (int i = 0; i < k && i < 3; i++) {
			struct h_echo e;
			char want[32];

			snprintf(want, sizeof(want), i ? "/echo?i=%d" : "/echo?i=%d&delay=60", i);
			if (rr[i].status != 200 || !rr[i].complete ||
			    h_echo_parse(rr[i].body, rr[i].body_len, &e)) {
				test_fail(__FILE__, __LINE__, "response %d: status %d body '%s'", i,
					  rr[i].status, h_excerpt(rr[i].body, rr[i].body_len, 100));
				continue;
			}
			CHECK_MSG(!strcmp(e.target, want), "response %d answers '%s', want '%s'", i,
				  e.target, want);
			h_echo_free(&e);
		}
		h_raw_resp_free(rr, k);
	}
	h_buf_free(&b);
	test_end();
}

/* Answers the gateway makes without waiting (cache hits here) must not pile
 * up for a client that pipelines and does not read: the next request is
 * parsed only once the answers before it have left. 300 pipelined hits of a
 * 200 KB object queued 60 MB before; all of them still arrive, in order,
 * after the client half-closed. */
static void test_pipelined_hits_bounded(int cache_port, struct h_proc *gw)
{
	static const char one[] = "GET /?size=200000&hdr=Cache-Control%3Amax-age%3D300 HTTP/1.1\r\n"
				  "Host: x\r\n\r\n";
	enum { N = 300 };
	struct h_buf b = {0};
	struct h_resp r;
	char u[256];

	test_begin("pipelined_cache_hits_bounded_memory");
	snprintf(u, sizeof(u),
		 "http://127.0.0.1:%d/?size=200000&hdr=Cache-Control%%3Amax-age%%3D300",
		 cache_port);
	for (int i = 0; i < 2; i++) { /* store, then one hit: the baseline is warm */
		h_get(u, &r);
		h_resp_free(&r);
	}
	char *req = malloc(N * (sizeof(one) - 1));
	for (int i = 0; i < N; i++)
		memcpy(req + i * (sizeof(one) - 1), one, sizeof(one) - 1);
	long base = h_rss_kb(gw->pid);
	int fd = h_connect("127.0.0.1", cache_port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd >= 0) {
		CHECK_INT(h_send_all(fd, req, N * (sizeof(one) - 1)), 0);
		shutdown(fd, SHUT_WR);
		h_sleep_ms(1500); /* not reading */
		long paused = h_rss_kb(gw->pid);
		enum h_read_end end = h_read_all(fd, &b, 10000, 0);
		close(fd);
		size_t want = 0; /* the bodies are the origin's a-z pattern */
		for (const char *p = b.data;
		     p && (p = memmem(p, b.len - (size_t)(p - b.data), "HTTP/1.1 200 ", 13));
		     p += 13)
			want++;
		CHECK_MSG(end == H_READ_CLOSED && want == N,
			  "read ended %s with %zu answers of %d (%zu bytes)", h_read_end_name(end),
			  want, N, b.len);
		CHECK_MSG(paused - base < 16 * 1024,
			  "reflexd RSS grew by %ld KiB while the client did not read (before %ld)",
			  paused - base, base);
		printf("  pipelined hits: RSS before %ld KiB, while not reading %ld KiB\n", base,
		       paused);
	}
	free(req);
	h_buf_free(&b);
	test_end();
}

static void test_reuse_one_client_conn(void)
{
	struct h_origin_stats s0, s1;
	void *c = h_curl_new();
	char u[256];
	long client_conns = 0;
	int ok = 0;

	test_begin("keepalive_100_on_one_connection");
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/?size=100", gw_port);
	CHECK(h_origin_stats(o_port, &s0) == 0);
	for (int i = 0; i < 100; i++) {
		struct h_resp r;
		struct h_req q = {.url = u, .curl = c};

		if (h_http(&q, &r) == 0 && r.status == 200 && r.body_bytes == 100)
			ok++;
		client_conns += r.num_connects;
		h_resp_free(&r);
	}
	h_curl_free(c);
	CHECK(h_origin_stats(o_port, &s1) == 0);
	CHECK_MSG(ok == 100, "%d of 100 requests answered 200 with 100 bytes", ok);
	CHECK_MSG(client_conns == 1, "the client needed %ld connections (gateway closed it?)",
		  client_conns);
	CHECK_MSG(s1.requests - s0.requests == 100, "origin served %ld requests, want 100",
		  s1.requests - s0.requests);
	CHECK_MSG(s1.connections - s0.connections <= 2,
		  "origin accepted %ld new connections for 100 keep-alive requests (want <= 2)",
		  s1.connections - s0.connections);
	test_end();
}

static void test_reuse_across_client_conns(void)
{
	struct h_origin_stats s0, s1;
	char u[256];
	int ok = 0;

	test_begin("upstream_reuse_across_100_client_connections");
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/?size=100", gw_port);
	CHECK(h_origin_stats(o_port, &s0) == 0);
	for (int i = 0; i < 100; i++) {
		struct h_resp r;
		struct h_req q = {.url = u}; /* a fresh handle: a new client connection */

		if (h_http(&q, &r) == 0 && r.status == 200 && r.body_bytes == 100)
			ok++;
		h_resp_free(&r);
	}
	CHECK(h_origin_stats(o_port, &s1) == 0);
	CHECK_MSG(ok == 100, "%d of 100 requests answered 200 with 100 bytes", ok);
	CHECK_MSG(s1.requests - s0.requests == 100, "origin served %ld requests, want 100",
		  s1.requests - s0.requests);
	CHECK_MSG(s1.connections - s0.connections <= WORKERS * 2,
		  "origin accepted %ld new connections for 100 client connections (want <= %d)",
		  s1.connections - s0.connections, WORKERS * 2);
	test_end();
}

static void test_http10(void)
{
	struct h_buf b = {0};
	struct h_raw_resp rr[3];
	char conn[64] = "";
	int k;

	test_begin("http10_without_keepalive");
	static const char r10[] = "GET /?size=10 HTTP/1.0\r\n\r\n";
	enum h_read_end end = h_raw_roundtrip("127.0.0.1", gw_port, r10, sizeof(r10) - 1, &b, 5000);
	CHECK_MSG(end == H_READ_CLOSED, "1.0 request without keep-alive: read ended %s",
		  h_read_end_name(end));
	k = h_parse_responses(b.data ? b.data : "", b.len, rr, 3, NULL);
	CHECK_MSG(k == 1 && rr[0].status == 200 && rr[0].body_len == 10, "1.0 response: '%s'",
		  h_excerpt(b.data, b.len, 300));
	h_raw_resp_free(rr, k);
	h_buf_free(&b);
	test_end();

	test_begin("http10_with_keepalive");
	int fd = h_connect("127.0.0.1", gw_port, 2000);
	CHECK_MSG(fd >= 0, "connect: %s", strerror(-fd));
	if (fd >= 0) {
		static const char ka[] = "GET /?size=10 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";

		CHECK_INT(h_send_all(fd, ka, sizeof(ka) - 1), 0);
		end = h_read_responses(fd, &b, 1, 5000);
		CHECK_MSG(end == H_READ_DONE, "first 1.0 keep-alive response: read ended %s: '%s'",
			  h_read_end_name(end), h_excerpt(b.data, b.len, 300));
		k = h_parse_responses(b.data ? b.data : "", b.len, rr, 3, NULL);
		if (k >= 1) {
			CHECK_INT(rr[0].status, 200);
			CHECK_MSG(rr[0].has_cl, "1.0 keep-alive response without Content-Length");
			CHECK_MSG(h_head_header(rr[0].head, "Connection", conn, sizeof(conn)) &&
					  !strcasecmp(conn, "keep-alive"),
				  "1.0 keep-alive response Connection '%s'", conn);
		}
		h_raw_resp_free(rr, k);
		h_buf_free(&b);
		/* The connection is still open: a second request is answered. */
		CHECK_INT(h_send_all(fd, ka, sizeof(ka) - 1), 0);
		end = h_read_responses(fd, &b, 1, 5000);
		CHECK_MSG(end == H_READ_DONE, "second 1.0 keep-alive request: read ended %s: '%s'",
			  h_read_end_name(end), h_excerpt(b.data, b.len, 300));
		h_buf_free(&b);
		close(fd);
	}
	test_end();
}

/* Many clients at once, each on its own kept-alive connection, mixing
 * sizes, HEAD and POST: every answer is complete and belongs to its request
 * (the body hash and the echo of what was sent prove it). */
#define CONC_THREADS 16
#define CONC_REQUESTS 25

struct conc {
	pthread_t thread;
	int id, ok;
	char why[768];
};

static void *conc_client(void *arg)
{
	struct conc *c = arg;
	void *curl = h_curl_new();

	for (int i = 0; i < CONC_REQUESTS; i++) {
		char u[256], body[512], hash[64] = "", want[17];
		unsigned size = (unsigned)((c->id * 7919 + i * 104729) % 70000);
		struct h_resp r;
		int kind = (c->id + i) % 3;
		bool good;

		if (kind == 0) {
			snprintf(u, sizeof(u), "http://127.0.0.1:%d/?size=%u&t=%d", gw_port, size,
				 c->id);
			struct h_req q = {.url = u, .curl = curl, .count_only = true};
			good = h_http(&q, &r) == 0 && r.status == 200 && r.body_bytes == size &&
			       r.body_hash == h_pattern_hash(size);
		} else if (kind == 1) {
			snprintf(u, sizeof(u), "http://127.0.0.1:%d/?size=%u", gw_port, size);
			struct h_req q = {.url = u, .curl = curl, .head = true};
			good = h_http(&q, &r) == 0 && r.status == 200 && r.body_bytes == 0;
		} else {
			int n = snprintf(body, sizeof(body), "client %d request %d", c->id, i);
			snprintf(u, sizeof(u), "http://127.0.0.1:%d/", gw_port);
			struct h_req q = {.url = u,
					  .curl = curl,
					  .method = "POST",
					  .body = body,
					  .body_len = (size_t)n};
			good = h_http(&q, &r) == 0 && r.status == 200 &&
			       h_resp_header(&r, "X-Body-Hash", hash, sizeof(hash)) &&
			       !strcasecmp(hash,
					   h_hex64(h_fnv1a(H_FNV_INIT, body, (size_t)n), want));
		}
		if (good)
			c->ok++;
		else if (!c->why[0])
			snprintf(c->why, sizeof(c->why),
				 "client %d request %d (kind %d): status %ld %s", c->id, i, kind,
				 r.status, r.error);
		h_resp_free(&r);
	}
	h_curl_free(curl);
	return NULL;
}

static void test_concurrent_clients(void)
{
	static struct conc cs[CONC_THREADS];
	int ok = 0;

	test_begin("concurrent_clients_mixed");
	for (int i = 0; i < CONC_THREADS; i++) {
		cs[i].id = i;
		pthread_create(&cs[i].thread, NULL, conc_client, &cs[i]);
	}
	for (int i = 0; i < CONC_THREADS; i++) {
		pthread_join(cs[i].thread, NULL);
		ok += cs[i].ok;
		if (cs[i].why[0])
			test_fail(__FILE__, __LINE__, "%s", cs[i].why);
	}
	CHECK_MSG(ok == CONC_THREADS * CONC_REQUESTS, "%d of %d concurrent requests correct", ok,
		  CONC_THREADS * CONC_REQUESTS);
	test_end();
}

/* Clients that hang up in the middle of a large response or a large
 * upload: the upstream connection carrying the rest must not go back to
 * the pool half-read, so the requests after them get exactly their bytes. */
static void test_client_aborts(void)
{
	int good = 0;

	test_begin("client_aborts_do_not_poison_the_pool");
	for (int i = 0; i < 5; i++) {
		struct h_buf b = {0};
		char req[256];
		int fd = h_connect("127.0.0.1", gw_port, 2000);

		if (fd < 0)
			continue;
		if (i % 2 == 0) {
			snprintf(req, sizeof(req),
				 "GET /?size=50000000&a=%d HTTP/1.1\r\nHost: x\r\n\r\n", i);
			h_send_str(fd, req);
			/* Take about 256 KiB of the 50 MB, then vanish. */
			while (b.len < 262144 && h_read_all(fd, &b, 300, 300) == H_READ_TIMEOUT &&
			       b.len)
				;
		} else {
			char chunk[65536];

			snprintf(req, sizeof(req),
				 "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3000000\r\n\r\n");
			h_send_str(fd, req);
			memset(chunk, 'u', sizeof(chunk));
			for (int k = 0; k < 8; k++)
				h_send_all(fd, chunk, sizeof(chunk));
		}
		close(fd);
		h_buf_free(&b);
	}
	for (int i = 0; i < 40; i++) {
		char u[256];
		unsigned size = 1000 + (unsigned)i * 777;
		struct h_resp r;

		snprintf(u, sizeof(u), "http://127.0.0.1:%d/?size=%u", gw_port, size);
		struct h_req q = {.url = u, .count_only = true};
		if (h_http(&q, &r) == 0 && r.status == 200 && r.body_bytes == size &&
		    r.body_hash == h_pattern_hash(size))
			good++;
		else
			CHECK_MSG(
				0,
				"request %d after the aborts: status %ld, %llu bytes (want %u), %s",
				i, r.status, (unsigned long long)r.body_bytes, size, r.error);
		h_resp_free(&r);
		if (test_failed())
			break;
	}
	CHECK_MSG(good == 40, "%d of 40 requests after client aborts were exact", good);
	test_end();
}

static void test_upstream_restart(void)
{
	int gp = h_free_port(), op = h_free_port();
	struct h_proc *o, *gw;
	char u[256];
	struct h_resp r;

	test_begin("upstream_closed_idle_connection_retried");
	o = h_start_origin("restart-origin", op, 1);
	const char *cfg = h_write_config("workers: 1\n"
					 "listen: [\"127.0.0.1:%d\"]\n"
					 "upstream: [\"127.0.0.1:%d\"]\n"
					 "timeouts: {drain: 1s}\n",
					 gp, op);
	gw = o ? h_start_reflexd_config("reflexd-restart", gp, cfg) : NULL;
	if (!o || !gw) {
		test_fail(__FILE__, __LINE__, "setup failed (origin %p, reflexd %p)", (void *)o,
			  (void *)gw);
		test_end();
		return;
	}
	snprintf(u, sizeof(u), "http://127.0.0.1:%d/?size=10", gp);
	for (int i = 0; i < 3; i++) {
		char who[64] = "";

		CHECK_MSG(h_get(u, &r) == 200, "before restart: status %ld %s", r.status, r.error);
		CHECK_MSG(h_resp_header(&r, "X-Origin", who, sizeof(who)) &&
				  !strcmp(who, "restart-origin"),
			  "X-Origin '%s', want restart-origin", who);
		h_resp_free(&r);
	}
	/* The origin goes away, closing the gateway's idle pooled connection,
	 * and comes back on the same port. */
	CHECK_MSG(WIFEXITED(h_stop(o, 3000)), "origin did not exit on SIGTERM");
	o = h_start_origin("restart-origin", op, 1);
	CHECK_MSG(o != NULL, "origin did not restart on port %d", op);
	h_sleep_ms(100);
	for (int i = 0; i < 3; i++) {
		char who[64] = "";
		long st = h_get(u, &r);
		CHECK_MSG(st == 200, "after restart, GET %d: status %ld body '%s' %s", i, st,
			  h_excerpt(r.body, r.body_len, 120), r.error);
		CHECK_MSG(h_resp_header(&r, "X-Origin", who, sizeof(who)) &&
				  !strcmp(who, "restart-origin"),
			  "X-Origin '%s', want restart-origin", who);
		h_resp_free(&r);
	}
	h_stop(gw, 3000);
	h_stop(o, 3000);
	test_end();
}

int main(void)
{
	h_init("12_keepalive_pipeline", 90);
	gw_port = h_free_port();
	o_port = h_free_port();
	if (!h_start_origin("origin", o_port, 1)) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflex-origin did not start");
		return test_exit_code();
	}
	const char *cfg = h_write_config("workers: %d\n"
					 "listen: [\"127.0.0.1:%d\"]\n"
					 "upstream: [\"127.0.0.1:%d\"]\n"
					 "timeouts: {drain: 1s, keepalive: 10s}\n",
					 WORKERS, gw_port, o_port);
	struct h_proc *gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd did not start (config %s)", cfg);
		return test_exit_code();
	}
	test_pipeline();
	test_pipeline_half_close();
	test_reuse_one_client_conn();
	test_reuse_across_client_conns();
	test_http10();
	test_concurrent_clients();
	test_client_aborts();
	test_upstream_restart();

	int cache_port = h_free_port();
	const char *ccfg = h_write_config("workers: 1\n"
					  "listen: [\"127.0.0.1:%d\"]\n"
					  "upstream: [\"127.0.0.1:%d\"]\n"
					  "admin: {listen: \"127.0.0.1:%d\"}\n"
					  "cache: {enabled: true}\n"
					  "timeouts: {drain: 1s}\n",
					  cache_port, o_port, h_free_port());
	struct h_proc *cgw = h_start_reflexd_config("reflexd_cache", cache_port, ccfg);
	if (cgw) {
		test_pipelined_hits_bounded(cache_port, cgw);
		h_finish(cgw, 5000);
	} else {
		test_begin("pipelined_cache_hits_bounded_memory");
		test_fail(__FILE__, __LINE__, "reflexd with a cache did not start (config %s)",
			  ccfg);
		test_end();
	}
	h_finish(gw, 5000);
	return test_exit_code();
}
