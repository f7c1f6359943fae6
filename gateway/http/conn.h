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
#include <sys/socket.h>
#include <sys/uio.h>

#include "core/buf.h"
#include "core/loop.h"
#include "core/timer.h"

struct conn;
struct worker;
struct tls_ctx;

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
	/* Bytes sent from the caller's memory right after the first ext[i].off
	 * bytes of out[i] (conn_write_ext); release(arg) runs once they are
	 * sent or the connection is gone. */
	struct conn_ext {
		const char *p;
		size_t len, off;
		void (*release)(void *arg);
		void *arg;
	} ext[2];
	struct msghdr ext_msg;
	struct iovec ext_iov[3];

	struct timer timer;      /* the owner's deadline (header, body, idle, ...) */
	struct timer send_timer; /* a send that makes no progress */

	/* TLS (conn_tls_server/conn_tls_client; NULL: plain TCP). out[] then
	 * holds ciphertext; plaintext the owner writes waits in tls_plain and
	 * is encrypted when the connection is flushed (one batch, few records). */
	struct tls_conn *tls;
	struct buf tls_plain;
	struct timer tls_timer; /* handshake deadline */
	bool tls_eof;           /* close_notify received and reported */
	bool in_tls_hs_list;    /* linked in worker.tls_hs_list */
	bool tls_hs_due;        /* fed ciphertext waits for its handshake step */
	struct conn *tls_hs_next;

	struct conn *flush_next, *reap_next;
	bool recv_armed;    /* a multishot recv is in flight */
	bool recv_wanted;   /* re-arm when the current one ends */
	bool sending;
	bool in_flush_list;
	bool closing;
	bool connecting;    /* outgoing connect in flight: sends wait for it */
	bool lingering;     /* write side shut; draining input until EOF */
	bool close_on_flush;
	/* Set by the owner before conn_close_after_flush() when nothing more is
	 * expected from the peer (its request read to the end, no input left):
	 * the FIN may then ride on the response's last segment. */
	bool fin_with_data;
	bool fin_held; /* the send in flight holds its last segment for the FIN */
	uint32_t linger_ms; /* how long to linger once the output is flushed */
	bool eof;
	bool reaped;
	/* A send failed while a recv was armed: nothing more is sent, and the
	 * failure is reported by the recv once it has delivered what the peer
	 * sent before it went (an upstream's early answer to a body it would
	 * not read: the reset must not drop the response). */
	bool send_failed;
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
/* Queue len bytes of memory the caller keeps valid until release(arg) is
 * called (after they were sent, or when the connection is destroyed): a
 * cache hit's body goes out without being copied. Bytes written before
 * go out before it, bytes written after go out after it. One external
 * block per batch: a second one is copied (and released at once). */
int conn_write_ext(struct conn *c, const void *data, size_t len, void (*release)(void *arg),
		   void *arg);
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

/* The outgoing connect finished: queued output may go now (for TLS: the
 * handshake starts, and queued output goes once it is done). */
void conn_connected(struct conn *c);

/* TLS between the ring and the owner (core/tls.h): received ciphertext is
 * decrypted and ops->on_recv gets plaintext; conn_write/conn_outbuf take
 * plaintext; handshake messages, tickets and alerts go out through the
 * same send queue. Call right after conn_init. The handshake must finish
 * within timeout_ms. A failed server handshake (the owner has seen no byte
 * yet) is closed by the connection itself after sending the alert: the
 * owner only sees on_destroy. Any other TLS failure reaches the owner as
 * on_eof(-EPROTO), with the reason in conn_tls_error(). A close_notify
 * from the peer is an EOF. Every failure is logged and counted by reason
 * (stats tls_failures). 0 or -ENOMEM. */
int conn_tls_server(struct conn *c, struct tls_ctx *ctx, uint32_t timeout_ms);
/* host: "name:port" of the upstream (SNI and verification, see tls.h); the
 * deadline (timeouts.tls_handshake) starts at conn_connected(). */
int conn_tls_client(struct conn *c, struct tls_ctx *ctx, const char *host);
const char *conn_tls_error(const struct conn *c);

void conn_close_after_flush(struct conn *c, uint32_t linger_ms);
/* Close now; with `reset`, send RST instead of FIN. */
void conn_close(struct conn *c, bool reset);

/* Worker hooks: start queued sends; free closed connections. */
void conn_flush_all(struct worker *w);
void conn_reap_all(struct worker *w);

#endif
