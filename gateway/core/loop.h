/* loop.h — one io_uring event loop per worker thread.
 *
 * Every SQE's user_data points to a struct io_op embedded in the object that
 * issued it; the completion calls op->on_complete with the CQE's result and
 * flags. user_data 0 marks fire-and-forget SQEs (cancels) whose completions
 * are dropped. The owner of an io_op must keep it alive until its last
 * completion (for multishot ops: the one without IORING_CQE_F_MORE).
 *
 * The ring is set up SINGLE_ISSUER | DEFER_TASKRUN: only the owning thread
 * may touch it. One io_uring_enter per iteration submits everything queued
 * and waits for completions or the next timer.
 *
 * Provided buffers: one buffer ring (group 0) shared by the worker's
 * multishot recvs. A completion that carries IORING_CQE_F_BUFFER owns that
 * buffer until loop_buf_put() gives it back; the data path copies and gives
 * it back at once, so the ring only runs dry under a burst larger than it.
 */
#ifndef REFLEX_CORE_LOOP_H
#define REFLEX_CORE_LOOP_H

#include <liburing.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/timer.h"

#include <stddef.h>

/* The object an embedded member (an io_op, a timer, a conn) belongs to:
 * how completions and timers find their owner. */
#ifndef container_of
#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))
#endif

struct io_op;
typedef void io_cb(struct io_op *op, int res, unsigned flags);

struct io_op {
	io_cb *on_complete;
};

struct loop;
typedef void loop_hook(struct loop *l);

struct loop {
	struct io_uring ring;
	struct timer_wheel timers;
	uint64_t now;    /* ms, refreshed when the wait returns and after dispatch */
	uint64_t now_ns; /* the same instant in ns: request timings use it, so they
			    have the resolution of one loop iteration (one clock
			    read per iteration instead of several per request) */
	int64_t wall_ms; /* loop_wall_ms(): CLOCK_REALTIME at now_ns */
	uint64_t wall_at_ns; /* the now_ns it was read at (0: not yet) */

	/* provided-buffer ring */
	struct io_uring_buf_ring *br;
	char *bufs;
	unsigned buf_size, buf_count, buf_mask;
	unsigned bufs_out; /* buffers handed out and not yet returned */

	loop_hook *before_submit; /* runs right before each submit (output flush) */
	void *owner;
	bool stop;
};

#define LOOP_BGID 0

/* Set up the ring (entries SQEs) and the buffer ring (buf_count × buf_size;
 * buf_count a power of two). Returns 0 or -errno. */
int loop_init(struct loop *l, unsigned entries, unsigned buf_count, unsigned buf_size);
void loop_fini(struct loop *l);

/* An SQE to fill; never NULL (submits to make room when the SQ is full). */
struct io_uring_sqe *loop_sqe(struct loop *l);

static inline void loop_sqe_set_op(struct io_uring_sqe *sqe, struct io_op *op)
{
	io_uring_sqe_set_data(sqe, op);
}

/* Arm a multishot recv on fd with buffer selection from the worker's ring. */
void loop_recv_multishot(struct loop *l, int fd, struct io_op *op);

/* The bytes of provided buffer bid (valid until loop_buf_put(bid)). */
static inline const char *loop_buf(const struct loop *l, unsigned bid)
{
	return l->bufs + (size_t)bid * l->buf_size;
}
void loop_buf_put(struct loop *l, unsigned bid);

/* The wall clock (CLOCK_REALTIME, ms) at this iteration: read at most once
 * per value of now_ns, as the request timings are. A keep-alive cache hit
 * needs it twice (request time, Age) and the clock reads were ~10 % of its
 * user time; Age counts whole seconds, so one iteration's error is moot. */
int64_t loop_wall_ms(struct loop *l);

/* Run until l->stop: submit, wait for completions or the next timer,
 * dispatch completions, fire timers. */
void loop_run(struct loop *l);

#endif
