#include "core/loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

int loop_init(struct loop *l, unsigned entries, unsigned buf_count, unsigned buf_size)
{
	struct io_uring_params p;
	int rc;

	memset(l, 0, sizeof(*l));
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
		  IORING_SETUP_COOP_TASKRUN | IORING_SETUP_SUBMIT_ALL;
	/* Multishot recvs on many sockets can post far more completions than
	 * we submit: size the CQ generously so it never overflows. */
	p.flags |= IORING_SETUP_CQSIZE;
	p.cq_entries = entries * 8;
	rc = io_uring_queue_init_params(entries, &l->ring, &p);
	if (rc < 0)
		return rc;

	l->buf_count = buf_count;
	l->buf_size = buf_size;
	l->buf_mask = (unsigned)io_uring_buf_ring_mask(buf_count);
	size_t ring_bytes = (size_t)buf_count * sizeof(struct io_uring_buf);
	l->br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (l->br == MAP_FAILED) {
		rc = -errno;
		l->br = NULL;
		goto err_ring;
	}
	/* Touch the buffers now: they are the worker's fixed receive memory,
	 * and counting them at start keeps RSS flat under load. */
	l->bufs = aligned_alloc(4096, (size_t)buf_count * buf_size);
	if (!l->bufs) {
		rc = -ENOMEM;
		goto err_br;
	}
	memset(l->bufs, 0, (size_t)buf_count * buf_size);

	struct io_uring_buf_reg reg = {
		.ring_addr = (uintptr_t)l->br,
		.ring_entries = buf_count,
		.bgid = LOOP_BGID,
	};
	rc = io_uring_register_buf_ring(&l->ring, &reg, 0);
	if (rc < 0)
		goto err_bufs;
	io_uring_buf_ring_init(l->br);
	for (unsigned i = 0; i < buf_count; i++)
		io_uring_buf_ring_add(l->br, l->bufs + (size_t)i * buf_size, buf_size, (unsigned short)i,
				      (int)l->buf_mask, (int)i);
	io_uring_buf_ring_advance(l->br, (int)buf_count);

	l->now_ns = clock_ns();
	l->now = l->now_ns / 1000000u;
	timer_wheel_init(&l->timers, l->now);
	return 0;

err_bufs:
	free(l->bufs);
	l->bufs = NULL;
err_br:
	munmap(l->br, ring_bytes);
	l->br = NULL;
err_ring:
	io_uring_queue_exit(&l->ring);
	return rc;
}

void loop_fini(struct loop *l)
{
	io_uring_queue_exit(&l->ring);
	if (l->br)
		munmap(l->br, (size_t)l->buf_count * sizeof(struct io_uring_buf));
	free(l->bufs);
	l->br = NULL;
	l->bufs = NULL;
}

struct io_uring_sqe *loop_sqe(struct loop *l)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&l->ring);

	while (!sqe) {
		io_uring_submit(&l->ring);
		sqe = io_uring_get_sqe(&l->ring);
	}
	return sqe;
}

void loop_recv_multishot(struct loop *l, int fd, struct io_op *op)
{
	struct io_uring_sqe *sqe = loop_sqe(l);

	io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = LOOP_BGID;
	loop_sqe_set_op(sqe, op);
}

int64_t loop_wall_ms(struct loop *l)
{
	if (l->wall_at_ns != l->now_ns) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		l->wall_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
		l->wall_at_ns = l->now_ns;
	}
	return l->wall_ms;
}

void loop_buf_put(struct loop *l, unsigned bid)
{
	io_uring_buf_ring_add(l->br, l->bufs + (size_t)bid * l->buf_size, l->buf_size,
			      (unsigned short)bid, (int)l->buf_mask, 0);
	io_uring_buf_ring_advance(l->br, 1);
}

void loop_run(struct loop *l)
{
	struct io_uring_cqe *cqe;

	while (!l->stop) {
		if (l->before_submit)
			l->before_submit(l);
		if (l->stop)
			break;

		int64_t wait = timer_wheel_next(&l->timers);
		int rc;
		if (wait < 0) {
			rc = io_uring_submit_and_wait(&l->ring, 1);
		} else if (wait == 0) {
			rc = io_uring_submit(&l->ring);
		} else {
			struct __kernel_timespec ts = {
				.tv_sec = wait / 1000,
				.tv_nsec = (wait % 1000) * 1000000,
			};
			rc = io_uring_submit_and_wait_timeout(&l->ring, &cqe, 1, &ts, NULL);
		}
		(void)rc; /* -ETIME and -EINTR just mean "look at the timers" */
		/* The wait may have lasted long: handlers below arm deadlines
		 * from l->now, so it must be the time of the wake-up. */
		l->now_ns = clock_ns();
		l->now = l->now_ns / 1000000u;

		unsigned head, n = 0;
		io_uring_for_each_cqe(&l->ring, head, cqe) {
			struct io_op *op = io_uring_cqe_get_data(cqe);
			n++;
			if (op)
				op->on_complete(op, cqe->res, cqe->flags);
		}
		io_uring_cq_advance(&l->ring, n);

		l->now_ns = clock_ns();
		l->now = l->now_ns / 1000000u;
		timer_wheel_run(&l->timers, l->now);
	}
}
