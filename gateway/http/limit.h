/* limit.h — rate limits at L7 (the "limit" step) and at accept.
 *
 * GCRA ("generic cell rate algorithm") limits per client address, per API
 * key (the value of a configured header, hashed with XXH3: the raw key is
 * never stored or logged) and per route, each with a rate and a burst
 * (docs/ratelimit.md). One 64-bit theoretical arrival time per bucket in a
 * process-wide table updated by compare-and-swap, so a limit is exact across
 * all workers of the host without a lock.
 *
 * A refused request gets 429 with Retry-After and the IETF httpapi
 * RateLimit-Policy / RateLimit fields and never reaches the upstream
 * (reason REASON_RATE_LIMITED; counters rl_* in core/stats.h).
 *
 * Escalation: a source refused more than `ratelimit.escalate.refusals`
 * times in `window` is queued for the kernel penalty box; the queue is
 * drained by whoever owns the kernel layer (http/limit_kernel.c) through
 * limit_escalation_take(). Nothing here knows BPF.
 *
 * Policy: built from the configuration snapshot by limit_configure() (start
 * and every reload, any thread) and replaceable through the admin API
 * (limit_policy_set). Workers read the current policy through an atomic
 * pointer; replaced policies are kept until exit (a reload or an admin
 * change costs a few KiB), so a worker never reads freed memory.
 */
#ifndef REFLEX_HTTP_LIMIT_H
#define REFLEX_HTTP_LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/config.h"
#include "core/jsonw.h"
#include "http/req.h"

struct worker;

/* The request's limit step: STEP_NEXT when admitted; STEP_WAIT after a 429
 * (the request was answered) or while a global limit waits for Redis. */
enum step_result limit_step(struct request *r);

/* The userspace connection-rate limit (ratelimit.kernel.syn_rate), applied
 * at accept when the kernel layer is not active. true: keep the connection;
 * false: the caller closes fd (counted in rl_accept_refused). */
bool limit_accept(struct worker *w, int fd);

/* Build the policy from a snapshot (start, reload). Keeps admin overrides
 * of the L7 rates only until the next reload. */
int limit_configure(const struct config *cfg);

/* Whether the kernel layer is attached and enforcing (set by its owner):
 * the userspace accept limit and escalation depend on it. */
void limit_kernel_active(bool on);
bool limit_kernel_is_active(void);

/* Sources to box, oldest first: copies up to max addresses ("192.0.2.1",
 * "2001:db8::1") into out; returns how many. Called by the kernel owner. */
unsigned limit_escalation_take(char (*out)[48], unsigned max);

/* Prometheus text for /metrics: the kernel layer's counters, through the
 * hook its owner registers (limit_kernel.c); nothing when there is none.
 * Kept behind a hook so that libgateway.a never needs libbpf. */
int limit_metrics(struct buf *b);
void limit_set_metrics_hook(int (*fn)(struct buf *b));

/* How long an escalated source stays in the penalty box. */
uint64_t limit_penalty_ns(void);

/* Admin views (any thread). */
int limit_policy_json(struct buf *b);
/* {"client": {"rate": R, "burst": B}, "api_key": {...}, "routes": [...]}:
 * replaces the given L7 rules (a rule with rate 0 turns it off). 0, or -1
 * with a reason in err. */
int limit_policy_set(const char *json, size_t len, char *err, size_t errlen);
/* The most limited sources, most refusals first (at most max). */
int limit_top_json(struct buf *b, unsigned max);

/* The request ends (or its client goes away): drop its step state and
 * forget a pending Redis answer. NULL-safe, idempotent. */
void limit_req_end(struct request *r);

#endif
