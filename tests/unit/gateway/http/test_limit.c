/* test_limit.c — the shared GCRA table of http/limit.c seen through the accept-time limit:
 * the burst is admitted exactly once across threads hammering one key at the same time
 * (the property that makes a limit exact across workers), refills at the configured rate,
 * and a policy swap applies at once. */
#include "http/limit.h"
#include "http/worker.h"
#include "tests/lib/test.h"

#include <pthread.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define THREADS 4
#define CALLS 20000

static int fd;
static struct worker workers[THREADS];

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *hammer(void *arg)
{
	struct worker *w = arg;
	long ok = 0;

	for (int i = 0; i < CALLS; i++)
		ok += limit_accept(w, fd);
	return (void *)ok;
}

/* limit_configure copies what it needs: the snapshot can go at once */
static int configure(uint32_t rate, uint32_t burst)
{
	struct config *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return -1;
	c->ratelimit.kernel.syn_rate = rate;
	c->ratelimit.kernel.syn_burst = burst;
	c->ratelimit.hosts = 1;
	rc = limit_configure(c);
	free(c);
	return rc;
}

int main(void)
{
	int sp[2];
	pthread_t th[THREADS];
	long admitted = 0;

	/* a Unix socket's peer has no address: every call is the same source ("?") */
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp)) {
		test_skip("limit_exact_across_threads", "socketpair failed");
		return test_exit_code();
	}
	fd = sp[0];

	test_begin("limit_exact_across_threads");
	CHECK_INT(configure(1, 1000), 0);
	double t0 = now_s();
	for (int i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, hammer, &workers[i]);
	for (int i = 0; i < THREADS; i++) {
		void *ok;
		pthread_join(th[i], &ok);
		admitted += (long)ok;
	}
	double spent = now_s() - t0;
	/* burst 1000 at 1/s: 1000, plus one per second the run took */
	CHECK_MSG(admitted >= 1000 && admitted <= 1000 + (long)spent + 1,
		  "admitted %ld of %d calls in %.2f s", admitted, THREADS * CALLS, spent);
	uint64_t refused = 0;
	for (int i = 0; i < THREADS; i++)
		refused += workers[i].stats.rl_accept_refused;
	CHECK_INT(refused, (long)THREADS * CALLS - admitted);
	test_end();

	test_begin("limit_policy_swap_and_refill");
	/* a much more lenient policy: the debt of the old one (1000 s) is cut to an empty
	 * bucket when first seen, which then refills at 1000/s */
	CHECK_INT(configure(1000, 10), 0);
	CHECK(!limit_accept(&workers[0], fd));
	usleep(50000);
	int ok = 0;
	for (int i = 0; i < 10; i++)
		ok += limit_accept(&workers[0], fd);
	CHECK_MSG(ok == 10, "admitted %d of 10 after 50 ms at 1000/s", ok);
	/* no limit configured: everything passes */
	CHECK_INT(configure(0, 0), 0);
	ok = 0;
	for (int i = 0; i < 100; i++)
		ok += limit_accept(&workers[0], fd);
	CHECK_INT(ok, 100);
	test_end();
	close(sp[0]);
	close(sp[1]);
	return test_exit_code();
}
