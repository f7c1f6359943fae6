/* test_timer.c — the timer wheel against a brute-force model. */
#include "core/timer.h"
#include "tests/lib/test.h"

#include <stdlib.h>
#include <time.h>

/* A small deterministic PRNG so failures reproduce. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
	uint64_t x = rng_state;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

struct tt {
	struct timer t; /* first: callbacks cast back */
	unsigned id;
	unsigned fired;
	uint64_t fired_at;
};

static struct timer_wheel *cur_wheel;
static uint64_t last_fired_expires;
static unsigned n_early, n_order, n_fired;

static void on_check(struct timer *t)
{
	struct tt *x = (struct tt *)t;

	x->fired++;
	x->fired_at = cur_wheel->now;
	n_fired++;
	if (t->expires > cur_wheel->now)
		n_early++;
	if (t->expires < last_fired_expires)
		n_order++;
	last_fired_expires = t->expires;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Deadlines spread over every level and past the wheel's span. */
static uint64_t random_delta(void)
{
	switch (rnd() % 6) {
	case 0:
		return rnd() % 256;
	case 1:
		return rnd() % 65536;
	case 2:
		return rnd() % (1u << 24);
	case 3:
		return rnd() % (1ull << 32);
	case 4:
		return (1ull << 32) + rnd() % (1ull << 34); /* beyond the span */
	default:
		return rnd() % 4; /* clusters on the same ms */
	}
}

/* Arm n timers at random deadlines, advance by random steps (tiny and huge),
 * and check after every run that exactly the timers due have fired, in
 * deadline order, none early. */
static void test_random_all_levels(unsigned n, uint64_t start)
{
	struct timer_wheel w;
	struct tt *ts = calloc(n, sizeof(*ts));
	uint64_t *sorted = calloc(n, sizeof(*sorted));
	uint64_t now = start, max_deadline = 0;
	unsigned due = 0, runs = 0;

	timer_wheel_init(&w, start);
	cur_wheel = &w;
	last_fired_expires = 0;
	n_early = n_order = n_fired = 0;
	for (unsigned i = 0; i < n; i++) {
		uint64_t d = start + random_delta();

		timer_init(&ts[i].t, on_check);
		ts[i].id = i;
		timer_arm(&w, &ts[i].t, d);
		sorted[i] = d;
		if (d > max_deadline)
			max_deadline = d;
	}
	CHECK_INT(w.count, n);
	qsort(sorted, n, sizeof(*sorted), cmp_u64);
	while (due < n && runs < 100000) {
		uint64_t step;

		switch (rnd() % 4) {
		case 0:
			step = rnd() % 3;
			break;
		case 1:
			step = rnd() % 500;
			break;
		case 2:
			step = rnd() % 200000;
			break;
		default:
			step = rnd() % (1ull << 31);
			break;
		}
		now += step;
		timer_wheel_run(&w, now);
		runs++;
		while (due < n && sorted[due] <= now)
			due++;
		if (n_fired != due) {
			test_fail(__FILE__, __LINE__, "at %llu: %u fired, %u due",
				  (unsigned long long)(now - start), n_fired, due);
			break;
		}
		CHECK_INT(w.count, n - due);
	}
	CHECK_INT(n_fired, n);
	CHECK_INT(n_early, 0);
	CHECK_INT(n_order, 0);
	CHECK_INT(timer_wheel_next(&w), -1);
	for (unsigned i = 0; i < n; i++) {
		if (ts[i].fired != 1 || timer_armed(&ts[i].t)) {
			test_fail(__FILE__, __LINE__, "timer %u fired %u times", i, ts[i].fired);
			break;
		}
	}
	free(ts);
	free(sorted);
}

/* Stepping one millisecond at a time, every timer must fire exactly at its
 * deadline (the wheel is exact, not just "not early"). */
static void test_exact_ms(void)
{
	struct timer_wheel w;
	static struct tt ts[3000];
	uint64_t start = 1000003;

	timer_wheel_init(&w, start);
	cur_wheel = &w;
	last_fired_expires = 0;
	n_early = n_order = n_fired = 0;
	for (unsigned i = 0; i < 3000; i++) {
		timer_init(&ts[i].t, on_check);
		timer_arm(&w, &ts[i].t, start + 1 + rnd() % 140000);
	}
	for (uint64_t t = start + 1; t <= start + 140000; t++)
		timer_wheel_run(&w, t);
	CHECK_INT(n_fired, 3000);
	for (unsigned i = 0; i < 3000; i++) {
		if (ts[i].fired_at != ts[i].t.expires) {
			test_fail(__FILE__, __LINE__, "timer %u due %llu fired at %llu", i,
				  (unsigned long long)ts[i].t.expires,
				  (unsigned long long)ts[i].fired_at);
			break;
		}
	}
}

/* ---- callbacks that re-arm and disarm ----------------------------------- */

static struct tt cb_timers[8];
static unsigned rearm_left;
static uint64_t rearm_step;

static void on_rearm_self(struct timer *t)
{
	struct tt *x = (struct tt *)t;

	x->fired++;
	x->fired_at = cur_wheel->now;
	if (t->expires > cur_wheel->now)
		n_early++;
	if (rearm_left) {
		rearm_left--;
		timer_arm(cur_wheel, t, cur_wheel->now + rearm_step);
	}
}

static void on_disarm_other(struct timer *t)
{
	struct tt *x = (struct tt *)t;

	x->fired++;
	/* cb_timers[2] is due at the same ms and sits in the same list being
	 * fired; disarming it must stop it. */
	timer_disarm(cur_wheel, &cb_timers[2].t);
	/* and arming cb_timers[3] into the past must not fire it in this run */
	timer_arm(cur_wheel, &cb_timers[3].t, cur_wheel->now - 5);
}

static void on_count(struct timer *t)
{
	struct tt *x = (struct tt *)t;

	x->fired++;
	x->fired_at = cur_wheel->now;
}

static void on_past_self(struct timer *t)
{
	struct tt *x = (struct tt *)t;

	x->fired++;
	/* re-arming into the past from its own callback must not livelock */
	timer_arm(cur_wheel, t, 0);
}

static void test_callbacks(void)
{
	struct timer_wheel w;
	unsigned n;

	memset(cb_timers, 0, sizeof(cb_timers));
	timer_wheel_init(&w, 5000);
	cur_wheel = &w;
	n_early = 0;

	/* self re-arm across level boundaries: 100 times, 300 ms apart */
	timer_init(&cb_timers[0].t, on_rearm_self);
	rearm_left = 99;
	rearm_step = 300;
	timer_arm(&w, &cb_timers[0].t, 5300);
	for (uint64_t t = 5000; t <= 5000 + 300 * 100 + 10; t += 7)
		timer_wheel_run(&w, t);
	CHECK_INT(cb_timers[0].fired, 100);
	CHECK(!timer_armed(&cb_timers[0].t));
	CHECK_INT(n_early, 0);
	CHECK_INT(w.count, 0);

	/* one callback disarms a sibling due at the same ms and arms another in
	 * the past */
	timer_wheel_init(&w, 10000);
	timer_init(&cb_timers[1].t, on_disarm_other);
	timer_init(&cb_timers[2].t, on_count);
	timer_init(&cb_timers[3].t, on_count);
	/* armed second so it is fired first (lists are LIFO within a ms) */
	timer_arm(&w, &cb_timers[2].t, 10100);
	timer_arm(&w, &cb_timers[1].t, 10100);
	n = timer_wheel_run(&w, 10100);
	CHECK_INT(n, 1);
	CHECK_INT(cb_timers[1].fired, 1);
	CHECK_INT(cb_timers[2].fired, 0);
	CHECK(!timer_armed(&cb_timers[2].t));
	CHECK_INT(cb_timers[3].fired, 0);
	CHECK(timer_armed(&cb_timers[3].t));
	CHECK_INT(timer_wheel_next(&w), 0);
	/* the next run fires it even though time did not advance */
	n = timer_wheel_run(&w, 10100);
	CHECK_INT(n, 1);
	CHECK_INT(cb_timers[3].fired, 1);
	CHECK_INT(w.count, 0);

	/* arming in the past from outside a run: fires on the next run */
	timer_init(&cb_timers[4].t, on_count);
	timer_arm(&w, &cb_timers[4].t, 1);
	CHECK_INT(timer_wheel_next(&w), 0);
	CHECK_INT(timer_wheel_run(&w, 10100), 1);

	/* a timer re-arming itself into the past fires at most once per ms
	 * step (10105..10200 here), then once per run: never a livelock */
	timer_init(&cb_timers[5].t, on_past_self);
	timer_arm(&w, &cb_timers[5].t, 10105);
	CHECK_INT(timer_wheel_run(&w, 10200), 96);
	CHECK_INT(timer_wheel_run(&w, 10200), 1);
	CHECK_INT(timer_wheel_run(&w, 10200), 1);
	CHECK_INT(cb_timers[5].fired, 98);
	timer_disarm(&w, &cb_timers[5].t);
	CHECK_INT(w.count, 0);

	/* arming an armed timer moves it */
	timer_init(&cb_timers[6].t, on_count);
	timer_arm(&w, &cb_timers[6].t, 10300);
	timer_arm(&w, &cb_timers[6].t, 90000);
	CHECK_INT(w.count, 1);
	timer_wheel_run(&w, 89999);
	CHECK_INT(cb_timers[6].fired, 0);
	timer_wheel_run(&w, 90000);
	CHECK_INT(cb_timers[6].fired, 1);
	CHECK_INT(cb_timers[6].fired_at, 90000);
	/* disarming an idle timer is a no-op */
	timer_disarm(&w, &cb_timers[6].t);
	CHECK_INT(w.count, 0);
}

/* timer_wheel_next must never be later than the real earliest deadline. */
static void test_next(void)
{
	struct timer_wheel w;
	static struct tt ts[512];
	uint64_t start = (1ull << 40) + 123457;
	unsigned bad = 0, checks = 0;

	timer_wheel_init(&w, start);
	cur_wheel = &w;
	CHECK_INT(timer_wheel_next(&w), -1);
	for (unsigned i = 0; i < 512; i++)
		timer_init(&ts[i].t, on_count);
	for (unsigned round = 0; round < 4000; round++) {
		struct tt *x = &ts[rnd() % 512];
		uint64_t earliest = UINT64_MAX;
		int64_t next;

		if (rnd() % 3 == 0)
			timer_disarm(&w, &x->t);
		else
			timer_arm(&w, &x->t, w.now + random_delta());
		if (rnd() % 4 == 0)
			timer_wheel_run(&w, w.now + rnd() % 100000);
		for (unsigned i = 0; i < 512; i++)
			if (timer_armed(&ts[i].t) && ts[i].t.expires < earliest)
				earliest = ts[i].t.expires;
		next = timer_wheel_next(&w);
		checks++;
		if (earliest == UINT64_MAX) {
			bad += next != -1;
		} else if (next < 0) {
			bad++;
		} else if (earliest <= w.now) {
			bad += next != 0;
		} else {
			bad += w.now + (uint64_t)next > earliest;
			/* and running to that point must make progress: fire, or
			 * bring the next estimate closer */
		}
	}
	CHECK_INT(bad, 0);
	CHECK(checks == 4000);

	/* a lone far timer: the estimate walks down to it and never past */
	timer_wheel_init(&w, 777);
	timer_init(&ts[0].t, on_count);
	ts[0].fired = 0;
	timer_arm(&w, &ts[0].t, 777 + 3000000000ull);
	for (unsigned i = 0; i < 50 && timer_armed(&ts[0].t); i++) {
		int64_t next = timer_wheel_next(&w);

		CHECK(next >= 0 && w.now + (uint64_t)next <= ts[0].t.expires);
		timer_wheel_run(&w, w.now + (uint64_t)next);
	}
	CHECK_INT(ts[0].fired, 1);
	CHECK_INT(ts[0].fired_at, 777 + 3000000000ull);
}

/* A run over a huge span must skip empty stretches, not walk them. */
static void test_large_jump(void)
{
	struct timer_wheel w;
	static struct tt ts[4];
	uint64_t start = 42, t0;

	timer_wheel_init(&w, start);
	cur_wheel = &w;
	last_fired_expires = 0;
	n_early = n_order = n_fired = 0;
	for (unsigned i = 0; i < 4; i++)
		timer_init(&ts[i].t, on_check);
	timer_arm(&w, &ts[0].t, start + 5);
	timer_arm(&w, &ts[1].t, start + 1000000);
	timer_arm(&w, &ts[2].t, start + 10000000000ull); /* 115 days: beyond the span */
	timer_arm(&w, &ts[3].t, start + 100000000000ull);
	t0 = clock_ms();
	CHECK_INT(timer_wheel_run(&w, start + 9999999999ull), 2);
	CHECK_INT(timer_wheel_run(&w, start + 200000000000ull), 2);
	CHECK(clock_ms() - t0 < 1000);
	CHECK_INT(n_fired, 4);
	CHECK_INT(n_early, 0);
	CHECK_INT(n_order, 0);
	CHECK_INT(ts[2].fired_at, start + 10000000000ull);
	CHECK_INT(ts[3].fired_at, start + 100000000000ull);
	CHECK_INT(w.now, start + 200000000000ull);
	/* an empty wheel jumps anywhere in O(1) */
	CHECK_INT(timer_wheel_run(&w, start + (1ull << 50)), 0);
	CHECK_INT(w.now, start + (1ull << 50));
}

/* 100k timers, half of them disarmed before expiry. */
static void test_100k(void)
{
	enum { N = 100000 };
	struct timer_wheel w;
	struct tt *ts = calloc(N, sizeof(*ts));
	uint64_t now = 123456789, t0 = clock_ms();
	unsigned disarmed = 0, fired_disarmed = 0;

	timer_wheel_init(&w, now);
	cur_wheel = &w;
	last_fired_expires = 0;
	n_early = n_order = n_fired = 0;
	for (unsigned i = 0; i < N; i++) {
		timer_init(&ts[i].t, on_check);
		timer_arm(&w, &ts[i].t, now + 1 + rnd() % 600000);
	}
	for (unsigned i = 0; i < N; i += 2) {
		timer_disarm(&w, &ts[i].t);
		disarmed++;
	}
	CHECK_INT(w.count, N - disarmed);
	while (w.count) {
		int64_t next = timer_wheel_next(&w);

		CHECK(next >= 0);
		now += (uint64_t)next + rnd() % 50;
		timer_wheel_run(&w, now);
	}
	for (unsigned i = 0; i < N; i += 2)
		fired_disarmed += ts[i].fired;
	CHECK_INT(n_fired, N - disarmed);
	CHECK_INT(fired_disarmed, 0);
	CHECK_INT(n_early, 0);
	CHECK_INT(n_order, 0);
	CHECK(clock_ms() - t0 < 5000);
	free(ts);
}

static void test_clock(void)
{
	uint64_t a = clock_ns(), ms = clock_ms();
	struct timespec d = {0, 2000000};
	uint64_t b;

	nanosleep(&d, NULL);
	b = clock_ns();
	CHECK(b >= a + 2000000);
	CHECK(clock_ms() >= ms + 2);
	CHECK(ms >= a / 1000000);
}

int main(void)
{
	test_begin("timer_random_all_levels");
	test_random_all_levels(20000, 0);
	test_end();

	test_begin("timer_random_unaligned_start");
	test_random_all_levels(5000, (1ull << 33) + 0xabcdef);
	test_end();

	test_begin("timer_exact_ms");
	test_exact_ms();
	test_end();

	test_begin("timer_callbacks_rearm_disarm");
	test_callbacks();
	test_end();

	test_begin("timer_next_never_late");
	test_next();
	test_end();

	test_begin("timer_large_jump");
	test_large_jump();
	test_end();

	test_begin("timer_100k");
	test_100k();
	test_end();

	test_begin("timer_clock");
	test_clock();
	test_end();
	return test_exit_code();
}
