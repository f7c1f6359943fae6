/* hist.h — latency histogram for reflex-bench: log-linear, HDR-style.
 *
 * Values are integers in microseconds from 1 µs to HIST_MAX_US (100 s),
 * recorded with 3 significant digits: values below 2048 are counted exactly,
 * above that each power-of-two range [2^k, 2^(k+1)) is split into 1024 equal
 * sub-buckets, so a bucket is never wider than 1/1024 of the values it holds
 * (relative error < 0.1 %). Values of 0 count as 1 µs; values above 100 s are
 * counted in the last bucket, and the exact maximum is kept apart.
 *
 * Percentiles report the highest value equivalent to the bucket that holds
 * them (HdrHistogram's convention), clamped to the exact maximum: the
 * reported value v for a true value x satisfies x <= v <= x + x / 1024.
 *
 * One histogram per thread, no locking; merge them after the threads stopped.
 * Memory: ~147 KiB of counters per histogram, allocated by hist_new().
 */
#ifndef REFLEX_LOADGEN_HIST_H
#define REFLEX_LOADGEN_HIST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#define HIST_MAX_US 100000000ULL /* 100 s */

struct hist;

/* A zeroed histogram, or NULL when out of memory. */
struct hist *hist_new(void);
void hist_free(struct hist *h); /* NULL-safe */
void hist_reset(struct hist *h);

void hist_record(struct hist *h, uint64_t us);
void hist_record_n(struct hist *h, uint64_t us, uint64_t n);
/* Add every count of src to dst (the counters have the same layout). */
void hist_merge(struct hist *dst, const struct hist *src);

uint64_t hist_count(const struct hist *h);
uint64_t hist_min(const struct hist *h); /* exact; 0 when empty */
uint64_t hist_max(const struct hist *h); /* exact (not clamped to 100 s); 0 when empty */
double hist_mean(const struct hist *h);	 /* from bucket midpoints; 0 when empty */
/* The value at percentile pct (0 < pct <= 100); 0 when empty. */
uint64_t hist_percentile(const struct hist *h, double pct);

/* Bucket boundaries, for tests and dumps: the lowest and highest value that
 * the bucket of `us` holds. */
uint64_t hist_lowest_equivalent(uint64_t us);
uint64_t hist_highest_equivalent(uint64_t us);

/* Call fn for every non-empty bucket in increasing order with its highest
 * equivalent value and its count. Stops early when fn returns false. */
void hist_foreach(const struct hist *h, bool (*fn)(uint64_t high_us, uint64_t count, void *arg),
		  void *arg);

#endif
