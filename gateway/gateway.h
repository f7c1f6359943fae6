/* gateway.h — the process-level handle: what the admin API (admin.c) and
 * main.c share. One instance, owned by main.c.
 *
 * Threads: the workers own their state; the admin thread only reads
 * worker state (stats blocks with relaxed atomics, pool in-flight counts as
 * plain racy reads of aligned integers) and asks main.c to act through the
 * function pointers below.
 */
#ifndef REFLEX_GATEWAY_H
#define REFLEX_GATEWAY_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "core/accesslog.h"
#include "core/config.h"

struct worker;

struct gateway {
	struct worker *workers;
	unsigned n_workers;
	/* The current snapshot; replaced by a reload. A reload frees the old
	 * one once no worker uses it, so a thread that reads it for longer than
	 * a moment takes a reference with config_get(). */
	const struct config *cfg;
	struct accesslog *alog; /* NULL when the access log is off */
	time_t started;
	const char *version;

	/* Read, validate and apply the configuration again (the same file and
	 * flags as at start). 0, or -1 with "FILE:LINE: reason" in err; on
	 * error the running configuration stays. Callable from any thread. */
	int (*reload)(struct gateway *g, char *err, size_t errlen);
	/* Begin a graceful drain and exit (as SIGTERM). */
	void (*shutdown)(struct gateway *g);
	/* A counted reference to the current snapshot, safe to use across a
	 * reload; give it back with config_put. */
	const struct config *(*config_get)(struct gateway *g);
	void (*config_put)(struct gateway *g, const struct config *c);

	/* Every reload (SIGHUP or POST /reload), written by main.c under its
	 * reload lock, read by the admin thread: counters with relaxed atomics,
	 * the rest under reload_status_mu. An operator who reloads by signal
	 * sees a refusal in /metrics and /stats, not only in the log. */
	uint64_t reloads_ok, reloads_failed;
	pthread_mutex_t reload_status_mu;
	time_t last_reload;  /* 0: never */
	bool last_reload_ok; /* meaningful once last_reload != 0 */
	char last_reload_error
		[512]; /* "FILE:LINE: reason" of the last refusal, "" once one succeeds */
};

static inline const struct config *gateway_config(struct gateway *g)
{
	return __atomic_load_n(&g->cfg, __ATOMIC_ACQUIRE);
}

#endif
