#include "http/conn.h"

#include <errno.h>
#include <stddef.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sock.h"
#include "core/stats.h"
#include "core/tls.h"
#include "http/worker.h"


/* A drained output buffer keeps up to this much memory while its
 * connection streams (above the 256 KiB high-water mark plus one receive
 * buffer, so a steady stream never reallocates); conn_trim() gives it
 * back when the connection goes idle. */
#define OUT_KEEP_CAP (512 * 1024)
#define IDLE_KEEP_CAP (16 * 1024)

static void on_recv_cqe(struct io_op *op, int res, unsigned flags);
static void on_send_cqe(struct io_op *op, int res, unsigned flags);
static void on_timer(struct timer *t);
static void on_send_timer(struct timer *t);
static void on_tls_timer(struct timer *t);
static void tls_input(struct conn *c, const char *data, size_t len);
static bool tls_defer(struct conn *c, const char *data, size_t len);
static void tls_hs_run(struct conn *c);
static void tls_encrypt(struct conn *c);
static void schedule_flush(struct conn *c);

/* A TLS failure's close: long enough for the alert to leave. */
#define TLS_ALERT_LINGER_MS 1000
#define PLAIN_HTTP_ON_TLS                                                                \
	"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: 73\r\n" \
	"Connection: close\r\n\r\n"                                                      \
	"400 Bad Request: a plain HTTP request was sent to a TLS port (use https)\n"

static void maybe_reap(struct conn *c)
{
	if (c->closing && c->refs == 0 && !c->reaped) {
		c->reaped = true;
		c->reap_next = c->w->reap_list;
		c->w->reap_list = c;
	}
}

void conn_init(struct conn *c, struct worker *w, int fd, const struct conn_ops *ops)
{
	*c = (struct conn){ .w = w, .ops = ops, .fd = fd };
	c->recv_op.on_complete = on_recv_cqe;
	c->send_op.on_complete = on_send_cqe;
	timer_init(&c->timer, on_timer);
	timer_init(&c->send_timer, on_send_timer);
	timer_init(&c->tls_timer, on_tls_timer);
	w->n_conns++;
}

void conn_put(struct conn *c)
{
	c->refs--;
	maybe_reap(c);
}

static void arm_recv(struct conn *c)
{
	loop_recv_multishot(&c->w->loop, c->fd, &c->recv_op);
	c->recv_armed = true;
	c->refs++;
}

void conn_start_recv(struct conn *c)
{
	c->recv_wanted = true;
	if (!c->recv_armed && !c->closing)
		arm_recv(c);
}

void conn_pause_recv(struct conn *c)
{
	if (!c->recv_wanted)
		return;
	c->recv_wanted = false;
	if (c->recv_armed) {
		struct io_uring_sqe *sqe = loop_sqe(&c->w->loop);
		io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)&c->recv_op, 0);
		io_uring_sqe_set_data(sqe, NULL);
	}
}

void conn_resume_recv(struct conn *c)
{
	if (c->recv_wanted || c->closing)
		return;
	c->recv_wanted = true;
	/* If the cancelled recv has not reported its end yet, it is re-armed
	 * when it does (on_recv_cqe), so two never run at once. */
	if (!c->recv_armed)
		arm_recv(c);
}

static void on_recv_cqe(struct io_op *op, int res, unsigned flags)
{
	struct conn *c = container_of(op, struct conn, recv_op);
	struct loop *l = &c->w->loop;
	bool more = flags & IORING_CQE_F_MORE;

	if (!more) {
		c->recv_armed = false;
		c->refs--;
	}
	if (res > 0) {
		unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
		if (c->stat_rx)
			STAT_ADD(*c->stat_rx, (uint64_t)res);
		if (!c->closing && !c->lingering && c->tls) {
			if (!tls_defer(c, loop_buf(l, bid), (size_t)res))
				tls_input(c, loop_buf(l, bid), (size_t)res);
		}
		else if (!c->closing && !c->lingering)
			c->ops->on_recv(c, loop_buf(l, bid), (size_t)res);
		loop_buf_put(l, bid);
		if (!more && c->recv_wanted && !c->closing && !c->eof)
			arm_recv(c);
	} else if (res == 0) {
		tls_hs_run(c); /* what came before the FIN first */
		c->eof = true;
		if (c->lingering)
			conn_close(c, false);
		else if (!c->closing && !c->tls_eof)
			c->ops->on_eof(c, 0);
	} else if (res == -ENOBUFS) {
		/* The buffer ring ran dry in a burst; buffers come back as this
		 * batch is processed, so arm again for the next iteration. */
		if (!more && c->recv_wanted && !c->closing)
			arm_recv(c);
	} else if (res == -ECANCELED) {
		if (c->recv_wanted && !c->closing)
			arm_recv(c);
	} else {
		tls_hs_run(c);
		c->eof = true;
		if (c->lingering)
			conn_close(c, false);
		else if (!c->closing)
			c->ops->on_eof(c, res);
	}
	maybe_reap(c);
}

size_t conn_out_pending(const struct conn *c)
{
	size_t n = c->out[c->out_idx].len + c->ext[c->out_idx].len + c->tls_plain.len;

	if (c->sending)
		n += c->out[c->out_idx ^ 1].len + c->ext[c->out_idx ^ 1].len - c->sent_off;
	return n;
}

static void ext_release(struct conn_ext *x)
{
	if (x->p && x->release)
		x->release(x->arg);
	*x = (struct conn_ext){ 0 };
}

static void schedule_flush(struct conn *c)
{
	if (!c->in_flush_list && !c->sending) {
		c->in_flush_list = true;
		c->flush_next = c->w->flush_list;
		c->w->flush_list = c;
	}
}

struct buf *conn_outbuf(struct conn *c)
{
	return c->tls ? &c->tls_plain : &c->out[c->out_idx];
}

void conn_wrote(struct conn *c)
{
	if (conn_outbuf(c)->len)
		schedule_flush(c);
}

/* Output that a send could carry now (TLS plaintext once the handshake is done). */
static bool out_ready(const struct conn *c)
{
	return c->out[c->out_idx].len || c->ext[c->out_idx].p ||
	       (c->tls && c->tls_plain.len && tls_conn_established(c->tls));
}

int conn_write_ext(struct conn *c, const void *data, size_t len, void (*release)(void *arg),
		   void *arg)
{
	struct conn_ext *x = &c->ext[c->out_idx];

	if (c->tls) { /* plaintext must be encrypted: copy it like conn_write */
		int rc = len && !c->closing ? conn_write(c, data, len) : 0;
		if (release)
			release(arg);
		return rc;
	}
	if (x->p || !len || c->closing) {
		int rc = len && !c->closing ? buf_append(&c->out[c->out_idx], data, len) : 0;
		if (release)
			release(arg);
		if (rc == 0 && len)
			schedule_flush(c);
		return rc;
	}
	*x = (struct conn_ext){ .p = data, .len = len, .off = c->out[c->out_idx].len,
				.release = release, .arg = arg };
	schedule_flush(c);
	return 0;
}

int conn_write(struct conn *c, const void *data, size_t len)
{
	int rc = buf_append(conn_outbuf(c), data, len);

	if (rc == 0)
		schedule_flush(c);
	return rc;
}

/* The in-flight buffer with its external block: up to three pieces (buffer
 * before it, the block, buffer after it), minus what was sent. */
static void prep_send_ext(struct conn *c, struct io_uring_sqe *sqe, struct buf *b,
			  struct conn_ext *x, int flags)
{
	size_t off = x->off <= b->len ? x->off : b->len; /* a withdrawn head cannot underflow */
	const char *base[3] = { buf_head(b), x->p, buf_head(b) + off };
	size_t len[3] = { off, x->len, b->len - off }, skip = c->sent_off;
	unsigned n = 0;

	for (unsigned i = 0; i < 3; i++) {
		if (skip >= len[i]) {
			skip -= len[i];
			continue;
		}
		c->ext_iov[n].iov_base = (void *)(base[i] + skip);
		c->ext_iov[n].iov_len = len[i] - skip;
		skip = 0;
		n++;
	}
	c->ext_msg = (struct msghdr){ .msg_iov = c->ext_iov, .msg_iovlen = n };
	io_uring_prep_sendmsg(sqe, c->fd, &c->ext_msg, flags);
}

/* The send that empties the queue of a connection that closes after it,
 * when the owner expects nothing more from the peer (fin_with_data): it
 * goes with MSG_MORE, so its last segment waits in the socket, and the
 * shutdown() that follows its completion (finish_close_on_flush) puts the
 * FIN on that segment. The peer gets the end of the response and the
 * close in one packet, and answers both with one ACK (its FIN): two
 * packets less per connection. Not an IORING_OP_SHUTDOWN linked behind the
 * send: the kernel runs that op on an io-wq thread, after the send's
 * completion is posted, and a close() in between (unread input: a reset)
 * drops the held response — the 413 that e2e/26_chaos saw vanish. */
static bool send_carries_fin(const struct conn *c)
{
	return c->close_on_flush && c->fin_with_data && !c->out[c->out_idx].len &&
	       !c->ext[c->out_idx].p && !c->tls_plain.len;
}

static void submit_send(struct conn *c)
{
	struct buf *b = &c->out[c->out_idx ^ 1];
	struct io_uring_sqe *sqe = loop_sqe(&c->w->loop);
	int flags = MSG_NOSIGNAL;

	c->fin_held = send_carries_fin(c);
	if (c->fin_held)
		flags |= MSG_MORE;
	if (c->ext[c->out_idx ^ 1].p)
		prep_send_ext(c, sqe, b, &c->ext[c->out_idx ^ 1], flags);
	else
		io_uring_prep_send(sqe, c->fd, buf_head(b) + c->sent_off, b->len - c->sent_off,
				   flags);
	loop_sqe_set_op(sqe, &c->send_op);
	c->refs++;
	if (!timer_armed(&c->send_timer))
		timer_arm(&c->w->loop.timers, &c->send_timer,
			  c->w->loop.now + c->w->cfg->timeouts.send);
}

static void start_send(struct conn *c)
{
	if (c->tls && !c->closing)
		tls_encrypt(c);
	if (c->sending || c->closing || c->connecting || c->send_failed ||
	    (!c->out[c->out_idx].len && !c->ext[c->out_idx].p))
		return;
	c->out_idx ^= 1; /* the accumulated buffer becomes the in-flight one */
	c->sends++;
	c->sent_off = 0;
	c->sending = true;
	submit_send(c);
}

static void finish_close_on_flush(struct conn *c)
{
	c->close_on_flush = false;
	shutdown(c->fd, SHUT_WR);
	if (c->eof) {
		conn_close(c, false);
		return;
	}
	timer_arm(&c->w->loop.timers, &c->timer, c->w->loop.now + c->linger_ms);
	c->lingering = true;
	c->recv_wanted = true;
	if (!c->recv_armed)
		arm_recv(c);
}

static void on_send_cqe(struct io_op *op, int res, unsigned flags)
{
	struct conn *c = container_of(op, struct conn, send_op);
	struct buf *b = &c->out[c->out_idx ^ 1];

	c->refs--;
	if (c->closing) {
		/* what the send holds back goes now: close() would drop it
		 * with a reset if input is unread */
		if (c->fin_held && res > 0)
			shutdown(c->fd, SHUT_WR);
		maybe_reap(c);
		return;
	}
	if (res < 0) {
		c->sending = false;
		if (c->recv_armed && !c->lingering && !c->close_on_flush && !c->eof) {
			/* The peer's bytes before its reset are still to be read
			 * (the kernel hands them out before the error): the recv
			 * reports the end once they are delivered. The send timer
			 * stays armed as the bound, should the recv be paused. */
			c->send_failed = true;
			maybe_reap(c);
			return;
		}
		timer_disarm(&c->w->loop.timers, &c->send_timer);
		c->eof = true;
		if (c->lingering || c->close_on_flush)
			conn_close(c, true);
		else
			c->ops->on_eof(c, res);
		maybe_reap(c);
		return;
	}
	c->sent_off += (size_t)res;
	if (c->stat_tx)
		STAT_ADD(*c->stat_tx, (uint64_t)res);
	/* progress: push the stall deadline out */
	timer_arm(&c->w->loop.timers, &c->send_timer, c->w->loop.now + c->w->cfg->timeouts.send);
	if (c->sent_off < b->len + c->ext[c->out_idx ^ 1].len) {
		submit_send(c);
		return;
	}
	buf_reset(b, OUT_KEEP_CAP);
	ext_release(&c->ext[c->out_idx ^ 1]);
	c->sending = false;
	c->sent_off = 0;
	if (out_ready(c)) {
		schedule_flush(c);
		return;
	}
	timer_disarm(&c->w->loop.timers, &c->send_timer);
	if (c->close_on_flush) {
		finish_close_on_flush(c);
		return;
	}
	if (c->ops->on_sent)
		c->ops->on_sent(c);
}

void conn_connected(struct conn *c)
{
	c->connecting = false;
	if (c->tls) {
		/* clock_ms(), not loop.now: see conn_tls_server() */
		timer_arm(&c->w->loop.timers, &c->tls_timer,
			  clock_ms() + c->w->cfg->timeouts.tls_handshake);
		tls_input(c, NULL, 0); /* the ClientHello */
	}
	if (c->out[c->out_idx].len)
		schedule_flush(c);
}

void conn_trim(struct conn *c)
{
	if (!c->in.len)
		buf_reset(&c->in, IDLE_KEEP_CAP);
	if (!c->sending && !c->out[c->out_idx ^ 1].len)
		buf_reset(&c->out[c->out_idx ^ 1], IDLE_KEEP_CAP);
	if (!c->out[c->out_idx].len)
		buf_reset(&c->out[c->out_idx], IDLE_KEEP_CAP);
	if (!c->tls_plain.len)
		buf_reset(&c->tls_plain, IDLE_KEEP_CAP);
}

void conn_close_after_flush(struct conn *c, uint32_t linger_ms)
{
	if (c->closing)
		return;
	if (c->tls && !c->close_on_flush && !c->lingering) {
		/* the last records, then close_notify: a TLS peer can tell a
		 * complete stream from a cut one */
		tls_encrypt(c);
		tls_conn_shutdown(c->tls);
		if (tls_conn_drain(c->tls, &c->out[c->out_idx]) == 0 && c->out[c->out_idx].len)
			schedule_flush(c);
	}
	c->linger_ms = linger_ms;
	if (conn_out_pending(c)) {
		/* The linger starts once everything is out: until then a slow
		 * reader is bounded by the send timeout, not cut off mid-response. */
		timer_disarm(&c->w->loop.timers, &c->timer);
		c->close_on_flush = true;
		return;
	}
	finish_close_on_flush(c);
}

void conn_close(struct conn *c, bool reset)
{
	if (c->closing)
		return;
	c->closing = true;
	c->recv_wanted = false;
	timer_disarm(&c->w->loop.timers, &c->timer);
	timer_disarm(&c->w->loop.timers, &c->send_timer);
	timer_disarm(&c->w->loop.timers, &c->tls_timer);
	if (reset)
		sock_set_linger0(c->fd);
	if (c->refs) {
		struct io_uring_sqe *sqe = loop_sqe(&c->w->loop);
		io_uring_prep_cancel_fd(sqe, c->fd, IORING_ASYNC_CANCEL_ALL);
		io_uring_sqe_set_data(sqe, NULL);
	}
	maybe_reap(c);
}

static void on_timer(struct timer *t)
{
	struct conn *c = container_of(t, struct conn, timer);

	if (c->lingering || c->close_on_flush) {
		/* The linger is over: a FIN, so what the kernel still holds for
		 * a slow reader is delivered (a reset would discard it). */
		conn_close(c, !c->lingering);
		return;
	}
	c->ops->on_timeout(c);
}

static void on_send_timer(struct timer *t)
{
	struct conn *c = container_of(t, struct conn, send_timer);

	/* The peer stopped reading: nothing can be delivered, reset. */
	if (c->lingering || c->close_on_flush) {
		conn_close(c, true);
		return;
	}
	c->eof = true;
	c->ops->on_eof(c, -ETIMEDOUT);
}

static void flush_list(struct worker *w)
{
	struct conn *c = w->flush_list;

	w->flush_list = NULL;
	while (c) {
		struct conn *next = c->flush_next;
		c->in_flush_list = false;
		start_send(c);
		c = next;
	}
}

void conn_flush_all(struct worker *w)
{
	flush_list(w);
	if (!w->tls_hs_list)
		return;
	/* The batch's responses and upstream requests leave now; the
	 * handshakes it brought (a ClientHello costs ~0.3 ms of key exchange
	 * and signature) run after, so no request waits behind them. */
	if (io_uring_sq_ready(&w->loop.ring))
		io_uring_submit(&w->loop.ring);
	struct conn *c = w->tls_hs_list;
	w->tls_hs_list = NULL;
	while (c) {
		struct conn *next = c->tls_hs_next;
		c->in_tls_hs_list = false;
		tls_hs_run(c);
		c = next;
	}
	flush_list(w);
}

void conn_reap_all(struct worker *w)
{
	while (w->reap_list) {
		struct conn *c = w->reap_list;
		w->reap_list = c->reap_next;
		if (c->fd >= 0 && !w->draining) {
			/* closed by the submit that follows (before_submit): one
			 * syscall less per connection. Not when draining: the
			 * loop may stop before that submit. */
			struct io_uring_sqe *sqe = loop_sqe(&w->loop);
			io_uring_prep_close(sqe, c->fd);
			sqe->flags |= IOSQE_CQE_SKIP_SUCCESS;
			io_uring_sqe_set_data(sqe, NULL);
		} else if (c->fd >= 0) {
			close(c->fd);
		}
		buf_free(&c->in);
		buf_free(&c->out[0]);
		buf_free(&c->out[1]);
		buf_free(&c->tls_plain);
		tls_conn_free(c->tls);
		c->tls = NULL;
		ext_release(&c->ext[0]);
		ext_release(&c->ext[1]);
		w->n_conns--;
		c->ops->on_destroy(c);
	}
}

/* ---- TLS -------------------------------------------------------------------- */

static void tls_pump_out(struct conn *c)
{
	struct buf *b = &c->out[c->out_idx];

	/* out of memory here loses ciphertext: the stream is dead */
	if (tls_conn_drain(c->tls, b))
		conn_close(c, true);
	else if (b->len)
		schedule_flush(c);
}

/* Plaintext the owner wrote becomes records in the accumulating buffer. */
static void tls_encrypt(struct conn *c)
{
	struct buf *p = &c->tls_plain;
	ssize_t n;

	if (!p->len || !tls_conn_established(c->tls))
		return;
	n = tls_conn_write(c->tls, buf_head(p), p->len);
	if (n > 0)
		buf_consume(p, (size_t)n);
	if (tls_conn_drain(c->tls, &c->out[c->out_idx]) || n < 0) {
		/* cannot happen short of memory: nothing sane can follow */
		log_warn("tls: %s", n < 0 ? tls_conn_error(c->tls) : "out of memory");
		conn_close(c, true);
	}
}

static void tls_log_failure(struct conn *c)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char peer[64] = "unknown";
	enum tls_fail f = tls_conn_fail(c->tls);

	if (getpeername(c->fd, (struct sockaddr *)&ss, &sl) == 0)
		sock_ntop((struct sockaddr *)&ss, peer, sizeof(peer));
	STAT_INC(c->w->stats.tls_failures[f]);
	log_info("tls %s %s: %s (%s)", tls_conn_is_server(c->tls) ? "client" : "upstream", peer,
		 tls_conn_error(c->tls), tls_fail_name(f));
}

static void tls_failed(struct conn *c)
{
	tls_log_failure(c);
	timer_disarm(&c->w->loop.timers, &c->tls_timer);
	tls_pump_out(c); /* the alert */
	if (c->closing)
		return;
	if (tls_conn_is_server(c->tls) && !tls_conn_established(c->tls)) {
		/* the owner has seen nothing: the connection ends here */
		if (tls_conn_fail(c->tls) == TLS_FAIL_TIMEOUT) {
			conn_close(c, false);
			return;
		}
		/* plain HTTP on a TLS port: say so in words, as nginx does */
		if (tls_conn_plaintext(c->tls) &&
		    buf_appends(&c->out[c->out_idx], PLAIN_HTTP_ON_TLS) == 0)
			schedule_flush(c);
		conn_close_after_flush(c, TLS_ALERT_LINGER_MS);
		return;
	}
	c->eof = true;
	c->ops->on_eof(c, -EPROTO);
}

static void tls_established(struct conn *c)
{
	struct stats_worker *st = &c->w->stats;
	bool resumed = tls_conn_resumed(c->tls);

	timer_disarm(&c->w->loop.timers, &c->tls_timer);
	if (tls_conn_is_server(c->tls)) {
		STAT_INC(st->tls_handshakes);
		if (resumed)
			STAT_INC(st->tls_resumed);
		if (tls_conn_unknown_sni(c->tls))
			STAT_INC(st->tls_failures[TLS_FAIL_SNI]);
	} else {
		STAT_INC(st->upstream_tls_handshakes);
		if (resumed)
			STAT_INC(st->upstream_tls_resumed);
	}
	if (c->tls_plain.len) /* written while the handshake ran */
		schedule_flush(c);
}

/* Ciphertext in (none: just drive the handshake), plaintext to the owner. */
static void tls_input(struct conn *c, const char *data, size_t len)
{
	char plain[16384];
	bool was_up = tls_conn_established(c->tls);
	ssize_t n = 0;

	if (len && tls_conn_feed(c->tls, data, len)) {
		conn_close(c, true);
		return;
	}
	while (!c->closing && !c->lingering && !c->tls_eof) {
		n = tls_conn_read(c->tls, plain, sizeof(plain));
		if (!was_up && tls_conn_established(c->tls)) {
			was_up = true;
			tls_established(c);
		}
		if (n <= 0)
			break;
		c->ops->on_recv(c, plain, (size_t)n);
	}
	if (c->closing)
		return;
	if (n == -EPROTO) {
		tls_failed(c);
		return;
	}
	tls_pump_out(c); /* handshake messages, tickets */
	if (n == -EPIPE && !c->lingering && !c->closing) {
		c->tls_eof = true;
		c->eof = true;
		c->ops->on_eof(c, 0);
	}
}

/* A ClientHello (nothing sent yet on a server connection): feed the
 * ciphertext now (the provided buffer goes back to the ring) and run the
 * handshake step after the batch's other completions (conn_flush_all).
 * Only the first flight waits: the client's Finished is cheap and often
 * comes with the first request. True when deferred. */
static bool tls_defer(struct conn *c, const char *data, size_t len)
{
	if (c->sends || !tls_conn_is_server(c->tls) || tls_conn_established(c->tls))
		return false;
	if (tls_conn_feed(c->tls, data, len)) {
		conn_close(c, true);
		return true;
	}
	c->tls_hs_due = true;
	if (!c->in_tls_hs_list) {
		c->in_tls_hs_list = true;
		c->tls_hs_next = c->w->tls_hs_list;
		c->w->tls_hs_list = c;
	}
	return true;
}

/* The deferred handshake step, if one is due (it may run early, before an
 * EOF of the same batch, and then stays linked until the list is run). */
static void tls_hs_run(struct conn *c)
{
	if (!c->tls_hs_due)
		return;
	c->tls_hs_due = false;
	if (!c->closing && !c->lingering)
		tls_input(c, NULL, 0);
}

static void on_tls_timer(struct timer *t)
{
	struct conn *c = container_of(t, struct conn, tls_timer);

	if (c->closing || !c->tls || tls_conn_established(c->tls))
		return;
	tls_conn_set_timeout(c->tls);
	tls_failed(c);
}

static int tls_attach(struct conn *c, struct tls_conn *t)
{
	if (!t)
		return -ENOMEM;
	c->tls = t;
	/* the plaintext already queued (an upstream head) waits for the handshake */
	if (c->out[c->out_idx].len) {
		int rc = buf_append(&c->tls_plain, buf_head(&c->out[c->out_idx]),
				    c->out[c->out_idx].len);
		if (rc)
			return rc;
		buf_reset(&c->out[c->out_idx], IDLE_KEEP_CAP);
	}
	return 0;
}

int conn_tls_server(struct conn *c, struct tls_ctx *ctx, uint32_t timeout_ms)
{
	int rc = tls_attach(c, tls_conn_server(ctx));

	/* clock_ms(), not loop.now: loop.now is only refreshed after a batch
	 * of completions, so after an idle wait it is as old as the wait was
	 * long and a short deadline would fire at once */
	if (rc == 0)
		timer_arm(&c->w->loop.timers, &c->tls_timer, clock_ms() + timeout_ms);
	return rc;
}

int conn_tls_client(struct conn *c, struct tls_ctx *ctx, const char *host)
{
	return tls_attach(c, tls_conn_client(ctx, host));
}

const char *conn_tls_error(const struct conn *c)
{
	return c->tls ? tls_conn_error(c->tls) : "no TLS";
}
