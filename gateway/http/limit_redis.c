/* limit_redis.c — the per-worker Redis client of the global limits (see
 * limit_redis.h). */
#include "http/limit_redis.h"

#include <errno.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/redis.h"
#include "http/worker.h"

#define MAX_PENDING 4096

/* GCRA in microseconds on the server's clock. Returns {admitted, wait_us,
 * reset_us}. The key lives as long as its bucket holds debt. TIME is Redis's
 * wall clock: when it steps back, every stored TAT looks that much further
 * ahead, more debt than the rule can build up (tol + interval). Such a TAT
 * is brought down to "empty now" and stored, as limit.c does for a policy
 * change, so a step of an hour costs a client one interval, not the hour. */
static const char script[] = "local interval = tonumber(ARGV[1])\n"
			     "local tol = tonumber(ARGV[2])\n"
			     "local t = redis.call('TIME')\n"
			     "local now = tonumber(t[1]) * 1000000 + tonumber(t[2])\n"
			     "local tat = tonumber(redis.call('GET', KEYS[1]) or '0')\n"
			     "if tat < now then tat = now end\n"
			     "local cap = now + tol + interval\n"
			     "if tat > cap then\n"
			     "  tat = cap\n"
			     "  redis.call('SET', KEYS[1], string.format('%d', cap), 'PX', "
			     "math.floor((cap - now) / 1000) + 1)\n"
			     "end\n"
			     "if tat - now > tol then return {0, tat - now - tol, tat - now} end\n"
			     "local nt = tat + interval\n"
			     "redis.call('SET', KEYS[1], string.format('%d', nt), 'PX', "
			     "math.floor((nt - now) / 1000) + 1)\n"
			     "return {1, 0, nt - now}\n";

static char script_sha[41];

/* A decision's handle: the caller's callback, which lredis_cancel clears.
 * It is freed when the command ends, cancelled or not. */
struct lredis_op {
	lredis_cb *cb; /* NULL: cancelled */
	void *arg;
	struct worker *w;
};

/* One client per worker, made on first use; freed when the thread ends. */
static __thread struct redis_client *tls_client;
/* The timeout of the command that opens a connection, for its SCRIPT LOAD. */
static __thread uint32_t tls_timeout_ms;

static void on_lr_fail(void *arg, int err, unsigned fails)
{
	struct worker *w = arg;

	if (fails == REDIS_BREAKER_FAILS_DEFAULT)
		log_warn("ratelimit: redis failing (%s); global limits fall back", strerror(-err));
	STAT_INC(w->stats.rl_redis_errors);
}

/* Redis answers the script's errors (NOSCRIPT, OOM, ...) with an error
 * reply: counted and logged, the decision falls back. */
static void count_error(struct worker *w, const struct redis_reply *r)
{
	STAT_INC(w->stats.rl_redis_errors);
	log_warn("ratelimit: redis: %.*s", (int)r->len, r->str);
}

static void on_loaded(void *arg, int err, const struct redis_reply *r)
{
	if (!err && r->type == REDIS_R_ERROR)
		count_error(arg, r);
}

/* The script first, on every new connection (Redis may have restarted). */
static int on_lr_connect(void *arg, struct redis_client *cl)
{
	const char *argv[] = {"SCRIPT", "LOAD", script};
	size_t argvlen[] = {6, 4, sizeof(script) - 1};

	return redis_command(cl, tls_timeout_ms, 3, argv, argvlen, on_loaded, arg, NULL);
}

static uint64_t elem_u64(const struct redis_reply *r)
{
	return r->type == REDIS_R_INT && r->integer > 0 ? (uint64_t)r->integer : 0;
}

static void on_decided(void *arg, int err, const struct redis_reply *r)
{
	struct lredis_op *op = arg;
	bool good = !err && r->type == REDIS_R_ARRAY && r->len == 3;

	if (!err && r->type == REDIS_R_ERROR)
		count_error(op->w, r);
	if (op->cb) {
		if (good)
			op->cb(op->arg, 0, elem_u64(&r->elem[0]) == 1, elem_u64(&r->elem[1]),
			       elem_u64(&r->elem[2]));
		else
			op->cb(op->arg, err ? err : -EPROTO, false, 0, 0);
	}
	free(op);
}

struct lredis_op *lredis_gcra(struct worker *w, const struct cfg_addr *redis, uint32_t timeout_ms,
			      const char *key, uint64_t interval_us, uint64_t tolerance_us,
			      lredis_cb *cb, void *arg)
{
	struct redis_client *cl = tls_client;

	if (!script_sha[0]) { /* same result on every thread: a benign race */
		unsigned char md[SHA_DIGEST_LENGTH];
		char hex[41];
		SHA1((const unsigned char *)script, sizeof(script) - 1, md);
		for (int i = 0; i < SHA_DIGEST_LENGTH; i++)
			snprintf(hex + 2 * i, 3, "%02x", md[i]);
		memcpy(script_sha, hex, sizeof(hex));
	}
	if (!cl) {
		/* 3 failures open the breaker for 1 s; 1 s idle (the defaults) */
		struct redis_opts o = {.on_connect = on_lr_connect,
				       .on_fail = on_lr_fail,
				       .arg = w,
				       .max_pending = MAX_PENDING,
				       .stopping = &w->draining,
				       .live = &w->n_conns};
		cl = tls_client = redis_client_new(&w->loop, &o);
		if (!cl)
			return NULL;
	}
	redis_client_target(cl, (const struct sockaddr *)&redis->ss, redis->len);
	tls_timeout_ms = timeout_ms;
	int err = redis_client_ready(cl);
	if (err) {
		if (err != -EAGAIN)
			STAT_INC(w->stats.rl_redis_errors);
		return NULL;
	}
	struct lredis_op *op = malloc(sizeof(*op));
	if (!op)
		return NULL;
	*op = (struct lredis_op){.cb = cb, .arg = arg, .w = w};
	char iv[24], tv[24];
	int il = snprintf(iv, sizeof(iv), "%llu", (unsigned long long)interval_us);
	int tl = snprintf(tv, sizeof(tv), "%llu", (unsigned long long)tolerance_us);
	const char *argv[] = {"EVALSHA", script_sha, "1", key, iv, tv};
	size_t argvlen[] = {7, 40, 1, strlen(key), (size_t)il, (size_t)tl};
	if (redis_command(cl, timeout_ms, 6, argv, argvlen, on_decided, op, NULL)) {
		free(op);
		return NULL;
	}
	return op;
}

void lredis_cancel(struct lredis_op *op)
{
	if (op)
		op->cb = NULL;
}
