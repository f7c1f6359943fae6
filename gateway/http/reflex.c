/* reflex.c — the reflex rules step: compile (config load, admin API), scan
 * (URL, headers, held body), decide, act. The contract is in reflex.h; the
 * rule language in docs/rules.md.
 */
#include "http/reflex.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "admin.h"
#include "core/config.h"
#include "core/jsonw.h"
#include "core/log.h"
#include "gateway.h"
#include "http/detect.h"
#include "http/respond.h"
#include "http/upstream.h"
#include "http/worker.h"

/* Client bytes queued to an upstream before the re-chunking forwarder
 * waits (as req.c's IN_HIGH). */
#define RX_OUT_HIGH (256 * 1024)
#define RX_MAX_DET 64 /* detector ids fit a uint64_t mask */
#define RX_HDR_MEMO 128

enum rx_place { RX_URL = 0, RX_HEADER, RX_BODY };
static const char *const place_names[] = {"url", "header", "body"};

struct rx_rule {
	struct cfg_rx_rule c; /* own copy: body and resp_headers belong to the set */
	uint64_t mask;	      /* detectors the rule looks for */
	int pool;	      /* route: pool index */
	int slot;	      /* its counter in rx_rule_hits[] (by name), -1: none */
	bool from_admin;
};

struct reflex_set {
	struct detect_db *db;	  /* owned by the base version */
	struct reflex_set *base;  /* NULL: this is the base (the snapshot's own) */
	struct reflex_set *cur;	  /* base only: the newest admin version, NULL: itself */
	struct reflex_set *next;  /* base only: chain of every admin version */
	const struct config *cfg; /* the snapshot (pool names for admin rules) */
	struct rx_rule *rules;
	unsigned n_rules;
	uint64_t max_scan_bytes;
	/* the detectors any rule asks for, per place: scans look for no others */
	uint64_t url_mask, hdr_mask, body_mask;
};

static void set_masks(struct reflex_set *s)
{
	s->url_mask = s->hdr_mask = s->body_mask = 0;
	for (unsigned i = 0; i < s->n_rules; i++) {
		const struct rx_rule *r = &s->rules[i];
		if (r->c.in & CFG_RX_IN_URL)
			s->url_mask |= r->mask;
		if (r->c.in & CFG_RX_IN_HEADERS)
			s->hdr_mask |= r->mask;
		if (r->c.in & CFG_RX_IN_BODY)
			s->body_mask |= r->mask;
	}
}

/* the first hit of a detector in this request */
struct rx_hit { /* valid when its bit in reflex_req.first_set is */
	uint8_t place;
	uint64_t off;
	char hash[DETECT_HASH_HEX + 1];
};

struct rx_bm { /* a body match */
	uint64_t start, end;
	unsigned id;
};

enum rx_phase {
	RX_NONE = 0, /* the body (if any) is not ours: req_pump_body moves it */
	RX_HOLD,     /* reading the body into held, scanning it */
	RX_HELD,     /* read (or over the limit): the decision is being made */
	RX_SEND,     /* decided: send out (framed) once the upstream exchange exists */
	RX_RECHUNK,  /* oversize chunked body: decode and re-chunk the rest */
	RX_DONE,
};

struct reflex_req {
	struct reflex_set *set;
	enum rx_phase phase;
	bool url_done, oversize, chunked, body_scanned;
	bool has_body;	  /* the request has a body (known at the head) */
	bool scan_failed; /* out of memory or a Hyperscan error: treated as oversize */
	uint64_t url_hits, body_hits;
	uint64_t hdr_scanned[RX_HDR_MEMO / 64];
	uint64_t first_set; /* detectors with an entry in first[] */
	/* scan context for on_match */
	uint8_t place;
	uint64_t *hits;
	/* the body */
	struct detect_stream *st;
	struct buf held; /* payload (de-chunked) */
	struct rx_bm *bm;
	unsigned n_bm, cap_bm;
	/* the decision's effects */
	uint64_t redact_mask;
	uint64_t redact_url;	   /* detectors redacted in the URL */
	uint64_t redact_hdr_rules; /* redact rules (by position) rewriting their headers */
	int route_pool;
	bool nocache;
	struct buf tags;
	char status[160]; /* the access record's reflex field */
	/* response scanning (DLP): detectors, modes, the first rule asking */
	uint64_t resp_mask;
	const struct rx_rule *resp_rule;
	struct rx_resp *resp;
	/* From here on not zeroed for a new request (3.7 KiB every request would
	 * pay for): each entry is written before it is read, as the masks above
	 * say. Keep hdr_hits the first of them (req_new zeroes up to it). */
	uint64_t hdr_hits[RX_HDR_MEMO];	 /* by hdr_scanned */
	struct rx_hit first[RX_MAX_DET]; /* by first_set */
	uint8_t redact_mode[RX_MAX_DET]; /* by redact_mask */
	uint8_t resp_mode[RX_MAX_DET];	 /* by resp_mask */
};

#define RX_NOT_DATA UINT64_MAX

/* A response body under scan. Bytes are held until the detectors are done
 * with them (detect_stream_settled_mask), then leave rewritten. With SSE
 * only the values of "data:" lines are scanned, concatenated across events
 * (a token stream), and held bytes leave in whole events. */
struct rx_resp {
	struct detect_stream *st;
	bool sse, chunked;
	uint8_t lstate, pfx; /* SSE line parser */
	struct buf raw;	     /* held bytes */
	uint64_t *map;	     /* per held byte: its offset in the scanned data, or RX_NOT_DATA */
	size_t map_cap;
	uint64_t data_off; /* data bytes fed so far */
	struct rx_bm *bm;  /* matches to rewrite (data offsets), not yet passed */
	unsigned n_bm, cap_bm;
	struct buf tmp, out;
	uint64_t n_redacted;
	bool failed;
};

/* ---- per-rule counters, keyed by name ------------------------------------------ */

/* stats_worker.rx_rule_hits[] is indexed by a slot that belongs to a rule
 * name, not to a position: adding or removing a rule (admin API, reload)
 * leaves every other rule's counter alone, and a rule that survives a
 * reload or is removed and added again keeps counting where it was
 * (Prometheus counters stay monotonic per label set). A slot holds its name
 * while any rule of any live set version has it (refs); when all slots are
 * taken, one whose name no live rule has is given to the new name and the
 * hits of its earlier owners become its base, subtracted when reporting. */
static pthread_mutex_t slot_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
	char name[CFG_NAME_MAX];
	unsigned refs;
	uint64_t base;
} slots[STATS_RX_RULES];
static unsigned n_slots;
/* Seen by the admin handlers: the workers whose counters a reused slot's
 * base is read from. Until then nothing has been reported (admin only). */
static struct gateway *rx_gw;

static uint64_t slot_sum(struct gateway *g, unsigned i)
{
	uint64_t n = 0;

	for (unsigned w = 0; g && w < g->n_workers; w++)
		n += STAT_LOAD(g->workers[w].stats.rx_rule_hits[i]);
	return n;
}

/* A slot for name (a new reference), or -1 when every slot is in use. */
static int slot_get(const char *name)
{
	int got = -1;

	pthread_mutex_lock(&slot_mu);
	for (unsigned i = 0; i < n_slots && got < 0; i++)
		if (!strcmp(slots[i].name, name))
			got = (int)i;
	if (got < 0 && n_slots < STATS_RX_RULES) {
		got = (int)n_slots++;
		slots[got].base = 0;
	} else if (got < 0) {
		for (unsigned i = 0; i < n_slots && got < 0; i++)
			if (!slots[i].refs) {
				got = (int)i;
				slots[i].base =
					slot_sum(__atomic_load_n(&rx_gw, __ATOMIC_ACQUIRE), i);
			}
	}
	if (got >= 0) {
		snprintf(slots[got].name, sizeof(slots[got].name), "%s", name);
		slots[got].refs++;
	}
	pthread_mutex_unlock(&slot_mu);
	return got;
}

static void slot_ref(int slot, int delta)
{
	if (slot < 0)
		return;
	pthread_mutex_lock(&slot_mu);
	slots[slot].refs += (unsigned)delta;
	pthread_mutex_unlock(&slot_mu);
}

/* The hits of the rule that owns slot, from summed counters. */
static uint64_t slot_hits(int slot, const uint64_t *sum)
{
	uint64_t base;

	if (slot < 0)
		return 0;
	pthread_mutex_lock(&slot_mu);
	base = slots[slot].base;
	pthread_mutex_unlock(&slot_mu);
	return sum[slot] >= base ? sum[slot] - base : 0;
}

/* ---- compiling -------------------------------------------------------------- */

static void rule_fini(struct rx_rule *r)
{
	config_rx_rule_fini(&r->c);
	slot_ref(r->slot, -1);
	r->slot = -1;
}

static int rule_copy(struct rx_rule *dst, const struct rx_rule *src)
{
	*dst = *src;
	dst->slot = -1;
	dst->c.body = src->c.body ? strdup(src->c.body) : NULL;
	dst->c.resp_headers = src->c.resp_headers ? strdup(src->c.resp_headers) : NULL;
	if ((src->c.body && !dst->c.body) || (src->c.resp_headers && !dst->c.resp_headers)) {
		rule_fini(dst);
		return -ENOMEM;
	}
	dst->slot = src->slot;
	slot_ref(dst->slot, 1);
	return 0;
}

static void set_free_one(struct reflex_set *s)
{
	for (unsigned i = 0; i < s->n_rules; i++)
		rule_fini(&s->rules[i]);
	free(s->rules);
	free(s);
}

static void set_release(void *p)
{
	struct reflex_set *s = p, *v, *nx;

	if (!s)
		return;
	for (v = s->next; v; v = nx) {
		nx = v->next;
		set_free_one(v);
	}
	detect_db_free(s->db);
	set_free_one(s);
}

/* Resolve a rule's detector names and pool; why gets the reason. */
static int rule_resolve(const struct detect_db *db, const struct config *cfg,
			const struct cfg_rx_rule *c, struct rx_rule *out, char *why, size_t whylen)
{
	unsigned n = detect_count(db);

	memset(out, 0, sizeof(*out));
	out->pool = -1;
	out->slot = -1;
	for (unsigned i = 0; i < c->n_detect; i++) {
		const char *d = c->detect[i];
		int fam = -1;

		if (!strcmp(d, "any")) {
			out->mask |= n >= 64 ? ~0ULL : (1ULL << n) - 1;
			continue;
		}
		if (!strcmp(d, "pii"))
			fam = DETECT_FAMILY_PII;
		else if (!strcmp(d, "secret"))
			fam = DETECT_FAMILY_SECRET;
		else if (!strcmp(d, "injection"))
			fam = DETECT_FAMILY_INJECTION;
		else if (!strcmp(d, "user"))
			fam = DETECT_FAMILY_USER;
		if (fam >= 0) {
			for (unsigned id = 0; id < n; id++)
				if ((int)detect_family_of(db, id) == fam)
					out->mask |= 1ULL << id;
			continue;
		}
		int id = detect_lookup(db, d);
		if (id < 0) {
			snprintf(why, whylen, "detect: unknown detector \"%s\"", d);
			return -1;
		}
		out->mask |= 1ULL << id;
	}
	if (c->action == CFG_RX_ROUTE) {
		out->pool = config_pool_index(cfg, c->pool);
		if (out->pool < 0) {
			snprintf(why, whylen, "pool: unknown pool \"%s\"", c->pool);
			return -1;
		}
	}
	out->c = *c;
	out->c.body = c->body ? strdup(c->body) : NULL;
	out->c.resp_headers = c->resp_headers ? strdup(c->resp_headers) : NULL;
	if ((c->body && !out->c.body) || (c->resp_headers && !out->c.resp_headers)) {
		rule_fini(out);
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	out->slot = slot_get(c->name);
	if (out->slot < 0)
		log_warn("reflex: rule %s: all %d rule counters are in use; its hits are not "
			 "counted",
			 c->name, STATS_RX_RULES);
	return 0;
}

static int __attribute__((format(printf, 5, 6)))
build_fail(const struct config *c, unsigned line, char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	int n = 0;

	if (c->source[0] && line)
		n = snprintf(err, errlen, "%s:%u: ", c->source, line);
	else if (c->source[0])
		n = snprintf(err, errlen, "%s: ", c->source);
	if (n < 0 || (size_t)n >= errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/* ---- rules added through the admin API -------------------------------------- */

/* They outlive the snapshot they were added to (docs/rules.md, "Admin API
 * rules and reloads"): every build puts them back after the file's rules,
 * or before the rule named by their ?before= when the file has it. A file
 * rule of the same name wins (logged). One that the new file cannot take
 * (its pool or detector is gone, more than the rule limit) refuses the
 * reload, naming it: the old config keeps running. In memory only. */
struct rx_api_rule {
	struct cfg_rx_rule c; /* own copy (body, resp_headers) */
	char before[CFG_NAME_MAX];
};

/* admin_mu guards the API rule list and serialises the admin handlers. */
static pthread_mutex_t admin_mu = PTHREAD_MUTEX_INITIALIZER;
static struct rx_api_rule *api_rules;
static unsigned n_api_rules;

static int find_rule(const struct reflex_set *s, const char *name);

static void api_rule_drop(const char *name)
{
	for (unsigned i = 0; i < n_api_rules; i++) {
		if (strcmp(api_rules[i].c.name, name))
			continue;
		config_rx_rule_fini(&api_rules[i].c);
		memmove(api_rules + i, api_rules + i + 1,
			(n_api_rules - i - 1) * sizeof(*api_rules));
		n_api_rules--;
		return;
	}
}

static int api_rule_keep(const struct cfg_rx_rule *c, const char *before)
{
	struct rx_api_rule *nv = realloc(api_rules, (n_api_rules + 1) * sizeof(*nv));
	struct rx_api_rule *a;

	if (!nv)
		return -ENOMEM;
	api_rules = nv;
	a = &api_rules[n_api_rules];
	a->c = *c;
	a->c.body = c->body ? strdup(c->body) : NULL;
	a->c.resp_headers = c->resp_headers ? strdup(c->resp_headers) : NULL;
	if ((c->body && !a->c.body) || (c->resp_headers && !a->c.resp_headers)) {
		config_rx_rule_fini(&a->c);
		return -ENOMEM;
	}
	snprintf(a->before, sizeof(a->before), "%s", before);
	n_api_rules++;
	return 0;
}

/* Put the API rules into a set being built (admin_mu held; s->rules has
 * room for n_api_rules more). -1 with the reason in err. */
static int api_rules_merge(struct config *c, struct reflex_set *s, char *err, size_t errlen);

/* config_reflex_build: the snapshot's reflex section → its compiled set. */
static int reflex_build(struct config *c, char *err, size_t errlen)
{
	const struct cfg_reflex *rc = &c->reflex;
	struct detect_user *users = NULL;
	struct reflex_set *s = NULL;
	unsigned char key[32];
	char derr[512];
	int rc_ = -1;

	if (rc->n_rules > STATS_RX_RULES)
		return build_fail(c, rc->rules[STATS_RX_RULES].line, err, errlen,
				  "reflex.rules: at most %d rules", STATS_RX_RULES);
	if (rc->n_detectors && !(users = calloc(rc->n_detectors, sizeof(*users))))
		return build_fail(c, 0, err, errlen, "out of memory");
	for (unsigned i = 0; i < rc->n_detectors; i++)
		users[i] = (struct detect_user){
			.name = rc->detectors[i].name,
			.pattern = rc->detectors[i].pattern,
			.severity = (enum detect_severity)rc->detectors[i].severity,
			.caseless = rc->detectors[i].caseless};
	size_t klen = strlen(rc->hash_key);
	const void *kp = rc->hash_key;
	if (!klen) {
		/* no key given: a random one per snapshot (hashes join within it) */
		if (getrandom(key, sizeof(key), 0) != (ssize_t)sizeof(key)) {
			build_fail(c, 0, err, errlen, "reflex: no random bytes for the hash key");
			goto out;
		}
		kp = key;
		klen = sizeof(key);
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		build_fail(c, 0, err, errlen, "out of memory");
		goto out;
	}
	s->cfg = c;
	s->max_scan_bytes = rc->max_scan_bytes;
	int e = detect_db_build(&(struct detect_opts){.user = users,
						      .n_user = rc->n_detectors,
						      .hash_key = kp,
						      .hash_key_len = klen},
				&s->db, derr, sizeof(derr));
	if (e) {
		unsigned line = 0;
		for (unsigned i = 0; i < rc->n_detectors; i++) {
			char q[CFG_NAME_MAX + 4];
			snprintf(q, sizeof(q), "'%s'", rc->detectors[i].name);
			if (strstr(derr, q))
				line = rc->detectors[i].line;
		}
		build_fail(c, line, err, errlen, "reflex.detectors: %s", derr);
		goto out;
	}
	if (detect_count(s->db) > RX_MAX_DET) {
		build_fail(c, 0, err, errlen, "reflex.detectors: at most %d detectors in all",
			   RX_MAX_DET);
		goto out;
	}
	pthread_mutex_lock(&admin_mu);
	if ((rc->n_rules || n_api_rules) &&
	    !(s->rules = calloc(rc->n_rules + n_api_rules, sizeof(*s->rules)))) {
		pthread_mutex_unlock(&admin_mu);
		build_fail(c, 0, err, errlen, "out of memory");
		goto out;
	}
	for (unsigned i = 0; i < rc->n_rules; i++) {
		char why[256];
		if (rule_resolve(s->db, c, &rc->rules[i], &s->rules[i], why, sizeof(why))) {
			pthread_mutex_unlock(&admin_mu);
			build_fail(c, rc->rules[i].line, err, errlen, "reflex.rules[%u] (%s): %s",
				   i, rc->rules[i].name, why);
			goto out;
		}
		s->n_rules++;
	}
	int me = api_rules_merge(c, s, err, errlen);
	pthread_mutex_unlock(&admin_mu);
	if (me)
		goto out;
	set_masks(s);
	c->reflex.compiled = s;
	s = NULL;
	rc_ = 0;
out:
	set_release(s);
	free(users);
	return rc_;
}

static int api_rules_merge(struct config *c, struct reflex_set *s, char *err, size_t errlen)
{
	for (unsigned i = 0; i < n_api_rules; i++) {
		const struct rx_api_rule *a = &api_rules[i];
		struct rx_rule ru;
		char why[256];
		int at;

		if (find_rule(s, a->c.name) >= 0) {
			log_warn("reflex: the config's rule %s replaces the one added through the "
				 "admin API",
				 a->c.name);
			continue;
		}
		if (s->n_rules >= STATS_RX_RULES)
			return build_fail(c, 0, err, errlen,
					  "reflex: rule %s (added through the admin API) is one "
					  "more than %d rules; delete it through the API first",
					  a->c.name, STATS_RX_RULES);
		if (rule_resolve(s->db, c, &a->c, &ru, why, sizeof(why)))
			return build_fail(c, 0, err, errlen,
					  "reflex: rule %s (added through the admin API) does not "
					  "fit this config: %s; delete it through the API first",
					  a->c.name, why);
		ru.from_admin = true;
		at = a->before[0] ? find_rule(s, a->before) : -1;
		if (at < 0)
			at = (int)s->n_rules;
		memmove(s->rules + at + 1, s->rules + at, (s->n_rules - (unsigned)at) * sizeof(ru));
		s->rules[at] = ru;
		s->n_rules++;
	}
	return 0;
}

static struct reflex_set *set_current(const struct config *cfg)
{
	struct reflex_set *base = cfg->reflex.compiled, *cur;

	if (!base)
		return NULL;
	cur = __atomic_load_n(&base->cur, __ATOMIC_ACQUIRE);
	return cur ? cur : base;
}

/* ---- per-worker scratch ------------------------------------------------------ */

/* Two entries: during a reload a worker serves requests of both snapshots. */
static __thread struct {
	const struct detect_db *db;
	struct detect_scratch *s;
} tls_scratch[2];
static __thread unsigned tls_scratch_next;

static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;

/* One request state kept per worker thread, with the memory of its held
 * body (up to RX_SPARE_HELD) and tag lines: a worker serves its requests one
 * after the other, so three mallocs and frees per request are saved. */
#define RX_SPARE_HELD (64 * 1024)
static __thread struct reflex_req *tls_spare;
static __thread bool tls_key_set;
static __thread struct buf tls_path; /* head_names.path's memory */

/* A worker thread ends: its scratch goes with it (LSan would call it a leak). */
static void scratch_exit(void *unused)
{
	(void)unused;
	if (tls_spare) {
		buf_free(&tls_spare->held);
		buf_free(&tls_spare->tags);
		free(tls_spare);
		tls_spare = NULL;
	}
	buf_free(&tls_path);
	for (unsigned i = 0; i < 2; i++) {
		detect_scratch_free(tls_scratch[i].s);
		tls_scratch[i].s = NULL;
		tls_scratch[i].db = NULL;
	}
}

static void scratch_key_make(void)
{
	pthread_key_create(&scratch_key, scratch_exit);
}

/* This thread keeps scratch or a spare state: have scratch_exit free them. */
static void scratch_exit_hook(void)
{
	if (tls_key_set)
		return;
	pthread_once(&scratch_once, scratch_key_make);
	pthread_setspecific(scratch_key, (void *)1); /* non-NULL: the destructor runs */
	tls_key_set = true;
}

static struct detect_scratch *scratch_for(const struct detect_db *db)
{
	for (unsigned i = 0; i < 2; i++)
		if (tls_scratch[i].db == db)
			return tls_scratch[i].s;
	scratch_exit_hook();
	unsigned i = tls_scratch_next++ & 1;
	detect_scratch_free(tls_scratch[i].s);
	tls_scratch[i].db = NULL;
	tls_scratch[i].s = NULL;
	if (detect_scratch_new(db, &tls_scratch[i].s))
		return NULL;
	tls_scratch[i].db = db;
	return tls_scratch[i].s;
}

/* A zeroed request state (up to hdr_hits: the rest is read only where the
 * masks say it was written), or NULL. */
static struct reflex_req *rx_req_new(void)
{
	struct reflex_req *x = tls_spare;
	struct buf held = {0}, tags = {0}; /* empty; the spare's keep their memory */

	if (x) {
		tls_spare = NULL;
		held = x->held;
		tags = x->tags;
	} else if (!(x = malloc(sizeof(*x)))) {
		return NULL;
	}
	memset(x, 0, offsetof(struct reflex_req, hdr_hits));
	x->held = held;
	x->tags = tags;
	return x;
}

static void rx_req_put(struct reflex_req *x)
{
	if (tls_spare) {
		buf_free(&x->held);
		buf_free(&x->tags);
		free(x);
		return;
	}
	buf_reset(&x->held, RX_SPARE_HELD);
	buf_reset(&x->tags, 1024);
	scratch_exit_hook();
	tls_spare = x;
}

/* ---- scanning ---------------------------------------------------------------- */

static struct stats_worker *stats_of(struct request *r)
{
	return &r->c->conn.w->stats;
}

struct scan_ctx {
	struct request *r;
	struct reflex_req *x;
	uint8_t place;
	uint64_t *hits;
};

static void note_hit(struct request *r, struct reflex_req *x, uint8_t place,
		     const struct detect_match *m)
{
	if (m->id >= RX_MAX_DET)
		return;
	STAT_INC(stats_of(r)->rx_detector_hits[m->id]);
	if (!(x->first_set >> m->id & 1)) {
		x->first_set |= 1ULL << m->id;
		x->first[m->id] = (struct rx_hit){.place = place, .off = m->start};
		memcpy(x->first[m->id].hash, m->hash, sizeof(m->hash));
	}
}

static int on_block_match(void *arg, const struct detect_match *m)
{
	struct scan_ctx *sc = arg;

	if (m->id < RX_MAX_DET)
		*sc->hits |= 1ULL << m->id;
	note_hit(sc->r, sc->x, sc->place, m);
	return 0;
}

static uint64_t scan_block(struct request *r, struct reflex_req *x, uint8_t place, const char *p,
			   size_t n, uint64_t want)
{
	struct detect_scratch *s = scratch_for(x->set->db);
	uint64_t hits = 0;
	struct scan_ctx sc = {.r = r, .x = x, .place = place, .hits = &hits};

	if (!n)
		return 0;
	if (!s) {
		log_warn("reflex: no scratch space (out of memory): %s not scanned",
			 place_names[place]);
		return 0;
	}
	if (!want)
		return 0;
	STAT_ADD(stats_of(r)->rx_scan_bytes, n);
	detect_scan_mask(x->set->db, s, p, n, want, on_block_match, &sc);
	return hits;
}

/* Percent-decode p[0, n) into d (n bytes; "+" is a space in the query).
 * map (n + 1 entries, may be NULL) gets, per decoded byte, the offset of
 * the raw bytes it came from, and map[o] = n. Returns o. */
static size_t url_decode(const char *p, size_t n, char *d, size_t *map)
{
	size_t o = 0;
	bool query = false;

	for (size_t i = 0; i < n; i++) {
		int hi, lo;
		if (map)
			map[o] = i;
		if (p[i] == '%' && i + 2 < n && (hi = http_hex_digit(p[i + 1])) >= 0 &&
		    (lo = http_hex_digit(p[i + 2])) >= 0) {
			d[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else if (p[i] == '+' && query) {
			d[o++] = ' ';
		} else {
			query = query || p[i] == '?';
			d[o++] = p[i];
		}
	}
	if (map)
		map[o] = n;
	return o;
}

/* The URL is scanned percent-decoded ("+" is a space in the query), so
 * "ignore%20previous%20instructions" is seen as the words; offsets in logs
 * are offsets into the decoded URL. */
static uint64_t url_hits(struct request *r, struct reflex_req *x)
{
	const char *p = r->h.path.p;
	size_t n = r->h.path.len, o;
	static __thread char stackbuf[2048]; /* per worker: a decoded URL of the usual size */
	char *d;

	if (x->url_done)
		return x->url_hits;
	x->url_done = true;
	if (!memchr(p, '%', n) && !memchr(p, '+', n)) /* nothing to decode: scan in place */
		return x->url_hits = scan_block(r, x, RX_URL, p, n, x->set->url_mask);
	d = n <= sizeof(stackbuf) ? stackbuf : malloc(n);
	if (!d) /* out of memory: the raw URL is better than none */
		return x->url_hits = scan_block(r, x, RX_URL, p, n, x->set->url_mask);
	o = url_decode(p, n, d, NULL);
	x->url_hits = scan_block(r, x, RX_URL, d, o, x->set->url_mask);
	if (d != stackbuf)
		free(d);
	return x->url_hits;
}

static uint64_t header_hits(struct request *r, struct reflex_req *x, const struct rx_rule *rule)
{
	const struct http_request *h = &r->h;
	uint64_t hits = 0;

	for (unsigned i = 0; i < h->n_headers; i++) {
		bool named = false;
		for (unsigned k = 0; k < rule->c.n_headers && !named; k++)
			named = http_str_eq(h->headers[i].name, rule->c.headers[k]);
		if (!named)
			continue;
		if (i < RX_HDR_MEMO && (x->hdr_scanned[i / 64] >> (i % 64) & 1)) {
			hits |= x->hdr_hits[i];
			continue;
		}
		uint64_t hh = scan_block(r, x, RX_HEADER, h->headers[i].value.p,
					 h->headers[i].value.len, x->set->hdr_mask);
		if (i < RX_HDR_MEMO) {
			x->hdr_scanned[i / 64] |= 1ULL << (i % 64);
			x->hdr_hits[i] = hh;
		}
		hits |= hh;
	}
	return hits;
}

/* Stream callback; arg is the request (the stream lives in its r->rx). */
static int on_body_match(void *arg, const struct detect_match *m)
{
	struct request *r = arg;
	struct reflex_req *x = r->rx;

	if (m->id < RX_MAX_DET)
		x->body_hits |= 1ULL << m->id;
	note_hit(r, x, RX_BODY, m);
	if (x->n_bm == x->cap_bm) {
		unsigned cap = x->cap_bm ? x->cap_bm * 2 : 16;
		struct rx_bm *nb = realloc(x->bm, cap * sizeof(*nb));
		if (!nb)
			return 0; /* the hit still counts; only its redaction is lost */
		x->bm = nb;
		x->cap_bm = cap;
	}
	x->bm[x->n_bm++] = (struct rx_bm){.start = m->start, .end = m->end, .id = m->id};
	return 0;
}

/* ---- matching ---------------------------------------------------------------- */

/* The value of query parameter `name` (raw, not percent-decoded). */
static bool query_param(struct http_str path, const char *name, struct http_str *val)
{
	const char *q = memchr(path.p, '?', path.len), *end = path.p + path.len;
	size_t nl = strlen(name);

	if (!q)
		return false;
	for (const char *p = q + 1; p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p)), *stop = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(stop - p));
		const char *kend = eq ? eq : stop;
		if ((size_t)(kend - p) == nl && !memcmp(p, name, nl)) {
			val->p = eq ? eq + 1 : stop;
			val->len = eq ? (size_t)(stop - eq - 1) : 0;
			return true;
		}
		p = stop + 1;
	}
	return false;
}

/* The host and path the head names (parse.h: "//admin" and "/%61dmin" are
 * /admin), resolved for the first rule that asks, once per evaluation. */
struct head_names {
	bool host_done, path_done;
	bool oom;
	char host[CFG_HOST_MAX];
	const char *path;
	size_t path_len;
};

/* Everything a rule asks of the head except detector hits. */
static bool head_matches(const struct request *r, const struct rx_rule *rule,
			 struct head_names *nm)
{
	const struct http_request *h = &r->h;
	const struct cfg_rx_rule *c = &rule->c;

	if (c->method[0] &&
	    !(h->method.len == strlen(c->method) && !memcmp(h->method.p, c->method, h->method.len)))
		return false;
	if (c->host[0]) {
		if (!nm->host_done) {
			http_host_key(h, nm->host, sizeof(nm->host));
			nm->host_done = true;
		}
		if (strcmp(nm->host, c->host))
			return false;
	}
	if (c->path[0]) {
		if (!nm->path_done) {
			buf_reset(&tls_path, 64 * 1024);
			if (buf_reserve(&tls_path, h->path.len + 2)) {
				nm->oom = true; /* the caller fails the request */
				return false;
			}
			scratch_exit_hook();
			nm->path = buf_head(&tls_path);
			nm->path_len = http_path_resolve(h->path.p, h->path.len, buf_head(&tls_path));
			nm->path_done = true;
		}
		size_t plen = nm->path_len, n = strlen(c->path);
		if (c->path_exact ? (plen != n || memcmp(nm->path, c->path, n))
				  : (plen < n || memcmp(nm->path, c->path, n)))
			return false;
	}
	if (c->header[0]) {
		const struct http_header *f = http_find_header(h->headers, h->n_headers, c->header);
		if (!f)
			return false;
		if (c->has_header_value && !(f->value.len == strlen(c->header_value) &&
					     !memcmp(f->value.p, c->header_value, f->value.len)))
			return false;
	}
	if (c->query[0]) {
		struct http_str v;
		if (!query_param(h->path, c->query, &v))
			return false;
		if (c->has_query_value &&
		    !(v.len == strlen(c->query_value) && !memcmp(v.p, c->query_value, v.len)))
			return false;
	}
	return true;
}

static bool has_body(const struct request *r)
{
	return r->body == HTTP_BODY_CHUNKED || (r->body == HTTP_BODY_LENGTH && r->body_left > 0);
}

static bool wants_body(const struct reflex_req *x, const struct rx_rule *rule)
{
	return rule->c.n_detect && (rule->c.in & CFG_RX_IN_BODY) && x->has_body;
}

/* ---- answers ------------------------------------------------------------------ */

static void answer(struct request *r, int status, const char *ctype, const char *extra,
		   const char *body, size_t blen)
{
	struct client *c = r->c;
	struct buf *b = conn_outbuf(&c->conn);
	size_t mark = b->len;

	r->close_after = r->close_after || !r->body_done || !r->keep_alive || c->conn.w->draining;
	buf_appendf(b, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n", status,
		    respond_status_text(status), ctype, blen);
	buf_appendf(b, "X-Request-ID: %s\r\n", r->id);
	if (extra)
		buf_appends(b, extra);
	if (r->close_after)
		buf_appends(b, "Connection: close\r\n");
	else if (r->http10)
		buf_appends(b, "Connection: keep-alive\r\n");
	buf_appends(b, "\r\n");
	if (!r->is_head && blen)
		buf_append(b, body, blen);
	conn_wrote(&c->conn);
	r->bytes_out += b->len - mark;
	r->status = status;
	r->out = RESP_OUT_NONE;
	r->resp_started = r->resp_done = true;
}

static int lowest_bit(uint64_t m)
{
	return m ? __builtin_ctzll(m) : -1;
}

/* Append s to d[0, at) (cap bytes in all, kept NUL-terminated, truncated
 * when full); returns the new length. */
static size_t status_cat(char *d, size_t cap, size_t at, const char *s)
{
	size_t n = strlen(s);

	if (n > cap - 1 - at)
		n = cap - 1 - at;
	memcpy(d + at, s, n);
	d[at + n] = 0;
	return at + n;
}

/* The access record and the log line: rule, action, detector, place,
 * offset, keyed hash. The log line is for blocks and for detector hits: a
 * tag or route on a header alone would log every request. */
static void describe(struct request *r, struct reflex_req *x, const struct rx_rule *rule,
		     const char *action, int det)
{
	bool log = det >= 0 || rule->c.action == CFG_RX_BLOCK;

	const struct detect_db *db = x->set->db;

	if (det >= 0 && (x->first_set >> det & 1)) {
		snprintf(x->status, sizeof(x->status),
			 "rule=%s action=%s detector=%s in=%s offset=%llu hash=%s", rule->c.name,
			 action, detect_name(db, (unsigned)det), place_names[x->first[det].place],
			 (unsigned long long)x->first[det].off,
			 x->first[det].hash[0] ? x->first[det].hash : "-");
	} else { /* the common case (a tag, a route): no printf per request */
		size_t n = status_cat(x->status, sizeof(x->status), 0, "rule=");
		n = status_cat(x->status, sizeof(x->status), n, rule->c.name);
		n = status_cat(x->status, sizeof(x->status), n, " action=");
		status_cat(x->status, sizeof(x->status), n, action);
	}
	if (log)
		log_info("%s %s: reflex %s", r->c->peer, r->id, x->status);
}

static void do_block(struct request *r, struct reflex_req *x, const struct rx_rule *rule, int det,
		     int status, const char *why)
{
	struct buf b = {0};

	describe(r, x, rule, "block", det);
	buf_appends(&b, "{\"error\":");
	jsonw_buf_str(&b, why);
	buf_appends(&b, ",\"rule\":");
	jsonw_buf_str(&b, rule->c.name);
	buf_appends(&b, ",\"detector\":");
	if (det >= 0)
		jsonw_buf_str(&b, detect_name(x->set->db, (unsigned)det));
	else
		buf_appends(&b, "null");
	buf_appendf(&b, ",\"request_id\":\"%s\"}\n", r->id);
	r->reason = REASON_RULE_BLOCKED;
	STAT_INC(stats_of(r)->rx_blocked);
	answer(r, status, "application/json", NULL, b.len ? buf_head(&b) : "", b.len);
	buf_free(&b);
}

static void do_respond(struct request *r, struct reflex_req *x, const struct rx_rule *rule, int det)
{
	const char *body = rule->c.body ? rule->c.body : "";

	describe(r, x, rule, "respond", det);
	STAT_INC(stats_of(r)->rx_responded);
	answer(r, (int)rule->c.status, rule->c.content_type, rule->c.resp_headers, body,
	       strlen(body));
}

/* ---- deciding ----------------------------------------------------------------- */

enum eval_result { EVAL_PASS, EVAL_ANSWERED, EVAL_NEED_BODY };

static const char *const action_names[] = {"block", "redact", "respond", "route", "nocache", "tag"};

/* Run the rules in order. Without the body (head pass), stop at the first
 * rule that needs it. Effects of non-terminal rules are collected in x. */
static enum eval_result evaluate(struct request *r, struct reflex_req *x, bool body_known)
{
	const struct reflex_set *set = x->set;
	const struct rx_rule *first_effect = NULL;
	int first_det = -1;

	x->redact_mask = 0;
	x->redact_url = 0;
	x->redact_hdr_rules = 0;
	x->resp_mask = 0;
	x->resp_rule = NULL;
	x->route_pool = -1;
	x->nocache = false;
	buf_reset(&x->tags, 1024); /* keeps the memory: the state is reused */
	struct head_names nm;
	nm.host_done = nm.path_done = nm.oom = false;
	for (unsigned i = 0; i < set->n_rules; i++) {
		const struct rx_rule *rule = &set->rules[i];
		int det = -1;

		if (!head_matches(r, rule, &nm)) {
			if (nm.oom) {
				req_fail(r, 500, REASON_INTERNAL, "out of memory", true);
				return EVAL_ANSWERED;
			}
			continue;
		}
		if (rule->c.in & CFG_RX_IN_RESPONSE) {
			/* DLP: the response is scanned; never cached unredacted */
			for (unsigned id = 0; id < RX_MAX_DET; id++)
				if ((rule->mask >> id & 1) && !(x->resp_mask >> id & 1))
					x->resp_mode[id] = (uint8_t)rule->c.redact;
			x->resp_mask |= rule->mask;
			if (!x->resp_rule)
				x->resp_rule = rule;
			x->nocache = true;
			if (!(rule->c.in & (CFG_RX_IN_URL | CFG_RX_IN_HEADERS | CFG_RX_IN_BODY)))
				continue;
		}
		if (rule->c.n_detect) {
			uint64_t hits = 0;
			if (rule->c.in & CFG_RX_IN_URL)
				hits |= url_hits(r, x);
			if (rule->c.in & CFG_RX_IN_HEADERS)
				hits |= header_hits(r, x, rule);
			if (wants_body(x, rule)) {
				if (!body_known)
					return EVAL_NEED_BODY;
				if (x->oversize && rule->c.oversize_block) {
					if (rule->slot >= 0)
						STAT_INC(stats_of(r)->rx_rule_hits[rule->slot]);
					do_block(r, x, rule, -1, 413,
						 "request body too large to scan");
					return EVAL_ANSWERED;
				}
				if (!x->oversize)
					hits |= x->body_hits;
			}
			hits &= rule->mask;
			if (!hits)
				continue;
			det = lowest_bit(hits);
		}
		if (rule->slot >= 0)
			STAT_INC(stats_of(r)->rx_rule_hits[rule->slot]);
		switch (rule->c.action) {
		case CFG_RX_BLOCK:
			do_block(r, x, rule, det, (int)rule->c.status, "blocked by a reflex rule");
			return EVAL_ANSWERED;
		case CFG_RX_RESPOND:
			do_respond(r, x, rule, det);
			return EVAL_ANSWERED;
		case CFG_RX_REDACT:
			for (unsigned id = 0; id < RX_MAX_DET; id++)
				if ((rule->mask >> id & 1) && !(x->redact_mask >> id & 1))
					x->redact_mode[id] = (uint8_t)rule->c.redact;
			x->redact_mask |= rule->mask;
			if (rule->c.in & CFG_RX_IN_URL)
				x->redact_url |= rule->mask;
			if ((rule->c.in & CFG_RX_IN_HEADERS) && i < 64)
				x->redact_hdr_rules |= 1ULL << i;
			break;
		case CFG_RX_ROUTE:
			if (x->route_pool < 0)
				x->route_pool = rule->pool;
			break;
		case CFG_RX_NOCACHE:
			x->nocache = true;
			break;
		case CFG_RX_TAG:
			buf_appendv(&x->tags, rule->c.tag_header, ": ", rule->c.tag, "\r\n", NULL);
			break;
		}
		if (!first_effect) {
			first_effect = rule;
			first_det = det;
		}
	}
	if (first_effect)
		describe(r, x, first_effect, action_names[first_effect->c.action], first_det);
	return EVAL_PASS;
}

/* Replace the Content-Length value in the upstream head. */
static int set_upstream_length(struct request *r, uint64_t len)
{
	struct buf nb = {0};
	const char *p = buf_head(&r->up_head), *end = p + r->up_head.len;
	int rc = 0;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t ll = eol ? (size_t)(eol - p + 1) : (size_t)(end - p);
		if (ll > 15 && !strncasecmp(p, "Content-Length:", 15))
			rc |= buf_appendf(&nb, "Content-Length: %llu\r\n", (unsigned long long)len);
		else
			rc |= buf_append(&nb, p, ll);
		p += ll;
	}
	if (rc) {
		buf_free(&nb);
		return -ENOMEM;
	}
	buf_free(&r->up_head);
	r->up_head = nb;
	return 0;
}

static int add_upstream_fields(struct request *r, const struct buf *fields)
{
	struct buf *h = &r->up_head;

	if (!fields->len || h->len < 2)
		return 0;
	h->len -= 2; /* the blank line */
	if (buf_append(h, buf_head(fields), fields->len) || buf_appends(h, "\r\n"))
		return -ENOMEM;
	return 0;
}

static int cmp_bm(const void *a, const void *b)
{
	const struct rx_bm *x = a, *y = b;

	if (x->start != y->start)
		return x->start < y->start ? -1 : 1;
	return x->end > y->end ? -1 : x->end < y->end;
}

/* Rewrite the held body: every match of a redacted detector, first start
 * wins where matches overlap. */
static int redact_body(struct request *r, struct reflex_req *x)
{
	const struct detect_db *db = x->set->db;
	struct buf out = {0};
	const char *p = buf_head(&x->held);
	uint64_t at = 0, n = 0;
	int rc = 0;

	qsort(x->bm, x->n_bm, sizeof(*x->bm), cmp_bm);
	for (unsigned i = 0; i < x->n_bm; i++) {
		const struct rx_bm *m = &x->bm[i];
		if (m->id >= RX_MAX_DET || !(x->redact_mask >> m->id & 1) || m->start < at ||
		    m->end > x->held.len)
			continue;
		enum detect_redact_mode mode =
			x->redact_mode[m->id] == CFG_RX_HASH	? DETECT_REDACT_HASH
			: x->redact_mode[m->id] == CFG_RX_LAST4 ? DETECT_REDACT_LAST4
								: DETECT_REDACT_MASK;
		size_t len = (size_t)(m->end - m->start),
		       cap = detect_redact_max(db, m->id, mode, len);
		rc |= buf_append(&out, p + at, (size_t)(m->start - at));
		if (rc || buf_reserve(&out, cap))
			goto oom;
		ssize_t k = detect_redact(db, m->id, mode, p + m->start, len,
					  buf_head(&out) + out.len, cap);
		if (k < 0)
			k = detect_redact(db, m->id, DETECT_REDACT_MASK, p + m->start, len,
					  buf_head(&out) + out.len, cap);
		if (k < 0)
			goto oom;
		out.len += (size_t)k;
		at = m->end;
		n++;
	}
	if (!n) {
		buf_free(&out);
		return 0;
	}
	if (buf_append(&out, p + at, x->held.len - (size_t)at))
		goto oom;
	STAT_ADD(stats_of(r)->rx_redactions, n);
	buf_free(&x->held);
	x->held = out;
	return 0;
oom:
	buf_free(&out);
	(void)rc;
	return -ENOMEM;
}

/* ---- redacting the forwarded head ------------------------------------------ */

struct rx_spans {
	struct rx_bm *v;
	unsigned n, cap;
	bool oom;
};

static int on_span(void *arg, const struct detect_match *m)
{
	struct rx_spans *sp = arg;

	if (sp->n == sp->cap) {
		unsigned cap = sp->cap ? sp->cap * 2 : 8;
		struct rx_bm *nv = realloc(sp->v, cap * sizeof(*nv));
		if (!nv) {
			sp->oom = true;
			return 1;
		}
		sp->v = nv;
		sp->cap = cap;
	}
	sp->v[sp->n++] = (struct rx_bm){.start = m->start, .end = m->end, .id = m->id};
	return 0;
}

static enum detect_redact_mode redact_mode_of(const struct reflex_req *x, unsigned id)
{
	return x->redact_mode[id] == CFG_RX_HASH    ? DETECT_REDACT_HASH
	       : x->redact_mode[id] == CFG_RX_LAST4 ? DETECT_REDACT_LAST4
						    : DETECT_REDACT_MASK;
}

/* In a URL a token keeps only unreserved bytes, '*' and ':' as they are:
 * "[EMAIL]" goes out as "%5BEMAIL%5D", which decodes back to the token. */
static int append_pct(struct buf *b, const char *p, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	int rc = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)p[i];
		if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~' || ch == '*' ||
		    ch == ':') {
			rc |= buf_append(b, p + i, 1);
		} else {
			char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
			rc |= buf_append(b, e, 3);
		}
	}
	return rc;
}

/* raw[0, rawlen) rewritten into out: every match of `mask` in d[0, dn) (raw
 * itself when map is NULL, else its decoded form with map from url_decode)
 * replaced by its token, first start wins where matches overlap. Returns
 * the matches replaced (0: out is untouched), or -ENOMEM. */
static int rewrite_spans(struct reflex_req *x, const char *raw, size_t rawlen, const char *d,
			 size_t dn, const size_t *map, uint64_t mask, bool pct, struct buf *out)
{
	const struct detect_db *db = x->set->db;
	struct detect_scratch *s = scratch_for(db);
	struct rx_spans sp = {0};
	uint64_t dat = 0;
	size_t at = 0;
	int n = 0, rc = 0;

	if (!s)
		return -ENOMEM;
	detect_scan_mask(db, s, d, dn, mask, on_span, &sp);
	if (sp.oom)
		goto oom;
	if (sp.n > 1)
		qsort(sp.v, sp.n, sizeof(*sp.v), cmp_bm);
	for (unsigned i = 0; i < sp.n; i++) {
		const struct rx_bm *m = &sp.v[i];
		if (m->id >= RX_MAX_DET || !(mask >> m->id & 1) || m->start < dat || m->end > dn)
			continue;
		enum detect_redact_mode mode = redact_mode_of(x, m->id);
		size_t len = (size_t)(m->end - m->start),
		       cap = detect_redact_max(db, m->id, mode, len);
		size_t rs = map ? map[m->start] : (size_t)m->start;
		size_t re = map ? map[m->end] : (size_t)m->end;
		char tok[256];
		if (cap > sizeof(tok)) /* last4 of a long match: the token instead */
			mode = DETECT_REDACT_MASK;
		ssize_t k = detect_redact(db, m->id, mode, d + m->start, len, tok, sizeof(tok));
		if (k < 0)
			k = detect_redact(db, m->id, DETECT_REDACT_MASK, d + m->start, len, tok,
					  sizeof(tok));
		if (k < 0)
			goto oom;
		rc |= buf_append(out, raw + at, rs - at);
		rc |= pct ? append_pct(out, tok, (size_t)k) : buf_append(out, tok, (size_t)k);
		at = re;
		dat = m->end;
		n++;
	}
	if (n)
		rc |= buf_append(out, raw + at, rawlen - at);
	if (rc)
		goto oom;
	free(sp.v);
	return n;
oom:
	free(sp.v);
	return -ENOMEM;
}

/* Replace up_head bytes [off, off + len) with w[0, wl). */
static int head_splice(struct request *r, size_t off, size_t len, const char *w, size_t wl)
{
	struct buf nb = {0};
	const char *p = buf_head(&r->up_head);

	if (buf_append(&nb, p, off) || buf_append(&nb, w, wl) ||
	    buf_append(&nb, p + off + len, r->up_head.len - off - len)) {
		buf_free(&nb);
		return -ENOMEM;
	}
	buf_free(&r->up_head);
	r->up_head = nb;
	return 0;
}

/* The offset in up_head of the value of a forwarded "name: value" line. */
static ssize_t head_field(const struct request *r, struct http_str name, struct http_str value)
{
	const char *p = buf_head(&r->up_head), *end = p + r->up_head.len;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t ll = eol ? (size_t)(eol - p + 1) : (size_t)(end - p);
		if (ll == name.len + 2 + value.len + 2 && !memcmp(p, name.p, name.len) &&
		    p[name.len] == ':' && p[name.len + 1] == ' ' &&
		    !memcmp(p + name.len + 2, value.p, value.len))
			return p + name.len + 2 - buf_head(&r->up_head);
		p += ll;
	}
	return -1;
}

/* Redact rules that matched in the URL or in their headers rewrite those
 * matches in the forwarded head (same tokens as in bodies; percent-encoded
 * in the URL). The client's own head is not changed: logs and the
 * cache see the original, so such a request skips the cache. */
static int redact_head(struct request *r, struct reflex_req *x)
{
	const struct http_request *h = &r->h;
	struct buf out = {0};
	uint64_t n = 0;
	int k, rc = 0;

	if (x->redact_url & x->url_hits) {
		const char *p = h->path.p;
		size_t pn = h->path.len, off = h->method.len + 1;
		char *d = malloc(pn + 1);
		size_t *map = malloc((pn + 1) * sizeof(*map));
		if (!d || !map) {
			free(d);
			free(map);
			return -ENOMEM;
		}
		size_t dn = url_decode(p, pn, d, map);
		k = rewrite_spans(x, p, pn, d, dn, map, x->redact_url, true, &out);
		free(d);
		free(map);
		if (k < 0)
			return -ENOMEM;
		if (k > 0 && r->up_head.len > off + pn &&
		    !memcmp(buf_head(&r->up_head) + off, p, pn)) {
			rc = head_splice(r, off, pn, buf_head(&out), out.len);
			n += (uint64_t)k;
		}
		buf_free(&out);
		if (rc)
			return rc;
	}
	for (unsigned i = 0; i < h->n_headers && x->redact_hdr_rules; i++) {
		const struct http_header *f = &h->headers[i];
		uint64_t mask = 0;
		for (unsigned ri = 0; ri < x->set->n_rules && ri < 64; ri++) {
			const struct rx_rule *rule = &x->set->rules[ri];
			if (!(x->redact_hdr_rules >> ri & 1))
				continue;
			for (unsigned j = 0; j < rule->c.n_headers; j++)
				if (http_str_eq(f->name, rule->c.headers[j]))
					mask |= rule->mask;
		}
		if (!mask || (i < RX_HDR_MEMO && (x->hdr_scanned[i / 64] >> (i % 64) & 1) &&
			      !(x->hdr_hits[i] & mask)))
			continue;
		k = rewrite_spans(x, f->value.p, f->value.len, f->value.p, f->value.len, NULL, mask,
				  false, &out);
		if (k < 0)
			return -ENOMEM;
		ssize_t off = k > 0 ? head_field(r, f->name, f->value) : -1;
		if (off >= 0) {
			rc = head_splice(r, (size_t)off, f->value.len, buf_head(&out), out.len);
			n += (uint64_t)k;
		}
		buf_free(&out);
		if (rc)
			return rc;
	}
	if (n) {
		STAT_ADD(stats_of(r)->rx_redactions, n);
		r->nocache = true;
	}
	return 0;
}

/* After a pass without an answer: apply the collected effects. Returns
 * false when the request was failed (by the pool choice). */
static bool apply_effects(struct request *r, struct reflex_req *x)
{
	if (x->nocache)
		r->nocache = true;
	/* the effects below rewrite the forwarded head: build it for them */
	if ((x->tags.len || x->redact_url || x->redact_hdr_rules ||
	     (x->phase == RX_HELD && x->redact_mask)) &&
	    upstream_head_ready(r)) {
		req_fail(r, 500, REASON_INTERNAL, "out of memory", true);
		return false;
	}
	if (add_upstream_fields(r, &x->tags)) {
		req_fail(r, 500, REASON_INTERNAL, "out of memory", true);
		return false;
	}
	if ((x->redact_url || x->redact_hdr_rules) && redact_head(r, x)) {
		req_fail(r, 500, REASON_INTERNAL, "out of memory", true);
		return false;
	}
	if (x->route_pool >= 0 && x->route_pool != r->pool) {
		r->pool = x->route_pool;
		if (upstream_choose(r) != 0)
			return false;
	}
	if (x->phase != RX_HELD)
		return true;
	/* the held body goes out as it is or rewritten */
	if (x->redact_mask && !x->oversize && x->n_bm) {
		size_t before = x->held.len;
		if (redact_body(r, x)) {
			req_fail(r, 500, REASON_INTERNAL, "out of memory", true);
			return false;
		}
		if (!x->chunked && x->held.len != before && set_upstream_length(r, x->held.len)) {
			req_fail(r, 500, REASON_INTERNAL, "out of memory", true);
			return false;
		}
	}
	x->phase = RX_SEND;
	return true;
}

/* ---- the body ----------------------------------------------------------------- */

static void start_hold(struct request *r, struct reflex_req *x)
{
	x->chunked = r->body == HTTP_BODY_CHUNKED;
	x->phase =
		RX_HOLD; /* the stream opens with the first bytes that do not complete the body */
	/* The body leaves the connection buffer into ours: the cache's POST
	 * keying (which reads the connection buffer) would see none of it. */
	r->nocache = true;
	STAT_INC(stats_of(r)->rx_body_scanned);
	if (r->expect_continue && !r->http10 && !r->continue_sent) {
		r->continue_sent = true;
		respond_continue(r->c);
		r->bytes_out += 25;
	}
}

static void feed(struct request *r, struct reflex_req *x, const char *p, size_t n)
{
	if (!n)
		return;
	if (buf_append(&x->held, p, n)) {
		x->oversize = true; /* cannot hold it: as if over the limit */
		return;
	}
	if (!x->st && !x->scan_failed) {
		if (detect_stream_open(x->set->db, on_body_match, r, &x->st))
			x->scan_failed = true;
		else
			detect_stream_set_mask(x->st, x->set->body_mask);
	}
	if (x->scan_failed) {
		x->oversize = true; /* a body that cannot be scanned is not a clean scan */
		return;
	}
	if (x->st) {
		struct detect_scratch *s = scratch_for(x->set->db);
		STAT_ADD(stats_of(r)->rx_scan_bytes, n);
		if (!s || detect_stream_feed(x->st, s, p, n) < 0) {
			detect_stream_free(x->st);
			x->st = NULL;
			x->oversize = true; /* a scan that failed is not a clean scan */
		}
	}
}

static void hold_done(struct request *r, struct reflex_req *x)
{
	if (x->st) {
		struct detect_scratch *s = scratch_for(x->set->db);
		if (!s || detect_stream_finish(x->st, s) < 0)
			x->oversize = true;
		x->st = NULL;
	} else if (x->scan_failed) {
		x->oversize = true;
	}
	x->body_scanned = true;
	if (x->oversize)
		STAT_INC(stats_of(r)->rx_oversize);
	x->phase = RX_HELD;
	req_resume(r);
}

/* Frame and send the held (maybe rewritten) payload. */
static void send_held(struct request *r, struct reflex_req *x)
{
	if (x->chunked) {
		char hdr[24];
		if (x->held.len) {
			int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", x->held.len);
			upstream_send_body(r, hdr, (size_t)n);
			upstream_send_body(r, buf_head(&x->held), x->held.len);
			upstream_send_body(r, "\r\n", 2);
		}
		if (r->body_done)
			upstream_send_body(r, "0\r\n\r\n", 5);
	} else {
		upstream_send_body(r, buf_head(&x->held), x->held.len);
	}
	buf_reset(&x->held, RX_SPARE_HELD); /* its memory serves the next request */
	x->phase = r->body_done ? RX_DONE : RX_RECHUNK;
}

bool reflex_pump_body(struct request *r)
{
	struct reflex_req *x = r->rx;
	struct client *c = r->c;
	struct worker *w = c->conn.w;
	struct buf *in = &c->conn.in;
	uint64_t limit = w->cfg->limits.body;

	if (!x || x->phase == RX_NONE)
		return false;
	if (c->conn.closing)
		return true;
	if (x->phase == RX_HOLD) {
		if (r->body == HTTP_BODY_LENGTH && !x->held.len && in->len >= r->body_left) {
			/* the whole body is here (the common small body): one block
			 * scan, no stream to set up */
			size_t n = (size_t)r->body_left;
			struct detect_scratch *s = scratch_for(x->set->db);
			if (buf_append(&x->held, buf_head(in), n) || !s ||
			    detect_scan_mask(x->set->db, s, buf_head(&x->held), n,
					     x->set->body_mask, on_body_match, r) < 0)
				x->scan_failed = true;
			STAT_ADD(stats_of(r)->rx_scan_bytes, n);
			buf_consume(in, n);
			r->bytes_in += n;
			r->body_left = 0;
			r->body_bytes += n;
			r->body_done = true;
		}
		while (in->len && !r->body_done && !x->oversize) {
			if (r->body == HTTP_BODY_LENGTH) {
				size_t n = in->len < r->body_left ? in->len : (size_t)r->body_left;
				feed(r, x, buf_head(in), n);
				buf_consume(in, n);
				r->bytes_in += n;
				r->body_left -= n;
				r->body_bytes += n;
				r->body_done = r->body_left == 0;
			} else {
				struct http_str payload;
				struct http_error err;
				ssize_t k = http_chunked_feed(&r->chunk, buf_head(in), in->len,
							      &payload, &err);
				if (k < 0) {
					req_fail(r, err.status ? err.status : 400,
						 REASON_BAD_REQUEST, err.reason, true);
					return true;
				}
				if (limit && r->chunk.payload_total > limit) {
					req_fail(r, 413, REASON_BODY_TOO_LARGE,
						 "request body larger than the limit", true);
					return true;
				}
				feed(r, x, payload.p, payload.len);
				buf_consume(in, (size_t)k);
				r->bytes_in += (uint64_t)k;
				r->body_bytes = r->chunk.payload_total;
				r->body_done = r->chunk.done;
			}
			if (x->held.len > x->set->max_scan_bytes)
				x->oversize = true;
		}
		if (r->body_done)
			timer_disarm(&w->loop.timers, &c->conn.timer);
		else
			timer_arm(&w->loop.timers, &c->conn.timer,
				  w->loop.now + w->cfg->timeouts.body);
		if (r->body_done || x->oversize)
			hold_done(r, x);
		return true;
	}
	if (x->phase == RX_HELD)
		return true;
	if (!r->up)
		return true; /* RX_SEND: the exchange has not started yet */
	if (x->phase == RX_SEND)
		send_held(r, x);
	if (x->phase == RX_RECHUNK) {
		/* an oversize chunked body that passes: the rest streams through,
		 * re-chunked after our first chunk */
		while (in->len && !r->body_done && upstream_out_pending(r) < RX_OUT_HIGH) {
			struct http_str payload;
			struct http_error err;
			char hdr[24];
			ssize_t k =
				http_chunked_feed(&r->chunk, buf_head(in), in->len, &payload, &err);
			if (k < 0) {
				req_fail(r, err.status ? err.status : 400, REASON_BAD_REQUEST,
					 err.reason, true);
				return true;
			}
			if (limit && r->chunk.payload_total > limit) {
				req_fail(r, 413, REASON_BODY_TOO_LARGE,
					 "request body larger than the limit", true);
				return true;
			}
			if (payload.len) {
				int n = snprintf(hdr, sizeof(hdr), "%zx\r\n", payload.len);
				upstream_send_body(r, hdr, (size_t)n);
				upstream_send_body(r, payload.p, payload.len);
				upstream_send_body(r, "\r\n", 2);
			}
			buf_consume(in, (size_t)k);
			r->bytes_in += (uint64_t)k;
			r->body_bytes = r->chunk.payload_total;
			r->body_done = r->chunk.done;
			if (r->body_done) {
				upstream_send_body(r, "0\r\n\r\n", 5);
				x->phase = RX_DONE;
			}
		}
		if (r->body_done)
			timer_disarm(&w->loop.timers, &c->conn.timer);
		else
			timer_arm(&w->loop.timers, &c->conn.timer,
				  w->loop.now + w->cfg->timeouts.body);
		if (conn_recv_paused(&c->conn) && in->len < RX_OUT_HIGH)
			conn_resume_recv(&c->conn);
	}
	return true;
}

/* ---- the step ----------------------------------------------------------------- */

enum step_result reflex_step(struct request *r)
{
	struct reflex_req *x = r->rx;
	struct reflex_set *set;
	unsigned me = r->step;

	if (!x) {
		if (!r->gen || !(set = set_current(r->gen->cfg)) || !set->n_rules)
			return STEP_NEXT;
		x = r->rx = rx_req_new();
		if (!x) {
			req_fail(r, 500, REASON_INTERNAL, "out of memory", true);
			return STEP_WAIT;
		}
		x->set = set;
		x->route_pool = -1;
		x->has_body = has_body(r);
		STAT_INC(stats_of(r)->rx_scanned);
		enum eval_result e = evaluate(r, x, false);
		if (e == EVAL_ANSWERED)
			return STEP_NEXT;
		if (e == EVAL_PASS)
			return apply_effects(r, x) ? STEP_NEXT : STEP_WAIT;
		/* a rule needs the body */
		if (r->body == HTTP_BODY_LENGTH && r->body_left > set->max_scan_bytes) {
			x->oversize = true;
			STAT_INC(stats_of(r)->rx_oversize);
		} else {
			start_hold(r, x);
			reflex_pump_body(r);
			if (r->step != me || conn_ending(&r->c->conn))
				return STEP_WAIT;
			if (x->phase == RX_HOLD)
				return STEP_WAIT;
		}
	}
	if (x->phase == RX_HOLD)
		return STEP_WAIT;
	if (x->phase == RX_SEND || x->phase == RX_RECHUNK || x->phase == RX_DONE)
		return STEP_NEXT; /* decided before */
	/* the body is known (held, or over the limit without holding) */
	enum eval_result e = evaluate(r, x, true);
	if (e == EVAL_ANSWERED) {
		x->phase = RX_DONE;
		return STEP_NEXT;
	}
	return apply_effects(r, x) ? STEP_NEXT : STEP_WAIT;
}

void reflex_req_end(struct request *r)
{
	struct reflex_req *x = r->rx;

	if (!x)
		return;
	detect_stream_free(x->st);
	if (x->resp) {
		detect_stream_free(x->resp->st);
		buf_free(&x->resp->raw);
		buf_free(&x->resp->tmp);
		buf_free(&x->resp->out);
		free(x->resp->map);
		free(x->resp->bm);
		free(x->resp);
	}
	free(x->bm);
	rx_req_put(x); /* and the held body and tag lines */
	r->rx = NULL;
}

const char *reflex_access_status(const struct request *r)
{
	return r->rx ? r->rx->status : "";
}

/* ---- response scanning (DLP) ---------------------------------------------------- */

static enum detect_redact_mode rs_mode(const struct reflex_req *x, unsigned id)
{
	return x->resp_mode[id] == CFG_RX_HASH	  ? DETECT_REDACT_HASH
	       : x->resp_mode[id] == CFG_RX_LAST4 ? DETECT_REDACT_LAST4
						  : DETECT_REDACT_MASK;
}

static int on_resp_match(void *arg, const struct detect_match *m)
{
	struct request *r = arg;
	struct reflex_req *x = r->rx;
	struct rx_resp *rs = x->resp;

	if (m->id >= RX_MAX_DET || !(x->resp_mask >> m->id & 1))
		return 0;
	STAT_INC(stats_of(r)->rx_detector_hits[m->id]);
	if (!rs->n_redacted && !rs->n_bm) {
		/* the first one goes to the log and the access record */
		snprintf(x->status, sizeof(x->status),
			 "rule=%s action=redact detector=%s in=response offset=%llu hash=%s",
			 x->resp_rule ? x->resp_rule->c.name : "?", detect_name(x->set->db, m->id),
			 (unsigned long long)m->start, m->hash[0] ? m->hash : "-");
		log_info("%s %s: reflex %s", r->c->peer, r->id, x->status);
	}
	if (rs->n_bm == rs->cap_bm) {
		unsigned cap = rs->cap_bm ? rs->cap_bm * 2 : 8;
		struct rx_bm *nb = realloc(rs->bm, cap * sizeof(*nb));
		if (!nb) {
			rs->failed = true;
			return 0;
		}
		rs->bm = nb;
		rs->cap_bm = cap;
	}
	rs->bm[rs->n_bm++] = (struct rx_bm){.start = m->start, .end = m->end, .id = m->id};
	return 0;
}

int reflex_resp_begin(struct request *r, const struct http_response *res)
{
	struct reflex_req *x = r->rx;
	struct rx_resp *rs;

	if (!x || !x->resp_mask || r->is_head || r->out == RESP_OUT_NONE)
		return 0;
	rs = x->resp = calloc(1, sizeof(*rs));
	if (!rs || detect_stream_open(x->set->db, on_resp_match, r, &rs->st))
		return -1; /* fail closed: the response is not relayed unscanned */
	detect_stream_set_mask(rs->st, x->resp_mask);
	const struct http_header *ct =
		http_find_header(res->headers, res->n_headers, "Content-Type");
	rs->sse = ct && ct->value.len >= 17 && !strncasecmp(ct->value.p, "text/event-stream", 17);
	rs->chunked = !r->http10;
	if (r->out == RESP_OUT_CHUNKED)
		r->out = RESP_OUT_DECHUNK; /* payload in, our own chunks out */
	return 1;
}

static int cmp_bm_start(const void *a, const void *b)
{
	const struct rx_bm *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* Queue n bytes of rewritten body to the client in its framing. */
static void resp_write(struct request *r, const char *p, size_t n)
{
	struct conn *cn = &r->c->conn;

	if (!n)
		return;
	if (r->rx->resp->chunked) {
		char hdr[24];
		int hl = snprintf(hdr, sizeof(hdr), "%zx\r\n", n);
		conn_write(cn, hdr, (size_t)hl);
		conn_write(cn, p, n);
		conn_write(cn, "\r\n", 2);
		r->bytes_out += (size_t)hl + n + 2;
	} else {
		conn_write(cn, p, n);
		r->bytes_out += n;
	}
}

/* Rewrite and send the first len held bytes. */
static void resp_release(struct request *r, size_t len)
{
	struct reflex_req *x = r->rx;
	struct rx_resp *rs = x->resp;
	const char *raw = buf_head(&rs->raw);
	const struct detect_db *db = x->set->db;

	if (!len)
		return;
	size_t run = 0; /* held bytes [run, i) go out as they are */

	buf_reset(&rs->out, 64 << 10);
	if (!rs->n_bm) {
		resp_write(r, raw, len);
		goto consumed;
	}
	for (size_t i = 0; i < len; i++) {
		uint64_t d = rs->map[i];
		while (d != RX_NOT_DATA && rs->n_bm && rs->bm[0].end <= d) {
			memmove(rs->bm, rs->bm + 1, (rs->n_bm - 1) * sizeof(*rs->bm));
			rs->n_bm--;
		}
		if (d == RX_NOT_DATA || !rs->n_bm || d < rs->bm[0].start)
			continue;
		buf_append(&rs->out, raw + run, i - run);
		run = i + 1;
		if (d == rs->bm[0].start) {
			/* the match's data bytes (they may run over later events) */
			const struct rx_bm *m = &rs->bm[0];
			size_t mlen = (size_t)(m->end - m->start), k = 0;
			buf_reset(&rs->tmp, 4096);
			for (size_t j = i; j < rs->raw.len && k < mlen; j++)
				if (rs->map[j] != RX_NOT_DATA && rs->map[j] >= m->start &&
				    rs->map[j] < m->end) {
					buf_append(&rs->tmp, raw + j, 1);
					k++;
				}
			enum detect_redact_mode mode = rs_mode(x, m->id);
			size_t cap = detect_redact_max(db, m->id, mode, rs->tmp.len);
			if (buf_reserve(&rs->out, cap) == 0) {
				ssize_t w = detect_redact(db, m->id, mode, buf_head(&rs->tmp),
							  rs->tmp.len,
							  buf_head(&rs->out) + rs->out.len, cap);
				if (w < 0)
					w = detect_redact(db, m->id, DETECT_REDACT_MASK,
							  buf_head(&rs->tmp), rs->tmp.len,
							  buf_head(&rs->out) + rs->out.len, cap);
				if (w > 0)
					rs->out.len += (size_t)w;
			}
			rs->n_redacted++;
		}
		/* other bytes of a match are dropped */
	}
	buf_append(&rs->out, raw + run, len - run);
	resp_write(r, buf_head(&rs->out), rs->out.len);
consumed:
	buf_consume(&rs->raw, len);
	memmove(rs->map, rs->map + len, rs->raw.len * sizeof(*rs->map));
}

/* SSE: the end of the last whole event within the first len held bytes. */
static size_t last_event_end(const struct rx_resp *rs, size_t len)
{
	const char *p = buf_head(&rs->raw);

	for (size_t j = len; j >= 2; j--) {
		if (p[j - 1] != '\n')
			continue;
		if (p[j - 2] == '\n' || (j >= 3 && p[j - 2] == '\r' && p[j - 3] == '\n'))
			return j;
	}
	return 0;
}

bool reflex_resp_body(struct request *r, const char *p, size_t n)
{
	struct reflex_req *x = r->rx;
	struct rx_resp *rs = x ? x->resp : NULL;
	static const char pfx[] = "data:";

	if (!rs)
		return false;
	if (rs->raw.len + n > rs->map_cap) {
		size_t cap = (rs->raw.len + n) * 2;
		uint64_t *nm = realloc(rs->map, cap * sizeof(*nm));
		if (!nm)
			goto fail;
		rs->map = nm;
		rs->map_cap = cap;
	}
	if (buf_append(&rs->raw, p, n))
		goto fail;
	/* classify the new bytes, gather the data ones */
	buf_reset(&rs->tmp, 64 << 10);
	uint64_t *map = rs->map + rs->raw.len - n;
	const char *data = p;
	size_t n_data = n;
	for (size_t i = 0; !rs->sse && i < n; i++)
		map[i] = rs->data_off + i;
	for (size_t i = 0; rs->sse && i < n; i++) {
		char ch = p[i];
		bool is_data = !rs->sse;
		if (rs->sse) {
			switch (rs->lstate) {
			case 0: /* line start */
				rs->pfx = 0;
				if (ch == 'd') {
					rs->lstate = 1;
					rs->pfx = 1;
				} else if (ch != '\n' && ch != '\r') {
					rs->lstate = 4;
				}
				break;
			case 1: /* "data:" */
				if (ch == '\n')
					rs->lstate = 0;
				else if (ch != pfx[rs->pfx])
					rs->lstate = 4;
				else if (++rs->pfx == 5)
					rs->lstate = 2;
				break;
			case 2: /* the optional space */
				rs->lstate = 3;
				if (ch == '\n')
					rs->lstate = 0;
				else if (ch != ' ' && ch != '\r')
					is_data = true;
				break;
			case 3: /* the value */
				if (ch == '\n')
					rs->lstate = 0;
				else if (ch != '\r')
					is_data = true;
				break;
			default: /* another field */
				if (ch == '\n')
					rs->lstate = 0;
			}
		}
		if (is_data) {
			map[i] = rs->data_off + rs->tmp.len;
			if (buf_append(&rs->tmp, &ch, 1))
				goto fail;
		} else {
			map[i] = RX_NOT_DATA;
		}
	}
	if (rs->sse) {
		data = buf_head(&rs->tmp);
		n_data = rs->tmp.len;
	}
	if (n_data) {
		struct detect_scratch *s = scratch_for(x->set->db);
		STAT_ADD(stats_of(r)->rx_scan_bytes, n_data);
		rs->data_off += n_data;
		if (!s || detect_stream_feed(rs->st, s, data, n_data) < 0)
			goto fail;
	}
	if (rs->failed)
		goto fail;
	if (rs->n_bm > 1)
		qsort(rs->bm, rs->n_bm, sizeof(*rs->bm), cmp_bm_start);
	/* what may leave: bytes before the first data byte the detectors may
	 * still want */
	uint64_t settled = detect_stream_settled_mask(rs->st, x->resp_mask);
	size_t len = 0;
	while (len < rs->raw.len && (rs->map[len] == RX_NOT_DATA || rs->map[len] < settled))
		len++;
	if (rs->sse)
		len = last_event_end(rs, len);
	resp_release(r, len);
	return true;
fail:
	/* the head is out: only an abort can tell the client */
	log_warn("%s %s: reflex: response scan failed; aborting the response", r->c->peer, r->id);
	req_fail(r, 502, REASON_INTERNAL, "response scan failed", true);
	return true;
}

bool reflex_resp_end(struct request *r)
{
	struct reflex_req *x = r->rx;
	struct rx_resp *rs = x ? x->resp : NULL;

	if (!rs)
		return false;
	struct detect_scratch *s = scratch_for(x->set->db);
	if (!s || detect_stream_finish(rs->st, s) < 0 || rs->failed) {
		rs->st = NULL;
		log_warn("%s %s: reflex: response scan failed; aborting the response", r->c->peer,
			 r->id);
		req_fail(r, 502, REASON_INTERNAL, "response scan failed", true);
		return true;
	}
	rs->st = NULL;
	if (rs->n_bm > 1)
		qsort(rs->bm, rs->n_bm, sizeof(*rs->bm), cmp_bm_start);
	resp_release(r, rs->raw.len);
	if (rs->n_redacted)
		STAT_ADD(stats_of(r)->rx_resp_redactions, rs->n_redacted);
	if (rs->chunked) {
		conn_write(&r->c->conn, "0\r\n\r\n", 5);
		r->bytes_out += 5;
	}
	return true;
}

/* ---- admin API: /rules ------------------------------------------------------- */

static void json_names_mask(struct buf *b, const struct detect_db *db, uint64_t mask)
{
	bool first = true;

	buf_appends(b, "[");
	for (unsigned id = 0; id < detect_count(db) && id < RX_MAX_DET; id++) {
		if (!(mask >> id & 1))
			continue;
		buf_appends(b, first ? "" : ",");
		jsonw_buf_str(b, detect_name(db, id));
		first = false;
	}
	buf_appends(b, "]");
}

static void json_rule(struct buf *b, const struct reflex_set *s, unsigned i, uint64_t hits)
{
	const struct rx_rule *ru = &s->rules[i];
	const struct cfg_rx_rule *c = &ru->c;

	buf_appends(b, "{\"name\":");
	jsonw_buf_str(b, c->name);
	buf_appendf(b, ",\"position\":%u,\"action\":\"%s\",\"source\":\"%s\"", i,
		    action_names[c->action], ru->from_admin ? "admin" : "config");
	if (c->method[0]) {
		buf_appends(b, ",\"method\":");
		jsonw_buf_str(b, c->method);
	}
	if (c->host[0]) {
		buf_appends(b, ",\"host\":");
		jsonw_buf_str(b, c->host);
	}
	if (c->path[0]) {
		buf_appends(b, c->path_exact ? ",\"path\":" : ",\"path_prefix\":");
		jsonw_buf_str(b, c->path);
	}
	if (c->header[0]) {
		buf_appends(b, ",\"header\":");
		jsonw_buf_str(b, c->header);
	}
	if (c->query[0]) {
		buf_appends(b, ",\"query\":");
		jsonw_buf_str(b, c->query);
	}
	if (c->n_detect) {
		buf_appends(b, ",\"detect\":[");
		for (unsigned k = 0; k < c->n_detect; k++) {
			buf_appends(b, k ? "," : "");
			jsonw_buf_str(b, c->detect[k]);
		}
		buf_appends(b, "],\"detectors\":");
		json_names_mask(b, s->db, ru->mask);
		buf_appendf(b, ",\"in\":[%s%s%s]", c->in & CFG_RX_IN_URL ? "\"url\"" : "",
			    c->in & CFG_RX_IN_HEADERS
				    ? (c->in & CFG_RX_IN_URL ? ",\"headers\"" : "\"headers\"")
				    : "",
			    c->in & CFG_RX_IN_BODY
				    ? (c->in & (CFG_RX_IN_URL | CFG_RX_IN_HEADERS) ? ",\"body\""
										   : "\"body\"")
				    : "");
	}
	if (c->action == CFG_RX_BLOCK || c->action == CFG_RX_RESPOND)
		buf_appendf(b, ",\"status\":%u", c->status);
	if (c->action == CFG_RX_REDACT)
		buf_appendf(b, ",\"redact\":\"%s\"",
			    c->redact == CFG_RX_HASH	? "hash"
			    : c->redact == CFG_RX_LAST4 ? "last4"
							: "mask");
	if (c->action == CFG_RX_ROUTE) {
		buf_appends(b, ",\"pool\":");
		jsonw_buf_str(b, c->pool);
	}
	buf_appendf(b, ",\"on_oversize\":\"%s\",\"hits\":%llu}",
		    c->oversize_block ? "block" : "pass", (unsigned long long)hits);
}

static int h_rules_get(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	const struct config *cfg = g->config_get(g);
	struct reflex_set *s = set_current(cfg);
	uint64_t rule_hits[STATS_RX_RULES] = {0}, det_hits[STATS_RX_DETECTORS] = {0};
	struct buf *b = &resp->body;

	(void)req;
	__atomic_store_n(&rx_gw, g, __ATOMIC_RELEASE);
	for (unsigned w = 0; w < g->n_workers; w++) {
		struct stats_worker *st = &g->workers[w].stats;
		for (unsigned i = 0; i < STATS_RX_RULES; i++)
			rule_hits[i] += STAT_LOAD(st->rx_rule_hits[i]);
		for (unsigned i = 0; i < STATS_RX_DETECTORS; i++)
			det_hits[i] += STAT_LOAD(st->rx_detector_hits[i]);
	}
	resp->status = 200;
	if (!s) {
		buf_appends(b, "{\"enabled\":false,\"rules\":[],\"detectors\":[]}\n");
		g->config_put(g, cfg);
		return 0;
	}
	pthread_mutex_lock(&admin_mu);
	s = set_current(cfg);
	buf_appendf(b, "{\"enabled\":true,\"max_scan_bytes\":%llu,\"rules\":[",
		    (unsigned long long)s->max_scan_bytes);
	for (unsigned i = 0; i < s->n_rules; i++) {
		buf_appends(b, i ? "," : "");
		json_rule(b, s, i, slot_hits(s->rules[i].slot, rule_hits));
	}
	buf_appends(b, "],\"detectors\":[");
	for (unsigned id = 0; id < detect_count(s->db); id++) {
		buf_appends(b, id ? "{\"name\":" : "{\"name\":");
		jsonw_buf_str(b, detect_name(s->db, id));
		buf_appendf(b, ",\"family\":\"%s\",\"severity\":\"%s\",\"hits\":%llu}%s",
			    detect_family_name(detect_family_of(s->db, id)),
			    detect_severity_name(detect_severity_of(s->db, id)),
			    (unsigned long long)(id < STATS_RX_DETECTORS ? det_hits[id] : 0),
			    id + 1 < detect_count(s->db) ? "," : "");
	}
	buf_appends(b, "]}\n");
	pthread_mutex_unlock(&admin_mu);
	g->config_put(g, cfg);
	return 0;
}

/* A new version of base's rule list: old rules (minus `drop`), plus `add`
 * at position `at` (-1: the end). Published for the workers at once. */
static int publish(struct reflex_set *base, const struct reflex_set *from, int drop,
		   const struct rx_rule *add, int at)
{
	struct reflex_set *v = calloc(1, sizeof(*v));
	unsigned n = from->n_rules - (drop >= 0) + (add != NULL), k = 0;

	if (!v || (n && !(v->rules = calloc(n, sizeof(*v->rules))))) {
		free(v);
		return -ENOMEM;
	}
	v->db = base->db;
	v->base = base;
	v->cfg = base->cfg;
	v->max_scan_bytes = base->max_scan_bytes;
	for (unsigned i = 0; i <= from->n_rules; i++) {
		if (add && (at == (int)i || (at < 0 && i == from->n_rules)))
			if (rule_copy(&v->rules[k++], add))
				goto oom;
		if (i == from->n_rules)
			break;
		if ((int)i == drop)
			continue;
		if (rule_copy(&v->rules[k++], &from->rules[i]))
			goto oom;
		v->n_rules = k;
	}
	v->n_rules = k;
	set_masks(v);
	v->next = base->next;
	base->next = v;
	__atomic_store_n(&base->cur, v, __ATOMIC_RELEASE);
	return 0;
oom:
	v->n_rules = k - 1;
	set_free_one(v);
	return -ENOMEM;
}

static int find_rule(const struct reflex_set *s, const char *name)
{
	for (unsigned i = 0; i < s->n_rules; i++)
		if (!strcmp(s->rules[i].c.name, name))
			return (int)i;
	return -1;
}

static int h_rules_post(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	const struct config *cfg = g->config_get(g);
	struct reflex_set *base = cfg->reflex.compiled, *cur;
	struct cfg_rx_rule c;
	struct rx_rule ru;
	char err[512], why[256];
	int rc = 0;

	if (!base) {
		g->config_put(g, cfg);
		return admin_error(resp, 409,
				   "reflex is not configured: add a reflex: section to the config");
	}
	if (config_parse_rx_rule(req->body ? req->body : "", req->body_len, &c, err, sizeof(err))) {
		g->config_put(g, cfg);
		return admin_error(resp, 400, err);
	}
	if (rule_resolve(base->db, cfg, &c, &ru, why, sizeof(why))) {
		config_rx_rule_fini(&c);
		g->config_put(g, cfg);
		return admin_error(resp, 400, why);
	}
	ru.from_admin = true;
	__atomic_store_n(&rx_gw, g, __ATOMIC_RELEASE);
	pthread_mutex_lock(&admin_mu);
	cur = set_current(cfg);
	int at = -1;
	char before[CFG_NAME_MAX] = "";
	if (req->query.len > 7 && !strncmp(req->query.p, "before=", 7) &&
	    req->query.len - 7 < sizeof(before)) {
		memcpy(before, req->query.p + 7, req->query.len - 7);
		before[req->query.len - 7] = 0;
		at = find_rule(cur, before);
	}
	if (find_rule(cur, ru.c.name) >= 0) {
		rc = admin_error(resp, 409, "a rule with this name exists");
	} else if (cur->n_rules >= STATS_RX_RULES) {
		rc = admin_error(resp, 409, "too many rules");
	} else if (before[0] && at < 0) {
		rc = admin_error(resp, 404, "no rule to insert before");
	} else if (publish(base, cur, -1, &ru, at)) {
		rc = -1;
	} else {
		/* kept for the next reloads; a rule that cannot be kept still runs */
		api_rule_drop(ru.c.name);
		if (api_rule_keep(&c, before))
			log_warn("reflex: rule %s: out of memory; a reload will drop it",
				 ru.c.name);
		resp->status = 201;
		json_rule(&resp->body, set_current(cfg),
			  at < 0 ? set_current(cfg)->n_rules - 1 : (unsigned)at, 0);
		buf_appends(&resp->body, "\n");
		snprintf(resp->audit, sizeof(resp->audit), "rule add %s (%s)", ru.c.name,
			 action_names[ru.c.action]);
		log_info("reflex: rule %s added through the admin API", ru.c.name);
	}
	pthread_mutex_unlock(&admin_mu);
	rule_fini(&ru);
	config_rx_rule_fini(&c);
	g->config_put(g, cfg);
	return rc;
}

static int h_rules_delete(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	const struct config *cfg = g->config_get(g);
	struct reflex_set *base = cfg->reflex.compiled, *cur;
	char name[CFG_NAME_MAX];
	int rc = 0;

	/* DELETE /rules/NAME */
	if (req->path.len <= 7 || req->path.len - 7 >= sizeof(name)) {
		g->config_put(g, cfg);
		return admin_error(resp, 400, "DELETE /rules/NAME");
	}
	memcpy(name, req->path.p + 7, req->path.len - 7);
	name[req->path.len - 7] = 0;
	if (!base) {
		g->config_put(g, cfg);
		return admin_error(resp, 404, "no such rule");
	}
	__atomic_store_n(&rx_gw, g, __ATOMIC_RELEASE);
	pthread_mutex_lock(&admin_mu);
	cur = set_current(cfg);
	int i = find_rule(cur, name);
	if (i < 0) {
		rc = admin_error(resp, 404, "no such rule");
	} else if (publish(base, cur, i, NULL, -1)) {
		rc = -1;
	} else {
		/* an API rule is gone for good; a file rule comes back with a reload */
		api_rule_drop(name);
		resp->status = 200;
		buf_appends(&resp->body, "{\"removed\":");
		jsonw_buf_str(&resp->body, name);
		buf_appends(&resp->body, "}\n");
		snprintf(resp->audit, sizeof(resp->audit), "rule remove %s", name);
		log_info("reflex: rule %s removed through the admin API", name);
	}
	pthread_mutex_unlock(&admin_mu);
	g->config_put(g, cfg);
	return rc;
}

static int m_family(struct buf *b, const char *name, const char *help)
{
	return buf_appendf(b, "# HELP %s %s\n# TYPE %s counter\n", name, help, name);
}

int reflex_metrics(const struct config *cfg, const struct stats_worker *t, struct buf *b)
{
	static const struct {
		const char *name, *help;
		size_t off;
	} plain[] = {
		{"reflex_rules_requests_scanned_total", "Requests the reflex rules looked at.",
		 offsetof(struct stats_worker, rx_scanned)},
		{"reflex_rules_bodies_scanned_total", "Request bodies held and scanned.",
		 offsetof(struct stats_worker, rx_body_scanned)},
		{"reflex_rules_scanned_bytes_total", "Bytes through the detectors.",
		 offsetof(struct stats_worker, rx_scan_bytes)},
		{"reflex_rules_blocked_total", "Requests answered by a block rule.",
		 offsetof(struct stats_worker, rx_blocked)},
		{"reflex_rules_responded_total", "Requests answered by a respond rule.",
		 offsetof(struct stats_worker, rx_responded)},
		{"reflex_rules_redactions_total", "Matches rewritten in forwarded request bodies.",
		 offsetof(struct stats_worker, rx_redactions)},
		{"reflex_rules_response_redactions_total", "Matches rewritten in responses (DLP).",
		 offsetof(struct stats_worker, rx_resp_redactions)},
		{"reflex_rules_oversize_total", "Request bodies over reflex.max_scan_bytes.",
		 offsetof(struct stats_worker, rx_oversize)},
	};
	const struct reflex_set *s = cfg ? set_current(cfg) : NULL;
	int rc = 0;

	for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
		rc |= m_family(b, plain[i].name, plain[i].help);
		rc |= buf_appendf(
			b, "%s %llu\n", plain[i].name,
			(unsigned long long)*(const uint64_t *)((const char *)t + plain[i].off));
	}
	if (!s)
		return rc ? -ENOMEM : 0;
	rc |= m_family(b, "reflex_rules_rule_hits_total",
		       "Requests each rule matched (by rule name, across reloads).");
	for (unsigned i = 0; i < s->n_rules; i++)
		rc |= buf_appendf(b,
				  "reflex_rules_rule_hits_total{rule=\"%s\",action=\"%s\"} %llu\n",
				  s->rules[i].c.name, action_names[s->rules[i].c.action],
				  (unsigned long long)slot_hits(s->rules[i].slot, t->rx_rule_hits));
	rc |= m_family(b, "reflex_rules_detector_hits_total", "Matches found, by detector.");
	for (unsigned id = 0; id < detect_count(s->db) && id < STATS_RX_DETECTORS; id++)
		rc |= buf_appendf(
			b, "reflex_rules_detector_hits_total{detector=\"%s\",family=\"%s\"} %llu\n",
			detect_name(s->db, id), detect_family_name(detect_family_of(s->db, id)),
			(unsigned long long)t->rx_detector_hits[id]);
	return rc ? -ENOMEM : 0;
}

void reflex_install(void)
{
	config_reflex_build = reflex_build;
	config_reflex_release = set_release;
	admin_register("GET", "/rules", false, h_rules_get);
	admin_register("POST", "/rules", true, h_rules_post);
	admin_register("DELETE", "/rules/*", true, h_rules_delete);
}
