/* trace.h — the only contract between bpf/trace.bpf.c and userspace/trace.c.
 *
 * Fixed-width types only, laid out without implicit padding: the program and the loader read
 * the same bytes, and no struct here is ever copied elsewhere.
 *
 * Scope: only the gateway's own TCP sockets are traced. A socket is the gateway's when it
 * lives in the configured network namespace (tr_config.netns_ino, 0 = any) and either its
 * remote address and port is an upstream endpoint listed in tr_upstreams (subject: that
 * endpoint) or its local port is one of the gateway's listening ports in tr_ports (subject:
 * the client's prefix, IPv4 /v4_plen and IPv6 /v6_plen, 24 and 64 by default). Userspace keeps
 * both maps current.
 *
 * Addresses are 16 bytes in network order: IPv6 as is, IPv4 in the first 4 bytes (rest zero),
 * with the family next to them. Time is CLOCK_MONOTONIC ns (bpf_ktime_get_ns).
 */
#ifndef REFLEX_BPF_TRACE_H
#define REFLEX_BPF_TRACE_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define TR_FAMILY_V4 4
#define TR_FAMILY_V6 6

#define TR_PORTS_MAX 65536

/* What a peer key names. */
#define TR_SUBJ_CLIENT 1   /* a client prefix (connections accepted on a gateway port) */
#define TR_SUBJ_UPSTREAM 2 /* an upstream endpoint (connections the gateway made) */

/* Key of tr_peers (LRU_HASH) and tr_upstreams (HASH); port is host order, 0 for a client
 * prefix; plen is the prefix length (128/32 for an endpoint). */
struct tr_peer_key {
	__u8 subject; /* TR_SUBJ_* */
	__u8 family;  /* TR_FAMILY_* */
	__u8 plen;
	__u8 pad; /* 0 */
	__u16 port;
	__u16 pad2; /* 0 */
	__u8 addr[16];
};

/* Value of tr_peers: running totals since the entry was created (userspace diffs them per
 * window). Updated with atomic adds; the maxima with a racy max (good enough for a signal). */
struct tr_peer_stats {
	__u64 conns;	      /* connections established (either direction) */
	__u64 connect_fail;   /* our connects that went SYN_SENT → CLOSE */
	__u64 retrans;	      /* segments retransmitted */
	__u64 rst_sent;	      /* resets we sent on such a connection */
	__u64 rst_recv;	      /* resets we received */
	__u64 drops;	      /* skbs of such a socket freed with a drop reason */
	__u64 closed_local;   /* we closed first (FIN_WAIT1) */
	__u64 closed_remote;  /* the peer closed first (CLOSE_WAIT) */
	__u64 connect_sum_us; /* SYN_SENT → ESTABLISHED (upstream connects) */
	__u64 connect_n;
	__u64 connect_max_us;
	__u64 life_sum_ms; /* established → closed */
	__u64 life_n;
	__u64 rtt_sum_us; /* smoothed RTT samples: handshake (sockops) and iterator */
	__u64 rtt_n;
	__u64 rtt_max_us;
};

/* tr_upstreams value: unused beyond presence (1). */

/* tr_config[0]: live knobs, written by userspace at any time. */
struct tr_config {
	__u64 netns_ino;       /* only sockets of this netns (0: any) */
	__u64 slow_connect_ns; /* an upstream connect slower than this is an event (0: never) */
	__u32 events_per_sec;  /* per CPU; past it events are counted as capped */
	__u8 v4_plen;	       /* client prefix lengths */
	__u8 v6_plen;
	__u16 pad;
};

/* Notable events through the ring buffer. */
#define TR_EV_RST_SENT 1
#define TR_EV_RST_RECV 2
#define TR_EV_SLOW_CONNECT 3 /* value = connect time in µs */
#define TR_EV_CONNECT_FAIL 4 /* an upstream connect ended without ESTABLISHED */

struct tr_event {
	__u64 ts_ns;
	__u32 type;  /* TR_EV_* */
	__u32 value; /* type dependent (µs for SLOW_CONNECT, TCP state for resets) */
	struct tr_peer_key key;
	__u16 lport; /* local and remote port of the socket (host order) */
	__u16 rport;
	__u32 pad;
};

/* The RTT iterator (iter/tcp, run by userspace) samples a socket only when it sent or received
 * within this long: an idle connection's estimate is old news. */
#define TR_RTT_ACTIVE_NS 2000000000ull

/* tr_counters (PERCPU_ARRAY, one entry), summed by userspace. */
struct tr_counters {
	__u64 events_sent;
	__u64 events_capped; /* over events_per_sec on that CPU */
	__u64 events_lost;   /* the ring was full */
	__u64 peers_new;     /* tr_peers entries created (the LRU evicts the oldest) */
	__u64 retrans_all;   /* every traced retransmit, ours or not: a cheap sanity number */
	__u64 drops_tcp;     /* drops attributed to one of our sockets */
	__u64 rtt_samples;   /* handshake samples and iterator samples */
	__u64 pad;
};

/* tr_drop_reasons: PERCPU_ARRAY indexed by enum skb_drop_reason (clamped to the last slot),
 * counting drops of skbs that belong to one of our sockets. */
#define TR_DROP_REASONS 128

#endif
