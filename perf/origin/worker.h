/* worker.h — one reflex-origin worker: a thread with its own io_uring.
 *
 * Each worker owns its listeners (SO_REUSEPORT sockets created by main and
 * handed over), one io_uring (SINGLE_ISSUER + DEFER_TASKRUN when the kernel
 * has them), a provided-buffer ring for multishot recv, and its connections.
 * Nothing is shared between workers except the counters below, which only
 * /__stats reads across threads (relaxed atomics: a snapshot, not a barrier).
 */
#ifndef REFLEX_ORIGIN_WORKER_H
#define REFLEX_ORIGIN_WORKER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* Per-worker counters, one cache line each, summed by /__stats. */
struct worker_stats {
	_Atomic uint64_t requests; /* request heads parsed, /__stats excluded */
	_Atomic uint64_t accepted; /* TCP connections accepted */
	_Atomic uint64_t closed;   /* TCP connections closed */
} __attribute__((aligned(64)));

/* Process-wide settings, written by main before any worker starts and
 * read-only afterwards. */
struct origin_config {
	const char *name; /* X-Origin value */
	unsigned n_workers;
	struct worker_stats *stats; /* n_workers entries */
	pthread_barrier_t *ready;   /* every worker waits here once it accepts */
};

extern struct origin_config origin_cfg;

/* --slow MS: extra delay added to every response (not /__stats) while
 * switched on (SIGUSR1 on, SIGUSR2 off): one endpoint made slow for the
 * pool tests and benchmarks. 0 while off. Written by main, read by workers. */
extern _Atomic uint64_t origin_slow_ms;

struct worker_args {
	unsigned id;
	int *listen_fds; /* listening sockets owned by this worker from now on */
	unsigned n_listen;
};

/* Thread entry (arg: struct worker_args *). Sets up the ring, waits on
 * origin_cfg.ready, then serves until the process exits. On a setup error it
 * prints the reason and exits the process with status 1. */
void *worker_main(void *arg);

#endif
