/* limit_kernel.c — the kernel rate limiter inside reflexd (see limit_kernel.h). */
#include "http/limit_kernel.h"

#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "core/jsonw.h"
#include "core/log.h"
#include "http/limit.h"
#include "userspace/ratelimit.h"

#define SWEEP_MS 5000
#define POLL_MS 200
#define PENALTY_LIST_MAX 4096

static pthread_mutex_t kmu = PTHREAD_MUTEX_INITIALIZER;
static struct rl *rl; /* NULL: the kernel layer is off */
static char why_off[256] = "not started";
static struct cfg_rl_kernel kcfg; /* what is applied now (config, then admin changes) */
static uint16_t ports_on[CFG_RL_PORTS_MAX];
static unsigned n_ports_on;
static char ifaces_on[CFG_RL_IFACES_MAX][16];
static unsigned n_ifaces_on;
static pthread_t thread;
static bool thread_running, stopping;
static uint64_t events_seen, events_by_reason[RL_REASON_MAX], escalated, escalate_failed;

static int kernel_metrics(struct buf *b);

static enum rl_attach_mode attach_mode(const char *s)
{
	if (!strcmp(s, "tc"))
		return RL_ATTACH_TC;
	if (!strcmp(s, "xdp"))
		return RL_ATTACH_XDP;
	if (!strcmp(s, "xdp_generic"))
		return RL_ATTACH_XDP_GENERIC;
	return RL_ATTACH_AUTO;
}

static uint16_t addr_port(const struct cfg_addr *a)
{
	if (a->ss.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
	if (a->ss.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return 0;
}

/* Called with kmu held. */
static void apply_ports(const struct config *cfg, const struct cfg_rl_kernel *k)
{
	uint16_t want[CFG_RL_PORTS_MAX];
	unsigned n = 0;

	if (k->n_ports) {
		memcpy(want, k->ports, k->n_ports * sizeof(want[0]));
		n = k->n_ports;
	} else {
		for (unsigned i = 0; i < cfg->n_listens && n < CFG_RL_PORTS_MAX; i++) {
			uint16_t p = addr_port(&cfg->listens[i]);
			if (p)
				want[n++] = p;
		}
	}
	for (unsigned i = 0; i < n_ports_on; i++) {
		bool keep = false;
		for (unsigned j = 0; j < n; j++)
			keep |= want[j] == ports_on[i];
		if (!keep)
			rl_port_set(rl, ports_on[i], 0);
	}
	for (unsigned j = 0; j < n; j++)
		rl_port_set(rl, want[j], RL_PORT_TCP);
	memcpy(ports_on, want, n * sizeof(want[0]));
	n_ports_on = n;
}

/* Called with kmu held. */
static int apply_policy(const struct cfg_rl_kernel *k)
{
	struct rl_limits l4 = {.syn_rate = k->syn_rate,
			       .syn_burst = k->syn_burst,
			       .pkt_rate = k->pkt_rate,
			       .pkt_burst = k->pkt_burst,
			       .bucket_plen = k->prefix_v4};
	struct rl_limits l6 = l4;
	struct rl_prefix all4, all6;
	struct rl_settings st;
	int rc;

	l6.bucket_plen = k->prefix_v6;
	rl_prefix_parse("0.0.0.0/0", &all4);
	rl_prefix_parse("::/0", &all6);
	if ((rc = rl_policy_set(rl, &all4, &l4)) || (rc = rl_policy_set(rl, &all6, &l6)))
		return rc;
	if ((rc = rl_settings_get(rl, &st)))
		return rc;
	st.dry_run = k->dry_run;
	return rl_settings_set(rl, &st);
}

/* Called with kmu held: bring one list from `have` to `want`. */
static void apply_list(int (*add)(struct rl *, const struct rl_prefix *),
		       int (*del)(struct rl *, const struct rl_prefix *),
		       char (*have)[CFG_RL_CIDR_LEN], unsigned n_have,
		       char (*want)[CFG_RL_CIDR_LEN], unsigned n_want)
{
	struct rl_prefix p;

	for (unsigned i = 0; i < n_have; i++) {
		bool keep = false;
		for (unsigned j = 0; j < n_want; j++)
			keep |= !strcmp(have[i], want[j]);
		if (!keep && !rl_prefix_parse(have[i], &p))
			del(rl, &p);
	}
	for (unsigned j = 0; j < n_want; j++) {
		int rc = rl_prefix_parse(want[j], &p);
		if (rc || (rc = add(rl, &p)))
			log_warn("ratelimit: kernel list entry %s: %s", want[j], strerror(-rc));
	}
}

/* Called with kmu held. */
static void apply_ifaces(const struct cfg_rl_kernel *k)
{
	for (unsigned i = 0; i < n_ifaces_on; i++) {
		bool keep = false;
		for (unsigned j = 0; j < k->n_interfaces; j++)
			keep |= !strcmp(ifaces_on[i], k->interfaces[j]);
		if (!keep) {
			unsigned idx = if_nametoindex(ifaces_on[i]);
			if (idx)
				rl_detach(rl, (int)idx);
			log_info("ratelimit: kernel limiter detached from %s", ifaces_on[i]);
		}
	}
	n_ifaces_on = 0;
	for (unsigned j = 0; j < k->n_interfaces; j++) {
		unsigned idx = if_nametoindex(k->interfaces[j]);
		int rc;

		if (!idx) {
			log_warn("ratelimit: interface %s: %s; not attached", k->interfaces[j],
				 strerror(errno));
			continue;
		}
		if (rl_attached_as(rl, (int)idx) == RL_ATTACHED_NONE) {
			rc = rl_attach(rl, (int)idx, attach_mode(k->attach));
			if (rc) {
				log_warn("ratelimit: attach to %s: %s; not attached",
					 k->interfaces[j], strerror(-rc));
				continue;
			}
			log_info("ratelimit: kernel limiter attached to %s (%s)", k->interfaces[j],
				 rl_attached_name(rl_attached_as(rl, (int)idx)));
		}
		snprintf(ifaces_on[n_ifaces_on++], 16, "%s", k->interfaces[j]);
	}
	limit_kernel_active(n_ifaces_on > 0);
}

/* The lists as rl_prefix_format writes them ("10.0.0.0/8", "192.0.2.7/32"), so entries
 * from the file and from the admin API compare equal. */
static void canon_lists(struct cfg_rl_kernel *k)
{
	char(*lists[2])[CFG_RL_CIDR_LEN] = {k->allow, k->deny};
	unsigned n[2] = {k->n_allow, k->n_deny};
	struct rl_prefix p;

	for (int l = 0; l < 2; l++)
		for (unsigned i = 0; i < n[l]; i++)
			if (!rl_prefix_parse(lists[l][i], &p))
				rl_prefix_format(&p, lists[l][i], CFG_RL_CIDR_LEN);
}

static void on_event(void *ctx, const struct rl_event *e)
{
	events_seen++;
	if (e->reason < RL_REASON_MAX)
		events_by_reason[e->reason]++;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Low priority: events, escalations and sweeps are never urgent. */
static void *kernel_thread(void *arg)
{
	uint64_t last_sweep = mono_ms();
	int efd;

	setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
	pthread_mutex_lock(&kmu);
	efd = rl ? rl_events_fd(rl) : -1;
	pthread_mutex_unlock(&kmu);
	while (!__atomic_load_n(&stopping, __ATOMIC_ACQUIRE)) {
		struct pollfd pfd = {.fd = efd, .events = POLLIN};
		char addrs[64][48];
		unsigned n;

		poll(&pfd, efd >= 0 ? 1 : 0, POLL_MS);
		pthread_mutex_lock(&kmu);
		if (!rl) {
			pthread_mutex_unlock(&kmu);
			continue;
		}
		if (pfd.revents & POLLIN)
			rl_events_consume(rl);
		while ((n = limit_escalation_take(addrs, 64)) > 0) {
			uint64_t ttl = limit_penalty_ns();
			for (unsigned i = 0; i < n; i++) {
				struct rl_prefix p;
				int rc = rl_prefix_parse(addrs[i], &p);
				if (!rc)
					rc = rl_penalty_add(rl, &p, ttl);
				if (rc) {
					escalate_failed++;
					log_warn("ratelimit: penalty box %s: %s", addrs[i],
						 strerror(-rc));
				} else {
					escalated++;
					log_info("ratelimit: %s in the kernel penalty box for %llu "
						 "ms",
						 addrs[i], (unsigned long long)(ttl / 1000000));
				}
			}
		}
		if (mono_ms() - last_sweep >= SWEEP_MS) {
			last_sweep = mono_ms();
			rl_penalty_sweep(rl);
		}
		pthread_mutex_unlock(&kmu);
	}
	return NULL;
}

int limit_kernel_start(const struct config *cfg)
{
	const struct cfg_rl_kernel *k = &cfg->ratelimit.kernel;
	struct rl *h = NULL;
	int rc;

	limit_configure(cfg);
	limit_kernel_active(false);
	limit_set_metrics_hook(kernel_metrics);
	pthread_mutex_lock(&kmu);
	kcfg = *k;
	pthread_mutex_unlock(&kmu);
	if (!k->n_interfaces) {
		snprintf(why_off, sizeof(why_off), "no interfaces configured");
		if (k->syn_rate)
			log_info("ratelimit: kernel limiter not attached (no interfaces); %u "
				 "connections/s per source enforced at accept",
				 k->syn_rate);
		return 0;
	}
	rc = rl_open(&h, NULL, why_off, sizeof(why_off));
	if (rc) {
		log_warn("ratelimit: kernel limiter unavailable (%s); %s", why_off,
			 k->syn_rate ? "the connection-rate limit is enforced at accept instead"
				     : "no connection-rate limit");
		return 0;
	}
	pthread_mutex_lock(&kmu);
	rl = h;
	kcfg = *k;
	canon_lists(&kcfg);
	rl_events_start(rl, on_event, NULL);
	apply_ports(cfg, &kcfg);
	if ((rc = apply_policy(&kcfg)))
		log_warn("ratelimit: kernel policy: %s", strerror(-rc));
	apply_list(rl_allow_add, rl_allow_del, NULL, 0, kcfg.allow, kcfg.n_allow);
	apply_list(rl_deny_add, rl_deny_del, NULL, 0, kcfg.deny, kcfg.n_deny);
	apply_ifaces(&kcfg);
	if (!n_ifaces_on)
		snprintf(why_off, sizeof(why_off), "no interface could be attached");
	else
		why_off[0] = 0;
	pthread_mutex_unlock(&kmu);
	if (pthread_create(&thread, NULL, kernel_thread, NULL) == 0)
		thread_running = true;
	return 0;
}

void limit_kernel_reload(const struct config *cfg)
{
	const struct cfg_rl_kernel *k = &cfg->ratelimit.kernel;
	int rc;

	limit_configure(cfg);
	pthread_mutex_lock(&kmu);
	if (!rl) {
		pthread_mutex_unlock(&kmu);
		if (k->n_interfaces)
			log_warn(
				"ratelimit: the kernel limiter is off (%s); interfaces take effect "
				"at the next start",
				why_off);
		return;
	}
	struct cfg_rl_kernel nk = *k;
	canon_lists(&nk);
	apply_ports(cfg, &nk);
	if ((rc = apply_policy(&nk)))
		log_warn("ratelimit: kernel policy: %s", strerror(-rc));
	apply_list(rl_allow_add, rl_allow_del, kcfg.allow, kcfg.n_allow, nk.allow, nk.n_allow);
	apply_list(rl_deny_add, rl_deny_del, kcfg.deny, kcfg.n_deny, nk.deny, nk.n_deny);
	kcfg = nk;
	apply_ifaces(&kcfg);
	pthread_mutex_unlock(&kmu);
}

void limit_kernel_stop(void)
{
	__atomic_store_n(&stopping, true, __ATOMIC_RELEASE);
	if (thread_running)
		pthread_join(thread, NULL);
	thread_running = false;
	pthread_mutex_lock(&kmu);
	limit_kernel_active(false);
	rl_close(rl); /* detaches */
	rl = NULL;
	snprintf(why_off, sizeof(why_off), "stopped");
	pthread_mutex_unlock(&kmu);
}

/* ---- admin ----------------------------------------------------------------- */

static const char *const reason_names[RL_REASON_MAX] = {
	[RL_REASON_NONE] = "none",	   [RL_REASON_DENY] = "deny",
	[RL_REASON_PENALTY] = "penalty",   [RL_REASON_SYN_RATE] = "syn_rate",
	[RL_REASON_PKT_RATE] = "pkt_rate", [RL_REASON_CAP] = "cap",
};

/* /metrics (through limit_metrics): the kernel counters, summed over CPUs. */
static int kernel_metrics(struct buf *b)
{
	struct rl_counters c;
	bool have;
	int rc = 0;

	pthread_mutex_lock(&kmu);
	have = rl && !rl_counters_read(rl, &c);
	rc |= buf_appendf(
		b,
		"# HELP reflex_ratelimit_kernel_attached Interfaces the kernel limiter is "
		"attached to.\n# TYPE reflex_ratelimit_kernel_attached gauge\n"
		"reflex_ratelimit_kernel_attached %u\n",
		rl ? n_ifaces_on : 0);
	if (have) {
		rc |= buf_appends(b,
				  "# HELP reflex_ratelimit_kernel_packets_total Packets the kernel "
				  "limiter let through, by verdict.\n"
				  "# TYPE reflex_ratelimit_kernel_packets_total counter\n");
		rc |= buf_appendf(
			b, "reflex_ratelimit_kernel_packets_total{verdict=\"passed\"} %llu\n",
			(unsigned long long)c.passed);
		rc |= buf_appendf(
			b, "reflex_ratelimit_kernel_packets_total{verdict=\"allowed\"} %llu\n",
			(unsigned long long)c.allowed);
		rc |= buf_appendf(
			b, "reflex_ratelimit_kernel_packets_total{verdict=\"unlimited\"} %llu\n",
			(unsigned long long)c.unlimited);
		rc |= buf_appendf(
			b, "reflex_ratelimit_kernel_packets_total{verdict=\"malformed\"} %llu\n",
			(unsigned long long)c.malformed);
		rc |= buf_appends(b,
				  "# HELP reflex_ratelimit_kernel_dropped_total Packets the kernel "
				  "limiter dropped, by reason.\n"
				  "# TYPE reflex_ratelimit_kernel_dropped_total counter\n");
		for (unsigned r = 1; r < RL_REASON_MAX; r++)
			rc |= buf_appendf(
				b, "reflex_ratelimit_kernel_dropped_total{reason=\"%s\"} %llu\n",
				reason_names[r], (unsigned long long)c.dropped[r]);
		rc |= buf_appends(
			b, "# HELP reflex_ratelimit_kernel_would_drop_total Dry-run: packets "
			   "passed that would have been dropped, by reason.\n"
			   "# TYPE reflex_ratelimit_kernel_would_drop_total counter\n");
		for (unsigned r = 1; r < RL_REASON_MAX; r++)
			rc |= buf_appendf(
				b, "reflex_ratelimit_kernel_would_drop_total{reason=\"%s\"} %llu\n",
				reason_names[r], (unsigned long long)c.would_drop[r]);
		rc |= buf_appendf(
			b,
			"# HELP reflex_ratelimit_kernel_events_total Ring-buffer events "
			"consumed.\n# TYPE reflex_ratelimit_kernel_events_total counter\n"
			"reflex_ratelimit_kernel_events_total %llu\n"
			"# HELP reflex_ratelimit_kernel_penalties_total Sources put into the "
			"penalty box by escalation.\n"
			"# TYPE reflex_ratelimit_kernel_penalties_total counter\n"
			"reflex_ratelimit_kernel_penalties_total %llu\n",
			(unsigned long long)events_seen, (unsigned long long)escalated);
	}
	pthread_mutex_unlock(&kmu);
	return rc ? -1 : 0;
}

int limit_kernel_json(struct buf *b)
{
	struct rl_counters c;
	int rc = 0;

	pthread_mutex_lock(&kmu);
	rc |= buf_appendf(b, "{\"active\":%s,\"why_off\":", rl && n_ifaces_on ? "true" : "false");
	rc |= jsonw_buf_str(b, why_off);
	rc |= buf_appends(b, ",\"interfaces\":[");
	for (unsigned i = 0; i < n_ifaces_on; i++) {
		unsigned idx = if_nametoindex(ifaces_on[i]);
		rc |= buf_appendf(b, "%s{\"name\":", i ? "," : "");
		rc |= jsonw_buf_str(b, ifaces_on[i]);
		rc |= buf_appends(b, ",\"as\":");
		rc |= jsonw_buf_str(b, rl_attached_name(rl_attached_as(rl, (int)idx)));
		rc |= buf_appends(b, "}");
	}
	rc |= buf_appends(b, "],\"ports\":[");
	for (unsigned i = 0; i < n_ports_on; i++)
		rc |= buf_appendf(b, "%s%u", i ? "," : "", ports_on[i]);
	rc |= buf_appendf(b,
			  "],\"policy\":{\"syn_rate\":%u,\"syn_burst\":%u,\"pkt_rate\":%u,"
			  "\"pkt_burst\":%u,\"prefix_v4\":%u,\"prefix_v6\":%u,\"dry_run\":%s}",
			  kcfg.syn_rate, kcfg.syn_burst, kcfg.pkt_rate, kcfg.pkt_burst,
			  kcfg.prefix_v4, kcfg.prefix_v6, kcfg.dry_run ? "true" : "false");
	if (rl && !rl_counters_read(rl, &c)) {
		rc |= buf_appendf(
			b,
			",\"counters\":{\"ignored\":%llu,\"malformed\":%llu,\"allowed\":%llu,"
			"\"passed\":%llu,\"unlimited\":%llu,\"new_buckets\":%llu,"
			"\"cap_hits\":%llu,\"events_sent\":%llu,\"events_lost\":%llu",
			(unsigned long long)c.ignored, (unsigned long long)c.malformed,
			(unsigned long long)c.allowed, (unsigned long long)c.passed,
			(unsigned long long)c.unlimited, (unsigned long long)c.new_buckets,
			(unsigned long long)c.cap_hits, (unsigned long long)c.events_sent,
			(unsigned long long)c.events_lost);
		rc |= buf_appends(b, ",\"dropped\":{");
		for (unsigned r = 1; r < RL_REASON_MAX; r++)
			rc |= buf_appendf(b, "%s\"%s\":%llu", r > 1 ? "," : "", reason_names[r],
					  (unsigned long long)c.dropped[r]);
		rc |= buf_appends(b, "},\"would_drop\":{");
		for (unsigned r = 1; r < RL_REASON_MAX; r++)
			rc |= buf_appendf(b, "%s\"%s\":%llu", r > 1 ? "," : "", reason_names[r],
					  (unsigned long long)c.would_drop[r]);
		rc |= buf_appends(b, "}}");
	}
	rc |= buf_appendf(b, ",\"events\":{\"seen\":%llu", (unsigned long long)events_seen);
	for (unsigned r = 1; r < RL_REASON_MAX; r++)
		rc |= buf_appendf(b, ",\"%s\":%llu", reason_names[r],
				  (unsigned long long)events_by_reason[r]);
	rc |= buf_appendf(b, "},\"escalated\":%llu,\"escalate_failed\":%llu}",
			  (unsigned long long)escalated, (unsigned long long)escalate_failed);
	pthread_mutex_unlock(&kmu);
	return rc ? -1 : 0;
}

int limit_kernel_list_json(struct buf *b, const char *which)
{
	int rc = 0;

	pthread_mutex_lock(&kmu);
	rc |= buf_appends(b, "[");
	if (!strcmp(which, "penalty")) {
		struct rl_penalty_entry *e = rl ? calloc(PENALTY_LIST_MAX, sizeof(*e)) : NULL;
		int n = e ? rl_penalty_list(rl, e, PENALTY_LIST_MAX) : 0;
		for (int i = 0; i < n; i++) {
			char t[64];
			rl_prefix_format(&e[i].src, t, sizeof(t));
			rc |= buf_appends(b, i ? ",{\"source\":" : "{\"source\":");
			rc |= jsonw_buf_str(b, t);
			rc |= buf_appendf(b, ",\"ttl_ms\":%llu}",
					  (unsigned long long)(e[i].ttl_ns / 1000000));
		}
		free(e);
	} else {
		bool allow = !strcmp(which, "allow");
		unsigned n = allow ? kcfg.n_allow : kcfg.n_deny;
		for (unsigned i = 0; i < n; i++) {
			rc |= buf_appends(b, i ? "," : "");
			rc |= jsonw_buf_str(b, allow ? kcfg.allow[i] : kcfg.deny[i]);
		}
	}
	rc |= buf_appends(b, "]");
	pthread_mutex_unlock(&kmu);
	return rc ? -1 : 0;
}

/* Called with kmu held: add to or remove from the mirrored list. */
static int list_edit(char (*list)[CFG_RL_CIDR_LEN], unsigned *n, const char *cidr, bool add)
{
	for (unsigned i = 0; i < *n; i++) {
		if (strcmp(list[i], cidr))
			continue;
		if (add)
			return -EEXIST;
		memmove(list[i], list[i + 1], (size_t)(*n - i - 1) * CFG_RL_CIDR_LEN);
		(*n)--;
		return 0;
	}
	if (!add)
		return -ENOENT;
	if (*n >= CFG_RL_CIDRS_MAX)
		return -ENOSPC;
	snprintf(list[(*n)++], CFG_RL_CIDR_LEN, "%s", cidr);
	return 0;
}

int limit_kernel_entry(const char *which, bool add, const char *cidr, uint64_t ttl_ms, char *err,
		       size_t errlen)
{
	struct rl_prefix p;
	int rc;

	pthread_mutex_lock(&kmu);
	if (!rl) {
		snprintf(err, errlen, "the kernel limiter is off: %s", why_off);
		rc = -ENODEV;
		goto out;
	}
	if ((rc = rl_prefix_parse(cidr, &p))) {
		snprintf(err, errlen, "\"%s\" is not an address or CIDR prefix", cidr);
		goto out;
	}
	if (!strcmp(which, "penalty")) {
		uint64_t ttl = ttl_ms ? ttl_ms * 1000000 : limit_penalty_ns();
		rc = add ? rl_penalty_add(rl, &p, ttl ? ttl : 60000000000ull)
			 : rl_penalty_del(rl, &p);
	} else {
		bool allow = !strcmp(which, "allow");
		char canon[64];
		rl_prefix_format(&p, canon, sizeof(canon));
		rc = list_edit(allow ? kcfg.allow : kcfg.deny, allow ? &kcfg.n_allow : &kcfg.n_deny,
			       canon, add);
		if (!rc) {
			if (allow)
				rc = add ? rl_allow_add(rl, &p) : rl_allow_del(rl, &p);
			else
				rc = add ? rl_deny_add(rl, &p) : rl_deny_del(rl, &p);
		}
	}
	if (rc)
		snprintf(err, errlen, "%s %s %s: %s", which, add ? "add" : "remove", cidr,
			 strerror(-rc));
out:
	pthread_mutex_unlock(&kmu);
	return rc;
}

static int json_u32(const char *s, size_t len, const char *key, uint32_t *out)
{
	char pat[32];
	int pl = snprintf(pat, sizeof(pat), "\"%s\"", key);
	const char *p = memmem(s, len, pat, (size_t)pl), *end = s + len;
	unsigned long v = 0;
	bool any = false;

	if (!p)
		return 1;
	for (p += pl; p < end && (*p == ' ' || *p == ':'); p++)
		;
	for (; p < end && *p >= '0' && *p <= '9'; p++, any = true)
		v = v * 10 + (unsigned long)(*p - '0');
	if (!any || v > 100000000)
		return -1;
	*out = (uint32_t)v;
	return 0;
}

int limit_kernel_policy_set(const char *json, size_t len, char *err, size_t errlen)
{
	static const char *const keys[] = {"syn_rate", "syn_burst", "pkt_rate", "pkt_burst"};
	struct cfg_rl_kernel k;
	int rc = 0;

	pthread_mutex_lock(&kmu);
	if (!rl) {
		snprintf(err, errlen, "the kernel limiter is off: %s", why_off);
		rc = -ENODEV;
		goto out;
	}
	k = kcfg;
	uint32_t *dst[] = {&k.syn_rate, &k.syn_burst, &k.pkt_rate, &k.pkt_burst};
	for (unsigned i = 0; i < 4; i++)
		if (json_u32(json, len, keys[i], dst[i]) < 0) {
			snprintf(err, errlen, "%s: expected a whole number", keys[i]);
			rc = -EINVAL;
			goto out;
		}
	const char *d = memmem(json, len, "\"dry_run\"", 9);
	if (d) {
		const char *e = json + len;
		for (d += 9; d < e && (*d == ' ' || *d == ':'); d++)
			;
		k.dry_run = d < e && *d == 't';
	}
	if ((rc = apply_policy(&k)))
		snprintf(err, errlen, "kernel policy: %s", strerror(-rc));
	else
		kcfg = k;
out:
	pthread_mutex_unlock(&kmu);
	return rc;
}
