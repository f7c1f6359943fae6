/* limit_redis.c — the per-worker Redis client of the global limits (see
 * limit_redis.h). */
#include "http/limit_redis.h"

#include <errno.h>
#include <hiredis/hiredis.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/sock.h"
#include "http/conn.h"
#include "http/worker.h"


#define BREAKER_FAILS 3
#define BREAKER_OPEN_MS 1000
#define MAX_PENDING 4096
#define IDLE_MS 1000

/* GCRA in microseconds on the server's clock. Returns {admitted, wait_us,
 * reset_us}. The key lives as long as its bucket holds debt. */
static const char script[] = "local interval = tonumber(ARGV[1])\n"
			     "local tol = tonumber(ARGV[2])\n"
			     "local t = redis.call('TIME')\n"
			     "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
			     "local tat = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
			     "if tat < now then tat = now end\n"
			     "if tat - now > tol then return {0, tat - now - tol, tat - now} end\n"
			     "local nt = tat + interval\n"
			     "redis.call('SET', KEYS[1], string.format('%d', nt), 'PX', "
			     "math.floor((nt - now) / 1000) + 1)\n"
			     "return {1, 0, nt - now}\n";

static char script_sha[41];

struct lredis_op {
	struct lredis_op *next;
	lredis_cb *cb; /* NULL: cancelled, or the SCRIPT LOAD */
	void *arg;
	uint64_t deadline; /* loop ms */
};

struct lr_conn {
	struct conn conn;
	struct lr_client *cl;
	struct io_op connect_op;
	redisReader *reader;
	struct lredis_op *head, *tail;
	unsigned n_pending;
};

struct lr_client {
	struct worker *w;
	struct lr_conn *lc;
	unsigned fails;
	uint64_t open_until;
};

static __thread struct lr_client *tls_client;
/* Frees a worker's client when its thread ends (its connection is gone by then). */
static pthread_key_t client_key;
static pthread_once_t client_key_once = PTHREAD_ONCE_INIT;

static void client_key_make(void)
{
	pthread_key_create(&client_key, free);
}
static const struct conn_ops lr_ops;

static void fail_all(struct lr_conn *lc, int err)
{
	struct lr_client *cl = lc->cl;
	struct lredis_op *op = lc->head;

	lc->head = lc->tail = NULL;
	lc->n_pending = 0;
	if (cl && cl->lc == lc) {
		cl->lc = NULL;
		if (++cl->fails >= BREAKER_FAILS)
			cl->open_until = cl->w->loop.now + BREAKER_OPEN_MS;
		if (cl->fails == BREAKER_FAILS)
			log_warn("ratelimit: redis failing (%s); global limits fall back",
				 strerror(-err));
		STAT_INC(cl->w->stats.rl_redis_errors);
	}
	lc->cl = NULL;
	conn_close(&lc->conn, false);
	while (op) {
		struct lredis_op *next = op->next;
		if (op->cb)
			op->cb(op->arg, err, false, 0, 0);
		free(op);
		op = next;
	}
}

static void idle_close(struct lr_conn *lc)
{
	if (lc->cl && lc->cl->lc == lc)
		lc->cl->lc = NULL;
	lc->cl = NULL;
	conn_close(&lc->conn, false);
}

static void arm_deadline(struct lr_conn *lc)
{
	struct worker *w = lc->conn.w;

	if (lc->head)
		timer_arm(&w->loop.timers, &lc->conn.timer, lc->head->deadline);
	else if (w->draining)
		idle_close(lc);
	else
		timer_arm(&w->loop.timers, &lc->conn.timer, w->loop.now + IDLE_MS);
}

static uint64_t elem_u64(const redisReply *r)
{
	return r->type == REDIS_REPLY_INTEGER && r->integer > 0 ? (uint64_t)r->integer : 0;
}

static void on_recv(struct conn *cn, const char *data, size_t len)
{
	struct lr_conn *lc = container_of(cn, struct lr_conn, conn);
	void *reply;

	if (redisReaderFeed(lc->reader, data, len) != REDIS_OK) {
		fail_all(lc, -EPROTO);
		return;
	}
	for (;;) {
		if (redisReaderGetReply(lc->reader, &reply) != REDIS_OK) {
			fail_all(lc, -EPROTO);
			return;
		}
		if (!reply)
			break;
		redisReply *rp = reply;
		struct lredis_op *op = lc->head;
		if (!op) {
			freeReplyObject(reply);
			fail_all(lc, -EPROTO);
			return;
		}
		lc->head = op->next;
		if (!lc->head)
			lc->tail = NULL;
		lc->n_pending--;
		bool good = rp->type == REDIS_REPLY_ARRAY && rp->elements == 3;
		if (good && lc->cl)
			lc->cl->fails = 0;
		if (rp->type == REDIS_REPLY_ERROR && lc->cl) {
			STAT_INC(lc->cl->w->stats.rl_redis_errors);
			log_warn("ratelimit: redis: %.*s", (int)rp->len, rp->str);
		}
		if (op->cb) {
			if (good)
				op->cb(op->arg, 0, elem_u64(rp->element[0]) == 1,
				       elem_u64(rp->element[1]), elem_u64(rp->element[2]));
			else
				op->cb(op->arg, -EPROTO, false, 0, 0);
		}
		freeReplyObject(reply);
		free(op);
	}
	arm_deadline(lc);
}

static void on_eof(struct conn *cn, int err)
{
	fail_all(container_of(cn, struct lr_conn, conn), err ? err : -ECONNRESET);
}

static void on_timeout(struct conn *cn)
{
	struct lr_conn *lc = container_of(cn, struct lr_conn, conn);

	if (!lc->head)
		idle_close(lc);
	else
		fail_all(lc, -ETIMEDOUT);
}

static void on_destroy(struct conn *cn)
{
	struct lr_conn *lc = container_of(cn, struct lr_conn, conn);

	if (lc->reader)
		redisReaderFree(lc->reader);
	free(lc);
}

static const struct conn_ops lr_ops = {
	.on_recv = on_recv,
	.on_eof = on_eof,
	.on_timeout = on_timeout,
	.on_destroy = on_destroy,
};

static void on_connect(struct io_op *op, int res, unsigned flags)
{
	struct lr_conn *lc = container_of(op, struct lr_conn, connect_op);

	conn_put(&lc->conn);
	if (lc->conn.closing)
		return;
	if (res < 0) {
		fail_all(lc, res);
		return;
	}
	conn_start_recv(&lc->conn);
	conn_connected(&lc->conn);
}

static int queue(struct lr_conn *lc, uint32_t timeout_ms, int argc, const char **argv,
		 const size_t *argvlen, lredis_cb *cb, void *arg, struct lredis_op **out)
{
	char *cmd;
	int n = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
	struct lredis_op *op;

	if (n < 0)
		return -ENOMEM;
	op = calloc(1, sizeof(*op));
	if (!op) {
		redisFreeCommand(cmd);
		return -ENOMEM;
	}
	op->cb = cb;
	op->arg = arg;
	op->deadline = lc->conn.w->loop.now + timeout_ms;
	conn_write(&lc->conn, cmd, (size_t)n);
	redisFreeCommand(cmd);
	if (lc->tail)
		lc->tail->next = op;
	else
		lc->head = op;
	lc->tail = op;
	lc->n_pending++;
	if (!timer_armed(&lc->conn.timer))
		arm_deadline(lc);
	if (out)
		*out = op;
	return 0;
}

static struct lr_conn *connect_to(struct lr_client *cl, const struct cfg_addr *a,
				  uint32_t timeout_ms)
{
	struct worker *w = cl->w;
	int fd = sock_stream_for((const struct sockaddr *)&a->ss);

	if (fd < 0)
		return NULL;
	struct lr_conn *lc = calloc(1, sizeof(*lc));
	if (!lc || !(lc->reader = redisReaderCreate())) {
		free(lc);
		close(fd);
		return NULL;
	}
	conn_init(&lc->conn, w, fd, &lr_ops);
	lc->cl = cl;
	lc->connect_op.on_complete = on_connect;
	lc->conn.connecting = true;
	struct io_uring_sqe *sqe = loop_sqe(&w->loop);
	io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&a->ss, a->len);
	loop_sqe_set_op(sqe, &lc->connect_op);
	lc->conn.refs++;
	/* the script first, on every new connection (Redis may have restarted) */
	const char *argv[] = {"SCRIPT", "LOAD", script};
	size_t argvlen[] = {6, 4, sizeof(script) - 1};
	if (queue(lc, timeout_ms, 3, argv, argvlen, NULL, NULL, NULL)) {
		fail_all(lc, -ENOMEM);
		return NULL;
	}
	return lc;
}

struct lredis_op *lredis_gcra(struct worker *w, const struct cfg_addr *redis, uint32_t timeout_ms,
			      const char *key, uint64_t interval_us, uint64_t tolerance_us,
			      lredis_cb *cb, void *arg)
{
	struct lr_client *cl = tls_client;
	struct lredis_op *op = NULL;

	if (!script_sha[0]) { /* same result on every thread: a benign race */
		unsigned char md[SHA_DIGEST_LENGTH];
		char hex[41];
		SHA1((const unsigned char *)script, sizeof(script) - 1, md);
		for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
		memcpy(script_sha, hex, sizeof(hex));
	}
	if (!cl) {
		pthread_once(&client_key_once, client_key_make);
		cl = tls_client = calloc(1, sizeof(*cl));
		if (!cl)
			return NULL;
		cl->w = w;
		pthread_setspecific(client_key, cl);
	}
	if (cl->open_until > w->loop.now)
		return NULL;
	if (!cl->lc && !(cl->lc = connect_to(cl, redis, timeout_ms))) {
		STAT_INC(w->stats.rl_redis_errors);
		return NULL;
	}
	if (cl->lc->n_pending >= MAX_PENDING)
		return NULL;
	char iv[24], tv[24];
	int il = snprintf(iv, sizeof(iv), "%llu", (unsigned long long)interval_us);
	int tl = snprintf(tv, sizeof(tv), "%llu", (unsigned long long)tolerance_us);
	const char *argv[] = {"EVALSHA", script_sha, "1", key, iv, tv};
	size_t argvlen[] = {7, 40, 1, strlen(key), (size_t)il, (size_t)tl};
	if (queue(cl->lc, timeout_ms, 6, argv, argvlen, cb, arg, &op))
		return NULL;
	return op;
}

void lredis_cancel(struct lredis_op *op)
{
	if (op)
		op->cb = NULL;
}
