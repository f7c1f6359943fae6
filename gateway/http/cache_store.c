#include "http/cache_store.h"

#include <ck_epoch.h>
#include <ck_hs.h>
#include <ck_pr.h>
#include <ck_spinlock.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define N_SHARDS 64
#define PENDING_BUCKETS 16
/* Purges remembered for fills that were in flight when they ran: a fill
 * that started more than this many purges ago is dropped unchecked. */
#define PURGE_LOG 64

_Static_assert(sizeof(ck_epoch_entry_t) <= 16, "epoch entry slot too small");

struct pending {
	struct cache_key key;
	struct cache_waiter *waiters, **tail;
	struct pending *next;
	void *stream; /* the leader streams: claimers join it at once */
	void (*stream_get)(void *stream);
	int stream_result;
};

struct shard {
	ck_spinlock_fas_t lock; /* writers; readers go lock-free through ck_hs */
	ck_hs_t hs;
	struct cache_entry *q_head, *q_tail,
		*hand; /* SIEVE: new at head, hand walks tailwards→head */
	uint64_t bytes, budget, objects;
	struct pending *pending[PENDING_BUCKETS];
} __attribute__((aligned(64)));

/* One purge, for the fills in flight when it ran (cache_store_purged_since). */
struct purge_rec {
	uint64_t gen;
	int mode; /* 0 exact URL, 1 URL prefix, 2 tag, 3 primary key */
	struct cache_key key;
	char *s; /* malloc'd; NULL for a key, or when out of memory (matches all) */
	size_t len;
};

static struct {
	bool ready;
	ck_spinlock_fas_t init_lock;
	ck_epoch_t epoch;
	struct shard shards[N_SHARDS];
	uint64_t evictions, inserts, purged; /* atomics */
	uint64_t memory;		     /* the whole budget (atomic) */
	ck_spinlock_fas_t purge_lock;	     /* the purge log; purges are rare */
	uint64_t purge_gen;		     /* purges so far (atomic; written under purge_lock) */
	struct purge_rec purges[PURGE_LOG];  /* purge gen g is at [g % PURGE_LOG] */
} S;

static __thread ck_epoch_record_t *tls_rec;

/* ---- memory for ck_hs: maps are freed after a grace period -------------------- */

struct deferred {
	ck_epoch_entry_t ee;
	void *p;
};

static void deferred_free_cb(ck_epoch_entry_t *ee)
{
	struct deferred *d = (struct deferred *)ee;

	free(d->p);
	free(d);
}

static void *hs_malloc(size_t n)
{
	return malloc(n);
}

static void hs_free(void *p, size_t n, bool defer)
{
	if (!defer || !tls_rec) {
		free(p);
		return;
	}
	struct deferred *d = malloc(sizeof(*d));
	if (!d) {
		/* cannot defer: wait for readers instead (rare: out of memory) */
		ck_epoch_synchronize(tls_rec);
		free(p);
		return;
	}
	d->p = p;
	ck_epoch_call(tls_rec, &d->ee, deferred_free_cb);
}

static struct ck_malloc hs_allocator = {.malloc = hs_malloc, .free = hs_free};

static unsigned long hs_hash(const void *key, unsigned long seed)
{
	const struct cache_key *k = key;

	return (unsigned long)(k->lo ^ seed);
}

static bool hs_compare(const void *a, const void *b)
{
	return memcmp(a, b, sizeof(struct cache_key)) == 0;
}

static struct shard *shard_of(const struct cache_key *k)
{
	return &S.shards[k->hi % N_SHARDS];
}

/* ---- set-up ------------------------------------------------------------------ */

int cache_store_init(uint64_t memory)
{
	int rc = 0;

	ck_spinlock_fas_lock(&S.init_lock);
	if (S.ready)
		goto out;
	ck_epoch_init(&S.epoch);
	ck_spinlock_fas_init(&S.purge_lock);
	for (unsigned i = 0; i < N_SHARDS; i++) {
		struct shard *sh = &S.shards[i];
		ck_spinlock_fas_init(&sh->lock);
		sh->budget = memory / N_SHARDS;
		S.memory = memory;
		if (!ck_hs_init(&sh->hs, CK_HS_MODE_SPMC | CK_HS_MODE_OBJECT | CK_HS_MODE_DELETE,
				hs_hash, hs_compare, &hs_allocator, 1024, 0x5eed)) {
			rc = -ENOMEM;
			goto out;
		}
	}
	ck_pr_store_8((uint8_t *)&S.ready, 1);
out:
	ck_spinlock_fas_unlock(&S.init_lock);
	return rc;
}

static bool evict_one(struct shard *sh);

void cache_store_set_budget(uint64_t memory)
{
	if (!S.ready)
		return;
	cache_store_thread_enter(); /* evicted entries go back through the epoch */
	ck_pr_store_64(&S.memory, memory);
	for (unsigned i = 0; i < N_SHARDS; i++) {
		struct shard *sh = &S.shards[i];
		ck_spinlock_fas_lock(&sh->lock);
		sh->budget = memory / N_SHARDS;
		while (sh->bytes > sh->budget && evict_one(sh))
			;
		ck_spinlock_fas_unlock(&sh->lock);
	}
}

uint64_t cache_store_budget(void)
{
	return ck_pr_load_64(&S.memory);
}

bool cache_store_ready(void)
{
	return ck_pr_load_8((uint8_t *)&S.ready);
}

void cache_store_thread_enter(void)
{
	if (tls_rec)
		return;
	ck_epoch_record_t *r = ck_epoch_recycle(&S.epoch, NULL);
	if (!r) {
		r = aligned_alloc(CK_MD_CACHELINE, (sizeof(*r) + CK_MD_CACHELINE - 1) &
							   ~(size_t)(CK_MD_CACHELINE - 1));
		if (!r)
			return;
		ck_epoch_register(&S.epoch, r, NULL);
	}
	tls_rec = r;
}

void cache_store_quiesce(void)
{
	if (tls_rec && tls_rec->n_pending)
		ck_epoch_poll(tls_rec);
}

void cache_store_barrier(void)
{
	if (tls_rec)
		ck_epoch_barrier(tls_rec);
}

/* ---- references ------------------------------------------------------------- */

static void entry_free_cb(ck_epoch_entry_t *ee)
{
	struct cache_entry *e =
		(struct cache_entry *)((char *)ee - offsetof(struct cache_entry, epoch_entry));

	free(e);
}

void cache_entry_get(struct cache_entry *e)
{
	ck_pr_inc_32(&e->refs);
}

/* A reference from a pointer found in the table, unless the entry is
 * already on its way out (count zero). */
static bool entry_tryget(struct cache_entry *e)
{
	uint32_t n = ck_pr_load_32(&e->refs);

	while (n) {
		if (ck_pr_cas_32_value(&e->refs, n, n + 1, &n))
			return true;
	}
	return false;
}

void cache_entry_put(struct cache_entry *e)
{
	bool zero;

	if (!e)
		return;
	ck_pr_dec_32_zero(&e->refs, &zero);
	if (!zero)
		return;
	if (tls_rec) {
		ck_epoch_call(tls_rec, (ck_epoch_entry_t *)e->epoch_entry, entry_free_cb);
	} else {
		/* a thread unknown to the store: wait out the readers here */
		cache_store_thread_enter();
		if (tls_rec)
			ck_epoch_call(tls_rec, (ck_epoch_entry_t *)e->epoch_entry, entry_free_cb);
	}
}

void cache_entry_release(void *e)
{
	cache_entry_put(e);
}

struct cache_entry *cache_store_get(const struct cache_key *k)
{
	struct shard *sh = shard_of(k);
	ck_epoch_section_t section;
	struct cache_entry *e;

	if (!S.ready || !tls_rec)
		return NULL;
	ck_epoch_begin(tls_rec, &section);
	e = ck_hs_get(&sh->hs, (unsigned long)k->lo, k);
	if (e && !entry_tryget(e))
		e = NULL;
	ck_epoch_end(tls_rec, &section);
	if (e && !ck_pr_load_8(&e->visited))
		ck_pr_store_8(&e->visited, 1);
	return e;
}

/* ---- the queue (shard lock held) ---------------------------------------------- */

static void q_unlink(struct shard *sh, struct cache_entry *e)
{
	if (sh->hand == e)
		sh->hand = e->q_prev; /* towards the head */
	if (e->q_prev)
		e->q_prev->q_next = e->q_next;
	else
		sh->q_head = e->q_next;
	if (e->q_next)
		e->q_next->q_prev = e->q_prev;
	else
		sh->q_tail = e->q_prev;
	e->q_prev = e->q_next = NULL;
}

/* Take e out of the table and the queue; drops the table's reference. */
static void unlink_locked(struct shard *sh, struct cache_entry *e)
{
	if (!e->linked)
		return;
	ck_hs_remove(&sh->hs, (unsigned long)e->key.lo, &e->key);
	q_unlink(sh, e);
	e->linked = 0;
	sh->bytes -= e->charge;
	sh->objects--;
	cache_entry_put(e);
}

/* SIEVE: from the hand (or the tail), skip visited entries (clearing the
 * bit), evict the first unvisited one. */
static bool evict_one(struct shard *sh)
{
	struct cache_entry *e = sh->hand ? sh->hand : sh->q_tail;

	if (!e)
		return false;
	for (;;) {
		if (!e)
			e = sh->q_tail;
		if (ck_pr_load_8(&e->visited)) {
			ck_pr_store_8(&e->visited, 0);
			e = e->q_prev;
			continue;
		}
		sh->hand = e->q_prev;
		unlink_locked(sh, e);
		ck_pr_inc_64(&S.evictions);
		return true;
	}
}

int cache_store_put(const struct cache_entry_spec *s)
{
	struct shard *sh = shard_of(&s->key);
	size_t n = sizeof(struct cache_entry) + s->url_len + s->tags_len + s->head_len +
		   s->body_len + 4;
	struct cache_entry *e, *old = NULL;

	if (!S.ready || !tls_rec)
		return -ENOMEM;
	if (n > sh->budget)
		return -E2BIG;
	e = malloc(n);
	if (!e)
		return -ENOMEM;
	memset(e, 0, sizeof(*e));
	char *d = e->data;
	e->key = s->key;
	e->primary = s->primary;
	e->kind = s->kind;
	e->vary_gen = s->vary_gen;
	e->status = s->status;
	e->meta = s->meta;
	e->expires_ms = s->expires_ms;
	e->charge = n;
	e->url = d;
	e->url_len = s->url_len;
	memcpy(d, s->url, s->url_len);
	d += s->url_len;
	*d++ = 0;
	e->tags = d;
	e->tags_len = s->tags_len;
	if (s->tags_len)
		memcpy(d, s->tags, s->tags_len);
	d += s->tags_len;
	*d++ = 0;
	e->head = d;
	e->head_len = s->head_len;
	if (s->head_len)
		memcpy(d, s->head, s->head_len);
	d += s->head_len;
	*d++ = 0;
	e->body = d;
	e->body_len = s->body_len;
	if (s->body_len)
		memcpy(d, s->body, s->body_len);
	if (s->etag_len) {
		e->etag = e->head + s->etag_off;
		e->etag_len = s->etag_len;
	}
	if (s->lm_len) {
		e->last_modified = e->head + s->lm_off;
		e->last_modified_len = s->lm_len;
	}
	e->refs = 1; /* the table's */
	e->linked = 1;

	ck_spinlock_fas_lock(&sh->lock);
	while (sh->bytes + n > sh->budget && evict_one(sh))
		;
	void *prev = NULL;
	if (!ck_hs_set(&sh->hs, (unsigned long)e->key.lo, e, &prev)) {
		ck_spinlock_fas_unlock(&sh->lock);
		free(e);
		return -ENOMEM;
	}
	old = prev;
	if (old) {
		q_unlink(sh, old);
		old->linked = 0;
		sh->bytes -= old->charge;
		sh->objects--;
	}
	e->q_next = sh->q_head;
	if (sh->q_head)
		sh->q_head->q_prev = e;
	sh->q_head = e;
	if (!sh->q_tail)
		sh->q_tail = e;
	sh->bytes += n;
	sh->objects++;
	ck_spinlock_fas_unlock(&sh->lock);
	if (old)
		cache_entry_put(old);
	ck_pr_inc_64(&S.inserts);
	return 0;
}

bool cache_store_remove(const struct cache_key *k, const struct cache_entry *only)
{
	struct shard *sh = shard_of(k);
	bool removed = false;

	if (!S.ready || !tls_rec)
		return false;
	ck_spinlock_fas_lock(&sh->lock);
	struct cache_entry *e = ck_hs_get(&sh->hs, (unsigned long)k->lo, k);
	if (e && (!only || e == only)) {
		unlink_locked(sh, e);
		removed = true;
	}
	ck_spinlock_fas_unlock(&sh->lock);
	return removed;
}

static bool has_token(const char *list, size_t n, const char *tok, size_t tn)
{
	size_t i = 0;

	while (i < n) {
		while (i < n && (list[i] == ' ' || list[i] == ',' || list[i] == '\t'))
			i++;
		size_t s = i;
		while (i < n && list[i] != ' ' && list[i] != ',' && list[i] != '\t')
			i++;
		if (i - s == tn && memcmp(list + s, tok, tn) == 0)
			return true;
	}
	return false;
}

/* Remember a purge before it scans (a fill that stores after this sees it;
 * one that stored before is found by the scan). */
static void purge_note(int mode, const char *s, size_t len, const struct cache_key *k)
{
	char *copy = s ? malloc(len + 1) : NULL;

	if (copy) {
		memcpy(copy, s, len);
		copy[len] = 0;
	}
	ck_spinlock_fas_lock(&S.purge_lock);
	uint64_t g = S.purge_gen + 1;
	struct purge_rec *p = &S.purges[g % PURGE_LOG];
	free(p->s);
	*p = (struct purge_rec){.gen = g, .mode = mode, .s = copy, .len = len};
	if (k)
		p->key = *k;
	ck_pr_store_64(&S.purge_gen, g);
	ck_spinlock_fas_unlock(&S.purge_lock);
}

uint64_t cache_store_purge_gen(void)
{
	return ck_pr_load_64(&S.purge_gen);
}

bool cache_store_purged_since(uint64_t since, const struct cache_key *primary, const char *url,
			      size_t url_len, const char *tags, size_t tags_len)
{
	bool hit = false;

	if (ck_pr_load_64(&S.purge_gen) == since)
		return false;
	ck_spinlock_fas_lock(&S.purge_lock);
	uint64_t now = S.purge_gen;
	if (now - since >= PURGE_LOG) {
		hit = true; /* the log no longer reaches back: assume the worst */
		goto out;
	}
	for (uint64_t g = since + 1; g <= now && !hit; g++) {
		const struct purge_rec *p = &S.purges[g % PURGE_LOG];
		if (p->mode == 3)
			hit = !memcmp(&p->key, primary, sizeof(*primary));
		else if (!p->s)
			hit = true;
		else if (p->mode == 2)
			hit = has_token(tags, tags_len, p->s, p->len);
		else if (p->mode == 1)
			hit = url_len >= p->len && !memcmp(url, p->s, p->len);
		else
			hit = url_len == p->len && !memcmp(url, p->s, p->len);
	}
out:
	ck_spinlock_fas_unlock(&S.purge_lock);
	return hit;
}

bool cache_store_invalidate(const struct cache_key *k)
{
	if (!S.ready)
		return false;
	purge_note(3, NULL, 0, k);
	return cache_store_remove(k, NULL);
}

static size_t purge_scan(const char *s, size_t len, int mode /* 0 exact, 1 prefix, 2 tag */)
{
	size_t removed = 0;

	if (!S.ready)
		return 0;
	purge_note(mode, s, len, NULL);
	cache_store_thread_enter();
	if (!tls_rec)
		return 0;
	for (unsigned i = 0; i < N_SHARDS; i++) {
		struct shard *sh = &S.shards[i];
		ck_spinlock_fas_lock(&sh->lock);
		struct cache_entry *e = sh->q_head;
		while (e) {
			struct cache_entry *next = e->q_next;
			bool m;
			if (mode == 2)
				m = has_token(e->tags, e->tags_len, s, len);
			else if (mode == 1)
				m = e->url_len >= len && memcmp(e->url, s, len) == 0;
			else
				m = e->url_len == len && memcmp(e->url, s, len) == 0;
			if (m) {
				unlink_locked(sh, e);
				removed++;
			}
			e = next;
		}
		ck_spinlock_fas_unlock(&sh->lock);
	}
	ck_pr_add_64(&S.purged, removed);
	return removed;
}

size_t cache_store_purge_url(const char *url, size_t len, bool exact)
{
	return purge_scan(url, len, exact ? 0 : 1);
}

size_t cache_store_purge_tag(const char *tag, size_t len)
{
	return len ? purge_scan(tag, len, 2) : 0;
}

size_t cache_store_flush(void)
{
	return purge_scan("", 0, 1); /* every URL starts with "" */
}

/* ---- coalescing ------------------------------------------------------------- */

static struct pending **pending_slot(struct shard *sh, const struct cache_key *k)
{
	struct pending **pp = &sh->pending[(k->lo >> 7) % PENDING_BUCKETS];

	while (*pp && memcmp(&(*pp)->key, k, sizeof(*k)) != 0)
		pp = &(*pp)->next;
	return pp;
}

enum cache_claim cache_store_claim(const struct cache_key *k, struct cache_waiter *wt,
				   const struct cache_entry *skip, struct cache_entry **hit)
{
	struct shard *sh = shard_of(k);
	enum cache_claim res;

	*hit = NULL;
	if (!S.ready || !tls_rec)
		return CACHE_CLAIM_LEADER;
	ck_spinlock_fas_lock(&sh->lock);
	struct cache_entry *e = ck_hs_get(&sh->hs, (unsigned long)k->lo, k);
	if (e && e != skip && e->kind == CACHE_OBJECT && entry_tryget(e)) {
		*hit = e;
		res = CACHE_CLAIM_HIT;
		goto out;
	}
	struct pending **pp = pending_slot(sh, k);
	if (*pp && (*pp)->stream) {
		struct pending *p = *pp;
		p->stream_get(p->stream);
		wt->stream = p->stream;
		int result = p->stream_result;
		ck_spinlock_fas_unlock(&sh->lock);
		wt->on_done(wt, result);
		return CACHE_CLAIM_WAITER;
	}
	if (*pp) {
		wt->next = NULL;
		*(*pp)->tail = wt;
		(*pp)->tail = &wt->next;
		res = CACHE_CLAIM_WAITER;
		goto out;
	}
	struct pending *p = calloc(1, sizeof(*p));
	if (p) {
		p->key = *k;
		p->tail = &p->waiters;
		*pp = p;
	}
	res = CACHE_CLAIM_LEADER;
out:
	ck_spinlock_fas_unlock(&sh->lock);
	return res;
}

void cache_store_finish(const struct cache_key *k, int result)
{
	struct shard *sh = shard_of(k);
	struct cache_waiter *list = NULL;

	if (!S.ready)
		return;
	ck_spinlock_fas_lock(&sh->lock);
	struct pending **pp = pending_slot(sh, k);
	struct pending *p = *pp;
	if (p) {
		*pp = p->next;
		list = p->waiters;
	}
	ck_spinlock_fas_unlock(&sh->lock);
	free(p);
	while (list) {
		struct cache_waiter *next = list->next;
		list->on_done(list, result);
		list = next;
	}
}

void cache_store_stream(const struct cache_key *k, void *stream, void (*get)(void *stream),
			int result)
{
	struct shard *sh = shard_of(k);
	struct cache_waiter *list = NULL;

	if (!S.ready)
		return;
	ck_spinlock_fas_lock(&sh->lock);
	struct pending *p = *pending_slot(sh, k);
	if (p) {
		p->stream = stream;
		p->stream_get = get;
		p->stream_result = result;
		list = p->waiters;
		p->waiters = NULL;
		p->tail = &p->waiters;
		for (struct cache_waiter *w = list; w; w = w->next) {
			get(stream);
			w->stream = stream;
		}
	}
	ck_spinlock_fas_unlock(&sh->lock);
	while (list) {
		struct cache_waiter *next = list->next;
		list->on_done(list, result);
		list = next;
	}
}

void cache_store_stats(struct cache_stats_global *out)
{
	*out = (struct cache_stats_global){0};
	for (unsigned i = 0; i < N_SHARDS; i++) {
		out->bytes += ck_pr_load_64(&S.shards[i].bytes);
		out->objects += ck_pr_load_64(&S.shards[i].objects);
	}
	out->evictions = ck_pr_load_64(&S.evictions);
	out->inserts = ck_pr_load_64(&S.inserts);
	out->purged = ck_pr_load_64(&S.purged);
}
