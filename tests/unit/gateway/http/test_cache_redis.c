/* The L2 value format: an entry survives encode → decode intact, and a
 * value with any byte changed, cut short, or stored under another key is
 * refused (the integrity header: magic, key, lengths, XXH3-64). The purge
 * subscriber's counting (l2_purge_seq_check): a purge that went by unheard
 * always flushes L1; counting races only ever add flushes. */
#include <errno.h>
#include <stdlib.h>

#include "../../../lib/test.h"
#include "http/cache_redis.h"

static const char head[] = "HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nCache-Control: max-age=60\r\n";

static struct cache_entry_spec spec(void)
{
	static char body[5000];

	for (size_t i = 0; i < sizeof(body); i++)
		body[i] = (char)('a' + i % 26);
	return (struct cache_entry_spec){
		.key = {.lo = 0x1234, .hi = 0x5678},
		.primary = {.lo = 0x9abc, .hi = 0xdef0},
		.kind = CACHE_OBJECT,
		.vary_gen = 77,
		.status = 200,
		.meta = {.response_time_ms = 1700000000000LL,
			 .initial_age_ms = 1500,
			 .lifetime_ms = 60000,
			 .swr_s = 5,
			 .sie_s = 9,
			 .has_validator = true},
		.expires_ms = 1700000090000LL,
		.url = "example.com/a?b=1",
		.url_len = 17,
		.tags = "red blue",
		.tags_len = 8,
		.head = head,
		.head_len = sizeof(head) - 1,
		.body = body,
		.body_len = sizeof(body),
		.etag_off = 23,
		.etag_len = 4,
	};
}

#define RUN_A "0123456789abcdef0123456789abcdef01234567"
#define RUN_B "fedcba9876543210fedcba9876543210fedcba98"

static void test_purge_seq(void)
{
	struct l2_purge_seq q = {0};
	enum l2_flush_reason why = L2_FLUSH_REASONS;
	uint64_t missed = 99;

	test_begin("purge_seq_first_subscription_flushes");
	CHECK_INT(l2_purge_seq_check(&q, RUN_A, 5, 5, &why, &missed), -1);
	CHECK(why == L2_FLUSH_FIRST && missed == 0);
	test_end();

	test_begin("purge_seq_all_heard_keeps_l1");
	q.received = 3; /* three purges heard; the counter moved by three */
	CHECK_INT(l2_purge_seq_check(&q, RUN_A, 8, 8, &why, &missed), 0);
	CHECK_INT(l2_purge_seq_check(&q, RUN_A, 8, 8, &why, &missed), 0); /* none at all */
	test_end();

	test_begin("purge_seq_missed_while_away_flushes");
	q.received = 2; /* 2 heard, then away: the counter is 8 + 2 + 3 */
	CHECK_INT(l2_purge_seq_check(&q, RUN_A, 13, 13, &why, &missed), -1);
	CHECK(why == L2_FLUSH_MISSED);
	CHECK_INT(missed, 3);
	/* counting restarted from the pre-SUBSCRIBE value of this subscription */
	CHECK(q.base == 13 && q.received == 0);
	test_end();

	test_begin("purge_seq_races_err_towards_flushing");
	/* purge 14 ran between the read before SUBSCRIBE (13) and the read
	 * after the confirmation (14): before the confirmation it was missed,
	 * after it, it will arrive; nobody can tell which, so L1 goes */
	CHECK_INT(l2_purge_seq_check(&q, RUN_A, 13, 14, &why, &missed), -1);
	CHECK(why == L2_FLUSH_MISSED && missed == 1);
	/* it did arrive: counted from the base before SUBSCRIBE (13), it is
	 * not taken for a missed one at the next check */
	q.received = 1;
	CHECK_INT(l2_purge_seq_check(&q, RUN_A, 14, 14, &why, &missed), 0);
	/* a heard purge never hides a missed one: 15 heard, 16 missed */
	q.received = 1;
	CHECK_INT(l2_purge_seq_check(&q, RUN_A, 16, 16, &why, &missed), -1);
	CHECK(why == L2_FLUSH_MISSED && missed == 1);
	test_end();

	test_begin("purge_seq_unverifiable_flushes");
	/* another instance: counters of two Redis cannot be compared, even
	 * when the numbers look right */
	CHECK_INT(l2_purge_seq_check(&q, RUN_B, 16, 16, &why, &missed), -1);
	CHECK(why == L2_FLUSH_UNSURE && missed == 0);
	/* the counter went back (key deleted, older data restored): 0 = absent */
	CHECK_INT(l2_purge_seq_check(&q, RUN_B, 0, 0, &why, &missed), -1);
	CHECK(why == L2_FLUSH_UNSURE);
	/* more heard than counted: a publisher that does not count */
	q.received = 2;
	CHECK_INT(l2_purge_seq_check(&q, RUN_B, 1, 1, &why, &missed), -1);
	CHECK(why == L2_FLUSH_UNSURE);
	CHECK_INT(l2_purge_seq_check(&q, RUN_B, 1, 1, &why, &missed), 0);
	CHECK(q.known && !strcmp(q.run_id, RUN_B));
	test_end();
}

int main(void)
{
	struct cache_entry_spec s = spec(), d;
	char *blob;
	size_t len;

	test_begin("l2_roundtrip");
	CHECK(l2_encode(&s, &blob, &len) == 0);
	CHECK(l2_decode(blob, len, &s.key, &d) == 0);
	CHECK(d.kind == s.kind && d.status == 200 && d.vary_gen == 77);
	CHECK(!memcmp(&d.primary, &s.primary, sizeof(d.primary)));
	CHECK(d.meta.response_time_ms == s.meta.response_time_ms && d.meta.lifetime_ms == 60000);
	CHECK(d.meta.initial_age_ms == 1500 && d.meta.swr_s == 5 && d.meta.sie_s == 9);
	CHECK(d.meta.has_validator && !d.meta.must_revalidate && d.expires_ms == s.expires_ms);
	CHECK(d.url_len == 17 && !memcmp(d.url, s.url, 17));
	CHECK(d.tags_len == 8 && !memcmp(d.tags, "red blue", 8));
	CHECK(d.head_len == s.head_len && !memcmp(d.head, head, s.head_len));
	CHECK(d.body_len == s.body_len && !memcmp(d.body, s.body, s.body_len));
	CHECK(d.etag_len == 4 && !memcmp(d.head + d.etag_off, "\"v1\"", 4));
	test_end();

	test_begin("l2_integrity");
	struct cache_key other = {.lo = 0x1234, .hi = 0x5679};
	CHECK_MSG(l2_decode(blob, len, &other, &d) == -EINVAL, "another key's value");
	CHECK_MSG(l2_decode(blob, len - 1, &s.key, &d) == -EINVAL, "cut short");
	CHECK_MSG(l2_decode(blob, 10, &s.key, &d) == -EINVAL, "shorter than the header");
	int flipped_ok = 0;
	for (size_t i = 0; i < len; i += 97) { /* any byte changed, header or payload */
		blob[i] ^= 0x20;
		flipped_ok += l2_decode(blob, len, &s.key, &d) == 0;
		blob[i] ^= 0x20;
	}
	CHECK_MSG(flipped_ok == 0, "%d changed values were accepted", flipped_ok);
	CHECK(l2_decode(blob, len, &s.key, &d) == 0);
	free(blob);

	/* lengths that point outside the value are refused even with a valid sum */
	s.etag_off = 1000;
	CHECK(l2_encode(&s, &blob, &len) == 0);
	CHECK_MSG(l2_decode(blob, len, &s.key, &d) == -EINVAL, "ETag outside the head");
	free(blob);
	test_end();
	test_purge_seq();
	return test_exit_code();
}
