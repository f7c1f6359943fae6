#include "http/conn.h"

#include <errno.h>
#include <stddef.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/sock.h"
#include "core/stats.h"
#include "http/worker.h"

#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))

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
		if (!c->closing && !c->lingering)
			c->ops->on_recv(c, loop_buf(l, bid), (size_t)res);
		loop_buf_put(l, bid);
		if (!more && c->recv_wanted && !c->closing && !c->eof)
			arm_recv(c);
	} else if (res == 0) {
		c->eof = true;
		if (c->lingering)
			conn_close(c, false);
		else if (!c->closing)
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
	size_t n = c->out[c->out_idx].len;

	if (c->sending)
		n += c->out[c->out_idx ^ 1].len - c->sent_off;
	return n;
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
	return &c->out[c->out_idx];
}

void conn_wrote(struct conn *c)
{
	if (c->out[c->out_idx].len)
		schedule_flush(c);
}

int conn_write(struct conn *c, const void *data, size_t len)
{
	int rc = buf_append(&c->out[c->out_idx], data, len);

	if (rc == 0)
		schedule_flush(c);
	return rc;
}

static void submit_send(struct conn *c)
{
	struct buf *b = &c->out[c->out_idx ^ 1];
	struct io_uring_sqe *sqe = loop_sqe(&c->w->loop);

	io_uring_prep_send(sqe, c->fd, buf_head(b) + c->sent_off, b->len - c->sent_off,
			   MSG_NOSIGNAL);
	loop_sqe_set_op(sqe, &c->send_op);
	c->refs++;
	if (!timer_armed(&c->send_timer))
		timer_arm(&c->w->loop.timers, &c->send_timer,
			  c->w->loop.now + c->w->cfg->timeouts.send);
}

static void start_send(struct conn *c)
{
	if (c->sending || c->closing || c->connecting || !c->out[c->out_idx].len)
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
		maybe_reap(c);
		return;
	}
	if (res < 0) {
		c->sending = false;
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
	if (c->sent_off < b->len) {
		submit_send(c);
		return;
	}
	buf_reset(b, OUT_KEEP_CAP);
	c->sending = false;
	c->sent_off = 0;
	if (c->out[c->out_idx].len) {
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
}

void conn_close_after_flush(struct conn *c, uint32_t linger_ms)
{
	if (c->closing)
		return;
	timer_arm(&c->w->loop.timers, &c->timer, c->w->loop.now + linger_ms);
	if (conn_out_pending(c)) {
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
		conn_close(c, true);
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

void conn_flush_all(struct worker *w)
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

void conn_reap_all(struct worker *w)
{
	while (w->reap_list) {
		struct conn *c = w->reap_list;
		w->reap_list = c->reap_next;
		close(c->fd);
		buf_free(&c->in);
		buf_free(&c->out[0]);
		buf_free(&c->out[1]);
		w->n_conns--;
		c->ops->on_destroy(c);
	}
}
