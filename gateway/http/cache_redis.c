#include "http/cache_redis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>
#include <xxhash.h>

#include "core/log.h"
#include "core/redis.h"
#include "http/cache.h"
#include "http/worker.h"

#define PURGE_CHANNEL "rfx:purge"
/* Incremented with every PUBLISH on PURGE_CHANNEL, in the same MULTI/EXEC. */
#define PURGE_SEQ_KEY "rfx:purge:seq"
/* A subscription silent this long is asked for a PING; one that stays
 * silent as long again is taken for dead (a Redis that hangs, or a path
 * that drops packets, would otherwise keep the subscriber deaf for good). */
#define SUB_IDLE_MS 5000

/* ---- the stored format ----------------------------------------------------- */

#define L2_MAGIC 0x31584652u /* "RFX1" */

struct l2_hdr {
	uint32_t magic;
	uint8_t kind, must_revalidate, no_cache, has_validator;
	struct cache_key key, primary;
	uint32_t status, url_len, tags_len, head_len, body_len;
	uint32_t swr_s, sie_s;
	uint32_t etag_off, etag_len, lm_off, lm_len;
	int64_t response_time_ms, initial_age_ms, lifetime_ms, expires_ms;
	uint64_t vary_gen;
	uint64_t checksum; /* XXH3-64 of the header (this field 0) and the payload */
};

int l2_encode(const struct cache_entry_spec *s, char **out, size_t *len)
{
	size_t n = sizeof(struct l2_hdr) + s->url_len + s->tags_len + s->head_len + s->body_len;
	char *b = malloc(n);

	if (!b)
		return -ENOMEM;
	struct l2_hdr h = {
		.magic = L2_MAGIC,
		.kind = (uint8_t)s->kind,
		.must_revalidate = s->meta.must_revalidate,
		.no_cache = s->meta.no_cache,
		.has_validator = s->meta.has_validator,
		.key = s->key,
		.primary = s->primary,
		.status = (uint32_t)s->status,
		.url_len = (uint32_t)s->url_len,
		.tags_len = (uint32_t)s->tags_len,
		.head_len = (uint32_t)s->head_len,
		.body_len = (uint32_t)s->body_len,
		.swr_s = s->meta.swr_s,
		.sie_s = s->meta.sie_s,
		.etag_off = (uint32_t)s->etag_off,
		.etag_len = (uint32_t)s->etag_len,
		.lm_off = (uint32_t)s->lm_off,
		.lm_len = (uint32_t)s->lm_len,
		.response_time_ms = s->meta.response_time_ms,
		.initial_age_ms = s->meta.initial_age_ms,
		.lifetime_ms = s->meta.lifetime_ms,
		.expires_ms = s->expires_ms,
		.vary_gen = s->vary_gen,
	};
	char *p = b + sizeof(h);
	if (s->url_len)
		memcpy(p, s->url, s->url_len);
	p += s->url_len;
	if (s->tags_len)
		memcpy(p, s->tags, s->tags_len);
	p += s->tags_len;
	if (s->head_len)
		memcpy(p, s->head, s->head_len);
	p += s->head_len;
	if (s->body_len)
		memcpy(p, s->body, s->body_len);
	memcpy(b, &h, sizeof(h));
	h.checksum = XXH3_64bits(b, n);
	memcpy(b, &h, sizeof(h));
	*out = b;
	*len = n;
	return 0;
}

int l2_decode(const char *data, size_t len, const struct cache_key *want,
	      struct cache_entry_spec *s)
{
	struct l2_hdr h;

	if (len < sizeof(h))
		return -EINVAL;
	memcpy(&h, data, sizeof(h));
	if (h.magic != L2_MAGIC || memcmp(&h.key, want, sizeof(*want)) != 0 || h.kind > CACHE_PASS)
		return -EINVAL;
	uint64_t payload = (uint64_t)h.url_len + h.tags_len + h.head_len + h.body_len;
	if (payload != len - sizeof(h) ||
	    (h.etag_len && (uint64_t)h.etag_off + h.etag_len > h.head_len) ||
	    (h.lm_len && (uint64_t)h.lm_off + h.lm_len > h.head_len))
		return -EINVAL;
	uint64_t sum = h.checksum;
	/* checksum over the header with its checksum field zeroed, then the payload */
	XXH3_state_t *st = XXH3_createState();
	if (!st)
		return -ENOMEM;
	struct l2_hdr z = h;
	z.checksum = 0;
	XXH3_64bits_reset(st);
	XXH3_64bits_update(st, &z, sizeof(z));
	XXH3_64bits_update(st, data + sizeof(h), len - sizeof(h));
	uint64_t got = XXH3_64bits_digest(st);
	XXH3_freeState(st);
	if (got != sum)
		return -EINVAL;
	const char *p = data + sizeof(h);
	*s = (struct cache_entry_spec){
		.key = h.key,
		.primary = h.primary,
		.kind = (enum cache_kind)h.kind,
		.vary_gen = h.vary_gen,
		.status = (int)h.status,
		.expires_ms = h.expires_ms,
		.meta = {.response_time_ms = h.response_time_ms,
			 .initial_age_ms = h.initial_age_ms,
			 .lifetime_ms = h.lifetime_ms,
			 .swr_s = h.swr_s,
			 .sie_s = h.sie_s,
			 .must_revalidate = h.must_revalidate,
			 .no_cache = h.no_cache,
			 .has_validator = h.has_validator},
		.url = p,
		.url_len = h.url_len,
		.tags = p + h.url_len,
		.tags_len = h.tags_len,
		.head = p + h.url_len + h.tags_len,
		.head_len = h.head_len,
		.body = p + h.url_len + h.tags_len + h.head_len,
		.body_len = h.body_len,
		.etag_off = h.etag_off,
		.etag_len = h.etag_len,
		.lm_off = h.lm_off,
		.lm_len = h.lm_len,
	};
	return 0;
}

static void key_name(const struct cache_key *k, char out[37])
{
	snprintf(out, 37, "rfx:%016llx%016llx", (unsigned long long)k->hi,
		 (unsigned long long)k->lo);
}

/* ---- the worker's client (core/redis.h) ---------------------------------------- */

/* A get's handle: the caller's callback, which l2_cancel clears. It is
 * freed when the command ends, cancelled or not. */
struct l2_op {
	l2_get_cb *cb; /* NULL: cancelled */
	void *arg;
};

/* One client per worker, made on first use; freed when the thread ends. */
static __thread struct redis_client *tls_client;

static void on_l2_fail(void *arg, int err, unsigned fails)
{
	struct worker *w = arg;

	if (fails >= REDIS_BREAKER_FAILS_DEFAULT)
		log_warn("cache L2: redis failing (%s); skipped for %u ms", strerror(-err),
			 w->cfg->cache.redis_breaker);
	STAT_INC(w->stats.cache_l2_errors);
}

/* The worker's client, ready for a command; NULL when L2 is off or
 * skipped (breaker, too many pending) or no connection could be started. */
static struct redis_client *l2_client(struct worker *w, const struct cfg_cache *cc)
{
	struct redis_client *cl = tls_client;

	if (!cc->redis.len)
		return NULL;
	if (!cl) {
		/* the defaults (1024 pending, 3 failures, 1 s idle; an idle
		 * connection is closed at once while the worker drains: it
		 * would keep it from stopping), cache.redis_breaker */
		struct redis_opts o = {.breaker_ms = cc->redis_breaker,
				       .live = &w->n_conns,
				       .stopping = &w->draining,
				       .on_fail = on_l2_fail,
				       .arg = w};
		cl = tls_client = redis_client_new(&w->loop, &o);
		if (!cl)
			return NULL;
	}
	redis_client_target(cl, (const struct sockaddr *)&cc->redis.ss, cc->redis.len);
	redis_client_breaker(cl, cc->redis_breaker); /* a reload may change it */
	int err = redis_client_ready(cl);
	if (err) {
		if (err == -EAGAIN)
			STAT_INC(w->stats.cache_l2_skipped);
		else
			STAT_INC(w->stats.cache_l2_errors);
		return NULL;
	}
	return cl;
}

static void on_got(void *arg, int err, const struct redis_reply *r)
{
	struct l2_op *op = arg;

	if (!op->cb)
		;
	else if (err)
		op->cb(op->arg, NULL, 0, err);
	else if (r->type == REDIS_R_BULK)
		op->cb(op->arg, r->str, r->len, 0);
	else if (r->type == REDIS_R_NIL)
		op->cb(op->arg, NULL, 0, 0);
	else
		op->cb(op->arg, NULL, 0, -EPROTO);
	free(op);
}

/* Fire and forget: an error reply is counted (a failed connection was,
 * once, by on_l2_fail). */
static void on_stored(void *arg, int err, const struct redis_reply *r)
{
	struct worker *w = arg;

	if (!err && r->type == REDIS_R_ERROR)
		STAT_INC(w->stats.cache_l2_errors);
}

static void l2_store(struct redis_client *cl, struct worker *w, const struct cfg_cache *cc,
		     int argc, const char **argv, const size_t *argvlen)
{
	redis_command(cl, cc->redis_timeout, argc, argv, argvlen, on_stored, w, NULL);
}

struct l2_op *l2_get(struct worker *w, const struct cfg_cache *cc, const struct cache_key *k,
		     l2_get_cb *cb, void *arg)
{
	struct redis_client *cl = l2_client(w, cc);
	struct l2_op *op;
	char name[37];

	if (!cl || !(op = malloc(sizeof(*op))))
		return NULL;
	op->cb = cb;
	op->arg = arg;
	key_name(k, name);
	const char *argv[] = {"GET", name};
	size_t argvlen[] = {3, 36};
	if (redis_command(cl, cc->redis_timeout, 2, argv, argvlen, on_got, op, NULL)) {
		free(op);
		return NULL;
	}
	return op;
}

void l2_cancel(struct l2_op *op)
{
	if (op)
		op->cb = NULL;
}

void l2_put(struct worker *w, const struct cfg_cache *cc, const struct cache_entry_spec *s,
	    int64_t now_ms)
{
	struct redis_client *cl;
	char name[37], hex[33], ttl[24], *blob;
	size_t blen;
	int64_t ms = s->expires_ms - now_ms;

	if (ms <= 0 || !(cl = l2_client(w, cc)) || l2_encode(s, &blob, &blen) != 0)
		return;
	key_name(&s->key, name);
	memcpy(hex, name + 4, 33);
	int tl = snprintf(ttl, sizeof(ttl), "%lld", (long long)ms);
	const char *set[] = {"SET", name, blob, "PX", ttl};
	size_t setl[] = {3, 36, blen, 2, (size_t)tl};
	l2_store(cl, w, cc, 5, set, setl);
	free(blob);

	/* the purge index: "url\tkeyhex" in rfx:urls, keyhex in rfx:t:TAG */
	char *member = malloc(s->url_len + 34);
	if (member) {
		memcpy(member, s->url, s->url_len);
		member[s->url_len] = '\t';
		memcpy(member + s->url_len + 1, hex, 32);
		const char *za[] = {"ZADD", "rfx:urls", "0", member};
		size_t zl[] = {4, 8, 1, s->url_len + 33};
		l2_store(cl, w, cc, 4, za, zl);
		free(member);
	}
	size_t i = 0;
	while (i < s->tags_len) {
		while (i < s->tags_len && (s->tags[i] == ' ' || s->tags[i] == ','))
			i++;
		size_t st = i;
		while (i < s->tags_len && s->tags[i] != ' ' && s->tags[i] != ',')
			i++;
		if (i > st && i - st < 200) {
			char tk[216];
			int n = snprintf(tk, sizeof(tk), "rfx:t:%.*s", (int)(i - st), s->tags + st);
			const char *sa[] = {"SADD", tk, hex};
			size_t sl[] = {4, (size_t)n, 32};
			l2_store(cl, w, cc, 3, sa, sl);
		}
	}
}

void l2_del(struct worker *w, const struct cfg_cache *cc, const struct cache_key *k)
{
	struct redis_client *cl = l2_client(w, cc);
	char name[37];

	if (!cl)
		return;
	key_name(k, name);
	const char *argv[] = {"DEL", name};
	size_t argvlen[] = {3, 36};
	l2_store(cl, w, cc, 2, argv, argvlen);
}

/* ---- purges and the subscriber (blocking hiredis, never on a worker) ------------- */

static redisContext *blocking_connect(const struct cfg_cache *cc, unsigned timeout_ms)
{
	char host[CFG_HOST_MAX + 8];
	struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};

	snprintf(host, sizeof(host), "%s", cc->redis.text);
	char *colon = strrchr(host, ':');
	if (!colon)
		return NULL;
	*colon = 0;
	int port = atoi(colon + 1);
	char *h = host;
	if (h[0] == '[') { /* [v6] */
		h++;
		h[strlen(h) - 1] = 0;
	}
	redisContext *c = redisConnectWithTimeout(h, port, tv);
	if (!c || c->err) {
		if (c)
			redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	return c;
}

static long del_members(redisContext *c, redisReply *list, bool url_members)
{
	long n = 0;

	if (!list || list->type != REDIS_REPLY_ARRAY)
		return 0;
	for (size_t i = 0; i < list->elements; i++) {
		redisReply *m = list->element[i];
		if (m->type != REDIS_REPLY_STRING)
			continue;
		const char *hex = url_members ? memchr(m->str, '\t', m->len) : m->str - 1;
		if (!hex || (size_t)(m->str + m->len - (hex + 1)) != 32)
			continue;
		char name[37];
		snprintf(name, sizeof(name), "rfx:%.32s", hex + 1);
		redisReply *r = redisCommand(c, "DEL %s", name);
		if (r && r->type == REDIS_REPLY_INTEGER)
			n += r->integer;
		if (r)
			freeReplyObject(r);
		if (url_members) {
			r = redisCommand(c, "ZREM rfx:urls %b", m->str, m->len);
			if (r)
				freeReplyObject(r);
		}
	}
	return n;
}

long l2_purge(const struct cfg_cache *cc, const char *kind, const char *value, size_t len)
{
	redisContext *c;
	long n = 0;

	if (!cc->redis.len)
		return 0;
	if (!(c = blocking_connect(cc, cc->redis_timeout * 4 + 100)))
		return -EHOSTUNREACH;
	redisReply *r;
	if (!strcmp(kind, "tag")) {
		r = redisCommand(c, "SMEMBERS rfx:t:%b", value, len);
		n = del_members(c, r, false);
		if (r)
			freeReplyObject(r);
		r = redisCommand(c, "DEL rfx:t:%b", value, len);
	} else {
		/* url: "url\t..." members; prefix: "prefix..." members */
		char *lo = malloc(len + 3), *hi = malloc(len + 4);
		if (!lo || !hi) {
			free(lo);
			free(hi);
			redisFree(c);
			return -ENOMEM;
		}
		lo[0] = '[';
		memcpy(lo + 1, value, len);
		size_t ll = len + 1;
		if (!strcmp(kind, "url"))
			lo[ll++] = '\t';
		memcpy(hi, lo, ll);
		hi[ll] = (char)0xff;
		r = redisCommand(c, "ZRANGEBYLEX rfx:urls %b %b", lo, ll, hi, ll + 1);
		n = del_members(c, r, true);
		free(lo);
		free(hi);
	}
	if (r)
		freeReplyObject(r);
	/* every gateway (this one too) drops the objects from its L1. The
	 * counter moves with the message, atomically: a subscriber that was
	 * away sees that it missed one (l2_purge_seq_check). */
	redisAppendCommand(c, "MULTI");
	redisAppendCommand(c, "INCR " PURGE_SEQ_KEY);
	redisAppendCommand(c, "PUBLISH " PURGE_CHANNEL " %s\n%b", kind, value, len);
	redisAppendCommand(c, "EXEC");
	bool failed = false;
	for (int i = 0; i < 4; i++) {
		void *reply = NULL;
		if (redisGetReply(c, &reply) != REDIS_OK) {
			failed = true;
			break;
		}
		r = reply;
		if (i == 3 && (r->type != REDIS_REPLY_ARRAY || r->elements != 2))
			failed = true;
		freeReplyObject(r);
	}
	failed |= c->err != 0;
	redisFree(c);
	return failed ? -EIO : n;
}

struct sub_ctx {
	struct cfg_cache cc;
	struct l2_purge_seq seq;
};

static uint64_t flushes[L2_FLUSH_REASONS]; /* atomics */

uint64_t l2_subscriber_flushes(enum l2_flush_reason why)
{
	return why < L2_FLUSH_REASONS ? __atomic_load_n(&flushes[why], __ATOMIC_RELAXED) : 0;
}

int l2_purge_seq_check(struct l2_purge_seq *s, const char *run_id, uint64_t pre, uint64_t post,
		       enum l2_flush_reason *why, uint64_t *missed)
{
	int rc = 0;

	*missed = 0;
	if (!s->known) {
		*why = L2_FLUSH_FIRST;
		rc = -1;
	} else if (strcmp(s->run_id, run_id) != 0 || post < s->base) {
		*why = L2_FLUSH_UNSURE;
		rc = -1;
	} else if (post - s->base > s->received) {
		*why = L2_FLUSH_MISSED;
		*missed = post - s->base - s->received;
		rc = -1;
	} else if (post - s->base < s->received) {
		*why = L2_FLUSH_UNSURE; /* messages nobody counted: a publisher without INCR */
		rc = -1;
	}
	s->known = true;
	snprintf(s->run_id, sizeof(s->run_id), "%s", run_id);
	s->base = pre;
	s->received = 0;
	return rc;
}

/* The instance's run_id and the purge counter (0 when absent): 0, or -EIO. */
static int read_seq(redisContext *c, char run_id[41], uint64_t *seq)
{
	void *info = NULL, *val = NULL;
	int rc = -EIO;

	redisAppendCommand(c, "INFO server");
	redisAppendCommand(c, "GET " PURGE_SEQ_KEY);
	if (redisGetReply(c, &info) != REDIS_OK || redisGetReply(c, &val) != REDIS_OK)
		goto out;
	const redisReply *i = info, *v = val;
	const char *id = i->type == REDIS_REPLY_STRING ? strstr(i->str, "\nrun_id:") : NULL;
	if (!id || strspn(id + 8, "0123456789abcdef") != 40)
		goto out;
	memcpy(run_id, id + 8, 40);
	run_id[40] = 0;
	if (v->type == REDIS_REPLY_NIL) {
		*seq = 0;
	} else if (v->type == REDIS_REPLY_STRING) {
		char *e;
		*seq = strtoull(v->str, &e, 10);
		if (e != v->str + v->len || !v->len)
			goto out;
	} else {
		goto out;
	}
	rc = 0;
out:
	if (info)
		freeReplyObject(info);
	if (val)
		freeReplyObject(val);
	return rc;
}

/* Subscribe c and count: name the connection, read the counter, SUBSCRIBE
 * and wait for its confirmation, read the counter again on a second
 * connection (a subscribed one may not GET), then decide whether L1 must
 * go. 0 when c listens, -errno when this attempt failed (the caller
 * retries; the counts still refer to the last subscription that worked,
 * so what goes by meanwhile is seen then). */
static int subscribe(struct sub_ctx *s, redisContext *c)
{
	char run_pre[41], run_post[41];
	uint64_t pre, post, missed;
	enum l2_flush_reason why;
	void *reply = NULL;

	reply = redisCommand(c, "CLIENT SETNAME reflexd-purge-%d", (int)getpid());
	if (reply)
		freeReplyObject(reply);
	if (read_seq(c, run_pre, &pre))
		return -EIO;
	reply = redisCommand(c, "SUBSCRIBE " PURGE_CHANNEL);
	const redisReply *r = reply;
	bool ok = r && r->type == REDIS_REPLY_ARRAY && r->elements == 3 &&
		  r->element[0]->type == REDIS_REPLY_STRING &&
		  !strcmp(r->element[0]->str, "subscribe");
	if (reply)
		freeReplyObject(reply);
	if (!ok)
		return -EPROTO;
	redisContext *c2 = blocking_connect(&s->cc, 1000);
	int err = c2 ? read_seq(c2, run_post, &post) : -EIO;
	if (c2)
		redisFree(c2);
	if (err || strcmp(run_pre, run_post) != 0) /* restarted in between: try again */
		return -EIO;
	if (l2_purge_seq_check(&s->seq, run_post, pre, post, &why, &missed) != 0) {
		size_t n = cache_store_flush();
		cache_store_barrier();
		__atomic_add_fetch(&flushes[why], 1, __ATOMIC_RELAXED);
		if (why == L2_FLUSH_MISSED)
			log_warn("cache L2: %llu purge(s) went by while the purge subscriber was "
				 "away; L1 flushed (%zu objects)",
				 (unsigned long long)missed, n);
		else if (why == L2_FLUSH_UNSURE)
			log_warn("cache L2: purges missed or not (redis %s restarted, or its %s "
				 "went back); L1 flushed (%zu objects)",
				 s->cc.redis.text, PURGE_SEQ_KEY, n);
		else if (n)
			log_info("cache L2: L1 flushed at the first subscription (%zu objects "
				 "stored before it)",
				 n);
	}
	log_info("cache L2: purge subscriber listening on %s (purge seq %llu)", s->cc.redis.text,
		 (unsigned long long)post);
	return 0;
}

static void apply_purge(const char *msg, size_t len)
{
	const char *nl = memchr(msg, '\n', len);

	if (!nl)
		return;
	size_t kl = (size_t)(nl - msg), vl = len - kl - 1;
	const char *v = nl + 1;
	if (kl == 3 && !memcmp(msg, "url", 3))
		cache_purge_url(v, vl, false);
	else if (kl == 6 && !memcmp(msg, "prefix", 6))
		cache_purge_url(v, vl, true);
	else if (kl == 3 && !memcmp(msg, "tag", 3))
		cache_purge_tag(v, vl);
	cache_store_barrier();
}

/* Wait for purges on the subscribed c until it fails or falls silent. */
static void listen_purges(struct sub_ctx *s, redisContext *c)
{
	bool pinged = false;

	for (;;) {
		void *reply = NULL;
		if (redisReaderGetReply(c->reader, &reply) != REDIS_OK)
			return;
		if (reply) {
			const redisReply *m = reply;
			if (m->type == REDIS_REPLY_ARRAY && m->elements == 3 &&
			    m->element[0]->type == REDIS_REPLY_STRING &&
			    !strcmp(m->element[0]->str, "message") &&
			    m->element[2]->type == REDIS_REPLY_STRING) {
				apply_purge(m->element[2]->str, m->element[2]->len);
				s->seq.received++;
			}
			freeReplyObject(reply);
			continue;
		}
		struct pollfd p = {.fd = c->fd, .events = POLLIN};
		int n = poll(&p, 1, SUB_IDLE_MS);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return;
		if (n == 0) {
			int done = 0;
			if (pinged) {
				log_warn("cache L2: purge subscriber: no answer from %s in %d ms; "
					 "reconnecting",
					 s->cc.redis.text, 2 * SUB_IDLE_MS);
				return;
			}
			redisAppendCommand(c, "PING");
			while (!done)
				if (redisBufferWrite(c, &done) != REDIS_OK)
					return;
			pinged = true;
			continue;
		}
		if (redisBufferRead(c) != REDIS_OK)
			return;
		pinged = false;
	}
}

static void *subscriber(void *arg)
{
	struct sub_ctx *s = arg;
	bool warned = false;

	cache_store_thread_enter();
	for (;;) {
		redisContext *c = blocking_connect(&s->cc, 1000);
		if (c && subscribe(s, c) == 0) {
			warned = false;
			listen_purges(s, c);
		} else if (!warned) {
			log_warn("cache L2: purge subscriber cannot reach redis %s; retrying",
				 s->cc.redis.text);
			warned = true;
		}
		if (c)
			redisFree(c);
		sleep(1);
	}
	return NULL;
}

void l2_subscriber_start(const struct cfg_cache *cc)
{
	static int started;
	pthread_t t;

	if (!cc->redis.len || __atomic_exchange_n(&started, 1, __ATOMIC_ACQ_REL))
		return;
	struct sub_ctx *s = calloc(1, sizeof(*s));
	if (!s)
		return;
	s->cc = *cc;
	if (pthread_create(&t, NULL, subscriber, s) != 0) {
		free(s);
		return;
	}
	pthread_detach(t);
}
