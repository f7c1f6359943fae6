/* health.h — active health checks of upstream endpoints.
 *
 * Per pool with `health:` configured, one worker (the first to set up a
 * generation for the snapshot claims pool_shared.checker) sends an HTTP
 * request (method, path, Host: the endpoint) on a fresh connection to each
 * endpoint every interval, through its own ring, and counts a status in
 * the expected range within timeout as a success. `fall` failures in a row
 * take an endpoint out of rotation for every worker (ep_shared.healthy),
 * `rise` successes bring it back (with slow start). Endpoints start
 * healthy. Changes are logged (warn) and counted (pool_health_changes).
 *
 * Lifetime: health_start at generation set-up on the worker's thread;
 * health_stop when the generation's idle connections are closed (reload,
 * drain) or its pools freed; probes in flight are closed then.
 */
#ifndef REFLEX_HTTP_HEALTH_H
#define REFLEX_HTTP_HEALTH_H

struct worker;
struct pool_state;

/* Claim and start the checks of these pools that nobody runs yet. */
void health_start(struct worker *w, struct pool_state *pools, unsigned n);
/* Stop the checks this worker runs for these pools (no-op otherwise). */
void health_stop(struct pool_state *pools, unsigned n);

#endif
