#include "http/pool_shared.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/privs.h"
#include "core/timer.h"

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

/* The registry of live sets: touched at generation set-up and tear-down
 * only, so one lock is enough. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct pool_shared_set *registry;

/* "name:port" is re-resolved; "1.2.3.4:port" and "[v6]:port" are not. */
static bool is_name(const char *text)
{
	char host[CFG_HOST_MAX];
	const char *colon = strrchr(text, ':');
	struct in_addr a4;

	if (text[0] == '[' || !colon || (size_t)(colon - text) >= sizeof(host))
		return false;
	memcpy(host, text, (size_t)(colon - text));
	host[colon - text] = 0;
	return inet_pton(AF_INET, host, &a4) != 1;
}

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
			struct ep_shared *e = &p->eps[j];
			e->cfg = &p->cfg->endpoints[j];
			e->healthy = 1;
			e->addr = e->cfg->addr.ss;
			e->addr_len = e->cfg->addr.len;
			e->dynamic = p->cfg->resolve && is_name(e->cfg->addr.text);
			e->resolve_due_ms = clock_ms() + p->cfg->resolve;
			s->has_names |= e->dynamic;
		}
	}
	return s;
fail:
	set_free(s);
	return NULL;
}

static void *resolver_main(void *arg)
{
	(void)arg;
	for (;;) {
		sleep(1);
		pool_shared_resolve_pass(clock_ms());
	}
	return NULL;
}

static void resolver_start(void)
{
	pthread_t t;
	pthread_attr_t at;
	sigset_t all, old;

	/* signals stay with the threads that wait for them; PRIVS_SIGNAL must
	 * reach every thread (core/privs.h) */
	sigfillset(&all);
	sigdelset(&all, PRIVS_SIGNAL);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_attr_init(&at);
	pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &at, resolver_main, NULL) != 0)
		log_error("pool: cannot start the resolver thread: host names stay as resolved at "
			  "load");
	pthread_attr_destroy(&at);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static pthread_once_t resolver_once = PTHREAD_ONCE_INIT;

/* A reload must not forget what it knew: endpoints that stay (same pool
 * name, same address text) keep health, ejection, breaker and resolved
 * address; pools keep their retry budget. `from` is the newest live set
 * (registry lock held, so it stays alive; its values are read atomically). */
static void carry_over(struct pool_shared_set *to, const struct pool_shared_set *from)
{
	for (unsigned i = 0; i < to->cfg->n_pools; i++) {
		struct pool_shared *p = &to->pools[i];
		const struct pool_shared *q = NULL;
		for (unsigned k = 0; k < from->cfg->n_pools && !q; k++)
			if (!strcmp(from->pools[k].cfg->name, p->cfg->name))
				q = &from->pools[k];
		if (!q)
			continue;
		p->budget_milli = LOAD(q->budget_milli);
		for (unsigned j = 0; j < p->n_eps; j++) {
			struct ep_shared *e = &p->eps[j];
			for (unsigned m = 0; m < q->n_eps; m++) {
				const struct ep_shared *o = &q->eps[m];
				if (strcmp(o->cfg->addr.text, e->cfg->addr.text))
					continue;
				e->healthy = LOAD(o->healthy);
				e->hc_ok = LOAD(o->hc_ok);
				e->hc_fail = LOAD(o->hc_fail);
				e->consec_fail = LOAD(o->consec_fail);
				e->n_ejections = LOAD(o->n_ejections);
				e->ejected_until_ms = LOAD(o->ejected_until_ms);
				e->back_ms = LOAD(o->back_ms);
				e->failures = LOAD(o->failures);
				if (p->cfg->breaker.enabled && q->cfg->breaker.enabled) {
					e->breaker.state = LOAD(o->breaker.state);
					e->breaker.open_until_ms = LOAD(o->breaker.open_until_ms);
					e->breaker.ok = LOAD(o->breaker.ok);
					e->breaker.fail = LOAD(o->breaker.fail);
					if (e->breaker.state ==
					    BREAKER_HALF_OPEN) /* probes were the old set's */
						e->breaker.state = BREAKER_OPEN;
				}
				if (e->dynamic && o->dynamic)
					pool_shared_addr(o, &e->addr, &e->addr_len);
				break;
			}
		}
	}
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
		if (s && registry)
			carry_over(s, registry);
		if (s) {
			s->next = registry;
			registry = s;
		}
	}
	if (s)
		s->refs++;
	pthread_mutex_unlock(&registry_lock);
	if (s && s->has_names)
		pthread_once(&resolver_once, resolver_start);
	return s;
}

void pool_shared_addr(const struct ep_shared *e, struct sockaddr_storage *ss, socklen_t *len)
{
	for (int tries = 0;; tries++) {
		unsigned a = __atomic_load_n(&e->addr_seq, __ATOMIC_ACQUIRE);
		if (a & 1 && tries < 1000)
			continue;
		memcpy(ss, &e->addr, sizeof(*ss));
		*len = e->addr_len;
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&e->addr_seq, __ATOMIC_RELAXED) == a || tries >= 1000)
			return;
	}
}

static void addr_publish(struct ep_shared *e, const struct sockaddr *sa, socklen_t len)
{
	__atomic_add_fetch(&e->addr_seq, 1, __ATOMIC_ACQ_REL); /* odd: writing */
	__atomic_thread_fence(__ATOMIC_RELEASE);
	memcpy(&e->addr, sa, len);
	e->addr_len = len;
	__atomic_add_fetch(&e->addr_seq, 1, __ATOMIC_RELEASE);
}

static void resolve_one(const struct pool_shared *p, struct ep_shared *e)
{
	char host[CFG_HOST_MAX];
	const char *text = e->cfg->addr.text, *colon = strrchr(text, ':');
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV}, *res;
	int rc;

	memcpy(host, text, (size_t)(colon - text));
	host[colon - text] = 0;
	rc = getaddrinfo(host, colon + 1, &hints, &res);
	if (rc) {
		log_warn("pool %s: endpoint %s: cannot resolve: %s; keeping the last address",
			 p->cfg->name, text, gai_strerror(rc));
		return;
	}
	if (res->ai_addrlen <= sizeof(e->addr) &&
	    (res->ai_addrlen != e->addr_len || memcmp(res->ai_addr, &e->addr, res->ai_addrlen))) {
		char ip[64] = "?";
		if (res->ai_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)res->ai_addr)->sin_addr, ip,
				  sizeof(ip));
		else if (res->ai_family == AF_INET6)
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)res->ai_addr)->sin6_addr, ip,
				  sizeof(ip));
		addr_publish(e, res->ai_addr, res->ai_addrlen);
		log_info("pool %s: endpoint %s now resolves to %s", p->cfg->name, text, ip);
	}
	freeaddrinfo(res);
}

void pool_shared_resolve_pass(uint64_t now_ms)
{
	struct pool_shared_set **sets = NULL, *s;
	unsigned n = 0, k = 0;

	pthread_mutex_lock(&registry_lock);
	for (s = registry; s; s = s->next)
		n += s->has_names;
	if (n)
		sets = calloc(n, sizeof(*sets));
	for (s = registry; sets && s; s = s->next)
		if (s->has_names) {
			s->refs++;
			sets[k++] = s;
		}
	pthread_mutex_unlock(&registry_lock);
	/* the lookups run without the lock: they may take seconds */
	for (unsigned i = 0; i < k; i++)
		for (unsigned j = 0; j < sets[i]->cfg->n_pools; j++) {
			struct pool_shared *p = &sets[i]->pools[j];
			for (unsigned m = 0; m < p->n_eps; m++) {
				struct ep_shared *e = &p->eps[m];
				if (!e->dynamic || now_ms < e->resolve_due_ms)
					continue;
				e->resolve_due_ms = now_ms + p->cfg->resolve;
				resolve_one(p, e);
			}
		}
	for (unsigned i = 0; i < k; i++)
		pool_shared_put(sets[i]);
	free(sets);
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

static bool eject(struct pool_shared *p, struct ep_shared *e, uint64_t now_ms);

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
	return eject(p, e, now_ms);
}

/* Enough samples for an endpoint's latency to count. */
#define LAT_MIN_SAMPLES 5

bool pool_shared_latency(struct pool_shared *p, struct ep_shared *e, uint32_t us, uint64_t now_ms)
{
	const struct cfg_outlier *o = &p->cfg->outlier;
	uint32_t v = LOAD(e->lat_ewma_us);
	unsigned n = __atomic_add_fetch(&e->lat_n, 1, __ATOMIC_RELAXED);

	/* racy read-modify-write across workers: a lost sample does not matter */
	v = n == 1 ? us : (uint32_t)(((uint64_t)v * 7 + us) / 8);
	STORE(e->lat_ewma_us, v);
	if (!o->latency_factor || n < LAT_MIN_SAMPLES || p->n_eps < 2 || p->n_eps > 64)
		return false;
	/* the median of the other endpoints that have enough samples */
	uint32_t others[64];
	unsigned k = 0;
	for (unsigned i = 0; i < p->n_eps; i++) {
		const struct ep_shared *x = &p->eps[i];
		if (x != e && LOAD(x->lat_n) >= LAT_MIN_SAMPLES)
			others[k++] = LOAD(x->lat_ewma_us);
	}
	if (!k)
		return false;
	for (unsigned i = 1; i < k; i++)
		for (unsigned j = i; j && others[j - 1] > others[j]; j--) {
			uint32_t t = others[j];
			others[j] = others[j - 1];
			others[j - 1] = t;
		}
	uint64_t median = others[k / 2];
	/* far above the pool: a factor, and at least 10 ms (noise below that) */
	if ((uint64_t)v <= median * o->latency_factor || (uint64_t)v < median + 10000)
		return false;
	if (!eject(p, e, now_ms))
		return false;
	/* it comes back with a clean slate, or one old average would eject it again */
	STORE(e->lat_n, 0);
	STORE(e->lat_ewma_us, 0);
	return true;
}

static bool eject(struct pool_shared *p, struct ep_shared *e, uint64_t now_ms)
{
	const struct cfg_outlier *o = &p->cfg->outlier;
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

	/* at the cap (no retries lately) this is one load: no shared write */
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
