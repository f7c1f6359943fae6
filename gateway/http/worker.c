#include "http/worker.h"

#include <errno.h>
#include <semaphore.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "core/log.h"
#include "http/accept.h"
#include "http/cache.h"
#include "http/conn.h"
#include "http/health.h"
#include "http/req.h"
#include "http/upstream.h"


/* Per-worker ring and receive memory: 512 × 16 KiB provided buffers. */
#define RING_ENTRIES 4096
#define RECV_BUFS 512
#define RECV_BUF_SIZE (16 * 1024)

struct start_ctx {
	struct worker *w;
	sem_t ready;
};

uint64_t worker_rand(struct worker *w)
{
	/* xorshift128+: fast, and good enough for load balancing and ids that
	 * only need to be unique, not secret */
	uint64_t s1 = w->rng[0];
	const uint64_t s0 = w->rng[1];
	w->rng[0] = s0;
	s1 ^= s1 << 23;
	w->rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
	return w->rng[1] + s0;
}

static void arm_mail_read(struct worker *w)
{
	struct io_uring_sqe *sqe = loop_sqe(&w->loop);

	io_uring_prep_read(sqe, w->mail_fd, &w->mail_val, sizeof(w->mail_val), 0);
	loop_sqe_set_op(sqe, &w->mail_op);
}

int worker_pool_slot(const struct config *cfg, unsigned p)
{
	return p < cfg->n_pools ? stats_name_slot(STATS_NAMES_POOL, cfg->pools[p].name) : -1;
}

int worker_route_slot(const struct config *cfg, unsigned i)
{
	char key[32 + CFG_HOST_MAX + sizeof(cfg->routes[0].path_prefix)];

	if (i >= cfg->n_routes)
		return -1;
	snprintf(key, sizeof(key), "%u\x1f%s\x1f%s", i, cfg->routes[i].host,
		 cfg->routes[i].path_prefix);
	return stats_name_slot(STATS_NAMES_ROUTE, key);
}

static void gen_free(struct wgen *g)
{
	free(g->pool_slot);
	free(g->route_slot);
	free(g);
}

static struct wgen *gen_new(const struct config *cfg)
{
	struct wgen *g = calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->cfg = cfg;
	g->n_pools = cfg->n_pools;
	g->pool_slot = calloc(cfg->n_pools ? cfg->n_pools : 1, sizeof(*g->pool_slot));
	g->route_slot = calloc(cfg->n_routes ? cfg->n_routes : 1, sizeof(*g->route_slot));
	if (!g->pool_slot || !g->route_slot) {
		gen_free(g);
		return NULL;
	}
	for (unsigned p = 0; p < cfg->n_pools; p++)
		g->pool_slot[p] = worker_pool_slot(cfg, p);
	for (unsigned i = 0; i < cfg->n_routes; i++)
		g->route_slot[i] = worker_route_slot(cfg, i);
	g->pools = pool_states_new(cfg);
	if (!g->pools) {
		gen_free(g);
		return NULL;
	}
	g->refs = 1;
	return g;
}

struct wgen *worker_gen_get(struct worker *w)
{
	w->gen->refs++;
	return w->gen;
}

void worker_gen_put(struct worker *w, struct wgen *g)
{
	if (!g || --g->refs)
		return;
	pool_states_close_idle(g->pools, g->n_pools);
	pool_states_free(g->pools, g->n_pools);
	if (w->release_cfg)
		w->release_cfg(w->release_ctx, g->cfg);
	gen_free(g);
}

static void on_drain_deadline(struct timer *t)
{
	struct worker *w = container_of(t, struct worker, drain_timer);

	log_warn("worker %u: drain deadline passed with %u connections open; closing them",
		 w->id, w->n_clients);
	for (struct client *c = w->clients; c; c = c->next)
		conn_close(&c->conn, true);
	pool_states_close_idle(w->gen->pools, w->gen->n_pools);
}

static void begin_drain(struct worker *w, bool keep_listeners)
{
	if (w->draining)
		return;
	w->draining = true;
	accept_close(w, keep_listeners);
	cache_worker_drain(w); /* background refreshes end now */
	for (struct client *c = w->clients; c; c = c->next)
		client_drain(c);
	timer_init(&w->drain_timer, on_drain_deadline);
	timer_arm(&w->loop.timers, &w->drain_timer, w->loop.now + w->cfg->timeouts.drain);
}

/* Switch to a new snapshot: new requests route with it at once; requests
 * in flight keep their generation (and its pools) until they end. */
static void apply_config(struct worker *w, const struct config *ncfg)
{
	struct wgen *g = gen_new(ncfg);
	unsigned max_hdrs = ncfg->limits.header_count + 1;
	struct http_header *hdrs = calloc(max_hdrs, sizeof(*hdrs));

	if (!g || !hdrs) {
		log_error("worker %u: out of memory applying the new configuration; keeping the old",
			  w->id);
		free(hdrs);
		if (g) {
			pool_states_free(g->pools, g->n_pools);
			gen_free(g);
		}
		if (w->release_cfg)
			w->release_cfg(w->release_ctx, ncfg);
		return;
	}
	accept_update(w, ncfg);
	cache_reconfigure(ncfg);
	health_start(w, g->pools, g->n_pools);
	struct wgen *old = w->gen;
	w->gen = g;
	w->cfg = ncfg;
	free(w->hdrs);
	w->hdrs = hdrs;
	w->max_hdrs = max_hdrs;
	w->limits.max_request_line = ncfg->limits.request_line;
	w->limits.max_head_bytes = ncfg->limits.header_bytes;
	w->limits.max_headers = ncfg->limits.header_count;
	/* idle connections of the old pools are not handed out any more */
	pool_states_close_idle(old->pools, old->n_pools);
	worker_gen_put(w, old);
}

/* Run the posted tasks, oldest first (the stack holds them newest first). */
static void run_tasks(struct worker *w)
{
	struct worker_task *t = __atomic_exchange_n(&w->mail_tasks, NULL, __ATOMIC_ACQ_REL), *fifo = NULL;

	while (t) {
		struct worker_task *next = t->next;
		t->next = fifo;
		fifo = t;
		t = next;
	}
	while (fifo) {
		struct worker_task *next = fifo->next;
		fifo->fn(w, fifo);
		fifo = next;
	}
}

static void on_mail(struct io_op *op, int res, unsigned flags)
{
	struct worker *w = container_of(op, struct worker, mail_op);

	if (res == -ECANCELED)
		return;
	run_tasks(w);
	const struct config *ncfg = __atomic_exchange_n(&w->mail_cfg, NULL, __ATOMIC_ACQ_REL);
	if (ncfg && !w->draining)
		apply_config(w, ncfg);
	else if (ncfg && w->release_cfg)
		w->release_cfg(w->release_ctx, ncfg);
	if (ncfg) /* only compared, never dereferenced: released is fine */
		__atomic_store_n(&w->mail_done, ncfg, __ATOMIC_RELEASE);
	if (__atomic_load_n(&w->mail_drain, __ATOMIC_ACQUIRE))
		begin_drain(w, __atomic_load_n(&w->mail_keep_listeners, __ATOMIC_ACQUIRE));
	arm_mail_read(w);
}

static void before_submit(struct loop *l)
{
	struct worker *w = l->owner;

	conn_flush_all(w);
	conn_reap_all(w);
	/* the listeners go once their accepts have ended (a handed-over one takes its
	 * backlog then, which may bring clients) */
	if (w->draining && w->n_clients == 0 && !w->listeners) {
		pool_states_close_idle(w->gen->pools, w->gen->n_pools);
		conn_reap_all(w);
		if (w->n_conns == 0)
			l->stop = true;
	}
}

static int setup(struct worker *w)
{
	const struct config *cfg = w->cfg;
	int rc;

	if (getrandom(w->rng, sizeof(w->rng), 0) != sizeof(w->rng))
		w->rng[0] = (uint64_t)clock_ns() ^ ((uint64_t)w->id << 32);
	w->rng[1] |= 1;

	w->max_hdrs = cfg->limits.header_count + 1;
	w->hdrs = calloc(w->max_hdrs, sizeof(*w->hdrs));
	if (!w->hdrs)
		return -ENOMEM;
	w->limits.max_request_line = cfg->limits.request_line;
	w->limits.max_head_bytes = cfg->limits.header_bytes;
	w->limits.max_headers = cfg->limits.header_count;

	rc = loop_init(&w->loop, RING_ENTRIES, RECV_BUFS, RECV_BUF_SIZE);
	if (rc < 0) {
		snprintf(w->start_msg, sizeof(w->start_msg), "io_uring set-up: %s", strerror(-rc));
		return rc;
	}
	w->loop.owner = w;
	w->loop.before_submit = before_submit;

	w->mail_fd = eventfd(0, EFD_CLOEXEC);
	if (w->mail_fd < 0) {
		rc = -errno;
		snprintf(w->start_msg, sizeof(w->start_msg), "eventfd: %s", strerror(errno));
		return rc;
	}
	w->mail_op.on_complete = on_mail;
	arm_mail_read(w);

	/* Per-pool counters are indexed by pool; room for pools a reload adds. */
	rc = stats_worker_init(&w->stats, cfg->n_pools > 64 ? cfg->n_pools * 2 : 128);
	if (rc < 0) {
		snprintf(w->start_msg, sizeof(w->start_msg), "stats: %s", strerror(-rc));
		return rc;
	}
	w->gen = gen_new(cfg);
	if (!w->gen) {
		snprintf(w->start_msg, sizeof(w->start_msg), "pools: out of memory");
		return -ENOMEM;
	}
	health_start(w, w->gen->pools, w->gen->n_pools);
	rc = accept_open(w);
	if (rc < 0)
		return rc;
	return 0;
}

static void teardown(struct worker *w)
{
	run_tasks(w);
	accept_free(w);
	if (w->gen) {
		/* whatever is left is unreachable now: the loop has stopped */
		w->gen->refs = 1;
		worker_gen_put(w, w->gen);
		w->gen = NULL;
	}
	if (w->loop.bufs)
		loop_fini(&w->loop);
	if (w->mail_fd >= 0)
		close(w->mail_fd);
	w->mail_fd = -1;
	free(w->hdrs);
	w->hdrs = NULL;
}

static void *worker_main(void *arg)
{
	struct start_ctx *ctx = arg;
	struct worker *w = ctx->w;

	/* The ring is SINGLE_ISSUER: it must be created by the thread that
	 * will submit to it, so all set-up happens here. */
	w->start_error = setup(w);
	sem_post(&ctx->ready); /* ctx is gone after this */
	if (w->start_error) {
		teardown(w);
		return NULL;
	}
	loop_run(&w->loop);
	teardown(w);
	return NULL;
}

int worker_start(struct worker *w, unsigned id, const struct config *cfg)
{
	struct start_ctx ctx = { .w = w };
	int rc;

	w->id = id;
	w->cfg = cfg;
	w->mail_fd = -1;
	sem_init(&ctx.ready, 0, 0);
	rc = pthread_create(&w->thread, NULL, worker_main, &ctx);
	if (rc) {
		snprintf(w->start_msg, sizeof(w->start_msg), "pthread_create: %s", strerror(rc));
		sem_destroy(&ctx.ready);
		return -rc;
	}
	while (sem_wait(&ctx.ready) != 0)
		;
	sem_destroy(&ctx.ready);
	if (w->start_error) {
		pthread_join(w->thread, NULL);
		return w->start_error;
	}
	return 0;
}

static void post(struct worker *w)
{
	uint64_t one = 1;

	if (write(w->mail_fd, &one, sizeof(one)) < 0)
		log_warn("worker %u: mailbox: %s", w->id, strerror(errno));
}

void worker_drain(struct worker *w, bool keep_listeners)
{
	__atomic_store_n(&w->mail_keep_listeners, keep_listeners, __ATOMIC_RELEASE);
	__atomic_store_n(&w->mail_drain, true, __ATOMIC_RELEASE);
	post(w);
}

void worker_reload(struct worker *w, const struct config *cfg)
{
	const struct config *prev = __atomic_exchange_n(&w->mail_cfg, cfg, __ATOMIC_ACQ_REL);

	/* a snapshot the worker never picked up is superseded */
	if (prev && w->release_cfg)
		w->release_cfg(w->release_ctx, prev);
	post(w);
}

static void on_serve(struct worker *w, struct worker_task *t)
{
	(void)t;
	accept_serve(w);
}

void worker_serve(struct worker *w)
{
	w->serve_task.fn = on_serve;
	worker_post(w, &w->serve_task);
}

static bool wait_until(struct worker *w, const struct config *cfg, unsigned timeout_ms)
{
	for (unsigned waited = 0;; waited++) {
		if (cfg ? __atomic_load_n(&w->mail_done, __ATOMIC_ACQUIRE) == cfg ||
				  __atomic_load_n(&w->mail_drain, __ATOMIC_ACQUIRE)
			: __atomic_load_n(&w->serving, __ATOMIC_ACQUIRE))
			return true;
		if (waited >= timeout_ms)
			return false;
		struct timespec ms = {.tv_nsec = 1000000};
		nanosleep(&ms, NULL);
	}
}

bool worker_wait_serving(struct worker *w, unsigned timeout_ms)
{
	return wait_until(w, NULL, timeout_ms);
}

bool worker_wait_config(struct worker *w, const struct config *cfg, unsigned timeout_ms)
{
	return wait_until(w, cfg, timeout_ms);
}

void worker_post(struct worker *w, struct worker_task *t)
{
	struct worker_task *head = __atomic_load_n(&w->mail_tasks, __ATOMIC_RELAXED);

	do
		t->next = head;
	while (!__atomic_compare_exchange_n(&w->mail_tasks, &head, t, true, __ATOMIC_RELEASE,
					    __ATOMIC_RELAXED));
	post(w);
}

void worker_join(struct worker *w)
{
	pthread_join(w->thread, NULL);
}
