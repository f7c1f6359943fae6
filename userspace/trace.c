#include "trace.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>

#include "trace.skel.h"

struct trace {
	struct trace_bpf *skel;
	struct bpf_link *links[6];
	struct bpf_link *rtt_iter; /* NULL: no iterator, RTT from handshakes only */
	int n_links;
	bool has_sockops, has_drops;
	char missing[256];
	struct ring_buffer *events;
	void (*on_event)(void *ctx, const struct tr_event *e);
	void *event_ctx;
	int ncpus;
	char *drop_names[TR_DROP_REASONS]; /* from the kernel's BTF: "no_socket", ... */
};

static void load_drop_names(struct trace *t);

static void note_missing(struct trace *t, const char *what, int err)
{
	size_t n = strlen(t->missing);

	snprintf(t->missing + n, sizeof(t->missing) - n, "%s%s: %s", n ? "; " : "", what,
		 strerror(-err));
}

/* The caller's cgroup v2 directory ("0::/path" in /proc/self/cgroup). */
static int own_cgroup(char *out, size_t len)
{
	static const char *const roots[] = {"/sys/fs/cgroup/unified", "/sys/fs/cgroup"};
	char line[512];
	FILE *f = fopen("/proc/self/cgroup", "re");
	int rc = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3))
			continue;
		line[strcspn(line, "\n")] = 0;
		for (unsigned i = 0; i < 2; i++) {
			char probe[600];
			struct stat st;

			snprintf(probe, sizeof(probe), "%s/cgroup.controllers", roots[i]);
			if (stat(probe, &st))
				continue;
			snprintf(out, len, "%s%.400s", roots[i], line + 3);
			rc = 0;
			break;
		}
		break;
	}
	fclose(f);
	return rc;
}

static int attach_one(struct trace *t, struct bpf_program *p, const char *what)
{
	struct bpf_link *l = bpf_program__attach(p);

	if (!l) {
		int err = -errno;

		note_missing(t, what, err);
		return err;
	}
	t->links[t->n_links++] = l;
	return 0;
}

int trace_open(struct trace **out, const struct trace_open_opts *o, char *why, size_t why_len)
{
	struct trace_open_opts def = {0};
	struct tr_config cfg = {0};
	struct trace *t;
	struct stat st;
	int err;

	*out = NULL;
	if (!o)
		o = &def;
	if (access("/sys/kernel/btf/vmlinux", R_OK)) {
		snprintf(why, why_len, "kernel has no BTF (/sys/kernel/btf/vmlinux): %s",
			 strerror(errno));
		return -ENOENT;
	}
	t = calloc(1, sizeof(*t));
	if (!t) {
		snprintf(why, why_len, "out of memory");
		return -ENOMEM;
	}
	t->ncpus = libbpf_num_possible_cpus();
	if (t->ncpus <= 0) {
		err = t->ncpus ? t->ncpus : -EINVAL;
		snprintf(why, why_len, "cannot count possible CPUs: %s", strerror(-err));
		goto fail;
	}
	t->skel = trace_bpf__open();
	if (!t->skel) {
		err = -errno;
		snprintf(why, why_len, "cannot open the BPF object: %s", strerror(-err));
		goto fail;
	}
	err = trace_bpf__load(t->skel);
	if (err) {
		snprintf(why, why_len,
			 "cannot load the tracer (%s): needs CAP_BPF and CAP_PERFMON, and BTF",
			 strerror(-err));
		goto fail;
	}

	cfg.netns_ino = o->netns_ino;
	if (!cfg.netns_ino && !stat("/proc/self/ns/net", &st))
		cfg.netns_ino = st.st_ino;
	cfg.slow_connect_ns = o->slow_connect_ns ? o->slow_connect_ns : 200000000ull;
	cfg.events_per_sec = o->events_per_sec ? o->events_per_sec : 1000;
	cfg.v4_plen = o->v4_plen ? o->v4_plen : 24;
	cfg.v6_plen = o->v6_plen ? o->v6_plen : 64;
	err = trace_config_set(t, &cfg);
	if (err) {
		snprintf(why, why_len, "cannot write the tracer config: %s", strerror(-err));
		goto fail;
	}

	/* The lifecycle, retransmit and reset hooks are the tracer: without them, nothing. */
	if ((err = attach_one(t, t->skel->progs.tr_state, "inet_sock_set_state")) ||
	    (err = attach_one(t, t->skel->progs.tr_retransmit, "tcp_retransmit_skb")) ||
	    (err = attach_one(t, t->skel->progs.tr_send_reset, "tcp_send_reset")) ||
	    (err = attach_one(t, t->skel->progs.tr_receive_reset, "tcp_receive_reset"))) {
		snprintf(why, why_len, "cannot attach the tracer: %s", t->missing);
		goto fail;
	}
	t->has_drops = !attach_one(t, t->skel->progs.tr_drop, "kfree_skb");
	if (t->has_drops)
		load_drop_names(t);

	{
		union bpf_iter_link_info li = {.map.map_fd = bpf_map__fd(t->skel->maps.tr_rtt)};
		LIBBPF_OPTS(bpf_iter_attach_opts, io, .link_info = &li,
			    .link_info_len = sizeof(li));

		t->rtt_iter = bpf_program__attach_iter(t->skel->progs.tr_rtt_iter, &io);
		if (!t->rtt_iter)
			note_missing(t, "rtt iterator", -errno);
	}

	if (!o->cgroup || o->cgroup[0]) {
		char path[512];
		int fd;

		err = 0;
		if (o->cgroup)
			snprintf(path, sizeof(path), "%s", o->cgroup);
		else
			err = own_cgroup(path, sizeof(path));
		if (err) {
			note_missing(t, "sockops (no cgroup v2)", err);
		} else if ((fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
			note_missing(t, "sockops (cgroup)", -errno);
		} else {
			struct bpf_link *l =
				bpf_program__attach_cgroup(t->skel->progs.tr_sockops, fd);

			if (l) {
				t->links[t->n_links++] = l;
				t->has_sockops = true;
			} else {
				note_missing(t, "sockops", -errno);
			}
			close(fd);
		}
	}
	*out = t;
	return 0;
fail:
	trace_close(t);
	return err;
}

/* The names of enum skb_drop_reason from the running kernel's BTF (they change between
 * kernels; the numbers are only meaningful with them). */
static void load_drop_names(struct trace *t)
{
	struct btf *btf = btf__load_vmlinux_btf();
	const struct btf_type *ty;
	const struct btf_enum *e;
	int id;

	if (!btf)
		return;
	id = btf__find_by_name_kind(btf, "skb_drop_reason", BTF_KIND_ENUM);
	ty = id > 0 ? btf__type_by_id(btf, id) : NULL;
	for (unsigned i = 0; ty && i < btf_vlen(ty); i++) {
		const char *n;
		char *c;

		e = btf_enum(ty) + i;
		if (e->val < 0 || e->val >= TR_DROP_REASONS || t->drop_names[e->val])
			continue;
		n = btf__name_by_offset(btf, e->name_off);
		if (!n)
			continue;
		if (!strncmp(n, "SKB_DROP_REASON_", 16))
			n += 16;
		c = strdup(n);
		for (char *q = c; q && *q; q++)
			*q = (char)(*q >= 'A' && *q <= 'Z' ? *q - 'A' + 'a' : *q);
		t->drop_names[e->val] = c;
	}
	btf__free(btf);
}

const char *trace_drop_reason_name(const struct trace *t, unsigned reason)
{
	return reason < TR_DROP_REASONS && t->drop_names[reason] ? t->drop_names[reason] : NULL;
}

void trace_close(struct trace *t)
{
	if (!t)
		return;
	for (unsigned i = 0; i < TR_DROP_REASONS; i++)
		free(t->drop_names[i]);
	ring_buffer__free(t->events);
	for (int i = 0; i < t->n_links; i++)
		bpf_link__destroy(t->links[i]);
	bpf_link__destroy(t->rtt_iter);
	trace_bpf__destroy(t->skel);
	free(t);
}

int trace_rtt_poll(struct trace *t)
{
	char sink[256]; /* the program writes nothing: reading runs it */
	ssize_t n;
	int fd, err = 0;

	if (!t->rtt_iter)
		return -ENOTSUP;
	fd = bpf_iter_create(bpf_link__fd(t->rtt_iter));
	if (fd < 0)
		return -errno;
	while ((n = read(fd, sink, sizeof(sink))) != 0) {
		if (n < 0 && errno != EINTR) {
			err = -errno;
			break;
		}
	}
	close(fd);
	return err;
}

bool trace_has_sockops(const struct trace *t)
{
	return t->has_sockops;
}

bool trace_has_drops(const struct trace *t)
{
	return t->has_drops;
}

const char *trace_missing(const struct trace *t)
{
	return t->missing;
}

int trace_config_set(struct trace *t, const struct tr_config *c)
{
	uint32_t z = 0;

	return bpf_map_update_elem(bpf_map__fd(t->skel->maps.tr_config), &z, c, BPF_ANY) ? -errno
											 : 0;
}

int trace_config_get(struct trace *t, struct tr_config *c)
{
	uint32_t z = 0;

	return bpf_map_lookup_elem(bpf_map__fd(t->skel->maps.tr_config), &z, c) ? -errno : 0;
}

int trace_port_set(struct trace *t, uint16_t port, bool on)
{
	uint32_t k = port;
	uint8_t v = on;

	return bpf_map_update_elem(bpf_map__fd(t->skel->maps.tr_ports), &k, &v, BPF_ANY) ? -errno
											 : 0;
}

static int key_addr(const struct sockaddr *sa, struct tr_peer_key *k, uint16_t *port)
{
	memset(k, 0, sizeof(*k));
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;

		k->family = TR_FAMILY_V4;
		memcpy(k->addr, &s4->sin_addr, 4);
		*port = ntohs(s4->sin_port);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

		*port = ntohs(s6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			k->family = TR_FAMILY_V4;
			memcpy(k->addr, s6->sin6_addr.s6_addr + 12, 4);
		} else {
			k->family = TR_FAMILY_V6;
			memcpy(k->addr, &s6->sin6_addr, 16);
		}
		return 0;
	}
	return -EAFNOSUPPORT;
}

int trace_key_endpoint(const struct sockaddr *sa, struct tr_peer_key *out)
{
	uint16_t port;
	int rc = key_addr(sa, out, &port);

	if (rc)
		return rc;
	out->subject = TR_SUBJ_UPSTREAM;
	out->port = port;
	out->plen = out->family == TR_FAMILY_V4 ? 32 : 128;
	return 0;
}

int trace_key_client(const struct sockaddr *sa, unsigned v4_plen, unsigned v6_plen,
		     struct tr_peer_key *out)
{
	uint16_t port;
	int rc = key_addr(sa, out, &port);
	unsigned plen;

	if (rc)
		return rc;
	plen = out->family == TR_FAMILY_V4 ? (v4_plen > 32 ? 32 : v4_plen)
					   : (v6_plen > 128 ? 128 : v6_plen);
	out->subject = TR_SUBJ_CLIENT;
	out->plen = (uint8_t)plen;
	for (unsigned i = 0; i < 16; i++) {
		int bits = (int)plen - (int)i * 8;

		if (bits <= 0)
			out->addr[i] = 0;
		else if (bits < 8)
			out->addr[i] &= (uint8_t)(0xff00 >> bits);
	}
	return 0;
}

int trace_key_format(const struct tr_peer_key *k, char *out, size_t len)
{
	char a[INET6_ADDRSTRLEN];
	int af = k->family == TR_FAMILY_V4 ? AF_INET : AF_INET6;

	if (!inet_ntop(af, k->addr, a, sizeof(a)))
		snprintf(a, sizeof(a), "?");
	if (k->subject == TR_SUBJ_UPSTREAM)
		return snprintf(out, len, af == AF_INET ? "%s:%u" : "[%s]:%u", a, k->port);
	return snprintf(out, len, "%s/%u", a, k->plen);
}

int trace_upstream_add(struct trace *t, const struct sockaddr *sa)
{
	struct tr_peer_key k;
	uint8_t v = 1;
	int rc = trace_key_endpoint(sa, &k);

	if (rc)
		return rc;
	return bpf_map_update_elem(bpf_map__fd(t->skel->maps.tr_upstreams), &k, &v, BPF_ANY)
		       ? -errno
		       : 0;
}

int trace_upstream_del(struct trace *t, const struct sockaddr *sa)
{
	struct tr_peer_key k;
	int rc = trace_key_endpoint(sa, &k);

	if (rc)
		return rc;
	return bpf_map_delete_elem(bpf_map__fd(t->skel->maps.tr_upstreams), &k) ? -errno : 0;
}

int trace_peer_get(struct trace *t, const struct tr_peer_key *k, struct tr_peer_stats *out)
{
	return bpf_map_lookup_elem(bpf_map__fd(t->skel->maps.tr_peers), k, out) ? -errno : 0;
}

int trace_peers_walk(struct trace *t,
		     int (*cb)(void *ctx, const struct tr_peer_key *k,
			       const struct tr_peer_stats *s),
		     void *ctx)
{
	int fd = bpf_map__fd(t->skel->maps.tr_peers);
	struct tr_peer_key k, next;
	struct tr_peer_stats s;
	int n = 0;
	void *prev = NULL;

	/* An LRU entry evicted under us restarts the walk from the first key at worst; bounded
	 * by the map size so that a churning map cannot keep us here. */
	while (n < 65536 && !bpf_map_get_next_key(fd, prev, &next)) {
		k = next;
		prev = &k;
		if (bpf_map_lookup_elem(fd, &k, &s))
			continue;
		n++;
		if (cb(ctx, &k, &s))
			break;
	}
	return n;
}

int trace_counters_read(struct trace *t, struct tr_counters *out)
{
	struct tr_counters *v = calloc(t->ncpus, sizeof(*v));
	uint32_t z = 0;
	int rc = 0;

	if (!v)
		return -ENOMEM;
	memset(out, 0, sizeof(*out));
	if (bpf_map_lookup_elem(bpf_map__fd(t->skel->maps.tr_counters), &z, v)) {
		rc = -errno;
		goto out;
	}
	for (int c = 0; c < t->ncpus; c++) {
		out->events_sent += v[c].events_sent;
		out->events_capped += v[c].events_capped;
		out->events_lost += v[c].events_lost;
		out->peers_new += v[c].peers_new;
		out->retrans_all += v[c].retrans_all;
		out->drops_tcp += v[c].drops_tcp;
		out->rtt_samples += v[c].rtt_samples;
	}
out:
	free(v);
	return rc;
}

int trace_drop_reasons_read(struct trace *t, uint64_t *out, unsigned n)
{
	uint64_t *v = calloc(t->ncpus, sizeof(*v));
	int fd = bpf_map__fd(t->skel->maps.tr_drop_reasons);

	if (!v)
		return -ENOMEM;
	for (uint32_t r = 0; r < n && r < TR_DROP_REASONS; r++) {
		out[r] = 0;
		if (bpf_map_lookup_elem(fd, &r, v))
			continue;
		for (int c = 0; c < t->ncpus; c++)
			out[r] += v[c];
	}
	free(v);
	return 0;
}

static int on_ring(void *ctx, void *data, size_t len)
{
	struct trace *t = ctx;

	if (len >= sizeof(struct tr_event) && t->on_event)
		t->on_event(t->event_ctx, data);
	return 0;
}

int trace_events_start(struct trace *t, void (*on_event)(void *ctx, const struct tr_event *e),
		       void *ctx)
{
	t->on_event = on_event;
	t->event_ctx = ctx;
	if (t->events)
		return 0;
	t->events = ring_buffer__new(bpf_map__fd(t->skel->maps.tr_events), on_ring, t, NULL);
	return t->events ? 0 : -errno;
}

int trace_events_fd(struct trace *t)
{
	return t->events ? ring_buffer__epoll_fd(t->events) : -EINVAL;
}

int trace_events_poll(struct trace *t, int timeout_ms)
{
	if (!t->events)
		return -EINVAL;
	return ring_buffer__poll(t->events, timeout_ms);
}

int trace_events_consume(struct trace *t)
{
	if (!t->events)
		return -EINVAL;
	return ring_buffer__consume(t->events);
}

int trace_netstat_read(uint64_t *listen_overflows, uint64_t *listen_drops)
{
	/* Two lines per group: the names, then the values in the same order. */
	char names[4096], vals[4096];
	FILE *f = fopen("/proc/net/netstat", "re");
	int rc = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(names, sizeof(names), f) && fgets(vals, sizeof(vals), f)) {
		char *sn, *sv;
		char *n, *v;

		if (strncmp(names, "TcpExt:", 7))
			continue;
		n = strtok_r(names, " \n", &sn);
		v = strtok_r(vals, " \n", &sv);
		while ((n = strtok_r(NULL, " \n", &sn)) && (v = strtok_r(NULL, " \n", &sv))) {
			if (!strcmp(n, "ListenOverflows"))
				*listen_overflows = strtoull(v, NULL, 10);
			else if (!strcmp(n, "ListenDrops"))
				*listen_drops = strtoull(v, NULL, 10);
		}
		rc = 0;
		break;
	}
	fclose(f);
	return rc;
}

int trace_listener_queue(int fd, uint32_t *queued, uint32_t *backlog)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len))
		return -errno;
	*queued = ti.tcpi_unacked;
	*backlog = ti.tcpi_sacked;
	return 0;
}

const char *trace_event_name(uint32_t type)
{
	switch (type) {
	case TR_EV_RST_SENT:
		return "rst_sent";
	case TR_EV_RST_RECV:
		return "rst_recv";
	case TR_EV_SLOW_CONNECT:
		return "slow_connect";
	case TR_EV_CONNECT_FAIL:
		return "connect_fail";
	}
	return "unknown";
}
