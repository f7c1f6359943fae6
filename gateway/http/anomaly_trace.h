/* anomaly_trace.h — reflexd's owner of the tracer (bpf/trace.bpf.c through
 * userspace/trace.h) and of the anomaly detector (http/anomaly.h).
 *
 * anomaly_trace_start() runs on the main thread before the workers start. With
 * `trace.enabled` it loads and attaches the tracer (when that fails: ONE log
 * line saying why, and the detector still watches the HTTP signals) and starts
 * one low-priority thread that, never on a request's path:
 *   - consumes the ring buffer (resets, slow and failed upstream connects):
 *     at most one event per subject and kind per window reaches the event log;
 *   - once per second polls ListenOverflows/ListenDrops and TCP_INFO on the
 *     gateway's listeners (an overflow is an event naming the full listener);
 *   - once per window (trace.window) closes a window: per upstream endpoint
 *     the HTTP signals from the workers' accumulators (latency P99, error
 *     rate, request rate) and the kernel's (retransmits, resets, connect
 *     time), per client prefix the kernel's (resets, retransmits, connection
 *     rate), all fed to the detector; anomalies go to the event log, the
 *     diagnostic log (one JSON line each), /metrics, GET /events, and to the
 *     optional actions: eject the endpoint (pool outlier-ejection state,
 *     pool_shared.h) or box the client prefix (http/limit_kernel.h);
 *   - keeps the tracer's scope maps (listening ports, upstream endpoints) in
 *     step with the current configuration snapshot after a reload;
 *   - serves the server-sent-event subscribers of GET /events?stream=1.
 *
 * This module links libreflexbpf (mk/bpf.mk); only main.c refers to it, so
 * unit tests linking libgateway.a never pull it in.
 */
#ifndef REFLEX_HTTP_ANOMALY_TRACE_H
#define REFLEX_HTTP_ANOMALY_TRACE_H

struct gateway;

/* Always returns 0: tracing that cannot start never stops the gateway. */
int anomaly_trace_start(struct gateway *g);
/* Stop the thread, detach the tracer, close the event streams. NULL-safe. */
void anomaly_trace_stop(void);
/* GET /events (list; ?since=SEQ, ?stream=1 or Accept: text/event-stream for a
 * live server-sent-events stream). Call before admin_start. */
void anomaly_trace_register_admin(void);

#endif
