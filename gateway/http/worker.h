/* worker.h — one worker thread: its ring, listeners, connections and
 * upstream pools. Nothing here is shared with other workers (STYLE.md §7);
 * the only cross-thread touch is worker_drain(), which writes the worker's
 * eventfd.
 */
#ifndef REFLEX_HTTP_WORKER_H
#define REFLEX_HTTP_WORKER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/config.h"
#include "core/loop.h"
#include "core/stats.h"
#include "http/parse.h"

struct conn;
struct client;
struct pool_state;

struct listener {
	struct worker *w;
	int fd;
	const struct cfg_addr *addr;
	struct io_op accept_op;
	bool armed;
};

struct worker {
	unsigned id;
	pthread_t thread;
	const struct config *cfg;
	struct loop loop;

	struct listener *listeners;
	unsigned n_listeners;

	struct pool_state *pools; /* one per cfg->pools entry */

	struct conn *flush_list, *reap_list;
	struct client *clients;
	unsigned n_clients; /* open client connections */
	unsigned n_conns;   /* all connections, clients and upstream */

	/* per-request scratch for the parsers (views into a conn's buffer) */
	struct http_header *hdrs;
	unsigned max_hdrs;
	struct http_limits limits;

	uint64_t rng[2];

	int drain_fd; /* eventfd: the main thread asks for a drain */
	struct io_op drain_op;
	uint64_t drain_val;
	bool draining;
	struct timer drain_timer;

	struct stats_worker stats;
	struct accesslog *alog; /* set by main before worker_start; NULL: off */
	int start_error; /* set by the worker if set-up failed (-errno) */
	char start_msg[512];
};

/* Set up the worker (ring, listeners, pools) on the calling thread's behalf
 * and start its thread. Returns 0 or -errno with w->start_msg set. */
int worker_start(struct worker *w, unsigned id, const struct config *cfg);
/* Ask the worker to stop accepting and finish in-flight requests (any thread). */
void worker_drain(struct worker *w);
void worker_join(struct worker *w);

uint64_t worker_rand(struct worker *w);

#endif
