#include "core/topk.h"

#include <string.h>

static uint64_t hash_key(const char *k)
{
	uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a: keys are short */

	while (*k)
		h = (h ^ (unsigned char)*k++) * 0x100000001b3ull;
	return h | 1; /* 0 marks an empty slot */
}

static void begin(struct topk_slot *s)
{
	__atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELAXED);
	__atomic_thread_fence(__ATOMIC_RELEASE);
}

static void end(struct topk_slot *s)
{
	__atomic_store_n(&s->seq, s->seq + 1, __ATOMIC_RELEASE);
}

static void decay(struct topk *t)
{
	for (unsigned i = 0; i < TOPK_SLOTS; i++) {
		struct topk_slot *s = &t->slot[i];
		if (!s->hash)
			continue;
		begin(s);
		s->count /= 2;
		s->refused /= 2;
		if (!s->count) {
			s->hash = 0;
			s->key[0] = 0;
		}
		end(s);
	}
}

void topk_add(struct topk *t, const char *key, bool refused, uint64_t now_ms)
{
	uint64_t h = hash_key(key);
	struct topk_slot *min = NULL;

	if (!t->last_decay_ms)
		t->last_decay_ms = now_ms;
	if (now_ms - t->last_decay_ms >= TOPK_DECAY_MS) {
		t->last_decay_ms = now_ms;
		decay(t);
	}
	for (unsigned i = 0; i < TOPK_SLOTS; i++) {
		struct topk_slot *s = &t->slot[i];
		if (s->hash == h && strcmp(s->key, key) == 0) {
			begin(s);
			s->count++;
			s->refused += refused;
			end(s);
			return;
		}
		if (!s->hash) { /* an empty slot beats any occupied one */
			if (!min || min->hash)
				min = s;
		} else if (!min || (min->hash && s->count < min->count)) {
			min = s;
		}
	}
	begin(min);
	/* space-saving: the newcomer inherits the evicted minimum */
	min->count = min->hash ? min->count + 1 : 1;
	min->refused = refused;
	min->hash = h;
	strncpy(min->key, key, TOPK_KEY_MAX - 1);
	min->key[TOPK_KEY_MAX - 1] = 0;
	end(min);
}

bool topk_read(const struct topk *t, unsigned i, struct topk_slot *out)
{
	const struct topk_slot *s = &t->slot[i];

	for (int tries = 0; tries < 100; tries++) {
		uint32_t a = __atomic_load_n(&s->seq, __ATOMIC_ACQUIRE);
		if (a & 1)
			continue;
		memcpy(out, (const void *)s, sizeof(*out));
		__atomic_thread_fence(__ATOMIC_ACQUIRE);
		if (__atomic_load_n(&s->seq, __ATOMIC_RELAXED) == a)
			return out->hash != 0;
	}
	return false;
}
