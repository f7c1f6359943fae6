/* schedule.c — see schedule.h. */
#include "schedule.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

void rng_seed(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix64(&seed);
}

static uint64_t rotl(uint64_t x, int k)
{
	return (x << k) | (x >> (64 - k));
}

uint64_t rng_next(struct rng *r)
{
	uint64_t *s = r->s;
	uint64_t result = rotl(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;

	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return result;
}

double rng_double(struct rng *r)
{
	return (rng_next(r) >> 11) * 0x1.0p-53;
}

uint64_t rng_below(struct rng *r, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rng_next(r) * n) >> 64);
}

/* An exponential gap with the schedule's mean. 1 - u is in (0, 1], so the
 * log is finite. */
static double exp_gap(struct schedule *s)
{
	return -log(1.0 - rng_double(&s->rng)) * s->gap_ns;
}

void schedule_init(struct schedule *s, double rate, bool poisson, uint64_t start_ns, uint64_t seed)
{
	s->start_ns = start_ns;
	s->gap_ns = 1e9 / rate;
	s->poisson = poisson;
	s->k = 0;
	rng_seed(&s->rng, seed);
	/* The first Poisson arrival is one gap after start, like every other:
	 * starting all threads with a request at exactly t0 would be a burst. */
	s->next_ns = poisson ? exp_gap(s) : 0;
}

uint64_t schedule_peek(const struct schedule *s)
{
	if (s->poisson)
		return s->start_ns + (uint64_t)s->next_ns;
	return s->start_ns + (uint64_t)(s->k * s->gap_ns);
}

uint64_t schedule_next(struct schedule *s)
{
	uint64_t t = schedule_peek(s);

	s->k++;
	if (s->poisson)
		s->next_ns += exp_gap(s);
	return t;
}

int zipf_init(struct zipf *z, size_t n, double exponent)
{
	double sum = 0;

	z->n = 0;
	z->cdf = NULL;
	if (n == 0 || exponent < 0)
		return -EINVAL;
	z->cdf = malloc(n * sizeof(*z->cdf));
	if (!z->cdf)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		sum += 1.0 / pow((double)(i + 1), exponent);
		z->cdf[i] = sum;
	}
	for (size_t i = 0; i < n; i++)
		z->cdf[i] /= sum;
	z->cdf[n - 1] = 1.0;
	z->n = n;
	return 0;
}

void zipf_free(struct zipf *z)
{
	free(z->cdf);
	z->cdf = NULL;
	z->n = 0;
}

size_t zipf_sample(const struct zipf *z, struct rng *r)
{
	double u = rng_double(r);
	size_t lo = 0, hi = z->n - 1;

	/* The first rank whose cumulative probability exceeds u. */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (z->cdf[mid] > u)
			hi = mid;
		else
			lo = mid + 1;
	}
	return lo;
}
