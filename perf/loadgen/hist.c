/* hist.c — see hist.h. */
#include "hist.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Sub-buckets per power of two: 2^HIST_SUB_BITS / 2 = 1024 distinct steps per
 * doubling, i.e. 3 significant decimal digits (10^3 < 1024). */
#define HIST_SUB_BITS 11
#define HIST_SUB_COUNT (1u << HIST_SUB_BITS) /* 2048: values below are exact */
#define HIST_SUB_HALF (HIST_SUB_COUNT / 2)

struct hist {
	uint64_t total;
	uint64_t min, max;
	size_t n_counts;
	uint64_t counts[];
};

/* Index of the bucket holding v (v >= 1, v <= HIST_MAX_US). For v >= 2048 the
 * shift e puts v >> e in [1024, 2048): bucket width 2^e. */
static size_t index_of(uint64_t v)
{
	if (v < HIST_SUB_COUNT)
		return v;
	unsigned e = 63 - __builtin_clzll(v) - (HIST_SUB_BITS - 1);
	return HIST_SUB_COUNT + (size_t)(e - 1) * HIST_SUB_HALF + ((v >> e) - HIST_SUB_HALF);
}

static uint64_t lowest_of_index(size_t i)
{
	if (i < HIST_SUB_COUNT)
		return i;
	size_t k = i - HIST_SUB_COUNT;
	unsigned e = k / HIST_SUB_HALF + 1;
	return (uint64_t)(HIST_SUB_HALF + k % HIST_SUB_HALF) << e;
}

static uint64_t width_of_index(size_t i)
{
	if (i < HIST_SUB_COUNT)
		return 1;
	return 1ULL << ((i - HIST_SUB_COUNT) / HIST_SUB_HALF + 1);
}

static uint64_t clamp(uint64_t us)
{
	if (us < 1)
		return 1;
	return us > HIST_MAX_US ? HIST_MAX_US : us;
}

uint64_t hist_lowest_equivalent(uint64_t us)
{
	return lowest_of_index(index_of(clamp(us)));
}

uint64_t hist_highest_equivalent(uint64_t us)
{
	size_t i = index_of(clamp(us));
	return lowest_of_index(i) + width_of_index(i) - 1;
}

struct hist *hist_new(void)
{
	size_t n = index_of(HIST_MAX_US) + 1;
	struct hist *h = calloc(1, sizeof(*h) + n * sizeof(h->counts[0]));

	if (!h)
		return NULL;
	h->n_counts = n;
	h->min = UINT64_MAX;
	return h;
}

void hist_free(struct hist *h)
{
	free(h);
}

void hist_reset(struct hist *h)
{
	memset(h->counts, 0, h->n_counts * sizeof(h->counts[0]));
	h->total = 0;
	h->min = UINT64_MAX;
	h->max = 0;
}

void hist_record_n(struct hist *h, uint64_t us, uint64_t n)
{
	if (!n)
		return;
	if (us < 1)
		us = 1;
	h->counts[index_of(clamp(us))] += n;
	h->total += n;
	if (us < h->min)
		h->min = us;
	if (us > h->max)
		h->max = us;
}

void hist_record(struct hist *h, uint64_t us)
{
	hist_record_n(h, us, 1);
}

void hist_merge(struct hist *dst, const struct hist *src)
{
	for (size_t i = 0; i < src->n_counts; i++)
		dst->counts[i] += src->counts[i];
	dst->total += src->total;
	if (src->min < dst->min)
		dst->min = src->min;
	if (src->max > dst->max)
		dst->max = src->max;
}

uint64_t hist_count(const struct hist *h)
{
	return h->total;
}

uint64_t hist_min(const struct hist *h)
{
	return h->total ? h->min : 0;
}

uint64_t hist_max(const struct hist *h)
{
	return h->max;
}

double hist_mean(const struct hist *h)
{
	double sum = 0;

	if (!h->total)
		return 0;
	for (size_t i = 0; i < h->n_counts; i++)
		if (h->counts[i])
			sum += h->counts[i] * (lowest_of_index(i) + (width_of_index(i) - 1) / 2.0);
	return sum / h->total;
}

uint64_t hist_percentile(const struct hist *h, double pct)
{
	if (!h->total)
		return 0;
	if (pct > 100)
		pct = 100;
	/* The rank of the value at pct: the smallest rank r with r >= pct% of
	 * total (at least 1); the -1e-9 keeps 99.9% of 1000 at rank 999 despite
	 * floating-point error. */
	uint64_t want = (uint64_t)ceil(pct / 100.0 * h->total - 1e-9);
	uint64_t seen = 0;

	if (want < 1)
		want = 1;
	if (want > h->total)
		want = h->total;
	for (size_t i = 0; i < h->n_counts; i++) {
		seen += h->counts[i];
		if (seen >= want) {
			uint64_t v = lowest_of_index(i) + width_of_index(i) - 1;
			return v > h->max ? h->max : v;
		}
	}
	return h->max;
}

void hist_foreach(const struct hist *h, bool (*fn)(uint64_t high_us, uint64_t count, void *arg),
		  void *arg)
{
	for (size_t i = 0; i < h->n_counts; i++)
		if (h->counts[i] &&
		    !fn(lowest_of_index(i) + width_of_index(i) - 1, h->counts[i], arg))
			return;
}
