#include "http/breaker.h"

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define CAS(x, expect, v) \
	__atomic_compare_exchange_n(&(x), &(expect), (v), false, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED)

const char *breaker_state_name(unsigned state)
{
	switch (state) {
	case BREAKER_CLOSED:
		return "closed";
	case BREAKER_OPEN:
		return "open";
	case BREAKER_HALF_OPEN:
		return "half_open";
	default:
		return "unknown";
	}
}

unsigned breaker_state_now(const struct breaker *b, uint64_t now_ms)
{
	unsigned st = LOAD(b->state);

	if (st == BREAKER_OPEN && now_ms >= LOAD(b->open_until_ms))
		return BREAKER_HALF_OPEN;
	return st;
}

bool breaker_available(const struct breaker *b, const struct cfg_breaker *c, uint64_t now_ms)
{
	if (!c->enabled)
		return true;
	switch (breaker_state_now(b, now_ms)) {
	case BREAKER_CLOSED:
		return true;
	case BREAKER_HALF_OPEN:
		return LOAD(b->state) == BREAKER_OPEN || LOAD(b->probes) < c->probes;
	default:
		return false;
	}
}

enum breaker_admit breaker_admit(struct breaker *b, const struct cfg_breaker *c, uint64_t now_ms)
{
	if (!c->enabled)
		return BREAKER_PASS;
	unsigned st = LOAD(b->state);
	if (st == BREAKER_CLOSED)
		return BREAKER_PASS;
	if (st == BREAKER_OPEN) {
		if (now_ms < LOAD(b->open_until_ms))
			return BREAKER_DENY;
		/* probes is not reset here: a probe of the previous half-open
		 * period may still be in flight, and its end gives its slot back
		 * (resetting would wrap the count below zero and refuse the
		 * endpoint until a reload). Every PROBE is returned exactly once. */
		unsigned expect = BREAKER_OPEN;
		if (!CAS(b->state, expect, BREAKER_HALF_OPEN) && expect != BREAKER_HALF_OPEN)
			return expect == BREAKER_CLOSED ? BREAKER_PASS : BREAKER_DENY;
	}
	/* half-open: take a probe slot if one is free */
	unsigned n = LOAD(b->probes);
	while (n < c->probes)
		if (__atomic_compare_exchange_n(&b->probes, &n, n + 1, false, __ATOMIC_ACQ_REL,
						__ATOMIC_RELAXED))
			return BREAKER_PROBE;
	return BREAKER_DENY;
}

static void trip(struct breaker *b, const struct cfg_breaker *c, uint64_t now_ms)
{
	STORE(b->open_until_ms, now_ms + c->open_time);
	STORE(b->ok, 0);
	STORE(b->fail, 0);
}

bool breaker_result(struct breaker *b, const struct cfg_breaker *c, enum breaker_admit how, bool ok,
		    uint64_t now_ms)
{
	if (!c->enabled || how == BREAKER_DENY)
		return false;
	if (how == BREAKER_PROBE) {
		__atomic_fetch_sub(&b->probes, 1, __ATOMIC_ACQ_REL);
		unsigned expect = BREAKER_HALF_OPEN;
		if (ok) {
			STORE(b->ok, 0);
			STORE(b->fail, 0);
			CAS(b->state, expect, BREAKER_CLOSED);
			return false;
		}
		trip(b, c, now_ms);
		return CAS(b->state, expect, BREAKER_OPEN);
	}
	if (LOAD(b->state) != BREAKER_CLOSED)
		return false; /* a request admitted before the breaker opened */
	unsigned okn = ok ? __atomic_add_fetch(&b->ok, 1, __ATOMIC_RELAXED) : LOAD(b->ok);
	unsigned failn = ok ? LOAD(b->fail) : __atomic_add_fetch(&b->fail, 1, __ATOMIC_RELAXED);
	unsigned total = okn + failn;
	if (!ok && total >= c->min_requests &&
	    (uint64_t)failn * 100 >= (uint64_t)c->error_rate * total) {
		unsigned expect = BREAKER_CLOSED;
		trip(b, c, now_ms);
		return CAS(b->state, expect, BREAKER_OPEN);
	}
	if (total >= c->window) {
		/* next window, keeping half of this one's weight */
		STORE(b->ok, okn / 2);
		STORE(b->fail, failn / 2);
	}
	return false;
}

void breaker_release(struct breaker *b, enum breaker_admit how)
{
	if (how == BREAKER_PROBE)
		__atomic_fetch_sub(&b->probes, 1, __ATOMIC_ACQ_REL);
}
