/* Unit tests for perf/loadgen/hist.c: bucket precision, percentiles against a
 * sorted reference within the documented bound, and merging across threads. */
#include "perf/loadgen/hist.h"
#include "perf/loadgen/schedule.h"
#include "tests/lib/test.h"

#include <math.h>
#include <stdlib.h>

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* The value of rank ceil(p% of n) in a sorted array: what an exact
 * percentile is under hist_percentile's definition. */
static uint64_t ref_percentile(const uint64_t *sorted, size_t n, double p)
{
	size_t rank = (size_t)ceil(p / 100.0 * n - 1e-9);

	if (rank < 1)
		rank = 1;
	return sorted[rank - 1];
}

/* Log-uniform between 1 µs and 100 s: every bucket range gets exercised. */
static uint64_t log_uniform(struct rng *r)
{
	return (uint64_t)exp(rng_double(r) * log((double)HIST_MAX_US)) + 1;
}

static void test_buckets(void)
{
	test_begin("hist_buckets_precision");
	for (uint64_t v = 1; v < 2048; v++) {
		CHECK_INT(hist_lowest_equivalent(v), v);
		CHECK_INT(hist_highest_equivalent(v), v);
	}
	struct rng r;
	rng_seed(&r, 1);
	for (int i = 0; i < 200000 && !test_failed(); i++) {
		uint64_t v = log_uniform(&r);
		if (v > HIST_MAX_US)
			v = HIST_MAX_US;
		uint64_t lo = hist_lowest_equivalent(v), hi = hist_highest_equivalent(v);
		CHECK_MSG(lo <= v && v <= hi, "%llu not in [%llu, %llu]", (unsigned long long)v,
			  (unsigned long long)lo, (unsigned long long)hi);
		CHECK_MSG(hi - lo + 1 <= (lo < 2048 ? 1 : lo / 1024), "bucket of %llu too wide",
			  (unsigned long long)v);
		/* Adjacent buckets tile the range: the next one starts right after. */
		CHECK_INT(hist_lowest_equivalent(hi + 1),
			  hi + 1 > HIST_MAX_US ? hist_lowest_equivalent(HIST_MAX_US) : hi + 1);
	}
	/* 100 s itself is representable, with the same precision. */
	CHECK(hist_highest_equivalent(HIST_MAX_US) - HIST_MAX_US <= HIST_MAX_US / 1024);
	test_end();
}

static void check_against_reference(struct hist *h, uint64_t *vals, size_t n)
{
	static const double ps[] = {0.001, 1, 10, 50, 75, 90, 99, 99.9, 99.99, 99.999, 100};

	qsort(vals, n, sizeof(vals[0]), cmp_u64);
	CHECK_INT(hist_count(h), n);
	CHECK_INT(hist_min(h), vals[0]);
	CHECK_INT(hist_max(h), vals[n - 1]);
	for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++) {
		uint64_t want = ref_percentile(vals, n, ps[i]);
		uint64_t got = hist_percentile(h, ps[i]);
		CHECK_MSG(want <= got && got <= want + want / 1024,
			  "p%g: got %llu, exact %llu (bound +%llu)", ps[i], (unsigned long long)got,
			  (unsigned long long)want, (unsigned long long)(want / 1024));
	}
	double sum = 0;
	for (size_t i = 0; i < n; i++)
		sum += vals[i];
	CHECK_MSG(fabs(hist_mean(h) - sum / n) <= sum / n / 1024 + 1, "mean %f vs %f", hist_mean(h),
		  sum / n);
}

static void test_percentiles(const char *name, uint64_t (*gen)(struct rng *), size_t n)
{
	test_begin(name);
	struct hist *h = hist_new();
	uint64_t *vals = malloc(n * sizeof(*vals));
	struct rng r;

	CHECK(h && vals);
	if (!h || !vals)
		goto out;
	rng_seed(&r, 42);
	for (size_t i = 0; i < n; i++) {
		vals[i] = gen(&r);
		hist_record(h, vals[i]);
	}
	check_against_reference(h, vals, n);
out:
	free(vals);
	hist_free(h);
	test_end();
}

/* A latency-like mix: mostly 80..200 µs, 1 % at 100 ms (a stall), a few at seconds. */
static uint64_t latency_like(struct rng *r)
{
	double u = rng_double(r);

	if (u < 0.0005)
		return 1000000 + rng_below(r, 3000000);
	if (u < 0.0105)
		return 100000 + rng_below(r, 2000);
	return 80 + rng_below(r, 120);
}

static uint64_t small_values(struct rng *r)
{
	return 1 + rng_below(r, 3000);
}

static void test_merge(void)
{
	test_begin("hist_merge");
	enum { N = 120000, T = 4 };
	struct hist *all = hist_new(), *part[T], *merged = hist_new();
	uint64_t *vals = malloc(N * sizeof(*vals));
	struct rng r;

	for (int t = 0; t < T; t++)
		part[t] = hist_new();
	rng_seed(&r, 7);
	for (size_t i = 0; i < N; i++) {
		vals[i] = i % 3 ? latency_like(&r) : log_uniform(&r);
		hist_record(all, vals[i]);
		/* Uneven split: thread t gets values with different distributions. */
		hist_record(part[(vals[i] >> 3) % T], vals[i]);
	}
	hist_merge(merged, part[0]);
	for (int t = 1; t < T; t++)
		hist_merge(merged, part[t]);
	CHECK_INT(hist_count(merged), hist_count(all));
	CHECK_INT(hist_min(merged), hist_min(all));
	CHECK_INT(hist_max(merged), hist_max(all));
	for (double p = 0.5; p <= 100; p += 0.5)
		CHECK_INT(hist_percentile(merged, p), hist_percentile(all, p));
	CHECK_INT(hist_percentile(merged, 99.99), hist_percentile(all, 99.99));
	check_against_reference(merged, vals, N);

	/* Merging an empty histogram changes nothing; merging into an empty one copies. */
	struct hist *empty = hist_new();
	uint64_t p99 = hist_percentile(merged, 99);
	hist_merge(merged, empty);
	CHECK_INT(hist_percentile(merged, 99), p99);
	CHECK_INT(hist_min(merged), hist_min(all));
	hist_merge(empty, merged);
	CHECK_INT(hist_percentile(empty, 99), p99);
	CHECK_INT(hist_count(empty), N);
	hist_free(empty);
	for (int t = 0; t < T; t++)
		hist_free(part[t]);
	hist_free(all);
	hist_free(merged);
	free(vals);
	test_end();
}

static bool sum_counts(uint64_t high, uint64_t count, void *arg)
{
	uint64_t *s = arg;

	s[0] += count;
	CHECK(high > s[1]);
	s[1] = high;
	return true;
}

static void test_edges(void)
{
	test_begin("hist_edges");
	struct hist *h = hist_new();

	CHECK_INT(hist_count(h), 0);
	CHECK_INT(hist_percentile(h, 99), 0);
	CHECK_INT(hist_max(h), 0);
	CHECK_INT(hist_min(h), 0);
	hist_record(h, 0);		  /* counts as 1 µs */
	hist_record(h, 250 * 1000000ULL); /* over 100 s: last bucket, exact max */
	hist_record_n(h, 500, 98);
	CHECK_INT(hist_count(h), 100);
	CHECK_INT(hist_min(h), 1);
	CHECK_INT(hist_max(h), 250 * 1000000ULL);
	CHECK_INT(hist_percentile(h, 1), 1);
	CHECK_INT(hist_percentile(h, 50), 500);
	CHECK_INT(hist_percentile(h, 99), 500);
	CHECK(hist_percentile(h, 100) >= HIST_MAX_US);
	uint64_t s[2] = {0, 0};
	hist_foreach(h, sum_counts, s);
	CHECK_INT(s[0], 100);
	hist_reset(h);
	CHECK_INT(hist_count(h), 0);
	CHECK_INT(hist_percentile(h, 50), 0);
	hist_free(h);
	hist_free(NULL);
	test_end();
}

int main(void)
{
	test_buckets();
	test_percentiles("hist_percentiles_log_uniform", log_uniform, 200000);
	test_percentiles("hist_percentiles_latency_mix", latency_like, 200000);
	test_percentiles("hist_percentiles_exact_range", small_values, 50000);
	test_merge();
	test_edges();
	return test_exit_code();
}
