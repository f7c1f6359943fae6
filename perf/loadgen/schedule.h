/* schedule.h — open-loop send schedules and random sampling for reflex-bench.
 *
 * A schedule yields the intended send time of each request of one thread:
 * constant (request k at start + k / rate, computed from k so that no
 * rounding error accumulates) or Poisson (exponential gaps with mean
 * 1 / rate, i.e. a memoryless arrival process). Latency is measured from
 * these intended times, never from when the request could actually be sent,
 * so a stalled server is charged for every request it delayed (no
 * coordinated omission).
 *
 * Randomness comes from a per-thread xoshiro256** generator seeded through
 * splitmix64: reproducible for a given seed, no shared state, no locks.
 */
#ifndef REFLEX_LOADGEN_SCHEDULE_H
#define REFLEX_LOADGEN_SCHEDULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct rng {
	uint64_t s[4];
};

void rng_seed(struct rng *r, uint64_t seed);
uint64_t rng_next(struct rng *r);
/* Uniform in [0, 1) with 53 bits. */
double rng_double(struct rng *r);
/* Uniform in [0, n) (n > 0), without modulo bias worth mentioning (n << 2^64). */
uint64_t rng_below(struct rng *r, uint64_t n);

struct schedule {
	uint64_t start_ns;
	double gap_ns; /* mean gap: 1e9 / rate */
	bool poisson;
	uint64_t k;	/* requests handed out so far */
	double next_ns; /* Poisson: intended time of the next request, relative to start */
	struct rng rng;
};

/* rate > 0 requests per second; start_ns on CLOCK_MONOTONIC. */
void schedule_init(struct schedule *s, double rate, bool poisson, uint64_t start_ns, uint64_t seed);
/* Intended time of the next request (does not advance). */
uint64_t schedule_peek(const struct schedule *s);
/* Intended time of the next request, and advance to the one after. */
uint64_t schedule_next(struct schedule *s);

/* Zipf sampling over ranks 0..n-1 with P(rank i) proportional to
 * 1 / (i + 1)^exponent (exponent >= 0; 0 is uniform). Owns a table of n
 * doubles (the cumulative distribution); sampling is a binary search. */
struct zipf {
	size_t n;
	double *cdf;
};

int zipf_init(struct zipf *z, size_t n, double exponent); /* 0 or -ENOMEM/-EINVAL */
void zipf_free(struct zipf *z);
size_t zipf_sample(const struct zipf *z, struct rng *r);

#endif
