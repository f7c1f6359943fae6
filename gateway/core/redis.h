/* redis.h — a Redis client on a worker's own io_uring (never a blocking
 * call), shared by the cache's L2 (http/cache_redis.c) and the global rate
 * limits (http/limit_redis.c). Each user keeps its commands and its policy
 * (what a reply means, what to count and log); this module owns what is the
 * same for both.
 *
 * Replies are read by hiredis's reader (redisReader) and commands written by
 * its formatter (redisFormatCommandArgv); the socket is ours, driven from
 * the owner's io_uring, so nothing ever blocks. A reply reaches its
 * callback as a view (struct redis_reply) of hiredis's reply tree.
 *
 * - struct redis_client: one connection at a time to one server, on the
 *   owner's loop and timer wheel (so: on the owner's thread only).
 *   Commands are pipelined in order and answered in order (a FIFO of
 *   in-flight commands, each with its own callback and deadline). The
 *   connection is opened by the first command that needs it, and
 *   closed after idle_ms without a command, at once when *stopping is
 *   true and nothing is pending, and on any failure: EOF, a socket error,
 *   a malformed reply (not RESP2, nested deeper than REDIS_MAX_DEPTH, more
 *   than 256 values, or over max_bulk), a reply nobody asked for, or the oldest pending
 *   command passing its deadline. A failure hands every pending command
 *   its error (callbacks run after the connection is detached, so they may
 *   queue new commands, which open a new connection). After
 *   breaker_fails failed connections in a row no connection is tried for
 *   breaker_ms (commands are refused with -EAGAIN at once); any reply
 *   resets the count.
 *
 * Ownership: the client owns its connection and its commands; a command's
 * callback runs exactly once (a reply, or an error) unless it was
 * cancelled first. A client is freed by redis_client_free() or, if its
 * owner forgets, when the thread that made it ends.
 */
#ifndef REFLEX_CORE_REDIS_H
#define REFLEX_CORE_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct loop;

/* ---- replies ---------------------------------------------------------------- */

enum redis_type {
	REDIS_R_STATUS = 1, /* +OK          str, len */
	REDIS_R_ERROR,	    /* -ERR ...     str, len */
	REDIS_R_INT,	    /* :42          integer */
	REDIS_R_BULK,	    /* $3 foo       str, len (binary safe) */
	REDIS_R_NIL,	    /* $-1 or *-1 */
	REDIS_R_ARRAY,	    /* *2 ...       elem[0 .. len) */
};

struct redis_reply {
	enum redis_type type;
	size_t len;	 /* bytes at str, or elements at elem */
	const char *str; /* a view into hiredis's reply: valid during the callback */
	long long integer;
	const struct redis_reply *elem; /* ARRAY: len consecutive nodes */
};

#define REDIS_MAX_DEPTH 8		    /* arrays inside arrays (hiredis allows 7) */
#define REDIS_MAX_LINE 65536		    /* slack over max_bulk for one reply's framing */
#define REDIS_MAX_BULK_DEFAULT (512u << 20) /* Redis's own proto-max-bulk-len */

/* ---- the client ------------------------------------------------------------------ */

struct redis_client;
struct redis_cmd;

/* err 0: r is the reply (an error reply is a reply: r->type REDIS_R_ERROR).
 * err < 0: no reply (-ETIMEDOUT, -ECONNRESET, -ECONNREFUSED, -EPROTO for a
 * malformed reply, -ECANCELED when the client is freed) and r is NULL.
 * r and everything it points to are valid during the call only. */
typedef void redis_cb(void *arg, int err, const struct redis_reply *r);

#define REDIS_MAX_PENDING_DEFAULT 1024
#define REDIS_BREAKER_FAILS_DEFAULT 3
#define REDIS_BREAKER_MS_DEFAULT 1000
#define REDIS_IDLE_MS_DEFAULT 1000

/* The owner's policy; a 0 takes the *_DEFAULT above. */
struct redis_opts {
	unsigned max_pending;	/* commands in flight per connection; more: -EAGAIN */
	unsigned breaker_fails; /* failed connections in a row that open the breaker */
	uint32_t breaker_ms;	/* how long it stays open */
	uint32_t idle_ms;	/* an idle connection is closed after this long */
	size_t max_bulk;	/* largest reply buffered (REDIS_MAX_BULK_DEFAULT) */
	/* Incremented while a connection is open (its socket and in-flight
	 * ops exist), so the owner's loop does not stop under it: a worker
	 * passes &w->n_conns. May be NULL. */
	unsigned *live;
	/* When it reads true, an idle connection is closed at once instead of
	 * after idle_ms (a worker passes &w->draining). May be NULL. */
	const bool *stopping;
	/* A connection was just opened (the connect is in flight): queue what
	 * must precede everything else on it (SCRIPT LOAD). Nonzero: the
	 * connection is given up (and fails with that error). May be NULL. */
	int (*on_connect)(void *arg, struct redis_client *cl);
	/* A connection failed with err; fails counts failures in a row (the
	 * breaker opened when fails >= breaker_fails). Runs before the pending
	 * commands get their errors. May be NULL. */
	void (*on_fail)(void *arg, int err, unsigned fails);
	void *arg;
};

/* A client on loop l (the calling thread's). NULL when out of memory. */
struct redis_client *redis_client_new(struct loop *l, const struct redis_opts *o);
/* Pending commands get -ECANCELED (their callbacks must not use cl) and
 * the connection closes through the loop: it is gone, and *live dropped,
 * once its in-flight ops have completed. NULL-safe. On the owner's
 * thread, while the loop still runs; a client not freed is freed when its
 * thread ends, without the loop (and without running pending callbacks:
 * a worker's loop only stops once no connection is open). */
void redis_client_free(struct redis_client *cl);
/* The server for connections opened from now on (a connection already
 * open stays until it closes). */
void redis_client_target(struct redis_client *cl, const struct sockaddr *sa, socklen_t len);

/* How long the breaker stays open from its next opening on (0: the default). */
void redis_client_breaker(struct redis_client *cl, uint32_t ms);

/* Can a command be queued now? Opens the connection if there is none.
 * 0: yes. -EAGAIN: the breaker is open or max_pending commands are in
 * flight. Else -errno: no connection could be started (no target, socket
 * or memory failure). */
int redis_client_ready(struct redis_client *cl);

/* Queue a command (after the same checks as redis_client_ready) with a
 * deadline timeout_ms from now. cb may be NULL (fire and forget). On
 * success returns 0 and, if out is not NULL, the command's handle, valid
 * until its callback runs or it is cancelled. On failure cb is never
 * called. */
int redis_command(struct redis_client *cl, uint32_t timeout_ms, int argc, const char *const *argv,
		  const size_t *lens, redis_cb *cb, void *arg, struct redis_cmd **out);
/* The caller goes away: the callback will not run (the reply is still
 * read and dropped, so the pipeline stays in order). NULL-safe. */
void redis_cancel(struct redis_cmd *c);

/* Commands in flight on the current connection (0 without one). */
unsigned redis_client_pending(const struct redis_client *cl);

#endif
