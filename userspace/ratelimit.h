/* ratelimit.h — the kernel rate limiter (bpf/ratelimit.bpf.c) seen from userspace.
 *
 * rl_open() loads the programs and maps from the built-in skeleton; rl_attach() puts the
 * limiter on an interface (XDP on physical NICs, tcx elsewhere); the rest are typed views of
 * the maps. Policy, ports, lists and settings change live: the next packet sees them, nothing
 * is reloaded or reattached. rl_close() detaches everything; a crash detaches the link-based
 * attachments too (the kernel owns them through our fds), and rl_attach() removes a netlink tc
 * filter a crashed run left behind before it attaches.
 *
 * Needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON (without PERFMON the verifier's Spectre checks
 * reject the program). When rl_open() fails, why says so in one line, and the caller enforces
 * its limits in userspace instead.
 *
 * Not thread-safe: one owner thread calls these (map updates themselves are atomic per
 * element, so the data path never sees half an entry). Functions return 0 or -errno.
 */
#ifndef REFLEX_USERSPACE_RATELIMIT_H
#define REFLEX_USERSPACE_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "bpf/ratelimit.h"

struct rl;

struct rl_open_opts {
	/* rl_buckets LRU size; 0 = 262144. Split evenly over the CPUs (per-CPU LRU lists)
	 * when every possible CPU is present: a CPU evicts only among the buckets it created. */
	uint32_t max_buckets;
	uint32_t max_penalty; /* rl_penalty LRU size; 0 = 65536 */
};

/* Loads the limiter (no attachment, no port: it does nothing until rl_port_set and
 * rl_attach). Default settings: enforcing, events on (one per source per second, 1000/s per
 * CPU), new-bucket budget 100000 per CPU per second with new sources passed above it. */
int rl_open(struct rl **out, const struct rl_open_opts *opts, char *why, size_t why_len);
/* Detaches from every interface and frees everything. NULL-safe. */
void rl_close(struct rl *rl);

enum rl_attach_mode {
	RL_ATTACH_AUTO,	       /* native XDP on a physical NIC (falls back to tc), tc elsewhere */
	RL_ATTACH_XDP,	       /* native XDP only */
	RL_ATTACH_XDP_GENERIC, /* generic (skb) XDP: tests only */
	RL_ATTACH_TC,	       /* tcx link; netlink clsact filter on kernels without tcx */
};

/* What an attachment turned out to be. */
enum rl_attached {
	RL_ATTACHED_NONE,
	RL_ATTACHED_XDP,
	RL_ATTACHED_XDP_GENERIC,
	RL_ATTACHED_TCX,
	RL_ATTACHED_TC_NETLINK,
};

#define RL_MAX_IFACES 16

/* Attaches to ifindex (at most RL_MAX_IFACES, one attachment per interface). -EEXIST if this
 * rl is already attached there. */
int rl_attach(struct rl *rl, int ifindex, enum rl_attach_mode mode);
int rl_detach(struct rl *rl, int ifindex);
/* How ifindex is attached (RL_ATTACHED_NONE if not by this rl). */
enum rl_attached rl_attached_as(struct rl *rl, int ifindex);
const char *rl_attached_name(enum rl_attached a);

/* An address prefix: family RL_FAMILY_V4/V6, addr in network order (IPv4 in the first 4
 * bytes), plen in bits. */
struct rl_prefix {
	uint8_t family;
	uint8_t plen;
	uint8_t addr[16];
};

/* "192.0.2.0/24", "2001:db8::/32", or a bare address (a host prefix). Bits past plen must
 * be zero (like the kernel's routes): "10.1.2.3/8" is -EINVAL, so typos show. */
int rl_prefix_parse(const char *s, struct rl_prefix *out);
/* The host prefix of a socket address; an IPv4-mapped IPv6 address becomes IPv4. */
int rl_prefix_from_sockaddr(const struct sockaddr *sa, struct rl_prefix *out);
/* "192.0.2.0/24" into buf (at least 64 bytes). */
const char *rl_prefix_format(const struct rl_prefix *p, char *buf, size_t len);

/* The limits for sources under a prefix, per bucket. A rate of 0 means no limit on that
 * bucket; a burst of 0 means 1. */
struct rl_limits {
	uint32_t syn_rate; /* new TCP connections per second */
	uint32_t syn_burst;
	uint32_t pkt_rate; /* TCP/UDP packets per second (SYNs included) */
	uint32_t pkt_burst;
	uint32_t bucket_plen; /* source bits per bucket; 0 = 32 for IPv4, 64 for IPv6 */
};

/* Sets (adds or replaces) the policy of a prefix. 0.0.0.0/0 and ::/0 are the defaults;
 * sources that match no policy are not limited (but deny list and penalty box still apply). */
int rl_policy_set(struct rl *rl, const struct rl_prefix *p, const struct rl_limits *l);
int rl_policy_del(struct rl *rl, const struct rl_prefix *p);

/* Allow list (never limited) and deny list (always dropped); longest prefix wins within each
 * list, the allow list is consulted first. -ENOENT on deleting a missing entry. */
int rl_allow_add(struct rl *rl, const struct rl_prefix *p);
int rl_allow_del(struct rl *rl, const struct rl_prefix *p);
int rl_deny_add(struct rl *rl, const struct rl_prefix *p);
int rl_deny_del(struct rl *rl, const struct rl_prefix *p);

/* Penalty box: drops the source's bucket (its address masked to the bucket_plen of the policy
 * it falls under, so an IPv6 offender boxes its /64) for ttl_ns from now. Re-adding extends or
 * shortens. Policies changed later do not re-key existing entries. */
int rl_penalty_add(struct rl *rl, const struct rl_prefix *src, uint64_t ttl_ns);
int rl_penalty_del(struct rl *rl, const struct rl_prefix *src);
/* Deletes expired entries; when none is left the program stops looking at the box (saves a
 * hash lookup per packet). Call it now and then (e.g. every few seconds). Returns the number
 * of live entries or -errno. */
int rl_penalty_sweep(struct rl *rl);

/* Live penalty entries (at most max) with the time each has left; returns how many or -errno. */
struct rl_penalty_entry {
	struct rl_prefix src;
	uint64_t ttl_ns;
};
int rl_penalty_list(struct rl *rl, struct rl_penalty_entry *out, unsigned max);

/* Which ports are the gateway's: RL_PORT_TCP|RL_PORT_UDP bits; 0 stops limiting the port. */
int rl_port_set(struct rl *rl, uint16_t port, uint32_t protos);

struct rl_settings {
	bool dry_run;  /* count would-be drops, drop nothing */
	bool cap_drop; /* drop new sources over the bucket budget (else pass) */
	/* Clock of the buckets. By default each policy whose buckets span (tolerance + interval)
	 * at least RL_COARSE_MIN_TICKS ticks (128 ms at HZ=250, e.g. 20/s with a burst of 3) is
	 * timed by the coarse clock, which costs a few ns instead of 25-35 and is off by less than
	 * a tick, i.e. at most 1/32 of such a bucket; the others by the precise clock. */
	bool coarse_clock;	      /* the coarse clock for every policy */
	bool precise_clock;	      /* the precise clock for every policy (coarse_clock wins) */
	uint32_t new_buckets_per_sec; /* per CPU; 0 = unlimited */
	uint32_t events_per_sec;      /* per CPU; 0 = no events */
	uint64_t event_interval_ns;   /* per source */
};

int rl_settings_get(struct rl *rl, struct rl_settings *out);
int rl_settings_set(struct rl *rl, const struct rl_settings *s);

/* Sum of the per-CPU counters. */
int rl_counters_read(struct rl *rl, struct rl_counters *out);

/* Events: on_event runs inside rl_events_poll/consume for each struct rl_event. The fd is
 * pollable (epoll/io_uring POLL_ADD); after it is readable call rl_events_consume. */
int rl_events_start(struct rl *rl, void (*on_event)(void *ctx, const struct rl_event *e),
		    void *ctx);
int rl_events_fd(struct rl *rl);
/* Returns the number of events handled, or -errno. */
int rl_events_consume(struct rl *rl);
int rl_events_poll(struct rl *rl, int timeout_ms);

/* Test hooks. The program fds let tests run packets through BPF_PROG_TEST_RUN. */
int rl_prog_fd(struct rl *rl, bool tc);
/* Make now_ns the program's clock (0 returns to the real clock). */
void rl_clock_override(struct rl *rl, uint64_t now_ns);
/* The program's current notion of now: the override, else CLOCK_MONOTONIC. */
uint64_t rl_clock_now(struct rl *rl);

#endif
