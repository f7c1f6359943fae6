#include "http/upstream.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sock.h"
#include "core/tls.h"
#include "http/health.h"
#include "http/pool_hash.h"
#include "http/cache.h"
#include "http/req.h"
#include "http/respond.h"
#include "http/worker.h"


/* Above this many bytes queued towards one side, stop reading the other:
 * the bound on memory per proxied exchange. */
#define HIGH_WATER (256 * 1024)

static const struct conn_ops up_ops;

bool (*upstream_serve_stale)(struct request *r);

/* What a request's up_timer is waiting for. */
enum { UPWAIT_NONE = 0, UPWAIT_BACKOFF, UPWAIT_QUEUE, UPWAIT_HEDGE };

static void on_up_timer(struct timer *t);
static void on_queue_poll(struct timer *t);

/* ---- endpoint choice ------------------------------------------------------ */

struct pool_state *pool_states_new(const struct config *cfg)
{
	struct pool_state *pools = calloc(cfg->n_pools ? cfg->n_pools : 1, sizeof(*pools));
	struct pool_shared_set *set;

	if (!pools)
		return NULL;
	set = pool_shared_get(cfg);
	if (!set) {
		free(pools);
		return NULL;
	}
	pools[0].set = set;
	for (unsigned i = 0; i < cfg->n_pools; i++) {
		struct pool_state *p = &pools[i];
		p->cfg = &cfg->pools[i];
		p->sh = &set->pools[i];
		p->n_eps = p->cfg->n_endpoints;
		timer_init(&p->q_timer, on_queue_poll);
		p->eps = calloc(p->n_eps ? p->n_eps : 1, sizeof(*p->eps));
		if (!p->eps) {
			pool_states_free(pools, i);
			return NULL;
		}
		for (unsigned j = 0; j < p->n_eps; j++) {
			struct endpoint_state *e = &p->eps[j];
			e->cfg = &p->cfg->endpoints[j];
			e->sh = &p->sh->eps[j];
			e->id = pool_hash_bytes(0, e->cfg->addr.text, strlen(e->cfg->addr.text));
		}
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
	health_stop(pools, n); /* no more checks from this generation */
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
	if (!pools)
		return;
	health_stop(pools, n);
	for (unsigned i = 0; i < n; i++) {
		/* requests hold the generation while queued: the queue is empty */
		if (pools[i].w)
			timer_disarm(&pools[i].w->loop.timers, &pools[i].q_timer);
		free(pools[i].eps);
	}
	pool_shared_put(pools[0].set);
	free(pools);
}

struct endpoint_state *pool_pick(struct pool_state *p, uint64_t rnd)
{
	return pool_pick_ex(p, rnd, clock_ms(), NULL, false, 0, false);
}

/* ---- the upstream request head -------------------------------------------- */

static bool skip_request_field(const struct http_request *h, struct http_str name)
{
	switch (name.len) {
	case 14:
		/* the framing is the gateway's (upstream_head_ready writes it):
		 * a client's copy, duplicates or a Connection that names it
		 * would let the upstream frame the body otherwise */
		return http_str_eq(name, "Content-Length");
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
		return http_str_eq(name, "X-Forwarded-Proto") ||
		       http_str_eq(name, "Transfer-Encoding");
	default:
		break;
	}
	if (name.len > 6 && strncasecmp(name.p, "Proxy-", 6) == 0)
		return true;
	/* fields named by Connection are hop-by-hop too */
	return http_named_by_connection(h->headers, h->n_headers, name);
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

void upstream_request_id(struct request *r)
{
	const struct http_request *h = &r->h;
	const struct http_header *rid;
	static const char hex[] = "0123456789abcdef";

	rid = http_find_header(h->headers, h->n_headers, "X-Request-ID");
	if (rid && valid_request_id(rid->value)) {
		size_t n = rid->value.len < 32 ? rid->value.len : 32;
		memcpy(r->id, rid->value.p, n);
		r->id[n] = 0;
		return;
	}
	uint64_t a = worker_rand(r->c->conn.w), z = worker_rand(r->c->conn.w);
	for (int i = 0; i < 16; i++) {
		r->id[i] = hex[(a >> (i * 4)) & 15];
		r->id[16 + i] = hex[(z >> (i * 4)) & 15];
	}
	r->id[32] = 0;
}

/* Room for n more bytes at the end of b; the write pointer, or NULL. */
static inline char *head_room(struct buf *b, size_t n)
{
	if (b->cap - b->off - b->len < n && buf_reserve(b, n) != 0)
		return NULL;
	return buf_head(b) + b->len;
}

#define PUT_LIT(o, lit) ((o) = mempcpy((o), (lit), sizeof(lit) - 1))

int upstream_head_ready(struct request *r)
{
	struct buf *b = &r->up_head;
	const struct http_request *h = &r->h;
	const struct http_header *xff = NULL, *via = NULL, *rid;
	struct tls_conn *tc = r->c->conn.tls;
	const char *subject_hdr = tc ? tls_conn_subject_header(tc) : NULL, *subject;
	struct http_str host = h->authority.len ? h->authority : h->host;
	size_t peer_len = strlen(r->c->peer);
	char *o;

	if (r->up_head_built)
		return 0;
	/* the client's id goes upstream whole; r->id keeps its first 32 bytes */
	rid = http_find_header(h->headers, h->n_headers, "X-Request-ID");
	if (rid && !valid_request_id(rid->value))
		rid = NULL;

	/* Written in place, not by one call per piece: this runs for every
	 * forwarded request. Each field line grows by at most its ": " and the
	 * fields the gateway adds by less than 256 bytes and the peer, so one
	 * reservation is enough in practice; head_room() still checks. */
	buf_reset(b, 16384);
	if (buf_reserve(b, r->head.len + 2 * h->n_headers + 256 + peer_len) != 0 ||
	    !(o = head_room(b, h->method.len + h->path.len + host.len + 32)))
		return -ENOMEM;
	o = mempcpy(o, h->method.p, h->method.len);
	*o++ = ' ';
	o = mempcpy(o, h->path.p, h->path.len);
	PUT_LIT(o, " HTTP/1.1\r\nHost: ");
	o = mempcpy(o, host.p, host.len);
	PUT_LIT(o, "\r\n");
	b->len = (size_t)(o - buf_head(b));
	for (unsigned i = 0; i < h->n_headers; i++) {
		const struct http_header *f = &h->headers[i];
		if (skip_request_field(h, f->name))
			continue;
		/* only the gateway says which certificate the client showed */
		if (subject_hdr && http_str_eq(f->name, subject_hdr))
			continue;
		if (f->name.len == 15 && http_str_eq(f->name, "X-Forwarded-For")) {
			if (!xff)
				xff = f;
			continue;
		}
		if (f->name.len == 3 && http_str_eq(f->name, "Via")) {
			if (!via)
				via = f;
			continue;
		}
		if (!(o = head_room(b, f->name.len + f->value.len + 4)))
			return -ENOMEM;
		o = mempcpy(o, f->name.p, f->name.len);
		PUT_LIT(o, ": ");
		o = mempcpy(o, f->value.p, f->value.len);
		PUT_LIT(o, "\r\n");
		b->len = (size_t)(o - buf_head(b));
	}
	size_t id_len = rid ? rid->value.len : strlen(r->id);
	if (!(o = head_room(b, (xff ? xff->value.len : 0) + (via ? via->value.len : 0) + peer_len +
				       id_len + 192)))
		return -ENOMEM;
	/* One framing field, as the parser understood the request: the body
	 * that follows is exactly what it framed. */
	if (h->body == HTTP_BODY_LENGTH) {
		char num[24];
		int nl = snprintf(num, sizeof(num), "%llu", (unsigned long long)h->content_length);
		PUT_LIT(o, "Content-Length: ");
		o = mempcpy(o, num, (size_t)nl);
		PUT_LIT(o, "\r\n");
	} else if (h->body == HTTP_BODY_CHUNKED) {
		PUT_LIT(o, "Transfer-Encoding: chunked\r\n");
	}
	PUT_LIT(o, "X-Forwarded-For: ");
	if (xff) {
		o = mempcpy(o, xff->value.p, xff->value.len);
		PUT_LIT(o, ", ");
	}
	o = mempcpy(o, r->c->peer, peer_len);
	PUT_LIT(o, "\r\nVia: ");
	if (via) {
		o = mempcpy(o, via->value.p, via->value.len);
		PUT_LIT(o, ", ");
	}
	PUT_LIT(o, "1.1 reflex\r\nX-Request-ID: ");
	o = mempcpy(o, rid ? rid->value.p : r->id, id_len);
	PUT_LIT(o, "\r\n");
	b->len = (size_t)(o - buf_head(b));
	if (subject_hdr && (subject = tls_conn_peer_subject(tc)) &&
	    buf_appendf(b, "%s: %s\r\n", subject_hdr, subject) != 0)
		return -ENOMEM;
	if (buf_appends(b, tc ? "X-Forwarded-Proto: https\r\n\r\n"
			      : "X-Forwarded-Proto: http\r\n\r\n") != 0)
		return -ENOMEM;
	r->up_head_built = true;
	return 0;
}

#undef PUT_LIT

/* ---- connections ------------------------------------------------------------ */

static void up_progress(struct upconn *u)
{
	struct worker *w = u->conn.w;
	uint64_t at = w->loop.now + w->cfg->timeouts.upstream_response;

	/* retry.per_try_timeout bounds the wait for the head of one try */
	if (!u->head_done && u->try_deadline_ms && u->try_deadline_ms < at)
		at = u->try_deadline_ms;
	timer_arm(&w->loop.timers, &u->conn.timer, at);
}

static struct pool_state *pool_of(struct request *r)
{
	return &r->gen->pools[r->pool];
}

static void queue_kick(struct pool_state *p);

/* The try on u ended: tell the outlier detector and the breaker (ok: 1,
 * failed: 0, no verdict: -1), give back the busy and retry slots. */
static void try_end(struct upconn *u, int outcome)
{
	struct request *r = u->r;
	struct endpoint_state *ep = u->ep;
	struct worker *w = u->conn.w;

	if (u->outcome_done || !r || !r->gen)
		return;
	u->outcome_done = true;
	struct pool_state *p = pool_of(r);
	if (!p->sh || !ep->sh)
		return;
	uint64_t now = clock_ms();
	if (outcome < 0) {
		breaker_release(&ep->sh->breaker, u->br_how);
	} else {
		if (breaker_result(&ep->sh->breaker, &p->cfg->breaker, u->br_how, outcome == 1, now)) {
			log_warn("pool %s: endpoint %s: breaker open for %u ms", p->cfg->name,
				 ep->cfg->addr.text, p->cfg->breaker.open_time);
			STAT_INC(w->stats.pool_breaker_opens);
		}
		if (pool_shared_outcome(p->sh, ep->sh, outcome == 1, now)) {
			log_warn("pool %s: endpoint %s: ejected for %llu ms (ejection %u)",
				 p->cfg->name, ep->cfg->addr.text,
				 (unsigned long long)(__atomic_load_n(&ep->sh->ejected_until_ms,
								      __ATOMIC_RELAXED) - now),
				 __atomic_load_n(&ep->sh->n_ejections, __ATOMIC_RELAXED));
			STAT_INC(w->stats.pool_ejections);
		}
	}
	if (u->busy) {
		u->busy = false;
		pool_shared_busy_put(ep->sh);
	}
	if (u->retry_slot) {
		u->retry_slot = false;
		pool_shared_retry_done(p->sh);
	}
	if (p->q_len)
		queue_kick(p);
}

static void up_unbind(struct upconn *u)
{
	struct request *r = u->r;

	if (!r)
		return;
	try_end(u, -1);
	if (r->up == u)
		r->up = NULL;
	if (r->hedge == u)
		r->hedge = NULL;
	if (u->ep->inflight)
		u->ep->inflight--;
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

static struct upconn *up_connect(struct worker *w, struct endpoint_state *ep, struct tls_ctx *tls,
				 int *err)
{
	const struct cfg_addr *a = &ep->cfg->addr;
	struct sockaddr_storage ss = a->ss;
	socklen_t sl = a->len;

	if (ep->sh) /* a host name may resolve elsewhere now (pool_shared.h) */
		pool_shared_addr(ep->sh, &ss, &sl);
	int fd = sock_stream_for((const struct sockaddr *)&ss);
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
	u->addr = ss; /* the connect reads it from here */
	u->addr_len = sl;
	conn_init(&u->conn, w, fd, &up_ops);
	u->conn.stat_rx = &w->stats.upstream_bytes_in;
	u->conn.stat_tx = &w->stats.upstream_bytes_out;
	u->connect_start_ns = w->loop.now_ns;
	u->ep = ep;
	u->connect_op.on_complete = on_connect;
	u->conn.connecting = true;
	if (tls && conn_tls_client(&u->conn, tls, a->text)) {
		conn_close(&u->conn, false); /* freed by the reap step */
		*err = -ENOMEM;
		return NULL;
	}
	struct io_uring_sqe *sqe = loop_sqe(&w->loop);
	io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&u->addr, u->addr_len);
	loop_sqe_set_op(sqe, &u->connect_op);
	u->conn.refs++;
	timer_arm(&w->loop.timers, &u->conn.timer, w->loop.now + w->cfg->timeouts.upstream_connect);
	STAT_INC(w->stats.upstream_connects);
	return u;
}

static void bind_and_send(struct request *r, struct upconn *u, bool hedge)
{
	u->r = r;
	u->got_bytes = u->head_done = u->resp_complete = false;
	u->reusable = false;
	u->outcome_done = false;
	if (hedge)
		r->hedge = u;
	else
		r->up = u;
	u->ep->requests++;
	u->try_sent_ns = u->conn.w->loop.now_ns;
	if (!u->conn.connecting && !hedge)
		r->t_sent_ns = u->try_sent_ns;
	const struct cfg_retry *rc = &pool_of(r)->cfg->retry;
	u->try_deadline_ms = rc->per_try_timeout ? u->conn.w->loop.now + rc->per_try_timeout : 0;
	up_progress(u);
	conn_write(&u->conn, buf_head(&r->up_head), r->up_head.len);
	if (r->replay.len && !hedge) /* a retry: the body as far as it came */
		conn_write(&u->conn, buf_head(&r->replay), r->replay.len);
}

/* Open (or reuse) a connection to ep for r and send the head. The caller
 * has taken the busy slot and breaker admission; they move to the
 * connection. Returns the connection, or NULL (r not failed). */
static struct upconn *try_on(struct request *r, struct endpoint_state *ep, bool fresh, bool hedge,
			     bool busy, enum breaker_admit how)
{
	struct worker *w = r->c->conn.w;
	struct upconn *u = NULL;
	int err = 0;

	if (!fresh && ep->idle) {
		u = ep->idle;
		idle_remove(u);
		u->reused = true;
		STAT_INC(w->stats.upstream_reuses);
	} else {
		u = up_connect(w, ep, pool_of(r)->cfg->tls.ctx, &err);
		if (!u) {
			log_warn("upstream %s: socket: %s", ep->cfg->addr.text, strerror(-err));
			if (busy)
				pool_shared_busy_put(ep->sh);
			if (ep->sh)
				breaker_release(&ep->sh->breaker, how);
			return NULL;
		}
	}
	ep->inflight++;
	r->tries++;
	u->busy = busy;
	u->br_how = how;
	u->retry_slot = false;
	bind_and_send(r, u, hedge);
	return u;
}

/* Take the admissions a try on ep needs: a busy slot (limits.connections)
 * and the breaker's consent. False when either says no. */
static bool admit(struct pool_state *p, struct endpoint_state *ep, bool *busy,
		  enum breaker_admit *how)
{
	*busy = false;
	*how = BREAKER_PASS;
	if (!p->sh || !ep->sh)
		return true;
	if (!pool_shared_busy_take(p->sh, ep->sh))
		return false;
	*how = breaker_admit(&ep->sh->breaker, &p->cfg->breaker, clock_ms());
	if (*how == BREAKER_DENY) {
		pool_shared_busy_put(ep->sh);
		return false;
	}
	*busy = true;
	return true;
}

/* Fail r with 503 because the pool cannot take it (or let the cache
 * answer with stale content). */
static void unavailable(struct request *r, enum reason code, uint32_t retry_after_s,
			const char *why)
{
	struct worker *w = r->c->conn.w;

	STAT_INC(w->stats.pool_fail_fast);
	if (upstream_serve_stale && upstream_serve_stale(r))
		return;
	r->retry_after_s = retry_after_s ? retry_after_s : 1;
	req_fail(r, 503, code, why, false);
}

/* Seconds until something in the pool may come back (Retry-After): the
 * soonest endpoint, each at the latest of what keeps it out (ejection,
 * open breaker, and for one its health checks took down, `rise` passing
 * checks: without that, one ejected for 5 min beside one that was down for
 * a few seconds made clients wait the 5 min). */
static uint32_t pool_retry_after(const struct pool_state *p)
{
	uint64_t now = clock_ms(), best = 0;
	const struct cfg_health *hc = &p->cfg->health;

	for (unsigned i = 0; p->sh && i < p->n_eps; i++) {
		const struct ep_shared *e = &p->sh->eps[i];
		uint64_t t = __atomic_load_n(&e->ejected_until_ms, __ATOMIC_RELAXED);
		if (hc->enabled && !__atomic_load_n(&e->healthy, __ATOMIC_RELAXED)) {
			unsigned ok = __atomic_load_n(&e->hc_ok, __ATOMIC_RELAXED);
			uint64_t up = now + (uint64_t)(hc->rise > ok ? hc->rise - ok : 1) * hc->interval;
			if (up > t)
				t = up;
		}
		if (p->cfg->breaker.enabled &&
		    __atomic_load_n(&e->breaker.state, __ATOMIC_RELAXED) == BREAKER_OPEN) {
			uint64_t b = __atomic_load_n(&e->breaker.open_until_ms, __ATOMIC_RELAXED);
			if (b > t)
				t = b;
		}
		if (t > now && (!best || t - now < best))
			best = t - now;
	}
	return best ? (uint32_t)((best + 999) / 1000) : 1;
}

static void queue_remove(struct pool_state *p, struct request *r)
{
	if (r->q_prev)
		r->q_prev->q_next = r->q_next;
	else
		p->q_head = r->q_next;
	if (r->q_next)
		r->q_next->q_prev = r->q_prev;
	else
		p->q_tail = r->q_prev;
	r->q_next = r->q_prev = NULL;
	p->q_len--;
	if (!p->q_len && p->w)
		timer_disarm(&p->w->loop.timers, &p->q_timer);
}

/* Start a try for r: on r->ep if it can take it, else on another endpoint
 * with room, else wait in the pool's queue (or 503). */
static void start_try(struct request *r, bool fresh)
{
	struct worker *w = r->c->conn.w;
	struct pool_state *p = pool_of(r);
	struct endpoint_state *ep = r->ep;
	enum breaker_admit how;
	bool busy;

	if (!p->w)
		p->w = w;
	if (!admit(p, ep, &busy, &how)) {
		/* another endpoint with room (and a breaker that admits) */
		ep = pool_pick_ex(p, worker_rand(w), clock_ms(), r->ep, r->has_key, r->key, true);
		if (!ep || ep == r->ep || !admit(p, ep, &busy, &how)) {
			if (!pool_pick_ex(p, worker_rand(w), clock_ms(), NULL, false, 0, false)) {
				unavailable(r, REASON_POOL_UNAVAILABLE, pool_retry_after(p),
					    "no upstream endpoint is available");
				return;
			}
			if (p->q_len >= p->cfg->queue.size) {
				STAT_INC(w->stats.pool_queue_rejected);
				unavailable(r, REASON_POOL_OVERLOAD, 1,
					    "the upstream pool is at its connection limit");
				return;
			}
			/* wait for a slot */
			r->q_prev = p->q_tail;
			r->q_next = NULL;
			if (p->q_tail)
				p->q_tail->q_next = r;
			else
				p->q_head = r;
			p->q_tail = r;
			p->q_len++;
			STAT_INC(w->stats.pool_queued);
			r->up_wait = UPWAIT_QUEUE;
			r->up_timer.on_expire = on_up_timer;
			timer_arm(&w->loop.timers, &r->up_timer, w->loop.now + p->cfg->queue.timeout);
			if (!timer_armed(&p->q_timer))
				timer_arm(&w->loop.timers, &p->q_timer, w->loop.now + 5);
			return;
		}
		r->ep = ep;
	}
	struct upconn *u = try_on(r, ep, fresh, false, busy, how);
	if (!u) {
		req_fail(r, 502, REASON_UPSTREAM_CONNECT, "upstream connection failed", false);
		return;
	}
	/* hedging: a safe request without a body gets a second try if the
	 * first has not answered by the delay */
	const struct cfg_hedge *hc = &p->cfg->hedge;
	const struct cfg_route *rt = r->route >= 0 ? &r->gen->cfg->routes[r->route] : NULL;
	bool hedging = rt && rt->hedge != CFG_ROUTE_HEDGE_POOL ? rt->hedge == CFG_ROUTE_HEDGE_ON
							       : hc->enabled;
	if (hedging && r->safe && r->body_done && !r->body_started && !r->hedge &&
	    r->up_wait == UPWAIT_NONE && p->n_eps > 1) {
		uint32_t d = hc->delay;
		if (hc->p95 && p->p95_us / 1000 > d)
			d = p->p95_us / 1000;
		r->up_wait = UPWAIT_HEDGE;
		r->up_timer.on_expire = on_up_timer;
		timer_arm(&w->loop.timers, &r->up_timer, w->loop.now + (d ? d : 1));
	}
}

/* Capacity may have freed: start queued requests while it lasts. */
static void queue_kick(struct pool_state *p)
{
	unsigned guard = p->q_len;

	while (p->q_head && guard--) {
		struct request *r = p->q_head;
		struct endpoint_state *ep = pool_pick_ex(p, worker_rand(p->w), clock_ms(), NULL,
							 r->has_key, r->key, true);
		if (!ep)
			break;
		queue_remove(p, r);
		timer_disarm(&p->w->loop.timers, &r->up_timer);
		r->up_wait = UPWAIT_NONE;
		r->ep = ep;
		start_try(r, false);
		if (r->up_wait == UPWAIT_QUEUE)
			break; /* raced: it went back to the queue */
		if (r->up)
			req_pump_body(r);
	}
}

static void on_queue_poll(struct timer *t)
{
	struct pool_state *p = container_of(t, struct pool_state, q_timer);

	queue_kick(p);
	if (p->q_len)
		timer_arm(&p->w->loop.timers, &p->q_timer, p->w->loop.now + 5);
}

void upstream_start(struct request *r)
{
	if (r->up_wait == UPWAIT_BACKOFF || r->up_wait == UPWAIT_QUEUE)
		return; /* a timer or the queue starts the next try */
	start_try(r, false);
}

/* The old entry point of the keep-alive race retry: a fresh connection to
 * the same endpoint. */
static void start_on(struct request *r, bool fresh)
{
	start_try(r, fresh);
}

/* A retryable request's body is kept up to this many bytes so a retry can
 * send it again; a longer body makes the request unretryable once sent. */
#define REPLAY_MAX (64 * 1024)

void upstream_send_body(struct request *r, const void *data, size_t len)
{
	if (!r->up || !len)
		return;
	r->body_started = true;
	if (r->retryable && !r->replay_off && r->gen && pool_of(r)->cfg->retry.attempts > 1) {
		if (r->replay.len + len > REPLAY_MAX || buf_append(&r->replay, data, len) != 0) {
			r->replay_off = true;
			buf_free(&r->replay);
		}
	} else {
		r->replay_off = true;
	}
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

int upstream_move(struct request *r, struct request *to)
{
	struct upconn *u = r->up;

	if (!u || !u->head_done || u->resp_complete || r->hedge || r->up_wait != UPWAIT_NONE)
		return -EBUSY;
	buf_free(&r->replay); /* no retry once the head is relayed */
	r->up = NULL;
	to->up = u;
	u->r = to;
	conn_resume_recv(&u->conn);
	return 0;
}

void upstream_abort(struct request *r)
{
	buf_free(&r->replay);
	if (r->up)
		up_drop(r->up, true);
	if (r->hedge)
		up_drop(r->hedge, true);
	if (r->up_wait != UPWAIT_NONE) {
		struct worker *w = r->c->conn.w;
		if (r->up_wait == UPWAIT_QUEUE && r->gen)
			queue_remove(pool_of(r), r);
		timer_disarm(&w->loop.timers, &r->up_timer);
		r->up_wait = UPWAIT_NONE;
	}
}

static bool status_retried(const struct cfg_retry *rc, int status)
{
	for (unsigned i = 0; i < rc->n_statuses; i++)
		if (rc->statuses[i] == status)
			return true;
	return false;
}

/* After a failed try: schedule another one on a different endpoint when
 * the request, the attempts, the total timeout and the retry budget allow.
 * Returns true when a retry is scheduled (the caller must not fail r). */
static bool retry_schedule(struct request *r, const struct endpoint_state *failed)
{
	struct worker *w = r->c->conn.w;
	struct pool_state *p = pool_of(r);
	const struct cfg_retry *rc = &p->cfg->retry;

	if (r->up_wait == UPWAIT_HEDGE && !r->up && !r->hedge) {
		/* the only try failed before its hedge was due */
		timer_disarm(&w->loop.timers, &r->up_timer);
		r->up_wait = UPWAIT_NONE;
	}
	if (!r->retryable || r->tries >= rc->attempts || r->resp_started ||
	    (r->body_started && r->replay_off) ||
	    r->up || r->hedge || r->up_wait != UPWAIT_NONE || w->draining || !p->sh)
		return false;
	if (rc->timeout && w->loop.now >= r->t_choose_ms + rc->timeout)
		return false;
	struct endpoint_state *ep =
		pool_pick_ex(p, worker_rand(w), clock_ms(), failed, r->has_key, r->key, false);
	if (!ep || ep == failed)
		return false; /* retries go to a different endpoint */
	if (!pool_shared_retry_take(p->sh)) {
		STAT_INC(w->stats.pool_retry_budget_denied);
		return false;
	}
	/* exponential backoff with full jitter */
	uint64_t cap = rc->backoff;
	for (unsigned i = 1; i < r->tries && cap < rc->max_backoff; i++)
		cap *= 2;
	if (cap > rc->max_backoff)
		cap = rc->max_backoff;
	uint64_t delay = cap ? worker_rand(w) % (cap + 1) : 0;
	r->ep = ep;
	r->retried = true;
	r->up_wait = UPWAIT_BACKOFF;
	r->up_timer.on_expire = on_up_timer;
	timer_arm(&w->loop.timers, &r->up_timer, w->loop.now + delay);
	return true;
}

/* The exchange failed before a response could be relayed. */
static void up_fail(struct upconn *u, int status, enum reason code, const char *reason)
{
	struct request *r = u->r;
	struct endpoint_state *ep = u->ep;

	log_info("upstream %s: %s", u->ep->cfg->addr.text, reason);
	if (code != REASON_INTERNAL)
		u->ep->fails++; /* consecutive: an answered exchange resets it */
	try_end(u, code == REASON_INTERNAL ? -1 : 0);
	up_drop(u, status == 502);
	if (!r)
		return;
	if (r->up || r->hedge) {
		/* the other try of a hedged pair carries on */
		if (!r->up) {
			r->up = r->hedge;
			r->hedge = NULL;
			r->ep = r->up->ep;
		}
		return;
	}
	if (retry_schedule(r, ep))
		return;
	req_fail(r, status, code, reason, false);
}

/* The backoff, queue deadline or hedge delay of a request has passed. */
static void on_up_timer(struct timer *t)
{
	struct request *r = container_of(t, struct request, up_timer);
	struct worker *w = r->c->conn.w;
	struct pool_state *p = pool_of(r);
	unsigned wait = r->up_wait;

	r->up_wait = UPWAIT_NONE;
	if (wait == UPWAIT_QUEUE) {
		queue_remove(p, r);
		STAT_INC(w->stats.pool_queue_rejected);
		unavailable(r, REASON_POOL_OVERLOAD, 1,
			    "waited too long for a free upstream connection");
		return;
	}
	if (wait == UPWAIT_BACKOFF) {
		STAT_INC(w->stats.pool_retries);
		STAT_INC(w->stats.upstream_retries);
		start_try(r, false);
		/* the retry holds its slot of limits.retries until it ends */
		if (r->up)
			r->up->retry_slot = true;
		else if (p->sh)
			pool_shared_retry_done(p->sh);
		if (r->up)
			req_pump_body(r);
		return;
	}
	if (wait != UPWAIT_HEDGE || !r->up || r->up->got_bytes || r->hedge || r->resp_started)
		return;
	struct endpoint_state *ep =
		pool_pick_ex(p, worker_rand(w), clock_ms(), r->up->ep, r->has_key, r->key, true);
	enum breaker_admit how;
	bool busy;
	if (!ep || ep == r->up->ep || !p->sh || !admit(p, ep, &busy, &how))
		return;
	if (!pool_shared_retry_take(p->sh)) {
		STAT_INC(w->stats.pool_retry_budget_denied);
		if (busy)
			pool_shared_busy_put(ep->sh);
		breaker_release(&ep->sh->breaker, how);
		return;
	}
	struct upconn *h = try_on(r, ep, false, true, busy, how);
	if (!h) {
		pool_shared_retry_done(p->sh);
		return;
	}
	h->retry_slot = true;
	STAT_INC(w->stats.pool_hedges);
}

/* Route-time: the hash key, retryability, the budget deposit, the pick. */
int upstream_choose(struct request *r)
{
	struct worker *w = r->c->conn.w;
	struct pool_state *p = pool_of(r);
	const struct cfg_pool *pc = p->cfg;
	const struct http_request *h = &r->h;

	r->t_choose_ms = w->loop.now;
	if (pc->balance == CFG_BALANCE_HASH) {
		if (pc->hash_key == CFG_HASH_CACHE_KEY) {
			struct http_str host = h->authority.len ? h->authority : h->host;
			uint64_t k = pool_hash_bytes(0, h->method.p, h->method.len);
			k = pool_hash_bytes(k, host.p, host.len);
			r->key = pool_hash_bytes(k, h->path.p, h->path.len);
			r->has_key = true;
		} else {
			const struct http_header *f =
				http_find_header(h->headers, h->n_headers,
						 pc->hash_key == CFG_HASH_COOKIE ? "Cookie"
										 : pc->hash_name);
			if (f && pc->hash_key == CFG_HASH_HEADER) {
				r->key = pool_hash_bytes(0, f->value.p, f->value.len);
				r->has_key = true;
			} else if (f) {
				/* name=value pairs separated by "; " */
				size_t nl = strlen(pc->hash_name);
				const char *c = f->value.p, *end = f->value.p + f->value.len;
				while (c < end) {
					while (c < end && (*c == ' ' || *c == ';'))
						c++;
					const char *semi = memchr(c, ';', (size_t)(end - c));
					const char *stop = semi ? semi : end;
					if ((size_t)(stop - c) > nl && c[nl] == '=' &&
					    !memcmp(c, pc->hash_name, nl)) {
						r->key = pool_hash_bytes(0, c + nl + 1,
									 (size_t)(stop - c - nl - 1));
						r->has_key = true;
						break;
					}
					c = stop;
				}
			}
		}
	}
	bool idem = r->safe || (h->method.len == 3 && !memcmp(h->method.p, "PUT", 3)) ||
		    (h->method.len == 6 && !memcmp(h->method.p, "DELETE", 6));
	r->retryable = idem || pc->retry.all_methods ||
		       (r->route >= 0 && r->gen->cfg->routes[r->route].retry_unsafe) ||
		       (pc->retry.idempotency_header[0] &&
			http_find_header(h->headers, h->n_headers, pc->retry.idempotency_header));
	if (p->sh)
		pool_shared_deposit(p->sh);
	r->ep = pool_pick_ex(p, worker_rand(w), clock_ms(), NULL, r->has_key, r->key, false);
	if (!r->ep) {
		if (p->n_eps == 0) {
			req_fail(r, 503, REASON_NO_ENDPOINT, "the pool has no endpoints", false);
			return -1;
		}
		unavailable(r, REASON_POOL_UNAVAILABLE, pool_retry_after(p),
			    "no upstream endpoint is available");
		return -1;
	}
	return 0;
}

/* The response is complete: keep the connection if both directions ended
 * cleanly, then let the request finish. */
static void up_complete(struct upconn *u)
{
	struct request *r = u->r;
	struct worker *w = u->conn.w;
	struct endpoint_state *ep = u->ep;

	u->resp_complete = true;
	ep->fails = 0;
	try_end(u, r->status >= 500 ? 0 : 1);
	respond_end(r);
	r->resp_done = true;
	cache_upstream_done(r);
	/* Only the current generation's endpoints keep connections: after a
	 * reload the old pools just finish their requests. */
	bool keep = u->reusable && r->body_done && conn_out_pending(&u->conn) == 0 &&
		    !u->conn.send_failed && u->conn.in.len == 0 && !w->draining && r->gen == w->gen &&
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
		uint64_t now = u->conn.w->loop.now_ns;
		if (u->r->up == u) {
			u->r->t_connect_ns = now - u->connect_start_ns;
			u->r->t_sent_ns = now;
		}
		u->try_sent_ns = now; /* latency samples leave the connect out */
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
		cache_tee(r, p, used);
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
			cache_tee(r, payload.p, payload.len);
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
		cache_tee(r, p, n);
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

/* One latency sample into the endpoint's EWMA. alpha 1/8 (TCP's SRTT): one
 * hiccup moves it little, a +50 ms endpoint stands out after one or two. */
static void ewma_sample(struct endpoint_state *ep, uint64_t us, uint64_t now_ms)
{
	if (us > UINT32_MAX / 2)
		us = UINT32_MAX / 2;
	ep->ewma_us = ep->ewma_us ? (uint32_t)((ep->ewma_us * 7ull + us) / 8) : (uint32_t)us;
	ep->n_samples++;
	ep->ewma_at_ms = now_ms;
}

/* The first response bytes of a try: a latency sample, and the end of a
 * hedge race (the first to answer wins, the other is cancelled). */
static void first_bytes(struct upconn *u)
{
	struct request *r = u->r;
	struct worker *w = u->conn.w;
	struct endpoint_state *ep = u->ep;
	uint64_t now = w->loop.now_ns;
	uint64_t us = (now - u->try_sent_ns) / 1000;

	if (us > UINT32_MAX / 2)
		us = UINT32_MAX / 2;
	/* A request body's upload time is not the endpoint's latency: only
	 * requests without one are samples. */
	bool sample = !r->body_started;
	if (sample)
		ewma_sample(ep, us, w->loop.now);
	if (sample && r->gen && pool_of(r)->sh && ep->sh &&
	    pool_shared_latency(pool_of(r)->sh, ep->sh, (uint32_t)us, w->loop.now)) {
		log_warn("pool %s: endpoint %s: ejected for latency (%u µs, far above the pool)",
			 pool_of(r)->cfg->name, ep->cfg->addr.text, (unsigned)us);
		STAT_INC(w->stats.pool_ejections);
	}
	if (sample && r->gen) {
		struct pool_state *p = pool_of(r);
		p->ttfb_us[p->ttfb_n++ % 64] = (uint32_t)us;
		if (p->ttfb_n % 16 == 0 && p->cfg->hedge.p95) {
			uint32_t v[64];
			unsigned n = p->ttfb_n < 64 ? p->ttfb_n : 64;
			memcpy(v, p->ttfb_us, n * sizeof(v[0]));
			for (unsigned i = 1; i < n; i++) /* 64 values: insertion sort */
				for (unsigned j = i; j && v[j - 1] > v[j]; j--) {
					uint32_t t = v[j];
					v[j] = v[j - 1];
					v[j - 1] = t;
				}
			p->p95_us = v[(n * 95) / 100 < n ? (n * 95) / 100 : n - 1];
		}
	}
	if (r->hedge || r->up_wait == UPWAIT_HEDGE) {
		if (r->up_wait == UPWAIT_HEDGE) {
			timer_disarm(&w->loop.timers, &r->up_timer);
			r->up_wait = UPWAIT_NONE;
		}
		if (r->hedge == u) {
			struct upconn *loser = r->up;
			r->hedge = NULL;
			r->up = u;
			r->ep = ep;
			r->t_sent_ns = u->try_sent_ns;
			STAT_INC(w->stats.pool_hedge_wins);
			/* The loser never answers: the time it has taken so far is a lower
			 * bound of its latency. Without it a slow endpoint whose requests
			 * hedging rescues keeps its fast EWMA, and P2C keeps choosing it. */
			if (loser && sample)
				ewma_sample(loser->ep, (now - loser->try_sent_ns) / 1000, w->loop.now);
			if (loser)
				up_drop(loser, true);
		} else if (r->hedge) {
			up_drop(r->hedge, true);
		}
	}
	r->t_ttfb_ns = now;
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
		first_bytes(u);
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
		int n = http_parse_response(buf_head(&cn->in), cn->in.len, &res,
					    r->is_head && !r->up_get, &w->limits, &err);
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
		if (r->gen && status_retried(&pool_of(r)->cfg->retry, res.status) &&
		    r->tries < pool_of(r)->cfg->retry.attempts) {
			struct endpoint_state *ep = u->ep;
			struct upconn *keep = u;
			try_end(u, 0);
			up_unbind(u);
			if (retry_schedule(r, ep)) {
				log_info("upstream %s: status %d, retrying elsewhere",
					 ep->cfg->addr.text, res.status);
				up_drop(keep, false);
				return;
			}
			/* no retry after all: relay this answer */
			u->r = r;
			r->up = u;
			ep->inflight++;
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
	/* Over TLS only close_notify ends a body delimited by the close: a bare
	 * TCP close can be forged by anyone on the path (a truncation attack). */
	if (u->head_done && (r->out == RESP_OUT_ENCODE || r->out == RESP_OUT_UNTIL_CLOSE) &&
	    err == 0 && (!cn->tls || cn->tls_eof)) {
		u->reusable = false;
		up_complete(u);
		return;
	}
	if (u->head_done) {
		/* Truncated response: the client can only learn it by an abort. */
		log_info("upstream %s: response truncated (%s)", u->ep->cfg->addr.text,
			 err ? strerror(-err) : "closed early");
		try_end(u, 0);
		up_drop(u, false);
		req_fail(r, 502, REASON_UPSTREAM_TRUNCATED, "upstream response truncated", true);
		return;
	}
	if (err == -EPROTO && cn->tls) {
		char why[512];
		snprintf(why, sizeof(why), "upstream TLS with %s failed: %s", u->ep->cfg->addr.text,
			 conn_tls_error(cn));
		up_fail(u, 502, REASON_UPSTREAM_TLS, why);
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
	if (u->head_done && conn_recv_paused(cn)) {
		/* Not reading because the client is not: its wait is bounded by
		 * the client's send timeout, and it is not the upstream's fault. */
		up_progress(u);
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
