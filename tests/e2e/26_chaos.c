/* 26_chaos — hostile clients and broken upstreams at once, then proof that
 * the gateway is unharmed.
 *
 * First four targeted regressions (each once broke the gateway):
 *   - a slow request followed by thousands of pipelined refusals (404, no
 *     route): answered in order without re-entering the request loop once
 *     per request (that recursion overflowed the worker's stack);
 *   - a reload that raises limits.header_count, then a request with many
 *     fields on a connection opened before it (the parser wrote past the
 *     connection's header array);
 *   - a slow reader of a `Connection: close` response gets every byte (the
 *     linger timer used to reset it 2 s after the response was queued);
 *   - out of descriptors with clients in the backlog, the listener retries
 *     later instead of re-arming into the same error (a busy loop).
 * Then a bounded randomized storm against reflexd --workers 2: raw-socket
 * clients that abort mid-head, mid-body, mid-response and mid-chunk, pipeline
 * bursts, garbage, half-closes, slowloris, crowds of idle connections,
 * uploads over and under the limit, random splits of valid requests — mixed with
 * origin faults (delay, chunked, sse, reset, hang, every malformed kind,
 * large bodies). Valid requests must get exactly their answer; nothing may
 * hang. Afterwards reflexd must be alive and serving, its open-connection
 * gauge (admin /metrics) back to 0, its descriptors back to the start and its
 * RSS near the start. Last, a second gateway is drained (SIGTERM) in the
 * middle of a storm and must exit cleanly. A sanitizer build turns any
 * memory error into a failure through the clean-exit checks.
 *
 * The storm is random but seeded: the seed is printed; CHAOS_SEED=N replays
 * the same sequence of scenarios per client thread (timing still varies).
 */
#include "lib/harness.h"

#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define STORM_MS 10000
#define N_ACTORS 6
#define BODY_LIMIT (256 * 1024)
#define UPSTREAM_RESPONSE_MS 1000

static int gw_port, admin_port, o_port;
static struct h_proc *gw, *origin;
static const char *cfg_path;

/* ---- small helpers -------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s)
{
	/* splitmix64: every seed, including 0, gives a good sequence */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned rnd(uint64_t *s, unsigned n)
{
	return n ? (unsigned)(rng_next(s) % n) : 0;
}

static int gw_connect(int port)
{
	int fd = h_connect("127.0.0.1", port, 3000);

	if (fd < 0)
		h_sleep_ms(20); /* a gateway that is gone: do not spin */
	if (fd >= 0) {
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	return fd;
}

static void close_rst(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* Hang up the way a random client would: FIN, RST, or half-close first. */
static void hang_up(uint64_t *s, int fd)
{
	switch (rnd(s, 3)) {
	case 0:
		close(fd);
		break;
	case 1:
		close_rst(fd);
		break;
	default:
		shutdown(fd, SHUT_WR);
		close(fd);
		break;
	}
}

/* Send buf in random pieces with short pauses: TCP may deliver a request in
 * any split, and the parser must not care. */
static int send_split(uint64_t *s, int fd, const char *buf, size_t len, unsigned max_pause_ms)
{
	size_t off = 0;

	while (off < len) {
		size_t n = 1 + rnd(s, (unsigned)(len - off < 64 ? len - off : 64));
		if (rnd(s, 4) == 0)
			n = len - off;
		if (h_send_all(fd, buf + off, n) != 0)
			return -1;
		off += n;
		if (max_pause_ms && off < len && rnd(s, 3) == 0)
			h_sleep_ms(rnd(s, max_pause_ms));
	}
	return 0;
}

/* /metrics value of a plain (unlabelled) series, or -1. */
static long metric(const char *name)
{
	char url[128];
	struct h_resp r;
	long v = -1;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/metrics", admin_port);
	if (h_get(url, &r) == 200 && r.body) {
		size_t nl = strlen(name);
		for (const char *p = r.body; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : NULL) {
			if (strncmp(p, name, nl) == 0 && p[nl] == ' ') {
				v = strtol(p + nl + 1, NULL, 10);
				break;
			}
		}
	}
	h_resp_free(&r);
	return v;
}

static int count_fds(pid_t pid)
{
	char path[64];
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return -1;
	for (struct dirent *e; (e = readdir(d));)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* The bytes of b, never NULL (the parsers pass them to mem* functions). */
static const char *bytes(const struct h_buf *b)
{
	return b->data ? b->data : "";
}

static size_t count_str(const char *buf, size_t len, const char *needle)
{
	size_t n = 0, nl = strlen(needle);

	for (const char *p = buf; (p = memmem(p, len - (size_t)(p - buf), needle, nl)); p += nl)
		n++;
	return n;
}

/* ---- outcome bookkeeping (shared by the storm threads) --------------------- */

enum kind {
	K_GOOD, K_PIPELINE, K_FAULT, K_ABORT_HEAD, K_ABORT_BODY, K_ABORT_RESP, K_PARTIAL_CHUNK,
	K_GARBAGE, K_HALF_CLOSE, K_SLOWLORIS, K_IDLE_CROWD, K_OVER_LIMIT, K_UPLOAD, K_MAX
};
static const char *const kind_names[K_MAX] = {
	"good", "pipeline", "upstream_fault", "abort_mid_head", "abort_mid_body",
	"abort_mid_response", "partial_chunk", "garbage", "half_close", "slowloris",
	"idle_crowd", "over_limit", "upload",
};

static pthread_mutex_t tally_mu = PTHREAD_MUTEX_INITIALIZER;
static unsigned runs[K_MAX], bad[K_MAX];
static bool lenient; /* the gateway is draining under the storm: answers vary */
static char bad_msgs[8][400];
static unsigned n_bad_msgs;

static void record(enum kind k, bool ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void record(enum kind k, bool ok, const char *fmt, ...)
{
	pthread_mutex_lock(&tally_mu);
	runs[k]++;
	if (!ok && !lenient) {
		bad[k]++;
		if (n_bad_msgs < 8) {
			va_list ap;
			int n = snprintf(bad_msgs[n_bad_msgs], sizeof(bad_msgs[0]), "%s: ", kind_names[k]);
			va_start(ap, fmt);
			vsnprintf(bad_msgs[n_bad_msgs] + n, sizeof(bad_msgs[0]) - (size_t)n, fmt, ap);
			va_end(ap);
			n_bad_msgs++;
		}
	}
	pthread_mutex_unlock(&tally_mu);
}

/* ---- what valid requests ask the origin for -------------------------------- */

struct ask {
	char path[128];
	bool head;
	uint64_t body; /* expected body bytes for a 200 */
};

/* A request that must succeed: sizes, chunked, short delays, SSE, HEAD. */
static void good_ask(uint64_t *s, struct ask *a)
{
	unsigned size = rnd(s, 8) == 0 ? 100000 + rnd(s, 900000) : rnd(s, 20000);

	a->head = false;
	switch (rnd(s, 6)) {
	case 0:
		snprintf(a->path, sizeof(a->path), "/?size=%u&chunked=1&chunk=%u", size,
			 1 + rnd(s, 9000));
		a->body = size;
		break;
	case 1:
		snprintf(a->path, sizeof(a->path), "/?size=%u&delay=%u", size, rnd(s, 150));
		a->body = size;
		break;
	case 2: {
		unsigned ev = 1 + rnd(s, 5);
		snprintf(a->path, sizeof(a->path), "/?sse=%u&interval=10", ev);
		a->body = UINT64_MAX; /* event text: length not checked */
		break;
	}
	case 3:
		snprintf(a->path, sizeof(a->path), "/?size=%u", size);
		a->head = true;
		a->body = 0;
		break;
	default:
		snprintf(a->path, sizeof(a->path), "/?size=%u", size);
		a->body = size;
		break;
	}
}

static int format_req(char *out, size_t cap, const struct ask *a, bool close)
{
	return snprintf(out, cap, "%s %s HTTP/1.1\r\nHost: chaos.test\r\nUser-Agent: chaos\r\n%s\r\n",
			a->head ? "HEAD" : "GET", a->path, close ? "Connection: close\r\n" : "");
}

/* Check n parsed responses against their asks. */
static bool check_responses(const char *buf, size_t len, const struct ask *asks, int n, char *why,
			    size_t whylen)
{
	struct h_raw_resp rs[32];
	bool is_head[32];
	int got;

	snprintf(why, whylen, "ok");
	for (int i = 0; i < n; i++)
		is_head[i] = asks[i].head;
	got = h_parse_responses(buf, len, rs, 32, is_head);
	int fin = 0;
	bool ok = true;
	for (int i = 0; i < got && ok; i++) {
		if (rs[i].status < 200)
			continue;
		const struct ask *a = &asks[fin++];
		if (!rs[i].complete || rs[i].status != 200 ||
		    (a->body != UINT64_MAX && rs[i].body_len != a->body)) {
			snprintf(why, whylen, "%s: status %d, complete %d, %zu body bytes, want %" PRIu64,
				 a->path, rs[i].status, rs[i].complete, rs[i].body_len,
				 a->body == UINT64_MAX ? 0 : a->body);
			ok = false;
		}
	}
	if (ok && fin < n) {
		snprintf(why, whylen, "%d of %d responses (%zu bytes: %s)", fin, n, len,
			 h_excerpt(buf, len < 120 ? len : 120, 120));
		ok = false;
	}
	h_raw_resp_free(rs, got);
	return ok;
}

/* Read until the answers to asks[0..n) are complete (HEAD answers have no
 * body, which h_read_responses cannot know), the peer closes, or the
 * deadline passes. */
static enum h_read_end read_answers(int fd, struct h_buf *b, const struct ask *asks, int n,
				    unsigned timeout_ms)
{
	double end = h_now_ms() + timeout_ms;
	bool is_head[32];

	for (int i = 0; i < n; i++)
		is_head[i] = asks[i].head;
	for (;;) {
		struct h_raw_resp rs[32];
		int got = h_parse_responses(bytes(b), b->len, rs, 32, is_head), done = 0;
		for (int i = 0; i < got; i++)
			if (rs[i].complete && !rs[i].close_delim && rs[i].status >= 200)
				done++;
		h_raw_resp_free(rs, got);
		if (done >= n)
			return H_READ_DONE;
		int wait = (int)(end - h_now_ms());
		if (wait <= 0)
			return H_READ_TIMEOUT;
		enum h_read_end e = h_read_all(fd, b, (unsigned)(wait < 50 ? wait : 50), 0);
		if (e != H_READ_TIMEOUT)
			return e;
	}
}

/* ---- the scenarios ---------------------------------------------------------- */

/* One to four valid requests on one connection, each sent in random
 * pieces; every answer must be exact. */
static void sc_good(uint64_t *s)
{
	int fd = gw_connect(gw_port), n = 1 + (int)rnd(s, 4);
	char req[512], why[400];
	struct h_buf b = {0};

	if (fd < 0) {
		record(K_GOOD, false, "connect: %s", strerror(-fd));
		return;
	}
	for (int i = 0; i < n; i++) {
		struct ask a;
		good_ask(s, &a);
		int len = format_req(req, sizeof(req), &a, false);
		b.len = 0;
		if (send_split(s, fd, req, (size_t)len, 30) != 0) {
			record(K_GOOD, false, "send failed");
			break;
		}
		enum h_read_end e = read_answers(fd, &b, &a, 1, 8000);
		bool ok = check_responses(bytes(&b), b.len, &a, 1, why, sizeof(why)) && e == H_READ_DONE;
		record(K_GOOD, ok, "request %d of %d: %s (%s)", i + 1, n, why, h_read_end_name(e));
		if (!ok)
			break;
	}
	h_buf_free(&b);
	hang_up(s, fd);
}

/* A burst of pipelined requests in one send; usually all answers are read
 * and checked, sometimes the client walks away in the middle. */
static void sc_pipeline(uint64_t *s)
{
	int fd = gw_connect(gw_port), n = 2 + (int)rnd(s, 20);
	struct ask asks[32];
	char *req = malloc(32 * 512), why[400];
	size_t len = 0;
	struct h_buf b = {0};

	if (fd < 0 || !req) {
		record(K_PIPELINE, false, "connect failed");
		free(req);
		if (fd >= 0)
			close(fd);
		return;
	}
	for (int i = 0; i < n; i++) {
		good_ask(s, &asks[i]);
		if (asks[i].body != UINT64_MAX && asks[i].body > 50000) { /* keep bursts light */
			snprintf(asks[i].path, sizeof(asks[i].path), "/?size=%d", 1000 + i);
			asks[i].body = asks[i].head ? 0 : 1000 + (unsigned)i;
		}
		len += (size_t)format_req(req + len, 512, &asks[i], false);
	}
	if (h_send_all(fd, req, len) != 0) {
		record(K_PIPELINE, false, "send failed");
	} else if (rnd(s, 4) == 0) {
		h_read_all(fd, &b, rnd(s, 200), 0); /* take a little, then leave */
		record(K_PIPELINE, true, "aborted");
	} else {
		enum h_read_end e = read_answers(fd, &b, asks, n, 10000);
		bool ok = check_responses(bytes(&b), b.len, asks, n, why, sizeof(why)) && e == H_READ_DONE;
		record(K_PIPELINE, ok, "%d pipelined: %s (%s)", n, ok ? "" : why, h_read_end_name(e));
	}
	free(req);
	h_buf_free(&b);
	hang_up(s, fd);
}

/* Upstream faults: each must become its precise status, never a hang. */
static void sc_fault(uint64_t *s)
{
	static const char *const mal[] = {"status", "cl", "cl_te", "injection", "chunk", "lf", "short"};
	char path[96], req[256];
	int want;

	switch (rnd(s, 4)) {
	case 0:
		snprintf(path, sizeof(path), "/?reset=1");
		want = 502;
		break;
	case 1:
		snprintf(path, sizeof(path), "/?hang=1");
		want = 504;
		break;
	default:
		snprintf(path, sizeof(path), "/?malformed=%s", mal[rnd(s, 7)]);
		want = 502;
		break;
	}
	int len = snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: chaos.test\r\n\r\n", path);
	struct h_buf b = {0};
	int fd = gw_connect(gw_port);
	if (fd < 0) {
		record(K_FAULT, false, "connect failed");
		return;
	}
	h_send_all(fd, req, (size_t)len);
	enum h_read_end e = h_read_responses(fd, &b, 1, UPSTREAM_RESPONSE_MS + 6000);
	int codes[4], nc = h_statuses(bytes(&b), b.len, codes, 4);
	/* A malformed body can only be signalled by a truncated response once
	 * its head has left: a close or reset without the full answer is the
	 * honest outcome then. */
	bool truncated = e != H_READ_DONE && e != H_READ_TIMEOUT && nc == 1 && codes[0] == 200;
	bool ok = (e == H_READ_DONE && nc >= 1 && codes[nc - 1] == want) || truncated;
	record(K_FAULT, ok, "%s: status %d, want %d (%s)", path, nc ? codes[nc - 1] : 0, want,
	       h_read_end_name(e));
	h_buf_free(&b);
	hang_up(s, fd);
}

static void sc_abort_head(uint64_t *s)
{
	struct ask a;
	char req[512];
	int fd = gw_connect(gw_port);

	good_ask(s, &a);
	int len = format_req(req, sizeof(req), &a, false);
	if (fd < 0) {
		record(K_ABORT_HEAD, false, "connect failed");
		return;
	}
	send_split(s, fd, req, 1 + rnd(s, (unsigned)len - 1), 20);
	if (rnd(s, 2))
		h_sleep_ms(rnd(s, 200));
	record(K_ABORT_HEAD, true, "ok");
	hang_up(s, fd);
}

static void sc_abort_body(uint64_t *s)
{
	unsigned cl = 1000 + rnd(s, BODY_LIMIT - 1000);
	char head[256], *body = malloc(cl);
	int fd = gw_connect(gw_port);

	if (fd < 0 || !body) {
		record(K_ABORT_BODY, false, "connect failed");
		free(body);
		if (fd >= 0)
			close(fd);
		return;
	}
	memset(body, 'x', cl);
	int len = snprintf(head, sizeof(head),
			   "POST /?size=10&delay=%u HTTP/1.1\r\nHost: chaos.test\r\n"
			   "Content-Length: %u\r\n\r\n",
			   rnd(s, 100), cl);
	h_send_all(fd, head, (size_t)len);
	h_send_all(fd, body, rnd(s, cl));
	if (rnd(s, 2))
		h_sleep_ms(rnd(s, 300));
	record(K_ABORT_BODY, true, "ok");
	free(body);
	hang_up(s, fd);
}

/* Walk away from a response in the middle: big bodies, chunked, SSE. */
static void sc_abort_resp(uint64_t *s)
{
	char path[96], req[256];
	struct h_buf b = {0};

	switch (rnd(s, 3)) {
	case 0:
		snprintf(path, sizeof(path), "/?size=%u", 1000000 + rnd(s, 3000000));
		break;
	case 1:
		snprintf(path, sizeof(path), "/?size=%u&chunked=1&chunk=%u", 500000 + rnd(s, 2000000),
			 1000 + rnd(s, 30000));
		break;
	default:
		snprintf(path, sizeof(path), "/?sse=%u&interval=%u", 50 + rnd(s, 100), 5 + rnd(s, 20));
		break;
	}
	int len = snprintf(req, sizeof(req), "GET %s HTTP/1.%u\r\nHost: chaos.test\r\n\r\n", path,
			   rnd(s, 4) ? 1u : 0u);
	int fd = gw_connect(gw_port);
	if (fd < 0) {
		record(K_ABORT_RESP, false, "connect failed");
		return;
	}
	h_send_all(fd, req, (size_t)len);
	h_read_all(fd, &b, 50 + rnd(s, 400), 0);
	record(K_ABORT_RESP, true, "ok");
	h_buf_free(&b);
	hang_up(s, fd);
}

static void sc_partial_chunk(uint64_t *s)
{
	char req[512];
	int fd = gw_connect(gw_port);
	int len = snprintf(req, sizeof(req),
			   "POST /?size=5 HTTP/1.1\r\nHost: chaos.test\r\n"
			   "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n400\r\n");

	if (fd < 0) {
		record(K_PARTIAL_CHUNK, false, "connect failed");
		return;
	}
	h_send_all(fd, req, (size_t)len);
	char part[0x400];
	memset(part, 'y', sizeof(part));
	h_send_all(fd, part, rnd(s, sizeof(part)));
	if (rnd(s, 5) == 0) {
		/* stay: the body timeout must answer 408 and close */
		struct h_buf b = {0};
		enum h_read_end e = h_read_all(fd, &b, 8000, 0);
		int codes[4], nc = h_statuses(bytes(&b), b.len, codes, 4);
		/* 408 (body timeout) or, when upstream_response is the shorter
		 * deadline, 504: the upstream saw no complete request either */
		bool ok = (e == H_READ_CLOSED || e == H_READ_RESET) && nc >= 1 &&
			  (codes[nc - 1] == 408 || codes[nc - 1] == 504);
		record(K_PARTIAL_CHUNK, ok, "stalled chunk: %s, last status %d", h_read_end_name(e),
		       nc ? codes[nc - 1] : 0);
		h_buf_free(&b);
	} else {
		record(K_PARTIAL_CHUNK, true, "ok");
	}
	hang_up(s, fd);
}

/* Bytes that are not HTTP, alone or after a plausible start: the gateway
 * must refuse or time out and close, never hang or crash. */
static void sc_garbage(uint64_t *s)
{
	unsigned n = 1 + rnd(s, 6000);
	char *g = malloc(n + 64);
	struct h_buf b = {0};
	int fd = gw_connect(gw_port);

	if (fd < 0 || !g) {
		record(K_GARBAGE, false, "connect failed");
		free(g);
		if (fd >= 0)
			close(fd);
		return;
	}
	size_t off = 0;
	if (rnd(s, 2))
		off = (size_t)sprintf(g, "GET / HTTP/1.1\r\nHost: chaos.test\r\n");
	for (unsigned i = 0; i < n; i++)
		g[off + i] = (char)rng_next(s);
	if (rnd(s, 2)) /* an end of head, so the parser must judge it now */
		memcpy(g + off + n - (n > 4 ? 4 : 0), "\r\n\r\n", n > 4 ? 4 : 0);
	h_send_all(fd, g, off + n);
	/* The head timeout (2 s) bounds an incomplete head; refusals close at
	 * once. Either way the gateway ends the connection. */
	enum h_read_end e = h_read_all(fd, &b, 7000, 0);
	record(K_GARBAGE, e == H_READ_CLOSED || e == H_READ_RESET, "%u garbage bytes: %s, got '%s'",
	       n, h_read_end_name(e), h_excerpt(bytes(&b), b.len, 80));
	free(g);
	h_buf_free(&b);
	close(fd);
}

/* A complete request, then the write side closed: the answer must still
 * come, followed by the gateway's close. */
static void sc_half_close(uint64_t *s)
{
	struct ask a;
	char req[512], why[400];
	struct h_buf b = {0};
	int fd = gw_connect(gw_port);

	good_ask(s, &a);
	int len = format_req(req, sizeof(req), &a, false);
	if (fd < 0) {
		record(K_HALF_CLOSE, false, "connect failed");
		return;
	}
	send_split(s, fd, req, (size_t)len, 10);
	shutdown(fd, SHUT_WR);
	enum h_read_end e = h_read_all(fd, &b, 10000, 0);
	bool ok = check_responses(bytes(&b), b.len, &a, 1, why, sizeof(why)) && e == H_READ_CLOSED;
	record(K_HALF_CLOSE, ok, "%s (%s)", ok ? "" : why, h_read_end_name(e));
	h_buf_free(&b);
	close(fd);
}

/* A head one byte at a time. Finished in time it is served; abandoned it is
 * closed by the head timeout. */
static void sc_slowloris(uint64_t *s)
{
	struct ask a = {.path = "/?size=100", .body = 100};
	char req[512], why[400];
	struct h_buf b = {0};
	int fd = gw_connect(gw_port);
	int len = format_req(req, sizeof(req), &a, true);
	bool finish = rnd(s, 2);
	int upto = finish ? len : (int)rnd(s, (unsigned)len - 4);

	if (fd < 0) {
		record(K_SLOWLORIS, false, "connect failed");
		return;
	}
	for (int i = 0; i < upto; i++) {
		if (h_send_all(fd, req + i, 1) != 0)
			break;
		h_sleep_ms(finish ? 5 : 10 + rnd(s, 20));
	}
	if (finish) {
		enum h_read_end e = h_read_all(fd, &b, 8000, 0);
		bool ok = check_responses(bytes(&b), b.len, &a, 1, why, sizeof(why)) && e == H_READ_CLOSED;
		record(K_SLOWLORIS, ok, "finished: %s (%s)", ok ? "" : why, h_read_end_name(e));
	} else if (rnd(s, 3) == 0) {
		enum h_read_end e = h_read_all(fd, &b, 8000, 0);
		int codes[4], nc = h_statuses(bytes(&b), b.len, codes, 4);
		bool ok = (e == H_READ_CLOSED || e == H_READ_RESET) &&
			  (upto == 0 || (nc >= 1 && codes[0] == 408));
		record(K_SLOWLORIS, ok, "abandoned after %d bytes: %s, status %d", upto,
		       h_read_end_name(e), nc ? codes[0] : 0);
	} else {
		record(K_SLOWLORIS, true, "ok");
	}
	h_buf_free(&b);
	hang_up(s, fd);
}

/* Many connections at once that say little or nothing. */
static void sc_idle_crowd(uint64_t *s)
{
	int fds[64], n = 16 + (int)rnd(s, 48);

	for (int i = 0; i < n; i++) {
		fds[i] = gw_connect(gw_port);
		if (fds[i] >= 0 && rnd(s, 3) == 0)
			h_send_str(fds[i], "GET /?size=1 HTTP/1.1\r\nHo");
	}
	h_sleep_ms(100 + rnd(s, 1200));
	for (int i = 0; i < n; i++)
		if (fds[i] >= 0)
			hang_up(s, fds[i]);
	record(K_IDLE_CROWD, true, "ok");
}

/* Uploads over the body limit: declared (413 before the body) or chunked
 * (413 once the limit is passed). */
static void sc_over_limit(uint64_t *s)
{
	char head[256];
	struct h_buf b = {0};
	int fd = gw_connect(gw_port);
	bool chunked = rnd(s, 2);
	enum h_read_end e;

	if (fd < 0) {
		record(K_OVER_LIMIT, false, "connect failed");
		return;
	}
	if (!chunked) {
		int len = snprintf(head, sizeof(head),
				   "POST /?size=1 HTTP/1.1\r\nHost: chaos.test\r\nContent-Length: %u\r\n\r\n",
				   BODY_LIMIT + 1 + rnd(s, 4 * BODY_LIMIT));
		h_send_all(fd, head, (size_t)len);
		if (rnd(s, 2)) { /* keep sending anyway, as careless clients do */
			char junk[16384];
			memset(junk, 'z', sizeof(junk));
			for (int i = 0; i < 8; i++)
				if (h_send_all(fd, junk, sizeof(junk)) != 0)
					break;
		}
	} else {
		int len = snprintf(head, sizeof(head),
				   "POST /?size=1 HTTP/1.1\r\nHost: chaos.test\r\n"
				   "Transfer-Encoding: chunked\r\n\r\n");
		h_send_all(fd, head, (size_t)len);
		char chunk[8200];
		int cl = snprintf(chunk, sizeof(chunk), "2000\r\n");
		memset(chunk + cl, 'c', 0x2000);
		memcpy(chunk + cl + 0x2000, "\r\n", 2);
		for (unsigned sent = 0; sent <= BODY_LIMIT + 0x4000; sent += 0x2000)
			if (h_send_all(fd, chunk, (size_t)cl + 0x2000 + 2) != 0)
				break;
	}
	e = h_read_all(fd, &b, 8000, 0);
	int codes[4], nc = h_statuses(bytes(&b), b.len, codes, 4);
	/* a reset after the 413 is allowed when the client kept sending */
	bool ok = nc >= 1 && codes[nc - 1] == 413 && (e == H_READ_CLOSED || e == H_READ_RESET);
	record(K_OVER_LIMIT, ok, "%s: %s, status %d", chunked ? "chunked" : "declared",
	       h_read_end_name(e), nc ? codes[nc - 1] : 0);
	h_buf_free(&b);
	close(fd);
}

/* A valid upload under the limit — Content-Length or chunked, sometimes
 * with Expect: 100-continue — sent in random pieces: the answer must be
 * exact and the connection reusable. */
static void sc_upload(uint64_t *s)
{
	unsigned len = 1 + rnd(s, BODY_LIMIT - 1), size = rnd(s, 5000);
	bool chunked = rnd(s, 2), expect = rnd(s, 3) == 0;
	char *msg = malloc(len + len / 16 + 1024), why[400];
	struct ask a = {.body = size};
	struct h_buf b = {0};
	int fd = gw_connect(gw_port);
	size_t n;

	if (fd < 0 || !msg) {
		record(K_UPLOAD, false, "connect failed");
		free(msg);
		if (fd >= 0)
			close(fd);
		return;
	}
	snprintf(a.path, sizeof(a.path), "/?size=%u", size);
	n = (size_t)sprintf(msg, "POST %s HTTP/1.1\r\nHost: chaos.test\r\n%s", a.path,
			    expect ? "Expect: 100-continue\r\n" : "");
	if (chunked) {
		n += (size_t)sprintf(msg + n, "Transfer-Encoding: chunked\r\n\r\n");
		for (unsigned off = 0; off < len;) {
			unsigned k = 1 + rnd(s, 20000);
			if (k > len - off)
				k = len - off;
			n += (size_t)sprintf(msg + n, "%x\r\n", k);
			memset(msg + n, 'u', k);
			n += k;
			memcpy(msg + n, "\r\n", 2);
			n += 2;
			off += k;
		}
		memcpy(msg + n, "0\r\n\r\n", 5);
		n += 5;
	} else {
		n += (size_t)sprintf(msg + n, "Content-Length: %u\r\n\r\n", len);
		memset(msg + n, 'u', len);
		n += len;
	}
	bool ok = send_split(s, fd, msg, n, 5) == 0;
	enum h_read_end e = ok ? read_answers(fd, &b, &a, 1, 10000) : H_READ_ERROR;
	ok = check_responses(bytes(&b), b.len, &a, 1, why, sizeof(why)) && e == H_READ_DONE;
	record(K_UPLOAD, ok, "%u bytes %s%s: %s (%s)", len, chunked ? "chunked" : "by length",
	       expect ? " with Expect" : "", why, h_read_end_name(e));
	free(msg);
	h_buf_free(&b);
	hang_up(s, fd);
}

static void (*const scenarios[])(uint64_t *) = {
	[K_GOOD] = sc_good,
	[K_PIPELINE] = sc_pipeline,
	[K_FAULT] = sc_fault,
	[K_ABORT_HEAD] = sc_abort_head,
	[K_ABORT_BODY] = sc_abort_body,
	[K_ABORT_RESP] = sc_abort_resp,
	[K_PARTIAL_CHUNK] = sc_partial_chunk,
	[K_GARBAGE] = sc_garbage,
	[K_HALF_CLOSE] = sc_half_close,
	[K_SLOWLORIS] = sc_slowloris,
	[K_IDLE_CROWD] = sc_idle_crowd,
	[K_OVER_LIMIT] = sc_over_limit,
	[K_UPLOAD] = sc_upload,
};

struct actor {
	pthread_t th;
	uint64_t rng;
	double until_ms;
};

static void *actor_main(void *arg)
{
	struct actor *a = arg;

	while (h_now_ms() < a->until_ms)
		scenarios[rnd(&a->rng, K_MAX)](&a->rng);
	return NULL;
}

/* ---- targeted regressions ---------------------------------------------------- */

/* A slow request, then thousands of pipelined requests no route matches:
 * each refusal is answered by the request loop itself, not by a nested
 * call per request (which overflowed the worker's stack). */
static void test_pipelined_refusals(void)
{
	enum { N = 12000 };
	static const char one[] = "GET / HTTP/1.1\r\nHost: n\r\n\r\n";
	int port = h_free_port();
	const char *cfg = h_write_config("listen: [\"127.0.0.1:%d\"]\nadmin: {listen: off}\n"
					 "pools:\n  api: {endpoints: [\"127.0.0.1:%d\"]}\n"
					 "routes:\n  - {host: \"chaos.test\", pool: api}\n",
					 port, o_port);
	const char *args[] = {"--config", cfg, "--workers", "1", NULL};

	test_begin("pipelined_refusals_in_one_loop");
	struct h_proc *p = h_start_reflexd("reflexd-routes", port, args);
	CHECK(p != NULL);
	if (!p) {
		test_end();
		return;
	}
	size_t first_len = strlen("GET /?delay=700&size=3 HTTP/1.1\r\nHost: chaos.test\r\n\r\n");
	size_t len = first_len + N * (sizeof(one) - 1);
	char *req = malloc(len);
	memcpy(req, "GET /?delay=700&size=3 HTTP/1.1\r\nHost: chaos.test\r\n\r\n", first_len);
	for (int i = 0; i < N; i++)
		memcpy(req + first_len + (size_t)i * (sizeof(one) - 1), one, sizeof(one) - 1);
	int fd = gw_connect(port);
	struct h_buf b = {0};
	size_t n404 = 0;
	if (fd >= 0) {
		h_send_all(fd, req, len);
		double end = h_now_ms() + 15000;
		while (n404 < N && h_now_ms() < end) {
			enum h_read_end e = h_read_all(fd, &b, 300, 0);
			n404 = count_str(bytes(&b), b.len, "HTTP/1.1 404 ");
			if (e != H_READ_TIMEOUT)
				break;
		}
		close(fd);
	}
	CHECK_MSG(fd >= 0, "connect: %d", fd);
	CHECK_MSG(b.len >= 15 && memcmp(b.data, "HTTP/1.1 200 OK", 15) == 0,
		  "the slow request first: '%s'", h_excerpt(bytes(&b), b.len, 60));
	CHECK_MSG(n404 == N, "%zu of %d pipelined refusals answered", n404, N);
	CHECK_MSG(h_alive(p), "reflexd died answering pipelined refusals");
	free(req);
	h_buf_free(&b);
	test_end();
	h_finish(p, 10000);
}

/* A reload that allows more header fields must not let a connection opened
 * before it parse more fields than its array holds. */
static void test_reload_more_headers(void)
{
	char req[16384], buf[8192];
	struct h_buf b = {0};
	FILE *f;

	test_begin("reload_raises_header_count");
	int fd = gw_connect(gw_port);
	CHECK_MSG(fd >= 0, "connect: %d", fd);
	if (fd < 0) {
		test_end();
		return;
	}
	h_send_str(fd, "GET /?size=3 HTTP/1.1\r\nHost: chaos.test\r\n\r\n");
	CHECK_MSG(h_read_responses(fd, &b, 1, 5000) == H_READ_DONE, "first request on the connection");

	/* the same file with a larger header_count, then SIGHUP */
	f = fopen(cfg_path, "r");
	size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
	if (f)
		fclose(f);
	buf[n] = 0;
	char *p = strstr(buf, "header_count: 20");
	CHECK(p != NULL);
	if (p) {
		memcpy(p, "header_count: 90", 16);
		f = fopen(cfg_path, "w");
		if (f) {
			fputs(buf, f);
			fclose(f);
		}
	}
	h_signal(gw, SIGHUP);
	CHECK_MSG(h_wait_log(gw, "configuration reloaded", 5000), "reload did not happen");

	int len = snprintf(req, sizeof(req), "GET /?size=4 HTTP/1.1\r\nHost: chaos.test\r\n");
	for (int i = 0; i < 80; i++)
		len += snprintf(req + len, sizeof(req) - (size_t)len, "X-Field-%d: value-%d\r\n", i, i);
	len += snprintf(req + len, sizeof(req) - (size_t)len, "\r\n");
	b.len = 0;
	h_send_all(fd, req, (size_t)len);
	enum h_read_end e = h_read_responses(fd, &b, 1, 5000);
	int codes[2], nc = h_statuses(bytes(&b), b.len, codes, 2);
	CHECK_MSG(e == H_READ_DONE && nc == 1 && codes[0] == 200,
		  "80 fields after the reload on an older connection: %s, status %d",
		  h_read_end_name(e), nc ? codes[0] : 0);
	CHECK_MSG(h_alive(gw), "reflexd died");
	close(fd);
	h_buf_free(&b);
	test_end();
}

/* The last response of a closing connection reaches a slow reader whole:
 * the linger starts after the flush and ends with a FIN, never a reset
 * that discards what the kernel still holds. */
static void test_slow_reader_close(void)
{
	enum { SIZE = 640000 };
	char req[256];
	struct h_buf b = {0};
	int fd = socket(AF_INET, SOCK_STREAM, 0), small = 4096;

	test_begin("slow_reader_gets_whole_close_response");
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)gw_port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	CHECK(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	struct timeval tv = {.tv_sec = 10};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	int len = snprintf(req, sizeof(req),
			   "GET /?size=%d HTTP/1.1\r\nHost: chaos.test\r\nConnection: close\r\n\r\n",
			   SIZE);
	h_send_all(fd, req, (size_t)len);
	enum h_read_end e = H_READ_TIMEOUT;
	double end = h_now_ms() + 20000;
	/* About 160 KiB/s: the gateway has queued the whole response (into
	 * the kernel's buffers and its own) long before the reader is done. */
	while (e == H_READ_TIMEOUT && h_now_ms() < end) {
		char tmp[8192];
		ssize_t n = recv(fd, tmp, sizeof(tmp), 0);
		if (n > 0) {
			size_t need = b.len + (size_t)n + 1;
			if (need > b.cap) {
				b.cap = need * 2;
				b.data = realloc(b.data, b.cap);
			}
			memcpy(b.data + b.len, tmp, (size_t)n);
			b.len += (size_t)n;
			h_sleep_ms(50);
		} else {
			e = n == 0 ? H_READ_CLOSED : errno == ECONNRESET ? H_READ_RESET : H_READ_ERROR;
		}
	}
	struct h_raw_resp r[1];
	int n = h_parse_responses(bytes(&b), b.len, r, 1, NULL);
	CHECK_MSG(e == H_READ_CLOSED && n == 1 && r[0].complete && r[0].body_len == SIZE,
		  "read ended with %s after %zu bytes; body %zu of %d", h_read_end_name(e), b.len,
		  n ? r[0].body_len : 0, SIZE);
	h_raw_resp_free(r, n);
	h_buf_free(&b);
	close(fd);
	test_end();
}

/* CPU seconds (user + system) pid has used, or -1. */
static double cpu_seconds(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long ut = 0, st = 0;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = 0;
	const char *p = strrchr(buf, ')');
	/* after the name: state ppid pgrp session tty tpgid flags minflt
	 * cminflt majflt cmajflt utime stime */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return -1;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* Out of descriptors, accept fails while clients wait in the backlog: the
 * listener must retry later, not re-arm into the same error in a busy loop. */
static void test_accept_emfile(void)
{
	const char *prlimit = access("/usr/bin/prlimit", X_OK) == 0 ? "/usr/bin/prlimit" : NULL;
	int port = h_free_port(), fds[60], n = 0;
	char lport[32], up[32];

	if (!prlimit) {
		test_skip("accept_error_no_busy_loop", "prlimit (util-linux) not installed");
		return;
	}
	snprintf(lport, sizeof(lport), "127.0.0.1:%d", port);
	snprintf(up, sizeof(up), "127.0.0.1:%d", o_port);
	char *const argv[] = {(char *)prlimit, "--nofile=40:40", (char *)h_reflexd_path(),
			      "--listen", lport, "--upstream", up, "--workers", "1", "--admin", "off",
			      NULL};
	test_begin("accept_error_no_busy_loop");
	struct h_proc *p = h_spawn("reflexd-fdlimit", argv, "127.0.0.1", port, 10000);
	CHECK(p != NULL);
	if (!p) {
		test_end();
		return;
	}
	while (n < 60 && (fds[n] = gw_connect(port)) >= 0) /* the rest wait in the backlog */
		n++;
	h_sleep_ms(200);
	double c0 = cpu_seconds(p->pid);
	h_sleep_ms(1500);
	double used = cpu_seconds(p->pid) - c0;
	printf("# out of descriptors with %d connections: %.2f CPU s in 1.5 s\n", n, used);
	CHECK_MSG(c0 >= 0 && used < 0.3, "%.2f CPU seconds in 1.5 s while accept fails (busy loop)",
		  used);
	while (n > 0)
		close(fds[--n]);
	CHECK_MSG(h_log_contains(p, "Too many open files"), "accept never ran out of descriptors");
	test_end();
	h_finish(p, 10000);
}

/* ---- the storm and the aftermath ---------------------------------------------- */
/* SIGTERM in the middle of a storm: requests in every state (mid-head,
 * mid-body, waiting upstream, streaming, lingering, idle) must drain or be
 * cut at the deadline, and the process must exit cleanly. */
static void test_drain_mid_storm(uint64_t seed)
{
	int port = h_free_port(), saved = gw_port;
	const char *cfg = h_write_config(
		"workers: 2\nlisten: [\"127.0.0.1:%d\"]\nadmin: {listen: off}\n"
		"pools:\n  default: {endpoints: [\"127.0.0.1:%d\"]}\n"
		"limits: {body: %d}\n"
		"timeouts: {header: 2s, body: 2s, upstream_response: %dms, drain: 3s}\n",
		port, o_port, BODY_LIMIT, UPSTREAM_RESPONSE_MS);
	struct actor actors[N_ACTORS];

	test_begin("drain_mid_storm");
	struct h_proc *p = h_start_reflexd_config("reflexd-drain", port, cfg);
	CHECK(p != NULL);
	if (!p) {
		test_end();
		return;
	}
	gw_port = port;
	lenient = true;
	double until = h_now_ms() + 4000;
	for (int i = 0; i < N_ACTORS; i++) {
		actors[i].rng = seed * 7919 + (uint64_t)i;
		actors[i].until_ms = until;
		pthread_create(&actors[i].th, NULL, actor_main, &actors[i]);
	}
	h_sleep_ms(1500);
	h_signal(p, SIGTERM);
	int rc = h_wait_exit(p, 10000);
	for (int i = 0; i < N_ACTORS; i++)
		pthread_join(actors[i].th, NULL);
	lenient = false;
	gw_port = saved;
	CHECK_MSG(rc == 0, "reflexd did not exit within 10 s of SIGTERM (drain deadline 3 s)");
	if (rc == 0)
		CHECK_MSG(WIFEXITED(p->status) && WEXITSTATUS(p->status) == 0,
			  "exit status 0x%x after a drain under load", p->status);
	CHECK_MSG(!h_log_has_sanitizer_report(p), "sanitizer report in %s", p->log);
	test_end();
}


static void warm_up(void)
{
	char url[128];

	for (int i = 0; i < 40; i++) {
		struct h_resp r;
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/?size=%d", gw_port, i % 2 ? 300000 : 100);
		h_get(url, &r);
		h_resp_free(&r);
	}
}

int main(void)
{
	h_init("26_chaos", 120);
	uint64_t seed = 0x5eed2613;
	const char *env = getenv("CHAOS_SEED");
	if (env && *env)
		seed = strtoull(env, NULL, 0);
	printf("# chaos seed %" PRIu64 " (replay: CHAOS_SEED=%" PRIu64 ")\n", seed, seed);

	/* Under ASan, freed memory waits in a quarantine that would read as
	 * growth; keep it small so the RSS check means the same in both builds. */
	char asan[512];
	snprintf(asan, sizeof(asan), "%s%squarantine_size_mb=16",
		 getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "",
		 getenv("ASAN_OPTIONS") ? ":" : "");
	setenv("ASAN_OPTIONS", asan, 1);

	o_port = h_free_port();
	gw_port = h_free_port();
	admin_port = h_free_port();
	origin = h_start_origin("origin", o_port, 2);
	if (!origin) {
		test_begin("start");
		CHECK_MSG(false, "origin did not start");
		test_end();
		return test_exit_code();
	}
	cfg_path = h_write_config(
		"workers: 2\nlisten: [\"127.0.0.1:%d\"]\n"
		"admin: {listen: \"127.0.0.1:%d\"}\n"
		"pools:\n  default: {endpoints: [\"127.0.0.1:%d\"]}\n"
		"limits: {body: %d, header_count: 20}\n"
		"timeouts: {header: 2s, body: 2s, keepalive: 3s, upstream_response: %dms,"
		" upstream_idle: 2s, send: 5s}\n",
		gw_port, admin_port, o_port, BODY_LIMIT, UPSTREAM_RESPONSE_MS);
	gw = h_start_reflexd_config("reflexd", gw_port, cfg_path);
	if (!gw) {
		test_begin("start");
		CHECK_MSG(false, "reflexd did not start");
		test_end();
		return test_exit_code();
	}

	test_reload_more_headers();
	test_pipelined_refusals();
	test_slow_reader_close();
	test_accept_emfile();

	/* Baselines after a warm-up, so buffers and pools that stay are counted. */
	warm_up();
	h_sleep_ms(2500); /* upstream_idle: pooled connections of the warm-up close */
	long rss0 = h_rss_kb(gw->pid);
	int fds0 = count_fds(gw->pid);
	printf("# baseline: rss %ld KiB, %d fds\n", rss0, fds0);

	test_begin("storm");
	struct actor actors[N_ACTORS];
	double until = h_now_ms() + STORM_MS;
	for (int i = 0; i < N_ACTORS; i++) {
		actors[i].rng = seed * 1000003 + (uint64_t)i;
		actors[i].until_ms = until;
		pthread_create(&actors[i].th, NULL, actor_main, &actors[i]);
	}
	for (int i = 0; i < N_ACTORS; i++)
		pthread_join(actors[i].th, NULL);
	unsigned total = 0, total_bad = 0;
	for (int k = 0; k < K_MAX; k++) {
		printf("#   %-20s %5u runs, %u unexpected\n", kind_names[k], runs[k], bad[k]);
		total += runs[k];
		total_bad += bad[k];
	}
	for (unsigned i = 0; i < n_bad_msgs; i++)
		printf("#   unexpected: %s\n", bad_msgs[i]);
	CHECK_MSG(total > 50, "only %u scenarios ran", total);
	CHECK_MSG(total_bad == 0, "%u of %u scenarios saw an unexpected answer (seed %" PRIu64 ")",
		  total_bad, total, seed);
	test_end();

	test_begin("alive_and_serving_after_storm");
	CHECK_MSG(h_alive(gw), "reflexd died during the storm");
	struct h_resp r;
	char url[128];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/?size=64", gw_port);
	long st = h_get(url, &r);
	CHECK_MSG(st == 200 && r.body_bytes == 64, "status %ld, %llu bytes (%s)", st,
		  (unsigned long long)r.body_bytes, r.error);
	h_resp_free(&r);
	test_end();

	test_begin("connections_back_to_zero");
	long open = -1;
	for (int i = 0; i < 100; i++) { /* lingering closes end within 2 s */
		open = metric("reflex_connections_open");
		if (open == 0)
			break;
		h_sleep_ms(100);
	}
	CHECK_MSG(open == 0, "reflex_connections_open is %ld 10 s after the storm", open);
	int fds = -1;
	for (int i = 0; i < 150; i++) { /* pooled upstream connections: upstream_idle 2 s */
		fds = count_fds(gw->pid);
		if (fds <= fds0)
			break;
		h_sleep_ms(100);
	}
	CHECK_MSG(fds <= fds0, "%d descriptors open, %d before the storm", fds, fds0);
	test_end();

	test_begin("rss_back_near_start");
	long rss = -1, limit = rss0 + 48 * 1024;
	for (int i = 0; i < 40; i++) { /* allocator decay */
		rss = h_rss_kb(gw->pid);
		if (rss <= limit)
			break;
		h_sleep_ms(250);
	}
	printf("# rss after the storm: %ld KiB (start %ld KiB)\n", rss, rss0);
	CHECK_MSG(rss > 0 && rss <= limit, "rss %ld KiB after the storm, %ld KiB before", rss, rss0);
	test_end();

	test_drain_mid_storm(seed);

	if (getenv("CHAOS_HOLD")) { /* debugging: look at the survivors */
		printf("# holding: reflexd pid %d\n", (int)gw->pid);
		fflush(stdout);
		h_sleep_ms(30000);
	}
	h_finish(gw, 15000);
	h_stop(origin, 3000);
	return test_exit_code();
}
