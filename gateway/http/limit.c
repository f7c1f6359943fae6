/* limit.c — GCRA rate limits at L7 and at accept (see limit.h).
 *
 * The bucket table is shared by every worker: open addressing, 8 probes,
 * 16-byte slots {key, tat}. A key's slot is claimed by CAS on the key word;
 * its theoretical arrival time (TAT) is then advanced by CAS. A slot whose
 * TAT is in the past holds no information (that bucket is full, exactly as
 * if it did not exist), so it may be taken over by another key: the table
 * never needs a sweeper and a flood of distinct keys only reuses idle
 * slots. When all 8 probes are busy with live buckets the request is
 * admitted (fail open) and counted nowhere but the log: the table is sized
 * far beyond the live buckets a host can have at once.
 *
 * Known imprecision, documented in docs/ratelimit.md: a takeover that
 * races with an update of the old key can let that one update land on the
 * new key (one token, once).
 */
#include "http/limit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <xxhash.h>

#include "core/log.h"
#include "core/sock.h"
#include "core/timer.h"
#include "http/limit_redis.h"
#include "http/worker.h"

#define TABLE_BITS 17 /* 128 Ki buckets, 2 MiB */
#define TABLE_SIZE (1u << TABLE_BITS)
#define PROBES 8
#define TOP_SIZE 1024 /* sources tracked for "top limited" */
#define ESC_QUEUE 256
/* The longest a rule may span (interval + tolerance): 100 years, far from
 * wrapping a 64-bit ns clock. */
#define RULE_SPAN_NS (100ull * 365 * 86400 * 1000000000ull)

struct slot {
	uint64_t key; /* 0: never used */
	uint64_t val; /* TAT in ns (buckets), or window start (s) << 32 | count (escalation) */
};

struct top_slot {
	uint64_t key;
	uint64_t refused;
	char addr[48];
};

/* One rule in nanoseconds: interval = 1e9 / rate, tolerance = interval ×
 * (burst − 1). interval 0: no limit. */
struct rule {
	uint64_t interval_ns, tolerance_ns;
	double rate;
	uint32_t burst;
	bool global;
	struct rule *local; /* global rule: the rate/hosts rule used while Redis is away */
};

struct route_rule {
	char host[CFG_HOST_MAX];
	char path_prefix[256];
	struct rule r;
};

struct policy {
	struct rule client, key, accept;
	char key_header[64];
	struct route_rule routes[CFG_RL_ROUTES_MAX];
	unsigned n_routes;
	uint32_t
		prefix_v6; /* IPv6 clients share a bucket per prefix (ratelimit.kernel.prefix_v6) */
	uint32_t esc_refusals;
	uint64_t esc_window_ns, esc_penalty_ns;
	bool redis;
	uint32_t hosts;
	enum cfg_rl_fallback fallback;
	struct policy *older; /* replaced policies, kept until exit */
};

enum key_kind { KIND_CLIENT = 1, KIND_API_KEY, KIND_ROUTE, KIND_ACCEPT, KIND_ESCALATE, KIND_TOP };

static struct slot *buckets, *esc;
static struct top_slot *top;
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;
static struct policy *cur; /* atomic pointer */
static pthread_mutex_t policy_mu = PTHREAD_MUTEX_INITIALIZER;
static bool kernel_on;

static pthread_mutex_t esc_mu = PTHREAD_MUTEX_INITIALIZER;
static char esc_q[ESC_QUEUE][48];
static unsigned esc_head, esc_len;

/* The seed of the slot a key starts its probes at (home_of), secret and
 * picked at start. A key is a hash of what the client sent (its address,
 * its API key) under a seed anyone can read in this file: with public slot
 * positions, a client could craft 8 keys that share a victim key's probe
 * window, keep them live and have that key admitted without a limit (the
 * table fails open when every probe is live). Keys themselves stay
 * deterministic, since Redis needs the same names on every gateway. */
static uint64_t home_seed;

static void tables_alloc(void)
{
	/* non-blocking: this may run on a worker; before the kernel's pool is
	 * ready (early boot), the clock and an address are secret enough */
	if (getrandom(&home_seed, sizeof(home_seed), GRND_NONBLOCK) != sizeof(home_seed)) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		home_seed = ((uint64_t)ts.tv_sec << 30 ^ (uint64_t)ts.tv_nsec) ^ (uintptr_t)&ts;
	}
	buckets = calloc(TABLE_SIZE, sizeof(*buckets));
	esc = calloc(TABLE_SIZE / 8, sizeof(*esc));
	top = calloc(TOP_SIZE, sizeof(*top));
	if (!buckets || !esc || !top)
		log_error("ratelimit: out of memory for the bucket tables; limits are off");
}

static bool tables_ready(void)
{
	pthread_once(&tables_once, tables_alloc);
	return buckets && esc && top;
}

static uint64_t key_of(enum key_kind kind, unsigned idx, const void *p, size_t n)
{
	uint64_t seed = ((uint64_t)kind << 32) | idx;
	uint64_t k = XXH3_64bits_withSeed(p, n, seed);
	return k ? k : 1;
}

static unsigned home_of(uint64_t key, unsigned mask)
{
	return (unsigned)XXH3_64bits_withSeed(&key, sizeof(key), home_seed) & mask;
}

/* The slot of key: found, claimed empty, or taken over from a stale key
 * (val <= stale_below). NULL when every probe holds a live bucket. */
static struct slot *slot_find(struct slot *tab, unsigned mask, uint64_t key, uint64_t stale_below)
{
	unsigned i0 = home_of(key, mask);

	for (unsigned p = 0; p < PROBES; p++) {
		struct slot *s = &tab[(i0 + p) & mask];
		uint64_t k = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
		if (k == key)
			return s;
		if (k == 0) {
			uint64_t zero = 0;
			if (__atomic_compare_exchange_n(&s->key, &zero, key, false,
							__ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
				return s;
			if (zero == key)
				return s;
		}
	}
	for (unsigned p = 0; p < PROBES; p++) {
		struct slot *s = &tab[(i0 + p) & mask];
		uint64_t k = __atomic_load_n(&s->key, __ATOMIC_ACQUIRE);
		if (__atomic_load_n(&s->val, __ATOMIC_RELAXED) > stale_below)
			continue;
		if (__atomic_compare_exchange_n(&s->key, &k, key, false, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE) ||
		    k == key)
			return s;
	}
	return NULL;
}

struct verdict {
	bool ok;
	uint64_t wait_ns;  /* refused: until a request would conform */
	uint64_t reset_ns; /* until the bucket is full again */
	uint64_t remaining;
};

/* GCRA on one bucket: admit and charge, or refuse without charging. */
static struct verdict gcra(const struct rule *ru, uint64_t key, uint64_t now)
{
	struct verdict v = {.ok = true, .remaining = ru->burst};
	struct slot *s = slot_find(buckets, TABLE_SIZE - 1, key, now);

	if (!s)
		return v; /* table full of live buckets: fail open */
	for (int tries = 0; tries < 64; tries++) {
		uint64_t tat = __atomic_load_n(&s->val, __ATOMIC_ACQUIRE);
		uint64_t cap = now + ru->tolerance_ns + ru->interval_ns;
		if (tat > cap) {
			/* debt beyond what this rule can build up: left by a stricter
			 * policy. Bring it to "empty now", so a more lenient policy
			 * applies within burst/rate, as in the kernel layer. */
			__atomic_compare_exchange_n(&s->val, &tat, cap, false, __ATOMIC_ACQ_REL,
						    __ATOMIC_ACQUIRE);
			continue;
		}
		uint64_t base = tat > now ? tat : now;
		if (base - now > ru->tolerance_ns) {
			v.ok = false;
			v.wait_ns = base - now - ru->tolerance_ns;
			v.reset_ns = base - now;
			v.remaining = 0;
			return v;
		}
		uint64_t next = base + ru->interval_ns;
		if (__atomic_compare_exchange_n(&s->val, &tat, next, false, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE)) {
			v.reset_ns = next - now;
			v.remaining = (ru->tolerance_ns - (base - now)) / ru->interval_ns;
			return v;
		}
	}
	return v; /* lost 64 races in a row: admit */
}

/* tolerance = interval × (burst − 1), kept within RULE_SPAN_NS. */
static void rule_tolerance(struct rule *r)
{
	uint64_t room = RULE_SPAN_NS - r->interval_ns;

	r->tolerance_ns = (uint64_t)(r->burst - 1) > room / r->interval_ns
				  ? room
				  : r->interval_ns * (uint64_t)(r->burst - 1);
}

static void rule_from(struct rule *r, const struct cfg_rl_limit *l, double rate_div)
{
	memset(r, 0, sizeof(*r));
	if (!l->enabled || !(l->rate > 0))
		return;
	r->rate = l->rate / rate_div;
	r->burst = l->burst ? l->burst : 1;
	/* A rate below one per RULE_SPAN_NS is that (the double does not fit
	 * in 64 bits: 1e-12/s once became an interval of 1 ns, i.e. no limit),
	 * and interval × burst stays below RULE_SPAN_NS so that now + tolerance
	 * + interval never wraps. */
	double iv = ceil(1e9 / r->rate);
	r->interval_ns = iv >= (double)RULE_SPAN_NS ? RULE_SPAN_NS : (uint64_t)iv;
	if (!r->interval_ns)
		r->interval_ns = 1;
	rule_tolerance(r);
	r->global = l->global;
}

/* The policy window of r in whole seconds (RateLimit-Policy w=), at least 1. */
static uint64_t window_s(const struct rule *r)
{
	uint64_t w = (r->tolerance_ns + r->interval_ns + 999999999u) / 1000000000u;
	return w ? w : 1;
}

/* A global rule while Redis cannot decide: rate/hosts locally (default),
 * admit everything (open) or nothing (closed). NULL: admit. */
static const struct rule *global_fallback(const struct policy *p, const struct rule *ru,
					  struct worker *w, bool *closed)
{
	STAT_INC(w->stats.rl_global_fallback);
	*closed = p->fallback == CFG_RL_FALLBACK_CLOSED;
	if (p->fallback != CFG_RL_FALLBACK_LOCAL)
		return NULL;
	return ru->local ? ru->local : ru;
}

static void rule_local(struct rule *r, uint32_t hosts)
{
	if (!r->global || !r->interval_ns || hosts <= 1)
		return;
	r->local = calloc(1, sizeof(*r->local));
	if (!r->local)
		return; /* then the full rate applies locally */
	struct cfg_rl_limit l = {.enabled = true, .rate = r->rate, .burst = r->burst};
	rule_from(r->local, &l, hosts);
	if (r->local->burst > 1 && r->burst / hosts >= 1) {
		r->local->burst = r->burst / hosts;
		rule_tolerance(r->local);
	}
}

static bool rule_same(const struct rule *a, const struct rule *b)
{
	if (a->interval_ns != b->interval_ns || a->tolerance_ns != b->tolerance_ns ||
	    a->rate != b->rate || a->burst != b->burst || a->global != b->global ||
	    !a->local != !b->local)
		return false;
	return !a->local || rule_same(a->local, b->local);
}

static bool policy_same(const struct policy *a, const struct policy *b)
{
	if (!rule_same(&a->client, &b->client) || !rule_same(&a->key, &b->key) ||
	    !rule_same(&a->accept, &b->accept) || strcmp(a->key_header, b->key_header) ||
	    a->n_routes != b->n_routes || a->prefix_v6 != b->prefix_v6 ||
	    a->esc_refusals != b->esc_refusals || a->esc_window_ns != b->esc_window_ns ||
	    a->esc_penalty_ns != b->esc_penalty_ns || a->redis != b->redis ||
	    a->hosts != b->hosts || a->fallback != b->fallback)
		return false;
	for (unsigned i = 0; i < a->n_routes; i++)
		if (strcmp(a->routes[i].host, b->routes[i].host) ||
		    strcmp(a->routes[i].path_prefix, b->routes[i].path_prefix) ||
		    !rule_same(&a->routes[i].r, &b->routes[i].r))
			return false;
	return true;
}

static void policy_free(struct policy *p)
{
	free(p->client.local);
	free(p->key.local);
	free(p->accept.local);
	for (unsigned i = 0; i < p->n_routes; i++)
		free(p->routes[i].r.local);
	free(p);
}

/* Replaced policies are never freed (a worker may be reading one), so a
 * policy equal to the current one is dropped instead of published: a
 * reload that leaves the limits alone, or a storm of them, costs nothing. */
static void policy_publish(struct policy *p)
{
	pthread_mutex_lock(&policy_mu);
	struct policy *old = __atomic_load_n(&cur, __ATOMIC_ACQUIRE);
	if (old && policy_same(old, p)) {
		pthread_mutex_unlock(&policy_mu);
		policy_free(p);
		return;
	}
	p->older = old;
	__atomic_store_n(&cur, p, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&policy_mu);
}

int limit_configure(const struct config *cfg)
{
	const struct cfg_ratelimit *c = &cfg->ratelimit;
	struct policy *p = calloc(1, sizeof(*p));

	if (!p)
		return -ENOMEM;
	if (!tables_ready()) {
		free(p);
		return -ENOMEM;
	}
	rule_from(&p->client, &c->client, 1);
	rule_from(&p->key, &c->api_key, 1);
	snprintf(p->key_header, sizeof(p->key_header), "%s", c->key_header);
	for (unsigned i = 0; i < c->n_routes; i++) {
		snprintf(p->routes[i].host, sizeof(p->routes[i].host), "%s", c->routes[i].host);
		snprintf(p->routes[i].path_prefix, sizeof(p->routes[i].path_prefix), "%s",
			 c->routes[i].path_prefix);
		rule_from(&p->routes[i].r, &c->routes[i].lim, 1);
	}
	p->n_routes = c->n_routes;
	p->prefix_v6 = c->kernel.prefix_v6 ? c->kernel.prefix_v6 : 64;
	if (c->kernel.syn_rate) {
		struct cfg_rl_limit a = {
			.enabled = true, .rate = c->kernel.syn_rate, .burst = c->kernel.syn_burst};
		rule_from(&p->accept, &a, 1);
	}
	p->esc_refusals = c->escalate_refusals;
	p->esc_window_ns = (uint64_t)c->escalate_window * 1000000;
	p->esc_penalty_ns = (uint64_t)c->escalate_penalty * 1000000;
	p->redis = c->redis.len != 0;
	p->hosts = c->hosts ? c->hosts : 1;
	p->fallback = c->fallback;
	if (p->redis) {
		rule_local(&p->client, p->hosts);
		rule_local(&p->key, p->hosts);
		for (unsigned i = 0; i < p->n_routes; i++)
			rule_local(&p->routes[i].r, p->hosts);
	}
	policy_publish(p);
	return 0;
}

static const struct policy *policy(void)
{
	return __atomic_load_n(&cur, __ATOMIC_ACQUIRE);
}

void limit_kernel_active(bool on)
{
	__atomic_store_n(&kernel_on, on, __ATOMIC_RELEASE);
}

bool limit_kernel_is_active(void)
{
	return __atomic_load_n(&kernel_on, __ATOMIC_ACQUIRE);
}

static int (*metrics_hook)(struct buf *b);

void limit_set_metrics_hook(int (*fn)(struct buf *b))
{
	__atomic_store_n(&metrics_hook, fn, __ATOMIC_RELEASE);
}

int limit_metrics(struct buf *b)
{
	int (*fn)(struct buf *) = __atomic_load_n(&metrics_hook, __ATOMIC_ACQUIRE);

	return fn ? fn(b) : 0;
}

uint64_t limit_penalty_ns(void)
{
	const struct policy *p = policy();
	return p ? p->esc_penalty_ns : 0;
}

/* ---- escalation and "top limited" ------------------------------------------ */

static void escalate_push(const char *addr)
{
	pthread_mutex_lock(&esc_mu);
	if (esc_len == ESC_QUEUE) { /* full: drop the oldest, the newest matter more */
		esc_head = (esc_head + 1) % ESC_QUEUE;
		esc_len--;
	}
	snprintf(esc_q[(esc_head + esc_len) % ESC_QUEUE], 48, "%s", addr);
	esc_len++;
	pthread_mutex_unlock(&esc_mu);
}

unsigned limit_escalation_take(char (*out)[48], unsigned max)
{
	unsigned n = 0;

	pthread_mutex_lock(&esc_mu);
	while (esc_len && n < max) {
		memcpy(out[n++], esc_q[esc_head], 48);
		esc_head = (esc_head + 1) % ESC_QUEUE;
		esc_len--;
	}
	pthread_mutex_unlock(&esc_mu);
	return n;
}

static void top_count(const char *addr, uint64_t key)
{
	unsigned i0 = home_of(key, TOP_SIZE - 1);

	for (unsigned p = 0; p < 16; p++) {
		struct top_slot *t = &top[(i0 + p) & (TOP_SIZE - 1)];
		uint64_t k = __atomic_load_n(&t->key, __ATOMIC_ACQUIRE), zero = 0;
		if (k != key && k == 0 &&
		    __atomic_compare_exchange_n(&t->key, &zero, key, false, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE)) {
			/* the claimer writes the text once; readers skip empty text */
			snprintf(t->addr, sizeof(t->addr), "%s", addr);
			k = key;
		} else if (k == 0) {
			k = zero;
		}
		if (k == key) {
			__atomic_add_fetch(&t->refused, 1, __ATOMIC_RELAXED);
			return;
		}
	}
}

/* Counts a refusal of addr; true when it crosses the escalation threshold
 * (once per window). */
static bool refusal_escalates(const struct policy *p, const char *addr, uint64_t key, uint64_t now)
{
	if (!p->esc_refusals || !p->esc_window_ns)
		return false;
	uint32_t now_s = (uint32_t)(now / 1000000000u);
	uint64_t win_s = (p->esc_window_ns + 999999999u) / 1000000000u;
	/* a slot whose window started before the current one may be reused */
	uint64_t stale = now_s > win_s ? ((uint64_t)(now_s - win_s) << 32) | 0xffffffffu : 0;
	struct slot *s = slot_find(esc, TABLE_SIZE / 8 - 1, key, stale);
	if (!s)
		return false;
	for (int tries = 0; tries < 64; tries++) {
		uint64_t old = __atomic_load_n(&s->val, __ATOMIC_ACQUIRE);
		uint32_t start = (uint32_t)(old >> 32), count = (uint32_t)old;
		if (!old || now_s - start >= win_s) {
			start = now_s;
			count = 0;
		}
		count++;
		uint64_t nv = ((uint64_t)start << 32) | count;
		if (__atomic_compare_exchange_n(&s->val, &old, nv, false, __ATOMIC_ACQ_REL,
						__ATOMIC_ACQUIRE))
			return count == p->esc_refusals + 1;
	}
	return false;
}

/* ---- the step -------------------------------------------------------------- */

/* Per-request state of the step, allocated only when a global limit waits
 * for Redis (the request may have to resume in the middle of the rules). */
struct limit_wait {
	struct request *r;
	struct lredis_op *op;
	unsigned phase; /* next rule: PHASE_* */
	bool have;	/* a Redis answer for that rule is here */
	int err;
	bool ok;
	uint64_t wait_us, reset_us;
};

enum { PHASE_CLIENT = 0, PHASE_KEY, PHASE_ROUTE, PHASE_DONE };

void limit_req_end(struct request *r)
{
	struct limit_wait *lw = r->limit;

	if (!lw)
		return;
	lredis_cancel(lw->op);
	free(lw);
	r->limit = NULL;
}

static void on_redis(void *arg, int err, bool ok, uint64_t wait_us, uint64_t reset_us)
{
	struct limit_wait *lw = arg;

	lw->op = NULL;
	lw->have = true;
	lw->err = err;
	lw->ok = ok;
	lw->wait_us = wait_us;
	lw->reset_us = reset_us;
	req_resume(lw->r);
}

enum decision { DECIDED, WAITING };

/* One rule for one key: locally, or for a global rule with ratelimit.redis
 * through Redis (WAITING: the request resumes with the answer), falling back
 * as configured when Redis cannot answer. */
static enum decision decide(struct request *r, const struct policy *p, const struct rule *ru,
			    uint64_t key, uint64_t now, const struct rule **used, struct verdict *v)
{
	struct worker *w = r->c->conn.w;
	struct limit_wait *lw = r->limit;
	bool closed = false;

	*used = ru;
	if (!ru->global || !p->redis) {
		*v = gcra(ru, key, now);
		return DECIDED;
	}
	if (lw && lw->have) {
		lw->have = false;
		if (!lw->err) {
			STAT_INC(w->stats.rl_global_checks);
			*v = (struct verdict){.ok = lw->ok,
					      .wait_ns = lw->wait_us * 1000,
					      .reset_ns = lw->reset_us * 1000};
			return DECIDED;
		}
	} else {
		const struct cfg_ratelimit *rc = &r->gen->cfg->ratelimit;
		if (!lw) {
			lw = r->limit = calloc(1, sizeof(*lw));
			if (lw)
				lw->r = r;
		}
		if (lw && rc->redis.len) {
			char name[32];
			snprintf(name, sizeof(name), "rfx:rl:%016llx", (unsigned long long)key);
			lw->op = lredis_gcra(w, &rc->redis, rc->redis_timeout, name,
					     (ru->interval_ns + 999) / 1000,
					     ru->tolerance_ns / 1000, on_redis, lw);
			if (lw->op)
				return WAITING;
		}
	}
	const struct rule *fb = global_fallback(p, ru, w, &closed);
	if (!fb) {
		*v = (struct verdict){.ok = !closed,
				      .remaining = closed ? 0 : ru->burst,
				      .wait_ns = 1000000000u,
				      .reset_ns = 1000000000u};
		return DECIDED;
	}
	*used = fb;
	*v = gcra(fb, key, now);
	return DECIDED;
}

static void refuse(struct request *r, const char *name, const struct rule *ru,
		   const struct verdict *v)
{
	/* request-scoped: respond_error reads it inside req_fail */
	static __thread char hdrs[320];
	uint64_t retry_s = (v->wait_ns + 999999999u) / 1000000000u;
	uint64_t reset_s = (v->reset_ns + 999999999u) / 1000000000u;
	char reason[96];

	if (!retry_s)
		retry_s = 1;
	snprintf(hdrs, sizeof(hdrs),
		 "Retry-After: %llu\r\n"
		 "RateLimit-Policy: \"%s\";q=%u;w=%llu\r\n"
		 "RateLimit: \"%s\";r=0;t=%llu\r\n",
		 (unsigned long long)retry_s, name, ru->burst, (unsigned long long)window_s(ru),
		 name, (unsigned long long)(reset_s ? reset_s : 1));
	snprintf(reason, sizeof(reason), "rate limit \"%s\" exceeded, retry in %llu s", name,
		 (unsigned long long)retry_s);
	r->resp_hdrs = hdrs;
	req_fail(r, 429, REASON_RATE_LIMITED, reason, false);
	r->resp_hdrs = NULL;
}

/* A source's bucket (kind: client or accept): its IPv4 address, or its IPv6
 * address masked to the configured prefix (a /64 by default: one subscriber,
 * however many addresses it rotates through), as the kernel layer buckets it. */
static uint64_t source_key(const struct policy *p, enum key_kind kind, const char *peer)
{
	unsigned char a6[16];

	if (strchr(peer, ':') && inet_pton(AF_INET6, peer, a6) == 1) {
		for (unsigned i = p->prefix_v6; i < 128; i++)
			a6[i / 8] &= (unsigned char)~(0x80u >> (i % 8));
		return key_of(kind, p->prefix_v6, a6, sizeof(a6));
	}
	return key_of(kind, 0, peer, strlen(peer));
}

static uint64_t client_key(const struct policy *p, const char *peer)
{
	return source_key(p, KIND_CLIENT, peer);
}

/* An admitted request: remember the tightest rule's quota for the response
 * (respond.c appends r->limit_fields to a relayed head). */
static void note(struct request *r, const char *name, const struct rule *ru,
		 const struct verdict *v)
{
	uint64_t reset = v->reset_ns, room = ru->tolerance_ns + ru->interval_ns;
	uint64_t left = reset < room ? (room - reset) / ru->interval_ns : 0;
	const char *prev = strstr(r->limit_fields, ";r=");

	if (prev && strtoull(prev + 3, NULL, 10) <= left)
		return;
	snprintf(r->limit_fields, sizeof(r->limit_fields),
		 "RateLimit-Policy: \"%s\";q=%u;w=%llu\r\nRateLimit: \"%s\";r=%llu;t=%llu\r\n",
		 name, ru->burst, (unsigned long long)window_s(ru), name, (unsigned long long)left,
		 (unsigned long long)((reset + 999999999u) / 1000000000u));
}

enum step_result limit_step(struct request *r)
{
	const struct policy *p = policy();
	struct client *c = r->c;
	struct worker *w = c->conn.w;
	const struct http_request *h = &r->h;
	unsigned phase = r->limit ? r->limit->phase : PHASE_CLIENT;
	const struct rule *used;
	struct verdict v;
	uint64_t now;

	if (!p || !buckets)
		return STEP_NEXT;
	if (!p->client.interval_ns && !p->key.interval_ns && !p->n_routes)
		return STEP_NEXT;
	if (r->limit && r->limit->op)
		return STEP_WAIT; /* resumed by something else: Redis has not answered */
	if (phase == PHASE_CLIENT && !r->limit)
		STAT_INC(w->stats.rl_checked);
	now = clock_ns();

	uint64_t ckey = client_key(p, c->peer);
	if (phase == PHASE_CLIENT && p->client.interval_ns) {
		if (decide(r, p, &p->client, ckey, now, &used, &v) == WAITING)
			goto wait;
		if (!v.ok) {
			STAT_INC(w->stats.rl_refused_client);
			goto refused_client;
		}
		note(r, "client", used, &v);
	}
	phase = phase < PHASE_KEY ? PHASE_KEY : phase;
	if (r->limit)
		r->limit->phase = phase;
	if (phase == PHASE_KEY && p->key.interval_ns) {
		for (unsigned i = 0; i < h->n_headers; i++) {
			if (!http_str_eq(h->headers[i].name, p->key_header))
				continue;
			/* A second field would let a client put a fresh value in
			 * front of its limited key: this rule would charge the
			 * fresh one, and an upstream that reads the last field
			 * (or all of them) would serve the limited key. */
			for (unsigned j = i + 1; j < h->n_headers; j++) {
				if (!http_str_eq(h->headers[j].name, p->key_header))
					continue;
				char why[128];
				snprintf(why, sizeof(why), "more than one %s field", p->key_header);
				limit_req_end(r);
				req_fail(r, 400, REASON_BAD_REQUEST, why, false);
				return STEP_WAIT;
			}
			/* only the hash goes into the table (and to Redis) */
			uint64_t k = key_of(KIND_API_KEY, 0, h->headers[i].value.p,
					    h->headers[i].value.len);
			if (decide(r, p, &p->key, k, now, &used, &v) == WAITING)
				goto wait;
			if (!v.ok) {
				STAT_INC(w->stats.rl_refused_key);
				refuse(r, "api_key", used, &v);
				return STEP_WAIT;
			}
			note(r, "api_key", used, &v);
			break;
		}
	}
	phase = phase < PHASE_ROUTE ? PHASE_ROUTE : phase;
	if (r->limit)
		r->limit->phase = phase;
	if (phase == PHASE_ROUTE && p->n_routes) {
		/* what the request names, not its spelling (parse.h) */
		char host[CFG_HOST_MAX], small[1024], *path = small;
		http_host_key(h, host, sizeof(host));
		if (h->path.len + 2 > sizeof(small) && !(path = malloc(h->path.len + 2))) {
			req_fail(r, 500, REASON_INTERNAL, "out of memory", false);
			return STEP_WAIT;
		}
		size_t path_len = http_path_resolve(h->path.p, h->path.len, path);
		unsigned i;
		for (i = 0; i < p->n_routes; i++) {
			const struct route_rule *rr = &p->routes[i];
			size_t pl = strlen(rr->path_prefix);
			if (http_host_matches(rr->host, host) && path_len >= pl &&
			    memcmp(path, rr->path_prefix, pl) == 0)
				break;
		}
		if (path != small)
			free(path);
		if (i < p->n_routes) {
			const struct route_rule *rr = &p->routes[i];
			size_t pl = strlen(rr->path_prefix);
			if (decide(r, p, &rr->r, key_of(KIND_ROUTE, i, rr->path_prefix, pl), now,
				   &used, &v) == WAITING)
				goto wait;
			if (!v.ok) {
				STAT_INC(w->stats.rl_refused_route);
				refuse(r, "route", used, &v);
				return STEP_WAIT;
			}
			note(r, "route", used, &v);
		}
	}
	limit_req_end(r);
	return STEP_NEXT;

wait:
	r->limit->phase = phase;
	return STEP_WAIT;

refused_client:
	top_count(c->peer, ckey);
	if (refusal_escalates(p, c->peer, ckey, now)) {
		STAT_INC(w->stats.rl_escalations);
		log_info("ratelimit: %s refused more than %u times in %llu ms: penalty box%s",
			 c->peer, p->esc_refusals, (unsigned long long)(p->esc_window_ns / 1000000),
			 limit_kernel_is_active() ? "" : " (kernel layer off: not boxed)");
		if (limit_kernel_is_active())
			escalate_push(c->peer);
	}
	refuse(r, "client", used, &v);
	return STEP_WAIT;
}

/* ---- accept ---------------------------------------------------------------- */

bool limit_accept(struct worker *w, int fd)
{
	const struct policy *p = policy();
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char addr[48];

	if (!p || !p->accept.interval_ns || !buckets || limit_kernel_is_active())
		return true;
	if (getpeername(fd, (struct sockaddr *)&ss, &sl) != 0)
		return true;
	sock_ntop((struct sockaddr *)&ss, addr, sizeof(addr));
	/* per /64 for IPv6, as the L7 client rule and the kernel layer do:
	 * otherwise one client has as many buckets as addresses it rotates */
	struct verdict v = gcra(&p->accept, source_key(p, KIND_ACCEPT, addr), clock_ns());
	if (v.ok)
		return true;
	STAT_INC(w->stats.rl_accept_refused);
	return false;
}

/* ---- admin ----------------------------------------------------------------- */

static int rule_json(struct buf *b, const char *name, const struct rule *r)
{
	if (!r->interval_ns)
		return buf_appendf(b, "\"%s\":null", name);
	return buf_appendf(b, "\"%s\":{\"rate\":%.6g,\"burst\":%u,\"global\":%s}", name, r->rate,
			   r->burst, r->global ? "true" : "false");
}

int limit_policy_json(struct buf *b)
{
	const struct policy *p = policy();
	int rc = 0;

	if (!p)
		return buf_appends(b, "{}");
	rc |= buf_appends(b, "{");
	rc |= rule_json(b, "client", &p->client);
	rc |= buf_appends(b, ",");
	rc |= rule_json(b, "api_key", &p->key);
	rc |= buf_appends(b, ",\"key_header\":");
	rc |= jsonw_buf_str(b, p->key_header);
	rc |= buf_appends(b, ",\"routes\":[");
	for (unsigned i = 0; i < p->n_routes; i++) {
		rc |= buf_appends(b, i ? ",{\"host\":" : "{\"host\":");
		rc |= jsonw_buf_str(b, p->routes[i].host);
		rc |= buf_appends(b, ",\"path_prefix\":");
		rc |= jsonw_buf_str(b, p->routes[i].path_prefix);
		rc |= buf_appends(b, ",");
		rc |= rule_json(b, "limit", &p->routes[i].r);
		rc |= buf_appends(b, "}");
	}
	rc |= buf_appendf(b,
			  "],\"escalate\":{\"refusals\":%u,\"window_ms\":%llu,\"penalty_ms\":%llu},"
			  "\"accept\":",
			  p->esc_refusals, (unsigned long long)(p->esc_window_ns / 1000000),
			  (unsigned long long)(p->esc_penalty_ns / 1000000));
	if (p->accept.interval_ns)
		rc |= buf_appendf(b, "{\"rate\":%.6g,\"burst\":%u,\"active\":%s}", p->accept.rate,
				  p->accept.burst, limit_kernel_is_active() ? "false" : "true");
	else
		rc |= buf_appends(b, "null");
	rc |= buf_appendf(b, ",\"redis\":%s,\"hosts\":%u}", p->redis ? "true" : "false", p->hosts);
	return rc ? -1 : 0;
}

/* The number after "key": inside obj[0..len); -1 if absent. */
static int json_num(const char *obj, size_t len, const char *key, double *out)
{
	char pat[32];
	int pl = snprintf(pat, sizeof(pat), "\"%s\"", key);
	const char *p = memmem(obj, len, pat, (size_t)pl), *end = obj + len;
	char tmp[32];
	size_t n = 0;

	if (!p)
		return -1;
	p += pl;
	while (p < end && (*p == ' ' || *p == ':' || *p == '\t' || *p == '\n'))
		p++;
	while (p < end && n + 1 < sizeof(tmp) && (strchr("0123456789.eE+-", *p)))
		tmp[n++] = *p++;
	tmp[n] = 0;
	if (!n)
		return -1;
	char *e;
	*out = strtod(tmp, &e);
	return *e ? -1 : 0;
}

/* The {...} value of "key" (no nesting inside it): start and length. */
static int json_obj(const char *s, size_t len, const char *key, const char **o, size_t *olen)
{
	char pat[32];
	int pl = snprintf(pat, sizeof(pat), "\"%s\"", key);
	const char *p = memmem(s, len, pat, (size_t)pl), *end = s + len;

	if (!p)
		return -1;
	p += pl;
	while (p < end && *p != '{' && *p != 'n')
		p++;
	if (p >= end)
		return -1;
	if (*p == 'n') { /* null: off */
		*o = NULL;
		*olen = 0;
		return 0;
	}
	const char *q = memchr(p, '}', (size_t)(end - p));
	if (!q)
		return -1;
	*o = p;
	*olen = (size_t)(q - p + 1);
	return 0;
}

static int rule_parse(const char *o, size_t olen, const struct rule *old, struct rule *out,
		      char *err, size_t errlen, const char *name)
{
	struct cfg_rl_limit l = {0};
	double rate = 0, burst = 0;

	if (!o) {
		memset(out, 0, sizeof(*out));
		return 0;
	}
	if (json_num(o, olen, "rate", &rate) || rate < 0 || rate > 1e9) {
		snprintf(err, errlen, "%s.rate: expected a number >= 0", name);
		return -1;
	}
	if (json_num(o, olen, "burst", &burst))
		burst = old->burst ? old->burst : (rate >= 1 ? rate : 1);
	if (burst < 1 || burst > 1e9) {
		snprintf(err, errlen, "%s.burst: expected a number >= 1", name);
		return -1;
	}
	if (rate > 0 && (rate < CFG_RL_RATE_MIN || burst / rate > CFG_RL_REFILL_MAX_S)) {
		snprintf(err, errlen,
			 "%s: rate %g/s is too slow for burst %.0f (rate at least %g/s, "
			 "burst / rate at most %.0f s)",
			 name, rate, burst, CFG_RL_RATE_MIN, CFG_RL_REFILL_MAX_S);
		return -1;
	}
	l.enabled = rate > 0;
	l.rate = rate;
	l.burst = (uint32_t)burst;
	l.global = old->global;
	rule_from(out, &l, 1);
	return 0;
}

int limit_policy_set(const char *json, size_t len, char *err, size_t errlen)
{
	const struct policy *p = policy();
	struct policy *np;
	const char *o;
	size_t olen;

	if (!p || !tables_ready()) {
		snprintf(err, errlen, "rate limiting is not configured");
		return -1;
	}
	np = malloc(sizeof(*np));
	if (!np) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	*np = *p;
	if (!json_obj(json, len, "client", &o, &olen) &&
	    rule_parse(o, olen, &p->client, &np->client, err, errlen, "client"))
		goto bad;
	if (!json_obj(json, len, "api_key", &o, &olen) &&
	    rule_parse(o, olen, &p->key, &np->key, err, errlen, "api_key"))
		goto bad;
	if (!json_obj(json, len, "escalate", &o, &olen) && o) {
		double d;
		if (!json_num(o, olen, "refusals", &d) && d >= 0)
			np->esc_refusals = (uint32_t)d;
		if (!json_num(o, olen, "window_ms", &d) && d >= 1)
			np->esc_window_ns = (uint64_t)d * 1000000;
		if (!json_num(o, olen, "penalty_ms", &d) && d >= 1)
			np->esc_penalty_ns = (uint64_t)d * 1000000;
	}
	np->client.global = p->client.global;
	np->key.global = p->key.global;
	if (np->redis) {
		rule_local(&np->client, np->hosts);
		rule_local(&np->key, np->hosts);
	}
	policy_publish(np);
	return 0;
bad:
	free(np);
	return -1;
}

struct top_row {
	uint64_t refused;
	char addr[48];
};

static int top_cmp(const void *a, const void *b)
{
	const struct top_row *x = a, *y = b;
	return x->refused < y->refused ? 1 : x->refused > y->refused ? -1 : 0;
}

int limit_top_json(struct buf *b, unsigned max)
{
	struct top_row *rows;
	unsigned n = 0;
	int rc = 0;

	if (!tables_ready())
		return buf_appends(b, "[]");
	rows = calloc(TOP_SIZE, sizeof(*rows));
	if (!rows)
		return -1;
	for (unsigned i = 0; i < TOP_SIZE; i++) {
		uint64_t c = __atomic_load_n(&top[i].refused, __ATOMIC_RELAXED);
		if (!c || !top[i].addr[0])
			continue;
		rows[n].refused = c;
		memcpy(rows[n].addr, top[i].addr, sizeof(rows[n].addr));
		rows[n].addr[47] = 0;
		n++;
	}
	qsort(rows, n, sizeof(*rows), top_cmp);
	rc |= buf_appends(b, "[");
	for (unsigned i = 0; i < n && i < max; i++) {
		rc |= buf_appends(b, i ? ",{\"source\":" : "{\"source\":");
		rc |= jsonw_buf_str(b, rows[i].addr);
		rc |= buf_appendf(b, ",\"refused\":%llu}", (unsigned long long)rows[i].refused);
	}
	rc |= buf_appends(b, "]");
	free(rows);
	return rc ? -1 : 0;
}
