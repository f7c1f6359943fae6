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
#include "core/topk.h"
#include "http/parse.h"

struct conn;
struct client;
struct pool_state;

struct listener {
	struct worker *w;
	struct listener *next;
	int fd;
	struct cfg_addr addr; /* a copy: it outlives the snapshot it came from */
	struct io_op accept_op;
	struct timer retry; /* re-arm after an accept error (EMFILE, ...) */
	bool armed;
	bool dead; /* closed; freed when its accept has ended */
	/* handed over (binary upgrade): when its accept has ended, take what waits in the
	 * backlog (accept_close) */
	bool sweep;
};

/* One configuration snapshot as this worker uses it: the snapshot and the
 * per-worker state of its pools. Requests hold a reference from routing to
 * their end, so a reload never pulls pools from under a request. */
struct wgen {
	const struct config *cfg;
	struct pool_state *pools;
	unsigned n_pools;
	/* counter slots (stats_name_slot) per config pool and route; -1: none */
	int *pool_slot, *route_slot;
	unsigned refs; /* requests using it, + 1 while it is the current one */
};

/* A function to run on a worker's thread (worker_post). The caller owns
 * the memory (embed it in the object the task is about); fn runs exactly
 * once, on the worker, also when the worker is stopping. */
struct worker_task {
	struct worker_task *next;
	void (*fn)(struct worker *w, struct worker_task *t);
};

struct worker {
	unsigned id;
	pthread_t thread;
	const struct config *cfg; /* == gen->cfg: timeouts and limits for everything new */
	struct wgen *gen;         /* the current generation */
	struct loop loop;

	struct listener *listeners;
	/* Accepts are armed only once main has dropped privileges (worker_serve):
	 * no client is served by a thread that still holds them. */
	bool serving;
	struct worker_task serve_task;

	struct conn *flush_list, *reap_list;
	struct conn *tls_hs_list; /* conn.c: handshake steps deferred past the batch */
	struct client *clients;
	unsigned n_clients; /* open client connections */
	unsigned n_conns;   /* all connections, clients and upstream */

	/* per-request scratch for the parsers (views into a conn's buffer) */
	struct http_header *hdrs;
	unsigned max_hdrs;
	struct http_limits limits;

	uint64_t rng[2];

	/* Mailbox: other threads leave a request here and write the eventfd. */
	struct worker_task *mail_tasks; /* MPSC stack of worker_post() tasks (atomic) */
	int mail_fd;
	struct io_op mail_op;
	uint64_t mail_val;
	const struct config *mail_cfg; /* a new snapshot to switch to (atomic) */
	const struct config *mail_done; /* the last snapshot taken from mail_cfg (atomic) */
	bool mail_drain;               /* drain requested (atomic) */
	bool mail_keep_listeners;      /* with the drain: an upgrade owns the sockets now */
	bool draining;
	struct timer drain_timer;

	/* Snapshot references: the worker drops one when a generation ends. */
	void (*release_cfg)(void *ctx, const struct config *cfg);
	void *release_ctx;
	/* Listening sockets inherited from an upgrade: fds for address i are
	 * taken by the worker whose id matches their index modulo workers. */
	const struct inherited_fds *inherited;

	struct stats_worker stats;
	struct topk top_clients; /* heaviest client addresses, read by the admin API */
	struct accesslog *alog; /* set by main before worker_start; NULL: off */
	int start_error; /* set by the worker if set-up failed (-errno) */
	char start_msg[512];
};

struct inherited_fds {
	unsigned n;
	int *fd;
	struct sockaddr_storage *ss; /* getsockname of each */
	socklen_t *len;
	unsigned n_workers;
};

/* Set up the worker (ring, listeners, pools) on the calling thread's behalf
 * and start its thread. Returns 0 or -errno with w->start_msg set. The
 * worker takes over one reference to cfg. */
int worker_start(struct worker *w, unsigned id, const struct config *cfg);
/* Ask the worker to stop accepting and finish in-flight requests (any
 * thread). keep_listeners: the sockets now belong to a new process, so
 * close our copies without shutting them down. */
void worker_drain(struct worker *w, bool keep_listeners);
/* Hand the worker a new snapshot (any thread; it takes over one
 * reference). In-flight requests finish on the old one. */
void worker_reload(struct worker *w, const struct config *cfg);
/* Start accepting on the listeners opened by worker_start (any thread;
 * once). Until then, clients wait in the listen backlog. */
void worker_serve(struct worker *w);
/* Wait (polling, on a thread that is not a worker) until w's accepts are
 * armed after worker_serve, or until w has switched to cfg after
 * worker_reload (or drains). False when timeout_ms passed first. */
bool worker_wait_serving(struct worker *w, unsigned timeout_ms);
bool worker_wait_config(struct worker *w, const struct config *cfg, unsigned timeout_ms);

/* The counter slot of pool p / route i of cfg (core/stats.h: stats_name_slot;
 * a route's key is its label set: index, host and path prefix). */
int worker_pool_slot(const struct config *cfg, unsigned p);
int worker_route_slot(const struct config *cfg, unsigned i);

/* Generations: take/drop a request's reference. */
struct wgen *worker_gen_get(struct worker *w);
void worker_gen_put(struct worker *w, struct wgen *g);
void worker_join(struct worker *w);
/* Run t->fn on worker w's thread (any thread; lock-free MPSC push, then
 * the eventfd is written). Tasks run in the order they were posted. */
void worker_post(struct worker *w, struct worker_task *t);

uint64_t worker_rand(struct worker *w);

#endif
