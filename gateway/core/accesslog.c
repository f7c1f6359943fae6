/* accesslog.c — per-worker SPSC rings drained by one writer thread.
 *
 * A worker copies a record into its own ring (a few hundred bytes of memcpy
 * and two atomics) and returns; it never formats, never writes, never takes
 * a lock. The writer thread formats the records as JSON lines into a batch
 * buffer and hands the batch to the kernel with one write per 64 KiB or per
 * pass, whichever comes first.
 *
 * Waking the writer: it sleeps on an eventfd only after announcing so in
 * `sleeping`; a producer that sees the flag clears it and writes the
 * eventfd once, so under load (writer busy) pushes cost no syscall. The
 * sleep has a short bound as well, so a lost race costs at most that much
 * latency, never a record.
 */
#include "core/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "core/jsonw.h"
#include "core/log.h"

#define RING_SIZE 4096u /* records per worker; a power of two */
#define BATCH_BYTES (64u << 10)
#define LINE_MAX_BYTES 8192u /* the longest possible line is ~5 KiB */
#define IDLE_WAIT_MS 50

struct ring {
	/* producer side */
	uint32_t head __attribute__((aligned(64)));
	uint64_t dropped;
	/* consumer side */
	uint32_t tail __attribute__((aligned(64)));
	struct access_record *slots;
};

struct accesslog {
	char path[4096];
	int fd;
	bool own_fd; /* false for stdout */
	unsigned n_rings;
	struct ring *rings;

	pthread_t thread;
	int wake_fd;
	int sleeping; /* the writer waits on wake_fd */
	int stop;
	int reopen;
	uint64_t written;
	uint64_t lost; /* formatted but not written (write errors), or bad worker index */

	char *batch;
	size_t batch_len;
	bool write_failing; /* log the first failure of a run only */
};

/* ---- formatting --------------------------------------------------------- */

struct out {
	char *p, *end;
	bool overflow;
};

static void put(struct out *o, const char *s, size_t n)
{
	if ((size_t)(o->end - o->p) < n) {
		o->overflow = true;
		return;
	}
	memcpy(o->p, s, n);
	o->p += n;
}

static void puts_lit(struct out *o, const char *s)
{
	put(o, s, strlen(s));
}

static void put_u64(struct out *o, uint64_t v)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof(tmp), "%llu", (unsigned long long)v);

	put(o, tmp, (size_t)n);
}

/* A JSON string (see jsonw.h for what hostile bytes become). */
static void put_str(struct out *o, const char *s, size_t n)
{
	size_t len = jsonw_escape(o->p, (size_t)(o->end - o->p), s, n);

	if (!len)
		o->overflow = true;
	o->p += len;
}

/* A fixed-size char field: up to its NUL or its size. */
#define FIELD_LEN(f) strnlen((f), sizeof(f))

static void put_field(struct out *o, const char *key, const char *v, size_t n)
{
	puts_lit(o, key);
	put_str(o, v, n);
}

/* null for an empty field (nothing was contacted, no cache yet). */
static void put_opt_field(struct out *o, const char *key, const char *v, size_t n)
{
	puts_lit(o, key);
	if (n)
		put_str(o, v, n);
	else
		puts_lit(o, "null");
}

static void put_time(struct out *o, int64_t ns)
{
	time_t sec = (time_t)(ns / 1000000000);
	int ms = (int)(ns % 1000000000 / 1000000);
	struct tm tm;
	char tmp[40];
	int n;

	if (ns < 0) {
		sec = 0;
		ms = 0;
	}
	gmtime_r(&sec, &tm);
	n = snprintf(tmp, sizeof(tmp), "\"%04d-%02d-%02dT%02d:%02d:%02d.%03dZ\"", tm.tm_year + 1900,
		     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
	put(o, tmp, (size_t)n);
}

size_t accesslog_format(const struct access_record *r, char *out, size_t outlen)
{
	struct out o = {out, out + outlen, false};
	bool first = true;

	puts_lit(&o, "{\"time\":");
	put_time(&o, r->time_ns);
	put_field(&o, ",\"id\":", r->id, FIELD_LEN(r->id));
	put_field(&o, ",\"client\":", r->client, FIELD_LEN(r->client));
	put_field(&o, ",\"method\":", r->method, FIELD_LEN(r->method));
	put_field(&o, ",\"host\":", r->host, FIELD_LEN(r->host));
	put_field(&o, ",\"path\":", r->path, FIELD_LEN(r->path));
	puts_lit(&o, ",\"status\":");
	put_u64(&o, r->status);
	puts_lit(&o, ",\"bytes_in\":");
	put_u64(&o, r->bytes_in);
	puts_lit(&o, ",\"bytes_out\":");
	put_u64(&o, r->bytes_out);
	put_opt_field(&o, ",\"cache\":", r->cache, FIELD_LEN(r->cache));
	put_opt_field(&o, ",\"reflex\":", r->reflex, FIELD_LEN(r->reflex));
	put_opt_field(&o, ",\"upstream\":", r->upstream, FIELD_LEN(r->upstream));
	put_opt_field(&o, ",\"pool\":", r->pool, FIELD_LEN(r->pool));
	puts_lit(&o, ",\"retries\":");
	put_u64(&o, r->retries);
	if (r->upstream[0] && r->upstream_retransmits != ACCESS_NO_TIME) {
		puts_lit(&o, ",\"upstream_retransmits\":");
		put_u64(&o, r->upstream_retransmits);
	}
	puts_lit(&o, ",\"timings\":{");
	for (unsigned s = 0; s < STAGE_MAX; s++) {
		if (r->t_us[s] == ACCESS_NO_TIME)
			continue;
		if (!first)
			puts_lit(&o, ",");
		first = false;
		puts_lit(&o, "\"");
		puts_lit(&o, stage_name((enum stage)s));
		puts_lit(&o, "\":");
		put_u64(&o, r->t_us[s]);
	}
	puts_lit(&o, "}");
	if (r->reason != REASON_NONE) {
		puts_lit(&o, ",\"reason\":\"");
		puts_lit(&o, reason_name((enum reason)r->reason));
		puts_lit(&o, "\"");
	}
	puts_lit(&o, "}\n");
	return o.overflow ? 0 : (size_t)(o.p - out);
}

/* ---- helpers for producers ------------------------------------------------ */

void accesslog_set_path(struct access_record *r, const char *path, size_t len, bool keep_query)
{
	const char *q;

	if (!keep_query && (q = memchr(path, '?', len)))
		len = (size_t)(q - path);
	if (len >= sizeof(r->path))
		len = sizeof(r->path) - 1;
	memcpy(r->path, path, len);
	r->path[len] = 0;
}

bool accesslog_sampled(double sample, uint64_t rnd)
{
	if (sample >= 1.0)
		return true;
	if (sample <= 0.0)
		return false;
	/* 53 random bits → [0, 1) */
	return (double)(rnd >> 11) * (1.0 / 9007199254740992.0) < sample;
}

/* ---- writer --------------------------------------------------------------- */

static int open_path(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

static void do_reopen(struct accesslog *l)
{
	int fd;

	if (!l->own_fd)
		return;
	fd = open_path(l->path);
	if (fd < 0) {
		log_warn("access log: reopen %s: %s (still writing to the old file)", l->path,
			 strerror(errno));
		return;
	}
	close(l->fd);
	l->fd = fd;
	log_info("access log: reopened %s", l->path);
}

/* Write the batch; on failure the lines are lost and counted. */
static void flush_batch(struct accesslog *l, uint64_t lines)
{
	size_t off = 0;

	if (__atomic_exchange_n(&l->reopen, 0, __ATOMIC_ACQ_REL))
		do_reopen(l);
	while (off < l->batch_len) {
		ssize_t n = write(l->fd, l->batch + off, l->batch_len - off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (!l->write_failing)
				log_warn("access log: write to %s: %s", l->path,
					 n < 0 ? strerror(errno) : "short write");
			l->write_failing = true;
			__atomic_add_fetch(&l->lost, lines, __ATOMIC_RELAXED);
			l->batch_len = 0;
			return;
		}
		off += (size_t)n;
	}
	l->write_failing = false;
	__atomic_add_fetch(&l->written, lines, __ATOMIC_RELAXED);
	l->batch_len = 0;
}

/* One pass over every ring; returns the number of records written. */
static uint64_t drain_rings(struct accesslog *l)
{
	uint64_t total = 0, pending = 0;

	for (unsigned i = 0; i < l->n_rings; i++) {
		struct ring *r = &l->rings[i];
		uint32_t t = r->tail, h = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);

		while (t != h) {
			size_t n;

			if (BATCH_BYTES - l->batch_len < LINE_MAX_BYTES) {
				flush_batch(l, pending);
				pending = 0;
			}
			n = accesslog_format(&r->slots[t & (RING_SIZE - 1)],
					     l->batch + l->batch_len, LINE_MAX_BYTES);
			t++;
			/* the slot is free once it has been formatted */
			__atomic_store_n(&r->tail, t, __ATOMIC_RELEASE);
			if (!n) { /* cannot happen with LINE_MAX_BYTES; never loop on it */
				__atomic_add_fetch(&l->lost, 1, __ATOMIC_RELAXED);
				continue;
			}
			l->batch_len += n;
			pending++;
			total++;
			if (t == h)
				h = __atomic_load_n(&r->head, __ATOMIC_ACQUIRE);
		}
	}
	if (l->batch_len)
		flush_batch(l, pending);
	return total;
}

static void *writer_main(void *arg)
{
	struct accesslog *l = arg;

	for (;;) {
		int stop = __atomic_load_n(&l->stop, __ATOMIC_ACQUIRE);

		if (drain_rings(l))
			continue;
		if (stop)
			break;
		if (__atomic_load_n(&l->reopen, __ATOMIC_ACQUIRE)) {
			__atomic_store_n(&l->reopen, 0, __ATOMIC_RELEASE);
			do_reopen(l);
		}
		__atomic_store_n(&l->sleeping, 1, __ATOMIC_SEQ_CST);
		/* a record pushed before the flag was visible is seen here */
		if (drain_rings(l)) {
			__atomic_store_n(&l->sleeping, 0, __ATOMIC_RELAXED);
			continue;
		}
		struct pollfd pfd = {.fd = l->wake_fd, .events = POLLIN};
		if (poll(&pfd, 1, IDLE_WAIT_MS) > 0) {
			uint64_t v;
			ssize_t rc = read(l->wake_fd, &v, sizeof(v));
			(void)rc;
		}
		__atomic_store_n(&l->sleeping, 0, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void wake(struct accesslog *l)
{
	int one = 1;

	if (__atomic_load_n(&l->sleeping, __ATOMIC_SEQ_CST) &&
	    __atomic_exchange_n(&l->sleeping, 0, __ATOMIC_ACQ_REL) == one) {
		uint64_t v = 1;
		ssize_t rc = write(l->wake_fd, &v, sizeof(v));
		(void)rc; /* EAGAIN: it is awake already */
	}
}

/* ---- public ----------------------------------------------------------------- */

struct accesslog *accesslog_open(const char *path, unsigned n_workers, char *err, size_t errlen)
{
	struct accesslog *l = calloc(1, sizeof(*l));
	int rc;

	if (!l || n_workers == 0) {
		snprintf(err, errlen, "%s", l ? "access log: no workers" : "out of memory");
		free(l);
		return NULL;
	}
	l->fd = -1;
	l->wake_fd = -1;
	if (strlen(path) >= sizeof(l->path)) {
		snprintf(err, errlen, "access log: path is too long");
		goto fail;
	}
	strcpy(l->path, path);
	l->n_rings = n_workers;
	l->rings = calloc(n_workers, sizeof(*l->rings));
	l->batch = malloc(BATCH_BYTES);
	if (!l->rings || !l->batch)
		goto nomem;
	for (unsigned i = 0; i < n_workers; i++) {
		l->rings[i].slots = calloc(RING_SIZE, sizeof(struct access_record));
		if (!l->rings[i].slots)
			goto nomem;
	}
	if (!strcmp(path, "-")) {
		l->fd = STDOUT_FILENO;
	} else {
		l->fd = open_path(path);
		if (l->fd < 0) {
			snprintf(err, errlen, "access log: cannot open %s: %s", path,
				 strerror(errno));
			goto fail;
		}
		l->own_fd = true;
	}
	l->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (l->wake_fd < 0) {
		snprintf(err, errlen, "access log: eventfd: %s", strerror(errno));
		goto fail;
	}
	rc = pthread_create(&l->thread, NULL, writer_main, l);
	if (rc) {
		snprintf(err, errlen, "access log: cannot start the writer: %s", strerror(rc));
		goto fail;
	}
	return l;
nomem:
	snprintf(err, errlen, "access log: out of memory");
fail:
	if (l->own_fd && l->fd >= 0)
		close(l->fd);
	if (l->wake_fd >= 0)
		close(l->wake_fd);
	for (unsigned i = 0; l->rings && i < l->n_rings; i++)
		free(l->rings[i].slots);
	free(l->rings);
	free(l->batch);
	free(l);
	return NULL;
}

void accesslog_push(struct accesslog *l, unsigned worker, const struct access_record *r)
{
	struct ring *ring;
	uint32_t h, t;

	if (worker >= l->n_rings) {
		__atomic_add_fetch(&l->lost, 1, __ATOMIC_RELAXED);
		return;
	}
	ring = &l->rings[worker];
	h = ring->head;
	t = __atomic_load_n(&ring->tail, __ATOMIC_ACQUIRE);
	if (h - t >= RING_SIZE) {
		__atomic_store_n(&ring->dropped, ring->dropped + 1, __ATOMIC_RELAXED);
		wake(l);
		return;
	}
	memcpy(&ring->slots[h & (RING_SIZE - 1)], r, sizeof(*r));
	__atomic_store_n(&ring->head, h + 1, __ATOMIC_RELEASE);
	wake(l);
}

void accesslog_reopen(struct accesslog *l)
{
	if (!l)
		return;
	__atomic_store_n(&l->reopen, 1, __ATOMIC_RELEASE);
	wake(l);
}

uint64_t accesslog_dropped(const struct accesslog *l)
{
	uint64_t n;

	if (!l)
		return 0;
	n = __atomic_load_n(&l->lost, __ATOMIC_RELAXED);
	for (unsigned i = 0; i < l->n_rings; i++)
		n += __atomic_load_n(&l->rings[i].dropped, __ATOMIC_RELAXED);
	return n;
}

uint64_t accesslog_written(const struct accesslog *l)
{
	return l ? __atomic_load_n(&l->written, __ATOMIC_RELAXED) : 0;
}

void accesslog_close(struct accesslog *l)
{
	if (!l)
		return;
	__atomic_store_n(&l->stop, 1, __ATOMIC_RELEASE);
	__atomic_store_n(&l->sleeping, 1, __ATOMIC_SEQ_CST);
	wake(l);
	pthread_join(l->thread, NULL);
	if (l->own_fd)
		close(l->fd);
	close(l->wake_fd);
	for (unsigned i = 0; i < l->n_rings; i++)
		free(l->rings[i].slots);
	free(l->rings);
	free(l->batch);
	free(l);
}
