/* timer.c — hierarchical (cascading) timer wheel.
 *
 * Level L covers deltas below 2^(8(L+1)) ms and is indexed by bits
 * [8L, 8L+8) of the absolute deadline. A timer in level L > 0 is moved down
 * ("cascaded") when the wheel reaches the start of its slot's time range, so
 * it lands in level 0 exactly at its own millisecond: expiry is exact, never
 * early.
 *
 * Invariants, with w->now the last millisecond fully processed:
 *  - level 0 slot (now & 255) holds only due timers (deadline <= now): ones
 *    armed in the past, or re-armed from a callback; they fire on the next
 *    timer_wheel_run;
 *  - any other timer sits in the slot that the millisecond-by-millisecond
 *    walk would reach first, so skipping a stretch of time in which no
 *    non-empty slot is reached leaves the wheel exactly as walking it would.
 */
#include "core/timer.h"

#include <time.h>

#define SLOT_BITS 8
#define SLOT_MASK (TIMER_SLOTS - 1)
#define LEVEL_SHIFT(l) ((unsigned)(l)*SLOT_BITS)
/* Deltas at or beyond the wheel's span (2^32 ms, 49 days) are parked in the
 * top level's farthest slot and re-placed when it cascades. */
#define WHEEL_SPAN (1ull << (SLOT_BITS * TIMER_LEVELS))

_Static_assert(TIMER_SLOTS == 1 << SLOT_BITS, "TIMER_SLOTS must be 2^SLOT_BITS");

static void list_push(struct timer **head, struct timer *t)
{
	t->next = *head;
	if (t->next)
		t->next->pprev = &t->next;
	t->pprev = head;
	*head = t;
}

static void list_unlink(struct timer *t)
{
	*t->pprev = t->next;
	if (t->next)
		t->next->pprev = t->pprev;
	t->next = 0;
	t->pprev = 0;
}

/* Move the whole list out of *from into *to (a list head the caller owns). */
static void list_splice_out(struct timer **from, struct timer **to)
{
	*to = *from;
	*from = 0;
	if (*to)
		(*to)->pprev = to;
}

static struct timer **slot_for(struct timer_wheel *w, uint64_t expires)
{
	uint64_t delta;

	if (expires <= w->now)
		return &w->slots[0][w->now & SLOT_MASK];
	delta = expires - w->now;
	if (delta >= WHEEL_SPAN)
		expires = w->now + WHEEL_SPAN - 1;
	for (unsigned l = 0; l < TIMER_LEVELS - 1; l++)
		if (delta < 1ull << LEVEL_SHIFT(l + 1))
			return &w->slots[l][(expires >> LEVEL_SHIFT(l)) & SLOT_MASK];
	return &w->slots[TIMER_LEVELS - 1][(expires >> LEVEL_SHIFT(TIMER_LEVELS - 1)) & SLOT_MASK];
}

void timer_wheel_init(struct timer_wheel *w, uint64_t now_ms)
{
	*w = (struct timer_wheel){.now = now_ms};
}

void timer_init(struct timer *t, timer_cb *on_expire)
{
	*t = (struct timer){.on_expire = on_expire};
}

void timer_arm(struct timer_wheel *w, struct timer *t, uint64_t expires_ms)
{
	if (timer_armed(t))
		list_unlink(t);
	else
		w->count++;
	t->expires = expires_ms;
	list_push(slot_for(w, expires_ms), t);
}

void timer_disarm(struct timer_wheel *w, struct timer *t)
{
	if (!timer_armed(t))
		return;
	list_unlink(t);
	w->count--;
}

/* The first millisecond after w->now at which the walk reaches a non-empty
 * slot (a level 0 slot fires, a higher one cascades), or UINT64_MAX. Every
 * armed timer's deadline is at or after this time. */
static uint64_t next_event(const struct timer_wheel *w)
{
	uint64_t best = UINT64_MAX;

	for (unsigned i = 1; i < TIMER_SLOTS; i++) {
		if (w->slots[0][(w->now + i) & SLOT_MASK]) {
			best = w->now + i;
			break;
		}
	}
	for (unsigned l = 1; l < TIMER_LEVELS; l++) {
		unsigned s = LEVEL_SHIFT(l);
		uint64_t base = w->now >> s;

		if ((base + 1) << s >= best)
			break; /* higher levels start even later */
		/* k == TIMER_SLOTS is the current index's next turn: a timer
		 * placed almost a full level span ahead can sit there. */
		for (unsigned k = 1; k <= TIMER_SLOTS; k++) {
			uint64_t at = (base + k) << s;

			if (at >= best)
				break;
			if (w->slots[l][(base + k) & SLOT_MASK]) {
				best = at;
				break;
			}
		}
	}
	return best;
}

static void cascade(struct timer_wheel *w, unsigned level)
{
	struct timer *list, *t;

	list_splice_out(&w->slots[level][(w->now >> LEVEL_SHIFT(level)) & SLOT_MASK], &list);
	while ((t = list)) {
		list_unlink(t);
		list_push(slot_for(w, t->expires), t);
	}
}

/* Fire the due slot. Timers re-armed into the past by a callback land in the
 * same slot again; they wait for the next step (or run) so a callback that
 * keeps re-arming cannot livelock the loop. */
static unsigned fire_due(struct timer_wheel *w)
{
	struct timer *list, *t;
	unsigned n = 0;

	list_splice_out(&w->slots[0][w->now & SLOT_MASK], &list);
	while ((t = list)) {
		list_unlink(t);
		w->count--;
		n++;
		t->on_expire(t);
	}
	return n;
}

unsigned timer_wheel_run(struct timer_wheel *w, uint64_t now_ms)
{
	unsigned fired = fire_due(w);

	while (w->now < now_ms && w->count) {
		struct timer **due = &w->slots[0][w->now & SLOT_MASK];
		uint64_t at;

		/* Past-due leftovers from the last step fire at the next one. */
		if (*due) {
			struct timer **to = &w->slots[0][(w->now + 1) & SLOT_MASK];
			struct timer *t;

			while ((t = *due)) {
				list_unlink(t);
				list_push(to, t);
			}
		}
		at = next_event(w);
		if (at > now_ms)
			break;
		w->now = at;
		for (unsigned l = TIMER_LEVELS - 1; l > 0; l--)
			if ((at & ((1ull << LEVEL_SHIFT(l)) - 1)) == 0)
				cascade(w, l);
		fired += fire_due(w);
	}
	if (w->now < now_ms)
		w->now = now_ms;
	return fired;
}

int64_t timer_wheel_next(const struct timer_wheel *w)
{
	uint64_t at;

	if (!w->count)
		return -1;
	if (w->slots[0][w->now & SLOT_MASK])
		return 0;
	at = next_event(w);
	if (at == UINT64_MAX)
		return -1; /* unreachable while count is right */
	return (int64_t)(at - w->now);
}

uint64_t clock_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t clock_ms(void)
{
	return clock_ns() / 1000000u;
}
