#include "ratelimit.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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
	uint32_t policy_gen;
	uint32_t list_flags;	  /* RL_CFG_PENALTY/ALLOW/DENY: merged into every config write */
	uint32_t allow_n, deny_n; /* entries in the lists (both families) */
	struct rl_iface ifaces[RL_MAX_IFACES];
	int nifaces;
};

static int rl_cfg_flag(struct rl *rl, uint32_t bit, bool on);

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
	if (!bpf_map_update_elem(bpf_map__fd(map), &key, &one, BPF_NOEXIST))
		++*count;
	else if (errno != EEXIST)
		return -errno;
	/* After the entry exists: the program never looks for an entry that is not there yet. */
	return rl_cfg_flag(rl, bit, true);
}

static int rl_list_del(struct rl *rl, const struct rl_prefix *p, struct bpf_map *v4,
		       struct bpf_map *v6, uint32_t *count, uint32_t bit)
{
	int err = rl_lpm_delete(p, v4, v6);

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
	struct rl_penalty pen = {.until_ns = rl_clock_now(rl) + ttl_ns};
	struct rl_key key;
	int err = rl_bucket_key(rl, src, &key);

	if (err)
		return err;
	if (bpf_map_update_elem(bpf_map__fd(rl->skel->maps.rl_penalty), &key, &pen, BPF_ANY))
		return -errno;
	/* After the entry exists: the program never looks for an entry that is not there yet. */
	return rl_cfg_flag(rl, RL_CFG_PENALTY, true);
}

int rl_penalty_del(struct rl *rl, const struct rl_prefix *src)
{
	struct rl_key key;
	int err = rl_bucket_key(rl, src, &key);

	if (err)
		return err;
	return bpf_map_delete_elem(bpf_map__fd(rl->skel->maps.rl_penalty), &key) ? -errno : 0;
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
	for (size_t i = 0; i < n; i++) {
		if (bpf_map_lookup_elem(fd, &keys[i], &pen))
			continue;
		if (pen.until_ns > now)
			live++;
		else
			bpf_map_delete_elem(fd, &keys[i]);
	}
	free(keys);
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
	out->new_buckets_per_sec = cfg.new_buckets_per_sec;
	out->events_per_sec = cfg.events_per_sec;
	out->event_interval_ns = cfg.event_interval_ns;
	return 0;
}

int rl_settings_set(struct rl *rl, const struct rl_settings *s)
{
	struct rl_config cfg = {
		.flags = (s->dry_run ? RL_CFG_DRY_RUN : 0) | (s->cap_drop ? RL_CFG_CAP_DROP : 0) |
			 (s->coarse_clock ? RL_CFG_COARSE_CLOCK : 0) | rl->list_flags,
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
