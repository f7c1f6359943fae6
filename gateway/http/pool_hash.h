/* pool_hash.h — consistent hashing for balance: hash.
 *
 * Rendezvous (highest random weight) hashing: every endpoint scores the key
 * with a hash of (key, endpoint id) scaled by its weight
 * (score = -weight / ln(u), u uniform in (0,1)), and the highest score
 * wins. Chosen over a ring or Maglev because it needs no table (pools are
 * small: O(n) per pick is a few dozen ns), weights are exact, and skipping
 * an unavailable endpoint is just skipping it: a key moves only when its
 * own endpoint leaves (~1/n of the keys), and comes back when it returns.
 * Endpoint ids hash the address text, so the mapping survives a reload
 * that adds or removes other endpoints.
 */
#ifndef REFLEX_HTTP_POOL_HASH_H
#define REFLEX_HTTP_POOL_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* 64-bit hash of bytes (FNV-1a folded through a splitmix64 finalizer). */
uint64_t pool_hash_bytes(uint64_t seed, const void *p, size_t n);

/* The winning index among the n endpoints for key: ids[i] identify the
 * endpoints, weights[i] >= 1, avail[i] false skips one (avail may be
 * NULL: all available). Returns -1 when none is available. */
int pool_hash_pick(uint64_t key, const uint64_t *ids, const unsigned *weights, const bool *avail,
		   unsigned n);

/* The score of one endpoint (exposed for tests). */
double pool_hash_score(uint64_t key, uint64_t id, unsigned weight);

#endif
