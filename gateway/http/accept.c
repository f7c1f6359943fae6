#include "http/accept.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sock.h"
#include "http/limit.h"
#include "http/req.h"
#include "http/worker.h"

#define LISTEN_BACKLOG 4096
/* After an accept error (EMFILE, ENFILE, ENOMEM) the connection is still in
 * the backlog: an accept re-armed at once fails at once, a busy loop. */
#define ACCEPT_RETRY_MS 50

static void arm(struct listener *ls)
{
	struct io_uring_sqe *sqe = loop_sqe(&ls->w->loop);

	io_uring_prep_multishot_accept(sqe, ls->fd, NULL, NULL, SOCK_CLOEXEC);
	loop_sqe_set_op(sqe, &ls->accept_op);
	ls->armed = true;
}

static void on_retry(struct timer *t)
{
	struct listener *ls = container_of(t, struct listener, retry);

	if (!ls->dead && !ls->armed && !ls->w->draining)
		arm(ls);
}

static void unlink_listener(struct worker *w, struct listener *ls)
{
	for (struct listener **pp = &w->listeners; *pp; pp = &(*pp)->next)
		if (*pp == ls) {
			*pp = ls->next;
			return;
		}
}

/* The listener's TLS context in the current generation (a reload may add,
 * change or drop it; connections keep the one they started with). */
static struct tls_ctx *listener_tls(const struct worker *w, const struct listener *ls)
{
	const struct config *cfg = w->cfg;

	for (unsigned i = 0; i < cfg->n_listens; i++)
		if (cfg->listens[i].len == ls->addr.len &&
		    !memcmp(&cfg->listens[i].ss, &ls->addr.ss, ls->addr.len))
			return cfg->listen_tls ? cfg->listen_tls[i].ctx : NULL;
	return NULL;
}

static void serve_accepted(struct worker *w, struct listener *ls, int fd)
{
	STAT_INC(w->stats.conn_accepted);
	if (limit_accept(w, fd)) /* the userspace SYN limit when BPF is off */
		client_new(w, fd, listener_tls(w, ls));
	else
		close(fd);
}

/* A handed-over listener whose accept has ended: a connection whose wake-up went to our
 * accept just before the cancel stays in the backlog, and the new process's accept, armed
 * on the same socket, is not woken for it (a listener wakes one waiter per connection) — it
 * would wait there until the next connection. Now that ours is off the wait queue, every
 * later connection wakes the new process; take the ones already queued and serve them as a
 * draining worker does (one response, then close). */
static void sweep(struct worker *w, struct listener *ls)
{
	int fd;

	/* non-blocking on the shared file, which the new process's io_uring accept does not
	 * mind: it polls when there is nothing to take */
	if (fcntl(ls->fd, F_SETFL, fcntl(ls->fd, F_GETFL) | O_NONBLOCK) < 0)
		return;
	unsigned n = 0;

	for (; n < 256 && (fd = accept4(ls->fd, NULL, NULL, SOCK_CLOEXEC)) >= 0; n++)
		serve_accepted(w, ls, fd);
	if (n)
		log_info("worker %u: %s: served %u connection(s) left in the backlog at the hand-off",
			 w->id, ls->addr.text, n);
}

static void on_accept(struct io_op *op, int res, unsigned flags)
{
	struct listener *ls = container_of(op, struct listener, accept_op);
	struct worker *w = ls->w;

	if (!(flags & IORING_CQE_F_MORE))
		ls->armed = false;
	if (res >= 0) {
		/* Accepted before the cancel landed: a real client, served
		 * (and closed after its first response when draining). */
		serve_accepted(w, ls, res);
	} else if (res != -ECANCELED && !ls->dead) {
		/* EMFILE/ENFILE/ENOMEM: the connection stays in the backlog; try
		 * again after ACCEPT_RETRY_MS. Logged once per second. */
		static __thread uint64_t last_log;
		if (w->loop.now - last_log > 1000) {
			last_log = w->loop.now;
			log_warn("accept on %s: %s", ls->addr.text, strerror(-res));
		}
	}
	if (ls->armed)
		return;
	if (ls->dead) {
		if (ls->sweep) {
			sweep(w, ls);
			close(ls->fd);
		}
		unlink_listener(w, ls);
		free(ls);
	} else if (!w->draining && res < 0 && res != -ECANCELED) {
		timer_arm(&w->loop.timers, &ls->retry, w->loop.now + ACCEPT_RETRY_MS);
	} else if (!w->draining) {
		arm(ls);
	}
}

/* An inherited socket for this address that belongs to this worker, or -1. */
static int take_inherited(struct worker *w, const struct cfg_addr *a, unsigned nth)
{
	const struct inherited_fds *in = w->inherited;
	unsigned seen = 0;

	if (!in)
		return -1;
	for (unsigned i = 0; i < in->n; i++) {
		if (in->fd[i] < 0 || in->len[i] != a->len || memcmp(&in->ss[i], &a->ss, a->len) != 0)
			continue;
		/* the k-th socket of an address goes to worker k mod workers */
		if (seen++ % in->n_workers == w->id % in->n_workers && nth-- == 0)
			return in->fd[i];
	}
	return -1;
}

/* listen.deferred of entry i (docs/config.md): set on each of the worker's sockets, the
 * inherited ones included, and again at a reload. */
static void apply_deferred(const struct config *cfg, unsigned i, int fd)
{
	int on = cfg->listen_deferred && cfg->listen_deferred[i];
	int rc = sock_defer_accept(fd, on);

	if (rc)
		log_warn("listen %s: deferred: %s", cfg->listens[i].text, strerror(-rc));
}

static int open_one(struct worker *w, const struct config *cfg, unsigned i)
{
	const struct cfg_addr *a = &cfg->listens[i];
	unsigned nth = 0;
	int fd;

	/* Inherited sockets first: their backlogs hold clients already. */
	while ((fd = take_inherited(w, a, nth++)) >= 0) {
		struct listener *ls = calloc(1, sizeof(*ls));
		if (!ls)
			return -ENOMEM;
		*ls = (struct listener){ .w = w, .fd = fd, .addr = *a, .next = w->listeners };
		ls->accept_op.on_complete = on_accept;
		timer_init(&ls->retry, on_retry);
		w->listeners = ls;
		apply_deferred(cfg, i, fd);
		if (w->serving)
			arm(ls);
	}
	if (nth > 1)
		return 0;

	struct listener *ls = calloc(1, sizeof(*ls));
	if (!ls)
		return -ENOMEM;
	fd = sock_listen((const struct sockaddr *)&a->ss, a->len, LISTEN_BACKLOG);
	if (fd < 0) {
		snprintf(w->start_msg, sizeof(w->start_msg), "listen on %s: %s", a->text,
			 strerror(-fd));
		free(ls);
		return fd;
	}
	*ls = (struct listener){ .w = w, .fd = fd, .addr = *a, .next = w->listeners };
	ls->accept_op.on_complete = on_accept;
	timer_init(&ls->retry, on_retry);
	w->listeners = ls;
	apply_deferred(cfg, i, fd);
	if (w->serving)
		arm(ls);
	return 0;
}

void accept_serve(struct worker *w)
{
	/* atomic: main waits for it before it says the gateway is ready
	 * (worker_wait_serving); the accepts below go out with this loop
	 * iteration's submit */
	__atomic_store_n(&w->serving, true, __ATOMIC_RELEASE);
	for (struct listener *ls = w->listeners; ls; ls = ls->next)
		if (!ls->dead && !ls->armed && !w->draining)
			arm(ls);
}

int accept_open(struct worker *w)
{
	for (unsigned i = 0; i < w->cfg->n_listens; i++) {
		int rc = open_one(w, w->cfg, i);
		if (rc < 0)
			return rc;
	}
	return 0;
}

static void close_one(struct worker *w, struct listener *ls, bool keep_socket)
{
	if (ls->dead)
		return;
	ls->dead = true;
	timer_disarm(&w->loop.timers, &ls->retry);
	if (ls->armed) {
		struct io_uring_sqe *sqe = loop_sqe(&w->loop);
		io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)&ls->accept_op, 0);
		io_uring_sqe_set_data(sqe, NULL);
	}
	/* shutdown() refuses new connects at once instead of leaving them in
	 * a backlog nobody serves — unless another process serves it now: then
	 * the socket stays open until our accept has ended, for sweep(). */
	if (keep_socket && ls->armed) {
		ls->sweep = true;
		return;
	}
	if (!keep_socket)
		shutdown(ls->fd, SHUT_RDWR);
	close(ls->fd);
	ls->fd = -1;
	if (!ls->armed) {
		unlink_listener(w, ls);
		free(ls);
	}
}

static bool cfg_has(const struct config *cfg, const struct cfg_addr *a)
{
	for (unsigned i = 0; i < cfg->n_listens; i++)
		if (cfg->listens[i].len == a->len && memcmp(&cfg->listens[i].ss, &a->ss, a->len) == 0)
			return true;
	return false;
}

int accept_update(struct worker *w, const struct config *ncfg)
{
	int rc = 0;

	for (unsigned i = 0; i < ncfg->n_listens; i++) {
		bool have = false;
		for (struct listener *ls = w->listeners; ls; ls = ls->next)
			if (!ls->dead && ls->addr.len == ncfg->listens[i].len &&
			    memcmp(&ls->addr.ss, &ncfg->listens[i].ss, ls->addr.len) == 0) {
				have = true;
				apply_deferred(ncfg, i, ls->fd);
			}
		if (!have && open_one(w, ncfg, i) < 0) {
			log_error("worker %u: %s", w->id, w->start_msg);
			rc = -1;
		}
	}
	for (struct listener *ls = w->listeners, *next; ls; ls = next) {
		next = ls->next;
		if (!ls->dead && !cfg_has(ncfg, &ls->addr))
			close_one(w, ls, false);
	}
	return rc;
}

void accept_close(struct worker *w, bool keep_sockets)
{
	for (struct listener *ls = w->listeners, *next; ls; ls = next) {
		next = ls->next;
		close_one(w, ls, keep_sockets);
	}
}

void accept_free(struct worker *w)
{
	while (w->listeners) {
		struct listener *ls = w->listeners;
		w->listeners = ls->next;
		timer_disarm(&w->loop.timers, &ls->retry);
		if (ls->fd >= 0)
			close(ls->fd);
		free(ls);
	}
}

unsigned accept_fds(struct worker *w, int *fds, unsigned max)
{
	unsigned n = 0;

	for (struct listener *ls = w->listeners; ls && n < max; ls = ls->next)
		if (!ls->dead && ls->fd >= 0)
			fds[n++] = ls->fd;
	return n;
}
