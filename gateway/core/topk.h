/* topk.h — the heaviest keys of a stream (space-saving algorithm), for the
 * "top clients" view.
 *
 * One table per worker, written only by its worker; the admin thread reads
 * every table and merges them. Each slot is guarded by a sequence number
 * (odd while the writer changes it), so a reader copies a slot whole or
 * retries. Counts are halved every TOPK_DECAY_MS, so the table follows
 * recent traffic rather than all of history.
 *
 * Space-saving: a key not in the table replaces the slot with the smallest
 * count and inherits that count (+1), so any key whose true count exceeds
 * total/TOPK_SLOTS is in the table and counts are never under-estimated.
 */
#ifndef REFLEX_CORE_TOPK_H
#define REFLEX_CORE_TOPK_H

#include <stdbool.h>
#include <stdint.h>

#define TOPK_SLOTS 32
#define TOPK_KEY_MAX 48
#define TOPK_DECAY_MS 60000

struct topk_slot {
	uint32_t seq; /* odd while being written */
	uint64_t hash;
	uint64_t count;   /* requests */
	uint64_t refused; /* of which refused by the gateway (4xx/5xx it made) */
	char key[TOPK_KEY_MAX];
};

struct topk {
	struct topk_slot slot[TOPK_SLOTS];
	uint64_t last_decay_ms;
};

/* Writer side (one thread). */
void topk_add(struct topk *t, const char *key, bool refused, uint64_t now_ms);

/* Reader side: a consistent copy of one slot (false if empty). */
bool topk_read(const struct topk *t, unsigned i, struct topk_slot *out);

#endif
