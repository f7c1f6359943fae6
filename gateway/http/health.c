#include "http/health.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sock.h"
#include "http/conn.h"
#include "http/upstream.h"
#include "http/worker.h"

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

struct probe;

/* The checker's state for one pool (owned by the checking worker). */
struct health_pool {
	struct worker *w;
	struct pool_shared *sh;
	struct timer tick;
	struct probe **probes; /* per endpoint: the probe in flight or NULL */
};

struct probe {
	struct conn conn;
	struct health_pool *hp; /* NULL once abandoned */
	unsigned ep;
	struct io_op connect_op;
	struct sockaddr_storage addr;
	socklen_t addr_len;
};

static const struct conn_ops probe_ops;

static void report(struct health_pool *hp, unsigned i, bool ok, const char *why)
{
	struct ep_shared *e = &hp->sh->eps[i];
	const struct cfg_health *hc = &hp->sh->cfg->health;
	struct worker *w = hp->w;

	if (ok) {
		e->hc_fail = 0;
		if (++e->hc_ok >= hc->rise && !LOAD(e->healthy)) {
			STORE(e->back_ms, clock_ms());
			__atomic_store_n(&e->healthy, 1, __ATOMIC_RELEASE);
			STAT_INC(w->stats.pool_health_changes);
			log_warn("pool %s: endpoint %s: health check passed %u times: up",
				 hp->sh->cfg->name, e->cfg->addr.text, e->hc_ok);
		}
		return;
	}
	e->hc_ok = 0;
	if (++e->hc_fail >= hc->fall && LOAD(e->healthy)) {
		__atomic_store_n(&e->healthy, 0, __ATOMIC_RELEASE);
		STAT_INC(w->stats.pool_health_changes);
		log_warn("pool %s: endpoint %s: health check failed %u times (%s): down",
			 hp->sh->cfg->name, e->cfg->addr.text, e->hc_fail, why);
	}
}

/* The probe has its verdict: record it and close. */
static void probe_end(struct probe *pr, bool ok, const char *why)
{
	struct health_pool *hp = pr->hp;

	if (hp) {
		hp->probes[pr->ep] = NULL;
		pr->hp = NULL;
		report(hp, pr->ep, ok, why);
	}
	conn_close(&pr->conn, !ok);
}

static void on_probe_connect(struct io_op *op, int res, unsigned flags)
{
	struct probe *pr = container_of(op, struct probe, connect_op);

	conn_put(&pr->conn);
	if (pr->conn.closing)
		return;
	if (res < 0) {
		probe_end(pr, false, res == -ECONNREFUSED ? "connection refused" : strerror(-res));
		return;
	}
	conn_start_recv(&pr->conn);
	conn_connected(&pr->conn);
}

static void probe_start(struct health_pool *hp, unsigned i)
{
	struct worker *w = hp->w;
	const struct cfg_health *hc = &hp->sh->cfg->health;
	const struct cfg_addr *a = &hp->sh->eps[i].cfg->addr;
	struct sockaddr_storage ss;
	socklen_t sl;

	pool_shared_addr(&hp->sh->eps[i], &ss, &sl);
	int fd = sock_stream_for((const struct sockaddr *)&ss);

	if (fd < 0) {
		report(hp, i, false, "socket");
		return;
	}
	struct probe *pr = calloc(1, sizeof(*pr));
	if (!pr) {
		close(fd);
		return;
	}
	conn_init(&pr->conn, w, fd, &probe_ops);
	pr->addr = ss;
	pr->addr_len = sl;
	pr->hp = hp;
	pr->ep = i;
	pr->connect_op.on_complete = on_probe_connect;
	pr->conn.connecting = true;
	/* a TLS pool is checked over TLS, like its requests */
	if (hp->sh->cfg->tls.ctx && conn_tls_client(&pr->conn, hp->sh->cfg->tls.ctx, a->text)) {
		pr->hp = NULL;
		conn_close(&pr->conn, false); /* freed by the reap step */
		report(hp, i, false, "TLS set-up failed");
		return;
	}
	hp->probes[i] = pr;
	struct io_uring_sqe *sqe = loop_sqe(&w->loop);
	io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&pr->addr, pr->addr_len);
	loop_sqe_set_op(sqe, &pr->connect_op);
	pr->conn.refs++;
	timer_arm(&w->loop.timers, &pr->conn.timer, w->loop.now + hc->timeout);
	char req[512];
	int n = snprintf(req, sizeof(req),
			 "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: reflex-health\r\n"
			 "Connection: close\r\n\r\n",
			 hc->method, hc->path, a->text);
	if (n > 0 && (size_t)n < sizeof(req))
		conn_write(&pr->conn, req, (size_t)n);
}

static void probe_on_recv(struct conn *cn, const char *data, size_t len)
{
	struct probe *pr = container_of(cn, struct probe, conn);
	struct worker *w = cn->w;

	if (!pr->hp)
		return;
	if (buf_append(&cn->in, data, len) != 0) {
		probe_end(pr, false, "out of memory");
		return;
	}
	for (;;) {
		struct http_response res = {.headers = w->hdrs, .max_headers = w->max_hdrs};
		struct http_error err;
		int n = http_parse_response(buf_head(&cn->in), cn->in.len, &res,
					    !strcmp(pr->hp->sh->cfg->health.method, "HEAD"),
					    &w->limits, &err);
		if (n == -2)
			return;
		if (n < 0) {
			probe_end(pr, false, "invalid response");
			return;
		}
		if (res.status >= 100 && res.status < 200) {
			buf_consume(&cn->in, (size_t)n);
			continue;
		}
		const struct cfg_health *hc = &pr->hp->sh->cfg->health;
		char why[64];
		snprintf(why, sizeof(why), "status %d", res.status);
		probe_end(pr, res.status >= hc->expect_lo && res.status <= hc->expect_hi, why);
		return;
	}
}

static void probe_on_eof(struct conn *cn, int err)
{
	struct probe *pr = container_of(cn, struct probe, conn);

	if (pr->hp)
		probe_end(pr, false, err == -ECONNRESET ? "reset" : "closed before answering");
	else
		conn_close(cn, false);
}

static void probe_on_sent(struct conn *cn)
{
}

static void probe_on_timeout(struct conn *cn)
{
	struct probe *pr = container_of(cn, struct probe, conn);

	if (pr->hp)
		probe_end(pr, false, "timed out");
	else
		conn_close(cn, true);
}

static void probe_on_destroy(struct conn *cn)
{
	free(container_of(cn, struct probe, conn));
}

static const struct conn_ops probe_ops = {
	.on_recv = probe_on_recv,
	.on_eof = probe_on_eof,
	.on_sent = probe_on_sent,
	.on_timeout = probe_on_timeout,
	.on_destroy = probe_on_destroy,
};

static void on_tick(struct timer *t)
{
	struct health_pool *hp = container_of(t, struct health_pool, tick);
	struct worker *w = hp->w;

	if (w->draining)
		return;
	for (unsigned i = 0; i < hp->sh->n_eps; i++)
		if (!hp->probes[i])
			probe_start(hp, i);
	timer_arm(&w->loop.timers, &hp->tick, w->loop.now + hp->sh->cfg->health.interval);
}

void health_start(struct worker *w, struct pool_state *pools, unsigned n)
{
	for (unsigned i = 0; pools && i < n; i++) {
		struct pool_shared *sh = pools[i].sh;
		int none = -1;

		pools[i].w = w;
		if (!sh || !sh->cfg->health.enabled || !sh->n_eps)
			continue;
		if (!__atomic_compare_exchange_n(&sh->checker, &none, (int)w->id, false,
						 __ATOMIC_ACQ_REL, __ATOMIC_RELAXED))
			continue;
		struct health_pool *hp = calloc(1, sizeof(*hp));
		if (hp)
			hp->probes = calloc(sh->n_eps, sizeof(*hp->probes));
		if (!hp || !hp->probes) {
			free(hp);
			__atomic_store_n(&sh->checker, -1, __ATOMIC_RELEASE);
			log_error("pool %s: out of memory: no health checks", sh->cfg->name);
			continue;
		}
		hp->w = w;
		hp->sh = sh;
		sh->health = hp;
		timer_init(&hp->tick, on_tick);
		/* first round at once: an endpoint that is down at start is found
		 * within fall × interval */
		timer_arm(&w->loop.timers, &hp->tick, w->loop.now);
	}
}

void health_stop(struct pool_state *pools, unsigned n)
{
	for (unsigned i = 0; pools && i < n; i++) {
		struct pool_shared *sh = pools[i].sh;
		struct health_pool *hp = sh ? sh->health : NULL;

		/* only the worker that runs them may stop them */
		if (!hp || !pools[i].w || hp->w != pools[i].w)
			continue;
		sh->health = NULL;
		timer_disarm(&hp->w->loop.timers, &hp->tick);
		for (unsigned k = 0; k < sh->n_eps; k++)
			if (hp->probes[k]) {
				hp->probes[k]->hp = NULL;
				conn_close(&hp->probes[k]->conn, true);
			}
		free(hp->probes);
		free(hp);
	}
}
