/* test_anomaly.c — the detector on synthetic series, and the event log.
 *
 * Expected: no event on steady or noisy series (uniform ±20 %, and Gaussian with a 10 %
 * standard deviation), none on a slow drift, none on a quiet system (too few requests per
 * window), one event at a step change and one per isolated spike.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/anomaly.h"
#include "tests/lib/test.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static double uniform(void) /* [0, 1) */
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (double)(rng >> 11) * 0x1.0p-53;
}

static double gauss(void) /* sum of 12 uniforms: mean 0, sd 1, bounded at ±6 */
{
	double s = 0;

	for (int i = 0; i < 12; i++)
		s += uniform();
	return s - 6;
}

/* Feed a series; returns how many events, and the index of the first in *first. */
static int run(enum anomaly_signal sig, const double *v, unsigned n, uint64_t samples, int *first,
	       struct anomaly_event *last)
{
	struct anomaly_detector *d = anomaly_new(NULL, 8);
	struct anomaly_event e;
	int events = 0;

	*first = -1;
	for (unsigned i = 0; i < n; i++) {
		if (anomaly_observe(d, ANOM_ENDPOINT, "127.0.0.1:9000", sig, v[i], samples, NULL,
				    &e) == 1) {
			if (*first < 0)
				*first = (int)i;
			if (last)
				*last = e;
			events++;
		}
	}
	anomaly_free(d);
	return events;
}

#define N 600
static double v[N];

static void test_steady(void)
{
	int first;

	test_begin("steady_no_alarm");
	for (int i = 0; i < N; i++)
		v[i] = 10000;
	CHECK_INT(run(ANOM_LATENCY_P99, v, N, 100, &first, NULL), 0);
	for (int i = 0; i < N; i++)
		v[i] = 0; /* a quiet signal that never moves */
	CHECK_INT(run(ANOM_RETRANS, v, N, 0, &first, NULL), 0);
	CHECK_INT(run(ANOM_RESETS, v, N, 0, &first, NULL), 0);
	test_end();
}

static void test_noisy(void)
{
	int first;

	test_begin("noisy_no_alarm");
	for (int i = 0; i < N; i++)
		v[i] = 10000 * (0.8 + 0.4 * uniform());
	CHECK_INT(run(ANOM_LATENCY_P99, v, N, 100, &first, NULL), 0);
	for (int i = 0; i < N; i++)
		v[i] = 10000 * (1 + 0.1 * gauss());
	CHECK_INT(run(ANOM_LATENCY_P99, v, N, 100, &first, NULL), 0);
	for (int i = 0; i < N; i++) /* ~1 % errors, binomial-ish noise */
		v[i] = (uniform() < 0.5 ? 1 : 0) / 100.0 + 0.01 * uniform();
	CHECK_INT(run(ANOM_ERROR_RATE, v, N, 100, &first, NULL), 0);
	for (int i = 0; i < N; i++) /* a few retransmits per second */
		v[i] = floor(3 * uniform());
	CHECK_INT(run(ANOM_RETRANS, v, N, 0, &first, NULL), 0);
	for (int i = 0; i < N; i++) /* ~200 req/s ± 10 % */
		v[i] = 200 * (1 + 0.1 * gauss());
	CHECK_INT(run(ANOM_REQUEST_RATE, v, N, 1000, &first, NULL), 0);
	test_end();
}

static void test_step(void)
{
	struct anomaly_event e;
	int first, n;

	test_begin("step_change_one_event");
	for (int i = 0; i < N; i++)
		v[i] = (i < 100 ? 10000 : 80000) * (1 + 0.05 * gauss());
	n = run(ANOM_LATENCY_P99, v, N, 100, &first, &e);
	CHECK_INT(n, 1);
	CHECK_INT(first, 100);
	CHECK_MSG(fabs(e.baseline - 10000) < 1500, "baseline %.0f", e.baseline);
	CHECK(e.observed > 60000);
	CHECK(e.severity == ANOM_CRITICAL);
	CHECK_STR(e.subject, "127.0.0.1:9000");
	/* errors: 0 → 40 % */
	for (int i = 0; i < N; i++)
		v[i] = i < 50 ? 0 : 0.4;
	CHECK_INT(run(ANOM_ERROR_RATE, v, N, 100, &first, NULL), 1);
	CHECK_INT(first, 50);
	/* retransmits: none → 50/s (a lossy path) */
	for (int i = 0; i < N; i++)
		v[i] = i < 30 ? 0 : 50 + 5 * gauss();
	CHECK_INT(run(ANOM_RETRANS, v, N, 0, &first, NULL), 1);
	CHECK_INT(first, 30);
	test_end();
}

static void test_spike(void)
{
	int first;

	test_begin("single_spike_one_event");
	for (int i = 0; i < N; i++)
		v[i] = 10000 * (1 + 0.05 * gauss());
	v[200] = 80000;
	CHECK_INT(run(ANOM_LATENCY_P99, v, N, 100, &first, NULL), 1);
	CHECK_INT(first, 200);
	v[400] = 80000; /* a second, separate spike is a second event */
	CHECK_INT(run(ANOM_LATENCY_P99, v, N, 100, &first, NULL), 2);
	/* a small bump within the noise floor is nothing */
	for (int i = 0; i < N; i++)
		v[i] = 10000 * (1 + 0.05 * gauss());
	v[300] = 12000;
	CHECK_INT(run(ANOM_LATENCY_P99, v, N, 100, &first, NULL), 0);
	test_end();
}

static void test_drift(void)
{
	int first;

	test_begin("slow_drift_followed");
	for (int i = 0; i < N; i++) /* +0.3 % per window: ×6 over the series */
		v[i] = 10000 * pow(1.003, i) * (1 + 0.03 * gauss());
	CHECK_INT(run(ANOM_LATENCY_P99, v, N, 100, &first, NULL), 0);
	test_end();
}

static void test_quiet(void)
{
	int first;

	test_begin("quiet_system_raises_nothing");
	/* too few requests per window: even wild values are skipped */
	for (int i = 0; i < N; i++)
		v[i] = (i % 7) ? 1000 : 900000;
	CHECK_INT(run(ANOM_LATENCY_P99, v, N, 5, &first, NULL), 0);
	CHECK_INT(run(ANOM_ERROR_RATE, v, N, 3, &first, NULL), 0);
	/* and nothing before min_samples windows of history */
	struct anomaly_params p;
	struct anomaly_series s = {0};
	double sc, b;

	anomaly_params_default(&p);
	for (unsigned i = 0; i < p.min_samples; i++)
		CHECK_INT(
			anomaly_series_feed(&s, &p, ANOM_LATENCY_P99, i ? 1e6 : 1000, 100, &sc, &b),
			0);
	test_end();
}

static void test_sensitivity(void)
{
	struct anomaly_params p;
	struct anomaly_detector *d;
	struct anomaly_event e;
	int hits = 0;

	test_begin("sensitivity_configurable");
	anomaly_params_default(&p);
	p.sensitivity = 50; /* very insensitive: a 3× step is not enough */
	d = anomaly_new(&p, 4);
	for (int i = 0; i < 200; i++)
		hits += anomaly_observe(d, ANOM_CLIENT, "10.0.0.0/24", ANOM_RESETS, i < 50 ? 2 : 6,
					0, NULL, &e) == 1;
	CHECK_INT(hits, 0);
	p.sensitivity = 3;
	anomaly_set_params(d, &p);
	hits += anomaly_observe(d, ANOM_CLIENT, "10.0.0.0/24", ANOM_RESETS, 60, 0, NULL, &e) == 1;
	CHECK_INT(hits, 1);
	CHECK(anomaly_in_alarm(d, ANOM_CLIENT, "10.0.0.0/24", ANOM_RESETS));
	CHECK(!anomaly_in_alarm(d, ANOM_ENDPOINT, "10.0.0.0/24", ANOM_RESETS));
	/* more subjects than room: the oldest is replaced, nothing breaks */
	for (int i = 0; i < 20; i++) {
		char name[32];

		snprintf(name, sizeof(name), "10.0.%d.0/24", i);
		anomaly_observe(d, ANOM_CLIENT, name, ANOM_RESETS, 1, 0, NULL, &e);
	}
	CHECK(!anomaly_in_alarm(d, ANOM_CLIENT, "10.0.0.0/24", ANOM_RESETS));
	anomaly_free(d);
	test_end();
}

/* The buffer's text, NUL-terminated (a buf is not). */
static const char *text(struct buf *b)
{
	buf_append(b, "", 1);
	b->len--;
	return buf_head(b);
}

static void test_log(void)
{
	struct anomaly_log *l = anomaly_log_new(4);
	struct anomaly_counts c;
	struct buf b = {0};
	struct anomaly_event e = {0};

	test_begin("event_log_json");
	e.kind = ANOM_ENDPOINT;
	snprintf(e.subject, sizeof(e.subject), "127.0.0.1:81\"x");
	e.signal = ANOM_RETRANS;
	e.observed = 42;
	e.baseline = 0.5;
	e.score = 12.3;
	e.severity = ANOM_CRITICAL;
	e.ev.retrans = 420;
	e.time_ms = 1;
	snprintf(e.action, sizeof(e.action), "ejected 10s");
	for (int i = 0; i < 6; i++) {
		e.time_ms = 1;
		CHECK_INT(anomaly_log_add(l, &e), i + 1);
	}
	CHECK_INT(anomaly_log_last(l), 6);
	CHECK_INT(anomaly_log_json(l, 0, 0, &b), 0);
	/* the ring keeps 4: seq 3..6 */
	CHECK(strstr(text(&b), "\"seq\":3,") && !strstr(text(&b), "\"seq\":2,"));
	CHECK(strstr(text(&b), "\"subject\":\"127.0.0.1:81\\\"x\""));
	CHECK(strstr(text(&b), "\"signal\":\"tcp_retransmits\",\"observed\":42,\"baseline\":0.5"));
	CHECK(strstr(text(&b), "\"retransmits\":420"));
	CHECK(strstr(text(&b), "\"action\":\"ejected 10s\""));
	buf_reset(&b, 0);
	CHECK_INT(anomaly_log_json(l, 5, 0, &b), 0);
	CHECK(strstr(text(&b), "\"seq\":6,") && !strstr(text(&b), "\"seq\":5,"));
	buf_reset(&b, 0);
	CHECK_INT(anomaly_log_json(l, 6, 0, &b), 0);
	CHECK_STR(text(&b), "[]");
	buf_reset(&b, 0);
	CHECK_INT(anomaly_log_json(l, 0, 1, &b), 0);
	CHECK(strstr(text(&b), "\"seq\":6,") && !strstr(text(&b), "\"seq\":5,"));
	anomaly_log_count_action(l, true);
	anomaly_log_counts(l, &c);
	CHECK_INT(c.events[ANOM_RETRANS][ANOM_CRITICAL], 6);
	CHECK_INT(c.ejections, 1);
	buf_free(&b);
	anomaly_log_free(l);
	test_end();
}

static void test_accumulators(void)
{
	struct anomaly_acc_totals a, b;
	uint64_t before[ANOMALY_LAT_BUCKETS];

	test_begin("accumulators_and_p99");
	/* buckets: monotonic, and every bound is above the times it holds */
	for (uint64_t us = 1; us < 100000000; us = us * 3 / 2 + 1) {
		unsigned k = anomaly_lat_bucket(us);

		CHECK_MSG(anomaly_lat_bound_us(k) >= us &&
				  anomaly_lat_bound_us(k) <= us * 5 / 4 + 1,
			  "us %llu bucket %u bound %llu", (unsigned long long)us, k,
			  (unsigned long long)anomaly_lat_bound_us(k));
		CHECK(k < ANOMALY_LAT_BUCKETS);
	}
	CHECK(anomaly_lat_bucket(1000) < anomaly_lat_bucket(1300));
	/* before init: nothing counted, retransmits unknown */
	anomaly_acc_request(0, 42, false, 1000000);
	CHECK(anomaly_acc_read(42, &a) == -ENOENT);
	CHECK(anomaly_acc_retrans(0, 42) == UINT32_MAX);
	CHECK_INT(anomaly_acc_init(2), 0);
	for (int i = 0; i < 99; i++)
		anomaly_acc_request(i % 2, 42, false, 1000000); /* 1 ms */
	anomaly_acc_request(1, 42, true, 50000000);		/* one 50 ms error */
	CHECK_INT(anomaly_acc_read(42, &a), 0);
	CHECK_INT(a.requests, 100);
	CHECK_INT(a.errors, 1);
	CHECK(anomaly_lat_quantile(a.lat, NULL, 0.5) <= 1250);
	CHECK(anomaly_lat_quantile(a.lat, NULL, 1.0) >= 50000);
	/* a window = the difference of two readings */
	memcpy(before, a.lat, sizeof(before));
	for (int i = 0; i < 10; i++)
		anomaly_acc_request(0, 42, false, 20000000);
	CHECK_INT(anomaly_acc_read(42, &b), 0);
	CHECK(anomaly_lat_quantile(b.lat, before, 0.99) >= 20000 &&
	      anomaly_lat_quantile(b.lat, before, 0.99) <= 25000);
	CHECK_INT(anomaly_lat_quantile(b.lat, b.lat, 0.99), 0);
	/* retransmits published by the anomaly thread reach every worker's slot */
	CHECK(anomaly_acc_retrans(0, 42) == UINT32_MAX);
	anomaly_acc_set_retrans(42, 7);
	CHECK_INT(anomaly_acc_retrans(0, 42), 7);
	CHECK_INT(anomaly_acc_retrans(1, 42), 7);
	CHECK(anomaly_acc_retrans(0, 43) == UINT32_MAX);
	CHECK(anomaly_acc_retrans(5, 42) == UINT32_MAX); /* no such worker */
	/* more endpoints than slots: the rest are not counted, nothing breaks */
	for (uint64_t id = 100; id < 100 + 2 * ANOMALY_ACC_SLOTS; id++)
		anomaly_acc_request(0, id, false, 1000);
	CHECK_INT(anomaly_acc_read(42, &a), 0);
	test_end();
}

int main(void)
{
	test_steady();
	test_noisy();
	test_step();
	test_spike();
	test_drift();
	test_quiet();
	test_sensitivity();
	test_log();
	test_accumulators();
	return test_exit_code();
}
