#include "http/anomaly.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/jsonw.h"

/* Per signal: the noise floor of the robust standard deviation (absolute, and relative to
 * the baseline), and whether the value rests on a request count. Without a floor a series
 * that never moved (MAD 0) would call its first wobble an anomaly. */
static const struct {
	const char *name;
	double abs_floor, rel_floor;
	bool needs_requests;
	unsigned min_count; /* for the others: samples needed, 0 = none */
} sigs[ANOM_SIG_MAX] = {
	[ANOM_LATENCY_P99] = {"latency_p99", 5000.0, 0.5, true, 0},
	[ANOM_ERROR_RATE] = {"error_rate", 0.02, 0.25, true, 0},
	[ANOM_RETRANS] = {"tcp_retransmits", 1.0, 0.5, false, 0},
	[ANOM_RESETS] = {"tcp_resets", 0.5, 0.5, false, 0},
	/* rates are judged only from windows with real traffic: going from idle to busy is not
	 * an anomaly, and an idle history would make any traffic look like one */
	[ANOM_REQUEST_RATE] = {"request_rate", 5.0, 0.3, true, 0},
	[ANOM_CONNECT_TIME] = {"connect_time", 1000.0, 0.5, false, 3},
	[ANOM_LISTEN_OVERFLOW] = {"listen_overflows", 0.5, 0.5, false, 0},
};

const char *anomaly_signal_name(enum anomaly_signal s)
{
	return (unsigned)s < ANOM_SIG_MAX ? sigs[s].name : "unknown";
}

const char *anomaly_kind_name(enum anomaly_subject_kind k)
{
	static const char *const n[ANOM_KIND_MAX] = {"endpoint", "client", "listener"};

	return (unsigned)k < ANOM_KIND_MAX ? n[k] : "unknown";
}

const char *anomaly_severity_name(enum anomaly_severity s)
{
	return s == ANOM_CRITICAL ? "critical" : "warning";
}

void anomaly_params_default(struct anomaly_params *p)
{
	p->sensitivity = 5.0;
	p->min_samples = 8;
	p->alpha = 0.2;
	p->min_requests = 20;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* 1.4826 × MAD of the recent deviations: a standard deviation that a few outliers cannot
 * inflate. */
static double robust_sigma(const struct anomaly_series *s)
{
	double v[ANOMALY_MAD_WINDOW];
	double med;

	if (!s->dev_n)
		return 0;
	memcpy(v, s->dev, s->dev_n * sizeof(double));
	med = median(v, s->dev_n);
	for (unsigned i = 0; i < s->dev_n; i++)
		v[i] = fabs(s->dev[i] - med);
	return 1.4826 * median(v, s->dev_n);
}

static void push_dev(struct anomaly_series *s, double r)
{
	s->dev[s->dev_pos] = r;
	s->dev_pos = (s->dev_pos + 1) % ANOMALY_MAD_WINDOW;
	if (s->dev_n < ANOMALY_MAD_WINDOW)
		s->dev_n++;
}

int anomaly_series_feed(struct anomaly_series *s, const struct anomaly_params *p,
			enum anomaly_signal sig, double value, uint64_t samples, double *score,
			double *baseline)
{
	double r, sigma, z;

	if ((unsigned)sig >= ANOM_SIG_MAX || !isfinite(value))
		return -1;
	if (sigs[sig].needs_requests ? samples < p->min_requests : samples < sigs[sig].min_count)
		return -1;
	if (!s->n) {
		s->baseline = value;
		s->n = 1;
		return 0;
	}
	r = value - s->baseline;
	sigma = robust_sigma(s);
	if (sigma < sigs[sig].abs_floor)
		sigma = sigs[sig].abs_floor;
	if (sigma < sigs[sig].rel_floor * fabs(s->baseline))
		sigma = sigs[sig].rel_floor * fabs(s->baseline);
	z = r / sigma;

	if (s->n < p->min_samples) {
		push_dev(s, r);
		s->baseline += p->alpha * r;
		s->n++;
		return 0;
	}
	if (s->alarm && z < p->sensitivity / 2)
		s->alarm = false;
	if (s->alarm) {
		/* a lasting change becomes the new normal, slowly; its values stay out of the
		 * deviation history so the MAD still describes normal times */
		s->baseline += p->alpha / 4 * r;
		s->n++;
		return 0;
	}
	if (z > p->sensitivity) {
		s->alarm = true;
		*score = z;
		*baseline = s->baseline;
		s->baseline += p->alpha / 4 * r;
		s->n++;
		return 1;
	}
	push_dev(s, r);
	s->baseline += p->alpha * r;
	s->n++;
	return 0;
}

struct subject {
	uint32_t hash;
	enum anomaly_subject_kind kind;
	char name[ANOMALY_SUBJECT_MAX];
	uint64_t tick; /* last observation */
	struct anomaly_series series[ANOM_SIG_MAX];
};

struct anomaly_detector {
	struct anomaly_params p;
	struct subject *subj;
	unsigned n, cap;
	uint64_t tick;
};

struct anomaly_detector *anomaly_new(const struct anomaly_params *p, unsigned max_subjects)
{
	struct anomaly_detector *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->cap = max_subjects ? max_subjects : 512;
	d->subj = calloc(d->cap, sizeof(*d->subj));
	if (!d->subj) {
		free(d);
		return NULL;
	}
	if (p)
		d->p = *p;
	else
		anomaly_params_default(&d->p);
	return d;
}

void anomaly_free(struct anomaly_detector *d)
{
	if (!d)
		return;
	free(d->subj);
	free(d);
}

void anomaly_set_params(struct anomaly_detector *d, const struct anomaly_params *p)
{
	d->p = *p;
}

static uint32_t hash_name(enum anomaly_subject_kind kind, const char *s)
{
	uint32_t h = 2166136261u ^ (uint32_t)kind;

	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * 16777619u;
	return h;
}

static struct subject *find(const struct anomaly_detector *d, enum anomaly_subject_kind kind,
			    const char *name)
{
	uint32_t h = hash_name(kind, name);

	for (unsigned i = 0; i < d->n; i++)
		if (d->subj[i].hash == h && d->subj[i].kind == kind &&
		    !strcmp(d->subj[i].name, name))
			return &d->subj[i];
	return NULL;
}

static struct subject *find_or_add(struct anomaly_detector *d, enum anomaly_subject_kind kind,
				   const char *name)
{
	struct subject *s = find(d, kind, name);

	if (s)
		return s;
	if (d->n < d->cap) {
		s = &d->subj[d->n++];
	} else { /* replace the one seen longest ago */
		s = &d->subj[0];
		for (unsigned i = 1; i < d->n; i++)
			if (d->subj[i].tick < s->tick)
				s = &d->subj[i];
	}
	memset(s, 0, sizeof(*s));
	s->hash = hash_name(kind, name);
	s->kind = kind;
	snprintf(s->name, sizeof(s->name), "%s", name);
	return s;
}

int anomaly_observe(struct anomaly_detector *d, enum anomaly_subject_kind kind, const char *subject,
		    enum anomaly_signal sig, double value, uint64_t samples,
		    const struct anomaly_evidence *ev, struct anomaly_event *out)
{
	struct subject *s;
	double score = 0, base = 0;
	int rc;

	if ((unsigned)sig >= ANOM_SIG_MAX || (unsigned)kind >= ANOM_KIND_MAX)
		return -1;
	s = find_or_add(d, kind, subject);
	s->tick = ++d->tick;
	rc = anomaly_series_feed(&s->series[sig], &d->p, sig, value, samples, &score, &base);
	if (rc != 1)
		return rc;
	memset(out, 0, sizeof(*out));
	out->kind = kind;
	snprintf(out->subject, sizeof(out->subject), "%s", subject);
	out->signal = sig;
	out->observed = value;
	out->baseline = base;
	out->score = score;
	out->severity = score >= 2 * d->p.sensitivity ? ANOM_CRITICAL : ANOM_WARNING;
	if (ev)
		out->ev = *ev;
	return 1;
}

bool anomaly_in_alarm(const struct anomaly_detector *d, enum anomaly_subject_kind kind,
		      const char *subject, enum anomaly_signal sig)
{
	const struct subject *s = find(d, kind, subject);

	return s && (unsigned)sig < ANOM_SIG_MAX && s->series[sig].alarm;
}

struct anomaly_log {
	pthread_mutex_t mu;
	struct anomaly_event *ring;
	unsigned cap;
	uint64_t last; /* seq of the newest; event seq lives at ring[(seq - 1) % cap] */
	struct anomaly_counts counts;
};

struct anomaly_log *anomaly_log_new(unsigned cap)
{
	struct anomaly_log *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->cap = cap ? cap : 256;
	l->ring = calloc(l->cap, sizeof(*l->ring));
	if (!l->ring) {
		free(l);
		return NULL;
	}
	pthread_mutex_init(&l->mu, NULL);
	return l;
}

void anomaly_log_free(struct anomaly_log *l)
{
	if (!l)
		return;
	pthread_mutex_destroy(&l->mu);
	free(l->ring);
	free(l);
}

uint64_t anomaly_log_add(struct anomaly_log *l, struct anomaly_event *e)
{
	struct timespec ts;

	if (!e->time_ms) {
		clock_gettime(CLOCK_REALTIME, &ts);
		e->time_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	}
	pthread_mutex_lock(&l->mu);
	e->seq = ++l->last;
	l->ring[(e->seq - 1) % l->cap] = *e;
	if ((unsigned)e->signal < ANOM_SIG_MAX && (unsigned)e->severity < ANOM_SEV_MAX)
		l->counts.events[e->signal][e->severity]++;
	pthread_mutex_unlock(&l->mu);
	return e->seq;
}

uint64_t anomaly_log_last(struct anomaly_log *l)
{
	uint64_t v;

	pthread_mutex_lock(&l->mu);
	v = l->last;
	pthread_mutex_unlock(&l->mu);
	return v;
}

int anomaly_log_get(struct anomaly_log *l, uint64_t seq, struct anomaly_event *out)
{
	int rc = -ENOENT;

	pthread_mutex_lock(&l->mu);
	if (seq && seq <= l->last && l->last - seq < l->cap) {
		*out = l->ring[(seq - 1) % l->cap];
		rc = 0;
	}
	pthread_mutex_unlock(&l->mu);
	return rc;
}

static int num(struct buf *b, const char *name, double v)
{
	if (v == floor(v) && fabs(v) < 1e15)
		return buf_appendf(b, ",\"%s\":%.0f", name, v);
	return buf_appendf(b, ",\"%s\":%.4g", name, v);
}

int anomaly_event_json(const struct anomaly_event *e, struct buf *b)
{
	const struct anomaly_evidence *v = &e->ev;
	int rc = 0;

	rc |= buf_appendf(b, "{\"seq\":%llu,\"time_ms\":%lld,\"kind\":\"%s\",\"subject\":",
			  (unsigned long long)e->seq, (long long)e->time_ms,
			  anomaly_kind_name(e->kind));
	rc |= jsonw_buf_str(b, e->subject);
	rc |= buf_appendf(b, ",\"signal\":\"%s\"", anomaly_signal_name(e->signal));
	rc |= num(b, "observed", e->observed);
	rc |= num(b, "baseline", e->baseline);
	rc |= buf_appendf(b, ",\"score\":%.1f,\"severity\":\"%s\"", e->score,
			  anomaly_severity_name(e->severity));
	rc |= buf_appendf(
		b,
		",\"evidence\":{\"window_ms\":%u,\"requests\":%llu,\"errors\":%llu,"
		"\"p99_us\":%u,\"retransmits\":%llu,\"resets_sent\":%llu,"
		"\"resets_received\":%llu,\"connections\":%llu,\"connect_failures\":%llu,"
		"\"drops\":%llu,\"rtt_avg_us\":%llu,\"rtt_max_us\":%llu,"
		"\"connect_avg_us\":%llu,\"listen_overflows\":%llu,\"listen_drops\":%llu}",
		v->window_ms, (unsigned long long)v->requests, (unsigned long long)v->errors,
		v->p99_us, (unsigned long long)v->retrans, (unsigned long long)v->rst_sent,
		(unsigned long long)v->rst_recv, (unsigned long long)v->conns,
		(unsigned long long)v->connect_fail, (unsigned long long)v->drops,
		(unsigned long long)v->rtt_avg_us, (unsigned long long)v->rtt_max_us,
		(unsigned long long)v->connect_avg_us, (unsigned long long)v->listen_overflows,
		(unsigned long long)v->listen_drops);
	rc |= buf_appendf(b, ",\"source\":\"%s\"", e->source ? e->source : "detector");
	rc |= buf_appends(b, ",\"action\":");
	rc |= jsonw_buf_str(b, e->action);
	rc |= buf_appends(b, "}");
	return rc ? -ENOMEM : 0;
}

int anomaly_log_json(struct anomaly_log *l, uint64_t since, unsigned max, struct buf *b)
{
	uint64_t first;
	int rc = 0;

	pthread_mutex_lock(&l->mu);
	first = l->last > l->cap ? l->last - l->cap + 1 : 1;
	if (since + 1 > first)
		first = since + 1;
	if (max && l->last >= first && l->last - first + 1 > max)
		first = l->last - max + 1;
	rc |= buf_appends(b, "[");
	for (uint64_t s = first; s <= l->last && !rc; s++) {
		if (s > first)
			rc |= buf_appends(b, ",");
		rc |= anomaly_event_json(&l->ring[(s - 1) % l->cap], b);
	}
	rc |= buf_appends(b, "]");
	pthread_mutex_unlock(&l->mu);
	return rc ? -ENOMEM : 0;
}

void anomaly_log_counts(struct anomaly_log *l, struct anomaly_counts *out)
{
	pthread_mutex_lock(&l->mu);
	*out = l->counts;
	pthread_mutex_unlock(&l->mu);
}

void anomaly_log_count_action(struct anomaly_log *l, bool ejection)
{
	pthread_mutex_lock(&l->mu);
	if (ejection)
		l->counts.ejections++;
	else
		l->counts.penalties++;
	pthread_mutex_unlock(&l->mu);
}

/* ---- per-endpoint HTTP accumulators ------------------------------------- */

struct acc_slot {
	uint64_t id; /* 0: free; set once by the worker */
	uint64_t requests, errors;
	uint64_t lat[ANOMALY_LAT_BUCKETS];
	uint32_t retrans; /* + 1, 0 = unknown; written by the anomaly thread */
};

struct acc_table {
	struct acc_slot slot[ANOMALY_ACC_SLOTS];
} __attribute__((aligned(64)));

static struct acc_table *acc;
static unsigned acc_n;

#define ALOAD(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
#define ASTORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELAXED)

int anomaly_acc_init(unsigned n_workers)
{
	struct acc_table *t;

	if (acc)
		return 0;
	t = calloc(n_workers ? n_workers : 1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	acc_n = n_workers;
	__atomic_store_n(&acc, t, __ATOMIC_RELEASE);
	return 0;
}

unsigned anomaly_lat_bucket(uint64_t us)
{
	unsigned lg, sub, b;

	if (us < 1)
		return 0;
	lg = 63 - (unsigned)__builtin_clzll(us);
	sub = lg >= 2 ? (unsigned)(us >> (lg - 2)) & 3 : (unsigned)(us << (2 - lg)) & 3;
	b = lg * 4 + sub + 1;
	return b < ANOMALY_LAT_BUCKETS ? b : ANOMALY_LAT_BUCKETS - 1;
}

uint64_t anomaly_lat_bound_us(unsigned b)
{
	unsigned lg, sub;

	if (!b)
		return 1;
	lg = (b - 1) / 4;
	sub = (b - 1) % 4;
	/* the bucket holds [2^lg × (4+sub)/4, 2^lg × (5+sub)/4) */
	return ((uint64_t)1 << lg) * (5 + sub) / 4;
}

uint64_t anomaly_lat_quantile(const uint64_t *now, const uint64_t *before, double q)
{
	uint64_t total = 0, seen = 0, want;

	for (unsigned b = 0; b < ANOMALY_LAT_BUCKETS; b++)
		total += now[b] - (before ? before[b] : 0);
	if (!total)
		return 0;
	want = (uint64_t)ceil(q * (double)total);
	if (!want)
		want = 1;
	for (unsigned b = 0; b < ANOMALY_LAT_BUCKETS; b++) {
		seen += now[b] - (before ? before[b] : 0);
		if (seen >= want)
			return anomaly_lat_bound_us(b);
	}
	return anomaly_lat_bound_us(ANOMALY_LAT_BUCKETS - 1);
}

static struct acc_slot *acc_find(struct acc_table *t, uint64_t id, bool add)
{
	unsigned i0 = (unsigned)(id % ANOMALY_ACC_SLOTS);

	for (unsigned k = 0; k < ANOMALY_ACC_SLOTS; k++) {
		struct acc_slot *s = &t->slot[(i0 + k) % ANOMALY_ACC_SLOTS];
		uint64_t sid = ALOAD(s->id);

		if (sid == id)
			return s;
		if (!sid) {
			if (!add)
				return NULL;
			__atomic_store_n(&s->id, id, __ATOMIC_RELEASE);
			return s;
		}
	}
	return NULL;
}

void anomaly_acc_request(unsigned worker, uint64_t ep_id, bool error, uint64_t ttfb_ns)
{
	struct acc_table *t = __atomic_load_n(&acc, __ATOMIC_ACQUIRE);
	struct acc_slot *s;

	if (!t || worker >= acc_n)
		return;
	s = acc_find(&t[worker], ep_id ? ep_id : 1, true);
	if (!s)
		return;
	ASTORE(s->requests, s->requests + 1);
	if (error)
		ASTORE(s->errors, s->errors + 1);
	if (ttfb_ns) {
		unsigned b = anomaly_lat_bucket(ttfb_ns / 1000);

		ASTORE(s->lat[b], s->lat[b] + 1);
	}
}

uint32_t anomaly_acc_retrans(unsigned worker, uint64_t ep_id)
{
	struct acc_table *t = __atomic_load_n(&acc, __ATOMIC_ACQUIRE);
	struct acc_slot *s;
	uint32_t v;

	if (!t || worker >= acc_n)
		return UINT32_MAX;
	s = acc_find(&t[worker], ep_id ? ep_id : 1, false);
	v = s ? ALOAD(s->retrans) : 0;
	return v ? v - 1 : UINT32_MAX;
}

int anomaly_acc_read(uint64_t ep_id, struct anomaly_acc_totals *out)
{
	struct acc_table *t = __atomic_load_n(&acc, __ATOMIC_ACQUIRE);
	bool seen = false;

	memset(out, 0, sizeof(*out));
	if (!t)
		return -ENOENT;
	for (unsigned w = 0; w < acc_n; w++) {
		struct acc_slot *s = acc_find(&t[w], ep_id ? ep_id : 1, false);

		if (!s)
			continue;
		seen = true;
		out->requests += ALOAD(s->requests);
		out->errors += ALOAD(s->errors);
		for (unsigned b = 0; b < ANOMALY_LAT_BUCKETS; b++)
			out->lat[b] += ALOAD(s->lat[b]);
	}
	return seen ? 0 : -ENOENT;
}

void anomaly_acc_set_retrans(uint64_t ep_id, uint32_t n)
{
	struct acc_table *t = __atomic_load_n(&acc, __ATOMIC_ACQUIRE);

	if (!t)
		return;
	for (unsigned w = 0; w < acc_n; w++) {
		struct acc_slot *s = acc_find(&t[w], ep_id ? ep_id : 1, false);

		if (s) /* stored + 1: 0 is "never measured" */
			ASTORE(s->retrans, n < UINT32_MAX - 1 ? n + 1 : UINT32_MAX - 1);
	}
}

int (*anomaly_metrics_hook)(struct buf *b);

int anomaly_metrics(struct buf *b)
{
	int (*h)(struct buf *) = __atomic_load_n(&anomaly_metrics_hook, __ATOMIC_ACQUIRE);

	return h ? h(b) : 0;
}
