/* limit_redis.h — global rate limits in Redis, from the worker's ring.
 *
 * One Redis connection per worker (opened on first use, closed after 1 s
 * idle and when the worker drains), driven by the worker's io_uring through
 * the shared client of core/redis.h: never a blocking call. Each
 * connection first loads the GCRA script (SCRIPT LOAD, pipelined) and then
 * runs it with EVALSHA, so every decision is one atomic server-side step: N gateways sharing a key admit
 * the configured rate together. The script uses the Redis server's clock
 * (TIME), so the hosts' clocks do not need to agree.
 *
 * Every operation has a deadline; when the oldest passes, all pending ones
 * fail with -ETIMEDOUT and the connection is dropped. After 3 failures in a
 * row the client stops trying for 1 s (callers fall back at once).
 *
 * The raw keys never reach Redis: callers pass hashes.
 */
#ifndef REFLEX_HTTP_LIMIT_REDIS_H
#define REFLEX_HTTP_LIMIT_REDIS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"

struct worker;
struct lredis_op;

/* ok: admitted; wait_us / reset_us as in GCRA. err < 0: no decision. */
typedef void lredis_cb(void *arg, int err, bool ok, uint64_t wait_us, uint64_t reset_us);

/* Decide one request against the bucket `key` (a short printable name)
 * with interval_us / tolerance_us. Returns the operation, or NULL when no
 * decision can be asked for now (breaker open, connect failed, out of
 * memory): then cb is never called and the caller falls back. */
struct lredis_op *lredis_gcra(struct worker *w, const struct cfg_addr *redis, uint32_t timeout_ms,
			      const char *key, uint64_t interval_us, uint64_t tolerance_us,
			      lredis_cb *cb, void *arg);
/* The caller goes away: cb will not be called. */
void lredis_cancel(struct lredis_op *op);

#endif
