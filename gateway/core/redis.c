/* redis.c — the per-loop Redis client (see redis.h): hiredis's reader and
 * command formatter, our own I/O on the worker's ring. */
#include "core/redis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/buf.h"
#include "core/loop.h"
#include "core/sock.h"
#include "core/timer.h"

/* ---- the client ------------------------------------------------------------------- */

/* Replies to the commands the users send are a handful of nodes deep. */
#define REPLY_NODES 256
#define RECV_CHUNK 16384
/* Buffers keep at most this much memory once they are empty. */
#define KEEP_CAP 65536

struct redis_cmd {
	struct redis_cmd *next;
	redis_cb *cb; /* NULL: fire and forget, or cancelled */
	void *arg;
	uint64_t deadline; /* loop ms */
};

/* One connection. It outlives its client's interest in it: once detached
 * (cl NULL: failed, idle, or the client freed) it only waits for its
 * in-flight ops to complete, then frees itself. */
struct rconn {
	struct redis_client *cl;
	struct loop *l;
	unsigned *live;
	size_t max_bulk;
	int fd;
	unsigned refs; /* ops in flight, + 1 while a handler runs */
	bool connecting, sending, closing;
	struct io_op connect_op, recv_op, send_op;
	struct timer timer; /* the oldest command's deadline, or the idle close */
	struct buf in;	    /* received, not yet fed to the reader */
	redisReader *reader;
	size_t unparsed;   /* bytes fed since the last complete reply */
	struct buf out[2]; /* out[out_idx] accumulates; the other one is being sent */
	unsigned out_idx;
	size_t sent_off;
	struct redis_cmd *head, *tail;
	unsigned n_pending;
	struct redis_reply nodes[REPLY_NODES];
};

struct redis_client {
	struct loop *l;
	struct redis_opts o;
	struct sockaddr_storage ss;
	socklen_t ss_len;
	struct rconn *rc;
	unsigned fails;
	uint64_t open_until; /* loop ms: the breaker is open until then */
	bool freeing;
	struct redis_client *thread_next; /* the creating thread's clients */
};

/* Frees the clients a thread still has when it ends (value: the list). */
static pthread_key_t thread_key;
static pthread_once_t thread_key_once = PTHREAD_ONCE_INIT;

static void rconn_close(struct rconn *rc);

static void rconn_destroy(struct rconn *rc)
{
	close(rc->fd);
	if (rc->reader)
		redisReaderFree(rc->reader);
	buf_free(&rc->in);
	buf_free(&rc->out[0]);
	buf_free(&rc->out[1]);
	if (rc->live)
		(*rc->live)--;
	free(rc);
}

/* An op's completion (or a handler's hold) is over. */
static void rconn_put(struct rconn *rc)
{
	if (--rc->refs == 0 && rc->closing)
		rconn_destroy(rc);
}

/* Take the connection from its client and hand back its commands. */
static struct redis_cmd *rconn_detach(struct rconn *rc)
{
	struct redis_cmd *cmds = rc->head;

	rc->head = rc->tail = NULL;
	rc->n_pending = 0;
	if (rc->cl && rc->cl->rc == rc)
		rc->cl->rc = NULL;
	rc->cl = NULL;
	return cmds;
}

static void run_errors(struct redis_cmd *c, int err)
{
	while (c) {
		struct redis_cmd *next = c->next;
		if (c->cb)
			c->cb(c->arg, err, NULL);
		free(c);
		c = next;
	}
}

/* The connection failed: the breaker learns, the owner hears, every
 * pending command gets err. */
static void rconn_fail(struct rconn *rc, int err)
{
	struct redis_client *cl = rc->cl && rc->cl->rc == rc ? rc->cl : NULL;
	struct redis_cmd *cmds = rconn_detach(rc);

	if (cl) {
		if (++cl->fails >= cl->o.breaker_fails)
			cl->open_until = cl->l->now + cl->o.breaker_ms;
		if (cl->o.on_fail)
			cl->o.on_fail(cl->o.arg, err, cl->fails);
	}
	rconn_close(rc);
	run_errors(cmds, err);
}

/* Never frees: either an op is in flight (its completion will) or a
 * handler holds a reference. */
static void rconn_close(struct rconn *rc)
{
	if (rc->closing)
		return;
	rc->closing = true;
	timer_disarm(&rc->l->timers, &rc->timer);
	struct io_uring_sqe *sqe = loop_sqe(rc->l);
	io_uring_prep_cancel_fd(sqe, rc->fd, IORING_ASYNC_CANCEL_ALL);
	io_uring_sqe_set_data(sqe, NULL);
}

/* Nothing is pending: give the connection up quietly. */
static void rconn_close_idle(struct rconn *rc)
{
	rconn_detach(rc);
	rconn_close(rc);
}

static void arm_deadline(struct rconn *rc)
{
	struct redis_client *cl = rc->cl;

	if (rc->closing || !cl)
		return;
	if (rc->head)
		timer_arm(&rc->l->timers, &rc->timer, rc->head->deadline);
	else if (cl->o.stopping && *cl->o.stopping)
		rconn_close_idle(rc);
	else
		timer_arm(&rc->l->timers, &rc->timer, rc->l->now + cl->o.idle_ms);
}

static void kick_send(struct rconn *rc)
{
	struct buf *b = &rc->out[rc->out_idx];

	if (rc->connecting || rc->sending || rc->closing || !b->len)
		return;
	rc->out_idx ^= 1;
	rc->sent_off = 0;
	rc->sending = true;
	rc->refs++;
	struct io_uring_sqe *sqe = loop_sqe(rc->l);
	io_uring_prep_send(sqe, rc->fd, buf_head(b), b->len, MSG_NOSIGNAL);
	loop_sqe_set_op(sqe, &rc->send_op);
}

static void on_send(struct io_op *op, int res, unsigned flags)
{
	struct rconn *rc = container_of(op, struct rconn, send_op);
	struct buf *b = &rc->out[rc->out_idx ^ 1];

	rc->sending = false;
	if (rc->closing)
		goto out;
	if (res <= 0) { /* 0: a send of more than nothing that made no progress */
		rconn_fail(rc, res ? res : -EPIPE);
		goto out;
	}
	rc->sent_off += (size_t)res;
	if (rc->sent_off < b->len) {
		rc->sending = true;
		rc->refs++;
		struct io_uring_sqe *sqe = loop_sqe(rc->l);
		io_uring_prep_send(sqe, rc->fd, buf_head(b) + rc->sent_off, b->len - rc->sent_off,
				   MSG_NOSIGNAL);
		loop_sqe_set_op(sqe, &rc->send_op);
		goto out;
	}
	buf_reset(b, KEEP_CAP);
	kick_send(rc);
out:
	rconn_put(rc);
}

static int arm_recv(struct rconn *rc)
{
	if (buf_reserve(&rc->in, RECV_CHUNK))
		return -ENOMEM;
	struct buf *b = &rc->in;
	rc->refs++;
	struct io_uring_sqe *sqe = loop_sqe(rc->l);
	io_uring_prep_recv(sqe, rc->fd, b->data + b->off + b->len, b->cap - b->off - b->len, 0);
	loop_sqe_set_op(sqe, &rc->recv_op);
	return 0;
}

/* hiredis's reply as the view callbacks get (redis.h): out is the reply;
 * an array's elements take the next free run of nodes (*used counts the
 * nodes taken). False when the reply needs more than REPLY_NODES nodes, is
 * nested deeper than REDIS_MAX_DEPTH, or has a type the client never asks
 * for. */
static bool reply_view(const redisReply *in, struct redis_reply *out, struct redis_reply *nodes,
		       unsigned *used, unsigned depth)
{
	memset(out, 0, sizeof(*out));
	switch (in->type) {
	case REDIS_REPLY_STATUS:
	case REDIS_REPLY_ERROR:
	case REDIS_REPLY_STRING:
		out->type = in->type == REDIS_REPLY_STATUS  ? REDIS_R_STATUS
			    : in->type == REDIS_REPLY_ERROR ? REDIS_R_ERROR
							    : REDIS_R_BULK;
		out->str = in->str;
		out->len = in->len;
		return true;
	case REDIS_REPLY_INTEGER:
		out->type = REDIS_R_INT;
		out->integer = in->integer;
		return true;
	case REDIS_REPLY_NIL:
		out->type = REDIS_R_NIL;
		return true;
	case REDIS_REPLY_ARRAY:
		if (depth >= REDIS_MAX_DEPTH || in->elements > REPLY_NODES - *used)
			return false;
		out->type = REDIS_R_ARRAY;
		out->len = in->elements;
		out->elem = &nodes[*used];
		struct redis_reply *elem = &nodes[*used];
		*used += (unsigned)in->elements;
		for (size_t i = 0; i < in->elements; i++)
			if (!reply_view(in->element[i], &elem[i], nodes, used, depth + 1))
				return false;
		return true;
	default:
		return false;
	}
}

/* Feed what arrived to the reader and hand each complete reply to the
 * oldest command. */
static void deliver(struct rconn *rc)
{
	if (redisReaderFeed(rc->reader, buf_head(&rc->in), rc->in.len) != REDIS_OK) {
		rconn_fail(rc, -ENOMEM);
		return;
	}
	rc->unparsed += rc->in.len;
	buf_reset(&rc->in, KEEP_CAP);
	while (!rc->closing) {
		void *v = NULL;
		if (redisReaderGetReply(rc->reader, &v) != REDIS_OK) { /* not RESP */
			rconn_fail(rc, -EPROTO);
			return;
		}
		if (!v)
			break;
		redisReply *reply = v;
		struct redis_cmd *c = rc->head;
		unsigned used = 1;
		/* a reply nobody asked for, or one no user sends a command for */
		if (!c || !reply_view(reply, &rc->nodes[0], rc->nodes, &used, 0)) {
			freeReplyObject(reply);
			rconn_fail(rc, -EPROTO);
			return;
		}
		rc->unparsed = 0;
		rc->head = c->next;
		if (!rc->head)
			rc->tail = NULL;
		rc->n_pending--;
		if (rc->cl)
			rc->cl->fails = 0;
		if (c->cb)
			c->cb(c->arg, 0, &rc->nodes[0]);
		free(c);
		freeReplyObject(reply);
	}
	/* hiredis buffers a reply whole: bound what one reply may hold */
	if (!rc->closing && rc->unparsed > rc->max_bulk + REDIS_MAX_LINE)
		rconn_fail(rc, -EPROTO);
}

static void on_recv(struct io_op *op, int res, unsigned flags)
{
	struct rconn *rc = container_of(op, struct rconn, recv_op);

	if (rc->closing)
		goto out;
	if (res <= 0) {
		rconn_fail(rc, res ? res : -ECONNRESET);
		goto out;
	}
	rc->in.len += (size_t)res;
	deliver(rc);
	if (rc->closing)
		goto out;
	arm_deadline(rc);
	if (!rc->closing && arm_recv(rc))
		rconn_fail(rc, -ENOMEM);
out:
	rconn_put(rc);
}

static void on_connect(struct io_op *op, int res, unsigned flags)
{
	struct rconn *rc = container_of(op, struct rconn, connect_op);

	rc->connecting = false;
	if (rc->closing)
		goto out;
	if (res < 0) {
		rconn_fail(rc, res);
		goto out;
	}
	if (arm_recv(rc)) {
		rconn_fail(rc, -ENOMEM);
		goto out;
	}
	kick_send(rc);
out:
	rconn_put(rc);
}

static void on_timer(struct timer *t)
{
	struct rconn *rc = container_of(t, struct rconn, timer);

	if (rc->head)
		rconn_fail(rc, -ETIMEDOUT);
	else
		rconn_close_idle(rc);
}

static int rconn_open(struct redis_client *cl)
{
	if (!cl->ss_len)
		return -EDESTADDRREQ;
	int fd = sock_stream_for((const struct sockaddr *)&cl->ss);
	if (fd < 0)
		return fd;
	struct rconn *rc = calloc(1, sizeof(*rc));
	if (!rc) {
		close(fd);
		return -ENOMEM;
	}
	rc->cl = cl;
	rc->l = cl->l;
	rc->live = cl->o.live;
	rc->max_bulk = cl->o.max_bulk ? cl->o.max_bulk : REDIS_MAX_BULK_DEFAULT;
	rc->fd = fd;
	rc->reader = redisReaderCreate();
	if (!rc->reader) {
		close(fd);
		free(rc);
		return -ENOMEM;
	}
	rc->connect_op.on_complete = on_connect;
	rc->recv_op.on_complete = on_recv;
	rc->send_op.on_complete = on_send;
	timer_init(&rc->timer, on_timer);
	if (rc->live)
		(*rc->live)++;
	rc->connecting = true;
	rc->refs++;
	struct io_uring_sqe *sqe = loop_sqe(cl->l);
	io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&cl->ss, cl->ss_len);
	loop_sqe_set_op(sqe, &rc->connect_op);
	cl->rc = rc;
	if (cl->o.on_connect) {
		int err = cl->o.on_connect(cl->o.arg, cl);
		if (err && cl->rc == rc)
			rconn_fail(rc, err);
		if (err)
			return err;
	}
	return cl->rc ? 0 : -ECONNABORTED;
}

static void thread_end(void *arg)
{
	struct redis_client *cl = arg;

	/* The loop is gone or no longer run: no completion will come, so
	 * the sockets are closed and the memory freed directly. */
	while (cl) {
		struct redis_client *next = cl->thread_next;
		struct rconn *rc = cl->rc;
		if (rc) {
			struct redis_cmd *c = rconn_detach(rc);
			while (c) {
				struct redis_cmd *cn = c->next;
				free(c);
				c = cn;
			}
			rconn_destroy(rc);
		}
		free(cl);
		cl = next;
	}
}

static void thread_key_make(void)
{
	pthread_key_create(&thread_key, thread_end);
}

struct redis_client *redis_client_new(struct loop *l, const struct redis_opts *o)
{
	struct redis_client *cl = calloc(1, sizeof(*cl));

	if (!cl)
		return NULL;
	cl->l = l;
	cl->o = *o;
	if (!cl->o.max_pending)
		cl->o.max_pending = REDIS_MAX_PENDING_DEFAULT;
	if (!cl->o.breaker_fails)
		cl->o.breaker_fails = REDIS_BREAKER_FAILS_DEFAULT;
	if (!cl->o.breaker_ms)
		cl->o.breaker_ms = REDIS_BREAKER_MS_DEFAULT;
	if (!cl->o.idle_ms)
		cl->o.idle_ms = REDIS_IDLE_MS_DEFAULT;
	pthread_once(&thread_key_once, thread_key_make);
	cl->thread_next = pthread_getspecific(thread_key);
	pthread_setspecific(thread_key, cl);
	return cl;
}

void redis_client_free(struct redis_client *cl)
{
	if (!cl)
		return;
	struct redis_client *head = pthread_getspecific(thread_key);
	if (head == cl) {
		pthread_setspecific(thread_key, cl->thread_next);
	} else {
		for (struct redis_client *p = head; p; p = p->thread_next)
			if (p->thread_next == cl) {
				p->thread_next = cl->thread_next;
				break;
			}
	}
	cl->freeing = true;
	if (cl->rc) {
		struct rconn *rc = cl->rc;
		struct redis_cmd *cmds = rconn_detach(rc);
		rconn_close(rc);
		run_errors(cmds, -ECANCELED);
	}
	free(cl);
}

void redis_client_target(struct redis_client *cl, const struct sockaddr *sa, socklen_t len)
{
	if (len > sizeof(cl->ss))
		len = 0;
	if (len)
		memcpy(&cl->ss, sa, len);
	cl->ss_len = len;
}

void redis_client_breaker(struct redis_client *cl, uint32_t ms)
{
	cl->o.breaker_ms = ms ? ms : REDIS_BREAKER_MS_DEFAULT;
}

int redis_client_ready(struct redis_client *cl)
{
	if (cl->freeing)
		return -ESHUTDOWN;
	if (cl->open_until > cl->l->now)
		return -EAGAIN;
	if (!cl->rc) {
		int err = rconn_open(cl);
		if (err)
			return err;
	}
	return cl->rc->n_pending >= cl->o.max_pending ? -EAGAIN : 0;
}

int redis_command(struct redis_client *cl, uint32_t timeout_ms, int argc, const char *const *argv,
		  const size_t *lens, redis_cb *cb, void *arg, struct redis_cmd **out)
{
	int err = redis_client_ready(cl);

	if (err)
		return err;
	struct rconn *rc = cl->rc;
	struct buf *b = &rc->out[rc->out_idx];
	char *enc = NULL;
	int need = redisFormatCommandArgv(&enc, argc, (const char **)argv, lens);
	struct redis_cmd *c = need > 0 ? calloc(1, sizeof(*c)) : NULL;
	if (!c || buf_append(b, enc, (size_t)need)) {
		free(c);
		redisFreeCommand(enc);
		return -ENOMEM;
	}
	redisFreeCommand(enc);
	c->cb = cb;
	c->arg = arg;
	c->deadline = cl->l->now + timeout_ms;
	if (rc->tail)
		rc->tail->next = c;
	else
		rc->head = c;
	rc->tail = c;
	rc->n_pending++;
	if (!timer_armed(&rc->timer) || rc->head == c)
		arm_deadline(rc);
	kick_send(rc);
	if (out)
		*out = c;
	return 0;
}

void redis_cancel(struct redis_cmd *c)
{
	if (c)
		c->cb = NULL;
}

unsigned redis_client_pending(const struct redis_client *cl)
{
	return cl && cl->rc ? cl->rc->n_pending : 0;
}
