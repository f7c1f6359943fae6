#include "http/upstream.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sock.h"
#include "http/req.h"
#include "http/respond.h"
#include "http/worker.h"

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

/* Above this many bytes queued towards one side, stop reading the other:
 * the bound on memory per proxied exchange. */
#define HIGH_WATER (256 * 1024)

static const struct conn_ops up_ops;

/* ---- endpoint choice ------------------------------------------------------ */

struct pool_state *pool_states_new(const struct config *cfg)
{
	struct pool_state *pools = calloc(cfg->n_pools ? cfg->n_pools : 1, sizeof(*pools));

	if (!pools)
		return NULL;
	for (unsigned i = 0; i < cfg->n_pools; i++) {
		struct pool_state *p = &pools[i];
		p->cfg = &cfg->pools[i];
		p->n_eps = p->cfg->n_endpoints;
		p->eps = calloc(p->n_eps ? p->n_eps : 1, sizeof(*p->eps));
		if (!p->eps) {
			pool_states_free(pools, i);
			return NULL;
		}
		for (unsigned j = 0; j < p->n_eps; j++)
			p->eps[j].cfg = &p->cfg->endpoints[j];
	}
	return pools;
}

static void idle_remove(struct upconn *u)
{
	struct endpoint_state *ep = u->ep;

	if (!u->in_idle)
		return;
	if (u->idle_prev)
		u->idle_prev->idle_next = u->idle_next;
	else
		ep->idle = u->idle_next;
	if (u->idle_next)
		u->idle_next->idle_prev = u->idle_prev;
	u->idle_next = u->idle_prev = NULL;
	u->in_idle = false;
	ep->n_idle--;
}

void pool_states_close_idle(struct pool_state *pools, unsigned n)
{
	for (unsigned i = 0; pools && i < n; i++)
		for (unsigned j = 0; j < pools[i].n_eps; j++) {
			struct endpoint_state *ep = &pools[i].eps[j];
			while (ep->idle) {
				struct upconn *u = ep->idle;
				idle_remove(u);
				conn_close(&u->conn, false);
			}
		}
}

void pool_states_free(struct pool_state *pools, unsigned n)
{
	for (unsigned i = 0; pools && i < n; i++)
		free(pools[i].eps);
	free(pools);
}

struct endpoint_state *pool_pick(struct pool_state *p, uint64_t rnd)
{
	unsigned n = p->n_eps;

	if (n == 0)
		return NULL;
	if (n == 1)
		return &p->eps[0];
	if (p->cfg->balance == CFG_BALANCE_ROUND_ROBIN) {
		/* Smooth weighted round robin (nginx's): every endpoint gains its
		 * weight, the richest is chosen and pays the total. */
		int total = 0;
		struct endpoint_state *best = NULL;
		for (unsigned i = 0; i < n; i++) {
			struct endpoint_state *e = &p->eps[i];
			e->wrr_current += (int)e->cfg->weight;
			total += (int)e->cfg->weight;
			if (!best || e->wrr_current > best->wrr_current)
				best = e;
		}
		best->wrr_current -= total;
		return best;
	}
	unsigned a = (unsigned)(rnd % n);
	unsigned b = (unsigned)((rnd >> 32) % (n - 1));
	if (b >= a)
		b++;
	struct endpoint_state *ea = &p->eps[a], *eb = &p->eps[b];
	/* Compare inflight/weight without division: ia/wa <= ib/wb. */
	uint64_t la = (uint64_t)ea->inflight * eb->cfg->weight;
	uint64_t lb = (uint64_t)eb->inflight * ea->cfg->weight;
	if (la != lb)
		return la < lb ? ea : eb;
	return (rnd >> 63) ? eb : ea;
}

/* ---- the upstream request head -------------------------------------------- */

static bool skip_request_field(const struct http_request *h, struct http_str name)
{
	switch (name.len) {
	case 2:
		return http_str_eq(name, "TE");
	case 4:
		return http_str_eq(name, "Host");
	case 6:
		return http_str_eq(name, "Expect");
	case 7:
		return http_str_eq(name, "Upgrade");
	case 10:
		return http_str_eq(name, "Connection") || http_str_eq(name, "Keep-Alive");
	case 12:
		return http_str_eq(name, "X-Request-ID");
	case 17:
		return http_str_eq(name, "X-Forwarded-Proto");
	default:
		break;
	}
	if (name.len > 6 && strncasecmp(name.p, "Proxy-", 6) == 0)
		return true;
	/* fields named by Connection are hop-by-hop too */
	char tok[64];
	if (name.len >= sizeof(tok))
		return false;
	memcpy(tok, name.p, name.len);
	tok[name.len] = 0;
	for (unsigned i = 0; i < h->n_headers; i++)
		if (http_str_eq(h->headers[i].name, "Connection") &&
		    http_list_has_token(h->headers[i].value, tok))
			return true;
	return false;
}

/* A client's X-Request-ID is kept when it is a sane token: visible ASCII,
 * no separators that could confuse logs, at most 128 bytes. */
static bool valid_request_id(struct http_str v)
{
	if (v.len == 0 || v.len > 128)
		return false;
	for (size_t i = 0; i < v.len; i++) {
		unsigned char ch = (unsigned char)v.p[i];
		if (ch <= 0x20 || ch >= 0x7f || ch == '"' || ch == '\\' || ch == ',')
			return false;
	}
	return true;
}

int upstream_build_head(struct request *r, const struct http_request *h, const char *peer)
{
	struct buf *b = &r->up_head;
	const struct http_header *xff = NULL, *via = NULL, *rid;
	static const char hex[] = "0123456789abcdef";

	rid = http_find_header(h->headers, h->n_headers, "X-Request-ID");
	if (rid && valid_request_id(rid->value)) {
		memcpy(r->id, rid->value.p, rid->value.len < 32 ? rid->value.len : 32);
		r->id[rid->value.len < 32 ? rid->value.len : 32] = 0;
	} else {
		rid = NULL;
		uint64_t a = worker_rand(r->c->conn.w), z = worker_rand(r->c->conn.w);
		for (int i = 0; i < 16; i++) {
			r->id[i] = hex[(a >> (i * 4)) & 15];
			r->id[16 + i] = hex[(z >> (i * 4)) & 15];
		}
		r->id[32] = 0;
	}

	buf_reset(b, 16384);
	buf_append(b, h->method.p, h->method.len);
	buf_append(b, " ", 1);
	buf_append(b, h->path.p, h->path.len);
	buf_append(b, " HTTP/1.1\r\nHost: ", 17);
	if (h->authority.len)
		buf_append(b, h->authority.p, h->authority.len);
	else
		buf_append(b, h->host.p, h->host.len);
	buf_append(b, "\r\n", 2);
	for (unsigned i = 0; i < h->n_headers; i++) {
		const struct http_header *f = &h->headers[i];
		if (skip_request_field(h, f->name))
			continue;
		if (http_str_eq(f->name, "X-Forwarded-For")) {
			if (!xff)
				xff = f;
			continue;
		}
		if (http_str_eq(f->name, "Via")) {
			if (!via)
				via = f;
			continue;
		}
		buf_append(b, f->name.p, f->name.len);
		buf_append(b, ": ", 2);
		buf_append(b, f->value.p, f->value.len);
		buf_append(b, "\r\n", 2);
	}
	if (xff)
		buf_appendf(b, "X-Forwarded-For: %.*s, %s\r\n", (int)xff->value.len, xff->value.p,
			    peer);
	else
		buf_appendf(b, "X-Forwarded-For: %s\r\n", peer);
	if (via)
		buf_appendf(b, "Via: %.*s, 1.1 reflex\r\n", (int)via->value.len, via->value.p);
	else
		buf_appends(b, "Via: 1.1 reflex\r\n");
	if (rid)
		buf_appendf(b, "X-Request-ID: %.*s\r\n", (int)rid->value.len, rid->value.p);
	else
		buf_appendf(b, "X-Request-ID: %s\r\n", r->id);
	return buf_appends(b, "X-Forwarded-Proto: http\r\n\r\n");
}

/* ---- connections ------------------------------------------------------------ */

static void up_progress(struct upconn *u)
{
	struct worker *w = u->conn.w;

	timer_arm(&w->loop.timers, &u->conn.timer,
		  w->loop.now + w->cfg->timeouts.upstream_response);
}

static void up_unbind(struct upconn *u)
{
	struct request *r = u->r;

	if (!r)
		return;
	r->up = NULL;
	if (r->ep && r->ep->inflight)
		r->ep->inflight--;
	u->r = NULL;
}

/* Drop the connection: never reused. */
static void up_drop(struct upconn *u, bool reset)
{
	up_unbind(u);
	idle_remove(u);
	conn_close(&u->conn, reset);
}

static void on_connect(struct io_op *op, int res, unsigned flags);

static struct upconn *up_connect(struct worker *w, struct endpoint_state *ep, int *err)
{
	const struct cfg_addr *a = &ep->cfg->addr;
	int fd = sock_stream_for((const struct sockaddr *)&a->ss);

	if (fd < 0) {
		*err = fd;
		return NULL;
	}
	struct upconn *u = calloc(1, sizeof(*u));
	if (!u) {
		close(fd);
		*err = -ENOMEM;
		return NULL;
	}
	conn_init(&u->conn, w, fd, &up_ops);
	u->conn.stat_rx = &w->stats.upstream_bytes_in;
	u->conn.stat_tx = &w->stats.upstream_bytes_out;
	u->connect_start_ns = clock_ns();
	u->ep = ep;
	u->connect_op.on_complete = on_connect;
	u->conn.connecting = true;
	struct io_uring_sqe *sqe = loop_sqe(&w->loop);
	io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&a->ss, a->len);
	loop_sqe_set_op(sqe, &u->connect_op);
	u->conn.refs++;
	timer_arm(&w->loop.timers, &u->conn.timer, w->loop.now + w->cfg->timeouts.upstream_connect);
	STAT_INC(w->stats.upstream_connects);
	return u;
}

static void bind_and_send(struct request *r, struct upconn *u)
{
	u->r = r;
	u->got_bytes = u->head_done = u->resp_complete = false;
	u->reusable = false;
	r->up = u;
	u->ep->requests++;
	if (!u->conn.connecting)
		r->t_sent_ns = clock_ns();
	conn_write(&u->conn, buf_head(&r->up_head), r->up_head.len);
}

static void start_on(struct request *r, bool fresh)
{
	struct worker *w = r->c->conn.w;
	struct endpoint_state *ep = r->ep;
	struct upconn *u = NULL;
	int err = 0;

	if (!fresh && ep->idle) {
		u = ep->idle;
		idle_remove(u);
		u->reused = true;
		STAT_INC(w->stats.upstream_reuses);
		up_progress(u);
	} else {
		u = up_connect(w, ep, &err);
		if (!u) {
			log_warn("upstream %s: socket: %s", ep->cfg->addr.text, strerror(-err));
			req_fail(r, 502, REASON_UPSTREAM_CONNECT, "upstream connection failed", false);
			return;
		}
	}
	ep->inflight++;
	bind_and_send(r, u);
}

void upstream_start(struct request *r)
{
	start_on(r, false);
}

void upstream_send_body(struct request *r, const void *data, size_t len)
{
	if (!r->up || !len)
		return;
	r->body_started = true;
	conn_write(&r->up->conn, data, len);
}

size_t upstream_out_pending(const struct request *r)
{
	return r->up ? conn_out_pending(&r->up->conn) : 0;
}

void upstream_client_drained(struct request *r)
{
	struct upconn *u = r->up;

	if (u && !u->resp_complete) {
		conn_resume_recv(&u->conn);
		up_progress(u);
	}
}

void upstream_abort(struct request *r)
{
	if (r->up)
		up_drop(r->up, true);
}

/* The exchange failed before a response could be relayed. */
static void up_fail(struct upconn *u, int status, enum reason code, const char *reason)
{
	struct request *r = u->r;

	log_info("upstream %s: %s", u->ep->cfg->addr.text, reason);
	up_drop(u, status == 502);
	if (r)
		req_fail(r, status, code, reason, false);
}

/* The response is complete: keep the connection if both directions ended
 * cleanly, then let the request finish. */
static void up_complete(struct upconn *u)
{
	struct request *r = u->r;
	struct worker *w = u->conn.w;
	struct endpoint_state *ep = u->ep;

	u->resp_complete = true;
	respond_end(r);
	r->resp_done = true;
	/* Only the current generation's endpoints keep connections: after a
	 * reload the old pools just finish their requests. */
	bool keep = u->reusable && r->body_done && conn_out_pending(&u->conn) == 0 &&
		    u->conn.in.len == 0 && !w->draining && r->gen == w->gen &&
		    ep->n_idle < r->gen->cfg->pools[r->pool].keepalive;
	up_unbind(u);
	if (keep) {
		u->idle_prev = NULL;
		u->idle_next = ep->idle;
		if (ep->idle)
			ep->idle->idle_prev = u;
		ep->idle = u;
		ep->n_idle++;
		u->in_idle = true;
		conn_trim(&u->conn);
		conn_resume_recv(&u->conn);
		timer_arm(&w->loop.timers, &u->conn.timer, w->loop.now + w->cfg->timeouts.upstream_idle);
	} else {
		conn_close(&u->conn, false);
	}
	req_resume(r);
}

static void on_connect(struct io_op *op, int res, unsigned flags)
{
	struct upconn *u = container_of(op, struct upconn, connect_op);

	conn_put(&u->conn);
	if (u->conn.closing)
		return;
	if (res < 0) {
		char why[400];
		snprintf(why, sizeof(why), "upstream connect to %s failed: %s", u->ep->cfg->addr.text,
			 res == -ECONNREFUSED ? "connection refused" : strerror(-res));
		up_fail(u, 502, REASON_UPSTREAM_CONNECT, why);
		return;
	}
	up_progress(u);
	if (u->r) {
		uint64_t now = clock_ns();
		u->r->t_connect_ns = now - u->connect_start_ns;
		u->r->t_sent_ns = now;
	}
	conn_start_recv(&u->conn);
	conn_connected(&u->conn);
}

/* Relay body bytes of the response; returns bytes used from p. Bytes
 * beyond the end of the response mean the upstream cannot be trusted with
 * another request on this connection. */
static size_t relay_body(struct upconn *u, const char *p, size_t n)
{
	struct request *r = u->r;
	size_t used = 0;
	bool complete = false;

	switch (r->out) {
	case RESP_OUT_NONE:
		complete = true;
		break;
	case RESP_OUT_RAW:
		used = n < r->resp_left ? n : (size_t)r->resp_left;
		respond_body(r, p, used);
		r->resp_left -= used;
		complete = r->resp_left == 0;
		break;
	case RESP_OUT_CHUNKED:
	case RESP_OUT_DECHUNK:
		while (used < n && !r->resp_chunk.done) {
			struct http_str payload;
			struct http_error err;
			ssize_t k = http_chunked_feed(&r->resp_chunk, p + used, n - used, &payload, &err);
			if (k < 0) {
				log_info("upstream %s: invalid chunked body: %s", u->ep->cfg->addr.text,
					 err.reason);
				/* The head is out: only an abort can tell the client. */
				up_drop(u, true);
				req_fail(r, 502, REASON_UPSTREAM_INVALID, "upstream sent an invalid chunked body", true);
				return n;
			}
			if (r->out == RESP_OUT_CHUNKED)
				respond_body(r, p + used, (size_t)k);
			else if (payload.len)
				respond_body(r, payload.p, payload.len);
			used += (size_t)k;
		}
		complete = r->resp_chunk.done;
		break;
	case RESP_OUT_ENCODE:
	case RESP_OUT_UNTIL_CLOSE:
		respond_body(r, p, n);
		used = n;
		break;
	}
	if (complete) {
		if (used < n)
			u->reusable = false;
		up_complete(u);
	}
	return used;
}

static void up_on_recv(struct conn *cn, const char *data, size_t len)
{
	struct upconn *u = container_of(cn, struct upconn, conn);
	struct request *r = u->r;
	struct worker *w = cn->w;

	if (!r) {
		/* An idle connection must be silent: bytes now mean a confused
		 * upstream. Never hand it out. */
		up_drop(u, true);
		return;
	}
	if (!u->got_bytes)
		r->t_ttfb_ns = clock_ns();
	u->got_bytes = true;
	up_progress(u);

	if (u->head_done) {
		relay_body(u, data, len);
		goto backpressure;
	}

	if (buf_append(&cn->in, data, len) != 0) {
		up_fail(u, 502, REASON_INTERNAL, "out of memory reading the upstream response");
		return;
	}
	for (;;) {
		struct http_response res = { .headers = w->hdrs, .max_headers = w->max_hdrs };
		struct http_error err;
		int n = http_parse_response(buf_head(&cn->in), cn->in.len, &res, r->is_head,
					    &w->limits, &err);
		if (n == -2)
			return;
		if (n < 0) {
			char why[160];
			snprintf(why, sizeof(why), "upstream sent an invalid response: %s", err.reason);
			up_fail(u, 502, REASON_UPSTREAM_INVALID, why);
			return;
		}
		if (res.status >= 100 && res.status < 200) {
			if (res.status == 101) {
				up_fail(u, 502, REASON_UPSTREAM_INVALID, "upstream switched protocols unasked");
				return;
			}
			buf_consume(&cn->in, (size_t)n); /* interim: not relayed */
			continue;
		}
		u->head_done = true;
		u->reusable = res.keep_alive;
		if (respond_head(r, &res) != 0) {
			up_fail(u, 502, REASON_INTERNAL, "out of memory relaying the response head");
			return;
		}
		buf_consume(&cn->in, (size_t)n);
		break;
	}
	if (cn->in.len) {
		struct buf rest = cn->in;
		cn->in = (struct buf){ 0 };
		relay_body(u, buf_head(&rest), rest.len);
		buf_free(&rest);
	} else if (r->out == RESP_OUT_NONE) {
		up_complete(u);
	}
backpressure:
	if (u->r && conn_out_pending(&u->r->c->conn) > HIGH_WATER)
		conn_pause_recv(cn);
}

static void up_on_eof(struct conn *cn, int err)
{
	struct upconn *u = container_of(cn, struct upconn, conn);
	struct request *r = u->r;

	if (!r) {
		up_drop(u, false);
		return;
	}
	if (u->head_done && (r->out == RESP_OUT_ENCODE || r->out == RESP_OUT_UNTIL_CLOSE) &&
	    err == 0) {
		u->reusable = false;
		up_complete(u);
		return;
	}
	if (u->head_done) {
		/* Truncated response: the client can only learn it by an abort. */
		log_info("upstream %s: response truncated (%s)", u->ep->cfg->addr.text,
			 err ? strerror(-err) : "closed early");
		up_drop(u, false);
		req_fail(r, 502, REASON_UPSTREAM_TRUNCATED, "upstream response truncated", true);
		return;
	}
	/* Nothing relayed yet. A kept-alive connection the upstream closed
	 * while the request was on its way is the classic race: a safe request
	 * with no body is sent again once, on a fresh connection. */
	if (u->reused && !u->got_bytes && !r->retried && r->safe && !r->body_started) {
		struct worker *w = cn->w;
		up_drop(u, false);
		r->retried = true;
		STAT_INC(w->stats.upstream_retries);
		start_on(r, true);
		return;
	}
	const char *why = err == -ECONNRESET ? "upstream reset the connection"
			  : err == -ETIMEDOUT ? "upstream stopped reading"
			  : err ? "upstream connection error"
				: "upstream closed the connection before responding";
	up_fail(u, 502, REASON_UPSTREAM_RESET, why);
}

static void up_on_sent(struct conn *cn)
{
	struct upconn *u = container_of(cn, struct upconn, conn);

	if (u->r) {
		up_progress(u);
		req_pump_body(u->r);
	}
}

static void up_on_timeout(struct conn *cn)
{
	struct upconn *u = container_of(cn, struct upconn, conn);
	struct request *r = u->r;

	if (!r) { /* idle too long */
		up_drop(u, false);
		return;
	}
	if (cn->connecting) {
		up_fail(u, 504, REASON_UPSTREAM_CONNECT_TIMEOUT, "upstream connect timed out");
		return;
	}
	if (u->head_done) {
		up_drop(u, true);
		req_fail(r, 504, REASON_UPSTREAM_TIMEOUT, "upstream response timed out mid-body", true);
		return;
	}
	up_fail(u, 504, REASON_UPSTREAM_TIMEOUT, "upstream response timed out");
}

static void up_on_destroy(struct conn *cn)
{
	struct upconn *u = container_of(cn, struct upconn, conn);

	free(u);
}

static const struct conn_ops up_ops = {
	.on_recv = up_on_recv,
	.on_eof = up_on_eof,
	.on_sent = up_on_sent,
	.on_timeout = up_on_timeout,
	.on_destroy = up_on_destroy,
};
