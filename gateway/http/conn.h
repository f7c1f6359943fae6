/* conn.h — one TCP connection on a worker's ring: the I/O machinery shared
 * by client connections (req.c) and upstream connections (upstream.c).
 *
 * Receive: a multishot recv into the worker's provided-buffer ring; each
 * completion's bytes go to ops->on_recv and the buffer goes straight back
 * to the ring. conn_pause_recv() cancels the recv (backpressure); a few
 * bytes already in flight may still be delivered after it. EOF and errors
 * go to ops->on_eof (0 or -errno).
 *
 * Send: conn_write() copies into a pending buffer; the worker starts at
 * most one send per connection per loop iteration (so writes made while
 * handling a batch of completions go out in one send). While a send is in
 * flight its buffer is never touched; new writes go to the other buffer.
 * ops->on_sent runs when everything queued so far has gone out.
 *
 * Lifetime: conn_close() starts the end; the memory is handed back through
 * ops->on_destroy only after every in-flight op has completed, from the
 * worker's reap step (never inside another callback). After conn_close()
 * the owner gets no more callbacks except on_destroy.
 */
#ifndef REFLEX_HTTP_CONN_H
#define REFLEX_HTTP_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/loop.h"
#include "core/timer.h"

struct conn;
struct worker;

struct conn_ops {
	void (*on_recv)(struct conn *c, const char *data, size_t len);
	void (*on_eof)(struct conn *c, int err); /* 0: peer closed; else -errno */
	void (*on_sent)(struct conn *c);         /* output queue drained */
	void (*on_timeout)(struct conn *c);      /* conn.timer fired */
	void (*on_destroy)(struct conn *c);      /* free the owner */
};

struct conn {
	struct worker *w;
	const struct conn_ops *ops;
	int fd;
	unsigned refs; /* in-flight ops whose last completion is pending */

	struct io_op recv_op, send_op;
	struct buf in;      /* received bytes the owner kept */
	struct buf out[2];  /* out[sending_idx] in flight; the other accumulates */
	unsigned out_idx;   /* index of the accumulating buffer */
	size_t sent_off;    /* progress inside the in-flight buffer */
	uint64_t sends;     /* sends started: tells whether queued bytes are still unsent */
	uint64_t *stat_rx, *stat_tx; /* the owner's byte counters (stats.h), or NULL */

	struct timer timer;      /* the owner's deadline (header, body, idle, ...) */
	struct timer send_timer; /* a send that makes no progress */

	struct conn *flush_next, *reap_next;
	bool recv_armed;    /* a multishot recv is in flight */
	bool recv_wanted;   /* re-arm when the current one ends */
	bool sending;
	bool in_flush_list;
	bool closing;
	bool connecting;    /* outgoing connect in flight: sends wait for it */
	bool lingering;     /* write side shut; draining input until EOF */
	bool close_on_flush;
	bool eof;
	bool reaped;
};

void conn_init(struct conn *c, struct worker *w, int fd, const struct conn_ops *ops);
/* An op the owner issued itself (c->refs++) has completed for the last time. */
void conn_put(struct conn *c);
void conn_start_recv(struct conn *c);
void conn_pause_recv(struct conn *c);
void conn_resume_recv(struct conn *c);
/* Closing, or closing once the output is flushed: take no new work. */
static inline bool conn_ending(const struct conn *c)
{
	return c->closing || c->close_on_flush || c->lingering;
}

static inline bool conn_recv_paused(const struct conn *c)
{
	return !c->recv_wanted;
}

int conn_write(struct conn *c, const void *data, size_t len);
/* Bytes queued or in flight, not yet acknowledged by the kernel. */
size_t conn_out_pending(const struct conn *c);
/* The accumulating buffer, for callers that format straight into it; call
 * conn_wrote() after appending. */
struct buf *conn_outbuf(struct conn *c);
void conn_wrote(struct conn *c);

/* Close after everything queued has been sent: shut the write side, then
 * read and discard until the peer closes or `linger_ms` passes (so the
 * peer is not reset while it still sends, and sees our last response). */
/* The connection goes idle: give back buffer memory beyond a small cap. */
void conn_trim(struct conn *c);

/* The outgoing connect finished: queued output may go now. */
void conn_connected(struct conn *c);

void conn_close_after_flush(struct conn *c, uint32_t linger_ms);
/* Close now; with `reset`, send RST instead of FIN. */
void conn_close(struct conn *c, bool reset);

/* Worker hooks: start queued sends; free closed connections. */
void conn_flush_all(struct worker *w);
void conn_reap_all(struct worker *w);

#endif
