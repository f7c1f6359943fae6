/* trace.bpf.c — TCP signals of the gateway's own sockets (contract: trace.h).
 *
 * Hooks (tp_btf: no tracefs, no kprobes, no fentry needed; all verified on 6.18):
 *   inet_sock_set_state   connection lifecycle: connects and their latency (SYN_SENT →
 *                         ESTABLISHED), failed connects, accepted connections, who closed
 *                         first, lifetime
 *   tcp_retransmit_skb    retransmits
 *   tcp_send_reset        resets we send (active resets included)
 *   tcp_receive_reset     resets we receive
 *   kfree_skb             drops with a reason, when the skb belongs to one of our sockets
 *   sockops (cgroup)      the handshake's RTT, once per connection
 *   iter (sk storage)     the smoothed RTT of the gateway's live connections, when userspace
 *                         runs it (tr_rtt: storage sockops gives the gateway's sockets)
 * Nothing runs per packet on a healthy keep-alive connection: that is the cost budget.
 * Everything is summed per peer in the LRU map tr_peers; resets, slow and failed connects
 * also go to the ring buffer, at most events_per_sec per CPU.
 *
 * Listen-queue overflows have no usable hook on this kernel (the accept-queue drop is freed
 * without a reason): userspace polls ListenOverflows/ListenDrops and TCP_INFO instead.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

#include "trace.h"

#define AF_INET 2
#define AF_INET6 10
#define NSEC_PER_SEC 1000000000ull

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, TR_PORTS_MAX);
	__type(key, __u32);
	__type(value, __u8);
} tr_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, struct tr_peer_key);
	__type(value, __u8);
} tr_upstreams SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tr_config);
} tr_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct tr_peer_key);
	__type(value, struct tr_peer_stats);
} tr_peers SEC(".maps");

/* When a socket started (SYN_SENT or SYN_RECV) and was established, and, once known, its
 * peer key. The kernel unhashes a socket and gives its local port back before the CLOSE
 * transition and before an active reset (linger 0, abort) is sent, so from then on the key
 * cannot be computed again: the one stored here is used. The entry stays after CLOSE for that
 * reason; it is LRU, and a new socket at the same address overwrites it at SYN time. */
struct sk_times {
	__u64 start_ns;
	__u64 est_ns;
	struct tr_peer_key key;
	__u16 lport, rport;
	__u32 has_key;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sk_times);
} tr_sk SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tr_counters);
} tr_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TR_DROP_REASONS);
	__type(key, __u32);
	__type(value, __u64);
} tr_drop_reasons SEC(".maps");

/* Per-CPU one-second event window (private to the program). */
struct ev_window {
	__u64 start_ns;
	__u64 n;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ev_window);
} tr_cpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} tr_events SEC(".maps");

static __always_inline struct tr_counters *tr_cnt(void)
{
	__u32 z = 0;

	return bpf_map_lookup_elem(&tr_counters, &z);
}

static __always_inline const struct tr_config *tr_cfg(void)
{
	__u32 z = 0;

	return bpf_map_lookup_elem(&tr_config, &z);
}

static __always_inline void mask_prefix(__u8 *addr, unsigned plen)
{
#pragma unroll
	for (int i = 0; i < 16; i++) {
		int bits = (int)plen - i * 8;

		if (bits <= 0)
			addr[i] = 0;
		else if (bits < 8)
			addr[i] &= (__u8)(0xff00 >> bits);
	}
}

static __always_inline bool ours_netns(const struct sock *sk, const struct tr_config *cfg)
{
	return !cfg->netns_ino ||
	       BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum) == (unsigned int)cfg->netns_ino;
}

/* Fill k for sk when it is one of the gateway's sockets; returns its TR_SUBJ_* or 0. */
static __always_inline int sock_key(const struct sock *sk, const struct tr_config *cfg,
				    struct tr_peer_key *k, __u16 *lport, __u16 *rport)
{
	__u16 family, lp, rp;

	/* most sockets on a shared host are someone else's: the cheapest refusal first */
	if (!ours_netns(sk, cfg))
		return 0;
	family = BPF_CORE_READ(sk, __sk_common.skc_family);
	lp = BPF_CORE_READ(sk, __sk_common.skc_num);
	rp = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	__builtin_memset(k, 0, sizeof(*k));
	if (family == AF_INET) {
		__u32 a = BPF_CORE_READ(sk, __sk_common.skc_daddr);

		k->family = TR_FAMILY_V4;
		__builtin_memcpy(k->addr, &a, 4);
	} else if (family == AF_INET6) {
		BPF_CORE_READ_INTO(k->addr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
		k->family = TR_FAMILY_V6;
		/* a v4-mapped peer of a dual-stack socket is an IPv4 peer */
		__u32 w0, w1, w2;

		__builtin_memcpy(&w0, k->addr, 4);
		__builtin_memcpy(&w1, k->addr + 4, 4);
		__builtin_memcpy(&w2, k->addr + 8, 4);
		if (!w0 && !w1 && w2 == bpf_htonl(0xffff)) {
			__builtin_memcpy(k->addr, k->addr + 12, 4);
			__builtin_memset(k->addr + 4, 0, 12);
			k->family = TR_FAMILY_V4;
		}
	} else {
		return 0;
	}
	*lport = lp;
	*rport = rp;

	k->subject = TR_SUBJ_UPSTREAM;
	k->port = rp;
	k->plen = k->family == TR_FAMILY_V4 ? 32 : 128;
	if (bpf_map_lookup_elem(&tr_upstreams, k))
		return TR_SUBJ_UPSTREAM;

	__u32 p = lp;
	__u8 *on = bpf_map_lookup_elem(&tr_ports, &p);

	if (!on || !*on)
		return 0;
	k->subject = TR_SUBJ_CLIENT;
	k->port = 0;
	k->plen = k->family == TR_FAMILY_V4 ? cfg->v4_plen : cfg->v6_plen;
	if (k->family == TR_FAMILY_V4 && k->plen > 32)
		k->plen = 32;
	if (k->plen > 128)
		k->plen = 128;
	mask_prefix(k->addr, k->plen);
	return TR_SUBJ_CLIENT;
}

static __always_inline struct tr_peer_stats *peer(const struct tr_peer_key *k)
{
	struct tr_peer_stats *s = bpf_map_lookup_elem(&tr_peers, k);

	if (s)
		return s;
	struct tr_peer_stats zero = {};

	bpf_map_update_elem(&tr_peers, k, &zero, BPF_NOEXIST);
	struct tr_counters *c = tr_cnt();

	if (c)
		c->peers_new++;
	return bpf_map_lookup_elem(&tr_peers, k);
}

static __always_inline void atomic_max(__u64 *p, __u64 v)
{
	if (*p < v)
		*p = v; /* racy on purpose: a maximum that is a moment old is still a signal */
}

/* The key of sk: computed, or the one stored while it was still hashed. */
static __always_inline int sock_key_any(const struct sock *sk, const struct tr_config *cfg,
					struct tr_peer_key *k, __u16 *lport, __u16 *rport)
{
	if (sock_key(sk, cfg, k, lport, rport))
		return 1;
	__u64 skp = (__u64)sk;
	struct sk_times *t = bpf_map_lookup_elem(&tr_sk, &skp);

	if (!t || !t->has_key)
		return 0;
	*k = t->key;
	*lport = t->lport;
	*rport = t->rport;
	return 1;
}

/* In-kernel rate limit: at most events_per_sec per CPU per second. */
static __always_inline void emit(const struct tr_config *cfg, __u32 type, __u32 value,
				 const struct tr_peer_key *k, __u16 lport, __u16 rport)
{
	struct tr_counters *c = tr_cnt();
	__u32 z = 0;
	struct ev_window *w = bpf_map_lookup_elem(&tr_cpu, &z);
	__u64 now = bpf_ktime_get_ns();

	if (!c || !w)
		return;
	if (now - w->start_ns >= NSEC_PER_SEC) {
		w->start_ns = now;
		w->n = 0;
	}
	if (w->n >= cfg->events_per_sec) {
		c->events_capped++;
		return;
	}
	w->n++;
	struct tr_event *e = bpf_ringbuf_reserve(&tr_events, sizeof(*e), 0);

	if (!e) {
		c->events_lost++;
		return;
	}
	e->ts_ns = now;
	e->type = type;
	e->value = value;
	e->key = *k;
	e->lport = lport;
	e->rport = rport;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
	c->events_sent++;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tr_state, const struct sock *sk, const int oldstate, const int newstate)
{
	const struct tr_config *cfg = tr_cfg();
	struct tr_peer_key k;
	__u16 lp, rp;
	__u64 skp = (__u64)sk;

	if (!cfg || BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	if (newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV) {
		/* Whether the socket is the gateway's is known by now: connect() sets the remote
		 * address and port before SYN_SENT, an accepted socket has its local port. The
		 * local port of a connecting socket is not (it is chosen after SYN_SENT), so the key
		 * is stored at ESTABLISHED. A socket that is not ours gets no entry, and one left
		 * at this address by an earlier socket must not be taken for its. */
		if (!sock_key(sk, cfg, &k, &lp, &rp)) {
			bpf_map_delete_elem(&tr_sk, &skp);
			return 0;
		}
		struct sk_times t = {.start_ns = bpf_ktime_get_ns()};

		bpf_map_update_elem(&tr_sk, &skp, &t, BPF_ANY);
		return 0;
	}
	struct sk_times *t = bpf_map_lookup_elem(&tr_sk, &skp);
	int subj = sock_key(sk, cfg, &k, &lp, &rp);

	if (!subj) {
		if (!t || !t->has_key)
			return 0;
		k = t->key;
		lp = t->lport;
		rp = t->rport;
	} else if (t && !t->has_key) {
		t->key = k;
		t->lport = lp;
		t->rport = rp;
		t->has_key = 1;
	}
	struct tr_peer_stats *s = peer(&k);
	__u64 now = bpf_ktime_get_ns();

	if (!s)
		return 0;
	switch (newstate) {
	case TCP_ESTABLISHED:
		__sync_fetch_and_add(&s->conns, 1);
		if (t) {
			t->est_ns = now;
			if (oldstate == TCP_SYN_SENT && t->start_ns) {
				__u64 us = (now - t->start_ns) / 1000;

				__sync_fetch_and_add(&s->connect_sum_us, us);
				__sync_fetch_and_add(&s->connect_n, 1);
				atomic_max(&s->connect_max_us, us);
				if (cfg->slow_connect_ns &&
				    now - t->start_ns > cfg->slow_connect_ns)
					emit(cfg, TR_EV_SLOW_CONNECT, (__u32)us, &k, lp, rp);
			}
		} else {
			struct sk_times nt = {
				.est_ns = now, .key = k, .lport = lp, .rport = rp, .has_key = 1};

			bpf_map_update_elem(&tr_sk, &skp, &nt, BPF_ANY);
		}
		break;
	case TCP_FIN_WAIT1:
		if (oldstate == TCP_ESTABLISHED)
			__sync_fetch_and_add(&s->closed_local, 1);
		break;
	case TCP_CLOSE_WAIT:
		__sync_fetch_and_add(&s->closed_remote, 1);
		break;
	case TCP_CLOSE:
		if (oldstate == TCP_SYN_SENT) {
			__sync_fetch_and_add(&s->connect_fail, 1);
			emit(cfg, TR_EV_CONNECT_FAIL, 0, &k, lp, rp);
		}
		if (t && t->est_ns) {
			__sync_fetch_and_add(&s->life_sum_ms, (now - t->est_ns) / 1000000);
			__sync_fetch_and_add(&s->life_n, 1);
			t->est_ns = 0; /* counted once; the key stays for a reset after close */
		}
		break;
	}
	return 0;
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(tr_retransmit, const struct sock *sk)
{
	const struct tr_config *cfg = tr_cfg();
	struct tr_counters *c = tr_cnt();
	struct tr_peer_key k;
	__u16 lp, rp;

	if (c)
		c->retrans_all++;
	if (!cfg || !sk || !sock_key_any(sk, cfg, &k, &lp, &rp))
		return 0;
	struct tr_peer_stats *s = peer(&k);

	if (s)
		__sync_fetch_and_add(&s->retrans, 1);
	return 0;
}

static __always_inline int on_reset(const struct sock *sk, __u32 type)
{
	const struct tr_config *cfg = tr_cfg();
	struct tr_peer_key k;
	__u16 lp, rp;

	/* a reset for a segment that matched no socket has sk == NULL: not ours to report */
	if (!cfg || !sk || !sock_key_any(sk, cfg, &k, &lp, &rp))
		return 0;
	struct tr_peer_stats *s = peer(&k);

	if (s)
		__sync_fetch_and_add(type == TR_EV_RST_SENT ? &s->rst_sent : &s->rst_recv, 1);
	emit(cfg, type, BPF_CORE_READ(sk, __sk_common.skc_state), &k, lp, rp);
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int BPF_PROG(tr_send_reset, const struct sock *sk)
{
	return on_reset(sk, TR_EV_RST_SENT);
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tr_receive_reset, struct sock *sk)
{
	return on_reset(sk, TR_EV_RST_RECV);
}

/* Fires for every freed-with-reason skb on the host: one map lookup unless it belongs to a
 * TCP socket of ours. */
SEC("tp_btf/kfree_skb")
int BPF_PROG(tr_drop, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	const struct tr_config *cfg;
	struct sock *sk = BPF_CORE_READ(skb, sk);
	struct tr_peer_key k;
	__u16 lp, rp;

	if (!sk || reason <= SKB_DROP_REASON_NOT_SPECIFIED)
		return 0;
	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	cfg = tr_cfg();
	if (!cfg || !sock_key(sk, cfg, &k, &lp, &rp))
		return 0;
	__u32 r = reason < TR_DROP_REASONS ? reason : TR_DROP_REASONS - 1;
	__u64 *n = bpf_map_lookup_elem(&tr_drop_reasons, &r);

	if (n)
		(*n)++;
	struct tr_counters *c = tr_cnt();

	if (c)
		c->drops_tcp++;
	struct tr_peer_stats *s = peer(&k);

	if (s)
		__sync_fetch_and_add(&s->drops, 1);
	return 0;
}

static __always_inline void rtt_add(const struct tr_peer_key *k, __u64 us)
{
	struct tr_peer_stats *s;
	struct tr_counters *c;

	if (!us)
		return;
	s = peer(k);
	if (s) {
		__sync_fetch_and_add(&s->rtt_sum_us, us);
		__sync_fetch_and_add(&s->rtt_n, 1);
		atomic_max(&s->rtt_max_us, us);
	}
	c = tr_cnt();
	if (c)
		c->rtt_samples++;
}

/* RTT has no per-packet hook here, on purpose: BPF_SOCK_OPS_RTT_CB fires on every ACK and
 * was the tracer's whole per-request cost on keep-alive connections (~5 calls and ~2.5 µs of
 * BPF per proxied request). The smoothed RTT is a slow quantity, so it is read instead: once
 * per connection at ESTABLISHED (the handshake's sample), and for the connections that live
 * on by an iterator that userspace runs about once a second. The iterator walks tr_rtt, the
 * socket storage that sockops gives the gateway's sockets only (and the kernel frees with the
 * socket), so its cost follows the gateway's connections, not the host's TCP hash table. */
struct sk_rtt {
	struct tr_peer_key key;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sk_rtt);
} tr_rtt SEC(".maps");

/* sockops on the gateway's cgroup (on many hosts the root: every socket passes here): the
 * handshake's RTT of the gateway's sockets, and their tr_rtt entry. Per connection, never per
 * packet: no callback flag is set. */
SEC("sockops")
int tr_sockops(struct bpf_sock_ops *ops)
{
	const struct tr_config *cfg;
	struct bpf_sock *bsk = ops->sk;
	struct tcp_sock *tp;
	struct tr_peer_key k;
	struct sk_rtt *r;
	__u16 lp, rp;

	if (ops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    ops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	cfg = tr_cfg();
	if (!cfg || !bsk || !(tp = bpf_skc_to_tcp_sock(bsk)))
		return 1;
	if (!sock_key((const struct sock *)tp, cfg, &k, &lp, &rp))
		return 1;
	rtt_add(&k, ops->srtt_us >> 3); /* srtt is kept ×8 */
	r = bpf_sk_storage_get(&tr_rtt, bsk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (r)
		r->key = k;
	return 1;
}

/* Run by userspace (trace_rtt_poll) over tr_rtt: one RTT sample per established socket of the
 * gateway that sent or received within TR_RTT_ACTIVE_NS, so that an idle keep-alive
 * connection's old estimate does not stand in for the path's RTT. */
SEC("iter/bpf_sk_storage_map")
int tr_rtt_iter(struct bpf_iter__bpf_sk_storage_map *ctx)
{
	struct sock *sk = ctx->sk;
	struct sk_rtt *r = ctx->value;
	struct tcp_sock *tp;

	if (!sk || !r || !(tp = bpf_skc_to_tcp_sock(sk)))
		return 0;
	if (tp->inet_conn.icsk_inet.sk.__sk_common.skc_state != TCP_ESTABLISHED)
		return 0;
	/* tcp_mstamp: µs of CLOCK_MONOTONIC at the socket's last send or receive; signed, as
	 * another CPU may have stamped it after our clock read */
	if ((__s64)(bpf_ktime_get_ns() / 1000 - tp->tcp_mstamp) > (__s64)(TR_RTT_ACTIVE_NS / 1000))
		return 0;
	rtt_add(&r->key, tp->srtt_us >> 3);
	return 0;
}
