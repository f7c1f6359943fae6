/* reflexd — the Reflex gateway daemon.
 *
 * The main thread reads the configuration, starts one worker per core (each
 * with its own ring and listeners), the admin API thread and the access-log
 * writer, then only waits for signals:
 *   SIGTERM, SIGINT  drain: stop accepting, finish in-flight requests (up to
 *                    timeouts.drain), exit 0
 *   SIGHUP           reload the configuration (same file and flags)
 *   SIGUSR1          reopen the access log (logrotate)
 *   SIGUSR2          binary upgrade: start the binary again with
 *                    --upgrade-from <this pid>; it takes over the listening
 *                    sockets, and this process drains once it serves
 *
 * Configuration snapshots are reference counted here: the gateway handle
 * holds one on the current snapshot and every worker one on each snapshot it
 * still uses (workers let go when the last request routed with it ends).
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin.h"
#include "http/cache.h"
#include "core/accesslog.h"
#include "core/config.h"
#include "core/log.h"
#include "core/notify.h"
#include "core/privs.h"
#include "core/sock.h"
#include "core/upgrade.h"
#include "gateway.h"
#include "http/accept.h"
#include "http/limit_admin.h"
#include "http/anomaly_trace.h"
#include "http/limit_kernel.h"
#include "http/reflex.h"
#include "http/worker.h"

#ifndef REFLEX_VERSION
#define REFLEX_VERSION "0.1.0"
#endif

static struct gateway G;
static int saved_argc;
static char **saved_argv;
static char exe_path[PATH_MAX];
static pthread_t main_thread;
static bool upgrade_handed_over; /* set by the upgrade thread before it signals */

/* ---- configuration snapshots -------------------------------------------- */

struct snapshot {
	const struct config *cfg;
	int refs;
	struct snapshot *next;
};
static pthread_mutex_t snap_mu = PTHREAD_MUTEX_INITIALIZER;
static struct snapshot *snaps;
static pthread_mutex_t reload_mu = PTHREAD_MUTEX_INITIALIZER;

static void snap_add(const struct config *cfg, int refs)
{
	struct snapshot *s = calloc(1, sizeof(*s));

	if (!s) {
		log_error("out of memory tracking a configuration snapshot; it will never be freed");
		return;
	}
	pthread_mutex_lock(&snap_mu);
	*s = (struct snapshot){ .cfg = cfg, .refs = refs, .next = snaps };
	snaps = s;
	pthread_mutex_unlock(&snap_mu);
}

/* snap_mu held; returns the snapshot to free (outside the lock) or NULL. */
static struct config *snap_ref_locked(const struct config *cfg, int delta)
{
	struct config *free_me = NULL;

	for (struct snapshot **pp = &snaps; *pp; pp = &(*pp)->next) {
		struct snapshot *s = *pp;
		if (s->cfg != cfg)
			continue;
		s->refs += delta;
		if (s->refs <= 0) {
			*pp = s->next;
			free_me = (struct config *)s->cfg;
			free(s);
		}
		break;
	}
	return free_me;
}

static void snap_ref(const struct config *cfg, int delta)
{
	pthread_mutex_lock(&snap_mu);
	struct config *free_me = snap_ref_locked(cfg, delta);
	pthread_mutex_unlock(&snap_mu);
	config_free(free_me);
}

static void release_cfg(void *ctx, const struct config *cfg)
{
	snap_ref(cfg, -1);
}

/* snap_mu, not reload_mu: a reload holds reload_mu while it loads the file,
 * resolves names and compiles rules (seconds), and the admin API (/healthz)
 * must not wait for that. reload_config swaps g->cfg under snap_mu, so
 * reading the pointer and taking its reference is one step against the swap
 * and the release of the old snapshot. */
static const struct config *config_get(struct gateway *g)
{
	pthread_mutex_lock(&snap_mu);
	const struct config *c = g->cfg;
	struct config *none = snap_ref_locked(c, +1);
	pthread_mutex_unlock(&snap_mu);
	(void)none; /* +1 never frees */
	return c;
}

static void config_put(struct gateway *g, const struct config *c)
{
	snap_ref(c, -1);
}

/* ---- reload ------------------------------------------------------------- */

static bool has_listen(const struct config *c, const struct cfg_addr *a)
{
	for (unsigned i = 0; i < c->n_listens; i++)
		if (c->listens[i].len == a->len && memcmp(&c->listens[i].ss, &a->ss, a->len) == 0)
			return true;
	return false;
}

static int reload_config(struct gateway *g, char *err, size_t errlen)
{
	struct config *ncfg = NULL;
	enum config_action action;

	pthread_mutex_lock(&reload_mu);
	if (config_from_args(saved_argc, saved_argv, &ncfg, &action, err, errlen) != 0) {
		pthread_mutex_unlock(&reload_mu);
		config_free(ncfg);
		log_error("reload refused, the running configuration stays: %s", err);
		return -1;
	}
	/* A new listen address must be bindable before anything changes, so
	 * the answer to the reload is the truth. */
	for (unsigned i = 0; i < ncfg->n_listens; i++) {
		const struct cfg_addr *a = &ncfg->listens[i];
		if (a->ss.ss_family == AF_UNIX || has_listen(g->cfg, a))
			continue;
		int fd = sock_listen((const struct sockaddr *)&a->ss, a->len, 16);
		if (fd < 0) {
			snprintf(err, errlen, "%s%slisten %s: %s", ncfg->source,
				 ncfg->source[0] ? ": " : "", a->text, strerror(-fd));
			pthread_mutex_unlock(&reload_mu);
			config_free(ncfg);
			log_error("reload refused, the running configuration stays: %s", err);
			return -1;
		}
		close(fd);
	}
	if (ncfg->workers != g->n_workers)
		log_warn("reload: workers %u → %u takes effect at the next restart or upgrade",
			 g->n_workers, ncfg->workers);
	snap_add(ncfg, (int)g->n_workers + 1);
	pthread_mutex_lock(&snap_mu); /* against config_get */
	const struct config *old = g->cfg;
	__atomic_store_n(&g->cfg, ncfg, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&snap_mu);
	snap_ref(old, -1);
	limit_kernel_reload(ncfg); /* rate limits: L7 policy and the kernel layer, live */
	for (unsigned i = 0; i < g->n_workers; i++)
		worker_reload(&g->workers[i], ncfg);
	pthread_mutex_unlock(&reload_mu);
	/* Answer once the workers route with it (microseconds; a worker stuck
	 * for 2 s is not waited for): whoever asked may send the next request
	 * at once and expects the new rules. */
	for (unsigned i = 0; i < g->n_workers; i++)
		if (!worker_wait_config(&g->workers[i], ncfg, 2000))
			log_warn("reload: worker %u has not switched yet", i);
	log_info("configuration reloaded%s%s", ncfg->source[0] ? " from " : "", ncfg->source);
	return 0;
}

/* SIGHUP and POST /reload: the service manager sees RELOADING=1, then
 * READY=1 whether or not the new file was taken (the old one keeps serving). */
static int do_reload(struct gateway *g, char *err, size_t errlen)
{
	notify_reloading();
	int rc = reload_config(g, err, errlen);
	notify_ready();
	__atomic_fetch_add(rc ? &g->reloads_failed : &g->reloads_ok, 1, __ATOMIC_RELAXED);
	pthread_mutex_lock(&g->reload_status_mu);
	g->last_reload = time(NULL);
	g->last_reload_ok = rc == 0;
	snprintf(g->last_reload_error, sizeof(g->last_reload_error), "%s", rc ? err : "");
	pthread_mutex_unlock(&g->reload_status_mu);
	return rc;
}

static void do_shutdown(struct gateway *g)
{
	pthread_kill(main_thread, SIGTERM);
}

/* ---- upgrade ------------------------------------------------------------ */

/* The old side: serve hand-off requests for as long as we run. */
static void *upgrade_thread(void *arg)
{
	int lfd = (int)(intptr_t)arg;

	for (;;) {
		int fds[UPGRADE_MAX_FDS];
		unsigned n = 0;
		pthread_mutex_lock(&reload_mu);
		for (unsigned i = 0; i < G.n_workers && n < UPGRADE_MAX_FDS; i++)
			n += accept_fds(&G.workers[i], fds + n, UPGRADE_MAX_FDS - n);
		pthread_mutex_unlock(&reload_mu);
		int rc = upgrade_serve(lfd, fds, n, 15000);
		if (rc == 0) {
			log_info("upgrade: the new process serves %u listening sockets; draining", n);
			__atomic_store_n(&upgrade_handed_over, true, __ATOMIC_RELEASE);
			pthread_kill(main_thread, SIGTERM);
			return NULL;
		}
		log_warn("upgrade: hand-off failed (%s); still serving", strerror(-rc));
	}
	return NULL;
}

static void spawn_upgrade(void)
{
	char pid[24];
	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	char **argv = calloc((size_t)saved_argc + 3, sizeof(*argv));
	if (!argv)
		return;
	argv[0] = exe_path;
	for (int i = 1; i < saved_argc; i++)
		argv[i] = saved_argv[i];
	argv[saved_argc] = "--upgrade-from";
	argv[saved_argc + 1] = pid;

	pid_t child = fork();
	if (child == 0) {
		sigset_t none;
		sigemptyset(&none);
		pthread_sigmask(SIG_SETMASK, &none, NULL);
		execv(exe_path, argv);
		fprintf(stderr, "reflexd: upgrade: exec %s: %s\n", exe_path, strerror(errno));
		_exit(127);
	}
	free(argv);
	if (child < 0)
		log_error("upgrade: fork: %s", strerror(errno));
	else
		log_info("upgrade: started %s as pid %d", exe_path, (int)child);
}

/* Pull "--upgrade-from PID" out of argv (config.c does not know it). */
static pid_t take_upgrade_flag(int *argc, char **argv)
{
	pid_t pid = 0;
	int j = 0;

	for (int i = 0; i < *argc; i++) {
		if (strcmp(argv[i], "--upgrade-from") == 0 && i + 1 < *argc) {
			pid = (pid_t)atoi(argv[++i]);
			continue;
		}
		argv[j++] = argv[i];
	}
	argv[j] = NULL;
	*argc = j;
	return pid;
}

static int fetch_inherited(pid_t old, struct inherited_fds *in, int *conn)
{
	static int fds[UPGRADE_MAX_FDS];
	static struct sockaddr_storage ss[UPGRADE_MAX_FDS];
	static socklen_t len[UPGRADE_MAX_FDS];
	int n = upgrade_fetch(old, fds, UPGRADE_MAX_FDS, conn);

	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		len[i] = sizeof(ss[i]);
		if (getsockname(fds[i], (struct sockaddr *)&ss[i], &len[i]) != 0)
			len[i] = 0;
	}
	*in = (struct inherited_fds){ .n = (unsigned)n, .fd = fds, .ss = ss, .len = len };
	return n;
}

/* ---- main --------------------------------------------------------------- */

static void raise_nofile(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
}

/* A log file reflexd will open for appending must not be a directory. A
 * missing directory is not checked: systemd's LogsDirectory= creates it
 * only when the service starts, and the file may be checked elsewhere. */
static int check_log_path(const char *key, const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (!path[0] || !strcmp(path, "-"))
		return 0;
	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "%s: %s is a directory", key, path);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct config *cfg = NULL;
	enum config_action action;
	char err[1024];

	pid_t upgrade_from = take_upgrade_flag(&argc, argv);
	saved_argc = argc;
	saved_argv = argv;
	if (!realpath("/proc/self/exe", exe_path))
		snprintf(exe_path, sizeof(exe_path), "%s", argv[0]);

	reflex_install(); /* rules compile with each config load; GET/POST/DELETE /rules */
	if (config_from_args(argc, argv, &cfg, &action, err, sizeof(err)) != 0) {
		fprintf(stderr, "reflexd: %s\n", err);
		if (action == CONFIG_CHECK)
			fprintf(stderr, "reflexd: configuration is invalid\n");
		return action == CONFIG_CHECK ? 1 : 2;
	}
	switch (action) {
	case CONFIG_HELP:
		fputs(config_usage(), stdout);
		config_free(cfg);
		return 0;
	case CONFIG_VERSION:
		printf("reflexd %s\n", REFLEX_VERSION);
		config_free(cfg);
		return 0;
	case CONFIG_CHECK: {
		/* what the start would refuse, without starting anything */
		int bad =
			admin_check(cfg, err, sizeof(err)) ||
			check_log_path("access_log", cfg->access_log, err, sizeof(err)) ||
			(cfg->admin.enabled &&
			 check_log_path("admin.audit_log", cfg->admin.audit_log, err, sizeof(err)));

		if (bad) {
			fprintf(stderr, "reflexd: %s%s%s\nreflexd: configuration is invalid\n",
				cfg->source[0] ? cfg->source : "", cfg->source[0] ? ": " : "", err);
		} else {
			printf("reflexd: configuration %s is valid\n",
			       cfg->source[0] ? cfg->source : "(flags)");
		}
		config_free(cfg);
		return bad ? 1 : 0;
	}
	case CONFIG_RUN:
		break;
	}
	log_set_level(cfg->log_level);
	raise_nofile();
	struct privs_user run_as;
	if (cfg->user[0] && privs_resolve(cfg->user, &run_as, err, sizeof(err))) {
		fprintf(stderr, "reflexd: %s\n", err);
		return 1;
	}

	/* Workers and helper threads inherit this mask: signals are taken only
	 * by the sigwait below. */
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	main_thread = pthread_self();

	G = (struct gateway){
		.n_workers = cfg->workers,
		.cfg = cfg,
		.started = time(NULL),
		.version = REFLEX_VERSION,
		.reload = do_reload,
		.shutdown = do_shutdown,
		.config_get = config_get,
		.config_put = config_put,
		.reload_status_mu = PTHREAD_MUTEX_INITIALIZER,
	};
	snap_add(cfg, (int)cfg->workers + 1);

	if (cfg->access_log[0]) {
		G.alog = accesslog_open(cfg->access_log, cfg->workers, err, sizeof(err));
		if (!G.alog) {
			fprintf(stderr, "reflexd: %s\n", err); /* err names the access log */
			return 1;
		}
	}

	struct inherited_fds inherited = { 0 };
	int upgrade_conn = -1;
	if (upgrade_from > 0) {
		int n = fetch_inherited(upgrade_from, &inherited, &upgrade_conn);
		if (n < 0) {
			fprintf(stderr, "reflexd: --upgrade-from %d: %s\n", (int)upgrade_from,
				strerror(-n));
			return 1;
		}
		inherited.n_workers = cfg->workers;
		log_info("upgrade: took over %d listening sockets from pid %d", n, (int)upgrade_from);
	}

	/* Rate limits: the L7 policy, and the kernel layer loaded and attached
	 * from this thread before any worker accepts (degrades to userspace at
	 * accept when BPF cannot load; says why in one line). */
	limit_kernel_start(cfg);
	/* trace: the eBPF tracer and the anomaly detector on their own thread
	 * (one log line and HTTP signals only when BPF cannot load) */
	anomaly_trace_start(&G);

	G.workers = calloc(cfg->workers, sizeof(*G.workers));
	if (!G.workers) {
		fprintf(stderr, "reflexd: out of memory\n");
		return 1;
	}
	unsigned started = 0;
	for (; started < cfg->workers; started++) {
		struct worker *w = &G.workers[started];
		w->alog = G.alog;
		w->release_cfg = release_cfg;
		w->inherited = upgrade_from > 0 ? &inherited : NULL;
		int rc = worker_start(w, started, cfg);
		if (rc) {
			log_error("worker %u: %s", started, w->start_msg);
			break;
		}
	}
	if (started < cfg->workers) {
		for (unsigned i = 0; i < started; i++)
			worker_drain(&G.workers[i], false);
		for (unsigned i = 0; i < started; i++)
			worker_join(&G.workers[i]);
		return 1;
	}
	/* Inherited sockets for addresses this configuration dropped. */
	for (unsigned i = 0; i < inherited.n; i++) {
		bool used = false;
		for (unsigned j = 0; j < cfg->n_listens; j++)
			if (cfg->listens[j].len == inherited.len[i] &&
			    memcmp(&cfg->listens[j].ss, &inherited.ss[i], inherited.len[i]) == 0)
				used = true;
		if (!used)
			close(inherited.fd[i]);
	}
	for (unsigned i = 0; i < cfg->n_listens; i++)
		fprintf(stderr, "reflexd: listening on %s\n", cfg->listens[i].text);

	struct admin *admin = NULL;
	if (cfg->admin.enabled) {
		cache_admin_register(); /* POST /cache/purge, GET /cache */
		limit_admin_register(); /* /limits, /limits/{policy,top,allow,deny,penalty} */
		anomaly_trace_register_admin(); /* GET /events (list, server-sent events) */
		admin = admin_start(&G, err, sizeof(err));
		if (!admin) {
			log_error("admin API: %s", err);
			for (unsigned i = 0; i < cfg->workers; i++)
				worker_drain(&G.workers[i], false);
			for (unsigned i = 0; i < cfg->workers; i++)
				worker_join(&G.workers[i]);
			return 1;
		}
	}

	int ulfd = upgrade_listen(getpid());
	if (ulfd >= 0) {
		pthread_t ut;
		if (pthread_create(&ut, NULL, upgrade_thread, (void *)(intptr_t)ulfd) == 0)
			pthread_detach(ut);
	} else {
		log_warn("upgrade: cannot listen for hand-off requests: %s", strerror(-ulfd));
	}
	/* Bound and attached: keep only what reload and upgrade need. */
	bool ebpf = cfg->ratelimit.kernel.n_interfaces > 0 || cfg->trace.enabled;
	if (privs_drop(cfg->user[0] ? &run_as : NULL, privs_keep_mask(ebpf), err, sizeof(err))) {
		log_error("privileges: %s", err);
		_exit(1); /* half-dropped privileges must not serve */
	}
	char caps[256];
	privs_mask_names(privs_effective(), caps, sizeof(caps));
	log_info("privileges: uid %d, capabilities %s", (int)geteuid(), caps);
	/* Only now: no client is served by a thread that still held privileges. */
	for (unsigned i = 0; i < cfg->workers; i++)
		worker_serve(&G.workers[i]);
	/* "ready" (and READY=1, and the old process's cue to drain) only once
	 * every worker accepts: a probe or a test that connects right after
	 * is served, not left in the backlog of a worker still starting */
	for (unsigned i = 0; i < cfg->workers; i++)
		if (!worker_wait_serving(&G.workers[i], 5000))
			log_warn("worker %u: not accepting yet after 5 s", i);
	if (upgrade_conn >= 0) {
		int rc = upgrade_ready(upgrade_conn);
		if (rc)
			log_warn("upgrade: the old process did not take our READY: %s", strerror(-rc));
	}
	log_info("reflexd %s: %u workers, %u pools", REFLEX_VERSION, cfg->workers, cfg->n_pools);
	/* Like the "listening on" lines, whatever the log level: scripts and tests wait for it
	 * (listeners take connections into their backlog before this point). */
	fprintf(stderr, "reflexd: ready\n");
	if (upgrade_from > 0)
		notify_mainpid_ready(); /* we are the service's main process now */
	else
		notify_ready();

	for (;;) {
		int sig = 0;
		if (sigwait(&set, &sig) != 0)
			continue;
		if (sig == SIGHUP) {
			if (do_reload(&G, err, sizeof(err)) != 0)
				continue;
			continue;
		}
		if (sig == SIGUSR1) {
			accesslog_reopen(G.alog);
			continue;
		}
		if (sig == SIGUSR2) {
			spawn_upgrade();
			continue;
		}
		break;
	}
	bool handed = __atomic_load_n(&upgrade_handed_over, __ATOMIC_ACQUIRE);
	if (!handed)
		notify_stopping(); /* after a hand-off the new process is the service */
	log_info("%s: draining (deadline %u ms)", handed ? "upgrade" : "signal",
		 G.cfg->timeouts.drain);
	admin_stop(admin);
	for (unsigned i = 0; i < G.n_workers; i++)
		worker_drain(&G.workers[i], handed);
	for (unsigned i = 0; i < G.n_workers; i++)
		worker_join(&G.workers[i]);
	limit_kernel_stop(); /* detaches the kernel limiter */
	anomaly_trace_stop(); /* detaches the tracer */
	accesslog_close(G.alog);
	log_info("drained; exiting");
	return 0;
}
