/* trace.h — the userspace side of bpf/trace.bpf.c: load, attach, typed maps, events.
 *
 * trace_open() loads the tracer from the built-in skeleton and attaches its tp_btf programs
 * (inet_sock_set_state, tcp_retransmit_skb, tcp_send_reset, tcp_receive_reset, kfree_skb)
 * and its RTT iterator through links, and its sockops program to a cgroup v2 (the caller's own by default) when
 * the cgroup v2 hierarchy is there. Everything detaches when the handle is closed or the
 * process dies; nothing is pinned. Needs CAP_BPF + CAP_PERFMON. When it cannot load, it
 * returns -errno with one line in why and the caller carries on without tracing.
 *
 * Scope (bpf/trace.h): the caller lists the gateway's listening ports (trace_port_set) and
 * upstream endpoints (trace_upstream_add); only sockets of the chosen network namespace are
 * traced. Counters are running totals per peer in an LRU map; callers diff them.
 *
 * The handle is not thread-safe except where noted: the owner serialises calls. The events
 * callback runs inside trace_events_poll()/trace_events_consume(), on the caller's thread.
 * Functions return 0 or -errno unless noted.
 */
#ifndef REFLEX_USERSPACE_TRACE_H
#define REFLEX_USERSPACE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bpf/trace.h"

struct trace;

struct trace_open_opts {
	/* cgroup v2 directory for sockops: NULL = the caller's own cgroup under
	 * /sys/fs/cgroup/unified (or /sys/fs/cgroup), "" = no sockops */
	const char *cgroup;
	uint64_t netns_ino;	  /* 0: the caller's network namespace */
	uint64_t slow_connect_ns; /* 0: 200 ms */
	uint32_t events_per_sec;  /* per CPU; 0: 1000 */
	uint8_t v4_plen, v6_plen; /* client prefixes; 0: 24 and 64 */
};

int trace_open(struct trace **out, const struct trace_open_opts *opts, char *why, size_t why_len);
void trace_close(struct trace *t); /* NULL-safe */

/* Which optional parts attached: "kfree_skb", "sockops" and "rtt iterator" may be missing
 * (one line each in trace_missing() then). */
bool trace_has_sockops(const struct trace *t);
bool trace_has_drops(const struct trace *t);
const char *trace_missing(const struct trace *t); /* "" when everything attached */

/* Live knobs (see struct tr_config). */
int trace_config_set(struct trace *t, const struct tr_config *c);
int trace_config_get(struct trace *t, struct tr_config *c);

/* Scope. */
int trace_port_set(struct trace *t, uint16_t port, bool on);
int trace_upstream_add(struct trace *t, const struct sockaddr *sa);
int trace_upstream_del(struct trace *t, const struct sockaddr *sa);

/* Keys. The endpoint key for an upstream address; the client-prefix key for a client
 * address (masked to plen). */
int trace_key_endpoint(const struct sockaddr *sa, struct tr_peer_key *out);
int trace_key_client(const struct sockaddr *sa, unsigned v4_plen, unsigned v6_plen,
		     struct tr_peer_key *out);
/* "127.0.0.1:8080", "[::1]:80", "10.1.2.0/24", "2001:db8::/64"; returns the length. */
int trace_key_format(const struct tr_peer_key *k, char *out, size_t len);

/* Counters of one peer: -ENOENT when it has none (yet, or evicted). */
int trace_peer_get(struct trace *t, const struct tr_peer_key *k, struct tr_peer_stats *out);
/* Every peer; cb returns non-zero to stop. Returns the number visited. */
int trace_peers_walk(struct trace *t,
		     int (*cb)(void *ctx, const struct tr_peer_key *k,
			       const struct tr_peer_stats *s),
		     void *ctx);
/* Program counters summed over CPUs; drop reasons likewise (n entries of TR_DROP_REASONS). */
int trace_counters_read(struct trace *t, struct tr_counters *out);
int trace_drop_reasons_read(struct trace *t, uint64_t *out, unsigned n);
/* "no_socket", "tcp_csum", ...: enum skb_drop_reason of the running kernel (BTF), lower case
 * without the prefix; NULL when unknown. Valid until trace_close. */
const char *trace_drop_reason_name(const struct trace *t, unsigned reason);

/* Events: set the callback, then poll (timeout in ms; returns events handled or -errno) or
 * wait on trace_events_fd() yourself and call trace_events_consume(). */
int trace_events_start(struct trace *t, void (*on_event)(void *ctx, const struct tr_event *e),
		       void *ctx);
int trace_events_fd(struct trace *t);
int trace_events_poll(struct trace *t, int timeout_ms);
int trace_events_consume(struct trace *t);

/* RTT of live connections: runs the iterator over the gateway's sockets (those sockops saw
 * established; kernel socket storage, freed with the socket) and adds one sample (the
 * smoothed RTT) per established one that saw traffic in the last TR_RTT_ACTIVE_NS to its
 * peer's rtt_* counters. The handshake's RTT is counted by sockops without this. Call it
 * about once a second; its cost follows the gateway's connection count (~1 µs each), and it
 * needs no privilege once the tracer is open. Returns 0 or -errno (-ENOTSUP when the
 * iterator did not attach: see trace_missing()). Without sockops there is nothing to walk. */
int trace_rtt_poll(struct trace *t);

/* Listen-queue overflow, which has no tracepoint here: the namespace's TcpExt counters
 * ListenOverflows and ListenDrops (/proc/net/netstat) and the accept queue of one listener
 * (TCP_INFO: tcpi_unacked = queued connections, tcpi_sacked = backlog). No BPF needed. */
int trace_netstat_read(uint64_t *listen_overflows, uint64_t *listen_drops);
int trace_listener_queue(int fd, uint32_t *queued, uint32_t *backlog);

/* Names for logs and JSON: "rst_sent", "rst_recv", "slow_connect", "connect_fail". */
const char *trace_event_name(uint32_t type);

#endif
