/* The top-clients table: heavy keys survive a stream of many light ones,
 * counts never under-estimate, refusals are counted, decay halves, and a
 * reader on another thread never sees a torn slot. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "../../../lib/test.h"
#include "core/topk.h"

static struct topk t;

static uint64_t count_of(const char *key)
{
	struct topk_slot s;

	for (unsigned i = 0; i < TOPK_SLOTS; i++)
		if (topk_read(&t, i, &s) && strcmp(s.key, key) == 0)
			return s.count;
	return 0;
}

static volatile int stop;

static void *reader(void *arg)
{
	long *torn = arg;
	struct topk_slot s;

	while (!stop)
		for (unsigned i = 0; i < TOPK_SLOTS; i++)
			if (topk_read(&t, i, &s)) {
				/* writer keeps key "k<N>" with refused == count % 7 of
				 * its own sequence: check the key is well-formed */
				if (s.key[0] != 'k' && strcmp(s.key, "heavy") != 0)
					(*torn)++;
			}
	return NULL;
}

int main(void)
{
	char key[32];

	test_begin("heavy_hitters_survive_a_long_tail");
	memset(&t, 0, sizeof(t));
	for (int i = 0; i < 20000; i++) {
		if (i % 4 == 0)
			topk_add(&t, "heavy", false, 1000);
		if (i % 10 == 0)
			topk_add(&t, "medium", i % 20 == 0, 1000);
		snprintf(key, sizeof(key), "k%d", i); /* each light key once */
		topk_add(&t, key, false, 1000);
	}
	CHECK_MSG(count_of("heavy") >= 5000, "heavy counted %llu (true 5000)",
		  (unsigned long long)count_of("heavy"));
	CHECK_MSG(count_of("medium") >= 2000, "medium counted %llu (true 2000)",
		  (unsigned long long)count_of("medium"));
	test_end();

	test_begin("refusals_and_decay");
	memset(&t, 0, sizeof(t));
	for (int i = 0; i < 10; i++)
		topk_add(&t, "10.0.0.1", i < 4, 1000);
	struct topk_slot s;
	bool found = false;
	for (unsigned i = 0; i < TOPK_SLOTS; i++)
		if (topk_read(&t, i, &s) && !strcmp(s.key, "10.0.0.1")) {
			found = true;
			CHECK_INT(s.count, 10);
			CHECK_INT(s.refused, 4);
		}
	CHECK(found);
	topk_add(&t, "10.0.0.2", false, 1000 + TOPK_DECAY_MS); /* decay runs first */
	CHECK_INT(count_of("10.0.0.1"), 5);
	test_end();

	test_begin("reader_never_sees_a_torn_slot");
	memset(&t, 0, sizeof(t));
	long torn = 0;
	pthread_t th;
	pthread_create(&th, NULL, reader, &torn);
	for (int i = 0; i < 300000; i++) {
		snprintf(key, sizeof(key), "k%d", i % 97);
		topk_add(&t, i % 3 ? key : "heavy", false, 1000);
	}
	stop = 1;
	pthread_join(th, NULL);
	CHECK_INT(torn, 0);
	test_end();
	return test_exit_code();
}
