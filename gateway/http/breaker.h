/* breaker.h — a circuit breaker per upstream endpoint, shared by all workers.
 *
 * closed → open when, among at least min_requests outcomes of the current
 * window, error_rate percent or more failed; open → half-open after
 * open_time; half-open lets `probes` requests through at once: one success
 * closes it, one failure opens it again for another open_time.
 *
 * Cross-thread: every field is read and written with relaxed atomics by
 * any worker (the counts are racy by design: a few outcomes may be lost or
 * counted in the next window, never enough to matter). State changes use
 * compare-and-swap, so exactly one caller sees each transition (and logs
 * and counts it).
 */
#ifndef REFLEX_HTTP_BREAKER_H
#define REFLEX_HTTP_BREAKER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"

enum breaker_state { BREAKER_CLOSED = 0, BREAKER_OPEN, BREAKER_HALF_OPEN };

struct breaker {
	unsigned state;		/* enum breaker_state */
	uint64_t open_until_ms; /* OPEN: when it may turn half-open */
	unsigned ok, fail;	/* CLOSED: outcomes of the current window */
	unsigned probes;	/* probe requests in flight, of any half-open period */
};

/* What breaker_admit decided. */
enum breaker_admit { BREAKER_DENY = 0, BREAKER_PASS, BREAKER_PROBE };

/* Could a request go through now (no side effect)? For endpoint choice. */
bool breaker_available(const struct breaker *b, const struct cfg_breaker *c, uint64_t now_ms);
/* Admit one request: PASS (closed), PROBE (half-open: it holds a probe
 * slot until breaker_result) or DENY. */
enum breaker_admit breaker_admit(struct breaker *b, const struct cfg_breaker *c, uint64_t now_ms);
/* The outcome of an admitted request. Returns true when this call opened
 * the breaker (for the log and the counter). */
bool breaker_result(struct breaker *b, const struct cfg_breaker *c, enum breaker_admit how, bool ok,
		    uint64_t now_ms);
/* An admitted request ended without a verdict (client gone): give its
 * probe slot back. */
void breaker_release(struct breaker *b, enum breaker_admit how);
/* "closed", "open", "half_open" */
const char *breaker_state_name(unsigned state);
/* The state as an observer sees it now (open past open_until reads half_open). */
unsigned breaker_state_now(const struct breaker *b, uint64_t now_ms);

#endif
