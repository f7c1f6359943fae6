/* Unit tests for perf/loadgen/schedule.c: constant and Poisson open-loop
 * schedules, reproducibility, and Zipf sampling. */
#include "perf/loadgen/schedule.h"
#include "tests/lib/test.h"

#include <math.h>
#include <errno.h>
#include <stdlib.h>

static void test_constant(void)
{
	test_begin("schedule_constant");
	struct schedule s;
	const uint64_t start = 5000000000ULL;

	schedule_init(&s, 1000, false, start, 1);
	CHECK_INT(schedule_peek(&s), start);
	CHECK_INT(schedule_next(&s), start);
	for (uint64_t k = 1; k < 5000; k++)
		CHECK_INT(schedule_next(&s), start + k * 1000000);

	/* A rate that does not divide a second: no accumulated drift after
	 * a million requests (each time is computed from k, not summed). */
	schedule_init(&s, 3, false, start, 1);
	uint64_t t = 0;
	for (int k = 0; k <= 3000000; k++)
		t = schedule_next(&s);
	CHECK_MSG(llabs((long long)(t - start) - 1000000LL * 1000000000LL) <= 1,
		  "t(3e6) - start = %llu", (unsigned long long)(t - start));

	/* Exactly rate * T intended sends fall inside [start, start + T). */
	schedule_init(&s, 2000, false, start, 1);
	int n = 0;
	while (schedule_next(&s) < start + 3000000000ULL)
		n++;
	CHECK_INT(n, 6000);
	test_end();
}

static void test_poisson(void)
{
	test_begin("schedule_poisson");
	enum { N = 400000 };
	const double rate = 10000, mean = 1e9 / rate;
	struct schedule s;
	const uint64_t start = 1000;
	double sum = 0, sumsq = 0;
	int longer = 0, in_first_second = 0;
	uint64_t prev = start;

	schedule_init(&s, rate, true, start, 12345);
	CHECK(schedule_peek(&s) > start); /* the first arrival is one gap in */
	for (int i = 0; i < N; i++) {
		uint64_t t = schedule_next(&s);
		double gap = (double)(t - prev);
		CHECK_MSG(t >= prev, "schedule went backwards at %d", i);
		sum += gap;
		sumsq += gap * gap;
		longer += gap > mean;
		in_first_second += t < start + 1000000000ULL;
		prev = t;
	}
	double m = sum / N, sd = sqrt(sumsq / N - m * m);
	/* Exponential gaps: mean 1/rate, standard deviation = mean,
	 * P(gap > mean) = 1/e. Bounds are > 5 standard errors wide. */
	CHECK_MSG(fabs(m / mean - 1) < 0.01, "mean gap %.1f ns, want %.1f", m, mean);
	CHECK_MSG(fabs(sd / m - 1) < 0.02, "coefficient of variation %.3f, want 1", sd / m);
	CHECK_MSG(fabs((double)longer / N - exp(-1)) < 0.005, "P(gap > mean) = %.4f, want %.4f",
		  (double)longer / N, exp(-1));
	/* Arrivals in one second: Poisson(10000), sd 100. */
	CHECK_MSG(abs(in_first_second - 10000) < 500, "%d arrivals in the first second",
		  in_first_second);

	/* Same seed, same schedule; another seed, another schedule. */
	struct schedule a, b, c;
	schedule_init(&a, rate, true, 0, 99);
	schedule_init(&b, rate, true, 0, 99);
	schedule_init(&c, rate, true, 0, 100);
	int same = 1, differ = 0;
	for (int i = 0; i < 1000; i++) {
		uint64_t x = schedule_next(&a), y = schedule_next(&b), z = schedule_next(&c);
		same &= x == y;
		differ |= x != z;
	}
	CHECK(same);
	CHECK(differ);
	test_end();
}

static void test_zipf(void)
{
	test_begin("zipf_sampling");
	enum { N = 100, DRAWS = 1000000 };
	struct zipf z;
	struct rng r;
	static unsigned hits[N];
	double h = 0;

	CHECK_INT(zipf_init(&z, 0, 1.0), -EINVAL);
	CHECK_INT(zipf_init(&z, N, 1.0), 0);
	rng_seed(&r, 3);
	for (int i = 0; i < DRAWS; i++) {
		size_t k = zipf_sample(&z, &r);
		CHECK(k < N);
		if (k < N)
			hits[k]++;
	}
	for (int i = 1; i <= N; i++)
		h += 1.0 / i;
	/* P(rank i) = 1 / ((i + 1) H_N): check the head, where counts are large. */
	for (int i = 0; i < 10; i++) {
		double want = DRAWS / ((i + 1) * h);
		CHECK_MSG(fabs(hits[i] - want) < 5 * sqrt(want) + 1, "rank %d: %u draws, want %.0f",
			  i, hits[i], want);
	}
	zipf_free(&z);

	/* Exponent 0 is uniform. */
	CHECK_INT(zipf_init(&z, 4, 0.0), 0);
	unsigned u[4] = {0};
	for (int i = 0; i < 400000; i++)
		u[zipf_sample(&z, &r)]++;
	for (int i = 0; i < 4; i++)
		CHECK_MSG(abs((int)u[i] - 100000) < 2000, "uniform bucket %d: %u", i, u[i]);
	zipf_free(&z);
	test_end();
}

static void test_rng_below(void)
{
	test_begin("rng_below");
	struct rng r;
	unsigned c[7] = {0};

	rng_seed(&r, 5);
	for (int i = 0; i < 700000; i++) {
		uint64_t v = rng_below(&r, 7);
		CHECK(v < 7);
		if (v < 7)
			c[v]++;
	}
	for (int i = 0; i < 7; i++)
		CHECK_MSG(abs((int)c[i] - 100000) < 2000, "value %d drawn %u times", i, c[i]);
	test_end();
}

int main(void)
{
	test_constant();
	test_poisson();
	test_zipf();
	test_rng_below();
	return test_exit_code();
}
