/* timer.h — a hierarchical timer wheel, one per worker (no locks).
 *
 * Millisecond resolution. Timers are embedded in their owners (intrusive), so
 * arming and disarming never allocates. Arming an armed timer moves it.
 * Expiry order is by deadline to within one tick of the level it sits in;
 * a timer never fires early. Cost: O(1) add/del, amortised O(1) per tick.
 *
 * Who owns what: the wheel owns nothing; a timer must be disarmed (or have
 * fired) before its owner frees it. Callbacks may arm/disarm any timer,
 * including the one firing.
 */
#ifndef REFLEX_CORE_TIMER_H
#define REFLEX_CORE_TIMER_H

#include <stdbool.h>
#include <stdint.h>

struct timer;
typedef void timer_cb(struct timer *t);

struct timer {
	struct timer *next, **pprev; /* private: slot list links; pprev NULL when idle */
	uint64_t expires;            /* absolute ms */
	timer_cb *on_expire;
};

#define TIMER_LEVELS 4
#define TIMER_SLOTS 256 /* per level: 256 ms, 65 s, 4.6 h, 49 days */

struct timer_wheel {
	uint64_t now;   /* ms; the wheel's notion of current time */
	unsigned count; /* armed timers */
	struct timer *slots[TIMER_LEVELS][TIMER_SLOTS];
};

void timer_wheel_init(struct timer_wheel *w, uint64_t now_ms);
void timer_init(struct timer *t, timer_cb *on_expire);
/* Arm t to fire at absolute time expires_ms (a time in the past fires on the
 * next timer_wheel_run). */
void timer_arm(struct timer_wheel *w, struct timer *t, uint64_t expires_ms);
void timer_disarm(struct timer_wheel *w, struct timer *t);
static inline bool timer_armed(const struct timer *t)
{
	return t->pprev != 0;
}
/* Milliseconds until the earliest timer may fire (0 if one is due), or -1
 * when none is armed. May be conservative (earlier than the real deadline),
 * never late. */
int64_t timer_wheel_next(const struct timer_wheel *w);
/* Advance to now_ms and fire every timer whose deadline has passed. Returns
 * the number fired. */
unsigned timer_wheel_run(struct timer_wheel *w, uint64_t now_ms);

/* Monotonic clock in ms and ns. */
uint64_t clock_ms(void);
uint64_t clock_ns(void);

#endif
