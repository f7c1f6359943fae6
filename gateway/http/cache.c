#include "http/cache.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#define XXH_STATIC_LINKING_ONLY /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "core/log.h"
#include "http/cache_redis.h"
#include "http/cache_rules.h"
#include "http/cache_store.h"
#include "http/respond.h"
#include "http/upstream.h"
#include "http/worker.h"


/* How long a "recently uncacheable" marker keeps misses of a key from
 * waiting for each other (Varnish's hit-for-miss). */
#define PASS_TTL_MS 10000
/* How long a stale object with a validator is kept for revalidation, and
 * how long any stale object is kept for clients that accept stale ones
 * (max-stale); the byte budget evicts them first anyway (SIEVE: stale
 * objects are not hit). */
#define VALIDATOR_KEEP_MS 3600000
#define STALE_KEEP_MS 300000
#define URL_MAX 4096
/* An opted-in POST is keyed by its body, which must be buffered first; the
 * client's recv pauses beyond 256 KiB buffered (req.c), so no more. */
#define POST_BODY_CAP (192 * 1024)
#define VARY_NAMES_MAX 512

enum cache_access { CA_NONE, CA_HIT, CA_MISS, CA_STALE, CA_BYPASS };
enum wake { WAKE_RETRY = 1, WAKE_UPSTREAM = 2, WAKE_STREAM = 3 };

/* A leader's response shared with its waiters while it arrives: the
 * leader copies the payload into `body` (preallocated: the Content-Length,
 * or max_object for a chunked or close-delimited one, of which only what
 * arrives is touched) and publishes `avail`; each waiter's worker sends
 * [sent, avail) straight from `body` when told (a task through its
 * mailbox), chunk-framed when the length is unknown. Freed with the last
 * reference: the leader's, each waiter's, each send in flight, each task
 * queued. */
struct cache_stream {
	uint32_t refs;
	int state;    /* 0 arriving, 1 complete, -1 failed (atomic) */
	size_t avail; /* body bytes in (atomic: release by the leader, before state) */
	size_t total; /* the Content-Length; unknown (0) when `chunked` */
	size_t cap;
	bool chunked; /* the length is known at the end only */
	int status;
	char *head; /* the stored head block (status line + fields) */
	size_t head_len;
	char *body;
	/* Vary: the names (lower case, comma-joined) and the leader's request's
	 * values of them (variant_key with generation 0); a waiter whose
	 * values differ goes upstream instead of taking this response */
	char *vary;
	size_t vary_len;
	struct cache_key vary_fp;
	struct stream_sub *subs; /* pushed at the head, freed with the stream */
};

struct stream_sub {
	struct stream_sub *next;
	struct cache_stream *s;
	struct worker *w;
	uint64_t ticket;
	uint8_t queued; /* a task is posted and has not run yet */
	struct worker_task task;
};

struct cache_wait {
	struct cache_waiter base; /* in the store's list until the leader finishes */
	struct worker_task task;
	struct worker *w;
	uint64_t ticket;
	int result;
};

struct cache_req {
	struct request *r;
	struct worker *w;
	struct cache_key primary, key;
	char *url;
	size_t url_len;
	struct cache_req_facts rq;
	enum cache_access access;
	char cs[160]; /* Cache-Status parameters after "reflex; " */

	/* coalescing */
	bool leader, finished;
	struct cache_key claim_key;
	bool waiting, no_coalesce;
	int wake_result;
	uint64_t ticket;
	struct timer timer;
	struct cache_req *wnext, *wprev;

	/* streaming: the leader's stream (stream_out) or the one a waiter
	 * sends from (stream_in) */
	struct cache_stream *stream_out, *stream_in;
	bool streaming;
	size_t stream_sent;

	/* an object that needs revalidation (or may answer on error) */
	struct cache_entry *stale;
	bool revalidating;
	bool answered;	     /* the client got its answer from the cache */
	bool bg_refresh;     /* stale-while-revalidate: this (detached) request refreshes stale */
	bool refresh_failed; /* ... and the origin did not give a usable answer */
	bool head_get;	     /* a HEAD miss forwarded as GET (r->up_get): stored, no body relayed */
	uint64_t purge_gen;  /* purges before the fetch (cache_store_purged_since) */
	bool invalidate;     /* unsafe method: drop the URL after a success */
	bool lookup_done;
	bool store_ok;
	bool post;	/* an opted-in POST, keyed by its body */
	bool body_wait; /* ... whose body is still arriving */

	/* L2: a lookup in flight, and the keys already asked for */
	struct l2_op *l2_op;
	struct cache_key l2_tried[2];
	unsigned n_l2_tried;

	/* the response being stored */
	bool filling;
	/* its Age (RFC 9111 §4.2.3): the stored head leaves Age out (it is
	 * recomputed per hit), so the value is carried here to store() */
	bool up_has_age;
	uint32_t up_age_s;
	int64_t req_time_ms;
	struct buf head, body;
	enum cache_nostore nostore;
};

/* A stale-while-revalidate refresh: a request of its own, owned by the
 * worker and by no client connection. Its client has no socket
 * (c.conn.fd == -1, never started): the request is marked detached, so
 * req.c hands its end to cache_refresh_resume / cache_refresh_failed
 * instead of the step table, and nothing is ever written to it (the
 * cache swallows the response: cache_respond_head returns true). */
struct cache_refresh {
	struct client c; /* c.req is the refresh */
	struct cache_refresh *next, *prev;
	/* The memory goes back from a task: the end can come from inside
	 * upstream.c (req_fail, req_resume), whose callers may still read the
	 * request after it returns. */
	struct worker_task free_task;
	bool ended;
	bool adopted; /* a leader's fetch whose client left (cache_client_gone) */
};

/* Per worker thread: the requests waiting for another's fetch, those
 * sending from another's fetch while it arrives, and the refreshes in
 * flight. */
static __thread struct cache_req *tls_waiting, *tls_streaming;
static __thread struct cache_refresh *tls_refreshes;
static __thread uint64_t tls_ticket;

/* Refreshes started, failed (the stale object stays), cancelled by a
 * drain: process-wide, for GET /cache (atomics). */
static uint64_t g_refreshes, g_refresh_failures, g_refresh_cancelled;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const struct config *cfg_of(const struct request *r)
{
	return r->gen ? r->gen->cfg : r->c->conn.w->cfg;
}

static bool method_is(struct http_str m, const char *lit)
{
	size_t n = strlen(lit);

	return m.len == n && memcmp(m.p, lit, n) == 0;
}

/* ---- keys -------------------------------------------------------------------- */

static struct cache_key key_of(const void *p, size_t n)
{
	XXH128_hash_t h = XXH3_128bits(p, n);

	return (struct cache_key){.lo = h.low64, .hi = h.high64};
}

static bool key_eq(struct cache_key a, struct cache_key b)
{
	return a.lo == b.lo && a.hi == b.hi;
}

/* "host/path?query", normalised; the text of the primary key (after
 * "GET http "). Returns the length or -1. */
static int url_norm(const char *host, size_t hl, const char *path, size_t pl, char *out, size_t cap)
{
	int a = cache_norm_host(host, hl, out, cap);
	if (a < 0)
		return -1;
	int b = cache_norm_path(path, pl, out + a, cap - (size_t)a);
	return b < 0 ? -1 : a + b;
}

static struct cache_key primary_key(const char *method, const char *url, size_t len)
{
	char buf[URL_MAX + 32];
	size_t ml = strlen(method); /* "GET" or "HEAD": no printf per request */
	char *o = mempcpy(buf, method, ml);

	o = mempcpy(o, " http ", 6);
	memcpy(o, url, len);
	return key_of(buf, (size_t)(o - buf) + len);
}

/* The value of every request field `name`, joined by ",", with optional
 * whitespace around elements removed (so "a, b" and "a,b" key alike). */
static void vary_value(const struct http_request *h, const char *name, size_t nl, XXH3_state_t *st)
{
	for (unsigned i = 0; i < h->n_headers; i++) {
		const struct http_header *f = &h->headers[i];
		if (f->name.len != nl || strncasecmp(f->name.p, name, nl) != 0)
			continue;
		const char *p = f->value.p, *end = p + f->value.len;
		while (p < end) {
			while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
				p++;
			const char *s = p;
			while (p < end && *p != ',')
				p++;
			const char *e = p;
			while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			if (e > s) {
				XXH3_128bits_update(st, s, (size_t)(e - s));
				XXH3_128bits_update(st, ",", 1);
			}
		}
	}
}

/* The key of the variant for this request: the primary key, the marker's
 * generation and the values of the fields it names. */
static struct cache_key variant_key(const struct cache_key *primary, uint64_t gen,
				    const char *names, size_t len, const struct http_request *h)
{
	XXH3_state_t st;

	XXH3_128bits_reset(&st);
	XXH3_128bits_update(&st, primary, sizeof(*primary));
	XXH3_128bits_update(&st, &gen, sizeof(gen));
	size_t i = 0;
	while (i < len) {
		size_t s = i;
		while (i < len && names[i] != ',')
			i++;
		XXH3_128bits_update(&st, names + s, i - s);
		XXH3_128bits_update(&st, ":", 1);
		vary_value(h, names + s, i - s, &st);
		XXH3_128bits_update(&st, "\n", 1);
		i++;
	}
	XXH128_hash_t d = XXH3_128bits_digest(&st);
	return (struct cache_key){.lo = d.low64, .hi = d.high64};
}

/* Vary's field names, lower case, comma-joined, no spaces. -1: too long. */
static int vary_names(struct http_str v, char *out, size_t cap, bool *star)
{
	size_t o = 0;
	const char *p = v.p, *end = v.p + v.len;

	while (p < end) {
		while (p < end && (*p == ' ' || *p == '\t' || *p == ','))
			p++;
		const char *s = p;
		while (p < end && *p != ',' && *p != ' ' && *p != '\t')
			p++;
		if (p == s)
			continue;
		if (p - s == 1 && *s == '*')
			*star = true;
		if (o + (size_t)(p - s) + 2 > cap)
			return -1;
		if (o)
			out[o++] = ',';
		for (const char *q = s; q < p; q++)
			out[o++] = (char)((*q >= 'A' && *q <= 'Z') ? *q + 32 : *q);
	}
	out[o] = 0;
	return (int)o;
}

/* ---- the stored head ------------------------------------------------------ */

static bool next_line(const char **p, const char *end, struct http_str *name,
		      struct http_str *value)
{
	const char *s = *p;
	const char *eol = memchr(s, '\n', (size_t)(end - s));

	if (!eol || eol == s)
		return false;
	*p = eol + 1;
	const char *le = eol > s && eol[-1] == '\r' ? eol - 1 : eol;
	const char *colon = memchr(s, ':', (size_t)(le - s));
	if (!colon) {
		name->p = s;
		name->len = 0;
		value->p = s;
		value->len = (size_t)(le - s);
		return true;
	}
	name->p = s;
	name->len = (size_t)(colon - s);
	const char *v = colon + 1;
	while (v < le && (*v == ' ' || *v == '\t'))
		v++;
	value->p = v;
	value->len = (size_t)(le - v);
	return true;
}

/* Read the facts the rules need from a stored head (status line + fields). */
static void facts_of_head(const char *head, size_t len, struct cache_resp_facts *rs,
			  struct cache_entry_spec *sp, const char *tag_header)
{
	const char *p = head, *end = head + len;
	struct http_str n, v;

	*rs = (struct cache_resp_facts){0};
	if (len > 12)
		rs->status = atoi(head + 9);
	next_line(&p, end, &n, &v); /* status line */
	while (p < end && next_line(&p, end, &n, &v)) {
		if (http_str_eq(n, "Cache-Control")) {
			cache_cc_parse(&rs->cc, v.p, v.len);
		} else if (http_str_eq(n, "Expires")) {
			int64_t x = cache_http_date(v.p, v.len);
			/* two that disagree: stale (RFC 9111 §4.2.1) */
			rs->expires_ms = rs->has_expires && rs->expires_ms != x ? -1 : x;
			rs->has_expires = true;
		} else if (http_str_eq(n, "Date")) {
			int64_t d = cache_http_date(v.p, v.len);
			if (d >= 0) {
				rs->has_date = true;
				rs->date_ms = d;
			}
		} else if (http_str_eq(n, "Age")) {
			/* atoll took "-99999" (younger than new) and overflowed on
			 * 20 digits; an invalid Age is ignored (RFC 9111 §5.1) */
			int64_t a = cache_age_value(v.p, v.len);
			if (a >= 0 && !rs->has_age) {
				rs->has_age = true;
				rs->age_s = a;
			}
		} else if (http_str_eq(n, "ETag")) {
			rs->has_etag = true;
			if (sp) {
				sp->etag_off = (size_t)(v.p - head);
				sp->etag_len = v.len;
			}
		} else if (http_str_eq(n, "Last-Modified")) {
			rs->has_last_modified = true;
			if (sp) {
				sp->lm_off = (size_t)(v.p - head);
				sp->lm_len = v.len;
			}
		} else if (http_str_eq(n, "Vary")) {
			char tmp[VARY_NAMES_MAX];
			bool star = false;
			if (vary_names(v, tmp, sizeof(tmp), &star) < 0 || star)
				rs->vary_star = true;
			rs->has_vary = true;
		} else if (sp && tag_header[0] && http_str_eq(n, tag_header)) {
			sp->tags = v.p;
			sp->tags_len = v.len;
		}
	}
}

/* Response fields never stored: per connection, recomputed on output, or
 * per client (Set-Cookie). */
static bool skip_stored_field(struct http_str n)
{
	static const char *const names[] = {
		"Connection",	     "Keep-Alive",   "Transfer-Encoding",
		"Content-Length",    "TE",	     "Trailer",
		"Upgrade",	     "Age",	     "X-Request-ID",
		"Set-Cookie",	     "Cache-Status", "Proxy-Connection",
		"Proxy-Authenticate"};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (http_str_eq(n, names[i]))
			return true;
	return false;
}

static bool named_by_connection(const struct http_header *h, unsigned n, struct http_str name)
{
	char tok[64];

	if (name.len >= sizeof(tok))
		return false;
	memcpy(tok, name.p, name.len);
	tok[name.len] = 0;
	for (unsigned i = 0; i < n; i++)
		if (http_str_eq(h[i].name, "Connection") && http_list_has_token(h[i].value, tok))
			return true;
	return false;
}

static int build_head(struct buf *b, const struct http_response *res)
{
	buf_reset(b, 16384);
	buf_appendf(b, "HTTP/1.1 %d %.*s\r\n", res->status, (int)res->reason.len, res->reason.p);
	for (unsigned i = 0; i < res->n_headers; i++) {
		const struct http_header *h = &res->headers[i];
		if (skip_stored_field(h->name) ||
		    named_by_connection(res->headers, res->n_headers, h->name))
			continue;
		buf_append(b, h->name.p, h->name.len);
		buf_append(b, ": ", 2);
		buf_append(b, h->value.p, h->value.len);
		buf_append(b, "\r\n", 2);
	}
	return buf_append(b, "", 0);
}

/* ---- waiting for another request's fetch ------------------------------------ */

static void wait_unlink(struct cache_req *cr)
{
	if (!cr->waiting)
		return;
	if (cr->wprev)
		cr->wprev->wnext = cr->wnext;
	else
		tls_waiting = cr->wnext;
	if (cr->wnext)
		cr->wnext->wprev = cr->wprev;
	cr->wnext = cr->wprev = NULL;
	cr->waiting = false;
	timer_disarm(&cr->w->loop.timers, &cr->timer);
}

static void stream_get(void *p)
{
	struct cache_stream *s = p;

	__atomic_add_fetch(&s->refs, 1, __ATOMIC_ACQ_REL);
}

static void stream_put(void *p)
{
	struct cache_stream *s = p;

	if (!s || __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL))
		return;
	struct stream_sub *sub = s->subs;
	while (sub) {
		struct stream_sub *next = sub->next;
		free(sub);
		sub = next;
	}
	free(s->head);
	free(s->body);
	free(s->vary);
	free(s);
}

/* Tell every subscribed worker that there is news (one task at a time per
 * subscriber; it reads whatever arrived by then). */
static void stream_notify(struct cache_stream *s)
{
	/* the new avail/state must be visible before we look for subscribers,
	 * as a new subscriber pushes itself before it reads avail (Dekker) */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	for (struct stream_sub *sub = __atomic_load_n(&s->subs, __ATOMIC_ACQUIRE); sub;
	     sub = sub->next) {
		uint8_t zero = 0;
		if (__atomic_compare_exchange_n(&sub->queued, &zero, 1, false, __ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED)) {
			stream_get(s); /* dropped by the task */
			worker_post(sub->w, &sub->task);
		}
	}
}

static void leader_finish(struct cache_req *cr, int result);

/* The leader's stream ends: complete (1) or failed (-1). */
static void stream_end(struct cache_req *cr, int state)
{
	struct cache_stream *s = cr->stream_out;

	if (!s)
		return;
	cr->stream_out = NULL;
	/* The claim hands its stream to new claimers (on any worker) without
	 * a reference of its own: it must be gone before ours is dropped, or
	 * a claimer takes a stream that is being freed. Nobody is queued on a
	 * claim that has a stream, so the result reaches no one. */
	leader_finish(cr, state > 0 ? WAKE_RETRY : WAKE_UPSTREAM);
	__atomic_store_n(&s->state, state, __ATOMIC_RELEASE); /* after avail: pumps read it first */
	stream_notify(s);
	stream_put(s);
}

static void list_unlink(struct cache_req **head, struct cache_req *cr)
{
	if (cr->wprev)
		cr->wprev->wnext = cr->wnext;
	else
		*head = cr->wnext;
	if (cr->wnext)
		cr->wnext->wprev = cr->wprev;
	cr->wnext = cr->wprev = NULL;
}

static void on_wake_task(struct worker *w, struct worker_task *t)
{
	struct cache_wait *wt = container_of(t, struct cache_wait, task);
	struct cache_req *cr = tls_waiting;

	while (cr && cr->ticket != wt->ticket)
		cr = cr->wnext;
	if (cr) {
		wait_unlink(cr);
		cr->wake_result = wt->result;
		cr->stream_in = wt->base.stream; /* the reference moves to the request */
		wt->base.stream = NULL;
		req_resume(cr->r);
	}
	stream_put(wt->base.stream);
	free(wt);
}

/* Runs on the leader's thread: hand the news to the waiter's worker. */
static void on_leader_done(struct cache_waiter *base, int result)
{
	struct cache_wait *wt = container_of(base, struct cache_wait, base);

	wt->result = result;
	worker_post(wt->w, &wt->task);
}

static void on_wait_timeout(struct timer *t)
{
	struct cache_req *cr = container_of(t, struct cache_req, timer);

	wait_unlink(cr);
	cr->no_coalesce = true;
	cr->wake_result = WAKE_UPSTREAM;
	req_resume(cr->r);
}

static void leader_finish(struct cache_req *cr, int result)
{
	if (!cr->leader || cr->finished)
		return;
	cr->finished = true;
	cache_store_finish(&cr->claim_key, result);
}

/* ---- answering from the cache ------------------------------------------------ */

static void set_cs(struct cache_req *cr, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void set_cs(struct cache_req *cr, const char *fmt, ...)
{
	va_list ap;

	if (!strchr(fmt, '%')) { /* a plain hit: no printf on the hit path */
		size_t n = strlen(fmt);
		if (n >= sizeof(cr->cs))
			n = sizeof(cr->cs) - 1;
		memcpy(cr->cs, fmt, n);
		cr->cs[n] = 0;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(cr->cs, sizeof(cr->cs), fmt, ap);
	va_end(ap);
}

static void count(struct cache_req *cr, enum cache_access a)
{
	struct stats_worker *st = &cr->w->stats;

	cr->access = a;
	switch (a) {
	case CA_HIT:
		STAT_INC(st->cache_hits);
		break;
	case CA_MISS:
		STAT_INC(st->cache_misses);
		break;
	case CA_STALE:
		STAT_INC(st->cache_stale);
		break;
	case CA_BYPASS:
		STAT_INC(st->cache_bypass);
		break;
	default:
		break;
	}
}

/* Does the client's conditional match the stored object (RFC 9110 §13.2.2)? */
static bool client_not_modified(const struct request *r, const struct cache_entry *e)
{
	const struct http_request *h = &r->h;
	const struct http_header *inm = http_find_header(h->headers, h->n_headers, "If-None-Match");

	if (e->status != 200)
		return false;
	if (inm)
		return e->etag &&
		       cache_etag_match(inm->value.p, inm->value.len, e->etag, e->etag_len);
	const struct http_header *ims =
		http_find_header(h->headers, h->n_headers, "If-Modified-Since");
	if (!ims || !e->last_modified)
		return false;
	int64_t since = cache_http_date(ims->value.p, ims->value.len);
	int64_t lm = cache_http_date(e->last_modified, e->last_modified_len);
	return since >= 0 && lm >= 0 && lm <= since;
}

/* v in decimal at p; returns the bytes written (at most 20). */
static size_t put_int(char *p, int64_t v)
{
	uint64_t n = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	char t[20];
	size_t k = 0, i = 0;

	if (v < 0)
		p[i++] = '-';
	do
		t[k++] = (char)('0' + n % 10);
	while ((n /= 10));
	while (k)
		p[i++] = t[--k];
	return i;
}

#define PUT_LIT(o, s) ((o) = mempcpy((o), (s), sizeof(s) - 1))

/* Queue the response for a stored object: head (copied) and body (sent
 * from the entry, which stays referenced until the send completes). A hit
 * copies the stored block as it is and adds its per-hit fields without
 * printf: one reservation, a few copies. */
static void serve(struct request *r, struct cache_entry *e, int64_t now)
{
	struct cache_req *cr = r->cache;
	struct client *c = r->c;
	struct buf *b = conn_outbuf(&c->conn);
	size_t mark = b->len;
	int64_t age_ms = cache_current_age(&e->meta, now);
	bool not_modified = client_not_modified(r, e);
	bool no_body = r->is_head || not_modified || e->status == 204 || e->status == 304 ||
		       e->status < 200;
	const char *lines = memchr(e->head, '\n', e->head_len);
	/* the stored block is the status line and complete field lines */
	bool whole = !not_modified && e->head_len && e->head[e->head_len - 1] == '\n';

	lines = lines ? lines + 1 : e->head + e->head_len;
	if (not_modified) {
		buf_appends(b, "HTTP/1.1 304 Not Modified\r\n");
		STAT_INC(cr->w->stats.cache_not_modified);
	} else if (whole) {
		buf_append(b, e->head, e->head_len);
		lines = e->head + e->head_len;
	} else {
		buf_append(b, e->head, (size_t)(lines - e->head));
	}
	const char *p = lines, *end = e->head + e->head_len;
	struct http_str n, v;
	while (p < end) {
		const char *ls = p;
		if (!next_line(&p, end, &n, &v))
			break;
		/* a 304 carries the validators and caching fields, not the content ones */
		if (not_modified &&
		    (http_str_eq(n, "Content-Type") || http_str_eq(n, "Content-Encoding") ||
		     http_str_eq(n, "Content-Language") || http_str_eq(n, "Content-Range")))
			continue;
		buf_append(b, ls, (size_t)(p - ls));
	}
	int64_t ttl = (e->meta.lifetime_ms - age_ms) / 1000;
	size_t cs_len = strlen(cr->cs), id_len = strlen(r->id);
	r->close_after = r->close_after || !r->keep_alive || c->conn.w->draining || !r->body_done;
	/* literals ~120 bytes, three numbers of at most 20 */
	if (buf_reserve(b, 256 + cs_len + id_len) == 0) {
		char *o = buf_head(b) + b->len, *o0 = o;
		PUT_LIT(o, "Age: ");
		o += put_int(o, age_ms / 1000);
		PUT_LIT(o, "\r\nCache-Status: reflex; ");
		o = mempcpy(o, cr->cs, cs_len);
		PUT_LIT(o, "; ttl=");
		o += put_int(o, ttl);
		PUT_LIT(o, "\r\n");
		if (!not_modified && e->status != 204 && e->status >= 200) {
			PUT_LIT(o, "Content-Length: ");
			o += put_int(o, (int64_t)e->body_len);
			PUT_LIT(o, "\r\n");
		}
		PUT_LIT(o, "Via: 1.1 reflex\r\nX-Request-ID: ");
		o = mempcpy(o, r->id, id_len);
		PUT_LIT(o, "\r\n");
		if (r->close_after)
			PUT_LIT(o, "Connection: close\r\n");
		else if (r->http10)
			PUT_LIT(o, "Connection: keep-alive\r\n");
		PUT_LIT(o, "\r\n");
		b->len += (size_t)(o - o0);
	}
	r->bytes_out += b->len - mark;
	conn_wrote(&c->conn);
	if (!no_body && e->body_len) {
		cache_entry_get(e);
		conn_write_ext(&c->conn, e->body, e->body_len, cache_entry_release, e);
		r->bytes_out += e->body_len;
	}
	r->status = not_modified ? 304 : e->status;
	r->out = RESP_OUT_NONE;
	cr->answered = true;
}

/* A complete answer: the request moves on to respond. An opted-in POST's
 * body (all buffered: it was keyed) is consumed, so keep-alive goes on. */
static void serve_done(struct request *r, struct cache_entry *e, int64_t now)
{
	struct cache_req *cr = r->cache;

	if (cr->post && !r->body_done && !r->up && r->c->conn.in.len >= r->body_left) {
		buf_consume(&r->c->conn.in, (size_t)r->body_left);
		r->bytes_in += r->body_left;
		r->body_bytes = r->body_left;
		r->body_left = 0;
		r->body_done = true;
	}
	serve(r, e, now);
	r->resp_started = r->resp_done = true;
}

/* ---- sending from a leader's response while it arrives ------------------------ */

/* Send what arrived since the last call. 1: the response is complete (the
 * request may finish), 0: more to come, -1: the leader's fetch failed (the
 * request was failed: the client sees a truncated response). */
static int stream_pump(struct cache_req *cr)
{
	struct request *r = cr->r;
	struct cache_stream *s = cr->stream_in;
	/* state before avail: a complete state means avail is final */
	int state = __atomic_load_n(&s->state, __ATOMIC_ACQUIRE);
	size_t avail = __atomic_load_n(&s->avail, __ATOMIC_ACQUIRE);
	bool framed = s->chunked && !r->http10; /* a 1.0 client reads to the close */

	if (avail > cr->stream_sent) {
		size_t n = avail - cr->stream_sent;
		if (framed) {
			char hdr[24];
			int hl = snprintf(hdr, sizeof(hdr), "%zx\r\n", n);
			conn_write(&r->c->conn, hdr, (size_t)hl);
			r->bytes_out += (size_t)hl + 2;
		}
		stream_get(s); /* until the send completes */
		conn_write_ext(&r->c->conn, s->body + cr->stream_sent, n, stream_put, s);
		if (framed)
			conn_write(&r->c->conn, "\r\n", 2);
		r->bytes_out += n;
		cr->stream_sent = avail;
	}
	if (s->chunked ? state == 1 : cr->stream_sent == s->total) {
		if (framed) {
			conn_write(&r->c->conn, "0\r\n\r\n", 5);
			r->bytes_out += 5;
		}
		list_unlink(&tls_streaming, cr);
		cr->streaming = false;
		cr->stream_in = NULL;
		stream_put(s);
		r->resp_done = true;
		return 1;
	}
	if (state < 0) {
		list_unlink(&tls_streaming, cr);
		cr->streaming = false;
		cr->stream_in = NULL;
		stream_put(s);
		req_fail(r, 502, REASON_UPSTREAM_TRUNCATED, "the shared upstream response failed", true);
		return -1;
	}
	return 0;
}

static void on_stream_task(struct worker *w, struct worker_task *t)
{
	struct stream_sub *sub = container_of(t, struct stream_sub, task);
	struct cache_stream *s = sub->s;
	struct cache_req *cr = tls_streaming;

	__atomic_store_n(&sub->queued, 0, __ATOMIC_RELEASE); /* later news posts again */
	while (cr && (cr->stream_in != s || cr->ticket != sub->ticket))
		cr = cr->wnext;
	if (cr && stream_pump(cr) == 1)
		req_resume(cr->r);
	stream_put(s); /* the task's reference */
}

/* A woken waiter answers from the leader's stream: head now, body as it
 * arrives. Returns false when the stream already failed (go upstream). */
static bool stream_start(struct request *r)
{
	struct cache_req *cr = r->cache;
	struct cache_stream *s = cr->stream_in;
	struct client *c = r->c;
	struct stream_sub *sub = NULL;

	if (__atomic_load_n(&s->state, __ATOMIC_ACQUIRE) < 0 ||
	    (s->vary_len &&
	     !key_eq(variant_key(&cr->primary, 0, s->vary, s->vary_len, &r->h), s->vary_fp)) ||
	    (!r->is_head && !(sub = calloc(1, sizeof(*sub))))) {
		/* failed, or another variant than ours: upstream at once */
		cr->stream_in = NULL;
		stream_put(s);
		return false;
	}
	struct buf *b = conn_outbuf(&c->conn);
	size_t mark = b->len;
	buf_append(b, s->head, s->head_len);
	set_cs(cr, "hit; detail=coalesced-stream");
	count(cr, CA_HIT);
	r->close_after = r->close_after || !r->keep_alive || c->conn.w->draining || !r->body_done;
	if (s->chunked && r->http10 && !r->is_head)
		r->close_after = true; /* the body ends where the connection does */
	buf_appendf(b, "Age: 0\r\nCache-Status: reflex; %s\r\n", cr->cs);
	if (!s->chunked)
		buf_appendf(b, "Content-Length: %zu\r\n", s->total);
	else if (!r->http10)
		buf_appends(b, "Transfer-Encoding: chunked\r\n");
	buf_appendf(b, "Via: 1.1 reflex\r\nX-Request-ID: %s\r\n", r->id);
	if (r->close_after)
		buf_appends(b, "Connection: close\r\n");
	else if (r->http10)
		buf_appends(b, "Connection: keep-alive\r\n");
	buf_appends(b, "\r\n");
	r->bytes_out += b->len - mark;
	conn_wrote(&c->conn);
	r->status = s->status;
	r->out = RESP_OUT_NONE;
	r->resp_started = true;
	r->resp_mark = mark;
	r->resp_sends = c->conn.sends;
	cr->lookup_done = true;
	if (r->is_head) { /* the head is the whole answer */
		cr->stream_in = NULL;
		stream_put(s);
		r->resp_done = true;
		return true;
	}
	cr->streaming = true;
	cr->stream_sent = 0;
	cr->ticket = ++tls_ticket;
	cr->wprev = NULL;
	cr->wnext = tls_streaming;
	if (tls_streaming)
		tls_streaming->wprev = cr;
	tls_streaming = cr;
	sub->s = s;
	sub->w = cr->w;
	sub->ticket = cr->ticket;
	sub->task.fn = on_stream_task;
	sub->next = __atomic_load_n(&s->subs, __ATOMIC_RELAXED);
	while (!__atomic_compare_exchange_n(&s->subs, &sub->next, sub, true, __ATOMIC_ACQ_REL,
					    __ATOMIC_RELAXED))
		;
	stream_pump(cr);
	return true;
}

/* ---- the upstream request --------------------------------------------------- */

static bool is_conditional_field(struct http_str n)
{
	return http_str_eq(n, "If-None-Match") || http_str_eq(n, "If-Modified-Since") ||
	       http_str_eq(n, "If-Match") || http_str_eq(n, "If-Unmodified-Since") ||
	       http_str_eq(n, "If-Range");
}

/* Rewrite r->up_head without the client's conditionals (the cache wants a
 * full response to store; it answers the client's conditional itself) and
 * with ours when revalidating e. */
static void up_head_conditionals(struct request *r, const struct cache_entry *e)
{
	struct buf nb = {0};
	const char *p = buf_head(&r->up_head), *end = p + r->up_head.len;
	struct http_str n, v;
	const char *ls = p;

	if (!next_line(&p, end, &n, &v))
		return;
	buf_append(&nb, ls, (size_t)(p - ls));
	while (p < end) {
		ls = p;
		if (!next_line(&p, end, &n, &v))
			break;
		if (!n.len && !v.len) /* the blank line: ours go before it */
			break;
		if (!is_conditional_field(n))
			buf_append(&nb, ls, (size_t)(p - ls));
	}
	if (e && e->etag)
		buf_appendf(&nb, "If-None-Match: %.*s\r\n", (int)e->etag_len, e->etag);
	if (e && e->last_modified)
		buf_appendf(&nb, "If-Modified-Since: %.*s\r\n", (int)e->last_modified_len,
			    e->last_modified);
	if (buf_appends(&nb, "\r\n") != 0) {
		buf_free(&nb);
		return;
	}
	buf_free(&r->up_head);
	r->up_head = nb;
}

/* A HEAD miss goes upstream as a GET, so the object can be stored (nginx's
 * proxy_cache_convert_head): "HEAD /p HTTP/1.1" → "GET /p HTTP/1.1".
 * Returns 0, or -1 (left as it was). */
static int up_head_as_get(struct buf *up)
{
	struct buf nb = {0};

	if (up->len < 5 || memcmp(buf_head(up), "HEAD ", 5) != 0)
		return -1;
	if (buf_append(&nb, "GET ", 4) != 0 ||
	    buf_append(&nb, buf_head(up) + 5, up->len - 5) != 0) {
		buf_free(&nb);
		return -1;
	}
	buf_free(up);
	*up = nb;
	return 0;
}

/* ---- stale-while-revalidate: the refresh in the background ------------------ */

static void rebase_str(struct http_str *v, const char *from, const char *to, size_t n)
{
	if (v->p >= from && v->p < from + n)
		v->p = to + (v->p - from);
}

/* rf's client stands in for r's on worker w (no socket, r's peer) with a
 * copy of r's head in its request; head_rebase points the views at it once
 * the request is filled in. -ENOMEM leaves what to free in rf. */
static int detached_client_init(struct cache_refresh *rf, const struct request *r,
				struct worker *w)
{
	struct client *c = &rf->c;

	c->conn.w = w;
	c->conn.fd = -1;
	memcpy(c->peer, r->c->peer, sizeof(c->peer));
	c->in_request = true;
	c->hdrs = calloc(r->h.n_headers ? r->h.n_headers : 1, sizeof(*c->hdrs));
	if (!c->hdrs || buf_append(&c->req.head, buf_head(&r->head), r->head.len) != 0)
		return -ENOMEM;
	return 0;
}

/* rf joins this thread's detached fetches (cache_worker_drain ends them). */
static void refresh_link(struct cache_refresh *rf)
{
	rf->next = tls_refreshes;
	if (tls_refreshes)
		tls_refreshes->prev = rf;
	tls_refreshes = rf;
}

/* q's parsed head (r's, views and header array) pointed at q's copy of r's
 * head buffer; hdrs holds r->h.n_headers entries. */
static void head_rebase(struct request *q, const struct request *r, struct http_header *hdrs)
{
	const char *from = buf_head(&r->head), *to = buf_head(&q->head);
	size_t n = r->head.len;

	q->h = r->h;
	q->h.headers = hdrs;
	q->h.max_headers = r->h.n_headers;
	memcpy(hdrs, r->h.headers, r->h.n_headers * sizeof(*hdrs));
	rebase_str(&q->h.method, from, to, n);
	rebase_str(&q->h.target, from, to, n);
	rebase_str(&q->h.path, from, to, n);
	rebase_str(&q->h.authority, from, to, n);
	rebase_str(&q->h.host, from, to, n);
	for (unsigned i = 0; i < q->h.n_headers; i++) {
		rebase_str(&hdrs[i].name, from, to, n);
		rebase_str(&hdrs[i].value, from, to, n);
	}
}

static void on_refresh_free(struct worker *w, struct worker_task *t)
{
	struct cache_refresh *rf = container_of(t, struct cache_refresh, free_task);
	struct request *q = &rf->c.req;

	worker_gen_put(w, q->gen);
	buf_free(&q->head);
	buf_free(&q->up_head);
	free(rf->c.hdrs);
	free(rf);
}

/* The refresh is over (stored, refused, failed or cancelled): the
 * exchange is dropped, the entry's refresh flag cleared, the memory freed
 * from a task. */
static void refresh_end(struct cache_refresh *rf, bool failed)
{
	struct request *q = &rf->c.req;
	struct cache_req *cr = q->cache;

	if (rf->ended)
		return;
	rf->ended = true;
	if (rf->prev)
		rf->prev->next = rf->next;
	else
		tls_refreshes = rf->next;
	if (rf->next)
		rf->next->prev = rf->prev;
	rf->next = rf->prev = NULL;
	if (rf->adopted) {
		if (failed && cr)
			log_info("cache: the fetch of %s (its client left) failed", cr->url);
	} else if (failed || (cr && cr->refresh_failed)) {
		__atomic_add_fetch(&g_refresh_failures, 1, __ATOMIC_RELAXED);
		if (cr)
			log_info("cache: refresh of %s failed; the stale object stays", cr->url);
	}
	upstream_abort(q); /* nothing left normally; a drain cancels here */
	cache_req_end(q);  /* lets the next request refresh the key again */
	rf->free_task.fn = on_refresh_free;
	worker_post(rf->c.conn.w, &rf->free_task);
}

void cache_refresh_resume(struct request *r)
{
	struct cache_refresh *rf = container_of(r->c, struct cache_refresh, c);

	if (r->resp_done) /* upstream.c: the response is complete (stored or not) */
		refresh_end(rf, false);
}

void cache_refresh_failed(struct request *r, int status)
{
	struct cache_refresh *rf = container_of(r->c, struct cache_refresh, c);

	(void)status;
	refresh_end(rf, true);
}

void cache_worker_drain(struct worker *w)
{
	(void)w; /* the list is this thread's */
	while (tls_refreshes) {
		if (!tls_refreshes->adopted)
			__atomic_add_fetch(&g_refresh_cancelled, 1, __ATOMIC_RELAXED);
		refresh_end(tls_refreshes, false);
	}
}

void cache_refresh_stats(uint64_t *started, uint64_t *failed, uint64_t *cancelled)
{
	*started = __atomic_load_n(&g_refreshes, __ATOMIC_RELAXED);
	*failed = __atomic_load_n(&g_refresh_failures, __ATOMIC_RELAXED);
	*cancelled = __atomic_load_n(&g_refresh_cancelled, __ATOMIC_RELAXED);
}

/* Start refreshing e (stale, inside stale-while-revalidate; its
 * `refreshing` flag is ours) for the request r that found it: a detached
 * request with a copy of r's head (Vary keys need its fields) and of its
 * upstream head (conditional when e has a validator; an opted-in POST
 * carries its body), on r's generation, pool and endpoint. r itself is
 * answered from e at once and goes on. False when nothing was started
 * (the caller clears the flag). */
static bool refresh_start(struct request *r, struct cache_entry *e)
{
	struct cache_req *cr = r->cache;
	struct worker *w = cr->w;
	struct cache_refresh *rf;
	struct cache_req *nc;

	if (w->draining || !r->gen || r->pool < 0 || !r->ep)
		return false;
	rf = calloc(1, sizeof(*rf));
	nc = calloc(1, sizeof(*nc));
	if (!rf || !nc)
		goto fail;
	struct client *c = &rf->c;
	struct request *q = &c->req;
	nc->url = malloc(cr->url_len + 1);
	if (detached_client_init(rf, r, w) != 0 || !nc->url || upstream_head_ready(r) != 0 ||
	    buf_append(&q->up_head, buf_head(&r->up_head), r->up_head.len) != 0)
		goto fail_bufs;
	/* the copy is the refresh's head: never rebuilt from q (no socket,
	 * no TLS of its own), only rewritten below */
	q->up_head_built = true;
	/* the head's views, moved to our copy */
	head_rebase(q, r, c->hdrs);
	if (r->is_head && up_head_as_get(&q->up_head) != 0)
		goto fail_bufs; /* a HEAD's response has no body to store */
	up_head_conditionals(q, e->meta.has_validator ? e : NULL);
	if (cr->post && !r->body_done &&
	    buf_append(&q->up_head, buf_head(&r->c->conn.in), (size_t)r->body_left) != 0)
		goto fail_bufs;

	q->c = c;
	q->detached = true;
	q->gen = r->gen;
	q->gen->refs++; /* the generation r was routed with: its pools hold r->ep */
	q->pool = r->pool;
	q->route = r->route;
	q->ep = r->ep;
	q->retryable = r->retryable;
	q->has_key = r->has_key;
	q->key = r->key;
	q->safe = true;
	q->keep_alive = true;
	q->body = HTTP_BODY_NONE;
	q->body_done = true;
	q->body_started = cr->post; /* the body rides in up_head: never replayed separately */
	q->t_choose_ms = w->loop.now;
	memcpy(q->id, r->id, sizeof(q->id));

	memcpy(nc->url, cr->url, cr->url_len + 1);
	nc->url_len = cr->url_len;
	nc->r = q;
	nc->w = w;
	nc->primary = cr->primary;
	nc->key = cr->key;
	nc->rq = cr->rq;
	nc->rq.is_head = false;
	nc->post = cr->post;
	timer_init(&nc->timer, on_wait_timeout);
	nc->req_time_ms = now_ms();
	nc->purge_gen = cache_store_purge_gen();
	cache_entry_get(e);
	nc->stale = e;
	nc->revalidating = e->meta.has_validator;
	nc->bg_refresh = true;
	nc->answered = true;
	nc->lookup_done = true;
	nc->store_ok = true;
	q->cache = nc;
	if (nc->revalidating)
		STAT_INC(w->stats.cache_revalidations);
	__atomic_add_fetch(&g_refreshes, 1, __ATOMIC_RELAXED);

	refresh_link(rf);
	upstream_start(q); /* may end it at once (no endpoint, socket error) */
	return true;
fail_bufs:
	buf_free(&rf->c.req.head);
	buf_free(&rf->c.req.up_head);
	free(rf->c.hdrs);
	free(nc->url);
fail:
	free(nc);
	free(rf);
	return false;
}

bool cache_client_gone(struct request *r)
{
	struct cache_req *cr = r->cache;
	struct worker *w;
	struct cache_refresh *rf;

	/* Only a leader whose response others are sending as it arrives: its
	 * waiters' clients already have the head, so the fetch must go on
	 * without ours, or they all get a truncated body because one client
	 * went away (anyone could cut a popular object short for everyone). */
	if (!cr || !cr->leader || cr->finished || !cr->filling || !cr->stream_out ||
	    !r->body_done || r->detached || !r->up)
		return false;
	w = cr->w;
	if (w->draining || !(rf = calloc(1, sizeof(*rf))))
		return false;
	struct client *c = &rf->c;
	struct request *q = &c->req;
	if (detached_client_init(rf, r, w) != 0)
		goto fail;
	/* the response state upstream.c relays with (framing, what is left,
	 * the chunk decoder), then what q owns on its own */
	struct buf head = q->head;
	*q = *r;
	q->head = head;
	q->up_head = (struct buf){0};
	q->replay = (struct buf){0};
	q->up = q->hedge = NULL;
	q->limit = NULL;
	/* the reflex state stays with r: a response being stored is never
	 * scanned (respond.c: cache_no_store), so nothing of it is needed */
	q->rx = NULL;
	q->q_next = q->q_prev = NULL;
	q->running = q->rerun = false;
	q->logged = true;
	q->c = c;
	q->detached = true;
	q->body_discard = true; /* nobody to relay to: the cache tees it */
	head_rebase(q, r, c->hdrs);
	if (upstream_move(r, q) != 0)
		goto fail;
	if (q->gen)
		q->gen->refs++; /* r's reference is put with its client */
	r->cache = NULL;
	cr->r = q;
	rf->adopted = true;
	refresh_link(rf);
	log_debug("cache: %s: the leader's client left; the fetch goes on for its waiters",
		  cr->url);
	return true;
fail:
	buf_free(&q->head);
	free(c->hdrs);
	free(rf);
	return false;
}

/* ---- the step ------------------------------------------------------------------ */

static struct cache_req *cr_new(struct request *r)
{
	const struct config *cfg = cfg_of(r);
	const struct http_request *h = &r->h;
	struct http_str host = h->authority.len ? h->authority : h->host;
	char url[URL_MAX];
	int ul;

	if (!cache_store_ready() && cache_store_init(cfg->cache.memory) != 0)
		return NULL;
	cache_store_thread_enter();
	l2_subscriber_start(&cfg->cache);
	ul = url_norm(host.p, host.len, h->path.p, h->path.len, url, sizeof(url));
	if (ul < 0)
		return NULL;
	struct cache_req *cr = calloc(1, sizeof(*cr));
	if (!cr)
		return NULL;
	cr->url = malloc((size_t)ul + 1);
	if (!cr->url) {
		free(cr);
		return NULL;
	}
	memcpy(cr->url, url, (size_t)ul);
	cr->url[ul] = 0;
	cr->url_len = (size_t)ul;
	cr->r = r;
	cr->w = r->c->conn.w;
	timer_init(&cr->timer, on_wait_timeout);
	cr->primary = primary_key("GET", cr->url, cr->url_len);
	cr->req_time_ms = loop_wall_ms(&cr->w->loop);
	cr->purge_gen = cache_store_purge_gen(); /* before anything goes upstream */

	struct cache_req_facts *rq = &cr->rq;
	bool has_cc = false;
	for (unsigned i = 0; i < h->n_headers; i++) {
		const struct http_header *f = &h->headers[i];
		if (http_str_eq(f->name, "Cache-Control")) {
			cache_cc_parse(&rq->cc, f->value.p, f->value.len);
			has_cc = true;
		} else if (http_str_eq(f->name, "Authorization")) {
			rq->authorization = true;
		} else if (http_str_eq(f->name, "Range")) {
			rq->range = true;
		} else if (http_str_eq(f->name, "Pragma") &&
			   http_list_has_token(f->value, "no-cache")) {
			rq->pragma_no_cache = true;
		}
	}
	if (rq->pragma_no_cache && !has_cc)
		rq->cc.no_cache = true; /* RFC 9111 §5.4 */
	rq->get_or_head = method_is(h->method, "GET") || method_is(h->method, "HEAD");
	rq->is_head = r->is_head;
	rq->has_body = !r->body_done;
	return cr;
}

/* The object for this request, following a Vary marker; NULL on a miss.
 * Sets cr->key to the key the object lives (or would live) under. */
static bool same_url(const struct cache_req *cr, const char *url, size_t len)
{
	return len == cr->url_len && memcmp(url, cr->url, len) == 0;
}

static struct cache_entry *lookup(struct cache_req *cr, int64_t now)
{
	struct cache_entry *e = cache_store_get(&cr->primary);

	cr->key = cr->primary;
	if (e && e->kind == CACHE_VARY) {
		if (now >= e->expires_ms) {
			cache_store_remove(&cr->primary, e);
			cache_entry_put(e);
			return NULL;
		}
		cr->key = variant_key(&cr->primary, e->vary_gen, e->body, e->body_len, &cr->r->h);
		cache_entry_put(e);
		e = cache_store_get(&cr->key);
	}
	if (!e)
		return NULL;
	/* Keys are XXH3-128, fast rather than collision-proof: an object whose
	 * URL is not this one is a crafted collision, never an answer here. */
	if (!same_url(cr, e->url, e->url_len)) {
		cache_entry_put(e);
		return NULL;
	}
	if (now >= e->expires_ms) {
		cache_store_remove(&cr->key, e);
		cache_entry_put(e);
		return NULL;
	}
	if (e->kind == CACHE_PASS) {
		cr->no_coalesce = true;
		cache_entry_put(e);
		return NULL;
	}
	return e;
}

static void on_l2_reply(void *arg, const char *data, size_t len, int err)
{
	struct cache_req *cr = arg;
	struct stats_worker *st = &cr->w->stats;
	struct cache_entry_spec sp;

	cr->l2_op = NULL;
	if (err == 0 && data && l2_decode(data, len, &cr->key, &sp) == 0 &&
	    same_url(cr, sp.url, sp.url_len) && sp.expires_ms > now_ms() &&
	    sp.kind != CACHE_PASS) {
		sp.url =
			cr->url; /* ours is normalised the same way; never trust a copy for purges */
		sp.url_len = cr->url_len;
		if (cache_store_put(&sp) == 0) {
			STAT_INC(st->cache_l2_hits);
			if (cache_store_purged_since(cr->purge_gen, &cr->primary, cr->url,
						     cr->url_len, sp.tags, sp.tags_len))
				cache_store_remove(&sp.key, NULL); /* purged meanwhile */
		}
	} else if (err == 0 && data) {
		STAT_INC(st->cache_l2_errors); /* failed the integrity check, or expired */
	} else if (err == 0) {
		STAT_INC(st->cache_l2_misses);
	}
	req_resume(cr->r);
}

/* After an L1 miss: ask L2 for cr->key once. True when a lookup is in
 * flight (the step waits for it). */
static bool l2_ask(struct cache_req *cr)
{
	const struct config *cfg = cfg_of(cr->r);

	if (!cfg->cache.redis.len || cr->n_l2_tried >= 2)
		return false;
	for (unsigned i = 0; i < cr->n_l2_tried; i++)
		if (!memcmp(&cr->l2_tried[i], &cr->key, sizeof(cr->key)))
			return false;
	cr->l2_tried[cr->n_l2_tried++] = cr->key;
	cr->l2_op = l2_get(cr->w, &cfg->cache, &cr->key, on_l2_reply, cr);
	return cr->l2_op != NULL;
}

enum step_result cache_step(struct request *r)
{
	const struct config *cfg = cfg_of(r);
	struct cache_req *cr = r->cache;
	int64_t now;

	if (!cfg->cache.enabled || (r->route >= 0 && !cfg->routes[r->route].cache))
		return STEP_NEXT;
	if (cr && (cr->waiting || cr->l2_op))
		return STEP_WAIT;
	if (!cr) {
		cr = r->cache = cr_new(r);
		if (!cr)
			return STEP_NEXT; /* out of memory or an oversized URL: just forward */
		cache_store_quiesce();
		const struct http_request *h = &r->h;
		uint64_t post_max = cfg->cache.post_body_max < POST_BODY_CAP
					    ? cfg->cache.post_body_max
					    : POST_BODY_CAP;
		if (method_is(h->method, "POST") && r->route >= 0 &&
		    cfg->routes[r->route].cache_post &&
		    (r->body_done || (r->body == HTTP_BODY_LENGTH && r->body_left <= post_max)) &&
		    !cr->rq.cc.no_store && !cr->rq.authorization) {
			cr->post = true;
			cr->body_wait = true;
			cr->rq.get_or_head = true; /* the route says its POSTs are queries */
			cr->rq.has_body = false;
		}
		if (!cr->rq.get_or_head) {
			bool unsafe =
				!method_is(h->method, "OPTIONS") && !method_is(h->method, "TRACE");
			cr->invalidate = unsafe;
			set_cs(cr, "fwd=bypass; detail=method");
			count(cr, CA_BYPASS);
			return STEP_NEXT;
		}
		if (cr->rq.has_body || cr->rq.range || cr->rq.cc.no_store || cr->rq.authorization) {
			set_cs(cr, "fwd=bypass; detail=%s",
			       cr->rq.has_body	    ? "body"
			       : cr->rq.range	    ? "range"
			       : cr->rq.cc.no_store ? "request-no-store"
						    : "authorization");
			cr->store_ok = cr->rq.authorization && !cr->rq.has_body && !cr->rq.range &&
				       !cr->rq.cc.no_store && !r->is_head;
			count(cr, CA_BYPASS);
			return STEP_NEXT;
		}
	}
	if (cr->streaming)
		return r->resp_done ? STEP_NEXT : STEP_WAIT;
	if (cr->stream_in) {
		if (stream_start(r))
			return r->resp_done ? STEP_NEXT : STEP_WAIT;
		cr->no_coalesce = true; /* the shared fetch failed: on our own */
	}
	if (cr->lookup_done)
		return STEP_NEXT;
	if (cr->body_wait) {
		struct client *c = r->c;
		uint64_t need = r->body_done ? 0 : r->body_left;
		if (c->conn.in.len < need) {
			struct worker *w = c->conn.w;
			if (r->expect_continue && !r->continue_sent && !r->http10) {
				/* the client waits for this before it sends the body we key by */
				respond_continue(c);
				r->continue_sent = true;
				r->expect_continue =
					false; /* answered: upstream.c must not again */
				r->bytes_out += 25;
			}
			timer_arm(&w->loop.timers, &c->conn.timer,
				  w->loop.now + cfg->timeouts.body);
			return STEP_WAIT; /* req_pump_body resumes us */
		}
		/* the key: the URL and XXH3-128 of the body (64 bits would let a
		 * client find two prompts with one key in a few billion tries) */
		XXH128_hash_t bh = XXH3_128bits(buf_head(&c->conn.in), (size_t)need);
		char buf[URL_MAX + 64];
		int n = snprintf(buf, sizeof(buf), "POST http ");
		memcpy(buf + n, cr->url, cr->url_len);
		memcpy(buf + n + cr->url_len, &bh, sizeof(bh));
		cr->primary = key_of(buf, (size_t)n + cr->url_len + sizeof(bh));
		cr->body_wait = false;
		if (!r->body_done)
			timer_disarm(&c->conn.w->loop.timers, &c->conn.timer);
	}
	if (cr->wake_result == WAKE_UPSTREAM)
		cr->no_coalesce = true;
	now = loop_wall_ms(&cr->w->loop);

	struct cache_entry *e = lookup(cr, now);
	/* a second pass (woken, or back from L2) looks again from scratch */
	cache_entry_put(cr->stale);
	cr->stale = NULL;
	if (!e && !cr->no_coalesce && l2_ask(cr))
		return STEP_WAIT; /* resumed with the L2 answer copied into L1 */
	if (e) {
		enum cache_use use = cache_use(&e->meta, &cr->rq.cc, now);
		switch (use) {
		case CACHE_USE_FRESH:
			set_cs(cr, cr->wake_result ? "hit; detail=coalesced" : "hit");
			count(cr, CA_HIT);
			serve_done(r, e, now);
			cache_entry_put(e);
			cr->lookup_done = true;
			return STEP_NEXT;
		case CACHE_USE_STALE_OK:
			set_cs(cr, "hit; detail=max-stale");
			count(cr, CA_STALE);
			serve_done(r, e, now);
			cache_entry_put(e);
			cr->lookup_done = true;
			return STEP_NEXT;
		case CACHE_USE_STALE_SWR:
			set_cs(cr, "hit; detail=stale-while-revalidate");
			count(cr, CA_STALE);
			/* One refresh per object at a time, owned by the worker:
			 * this request is answered now and its connection goes on;
			 * others get the stale object meanwhile. */
			if (__atomic_compare_exchange_n(&e->refreshing, &(uint8_t){0}, 1, false,
							__ATOMIC_ACQ_REL, __ATOMIC_RELAXED) &&
			    !refresh_start(r, e))
				__atomic_store_n(&e->refreshing, 0, __ATOMIC_RELEASE);
			serve_done(r, e, now);
			cache_entry_put(e);
			cr->lookup_done = true;
			return STEP_NEXT;
		case CACHE_USE_REVALIDATE:
			cr->stale = e; /* kept: for a 304, or to answer on error */
			break;
		}
	}
	if (cr->rq.cc.only_if_cached) {
		set_cs(cr, "fwd=miss; detail=only-if-cached");
		count(cr, CA_MISS);
		cr->lookup_done = true;
		req_fail(r, 504, REASON_UPSTREAM_TIMEOUT, "only-if-cached and not in the cache",
			 false);
		return STEP_WAIT;
	}
	/* Going upstream from here: the head the rewrites below work on. */
	if (upstream_head_ready(r) != 0) {
		cr->lookup_done = true;
		req_fail(r, 500, REASON_INTERNAL, "out of memory", true);
		return STEP_WAIT;
	}
	if (r->is_head && !cr->head_get) {
		/* A HEAD miss goes upstream as a GET so that the object is stored
		 * (a later GET hits); the client gets the head only. */
		if (up_head_as_get(&r->up_head) != 0) {
			set_cs(cr, "fwd=uri-miss; detail=head");
			count(cr, CA_MISS);
			cr->lookup_done = true;
			return STEP_NEXT;
		}
		cr->head_get = true;
		r->up_get = true;
		cr->rq.is_head = false;
	}
	if (!cr->no_coalesce) {
		struct cache_wait *wt = calloc(1, sizeof(*wt));
		struct cache_entry *hit = NULL;
		if (wt) {
			wt->base.on_done = on_leader_done;
			wt->task.fn = on_wake_task;
			wt->w = cr->w;
			wt->ticket = cr->ticket = ++tls_ticket;
			enum cache_claim cl =
				cache_store_claim(&cr->key, &wt->base, cr->stale, &hit);
			if (cl == CACHE_CLAIM_HIT) {
				free(wt);
				set_cs(cr, "hit");
				count(cr, CA_HIT);
				serve_done(r, hit, now);
				cache_entry_put(hit);
				cr->lookup_done = true;
				return STEP_NEXT;
			}
			if (cl == CACHE_CLAIM_WAITER) {
				cr->waiting = true;
				cr->wprev = NULL;
				cr->wnext = tls_waiting;
				if (tls_waiting)
					tls_waiting->wprev = cr;
				tls_waiting = cr;
				STAT_INC(cr->w->stats.cache_coalesced);
				timer_arm(&cr->w->loop.timers, &cr->timer,
					  cr->w->loop.now + cfg->cache.coalesce_timeout);
				return STEP_WAIT;
			}
			free(wt);
			cr->leader = true;
			cr->claim_key = cr->key;
		}
	}
	cr->lookup_done = true;
	cr->store_ok = true;
	if (cr->stale) {
		cr->revalidating = cr->stale->meta.has_validator;
		if (cr->revalidating)
			STAT_INC(cr->w->stats.cache_revalidations);
		set_cs(cr, "fwd=%s", cr->rq.cc.no_cache ? "request" : "stale");
	} else {
		set_cs(cr, "fwd=%s", cr->rq.cc.no_cache ? "request" : "uri-miss");
	}
	count(cr, CA_MISS);
	up_head_conditionals(r, cr->revalidating ? cr->stale : NULL);
	return STEP_NEXT;
}

/* ---- the upstream response ----------------------------------------------------- */

static int64_t keep_until(const struct cache_meta *m, int64_t grace_ms)
{
	int64_t extra = grace_ms;

	if ((int64_t)m->swr_s * 1000 > extra)
		extra = (int64_t)m->swr_s * 1000;
	if ((int64_t)m->sie_s * 1000 > extra)
		extra = (int64_t)m->sie_s * 1000;
	if (m->has_validator && extra < VALIDATOR_KEEP_MS)
		extra = VALIDATOR_KEEP_MS;
	if (!m->must_revalidate && extra < STALE_KEEP_MS)
		extra = STALE_KEEP_MS;
	return m->response_time_ms - m->initial_age_ms + m->lifetime_ms + extra;
}

/* Store head + body under the request's key (with a Vary marker when the
 * response varies). */
static int store(struct cache_req *cr, const char *head, size_t head_len, const char *body,
		 size_t body_len, int64_t resp_time)
{
	const struct config *cfg = cfg_of(cr->r);
	struct cache_entry_spec sp = {0};
	struct cache_resp_facts rs;
	int rc;

	facts_of_head(head, head_len, &rs, &sp, cfg->cache.tag_header);
	if (cr->up_has_age) {
		rs.has_age = true;
		rs.age_s = cr->up_age_s;
	}
	sp.kind = CACHE_OBJECT;
	sp.status = rs.status;
	sp.primary = cr->primary;
	sp.key = cr->primary;
	sp.url = cr->url;
	sp.url_len = cr->url_len;
	sp.head = head;
	sp.head_len = head_len;
	sp.body = body;
	sp.body_len = body_len;
	cache_meta_from(&sp.meta, &rs, cr->req_time_ms, resp_time);
	sp.expires_ms = keep_until(&sp.meta, cfg->cache.grace);

	if (rs.has_vary) {
		const char *p = head, *end = head + head_len;
		struct http_str n, v;
		char names[VARY_NAMES_MAX], all[VARY_NAMES_MAX] = "";
		size_t al = 0;
		bool star = false;
		while (next_line(&p, end, &n, &v))
			if (http_str_eq(n, "Vary")) {
				int k = vary_names(v, names, sizeof(names), &star);
				if (k < 0 || al + (size_t)k + 2 > sizeof(all))
					return -E2BIG;
				if (k && al)
					all[al++] = ',';
				memcpy(all + al, names, (size_t)k);
				al += (size_t)k;
				all[al] = 0;
			}
		if (al) {
			uint64_t gen;
			struct cache_entry *m = cache_store_get(&cr->primary);
			if (m && m->kind == CACHE_VARY && m->body_len == al &&
			    !memcmp(m->body, all, al)) {
				gen = m->vary_gen;
			} else {
				gen = worker_rand(cr->w);
				struct cache_entry_spec ms = sp;
				ms.kind = CACHE_VARY;
				ms.vary_gen = gen;
				ms.head = NULL;
				ms.head_len = 0;
				ms.etag_len = ms.lm_len = 0;
				ms.tags = NULL;
				ms.tags_len = 0;
				ms.body = all;
				ms.body_len = al;
				rc = cache_store_put(&ms);
				if (rc) {
					cache_entry_put(m);
					return rc;
				}
				l2_put(cr->w, &cfg->cache, &ms, now_ms());
			}
			cache_entry_put(m);
			sp.key = variant_key(&cr->primary, gen, all, al, &cr->r->h);
		}
	}
	rc = cache_store_put(&sp);
	if (rc == 0 && cache_store_purged_since(cr->purge_gen, &cr->primary, cr->url, cr->url_len,
						sp.tags, sp.tags_len)) {
		/* a purge ran while this was being fetched: what the origin said
		 * before it must not outlive it */
		cache_store_remove(&sp.key, NULL);
		log_debug("cache: %s purged while it was fetched; not stored", cr->url);
		return -ESTALE;
	}
	if (rc == 0) {
		STAT_INC(cr->w->stats.cache_stores);
		l2_put(cr->w, &cfg->cache, &sp, now_ms());
	}
	return rc;
}

static void pass_marker(struct cache_req *cr)
{
	struct cache_entry_spec sp = {0};
	int64_t now = now_ms();

	sp.kind = CACHE_PASS;
	sp.key = cr->key;
	sp.primary = cr->primary;
	sp.url = cr->url;
	sp.url_len = cr->url_len;
	sp.meta.response_time_ms = now;
	sp.expires_ms = now + PASS_TTL_MS;
	cache_store_put(&sp);
}

/* Drop the stored objects of the URL in `loc` (Location / Content-Location):
 * paths on the request's host, or absolute http URLs of that same host.
 * Never another host's (RFC 9111 §4.4): one origin behind the gateway
 * could otherwise purge every other host's objects with its answers. */
static void invalidate_uri(struct cache_req *cr, struct http_str loc)
{
	char url[URL_MAX];
	int ul;
	const char *rslash = memchr(cr->url, '/', cr->url_len);
	size_t rhl = rslash ? (size_t)(rslash - cr->url) : cr->url_len;

	if (loc.len > 1 && loc.p[0] == '/' && loc.p[1] == '/')
		return; /* network-path reference: another authority */
	if (loc.len && loc.p[0] == '/') {
		memcpy(url, cr->url, rhl);
		ul = cache_norm_path(loc.p, loc.len, url + rhl, sizeof(url) - rhl);
		if (ul < 0)
			return;
		ul += (int)rhl;
	} else if (loc.len > 7 && strncasecmp(loc.p, "http://", 7) == 0) {
		const char *h = loc.p + 7, *end = loc.p + loc.len;
		const char *slash = memchr(h, '/', (size_t)(end - h));
		if (!slash)
			slash = end;
		ul = url_norm(h, (size_t)(slash - h), slash, (size_t)(end - slash), url,
			      sizeof(url));
		if (ul < 0 || (size_t)ul < rhl || memcmp(url, cr->url, rhl) != 0 ||
		    (url[rhl] != '/' && url[rhl] != '?' && (size_t)ul != rhl))
			return;
	} else {
		return;
	}
	struct cache_key k = primary_key("GET", url, (size_t)ul);
	if (cache_store_invalidate(&k))
		STAT_INC(cr->w->stats.cache_invalidations);
	l2_del(cr->w, &cfg_of(cr->r)->cache, &k);
}

static void invalidate(struct cache_req *cr, const struct http_response *res)
{
	if (cache_store_invalidate(&cr->primary))
		STAT_INC(cr->w->stats.cache_invalidations);
	l2_del(cr->w, &cfg_of(cr->r)->cache, &cr->primary);
	for (unsigned i = 0; i < res->n_headers; i++) {
		const struct http_header *h = &res->headers[i];
		if (http_str_eq(h->name, "Location") || http_str_eq(h->name, "Content-Location"))
			invalidate_uri(cr, h->value);
	}
}

/* A 304 to our conditional: the stored headers are updated with the 304's
 * (RFC 9111 §4.3.4) and the object is stored again. Returns the refreshed
 * entry (a reference) or NULL. */
static struct cache_entry *refresh(struct cache_req *cr, const struct http_response *res)
{
	struct cache_entry *old = cr->stale;
	struct buf head = {0};
	const char *p = old->head, *end = old->head + old->head_len;
	struct http_str n, v;
	const char *ls = p;
	int64_t now = now_ms();

	if (!next_line(&p, end, &n, &v))
		return NULL;
	buf_append(&head, ls, (size_t)(p - ls)); /* the stored status line */
	while (p < end) {
		ls = p;
		if (!next_line(&p, end, &n, &v))
			break;
		bool replaced = false;
		for (unsigned i = 0; i < res->n_headers && !replaced; i++)
			if (res->headers[i].name.len == n.len &&
			    strncasecmp(res->headers[i].name.p, n.p, n.len) == 0 &&
			    !skip_stored_field(n) && !http_str_eq(n, "Content-Type"))
				replaced = true;
		if (!replaced)
			buf_append(&head, ls, (size_t)(p - ls));
	}
	for (unsigned i = 0; i < res->n_headers; i++) {
		const struct http_header *h = &res->headers[i];
		if (skip_stored_field(h->name) || http_str_eq(h->name, "Content-Type") ||
		    named_by_connection(res->headers, res->n_headers, h->name))
			continue;
		buf_append(&head, h->name.p, h->name.len);
		buf_append(&head, ": ", 2);
		buf_append(&head, h->value.p, h->value.len);
		buf_append(&head, "\r\n", 2);
	}
	struct cache_entry *e = NULL;
	cr->key = old->key;
	if (store(cr, buf_head(&head), head.len, old->body, old->body_len, now) == 0)
		e = cache_store_get(&old->key);
	buf_free(&head);
	return e;
}

/* May this 304 update the stored object e (RFC 9111 §4.3.4)? Its ETag
 * (or, without ETags, its Last-Modified) must name what is stored: a 304
 * that carries another validator says nothing about our body, and merging
 * it would label the old body with the new validator. */
static bool validators_agree(const struct cache_entry *e, const struct http_response *res)
{
	const struct http_header *et = http_find_header(res->headers, res->n_headers, "ETag");
	const struct http_header *lm =
		http_find_header(res->headers, res->n_headers, "Last-Modified");

	if (et)
		return e->etag &&
		       cache_etag_weak_eq(et->value.p, et->value.len, e->etag, e->etag_len);
	if (lm && e->last_modified && !e->etag)
		return cache_http_date(lm->value.p, lm->value.len) ==
		       cache_http_date(e->last_modified, e->last_modified_len);
	return true;
}

/* Vary's names of a stored head, lower case, comma-joined, into out.
 * Returns the length (0: no Vary), or -E2BIG. */
static int vary_all(const char *head, size_t head_len, char *all, size_t cap)
{
	const char *p = head, *end = head + head_len;
	struct http_str n, v;
	char names[VARY_NAMES_MAX];
	size_t al = 0;
	bool star = false;

	all[0] = 0;
	while (next_line(&p, end, &n, &v))
		if (http_str_eq(n, "Vary")) {
			int k = vary_names(v, names, sizeof(names), &star);
			if (k < 0 || al + (size_t)k + 2 > cap)
				return -E2BIG;
			if (k && al)
				all[al++] = ',';
			memcpy(all + al, names, (size_t)k);
			al += (size_t)k;
			all[al] = 0;
		}
	return (int)al;
}

/* The waiters need not wait for the whole object: they send it as it
 * arrives, from a copy the leader fills (the Content-Length, or up to
 * max_obj when the length is unknown). */
static void stream_begin(struct cache_req *cr, const struct http_response *res, bool has_vary,
			 uint64_t max_obj)
{
	struct cache_stream *s = calloc(1, sizeof(*s));
	bool chunked = res->body != HTTP_BODY_LENGTH;
	size_t cap = chunked ? (size_t)max_obj : (size_t)res->content_length;
	char all[VARY_NAMES_MAX];
	int al = has_vary ? vary_all(buf_head(&cr->head), cr->head.len, all, sizeof(all)) : 0;

	if (!s || al < 0 || !(s->head = malloc(cr->head.len)) ||
	    !(s->body = malloc(cap ? cap : 1)) || (al > 0 && !(s->vary = malloc((size_t)al)))) {
		if (s) {
			free(s->head);
			free(s->body);
		}
		free(s);
		return;
	}
	memcpy(s->head, buf_head(&cr->head), cr->head.len);
	s->head_len = cr->head.len;
	s->total = chunked ? 0 : res->content_length;
	s->cap = cap;
	s->chunked = chunked;
	s->status = res->status;
	if (al > 0) {
		memcpy(s->vary, all, (size_t)al);
		s->vary_len = (size_t)al;
		s->vary_fp = variant_key(&cr->primary, 0, all, (size_t)al, &cr->r->h);
	}
	s->refs = 1;
	cr->stream_out = s;
	cache_store_stream(&cr->claim_key, s, stream_get, WAKE_STREAM);
}

bool cache_respond_head(struct request *r, const struct http_response *res)
{
	struct cache_req *cr = r->cache;
	const struct config *cfg = cfg_of(r);
	int64_t now = now_ms();

	if (!cr)
		return false;
	if (cr->invalidate) {
		if (res->status >= 200 && res->status < 400)
			invalidate(cr, res);
		return false;
	}
	if (cr->head_get)
		r->body_discard = true; /* the client asked for the head only */
	const struct http_header *age = http_find_header(res->headers, res->n_headers, "Age");
	int64_t age_s = age ? cache_age_value(age->value.p, age->value.len) : -1;
	cr->up_has_age = age_s >= 0;
	cr->up_age_s = age_s >= 0 ? (uint32_t)age_s : 0;
	if (cr->bg_refresh) {
		r->status = res->status; /* the pool's outcome (upstream.c) */
		if (res->status >= 500) {
			/* the origin failed: the stale object stays */
			cr->refresh_failed = true;
			r->body_discard = true;
			return true;
		}
	}
	if (cr->stale && res->status == 304 && cr->revalidating) {
		bool agree = validators_agree(cr->stale, res);
		struct cache_entry *e = agree ? refresh(cr, res) : NULL;
		if (agree) {
			STAT_INC(cr->w->stats.cache_refreshed);
		} else {
			/* and it goes: kept, every later request would ask with the
			 * same validator and get the same 304, forever */
			log_info("cache: %s: the origin's 304 names another validator; the stored "
				 "object is not updated but dropped",
				 cr->url);
			cache_store_remove(&cr->stale->key, cr->stale);
		}
		if (cr->stale)
			__atomic_store_n(&cr->stale->refreshing, 0, __ATOMIC_RELEASE);
		/* not updated: each waiter asks on its own */
		leader_finish(cr, agree ? WAKE_RETRY : WAKE_UPSTREAM);
		r->body_discard = true;
		if (cr->bg_refresh) {
			cr->refresh_failed = !agree;
			cache_entry_put(e);
			return true;
		}
		/* Not updated, the old object still answers this once: the
		 * origin said our validator's body is current. */
		set_cs(cr, agree ? "fwd=stale; fwd-status=304"
				 : "fwd=stale; fwd-status=304; detail=validator-mismatch");
		r->resp_started = true;
		if (cr->access == CA_MISS) {
			cr->access = CA_HIT; /* revalidated: the stored body answers */
			STAT_INC(cr->w->stats.cache_hits);
			if (cr->w->stats.cache_misses)
				STAT_ADD(cr->w->stats.cache_misses, (uint64_t)-1);
		}
		serve(r, e ? e : cr->stale, now);
		cache_entry_put(e);
		return true;
	}
	if (cr->bg_refresh) {
		/* nobody reads this response: it is stored, or dropped */
		r->body_discard = true;
	} else if (res->status >= 500 && cr->stale &&
		   cache_stale_on_error(&cr->stale->meta, &cr->rq.cc, cfg->cache.grace, now)) {
		set_cs(cr, "hit; fwd=stale; fwd-status=%d; detail=stale-if-error", res->status);
		cr->access = CA_STALE;
		STAT_INC(cr->w->stats.cache_stale);
		if (cr->w->stats.cache_misses)
			STAT_ADD(cr->w->stats.cache_misses, (uint64_t)-1);
		serve(r, cr->stale, now);
		r->resp_started = true;
		r->body_discard = true;
		leader_finish(cr, WAKE_UPSTREAM);
		return true;
	}
	if (!cr->store_ok)
		return cr->bg_refresh;

	/* Decide whether to store this response. */
	struct cache_resp_facts rs;
	if (build_head(&cr->head, res) != 0) {
		cr->nostore = CACHE_NOSTORE_TOO_LARGE;
		goto nostore;
	}
	facts_of_head(buf_head(&cr->head), cr->head.len, &rs, NULL, "");
	for (unsigned i = 0; i < res->n_headers; i++)
		if (http_str_eq(res->headers[i].name, "Set-Cookie"))
			rs.set_cookie = true;
	rs.status = res->status;
	cr->nostore = cache_storable(&cr->rq, &rs);
	uint64_t max_obj = cfg->cache.max_object;
	if (max_obj > cfg->cache.memory / 64)
		max_obj = cfg->cache.memory / 64 - 4096;
	if (!cr->nostore && res->body == HTTP_BODY_LENGTH && res->content_length > max_obj)
		cr->nostore = CACHE_NOSTORE_TOO_LARGE;
	if (cr->nostore)
		goto nostore;
	cr->filling = true;
	buf_reset(&cr->body, 16384);
	if (res->body == HTTP_BODY_LENGTH && buf_reserve(&cr->body, res->content_length) != 0) {
		cr->filling = false;
		cr->nostore = CACHE_NOSTORE_TOO_LARGE;
		goto nostore;
	}
	if (!cr->bg_refresh)
		snprintf(cr->cs + strlen(cr->cs), sizeof(cr->cs) - strlen(cr->cs), "%s; stored",
			 cr->stale ? "; fwd-status=200" : "");
	/* with Vary, a waiter checks that it wants the same variant */
	if (cr->leader && !cr->finished && !cr->bg_refresh &&
	    ((res->body == HTTP_BODY_LENGTH && res->content_length > 0) ||
	     res->body == HTTP_BODY_CHUNKED || res->body == HTTP_BODY_UNTIL_CLOSE))
		stream_begin(cr, res, rs.has_vary, max_obj);
	return cr->bg_refresh;
nostore:
	buf_free(&cr->head);
	if (!cr->bg_refresh)
		snprintf(cr->cs + strlen(cr->cs), sizeof(cr->cs) - strlen(cr->cs), "; detail=%s",
			 cache_nostore_name(cr->nostore));
	if (cr->stale) {
		/* the origin no longer gives a storable answer: forget the old one */
		cache_store_remove(&cr->stale->key, cr->stale);
	}
	if (cr->leader) {
		/* too large too: its waiters would each wait for the whole body
		 * and then go upstream anyway, on every burst of misses */
		pass_marker(cr);
		leader_finish(cr, WAKE_UPSTREAM);
	}
	return cr->bg_refresh;
}

void cache_no_store(struct request *r, const char *why)
{
	struct cache_req *cr = r->cache;
	char *stored;

	if (!cr || !cr->filling)
		return;
	stream_end(cr, -1); /* waiters must not send what the client does not get */
	cr->filling = false;
	buf_free(&cr->head);
	buf_free(&cr->body);
	if ((stored = strstr(cr->cs, "; stored")))
		snprintf(stored, sizeof(cr->cs) - (size_t)(stored - cr->cs), "; detail=%s", why);
	leader_finish(cr, WAKE_UPSTREAM);
}

void cache_head_fields(struct request *r, struct buf *b)
{
	struct cache_req *cr = r->cache;

	if (cr && cr->cs[0])
		buf_appendf(b, "Cache-Status: reflex; %s\r\n", cr->cs);
}

void cache_tee(struct request *r, const char *p, size_t n)
{
	struct cache_req *cr = r->cache;

	if (!cr || !cr->filling || !n)
		return;
	const struct config *cfg = cfg_of(r);
	uint64_t max_obj = cfg->cache.max_object;
	if (max_obj > cfg->cache.memory / 64)
		max_obj = cfg->cache.memory / 64 - 4096;
	struct cache_stream *s = cr->stream_out;
	if (s && s->avail + n <= s->cap) {
		memcpy(s->body + s->avail, p, n);
		__atomic_store_n(&s->avail, s->avail + n, __ATOMIC_RELEASE);
		stream_notify(s);
	}
	if (cr->body.len + n > max_obj || buf_append(&cr->body, p, n) != 0) {
		/* hit-for-miss: without it the next misses coalesce again, stream
		 * from the next leader and are cut at max_object again, every time
		 * (before stream_end, which ends the claim) */
		if (cr->leader && !cr->finished && !cr->bg_refresh)
			pass_marker(cr);
		stream_end(cr, -1);
		cr->filling = false;
		cr->nostore = CACHE_NOSTORE_TOO_LARGE;
		buf_free(&cr->body);
		buf_free(&cr->head);
		leader_finish(cr, WAKE_UPSTREAM);
	}
}

void cache_upstream_done(struct request *r)
{
	struct cache_req *cr = r->cache;

	if (!cr)
		return;
	if (cr->filling) {
		cr->filling = false;
		int rc = store(cr, buf_head(&cr->head), cr->head.len, buf_head(&cr->body),
			       cr->body.len, now_ms());
		if (rc)
			log_debug("cache: %s not stored: %s", cr->url, strerror(-rc));
		if (rc && rc != -ESTALE && cr->bg_refresh)
			cr->refresh_failed = true;
		/* stored before the waiters hear the end: later claims are hits */
		struct cache_stream *so = cr->stream_out;
		stream_end(cr, so && (so->chunked || so->avail == so->total) ? 1 : -1);
		buf_free(&cr->head);
		buf_free(&cr->body);
		leader_finish(cr, rc ? WAKE_UPSTREAM : WAKE_RETRY);
	}
	if (cr->stale && cr->bg_refresh)
		__atomic_store_n(&cr->stale->refreshing, 0, __ATOMIC_RELEASE);
	leader_finish(cr, WAKE_UPSTREAM);
}

bool cache_on_error(struct request *r, int status)
{
	struct cache_req *cr = r->cache;

	if (!cr)
		return false;
	if (cr->answered) {
		if (cr->stale)
			__atomic_store_n(&cr->stale->refreshing, 0, __ATOMIC_RELEASE);
		leader_finish(cr, WAKE_UPSTREAM);
		r->resp_started = r->resp_done = true;
		return true;
	}
	if (r->resp_started || !cr->stale)
		return false;
	int64_t now = now_ms();
	if (!cache_stale_on_error(&cr->stale->meta, &cr->rq.cc, cfg_of(r)->cache.grace, now))
		return false;
	set_cs(cr, "hit; fwd=stale; fwd-status=%d; detail=stale-if-error", status);
	cr->access = CA_STALE;
	STAT_INC(cr->w->stats.cache_stale);
	if (cr->w->stats.cache_misses)
		STAT_ADD(cr->w->stats.cache_misses, (uint64_t)-1);
	serve_done(r, cr->stale, now);
	leader_finish(cr, WAKE_UPSTREAM);
	return true;
}

void cache_req_end(struct request *r)
{
	struct cache_req *cr = r->cache;

	if (!cr)
		return;
	r->cache = NULL;
	wait_unlink(cr);
	if (cr->streaming)
		list_unlink(&tls_streaming, cr);
	stream_put(cr->stream_in);
	stream_end(cr, -1);
	l2_cancel(cr->l2_op);
	/* a leader that did not finish (client gone, upstream failed): let a
	 * waiter try again */
	leader_finish(cr, cr->filling ? WAKE_RETRY : WAKE_UPSTREAM);
	if (cr->stale) {
		if (cr->bg_refresh)
			__atomic_store_n(&cr->stale->refreshing, 0, __ATOMIC_RELEASE);
		cache_entry_put(cr->stale);
	}
	buf_free(&cr->head);
	buf_free(&cr->body);
	free(cr->url);
	free(cr);
	cache_store_quiesce();
}

bool cache_wants_body(const struct request *r)
{
	return r->cache && r->cache->body_wait;
}

const char *cache_access_status(const struct request *r)
{
	static const char *const names[] = {"", "hit", "miss", "stale", "bypass"};

	return r->cache ? names[r->cache->access] : "";
}

void cache_reconfigure(const struct config *cfg)
{
	if (cfg->cache.enabled && cache_store_ready() &&
	    cfg->cache.memory != cache_store_budget()) {
		log_info("cache: memory budget %llu -> %llu bytes",
			 (unsigned long long)cache_store_budget(),
			 (unsigned long long)cfg->cache.memory);
		cache_store_set_budget(cfg->cache.memory);
	}
}

/* ---- purges --------------------------------------------------------------------- */

int cache_url_normalize(const char *url, size_t len, char *norm, size_t cap)
{
	if (len > 7 && strncasecmp(url, "http://", 7) == 0) {
		url += 7;
		len -= 7;
	} else if (len > 8 && strncasecmp(url, "https://", 8) == 0) {
		url += 8;
		len -= 8;
	}
	const char *slash = memchr(url, '/', len);
	size_t hl = slash ? (size_t)(slash - url) : len;
	return url_norm(url, hl, url + hl, len - hl, norm, cap);
}

size_t cache_purge_url(const char *url, size_t len, bool prefix)
{
	char norm[URL_MAX];
	int n = cache_url_normalize(url, len, norm, sizeof(norm));

	return n < 0 ? 0 : cache_store_purge_url(norm, (size_t)n, !prefix);
}

size_t cache_purge_tag(const char *tag, size_t len)
{
	return cache_store_purge_tag(tag, len);
}
