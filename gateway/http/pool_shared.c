#include "http/pool_shared.h"

#include <pthread.h>
#include <stdlib.h>

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

/* The registry of live sets: touched at generation set-up and tear-down
 * only, so one lock is enough. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pool_shared_set *registry;

static void set_free(struct pool_shared_set *s)
{
	if (!s)
		return;
	for (unsigned i = 0; s->pools && i < s->cfg->n_pools; i++)
		free(s->pools[i].eps);
	free(s->pools);
	free(s);
}

static struct pool_shared_set *set_new(const struct config *cfg)
{
	struct pool_shared_set *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->cfg = cfg;
	s->pools = calloc(cfg->n_pools ? cfg->n_pools : 1, sizeof(*s->pools));
	if (!s->pools)
		goto fail;
	for (unsigned i = 0; i < cfg->n_pools; i++) {
		struct pool_shared *p = &s->pools[i];
		p->cfg = &cfg->pools[i];
		p->n_eps = p->cfg->n_endpoints;
		p->checker = -1;
		p->budget_milli = (int64_t)p->cfg->retry.min_retries * 1000;
		p->eps = calloc(p->n_eps ? p->n_eps : 1, sizeof(*p->eps));
		if (!p->eps)
			goto fail;
		for (unsigned j = 0; j < p->n_eps; j++) {
			p->eps[j].cfg = &p->cfg->endpoints[j];
			p->eps[j].healthy = 1;
		}
	}
	return s;
fail:
	set_free(s);
	return NULL;
}

struct pool_shared_set *pool_shared_get(const struct config *cfg)
{
	struct pool_shared_set *s;

	pthread_mutex_lock(&registry_lock);
	for (s = registry; s; s = s->next)
		if (s->cfg == cfg)
			break;
	if (!s) {
		s = set_new(cfg);
		if (s) {
			s->next = registry;
			registry = s;
		}
	}
	if (s)
		s->refs++;
	pthread_mutex_unlock(&registry_lock);
	return s;
}

void pool_shared_put(struct pool_shared_set *s)
{
	if (!s)
		return;
	pthread_mutex_lock(&registry_lock);
	if (--s->refs == 0) {
		struct pool_shared_set **pp = &registry;
		while (*pp != s)
			pp = &(*pp)->next;
		*pp = s->next;
	} else {
		s = NULL;
	}
	pthread_mutex_unlock(&registry_lock);
	set_free(s);
}

bool pool_shared_available(const struct pool_shared *p, const struct ep_shared *e, uint64_t now_ms)
{
	if (!LOAD(e->healthy))
		return false;
	if (LOAD(e->ejected_until_ms) > now_ms)
		return false;
	return breaker_available(&e->breaker, &p->cfg->breaker, now_ms);
}

unsigned pool_shared_ramp(const struct pool_shared *p, const struct ep_shared *e, uint64_t now_ms)
{
	uint64_t back = LOAD(e->back_ms), ss = p->cfg->slow_start;

	if (!ss || !back || now_ms >= back + ss)
		return 1000;
	if (now_ms <= back)
		return 50;
	uint64_t r = (now_ms - back) * 1000 / ss;
	return r < 50 ? 50 : (unsigned)r; /* a trickle from the start, or it never proves itself */
}

static unsigned ejected_now(const struct pool_shared *p, uint64_t now_ms)
{
	unsigned n = 0;

	for (unsigned i = 0; i < p->n_eps; i++)
		n += LOAD(p->eps[i].ejected_until_ms) > now_ms;
	return n;
}

bool pool_shared_outcome(struct pool_shared *p, struct ep_shared *e, bool ok, uint64_t now_ms)
{
	const struct cfg_outlier *o = &p->cfg->outlier;

	if (ok) {
		STORE(e->consec_fail, 0);
		return false;
	}
	__atomic_fetch_add(&e->failures, 1, __ATOMIC_RELAXED);
	unsigned n = __atomic_add_fetch(&e->consec_fail, 1, __ATOMIC_RELAXED);
	if (!o->consecutive_failures || n < o->consecutive_failures)
		return false;
	uint64_t until = LOAD(e->ejected_until_ms);
	if (until > now_ms)
		return false; /* already out: a request that was in flight */
	/* never more than max_ejected percent of the pool out at once */
	if ((uint64_t)(ejected_now(p, now_ms) + 1) * 100 > (uint64_t)o->max_ejected * p->n_eps)
		return false;
	unsigned k = LOAD(e->n_ejections);
	uint64_t cool = o->ejection_time;
	for (unsigned i = 0; i < k && cool < o->max_ejection_time; i++)
		cool *= 2;
	if (cool > o->max_ejection_time)
		cool = o->max_ejection_time;
	if (!__atomic_compare_exchange_n(&e->ejected_until_ms, &until, now_ms + cool, false,
					 __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
		return false; /* another worker ejected it just now */
	STORE(e->n_ejections, k + 1);
	STORE(e->consec_fail, 0);
	STORE(e->back_ms, now_ms + cool);
	return true;
}

void pool_shared_deposit(struct pool_shared *p)
{
	const struct cfg_retry *r = &p->cfg->retry;
	int64_t cap = ((int64_t)r->min_retries + 10) * 1000;
	int64_t add = (int64_t)r->budget * 10; /* percent of 1000 */

	if (r->attempts <= 1 && !p->cfg->hedge.enabled)
		return;
	int64_t v = LOAD(p->budget_milli);
	while (v < cap) {
		int64_t nv = v + add > cap ? cap : v + add;
		if (__atomic_compare_exchange_n(&p->budget_milli, &v, nv, false, __ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED))
			break;
	}
}

bool pool_shared_retry_take(struct pool_shared *p)
{
	unsigned lim = p->cfg->limits.retries;
	unsigned a = __atomic_add_fetch(&p->retries_active, 1, __ATOMIC_ACQ_REL);

	if (lim && a > lim) {
		__atomic_fetch_sub(&p->retries_active, 1, __ATOMIC_ACQ_REL);
		return false;
	}
	int64_t v = LOAD(p->budget_milli);
	while (v >= 1000)
		if (__atomic_compare_exchange_n(&p->budget_milli, &v, v - 1000, false,
						__ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			return true;
	__atomic_fetch_sub(&p->retries_active, 1, __ATOMIC_ACQ_REL);
	return false;
}

void pool_shared_retry_done(struct pool_shared *p)
{
	__atomic_fetch_sub(&p->retries_active, 1, __ATOMIC_ACQ_REL);
}

bool pool_shared_busy_take(struct pool_shared *p, struct ep_shared *e)
{
	unsigned lim = p->cfg->limits.connections;
	unsigned n = __atomic_add_fetch(&e->busy, 1, __ATOMIC_ACQ_REL);

	if (lim && n > lim) {
		__atomic_fetch_sub(&e->busy, 1, __ATOMIC_ACQ_REL);
		return false;
	}
	return true;
}

void pool_shared_busy_put(struct ep_shared *e)
{
	__atomic_fetch_sub(&e->busy, 1, __ATOMIC_ACQ_REL);
}
