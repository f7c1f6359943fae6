/* worker.c — the reflex-origin event loop and connection state machine.
 *
 * One loop iteration: submit everything queued and wait for at least one
 * completion (one io_uring_enter), handle every completion, return the
 * consumed recv buffers to the buffer ring in one go. Handlers only queue
 * SQEs; nothing blocks.
 *
 * A connection has at most one send in flight, one multishot recv armed and
 * one timer (IORING_OP_TIMEOUT) armed. Its out buffer is only appended to
 * while no send is in flight (the kernel may read it until the send
 * completes), so requests that arrive meanwhile wait in the input buffer.
 * A closing connection cancels what it has in flight and is freed once the
 * last of those completions arrived.
 */
#include "worker.h"

#include <errno.h>
#include <inttypes.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "gateway/http/parse.h"
#include "plan.h"

struct origin_config origin_cfg;
_Atomic uint64_t origin_slow_ms;

#define RING_ENTRIES 4096
#define CQ_ENTRIES 16384
#define BR_ENTRIES 1024 /* power of two */
#define BR_BUF_SIZE 16384
#define BGID 1

#define PATTERN_SPAN (256 * 1024) /* longest contiguous slice of the body pattern */
#define MAX_SEND_BYTES PATTERN_SPAN
#define SMALL_BODY 16384    /* generated bodies up to this are copied into out */
#define IN_LIMIT (4u << 20) /* unprocessed input a connection may queue */
#define MAX_CHUNKS 16	    /* chunks per send when streaming chunked */
#define MAX_IOV (1 + 3 * MAX_CHUNKS + 1)
#define RCACHE_SLOTS 64 /* direct-mapped, per worker */
#define RCACHE_MAX_TARGET 512

enum tag { T_IGNORE = 0, T_ACCEPT, T_RECV, T_SEND, T_TIMER, T_ACCEPT_RETRY, T_MASK = 7 };

/* Bytes 'a' + i % 26, PATTERN_SPAN + 26 long: body byte range [off, off+n)
 * with n <= PATTERN_SPAN is pattern + off % 26. Written once before workers
 * start serving, read-only afterwards. */
static char pattern[PATTERN_SPAN + 32];
static pthread_once_t pattern_once = PTHREAD_ONCE_INIT;

struct worker;

struct listener {
	struct worker *w;
	int fd;
	struct __kernel_timespec retry; /* pause before re-arming after an error */
	time_t last_error_log;
} __attribute__((aligned(8)));

enum conn_state {
	ST_HEAD,    /* waiting for a request head */
	ST_BODY,    /* reading (and hashing) the request body */
	ST_WAIT,    /* delay= timer before the response */
	ST_RESP,    /* streaming a response body (generated, paced or SSE) */
	ST_HANG,    /* hang=1: swallow input, never answer */
	ST_CLOSING, /* flush what is queued, then close */
};

struct conn {
	struct worker *w;
	int fd;
	enum conn_state state;
	bool recv_armed, send_inflight, timer_armed;
	bool closing, peer_eof;
	bool close_after; /* close once the current response is out */
	bool rst;	  /* close with RST (SO_LINGER 0) */

	/* Input not processed yet. While a recv buffer is being processed in
	 * place, `view` points into it and `in` is empty. */
	char *in;
	size_t in_off, in_len, in_cap;
	const char *view;
	size_t view_len;

	/* Output: heads and small bodies; the in-flight send's iovecs. */
	char *out;
	size_t out_len, out_cap;
	struct iovec iov[MAX_IOV];
	unsigned niov, iov_idx;
	struct msghdr msg;
	char frames[MAX_CHUNKS][24];
	uint64_t pending_body; /* body bytes in the in-flight send */
	bool pending_end;      /* ... which also carries the last-chunk */

	/* The current request. */
	struct plan plan;
	int minor;
	bool keep_alive, is_head, has_body, delay_done;
	enum http_body body_kind;
	uint64_t body_left;
	struct http_chunked chunked;
	uint64_t body_bytes, body_hash;
	char *echo; /* /echo JSON up to the headers array, built at head time */
	size_t echo_len, echo_cap;

	/* The current response, when streamed. */
	bool streaming, resp_chunked, end_sent, sse;
	uint64_t body_total, body_sent, chunk;
	uint64_t rate, rate_start_ms;
	uint64_t sse_next, sse_total, interval_ms;
	struct __kernel_timespec ts;
};

/* A complete keep-alive response to a plain GET of `target` (no body, no
 * X-Origin-* header), valid while the Date second it carries is current.
 * Repeated GETs of the same target (the benchmarks' /pass/1k?cc=no-store)
 * then cost a memcpy, like the default response. */
struct rcache_entry {
	time_t date_sec;
	uint64_t hash;
	char *target;
	size_t target_len;
	char *resp;
	size_t resp_len;
};

struct worker {
	unsigned id;
	struct io_uring ring;
	struct io_uring_buf_ring *br;
	char *bufs;
	unsigned br_pending; /* buffers given back since the last advance */
	struct worker_stats *st;
	struct listener *ls;
	unsigned n_ls;

	struct http_limits lim;
	struct http_header *hdrs;

	uint64_t now_ms; /* CLOCK_MONOTONIC, once per loop iteration */
	time_t date_sec;
	char date[64]; /* "Date: ...\r\n" */
	size_t date_len;
	char xorigin[320]; /* "X-Origin: NAME\r\n" */
	size_t xorigin_len;
	/* The default response (200, 1024 bytes, keep-alive HTTP/1.1), rebuilt
	 * when the Date second changes. */
	char *fast;
	size_t fast_len;
	struct rcache_entry rcache[RCACHE_SLOTS];
};

static void conn_drive(struct conn *c);
static void conn_close(struct conn *c, bool rst);

/* ---- small helpers ---------------------------------------------------------- */

static void fill_pattern(void)
{
	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (char)('a' + i % 26);
}

static void die(const char *what, int err)
{
	fprintf(stderr, "reflex-origin: %s: %s\n", what, strerror(err));
	exit(1);
}

static inline uint64_t ud(void *p, enum tag t)
{
	return (uint64_t)(uintptr_t)p | t;
}

static struct io_uring_sqe *get_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

	if (!sqe) {
		io_uring_submit(&w->ring);
		sqe = io_uring_get_sqe(&w->ring);
		if (!sqe)
			die("io_uring_get_sqe", EBUSY);
	}
	return sqe;
}

static const struct {
	unsigned code;
	const char *text;
} reasons[] = {
	{100, "Continue"},
	{200, "OK"},
	{201, "Created"},
	{202, "Accepted"},
	{204, "No Content"},
	{206, "Partial Content"},
	{301, "Moved Permanently"},
	{302, "Found"},
	{304, "Not Modified"},
	{307, "Temporary Redirect"},
	{400, "Bad Request"},
	{401, "Unauthorized"},
	{403, "Forbidden"},
	{404, "Not Found"},
	{408, "Request Timeout"},
	{413, "Content Too Large"},
	{414, "URI Too Long"},
	{417, "Expectation Failed"},
	{429, "Too Many Requests"},
	{431, "Request Header Fields Too Large"},
	{500, "Internal Server Error"},
	{501, "Not Implemented"},
	{502, "Bad Gateway"},
	{503, "Service Unavailable"},
	{504, "Gateway Timeout"},
};

static const char *reason_phrase(unsigned s)
{
	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		if (reasons[i].code == s)
			return reasons[i].text;
	return "Status";
}

static bool status_bodyless(unsigned s)
{
	return s < 200 || s == 204 || s == 304;
}

/* ---- clock, Date and the precomputed default response ---------------------- */

static void build_fast(struct worker *w)
{
	static const char body_hdr[] = "Content-Type: text/plain\r\nContent-Length: 1024\r\n\r\n";
	static const char status[] = "HTTP/1.1 200 OK\r\n";
	size_t n = 0;

	memcpy(w->fast + n, status, sizeof(status) - 1);
	n += sizeof(status) - 1;
	memcpy(w->fast + n, w->date, w->date_len);
	n += w->date_len;
	memcpy(w->fast + n, w->xorigin, w->xorigin_len);
	n += w->xorigin_len;
	memcpy(w->fast + n, body_hdr, sizeof(body_hdr) - 1);
	n += sizeof(body_hdr) - 1;
	memcpy(w->fast + n, pattern, PLAN_DEFAULT_SIZE);
	n += PLAN_DEFAULT_SIZE;
	w->fast_len = n;
}

static void update_clock(struct worker *w)
{
	struct timespec ts;
	time_t now;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	w->now_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	now = time(NULL);
	if (now != w->date_sec) {
		struct tm tm;

		w->date_sec = now;
		gmtime_r(&now, &tm);
		w->date_len = strftime(w->date, sizeof(w->date),
				       "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
		build_fast(w);
	}
}

/* ---- input ------------------------------------------------------------------ */

static const char *in_data(struct conn *c, size_t *n)
{
	if (c->view) {
		*n = c->view_len;
		return c->view;
	}
	*n = c->in_len - c->in_off;
	return c->in + c->in_off;
}

static void in_consume(struct conn *c, size_t n)
{
	if (c->view) {
		c->view += n;
		c->view_len -= n;
		return;
	}
	c->in_off += n;
	if (c->in_off == c->in_len)
		c->in_off = c->in_len = 0;
}

static void in_discard(struct conn *c)
{
	size_t n;

	in_data(c, &n);
	in_consume(c, n);
}

static int in_append(struct conn *c, const char *p, size_t n)
{
	if (c->in_len + n > c->in_cap && c->in_off) {
		memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
		c->in_len -= c->in_off;
		c->in_off = 0;
	}
	if (c->in_len + n > c->in_cap) {
		size_t cap = c->in_cap ? c->in_cap : 4096;
		char *b;

		while (cap < c->in_len + n)
			cap *= 2;
		if (cap > IN_LIMIT)
			return -ENOBUFS;
		b = realloc(c->in, cap);
		if (!b)
			return -ENOMEM;
		c->in = b;
		c->in_cap = cap;
	}
	memcpy(c->in + c->in_len, p, n);
	c->in_len += n;
	return 0;
}

/* ---- output ----------------------------------------------------------------- */

static char *out_reserve(struct conn *c, size_t n)
{
	if (c->out_len + n > c->out_cap) {
		size_t cap = c->out_cap ? c->out_cap : 4096;
		char *b;

		while (cap < c->out_len + n)
			cap *= 2;
		b = realloc(c->out, cap);
		if (!b)
			return NULL;
		c->out = b;
		c->out_cap = cap;
	}
	return c->out + c->out_len;
}

static void out_put(struct conn *c, const void *p, size_t n)
{
	char *d = out_reserve(c, n);

	if (!d) {
		conn_close(c, false);
		return;
	}
	memcpy(d, p, n);
	c->out_len += n;
}

static void out_str(struct conn *c, const char *s)
{
	out_put(c, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void out_printf(struct conn *c, const char *fmt, ...)
{
	va_list ap;
	char tmp[512];
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n < sizeof(tmp)) {
		out_put(c, tmp, (size_t)n);
		return;
	}
	char *d = out_reserve(c, (size_t)n + 1);

	if (!d) {
		conn_close(c, false);
		return;
	}
	va_start(ap, fmt);
	vsnprintf(d, (size_t)n + 1, fmt, ap);
	va_end(ap);
	c->out_len += (size_t)n;
}

/* Body bytes [off, off+n) of the generated pattern, appended to out. */
static void out_pattern(struct conn *c, uint64_t off, size_t n)
{
	while (n) {
		size_t k = n < PATTERN_SPAN ? n : PATTERN_SPAN;

		out_put(c, pattern + off % 26, k);
		off += k;
		n -= k;
	}
}

static void submit_send(struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(c->w);
	unsigned n = c->niov - c->iov_idx;

	if (n == 1) {
		io_uring_prep_send(sqe, c->fd, c->iov[c->iov_idx].iov_base,
				   c->iov[c->iov_idx].iov_len, MSG_NOSIGNAL);
	} else {
		memset(&c->msg, 0, sizeof(c->msg));
		c->msg.msg_iov = c->iov + c->iov_idx;
		c->msg.msg_iovlen = n;
		io_uring_prep_sendmsg(sqe, c->fd, &c->msg, MSG_NOSIGNAL);
	}
	io_uring_sqe_set_data64(sqe, ud(c, T_SEND));
	c->send_inflight = true;
}

static void iov_add(struct conn *c, const void *p, size_t n)
{
	c->iov[c->niov].iov_base = (void *)p;
	c->iov[c->niov].iov_len = n;
	c->niov++;
}

static void flush_out(struct conn *c)
{
	if (c->send_inflight || c->closing || !c->out_len)
		return;
	c->niov = c->iov_idx = 0;
	c->pending_body = 0;
	c->pending_end = false;
	iov_add(c, c->out, c->out_len);
	submit_send(c);
}

/* ---- timers ----------------------------------------------------------------- */

static void arm_timer(struct conn *c, uint64_t ms)
{
	struct io_uring_sqe *sqe = get_sqe(c->w);

	c->ts.tv_sec = (long long)(ms / 1000);
	c->ts.tv_nsec = (long long)(ms % 1000) * 1000000;
	io_uring_prep_timeout(sqe, &c->ts, 0, 0);
	io_uring_sqe_set_data64(sqe, ud(c, T_TIMER));
	c->timer_armed = true;
}

/* ---- connection lifetime ---------------------------------------------------- */

static void arm_recv(struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe(c->w);

	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	io_uring_sqe_set_data64(sqe, ud(c, T_RECV));
	c->recv_armed = true;
}

static void cancel_op(struct conn *c, enum tag t)
{
	struct io_uring_sqe *sqe = get_sqe(c->w);

	io_uring_prep_cancel64(sqe, ud(c, t), 0);
	io_uring_sqe_set_data64(sqe, T_IGNORE);
}

static void conn_close(struct conn *c, bool rst)
{
	if (c->closing)
		return;
	c->closing = true;
	if (rst) {
		struct linger lg = {.l_onoff = 1, .l_linger = 0};

		setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	/* Ops in flight hold their own reference to the socket: cancel them
	 * by user_data (the fd number may be reused at once). */
	if (c->recv_armed)
		cancel_op(c, T_RECV);
	if (c->send_inflight)
		cancel_op(c, T_SEND);
	if (c->timer_armed)
		cancel_op(c, T_TIMER);
	close(c->fd);
	c->fd = -1;
	atomic_fetch_add_explicit(&c->w->st->closed, 1, memory_order_relaxed);
}

static void conn_maybe_free(struct conn *c)
{
	if (!c->closing || c->recv_armed || c->send_inflight || c->timer_armed)
		return;
	plan_reset(&c->plan);
	free(c->in);
	free(c->out);
	free(c->echo);
	free(c);
}

static void conn_new(struct worker *w, int fd)
{
	struct conn *c = calloc(1, sizeof(*c));
	int one = 1;

	if (!c) {
		close(fd);
		return;
	}
	c->w = w;
	c->fd = fd;
	c->state = ST_HEAD;
	plan_init(&c->plan);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	atomic_fetch_add_explicit(&w->st->accepted, 1, memory_order_relaxed);
	arm_recv(c);
}

/* ---- responses -------------------------------------------------------------- */

enum framing { FR_NONE, FR_LENGTH, FR_CHUNKED, FR_CLOSE };

static enum framing pick_framing(struct conn *c, unsigned status)
{
	if (status_bodyless(status))
		return FR_NONE;
	if (c->plan.close)
		return FR_CLOSE;
	if (c->plan.chunked)
		/* HTTP/1.0 has no chunked coding: delimit by close instead. */
		return c->minor ? FR_CHUNKED : FR_CLOSE;
	return FR_LENGTH;
}

static void write_head(struct conn *c, const char *default_ctype, enum framing fr, uint64_t clen)
{
	static const char *const names[PF_COUNT] = {"Cache-Control", "ETag",	"Last-Modified",
						    "Vary",	     "Expires", "Content-Type"};
	struct plan *pl = &c->plan;
	struct worker *w = c->w;

	out_printf(c, "HTTP/1.1 %u %s\r\n", pl->status, reason_phrase(pl->status));
	out_put(c, w->date, w->date_len);
	out_put(c, w->xorigin, w->xorigin_len);
	if (pl->field[PF_CTYPE])
		out_printf(c, "Content-Type: %s\r\n", pl->field[PF_CTYPE]);
	else if (fr != FR_NONE && default_ctype)
		out_printf(c, "Content-Type: %s\r\n", default_ctype);
	for (int f = 0; f < PF_CTYPE; f++)
		if (pl->field[f])
			out_printf(c, "%s: %s\r\n", names[f], pl->field[f]);
	if (pl->hdr)
		out_put(c, pl->hdr, pl->hdr_len);
	if (c->has_body)
		out_printf(c, "X-Body-Bytes: %" PRIu64 "\r\nX-Body-Hash: %016" PRIx64 "\r\n",
			   c->body_bytes, c->body_hash);
	if (fr == FR_LENGTH)
		out_printf(c, "Content-Length: %" PRIu64 "\r\n", clen);
	else if (fr == FR_CHUNKED)
		out_str(c, "Transfer-Encoding: chunked\r\n");
	if (fr == FR_CLOSE || pl->close)
		c->close_after = true;
	if (c->close_after)
		out_str(c, "Connection: close\r\n");
	else if (c->minor == 0)
		out_str(c, "Connection: keep-alive\r\n");
	out_str(c, "\r\n");
}

/* The request is answered (everything is queued in out): next request or
 * close. */
static void response_complete(struct conn *c)
{
	c->streaming = c->sse = false;
	if (c->close_after) {
		c->state = ST_CLOSING;
		return;
	}
	plan_reset(&c->plan);
	c->echo_len = 0;
	c->has_body = c->delay_done = false;
	c->state = ST_HEAD;
}

/* Append body bytes, chunked per plan.chunk when the framing says so. */
static void out_body(struct conn *c, enum framing fr, const char *p, size_t n)
{
	if (fr != FR_CHUNKED) {
		out_put(c, p, n);
		return;
	}
	while (n) {
		size_t k = n < c->plan.chunk ? n : (size_t)c->plan.chunk;

		out_printf(c, "%zx\r\n", k);
		out_put(c, p, k);
		out_str(c, "\r\n");
		p += k;
		n -= k;
	}
}

static void respond_literal(struct conn *c, const char *ctype, const char *body, size_t n)
{
	enum framing fr = pick_framing(c, c->plan.status);

	write_head(c, ctype, fr, n);
	if (!c->is_head && fr != FR_NONE) {
		out_body(c, fr, body, n);
		if (fr == FR_CHUNKED)
			out_str(c, "0\r\n\r\n");
	}
	response_complete(c);
}

static void respond_error(struct conn *c, int status, const char *reason)
{
	const char *r = reason ? reason : reason_phrase((unsigned)status);

	c->close_after = true;
	out_printf(c,
		   "HTTP/1.1 %d %s\r\n%.*s%.*sContent-Type: text/plain\r\n"
		   "Content-Length: %zu\r\nConnection: close\r\n\r\n%s\n",
		   status, reason_phrase((unsigned)status), (int)c->w->date_len, c->w->date,
		   (int)c->w->xorigin_len, c->w->xorigin, strlen(r) + 1, r);
	in_discard(c);
	c->state = ST_CLOSING;
}

static void respond_malformed(struct conn *c)
{
	struct worker *w = c->w;
	/* Date and X-Origin lines without their CRLF, for the bare-LF kind. */
	int dl = (int)w->date_len - 2, xl = (int)w->xorigin_len - 2;

	switch (c->plan.malformed) {
	case MAL_STATUS:
		out_printf(c, "HTTP/1.1 2x0 OK\r\n%.*s\r\n%.*s\r\nContent-Length: 5\r\n\r\nhello",
			   dl, w->date, xl, w->xorigin);
		break;
	case MAL_CL:
		out_printf(c,
			   "HTTP/1.1 200 OK\r\n%.*s\r\n%.*s\r\nContent-Length: 5\r\n"
			   "Content-Length: 6\r\n\r\nhello!",
			   dl, w->date, xl, w->xorigin);
		break;
	case MAL_CL_TE:
		out_printf(c,
			   "HTTP/1.1 200 OK\r\n%.*s\r\n%.*s\r\nContent-Length: 5\r\n"
			   "Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
			   dl, w->date, xl, w->xorigin);
		break;
	case MAL_INJECTION:
		out_printf(
			c,
			"HTTP/1.1 200 OK\r\n%.*s\r\n%.*s\r\nX-Injected: a\rSet-Cookie: evil=1\r\n"
			"Content-Length: 5\r\n\r\nhello",
			dl, w->date, xl, w->xorigin);
		break;
	case MAL_CHUNK:
		out_printf(c,
			   "HTTP/1.1 200 OK\r\n%.*s\r\n%.*s\r\nTransfer-Encoding: chunked\r\n\r\n"
			   "zz\r\nhello\r\n0\r\n\r\n",
			   dl, w->date, xl, w->xorigin);
		break;
	case MAL_LF:
		out_printf(c, "HTTP/1.1 200 OK\n%.*s\n%.*s\nContent-Length: 5\n\nhello", dl,
			   w->date, xl, w->xorigin);
		break;
	case MAL_SHORT:
		out_printf(c,
			   "HTTP/1.1 200 OK\r\n%.*s\r\n%.*s\r\nContent-Length: 100\r\n\r\n"
			   "abcdefghij",
			   dl, w->date, xl, w->xorigin);
		break;
	}
	c->close_after = true;
	c->state = ST_CLOSING;
}

static void respond_stats(struct conn *c)
{
	uint64_t req = 0, acc = 0, closed = 0;
	char body[160];
	int n;

	for (unsigned i = 0; i < origin_cfg.n_workers; i++) {
		struct worker_stats *s = &origin_cfg.stats[i];

		req += atomic_load_explicit(&s->requests, memory_order_relaxed);
		acc += atomic_load_explicit(&s->accepted, memory_order_relaxed);
		closed += atomic_load_explicit(&s->closed, memory_order_relaxed);
	}
	n = snprintf(body, sizeof(body),
		     "{\"requests\":%" PRIu64 ",\"connections\":%" PRIu64 ",\"open\":%" PRIu64
		     "}\n",
		     req, acc, acc >= closed ? acc - closed : 0);
	respond_literal(c, "application/json", body, (size_t)n);
}

static int echo_put(struct conn *c, const char *p, size_t n)
{
	if (c->echo_len + n > c->echo_cap) {
		size_t cap = c->echo_cap ? c->echo_cap : 1024;
		char *b;

		while (cap < c->echo_len + n)
			cap *= 2;
		b = realloc(c->echo, cap);
		if (!b)
			return -ENOMEM;
		c->echo = b;
		c->echo_cap = cap;
	}
	memcpy(c->echo + c->echo_len, p, n);
	c->echo_len += n;
	return 0;
}

static int echo_str(struct conn *c, const char *s)
{
	return echo_put(c, s, strlen(s));
}

/* A JSON string literal of the bytes (control characters escaped; bytes
 * >= 0x80 passed through as they came). */
static int echo_json(struct conn *c, const char *p, size_t n)
{
	int r = echo_put(c, "\"", 1);

	for (size_t i = 0; i < n && !r; i++) {
		unsigned char ch = (unsigned char)p[i];
		char esc[8];

		if (ch == '"' || ch == '\\') {
			esc[0] = '\\';
			esc[1] = (char)ch;
			r = echo_put(c, esc, 2);
		} else if (ch < 0x20 || ch == 0x7f) {
			snprintf(esc, sizeof(esc), "\\u%04x", ch);
			r = echo_put(c, esc, 6);
		} else {
			r = echo_put(c, p + i, 1);
		}
	}
	return r ? r : echo_put(c, "\"", 1);
}

static int echo_begin(struct conn *c, const struct http_request *req)
{
	int r = 0;

	c->echo_len = 0;
	r |= echo_str(c, "{\"method\":");
	r |= echo_json(c, req->method.p, req->method.len);
	r |= echo_str(c, ",\"target\":");
	r |= echo_json(c, req->target.p, req->target.len);
	r |= echo_str(c, req->minor_version ? ",\"version\":\"1.1\"" : ",\"version\":\"1.0\"");
	r |= echo_str(c, ",\"headers\":[");
	for (unsigned i = 0; i < req->n_headers; i++) {
		r |= echo_str(c, i ? ",[" : "[");
		r |= echo_json(c, req->headers[i].name.p, req->headers[i].name.len);
		r |= echo_str(c, ",");
		r |= echo_json(c, req->headers[i].value.p, req->headers[i].value.len);
		r |= echo_str(c, "]");
	}
	r |= echo_str(c, "]");
	return r ? -ENOMEM : 0;
}

static void respond_echo(struct conn *c)
{
	char tail[96];
	int n = snprintf(tail, sizeof(tail),
			 ",\"body_bytes\":%" PRIu64 ",\"body_hash\":\"%016" PRIx64 "\"}\n",
			 c->body_bytes, c->body_hash);

	if (echo_put(c, tail, (size_t)n) != 0) {
		respond_error(c, 500, "out of memory");
		return;
	}
	respond_literal(c, "application/json", c->echo, c->echo_len);
}

static void respond_generated(struct conn *c)
{
	struct plan *pl = &c->plan;

	if (pl->sse) {
		/* SSE is chunked (close-delimited for HTTP/1.0): each event is
		 * flushed on its own. */
		pl->chunked = true;
		pl->close = false;
		enum framing sfr = pick_framing(c, pl->status);

		c->resp_chunked = sfr == FR_CHUNKED;
		write_head(c, "text/event-stream", sfr, 0);
		if (c->is_head || sfr == FR_NONE) {
			response_complete(c);
			return;
		}
		c->sse = true;
		c->sse_next = 1;
		c->sse_total = pl->sse_events;
		c->interval_ms = pl->interval_ms;
		c->state = ST_RESP;
		return;
	}

	enum framing fr = pick_framing(c, pl->status);

	write_head(c, "text/plain", fr, pl->size);
	if (c->is_head || fr == FR_NONE) {
		response_complete(c);
		return;
	}
	if (pl->size <= SMALL_BODY && !pl->rate) {
		if (fr == FR_CHUNKED) {
			uint64_t off = 0;

			while (off < pl->size) {
				size_t k = pl->size - off < pl->chunk ? pl->size - off : pl->chunk;

				out_printf(c, "%zx\r\n", k);
				out_pattern(c, off, k);
				out_str(c, "\r\n");
				off += k;
			}
			out_str(c, "0\r\n\r\n");
		} else {
			out_pattern(c, 0, pl->size);
		}
		response_complete(c);
		return;
	}
	c->streaming = true;
	c->resp_chunked = fr == FR_CHUNKED;
	c->chunk = pl->chunk < PATTERN_SPAN ? pl->chunk : PATTERN_SPAN;
	c->end_sent = !c->resp_chunked;
	c->body_total = pl->size;
	c->body_sent = 0;
	c->rate = pl->rate;
	c->rate_start_ms = c->w->now_ms;
	c->state = ST_RESP;
}

/* The request (head and body) has been read: act on the plan. */
static void start_response(struct conn *c)
{
	struct plan *pl = &c->plan;

	if (pl->delay_ms && !c->delay_done) {
		arm_timer(c, pl->delay_ms);
		c->state = ST_WAIT;
		return;
	}
	switch (pl->action) {
	case PLAN_HANG:
		c->state = ST_HANG;
		break;
	case PLAN_RESET:
		c->close_after = c->rst = true;
		c->state = ST_CLOSING;
		break;
	case PLAN_DROP:
		c->close_after = true;
		c->state = ST_CLOSING;
		break;
	case PLAN_MALFORMED:
		respond_malformed(c);
		break;
	case PLAN_STATS:
		respond_stats(c);
		break;
	case PLAN_ECHO:
		respond_echo(c);
		break;
	case PLAN_RESPOND:
		respond_generated(c);
		break;
	}
}

/* ---- response cache --------------------------------------------------------- */

static struct rcache_entry *rcache_find(struct worker *w, struct http_str target, uint64_t hash)
{
	struct rcache_entry *e = &w->rcache[hash % RCACHE_SLOTS];

	if (e->resp && e->hash == hash && e->date_sec == w->date_sec &&
	    e->target_len == target.len && memcmp(e->target, target.p, target.len) == 0)
		return e;
	return NULL;
}

static void rcache_store(struct worker *w, struct http_str target, uint64_t hash, const char *resp,
			 size_t len)
{
	struct rcache_entry *e = &w->rcache[hash % RCACHE_SLOTS];
	char *t, *r;

	if (target.len > RCACHE_MAX_TARGET || len > SMALL_BODY + 8192)
		return;
	t = realloc(e->target, target.len ? target.len : 1);
	if (!t)
		return;
	e->target = t;
	r = realloc(e->resp, len);
	if (!r) {
		free(e->resp);
		e->resp = NULL;
		return;
	}
	e->resp = r;
	memcpy(e->target, target.p, target.len);
	e->target_len = target.len;
	memcpy(e->resp, resp, len);
	e->resp_len = len;
	e->hash = hash;
	e->date_sec = w->date_sec;
}

/* ---- the state machine ------------------------------------------------------ */

static bool step_head(struct conn *c)
{
	struct worker *w = c->w;
	struct http_request req = {.headers = w->hdrs, .max_headers = w->lim.max_headers};
	struct http_error err = {0};
	const char *reason = NULL;
	size_t n;
	const char *p = in_data(c, &n);
	int r;

	if (n == 0) {
		if (c->peer_eof)
			conn_close(c, false);
		return false;
	}
	r = http_parse_request(p, n, &req, &w->lim, &err);
	if (r == -2) {
		if (c->peer_eof)
			conn_close(c, false);
		return false;
	}
	if (r < 0) {
		respond_error(c, err.status ? err.status : 400, err.reason);
		return true;
	}

	/* A keep-alive GET without body or X-Origin-* header: its response
	 * depends on the target alone, so it can come precomputed. */
	uint64_t slow = atomic_load_explicit(&origin_slow_ms, memory_order_relaxed);
	bool simple = req.body == HTTP_BODY_NONE && req.keep_alive && req.minor_version == 1 &&
		      !req.is_head && plan_headers_neutral(&req) && !slow;
	uint64_t thash = 0;

	if (simple) {
		const struct rcache_entry *e;

		if (!memchr(req.path.p, '?', req.path.len) &&
		    !(req.path.len == 5 && !memcmp(req.path.p, "/echo", 5)) &&
		    !(req.path.len == 8 && !memcmp(req.path.p, "/__stats", 8))) {
			/* The benchmark case: one memcpy of the default response. */
			atomic_fetch_add_explicit(&w->st->requests, 1, memory_order_relaxed);
			in_consume(c, (size_t)r);
			out_put(c, w->fast, w->fast_len);
			return true;
		}
		thash = plan_fnv1a(PLAN_FNV_INIT, req.target.p, req.target.len);
		e = rcache_find(w, req.target, thash);
		if (e) {
			atomic_fetch_add_explicit(&w->st->requests, 1, memory_order_relaxed);
			in_consume(c, (size_t)r);
			out_put(c, e->resp, e->resp_len);
			return true;
		}
	}

	c->minor = req.minor_version;
	c->keep_alive = req.keep_alive;
	c->close_after = !req.keep_alive;
	c->is_head = req.is_head;
	c->body_kind = req.body;
	c->has_body = req.body != HTTP_BODY_NONE;
	c->body_bytes = 0;
	c->body_hash = PLAN_FNV_INIT;
	c->delay_done = false;
	if (plan_build(&c->plan, &req, &reason) != 0) {
		in_consume(c, (size_t)r);
		respond_error(c, 400, reason);
		return true;
	}
	if (c->plan.action != PLAN_STATS)
		atomic_fetch_add_explicit(&w->st->requests, 1, memory_order_relaxed);
	if (slow && c->plan.action != PLAN_STATS)
		c->plan.delay_ms += slow;
	if (c->plan.action == PLAN_ECHO && echo_begin(c, &req) != 0) {
		in_consume(c, (size_t)r);
		respond_error(c, 500, "out of memory");
		return true;
	}
	in_consume(c, (size_t)r);

	if (!c->has_body) {
		bool cacheable = simple && c->plan.action == PLAN_RESPOND && !c->plan.sse &&
				 !c->plan.delay_ms && !c->plan.rate;
		size_t mark = c->out_len;

		start_response(c);
		/* Complete in out and kept alive: remember it. req.target still
		 * points at intact input (consuming only moves offsets). */
		if (cacheable && c->state == ST_HEAD && !c->closing && !c->close_after)
			rcache_store(w, req.target, thash, c->out + mark, c->out_len - mark);
		return true;
	}
	if (req.expect_continue)
		out_str(c, "HTTP/1.1 100 Continue\r\n\r\n");
	if (req.body == HTTP_BODY_LENGTH)
		c->body_left = req.content_length;
	else
		http_chunked_init(&c->chunked);
	c->state = ST_BODY;
	return true;
}

static bool step_body(struct conn *c)
{
	size_t n;
	const char *p = in_data(c, &n);

	if (c->body_kind == HTTP_BODY_LENGTH) {
		size_t k = n < c->body_left ? n : (size_t)c->body_left;

		c->body_hash = plan_fnv1a(c->body_hash, p, k);
		c->body_bytes += k;
		c->body_left -= k;
		in_consume(c, k);
		if (c->body_left == 0) {
			start_response(c);
			return true;
		}
	} else {
		while (n && !c->chunked.done) {
			struct http_str payload = {0};
			struct http_error err = {0};
			ssize_t r = http_chunked_feed(&c->chunked, p, n, &payload, &err);

			if (r < 0) {
				respond_error(c, 400, err.reason ? err.reason : "bad chunked body");
				return true;
			}
			if (payload.len) {
				c->body_hash = plan_fnv1a(c->body_hash, payload.p, payload.len);
				c->body_bytes += payload.len;
			}
			in_consume(c, (size_t)r);
			p += r;
			n -= (size_t)r;
			if (r == 0 && !payload.len)
				break;
		}
		if (c->chunked.done) {
			start_response(c);
			return true;
		}
	}
	if (c->peer_eof)
		conn_close(c, false);
	return false;
}

/* Queue the next piece of a streamed response. Returns true when the
 * response is complete and the state machine may go on. */
static bool step_resp(struct conn *c)
{
	struct worker *w = c->w;

	if (c->timer_armed)
		return false;

	if (c->sse) {
		if (c->sse_next <= c->sse_total) {
			char ev[96];
			int n = snprintf(ev, sizeof(ev),
					 "id: %" PRIu64 "\ndata: event %" PRIu64 "\n\n",
					 c->sse_next, c->sse_next);

			if (c->resp_chunked)
				out_printf(c, "%x\r\n%s\r\n", n, ev);
			else
				out_put(c, ev, (size_t)n);
			c->sse_next++;
		}
		if (c->sse_next > c->sse_total) {
			if (c->resp_chunked)
				out_str(c, "0\r\n\r\n");
			response_complete(c);
			return true;
		}
		arm_timer(c, c->interval_ms);
		flush_out(c);
		return false;
	}

	if (c->body_sent == c->body_total && c->end_sent) {
		response_complete(c);
		return true;
	}

	uint64_t budget = MAX_SEND_BYTES, left = c->body_total - c->body_sent;

	if (c->rate) {
		/* A 50 ms burst, then rate bytes per second on average. */
		uint64_t burst = c->rate / 20 ? c->rate / 20 : 1;
		uint64_t allowed = burst + (uint64_t)((unsigned __int128)c->rate *
						      (w->now_ms - c->rate_start_ms) / 1000);

		if (left && allowed <= c->body_sent) {
			uint64_t need = c->chunk < left ? c->chunk : left;
			uint64_t ms = (c->body_sent - allowed + need) * 1000 / c->rate;

			arm_timer(c, ms < 5 ? 5 : ms > 1000 ? 1000 : ms);
			flush_out(c);
			return false;
		}
		if (allowed - c->body_sent < budget)
			budget = allowed - c->body_sent;
	}

	c->niov = c->iov_idx = 0;
	c->pending_body = 0;
	c->pending_end = false;
	if (c->out_len)
		iov_add(c, c->out, c->out_len);
	if (!c->resp_chunked) {
		uint64_t k = left < budget ? left : budget;

		iov_add(c, pattern + c->body_sent % 26, (size_t)k);
		c->pending_body = k;
	} else {
		uint64_t off = c->body_sent;
		unsigned i = 0;

		while (left && budget && i < MAX_CHUNKS) {
			uint64_t k = left < c->chunk ? left : c->chunk;
			int fl;

			if (k > budget)
				k = budget;
			fl = snprintf(c->frames[i], sizeof(c->frames[i]), "%" PRIx64 "\r\n", k);
			iov_add(c, c->frames[i], (size_t)fl);
			iov_add(c, pattern + off % 26, (size_t)k);
			iov_add(c, "\r\n", 2);
			off += k;
			left -= k;
			budget -= k;
			c->pending_body += k;
			i++;
		}
		if (!left) {
			iov_add(c, "0\r\n\r\n", 5);
			c->pending_end = true;
		}
	}
	submit_send(c);
	return false;
}

static void conn_drive(struct conn *c)
{
	while (!c->closing && !c->send_inflight) {
		bool progress = false;

		switch (c->state) {
		case ST_HEAD:
			progress = step_head(c);
			break;
		case ST_BODY:
			progress = step_body(c);
			break;
		case ST_WAIT:
			break;
		case ST_RESP:
			progress = step_resp(c);
			break;
		case ST_HANG:
			in_discard(c);
			if (c->peer_eof)
				conn_close(c, false);
			break;
		case ST_CLOSING:
			in_discard(c);
			if (c->out_len)
				flush_out(c);
			else
				conn_close(c, c->rst);
			break;
		}
		if (!progress)
			break;
	}
	flush_out(c);
}

/* ---- completions ------------------------------------------------------------ */

static void recycle_buf(struct worker *w, unsigned bid)
{
	io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * BR_BUF_SIZE, BR_BUF_SIZE, bid,
			      io_uring_buf_ring_mask(BR_ENTRIES), w->br_pending++);
}

static void on_data(struct conn *c, const char *data, size_t len)
{
	if (c->state == ST_HANG || c->state == ST_CLOSING)
		return;
	if (c->in_len == c->in_off && !c->send_inflight) {
		/* Parse in place; only what is left over gets copied. */
		c->view = data;
		c->view_len = len;
		conn_drive(c);
		data = c->view;
		len = c->view_len;
		c->view = NULL;
		c->view_len = 0;
		if (!len || c->closing || c->state == ST_HANG || c->state == ST_CLOSING)
			return;
		if (in_append(c, data, len) != 0)
			conn_close(c, false);
		return;
	}
	if (in_append(c, data, len) != 0) {
		conn_close(c, false);
		return;
	}
	conn_drive(c);
}

static void on_recv(struct conn *c, struct io_uring_cqe *cqe)
{
	struct worker *w = c->w;
	int res = cqe->res;

	if (!(cqe->flags & IORING_CQE_F_MORE))
		c->recv_armed = false;
	if (cqe->flags & IORING_CQE_F_BUFFER) {
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;

		if (res > 0 && !c->closing)
			on_data(c, w->bufs + (size_t)bid * BR_BUF_SIZE, (size_t)res);
		recycle_buf(w, bid);
	} else if (res == 0) {
		c->peer_eof = true;
		if (!c->closing)
			conn_drive(c);
	} else if (res < 0 && res != -ENOBUFS && res != -ECANCELED) {
		conn_close(c, false);
	}
	if (!c->recv_armed && !c->closing && !c->peer_eof)
		arm_recv(c);
}

static void on_send(struct conn *c, int res)
{
	c->send_inflight = false;
	if (c->closing)
		return;
	if (res < 0) {
		conn_close(c, false);
		return;
	}
	/* Short send: advance the iovecs and send the rest. */
	size_t left = (size_t)res;

	while (c->iov_idx < c->niov && left >= c->iov[c->iov_idx].iov_len)
		left -= c->iov[c->iov_idx++].iov_len;
	if (c->iov_idx < c->niov) {
		c->iov[c->iov_idx].iov_base = (char *)c->iov[c->iov_idx].iov_base + left;
		c->iov[c->iov_idx].iov_len -= left;
		submit_send(c);
		return;
	}
	c->out_len = 0;
	if (c->streaming) {
		c->body_sent += c->pending_body;
		if (c->pending_end)
			c->end_sent = true;
	}
	c->pending_body = 0;
	c->pending_end = false;
	conn_drive(c);
}

static void on_timer(struct conn *c)
{
	c->timer_armed = false;
	if (c->closing)
		return;
	if (c->state == ST_WAIT) {
		c->delay_done = true;
		start_response(c);
	}
	conn_drive(c);
}

static void arm_accept(struct listener *l)
{
	struct io_uring_sqe *sqe = get_sqe(l->w);

	io_uring_prep_multishot_accept(sqe, l->fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud(l, T_ACCEPT));
}

static void on_accept(struct listener *l, struct io_uring_cqe *cqe)
{
	int res = cqe->res;

	if (res >= 0)
		conn_new(l->w, res);
	else if (res != -EINTR && res != -ECONNABORTED && l->last_error_log != l->w->date_sec) {
		/* EMFILE/ENFILE/ENOMEM: say so once a second, not per attempt. */
		l->last_error_log = l->w->date_sec;
		fprintf(stderr, "reflex-origin: accept: %s\n", strerror(-res));
	}
	if (cqe->flags & IORING_CQE_F_MORE)
		return;
	if (res < 0 && res != -EINTR && res != -ECONNABORTED) {
		/* Out of descriptors or memory: retry in 10 ms instead of spinning. */
		struct io_uring_sqe *sqe = get_sqe(l->w);

		l->retry.tv_sec = 0;
		l->retry.tv_nsec = 10 * 1000000;
		io_uring_prep_timeout(sqe, &l->retry, 0, 0);
		io_uring_sqe_set_data64(sqe, ud(l, T_ACCEPT_RETRY));
		return;
	}
	arm_accept(l);
}

static void handle_cqe(struct worker *w, struct io_uring_cqe *cqe)
{
	uint64_t u = cqe->user_data;
	void *p = (void *)(uintptr_t)(u & ~(uint64_t)T_MASK);
	struct conn *c = p;

	switch (u & T_MASK) {
	case T_ACCEPT:
		on_accept(p, cqe);
		return;
	case T_ACCEPT_RETRY:
		arm_accept(p);
		return;
	case T_RECV:
		on_recv(c, cqe);
		break;
	case T_SEND:
		on_send(c, cqe->res);
		break;
	case T_TIMER:
		on_timer(c);
		break;
	default:
		return;
	}
	conn_maybe_free(c);
}

/* ---- setup and loop --------------------------------------------------------- */

static void setup_ring(struct worker *w)
{
	struct io_uring_params p;
	int r;

	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER |
		  IORING_SETUP_DEFER_TASKRUN;
	p.cq_entries = CQ_ENTRIES;
	r = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
	if (r == -EINVAL) {
		/* Older kernels: no SINGLE_ISSUER / DEFER_TASKRUN. */
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL;
		p.cq_entries = CQ_ENTRIES;
		r = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &p);
	}
	if (r < 0)
		die("io_uring_queue_init", -r);
	/* Saves an fget/fput per io_uring_enter; optional. */
	io_uring_register_ring_fd(&w->ring);

	struct io_uring_buf_reg reg;
	size_t br_size = BR_ENTRIES * sizeof(struct io_uring_buf);
	void *mem;

	if (posix_memalign(&mem, 4096, br_size) != 0)
		die("posix_memalign", ENOMEM);
	w->br = mem;
	w->bufs = malloc((size_t)BR_ENTRIES * BR_BUF_SIZE);
	if (!w->bufs)
		die("malloc", ENOMEM);
	memset(&reg, 0, sizeof(reg));
	reg.ring_addr = (uint64_t)(uintptr_t)w->br;
	reg.ring_entries = BR_ENTRIES;
	reg.bgid = BGID;
	r = io_uring_register_buf_ring(&w->ring, &reg, 0);
	if (r < 0)
		die("io_uring_register_buf_ring", -r);
	io_uring_buf_ring_init(w->br);
	for (unsigned i = 0; i < BR_ENTRIES; i++)
		io_uring_buf_ring_add(w->br, w->bufs + (size_t)i * BR_BUF_SIZE, BR_BUF_SIZE, i,
				      io_uring_buf_ring_mask(BR_ENTRIES), i);
	io_uring_buf_ring_advance(w->br, BR_ENTRIES);
}

void *worker_main(void *arg)
{
	struct worker_args *a = arg;
	struct worker *w = calloc(1, sizeof(*w));
	int n;

	if (!w)
		die("calloc", ENOMEM);
	pthread_once(&pattern_once, fill_pattern);
	w->id = a->id;
	w->st = &origin_cfg.stats[a->id];
	http_limits_default(&w->lim);
	w->hdrs = calloc(w->lim.max_headers, sizeof(*w->hdrs));
	n = snprintf(w->xorigin, sizeof(w->xorigin), "X-Origin: %s\r\n", origin_cfg.name);
	w->xorigin_len = (size_t)n < sizeof(w->xorigin) ? (size_t)n : sizeof(w->xorigin) - 1;
	w->fast = malloc(512 + sizeof(w->xorigin) + PLAN_DEFAULT_SIZE);
	if (!w->hdrs || !w->fast)
		die("malloc", ENOMEM);
	update_clock(w);
	setup_ring(w);

	w->n_ls = a->n_listen;
	w->ls = calloc(a->n_listen, sizeof(*w->ls));
	if (!w->ls)
		die("calloc", ENOMEM);
	for (unsigned i = 0; i < a->n_listen; i++) {
		w->ls[i].w = w;
		w->ls[i].fd = a->listen_fds[i];
		arm_accept(&w->ls[i]);
	}
	io_uring_submit(&w->ring);
	pthread_barrier_wait(origin_cfg.ready);

	for (;;) {
		struct io_uring_cqe *cqe;
		unsigned head, count = 0;
		int r = io_uring_submit_and_wait(&w->ring, 1);

		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY && r != -ETIME)
			die("io_uring_submit_and_wait", -r);
		update_clock(w);
		io_uring_for_each_cqe(&w->ring, head, cqe)
		{
			handle_cqe(w, cqe);
			count++;
		}
		io_uring_cq_advance(&w->ring, count);
		if (w->br_pending) {
			io_uring_buf_ring_advance(w->br, (int)w->br_pending);
			w->br_pending = 0;
		}
	}
	return NULL;
}
