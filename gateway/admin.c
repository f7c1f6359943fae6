/* admin.c — the admin API server (see admin.h, docs/admin.md).
 *
 * One thread, one poll() loop over the listener, a stop eventfd and up to
 * ADMIN_MAX_CONNS connections. Blocking work is fine here (it is never a
 * worker), but sockets are non-blocking so one slow client cannot stall the
 * others. Every client-controlled size has a small limit of its own (head,
 * body, connections, idle time), so the admin port cannot be used to
 * exhaust the gateway.
 *
 * Worker state: stats blocks are read directly with relaxed atomics
 * (stats.h); pool endpoint states and listener lists are copied by each
 * worker on its own thread on request (worker_post, see "worker views").
 */
#include "admin.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "core/audit.h"
#include "core/jsonw.h"
#include "core/log.h"
#include "core/stats.h"
#include "core/topk.h"
#include "gateway.h"
#include "http/anomaly.h"
#include "http/cache.h"
#include "http/cache_redis.h"
#include "http/cache_store.h"
#include "http/reflex.h"
#include "http/upstream.h"
#include "http/limit.h"
#include "http/respond.h"
#include "http/worker.h"

#define ADMIN_MAX_CONNS 64
#define ADMIN_HEAD_MAX (8u << 10)
#define ADMIN_BODY_MAX (1u << 20)
#define ADMIN_MAX_HEADERS 64
#define ADMIN_TIMEOUT_MS 10000
#define ADMIN_OUT_HIGH (1u << 20) /* stop reading a client that does not read */
#define ADMIN_MAX_ROUTES 64
#define ADMIN_MAX_TOKENS 64
#define ADMIN_RETRY_MS 500

/* ---- route table -------------------------------------------------------- */

struct admin_route {
	char method[16];
	char path[128];
	bool prefix; /* registered with a trailing '*' */
	bool mutation;
	admin_handler *h;
};

/* Filled before admin_start (single-threaded start-up), read-only after. */
static struct admin_route routes[ADMIN_MAX_ROUTES];
static unsigned n_routes;

int admin_register(const char *method, const char *path, bool mutation, admin_handler *h)
{
	struct admin_route *r;
	size_t plen = strlen(path);

	if (n_routes >= ADMIN_MAX_ROUTES)
		return -ENOSPC;
	if (strlen(method) >= sizeof(r->method) || plen >= sizeof(r->path) || !plen || !h)
		return -EINVAL;
	for (unsigned i = 0; i < n_routes; i++)
		if (!strcmp(routes[i].method, method) && !strcmp(routes[i].path, path))
			return -EEXIST;
	r = &routes[n_routes++];
	strcpy(r->method, method);
	strcpy(r->path, path);
	r->prefix = path[plen - 1] == '*';
	if (r->prefix)
		r->path[plen - 1] = 0;
	r->mutation = mutation;
	r->h = h;
	return 0;
}

/* ---- state -------------------------------------------------------------- */

struct token {
	char name[64];
	char *secret;
	size_t len;
};

struct aconn {
	int fd; /* -1: free slot */
	struct buf in, out;
	int64_t deadline_ms;
	/* The request whose first bytes are in `in` must be complete by then
	 * (0: none started). deadline_ms moves with every byte, so without it
	 * a client sending one byte every few seconds holds its slot forever,
	 * and ADMIN_MAX_CONNS such clients lock out /healthz. */
	int64_t request_deadline_ms;
	bool close_after_write;
	bool sent_continue;
	bool peer_gone;
};

struct admin {
	struct gateway *g;
	int lfd, stop_fd;
	pthread_t thread;
	struct aconn conns[ADMIN_MAX_CONNS];
	unsigned n_conns;

	/* tokens and audit follow the configuration (re-read after a reload) */
	const struct config *seen_cfg;
	struct token tokens[ADMIN_MAX_TOKENS];
	unsigned n_tokens;
	char token_file[4096];
	struct audit *audit;
	char audit_path[4096];

	char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	dev_t unix_dev;
	ino_t unix_ino;
	char listen_text[300];
	/* where to listen; while the address is in use (another gateway, or the
	 * old process of an upgrade that has not let go yet) the thread retries */
	struct cfg_admin listen_cfg;
	int64_t next_bind_ms;

	/* counters of the admin API itself (admin thread only) */
	uint64_t requests, unauthorized, evicted;
};

/* The one admin server: handlers reach the token and audit state here. */
static struct admin *the_admin;

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- tokens ------------------------------------------------------------- */

static void tokens_clear(struct token *t, unsigned *n)
{
	for (unsigned i = 0; i < *n; i++) {
		if (t[i].secret) {
			/* do not leave secrets lying around in freed memory */
			volatile char *p = t[i].secret;
			for (size_t k = 0; k < t[i].len; k++)
				p[k] = 0;
			free(t[i].secret);
		}
	}
	memset(t, 0, sizeof(*t) * *n);
	*n = 0;
}

/* "NAME SECRET" per line, '#' comments, blank lines ignored. */
static int tokens_load(const char *path, struct token *t, unsigned *n, char *err, size_t errlen)
{
	char line[1024];
	unsigned lineno = 0;
	struct stat st;
	FILE *f;

	*n = 0;
	/* O_NONBLOCK: a FIFO must not block the admin thread or a reload */
	int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	const char *why = NULL;

	if (fd < 0 || fstat(fd, &st))
		why = strerror(errno);
	else if (!S_ISREG(st.st_mode))
		why = "not a regular file";
	else if (!(f = fdopen(fd, "r")))
		why = strerror(errno);
	if (why) {
		snprintf(err, errlen, "token file %s: %s", path, why);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	if (st.st_mode & 0077)
		log_warn("admin: token file %s is readable by group or others (chmod 600)", path);
	while (fgets(line, sizeof(line), f)) {
		char *p = line, *name, *secret, *rest;

		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			snprintf(err, errlen, "%s:%u: line too long", path, lineno);
			goto fail;
		}
		while (isspace((unsigned char)*p))
			p++;
		if (!*p || *p == '#')
			continue;
		name = strtok_r(p, " \t\r\n", &rest);
		secret = strtok_r(NULL, " \t\r\n", &rest);
		if (!secret || strtok_r(NULL, " \t\r\n", &rest)) {
			snprintf(err, errlen, "%s:%u: expected \"NAME SECRET\"", path, lineno);
			goto fail;
		}
		if (strlen(name) >= sizeof(t->name)) {
			snprintf(err, errlen, "%s:%u: token name too long", path, lineno);
			goto fail;
		}
		for (const char *c = name; *c; c++) {
			if (!isalnum((unsigned char)*c) && !strchr("_-.@", *c)) {
				snprintf(err, errlen,
					 "%s:%u: token name may use A-Z a-z 0-9 _ - . @ only", path,
					 lineno);
				goto fail;
			}
		}
		if (*n >= ADMIN_MAX_TOKENS) {
			snprintf(err, errlen, "%s:%u: more than %d tokens", path, lineno,
				 ADMIN_MAX_TOKENS);
			goto fail;
		}
		if (strlen(secret) < 16)
			log_warn("admin: %s:%u: token \"%s\" is shorter than 16 characters", path,
				 lineno, name);
		strcpy(t[*n].name, name);
		t[*n].len = strlen(secret);
		t[*n].secret = strdup(secret);
		if (!t[*n].secret) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		(*n)++;
	}
	memset(line, 0, sizeof(line));
	fclose(f);
	if (!*n)
		log_warn("admin: token file %s holds no token: every mutation is refused (401)",
			 path);
	return 0;
fail:
	memset(line, 0, sizeof(line));
	fclose(f);
	tokens_clear(t, n);
	return -1;
}

/* Compares every byte of the secret whatever the input: the time depends on
 * the secret's length only. */
static bool ct_equal(const char *given, size_t glen, const char *secret, size_t slen)
{
	unsigned char d = glen != slen;

	for (size_t i = 0; i < slen; i++)
		d |= (unsigned char)((i < glen ? given[i] : 0) ^ secret[i]);
	return d == 0;
}

/* The token's name for a valid "Authorization: Bearer T", else NULL. */
static const char *authenticate(struct admin *a, const struct http_request *req)
{
	const struct http_header *h =
		http_find_header(req->headers, req->n_headers, "Authorization");
	const char *who = NULL;

	if (!h || h->value.len < 7 || strncasecmp(h->value.p, "Bearer ", 7))
		return NULL;
	const char *tok = h->value.p + 7;
	size_t len = h->value.len - 7;
	while (len && *tok == ' ')
		tok++, len--;
	/* every token is compared: which one matched must not show in the time */
	for (unsigned i = 0; i < a->n_tokens; i++)
		if (ct_equal(tok, len, a->tokens[i].secret, a->tokens[i].len) && !who)
			who = a->tokens[i].name;
	return who;
}

/* Apply the admin settings of a new snapshot (token file, audit log). The
 * listen address needs a restart. */
static void sync_config(struct admin *a, const struct config *cfg)
{
	char err[512];

	if (cfg == a->seen_cfg)
		return;
	a->seen_cfg = cfg;
	if (strcmp(cfg->admin.listen.text, a->listen_text) &&
	    (cfg->admin.enabled || a->listen_text[0]))
		log_warn("admin: listen address %s → %s takes effect at the next restart",
			 a->listen_text, cfg->admin.enabled ? cfg->admin.listen.text : "off");
	/* re-read the token file on every reload: that is how tokens rotate */
	if (cfg->admin.token_file[0]) {
		struct token fresh[ADMIN_MAX_TOKENS];
		unsigned n = 0;

		memset(fresh, 0, sizeof(fresh));
		if (tokens_load(cfg->admin.token_file, fresh, &n, err, sizeof(err))) {
			log_error("admin: %s; keeping the previous tokens", err);
		} else {
			tokens_clear(a->tokens, &a->n_tokens);
			memcpy(a->tokens, fresh, sizeof(fresh));
			a->n_tokens = n;
			snprintf(a->token_file, sizeof(a->token_file), "%s", cfg->admin.token_file);
		}
	} else if (a->n_tokens || a->token_file[0]) {
		tokens_clear(a->tokens, &a->n_tokens);
		a->token_file[0] = 0;
		log_warn("admin: no token_file: every mutation is refused (401)");
	}
	if (strcmp(cfg->admin.audit_log, a->audit_path)) {
		struct audit *na = NULL;

		if (cfg->admin.audit_log[0]) {
			na = audit_open(cfg->admin.audit_log, err, sizeof(err));
			if (!na) {
				log_error("admin: %s; keeping the previous audit log", err);
				return;
			}
		}
		audit_close(a->audit);
		a->audit = na;
		snprintf(a->audit_path, sizeof(a->audit_path), "%s", cfg->admin.audit_log);
	}
}

/* ---- worker views --------------------------------------------------------
 *
 * Pool endpoint states and listener lists belong to the worker and change
 * shape on a reload (a generation's pools are freed when its last request
 * ends), so the admin thread never walks them itself: it posts a task to
 * each worker (worker_post), the worker copies what the admin needs into
 * the task on its own thread, and the admin waits for the copies (bounded:
 * a worker that does not answer in VIEW_WAIT_MS is reported as such). The
 * task is reference counted, so an answer that comes after the admin gave
 * up is freed by the worker. Stats blocks are different: they are read
 * directly with relaxed atomics (core/stats.h).
 */

#define VIEW_WAIT_MS 1000

struct ep_snap {
	char pool[CFG_NAME_MAX];
	char address[CFG_HOST_MAX + 8];
	unsigned inflight, fails;
	uint64_t requests;
	struct pool_ep_report rep; /* pool resilience state (rep.breaker points to a literal) */
};

struct worker_view {
	struct worker_task task; /* first: the worker hands this back */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int refs; /* the admin's and the worker's */
	bool done;
	/* filled by the worker */
	bool draining, serving;
	unsigned live_listeners, want_listeners;
	struct ep_snap *eps;
	unsigned n_eps;
};

struct views {
	unsigned n;
	struct worker_view **v; /* NULL entries: no answer */
};

static void view_put(struct worker_view *v)
{
	if (__atomic_sub_fetch(&v->refs, 1, __ATOMIC_ACQ_REL))
		return;
	pthread_mutex_destroy(&v->mu);
	pthread_cond_destroy(&v->cv);
	free(v->eps);
	free(v);
}

/* Runs on the worker's thread. */
static void on_view_task(struct worker *w, struct worker_task *t)
{
	struct worker_view *v = (struct worker_view *)t;
	struct wgen *gen = w->gen;
	unsigned n = 0;

	v->draining = w->draining;
	v->serving = __atomic_load_n(&w->serving, __ATOMIC_ACQUIRE);
	v->want_listeners = w->cfg ? w->cfg->n_listens : 0;
	for (struct listener *ls = w->listeners; ls; ls = ls->next)
		if (!ls->dead && ls->fd >= 0)
			v->live_listeners++;
	for (unsigned i = 0; gen && gen->pools && i < gen->n_pools; i++)
		n += gen->pools[i].n_eps;
	if (n)
		v->eps = calloc(n, sizeof(*v->eps));
	for (unsigned i = 0; v->eps && i < gen->n_pools; i++) {
		const struct pool_state *ps = &gen->pools[i];

		for (unsigned k = 0; k < ps->n_eps; k++) {
			const struct endpoint_state *es = &ps->eps[k];
			struct ep_snap *e = &v->eps[v->n_eps++];

			snprintf(e->pool, sizeof(e->pool), "%s", ps->cfg ? ps->cfg->name : "");
			snprintf(e->address, sizeof(e->address), "%s",
				 es->cfg ? es->cfg->addr.text : "");
			e->inflight = es->inflight;
			e->fails = es->fails;
			e->requests = es->requests;
			pool_endpoint_report(ps, es, w->loop.now, &e->rep);
		}
	}
	pthread_mutex_lock(&v->mu);
	v->done = true;
	pthread_cond_signal(&v->cv);
	pthread_mutex_unlock(&v->mu);
	view_put(v);
}

static void views_free(struct views *vs)
{
	for (unsigned i = 0; i < vs->n; i++)
		if (vs->v[i])
			view_put(vs->v[i]);
	free(vs->v);
	vs->v = NULL;
	vs->n = 0;
}

/* Ask every worker for its view and wait (bounded) for the answers. */
static int views_take(struct gateway *g, struct views *vs)
{
	struct timespec deadline;

	vs->n = g->workers ? g->n_workers : 0;
	vs->v = calloc(vs->n ? vs->n : 1, sizeof(*vs->v));
	if (!vs->v) {
		vs->n = 0;
		return -ENOMEM;
	}
	for (unsigned i = 0; i < vs->n; i++) {
		struct worker_view *v = calloc(1, sizeof(*v));

		if (!v)
			continue;
		pthread_mutex_init(&v->mu, NULL);
		pthread_cond_init(&v->cv, NULL);
		v->refs = 2;
		v->task.fn = on_view_task;
		vs->v[i] = v;
		worker_post(&g->workers[i], &v->task);
	}
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += VIEW_WAIT_MS / 1000;
	for (unsigned i = 0; i < vs->n; i++) {
		struct worker_view *v = vs->v[i];
		bool done;

		if (!v)
			continue;
		pthread_mutex_lock(&v->mu);
		while (!v->done && pthread_cond_timedwait(&v->cv, &v->mu, &deadline) == 0)
			;
		done = v->done;
		pthread_mutex_unlock(&v->mu);
		if (!done) {
			/* the worker still holds its reference and frees it later */
			view_put(v);
			vs->v[i] = NULL;
		}
	}
	return 0;
}

struct ep_view {
	const char *address;
	unsigned weight;
	uint64_t inflight, requests;
	unsigned fails;		   /* smallest over the workers that know the endpoint */
	uint32_t ewma_us;	   /* largest over the workers */
	struct pool_ep_report rep; /* shared state, from the first worker that knows it */
	bool seen;
};

/* "up" when it takes traffic and its last exchange succeeded somewhere;
 * otherwise why not. */
static const char *ep_state(const struct ep_view *e)
{
	if (!e->rep.healthy)
		return "unhealthy";
	if (e->rep.ejected)
		return "ejected";
	if (!strcmp(e->rep.breaker, "open"))
		return "breaker_open";
	if (!e->rep.available)
		return "unavailable";
	return e->fails ? "failing" : "up";
}

/* One configured pool summed over the workers' views; eps has
 * p->n_endpoints entries. Endpoints are matched by pool name and address,
 * so a view taken across a reload still adds up. */
static void pool_view(const struct views *vs, const struct cfg_pool *p, struct ep_view *eps)
{
	for (unsigned e = 0; e < p->n_endpoints; e++)
		eps[e] = (struct ep_view){.address = p->endpoints[e].addr.text,
					  .weight = p->endpoints[e].weight,
					  .rep = {.healthy = true,
						  .available = true,
						  .breaker = "closed",
						  .ramp_permille = 1000}};
	for (unsigned i = 0; i < vs->n; i++) {
		const struct worker_view *v = vs->v[i];

		for (unsigned k = 0; v && k < v->n_eps; k++) {
			const struct ep_snap *es = &v->eps[k];

			if (strcmp(es->pool, p->name))
				continue;
			for (unsigned e = 0; e < p->n_endpoints; e++) {
				if (strcmp(es->address, eps[e].address))
					continue;
				eps[e].inflight += es->inflight;
				eps[e].requests += es->requests;
				if (!eps[e].seen || es->fails < eps[e].fails)
					eps[e].fails = es->fails;
				if (!eps[e].seen)
					eps[e].rep = es->rep;
				if (es->rep.ewma_us > eps[e].ewma_us)
					eps[e].ewma_us = es->rep.ewma_us;
				eps[e].seen = true;
				break;
			}
		}
	}
}

/* NULL when ready, else why not (into why). */
static const char *not_ready(const struct views *vs, const struct config *cfg, char *why,
			     size_t len)
{
	if (!vs->n)
		return "no workers";
	for (unsigned i = 0; i < vs->n; i++) {
		const struct worker_view *v = vs->v[i];

		if (!v) {
			snprintf(why, len, "worker %u does not answer", i);
			return why;
		}
		if (v->draining) {
			snprintf(why, len, "worker %u is draining", i);
			return why;
		}
		if (!v->serving) {
			snprintf(why, len, "worker %u does not accept yet (start-up)", i);
			return why;
		}
		if (v->live_listeners < v->want_listeners) {
			snprintf(why, len, "worker %u: %u of %u listeners open", i,
				 v->live_listeners, v->want_listeners);
			return why;
		}
	}
	for (unsigned p = 0; p < cfg->n_pools; p++) {
		const struct cfg_pool *pool = &cfg->pools[p];
		struct ep_view *eps =
			calloc(pool->n_endpoints ? pool->n_endpoints : 1, sizeof(*eps));
		bool up = false;

		if (!eps)
			return "out of memory";
		pool_view(vs, pool, eps);
		for (unsigned e = 0; e < pool->n_endpoints; e++)
			up |= !strcmp(ep_state(&eps[e]), "up");
		free(eps);
		if (!up) {
			snprintf(why, len, "pool %s: no healthy endpoint", pool->name);
			return why;
		}
	}
	return NULL;
}

/* Sum of every worker's stats block (free with stats_worker_fini). */
static int merged_stats(struct gateway *g, struct stats_worker *tot)
{
	unsigned np = 0;

	for (unsigned i = 0; i < g->n_workers; i++)
		if (g->workers[i].stats.n_pools > np)
			np = g->workers[i].stats.n_pools;
	if (stats_worker_init(tot, np))
		return -ENOMEM;
	for (unsigned i = 0; i < g->n_workers; i++)
		stats_worker_merge(tot, &g->workers[i].stats);
	return 0;
}

/* ---- JSON helpers ----------------------------------------------------------- */

static int jkey(struct buf *b, bool *first, const char *key)
{
	int rc = 0;

	if (!*first)
		rc |= buf_append(b, ",", 1);
	*first = false;
	rc |= jsonw_buf_str(b, key);
	rc |= buf_append(b, ":", 1);
	return rc;
}

static int ju64(struct buf *b, bool *first, const char *key, uint64_t v)
{
	return jkey(b, first, key) | buf_appendf(b, "%llu", (unsigned long long)v);
}

static int jstr(struct buf *b, bool *first, const char *key, const char *v)
{
	return jkey(b, first, key) | jsonw_buf_str(b, v);
}

static int jbool(struct buf *b, bool *first, const char *key, bool v)
{
	return jkey(b, first, key) | buf_appends(b, v ? "true" : "false");
}

/* The value after "key": in body, skipping the key's own occurrences inside
 * other strings (a key is a string followed by ':'). */
static const char *body_value(const char *p, const char *end, const char *key)
{
	size_t kl = strlen(key);
	bool in_str = false;
	int depth = 0;

	for (; p < end; p++) {
		if (in_str) {
			if (*p == '\\')
				p++;
			else if (*p == '"')
				in_str = false;
			continue;
		}
		if (*p == '{' || *p == '[') {
			depth++;
			continue;
		}
		if (*p == '}' || *p == ']') {
			depth--;
			continue;
		}
		if (*p != '"')
			continue;
		const char *s = p + 1;
		if (depth == 1 && (size_t)(end - s) > kl && !memcmp(s, key, kl) && s[kl] == '"') {
			const char *q = s + kl + 1;
			while (q < end && (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r'))
				q++;
			if (q < end && *q == ':') {
				for (q++; q < end &&
					  (*q == ' ' || *q == '\t' || *q == '\n' || *q == '\r');
				     q++)
					;
				return q;
			}
		}
		in_str = true;
	}
	return NULL;
}

int admin_body_string(const struct admin_req *req, const char *key, char *out, size_t cap)
{
	if (!req->body)
		return -1;
	const char *end = req->body + req->body_len;
	const char *p = body_value(req->body, end, key);
	size_t o = 0;

	if (!p || p >= end || *p != '"')
		return -1;
	for (p++; p < end && *p != '"'; p++) {
		unsigned cp = (unsigned char)*p;
		bool escaped = cp == '\\';
		if (cp < 0x20)
			return -1; /* raw control characters are not JSON */
		if (escaped) {
			if (++p >= end)
				return -1;
			switch (*p) {
			case '"':
			case '\\':
			case '/':
				cp = (unsigned char)*p;
				break;
			case 'b':
				cp = '\b';
				break;
			case 'f':
				cp = '\f';
				break;
			case 'n':
				cp = '\n';
				break;
			case 'r':
				cp = '\r';
				break;
			case 't':
				cp = '\t';
				break;
			case 'u': {
				int h[4];
				if (end - p < 5)
					return -1;
				for (int i = 0; i < 4; i++)
					if ((h[i] = http_hex_digit(p[1 + i])) < 0)
						return -1;
				cp = (unsigned)(h[0] << 12 | h[1] << 8 | h[2] << 4 | h[3]);
				p += 4;
				/* surrogates would need a pair; no admin value needs them */
				if (cp >= 0xd800 && cp <= 0xdfff)
					return -1;
				break;
			}
			default:
				return -1;
			}
		}
		if (!cp)
			return -2;
		char u[3];
		size_t n = 0;
		if (cp < 0x80 || !escaped) {
			u[n++] = (char)cp; /* ASCII, or a byte of raw UTF-8 passed through */
		} else if (cp < 0x800) {
			u[n++] = (char)(0xc0 | cp >> 6);
			u[n++] = (char)(0x80 | (cp & 0x3f));
		} else {
			u[n++] = (char)(0xe0 | cp >> 12);
			u[n++] = (char)(0x80 | ((cp >> 6) & 0x3f));
			u[n++] = (char)(0x80 | (cp & 0x3f));
		}
		if (o + n >= cap)
			return -2;
		memcpy(out + o, u, n);
		o += n;
	}
	if (p >= end)
		return -1;
	out[o] = 0;
	return (int)o;
}

int admin_error(struct admin_resp *resp, int status, const char *msg)
{
	resp->status = status;
	resp->content_type = "application/json";
	buf_reset(&resp->body, 0);
	if (buf_appends(&resp->body, "{\"error\":") || jsonw_buf_str(&resp->body, msg) ||
	    buf_appends(&resp->body, "}\n"))
		return -1;
	return 0;
}

/* ---- built-in endpoints ------------------------------------------------------ */

static int h_healthz(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	resp->content_type = "text/plain; charset=utf-8";
	return buf_appends(&resp->body, "ok\n") ? -1 : 0;
}

static int h_readyz(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	const struct config *cfg = g->config_get ? g->config_get(g) : gateway_config(g);
	char why[256];
	struct views vs;
	const char *reason =
		views_take(g, &vs) ? "out of memory" : not_ready(&vs, cfg, why, sizeof(why));
	int rc;

	resp->status = reason ? 503 : 200;
	rc = buf_appendf(&resp->body, "{\"ready\":%s", reason ? "false" : "true");
	if (reason)
		rc |= buf_appends(&resp->body, ",\"reason\":") | jsonw_buf_str(&resp->body, reason);
	rc |= buf_appends(&resp->body, "}\n");
	views_free(&vs);
	if (g->config_put)
		g->config_put(g, cfg);
	return rc ? -1 : 0;
}

/* Prometheus text exposition 0.0.4. */
static int m_head(struct buf *b, const char *name, const char *type, const char *help)
{
	return buf_appendf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: backslash, quote and newline escaped. */
static int m_label(struct buf *b, const char *v)
{
	int rc = 0;

	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			rc |= buf_append(b, "\\", 1) | buf_append(b, v, 1);
		else if (*v == '\n')
			rc |= buf_appends(b, "\\n");
		else
			rc |= buf_append(b, v, 1);
	}
	return rc;
}

static int m_u64(struct buf *b, const char *name, uint64_t v)
{
	return buf_appendf(b, "%s %llu\n", name, (unsigned long long)v);
}

static int m_u64_1(struct buf *b, const char *name, const char *label, const char *value,
		   uint64_t v)
{
	return buf_appendf(b, "%s{%s=\"", name, label) | m_label(b, value) |
	       buf_appendf(b, "\"} %llu\n", (unsigned long long)v);
}

static int m_u64_2(struct buf *b, const char *name, const char *l1, const char *v1, const char *l2,
		   const char *v2, uint64_t v)
{
	return buf_appendf(b, "%s{%s=\"", name, l1) | m_label(b, v1) |
	       buf_appendf(b, "\",%s=\"", l2) | m_label(b, v2) |
	       buf_appendf(b, "\"} %llu\n", (unsigned long long)v);
}

static int m_hist(struct buf *b, const char *name, const char *label, const char *value,
		  const struct stats_hist *h)
{
	uint64_t cum = 0, count = __atomic_load_n(&h->count, __ATOMIC_RELAXED);
	int rc = 0;

	for (unsigned i = 0; i < STATS_HIST_BUCKETS; i++) {
		cum += __atomic_load_n(&h->bucket[i], __ATOMIC_RELAXED);
		rc |= buf_appendf(b, "%s_bucket{%s=\"", name, label) | m_label(b, value) |
		      buf_appendf(b, "\",le=\"%s\"} %llu\n", stats_hist_bounds_text[i],
				  (unsigned long long)cum);
	}
	/* the buckets and the count are read one after the other while a worker
	 * may observe: keep +Inf >= every finite bucket */
	if (count < cum)
		count = cum;
	rc |= buf_appendf(b, "%s_bucket{%s=\"", name, label) | m_label(b, value) |
	      buf_appendf(b, "\",le=\"+Inf\"} %llu\n", (unsigned long long)count);
	rc |= buf_appendf(b, "%s_sum{%s=\"", name, label) | m_label(b, value) |
	      buf_appendf(b, "\"} %.9f\n",
			  (double)__atomic_load_n(&h->sum_ns, __ATOMIC_RELAXED) / 1e9);
	rc |= buf_appendf(b, "%s_count{%s=\"", name, label) | m_label(b, value) |
	      buf_appendf(b, "\"} %llu\n", (unsigned long long)count);
	return rc;
}

static const char *const class_names[6] = {"", "1xx", "2xx", "3xx", "4xx", "5xx"};

static int h_metrics(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	const struct config *cfg = g->config_get ? g->config_get(g) : gateway_config(g);
	struct admin *a = the_admin;
	struct buf *b = &resp->body;
	struct stats_worker t;
	int rc = 0;

	resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
	if (merged_stats(g, &t)) {
		if (g->config_put)
			g->config_put(g, cfg);
		return -1;
	}
	rc |= m_head(b, "reflex_build_info", "gauge", "Build information.");
	rc |= m_u64_1(b, "reflex_build_info", "version", g->version ? g->version : "unknown", 1);
	rc |= m_head(b, "reflex_process_start_time_seconds", "gauge",
		     "Start time of the process since the Unix epoch in seconds.");
	rc |= m_u64(b, "reflex_process_start_time_seconds", (uint64_t)g->started);
	rc |= m_head(b, "reflex_workers", "gauge", "Worker threads.");
	rc |= m_u64(b, "reflex_workers", g->n_workers);

	rc |= m_head(b, "reflex_connections_accepted_total", "counter",
		     "Client connections accepted.");
	rc |= m_u64(b, "reflex_connections_accepted_total", t.conn_accepted);
	rc |= m_head(b, "reflex_connections_open", "gauge", "Client connections open now.");
	rc |= m_u64(b, "reflex_connections_open", t.conn_open);
	rc |= m_head(b, "reflex_connections_closed_total", "counter",
		     "Client connections closed, by reason.");
	for (unsigned i = 0; i < CLOSE_MAX; i++)
		rc |= m_u64_1(b, "reflex_connections_closed_total", "reason",
			      close_reason_name((enum conn_close_reason)i), t.conn_closed[i]);

	rc |= m_head(b, "reflex_requests_total", "counter", "Requests whose head was parsed.");
	rc |= m_u64(b, "reflex_requests_total", t.requests);
	rc |= m_head(b, "reflex_responses_total", "counter", "Responses, by status class.");
	for (unsigned c = 1; c <= 5; c++)
		rc |= m_u64_1(b, "reflex_responses_total", "class", class_names[c], t.responses[c]);
	rc |= m_head(b, "reflex_pool_responses_total", "counter",
		     "Responses of requests routed to a pool, by pool and status class.");
	/* only the current configuration's pools are series; their counts are
	 * kept by name (worker_pool_slot), so they survive reloads */
	for (unsigned p = 0; p < cfg->n_pools; p++) {
		const char *name = cfg->pools[p].name;
		int slot = worker_pool_slot(cfg, p);

		for (unsigned c = 1; c <= 5; c++)
			rc |= m_u64_2(b, "reflex_pool_responses_total", "pool", name, "class",
				      class_names[c],
				      slot >= 0 && (unsigned)slot < t.n_pools
					      ? t.pool_responses[slot][c]
					      : 0);
	}

	rc |= m_head(b, "reflex_client_bytes_in_total", "counter", "Bytes received from clients.");
	rc |= m_u64(b, "reflex_client_bytes_in_total", t.bytes_in);
	rc |= m_head(b, "reflex_client_bytes_out_total", "counter", "Bytes sent to clients.");
	rc |= m_u64(b, "reflex_client_bytes_out_total", t.bytes_out);
	rc |= m_head(b, "reflex_upstream_bytes_in_total", "counter",
		     "Bytes received from upstreams.");
	rc |= m_u64(b, "reflex_upstream_bytes_in_total", t.upstream_bytes_in);
	rc |= m_head(b, "reflex_upstream_bytes_out_total", "counter", "Bytes sent to upstreams.");
	rc |= m_u64(b, "reflex_upstream_bytes_out_total", t.upstream_bytes_out);
	rc |= m_head(b, "reflex_upstream_connections_opened_total", "counter",
		     "Upstream connections opened.");
	rc |= m_u64(b, "reflex_upstream_connections_opened_total", t.upstream_connects);
	rc |= m_head(b, "reflex_upstream_connections_reused_total", "counter",
		     "Requests sent on a kept-alive upstream connection.");
	rc |= m_u64(b, "reflex_upstream_connections_reused_total", t.upstream_reuses);
	rc |= m_head(b, "reflex_upstream_retries_total", "counter",
		     "Requests sent to an upstream once more.");
	rc |= m_u64(b, "reflex_upstream_retries_total", t.upstream_retries);

	rc |= m_head(b, "reflex_refusals_total", "counter",
		     "Requests refused or failed by the gateway, by reason code.");
	for (unsigned r = 1; r < REASON_MAX; r++)
		rc |= m_u64_1(b, "reflex_refusals_total", "reason", reason_name((enum reason)r),
			      t.refusals[r]);

	rc |= m_head(b, "reflex_stage_duration_seconds", "histogram",
		     "Time spent in each stage of the request path (total: head parsed to "
		     "response handed to the kernel).");
	for (unsigned s = 0; s < STAGE_MAX; s++)
		rc |= m_hist(b, "reflex_stage_duration_seconds", "stage", stage_name((enum stage)s),
			     &t.stage[s]);

	/* per endpoint: one buffer per family, so each family stays one block */
	static const struct {
		const char *name, *type, *help;
	} ep_fams[] = {
		{"reflex_upstream_endpoint_inflight", "gauge",
		 "Requests bound to an upstream endpoint now (all workers)."},
		{"reflex_upstream_endpoint_requests_total", "counter",
		 "Exchanges started with an upstream endpoint (this configuration generation)."},
		{"reflex_upstream_endpoint_up", "gauge",
		 "1 when the endpoint takes traffic and its last exchange succeeded in some "
		 "worker."},
		{"reflex_upstream_endpoint_available", "gauge",
		 "1 when the endpoint is in rotation: healthy, not ejected, breaker admits."},
		{"reflex_upstream_endpoint_failures_total", "counter",
		 "Failed exchanges with the endpoint (all workers)."},
		{"reflex_upstream_endpoint_ejections_total", "counter",
		 "Outlier ejections of the endpoint."},
		{"reflex_upstream_endpoint_latency_ewma_seconds", "gauge",
		 "Moving average of the endpoint's response time (the largest over the workers)."},
	};
	enum { N_EP_FAMS = sizeof(ep_fams) / sizeof(ep_fams[0]) };
	struct buf fam[N_EP_FAMS];
	struct views vs;

	memset(fam, 0, sizeof(fam));
	if (views_take(g, &vs))
		rc = -1;
	for (unsigned p = 0; !rc && p < cfg->n_pools; p++) {
		const struct cfg_pool *pool = &cfg->pools[p];
		struct ep_view *eps =
			calloc(pool->n_endpoints ? pool->n_endpoints : 1, sizeof(*eps));

		if (!eps) {
			rc = -1;
			break;
		}
		pool_view(&vs, pool, eps);
		for (unsigned e = 0; e < pool->n_endpoints; e++) {
			const struct ep_view *ev = &eps[e];
			const uint64_t v[N_EP_FAMS - 1] = {
				ev->inflight,	   ev->requests,     !strcmp(ep_state(ev), "up"),
				ev->rep.available, ev->rep.failures, ev->rep.n_ejections,
			};

			for (unsigned f = 0; f < N_EP_FAMS - 1; f++)
				rc |= m_u64_2(&fam[f], ep_fams[f].name, "pool", pool->name,
					      "endpoint", ev->address, v[f]);
			rc |= buf_appendf(&fam[N_EP_FAMS - 1], "%s{pool=\"",
					  ep_fams[N_EP_FAMS - 1].name) |
			      m_label(&fam[N_EP_FAMS - 1], pool->name) |
			      buf_appends(&fam[N_EP_FAMS - 1], "\",endpoint=\"") |
			      m_label(&fam[N_EP_FAMS - 1], ev->address) |
			      buf_appendf(&fam[N_EP_FAMS - 1], "\"} %.6f\n",
					  (double)ev->ewma_us / 1e6);
		}
		free(eps);
	}
	for (unsigned f = 0; f < N_EP_FAMS; f++) {
		rc |= m_head(b, ep_fams[f].name, ep_fams[f].type, ep_fams[f].help);
		if (fam[f].len)
			rc |= buf_append(b, buf_head(&fam[f]), fam[f].len);
		buf_free(&fam[f]);
	}
	views_free(&vs);

	/* per route (routes have no names: index, host and prefix label them) */
	rc |= m_head(b, "reflex_route_responses_total", "counter",
		     "Responses of requests a route matched, by route and status class.");
	for (unsigned r = 0; r < cfg->n_routes && t.route_responses; r++) {
		char idx[16];
		int slot = worker_route_slot(cfg, r);

		if (slot < 0 || (unsigned)slot >= t.n_routes)
			continue;
		snprintf(idx, sizeof(idx), "%u", r);
		for (unsigned c = 1; c <= 5; c++)
			rc |= buf_appendf(b, "reflex_route_responses_total{route=\"%s\",host=\"",
					  idx) |
			      m_label(b, cfg->routes[r].host) |
			      buf_appends(b, "\",path_prefix=\"") |
			      m_label(b, cfg->routes[r].path_prefix) |
			      buf_appendf(b, "\",class=\"%s\"} %llu\n", class_names[c],
					  (unsigned long long)t.route_responses[slot][c]);
	}

	/* pool resilience (docs/pool.md) */
	static const struct {
		const char *name, *help;
		size_t off;
	} counters[] = {
#define C(name, field, help) {name, help, offsetof(struct stats_worker, field)}
		C("reflex_pool_health_changes_total", pool_health_changes,
		  "Active health checks that turned an endpoint up or down."),
		C("reflex_pool_ejections_total", pool_ejections, "Passive outlier ejections."),
		C("reflex_pool_breaker_opens_total", pool_breaker_opens,
		  "Endpoint circuit breakers that opened."),
		C("reflex_pool_retries_total", pool_retries,
		  "Retries started on another endpoint (pool retry policy)."),
		C("reflex_pool_retry_budget_denied_total", pool_retry_budget_denied,
		  "Retries refused by the retry budget or limit."),
		C("reflex_pool_hedges_total", pool_hedges, "Hedged second tries sent."),
		C("reflex_pool_hedge_wins_total", pool_hedge_wins,
		  "Hedged tries that answered first."),
		C("reflex_pool_queued_total", pool_queued, "Requests that waited in a pool queue."),
		C("reflex_pool_queue_rejected_total", pool_queue_rejected,
		  "Requests refused because the pool queue was full or the wait too long."),
		C("reflex_pool_fail_fast_total", pool_fail_fast,
		  "Requests refused at once: no endpoint available."),
		/* the cache (docs/cache.md) */
		C("reflex_cache_stores_total", cache_stores, "Objects stored in the L1 cache."),
		C("reflex_cache_revalidations_total", cache_revalidations,
		  "Conditional requests sent to the origin."),
		C("reflex_cache_refreshed_total", cache_refreshed,
		  "Revalidations answered 304: the stored object was refreshed."),
		C("reflex_cache_not_modified_total", cache_not_modified,
		  "Clients answered 304 from the cache."),
		C("reflex_cache_coalesced_total", cache_coalesced,
		  "Misses that waited for another request's fetch."),
		C("reflex_cache_invalidations_total", cache_invalidations,
		  "Objects dropped by unsafe methods."),
		/* TLS (gateway/core/tls.c, docs/tls.md) */
		C("reflex_tls_handshakes_total", tls_handshakes,
		  "Client TLS handshakes completed (full and resumed)."),
		C("reflex_tls_resumed_total", tls_resumed,
		  "Client TLS handshakes that resumed a session."),
		C("reflex_upstream_tls_handshakes_total", upstream_tls_handshakes,
		  "TLS handshakes completed with upstream endpoints."),
		C("reflex_upstream_tls_resumed_total", upstream_tls_resumed,
		  "Upstream TLS handshakes that reused a session."),
#undef C
	};
	for (size_t i = 0; i < sizeof(counters) / sizeof(counters[0]); i++) {
		rc |= m_head(b, counters[i].name, "counter", counters[i].help);
		rc |= m_u64(b, counters[i].name,
			    *(const uint64_t *)((const char *)&t + counters[i].off));
	}
	rc |= m_head(b, "reflex_tls_failures_total", "counter",
		     "TLS handshakes that failed, by reason.");
	for (unsigned f = 1; f < TLS_FAIL_MAX; f++)
		rc |= m_u64_1(b, "reflex_tls_failures_total", "reason", tls_fail_name(f),
			      t.tls_failures[f]);
	rc |= m_head(b, "reflex_cache_requests_total", "counter",
		     "Requests that reached the cache step, by result.");
	rc |= m_u64_1(b, "reflex_cache_requests_total", "result", "hit", t.cache_hits);
	rc |= m_u64_1(b, "reflex_cache_requests_total", "result", "miss", t.cache_misses);
	rc |= m_u64_1(b, "reflex_cache_requests_total", "result", "stale", t.cache_stale);
	rc |= m_u64_1(b, "reflex_cache_requests_total", "result", "bypass", t.cache_bypass);
	rc |= m_head(b, "reflex_cache_l2_requests_total", "counter",
		     "L2 (Redis) lookups, by result.");
	rc |= m_u64_1(b, "reflex_cache_l2_requests_total", "result", "hit", t.cache_l2_hits);
	rc |= m_u64_1(b, "reflex_cache_l2_requests_total", "result", "miss", t.cache_l2_misses);
	rc |= m_u64_1(b, "reflex_cache_l2_requests_total", "result", "error", t.cache_l2_errors);
	rc |= m_u64_1(b, "reflex_cache_l2_requests_total", "result", "skipped", t.cache_l2_skipped);
	{ /* the shared L1 store and the background refreshes are process-wide, not per worker */
		struct cache_stats_global cs;
		uint64_t started, failed, cancelled;

		cache_store_stats(&cs);
		cache_refresh_stats(&started, &failed, &cancelled);
		rc |= m_head(b, "reflex_cache_objects", "gauge", "Objects in the L1 cache.");
		rc |= m_u64(b, "reflex_cache_objects", cs.objects);
		rc |= m_head(b, "reflex_cache_bytes", "gauge", "Bytes held by the L1 cache.");
		rc |= m_u64(b, "reflex_cache_bytes", cs.bytes);
		rc |= m_head(b, "reflex_cache_budget_bytes", "gauge",
			     "The L1 cache's byte budget (cache.memory).");
		rc |= m_u64(b, "reflex_cache_budget_bytes", cache_store_budget());
		rc |= m_head(b, "reflex_cache_evictions_total", "counter",
			     "Objects evicted from the L1 cache to stay within its budget.");
		rc |= m_u64(b, "reflex_cache_evictions_total", cs.evictions);
		rc |= m_head(b, "reflex_cache_purged_total", "counter",
			     "Objects removed from the L1 cache by purges.");
		rc |= m_u64(b, "reflex_cache_purged_total", cs.purged);
		rc |= m_head(b, "reflex_cache_l1_flushes_total", "counter",
			     "Whole-L1 flushes by the L2 purge subscriber, for purges it may "
			     "have missed, by reason.");
		rc |= m_u64_1(b, "reflex_cache_l1_flushes_total", "reason", "first_subscription",
			      l2_subscriber_flushes(L2_FLUSH_FIRST));
		rc |= m_u64_1(b, "reflex_cache_l1_flushes_total", "reason", "missed_purge",
			      l2_subscriber_flushes(L2_FLUSH_MISSED));
		rc |= m_u64_1(b, "reflex_cache_l1_flushes_total", "reason", "unverifiable",
			      l2_subscriber_flushes(L2_FLUSH_UNSURE));
		rc |= m_head(b, "reflex_cache_background_refreshes_total", "counter",
			     "Stale-while-revalidate refreshes run in the background, by outcome.");
		rc |= m_u64_1(b, "reflex_cache_background_refreshes_total", "result", "started",
			      started);
		rc |= m_u64_1(b, "reflex_cache_background_refreshes_total", "result", "failed",
			      failed);
		rc |= m_u64_1(b, "reflex_cache_background_refreshes_total", "result", "cancelled",
			      cancelled);
	}
	/* rate limiting (http/limit.c, docs/ratelimit.md) */
	rc |= m_head(b, "reflex_ratelimit_checked_total", "counter",
		     "Requests that went through the limit step.");
	rc |= m_u64(b, "reflex_ratelimit_checked_total", t.rl_checked);
	rc |= m_head(b, "reflex_ratelimit_refused_total", "counter",
		     "Requests refused with 429, by limit.");
	rc |= m_u64_1(b, "reflex_ratelimit_refused_total", "limit", "client", t.rl_refused_client);
	rc |= m_u64_1(b, "reflex_ratelimit_refused_total", "limit", "api_key", t.rl_refused_key);
	rc |= m_u64_1(b, "reflex_ratelimit_refused_total", "limit", "route", t.rl_refused_route);
	rc |= m_head(b, "reflex_ratelimit_escalations_total", "counter",
		     "Sources sent to the kernel penalty box.");
	rc |= m_u64(b, "reflex_ratelimit_escalations_total", t.rl_escalations);
	rc |= m_head(b, "reflex_ratelimit_global_total", "counter",
		     "Global limit decisions, by where they were made (redis, or local fallback).");
	rc |= m_u64_1(b, "reflex_ratelimit_global_total", "by", "redis", t.rl_global_checks);
	rc |= m_u64_1(b, "reflex_ratelimit_global_total", "by", "fallback", t.rl_global_fallback);
	rc |= m_head(b, "reflex_ratelimit_redis_errors_total", "counter",
		     "Redis errors and timeouts of global limits.");
	rc |= m_u64(b, "reflex_ratelimit_redis_errors_total", t.rl_redis_errors);
	rc |= m_head(b, "reflex_ratelimit_accept_refused_total", "counter",
		     "Connections closed at accept by the userspace connection-rate limit.");
	rc |= m_u64(b, "reflex_ratelimit_accept_refused_total", t.rl_accept_refused);

	rc |= m_head(b, "reflex_access_log_written_total", "counter", "Access-log lines written.");
	rc |= m_u64(b, "reflex_access_log_written_total", accesslog_written(g->alog));
	rc |= m_head(b, "reflex_access_log_dropped_total", "counter",
		     "Access-log records dropped (queue full or write error).");
	rc |= m_u64(b, "reflex_access_log_dropped_total", accesslog_dropped(g->alog));

	rc |= m_head(b, "reflex_admin_requests_total", "counter", "Admin API requests.");
	rc |= m_u64(b, "reflex_admin_requests_total", a ? a->requests : 0);
	rc |= m_head(b, "reflex_admin_unauthorized_total", "counter",
		     "Admin mutations refused for a missing or wrong token.");
	rc |= m_u64(b, "reflex_admin_unauthorized_total", a ? a->unauthorized : 0);
	rc |= m_head(b, "reflex_admin_connections_evicted_total", "counter",
		     "Admin connections closed to make room for a new one (the table was full).");
	rc |= m_u64(b, "reflex_admin_connections_evicted_total", a ? a->evicted : 0);
	rc |= m_head(b, "reflex_config_reloads_total", "counter",
		     "Configuration reloads (SIGHUP or POST /reload), by result.");
	rc |= m_u64_1(b, "reflex_config_reloads_total", "result", "ok",
		      __atomic_load_n(&g->reloads_ok, __ATOMIC_RELAXED));
	rc |= m_u64_1(b, "reflex_config_reloads_total", "result", "error",
		      __atomic_load_n(&g->reloads_failed, __ATOMIC_RELAXED));
	{
		time_t when;
		bool ok;

		pthread_mutex_lock(&g->reload_status_mu);
		when = g->last_reload;
		ok = g->last_reload_ok;
		pthread_mutex_unlock(&g->reload_status_mu);
		rc |= m_head(b, "reflex_config_last_reload_successful", "gauge",
			     "0 while the last reload was refused (the previous configuration "
			     "serves), else 1.");
		rc |= m_u64(b, "reflex_config_last_reload_successful", !when || ok);
		rc |= m_head(b, "reflex_config_last_reload_timestamp_seconds", "gauge",
			     "When the last reload was tried (0: never).");
		rc |= m_u64(b, "reflex_config_last_reload_timestamp_seconds", (uint64_t)when);
	}
	rc |= anomaly_metrics(b);	  /* anomaly events, actions, tracer (docs/anomaly.md) */
	rc |= reflex_metrics(cfg, &t, b); /* rules and detectors (docs/rules.md) */
	rc |= limit_metrics(b);		  /* the kernel rate limiter (docs/ratelimit.md) */

	stats_worker_fini(&t);
	if (g->config_put)
		g->config_put(g, cfg);
	return rc ? -1 : 0;
}

/* One stats block as a JSON object. */
static int stats_json(struct buf *b, const struct stats_worker *s)
{
	bool f = true, f2 = true;
	int rc = buf_append(b, "{", 1);

	rc |= ju64(b, &f, "connections_accepted", STAT_LOAD(s->conn_accepted));
	rc |= ju64(b, &f, "connections_open", STAT_LOAD(s->conn_open));
	rc |= jkey(b, &f, "connections_closed") | buf_append(b, "{", 1);
	for (unsigned i = 0; i < CLOSE_MAX; i++)
		rc |= ju64(b, &f2, close_reason_name((enum conn_close_reason)i),
			   STAT_LOAD(s->conn_closed[i]));
	rc |= buf_append(b, "}", 1);
	rc |= ju64(b, &f, "requests", STAT_LOAD(s->requests));
	rc |= jkey(b, &f, "responses") | buf_append(b, "{", 1);
	f2 = true;
	for (unsigned c = 1; c <= 5; c++)
		rc |= ju64(b, &f2, class_names[c], STAT_LOAD(s->responses[c]));
	rc |= buf_append(b, "}", 1);
	rc |= ju64(b, &f, "bytes_in", STAT_LOAD(s->bytes_in));
	rc |= ju64(b, &f, "bytes_out", STAT_LOAD(s->bytes_out));
	rc |= jkey(b, &f, "upstream") | buf_append(b, "{", 1);
	f2 = true;
	rc |= ju64(b, &f2, "connects", STAT_LOAD(s->upstream_connects));
	rc |= ju64(b, &f2, "reuses", STAT_LOAD(s->upstream_reuses));
	rc |= ju64(b, &f2, "retries", STAT_LOAD(s->upstream_retries));
	rc |= ju64(b, &f2, "bytes_in", STAT_LOAD(s->upstream_bytes_in));
	rc |= ju64(b, &f2, "bytes_out", STAT_LOAD(s->upstream_bytes_out));
	rc |= buf_append(b, "}", 1);
	rc |= jkey(b, &f, "refusals") | buf_append(b, "{", 1);
	f2 = true;
	for (unsigned r = 1; r < REASON_MAX; r++) {
		uint64_t v = STAT_LOAD(s->refusals[r]);
		if (v)
			rc |= ju64(b, &f2, reason_name((enum reason)r), v);
	}
	rc |= buf_append(b, "}", 1);
	rc |= jkey(b, &f, "cache") | buf_append(b, "{", 1);
	f2 = true;
	rc |= ju64(b, &f2, "hits", STAT_LOAD(s->cache_hits));
	rc |= ju64(b, &f2, "misses", STAT_LOAD(s->cache_misses));
	rc |= ju64(b, &f2, "stale", STAT_LOAD(s->cache_stale));
	rc |= ju64(b, &f2, "bypass", STAT_LOAD(s->cache_bypass));
	rc |= ju64(b, &f2, "stores", STAT_LOAD(s->cache_stores));
	rc |= ju64(b, &f2, "revalidations", STAT_LOAD(s->cache_revalidations));
	rc |= ju64(b, &f2, "coalesced", STAT_LOAD(s->cache_coalesced));
	rc |= ju64(b, &f2, "l2_hits", STAT_LOAD(s->cache_l2_hits));
	rc |= ju64(b, &f2, "l2_misses", STAT_LOAD(s->cache_l2_misses));
	rc |= ju64(b, &f2, "l2_errors", STAT_LOAD(s->cache_l2_errors));
	rc |= buf_append(b, "}", 1);
	rc |= jkey(b, &f, "ratelimit") | buf_append(b, "{", 1);
	f2 = true;
	rc |= ju64(b, &f2, "checked", STAT_LOAD(s->rl_checked));
	rc |= ju64(b, &f2, "refused_client", STAT_LOAD(s->rl_refused_client));
	rc |= ju64(b, &f2, "refused_api_key", STAT_LOAD(s->rl_refused_key));
	rc |= ju64(b, &f2, "refused_route", STAT_LOAD(s->rl_refused_route));
	rc |= ju64(b, &f2, "escalations", STAT_LOAD(s->rl_escalations));
	rc |= ju64(b, &f2, "global_redis", STAT_LOAD(s->rl_global_checks));
	rc |= ju64(b, &f2, "global_fallback", STAT_LOAD(s->rl_global_fallback));
	rc |= ju64(b, &f2, "redis_errors", STAT_LOAD(s->rl_redis_errors));
	rc |= ju64(b, &f2, "accept_refused", STAT_LOAD(s->rl_accept_refused));
	rc |= buf_append(b, "}", 1);
	rc |= jkey(b, &f, "pool") | buf_append(b, "{", 1);
	f2 = true;
	rc |= ju64(b, &f2, "retries", STAT_LOAD(s->pool_retries));
	rc |= ju64(b, &f2, "retry_budget_denied", STAT_LOAD(s->pool_retry_budget_denied));
	rc |= ju64(b, &f2, "hedges", STAT_LOAD(s->pool_hedges));
	rc |= ju64(b, &f2, "hedge_wins", STAT_LOAD(s->pool_hedge_wins));
	rc |= ju64(b, &f2, "ejections", STAT_LOAD(s->pool_ejections));
	rc |= ju64(b, &f2, "breaker_opens", STAT_LOAD(s->pool_breaker_opens));
	rc |= ju64(b, &f2, "health_changes", STAT_LOAD(s->pool_health_changes));
	rc |= ju64(b, &f2, "queued", STAT_LOAD(s->pool_queued));
	rc |= ju64(b, &f2, "queue_rejected", STAT_LOAD(s->pool_queue_rejected));
	rc |= ju64(b, &f2, "fail_fast", STAT_LOAD(s->pool_fail_fast));
	rc |= buf_append(b, "}", 1);
	/* latency: quantiles of each stage in µs */
	rc |= jkey(b, &f, "latency_us") | buf_append(b, "{", 1);
	f2 = true;
	for (unsigned st = 0; st < STAGE_MAX; st++) {
		const struct stats_hist *h = &s->stage[st];
		bool f3 = true;

		rc |= jkey(b, &f2, stage_name((enum stage)st)) | buf_append(b, "{", 1);
		rc |= ju64(b, &f3, "count", STAT_LOAD(h->count));
		rc |= ju64(b, &f3, "p50", stats_hist_quantile(h, 0.50) / 1000);
		rc |= ju64(b, &f3, "p99", stats_hist_quantile(h, 0.99) / 1000);
		rc |= buf_append(b, "}", 1);
	}
	rc |= buf_append(b, "}}", 2);
	return rc;
}

static int top_clients_json(struct buf *b, struct gateway *g);

/* {"ok":N,"failed":N,"last":T,"last_ok":B,"last_error":S}: reloads by any
 * route; "last" is 0 and the rest absent before the first one. */
static int reload_json(struct buf *b, struct gateway *g)
{
	bool f = true;
	int rc = buf_append(b, "{", 1);

	rc |= ju64(b, &f, "ok", __atomic_load_n(&g->reloads_ok, __ATOMIC_RELAXED));
	rc |= ju64(b, &f, "failed", __atomic_load_n(&g->reloads_failed, __ATOMIC_RELAXED));
	pthread_mutex_lock(&g->reload_status_mu);
	rc |= ju64(b, &f, "last", (uint64_t)g->last_reload);
	if (g->last_reload) {
		rc |= jbool(b, &f, "last_ok", g->last_reload_ok);
		if (!g->last_reload_ok)
			rc |= jstr(b, &f, "last_error", g->last_reload_error);
	}
	pthread_mutex_unlock(&g->reload_status_mu);
	return rc | buf_append(b, "}", 1);
}

static int h_stats(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	struct buf *b = &resp->body;
	struct stats_worker t;
	bool f = true;
	int rc;

	if (merged_stats(g, &t))
		return -1;
	rc = buf_append(b, "{", 1);
	rc |= jstr(b, &f, "version", g->version ? g->version : "unknown");
	rc |= ju64(b, &f, "started", (uint64_t)g->started);
	rc |= ju64(b, &f, "uptime_s", (uint64_t)(time(NULL) - g->started));
	rc |= jkey(b, &f, "totals") | stats_json(b, &t);
	rc |= jkey(b, &f, "workers") | buf_append(b, "[", 1);
	for (unsigned i = 0; i < g->n_workers; i++) {
		if (i)
			rc |= buf_append(b, ",", 1);
		rc |= stats_json(b, &g->workers[i].stats);
		/* put the worker id first-class without re-opening the object */
		b->len--;
		rc |= buf_appendf(b, ",\"id\":%u}", i);
	}
	rc |= buf_append(b, "]", 1);
	rc |= jkey(b, &f, "access_log") | buf_append(b, "{", 1);
	bool f2 = true;
	rc |= jbool(b, &f2, "enabled", g->alog != NULL);
	rc |= ju64(b, &f2, "written", accesslog_written(g->alog));
	rc |= ju64(b, &f2, "dropped", accesslog_dropped(g->alog));
	rc |= buf_append(b, "}", 1);
	rc |= jkey(b, &f, "top_clients") | top_clients_json(b, g);
	rc |= jkey(b, &f, "reload") | reload_json(b, g);
	rc |= buf_appends(b, "}\n");
	stats_worker_fini(&t);
	return rc ? -1 : 0;
}

/* The heaviest clients of the last minute or so, merged over the workers'
 * space-saving tables (gateway/core/topk.h): [{client, requests, refused}]. */
static int top_clients_json(struct buf *b, struct gateway *g)
{
	enum { MAX = TOPK_SLOTS * 64 };
	static __thread struct topk_slot all[MAX];
	unsigned n = 0;
	int rc = 0;

	for (unsigned w = 0; w < g->n_workers; w++)
		for (unsigned i = 0; i < TOPK_SLOTS && n < MAX; i++) {
			struct topk_slot s;
			if (!topk_read(&g->workers[w].top_clients, i, &s))
				continue;
			unsigned j = 0;
			while (j < n && strcmp(all[j].key, s.key) != 0)
				j++;
			if (j == n)
				all[n++] = s;
			else {
				all[j].count += s.count;
				all[j].refused += s.refused;
			}
		}
	rc |= buf_append(b, "[", 1);
	for (unsigned k = 0; k < 10 && k < n; k++) {
		unsigned best = k; /* partial selection sort: the first ten */
		for (unsigned j = k + 1; j < n; j++)
			if (all[j].count > all[best].count)
				best = j;
		struct topk_slot tmp = all[k];
		all[k] = all[best];
		all[best] = tmp;
		bool f = true;
		rc |= buf_appends(b, k ? ",{" : "{");
		rc |= jstr(b, &f, "client", all[k].key);
		rc |= ju64(b, &f, "requests", all[k].count);
		rc |= ju64(b, &f, "refused", all[k].refused);
		rc |= buf_append(b, "}", 1);
	}
	return rc | buf_append(b, "]", 1);
}

static int config_json(struct buf *b, const struct config *c, unsigned n_tokens)
{
	static const char *const levels[] = {"error", "warn", "info", "debug"};
	bool f = true, f2;
	int rc = buf_append(b, "{", 1);

	rc |= jstr(b, &f, "source", c->source);
	rc |= ju64(b, &f, "workers", c->workers);
	rc |= jkey(b, &f, "listen") | buf_append(b, "[", 1);
	for (unsigned i = 0; i < c->n_listens; i++)
		rc |= (i ? buf_append(b, ",", 1) : 0) | jsonw_buf_str(b, c->listens[i].text);
	rc |= buf_append(b, "]", 1);
	rc |= jkey(b, &f, "pools") | buf_append(b, "{", 1);
	for (unsigned p = 0; p < c->n_pools; p++) {
		const struct cfg_pool *pool = &c->pools[p];

		if (p)
			rc |= buf_append(b, ",", 1);
		rc |= jsonw_buf_str(b, pool->name) | buf_append(b, ":{", 2);
		f2 = true;
		rc |= jstr(b, &f2, "balance",
			   pool->balance == CFG_BALANCE_ROUND_ROBIN ? "round_robin" : "p2c");
		rc |= ju64(b, &f2, "keepalive", pool->keepalive);
		rc |= jkey(b, &f2, "endpoints") | buf_append(b, "[", 1);
		for (unsigned e = 0; e < pool->n_endpoints; e++) {
			bool f3 = true;

			rc |= (e ? buf_append(b, ",", 1) : 0) | buf_append(b, "{", 1);
			rc |= jstr(b, &f3, "address", pool->endpoints[e].addr.text);
			rc |= ju64(b, &f3, "weight", pool->endpoints[e].weight);
			rc |= buf_append(b, "}", 1);
		}
		rc |= buf_appends(b, "]}");
	}
	rc |= buf_append(b, "}", 1);
	rc |= jkey(b, &f, "routes") | buf_append(b, "[", 1);
	for (unsigned r = 0; r < c->n_routes; r++) {
		const struct cfg_route *rt = &c->routes[r];

		f2 = true;
		rc |= (r ? buf_append(b, ",", 1) : 0) | buf_append(b, "{", 1);
		rc |= jstr(b, &f2, "host", rt->host);
		rc |= jstr(b, &f2, "path_prefix", rt->path_prefix);
		rc |= jstr(b, &f2, "pool", rt->pool < c->n_pools ? c->pools[rt->pool].name : "");
		rc |= jbool(b, &f2, "access_log", rt->access_log);
		rc |= buf_append(b, "}", 1);
	}
	rc |= buf_append(b, "]", 1);
	rc |= jkey(b, &f, "limits") | buf_append(b, "{", 1);
	f2 = true;
	rc |= ju64(b, &f2, "request_line", c->limits.request_line);
	rc |= ju64(b, &f2, "header_bytes", c->limits.header_bytes);
	rc |= ju64(b, &f2, "header_count", c->limits.header_count);
	rc |= ju64(b, &f2, "body", c->limits.body);
	rc |= buf_append(b, "}", 1);
	rc |= jkey(b, &f, "timeouts_ms") | buf_append(b, "{", 1);
	f2 = true;
	rc |= ju64(b, &f2, "header", c->timeouts.header);
	rc |= ju64(b, &f2, "body", c->timeouts.body);
	rc |= ju64(b, &f2, "keepalive", c->timeouts.keepalive);
	rc |= ju64(b, &f2, "upstream_connect", c->timeouts.upstream_connect);
	rc |= ju64(b, &f2, "upstream_response", c->timeouts.upstream_response);
	rc |= ju64(b, &f2, "upstream_idle", c->timeouts.upstream_idle);
	rc |= ju64(b, &f2, "send", c->timeouts.send);
	rc |= ju64(b, &f2, "drain", c->timeouts.drain);
	rc |= buf_append(b, "}", 1);
	rc |= jkey(b, &f, "access_log") | buf_append(b, "{", 1);
	f2 = true;
	rc |= jstr(b, &f2, "path", c->access_log);
	rc |= jkey(b, &f2, "sample") | buf_appendf(b, "%g", c->access_log_sample);
	rc |= jbool(b, &f2, "query", c->access_log_query);
	rc |= buf_append(b, "}", 1);
	rc |= jstr(b, &f, "log_level", levels[c->log_level & 3]);
	/* secrets never leave: the token file's path and how many tokens it gave */
	rc |= jkey(b, &f, "admin") | buf_append(b, "{", 1);
	f2 = true;
	rc |= jstr(b, &f2, "listen", c->admin.enabled ? c->admin.listen.text : "off");
	rc |= jstr(b, &f2, "token_file", c->admin.token_file);
	rc |= ju64(b, &f2, "tokens", n_tokens);
	rc |= jstr(b, &f2, "audit_log", c->admin.audit_log);
	rc |= buf_appends(b, "}}\n");
	return rc;
}

static int h_config(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	const struct config *cfg = g->config_get ? g->config_get(g) : gateway_config(g);
	int rc = config_json(&resp->body, cfg, the_admin ? the_admin->n_tokens : 0);

	if (g->config_put)
		g->config_put(g, cfg);
	return rc ? -1 : 0;
}

static int h_reload(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	char err[1024] = "";

	/* the audit record is "POST /reload" with the error as its result */
	if (!g->reload)
		return admin_error(resp, 501, "reload is not available in this build");
	if (g->reload(g, err, sizeof(err))) {
		resp->status = 400;
		return buf_appends(&resp->body, "{\"ok\":false,\"error\":") ||
				       jsonw_buf_str(&resp->body, err) ||
				       buf_appends(&resp->body, "}\n")
			       ? -1
			       : 0;
	}
	return buf_appends(&resp->body, "{\"ok\":true}\n") ? -1 : 0;
}

static int h_pool(struct gateway *g, const struct admin_req *req, struct admin_resp *resp)
{
	const struct config *cfg = g->config_get ? g->config_get(g) : gateway_config(g);
	struct buf *b = &resp->body;
	struct views vs;
	int rc = views_take(g, &vs) | buf_appends(b, "{\"pools\":[");

	for (unsigned p = 0; !rc && p < cfg->n_pools; p++) {
		const struct cfg_pool *pool = &cfg->pools[p];
		struct ep_view *eps =
			calloc(pool->n_endpoints ? pool->n_endpoints : 1, sizeof(*eps));
		bool f = true;

		if (!eps) {
			rc = -1;
			break;
		}
		pool_view(&vs, pool, eps);
		rc |= (p ? buf_append(b, ",", 1) : 0) | buf_append(b, "{", 1);
		rc |= jstr(b, &f, "name", pool->name);
		rc |= jstr(b, &f, "balance",
			   pool->balance == CFG_BALANCE_ROUND_ROBIN ? "round_robin" : "p2c");
		rc |= jkey(b, &f, "endpoints") | buf_append(b, "[", 1);
		for (unsigned e = 0; e < pool->n_endpoints; e++) {
			bool f2 = true;

			rc |= (e ? buf_append(b, ",", 1) : 0) | buf_append(b, "{", 1);
			rc |= jstr(b, &f2, "address", eps[e].address);
			rc |= ju64(b, &f2, "weight", eps[e].weight);
			rc |= ju64(b, &f2, "inflight", eps[e].inflight);
			rc |= ju64(b, &f2, "requests", eps[e].requests);
			rc |= ju64(b, &f2, "fails", eps[e].fails);
			rc |= jstr(b, &f2, "state", ep_state(&eps[e]));
			rc |= jbool(b, &f2, "healthy", eps[e].rep.healthy);
			rc |= jbool(b, &f2, "ejected", eps[e].rep.ejected);
			rc |= ju64(b, &f2, "ejected_for_ms", eps[e].rep.ejected_for_ms);
			rc |= ju64(b, &f2, "ejections", eps[e].rep.n_ejections);
			rc |= jstr(b, &f2, "breaker", eps[e].rep.breaker);
			rc |= jbool(b, &f2, "available", eps[e].rep.available);
			rc |= ju64(b, &f2, "ramp_permille", eps[e].rep.ramp_permille);
			rc |= ju64(b, &f2, "failures", eps[e].rep.failures);
			rc |= ju64(b, &f2, "latency_ewma_us", eps[e].ewma_us);
			rc |= buf_append(b, "}", 1);
		}
		rc |= buf_appends(b, "]}");
		free(eps);
	}
	rc |= buf_appends(b, "]}\n");
	views_free(&vs);
	if (g->config_put)
		g->config_put(g, cfg);
	return rc ? -1 : 0;
}

/* ---- HTTP ------------------------------------------------------------------ */

static void queue_response(struct aconn *c, int status, const char *ctype, const char *body,
			   size_t len, bool head_only, const char *extra)
{
	int rc = buf_appendf(&c->out,
			     "HTTP/1.1 %d %s\r\n"
			     "Content-Type: %s\r\n"
			     "Content-Length: %zu\r\n"
			     "Cache-Control: no-store\r\n"
			     "%s"
			     "Connection: %s\r\n\r\n",
			     status, respond_status_text(status), ctype, len, extra ? extra : "",
			     c->close_after_write ? "close" : "keep-alive");

	if (!rc && !head_only && len)
		rc = buf_append(&c->out, body, len);
	if (rc) { /* out of memory: nothing sensible can follow on this connection */
		c->close_after_write = true;
		c->peer_gone = true;
	}
}

static void queue_error(struct aconn *c, int status, const char *reason, const char *extra)
{
	struct buf b = {0};

	if (buf_appends(&b, "{\"error\":") || jsonw_buf_str(&b, reason) || buf_appends(&b, "}\n")) {
		c->close_after_write = c->peer_gone = true;
		buf_free(&b);
		return;
	}
	queue_response(c, status, "application/json", buf_head(&b), b.len, false, extra);
	buf_free(&b);
}

static bool str_is(struct http_str s, const char *lit)
{
	return s.len == strlen(lit) && !memcmp(s.p, lit, s.len);
}

static void audit_record(struct admin *a, const char *who, const char *what, int status,
			 const char *detail)
{
	char result[320];

	if (!a->audit)
		return;
	if (status >= 200 && status < 300)
		snprintf(result, sizeof(result), "ok");
	else
		snprintf(result, sizeof(result), "%d%s%s", status, detail && *detail ? ": " : "",
			 detail ? detail : "");
	int rc = audit_append(a->audit, who, what, result);
	if (rc)
		log_error("admin: audit log %s: %s", a->audit_path, strerror(-rc));
}

/* One complete request (head parsed, body present). */
static void dispatch(struct admin *a, struct aconn *c, const struct http_request *req,
		     const char *body, size_t body_len)
{
	struct http_str path = req->path, query = {NULL, 0};
	const char *q = memchr(path.p, '?', path.len);
	bool head_only = str_is(req->method, "HEAD");
	struct admin_route *match = NULL;
	bool path_known = false;
	char allow[256] = "", what[400];

	a->requests++;
	if (q) {
		query.p = q + 1;
		query.len = path.len - (size_t)(q - path.p) - 1;
		path.len = (size_t)(q - path.p);
	}
	for (unsigned i = 0; i < n_routes; i++) {
		struct admin_route *r = &routes[i];
		size_t rl = strlen(r->path);
		bool pm = r->prefix ? path.len >= rl && !memcmp(path.p, r->path, rl)
				    : str_is(path, r->path);

		if (!pm)
			continue;
		path_known = true;
		if (str_is(req->method, r->method) || (head_only && !strcmp(r->method, "GET"))) {
			match = r;
			break;
		}
		if (!strstr(allow, r->method) &&
		    strlen(allow) + strlen(r->method) + 3 < sizeof(allow)) {
			if (*allow)
				strcat(allow, ", ");
			strcat(allow, r->method);
		}
	}
	if (!match) {
		if (!path_known) {
			queue_error(c, 404, "no such admin endpoint", NULL);
		} else {
			char extra[300];
			snprintf(extra, sizeof(extra), "Allow: %s\r\n", allow);
			queue_error(c, 405, "method not allowed", extra);
		}
		return;
	}

	const struct config *cfg = a->g->config_get ? a->g->config_get(a->g) : gateway_config(a->g);
	sync_config(a, cfg);
	if (a->g->config_put)
		a->g->config_put(a->g, cfg);

	snprintf(what, sizeof(what), "%.*s %.*s", (int)req->method.len, req->method.p,
		 (int)(path.len > 300 ? 300 : path.len), path.p);
	const char *who = NULL;
	if (match->mutation) {
		who = authenticate(a, req);
		if (!who) {
			a->unauthorized++;
			bool had = http_find_header(req->headers, req->n_headers, "Authorization");
			audit_record(a, "-", what, 401, had ? "wrong token" : "no token");
			queue_error(c, 401,
				    a->n_tokens ? "a valid bearer token is required"
						: "mutations are disabled: no admin token_file",
				    "WWW-Authenticate: Bearer realm=\"reflex\"\r\n");
			return;
		}
	}

	struct admin_req areq = {
		.method = req->method,
		.path = path,
		.query = query,
		.headers = req->headers,
		.n_headers = req->n_headers,
		.body = body,
		.body_len = body_len,
		.who = who,
		.fd = c->fd,
	};
	struct admin_resp resp = {.status = 200, .content_type = "application/json"};
	int rc = match->h(a->g, &areq, &resp);

	if (rc) {
		resp.status = 500;
		resp.content_type = "application/json";
		buf_reset(&resp.body, 0);
		buf_appends(&resp.body, "{\"error\":\"internal error\"}\n");
	}
	if (match->mutation) {
		char detail[256] = "";

		if (resp.status >= 300 && resp.body.len)
			snprintf(detail, sizeof(detail), "%.*s",
				 (int)(resp.body.len > 200 ? 200 : resp.body.len),
				 buf_head(&resp.body));
		/* the handler's own account of what it did wins over "METHOD PATH" */
		audit_record(a, who, resp.audit[0] ? resp.audit : what, resp.status, detail);
	}
	if (resp.takeover) {
		/* the handler owns the socket now (streaming responses) */
		c->fd = -1;
		c->close_after_write = true;
		buf_free(&resp.body);
		return;
	}
	queue_response(c, resp.status, resp.content_type ? resp.content_type : "application/json",
		       buf_head(&resp.body), resp.body.len, head_only, NULL);
	buf_free(&resp.body);
}

/* Handle every complete request in c->in. */
static void process(struct admin *a, struct aconn *c)
{
	const struct http_limits lim = {
		.max_request_line = ADMIN_HEAD_MAX,
		.max_head_bytes = ADMIN_HEAD_MAX,
		.max_headers = ADMIN_MAX_HEADERS,
	};

	while (!c->close_after_write && c->fd >= 0 && c->in.len && c->out.len < ADMIN_OUT_HIGH) {
		struct http_header hdrs[ADMIN_MAX_HEADERS];
		struct http_request req = {.headers = hdrs, .max_headers = ADMIN_MAX_HEADERS};
		struct http_error perr = {0};
		int n = http_parse_request(buf_head(&c->in), c->in.len, &req, &lim, &perr);

		if (n == -2)
			return;
		if (n < 0) {
			char why[200];
			snprintf(why, sizeof(why), "malformed request: %s",
				 perr.reason ? perr.reason : "invalid");
			c->close_after_write = true;
			queue_error(c, perr.status ? perr.status : 400, why, NULL);
			return;
		}
		uint64_t cl = 0;
		if (req.body == HTTP_BODY_CHUNKED) {
			c->close_after_write = true;
			queue_error(c, 411, "send the body with Content-Length", NULL);
			return;
		}
		if (req.body == HTTP_BODY_LENGTH)
			cl = req.content_length;
		if (cl > ADMIN_BODY_MAX) {
			c->close_after_write = true;
			queue_error(c, 413, "admin request bodies are limited to 1 MiB", NULL);
			return;
		}
		if (c->in.len < (size_t)n + cl) {
			if (req.expect_continue && !c->sent_continue) {
				buf_appends(&c->out, "HTTP/1.1 100 Continue\r\n\r\n");
				c->sent_continue = true;
			}
			return;
		}
		if (!req.keep_alive)
			c->close_after_write = true;
		dispatch(a, c, &req, buf_head(&c->in) + n, (size_t)cl);
		buf_consume(&c->in, (size_t)n + (size_t)cl);
		c->sent_continue = false;
	}
}

/* ---- connections --------------------------------------------------------------- */

static void conn_free(struct admin *a, struct aconn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	buf_free(&c->in);
	buf_free(&c->out);
	a->n_conns--;
}

static void conn_flush(struct aconn *c)
{
	while (c->out.len) {
		ssize_t n = send(c->fd, buf_head(&c->out), c->out.len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			c->peer_gone = true;
			buf_reset(&c->out, 0);
			return;
		}
		buf_consume(&c->out, (size_t)n);
		c->deadline_ms = now_ms() + ADMIN_TIMEOUT_MS;
	}
}

/* Read what is there; false when the peer closed or failed. */
static bool conn_read(struct aconn *c)
{
	for (;;) {
		if (c->in.len >= ADMIN_HEAD_MAX + ADMIN_BODY_MAX + 4096)
			return true; /* process() must make room first */
		if (buf_reserve(&c->in, 16384))
			return false;
		ssize_t n = recv(c->fd, c->in.data + c->in.off + c->in.len,
				 c->in.cap - c->in.off - c->in.len, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return true;
		if (n <= 0)
			return false;
		c->in.len += (size_t)n;
		c->deadline_ms = now_ms() + ADMIN_TIMEOUT_MS;
	}
}

static void accept_all(struct admin *a)
{
	for (;;) {
		int fd = accept4(a->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			return; /* EAGAIN, or EMFILE: try again at the next poll */
		}
		/* Full: the connection without progress for longest gives up
		 * its slot (one with nothing left to send first), so a newcomer
		 * (a health probe) is served even while the table is held by
		 * clients that send or read nothing useful. */
		if (a->n_conns >= ADMIN_MAX_CONNS) {
			struct aconn *victim = NULL;

			for (unsigned i = 0; i < ADMIN_MAX_CONNS; i++) {
				struct aconn *c = &a->conns[i];

				if (c->fd < 0)
					continue;
				if (!victim || (!c->out.len && victim->out.len) ||
				    (!c->out.len == !victim->out.len &&
				     c->deadline_ms < victim->deadline_ms))
					victim = c;
			}
			if (victim) {
				a->evicted++;
				conn_free(a, victim);
			}
		}
		if (a->n_conns >= ADMIN_MAX_CONNS) {
			static const char busy[] =
				"HTTP/1.1 503 Service Unavailable\r\nContent-Type: "
				"application/json\r\n"
				"Content-Length: 42\r\nConnection: close\r\n\r\n"
				"{\"error\":\"too many admin connections\"}\n\n";
			ssize_t n = send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
			(void)n;
			close(fd);
			continue;
		}
		for (unsigned i = 0; i < ADMIN_MAX_CONNS; i++) {
			struct aconn *c = &a->conns[i];

			if (c->fd >= 0)
				continue;
			memset(c, 0, sizeof(*c));
			c->fd = fd;
			c->deadline_ms = now_ms() + ADMIN_TIMEOUT_MS;
			a->n_conns++;
			break;
		}
	}
}

/* 0, -EADDRINUSE (someone holds the address now: worth retrying), or -1
 * (with err) for anything else. */
static int open_listener(struct admin *a, const struct cfg_admin *ca, char *err, size_t errlen)
{
	int family = ca->listen.ss.ss_family, fd, one = 1, rc = -1;

	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "admin listen %s: socket: %s", ca->listen.text,
			 strerror(errno));
		return -1;
	}
	if (family == AF_UNIX) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)&ca->listen.ss;
		struct stat st;

		/* a socket file nobody answers on (left by a dead gateway) is
		 * replaced; a live one is in use; anything else at that path is
		 * not ours to remove */
		if (lstat(un->sun_path, &st) == 0) {
			if (!S_ISSOCK(st.st_mode)) {
				snprintf(err, errlen, "admin listen %s: exists and is not a socket",
					 un->sun_path);
				goto fail;
			}
			int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
			bool live = probe >= 0 &&
				    connect(probe, (const struct sockaddr *)&ca->listen.ss,
					    ca->listen.len) == 0;
			if (probe >= 0)
				close(probe);
			if (live) {
				snprintf(err, errlen, "admin listen %s: %s", un->sun_path,
					 strerror(EADDRINUSE));
				rc = -EADDRINUSE;
				goto fail;
			}
			unlink(un->sun_path);
		}
	} else {
		/* no SO_REUSEPORT: two gateways must not share (and split) one
		 * admin port; an upgraded process waits for the old one instead */
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	}
	if (bind(fd, (const struct sockaddr *)&ca->listen.ss, ca->listen.len)) {
		if (errno == EADDRINUSE)
			rc = -EADDRINUSE;
		snprintf(err, errlen, "admin listen %s: %s", ca->listen.text, strerror(errno));
		goto fail;
	}
	if (listen(fd, 64)) {
		snprintf(err, errlen, "admin listen %s: %s", ca->listen.text, strerror(errno));
		goto fail;
	}
	if (family == AF_UNIX) {
		const struct sockaddr_un *un = (const struct sockaddr_un *)&ca->listen.ss;
		struct stat st;

		snprintf(a->unix_path, sizeof(a->unix_path), "%s", un->sun_path);
		if (stat(un->sun_path, &st) == 0) {
			a->unix_dev = st.st_dev;
			a->unix_ino = st.st_ino;
		}
	}
	a->lfd = fd;
	return 0;
fail:
	close(fd);
	return rc;
}

/* The address was in use at start: try again every ADMIN_RETRY_MS. */
static void retry_listener(struct admin *a, int64_t now)
{
	char err[512];

	if (a->lfd >= 0 || now < a->next_bind_ms)
		return;
	a->next_bind_ms = now + ADMIN_RETRY_MS;
	if (open_listener(a, &a->listen_cfg, err, sizeof(err)) == 0)
		log_info("admin API on %s (the address is free now)", a->listen_cfg.listen.text);
}

static void *admin_main(void *arg)
{
	struct admin *a = arg;
	struct pollfd pfd[ADMIN_MAX_CONNS + 2];
	struct aconn *map[ADMIN_MAX_CONNS + 2];

	for (;;) {
		int64_t now = now_ms(), next = now + 1000;
		unsigned n = 0;

		retry_listener(a, now);
		if (a->lfd < 0 && a->next_bind_ms < next)
			next = a->next_bind_ms;

		pfd[n++] = (struct pollfd){.fd = a->stop_fd, .events = POLLIN};
		pfd[n++] = (struct pollfd){.fd = a->lfd, .events = POLLIN};
		for (unsigned i = 0; i < ADMIN_MAX_CONNS; i++) {
			struct aconn *c = &a->conns[i];
			short ev = 0;

			if (c->fd < 0)
				continue;
			if (!c->close_after_write &&
			    c->in.len < ADMIN_HEAD_MAX + ADMIN_BODY_MAX + 4096)
				ev |= POLLIN;
			if (c->out.len)
				ev |= POLLOUT;
			map[n] = c;
			pfd[n++] = (struct pollfd){.fd = c->fd, .events = ev};
			if (c->deadline_ms < next)
				next = c->deadline_ms;
			if (c->request_deadline_ms && c->request_deadline_ms < next)
				next = c->request_deadline_ms;
		}
		int rc = poll(pfd, n, next > now ? (int)(next - now) : 0);
		if (rc < 0 && errno != EINTR) {
			log_error("admin: poll: %s", strerror(errno));
			break;
		}
		if (pfd[0].revents)
			break;
		if (rc > 0 && pfd[1].revents)
			accept_all(a);
		now = now_ms();
		for (unsigned k = 2; k < n; k++) {
			struct aconn *c = map[k];
			short re = rc > 0 ? pfd[k].revents : 0;

			if (re & (POLLIN | POLLHUP | POLLERR)) {
				if (!conn_read(c))
					c->peer_gone = true;
			}
			if (c->in.len && !c->peer_gone)
				process(a, c);
			else if (c->in.len && c->peer_gone && !c->close_after_write)
				process(a, c); /* answer what arrived before the FIN */
			if (c->fd < 0) {       /* taken over by a streaming handler */
				c->fd = -1;
				buf_free(&c->in);
				buf_free(&c->out);
				a->n_conns--;
				continue;
			}
			if (!c->in.len || c->close_after_write)
				c->request_deadline_ms = 0;
			else if (!c->request_deadline_ms)
				c->request_deadline_ms = now + ADMIN_TIMEOUT_MS;
			else if (now >= c->request_deadline_ms) {
				c->close_after_write = true;
				c->request_deadline_ms = 0;
				buf_reset(&c->in, 0);
				queue_error(c, 408, "the request did not arrive in time", NULL);
			}
			if (c->out.len)
				conn_flush(c);
			if (c->peer_gone || (c->close_after_write && !c->out.len) ||
			    now >= c->deadline_ms) {
				if (!c->peer_gone && c->close_after_write)
					shutdown(c->fd, SHUT_WR);
				conn_free(a, c);
			}
		}
	}
	for (unsigned i = 0; i < ADMIN_MAX_CONNS; i++)
		if (a->conns[i].fd >= 0)
			conn_free(a, &a->conns[i]);
	return NULL;
}

static void register_builtins(void)
{
	/* -EEXIST: already registered by an earlier start (tests start twice) */
	admin_register("GET", "/healthz", false, h_healthz);
	admin_register("GET", "/readyz", false, h_readyz);
	admin_register("GET", "/metrics", false, h_metrics);
	admin_register("GET", "/stats", false, h_stats);
	admin_register("GET", "/config", false, h_config);
	admin_register("GET", "/pool", false, h_pool);
	admin_register("POST", "/reload", true, h_reload);
}

/* Loopback or a Unix socket: reachable from this host only. */
static bool is_loopback(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_UNIX)
		return true;
	if (ss->ss_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr) >> 24) == 127;
	if (ss->ss_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)ss)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) ||
		       (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

struct admin *admin_start(struct gateway *g, char *err, size_t errlen)
{
	const struct config *cfg = g->config_get ? g->config_get(g) : gateway_config(g);
	struct admin *a = calloc(1, sizeof(*a));
	int rc;

	if (!a) {
		snprintf(err, errlen, "out of memory");
		goto out_put;
	}
	a->g = g;
	a->lfd = a->stop_fd = -1;
	for (unsigned i = 0; i < ADMIN_MAX_CONNS; i++)
		a->conns[i].fd = -1;
	if (!cfg->admin.enabled) {
		snprintf(err, errlen, "the admin API is off");
		goto fail;
	}
	register_builtins();
	if (cfg->admin.token_file[0]) {
		if (tokens_load(cfg->admin.token_file, a->tokens, &a->n_tokens, err, errlen))
			goto fail;
		snprintf(a->token_file, sizeof(a->token_file), "%s", cfg->admin.token_file);
	} else {
		log_warn("admin: no token_file: every mutation is refused (401)");
	}
	if (cfg->admin.audit_log[0]) {
		a->audit = audit_open(cfg->admin.audit_log, err, errlen);
		if (!a->audit)
			goto fail;
		snprintf(a->audit_path, sizeof(a->audit_path), "%s", cfg->admin.audit_log);
	}
	a->seen_cfg = cfg;
	snprintf(a->listen_text, sizeof(a->listen_text), "%s", cfg->admin.listen.text);
	a->listen_cfg = cfg->admin;
	rc = open_listener(a, &cfg->admin, err, errlen);
	if (rc == -EADDRINUSE) {
		/* degrade loudly, never take the data path down with it */
		log_error("%s; the admin API retries every %d ms", err, ADMIN_RETRY_MS);
		a->next_bind_ms = now_ms() + ADMIN_RETRY_MS;
	} else if (rc) {
		goto fail;
	}
	a->stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (a->stop_fd < 0) {
		snprintf(err, errlen, "admin: eventfd: %s", strerror(errno));
		goto fail;
	}
	the_admin = a;
	rc = pthread_create(&a->thread, NULL, admin_main, a);
	if (rc) {
		the_admin = NULL;
		snprintf(err, errlen, "admin: cannot start its thread: %s", strerror(rc));
		goto fail;
	}
	log_info("admin API %s %s (%u token%s, audit %s)", a->lfd >= 0 ? "on" : "waiting for",
		 cfg->admin.listen.text, a->n_tokens, a->n_tokens == 1 ? "" : "s",
		 a->audit ? a->audit_path : "off");
	if (!is_loopback(&cfg->admin.listen.ss))
		log_warn("admin: %s is not a loopback address: /config, /stats, /metrics and "
			 "/pool are open to anyone who can reach it (mutations still need a token)",
			 cfg->admin.listen.text);
	if (g->config_put)
		g->config_put(g, cfg);
	return a;
fail:
	if (a->lfd >= 0)
		close(a->lfd);
	if (a->unix_path[0])
		unlink(a->unix_path);
	if (a->stop_fd >= 0)
		close(a->stop_fd);
	audit_close(a->audit);
	tokens_clear(a->tokens, &a->n_tokens);
	free(a);
out_put:
	if (g->config_put)
		g->config_put(g, cfg);
	return NULL;
}

void admin_stop(struct admin *a)
{
	uint64_t one = 1;
	struct stat st;

	if (!a)
		return;
	if (write(a->stop_fd, &one, sizeof(one)) < 0)
		log_warn("admin: stop: %s", strerror(errno));
	pthread_join(a->thread, NULL);
	if (a->lfd >= 0)
		close(a->lfd);
	/* remove the socket file only if it is still ours (an upgraded process
	 * may have bound a new one at the same path) */
	if (a->unix_path[0] && stat(a->unix_path, &st) == 0 && st.st_dev == a->unix_dev &&
	    st.st_ino == a->unix_ino)
		unlink(a->unix_path);
	close(a->stop_fd);
	audit_close(a->audit);
	tokens_clear(a->tokens, &a->n_tokens);
	if (the_admin == a)
		the_admin = NULL;
	free(a);
}

int admin_check(const struct config *cfg, char *err, size_t errlen)
{
	struct token t[ADMIN_MAX_TOKENS];
	unsigned n = 0;

	if (!cfg->admin.enabled || !cfg->admin.token_file[0])
		return 0;
	memset(t, 0, sizeof(t));
	if (tokens_load(cfg->admin.token_file, t, &n, err, errlen))
		return -1;
	tokens_clear(t, &n);
	return 0;
}

int admin_address(const struct admin *a, char *out, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[INET6_ADDRSTRLEN];

	if (!a || a->lfd < 0)
		return -ENOTCONN;
	if (getsockname(a->lfd, (struct sockaddr *)&ss, &sl))
		return -errno;
	if (ss.ss_family == AF_UNIX) {
		snprintf(out, len, "%s", a->unix_path);
	} else if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
		snprintf(out, len, "%s:%u", host, ntohs(in->sin_port));
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
		snprintf(out, len, "[%s]:%u", host, ntohs(in6->sin6_port));
	}
	return 0;
}
