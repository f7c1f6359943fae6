/* ratelimit.bpf.c — per-source rate limiting of traffic to the gateway's ports.
 *
 * One limiter (rl_limit) compiled into two programs: rl_xdp for native XDP on NICs whose driver
 * has it, rl_tc for tc ingress (tcx) everywhere else (lo, veth, containers). Only TCP and UDP
 * to a port marked in rl_ports is looked at; everything else passes untouched, and so does
 * anything the parser does not understand (fail open: this program must never black-hole
 * traffic it cannot read).
 *
 * Order of decisions for a gateway packet:
 *   allow list → pass; deny list → drop; policy (LPM, /0 = default) gives the bucket prefix;
 *   penalty box → drop; GCRA buckets (SYN/s, packets/s) → pass or drop.
 * Dry-run (rl_config) turns every drop into a counted pass.
 *
 * All maps, keys and values are declared in ratelimit.h, the kernel/user contract.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "ratelimit.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_P_8021Q 0x8100
#define ETH_P_8021AD 0x88A8

#define TC_ACT_UNSPEC (-1) /* also TCX_NEXT: let later programs in the chain decide */
#define TC_ACT_SHOT 2

#define NSEC_PER_SEC 1000000000ull

/* The tc program pulls this much into the linear area when headers are not there yet. */
#define RL_PULL_LEN 128

#define RL_V6_EXT_MAX 4 /* IPv6 extension headers walked before giving up (pass) */

char LICENSE[] SEC("license") = "GPL";

/* Test clock: when non-zero, the program's "now" for every packet. Only tests set it. */
volatile __u64 rl_clock_override = 0;

/* The tick, from the running kernel's config (libbpf reads /proc/config.gz or /boot/config-*);
 * 0 when neither is there, and the coarse clock is then bpf_ktime_get_coarse_ns. */
extern unsigned int CONFIG_HZ __kconfig __weak;

/* The coarse clock as jiffies * tick + off: the verifier inlines bpf_jiffies64 into one load,
 * where bpf_ktime_get_coarse_ns is a helper call (15 ns of the limited path's 85 on the VMs
 * measured, most of it the return thunk of the SRSO mitigation). The kernel advances jiffies
 * and the coarse clock in the same tick handler, in steps of the same TICK_NSEC, so their
 * difference is a constant: the first coarse reading measures it (to within one tick), then
 * rl_jclock_tick_ns is published. Written by whichever CPU gets there first; all measure the same. */
__u64 rl_jclock_off = 0;
__u64 rl_jclock_tick_ns = 0;

static __always_inline __u64 rl_coarse_ns(void)
{
	__u64 tick = *(volatile __u64 *)&rl_jclock_tick_ns, now;

	if (tick)
		return bpf_jiffies64() * tick + *(volatile __u64 *)&rl_jclock_off;
	now = bpf_ktime_get_coarse_ns();
	if (CONFIG_HZ) {
		tick = (NSEC_PER_SEC + CONFIG_HZ / 2) / CONFIG_HZ; /* the kernel's TICK_NSEC */
		*(volatile __u64 *)&rl_jclock_off = now - bpf_jiffies64() * tick;
		/* off before the tick: a reader that sees the tick sees off (x86 keeps store
		 * order; the CAS orders it elsewhere) */
		__sync_val_compare_and_swap(&rl_jclock_tick_ns, 0, tick);
	}
	return now;
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RL_PORTS_MAX);
	__type(key, __u32);
	__type(value, __u32);
} rl_ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rl_config);
} rl_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct rl_lpm_v4);
	__type(value, __u32);
} rl_allow_v4 SEC(".maps"), rl_deny_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct rl_lpm_v6);
	__type(value, __u32);
} rl_allow_v6 SEC(".maps"), rl_deny_v6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct rl_lpm_v4);
	__type(value, struct rl_policy);
} rl_policy_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct rl_lpm_v6);
	__type(value, struct rl_policy);
} rl_policy_v6 SEC(".maps");

/* Sizes are defaults; the loader may change them before load. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct rl_key);
	__type(value, struct rl_bucket);
} rl_buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct rl_key);
	__type(value, struct rl_penalty);
} rl_penalty SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rl_counters);
} rl_counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, RL_HINT_ENTRIES);
	__type(key, __u32);
	__type(value, __u64);
} rl_hint SEC(".maps");

/* Per-CPU one-second window for the new-bucket and event budgets. Private to this file. */
struct rl_cpu_window {
	__u64 start_ns;
	__u32 new_buckets;
	__u32 events;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rl_cpu_window);
} rl_cpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} rl_events SEC(".maps");

enum rl_parse_result {
	RL_PARSE_OK,
	RL_PARSE_IGNORE,
	RL_PARSE_MALFORMED,
};

struct rl_pkt {
	struct rl_key key;
	__u16 dport;
	__u8 proto;
	__u8 syn;
};

struct rl_vlan {
	__be16 tci;
	__be16 proto;
};

struct rl_v6_ext {
	__u8 nexthdr;
	__u8 hdrlen;
};

struct rl_v6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 id;
};

/* The precise clock costs 25-35 ns a read on the VMs measured (a quarter of the limited path);
 * the coarse one a few. A source without a policy only meets the penalty box, whose TTLs are
 * seconds: coarse too. */
static __always_inline __u64 rl_now(const struct rl_config *cfg, const struct rl_policy *pol)
{
	__u64 t = rl_clock_override;

	if (t)
		return t;
	if ((cfg->flags & RL_CFG_COARSE_CLOCK) ||
	    (!(cfg->flags & RL_CFG_PRECISE_CLOCK) && (!pol || (pol->flags & RL_POLICY_COARSE_OK))))
		return rl_coarse_ns();
	return bpf_ktime_get_ns();
}

/* False when the list cannot hold addr (its /16 has no entry), see rl_hint in ratelimit.h. */
static __always_inline bool rl_hinted(__u32 list, const __u8 *addr)
{
	__u32 top = (__u32)addr[0] << 8 | addr[1];
	__u32 i = list * RL_HINT_WORDS + (top >> 6);
	__u64 *w = bpf_map_lookup_elem(&rl_hint, &i);

	return w && ((*w >> (top & 63)) & 1);
}

/* Fills p with the source address, destination port, protocol and SYN bit. Never reads past
 * data_end; the verifier holds us to that. */
static __always_inline int rl_parse(void *data, void *data_end, struct rl_pkt *p)
{
	struct ethhdr *eth = data;
	__u64 off = sizeof(*eth);
	__u16 h_proto;
	__u8 l4;

	if ((void *)(eth + 1) > data_end)
		return RL_PARSE_MALFORMED;
	h_proto = eth->h_proto;
	if (h_proto == bpf_htons(ETH_P_8021Q) || h_proto == bpf_htons(ETH_P_8021AD)) {
		struct rl_vlan *vh = data + off;

		if ((void *)(vh + 1) > data_end)
			return RL_PARSE_MALFORMED;
		h_proto = vh->proto;
		off += sizeof(*vh);
	}

	if (h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = data + off;
		__u32 ihl;

		if ((void *)(ip + 1) > data_end)
			return RL_PARSE_MALFORMED;
		ihl = ip->ihl;
		if (ip->version != 4 || ihl < 5)
			return RL_PARSE_MALFORMED;
		/* A later fragment carries no ports; the first one is judged. */
		if (ip->frag_off & bpf_htons(0x1fff))
			return RL_PARSE_IGNORE;
		l4 = ip->protocol;
		p->key.family = RL_FAMILY_V4;
		__builtin_memcpy(p->key.addr, &ip->saddr, 4);
		off += ihl * 4;
	} else if (h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = data + off;

		if ((void *)(ip6 + 1) > data_end)
			return RL_PARSE_MALFORMED;
		if (ip6->version != 6)
			return RL_PARSE_MALFORMED;
		l4 = ip6->nexthdr;
		p->key.family = RL_FAMILY_V6;
		__builtin_memcpy(p->key.addr, &ip6->saddr, 16);
		off += sizeof(*ip6);
#pragma unroll
		for (int i = 0; i < RL_V6_EXT_MAX; i++) {
			if (l4 == IPPROTO_TCP || l4 == IPPROTO_UDP)
				break;
			if (l4 == 0 /* hop-by-hop */ || l4 == 43 /* routing */ ||
			    l4 == 60 /* destination options */) {
				struct rl_v6_ext *h = data + off;

				if ((void *)(h + 1) > data_end)
					return RL_PARSE_MALFORMED;
				l4 = h->nexthdr;
				off += ((__u64)h->hdrlen + 1) * 8;
			} else if (l4 == 44 /* fragment */) {
				struct rl_v6_frag *f = data + off;

				if ((void *)(f + 1) > data_end)
					return RL_PARSE_MALFORMED;
				if (f->frag_off & bpf_htons(0xfff8))
					return RL_PARSE_IGNORE;
				l4 = f->nexthdr;
				off += sizeof(*f);
			} else {
				return RL_PARSE_IGNORE;
			}
		}
	} else {
		return RL_PARSE_IGNORE;
	}

	if (l4 == IPPROTO_TCP) {
		struct tcphdr *th = data + off;

		if ((void *)(th + 1) > data_end)
			return RL_PARSE_MALFORMED;
		p->dport = bpf_ntohs(th->dest);
		p->syn = th->syn && !th->ack;
	} else if (l4 == IPPROTO_UDP) {
		struct udphdr *uh = data + off;

		if ((void *)(uh + 1) > data_end)
			return RL_PARSE_MALFORMED;
		p->dport = bpf_ntohs(uh->dest);
		p->syn = 0;
	} else {
		return RL_PARSE_IGNORE;
	}
	p->proto = l4;
	return RL_PARSE_OK;
}

/* Zeroes every bit of the key's address past plen (network order). */
static __always_inline void rl_mask(struct rl_key *k, __u32 plen)
{
	__u64 w[2];

	if (k->family == RL_FAMILY_V4) {
		__u32 a;

		if (plen > 32)
			plen = 32;
		__builtin_memcpy(&a, k->addr, 4);
		a &= plen ? bpf_htonl(~0u << (32 - plen)) : 0;
		__builtin_memcpy(k->addr, &a, 4);
		k->plen = plen;
		return;
	}
	if (plen > 128)
		plen = 128;
	__builtin_memcpy(w, k->addr, 16);
	if (plen <= 64) {
		w[1] = 0;
		w[0] &= plen ? bpf_cpu_to_be64(~0ull << (64 - plen)) : 0;
	} else if (plen < 128) {
		w[1] &= bpf_cpu_to_be64(~0ull << (128 - plen));
	}
	__builtin_memcpy(k->addr, w, 16);
	k->plen = plen;
}

/* Opens a new one-second window when the current one is over, or when the clock went back by
 * more than the slack: by less it is one precise and one coarse reading of the same instant
 * (policies may use either clock), which must not reset the budget. */
#define RL_WINDOW_SLACK_NS (NSEC_PER_SEC / 8)

static __always_inline struct rl_cpu_window *rl_window(__u64 now)
{
	__u32 zero = 0;
	struct rl_cpu_window *w = bpf_map_lookup_elem(&rl_cpu, &zero);

	if (w && (now >= w->start_ns ? now - w->start_ns >= NSEC_PER_SEC
				     : w->start_ns - now > RL_WINDOW_SLACK_NS)) {
		w->start_ns = now;
		w->new_buckets = 0;
		w->events = 0;
	}
	return w;
}

/* GCRA: conforming if max(tat, now) - now <= tolerance; then tat becomes max(tat, now) +
 * interval (so at most burst = tolerance / interval + 1 back-to-back packets conform). Returns 1 when over the limit (tat unchanged), 0 when conforming. A CAS lost
 * twice in a row (heavy contention on one source) passes the packet and is counted. */
static __always_inline int rl_gcra(__u64 *tatp, __u64 now, __u64 interval, __u64 tolerance,
				   struct rl_counters *c)
{
#pragma unroll
	for (int i = 0; i < 2; i++) {
		__u64 tat = *(volatile __u64 *)tatp;
		__u64 base = tat > now ? tat : now;

		if (base - now > tolerance)
			return 1;
		if (__sync_val_compare_and_swap(tatp, tat, base + interval) == tat)
			return 0;
	}
	c->cas_failures++;
	return 0;
}

/* Caps a TAT written under an older policy (see struct rl_bucket). */
static __always_inline void rl_rebase(__u64 *tatp, __u64 max)
{
	__u64 tat = *(volatile __u64 *)tatp;

	if (tat > max)
		__sync_val_compare_and_swap(tatp, tat, max);
}

/* One event per source per event_interval_ns (the CAS on *lastp elects one CPU), and at most
 * events_per_sec per CPU, so a flood cannot flood the ring. */
static __always_inline void rl_event(__u64 *lastp, const struct rl_pkt *p, __u32 reason,
				     __u32 ifindex, __u64 now, const struct rl_config *cfg,
				     struct rl_counters *c)
{
	struct rl_cpu_window *w;
	struct rl_event *e;
	__u64 last;

	if (!cfg->events_per_sec)
		return;
	last = *(volatile __u64 *)lastp;
	if (last && now >= last && now - last < cfg->event_interval_ns)
		return;
	if (__sync_val_compare_and_swap(lastp, last, now) != last)
		return;
	w = rl_window(now);
	if (!w)
		return;
	if (w->events >= cfg->events_per_sec) {
		c->events_capped++;
		return;
	}
	w->events++;
	e = bpf_ringbuf_reserve(&rl_events, sizeof(*e), 0);
	if (!e) {
		c->events_lost++;
		return;
	}
	e->ts_ns = now;
	__builtin_memcpy(e->addr, p->key.addr, 16);
	e->family = p->key.family;
	e->plen = p->key.plen;
	e->proto = p->proto;
	e->dry_run = (cfg->flags & RL_CFG_DRY_RUN) ? 1 : 0;
	e->reason = reason;
	e->ifindex = ifindex;
	e->dport = p->dport;
	e->pad = 0;
	bpf_ringbuf_submit(e, 0);
	c->events_sent++;
}

/* Returns 1 to drop the packet, 0 to pass it. */
static __always_inline int rl_limit(void *data, void *data_end, __u32 ifindex)
{
	__u32 zero = 0, port, plen, reason;
	struct rl_counters *c;
	struct rl_config *cfg;
	struct rl_policy *pol;
	struct rl_penalty *pen;
	struct rl_bucket *b;
	struct rl_pkt p = {};
	__u64 *lastp = NULL;
	__u32 *port_flags;
	__u64 now;
	int r;

	c = bpf_map_lookup_elem(&rl_counters, &zero);
	if (!c)
		return 0;
	r = rl_parse(data, data_end, &p);
	if (r != RL_PARSE_OK) {
		if (r == RL_PARSE_MALFORMED)
			c->malformed++;
		else
			c->ignored++;
		return 0;
	}
	port = p.dport;
	port_flags = bpf_map_lookup_elem(&rl_ports, &port);
	if (!port_flags || !(*port_flags & (p.proto == IPPROTO_TCP ? RL_PORT_TCP : RL_PORT_UDP))) {
		c->ignored++;
		return 0;
	}
	cfg = bpf_map_lookup_elem(&rl_config, &zero);
	if (!cfg)
		return 0;

	if (p.key.family == RL_FAMILY_V4) {
		struct rl_lpm_v4 k = {.prefixlen = 32};

		__builtin_memcpy(k.addr, p.key.addr, 4);
		if ((cfg->flags & RL_CFG_ALLOW) && rl_hinted(RL_HINT_ALLOW, k.addr) &&
		    bpf_map_lookup_elem(&rl_allow_v4, &k)) {
			c->allowed++;
			return 0;
		}
		if ((cfg->flags & RL_CFG_DENY) && rl_hinted(RL_HINT_DENY, k.addr) &&
		    bpf_map_lookup_elem(&rl_deny_v4, &k)) {
			reason = RL_REASON_DENY;
			now = 0;
			goto drop;
		}
		pol = bpf_map_lookup_elem(&rl_policy_v4, &k);
		plen = pol ? pol->bucket_plen : 32;
	} else {
		struct rl_lpm_v6 k = {.prefixlen = 128};

		__builtin_memcpy(k.addr, p.key.addr, 16);
		if ((cfg->flags & RL_CFG_ALLOW) && rl_hinted(RL_HINT_V6 + RL_HINT_ALLOW, k.addr) &&
		    bpf_map_lookup_elem(&rl_allow_v6, &k)) {
			c->allowed++;
			return 0;
		}
		if ((cfg->flags & RL_CFG_DENY) && rl_hinted(RL_HINT_V6 + RL_HINT_DENY, k.addr) &&
		    bpf_map_lookup_elem(&rl_deny_v6, &k)) {
			reason = RL_REASON_DENY;
			now = 0;
			goto drop;
		}
		pol = bpf_map_lookup_elem(&rl_policy_v6, &k);
		plen = pol ? pol->bucket_plen : 64;
	}
	rl_mask(&p.key, plen);
	now = rl_now(cfg, pol);

	pen = (cfg->flags & RL_CFG_PENALTY) &&
			      rl_hinted((p.key.family == RL_FAMILY_V4 ? 0 : RL_HINT_V6) +
						RL_HINT_PENALTY,
					p.key.addr)
		      ? bpf_map_lookup_elem(&rl_penalty, &p.key)
		      : NULL;
	if (pen) {
		if (now < pen->until_ns) {
			reason = RL_REASON_PENALTY;
			lastp = &pen->last_event_ns;
			goto drop;
		}
		bpf_map_delete_elem(&rl_penalty, &p.key);
	}
	if (!pol || (!pol->syn_interval_ns && !pol->pkt_interval_ns)) {
		c->unlimited++;
		return 0;
	}

	b = bpf_map_lookup_elem(&rl_buckets, &p.key);
	if (!b) {
		struct rl_cpu_window *w = rl_window(now);
		struct rl_bucket nb = {};

		if (!w)
			return 0;
		if (cfg->new_buckets_per_sec && w->new_buckets >= cfg->new_buckets_per_sec) {
			c->cap_hits++;
			if (cfg->flags & RL_CFG_CAP_DROP) {
				reason = RL_REASON_CAP;
				goto drop;
			}
			c->unlimited++;
			return 0;
		}
		/* The first packet of a source always conforms (burst >= 1). */
		if (p.syn && pol->syn_interval_ns)
			nb.syn_tat = now + pol->syn_interval_ns;
		if (pol->pkt_interval_ns)
			nb.pkt_tat = now + pol->pkt_interval_ns;
		nb.gen = pol->gen;
		if (!bpf_map_update_elem(&rl_buckets, &p.key, &nb, BPF_NOEXIST)) {
			w->new_buckets++;
			c->new_buckets++;
			c->passed++;
			return 0;
		}
		/* Another CPU created it first: account against its bucket. */
		b = bpf_map_lookup_elem(&rl_buckets, &p.key);
		if (!b) {
			c->passed++;
			return 0;
		}
	}
	if (b->gen != pol->gen) {
		__u32 g = b->gen;

		/* One CPU reconciles; the others already see the new gen and go on. */
		if (__sync_val_compare_and_swap(&b->gen, g, pol->gen) == g) {
			rl_rebase(&b->syn_tat,
				  pol->updated_ns + pol->syn_tolerance_ns + pol->syn_interval_ns);
			rl_rebase(&b->pkt_tat,
				  pol->updated_ns + pol->pkt_tolerance_ns + pol->pkt_interval_ns);
		}
	}
	if (p.syn && pol->syn_interval_ns &&
	    rl_gcra(&b->syn_tat, now, pol->syn_interval_ns, pol->syn_tolerance_ns, c)) {
		reason = RL_REASON_SYN_RATE;
		lastp = &b->last_event_ns;
		goto drop;
	}
	if (pol->pkt_interval_ns &&
	    rl_gcra(&b->pkt_tat, now, pol->pkt_interval_ns, pol->pkt_tolerance_ns, c)) {
		reason = RL_REASON_PKT_RATE;
		lastp = &b->last_event_ns;
		goto drop;
	}
	c->passed++;
	return 0;

drop:
	if (reason >= RL_REASON_MAX)
		reason = RL_REASON_NONE;
	if (lastp)
		rl_event(lastp, &p, reason, ifindex, now, cfg, c);
	if (cfg->flags & RL_CFG_DRY_RUN) {
		c->would_drop[reason]++;
		return 0;
	}
	c->dropped[reason]++;
	return 1;
}

SEC("xdp")
int rl_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;

	return rl_limit(data, data_end, ctx->ingress_ifindex) ? XDP_DROP : XDP_PASS;
}

SEC("tc")
int rl_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	/* Headers of a received skb are normally linear; pull them when they are not. */
	if (data + RL_PULL_LEN > data_end && skb->len > data_end - data) {
		bpf_skb_pull_data(skb, skb->len < RL_PULL_LEN ? skb->len : RL_PULL_LEN);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	return rl_limit(data, data_end, skb->ifindex) ? TC_ACT_SHOT : TC_ACT_UNSPEC;
}
