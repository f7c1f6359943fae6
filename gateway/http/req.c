/* req.c — the request path of one client connection, top to bottom.
 *
 * The ordered step table below is the only statement of the order in which
 * a request is handled (STYLE.md §1). Later stages (limit, reflex, cache)
 * slot in between route and upstream.
 */
#include "http/req.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/accesslog.h"
#include "core/log.h"
#include "core/sock.h"
#include "http/anomaly.h"
#include "http/cache.h"
#include "http/limit.h"
#include "http/reflex.h"
#include "http/respond.h"
#include "http/upstream.h"
#include "http/worker.h"


/* Request bytes buffered from a client before its recv is paused (beyond
 * the head limit): the per-connection bound while the upstream is slow. */
#define IN_HIGH (256 * 1024)
/* Above this many bytes of answers waiting for a client, its next pipelined
 * request is not started (each cache hit or refusal would add another). */
#define OUT_HIGH (256 * 1024)
/* Linger after the last response of a closing connection. */
#define LINGER_MS 2000

static enum step_result step_parse(struct request *r);
static enum step_result step_route(struct request *r);
static enum step_result step_limit(struct request *r);
static enum step_result step_reflex(struct request *r);
static enum step_result step_cache(struct request *r);
static enum step_result step_upstream(struct request *r);
static enum step_result step_respond(struct request *r);

static const struct req_step {
	const char *name;
	enum step_result (*run)(struct request *r);
	int stage; /* timed as this stage (core/stats.h), or -1: timed inside */
} steps[] = {
	{ "parse", step_parse, -1 },       /* strict HTTP/1.1 head: http/parse.c */
	{ "route", step_route, -1 },       /* Host + path prefix → pool, endpoint choice */
	{ "limit", step_limit, STAGE_LIMIT },   /* GCRA per client / API key / route; 429: http/limit.c */
	{ "reflex", step_reflex, STAGE_REFLEX }, /* rules: block, redact, respond, route, tag: http/reflex.c */
	{ "cache", step_cache, STAGE_CACHE },   /* L1 → coalesce misses; may answer: http/cache.c */
	{ "upstream", step_upstream, -1 }, /* forward, stream the response: http/upstream.c */
	{ "respond", step_respond, -1 },   /* finish: keep-alive or close */
};
#define N_STEPS (sizeof(steps) / sizeof(steps[0]))
#define STEP_RESPOND (N_STEPS - 1)

static const struct conn_ops client_ops;

static void req_reset(struct request *r)
{
	struct buf head = r->head, up_head = r->up_head;
	struct client *c = r->c;

	cache_req_end(r);
	limit_req_end(r);
	reflex_req_end(r);
	worker_gen_put(c->conn.w, r->gen);
	buf_reset(&head, 16384);
	buf_reset(&up_head, 16384);
	/* Called from inside req_run: the guard must survive, or a req_fail in
	 * the next pipelined request re-enters req_run, one level per request. */
	*r = (struct request){ .c = c, .head = head, .up_head = up_head, .pool = -1, .route = -1,
			       .running = r->running };
}

static void req_run(struct request *r)
{
	struct client *c = r->c;

	if (r->running) {
		r->rerun = true;
		return;
	}
	r->running = true;
	while (!conn_ending(&c->conn) && r->step < N_STEPS) {
		unsigned s = r->step;
		r->rerun = false;
		if (steps[s].stage >= 0 && r->timed_step != s + 1) {
			r->timed_step = s + 1; /* first entry: the step's clock starts */
			r->step_t0_ns = c->conn.w->loop.now_ns;
		}
		enum step_result sr = steps[s].run(r);
		if (conn_ending(&c->conn))
			break;
		if (r->step != s) /* req_fail moved the request on */
			continue;
		if (sr == STEP_NEXT) {
			if (steps[s].stage >= 0)
				r->stage_ns[steps[s].stage] = c->conn.w->loop.now_ns - r->step_t0_ns + 1;
			r->step++;
		} else if (sr == STEP_DONE) {
			req_reset(r); /* on to the next (pipelined) request */
		} else if (!r->rerun) {
			break;
		}
	}
	r->running = false;
}

void req_resume(struct request *r)
{
	if (r->detached) { /* a background refresh: the cache owns its end */
		cache_refresh_resume(r);
		return;
	}
	req_run(r);
}

enum reason reason_for_status(int status)
{
	switch (status) {
	case 413: return REASON_BODY_TOO_LARGE;
	case 414: return REASON_URI_TOO_LONG;
	case 417: return REASON_EXPECTATION;
	case 431: return REASON_HEADER_TOO_LARGE;
	case 501:
	case 505: return REASON_NOT_IMPLEMENTED;
	default: return REASON_BAD_REQUEST;
	}
}

static uint32_t us_between(uint64_t from, uint64_t to)
{
	if (!from || !to || to < from)
		return ACCESS_NO_TIME;
	uint64_t us = (to - from) / 1000;
	return us >= ACCESS_NO_TIME ? ACCESS_NO_TIME - 1 : (uint32_t)us;
}

static void copy_field(char *dst, size_t cap, const char *p, size_t n)
{
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, p, n);
	dst[n] = 0;
}

/* Count the request in the stage histograms and hand its access record to
 * the log writer; once per request, however it ended. */
static void req_account(struct request *r)
{
	struct client *c = r->c;
	struct worker *w = c->conn.w;
	uint64_t now = w->loop.now_ns;
	struct stats_worker *st = &w->stats;

	if (r->logged || !r->t_first_ns)
		return;
	r->logged = true;
	if (r->status >= 100 && r->status < 600) {
		STAT_INC(st->responses[r->status / 100]);
		/* by name slot: a reload that reorders pools or routes shifts nothing */
		int ps = r->gen && r->pool >= 0 && (unsigned)r->pool < r->gen->n_pools
				 ? r->gen->pool_slot[r->pool]
				 : -1;
		int rs = r->gen && r->route >= 0 && (unsigned)r->route < r->gen->cfg->n_routes
				 ? r->gen->route_slot[r->route]
				 : -1;
		if (ps >= 0 && (unsigned)ps < st->n_pools && r->ep)
			STAT_INC(st->pool_responses[ps][r->status / 100]);
		if (rs >= 0 && (unsigned)rs < st->n_routes)
			STAT_INC(st->route_responses[rs][r->status / 100]);
	}
	if (r->reason != REASON_NONE)
		STAT_INC(st->refusals[r->reason]);
	if (r->t_parsed_ns)
		stats_hist_observe(&st->stage[STAGE_PARSE], r->t_parsed_ns - r->t_first_ns);
	if (r->t_routed_ns)
		stats_hist_observe(&st->stage[STAGE_ROUTE], r->t_routed_ns - r->t_parsed_ns);
	if (r->t_connect_ns)
		stats_hist_observe(&st->stage[STAGE_CONNECT], r->t_connect_ns);
	for (unsigned sg = STAGE_LIMIT; sg <= STAGE_CACHE; sg++)
		if (r->stage_ns[sg])
			stats_hist_observe(&st->stage[sg], r->stage_ns[sg] - 1);
	if (r->t_ttfb_ns && r->t_sent_ns)
		stats_hist_observe(&st->stage[STAGE_TTFB], r->t_ttfb_ns - r->t_sent_ns);
	stats_hist_observe(&st->stage[STAGE_TOTAL], now - r->t_first_ns);
	topk_add(&w->top_clients, c->peer, r->reason != REASON_NONE, w->loop.now);
	if (r->ep) /* per-endpoint signals for the anomaly detector (http/anomaly.h) */
		anomaly_acc_request(w->id, r->ep->id,
				    r->status >= 500 || (r->reason >= REASON_UPSTREAM_CONNECT &&
							 r->reason <= REASON_UPSTREAM_TLS),
				    r->t_ttfb_ns && r->t_sent_ns ? r->t_ttfb_ns - r->t_sent_ns : 0);

	if (!w->alog)
		return;
	const struct config *cfg = r->gen ? r->gen->cfg : w->cfg;
	if (r->route >= 0 && !cfg->routes[r->route].access_log)
		return;
	if (cfg->access_log_sample < 1.0 &&
	    (double)(worker_rand(w) >> 11) * 0x1.0p-53 >= cfg->access_log_sample)
		return;
	struct access_record a = { 0 };
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	a.time_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
	memcpy(a.id, r->id, sizeof(a.id));
	copy_field(a.client, sizeof(a.client), c->peer, strlen(c->peer));
	if (r->t_parsed_ns && r->h.method.p) {
		const struct http_request *h = &r->h;
		struct http_str host = h->authority.len ? h->authority : h->host;
		size_t plen = h->path.len;
		const char *q = cfg->access_log_query ? NULL : memchr(h->path.p, '?', h->path.len);
		if (q) /* the query stays out of the log unless configured */
			plen = (size_t)(q - h->path.p);
		copy_field(a.method, sizeof(a.method), h->method.p, h->method.len);
		copy_field(a.host, sizeof(a.host), host.p, host.len);
		copy_field(a.path, sizeof(a.path), h->path.p, plen);
	}
	if (r->ep)
		copy_field(a.upstream, sizeof(a.upstream), r->ep->cfg->addr.text,
			   strlen(r->ep->cfg->addr.text));
	if (r->gen && r->pool >= 0 && (unsigned)r->pool < r->gen->cfg->n_pools)
		copy_field(a.pool, sizeof(a.pool), r->gen->cfg->pools[r->pool].name,
			   strlen(r->gen->cfg->pools[r->pool].name));
	copy_field(a.cache, sizeof(a.cache), cache_access_status(r), strlen(cache_access_status(r)));
	copy_field(a.reflex, sizeof(a.reflex), reflex_access_status(r),
		   strlen(reflex_access_status(r)));
	a.status = (uint16_t)r->status;
	a.reason = (uint8_t)r->reason;
	a.retries = r->retried;
	a.bytes_in = r->bytes_in;
	a.bytes_out = r->bytes_out;
	a.t_us[STAGE_PARSE] = us_between(r->t_first_ns, r->t_parsed_ns);
	a.t_us[STAGE_ROUTE] = us_between(r->t_parsed_ns, r->t_routed_ns);
	for (unsigned sg = STAGE_LIMIT; sg <= STAGE_CACHE; sg++)
		a.t_us[sg] = r->stage_ns[sg] ? us_between(1, r->stage_ns[sg]) : ACCESS_NO_TIME;
	a.t_us[STAGE_CONNECT] = r->t_connect_ns ? us_between(1, 1 + r->t_connect_ns) : ACCESS_NO_TIME;
	a.t_us[STAGE_TTFB] = us_between(r->t_sent_ns, r->t_ttfb_ns);
	a.t_us[STAGE_TOTAL] = us_between(r->t_first_ns, now);
	a.upstream_retransmits = r->ep ? anomaly_acc_retrans(w->id, r->ep->id) : ACCESS_NO_TIME;
	accesslog_push(w->alog, w->id, &a);
}

void req_fail(struct request *r, int status, enum reason code, const char *reason, bool close)
{
	struct client *c = r->c;

	if (r->detached) { /* a background refresh: nobody to answer */
		upstream_abort(r);
		cache_refresh_failed(r, status);
		return;
	}
	if (conn_ending(&c->conn))
		return;
	upstream_abort(r); /* also a pending retry, queue wait or hedge */
	if (status >= 500 && cache_on_error(r, status)) {
		/* the cache answered: stale-if-error, or the client already had
		 * its answer while the object was being refreshed */
		r->step = STEP_RESPOND;
		req_run(r);
		return;
	}
	if (r->resp_started && c->conn.sends == r->resp_sends) {
		/* The relayed head has not left yet: take it back and say what
		 * really happened instead. */
		struct buf *ob = conn_outbuf(&c->conn);
		r->bytes_out -= ob->len - r->resp_mark;
		ob->len = r->resp_mark;
		r->resp_started = false;
		close = true;
	}
	r->reason = code;
	if (r->resp_started) {
		/* Part of the response is out: deliver what is queued, then close
		 * (FIN, not RST), so the client sees a truncated message. */
		log_info("%s %s: %d %s after the response began; closing", c->peer, r->id, status,
			 reason);
		r->close_after = true;
		req_account(r);
		c->close_reason = CLOSE_ERROR;
		conn_close_after_flush(&c->conn, LINGER_MS);
		return;
	}
	r->status = status;
	if (close || !r->body_done || !r->keep_alive || c->conn.w->draining)
		r->close_after = true;
	r->bytes_out += respond_error(c, r, status, reason, r->close_after);
	r->resp_started = r->resp_done = true;
	r->step = STEP_RESPOND;
	req_run(r);
}

/* ---- steps ------------------------------------------------------------------ */

static void rebase(struct http_str *s, const char *from, const char *to, size_t n)
{
	if (s->p >= from && s->p < from + n)
		s->p = to + (s->p - from);
}

static bool method_is(struct http_str m, const char *lit)
{
	size_t n = strlen(lit);

	return m.len == n && memcmp(m.p, lit, n) == 0;
}

static enum step_result step_parse(struct request *r)
{
	struct client *c = r->c;
	struct worker *w = c->conn.w;
	struct buf *in = &c->conn.in;
	struct http_request *h = &r->h;
	struct http_error err;

	if (in->len == 0)
		return STEP_WAIT;
	if (conn_out_pending(&c->conn) > OUT_HIGH) {
		/* resumed by client_on_sent; the send timeout bounds the wait */
		c->parse_blocked = true;
		return STEP_WAIT;
	}
	c->parse_blocked = false;
	if (!c->head_timer_armed) {
		/* the head must be complete this long after its first byte */
		c->head_timer_armed = true;
		r->t_first_ns = w->loop.now_ns;
		timer_arm(&w->loop.timers, &c->conn.timer, w->loop.now + w->cfg->timeouts.header);
	}
	if (c->max_hdrs < w->max_hdrs) {
		/* A reload raised the header count: the parser fills up to the
		 * new limit, so the array must grow (no views into it yet). */
		struct http_header *nh = realloc(c->hdrs, w->max_hdrs * sizeof(*nh));
		if (nh) {
			c->hdrs = nh;
			c->max_hdrs = w->max_hdrs;
		}
	}
	*h = (struct http_request){ .headers = c->hdrs, .max_headers = c->max_hdrs };
	int n = http_parse_request(buf_head(in), in->len, h, &w->limits, &err);
	if (n == -2) {
		if (c->conn.eof) { /* the client half-closed: the rest never comes */
			c->close_reason = CLOSE_CLIENT;
			conn_close_after_flush(&c->conn, 0);
		}
		return STEP_WAIT;
	}

	c->in_request = true;
	c->head_timer_armed = false;
	timer_disarm(&w->loop.timers, &c->conn.timer);
	r->t_start_ns = w->loop.now_ns;
	STAT_INC(w->stats.requests);
	if (n < 0) {
		r->keep_alive = false;
		req_fail(r, err.status, reason_for_status(err.status), err.reason, true);
		return STEP_WAIT;
	}

	/* Copy the head out of the connection buffer and point the views at
	 * the copy: the connection may receive (and move its buffer) while a
	 * later step waits. */
	if (buf_append(&r->head, buf_head(in), (size_t)n) != 0) {
		req_fail(r, 500, REASON_INTERNAL, "out of memory", true);
		return STEP_WAIT;
	}
	const char *from = buf_head(in), *to = buf_head(&r->head);
	rebase(&h->method, from, to, (size_t)n);
	rebase(&h->target, from, to, (size_t)n);
	rebase(&h->path, from, to, (size_t)n);
	rebase(&h->authority, from, to, (size_t)n);
	rebase(&h->host, from, to, (size_t)n);
	for (unsigned i = 0; i < h->n_headers; i++) {
		rebase(&h->headers[i].name, from, to, (size_t)n);
		rebase(&h->headers[i].value, from, to, (size_t)n);
	}
	buf_consume(in, (size_t)n);
	r->t_parsed_ns = w->loop.now_ns;
	if ((h->body == HTTP_BODY_LENGTH && h->content_length > in->len) ||
	    (h->body == HTTP_BODY_CHUNKED &&
	     (in->len < 5 || memcmp(buf_head(in) + in->len - 4, "\r\n\r\n", 4) != 0)))
		/* The body is still to come, and the ACK of the head would wait
		 * for a response (sock_listen): a client whose Nagle holds the
		 * body until then would stall for a delayed-ACK timeout. */
		sock_ack_now(c->conn.fd);
	r->bytes_in = (uint64_t)n;

	r->is_head = h->is_head;
	r->keep_alive = h->keep_alive;
	r->http10 = h->minor_version == 0;
	r->expect_continue = h->expect_continue;
	r->safe = method_is(h->method, "GET") || method_is(h->method, "HEAD") ||
		  method_is(h->method, "OPTIONS") || method_is(h->method, "TRACE");
	r->body = h->body;
	r->body_left = h->content_length;
	r->body_done = h->body == HTTP_BODY_NONE ||
		       (h->body == HTTP_BODY_LENGTH && h->content_length == 0);
	if (h->body == HTTP_BODY_CHUNKED)
		http_chunked_init(&r->chunk);

	if (h->is_connect) {
		req_fail(r, 501, REASON_NOT_IMPLEMENTED, "CONNECT is not supported", true);
		return STEP_WAIT;
	}
	if (h->has_upgrade) {
		req_fail(r, 501, REASON_NOT_IMPLEMENTED, "protocol upgrade is not supported", true);
		return STEP_WAIT;
	}
	uint64_t limit = w->cfg->limits.body;
	if (limit && h->body == HTTP_BODY_LENGTH && h->content_length > limit) {
		req_fail(r, 413, REASON_BODY_TOO_LARGE, "request body larger than the limit", true);
		return STEP_WAIT;
	}
	return STEP_NEXT;
}

static enum step_result step_route(struct request *r)
{
	struct client *c = r->c;
	struct worker *w = c->conn.w;
	const struct http_request *h = &r->h;
	char host[CFG_HOST_MAX];
	int pool = -1;

	r->gen = worker_gen_get(w);
	const struct config *cfg = r->gen->cfg;
	if (cfg->n_routes) {
		/* what the request names, not how it spells it (parse.h): a route
		 * must not be walked around with "//admin" or "/%61dmin" */
		char small[1024], *path = small;
		if (h->path.len + 2 > sizeof(small) && !(path = malloc(h->path.len + 2))) {
			req_fail(r, 500, REASON_INTERNAL, "out of memory", false);
			return STEP_WAIT;
		}
		size_t pathlen = http_path_resolve(h->path.p, h->path.len, path);
		bool host_done = false; /* only routes naming a host need it */
		for (unsigned i = 0; i < cfg->n_routes && pool < 0; i++) {
			const struct cfg_route *rt = &cfg->routes[i];
			size_t pl = strlen(rt->path_prefix);
			if (rt->host[0] && !host_done) {
				http_host_key(h, host, sizeof(host));
				host_done = true;
			}
			if (http_host_matches(rt->host, host) && pathlen >= pl &&
			    memcmp(path, rt->path_prefix, pl) == 0) {
				pool = (int)rt->pool;
				r->route = (int)i;
			}
		}
		if (path != small)
			free(path);
	}
	if (pool < 0)
		pool = config_pool_index(cfg, "default");
	if (pool < 0) {
		req_fail(r, 404, REASON_NO_ROUTE, "no route for this host and path", false);
		return STEP_WAIT;
	}
	r->pool = pool;
	if (upstream_choose(r) != 0) /* failed the request itself */
		return STEP_WAIT;
	upstream_request_id(r); /* the head itself is built if the request goes upstream */
	r->t_routed_ns = w->loop.now_ns;
	return STEP_NEXT;
}

static enum step_result step_limit(struct request *r)
{
	return limit_step(r);
}

static enum step_result step_reflex(struct request *r)
{
	return reflex_step(r);
}

static enum step_result step_cache(struct request *r)
{
	if (r->resp_done || r->nocache) /* a reflex rule answered, or said so */
		return STEP_NEXT;
	return cache_step(r);
}

static enum step_result step_upstream(struct request *r)
{
	unsigned me = r->step;

	if (r->resp_done)
		return STEP_NEXT;
	if (!r->up && !r->resp_started) {
		if (upstream_head_ready(r) != 0) {
			req_fail(r, 500, REASON_INTERNAL, "out of memory", true);
			return STEP_WAIT;
		}
		if (r->expect_continue && !r->body_done && !r->http10) {
			r->continue_sent = true;
			respond_continue(r->c);
			r->bytes_out += 25;
		}
		upstream_start(r);
		if (r->step != me || r->c->conn.closing)
			return STEP_WAIT;
		req_pump_body(r);
	}
	return r->resp_done ? STEP_NEXT : STEP_WAIT;
}

static enum step_result step_respond(struct request *r)
{
	struct client *c = r->c;
	struct worker *w = c->conn.w;
	struct conn *cn = &c->conn;

	req_account(r);
	upstream_abort(r);
	c->in_request = false;
	c->n_requests++;
	/* A client that half-closed after pipelining gets an answer to every
	 * request it sent: only an empty buffer ends the connection. */
	bool ended = cn->eof && cn->in.len == 0;
	if (r->close_after || !r->body_done || w->draining || ended) {
		c->close_reason = w->draining ? CLOSE_DRAIN : cn->eof ? CLOSE_CLIENT : CLOSE_PROTOCOL;
		/* read to its end, nothing after it: the FIN may ride on the
		 * response (a refused upload's client may still be sending) */
		cn->fin_with_data = r->body_done && cn->in.len == 0;
		conn_close_after_flush(cn, LINGER_MS);
		return STEP_WAIT;
	}
	/* Keep-alive: wait for the next request, or parse the one already
	 * buffered (pipelining). */
	if (cn->in.len == 0) {
		timer_arm(&w->loop.timers, &cn->timer, w->loop.now + w->cfg->timeouts.keepalive);
		conn_trim(cn);
	}
	if (conn_recv_paused(cn) && !cn->eof)
		conn_resume_recv(cn);
	return STEP_DONE;
}

/* ---- the request body ------------------------------------------------------- */

void req_pump_body(struct request *r)
{
	struct client *c = r->c;
	struct worker *w = c->conn.w;
	struct buf *in = &c->conn.in;
	uint64_t limit = w->cfg->limits.body;

	if (r->rx && reflex_pump_body(r)) /* the body is held for a scan, or rewritten */
		return;
	if (!r->up && r->cache && cache_wants_body(r)) {
		req_resume(r); /* the cache keys this POST by its body: more of it came */
		return;
	}
	if (!r->up || r->body_done || c->conn.closing)
		return;
	while (in->len && !r->body_done && upstream_out_pending(r) < IN_HIGH) {
		if (r->body == HTTP_BODY_LENGTH) {
			size_t n = in->len < r->body_left ? in->len : (size_t)r->body_left;
			upstream_send_body(r, buf_head(in), n);
			buf_consume(in, n);
			r->bytes_in += n;
			r->body_left -= n;
			r->body_bytes += n;
			r->body_done = r->body_left == 0;
		} else {
			struct http_str payload;
			struct http_error err;
			ssize_t k = http_chunked_feed(&r->chunk, buf_head(in), in->len, &payload, &err);
			if (k < 0) {
				req_fail(r, err.status ? err.status : 400, REASON_BAD_REQUEST, err.reason, true);
				return;
			}
			if (limit && r->chunk.payload_total > limit) {
				req_fail(r, 413, REASON_BODY_TOO_LARGE, "request body larger than the limit", true);
				return;
			}
			upstream_send_body(r, buf_head(in), (size_t)k);
			buf_consume(in, (size_t)k);
			r->bytes_in += (uint64_t)k;
			r->body_bytes = r->chunk.payload_total;
			r->body_done = r->chunk.done;
		}
	}
	if (r->body_done) {
		timer_disarm(&w->loop.timers, &c->conn.timer);
	} else if (c->conn.eof && in->len == 0) {
		/* A pipelined request after the client's FIN, cut short: the
		 * answers before it are still queued, so flush them, then close. */
		upstream_abort(r);
		r->reason = REASON_CLIENT_ABORT;
		req_account(r);
		c->close_reason = CLOSE_CLIENT;
		conn_close_after_flush(&c->conn, 0);
		return;
	} else {
		timer_arm(&w->loop.timers, &c->conn.timer, w->loop.now + w->cfg->timeouts.body);
	}
	if (conn_recv_paused(&c->conn) && in->len < IN_HIGH)
		conn_resume_recv(&c->conn);
}

/* ---- the client connection ------------------------------------------------- */

void client_new(struct worker *w, int fd, struct tls_ctx *tls)
{
	struct client *c = calloc(1, sizeof(*c));
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (c) /* the parser fills what it uses: no need to zero 3 KiB per connection */
		c->hdrs = malloc(w->max_hdrs * sizeof(*c->hdrs));
	if (!c || !c->hdrs) {
		free(c);
		close(fd);
		return;
	}
	conn_init(&c->conn, w, fd, &client_ops);
	c->conn.stat_rx = &w->stats.bytes_in;
	c->conn.stat_tx = &w->stats.bytes_out;
	c->max_hdrs = w->max_hdrs;
	c->req.c = c;
	c->req.pool = -1;
	c->req.route = -1;
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
		sock_ntop((struct sockaddr *)&ss, c->peer, sizeof(c->peer));
	else
		strcpy(c->peer, "unknown");
	c->next = w->clients;
	if (w->clients)
		w->clients->prev = c;
	w->clients = c;
	w->n_clients++;
	STAT_SET(w->stats.conn_open, w->n_clients);
	/* A connection that sends nothing is closed after the header timeout. */
	timer_arm(&w->loop.timers, &c->conn.timer, w->loop.now + w->cfg->timeouts.header);
	if (tls && conn_tls_server(&c->conn, tls, w->cfg->timeouts.tls_handshake)) {
		conn_close(&c->conn, true); /* out of memory; on_destroy unlinks it */
		return;
	}
	conn_start_recv(&c->conn);
}

void client_drain(struct client *c)
{
	/* Only a connection idle between requests is closed now (a client may
	 * retry on a kept-alive connection that closes under it). A connection
	 * that has not sent its first request yet was just accepted: its
	 * request is on the way and is answered (with Connection: close). */
	if (!c->in_request && c->conn.in.len == 0 && c->n_requests > 0 && !c->conn.closing) {
		c->close_reason = CLOSE_DRAIN;
		conn_close_after_flush(&c->conn, LINGER_MS);
	}
}

static void client_on_recv(struct conn *cn, const char *data, size_t len)
{
	struct client *c = container_of(cn, struct client, conn);
	struct request *r = &c->req;

	if (conn_ending(cn))
		return; /* answered and closing: input is discarded */
	if (buf_append(&cn->in, data, len) != 0) {
		conn_close(cn, true);
		return;
	}
	if (!c->in_request)
		req_run(r);
	else if (!r->body_done)
		req_pump_body(r);
	if (!cn->closing && cn->in.len > IN_HIGH + cn->w->cfg->limits.header_bytes)
		conn_pause_recv(cn);
}

static void client_on_eof(struct conn *cn, int err)
{
	struct client *c = container_of(cn, struct client, conn);
	struct request *r = &c->req;

	if (c->in_request && r->body_done && !err) {
		/* Half-close after a complete request: answer, then close —
		 * after the pipelined requests still in the buffer, if any. */
		if (cn->in.len == 0)
			r->close_after = true;
		return;
	}
	if (!err && c->parse_blocked && cn->in.len)
		return; /* pipelined requests wait for their turn: answer them first */
	if (c->in_request) {
		/* a fetch others are receiving as it arrives goes on without us */
		cache_client_gone(r);
		upstream_abort(r);
		r->reason = REASON_CLIENT_ABORT;
		req_account(r);
	}
	c->close_reason = err ? CLOSE_ERROR : CLOSE_CLIENT;
	if (err || c->in_request)
		conn_close(cn, err != 0);
	else
		conn_close_after_flush(cn, 0);
}

static void client_on_sent(struct conn *cn)
{
	struct client *c = container_of(cn, struct client, conn);

	if (c->in_request && c->req.up)
		upstream_client_drained(&c->req);
	else if (c->parse_blocked && !c->in_request && conn_out_pending(cn) <= OUT_HIGH) {
		c->parse_blocked = false;
		req_run(&c->req);
	}
}

static void client_on_timeout(struct conn *cn)
{
	struct client *c = container_of(cn, struct client, conn);
	struct request *r = &c->req;

	if (!c->in_request) {
		if (c->head_timer_armed && cn->in.len) {
			c->in_request = true;
			r->keep_alive = false;
			req_fail(r, 408, REASON_HEADER_TIMEOUT, "request head not received in time", true);
		} else {
			c->close_reason = CLOSE_IDLE;
			conn_close(cn, false); /* idle keep-alive, or never spoke */
		}
		return;
	}
	if (!r->body_done && !r->resp_started)
		req_fail(r, 408, REASON_BODY_TIMEOUT, "request body not received in time", true);
	else if (!r->body_done)
		conn_close(cn, true);
}

static void client_on_destroy(struct conn *cn)
{
	struct client *c = container_of(cn, struct client, conn);
	struct worker *w = cn->w;

	cache_client_gone(&c->req); /* before the abort, as in client_on_eof */
	upstream_abort(&c->req);
	cache_req_end(&c->req);
	limit_req_end(&c->req);
	reflex_req_end(&c->req);
	worker_gen_put(w, c->req.gen);
	c->req.gen = NULL;
	if (c->prev)
		c->prev->next = c->next;
	else
		w->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->n_clients--;
	STAT_SET(w->stats.conn_open, w->n_clients);
	STAT_INC(w->stats.conn_closed[c->close_reason]);
	buf_free(&c->req.head);
	buf_free(&c->req.up_head);
	free(c->hdrs);
	free(c);
}

static const struct conn_ops client_ops = {
	.on_recv = client_on_recv,
	.on_eof = client_on_eof,
	.on_sent = client_on_sent,
	.on_timeout = client_on_timeout,
	.on_destroy = client_on_destroy,
};
