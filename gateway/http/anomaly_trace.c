#include "http/anomaly_trace.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "core/log.h"
#include "core/timer.h"
#include "gateway.h"
#include "http/anomaly.h"
#include "http/limit_kernel.h"
#include "http/pool_hash.h"
#include "http/pool_shared.h"
#include "http/worker.h"
#include "userspace/trace.h"

#define MAX_TRACKED_EPS 256
#define MAX_CLIENTS 8192      /* client prefixes remembered between windows */
#define MAX_WINDOW_EVENTS 256 /* kernel events logged per window (one per subject and kind) */
#define MAX_STREAMS 16
#define TICK_MS 100
#define RETRANS_RING 64 /* ticks: the access log's trailing window is at most 6.4 s */

/* One upstream endpoint across windows. */
struct ep_track {
	uint64_t id; /* endpoint_state.id: hash of the address text */
	char name[ANOMALY_SUBJECT_MAX];
	struct sockaddr_storage ss;
	bool have_http, have_kern;
	struct anomaly_acc_totals http; /* totals at the end of the last window */
	struct tr_peer_stats kern;
	uint64_t ejected_until_ms; /* ours, 0 none: to log the readmission */
	/* an ejection refused for want of room (the last endpoint in rotation, max_ejected):
	 * retried each window while its series stays in alarm, so a lossy endpoint does not
	 * stay in rotation for the rest of its alarm once the others are back */
	bool eject_pending;
	struct anomaly_event pending;
	/* cumulative retransmits at the last RETRANS_RING ticks: the trailing-window count the
	 * access records carry */
	uint64_t rring[RETRANS_RING];
	unsigned rpos, rn;
	bool seen; /* in the current configuration */
};

struct client_track {
	struct tr_peer_key key;
	struct tr_peer_stats prev;
	bool used;
};

struct stream {
	int fd;
	uint64_t sent; /* last seq written */
	uint64_t last_write_ms;
};

static struct {
	struct gateway *g;
	struct trace *tr;
	char why_off[256];
	struct anomaly_detector *det;
	struct anomaly_log *log;
	pthread_t thread;
	bool running;
	pthread_mutex_t mu; /* stop flag, streams */
	pthread_cond_t cv;
	bool stop;

	struct ep_track eps[MAX_TRACKED_EPS];
	unsigned n_eps;
	struct client_track *clients; /* MAX_CLIENTS, open addressing */
	/* the snapshot the scope maps reflect, with a reference held (config_get) so that its
	 * listen ports can be withdrawn after a reload and its address is never reused */
	const struct config *synced;

	/* kernel events of the current window, to log one per subject and kind */
	struct {
		struct tr_peer_key key;
		uint32_t type;
	} win_ev[MAX_WINDOW_EVENTS];
	unsigned n_win_ev;

	uint64_t ovf_prev, drops_prev;
	bool have_ovf;

	struct stream streams[MAX_STREAMS];
	unsigned n_streams;

	/* /metrics (written by the thread, read by the admin thread: relaxed atomics) */
	uint64_t m_kernel[8];	   /* by TR_EV_* */
	uint64_t m_suppressed;	   /* kernel events beyond one per subject and kind per window */
	uint64_t m_lost, m_capped; /* from the program's counters */
	uint64_t m_overflows;	   /* ListenOverflows since start */
	uint64_t m_windows;
	uint64_t m_drops[TR_DROP_REASONS]; /* drops of our sockets' skbs by reason */
	uint64_t m_readmitted;
} at = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

#define MSTORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)
#define MLOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* ---- events out: log line, event log, streams ------------------------------------------ */

static void publish(struct anomaly_event *e)
{
	struct buf b = {0};

	anomaly_log_add(at.log, e);
	if (!anomaly_event_json(e, &b)) {
		buf_append(&b, "", 1);
		log_warn("anomaly %s", buf_head(&b));
	}
	buf_free(&b);
}

static void streams_flush(uint64_t now_ms)
{
	uint64_t last = anomaly_log_last(at.log);

	pthread_mutex_lock(&at.mu);
	for (unsigned i = 0; i < at.n_streams;) {
		struct stream *s = &at.streams[i];
		struct buf b = {0};
		bool dead = false;

		if (s->sent < last) {
			for (uint64_t q = s->sent + 1; q <= last; q++) {
				struct anomaly_event e;

				if (anomaly_log_get(at.log, q, &e))
					continue; /* already overwritten in the ring */
				buf_appendf(&b, "id: %llu\nevent: anomaly\ndata: ",
					    (unsigned long long)q);
				anomaly_event_json(&e, &b);
				buf_appends(&b, "\n\n");
			}
			s->sent = last;
		} else if (now_ms - s->last_write_ms >= 10000) {
			buf_appends(&b, ": keep-alive\n\n");
		}
		if (b.len) {
			ssize_t n = send(s->fd, buf_head(&b), b.len, MSG_NOSIGNAL | MSG_DONTWAIT);

			/* a subscriber that cannot take a few KiB at once is too slow: drop it */
			dead = n != (ssize_t)b.len;
			s->last_write_ms = now_ms;
		}
		buf_free(&b);
		if (dead) {
			close(s->fd);
			*s = at.streams[--at.n_streams];
			continue;
		}
		i++;
	}
	pthread_mutex_unlock(&at.mu);
}

/* ---- kernel events ------------------------------------------------------------------------ */

static bool first_in_window(const struct tr_peer_key *k, uint32_t type)
{
	for (unsigned i = 0; i < at.n_win_ev; i++)
		if (at.win_ev[i].type == type && !memcmp(&at.win_ev[i].key, k, sizeof(*k)))
			return false;
	if (at.n_win_ev == MAX_WINDOW_EVENTS)
		return false;
	at.win_ev[at.n_win_ev].key = *k;
	at.win_ev[at.n_win_ev].type = type;
	at.n_win_ev++;
	return true;
}

static void on_kernel_event(void *ctx, const struct tr_event *ev)
{
	struct anomaly_event e = {0};

	if (ev->type < 8)
		MSTORE(at.m_kernel[ev->type], at.m_kernel[ev->type] + 1);
	if (!first_in_window(&ev->key, ev->type)) {
		MSTORE(at.m_suppressed, at.m_suppressed + 1);
		return;
	}
	e.kind = ev->key.subject == TR_SUBJ_UPSTREAM ? ANOM_ENDPOINT : ANOM_CLIENT;
	trace_key_format(&ev->key, e.subject, sizeof(e.subject));
	e.source = "kernel";
	e.severity = ANOM_WARNING;
	switch (ev->type) {
	case TR_EV_RST_SENT:
		e.signal = ANOM_RESETS;
		e.observed = 1;
		e.ev.rst_sent = 1;
		snprintf(e.action, sizeof(e.action), "rst_sent");
		break;
	case TR_EV_RST_RECV:
		e.signal = ANOM_RESETS;
		e.observed = 1;
		e.ev.rst_recv = 1;
		snprintf(e.action, sizeof(e.action), "rst_recv");
		break;
	case TR_EV_SLOW_CONNECT:
		e.signal = ANOM_CONNECT_TIME;
		e.observed = ev->value;
		e.ev.connect_avg_us = ev->value;
		snprintf(e.action, sizeof(e.action), "slow_connect");
		break;
	case TR_EV_CONNECT_FAIL:
		e.signal = ANOM_CONNECT_TIME;
		e.ev.connect_fail = 1;
		snprintf(e.action, sizeof(e.action), "connect_fail");
		break;
	default:
		return;
	}
	publish(&e);
}

/* ---- listeners ---------------------------------------------------------------------------- */

static void poll_listeners(uint32_t window_ms)
{
	uint64_t ovf = 0, drops = 0;
	struct worker *ws = __atomic_load_n(&at.g->workers, __ATOMIC_ACQUIRE);
	bool named = false;

	if (trace_netstat_read(&ovf, &drops))
		return;
	if (!at.have_ovf) {
		at.ovf_prev = ovf;
		at.drops_prev = drops;
		at.have_ovf = true;
		return;
	}
	if (ovf == at.ovf_prev) {
		at.drops_prev = drops;
		return;
	}
	MSTORE(at.m_overflows, at.m_overflows + (ovf - at.ovf_prev));
	/* the counters are per network namespace: name the listeners whose accept queue is at
	 * its backlog now (TCP_INFO on worker 0's sockets; a racy read of its list, whose
	 * sockets live as long as the worker) */
	for (struct listener *l = ws ? ws[0].listeners : NULL; l; l = l->next) {
		uint32_t q = 0, backlog = 0;
		struct anomaly_event e = {0};
		struct tr_peer_key k = {.subject = 3, .port = (uint16_t)l->fd};

		if (l->dead || trace_listener_queue(l->fd, &q, &backlog) || q < backlog)
			continue;
		named = true;
		if (!first_in_window(&k, 100))
			continue;
		e.kind = ANOM_LISTENER;
		snprintf(e.subject, sizeof(e.subject), "%.63s", l->addr.text);
		e.signal = ANOM_LISTEN_OVERFLOW;
		e.observed = (double)(ovf - at.ovf_prev);
		e.severity = ANOM_CRITICAL;
		e.source = "kernel";
		e.ev.listen_overflows = ovf - at.ovf_prev;
		e.ev.listen_drops = drops - at.drops_prev;
		e.ev.window_ms = window_ms;
		snprintf(e.action, sizeof(e.action), "queue %u/%u", q, backlog);
		publish(&e);
	}
	if (!named) {
		struct tr_peer_key k = {.subject = 3};
		struct anomaly_event e = {0};

		if (first_in_window(&k, 101)) {
			e.kind = ANOM_LISTENER;
			snprintf(e.subject, sizeof(e.subject), "netns");
			e.signal = ANOM_LISTEN_OVERFLOW;
			e.observed = (double)(ovf - at.ovf_prev);
			e.severity = ANOM_WARNING;
			e.source = "kernel";
			e.ev.listen_overflows = ovf - at.ovf_prev;
			e.ev.listen_drops = drops - at.drops_prev;
			publish(&e);
		}
	}
	at.ovf_prev = ovf;
	at.drops_prev = drops;
}

/* ---- scope: the tracer follows the configuration ------------------------------------------ */

static struct ep_track *ep_find(uint64_t id)
{
	for (unsigned i = 0; i < at.n_eps; i++)
		if (at.eps[i].id == id)
			return &at.eps[i];
	return NULL;
}

static void sync_scope(const struct config *cfg)
{
	if (cfg == at.synced)
		return;
	for (unsigned i = 0; i < at.n_eps; i++)
		at.eps[i].seen = false;
	for (unsigned p = 0; p < cfg->n_pools; p++) {
		for (unsigned e = 0; e < cfg->pools[p].n_endpoints; e++) {
			const struct cfg_addr *a = &cfg->pools[p].endpoints[e].addr;
			uint64_t id = pool_hash_bytes(0, a->text, strlen(a->text));
			struct ep_track *t = ep_find(id);

			if (!t && at.n_eps < MAX_TRACKED_EPS) {
				t = &at.eps[at.n_eps++];
				memset(t, 0, sizeof(*t));
				t->id = id;
				snprintf(t->name, sizeof(t->name), "%s", a->text);
				memcpy(&t->ss, &a->ss, sizeof(t->ss));
			}
			if (!t)
				continue;
			t->seen = true;
			if (at.tr)
				trace_upstream_add(at.tr, (const struct sockaddr *)&a->ss);
		}
	}
	for (unsigned i = 0; i < at.n_eps;) { /* endpoints the new snapshot dropped */
		if (!at.eps[i].seen) {
			if (at.tr)
				trace_upstream_del(at.tr, (const struct sockaddr *)&at.eps[i].ss);
			at.eps[i] = at.eps[--at.n_eps];
			continue;
		}
		i++;
	}
	if (at.tr) {
		if (at.synced)
			for (unsigned i = 0; i < at.synced->n_listens; i++)
				trace_port_set(
					at.tr,
					ntohs(((const struct sockaddr_in *)&at.synced->listens[i]
						       .ss)
						      ->sin_port),
					false);
		for (unsigned i = 0; i < cfg->n_listens; i++)
			trace_port_set(
				at.tr,
				ntohs(((const struct sockaddr_in *)&cfg->listens[i].ss)->sin_port),
				true);
	}
	at.synced = cfg;
}

/* Every tick: publish each endpoint's retransmits over the trailing window (trace.window,
 * at most RETRANS_RING ticks), for the access records of the requests that end now. A
 * trailing window rather than the detector's current one: a request held up by
 * retransmission timeouts ends after the window in which its segments were resent. */
static void publish_retrans(uint32_t window_ms)
{
	unsigned span = window_ms / TICK_MS;

	if (span < 1)
		span = 1;
	if (span > RETRANS_RING - 1)
		span = RETRANS_RING - 1;
	for (unsigned i = 0; at.tr && i < at.n_eps; i++) {
		struct ep_track *t = &at.eps[i];
		struct tr_peer_key key;
		struct tr_peer_stats k;
		uint64_t old;

		if (trace_key_endpoint((const struct sockaddr *)&t->ss, &key) ||
		    trace_peer_get(at.tr, &key, &k))
			continue;
		t->rring[t->rpos] = k.retrans;
		t->rpos = (t->rpos + 1) % RETRANS_RING;
		if (t->rn < RETRANS_RING)
			t->rn++;
		old = t->rring[(t->rpos + RETRANS_RING - 1 -
				(t->rn - 1 < span ? t->rn - 1 : span)) %
			       RETRANS_RING];
		anomaly_acc_set_retrans(t->id, (uint32_t)(k.retrans - old));
	}
}

/* ---- actions ------------------------------------------------------------------------------ */

/* Take endpoint (pi, ei) of cfg out of rotation for cool_ms through the pool's own outlier
 * ejection state: never the last endpoint in rotation, never more than outlier.max_ejected
 * percent of the pool. 0, or -errno with the reason in why. */
static int eject(const struct config *cfg, unsigned pi, unsigned ei, uint64_t cool_ms, char *why,
		 size_t whylen)
{
	struct pool_shared_set *set = pool_shared_get(cfg);
	struct pool_shared *p;
	struct ep_shared *e;
	uint64_t now = clock_ms(), until;
	unsigned avail = 0, out = 0;
	int rc = 0;

	if (!set) {
		snprintf(why, whylen, "out of memory");
		return -ENOMEM;
	}
	p = &set->pools[pi];
	e = &p->eps[ei];
	for (unsigned i = 0; i < p->n_eps; i++) {
		avail += pool_shared_available(p, &p->eps[i], now);
		out += __atomic_load_n(&p->eps[i].ejected_until_ms, __ATOMIC_RELAXED) > now;
	}
	until = __atomic_load_n(&e->ejected_until_ms, __ATOMIC_RELAXED);
	if (until > now) {
		snprintf(why, whylen, "already ejected");
		rc = -EALREADY;
	} else if (avail <= 1) {
		snprintf(why, whylen, "not ejected: last endpoint in rotation");
		rc = -EBUSY;
	} else if ((uint64_t)(out + 1) * 100 >
		   (uint64_t)cfg->pools[pi].outlier.max_ejected * p->n_eps) {
		snprintf(why, whylen, "not ejected: max_ejected reached");
		rc = -EBUSY;
	} else if (!__atomic_compare_exchange_n(&e->ejected_until_ms, &until, now + cool_ms, false,
						__ATOMIC_ACQ_REL, __ATOMIC_RELAXED)) {
		snprintf(why, whylen, "already ejected");
		rc = -EALREADY;
	} else {
		__atomic_fetch_add(&e->n_ejections, 1, __ATOMIC_RELAXED);
		__atomic_store_n(&e->back_ms, now + cool_ms, __ATOMIC_RELAXED);
		snprintf(why, whylen, "ejected %llus", (unsigned long long)(cool_ms + 999) / 1000);
	}
	pool_shared_put(set);
	return rc;
}

static bool ejectable(enum anomaly_signal s)
{
	return s == ANOM_LATENCY_P99 || s == ANOM_ERROR_RATE || s == ANOM_RETRANS ||
	       s == ANOM_RESETS || s == ANOM_CONNECT_TIME;
}

/* A refused ejection of t, tried again while any of its ejectable signals is still in
 * alarm (an alarm fires once, at its edge; on a lossy endpoint with few requests a window
 * without a loss clears one series while another is still up); published as a new event when
 * it takes effect. */
static void retry_eject(const struct config *cfg, unsigned pi, unsigned ei, struct ep_track *t,
			const struct anomaly_evidence *ev)
{
	struct anomaly_event e = t->pending;
	bool alarm = false;
	char why[64];
	int rc;

	for (unsigned s = 0; s < ANOM_SIG_MAX && !alarm; s++)
		alarm = ejectable((enum anomaly_signal)s) &&
			anomaly_in_alarm(at.det, ANOM_ENDPOINT, t->name, (enum anomaly_signal)s);
	if (!alarm) {
		t->eject_pending = false;
		return;
	}
	rc = eject(cfg, pi, ei, cfg->trace.eject_time, why, sizeof(why));
	if (rc == -EBUSY)
		return;
	t->eject_pending = false;
	if (rc)
		return; /* ejected meanwhile by the pool's own outlier detection */
	t->ejected_until_ms = clock_ms() + cfg->trace.eject_time;
	anomaly_log_count_action(at.log, true);
	e.seq = 0;
	e.time_ms = 0;
	e.ev = *ev;
	snprintf(e.action, sizeof(e.action), "%.32s, deferred: still in alarm", why);
	publish(&e);
}

/* ---- windows ------------------------------------------------------------------------------ */

static void window_endpoints(const struct config *cfg, double dt, uint32_t window_ms)
{
	const struct cfg_trace *tc = &cfg->trace;

	for (unsigned p = 0; p < cfg->n_pools; p++) {
		for (unsigned ei = 0; ei < cfg->pools[p].n_endpoints; ei++) {
			const struct cfg_addr *a = &cfg->pools[p].endpoints[ei].addr;
			struct ep_track *t = ep_find(pool_hash_bytes(0, a->text, strlen(a->text)));
			struct anomaly_acc_totals http;
			struct tr_peer_stats k = {0};
			struct tr_peer_key key;
			struct anomaly_evidence ev = {.window_ms = window_ms};
			bool have_http, have_kern = false;
			uint64_t req = 0, err = 0, p99 = 0, connects = 0;
			struct {
				enum anomaly_signal sig;
				double v;
				uint64_t n;
			} vals[ANOM_SIG_MAX];
			unsigned nv = 0;

			if (!t)
				continue;
			have_http = !anomaly_acc_read(t->id, &http);
			if (at.tr && !trace_key_endpoint((const struct sockaddr *)&a->ss, &key))
				have_kern = !trace_peer_get(at.tr, &key, &k);
			if (have_http && t->have_http) {
				req = http.requests - t->http.requests;
				err = http.errors - t->http.errors;
				p99 = anomaly_lat_quantile(http.lat, t->http.lat, 0.99);
				ev.requests = req;
				ev.errors = err;
				ev.p99_us = (uint32_t)p99;
				vals[nv++] = (typeof(vals[0])){ANOM_LATENCY_P99, (double)p99, req};
				vals[nv++] = (typeof(vals[0])){ANOM_ERROR_RATE,
							       req ? (double)err / req : 0, req};
				vals[nv++] = (typeof(vals[0])){ANOM_REQUEST_RATE, req / dt, req};
			}
			if (have_kern && t->have_kern) {
				ev.retrans = k.retrans - t->kern.retrans;
				ev.rst_sent = k.rst_sent - t->kern.rst_sent;
				ev.rst_recv = k.rst_recv - t->kern.rst_recv;
				ev.conns = k.conns - t->kern.conns;
				ev.connect_fail = k.connect_fail - t->kern.connect_fail;
				ev.drops = k.drops - t->kern.drops;
				connects = k.connect_n - t->kern.connect_n;
				if (connects)
					ev.connect_avg_us =
						(k.connect_sum_us - t->kern.connect_sum_us) /
						connects;
				if (k.rtt_n > t->kern.rtt_n)
					ev.rtt_avg_us = (k.rtt_sum_us - t->kern.rtt_sum_us) /
							(k.rtt_n - t->kern.rtt_n);
				ev.rtt_max_us = k.rtt_max_us;
				vals[nv++] = (typeof(vals[0])){ANOM_RETRANS, ev.retrans / dt, 0};
				vals[nv++] = (typeof(vals[0])){ANOM_RESETS,
							       (ev.rst_sent + ev.rst_recv) / dt, 0};
				vals[nv++] = (typeof(vals[0])){ANOM_CONNECT_TIME,
							       (double)ev.connect_avg_us, connects};
			}
			if (have_http) {
				t->http = http;
				t->have_http = true;
			}
			if (have_kern) {
				t->kern = k;
				t->have_kern = true;
			}
			for (unsigned i = 0; i < nv; i++) {
				struct anomaly_event e;
				char why[64];

				if (anomaly_observe(at.det, ANOM_ENDPOINT, t->name, vals[i].sig,
						    vals[i].v, vals[i].n, &ev, &e) != 1)
					continue;
				if (tc->eject && ejectable(e.signal)) {
					int rc =
						eject(cfg, p, ei, tc->eject_time, why, sizeof(why));

					snprintf(e.action, sizeof(e.action), "%s", why);
					if (!rc) {
						t->ejected_until_ms = clock_ms() + tc->eject_time;
						anomaly_log_count_action(at.log, true);
					}
					t->eject_pending = rc == -EBUSY;
					if (rc == -EBUSY)
						t->pending = e;
				}
				publish(&e);
			}
			if (t->eject_pending && !t->ejected_until_ms)
				retry_eject(cfg, p, ei, t, &ev);
			if (t->ejected_until_ms && t->ejected_until_ms <= clock_ms()) {
				log_info("anomaly: endpoint %s back in rotation after its ejection",
					 t->name);
				MSTORE(at.m_readmitted, at.m_readmitted + 1);
				t->ejected_until_ms = 0;
			}
		}
	}
}

static uint32_t key_hash(const struct tr_peer_key *k)
{
	uint64_t h = pool_hash_bytes(0, k, sizeof(*k));

	return (uint32_t)h;
}

static struct client_track *client_find(const struct tr_peer_key *k, bool add)
{
	uint32_t i0 = key_hash(k) % MAX_CLIENTS;

	for (unsigned n = 0; n < 64; n++) { /* short probes: a full table forgets instead */
		struct client_track *c = &at.clients[(i0 + n) % MAX_CLIENTS];

		if (c->used && !memcmp(&c->key, k, sizeof(*k)))
			return c;
		if (!c->used) {
			if (!add)
				return NULL;
			c->used = true;
			c->key = *k;
			return c;
		}
	}
	return NULL;
}

struct walk_ctx {
	const struct config *cfg;
	double dt;
	uint32_t window_ms;
};

static int on_peer(void *ctx, const struct tr_peer_key *k, const struct tr_peer_stats *s)
{
	struct walk_ctx *w = ctx;
	const struct cfg_trace *tc = &w->cfg->trace;
	struct client_track *c;
	struct anomaly_evidence ev = {.window_ms = w->window_ms};
	char name[ANOMALY_SUBJECT_MAX];
	bool fresh;

	if (k->subject != TR_SUBJ_CLIENT)
		return 0;
	c = client_find(k, false);
	fresh = !c;
	if (!c && !(c = client_find(k, true)))
		return 0;
	if (fresh) {
		c->prev = *s;
		return 0;
	}
	ev.conns = s->conns - c->prev.conns;
	ev.retrans = s->retrans - c->prev.retrans;
	ev.rst_sent = s->rst_sent - c->prev.rst_sent;
	ev.rst_recv = s->rst_recv - c->prev.rst_recv;
	ev.drops = s->drops - c->prev.drops;
	if (s->rtt_n > c->prev.rtt_n)
		ev.rtt_avg_us = (s->rtt_sum_us - c->prev.rtt_sum_us) / (s->rtt_n - c->prev.rtt_n);
	ev.rtt_max_us = s->rtt_max_us;
	c->prev = *s;
	trace_key_format(k, name, sizeof(name));

	const struct {
		enum anomaly_signal sig;
		double v;
		uint64_t n;
	} vals[] = {
		{ANOM_RESETS, (ev.rst_sent + ev.rst_recv) / w->dt, 0},
		{ANOM_RETRANS, ev.retrans / w->dt, 0},
		{ANOM_REQUEST_RATE, ev.conns / w->dt, ev.conns},
	};
	for (unsigned i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		struct anomaly_event e;

		if (anomaly_observe(at.det, ANOM_CLIENT, name, vals[i].sig, vals[i].v, vals[i].n,
				    &ev, &e) != 1)
			continue;
		if (tc->penalty && (e.signal == ANOM_RESETS || e.signal == ANOM_REQUEST_RATE)) {
			char err[128];

			if (!limit_kernel_entry("penalty", true, name, tc->penalty_time, err,
						sizeof(err))) {
				snprintf(e.action, sizeof(e.action), "penalty %us",
					 (tc->penalty_time + 999) / 1000);
				anomaly_log_count_action(at.log, false);
			} else {
				snprintf(e.action, sizeof(e.action), "no penalty: %.50s", err);
			}
		}
		publish(&e);
	}
	return 0;
}

static void close_window(const struct config *cfg, double dt)
{
	struct anomaly_params p;
	struct tr_counters c;
	uint32_t window_ms = (uint32_t)(dt * 1000);

	anomaly_params_default(&p);
	p.sensitivity = cfg->trace.sensitivity;
	p.min_samples = cfg->trace.min_samples;
	p.min_requests = cfg->trace.min_requests;
	anomaly_set_params(at.det, &p);
	window_endpoints(cfg, dt, window_ms);
	if (at.tr) {
		struct walk_ctx w = {.cfg = cfg, .dt = dt, .window_ms = window_ms};

		trace_peers_walk(at.tr, on_peer, &w);
		uint64_t drops[TR_DROP_REASONS];

		if (!trace_drop_reasons_read(at.tr, drops, TR_DROP_REASONS))
			for (unsigned r = 0; r < TR_DROP_REASONS; r++)
				MSTORE(at.m_drops[r], drops[r]);
		if (!trace_counters_read(at.tr, &c)) {
			MSTORE(at.m_lost, c.events_lost);
			MSTORE(at.m_capped, c.events_capped);
		}
	}
	at.n_win_ev = 0;
	MSTORE(at.m_windows, at.m_windows + 1);
}

static bool should_stop(int wait_ms)
{
	struct timespec ts;
	bool stop;

	pthread_mutex_lock(&at.mu);
	if (wait_ms > 0 && !at.stop) {
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += (long)wait_ms * 1000000;
		ts.tv_sec += ts.tv_nsec / 1000000000;
		ts.tv_nsec %= 1000000000;
		pthread_cond_timedwait(&at.cv, &at.mu, &ts);
	}
	stop = at.stop;
	pthread_mutex_unlock(&at.mu);
	return stop;
}

static void *run(void *arg)
{
	uint64_t last_window = clock_ms(), last_listen = last_window;

	/* below the workers: the detector may lag, the requests must not */
	setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
	for (;;) {
		const struct config *cfg;
		uint64_t now;

		if (at.tr) {
			trace_events_poll(at.tr, TICK_MS);
			if (should_stop(0))
				break;
		} else if (should_stop(TICK_MS)) {
			break;
		}
		now = clock_ms();
		cfg = at.g->config_get(at.g);
		if (cfg != at.synced) { /* a reload: keep this reference, give the old one back */
			const struct config *old = at.synced;

			sync_scope(cfg);
			at.g->config_put(at.g, old);
		} else {
			at.g->config_put(at.g, cfg); /* at.synced's reference keeps it alive */
		}
		if (now - last_listen >= 1000) {
			if (at.tr) /* RTT of live connections (nothing per packet in the kernel) */
				trace_rtt_poll(at.tr);
			poll_listeners(cfg->trace.window);
			last_listen = now;
		}
		if (now - last_window >= cfg->trace.window) {
			close_window(cfg, (double)(now - last_window) / 1000.0);
			last_window = now;
		}
		publish_retrans(cfg->trace.window);
		streams_flush(now);
	}
	return NULL;
}

/* ---- /metrics ------------------------------------------------------------------------------ */

static int metrics(struct buf *b)
{
	struct anomaly_counts c;
	int rc = 0;

	anomaly_log_counts(at.log, &c);
	rc |= buf_appends(b,
			  "# HELP reflex_anomaly_events_total Anomalies and kernel events logged "
			  "(docs/anomaly.md), by signal and severity.\n"
			  "# TYPE reflex_anomaly_events_total counter\n");
	for (unsigned s = 0; s < ANOM_SIG_MAX; s++)
		for (unsigned v = 0; v < ANOM_SEV_MAX; v++)
			rc |= buf_appendf(
				b,
				"reflex_anomaly_events_total{signal=\"%s\",severity=\"%s\"} "
				"%llu\n",
				anomaly_signal_name(s), anomaly_severity_name(v),
				(unsigned long long)c.events[s][v]);
	rc |= buf_appendf(b,
			  "# HELP reflex_anomaly_actions_total Actions taken on anomalies.\n"
			  "# TYPE reflex_anomaly_actions_total counter\n"
			  "reflex_anomaly_actions_total{action=\"eject\"} %llu\n"
			  "reflex_anomaly_actions_total{action=\"penalty\"} %llu\n"
			  "reflex_anomaly_actions_total{action=\"readmit\"} %llu\n",
			  (unsigned long long)c.ejections, (unsigned long long)c.penalties,
			  (unsigned long long)MLOAD(at.m_readmitted));
	rc |= buf_appendf(
		b,
		"# HELP reflex_trace_enabled 1 when the eBPF tracer is attached.\n"
		"# TYPE reflex_trace_enabled gauge\n"
		"reflex_trace_enabled %d\n"
		"# HELP reflex_trace_kernel_events_total Kernel events received, by type.\n"
		"# TYPE reflex_trace_kernel_events_total counter\n",
		at.tr ? 1 : 0);
	for (uint32_t t = TR_EV_RST_SENT; t <= TR_EV_CONNECT_FAIL; t++)
		rc |= buf_appendf(b, "reflex_trace_kernel_events_total{type=\"%s\"} %llu\n",
				  trace_event_name(t), (unsigned long long)MLOAD(at.m_kernel[t]));
	rc |= buf_appendf(
		b,
		"# HELP reflex_trace_events_lost_total Kernel events lost: ring buffer full.\n"
		"# TYPE reflex_trace_events_lost_total counter\n"
		"reflex_trace_events_lost_total %llu\n"
		"# HELP reflex_trace_events_capped_total Kernel events not sent: over "
		"trace.events_per_sec.\n"
		"# TYPE reflex_trace_events_capped_total counter\n"
		"reflex_trace_events_capped_total %llu\n"
		"# HELP reflex_trace_events_suppressed_total Kernel events not logged: one per "
		"subject and kind per window.\n"
		"# TYPE reflex_trace_events_suppressed_total counter\n"
		"reflex_trace_events_suppressed_total %llu\n"
		"# HELP reflex_trace_listen_overflows_total ListenOverflows seen since start.\n"
		"# TYPE reflex_trace_listen_overflows_total counter\n"
		"reflex_trace_listen_overflows_total %llu\n"
		"# HELP reflex_anomaly_windows_total Detector windows closed.\n"
		"# TYPE reflex_anomaly_windows_total counter\n"
		"reflex_anomaly_windows_total %llu\n",
		(unsigned long long)MLOAD(at.m_lost), (unsigned long long)MLOAD(at.m_capped),
		(unsigned long long)MLOAD(at.m_suppressed),
		(unsigned long long)MLOAD(at.m_overflows), (unsigned long long)MLOAD(at.m_windows));
	rc |= buf_appends(b, "# HELP reflex_trace_drops_total Packets of the gateway's TCP sockets "
			     "dropped by the kernel, by drop reason.\n"
			     "# TYPE reflex_trace_drops_total counter\n");
	for (unsigned r = 0; r < TR_DROP_REASONS; r++) {
		uint64_t n = MLOAD(at.m_drops[r]);
		const char *name = at.tr ? trace_drop_reason_name(at.tr, r) : NULL;

		if (n)
			rc |= name ? buf_appendf(b,
						 "reflex_trace_drops_total{reason=\"%s\"} %llu\n",
						 name, (unsigned long long)n)
				   : buf_appendf(b,
						 "reflex_trace_drops_total{reason=\"%u\"} %llu\n",
						 r, (unsigned long long)n);
	}
	return rc ? -ENOMEM : 0;
}

/* ---- admin: GET /events ------------------------------------------------------------------ */

static uint64_t query_u64(const struct http_str *q, const char *name, uint64_t dflt)
{
	size_t nl = strlen(name);

	for (size_t i = 0; q->p && i + nl < q->len; i++) {
		if ((i == 0 || q->p[i - 1] == '&') && !memcmp(q->p + i, name, nl) &&
		    q->p[i + nl] == '=')
			return strtoull(q->p + i + nl + 1, NULL, 10);
	}
	return dflt;
}

static int h_events(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	uint64_t since = query_u64(&req->query, "since", 0);
	bool stream = query_u64(&req->query, "stream", 0) != 0;
	const struct http_header *acc = http_find_header(req->headers, req->n_headers, "Accept");

	if (acc && acc->value.len >= 17 &&
	    memmem(acc->value.p, acc->value.len, "text/event-stream", 17))
		stream = true;
	if (!at.log) {
		resp->status = 404;
		return buf_appends(&resp->body, "{\"error\":\"trace is not enabled\"}") ? -1 : 0;
	}
	if (!stream) {
		resp->status = 200;
		return anomaly_log_json(at.log, since, 0, &resp->body) ? -1 : 0;
	}
	static const char head[] = "HTTP/1.1 200 OK\r\n"
				   "Content-Type: text/event-stream\r\n"
				   "Cache-Control: no-cache\r\n"
				   "Connection: close\r\n\r\n"
				   ": reflex events\n\n";
	pthread_mutex_lock(&at.mu);
	if (at.n_streams == MAX_STREAMS || at.stop) {
		pthread_mutex_unlock(&at.mu);
		resp->status = 503;
		return buf_appends(&resp->body, "{\"error\":\"too many event streams\"}") ? -1 : 0;
	}
	if (send(req->fd, head, sizeof(head) - 1, MSG_NOSIGNAL | MSG_DONTWAIT) !=
	    (ssize_t)sizeof(head) - 1) {
		pthread_mutex_unlock(&at.mu);
		return -1;
	}
	/* the thread sends what came after `since` (default: only new events) */
	at.streams[at.n_streams++] = (struct stream){
		.fd = req->fd,
		.sent = query_u64(&req->query, "since", anomaly_log_last(at.log)),
		.last_write_ms = clock_ms(),
	};
	pthread_mutex_unlock(&at.mu);
	resp->takeover = true;
	return 0;
}

void anomaly_trace_register_admin(void)
{
	admin_register("GET", "/events", false, h_events);
}

/* ---- start / stop ------------------------------------------------------------------------ */

int anomaly_trace_start(struct gateway *g)
{
	const struct config *cfg = g->cfg;
	const struct cfg_trace *tc = &cfg->trace;
	struct anomaly_params p;

	if (!tc->enabled)
		return 0;
	at.g = g;
	anomaly_params_default(&p);
	p.sensitivity = tc->sensitivity;
	p.min_samples = tc->min_samples;
	p.min_requests = tc->min_requests;
	at.det = anomaly_new(&p, 1024);
	at.log = anomaly_log_new(tc->events_kept);
	at.clients = calloc(MAX_CLIENTS, sizeof(*at.clients));
	if (!at.det || !at.log || !at.clients || anomaly_acc_init(cfg->workers)) {
		log_error("trace: out of memory; anomaly detection is off");
		goto fail;
	}

	struct trace_open_opts o = {
		.slow_connect_ns = (uint64_t)tc->slow_connect * 1000000,
		.events_per_sec = tc->events_per_sec,
		.v4_plen = (uint8_t)tc->prefix_v4,
		.v6_plen = (uint8_t)tc->prefix_v6,
	};
	/* the penalty box is keyed by the kernel limiter's buckets: boxing a /24 when the limiter
	 * buckets /32 would box one address, so with trace.penalty the client prefixes are the
	 * limiter's */
	if (tc->penalty && (cfg->ratelimit.kernel.prefix_v4 != tc->prefix_v4 ||
			    cfg->ratelimit.kernel.prefix_v6 != tc->prefix_v6)) {
		o.v4_plen = (uint8_t)cfg->ratelimit.kernel.prefix_v4;
		o.v6_plen = (uint8_t)cfg->ratelimit.kernel.prefix_v6;
		log_info("trace: client prefixes /%u and /%u (ratelimit.kernel's buckets, for the "
			 "penalty box)",
			 o.v4_plen, o.v6_plen);
	}
	int err = trace_open(&at.tr, &o, at.why_off, sizeof(at.why_off));

	if (err) {
		log_warn("trace: eBPF tracing off (%s); the anomaly detector watches HTTP signals "
			 "only",
			 at.why_off);
		at.tr = NULL;
	} else {
		trace_events_start(at.tr, on_kernel_event, NULL);
		log_info("trace: eBPF tracing on%s%s", trace_missing(at.tr)[0] ? "; missing: " : "",
			 trace_missing(at.tr));
	}
	/* before the first request, so every upstream connect is in scope; the reference is
	 * at.synced's (given back by the thread after a reload, or by anomaly_trace_stop) */
	sync_scope(g->config_get(g));
	__atomic_store_n(&anomaly_metrics_hook, metrics, __ATOMIC_RELEASE);
	if (pthread_create(&at.thread, NULL, run, NULL)) {
		log_error("trace: cannot start its thread; anomaly detection is off");
		__atomic_store_n(&anomaly_metrics_hook, NULL, __ATOMIC_RELEASE);
		goto fail;
	}
	at.running = true;
	return 0;
fail:
	if (at.synced)
		g->config_put(g, at.synced);
	at.synced = NULL;
	trace_close(at.tr);
	at.tr = NULL;
	anomaly_free(at.det);
	at.det = NULL;
	anomaly_log_free(at.log);
	at.log = NULL;
	free(at.clients);
	at.clients = NULL;
	return 0;
}

void anomaly_trace_stop(void)
{
	if (!at.running)
		return;
	pthread_mutex_lock(&at.mu);
	at.stop = true;
	pthread_cond_broadcast(&at.cv);
	pthread_mutex_unlock(&at.mu);
	pthread_join(at.thread, NULL);
	at.running = false;
	for (unsigned i = 0; i < at.n_streams; i++)
		close(at.streams[i].fd);
	at.n_streams = 0;
	__atomic_store_n(&anomaly_metrics_hook, NULL, __ATOMIC_RELEASE);
	trace_close(at.tr);
	at.tr = NULL;
	at.g->config_put(at.g, at.synced);
	at.synced = NULL;
	/* the log stays: the admin thread may still answer GET /events */
}
