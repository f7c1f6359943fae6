#include "ratelimit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "loader.h"
#include "ratelimit.skel.h"

#define RL_DEFAULT_BUCKETS 262144
#define RL_DEFAULT_PENALTY 65536
#define NSEC_PER_SEC 1000000000ull

struct rl_iface {
	int ifindex;
	int link_fd; /* -1 for the netlink fallback */
	enum rl_attached as;
};

struct rl {
	struct ratelimit_bpf *skel;
	struct ring_buffer *events;
	void (*on_event)(void *ctx, const struct rl_event *e);
	void *event_ctx;
	int ncpus;
	uint64_t tick_ns; /* resolution of bpf_ktime_get_coarse_ns */
	uint32_t policy_gen;
	uint32_t list_flags;	  /* RL_CFG_PENALTY/ALLOW/DENY: merged into every config write */
	uint32_t allow_n, deny_n; /* entries in the lists (both families) */
	struct rl_iface ifaces[RL_MAX_IFACES];
	int nifaces;
	/* rl_hint: per list and /16, how many entries overlap it, and the words last written. */
	uint32_t hint_count[RL_HINT_LISTS][RL_HINT_WORDS * 64];
	uint64_t hint_word[RL_HINT_LISTS][RL_HINT_WORDS];
};

static int rl_cfg_flag(struct rl *rl, uint32_t bit, bool on);
static int rl_hint_add(struct rl *rl, unsigned kind, uint8_t family, const uint8_t *addr,
		       unsigned plen, int delta);

/* The kernel's coarse clock advances once per tick (CONFIG_HZ), which CLOCK_MONOTONIC_COARSE
 * reports as its resolution. Unknown: assume the coarsest usual tick, HZ=100. */
static uint64_t rl_coarse_tick_ns(void)
{
	struct timespec res;

	if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) || (!res.tv_sec && !res.tv_nsec))
		return 10000000;
	return (uint64_t)res.tv_sec * NSEC_PER_SEC + (uint64_t)res.tv_nsec;
}

int rl_open(struct rl **out, const struct rl_open_opts *opts, char *why, size_t why_len)
{
	struct rl_settings defaults = {
		.new_buckets_per_sec = 100000,
		.events_per_sec = 1000,
		.event_interval_ns = NSEC_PER_SEC,
	};
	struct rl *rl;
	int err;

	*out = NULL;
	err = loader_probe(why, why_len);
	if (err)
		return err;
	rl = calloc(1, sizeof(*rl));
	if (!rl) {
		snprintf(why, why_len, "out of memory");
		return -ENOMEM;
	}
	rl->ncpus = libbpf_num_possible_cpus();
	if (rl->ncpus <= 0) {
		err = rl->ncpus ? rl->ncpus : -EINVAL;
		snprintf(why, why_len, "cannot count possible CPUs: %s", strerror(-err));
		goto err_free;
	}
	rl->tick_ns = rl_coarse_tick_ns();
	rl->skel = ratelimit_bpf__open();
	if (!rl->skel) {
		err = -errno;
		snprintf(why, why_len, "cannot open the BPF object: %s", strerror(-err));
		goto err_free;
	}
	err = bpf_map__set_max_entries(rl->skel->maps.rl_buckets, opts && opts->max_buckets
									  ? opts->max_buckets
									  : RL_DEFAULT_BUCKETS);
	if (!err)
		err = bpf_map__set_max_entries(rl->skel->maps.rl_penalty,
					       opts && opts->max_penalty ? opts->max_penalty
									 : RL_DEFAULT_PENALTY);
	/* Per-CPU LRU lists for the buckets: creating a never-seen source's bucket (and evicting
	 * one) then takes only this CPU's list lock instead of the shared one. The capacity is
	 * split evenly over the possible CPUs, so only where they are all present; elsewhere
	 * (hot-plug slots) the common list keeps all of it usable. */
	if (!err && get_nprocs_conf() == rl->ncpus) {
		struct bpf_map *b = rl->skel->maps.rl_buckets;

		err = bpf_map__set_map_flags(b, bpf_map__map_flags(b) | BPF_F_NO_COMMON_LRU);
	}
	if (err) {
		snprintf(why, why_len, "cannot size the maps: %s", strerror(-err));
		goto err_destroy;
	}
	err = ratelimit_bpf__load(rl->skel);
	if (err) {
		snprintf(why, why_len,
			 "cannot load the BPF limiter (%s): needs CAP_BPF, CAP_NET_ADMIN, "
			 "CAP_PERFMON and a kernel with BTF",
			 strerror(-err));
		goto err_destroy;
	}
	err = rl_settings_set(rl, &defaults);
	if (err) {
		snprintf(why, why_len, "cannot write the settings: %s", strerror(-err));
		goto err_destroy;
	}
	*out = rl;
	return 0;

err_destroy:
	ratelimit_bpf__destroy(rl->skel);
err_free:
	free(rl);
	return err;
}

void rl_close(struct rl *rl)
{
	if (!rl)
		return;
	while (rl->nifaces > 0)
		rl_detach(rl, rl->ifaces[rl->nifaces - 1].ifindex);
	ring_buffer__free(rl->events);
	ratelimit_bpf__destroy(rl->skel);
	free(rl);
}

static struct rl_iface *rl_iface_find(struct rl *rl, int ifindex)
{
	for (int i = 0; i < rl->nifaces; i++)
		if (rl->ifaces[i].ifindex == ifindex)
			return &rl->ifaces[i];
	return NULL;
}

static int rl_attach_tc(struct rl *rl, int ifindex, struct rl_iface *ifc)
{
	int prog_fd = bpf_program__fd(rl->skel->progs.rl_tc);
	int fd, err;

	fd = loader_tcx_attach(prog_fd, ifindex);
	if (fd >= 0) {
		ifc->link_fd = fd;
		ifc->as = RL_ATTACHED_TCX;
		return 0;
	}
	/* Kernels before 6.6 do not know the tcx attach type. */
	if (fd != -EINVAL && fd != -EOPNOTSUPP)
		return fd;
	err = loader_tc_attach(prog_fd, ifindex);
	if (err)
		return err;
	ifc->link_fd = -1;
	ifc->as = RL_ATTACHED_TC_NETLINK;
	return 0;
}

int rl_attach(struct rl *rl, int ifindex, enum rl_attach_mode mode)
{
	struct rl_iface ifc = {.ifindex = ifindex, .link_fd = -1};
	int xdp_fd = bpf_program__fd(rl->skel->progs.rl_xdp);
	int err = 0, fd;

	if (rl_iface_find(rl, ifindex))
		return -EEXIST;
	if (rl->nifaces == RL_MAX_IFACES)
		return -ENOSPC;
	/* A netlink filter from a crashed run would keep enforcing its stale policy next to
	 * ours: remove it whatever kind of attachment we make now. */
	err = loader_tc_cleanup(ifindex, "rl_tc");
	if (err < 0 && err != -ENOENT && err != -EINVAL)
		return err;
	err = 0;
	switch (mode) {
	case RL_ATTACH_AUTO:
		if (loader_is_physical(ifindex)) {
			fd = loader_xdp_attach(xdp_fd, ifindex, false);
			if (fd >= 0) {
				ifc.link_fd = fd;
				ifc.as = RL_ATTACHED_XDP;
				break;
			}
		}
		err = rl_attach_tc(rl, ifindex, &ifc);
		break;
	case RL_ATTACH_XDP:
	case RL_ATTACH_XDP_GENERIC:
		fd = loader_xdp_attach(xdp_fd, ifindex, mode == RL_ATTACH_XDP_GENERIC);
		if (fd < 0) {
			err = fd;
			break;
		}
		ifc.link_fd = fd;
		ifc.as = mode == RL_ATTACH_XDP ? RL_ATTACHED_XDP : RL_ATTACHED_XDP_GENERIC;
		break;
	case RL_ATTACH_TC:
		err = rl_attach_tc(rl, ifindex, &ifc);
		break;
	default:
		err = -EINVAL;
	}
	if (err)
		return err;
	rl->ifaces[rl->nifaces++] = ifc;
	return 0;
}

int rl_detach(struct rl *rl, int ifindex)
{
	struct rl_iface *ifc = rl_iface_find(rl, ifindex);
	int err = 0;

	if (!ifc)
		return -ENOENT;
	if (ifc->link_fd >= 0)
		close(ifc->link_fd);
	else if (ifc->as == RL_ATTACHED_TC_NETLINK)
		err = loader_tc_detach(ifindex);
	*ifc = rl->ifaces[--rl->nifaces];
	return err;
}

enum rl_attached rl_attached_as(struct rl *rl, int ifindex)
{
	struct rl_iface *ifc = rl_iface_find(rl, ifindex);

	return ifc ? ifc->as : RL_ATTACHED_NONE;
}

const char *rl_attached_name(enum rl_attached a)
{
	switch (a) {
	case RL_ATTACHED_XDP:
		return "xdp";
	case RL_ATTACHED_XDP_GENERIC:
		return "xdp-generic";
	case RL_ATTACHED_TCX:
		return "tcx";
	case RL_ATTACHED_TC_NETLINK:
		return "tc-netlink";
	default:
		return "none";
	}
}

/* ---- prefixes ---------------------------------------------------------------------------- */

static bool rl_prefix_host_bits_zero(const struct rl_prefix *p)
{
	int nbytes = p->family == RL_FAMILY_V4 ? 4 : 16;

	for (int i = 0; i < nbytes; i++) {
		int keep = (int)p->plen - i * 8;
		uint8_t mask = keep >= 8 ? 0xff : keep <= 0 ? 0 : (uint8_t)(0xff << (8 - keep));

		if (p->addr[i] & ~mask)
			return false;
	}
	return true;
}

int rl_prefix_parse(const char *s, struct rl_prefix *out)
{
	char buf[INET6_ADDRSTRLEN + 8];
	const char *slash;
	size_t alen;
	long plen = -1;

	memset(out, 0, sizeof(*out));
	slash = strchr(s, '/');
	alen = slash ? (size_t)(slash - s) : strlen(s);
	if (alen == 0 || alen >= INET6_ADDRSTRLEN)
		return -EINVAL;
	memcpy(buf, s, alen);
	buf[alen] = '\0';
	if (slash) {
		char *end;

		if (slash[1] < '0' || slash[1] > '9')
			return -EINVAL;
		errno = 0;
		plen = strtol(slash + 1, &end, 10);
		if (errno || *end)
			return -EINVAL;
	}
	if (inet_pton(AF_INET, buf, out->addr) == 1) {
		out->family = RL_FAMILY_V4;
		if (plen > 32)
			return -EINVAL;
		out->plen = plen < 0 ? 32 : (uint8_t)plen;
	} else if (inet_pton(AF_INET6, buf, out->addr) == 1) {
		out->family = RL_FAMILY_V6;
		if (plen > 128)
			return -EINVAL;
		out->plen = plen < 0 ? 128 : (uint8_t)plen;
	} else {
		return -EINVAL;
	}
	return rl_prefix_host_bits_zero(out) ? 0 : -EINVAL;
}

int rl_prefix_from_sockaddr(const struct sockaddr *sa, struct rl_prefix *out)
{
	memset(out, 0, sizeof(*out));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		out->family = RL_FAMILY_V4;
		out->plen = 32;
		memcpy(out->addr, &in->sin_addr, 4);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
			out->family = RL_FAMILY_V4;
			out->plen = 32;
			memcpy(out->addr, in6->sin6_addr.s6_addr + 12, 4);
			return 0;
		}
		out->family = RL_FAMILY_V6;
		out->plen = 128;
		memcpy(out->addr, &in6->sin6_addr, 16);
		return 0;
	}
	return -EAFNOSUPPORT;
}

const char *rl_prefix_format(const struct rl_prefix *p, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];

	if (!inet_ntop(p->family == RL_FAMILY_V4 ? AF_INET : AF_INET6, p->addr, a, sizeof(a)))
		snprintf(a, sizeof(a), "?");
	snprintf(buf, len, "%s/%u", a, p->plen);
	return buf;
}

/* ---- LPM tries -------------------------------------------------------------------------- */

union rl_lpm {
	struct rl_lpm_v4 v4;
	struct rl_lpm_v6 v6;
};

/* The LPM key of p and the trie of its family among the pair (v4, v6). */
static int rl_lpm_key(const struct rl_prefix *p, struct bpf_map *v4, struct bpf_map *v6,
		      union rl_lpm *key, struct bpf_map **map)
{
	memset(key, 0, sizeof(*key));
	if (p->family == RL_FAMILY_V4 && p->plen <= 32) {
		key->v4.prefixlen = p->plen;
		memcpy(key->v4.addr, p->addr, 4);
		*map = v4;
		return 0;
	}
	if (p->family == RL_FAMILY_V6 && p->plen <= 128) {
		key->v6.prefixlen = p->plen;
		memcpy(key->v6.addr, p->addr, 16);
		*map = v6;
		return 0;
	}
	return -EINVAL;
}

static int rl_lpm_update(const struct rl_prefix *p, struct bpf_map *v4, struct bpf_map *v6,
			 const void *value)
{
	struct bpf_map *map;
	union rl_lpm key;
	int err = rl_lpm_key(p, v4, v6, &key, &map);

	if (err)
		return err;
	return bpf_map_update_elem(bpf_map__fd(map), &key, value, BPF_ANY) ? -errno : 0;
}

static int rl_lpm_delete(const struct rl_prefix *p, struct bpf_map *v4, struct bpf_map *v6)
{
	struct bpf_map *map;
	union rl_lpm key;
	int err = rl_lpm_key(p, v4, v6, &key, &map);

	if (err)
		return err;
	return bpf_map_delete_elem(bpf_map__fd(map), &key) ? -errno : 0;
}

static uint64_t rl_interval_ns(uint32_t rate)
{
	return rate ? (NSEC_PER_SEC + rate - 1) / rate : 0;
}

/* Whether a bucket's window is wide enough for the coarse clock (RL_POLICY_COARSE_OK). */
static bool rl_coarse_ok(const struct rl *rl, uint64_t interval, uint64_t tolerance)
{
	return !interval || interval + tolerance >= RL_COARSE_MIN_TICKS * rl->tick_ns;
}

int rl_policy_set(struct rl *rl, const struct rl_prefix *p, const struct rl_limits *l)
{
	struct rl_policy pol = {0};
	uint32_t max_plen = p->family == RL_FAMILY_V4 ? 32 : 128;

	if (l->syn_rate > NSEC_PER_SEC || l->pkt_rate > NSEC_PER_SEC || l->bucket_plen > max_plen)
		return -EINVAL;
	pol.syn_interval_ns = rl_interval_ns(l->syn_rate);
	pol.syn_tolerance_ns = pol.syn_interval_ns * (l->syn_burst ? l->syn_burst - 1 : 0);
	pol.pkt_interval_ns = rl_interval_ns(l->pkt_rate);
	pol.pkt_tolerance_ns = pol.pkt_interval_ns * (l->pkt_burst ? l->pkt_burst - 1 : 0);
	pol.bucket_plen = l->bucket_plen ? l->bucket_plen : p->family == RL_FAMILY_V4 ? 32 : 64;
	if (rl_coarse_ok(rl, pol.syn_interval_ns, pol.syn_tolerance_ns) &&
	    rl_coarse_ok(rl, pol.pkt_interval_ns, pol.pkt_tolerance_ns))
		pol.flags |= RL_POLICY_COARSE_OK;
	pol.gen = ++rl->policy_gen;
	pol.updated_ns = rl_clock_now(rl);
	return rl_lpm_update(p, rl->skel->maps.rl_policy_v4, rl->skel->maps.rl_policy_v6, &pol);
}

int rl_policy_del(struct rl *rl, const struct rl_prefix *p)
{
	return rl_lpm_delete(p, rl->skel->maps.rl_policy_v4, rl->skel->maps.rl_policy_v6);
}

/* Adds or replaces an entry of a list; counts new ones so the program can skip an empty list. */
static int rl_list_add(struct rl *rl, const struct rl_prefix *p, struct bpf_map *v4,
		       struct bpf_map *v6, uint32_t *count, uint32_t bit)
{
	uint32_t one = 1;
	struct bpf_map *map;
	union rl_lpm key;
	int err = rl_lpm_key(p, v4, v6, &key, &map);

	if (err)
		return err;
	if (!bpf_map_update_elem(bpf_map__fd(map), &key, &one, BPF_NOEXIST)) {
		++*count;
		/* After the entry exists: the program never looks for an entry that is not there
		 * yet. */
		err = rl_hint_add(rl, bit == RL_CFG_ALLOW ? RL_HINT_ALLOW : RL_HINT_DENY, p->family,
				  p->addr, p->plen, 1);
		if (err)
			return err;
	} else if (errno != EEXIST) {
		return -errno;
	}
	return rl_cfg_flag(rl, bit, true);
}

static int rl_list_del(struct rl *rl, const struct rl_prefix *p, struct bpf_map *v4,
		       struct bpf_map *v6, uint32_t *count, uint32_t bit)
{
	int err = rl_lpm_delete(p, v4, v6);

	if (err)
		return err;
	err = rl_hint_add(rl, bit == RL_CFG_ALLOW ? RL_HINT_ALLOW : RL_HINT_DENY, p->family,
			  p->addr, p->plen, -1);
	if (err)
		return err;
	if (*count && --*count == 0)
		return rl_cfg_flag(rl, bit, false);
	return 0;
}

int rl_allow_add(struct rl *rl, const struct rl_prefix *p)
{
	return rl_list_add(rl, p, rl->skel->maps.rl_allow_v4, rl->skel->maps.rl_allow_v6,
			   &rl->allow_n, RL_CFG_ALLOW);
}

int rl_allow_del(struct rl *rl, const struct rl_prefix *p)
{
	return rl_list_del(rl, p, rl->skel->maps.rl_allow_v4, rl->skel->maps.rl_allow_v6,
			   &rl->allow_n, RL_CFG_ALLOW);
}

int rl_deny_add(struct rl *rl, const struct rl_prefix *p)
{
	return rl_list_add(rl, p, rl->skel->maps.rl_deny_v4, rl->skel->maps.rl_deny_v6, &rl->deny_n,
			   RL_CFG_DENY);
}

int rl_deny_del(struct rl *rl, const struct rl_prefix *p)
{
	return rl_list_del(rl, p, rl->skel->maps.rl_deny_v4, rl->skel->maps.rl_deny_v6, &rl->deny_n,
			   RL_CFG_DENY);
}

/* ---- penalty box ------------------------------------------------------------------------ */

/* The bucket key the program computes for src: masked to its policy's bucket_plen. */
static int rl_bucket_key(struct rl *rl, const struct rl_prefix *src, struct rl_key *key)
{
	struct rl_prefix host = *src;
	struct rl_policy pol;
	struct bpf_map *map;
	union rl_lpm lk;
	uint32_t plen;
	int err;

	host.plen = src->family == RL_FAMILY_V4 ? 32 : 128;
	err = rl_lpm_key(&host, rl->skel->maps.rl_policy_v4, rl->skel->maps.rl_policy_v6, &lk,
			 &map);
	if (err)
		return err;
	/* A lookup from userspace on an LPM trie is a longest-prefix match, as in the program. */
	if (!bpf_map_lookup_elem(bpf_map__fd(map), &lk, &pol))
		plen = pol.bucket_plen;
	else
		plen = src->family == RL_FAMILY_V4 ? 32 : 64;
	if (plen > host.plen)
		plen = host.plen;
	memset(key, 0, sizeof(*key));
	key->family = src->family;
	key->plen = (uint8_t)plen;
	for (uint32_t i = 0; i < (src->family == RL_FAMILY_V4 ? 4u : 16u); i++) {
		int keep = (int)plen - (int)i * 8;

		key->addr[i] = src->addr[i] & (keep >= 8   ? 0xff
					       : keep <= 0 ? 0
							   : (uint8_t)(0xff << (8 - keep)));
	}
	return 0;
}

/* ---- /16 hints (rl_hint in ratelimit.h) ------------------------------------------------ */

/* Writes the words w0..w1 of a list whose bits changed since they were last written. */
static int rl_hint_write(struct rl *rl, unsigned list, uint32_t w0, uint32_t w1)
{
	int fd = bpf_map__fd(rl->skel->maps.rl_hint);

	for (uint32_t w = w0; w <= w1; w++) {
		uint32_t key = list * RL_HINT_WORDS + w;
		uint64_t word = 0;

		for (int b = 0; b < 64; b++)
			if (rl->hint_count[list][w * 64 + b])
				word |= 1ull << b;
		if (word == rl->hint_word[list][w])
			continue;
		if (bpf_map_update_elem(fd, &key, &word, BPF_ANY))
			return -errno;
		rl->hint_word[list][w] = word;
	}
	return 0;
}

/* Counts (delta 1) or uncounts (-1) an entry addr/plen in every /16 it overlaps; returns the
 * list and, in *first and *n, the /16s touched. Writes nothing. */
static unsigned rl_hint_count(struct rl *rl, unsigned kind, uint8_t family, const uint8_t *addr,
			      unsigned plen, int delta, uint32_t *first, uint32_t *n)
{
	unsigned list = kind + (family == RL_FAMILY_V4 ? 0 : RL_HINT_V6);
	uint32_t *cnt = rl->hint_count[list];

	*n = plen >= 16 ? 1 : 1u << (16 - plen);
	*first = ((uint32_t)addr[0] << 8 | addr[1]) & ~(*n - 1);
	for (uint32_t i = *first; i < *first + *n; i++) {
		if (delta > 0)
			cnt[i]++;
		else if (cnt[i])
			cnt[i]--;
	}
	return list;
}

/* rl_hint_count, then writes the words that changed. */
static int rl_hint_add(struct rl *rl, unsigned kind, uint8_t family, const uint8_t *addr,
		       unsigned plen, int delta)
{
	uint32_t first, n;
	unsigned list = rl_hint_count(rl, kind, family, addr, plen, delta, &first, &n);

	return rl_hint_write(rl, list, first / 64, (first + n - 1) / 64);
}

static int rl_cfg_flag(struct rl *rl, uint32_t bit, bool on)
{
	struct rl_settings cur;
	uint32_t old = rl->list_flags;
	int err;

	if (!!(old & bit) == on)
		return 0;
	err = rl_settings_get(rl, &cur);
	if (err)
		return err;
	rl->list_flags = on ? old | bit : old & ~bit;
	err = rl_settings_set(rl, &cur);
	if (err)
		rl->list_flags = old;
	return err;
}

int rl_penalty_add(struct rl *rl, const struct rl_prefix *src, uint64_t ttl_ns)
{
	struct rl_penalty pen = {.until_ns = rl_clock_now(rl) + ttl_ns}, old;
	int fd = bpf_map__fd(rl->skel->maps.rl_penalty);
	struct rl_key key;
	bool existed;
	int err = rl_bucket_key(rl, src, &key);

	if (err)
		return err;
	existed = !bpf_map_lookup_elem(fd, &key, &old);
	if (bpf_map_update_elem(fd, &key, &pen, BPF_ANY))
		return -errno;
	/* After the entry exists: the program never looks for an entry that is not there yet. */
	if (!existed) {
		err = rl_hint_add(rl, RL_HINT_PENALTY, key.family, key.addr, key.plen, 1);
		if (err)
			return err;
	}
	return rl_cfg_flag(rl, RL_CFG_PENALTY, true);
}

int rl_penalty_del(struct rl *rl, const struct rl_prefix *src)
{
	struct rl_key key;
	int err = rl_bucket_key(rl, src, &key);

	if (err)
		return err;
	if (bpf_map_delete_elem(bpf_map__fd(rl->skel->maps.rl_penalty), &key))
		return -errno;
	return rl_hint_add(rl, RL_HINT_PENALTY, key.family, key.addr, key.plen, -1);
}

int rl_penalty_sweep(struct rl *rl)
{
	struct bpf_map *map = rl->skel->maps.rl_penalty;
	uint32_t max = bpf_map__max_entries(map);
	int fd = bpf_map__fd(map), live = 0;
	uint64_t now = rl_clock_now(rl);
	struct rl_penalty pen;
	struct rl_key *keys;
	size_t n = 0;

	keys = calloc(max, sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	/* Keys first, deletions after: deleting while walking a hash map restarts the walk. The
	 * program deletes expired entries too; a walk that restarts because of it is bounded by
	 * max and a key seen twice is harmless. */
	while (n < max && !bpf_map_get_next_key(fd, n ? &keys[n - 1] : NULL, &keys[n]))
		n++;
	/* The hint counts start over from the live entries: those the program deleted (expired)
	 * or the LRU evicted were never uncounted. */
	memset(rl->hint_count[RL_HINT_PENALTY], 0, sizeof(rl->hint_count[0]));
	memset(rl->hint_count[RL_HINT_V6 + RL_HINT_PENALTY], 0, sizeof(rl->hint_count[0]));
	for (size_t i = 0; i < n; i++) {
		if (bpf_map_lookup_elem(fd, &keys[i], &pen))
			continue;
		if (pen.until_ns > now) {
			uint32_t first, cnt;

			live++;
			rl_hint_count(rl, RL_HINT_PENALTY, keys[i].family, keys[i].addr,
				      keys[i].plen, 1, &first, &cnt);
		} else {
			bpf_map_delete_elem(fd, &keys[i]);
		}
	}
	free(keys);
	/* Only once every live entry is counted again: no bit of one is ever cleared. */
	{
		int err = rl_hint_write(rl, RL_HINT_PENALTY, 0, RL_HINT_WORDS - 1);

		if (!err)
			err = rl_hint_write(rl, RL_HINT_V6 + RL_HINT_PENALTY, 0, RL_HINT_WORDS - 1);
		if (err)
			return err;
	}
	if (!live) {
		int err = rl_cfg_flag(rl, RL_CFG_PENALTY, false);

		if (err)
			return err;
	}
	return live;
}

int rl_penalty_list(struct rl *rl, struct rl_penalty_entry *out, unsigned max)
{
	int fd = bpf_map__fd(rl->skel->maps.rl_penalty);
	uint64_t now = rl_clock_now(rl);
	struct rl_key key, prev;
	struct rl_penalty pen;
	unsigned n = 0, walked = 0, limit = bpf_map__max_entries(rl->skel->maps.rl_penalty);

	/* A walk that restarts (the program deleted an entry) is bounded by the map size. */
	while (n < max && walked++ < limit &&
	       !bpf_map_get_next_key(fd, walked > 1 ? &prev : NULL, &key)) {
		prev = key;
		if (bpf_map_lookup_elem(fd, &key, &pen) || pen.until_ns <= now)
			continue;
		out[n].src.family = key.family;
		out[n].src.plen = key.plen;
		memcpy(out[n].src.addr, key.addr, sizeof(key.addr));
		out[n].ttl_ns = pen.until_ns - now;
		n++;
	}
	return (int)n;
}

/* ---- ports, settings, counters ---------------------------------------------------------- */

int rl_port_set(struct rl *rl, uint16_t port, uint32_t protos)
{
	uint32_t key = port;

	if (protos & ~(RL_PORT_TCP | RL_PORT_UDP))
		return -EINVAL;
	return bpf_map_update_elem(bpf_map__fd(rl->skel->maps.rl_ports), &key, &protos, BPF_ANY)
		       ? -errno
		       : 0;
}

int rl_settings_get(struct rl *rl, struct rl_settings *out)
{
	struct rl_config cfg;
	uint32_t zero = 0;

	if (bpf_map_lookup_elem(bpf_map__fd(rl->skel->maps.rl_config), &zero, &cfg))
		return -errno;
	out->dry_run = cfg.flags & RL_CFG_DRY_RUN;
	out->cap_drop = cfg.flags & RL_CFG_CAP_DROP;
	out->coarse_clock = cfg.flags & RL_CFG_COARSE_CLOCK;
	out->precise_clock = cfg.flags & RL_CFG_PRECISE_CLOCK;
	out->new_buckets_per_sec = cfg.new_buckets_per_sec;
	out->events_per_sec = cfg.events_per_sec;
	out->event_interval_ns = cfg.event_interval_ns;
	return 0;
}

int rl_settings_set(struct rl *rl, const struct rl_settings *s)
{
	struct rl_config cfg = {
		.flags = (s->dry_run ? RL_CFG_DRY_RUN : 0) | (s->cap_drop ? RL_CFG_CAP_DROP : 0) |
			 (s->coarse_clock ? RL_CFG_COARSE_CLOCK : 0) |
			 (s->precise_clock ? RL_CFG_PRECISE_CLOCK : 0) | rl->list_flags,
		.new_buckets_per_sec = s->new_buckets_per_sec,
		.events_per_sec = s->events_per_sec,
		.event_interval_ns = s->event_interval_ns,
	};
	uint32_t zero = 0;

	return bpf_map_update_elem(bpf_map__fd(rl->skel->maps.rl_config), &zero, &cfg, BPF_ANY)
		       ? -errno
		       : 0;
}

int rl_counters_read(struct rl *rl, struct rl_counters *out)
{
	size_t n = sizeof(struct rl_counters) / sizeof(uint64_t);
	struct rl_counters *percpu;
	uint32_t zero = 0;
	int err = 0;

	memset(out, 0, sizeof(*out));
	percpu = calloc(rl->ncpus, sizeof(*percpu));
	if (!percpu)
		return -ENOMEM;
	if (bpf_map_lookup_elem(bpf_map__fd(rl->skel->maps.rl_counters), &zero, percpu)) {
		err = -errno;
		goto out;
	}
	for (int cpu = 0; cpu < rl->ncpus; cpu++) {
		const uint64_t *src = (const uint64_t *)&percpu[cpu];
		uint64_t *dst = (uint64_t *)out;

		for (size_t i = 0; i < n; i++)
			dst[i] += src[i];
	}
out:
	free(percpu);
	return err;
}

/* ---- events ----------------------------------------------------------------------------- */

static int rl_on_ring(void *ctx, void *data, size_t size)
{
	struct rl *rl = ctx;

	if (size >= sizeof(struct rl_event) && rl->on_event)
		rl->on_event(rl->event_ctx, data);
	return 0;
}

int rl_events_start(struct rl *rl, void (*on_event)(void *ctx, const struct rl_event *e), void *ctx)
{
	if (rl->events)
		return -EALREADY;
	rl->on_event = on_event;
	rl->event_ctx = ctx;
	rl->events = ring_buffer__new(bpf_map__fd(rl->skel->maps.rl_events), rl_on_ring, rl, NULL);
	return rl->events ? 0 : -errno;
}

int rl_events_fd(struct rl *rl)
{
	return rl->events ? ring_buffer__epoll_fd(rl->events) : -EINVAL;
}

int rl_events_consume(struct rl *rl)
{
	return rl->events ? ring_buffer__consume(rl->events) : -EINVAL;
}

int rl_events_poll(struct rl *rl, int timeout_ms)
{
	return rl->events ? ring_buffer__poll(rl->events, timeout_ms) : -EINVAL;
}

/* ---- test hooks ------------------------------------------------------------------------- */

int rl_prog_fd(struct rl *rl, bool tc)
{
	return bpf_program__fd(tc ? rl->skel->progs.rl_tc : rl->skel->progs.rl_xdp);
}

void rl_clock_override(struct rl *rl, uint64_t now_ns)
{
	*(volatile uint64_t *)&rl->skel->bss->rl_clock_override = now_ns;
}

uint64_t rl_clock_now(struct rl *rl)
{
	uint64_t t = *(volatile uint64_t *)&rl->skel->bss->rl_clock_override;
	struct timespec ts;

	if (t)
		return t;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NSEC_PER_SEC + (uint64_t)ts.tv_nsec;
}
