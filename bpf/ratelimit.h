/* ratelimit.h — the only contract between bpf/ratelimit.bpf.c and userspace/ratelimit.c.
 *
 * Fixed-width types only: the same bytes are read by the BPF program and by the loader, so
 * every struct here is laid out without implicit padding and never duplicated elsewhere.
 *
 * Addresses are carried as 16 bytes in network order: IPv6 as is, IPv4 in the first 4 bytes
 * (the rest zero). The family travels next to them, so an IPv4 /32 never collides with an
 * IPv6 prefix that happens to start with the same bytes.
 *
 * Time is CLOCK_MONOTONIC nanoseconds (bpf_ktime_get_ns, or the coarse clock where a policy
 * allows it: jiffies scaled to the same clock, one tick coarser), unless the test clock override in the
 * program's .bss is set, in which case that value is "now" for every packet.
 */
#ifndef REFLEX_BPF_RATELIMIT_H
#define REFLEX_BPF_RATELIMIT_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define RL_FAMILY_V4 4
#define RL_FAMILY_V6 6

/* rl_ports: ARRAY indexed by destination port (host order), value = RL_PORT_* bits. A port
 * whose value is 0 is not the gateway's: its packets pass untouched. */
#define RL_PORT_TCP 1u
#define RL_PORT_UDP 2u
#define RL_PORTS_MAX 65536

/* Keys of the LPM tries rl_allow_v4/v6, rl_deny_v4/v6 and rl_policy_v4/v6. prefixlen counts
 * bits of addr, as BPF_MAP_TYPE_LPM_TRIE requires. */
struct rl_lpm_v4 {
	__u32 prefixlen;
	__u8 addr[4];
};

struct rl_lpm_v6 {
	__u32 prefixlen;
	__u8 addr[16];
};

/* Value of rl_policy_v4/v6: the limits for sources under the prefix. The /0 (::/0) entry is
 * the default; a source that matches no entry is not limited at all.
 *
 * Each bucket is GCRA: interval_ns = 1e9 / rate, tolerance_ns = interval_ns * (burst - 1).
 * interval_ns == 0 means "no limit" for that bucket. bucket_plen is how many leading bits of
 * the source form one bucket (IPv4 32 by default, IPv6 64). */
struct rl_policy {
	__u64 syn_interval_ns; /* new TCP connections (SYN without ACK) */
	__u64 syn_tolerance_ns;
	__u64 pkt_interval_ns; /* every TCP/UDP packet to a gateway port, SYNs included */
	__u64 pkt_tolerance_ns;
	__u32 bucket_plen;
	__u32 gen;	  /* changes on every update of the entry */
	__u64 updated_ns; /* when it was updated (program clock) */
	__u32 flags;	  /* RL_POLICY_* */
	__u32 pad;	  /* 0 */
};

/* Every bucket of the policy spans (tolerance + interval) at least RL_COARSE_MIN_TICKS ticks of
 * the coarse clock, so its packets may be timed by bpf_ktime_get_coarse_ns: a clock that lags
 * by less than one tick moves at most one tick of credit, 1/RL_COARSE_MIN_TICKS of the burst
 * window, and the long-run rate stays exact. Set by userspace (rl_policy_set), which knows the
 * tick; RL_CFG_PRECISE_CLOCK overrides it. */
#define RL_POLICY_COARSE_OK 1u
#define RL_COARSE_MIN_TICKS 32

/* Key of rl_buckets (LRU_HASH) and rl_penalty (LRU_HASH): the source masked to the bucket_plen
 * of its policy. */
struct rl_key {
	__u8 family; /* RL_FAMILY_V4 or RL_FAMILY_V6 */
	__u8 plen;
	__u16 pad; /* 0 */
	__u8 addr[16];
};

/* Value of rl_buckets: two GCRA theoretical arrival times, each updated only by
 * compare-and-swap (LRU maps refuse spin locks), and the time of the last event sent for this
 * source. A TAT of 0 is a full bucket.
 *
 * gen is the rl_policy.gen the TATs were last reconciled with. When the policy changes, the
 * first packet brings each TAT down to at most updated_ns + tolerance + interval of the new
 * policy (an empty bucket at the moment of the change), so a more lenient policy applies at
 * once instead of after the debt run up under the old one, and a stricter one grants nothing. */
struct rl_bucket {
	__u64 syn_tat;
	__u64 pkt_tat;
	__u64 last_event_ns;
	__u32 gen;
	__u32 pad;
};

/* Value of rl_penalty: the source is dropped until until_ns. Written by userspace (the L7
 * layer's escalation); an expired entry is deleted by the program when next seen. */
struct rl_penalty {
	__u64 until_ns;
	__u64 last_event_ns;
};

/* rl_config: ARRAY with one element, read on every packet; changes apply to the next packet. */
#define RL_CFG_DRY_RUN 1u  /* count what would be dropped, drop nothing */
#define RL_CFG_CAP_DROP 2u /* over the new-bucket budget: drop the new source (else pass) */
/* The coarse clock (one tick, 1-4 ms) instead of the precise one: cheaper, and exact
 * enough when every tolerance is a few ticks or more. */
#define RL_CFG_COARSE_CLOCK 4u
/* The penalty box may hold entries (set by userspace on adding one, cleared by its sweep when
 * the box is empty): without it the program skips the penalty lookup. */
#define RL_CFG_PENALTY 8u
/* The allow (deny) list has entries: without the bit the program skips that lookup. Kept by
 * userspace, which is the only writer of the lists. */
#define RL_CFG_ALLOW 16u
#define RL_CFG_DENY 32u
/* Never the coarse clock, not even for a policy marked RL_POLICY_COARSE_OK (RL_CFG_COARSE_CLOCK
 * wins over it when both are set). */
#define RL_CFG_PRECISE_CLOCK 64u

/* rl_hint: ARRAY of RL_HINT_LISTS * RL_HINT_WORDS u64 words. Per list, one bit per /16 of the
 * address space (the first 16 bits of the address, IPv4 or IPv6): bit (a[0] << 8 | a[1]) of the
 * list's words is set while some entry of the list overlaps that /16. A clear bit proves the
 * source is not in the list for the price of an inlined array read, where an LPM or hash lookup
 * is a kernel call (15-25 ns on the VMs measured). Kept by userspace, the only writer of the
 * lists; for the penalty box, whose expired entries the program deletes, a bit may stay set
 * until rl_penalty_sweep (a wasted lookup, never a missed entry). List index: kind + family
 * offset (0 for IPv4, RL_HINT_V6 for IPv6). */
#define RL_HINT_ALLOW 0
#define RL_HINT_DENY 1
#define RL_HINT_PENALTY 2
#define RL_HINT_V6 3
#define RL_HINT_LISTS 6
#define RL_HINT_WORDS 1024 /* 65536 bits */
#define RL_HINT_ENTRIES (RL_HINT_LISTS * RL_HINT_WORDS)

struct rl_config {
	__u32 flags;		   /* RL_CFG_* */
	__u32 new_buckets_per_sec; /* per CPU; 0 = unlimited */
	__u32 events_per_sec;	   /* per CPU cap on ring-buffer events; 0 = no events */
	__u32 pad;		   /* 0 */
	__u64 event_interval_ns;   /* at most one event per source per interval */
};

/* Why a packet was (or in dry-run would have been) dropped. */
enum rl_reason {
	RL_REASON_NONE = 0,
	RL_REASON_DENY,	    /* source in the deny list */
	RL_REASON_PENALTY,  /* source in the penalty box */
	RL_REASON_SYN_RATE, /* over the SYN (new connection) rate */
	RL_REASON_PKT_RATE, /* over the packet rate */
	RL_REASON_CAP,	    /* new source over the per-CPU bucket budget (RL_CFG_CAP_DROP) */
	RL_REASON_MAX,
};

/* rl_counters: PERCPU_ARRAY with one element; userspace sums the CPUs. */
struct rl_counters {
	__u64 ignored;		      /* not TCP/UDP to a gateway port (incl. non-IP, fragments) */
	__u64 malformed;	      /* truncated or invalid headers: passed */
	__u64 allowed;		      /* source in the allow list: passed without limiting */
	__u64 passed;		      /* limited source, under its limits */
	__u64 unlimited;	      /* no policy matched, or no bucket configured: passed */
	__u64 dropped[RL_REASON_MAX]; /* enforced drops by reason */
	__u64 would_drop[RL_REASON_MAX]; /* dry-run: passed, would have been dropped */
	__u64 new_buckets;
	__u64 cap_hits;	    /* new source seen while the CPU's bucket budget was spent */
	__u64 cas_failures; /* CAS lost twice in a row: passed (fail open) */
	__u64 events_sent;
	__u64 events_lost;   /* ring buffer full */
	__u64 events_capped; /* suppressed by events_per_sec */
};

/* rl_events: RINGBUF records. */
struct rl_event {
	__u64 ts_ns;
	__u8 addr[16]; /* the bucket key's address (masked to plen) */
	__u8 family;
	__u8 plen;
	__u8 proto;   /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 dry_run; /* 1 if the packet was only counted */
	__u32 reason; /* enum rl_reason */
	__u32 ifindex;
	__u16 dport; /* host order */
	__u16 pad;
};

#endif
