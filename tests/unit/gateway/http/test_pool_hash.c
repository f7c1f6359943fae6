/* Consistent (rendezvous) hashing: a key stays on one endpoint, only the
 * keys of a leaving endpoint move (~1/N), they come back when it returns,
 * weights shift shares, and pool_pick_ex uses it for balance: hash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../../lib/test.h"
#include "core/config.h"
#include "core/timer.h"
#include "http/pool_hash.h"
#include "http/upstream.h"

#define N 8
#define KEYS 20000

static uint64_t ids[N];
static unsigned ws[N];

static uint64_t key_of(unsigned i)
{
	char k[32];
	int n = snprintf(k, sizeof(k), "user-%u", i);
	return pool_hash_bytes(0, k, (size_t)n);
}

int main(void)
{
	static int before[KEYS];
	bool avail[N];

	for (unsigned i = 0; i < N; i++) {
		char a[32];
		int n = snprintf(a, sizeof(a), "10.0.0.%u:8080", i + 1);
		ids[i] = pool_hash_bytes(0, a, (size_t)n);
		ws[i] = 1;
		avail[i] = true;
	}

	test_begin("hash_key_is_stable");
	for (unsigned k = 0; k < 100; k++) {
		int a = pool_hash_pick(key_of(k), ids, ws, avail, N);
		for (int rep = 0; rep < 5; rep++)
			CHECK_INT(pool_hash_pick(key_of(k), ids, ws, avail, N), a);
	}
	test_end();

	test_begin("hash_spreads_evenly");
	unsigned count[N] = {0};
	for (unsigned k = 0; k < KEYS; k++) {
		before[k] = pool_hash_pick(key_of(k), ids, ws, avail, N);
		count[before[k]]++;
	}
	for (unsigned i = 0; i < N; i++)
		CHECK_MSG(count[i] > KEYS / N * 8 / 10 && count[i] < KEYS / N * 12 / 10,
			  "endpoint %u got %u of %u keys", i, count[i], KEYS);
	test_end();

	test_begin("hash_moves_only_leaving_endpoints_keys");
	avail[3] = false;
	unsigned moved = 0, wrong = 0;
	for (unsigned k = 0; k < KEYS; k++) {
		int now = pool_hash_pick(key_of(k), ids, ws, avail, N);
		if (now != before[k]) {
			moved++;
			if (before[k] != 3)
				wrong++;
		}
	}
	CHECK_MSG(wrong == 0, "%u keys moved that were not on the leaving endpoint", wrong);
	CHECK_MSG(moved > KEYS / N * 8 / 10 && moved < KEYS / N * 12 / 10,
		  "%u of %u keys moved, expected about 1/%d", moved, KEYS, N);
	avail[3] = true;
	unsigned back = 0;
	for (unsigned k = 0; k < KEYS; k++)
		back += pool_hash_pick(key_of(k), ids, ws, avail, N) == before[k];
	CHECK_INT(back, KEYS);
	test_end();

	test_begin("hash_weights");
	ws[0] = 3;
	memset(count, 0, sizeof(count));
	for (unsigned k = 0; k < KEYS; k++)
		count[pool_hash_pick(key_of(k), ids, ws, avail, N)]++;
	/* weight 3 of a total of 10 */
	CHECK_MSG(count[0] > KEYS * 3 / 10 * 85 / 100 && count[0] < KEYS * 3 / 10 * 115 / 100,
		  "weight 3 endpoint got %u of %u", count[0], KEYS);
	ws[0] = 1;
	test_end();

	test_begin("hash_none_available");
	memset(avail, 0, sizeof(avail));
	CHECK_INT(pool_hash_pick(key_of(1), ids, ws, avail, N), -1);
	test_end();

	test_begin("pool_pick_ex_hash_balance");
	{
		struct cfg_endpoint ce[N];
		struct cfg_pool cp = {
			.balance = CFG_BALANCE_HASH, .endpoints = ce, .n_endpoints = N};
		struct endpoint_state es[N];
		struct pool_state ps = {.cfg = &cp, .eps = es, .n_eps = N};
		for (unsigned i = 0; i < N; i++) {
			ce[i] = (struct cfg_endpoint){.weight = 1};
			es[i] = (struct endpoint_state){.cfg = &ce[i], .id = ids[i]};
		}
		for (unsigned k = 0; k < 200; k++) {
			struct endpoint_state *e =
				pool_pick_ex(&ps, k * 7919, 1000, NULL, true, key_of(k), false);
			CHECK(e && e == &es[before[k]]);
		}
		/* keyless requests fall back to P2C: any endpoint */
		CHECK(pool_pick_ex(&ps, 12345, 1000, NULL, false, 0, false) != NULL);
	}
	test_end();
	return test_exit_code();
}
