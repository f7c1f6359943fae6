/* pool_balance.c — endpoint choice: P2C with EWMA latency and weights,
 * smooth weighted round robin, rendezvous hashing; only endpoints in
 * rotation (pool_shared.h), slow start after a return. See upstream.h. */
#include <stdlib.h>
#include <string.h>

#include "core/timer.h"
#include "http/pool_hash.h"
#include "http/upstream.h"

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
/* Added to every EWMA: differences of a few milliseconds are noise (a
 * busy machine), +50 ms is not. */
#define EWMA_FLOOR_US 5000

static uint64_t ewma_now(const struct endpoint_state *e, uint64_t now_ms)
{
	uint64_t age = now_ms > e->ewma_at_ms ? now_ms - e->ewma_at_ms : 0;
	unsigned halvings = (unsigned)(age / 1000);

	if (e->n_samples < 2) /* one cold answer (first connection) says little */
		return 0;

	/* An endpoint that gets no traffic forgets its past latency, so a slow
	 * spell ends in a probe rather than in exile. */
	return halvings >= 32 ? 0 : e->ewma_us >> halvings;
}

static unsigned eff_weight(const struct pool_state *p, const struct endpoint_state *e,
			   uint64_t now_ms)
{
	/* weight in thousandths, ramped by slow start */
	unsigned ramp = p->sh && e->sh ? pool_shared_ramp(p->sh, e->sh, now_ms) : 1000;
	return e->cfg->weight * ramp;
}

static bool usable(const struct pool_state *p, const struct endpoint_state *e, uint64_t now_ms,
		   bool need_capacity)
{
	if (!p->sh || !e->sh)
		return true;
	if (!pool_shared_available(p->sh, e->sh, now_ms))
		return false;
	return !need_capacity || !p->cfg->limits.connections ||
	       LOAD(e->sh->busy) < p->cfg->limits.connections;
}

void pool_endpoint_report(const struct pool_state *p, const struct endpoint_state *e,
			  uint64_t now_ms, struct pool_ep_report *out)
{
	memset(out, 0, sizeof(*out));
	out->healthy = true;
	out->available = true;
	out->breaker = "closed";
	out->ramp_permille = 1000;
	out->ewma_us = (uint32_t)ewma_now(e, now_ms);
	if (!p->sh || !e->sh)
		return;
	const struct ep_shared *s = e->sh;
	uint64_t until = LOAD(s->ejected_until_ms);
	out->healthy = LOAD(s->healthy) != 0;
	out->ejected = until > now_ms;
	out->ejected_for_ms = out->ejected ? until - now_ms : 0;
	out->n_ejections = LOAD(s->n_ejections);
	if (p->cfg->breaker.enabled)
		out->breaker = breaker_state_name(breaker_state_now(&s->breaker, now_ms));
	out->available = pool_shared_available(p->sh, s, now_ms);
	out->ramp_permille = pool_shared_ramp(p->sh, s, now_ms);
	out->busy = LOAD(s->busy);
	out->failures = LOAD(s->failures);
}

static struct endpoint_state *pick_rr(struct pool_state *p, const bool *ok, uint64_t now_ms)
{
	/* Smooth weighted round robin (nginx's): every endpoint gains its
	 * weight, the richest is chosen and pays the total. */
	int64_t total = 0;
	struct endpoint_state *best = NULL;

	for (unsigned i = 0; i < p->n_eps; i++) {
		struct endpoint_state *e = &p->eps[i];
		if (!ok[i])
			continue;
		int w = (int)(eff_weight(p, e, now_ms) / 1000);
		if (w < 1)
			w = 1;
		e->wrr_current += w;
		total += w;
		if (!best || e->wrr_current > best->wrr_current)
			best = e;
	}
	if (best)
		best->wrr_current -= (int)total;
	return best;
}

/* Is a's load lower than b's? Cost: (in-flight + 1) × EWMA latency per
 * unit of weight (peak-EWMA style). Costs within a factor of two count as
 * equal and fall back to in-flight per weight (then a coin): traffic keeps
 * spreading over similar endpoints instead of sticking to whichever answered
 * a little faster, while a clearly slower one (+50 ms) is avoided. */
static bool p2c_less(const struct pool_state *p, const struct endpoint_state *a,
		     const struct endpoint_state *b, uint64_t now_ms, bool *tie)
{
	uint64_t wa = eff_weight(p, a, now_ms), wb = eff_weight(p, b, now_ms);
	uint64_t ea = ewma_now(a, now_ms), eb = ewma_now(b, now_ms);
	unsigned __int128 la, lb;

	if (ea || eb) {
		la = (unsigned __int128)(a->inflight + 1) * (ea + EWMA_FLOOR_US) * wb;
		lb = (unsigned __int128)(b->inflight + 1) * (eb + EWMA_FLOOR_US) * wa;
		if (la >= 2 * lb || lb >= 2 * la) {
			*tie = false;
			return la < lb;
		}
	}
	la = (unsigned __int128)a->inflight * wb;
	lb = (unsigned __int128)b->inflight * wa;
	*tie = la == lb;
	return la < lb;
}

struct endpoint_state *pool_pick_ex(struct pool_state *p, uint64_t rnd, uint64_t now_ms,
				    const struct endpoint_state *avoid, bool has_key, uint64_t key,
				    bool need_capacity)
{
	unsigned n = p->n_eps, n_ok = 0;
	bool ok[256], *okp = ok;
	unsigned idx[256], *idxp = idx;
	struct endpoint_state *res = NULL;

	if (n == 0)
		return NULL;
	if (n > 256) { /* a huge pool: the stack arrays would not do */
		okp = malloc(n * sizeof(*okp));
		idxp = malloc(n * sizeof(*idxp));
		if (!okp || !idxp)
			goto out;
	}
	for (unsigned i = 0; i < n; i++) {
		okp[i] = usable(p, &p->eps[i], now_ms, need_capacity);
		if (okp[i])
			idxp[n_ok++] = i;
	}
	if (avoid && n_ok > 1) { /* a retry goes elsewhere when it can */
		unsigned a = (unsigned)(avoid - p->eps);
		if (a < n && okp[a]) {
			okp[a] = false;
			unsigned k = 0;
			for (unsigned i = 0; i < n_ok; i++)
				if (idxp[i] != a)
					idxp[k++] = idxp[i];
			n_ok = k;
		}
	}
	if (n_ok == 0)
		goto out;
	if (n_ok == 1) {
		res = &p->eps[idxp[0]];
		goto out;
	}
	if (p->cfg->balance == CFG_BALANCE_HASH && has_key) {
		uint64_t ids[256], *idsp = ids;
		unsigned ws[256], *wsp = ws;
		if (n > 256) {
			idsp = malloc(n * sizeof(*idsp));
			wsp = malloc(n * sizeof(*wsp));
		}
		if (idsp && wsp) {
			for (unsigned i = 0; i < n; i++) {
				idsp[i] = p->eps[i].id;
				wsp[i] = p->eps[i].cfg->weight;
			}
			int k = pool_hash_pick(key, idsp, wsp, okp, n);
			res = k >= 0 ? &p->eps[k] : NULL;
		}
		if (n > 256) {
			free(idsp);
			free(wsp);
		}
		if (res)
			goto out;
	}
	if (p->cfg->balance == CFG_BALANCE_ROUND_ROBIN) {
		res = pick_rr(p, okp, now_ms);
		goto out;
	}
	unsigned a = (unsigned)(rnd % n_ok);
	unsigned b = (unsigned)((rnd >> 32) % (n_ok - 1));
	if (b >= a)
		b++;
	struct endpoint_state *ea = &p->eps[idxp[a]], *eb = &p->eps[idxp[b]];
	bool tie;
	bool less = p2c_less(p, ea, eb, now_ms, &tie);
	if (tie)
		res = (rnd >> 63) ? eb : ea;
	else
		res = less ? ea : eb;
out:
	if (okp != ok)
		free(okp);
	if (idxp != idx)
		free(idxp);
	return res;
}
