/* test_ratelimit.c — the kernel rate limiter, through BPF_PROG_TEST_RUN on crafted packets
 * (with the program's clock set by the test) and live over a veth pair between two network
 * namespaces that the test creates and always deletes.
 *
 * Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN for namespaces); prints SKIP
 * with the reason otherwise. Per-packet costs are printed as "# perf" lines for information
 * and never gate anything.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "tests/lib/test.h"
#include "userspace/loader.h"
#include "userspace/ratelimit.h"

#define NS 1000000000ull
#define MS 1000000ull
#define T0 (1000 * NS) /* test clock start: far from 0, which means "real clock" */

#define GW_PORT 8080
#define OTHER_PORT 9090

#define TH_SYN 0x02
#define TH_ACK 0x10

#define XDP_DROP_RC 1
#define XDP_PASS_RC 2
#define TC_SHOT_RC 2
#define TC_NEXT_RC (-1)

/* ---- packets ---------------------------------------------------------------------------- */

struct pkt_spec {
	const char *src; /* IPv4 or IPv6 literal */
	uint16_t dport;
	uint8_t proto; /* IPPROTO_TCP (default) or IPPROTO_UDP */
	uint8_t flags; /* TCP flags */
	bool vlan;
	bool v4_opts;	  /* 4 bytes of IPv4 options (IHL 6) */
	bool v6_hopopts;  /* one hop-by-hop extension header before L4 */
	uint16_t v6_frag; /* fragment offset (in 8-byte units) in an IPv6 fragment header */
};

struct pkt {
	uint8_t b[128];
	size_t len;
};

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static struct pkt pkt_build(struct pkt_spec s)
{
	struct pkt k;
	uint8_t proto = s.proto ? s.proto : IPPROTO_TCP;
	size_t l4len = proto == IPPROTO_TCP ? 20 : 8, off = 12;
	bool v6 = strchr(s.src, ':') != NULL;

	memset(&k, 0, sizeof(k));
	memcpy(k.b, "\x02\x00\x00\x00\x00\x01\x02\x00\x00\x00\x00\x02", 12);
	if (s.vlan) {
		put16(k.b + off, 0x8100);
		put16(k.b + off + 2, 7);
		off += 4;
	}
	put16(k.b + off, v6 ? 0x86dd : 0x0800);
	off += 2;
	if (!v6) {
		size_t ihl = s.v4_opts ? 24 : 20;

		k.b[off] = (uint8_t)(0x40 | ihl / 4);
		put16(k.b + off + 2, (uint16_t)(ihl + l4len));
		k.b[off + 8] = 64;
		k.b[off + 9] = proto;
		inet_pton(AF_INET, s.src, k.b + off + 12);
		inet_pton(AF_INET, "10.0.0.1", k.b + off + 16);
		if (s.v4_opts)
			memset(k.b + off + 20, 1, 4); /* NOPs */
		off += ihl;
	} else {
		size_t ext = (s.v6_hopopts ? 8 : 0) + (s.v6_frag ? 8 : 0);

		k.b[off] = 0x60;
		put16(k.b + off + 4, (uint16_t)(ext + l4len));
		k.b[off + 6] = s.v6_hopopts ? 0 : s.v6_frag ? 44 : proto;
		k.b[off + 7] = 64;
		inet_pton(AF_INET6, s.src, k.b + off + 8);
		inet_pton(AF_INET6, "fd00::1", k.b + off + 24);
		off += 40;
		if (s.v6_hopopts) {
			k.b[off] = s.v6_frag ? 44 : proto;
			k.b[off + 1] = 0; /* 8 bytes */
			off += 8;
		}
		if (s.v6_frag) {
			k.b[off] = proto;
			put16(k.b + off + 2, (uint16_t)(s.v6_frag << 3));
			off += 8;
		}
	}
	put16(k.b + off, 40000);
	put16(k.b + off + 2, s.dport ? s.dport : GW_PORT);
	if (proto == IPPROTO_TCP) {
		k.b[off + 12] = 5 << 4;
		k.b[off + 13] = s.flags;
	} else {
		put16(k.b + off + 4, 8);
	}
	k.len = off + l4len;
	return k;
}

#define PKT(...) pkt_build((struct pkt_spec){__VA_ARGS__})

/* ---- running packets -------------------------------------------------------------------- */

static struct rl *rl;
static bool use_tc; /* which flavour run_pkt() drives */

/* 1 dropped, 0 passed, -1 error (reported). */
static int run_raw(const void *data, size_t len)
{
	LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = data, .data_size_in = (uint32_t)len,
		    .repeat = 1);
	int err = bpf_prog_test_run_opts(rl_prog_fd(rl, use_tc), &o);
	int rc = (int)o.retval;

	if (err) {
		test_fail(__FILE__, __LINE__, "prog_test_run: %s", strerror(errno));
		return -1;
	}
	if (use_tc)
		return rc == TC_SHOT_RC ? 1 : rc == TC_NEXT_RC ? 0 : -1;
	return rc == XDP_DROP_RC ? 1 : rc == XDP_PASS_RC ? 0 : -1;
}

static int run_pkt(struct pkt k)
{
	return run_raw(k.b, k.len);
}

/* Runs n copies, returns how many were dropped. */
static int run_n(struct pkt k, int n)
{
	int dropped = 0;

	for (int i = 0; i < n; i++)
		dropped += run_pkt(k) == 1;
	return dropped;
}

static struct rl_counters counters(void)
{
	struct rl_counters c;

	if (rl_counters_read(rl, &c))
		memset(&c, 0xff, sizeof(c));
	return c;
}

static struct rl_prefix pfx(const char *s)
{
	struct rl_prefix p;

	if (rl_prefix_parse(s, &p))
		test_fail(__FILE__, __LINE__, "bad prefix %s", s);
	return p;
}

static void set_policy(const char *prefix, struct rl_limits l)
{
	struct rl_prefix p = pfx(prefix);
	int err = rl_policy_set(rl, &p, &l);

	CHECK_MSG(!err, "rl_policy_set(%s): %s", prefix, strerror(-err));
}

static char open_why[256];

/* A fresh limiter for one test: gateway port GW_PORT (TCP), test clock at T0. */
static bool setup(const char *name, bool tc)
{
	struct rl_open_opts o = {.max_buckets = 4096, .max_penalty = 1024};
	int err;

	rl_close(rl);
	rl = NULL;
	err = rl_open(&rl, &o, open_why, sizeof(open_why));
	if (err) {
		test_skip(name, "%s", open_why);
		return false;
	}
	use_tc = tc;
	test_begin(name);
	CHECK_INT(rl_port_set(rl, GW_PORT, RL_PORT_TCP), 0);
	rl_clock_override(rl, T0);
	return true;
}

/* ---- prog_test_run tests ---------------------------------------------------------------- */

static void test_gcra_refill(bool tc)
{
	struct pkt syn = PKT(.src = "192.0.2.10", .flags = TH_SYN);
	struct rl_counters c;

	if (!setup(tc ? "gcra_refill_tc" : "gcra_refill_xdp", tc))
		return;
	/* 10/s: one token per 100 ms, burst 5. */
	set_policy("0.0.0.0/0", (struct rl_limits){.syn_rate = 10, .syn_burst = 5});
	CHECK_INT(run_n(syn, 5), 0);
	CHECK_INT(run_pkt(syn), 1);
	rl_clock_override(rl, T0 + 50 * MS); /* half a token: still empty */
	CHECK_INT(run_pkt(syn), 1);
	rl_clock_override(rl, T0 + 100 * MS); /* exactly one token */
	CHECK_INT(run_pkt(syn), 0);
	CHECK_INT(run_pkt(syn), 1);
	rl_clock_override(rl, T0 + 350 * MS); /* 2.5 tokens since the last conforming SYN */
	CHECK_INT(run_n(syn, 3), 1);
	rl_clock_override(rl, T0 + 10 * NS); /* long idle: refilled to the burst, not beyond */
	CHECK_INT(run_n(syn, 5), 0);
	CHECK_INT(run_pkt(syn), 1);
	c = counters();
	CHECK_INT(c.passed, 5 + 1 + 2 + 5);
	CHECK_INT(c.dropped[RL_REASON_SYN_RATE], 1 + 1 + 1 + 1 + 1);
	CHECK_INT(c.new_buckets, 1);
	test_end();
}

static void test_syn_vs_packets(void)
{
	struct pkt syn = PKT(.src = "192.0.2.20", .flags = TH_SYN);
	struct pkt ack = PKT(.src = "192.0.2.20", .flags = TH_ACK);
	struct pkt synack = PKT(.src = "192.0.2.20", .flags = TH_SYN | TH_ACK);
	struct pkt syn2 = PKT(.src = "192.0.2.21", .flags = TH_SYN);
	struct pkt ack2 = PKT(.src = "192.0.2.21", .flags = TH_ACK);
	struct rl_counters c;

	if (!setup("syn_vs_packets", false))
		return;
	/* SYN limit only: ACKs and SYN-ACKs never touch the SYN bucket. */
	set_policy("192.0.2.20/32", (struct rl_limits){.syn_rate = 1, .syn_burst = 1});
	CHECK_INT(run_pkt(syn), 0);
	CHECK_INT(run_pkt(syn), 1);
	CHECK_INT(run_n(ack, 20), 0);
	CHECK_INT(run_n(synack, 5), 0);
	/* Packet limit 3/s burst 3 and SYN limit 10/s burst 10: SYNs count as packets too. */
	set_policy(
		"192.0.2.21/32",
		(struct rl_limits){.syn_rate = 10, .syn_burst = 10, .pkt_rate = 3, .pkt_burst = 3});
	CHECK_INT(run_pkt(syn2), 0);
	CHECK_INT(run_n(ack2, 2), 0);
	CHECK_INT(run_pkt(ack2), 1);
	CHECK_INT(run_pkt(syn2), 1);
	c = counters();
	CHECK_INT(c.dropped[RL_REASON_SYN_RATE], 1);
	CHECK_INT(c.dropped[RL_REASON_PKT_RATE], 2);
	test_end();
}

static void test_policy_change(void)
{
	struct pkt syn = PKT(.src = "192.0.2.25", .flags = TH_SYN);

	if (!setup("policy_change_live", false))
		return;
	set_policy("0.0.0.0/0", (struct rl_limits){.syn_rate = 1, .syn_burst = 10});
	CHECK_INT(run_n(syn, 11), 1); /* the bucket now owes 10 s at the old rate */
	/* More lenient: the debt is capped to an empty bucket of the new policy at the time of
	 * the change, so its burst is back after burst / rate = 100 ms, not after 10 s. */
	set_policy("0.0.0.0/0", (struct rl_limits){.syn_rate = 100, .syn_burst = 10});
	CHECK_INT(run_pkt(syn), 1);
	rl_clock_override(rl, T0 + 10 * MS);
	CHECK_INT(run_pkt(syn), 0);
	CHECK_INT(run_pkt(syn), 1);
	rl_clock_override(rl, T0 + 110 * MS);
	CHECK_INT(run_n(syn, 11), 1);
	/* Stricter: applies to the next packet as is. */
	set_policy("0.0.0.0/0", (struct rl_limits){.syn_rate = 1, .syn_burst = 1});
	rl_clock_override(rl, T0 + 10 * NS);
	CHECK_INT(run_pkt(syn), 0);
	CHECK_INT(run_pkt(syn), 1);
	test_end();
}

static void test_bucket_prefixes(void)
{
	if (!setup("bucket_prefixes", false))
		return;
	set_policy("0.0.0.0/0", (struct rl_limits){.syn_rate = 1, .syn_burst = 1});
	set_policy("::/0", (struct rl_limits){.syn_rate = 1, .syn_burst = 1});
	set_policy("198.51.100.0/24",
		   (struct rl_limits){.syn_rate = 1, .syn_burst = 2, .bucket_plen = 24});
	/* IPv4 /32 by default: two hosts, two buckets. */
	CHECK_INT(run_pkt(PKT(.src = "203.0.113.1", .flags = TH_SYN)), 0);
	CHECK_INT(run_pkt(PKT(.src = "203.0.113.2", .flags = TH_SYN)), 0);
	CHECK_INT(run_pkt(PKT(.src = "203.0.113.1", .flags = TH_SYN)), 1);
	/* A /24 bucket: hosts of the /24 share one. */
	CHECK_INT(run_pkt(PKT(.src = "198.51.100.1", .flags = TH_SYN)), 0);
	CHECK_INT(run_pkt(PKT(.src = "198.51.100.2", .flags = TH_SYN)), 0);
	CHECK_INT(run_pkt(PKT(.src = "198.51.100.3", .flags = TH_SYN)), 1);
	/* IPv6 /64 by default: same /64 shares, the next /64 does not. */
	CHECK_INT(run_pkt(PKT(.src = "2001:db8:0:1::1", .flags = TH_SYN)), 0);
	CHECK_INT(run_pkt(PKT(.src = "2001:db8:0:1:ffff::2", .flags = TH_SYN)), 1);
	CHECK_INT(run_pkt(PKT(.src = "2001:db8:0:2::1", .flags = TH_SYN)), 0);
	/* The same source behind a VLAN tag, with IPv4 options, after an IPv6 extension header. */
	CHECK_INT(run_pkt(PKT(.src = "203.0.113.2", .flags = TH_SYN, .vlan = true)), 1);
	CHECK_INT(run_pkt(PKT(.src = "203.0.113.2", .flags = TH_SYN, .v4_opts = true)), 1);
	CHECK_INT(run_pkt(PKT(.src = "203.0.113.2", .flags = TH_ACK, .v4_opts = true,
			      .dport = OTHER_PORT)),
		  0);
	CHECK_INT(run_pkt(PKT(.src = "2001:db8:0:2::9", .flags = TH_SYN, .v6_hopopts = true)), 1);
	CHECK_INT(counters().new_buckets, 5);
	test_end();
}

static void test_allow_deny(bool tc)
{
	struct rl_prefix p;
	struct rl_counters c;

	if (!setup(tc ? "allow_deny_overlap_tc" : "allow_deny_overlap_xdp", tc))
		return;
	set_policy("0.0.0.0/0", (struct rl_limits){.syn_rate = 1, .syn_burst = 1});
	set_policy("::/0", (struct rl_limits){.syn_rate = 1, .syn_burst = 1});
	p = pfx("10.0.0.0/8");
	CHECK_INT(rl_deny_add(rl, &p), 0);
	p = pfx("10.1.0.0/16");
	CHECK_INT(rl_allow_add(rl, &p), 0);
	p = pfx("10.1.2.3"); /* a deny inside the allowed /16: the allow list wins */
	CHECK_INT(rl_deny_add(rl, &p), 0);
	p = pfx("2001:db8::/32");
	CHECK_INT(rl_deny_add(rl, &p), 0);
	p = pfx("2001:db8:1::/48");
	CHECK_INT(rl_allow_add(rl, &p), 0);

	CHECK_INT(run_n(PKT(.src = "10.1.5.5", .flags = TH_SYN), 10), 0);
	CHECK_INT(run_n(PKT(.src = "10.1.2.3", .flags = TH_SYN), 3), 0);
	CHECK_INT(run_n(PKT(.src = "10.2.0.1", .flags = TH_ACK), 3), 3);
	CHECK_INT(run_pkt(PKT(.src = "11.0.0.1", .flags = TH_SYN)), 0);
	CHECK_INT(run_pkt(PKT(.src = "11.0.0.1", .flags = TH_SYN)), 1);
	CHECK_INT(run_n(PKT(.src = "2001:db8:1::5", .flags = TH_SYN), 5), 0);
	CHECK_INT(run_n(PKT(.src = "2001:db8:2::5", .flags = TH_ACK), 2), 2);
	c = counters();
	CHECK_INT(c.allowed, 10 + 3 + 5);
	CHECK_INT(c.dropped[RL_REASON_DENY], 3 + 2);
	CHECK_INT(c.dropped[RL_REASON_SYN_RATE], 1);

	/* Live edits: without the allow entry the /48 falls under the /32 deny. */
	p = pfx("2001:db8:1::/48");
	CHECK_INT(rl_allow_del(rl, &p), 0);
	CHECK_INT(rl_allow_del(rl, &p), -ENOENT);
	CHECK_INT(run_pkt(PKT(.src = "2001:db8:1::5", .flags = TH_ACK)), 1);
	p = pfx("2001:db8::/32");
	CHECK_INT(rl_deny_del(rl, &p), 0);
	CHECK_INT(run_pkt(PKT(.src = "2001:db8:1::5", .flags = TH_SYN)), 0);
	CHECK_INT(run_pkt(PKT(.src = "2001:db8:1::5", .flags = TH_SYN)), 1);
	/* The last allow entry gone: the program stops consulting the list; an entry added twice
	 * is one entry. */
	p = pfx("10.1.0.0/16");
	CHECK_INT(rl_allow_del(rl, &p), 0);
	CHECK_INT(run_pkt(PKT(.src = "10.1.5.5", .flags = TH_ACK)), 1);
	CHECK_INT(rl_allow_add(rl, &p), 0);
	CHECK_INT(rl_allow_add(rl, &p), 0);
	CHECK_INT(run_pkt(PKT(.src = "10.1.5.5", .flags = TH_ACK)), 0);
	CHECK_INT(rl_allow_del(rl, &p), 0);
	CHECK_INT(run_pkt(PKT(.src = "10.1.5.5", .flags = TH_ACK)), 1);
	test_end();
}

static void test_penalty(void)
{
	struct pkt ack = PKT(.src = "192.0.2.30", .flags = TH_ACK);
	struct pkt ack6 = PKT(.src = "2001:db8:5:6::1", .flags = TH_ACK);
	struct pkt ack6_same64 = PKT(.src = "2001:db8:5:6::beef", .flags = TH_ACK);
	struct pkt ack6_other = PKT(.src = "2001:db8:5:7::1", .flags = TH_ACK);
	struct rl_prefix p;

	if (!setup("penalty_expiry", false))
		return;
	/* No policy at all: the penalty box applies regardless. */
	p = pfx("192.0.2.30");
	CHECK_INT(rl_penalty_add(rl, &p, 2 * NS), 0);
	p = pfx("2001:db8:5:6::1");
	CHECK_INT(rl_penalty_add(rl, &p, 1 * NS), 0);
	CHECK_INT(run_n(ack, 3), 3);
	CHECK_INT(run_pkt(ack6), 1);
	CHECK_INT(run_pkt(ack6_same64), 1); /* the penalty covers the source's /64 */
	CHECK_INT(run_pkt(ack6_other), 0);
	rl_clock_override(rl, T0 + 1 * NS);
	CHECK_INT(run_pkt(ack6), 0);
	rl_clock_override(rl, T0 + 2 * NS - 1);
	CHECK_INT(run_pkt(ack), 1);
	rl_clock_override(rl, T0 + 2 * NS);
	CHECK_INT(run_pkt(ack), 0);
	/* Expired entries are removed by the program. */
	p = pfx("192.0.2.30");
	CHECK_INT(rl_penalty_del(rl, &p), -ENOENT);
	/* Re-boxed, then released early by userspace. */
	CHECK_INT(rl_penalty_add(rl, &p, 5 * NS), 0);
	CHECK_INT(run_pkt(ack), 1);
	CHECK_INT(rl_penalty_del(rl, &p), 0);
	CHECK_INT(run_pkt(ack), 0);
	/* The sweep removes expired entries and, once the box is empty, the program stops
	 * looking; adding an entry turns the lookup back on. */
	CHECK_INT(rl_penalty_add(rl, &p, 1 * NS), 0);
	CHECK_INT(rl_penalty_sweep(rl), 1);
	rl_clock_override(rl, T0 + 3 * NS);
	CHECK_INT(rl_penalty_sweep(rl), 0);
	CHECK_INT(rl_penalty_del(rl, &p), -ENOENT);
	CHECK_INT(rl_penalty_add(rl, &p, 1 * NS), 0);
	CHECK_INT(run_pkt(ack), 1);
	CHECK_INT(counters().dropped[RL_REASON_PENALTY], 3 + 2 + 1 + 1 + 1);
	test_end();
}

/* The /16 hints (rl_hint) are counts: a bit stays set while any entry overlaps its /16, and
 * the penalty box's are rebuilt by the sweep. A hint that were cleared too early would let a
 * listed source through. */
static void test_hints(void)
{
	struct pkt in_16 = PKT(.src = "10.1.2.3", .flags = TH_ACK);
	struct pkt in_8 = PKT(.src = "10.2.0.1", .flags = TH_ACK);
	struct pkt v6 = PKT(.src = "2001:db8::1", .flags = TH_ACK);
	struct pkt boxed_a = PKT(.src = "192.0.2.5", .flags = TH_ACK);
	struct pkt boxed_b = PKT(.src = "192.0.2.6", .flags = TH_ACK);
	struct rl_prefix p8 = pfx("10.0.0.0/8"), p16 = pfx("10.1.0.0/16"), p;

	if (!setup("list_hints", false))
		return;
	CHECK_INT(rl_deny_add(rl, &p8), 0);
	CHECK_INT(rl_deny_add(rl, &p16), 0);
	CHECK_INT(run_pkt(in_16), 1);
	CHECK_INT(run_pkt(in_8), 1);
	/* The /8 goes; the /16 inside it still holds its bit. */
	CHECK_INT(rl_deny_del(rl, &p8), 0);
	CHECK_INT(run_pkt(in_16), 1);
	CHECK_INT(run_pkt(in_8), 0);
	CHECK_INT(rl_deny_del(rl, &p16), 0);
	CHECK_INT(run_pkt(in_16), 0);
	/* Re-adding an existing entry counts it once. */
	CHECK_INT(rl_deny_add(rl, &p16), 0);
	CHECK_INT(rl_deny_add(rl, &p16), 0);
	CHECK_INT(rl_deny_del(rl, &p16), 0);
	CHECK_INT(run_pkt(in_16), 0);
	/* A /0 covers every /16, of its family only. */
	p = pfx("::/0");
	CHECK_INT(rl_deny_add(rl, &p), 0);
	CHECK_INT(run_pkt(v6), 1);
	CHECK_INT(run_pkt(in_16), 0);
	p = pfx("2001:db8::1");
	CHECK_INT(rl_allow_add(rl, &p), 0);
	CHECK_INT(run_pkt(v6), 0);
	/* Two boxed sources of one /16: releasing one keeps the other boxed; after the first
	 * expires and the sweep rebuilds the hints, the second is still boxed. */
	p = pfx("192.0.2.5");
	CHECK_INT(rl_penalty_add(rl, &p, 10 * NS), 0);
	CHECK_INT(rl_penalty_add(rl, &p, 10 * NS), 0);
	p = pfx("192.0.2.6");
	CHECK_INT(rl_penalty_add(rl, &p, 20 * NS), 0);
	p = pfx("192.0.2.5");
	CHECK_INT(rl_penalty_del(rl, &p), 0);
	CHECK_INT(run_pkt(boxed_a), 0);
	CHECK_INT(run_pkt(boxed_b), 1);
	CHECK_INT(rl_penalty_add(rl, &p, 1 * NS), 0);
	rl_clock_override(rl, T0 + 2 * NS);
	CHECK_INT(rl_penalty_sweep(rl), 1);
	CHECK_INT(run_pkt(boxed_a), 0);
	CHECK_INT(run_pkt(boxed_b), 1);
	rl_clock_override(rl, T0 + 30 * NS);
	CHECK_INT(rl_penalty_sweep(rl), 0);
	CHECK_INT(run_pkt(boxed_b), 0);
	test_end();
}

/* The fd of one of the limiter's maps, found by name through its program. */
static int map_fd_by_name(const char *name)
{
	struct bpf_prog_info info = {0};
	uint32_t ids[32], len = sizeof(info);
	int fd = -1;

	info.nr_map_ids = 32;
	info.map_ids = (uint64_t)(uintptr_t)ids;
	if (bpf_obj_get_info_by_fd(rl_prog_fd(rl, false), &info, &len))
		return -1;
	for (uint32_t i = 0; i < info.nr_map_ids && i < 32 && fd < 0; i++) {
		struct bpf_map_info mi = {0};
		uint32_t mlen = sizeof(mi);
		int m = bpf_map_get_fd_by_id(ids[i]);

		if (m < 0)
			continue;
		if (!bpf_obj_get_info_by_fd(m, &mi, &mlen) && strcmp(mi.name, name) == 0)
			fd = m;
		else
			close(m);
	}
	return fd;
}

/* Which policies are timed by the coarse clock: those whose every bucket spans at least
 * RL_COARSE_MIN_TICKS ticks. */
static void test_clock_choice(void)
{
	struct {
		const char *prefix;
		struct rl_limits l;
		bool coarse;
	} cases[] = {
		{"192.0.2.1/32",
		 {.syn_rate = 20, .syn_burst = 40, .pkt_rate = 2000, .pkt_burst = 4000},
		 true},
		{"192.0.2.2/32", {.syn_rate = 1, .syn_burst = 1}, true},
		{"192.0.2.3/32",
		 {.syn_rate = 20, .syn_burst = 40, .pkt_rate = 1000, .pkt_burst = 10},
		 false},
		{"192.0.2.4/32", {.pkt_rate = 1000000, .pkt_burst = 100}, false},
		{"192.0.2.5/32", {0}, true},
	};
	struct timespec res;
	int fd;

	if (!setup("clock_choice", false))
		return;
	fd = map_fd_by_name("rl_policy_v4");
	CHECK(fd >= 0);
	/* The cases hold for any tick from 1 ms to 31 ms (HZ 1000 down to 100 and below). */
	CHECK_INT(clock_getres(CLOCK_MONOTONIC_COARSE, &res), 0);
	CHECK_MSG(!res.tv_sec && res.tv_nsec >= 1 * MS && res.tv_nsec <= 31 * MS,
		  "coarse clock tick %ld ns", (long)res.tv_nsec);
	if (fd < 0) {
		test_end();
		return;
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rl_lpm_v4 k = {.prefixlen = 32};
		struct rl_prefix p = pfx(cases[i].prefix);
		struct rl_policy pol;

		set_policy(cases[i].prefix, cases[i].l);
		memcpy(k.addr, p.addr, 4);
		CHECK_INT(bpf_map_lookup_elem(fd, &k, &pol), 0);
		CHECK_MSG(!!(pol.flags & RL_POLICY_COARSE_OK) == cases[i].coarse,
			  "%s: coarse clock %d, expected %d", cases[i].prefix,
			  !!(pol.flags & RL_POLICY_COARSE_OK), cases[i].coarse);
	}
	close(fd);
	test_end();
}

static void test_dry_run(void)
{
	struct pkt syn = PKT(.src = "192.0.2.40", .flags = TH_SYN);
	struct rl_settings s;
	struct rl_counters c;
	struct rl_prefix p;

	if (!setup("dry_run", false))
		return;
	set_policy("0.0.0.0/0", (struct rl_limits){.syn_rate = 1, .syn_burst = 2});
	p = pfx("192.0.2.41");
	CHECK_INT(rl_deny_add(rl, &p), 0);
	CHECK_INT(rl_settings_get(rl, &s), 0);
	s.dry_run = true;
	CHECK_INT(rl_settings_set(rl, &s), 0);
	CHECK_INT(run_n(syn, 5), 0);
	CHECK_INT(run_n(PKT(.src = "192.0.2.41", .flags = TH_ACK), 2), 0);
	c = counters();
	CHECK_INT(c.would_drop[RL_REASON_SYN_RATE], 3);
	CHECK_INT(c.would_drop[RL_REASON_DENY], 2);
	CHECK_INT(c.dropped[RL_REASON_SYN_RATE], 0);
	CHECK_INT(c.dropped[RL_REASON_DENY], 0);
	/* Switching to enforcing takes effect on the next packet; dry-run did not spend tokens. */
	s.dry_run = false;
	CHECK_INT(rl_settings_set(rl, &s), 0);
	CHECK_INT(run_pkt(syn), 1);
	CHECK_INT(run_pkt(PKT(.src = "192.0.2.41", .flags = TH_ACK)), 1);
	test_end();
}

static void test_other_traffic(void)
{
	struct rl_prefix p;
	struct rl_counters c;

	if (!setup("other_ports_untouched", false))
		return;
	/* Everyone is denied, yet traffic that is not the gateway's passes. */
	p = pfx("0.0.0.0/0");
	CHECK_INT(rl_deny_add(rl, &p), 0);
	p = pfx("::/0");
	CHECK_INT(rl_deny_add(rl, &p), 0);
	CHECK_INT(rl_port_set(rl, 5353, RL_PORT_UDP), 0);
	CHECK_INT(run_pkt(PKT(.src = "192.0.2.50", .dport = OTHER_PORT, .flags = TH_SYN)), 0);
	CHECK_INT(run_pkt(PKT(.src = "2001:db8::50", .dport = OTHER_PORT, .flags = TH_SYN)), 0);
	/* UDP to a TCP-only port, TCP to a UDP-only port. */
	CHECK_INT(run_pkt(PKT(.src = "192.0.2.50", .proto = IPPROTO_UDP)), 0);
	CHECK_INT(run_pkt(PKT(.src = "192.0.2.50", .dport = 5353, .flags = TH_SYN)), 0);
	/* A later IPv6 fragment carries no ports. */
	CHECK_INT(run_pkt(PKT(.src = "2001:db8::50", .flags = TH_SYN, .v6_frag = 10)), 0);
	/* ARP. */
	{
		uint8_t arp[42] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2,
				   0,	 0,    0,    0,	   2,	 0x08, 0x06};

		CHECK_INT(run_raw(arp, sizeof(arp)), 0);
	}
	c = counters();
	CHECK_INT(c.ignored, 6);
	/* And the gateway's traffic is judged: UDP on the UDP port, TCP on the TCP port. */
	CHECK_INT(run_pkt(PKT(.src = "192.0.2.50", .proto = IPPROTO_UDP, .dport = 5353)), 1);
	CHECK_INT(run_pkt(PKT(.src = "192.0.2.50", .flags = TH_SYN)), 1);
	CHECK_INT(run_pkt(PKT(.src = "2001:db8::50", .flags = TH_SYN, .v6_frag = 0,
			      .v6_hopopts = true)),
		  1);
	/* Removing the port stops limiting it. */
	CHECK_INT(rl_port_set(rl, GW_PORT, 0), 0);
	CHECK_INT(run_pkt(PKT(.src = "192.0.2.50", .flags = TH_SYN)), 0);
	test_end();
}

static void test_malformed(bool tc)
{
	struct pkt good4 = PKT(.src = "192.0.2.60", .flags = TH_SYN);
	struct pkt good6 = PKT(.src = "2001:db8::60", .flags = TH_SYN, .v6_hopopts = true);
	struct pkt vlan = PKT(.src = "192.0.2.60", .flags = TH_SYN, .vlan = true);
	struct pkt k;
	struct rl_prefix p;
	int n = 0;

	if (!setup(tc ? "malformed_pass_tc" : "malformed_pass_xdp", tc))
		return;
	p = pfx("0.0.0.0/0");
	CHECK_INT(rl_deny_add(rl, &p), 0);
	p = pfx("::/0");
	CHECK_INT(rl_deny_add(rl, &p), 0);
	/* Every truncation of a valid packet, down to a bare Ethernet header, passes. The kernel
	 * refuses to build a test skb whose IP header is incomplete, so tc starts there. */
	for (size_t len = tc ? 14 + 20 : 14; len < good4.len; len++, n++)
		CHECK_MSG(run_raw(good4.b, len) == 0, "IPv4 truncated to %zu dropped", len);
	for (size_t len = tc ? 14 + 40 : 14; len < good6.len; len++, n++)
		CHECK_MSG(run_raw(good6.b, len) == 0, "IPv6 truncated to %zu dropped", len);
	for (size_t len = 14; len < vlan.len; len++, n++)
		CHECK_MSG(run_raw(vlan.b, len) == 0, "VLAN truncated to %zu dropped", len);
	/* Bad IPv4 header length and version. */
	k = good4;
	k.b[14] = 0x43;
	CHECK_INT(run_pkt(k), 0);
	k.b[14] = 0x55;
	CHECK_INT(run_pkt(k), 0);
	/* IHL claims 60 bytes of options the packet does not have. */
	k.b[14] = 0x4f;
	CHECK_INT(run_pkt(k), 0);
	/* IPv6 extension header that claims to run past the end. */
	k = good6;
	k.b[14 + 40 + 1] = 200;
	CHECK_INT(run_pkt(k), 0);
	/* Wrong IP version in an IPv6 frame. */
	k = good6;
	k.b[14] = 0x40;
	CHECK_INT(run_pkt(k), 0);
	CHECK_INT(counters().malformed, n + 5);
	/* The untouched packets are judged (and denied). */
	CHECK_INT(run_pkt(good4), 1);
	CHECK_INT(run_pkt(good6), 1);
	CHECK_INT(run_pkt(vlan), 1);
	test_end();
}

#define MAX_EVENTS 16
static struct rl_event events[MAX_EVENTS];
static int nevents;

static void on_event(void *ctx, const struct rl_event *e)
{
	(void)ctx;
	if (nevents < MAX_EVENTS)
		events[nevents] = *e;
	nevents++;
}

static void test_events(void)
{
	struct pkt syn = PKT(.src = "192.0.2.70", .flags = TH_SYN);
	struct rl_settings s;
	char buf[64];
	struct rl_prefix p = {0};

	if (!setup("events_throttled", false))
		return;
	nevents = 0;
	CHECK_INT(rl_events_start(rl, on_event, NULL), 0);
	CHECK(rl_events_fd(rl) >= 0);
	set_policy("0.0.0.0/0", (struct rl_limits){.syn_rate = 1, .syn_burst = 1});
	CHECK_INT(run_n(syn, 4), 3);
	CHECK_INT(rl_events_consume(rl), 1);
	CHECK_INT(nevents, 1);
	if (nevents >= 1) {
		p.family = events[0].family;
		p.plen = events[0].plen;
		memcpy(p.addr, events[0].addr, 16);
		CHECK_STR(rl_prefix_format(&p, buf, sizeof(buf)), "192.0.2.70/32");
		CHECK_INT(events[0].reason, RL_REASON_SYN_RATE);
		CHECK_INT(events[0].dport, GW_PORT);
		CHECK_INT(events[0].ts_ns, T0);
		CHECK_INT(events[0].dry_run, 0);
	}
	/* One interval later the next drop reports again (the bucket has refilled one token). */
	rl_clock_override(rl, T0 + NS);
	CHECK_INT(run_n(syn, 3), 2);
	CHECK_INT(rl_events_consume(rl), 1);
	/* The per-CPU cap: 2 events per second across many sources. */
	CHECK_INT(rl_settings_get(rl, &s), 0);
	s.events_per_sec = 2;
	CHECK_INT(rl_settings_set(rl, &s), 0);
	rl_clock_override(rl, T0 + 5 * NS);
	for (int i = 0; i < 6; i++) {
		char src[32];

		snprintf(src, sizeof(src), "192.0.2.%d", 100 + i);
		run_n(PKT(.src = src, .flags = TH_SYN), 2);
	}
	CHECK_INT(rl_events_consume(rl), 2);
	CHECK_INT(counters().events_capped, 4);
	CHECK_INT(counters().events_sent, 4);
	CHECK_INT(counters().events_lost, 0);
	test_end();
}

/* The coarse clock is jiffies * tick + an offset the program measures on its first reading
 * (rl_coarse_ns): its time must be CLOCK_MONOTONIC's, to within a tick or two, from the first
 * packet on and still later, or penalty deadlines written by userspace would be off. A drop
 * event carries the program's "now". */
static void test_coarse_clock(void)
{
	struct timespec res, a, b;
	uint64_t tick, before, after;

	if (!setup("coarse_clock_is_monotonic", false))
		return;
	rl_clock_override(rl, 0);
	CHECK_INT(clock_getres(CLOCK_MONOTONIC_COARSE, &res), 0);
	tick = (uint64_t)res.tv_nsec;
	nevents = 0;
	CHECK_INT(rl_events_start(rl, on_event, NULL), 0);
	set_policy("0.0.0.0/0", (struct rl_limits){.syn_rate = 1, .syn_burst = 1});
	for (int round = 0; round < 3; round++) {
		char src[32];

		snprintf(src, sizeof(src), "192.0.2.%d", 80 + round);
		clock_gettime(CLOCK_MONOTONIC, &a);
		CHECK_INT(run_n(PKT(.src = src, .flags = TH_SYN), 2), 1);
		clock_gettime(CLOCK_MONOTONIC, &b);
		CHECK_INT(rl_events_consume(rl), 1);
		if (nevents != round + 1 || nevents > MAX_EVENTS)
			break;
		before = (uint64_t)a.tv_sec * NS + (uint64_t)a.tv_nsec;
		after = (uint64_t)b.tv_sec * NS + (uint64_t)b.tv_nsec;
		CHECK_MSG(events[round].ts_ns + 2 * tick >= before &&
				  events[round].ts_ns <= after + tick,
			  "round %d: event at %llu, CLOCK_MONOTONIC %llu..%llu (tick %llu)", round,
			  (unsigned long long)events[round].ts_ns, (unsigned long long)before,
			  (unsigned long long)after, (unsigned long long)tick);
		usleep(150 * 1000);
	}
	CHECK_INT(nevents, 3);
	test_end();
}

static void test_bucket_cap(void)
{
	struct rl_settings s;
	struct rl_counters c;
	char src[32];

	if (!setup("new_bucket_cap", false))
		return;
	set_policy("0.0.0.0/0", (struct rl_limits){.syn_rate = 1, .syn_burst = 1});
	CHECK_INT(rl_settings_get(rl, &s), 0);
	s.new_buckets_per_sec = 3;
	CHECK_INT(rl_settings_set(rl, &s), 0);
	/* test_run executes on the calling CPU: pin so that all packets share one budget. */
	cpu_set_t saved, one;

	sched_getaffinity(0, sizeof(saved), &saved);
	CPU_ZERO(&one);
	CPU_SET(sched_getcpu(), &one);
	sched_setaffinity(0, sizeof(one), &one);
	for (int i = 0; i < 5; i++) {
		snprintf(src, sizeof(src), "198.18.0.%d", i + 1);
		CHECK_INT(run_pkt(PKT(.src = src, .flags = TH_SYN)), 0);
	}
	c = counters();
	CHECK_INT(c.new_buckets, 3);
	CHECK_INT(c.cap_hits, 2);
	/* Existing buckets still limit. */
	CHECK_INT(run_pkt(PKT(.src = "198.18.0.1", .flags = TH_SYN)), 1);
	/* Dropping new sources over the cap, if asked. */
	s.cap_drop = true;
	CHECK_INT(rl_settings_set(rl, &s), 0);
	CHECK_INT(run_pkt(PKT(.src = "198.18.0.9", .flags = TH_SYN)), 1);
	CHECK_INT(counters().dropped[RL_REASON_CAP], 1);
	/* The next second has a new budget. */
	rl_clock_override(rl, T0 + NS);
	CHECK_INT(run_pkt(PKT(.src = "198.18.0.9", .flags = TH_SYN)), 0);
	CHECK_INT(counters().new_buckets, 4);
	sched_setaffinity(0, sizeof(saved), &saved);
	test_end();
}

static void test_api(void)
{
	struct rl_prefix p;
	struct rl_limits bad = {.syn_rate = 1, .bucket_plen = 33};
	char buf[64];

	if (!setup("api_prefixes", false))
		return;
	CHECK_INT(rl_prefix_parse("10.0.0.0/8", &p), 0);
	CHECK_STR(rl_prefix_format(&p, buf, sizeof(buf)), "10.0.0.0/8");
	CHECK_INT(rl_prefix_parse("10.1.2.3/8", &p), -EINVAL);
	CHECK_INT(rl_prefix_parse("10.0.0.0/33", &p), -EINVAL);
	CHECK_INT(rl_prefix_parse("10.0.0.0/", &p), -EINVAL);
	CHECK_INT(rl_prefix_parse("nonsense", &p), -EINVAL);
	CHECK_INT(rl_prefix_parse("2001:db8::/32", &p), 0);
	CHECK_STR(rl_prefix_format(&p, buf, sizeof(buf)), "2001:db8::/32");
	CHECK_INT(rl_prefix_parse("2001:db8::1", &p), 0);
	CHECK_INT(p.plen, 128);
	{
		struct sockaddr_in6 sa = {.sin6_family = AF_INET6};

		inet_pton(AF_INET6, "::ffff:192.0.2.1", &sa.sin6_addr);
		CHECK_INT(rl_prefix_from_sockaddr((struct sockaddr *)&sa, &p), 0);
		CHECK_STR(rl_prefix_format(&p, buf, sizeof(buf)), "192.0.2.1/32");
	}
	p = pfx("10.0.0.0/8");
	CHECK_INT(rl_policy_set(rl, &p, &bad), -EINVAL);
	CHECK_INT(rl_port_set(rl, 1, 4), -EINVAL);
	test_end();
}

/* ---- per-packet cost (information only) -------------------------------------------------- */

/* Best of three runs of repeat packets through fd: the minimum is the program's cost with the
 * least interference from the other tenants of this machine. */
static double cost_fd(int fd, struct pkt k, int repeat)
{
	double best = -1;

	for (int i = 0; i < 3; i++) {
		LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = k.b, .data_size_in = (uint32_t)k.len,
			    .repeat = repeat);

		if (bpf_prog_test_run_opts(fd, &o))
			return -1;
		if (best < 0 || o.duration < best)
			best = o.duration;
	}
	return best;
}

static double cost_ns(struct pkt k, int repeat)
{
	return cost_fd(rl_prog_fd(rl, use_tc), k, repeat);
}

/* One "# perf" line: what the harness measured and, net of base (the same harness around a
 * program that only returns), the program's own cost. The targets of issue 8 are held against
 * the net figure: the harness alone costs 7 ns on a quiet VM and 4x that on a loaded one. */
static void perf_line(const char *what, double ns, double base)
{
	printf("# perf %-4s %-56s %4.0f ns/packet %4.0f net\n", use_tc ? "tc" : "xdp", what, ns,
	       ns >= 0 && base >= 0 ? ns - base : -1);
}

/* A program that only passes the packet, as the harness baseline: XDP, or tc (whose harness
 * builds an skb and costs more). */
static int prog_load_empty(bool tc)
{
	LIBBPF_OPTS(bpf_prog_load_opts, po, .expected_attach_type = tc ? 0 : BPF_XDP);
	struct bpf_insn ret[] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_K,
		 .dst_reg = BPF_REG_0,
		 .imm = tc ? TC_NEXT_RC : XDP_PASS_RC},
		{.code = BPF_JMP | BPF_EXIT},
	};

	return bpf_prog_load(tc ? BPF_PROG_TYPE_SCHED_CLS : BPF_PROG_TYPE_XDP, "rl_empty", "GPL",
			     ret, 2, &po);
}

/* A never-seen source cannot be repeated with one packet, and 1-packet runs carry the timer's
 * own ~100 ns and cold caches. This driver adds one to the IPv4 source address of the packet
 * (untagged Ethernet) in place, then tail-calls slot 0 of prog_array: with repeat, every run
 * sees the next address (the harness keeps the packet between runs). Its own cost is measured
 * by the same driver in front of the empty program. */
static int prog_load_driver(int prog_array)
{
	LIBBPF_OPTS(bpf_prog_load_opts, po, .expected_attach_type = BPF_XDP);
	struct bpf_insn d[] = {
		{.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = BPF_REG_6, .src_reg = BPF_REG_1},
		{.code = BPF_LDX | BPF_W | BPF_MEM,
		 .dst_reg = BPF_REG_2,
		 .src_reg = BPF_REG_1,
		 .off = offsetof(struct xdp_md, data)},
		{.code = BPF_LDX | BPF_W | BPF_MEM,
		 .dst_reg = BPF_REG_3,
		 .src_reg = BPF_REG_1,
		 .off = offsetof(struct xdp_md, data_end)},
		{.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = BPF_REG_4, .src_reg = BPF_REG_2},
		{.code = BPF_ALU64 | BPF_ADD | BPF_K, .dst_reg = BPF_REG_4, .imm = 30},
		/* past the source address: to the return at the end */
		{.code = BPF_JMP | BPF_JGT | BPF_X,
		 .dst_reg = BPF_REG_4,
		 .src_reg = BPF_REG_3,
		 .off = 10},
		{.code = BPF_LDX | BPF_W | BPF_MEM,
		 .dst_reg = BPF_REG_5,
		 .src_reg = BPF_REG_2,
		 .off = 26},
		{.code = BPF_ALU | BPF_END | BPF_TO_BE, .dst_reg = BPF_REG_5, .imm = 32},
		{.code = BPF_ALU | BPF_ADD | BPF_K, .dst_reg = BPF_REG_5, .imm = 1},
		{.code = BPF_ALU | BPF_END | BPF_TO_BE, .dst_reg = BPF_REG_5, .imm = 32},
		{.code = BPF_STX | BPF_W | BPF_MEM,
		 .dst_reg = BPF_REG_2,
		 .src_reg = BPF_REG_5,
		 .off = 26},
		{.code = BPF_ALU64 | BPF_MOV | BPF_X, .dst_reg = BPF_REG_1, .src_reg = BPF_REG_6},
		{.code = BPF_LD | BPF_DW | BPF_IMM,
		 .dst_reg = BPF_REG_2,
		 .src_reg = BPF_PSEUDO_MAP_FD,
		 .imm = prog_array},
		{.imm = 0},
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_3, .imm = 0},
		{.code = BPF_JMP | BPF_CALL, .imm = BPF_FUNC_tail_call},
		{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = XDP_PASS_RC},
		{.code = BPF_JMP | BPF_EXIT},
	};

	return bpf_prog_load(BPF_PROG_TYPE_XDP, "rl_perf_drv", "GPL", d, sizeof(d) / sizeof(d[0]),
			     &po);
}

/* Best of three runs of the driver, each from its own block of repeat addresses (100.64/10),
 * so that no run meets a source of another even when the LRU is larger than repeat. */
static double cost_driver(int drv, int repeat)
{
	double best = -1;

	for (int i = 0; i < 3; i++) {
		uint32_t first = 0x64400000u + (uint32_t)i * (uint32_t)repeat;
		struct pkt k = PKT(.src = "100.64.0.0", .flags = TH_SYN);
		LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = k.b, .data_size_in = (uint32_t)k.len,
			    .repeat = repeat);

		first = htonl(first);
		memcpy(k.b + 26, &first, 4);
		if (bpf_prog_test_run_opts(drv, &o))
			return -1;
		if (best < 0 || o.duration < best)
			best = o.duration;
	}
	return best;
}

/* The never-seen path with repeat: returns the driver's cost in front of the limiter and, in
 * *base, in front of the empty program; checks that every run created a bucket. */
static double cost_new_sources(int empty_fd, int repeat, double *base)
{
	int slot = 0, array, drv, lim = rl_prog_fd(rl, false);
	uint64_t before;
	double ns = -1;

	*base = -1;
	array = bpf_map_create(BPF_MAP_TYPE_PROG_ARRAY, "rl_perf_tail", 4, 4, 1, NULL);
	if (array < 0)
		return -1;
	drv = prog_load_driver(array);
	if (drv < 0)
		goto out;
	if (bpf_map_update_elem(array, &slot, &empty_fd, BPF_ANY))
		goto out;
	*base = cost_driver(drv, repeat);
	if (bpf_map_update_elem(array, &slot, &lim, BPF_ANY))
		goto out;
	before = counters().new_buckets;
	ns = cost_driver(drv, repeat);
	CHECK_INT(counters().new_buckets - before, 3 * (uint64_t)repeat);
out:
	CHECK_MSG(drv >= 0 && ns >= 0, "the never-seen driver did not run: %s", strerror(errno));
	if (drv >= 0)
		close(drv);
	close(array);
	return ns;
}

static void test_perf(void)
{
	const int repeat = 100000, fresh = 20000;
	struct pkt pass = PKT(.src = "192.0.2.89", .flags = TH_ACK);
	struct pkt drop = PKT(.src = "192.0.2.90", .flags = TH_ACK);
	struct pkt allow = PKT(.src = "198.51.100.7", .flags = TH_ACK);
	double base = -1, one = -1, fresh_ns = 0, drv_base;
	struct rl_settings s;
	struct rl_prefix p;
	int empty;

	if (!setup("perf_info", false))
		return;
	rl_clock_override(rl, 0); /* the real clock: its cost is part of the path */
	/* Never exhausted: 1 ns per packet, 1 s tolerance; the clock runs faster than that. As
	 * the usual policies (bursts of a few at most a few thousand per second) its buckets span
	 * more than RL_COARSE_MIN_TICKS ticks: the coarse clock times them. */
	set_policy("0.0.0.0/0", (struct rl_limits){.syn_rate = 1000000000,
						   .syn_burst = 1000000000,
						   .pkt_rate = 1000000000,
						   .pkt_burst = 1000000000});
	set_policy("192.0.2.90/32", (struct rl_limits){.pkt_rate = 1, .pkt_burst = 1});
	/* The allow list is in use, but not in the /16 of the limited sources (rl_hint). */
	p = pfx("198.51.100.7");
	CHECK_INT(rl_allow_add(rl, &p), 0);
	CHECK_INT(rl_settings_get(rl, &s), 0);
	s.new_buckets_per_sec = 0;
	CHECK_INT(rl_settings_set(rl, &s), 0);

	empty = prog_load_empty(false);
	CHECK_MSG(empty >= 0, "cannot load an empty XDP program: %s", strerror(errno));
	if (empty < 0) {
		test_end();
		return;
	}
	base = cost_fd(empty, pass, repeat);
	perf_line("empty program (harness baseline)", base, base);
	{
		LIBBPF_OPTS(bpf_test_run_opts, o, .data_in = pass.b,
			    .data_size_in = (uint32_t)pass.len, .repeat = 1);
		double sum = 0;

		for (int i = 0; i < 2000; i++)
			if (!bpf_prog_test_run_opts(empty, &o))
				sum += o.duration;
		one = sum / 2000;
		perf_line("empty program, 1-packet runs (baseline)", one, one);
	}
	perf_line("other port (not the gateway's)",
		  cost_ns(PKT(.src = "192.0.2.89", .dport = OTHER_PORT), repeat), base);
	perf_line("allow-listed source", cost_ns(allow, repeat), base);
	perf_line("limited source, pass", cost_ns(pass, repeat), base);
	perf_line("limited source, drop", cost_ns(drop, repeat), base);
	s.precise_clock = true;
	CHECK_INT(rl_settings_set(rl, &s), 0);
	perf_line("limited source, pass, precise clock", cost_ns(pass, repeat), base);
	perf_line("limited source, drop, precise clock", cost_ns(drop, repeat), base);
	s.precise_clock = false;
	CHECK_INT(rl_settings_set(rl, &s), 0);

	/* A never-seen source per packet through a 4096-bucket LRU: nearly every one evicts. */
	{
		double ns = cost_new_sources(empty, repeat, &drv_base);

		perf_line("never-seen source, repeat (LRU insert+evict)", ns, drv_base);
	}
	/* The same, one test run per packet as before the driver existed: the 1-packet harness
	 * is its baseline. */
	for (int i = 0; i < fresh; i++) {
		char src[32];
		LIBBPF_OPTS(bpf_test_run_opts, o, .repeat = 1);
		struct pkt k;

		snprintf(src, sizeof(src), "100.%d.%d.%d", 96 + (i >> 16), (i >> 8) & 0xff,
			 i & 0xff);
		k = PKT(.src = src, .flags = TH_SYN);
		o.data_in = k.b;
		o.data_size_in = (uint32_t)k.len;
		if (!bpf_prog_test_run_opts(rl_prog_fd(rl, false), &o))
			fresh_ns += o.duration;
	}
	perf_line("never-seen source, 1-packet runs (cold)", fresh_ns / fresh, one);

	/* The penalty box in use, by a source of another /16: its hint saves the lookup. */
	p = pfx("203.0.113.99");
	CHECK_INT(rl_penalty_add(rl, &p, 3600 * NS), 0);
	perf_line("limited source, pass, penalty box in use", cost_ns(pass, repeat), base);
	perf_line("limited source, drop, penalty box in use", cost_ns(drop, repeat), base);
	use_tc = true;
	{
		int empty_tc = prog_load_empty(true);
		double base_tc = empty_tc >= 0 ? cost_fd(empty_tc, pass, repeat) : -1;

		perf_line("empty program (harness baseline)", base_tc, base_tc);
		perf_line("allow-listed source", cost_ns(allow, repeat), base_tc);
		perf_line("limited source, pass, penalty box in use", cost_ns(pass, repeat),
			  base_tc);
		perf_line("limited source, drop, penalty box in use", cost_ns(drop, repeat),
			  base_tc);
		if (empty_tc >= 0)
			close(empty_tc);
	}
	use_tc = false;
	/* Entries in the sources' own /16: both lookups are made (and miss). */
	p = pfx("192.0.2.99");
	CHECK_INT(rl_penalty_add(rl, &p, 3600 * NS), 0);
	p = pfx("192.0.2.98");
	CHECK_INT(rl_allow_add(rl, &p), 0);
	perf_line("limited source, pass, allow+penalty entries in its /16", cost_ns(pass, repeat),
		  base);
	perf_line("limited source, drop, allow+penalty entries in its /16", cost_ns(drop, repeat),
		  base);
	close(empty);
	test_end();
}

/* ---- live: a veth pair between two namespaces made by the test ---------------------------- */

#define GW_ADDR "10.213.0.1"
#define SRC_A "10.213.0.2"
#define SRC_B "10.213.0.3"
#define TCX_INGRESS_TYPE 46

static char ns_gw[32], ns_cl[32], veth_gw[IF_NAMESIZE], veth_cl[IF_NAMESIZE];
static bool netns_made;
static char netns_why[256];
static int orig_ns = -1;

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
	char cmd[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(cmd, sizeof(cmd) - 32, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(cmd) - 32)
		return -1;
	strcat(cmd, " >/dev/null 2>&1");
	return system(cmd) == 0 ? 0 : -1;
}

static void netns_cleanup(void)
{
	if (!netns_made)
		return;
	if (orig_ns >= 0)
		setns(orig_ns, CLONE_NEWNET);
	sh("ip netns del %s", ns_gw);
	sh("ip netns del %s", ns_cl);
	netns_made = false;
}

static void on_signal(int sig)
{
	netns_cleanup();
	signal(sig, SIG_DFL);
	raise(sig);
}

static int netns_enter(const char *name)
{
	char path[64];
	int fd, err;

	snprintf(path, sizeof(path), "/run/netns/%s", name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	err = setns(fd, CLONE_NEWNET) ? -errno : 0;
	close(fd);
	return err;
}

/* Two namespaces joined by a veth pair: the gateway side has GW_ADDR, the client side the two
 * sources SRC_A and SRC_B. Deleted at exit, on SIGINT/SIGTERM, and by netns_cleanup(). */
static bool netns_setup(void)
{
	int pid = getpid();

	if (netns_made)
		return true;
	if (geteuid() != 0) {
		snprintf(netns_why, sizeof(netns_why), "needs root to create network namespaces");
		return false;
	}
	orig_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	snprintf(ns_gw, sizeof(ns_gw), "rlgw%d", pid);
	snprintf(ns_cl, sizeof(ns_cl), "rlcl%d", pid);
	snprintf(veth_gw, sizeof(veth_gw), "rlg%d", pid);
	snprintf(veth_cl, sizeof(veth_cl), "rlc%d", pid);
	netns_made = true;
	atexit(netns_cleanup);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (sh("ip netns add %s", ns_gw) || sh("ip netns add %s", ns_cl) ||
	    sh("ip link add %s netns %s type veth peer name %s netns %s", veth_gw, ns_gw, veth_cl,
	       ns_cl) ||
	    sh("ip -n %s addr add %s/24 dev %s", ns_gw, GW_ADDR, veth_gw) ||
	    sh("ip -n %s link set %s up", ns_gw, veth_gw) || sh("ip -n %s link set lo up", ns_gw) ||
	    sh("ip -n %s addr add %s/24 dev %s", ns_cl, SRC_A, veth_cl) ||
	    sh("ip -n %s addr add %s/24 dev %s", ns_cl, SRC_B, veth_cl) ||
	    sh("ip -n %s link set %s up", ns_cl, veth_cl) || sh("ip -n %s link set lo up", ns_cl)) {
		snprintf(netns_why, sizeof(netns_why),
			 "cannot create the namespaces and veth pair with ip(8)");
		netns_cleanup();
		return false;
	}
	return true;
}

/* A listener on GW_ADDR:port 0 inside the gateway namespace (the caller is in it). */
static int listener(uint16_t *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	inet_pton(AF_INET, GW_ADDR, &a.sin_addr);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, 256) ||
	    getsockname(fd, (struct sockaddr *)&a, &alen)) {
		close(fd);
		return -errno;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

/* From the client namespace, n (<= 64) non-blocking connects from src to the gateway, given
 * up to wait_ms to complete (less than the 1 s SYN retransmission timeout, so a dropped SYN
 * stays dropped); then the client exits. Returns how many connections the listener accepts. */
static int client_burst(int lfd, uint16_t port, const char *src, int n, int wait_ms)
{
	int accepted = 0, status;
	pid_t child = fork();

	if (child < 0)
		return -errno;
	if (child == 0) {
		struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
		struct sockaddr_in from = {.sin_family = AF_INET};

		if (netns_enter(ns_cl))
			_exit(2);
		struct pollfd pfd[64];
		struct timespec t0, t;
		int left = n;

		if (n > 64)
			_exit(5);
		inet_pton(AF_INET, GW_ADDR, &dst.sin_addr);
		inet_pton(AF_INET, src, &from.sin_addr);
		for (int i = 0; i < n; i++) {
			int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);

			if (s < 0 || bind(s, (struct sockaddr *)&from, sizeof(from)))
				_exit(3);
			if (connect(s, (struct sockaddr *)&dst, sizeof(dst)) &&
			    errno != EINPROGRESS)
				_exit(4);
			pfd[i] = (struct pollfd){.fd = s, .events = POLLOUT};
		}
		/* Until every connect completed or the time is up, whichever comes first. */
		clock_gettime(CLOCK_MONOTONIC, &t0);
		for (;;) {
			long spent;

			clock_gettime(CLOCK_MONOTONIC, &t);
			spent = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
			if (!left || spent >= wait_ms || poll(pfd, n, wait_ms - (int)spent) < 0)
				break;
			for (int i = 0; i < n; i++) {
				if (pfd[i].fd >= 0 && pfd[i].revents) {
					pfd[i].fd = -pfd[i].fd - 1; /* done: poll ignores it */
					left--;
				}
			}
		}
		_exit(0);
	}
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status)) {
		test_fail(__FILE__, __LINE__, "client exited with status %d", status);
		return -1;
	}
	for (;;) {
		int c = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);

		if (c < 0)
			break;
		close(c);
		accepted++;
	}
	return accepted;
}

static void limits_set(struct rl_limits l)
{
	set_policy("0.0.0.0/0", l);
}

/* Run time of a program by the kernel's own statistics (enabled while stats_fd is open). */
static void prog_runtime(int prog_fd, uint64_t *ns, uint64_t *cnt)
{
	struct bpf_prog_info info;
	uint32_t len = sizeof(info);

	memset(&info, 0, sizeof(info));
	*ns = *cnt = 0;
	if (!bpf_obj_get_info_by_fd(prog_fd, &info, &len)) {
		*ns = info.run_time_ns;
		*cnt = info.run_cnt;
	}
}

static void test_live(enum rl_attach_mode mode, const char *name, enum rl_attached want)
{
	bool tc = mode == RL_ATTACH_TC;
	uint64_t ns0, cnt0, ns1, cnt1;
	int stats_fd;
	struct rl_counters c;
	uint16_t port = 0;
	int lfd = -1, ifindex, err, got;

	if (!netns_setup()) {
		test_skip(name, "%s", netns_why);
		return;
	}
	if (!setup(name, false))
		return;
	rl_clock_override(rl, 0);
	if (netns_enter(ns_gw)) {
		test_fail(__FILE__, __LINE__, "cannot enter %s", ns_gw);
		goto out;
	}
	ifindex = (int)if_nametoindex(veth_gw);
	lfd = listener(&port);
	CHECK(ifindex > 0 && lfd >= 0);
	if (test_failed())
		goto out;
	CHECK_INT(rl_port_set(rl, port, RL_PORT_TCP), 0);
	limits_set((struct rl_limits){.syn_rate = 1, .syn_burst = 5});
	err = rl_attach(rl, ifindex, mode);
	CHECK_MSG(!err, "rl_attach(%s): %s", veth_gw, strerror(-err));
	if (err)
		goto out;
	CHECK_STR(rl_attached_name(rl_attached_as(rl, ifindex)), rl_attached_name(want));
	stats_fd = bpf_enable_stats(BPF_STATS_RUN_TIME);
	prog_runtime(rl_prog_fd(rl, tc), &ns0, &cnt0);

	/* 20 connections from A against a burst of 5 at 1/s: the excess never gets accepted. */
	got = client_burst(lfd, port, SRC_A, 20, 300);
	CHECK_MSG(got >= 5 && got <= 6, "source A: %d connections accepted, expected 5 (or 6)",
		  got);
	c = counters();
	CHECK_MSG(c.dropped[RL_REASON_SYN_RATE] >= (uint64_t)(20 - got),
		  "%llu SYNs dropped for %d refused connections",
		  (unsigned long long)c.dropped[RL_REASON_SYN_RATE], 20 - got);
	/* Another source has its own bucket. */
	CHECK_INT(client_burst(lfd, port, SRC_B, 3, 300), 3);
	if (mode == RL_ATTACH_TC) {
		/* A live policy change, no reattachment. A's bucket is empty; under the new
		 * policy it is full again after burst / rate = 100 ms. */
		limits_set((struct rl_limits){.syn_rate = 1000, .syn_burst = 100});
		usleep(150 * 1000);
		CHECK_INT(client_burst(lfd, port, SRC_A, 20, 300), 20);
		CHECK_STR(rl_attached_name(rl_attached_as(rl, ifindex)), rl_attached_name(want));
		/* Other ports of the gateway host are not the limiter's business. */
		limits_set((struct rl_limits){.syn_rate = 1, .syn_burst = 1});
		{
			struct rl_prefix all = pfx("0.0.0.0/0");

			CHECK_INT(rl_deny_add(rl, &all), 0);
			CHECK_INT(rl_port_set(rl, port, 0), 0);
			CHECK_INT(client_burst(lfd, port, SRC_A, 4, 300), 4);
			CHECK_INT(rl_port_set(rl, port, RL_PORT_TCP), 0);
			CHECK_INT(client_burst(lfd, port, SRC_A, 4, 300), 0);
			CHECK_INT(rl_deny_del(rl, &all), 0);
		}
	}
	prog_runtime(rl_prog_fd(rl, tc), &ns1, &cnt1);
	if (stats_fd >= 0 && cnt1 > cnt0) {
		char what[96];

		snprintf(what, sizeof(what), "live veth (%s), %llu runs, cold caches (bpf_stats)",
			 rl_attached_name(want), (unsigned long long)(cnt1 - cnt0));
		printf("# perf %-4s %-52s %4.0f ns/packet\n", tc ? "tc" : "xdp", what,
		       (double)(ns1 - ns0) / (double)(cnt1 - cnt0));
	}
	if (stats_fd >= 0)
		close(stats_fd);
	/* Detached: nothing is limited any more. */
	CHECK_INT(rl_detach(rl, ifindex), 0);
	limits_set((struct rl_limits){.syn_rate = 1, .syn_burst = 1});
	CHECK_INT(client_burst(lfd, port, SRC_A, 5, 300), 5);
	test_end();
out:
	if (lfd >= 0)
		close(lfd);
	rl_close(rl);
	rl = NULL;
	setns(orig_ns, CLONE_NEWNET);
	test_end();
}

static int tcx_count(int ifindex)
{
	LIBBPF_OPTS(bpf_prog_query_opts, q);

	if (bpf_prog_query_opts(ifindex, (enum bpf_attach_type)TCX_INGRESS_TYPE, &q))
		return -errno;
	return (int)q.prog_cnt;
}

/* A loader killed with SIGKILL: its tcx link goes with it, a netlink tc filter does not, and
 * the next rl_attach() removes that stale filter. */
static void test_crash_cleanup(void)
{
	const char *name = "crash_cleanup";
	int pipefd[2], ifindex, status;
	char byte = 0;
	pid_t child;

	if (!netns_setup()) {
		test_skip(name, "%s", netns_why);
		return;
	}
	if (!setup(name, true))
		return;
	if (netns_enter(ns_gw) || pipe(pipefd)) {
		test_fail(__FILE__, __LINE__, "cannot enter %s", ns_gw);
		goto out;
	}
	ifindex = (int)if_nametoindex(veth_gw);
	child = fork();
	if (child == 0) {
		struct rl *mine = NULL;
		char why[256];

		if (rl_open(&mine, NULL, why, sizeof(why)) ||
		    loader_tc_attach(rl_prog_fd(mine, true), ifindex) ||
		    loader_tcx_attach(rl_prog_fd(mine, true), ifindex) < 0)
			_exit(1);
		if (write(pipefd[1], "1", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(pipefd[1]);
	CHECK_INT(read(pipefd[0], &byte, 1), 1);
	close(pipefd[0]);
	CHECK_INT(tcx_count(ifindex), 1);
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	/* Link-based attachments are released with the process... */
	CHECK_INT(tcx_count(ifindex), 0);
	/* ...the netlink filter stays behind, enforcing a dead run's policy. */
	CHECK_INT(loader_tc_present(ifindex), 1);
	/* The next start removes it, then attaches by tcx. */
	CHECK_INT(rl_attach(rl, ifindex, RL_ATTACH_TC), 0);
	CHECK_INT(loader_tc_present(ifindex), 0);
	CHECK_INT(tcx_count(ifindex), 1);
	CHECK_STR(rl_attached_name(rl_attached_as(rl, ifindex)), "tcx");
	rl_close(rl);
	rl = NULL;
	CHECK_INT(tcx_count(ifindex), 0);
out:
	setns(orig_ns, CLONE_NEWNET);
	test_end();
}

/* The limiter loads as an unprivileged user holding exactly CAP_BPF, CAP_NET_ADMIN and
 * CAP_PERFMON, and not without CAP_PERFMON (the verifier's Spectre checks reject it). */
static void test_capabilities(void)
{
	const char *name = "load_with_exact_capabilities";
	const char *fmt = "setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=%s "
			  "--ambient-caps=%s %s --load-only >/dev/null 2>&1";
	char cmd[512], exe[64];
	int rc;

	if (geteuid() != 0 || system("command -v setpriv >/dev/null 2>&1") != 0) {
		test_skip(name, "needs root and setpriv(1) to drop to a capability set");
		return;
	}
	/* A copy the unprivileged user can execute wherever the build tree lives. */
	snprintf(exe, sizeof(exe), "/tmp/rl_caps_test.%d", getpid());
	snprintf(cmd, sizeof(cmd), "cp /proc/%d/exe %s && chmod 755 %s", getpid(), exe, exe);
	if (system(cmd) != 0) {
		test_skip(name, "cannot copy the test binary to /tmp");
		return;
	}
	test_begin(name);
	snprintf(cmd, sizeof(cmd), fmt, "+bpf,+net_admin,+perfmon", "+bpf,+net_admin,+perfmon",
		 exe);
	rc = system(cmd);
	CHECK_MSG(rc == 0, "load with CAP_BPF+CAP_NET_ADMIN+CAP_PERFMON: status %d", rc);
	snprintf(cmd, sizeof(cmd), fmt, "+bpf,+net_admin", "+bpf,+net_admin", exe);
	rc = system(cmd);
	CHECK_MSG(rc != 0, "loaded without CAP_PERFMON");
	unlink(exe);
	test_end();
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--load-only") == 0) {
		int err = rl_open(&rl, NULL, open_why, sizeof(open_why));

		if (err)
			fprintf(stderr, "%s\n", open_why);
		rl_close(rl);
		return err ? 1 : 0;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc > 1 && strcmp(argv[1], "--perf") == 0) {
		/* The cost table alone (perf/scenarios/ratelimit_bench.sh runs it several times). */
		test_perf();
		rl_close(rl);
		return test_exit_code();
	}
	test_gcra_refill(false);
	test_gcra_refill(true);
	test_syn_vs_packets();
	test_policy_change();
	test_bucket_prefixes();
	test_allow_deny(false);
	test_allow_deny(true);
	test_penalty();
	test_hints();
	test_clock_choice();
	test_coarse_clock();
	test_dry_run();
	test_other_traffic();
	test_malformed(false);
	test_malformed(true);
	test_events();
	test_bucket_cap();
	test_api();
	test_perf();
	rl_close(rl);
	rl = NULL;
	test_live(RL_ATTACH_TC, "live_tcx", RL_ATTACHED_TCX);
	test_live(RL_ATTACH_XDP, "live_xdp_native", RL_ATTACHED_XDP);
	test_live(RL_ATTACH_XDP_GENERIC, "live_xdp_generic", RL_ATTACHED_XDP_GENERIC);
	test_crash_cleanup();
	netns_cleanup();
	test_capabilities();
	return test_exit_code();
}
