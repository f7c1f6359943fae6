#include "http/accept.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sock.h"
#include "http/req.h"
#include "http/worker.h"

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))
#define LISTEN_BACKLOG 4096

static void arm(struct listener *ls)
{
	struct io_uring_sqe *sqe = loop_sqe(&ls->w->loop);

	io_uring_prep_multishot_accept(sqe, ls->fd, NULL, NULL, SOCK_CLOEXEC);
	loop_sqe_set_op(sqe, &ls->accept_op);
	ls->armed = true;
}

static void on_accept(struct io_op *op, int res, unsigned flags)
{
	struct listener *ls = container_of(op, struct listener, accept_op);
	struct worker *w = ls->w;

	if (!(flags & IORING_CQE_F_MORE))
		ls->armed = false;
	if (res >= 0) {
		if (w->draining || ls->fd < 0) {
			close(res);
		} else {
			STAT_INC(w->stats.conn_accepted);
			client_new(w, res);
		}
	} else if (res != -ECANCELED) {
		/* EMFILE/ENFILE/ENOMEM: the connection stays in the backlog; try
		 * again on the next completion. Logged once per burst. */
		static __thread uint64_t last_log;
		if (w->loop.now - last_log > 1000) {
			last_log = w->loop.now;
			log_warn("accept on %s: %s", ls->addr->text, strerror(-res));
		}
	}
	if (!ls->armed && !w->draining && ls->fd >= 0)
		arm(ls);
}

int accept_open(struct worker *w)
{
	const struct config *cfg = w->cfg;

	w->listeners = calloc(cfg->n_listens, sizeof(*w->listeners));
	if (!w->listeners)
		return -ENOMEM;
	for (unsigned i = 0; i < cfg->n_listens; i++) {
		struct listener *ls = &w->listeners[i];
		const struct cfg_addr *a = &cfg->listens[i];
		ls->w = w;
		ls->addr = a;
		ls->accept_op.on_complete = on_accept;
		ls->fd = sock_listen((const struct sockaddr *)&a->ss, a->len, LISTEN_BACKLOG);
		if (ls->fd < 0) {
			int rc = ls->fd;
			snprintf(w->start_msg, sizeof(w->start_msg), "listen on %s: %s", a->text,
				 strerror(-rc));
			w->n_listeners = i;
			return rc;
		}
		w->n_listeners = i + 1;
		arm(ls);
	}
	return 0;
}

void accept_close(struct worker *w)
{
	for (unsigned i = 0; i < w->n_listeners; i++) {
		struct listener *ls = &w->listeners[i];
		if (ls->fd < 0)
			continue;
		if (ls->armed) {
			struct io_uring_sqe *sqe = loop_sqe(&w->loop);
			io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)&ls->accept_op, 0);
			io_uring_sqe_set_data(sqe, NULL);
		}
		/* shutdown wakes the pending accept and makes new connects fail
		 * fast instead of waiting in a backlog nobody serves */
		shutdown(ls->fd, SHUT_RDWR);
		close(ls->fd);
		ls->fd = -1;
	}
}
