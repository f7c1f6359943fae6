/* reflex-bench — an io_uring HTTP/1.1 load generator that does not lie about
 * latency (issue 4; docs/bench.md).
 *
 * One thread per -t, each with its own io_uring, its share of the -c
 * connections, its own histogram and counters (merged at the end; nothing is
 * shared while running). Two modes:
 *
 *  - closed loop (default): every connection keeps --pipeline requests in
 *    flight and sends the next one when an answer arrives. Latency is measured
 *    from the send, so a stalled server delays the requests that would have
 *    been sent and they are never measured (coordinated omission), as in wrk.
 *  - open loop (-R RATE): requests are due on a schedule (constant or
 *    --poisson) independent of the server. A due request goes to any
 *    connection with room; if none has room it waits in a backlog. Latency is
 *    measured from the intended send time, so a stall is charged in full to
 *    every request it delayed. Requests still unanswered at the end are
 *    recorded with their latency so far.
 *
 * --churn opens a connection per request (Connection: close; the latency
 * includes the connect). Where the kernel allows, a churned connection costs
 * the generator no syscall: its socket is a direct descriptor of the ring
 * (a slot of its file table) and socket, connect, send and recv go in as one
 * linked chain. After the answer the client waits for the server's FIN
 * before it closes (the server closes first, as Connection: close asks), so
 * TIME_WAIT stays with the server and the next connect's port search stays
 * short; the latency of the request ends with its response, as before.
 * Responses are parsed with the gateway's strict
 * parser (gateway/http/parse.h); a response it refuses counts as a parse
 * error and the connection is closed.
 *
 * No TLS: http:// only.
 */
#include <errno.h>
#include <getopt.h>
#include <liburing.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "gateway/http/parse.h"
#include "perf/loadgen/hist.h"
#include "perf/loadgen/reqlist.h"
#include "perf/loadgen/schedule.h"
#include "perf/loadgen/selftest.h"

#define MAX_PIPELINE 64
#define RBUF_SIZE (32 * 1024)
#define MAX_BACKLOG (1u << 24) /* open-loop requests waiting for a connection */

enum op {
	OP_CONNECT = 1,
	OP_SEND = 2,
	OP_RECV = 3,
	OP_SOCKET = 4,
	OP_DRAIN = 5, /* user_data: a struct slot, waiting for the server's FIN */
};

/* A draining connection that the server has not closed after this long is
 * closed by us (a server that ignores Connection: close). */
#define DRAIN_MAX_NS 1000000000ULL

enum err_kind {
	E_CONNECT,
	E_READ,
	E_WRITE,
	E_TIMEOUT,
	E_PARSE,
	E_BACKLOG,
	E_KINDS,
};

static const char *const err_names[E_KINDS] = {"connect", "read",  "write",
					       "timeout", "parse", "backlog_overflow"};

struct options {
	int threads, conns, pipeline;
	double rate; /* 0: closed loop */
	bool poisson, churn, json, self_test;
	double duration, warmup, timeout;
	double zipf; /* < 0: uniform */
	uint64_t seed;
	const char *requests_file;
	struct sockaddr_storage addr;
	socklen_t addrlen;
};

static struct options opt = {
	.threads = 1,
	.conns = 10,
	.pipeline = 1,
	.duration = 10,
	.warmup = 0,
	.timeout = 5,
	.zipf = -1,
};
static struct reqlist reqs;
static struct zipf zipf;
static atomic_bool stop_flag;

struct inflight {
	uint64_t intended_ns; /* latency is measured from here */
	uint64_t sent_ns;     /* when it was handed to the connection (timeouts, uncorrected) */
	uint32_t req;
	bool measured; /* intended inside the measurement window */
};

struct stats {
	uint64_t completed; /* measured responses */
	uint64_t bytes;	    /* bytes received in the window */
	uint64_t status[6]; /* by class: [1] 1xx .. [5] 5xx, [0] other */
	uint64_t errors[E_KINDS];
	uint64_t incomplete; /* measured requests unanswered at the end */
	uint64_t connects;   /* connections opened in the window */
	uint64_t sent;	     /* measured requests sent */
	struct hist *lat;    /* from intended time (== send time in closed loop) */
	struct hist *svc;    /* open loop: from the actual send ("uncorrected") */
};

struct worker;

/* --churn with direct descriptors: one entry of the ring's file table. A
 * slot is free, held by a connection (conn.fd is its index), or draining:
 * its connection was answered and waits for the server's FIN, then the slot
 * is closed and free again. */
struct slot {
	struct worker *w;
	uint64_t since_ns; /* draining since */
	unsigned idx;
	bool draining;
};

struct conn {
	struct worker *w;
	int fd; /* a descriptor, or the slot index with worker.direct */
	bool open, connecting, closing, sock_pending, eof;
	bool send_armed, recv_armed, queued, close_after;
	/* Bytes to send: out[out_off..out_len). out_stale: a buffer replaced
	 * while a send from it was in flight, freed when that send completes. */
	char *out, *out_stale;
	size_t out_len, out_cap, out_off, sending;
	/* Requests sent or queued and not yet answered, oldest first. */
	struct inflight q[MAX_PIPELINE];
	unsigned q_head, q_n;
	/* Response parsing. */
	char *rbuf;
	size_t rlen;
	int pstate;
	uint64_t body_left;
	struct http_chunked chunked;
	bool resp_keep_alive;
	int resp_status;
};

enum pstate { P_HEAD, P_BODY_LEN, P_BODY_CHUNKED, P_BODY_CLOSE };

struct worker {
	int id;
	pthread_t thread;
	struct io_uring ring;
	struct conn *conns;
	int n_conns;
	struct rng rng;
	struct schedule sched;
	double rate;
	/* Open loop: due requests (intended times) waiting for a connection, and
	 * the connections that have room, both FIFO rings. */
	uint64_t *backlog;
	size_t bl_head, bl_n, bl_cap;
	struct conn **ready;
	size_t rd_head, rd_n;
	uint64_t start_ns, measure_ns, end_ns, now;
	uint64_t timeout_ns, next_timeout_check;
	struct stats st;
	unsigned ring_entries;
	int setup_err;
	/* --churn: sockets are direct descriptors (slots of the ring's file
	 * table, twice as many as connections: the rest drain). */
	bool direct;
	struct slot *slots;
	unsigned n_slots, *free_slots, n_free;
	unsigned n_held; /* slots held by connections */
	char drain_buf[512]; /* what a server sends after its last answer: dropped */
};

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static struct io_uring_sqe *get_sqe(struct worker *w)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);

	if (!sqe) {
		io_uring_submit(&w->ring);
		sqe = io_uring_get_sqe(&w->ring);
	}
	return sqe; /* never NULL after a submit: the SQ was just emptied */
}

static void *tag(struct conn *c, enum op op)
{
	return (void *)((uintptr_t)c | op);
}

static bool open_loop(void)
{
	return opt.rate > 0;
}

/* ---- recording ---------------------------------------------------------- */

static void record(struct worker *w, const struct inflight *f, uint64_t now)
{
	if (!f->measured)
		return;
	hist_record(w->st.lat, (now - f->intended_ns) / 1000);
	if (w->st.svc)
		hist_record(w->st.svc, (now - f->sent_ns) / 1000);
}

/* ---- connection lifecycle ------------------------------------------------ */

static void conn_ready_push(struct conn *c);
static void conn_fill(struct conn *c);
static void conn_flush(struct conn *c);

/* The prep helpers clear sqe->flags: call after them. */
static void on_conn_fd(struct io_uring_sqe *sqe, const struct conn *c, unsigned flags)
{
	sqe->flags |= flags | (c->w->direct ? IOSQE_FIXED_FILE : 0);
}

/* A direct socket in a free slot, connected, the queued request sent and
 * the recv armed: one linked chain, no syscall. The first op that fails
 * cancels the rest (they report -ECANCELED). No TCP_NODELAY: a churned
 * connection carries one request, sent in one piece, so Nagle never holds
 * anything back. */
static void conn_start_direct(struct conn *c)
{
	struct worker *w = c->w;
	struct io_uring_sqe *sqe;

	if (!w->n_free)
		return; /* every slot drains (a server that does not close): fail */
	unsigned slot = w->free_slots[--w->n_free];
	w->n_held++;
	c->fd = (int)slot;
	c->connecting = c->sock_pending = c->open = true;
	c->eof = false;
	c->resp_keep_alive = true; /* until a response says it closes */
	if (w->now >= w->measure_ns)
		w->st.connects++;
	if (io_uring_sq_space_left(&w->ring) < 4)
		io_uring_submit(&w->ring); /* a chain must not straddle two submits */
	sqe = io_uring_get_sqe(&w->ring);
	io_uring_prep_socket_direct(sqe, opt.addr.ss_family, SOCK_STREAM, 0, slot, 0);
	sqe->flags |= IOSQE_IO_LINK;
	io_uring_sqe_set_data(sqe, tag(c, OP_SOCKET));
	sqe = io_uring_get_sqe(&w->ring);
	io_uring_prep_connect(sqe, c->fd, (struct sockaddr *)&opt.addr, opt.addrlen);
	on_conn_fd(sqe, c, IOSQE_IO_LINK);
	io_uring_sqe_set_data(sqe, tag(c, OP_CONNECT));
	sqe = io_uring_get_sqe(&w->ring);
	c->sending = c->out_len - c->out_off;
	io_uring_prep_send(sqe, c->fd, c->out + c->out_off, c->sending, MSG_NOSIGNAL);
	on_conn_fd(sqe, c, IOSQE_IO_LINK);
	io_uring_sqe_set_data(sqe, tag(c, OP_SEND));
	c->send_armed = true;
	sqe = io_uring_get_sqe(&w->ring);
	io_uring_prep_recv(sqe, c->fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen, 0);
	on_conn_fd(sqe, c, 0);
	io_uring_sqe_set_data(sqe, tag(c, OP_RECV));
	c->recv_armed = true;
}

static void conn_start_connect(struct conn *c)
{
	struct worker *w = c->w;

	if (w->direct) {
		conn_start_direct(c);
		return;
	}
	int fd = socket(opt.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;

	if (fd < 0)
		return; /* the caller fails what waits on it */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->fd = fd;
	c->connecting = true;
	if (w->now >= w->measure_ns)
		w->st.connects++;
	struct io_uring_sqe *sqe = get_sqe(w);
	io_uring_prep_connect(sqe, fd, (struct sockaddr *)&opt.addr, opt.addrlen);
	io_uring_sqe_set_data(sqe, tag(c, OP_CONNECT));
}

/* Drop every request the connection holds, counting each as an error of
 * `kind`; timeouts are also recorded with their latency so far, so that a
 * stall longer than --timeout still shows in the percentiles. */
static void conn_fail_all(struct conn *c, enum err_kind kind)
{
	struct worker *w = c->w;

	while (c->q_n) {
		struct inflight *f = &c->q[c->q_head];
		if (f->measured) {
			w->st.errors[kind]++;
			if (kind == E_TIMEOUT)
				record(w, f, w->now);
		}
		c->q_head = (c->q_head + 1) % MAX_PIPELINE;
		c->q_n--;
	}
	c->out_len = c->out_off = 0;
}

/* Close the slot's socket (nothing is pending on it) and free the slot at
 * once: the close is issued before any later op in the ring's order and
 * completes inline (a direct descriptor is only taken out of the table), so
 * a socket put into the slot later is never the one closed. */
static void slot_close(struct slot *s)
{
	struct worker *w = s->w;
	struct io_uring_sqe *sqe = get_sqe(w);

	s->draining = false;
	io_uring_prep_close_direct(sqe, s->idx);
	sqe->flags |= IOSQE_CQE_SKIP_SUCCESS; /* -EBADF when the socket op had failed */
	io_uring_sqe_set_data(sqe, NULL);
	w->free_slots[w->n_free++] = s->idx;
}

static void slot_drain(struct slot *s)
{
	struct io_uring_sqe *sqe = get_sqe(s->w);

	io_uring_prep_recv(sqe, (int)s->idx, s->w->drain_buf, sizeof(s->w->drain_buf), 0);
	sqe->flags |= IOSQE_FIXED_FILE;
	io_uring_sqe_set_data(sqe, (void *)((uintptr_t)s | OP_DRAIN));
}

/* The connection in this slot is done. When its response said the server
 * closes (Connection: close), the socket is closed once the server has
 * closed its side (at once if it already has); while it waits the slot
 * drains. A server that keeps the connection open, or a connection that
 * failed, is closed now. Draining never takes the last slots that
 * connections without one need for their next connect: then, and at the
 * end, it is closed now too. */
static void slot_retire(struct conn *c)
{
	struct worker *w = c->w;
	struct slot *s = &w->slots[c->fd];

	w->n_held--;
	if (c->eof || c->resp_keep_alive || w->n_free <= (unsigned)w->n_conns - w->n_held ||
	    stop_flag ||
	    w->now >= w->end_ns) {
		slot_close(s);
		return;
	}
	s->draining = true;
	s->since_ns = w->now;
	slot_drain(s);
}

static void on_drain(struct slot *s, int res)
{
	if (res > 0 && s->draining) { /* bytes after the last answer: dropped */
		slot_drain(s);
		return;
	}
	slot_close(s);
}

/* Called when no operation is pending any more on a closing connection. */
static void conn_finish_close(struct conn *c)
{
	if (c->w->direct)
		slot_retire(c);
	else
		close(c->fd);
	c->fd = -1;
	c->open = c->connecting = c->closing = c->close_after = false;
	c->rlen = 0;
	c->pstate = P_HEAD;
	c->out_len = c->out_off = 0;
	if (stop_flag || c->w->now >= c->w->end_ns)
		return;
	if (open_loop())
		conn_ready_push(c);
	else
		conn_fill(c);
}

/* Close the connection, failing what it holds as `kind` errors. Pending
 * operations are woken by shutdown() and the close completes when the last
 * of them has reported. */
static void conn_close(struct conn *c, enum err_kind kind)
{
	if (c->fd < 0 || c->closing)
		return;
	conn_fail_all(c, kind);
	c->closing = true;
	if (c->send_armed || c->recv_armed || c->connecting || c->sock_pending) {
		if (c->w->direct) {
			struct io_uring_sqe *sqe = get_sqe(c->w);
			io_uring_prep_shutdown(sqe, c->fd, SHUT_RDWR);
			on_conn_fd(sqe, c, IOSQE_CQE_SKIP_SUCCESS);
			io_uring_sqe_set_data(sqe, NULL);
		} else {
			shutdown(c->fd, SHUT_RDWR);
		}
		return;
	}
	conn_finish_close(c);
}

static void maybe_finish_close(struct conn *c)
{
	if (c->closing && !c->send_armed && !c->recv_armed && !c->connecting &&
	    !c->sock_pending)
		conn_finish_close(c);
}

/* Keep-alive connections always have a recv armed, idle ones too: a server
 * that closes an idle connection is then noticed at once and the connection
 * reopened, instead of the next request failing on it. With --churn an idle
 * connection is about to be closed by us, so nothing is armed. */
static void conn_arm_recv(struct conn *c)
{
	if (!c->open || c->closing || c->recv_armed || c->close_after)
		return;
	if (opt.churn && !c->q_n)
		return;
	struct io_uring_sqe *sqe = get_sqe(c->w);
	io_uring_prep_recv(sqe, c->fd, c->rbuf + c->rlen, RBUF_SIZE - c->rlen, 0);
	on_conn_fd(sqe, c, 0);
	io_uring_sqe_set_data(sqe, tag(c, OP_RECV));
	c->recv_armed = true;
}

static void conn_flush(struct conn *c)
{
	if (!c->open || c->closing || c->send_armed || c->out_off == c->out_len)
		return;
	struct io_uring_sqe *sqe = get_sqe(c->w);
	c->sending = c->out_len - c->out_off;
	io_uring_prep_send(sqe, c->fd, c->out + c->out_off, c->sending, MSG_NOSIGNAL);
	on_conn_fd(sqe, c, 0);
	io_uring_sqe_set_data(sqe, tag(c, OP_SEND));
	c->send_armed = true;
}

static int out_reserve(struct conn *c, size_t n)
{
	if (c->out_off == c->out_len)
		c->out_off = c->out_len = 0;
	if (c->out_len + n <= c->out_cap)
		return 0;
	size_t cap = c->out_cap ? c->out_cap : 4096;
	char *p;

	while (cap < c->out_len + n)
		cap *= 2;
	if (c->send_armed && !c->out_stale) {
		/* The send in flight may still read the old buffer (when it
		 * went async): keep it until that send completes. */
		p = malloc(cap);
		if (!p)
			return -ENOMEM;
		memcpy(p, c->out, c->out_len);
		c->out_stale = c->out;
	} else {
		p = realloc(c->out, cap);
		if (!p)
			return -ENOMEM;
	}
	c->out = p;
	c->out_cap = cap;
	return 0;
}

/* Hand one request, due at `intended`, to the connection; connects first if
 * it has no socket. */
static void conn_assign(struct conn *c, uint64_t intended)
{
	struct worker *w = c->w;
	uint32_t i = reqs.n == 1 ? 0
		     : zipf.n	 ? (uint32_t)zipf_sample(&zipf, &w->rng)
				 : (uint32_t)rng_below(&w->rng, reqs.n);
	struct req_entry *e = &reqs.v[i];

	if (out_reserve(c, e->len) < 0) {
		fprintf(stderr, "reflex-bench: out of memory\n");
		exit(1);
	}
	memcpy(c->out + c->out_len, e->wire, e->len);
	c->out_len += e->len;
	struct inflight *f = &c->q[(c->q_head + c->q_n) % MAX_PIPELINE];
	f->intended_ns = intended;
	f->sent_ns = w->now;
	f->req = i;
	f->measured = intended >= w->measure_ns && intended < w->end_ns;
	c->q_n++;
	if (f->measured)
		w->st.sent++;
	if (c->fd < 0) {
		conn_start_connect(c);
		if (c->fd < 0) { /* no socket (fd limit?): nothing can carry it */
			conn_fail_all(c, E_CONNECT);
			return;
		}
	}
	conn_flush(c);
	conn_arm_recv(c);
}

static int depth(void)
{
	return opt.churn ? 1 : opt.pipeline;
}

/* Closed loop: keep `depth` requests in flight, sent now. */
static void conn_fill(struct conn *c)
{
	if (c->closing || c->close_after)
		return;
	while (c->q_n < (unsigned)depth() && c->w->now < c->w->end_ns) {
		conn_assign(c, c->w->now);
		if (c->fd < 0)
			break;
	}
}

/* Open loop: the connection has room for one more request. */
static void conn_ready_push(struct conn *c)
{
	struct worker *w = c->w;

	if (c->queued || c->closing || c->close_after || c->q_n >= (unsigned)depth())
		return;
	w->ready[(w->rd_head + w->rd_n) % w->n_conns] = c;
	w->rd_n++;
	c->queued = true;
}

static void dispatch(struct worker *w)
{
	while (w->bl_n && w->rd_n) {
		struct conn *c = w->ready[w->rd_head];
		w->rd_head = (w->rd_head + 1) % w->n_conns;
		w->rd_n--;
		c->queued = false;
		if (c->closing || c->close_after || c->q_n >= (unsigned)depth())
			continue;
		uint64_t t = w->backlog[w->bl_head];
		w->bl_head = (w->bl_head + 1) % w->bl_cap;
		w->bl_n--;
		conn_assign(c, t);
		conn_ready_push(c);
	}
}

static void backlog_push(struct worker *w, uint64_t t)
{
	if (w->bl_n == w->bl_cap) {
		size_t cap = w->bl_cap * 2;
		uint64_t *b = cap <= MAX_BACKLOG ? malloc(cap * sizeof(*b)) : NULL;
		if (!b) {
			if (t >= w->measure_ns && t < w->end_ns)
				w->st.errors[E_BACKLOG]++;
			return;
		}
		for (size_t i = 0; i < w->bl_n; i++)
			b[i] = w->backlog[(w->bl_head + i) % w->bl_cap];
		free(w->backlog);
		w->backlog = b;
		w->bl_head = 0;
		w->bl_cap = cap;
	}
	w->backlog[(w->bl_head + w->bl_n) % w->bl_cap] = t;
	w->bl_n++;
}

/* ---- responses ------------------------------------------------------------- */

static void response_done(struct conn *c)
{
	struct worker *w = c->w;
	struct inflight *f = &c->q[c->q_head];

	if (f->measured) {
		record(w, f, w->now);
		w->st.completed++;
		int cls = c->resp_status / 100;
		w->st.status[cls >= 1 && cls <= 5 ? cls : 0]++;
	}
	c->q_head = (c->q_head + 1) % MAX_PIPELINE;
	c->q_n--;
	c->pstate = P_HEAD;
	if (!c->resp_keep_alive || opt.churn)
		c->close_after = true;
}

/* Consume rbuf[0..rlen). Returns false when the connection was closed. */
static bool conn_parse(struct conn *c)
{
	struct http_limits lim;
	struct http_error err;
	struct http_header hdrs[64];
	size_t off = 0;

	http_limits_default(&lim);
	lim.max_headers = 64;
	while (off < c->rlen) {
		if (c->pstate == P_HEAD) {
			if (!c->q_n) /* bytes nobody asked for */
				goto bad;
			struct http_response res = {.headers = hdrs, .max_headers = 64};
			int n = http_parse_response(c->rbuf + off, c->rlen - off, &res,
						    reqs.v[c->q[c->q_head].req].is_head, &lim,
						    &err);
			if (n == -2)
				break;
			if (n < 0)
				goto bad;
			off += n;
			if (res.status < 200 && res.status != 101)
				continue; /* 100 Continue and friends: the answer follows */
			c->resp_status = res.status;
			c->resp_keep_alive = res.keep_alive;
			switch (res.body) {
			case HTTP_BODY_NONE:
				response_done(c);
				break;
			case HTTP_BODY_LENGTH:
				c->body_left = res.content_length;
				c->pstate = P_BODY_LEN;
				if (!c->body_left)
					response_done(c);
				break;
			case HTTP_BODY_CHUNKED:
				http_chunked_init(&c->chunked);
				c->pstate = P_BODY_CHUNKED;
				break;
			case HTTP_BODY_UNTIL_CLOSE:
				c->pstate = P_BODY_CLOSE;
				break;
			}
		} else if (c->pstate == P_BODY_LEN) {
			uint64_t take = c->rlen - off;
			if (take > c->body_left)
				take = c->body_left;
			off += take;
			c->body_left -= take;
			if (!c->body_left)
				response_done(c);
		} else if (c->pstate == P_BODY_CHUNKED) {
			struct http_str payload;
			ssize_t n = http_chunked_feed(&c->chunked, c->rbuf + off, c->rlen - off,
						      &payload, &err);
			if (n < 0)
				goto bad;
			off += n;
			if (c->chunked.done)
				response_done(c);
			else if (n == 0)
				break;
		} else {
			off = c->rlen; /* until close: the EOF ends it */
		}
		if (c->close_after)
			break;
	}
	if (c->close_after) {
		/* The server closes after this response (or --churn): whatever
		 * is still queued on it is lost. */
		conn_close(c, E_READ);
		return false;
	}
	if (c->pstate == P_HEAD && off < c->rlen) {
		if (off == 0 && c->rlen == RBUF_SIZE)
			goto bad; /* a head that does not fit: the parser says -2 forever */
		memmove(c->rbuf, c->rbuf + off, c->rlen - off);
		c->rlen -= off;
	} else {
		c->rlen = 0;
	}
	return true;
bad:
	conn_close(c, E_PARSE);
	return false;
}

/* ---- completions ------------------------------------------------------------ */

static void on_socket(struct conn *c, int res)
{
	c->sock_pending = false;
	if (c->closing) {
		maybe_finish_close(c);
		return;
	}
	if (res < 0)
		conn_close(c, E_CONNECT); /* the rest of the chain reports -ECANCELED */
}

static void on_connect(struct conn *c, int res)
{
	c->connecting = false;
	if (c->closing) {
		maybe_finish_close(c);
		return;
	}
	if (res < 0) {
		/* Each request waiting on this connection failed to connect. */
		conn_close(c, E_CONNECT);
		return;
	}
	c->open = true;
	conn_flush(c);
	conn_arm_recv(c);
}

static void on_send(struct conn *c, int res)
{
	c->send_armed = false;
	free(c->out_stale);
	c->out_stale = NULL;
	if (c->closing) {
		maybe_finish_close(c);
		return;
	}
	if (res < 0) {
		conn_close(c, E_WRITE);
		return;
	}
	c->out_off += res;
	conn_flush(c);
}

static void on_recv(struct conn *c, int res)
{
	struct worker *w = c->w;

	c->recv_armed = false;
	if (c->closing) {
		maybe_finish_close(c);
		return;
	}
	if (res <= 0) {
		c->eof = true;
		if (res == 0 && c->pstate == P_BODY_CLOSE && c->q_n) {
			response_done(c); /* a close-delimited body ends here */
			c->close_after = false;
		}
		conn_close(c, E_READ);
		return;
	}
	if (w->now >= w->measure_ns)
		w->st.bytes += res;
	c->rlen += res;
	if (!conn_parse(c))
		return;
	if (open_loop())
		conn_ready_push(c);
	else
		conn_fill(c);
	conn_arm_recv(c);
}

static void check_timeouts(struct worker *w)
{
	for (int i = 0; i < w->n_conns; i++) {
		struct conn *c = &w->conns[i];
		if (c->q_n && !c->closing && w->now - c->q[c->q_head].sent_ns > w->timeout_ns)
			conn_close(c, E_TIMEOUT);
	}
	for (unsigned i = 0; i < w->n_slots; i++) {
		struct slot *s = &w->slots[i];
		if (s->draining && w->now - s->since_ns > DRAIN_MAX_NS) {
			/* the server keeps it open: end the wait (the recv reports 0) */
			struct io_uring_sqe *sqe = get_sqe(w);
			s->draining = false;
			io_uring_prep_shutdown(sqe, (int)s->idx, SHUT_RDWR);
			sqe->flags |= IOSQE_FIXED_FILE | IOSQE_CQE_SKIP_SUCCESS;
			io_uring_sqe_set_data(sqe, NULL);
		}
	}
}

/* ---- the worker loop ---------------------------------------------------------- */

/* --churn: direct descriptors when the kernel has them (IORING_OP_SOCKET and
 * a sparse file table: 5.19), otherwise plain sockets. */
static void direct_setup(struct worker *w)
{
	struct io_uring_probe *probe = io_uring_get_probe_ring(&w->ring);
	bool ok = probe && io_uring_opcode_supported(probe, IORING_OP_SOCKET);
	unsigned n = 2 * (unsigned)w->n_conns + 8;

	if (probe)
		io_uring_free_probe(probe);
	if (!ok || getenv("REFLEX_BENCH_NO_DIRECT"))
		return;
	w->slots = calloc(n, sizeof(*w->slots));
	w->free_slots = calloc(n, sizeof(*w->free_slots));
	if (!w->slots || !w->free_slots || io_uring_register_files_sparse(&w->ring, n) < 0) {
		free(w->slots);
		free(w->free_slots);
		w->slots = NULL;
		w->free_slots = NULL;
		return;
	}
	for (unsigned i = 0; i < n; i++) {
		w->slots[i] = (struct slot){.w = w, .idx = i};
		w->free_slots[i] = n - 1 - i; /* slot 0 first */
	}
	w->n_slots = w->n_free = n;
	w->direct = true;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	bool started = false, measuring = false;
	struct io_uring_params p = {0};

	/* The ring is created by the thread that uses it: SINGLE_ISSUER ties it
	 * to its creator, and DEFER_TASKRUN runs completions only when this
	 * thread asks for events, so no interrupt-style task work on its CPU.
	 * Kernels before 6.1 lack them: fall back to a plain ring. */
	p.flags = IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	int ret = io_uring_queue_init_params(w->ring_entries, &w->ring, &p);
	if (ret == -EINVAL) {
		memset(&p, 0, sizeof(p));
		ret = io_uring_queue_init_params(w->ring_entries, &w->ring, &p);
	}
	if (ret < 0) {
		fprintf(stderr, "reflex-bench: io_uring setup: %s\n", strerror(-ret));
		w->setup_err = ret;
		return NULL;
	}
	if (opt.churn)
		direct_setup(w);
	w->now = mono_ns();
	/* Keep-alive: connect everything before the clock starts, as wrk does. */
	if (!opt.churn)
		for (int i = 0; i < w->n_conns; i++)
			conn_start_connect(&w->conns[i]);
	for (;;) {
		w->now = mono_ns();
		if (stop_flag || w->now >= w->end_ns)
			break;
		if (!measuring && w->now >= w->measure_ns) {
			measuring = true;
			w->st.connects = 0;
		}
		if (!started && w->now >= w->start_ns) {
			started = true;
			for (int i = 0; i < w->n_conns; i++) {
				if (open_loop())
					conn_ready_push(&w->conns[i]);
				else
					conn_fill(&w->conns[i]);
			}
		}
		uint64_t wake = w->end_ns;
		if (started && open_loop()) {
			while (schedule_peek(&w->sched) <= w->now)
				backlog_push(w, schedule_next(&w->sched));
			dispatch(w);
			if (schedule_peek(&w->sched) < wake)
				wake = schedule_peek(&w->sched);
		}
		if (!started && w->start_ns < wake)
			wake = w->start_ns;
		if (w->now >= w->next_timeout_check) {
			check_timeouts(w);
			w->next_timeout_check = w->now + 10000000;
		}
		if (w->next_timeout_check < wake)
			wake = w->next_timeout_check;

		struct __kernel_timespec ts = {0, 0};
		struct io_uring_cqe *cqe;
		uint64_t left = wake > w->now ? wake - w->now : 0;
		ts.tv_sec = left / 1000000000ULL;
		ts.tv_nsec = left % 1000000000ULL;
		ret = left ? io_uring_submit_and_wait_timeout(&w->ring, &cqe, 1, &ts, NULL)
			   : io_uring_submit_and_get_events(&w->ring);
		if (ret < 0 && ret != -ETIME && ret != -EINTR && ret != -EAGAIN && ret != -EBUSY) {
			fprintf(stderr, "reflex-bench: io_uring wait: %s\n", strerror(-ret));
			w->setup_err = ret;
			break;
		}
		unsigned head, n = 0;
		w->now = mono_ns();
		if (w->now >= w->end_ns)
			break; /* what arrived after the end is not counted */
		io_uring_for_each_cqe(&w->ring, head, cqe)
		{
			void *ud = (void *)(uintptr_t)(cqe->user_data & ~(uint64_t)7);
			struct conn *c = ud;
			int res = cqe->res;
			n++;
			switch (cqe->user_data & 7) {
			case OP_SOCKET:
				on_socket(c, res);
				break;
			case OP_DRAIN:
				on_drain(ud, res);
				break;
			case OP_CONNECT:
				on_connect(c, res);
				break;
			case OP_SEND:
				on_send(c, res);
				break;
			case OP_RECV:
				on_recv(c, res);
				break;
			}
		}
		io_uring_cq_advance(&w->ring, n);
	}

	/* The end: requests due in the window but unanswered. In open loop they
	 * are charged their latency so far (a stall at the end must show). */
	w->now = w->end_ns < mono_ns() ? w->end_ns : mono_ns();
	for (int i = 0; i < w->n_conns; i++) {
		struct conn *c = &w->conns[i];
		for (unsigned k = 0; k < c->q_n; k++) {
			struct inflight *f = &c->q[(c->q_head + k) % MAX_PIPELINE];
			if (!f->measured)
				continue;
			w->st.incomplete++;
			if (open_loop())
				hist_record(w->st.lat, (w->now - f->intended_ns) / 1000);
		}
	}
	for (size_t k = 0; k < w->bl_n; k++) {
		uint64_t t = w->backlog[(w->bl_head + k) % w->bl_cap];
		if (t >= w->measure_ns && t < w->end_ns && t <= w->now) {
			w->st.incomplete++;
			hist_record(w->st.lat, (w->now - t) / 1000);
		}
	}
	return NULL;
}

static int worker_init(struct worker *w, int id, int n_conns, uint64_t start_ns)
{
	unsigned entries = 64;

	while (entries < 2u * n_conns + 64 && entries < 32768)
		entries *= 2;
	w->id = id;
	w->n_conns = n_conns;
	w->start_ns = start_ns;
	w->measure_ns = start_ns + (uint64_t)(opt.warmup * 1e9);
	w->end_ns = w->measure_ns + (uint64_t)(opt.duration * 1e9);
	w->timeout_ns = (uint64_t)(opt.timeout * 1e9);
	w->next_timeout_check = start_ns;
	rng_seed(&w->rng, opt.seed * 1000003 + id);
	w->ring_entries = entries;
	w->conns = calloc(n_conns, sizeof(*w->conns));
	w->ready = calloc(n_conns, sizeof(*w->ready));
	w->st.lat = hist_new();
	if (open_loop()) {
		w->st.svc = hist_new();
		w->rate = opt.rate / opt.threads;
		schedule_init(&w->sched, w->rate, opt.poisson, start_ns, opt.seed * 7919 + id);
		w->bl_cap = 1024;
		w->backlog = malloc(w->bl_cap * sizeof(*w->backlog));
	}
	if (!w->conns || !w->ready || !w->st.lat || (open_loop() && (!w->st.svc || !w->backlog)))
		return -ENOMEM;
	for (int i = 0; i < n_conns; i++) {
		struct conn *c = &w->conns[i];
		c->w = w;
		c->fd = -1;
		c->rbuf = malloc(RBUF_SIZE);
		if (!c->rbuf)
			return -ENOMEM;
	}
	return 0;
}

static void worker_free(struct worker *w)
{
	for (int i = 0; w->conns && i < w->n_conns; i++) {
		struct conn *c = &w->conns[i];
		if (c->fd >= 0 && !w->direct) /* slots go with the ring */
			close(c->fd);
		free(c->rbuf);
		free(c->out);
		free(c->out_stale);
	}
	if (w->ring.ring_fd > 0)
		io_uring_queue_exit(&w->ring);
	free(w->conns);
	free(w->slots);
	free(w->free_slots);
	free(w->ready);
	free(w->backlog);
	hist_free(w->st.lat);
	hist_free(w->st.svc);
}

/* ---- output --------------------------------------------------------------------- */

static const double pcts[] = {50, 90, 99, 99.9, 99.99};
static const char *const pct_keys[] = {"p50", "p90", "p99", "p999", "p9999"};

static void fmt_us(char *buf, size_t n, uint64_t us)
{
	if (us < 1000)
		snprintf(buf, n, "%llu us", (unsigned long long)us);
	else if (us < 1000000)
		snprintf(buf, n, "%.2f ms", us / 1e3);
	else
		snprintf(buf, n, "%.2f s", us / 1e6);
}

static bool json_bucket(uint64_t high, uint64_t count, void *arg)
{
	bool *first = arg;

	printf("%s[%llu,%llu]", *first ? "" : ",", (unsigned long long)high,
	       (unsigned long long)count);
	*first = false;
	return true;
}

static void print_json_latency(const char *name, struct hist *h)
{
	printf("\"%s\":{", name);
	for (size_t i = 0; i < 5; i++)
		printf("\"%s\":%llu,", pct_keys[i],
		       (unsigned long long)hist_percentile(h, pcts[i]));
	printf("\"max\":%llu,\"min\":%llu,\"mean\":%.1f}", (unsigned long long)hist_max(h),
	       (unsigned long long)hist_min(h), hist_mean(h));
}

static void report(struct stats *t, double secs, const char *url)
{
	double rps = secs > 0 ? t->completed / secs : 0;
	uint64_t errs = 0;

	for (int k = 0; k < E_KINDS; k++)
		errs += t->errors[k];
	if (opt.json) {
		printf("{\"url\":\"%s\",\"mode\":\"%s\",\"schedule\":\"%s\",\"target_rate\":%.1f,",
		       url, open_loop() ? "open" : "closed",
		       open_loop() ? (opt.poisson ? "poisson" : "constant") : "none", opt.rate);
		printf("\"threads\":%d,\"connections\":%d,\"pipeline\":%d,\"churn\":%s,"
		       "\"self_test\":%s,",
		       opt.threads, opt.conns, depth(), opt.churn ? "true" : "false",
		       opt.self_test ? "true" : "false");
		printf("\"duration_s\":%.3f,\"warmup_s\":%.3f,\"requests\":%llu,\"sent\":%llu,",
		       secs, opt.warmup, (unsigned long long)t->completed,
		       (unsigned long long)t->sent);
		printf("\"requests_per_second\":%.1f,\"bytes_read\":%llu,\"connections_opened\":%"
		       "llu,"
		       "\"incomplete\":%llu,",
		       rps, (unsigned long long)t->bytes, (unsigned long long)t->connects,
		       (unsigned long long)t->incomplete);
		print_json_latency("latency_us", t->lat);
		if (t->svc) {
			printf(",");
			print_json_latency("latency_uncorrected_us", t->svc);
		}
		printf(",\"errors\":{");
		for (int k = 0; k < E_KINDS; k++)
			printf("\"%s\":%llu,", err_names[k], (unsigned long long)t->errors[k]);
		printf("\"status_4xx\":%llu,\"status_5xx\":%llu,\"total\":%llu},",
		       (unsigned long long)t->status[4], (unsigned long long)t->status[5],
		       (unsigned long long)(errs + t->status[4] + t->status[5]));
		printf("\"status\":{\"1xx\":%llu,\"2xx\":%llu,\"3xx\":%llu,\"4xx\":%llu,\"5xx\":%"
		       "llu,"
		       "\"other\":%llu},",
		       (unsigned long long)t->status[1], (unsigned long long)t->status[2],
		       (unsigned long long)t->status[3], (unsigned long long)t->status[4],
		       (unsigned long long)t->status[5], (unsigned long long)t->status[0]);
		printf("\"histogram\":{\"unit\":\"us\",\"significant_digits\":3,"
		       "\"buckets\":[");
		bool first = true;
		hist_foreach(t->lat, json_bucket, &first);
		printf("]}}\n");
		return;
	}
	char b[32];
	printf("reflex-bench %s\n", url);
	if (opt.self_test)
		printf("  self-test: against a trivial in-process server (1 thread, epoll, 1 KiB "
		       "answers):\n"
		       "  the generator's own cost plus loopback TCP, the floor under any figure "
		       "it reports\n");
	printf("  %s loop%s, %d thread(s), %d connection(s), %s, pipeline %d, %.1f s after %.1f s "
	       "warm-up\n",
	       open_loop() ? "open" : "closed", "", opt.threads, opt.conns,
	       opt.churn ? "new connection per request" : "keep-alive", depth(), secs, opt.warmup);
	if (open_loop())
		printf("  target rate %.0f req/s (%s schedule); latency from the intended send "
		       "time\n",
		       opt.rate, opt.poisson ? "Poisson" : "constant");
	printf("  requests    %llu (%.1f req/s), %llu bytes read, %llu unanswered at the end\n",
	       (unsigned long long)t->completed, rps, (unsigned long long)t->bytes,
	       (unsigned long long)t->incomplete);
	printf("  latency    ");
	for (size_t i = 0; i < 5; i++) {
		fmt_us(b, sizeof(b), hist_percentile(t->lat, pcts[i]));
		printf(" p%g %s,", pcts[i], b);
	}
	fmt_us(b, sizeof(b), hist_max(t->lat));
	printf(" max %s\n", b);
	if (t->svc) {
		printf("  uncorrected");
		for (size_t i = 0; i < 5; i++) {
			fmt_us(b, sizeof(b), hist_percentile(t->svc, pcts[i]));
			printf(" p%g %s,", pcts[i], b);
		}
		fmt_us(b, sizeof(b), hist_max(t->svc));
		printf(" max %s  (from the actual send: what a closed-loop tool would report)\n",
		       b);
	}
	printf("  status      1xx %llu, 2xx %llu, 3xx %llu, 4xx %llu, 5xx %llu, other %llu\n",
	       (unsigned long long)t->status[1], (unsigned long long)t->status[2],
	       (unsigned long long)t->status[3], (unsigned long long)t->status[4],
	       (unsigned long long)t->status[5], (unsigned long long)t->status[0]);
	printf("  errors     ");
	for (int k = 0; k < E_KINDS; k++)
		printf(" %s %llu%s", err_names[k], (unsigned long long)t->errors[k],
		       k + 1 < E_KINDS ? "," : "\n");
	if (opt.churn)
		printf("  connections %llu opened\n", (unsigned long long)t->connects);
}

/* ---- command line -------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: reflex-bench [options] http://HOST:PORT/PATH\n"
		"       reflex-bench [options] --self-test\n"
		"  -t, --threads N       threads, one io_uring each (1)\n"
		"  -c, --connections N   connections, spread over the threads (10)\n"
		"  -d, --duration S      measured seconds (10)\n"
		"  -w, --warmup S        seconds run before measuring (0)\n"
		"  -R, --rate R          open loop at R requests/s in total (default: closed "
		"loop)\n"
		"      --poisson         open loop with Poisson arrivals (default: constant)\n"
		"      --pipeline N      requests in flight per connection (1, max %d)\n"
		"      --churn           a new connection per request (Connection: close)\n"
		"  -H, --header 'N: V'   add a header to every request (repeatable)\n"
		"      --requests FILE   request list (see docs/bench.md); the URL's path is "
		"unused\n"
		"      --zipf S          sample the list by Zipf(S) over its order (default "
		"uniform)\n"
		"      --timeout S       a request unanswered for S seconds is an error (5)\n"
		"      --seed N          random seed (schedules, sampling) (1)\n"
		"      --json            print one JSON object instead of text\n"
		"      --self-test       no URL: run against a trivial in-process server, to see\n"
		"                        the generator's own floor on this machine\n"
		"No TLS (http:// only).\n",
		MAX_PIPELINE);
}

static double parse_num(const char *s, const char *what, double min)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end || !isfinite(v) || v < min) {
		fprintf(stderr, "reflex-bench: bad %s '%s'\n", what, s);
		exit(2);
	}
	return v;
}

/* http://host[:port][/path]: resolves the address, sets the Host header
 * value and the path. */
static void parse_url(const char *url, char **host_hdr, char **path)
{
	const char *p;
	char host[256], port[16] = "80";
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai;

	if (!strncmp(url, "https://", 8)) {
		fprintf(stderr, "reflex-bench: TLS is not supported (http:// only)\n");
		exit(2);
	}
	if (strncmp(url, "http://", 7)) {
		fprintf(stderr, "reflex-bench: URL must start with http://\n");
		exit(2);
	}
	p = url + 7;
	size_t alen = strcspn(p, "/?");
	if (!alen || alen >= sizeof(host)) {
		fprintf(stderr, "reflex-bench: bad URL '%s'\n", url);
		exit(2);
	}
	*host_hdr = strndup(p, alen);
	*path = strdup(p[alen] == '/' ? p + alen : p[alen] ? "/" : "/");
	if (p[alen] == '?') {
		free(*path);
		if (asprintf(path, "/%s", p + alen) < 0)
			exit(1);
	}
	memcpy(host, p, alen);
	host[alen] = 0;
	char *h = host, *colon;
	if (host[0] == '[') {
		char *rb = strchr(host, ']');
		if (!rb) {
			fprintf(stderr, "reflex-bench: bad URL '%s'\n", url);
			exit(2);
		}
		*rb = 0;
		h = host + 1;
		colon = rb[1] == ':' ? rb + 1 : NULL;
	} else {
		colon = strrchr(host, ':');
	}
	if (colon) {
		*colon = 0;
		snprintf(port, sizeof(port), "%s", colon + 1);
	}
	int ret = getaddrinfo(h, port, &hints, &ai);
	if (ret) {
		fprintf(stderr, "reflex-bench: %s: %s\n", h, gai_strerror(ret));
		exit(2);
	}
	memcpy(&opt.addr, ai->ai_addr, ai->ai_addrlen);
	opt.addrlen = ai->ai_addrlen;
	freeaddrinfo(ai);
}

static void on_signal(int sig)
{
	stop_flag = true;
}

static char *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t cap = 0, n = 0, r;

	if (!f)
		return NULL;
	do {
		if (n + 65536 > cap) {
			cap = cap ? cap * 2 : 65536;
			char *b = realloc(buf, cap);
			if (!b) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = b;
		}
		r = fread(buf + n, 1, cap - n, f);
		n += r;
	} while (r > 0);
	fclose(f);
	*len = n;
	return buf;
}

int main(int argc, char **argv)
{
	static const struct option lopts[] = {
		{"threads", required_argument, NULL, 't'},
		{"connections", required_argument, NULL, 'c'},
		{"duration", required_argument, NULL, 'd'},
		{"warmup", required_argument, NULL, 'w'},
		{"rate", required_argument, NULL, 'R'},
		{"header", required_argument, NULL, 'H'},
		{"poisson", no_argument, NULL, 'P'},
		{"pipeline", required_argument, NULL, 'p'},
		{"churn", no_argument, NULL, 'C'},
		{"requests", required_argument, NULL, 'r'},
		{"zipf", required_argument, NULL, 'z'},
		{"timeout", required_argument, NULL, 'T'},
		{"seed", required_argument, NULL, 's'},
		{"json", no_argument, NULL, 'j'},
		{"self-test", no_argument, NULL, 'S'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	const char **extra = NULL;
	size_t n_extra = 0;
	int ch;

	opt.seed = 1;
	while ((ch = getopt_long(argc, argv, "t:c:d:w:R:H:h", lopts, NULL)) != -1) {
		switch (ch) {
		case 't':
			opt.threads = (int)parse_num(optarg, "thread count", 1);
			break;
		case 'c':
			opt.conns = (int)parse_num(optarg, "connection count", 1);
			break;
		case 'd':
			opt.duration = parse_num(optarg, "duration", 0.001);
			break;
		case 'w':
			opt.warmup = parse_num(optarg, "warm-up", 0);
			break;
		case 'R':
			opt.rate = parse_num(optarg, "rate", 0.001);
			break;
		case 'H':
			if (!strchr(optarg, ':') || strpbrk(optarg, "\r\n")) {
				fprintf(stderr, "reflex-bench: bad header '%s'\n", optarg);
				return 2;
			}
			extra = realloc(extra, (n_extra + 1) * sizeof(*extra));
			extra[n_extra++] = optarg;
			break;
		case 'P':
			opt.poisson = true;
			break;
		case 'p':
			opt.pipeline = (int)parse_num(optarg, "pipeline depth", 1);
			if (opt.pipeline > MAX_PIPELINE) {
				fprintf(stderr, "reflex-bench: pipeline depth over %d\n",
					MAX_PIPELINE);
				return 2;
			}
			break;
		case 'C':
			opt.churn = true;
			break;
		case 'r':
			opt.requests_file = optarg;
			break;
		case 'z':
			opt.zipf = parse_num(optarg, "Zipf exponent", 0);
			break;
		case 'T':
			opt.timeout = parse_num(optarg, "timeout", 0.001);
			break;
		case 's':
			opt.seed = (uint64_t)parse_num(optarg, "seed", 0);
			break;
		case 'j':
			opt.json = true;
			break;
		case 'S':
			opt.self_test = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc - !opt.self_test) {
		usage(stderr);
		return 2;
	}
	if (opt.poisson && !opt.rate) {
		fprintf(stderr, "reflex-bench: --poisson needs -R RATE\n");
		return 2;
	}
	if (opt.threads > opt.conns) {
		fprintf(stderr, "reflex-bench: fewer connections than threads\n");
		return 2;
	}
	const char *url = argv[optind];
	char *host_hdr, *path, self_url[64];
	if (opt.self_test) {
		int port, ret = selftest_start(&port);
		if (ret < 0) {
			fprintf(stderr, "reflex-bench: self-test server: %s\n", strerror(-ret));
			return 1;
		}
		if (opt.requests_file) {
			fprintf(stderr,
				"reflex-bench: --self-test sends plain GETs (no --requests)\n");
			return 2;
		}
		snprintf(self_url, sizeof(self_url), "http://127.0.0.1:%d/", port);
		url = self_url;
	}
	parse_url(url, &host_hdr, &path);
	reqs.host = host_hdr;
	reqs.extra = extra;
	reqs.n_extra = n_extra;
	reqs.close = opt.churn;
	if (opt.requests_file) {
		size_t len;
		unsigned line = 0;
		const char *why = NULL;
		char *text = read_file(opt.requests_file, &len);
		if (!text) {
			fprintf(stderr, "reflex-bench: %s: %s\n", opt.requests_file,
				strerror(errno));
			return 2;
		}
		if (reqlist_parse(&reqs, text, len, &line, &why) < 0) {
			fprintf(stderr, "reflex-bench: %s:%u: %s\n", opt.requests_file, line, why);
			return 2;
		}
		free(text);
	} else if (reqlist_add(&reqs, "GET", path, NULL, NULL, 0) < 0) {
		return 1;
	}
	if (opt.zipf >= 0 && reqs.n > 1 && zipf_init(&zipf, reqs.n, opt.zipf) < 0)
		return 1;

	/* One descriptor per connection: lift the soft limit to the hard one. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    (rlim_t)opt.conns + 64 > rl.rlim_cur)
		fprintf(stderr, "reflex-bench: warning: %d connections but only %llu descriptors\n",
			opt.conns, (unsigned long long)rl.rlim_cur);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);

	struct worker *ws = calloc(opt.threads, sizeof(*ws));
	/* A common start a little ahead, so that every thread has connected
	 * (keep-alive) before the first request is due. */
	uint64_t start = mono_ns() + 100000000ULL;
	for (int i = 0; i < opt.threads; i++) {
		int n = opt.conns / opt.threads + (i < opt.conns % opt.threads);
		int ret = worker_init(&ws[i], i, n, start);
		if (ret < 0) {
			fprintf(stderr, "reflex-bench: worker setup: %s\n", strerror(-ret));
			return 1;
		}
	}
	for (int i = 0; i < opt.threads; i++)
		if (pthread_create(&ws[i].thread, NULL, worker_main, &ws[i])) {
			fprintf(stderr, "reflex-bench: pthread_create failed\n");
			return 1;
		}
	struct stats total = {.lat = hist_new()};
	if (open_loop())
		total.svc = hist_new();
	int failed = 0;
	for (int i = 0; i < opt.threads; i++) {
		struct worker *w = &ws[i];
		pthread_join(w->thread, NULL);
		failed |= w->setup_err;
		total.completed += w->st.completed;
		total.bytes += w->st.bytes;
		total.incomplete += w->st.incomplete;
		total.connects += w->st.connects;
		total.sent += w->st.sent;
		for (int k = 0; k < 6; k++)
			total.status[k] += w->st.status[k];
		for (int k = 0; k < E_KINDS; k++)
			total.errors[k] += w->st.errors[k];
		hist_merge(total.lat, w->st.lat);
		if (total.svc)
			hist_merge(total.svc, w->st.svc);
	}
	/* The window actually measured (shorter when interrupted). */
	uint64_t end = mono_ns();
	double secs = opt.duration;
	if (end < ws[0].end_ns)
		secs = end > ws[0].measure_ns ? (end - ws[0].measure_ns) / 1e9 : 0;
	report(&total, secs, url);
	fflush(stdout);
	if (opt.self_test)
		selftest_stop();
	for (int i = 0; i < opt.threads; i++)
		worker_free(&ws[i]);
	free(ws);
	hist_free(total.lat);
	hist_free(total.svc);
	reqlist_free(&reqs);
	zipf_free(&zipf);
	free(extra);
	free(host_hdr);
	free(path);
	return failed ? 1 : 0;
}
