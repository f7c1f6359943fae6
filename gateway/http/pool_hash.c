#include "http/pool_hash.h"

#include <math.h>

static uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ull;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

uint64_t pool_hash_bytes(uint64_t seed, const void *p, size_t n)
{
	const unsigned char *s = p;
	uint64_t h = 0xcbf29ce484222325ull ^ seed;

	for (size_t i = 0; i < n; i++) {
		h ^= s[i];
		h *= 0x100000001b3ull;
	}
	return mix64(h);
}

double pool_hash_score(uint64_t key, uint64_t id, unsigned weight)
{
	uint64_t h = mix64(key ^ mix64(id));
	/* u in (0,1): 53 random bits, never 0 or 1 */
	double u = ((double)(h >> 11) + 0.5) * 0x1.0p-53;

	return -(double)weight / log(u);
}

int pool_hash_pick(uint64_t key, const uint64_t *ids, const unsigned *weights, const bool *avail,
		   unsigned n)
{
	int best = -1;
	double best_score = 0;

	for (unsigned i = 0; i < n; i++) {
		if (avail && !avail[i])
			continue;
		double s = pool_hash_score(key, ids[i], weights[i] ? weights[i] : 1);
		if (best < 0 || s > best_score) {
			best = (int)i;
			best_score = s;
		}
	}
	return best;
}
