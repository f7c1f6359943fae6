/* anomaly.h — the anomaly detector and the event log behind GET /events.
 *
 * Pure computation, no I/O and no BPF: the owner (http/anomaly_trace.c in reflexd, the unit
 * tests otherwise) closes a window every few seconds and feeds one value per (subject,
 * signal): an upstream endpoint's request latency P99, error rate, TCP retransmits, resets
 * and request rate, or a client prefix's resets, retransmits and connection rate.
 *
 * Per series the detector keeps an EWMA baseline and the median absolute deviation (MAD) of
 * the last ANOMALY_MAD_WINDOW values from that baseline. A value is anomalous when it lies
 * more than `sensitivity` robust standard deviations (1.4826 × MAD, but never less than the
 * signal's noise floor) on the signal's bad side of the baseline. Nothing is judged before
 * the series has `min_samples` windows, and a window with fewer than the signal's minimum
 * count of underlying samples (requests, connections) is skipped, so a quiet system raises
 * nothing. An event is raised when a series enters the anomalous state; it leaves it when a
 * value is back within half the threshold. While anomalous the baseline adapts at a quarter
 * of its normal rate: a lasting step change is reported once and then becomes the new normal;
 * a slow drift is followed by the baseline and raises nothing.
 *
 * Threads: a detector belongs to one thread. The event log (anomaly_log_*) is shared: one
 * mutex, read by the admin thread while the owner appends.
 */
#ifndef REFLEX_HTTP_ANOMALY_H
#define REFLEX_HTTP_ANOMALY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define ANOMALY_MAD_WINDOW 32
#define ANOMALY_SUBJECT_MAX 64 /* "[2001:db8::1]:65535", "10.1.2.0/24" */

enum anomaly_signal {
	ANOM_LATENCY_P99 = 0, /* upstream: P99 time to first byte, µs */
	ANOM_ERROR_RATE,      /* upstream: failed exchanges and 5xx / requests, 0..1 */
	ANOM_RETRANS,	      /* TCP retransmits per second */
	ANOM_RESETS,	      /* TCP resets (sent + received) per second */
	ANOM_REQUEST_RATE,    /* upstream: requests/s; client prefix: connections/s (samples: the
			    * count, at least min_requests to be judged) */
	ANOM_CONNECT_TIME,    /* upstream: mean TCP connect time, µs */
	ANOM_LISTEN_OVERFLOW, /* the gateway's listeners: accept-queue overflows per second */
	ANOM_SIG_MAX
};
const char *anomaly_signal_name(enum anomaly_signal s); /* "latency_p99", ... */

enum anomaly_subject_kind { ANOM_ENDPOINT = 0, ANOM_CLIENT, ANOM_LISTENER, ANOM_KIND_MAX };
const char *anomaly_kind_name(enum anomaly_subject_kind k); /* "endpoint", "client", "listener" */

enum anomaly_severity { ANOM_WARNING = 0, ANOM_CRITICAL, ANOM_SEV_MAX };
const char *anomaly_severity_name(enum anomaly_severity s);

struct anomaly_params {
	double sensitivity;    /* threshold in robust standard deviations (default 5) */
	unsigned min_samples;  /* windows of history before anything is judged (default 8) */
	double alpha;	       /* EWMA weight of a new window (default 0.2) */
	unsigned min_requests; /* HTTP signals: requests per window to judge it (default 20) */
};
void anomaly_params_default(struct anomaly_params *p);

/* The kernel and HTTP counters behind a judgement, for the event's "evidence". */
struct anomaly_evidence {
	uint64_t requests, errors;
	uint64_t retrans, rst_sent, rst_recv, conns, connect_fail, drops;
	uint64_t rtt_avg_us, rtt_max_us, connect_avg_us;
	uint64_t listen_overflows, listen_drops;
	uint32_t p99_us;
	uint32_t window_ms;
};

struct anomaly_event {
	uint64_t seq;	 /* 1, 2, ... in the log */
	int64_t time_ms; /* wall clock */
	enum anomaly_subject_kind kind;
	char subject[ANOMALY_SUBJECT_MAX];
	enum anomaly_signal signal;
	double observed, baseline, score; /* score: robust standard deviations */
	enum anomaly_severity severity;
	struct anomaly_evidence ev;
	char action[64]; /* "" or what was done ("ejected 30s", "penalty 60s") */
	/* "detector": a series left its baseline; "kernel": a discrete kernel event (a reset,
	 * a slow or failed connect, a listen-queue overflow) as it happened */
	const char *source; /* a literal; NULL = "detector" */
};

/* One series' state (exposed for the tests; owners use the detector below). */
struct anomaly_series {
	double baseline;
	double dev[ANOMALY_MAD_WINDOW]; /* signed deviations, newest at dev_pos - 1 */
	unsigned dev_pos, dev_n;
	unsigned n; /* windows accepted */
	bool alarm;
};

/* Feed one window's value. samples: the count the value rests on (requests for the HTTP
 * signals; ignored by the others). Returns 1 when this value starts an anomaly (score and
 * the baseline before the value in *score / *baseline), 0 otherwise, -1 when the window was
 * skipped (too few samples). */
int anomaly_series_feed(struct anomaly_series *s, const struct anomaly_params *p,
			enum anomaly_signal sig, double value, uint64_t samples, double *score,
			double *baseline);

struct anomaly_detector;

/* NULL when out of memory. Subjects beyond max_subjects replace the one seen longest ago. */
struct anomaly_detector *anomaly_new(const struct anomaly_params *p, unsigned max_subjects);
void anomaly_free(struct anomaly_detector *d); /* NULL-safe */
void anomaly_set_params(struct anomaly_detector *d, const struct anomaly_params *p);

/* Feed a window value for (kind, subject, signal). Returns 1 and fills *out (seq and time
 * left 0) when an anomaly starts, 0 when not, -1 when skipped. */
int anomaly_observe(struct anomaly_detector *d, enum anomaly_subject_kind kind, const char *subject,
		    enum anomaly_signal sig, double value, uint64_t samples,
		    const struct anomaly_evidence *ev, struct anomaly_event *out);
/* Whether (kind, subject, signal) is in the anomalous state now. */
bool anomaly_in_alarm(const struct anomaly_detector *d, enum anomaly_subject_kind kind,
		      const char *subject, enum anomaly_signal sig);

/* The event log: a ring of the last `cap` events, with counters for /metrics. */
struct anomaly_log;
struct anomaly_log *anomaly_log_new(unsigned cap);
void anomaly_log_free(struct anomaly_log *l); /* NULL-safe */
/* Append a copy (seq and time_ms assigned here when 0); returns the seq. */
uint64_t anomaly_log_add(struct anomaly_log *l, struct anomaly_event *e);
/* The newest seq (0: none yet). */
uint64_t anomaly_log_last(struct anomaly_log *l);
/* JSON array of the events with seq > since (oldest first, at most max): 0 or -ENOMEM. */
int anomaly_log_json(struct anomaly_log *l, uint64_t since, unsigned max, struct buf *b);
/* A copy of event seq: 0, or -ENOENT when it is not (or no longer) in the ring. */
int anomaly_log_get(struct anomaly_log *l, uint64_t seq, struct anomaly_event *out);
/* One event as a JSON object (no newline). */
int anomaly_event_json(const struct anomaly_event *e, struct buf *b);
/* Counters: events by signal and severity, actions taken. */
struct anomaly_counts {
	uint64_t events[ANOM_SIG_MAX][ANOM_SEV_MAX];
	uint64_t ejections, penalties;
};
void anomaly_log_counts(struct anomaly_log *l, struct anomaly_counts *out);
void anomaly_log_count_action(struct anomaly_log *l, bool ejection);

/* ---- per-endpoint HTTP accumulators ---------------------------------------
 *
 * The request path's only contact with the detector: each worker counts the requests, errors
 * and times to first byte of the endpoints it used, in a small table of its own (single
 * writer, relaxed atomics; no lock, no allocation). The anomaly thread sums the workers'
 * tables per window, and publishes per endpoint the TCP retransmits of the last window, which
 * the access log records next to each proxied request. Endpoints are keyed by
 * endpoint_state.id (the hash of the address text); a table holds ANOMALY_ACC_SLOTS of them,
 * more are not counted. Until anomaly_acc_init() has run every call is a no-op. */
#define ANOMALY_ACC_SLOTS 64
#define ANOMALY_LAT_BUCKETS 112 /* four per octave of µs: 1 µs .. ~2 min */

/* Once, before the workers start (not thread-safe against them). 0 or -ENOMEM. */
int anomaly_acc_init(unsigned n_workers);
/* Worker side: one finished request that had an endpoint. error: a 5xx or a failed
 * exchange; ttfb_ns 0 when no response byte came. */
void anomaly_acc_request(unsigned worker, uint64_t ep_id, bool error, uint64_t ttfb_ns);
/* Worker side: the endpoint's retransmits in the last window; UINT32_MAX when unknown
 * (tracing off, or the endpoint not measured yet). */
uint32_t anomaly_acc_retrans(unsigned worker, uint64_t ep_id);

/* Reader side (any thread): running totals over all workers. */
struct anomaly_acc_totals {
	uint64_t requests, errors;
	uint64_t lat[ANOMALY_LAT_BUCKETS];
};
int anomaly_acc_read(uint64_t ep_id, struct anomaly_acc_totals *out); /* -ENOENT if unseen */
void anomaly_acc_set_retrans(uint64_t ep_id, uint32_t n);
/* Histogram helpers: the bucket of a time, a bucket's upper bound, a quantile (0..1) of the
 * difference of two running histograms (µs; 0 when empty). */
unsigned anomaly_lat_bucket(uint64_t us);
uint64_t anomaly_lat_bound_us(unsigned b);
uint64_t anomaly_lat_quantile(const uint64_t *now, const uint64_t *before, double q);

/* /metrics text of the anomaly module (set by its owner; "" when nothing is running).
 * admin.c appends it to its exposition. */
extern int (*anomaly_metrics_hook)(struct buf *b);
int anomaly_metrics(struct buf *b);

#endif
