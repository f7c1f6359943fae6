/* accesslog.h — the JSON access log, written without blocking a worker.
 *
 * Each worker owns a single-producer queue of fixed-size records; one
 * writer thread drains all queues, formats each record as one JSON line
 * and writes it (to a file, or stdout for "-"). A worker never waits: when
 * its queue is full the record is dropped and counted (the count is a
 * metric). accesslog_reopen() — on SIGUSR1, for logrotate — makes the writer
 * reopen the file before its next write.
 *
 * Ownership: accesslog_open() returns the log; the caller closes it after
 * the workers have stopped (accesslog_close flushes what is queued).
 */
#ifndef REFLEX_CORE_ACCESSLOG_H
#define REFLEX_CORE_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/stats.h"

#define ACCESS_NO_TIME UINT32_MAX /* a stage that did not happen */

struct access_record {
	int64_t time_ns; /* CLOCK_REALTIME when the response was finished */
	char id[33];	 /* request id */
	char client[48]; /* client IP */
	char method[16]; /* truncated if longer */
	char host[128];
	char path[512];	   /* without the query unless the config keeps it */
	char upstream[64]; /* endpoint "host:port", "" if none was contacted */
	char pool[32];
	char cache[12];	 /* "" until the cache exists: hit, miss, stale, bypass */
	char reflex[160]; /* "" or the deciding reflex rule: "rule=N action=A detector=D in=P offset=O hash=H" (never the matched text) */
	uint16_t status; /* 0: no response (client gone) */
	uint8_t reason;	 /* enum reason; REASON_NONE for a normal response */
	uint8_t retries;
	uint64_t bytes_in;	  /* request bytes on the wire (head + body) */
	uint64_t bytes_out;	  /* response bytes on the wire */
	uint32_t t_us[STAGE_MAX]; /* timing breakdown in µs, ACCESS_NO_TIME if absent */
	/* TCP retransmits to the upstream endpoint in the last trace window (docs/anomaly.md);
	 * ACCESS_NO_TIME when unknown (no endpoint, tracing off) */
	uint32_t upstream_retransmits;
};

struct accesslog;

/* Open `path` ("-" = stdout) for n_workers producers and start the writer
 * thread. NULL with err filled on failure. */
struct accesslog *accesslog_open(const char *path, unsigned n_workers, char *err, size_t errlen);
/* Worker side: queue a copy of r. Never blocks; drops and counts when full. */
void accesslog_push(struct accesslog *l, unsigned worker, const struct access_record *r);
/* Any thread: reopen the file before the next write. */
void accesslog_reopen(struct accesslog *l);
uint64_t accesslog_dropped(const struct accesslog *l);
uint64_t accesslog_written(const struct accesslog *l);
/* Stop the writer after it has written everything queued; NULL-safe. */
void accesslog_close(struct accesslog *l);

/* Producer helpers. Copy a request target into r->path (truncated to fit),
 * without its query unless keep_query (config access_log.query). */
void accesslog_set_path(struct access_record *r, const char *path, size_t len, bool keep_query);
/* Whether a request is logged under config access_log.sample (0..1), given
 * one random 64-bit value (e.g. worker_rand()). */
bool accesslog_sampled(double sample, uint64_t rnd);

/* One JSON line (with '\n') for r into out; returns its length, or 0 if
 * outlen is too small. Exposed for tests. Field names: see docs. */
size_t accesslog_format(const struct access_record *r, char *out, size_t outlen);

#endif
