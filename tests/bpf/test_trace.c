/* test_trace.c — live tests of bpf/trace.bpf.c through userspace/trace.h.
 *
 * Real kernel signals on real sockets, in a private network namespace this process makes
 * (unshare(CLONE_NEWNET), lo up), so nothing on the host is traced or disturbed:
 *   - connections accepted on a "gateway" port show up under the client's /24, with RTT
 *     samples from sockops when the cgroup v2 hierarchy is there;
 *   - an "upstream" connect shows up under its endpoint with its connect time;
 *   - a client we reset and an upstream that resets us are events with the right subject;
 *   - an nftables rule dropping a third of the packets to an upstream port on input (a
 *     drop on output is reported to TCP as a send error, not retransmitted) produces
 *     retransmits counted for that endpoint;
 *   - a listener with backlog 1 flooded with connects moves ListenOverflows and its TCP_INFO
 *     queue (no tracepoint for that on this kernel);
 *   - a reset flood against a stalled consumer: every event is delivered, capped or counted
 *     lost.
 * Needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN for the namespace); otherwise SKIP and why.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tests/lib/test.h"
#include "userspace/trace.h"

static struct trace *tr;
static char why[256];

#define MAX_EVENTS 8192
static struct tr_event evs[MAX_EVENTS];
static unsigned n_evs;

static void on_event(void *ctx, const struct tr_event *e)
{
	if (n_evs < MAX_EVENTS)
		evs[n_evs] = *e;
	n_evs++;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int lo_up(void)
{
	struct ifreq ifr = {0};
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int rc = 0;

	if (fd < 0)
		return -errno;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) ||
	    (ifr.ifr_flags |= IFF_UP, ioctl(fd, SIOCSIFFLAGS, &ifr)))
		rc = -errno;
	close(fd);
	return rc;
}

/* A listener on 127.0.0.1, any port; returns the fd, port in *port. */
static int listen_any(int backlog, uint16_t *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(a);
	int one = 1;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) || listen(fd, backlog) ||
	    getsockname(fd, (struct sockaddr *)&a, &len)) {
		close(fd);
		return -1;
	}
	*port = ntohs(a.sin_port);
	return fd;
}

static struct sockaddr_in loopback(uint16_t port)
{
	struct sockaddr_in a = {.sin_family = AF_INET,
				.sin_port = htons(port),
				.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	return a;
}

static int connect_to(uint16_t port)
{
	struct sockaddr_in a = loopback(port);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&a, sizeof(a))) {
		close(fd);
		return -1;
	}
	return fd;
}

static void close_reset(int fd)
{
	struct linger l = {.l_onoff = 1, .l_linger = 0};

	setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
	close(fd);
}

static void drain_events(int ms)
{
	uint64_t end = now_ms() + ms;

	while (now_ms() < end)
		trace_events_poll(tr, 20);
}

static bool has_event(uint32_t type, const struct tr_peer_key *k)
{
	for (unsigned i = 0; i < n_evs && i < MAX_EVENTS; i++)
		if (evs[i].type == type && !memcmp(&evs[i].key, k, sizeof(*k)))
			return true;
	return false;
}

static void test_lifecycle(void)
{
	uint16_t gport;
	int l, c, s;
	struct tr_peer_key k;
	struct tr_peer_stats st = {0};
	struct sockaddr_in a = loopback(0);
	char name[64], buf[4096] = {0};

	test_begin("client_lifecycle_and_rtt");
	l = listen_any(16, &gport);
	CHECK(l >= 0);
	CHECK_INT(trace_port_set(tr, gport, true), 0);
	trace_key_client((struct sockaddr *)&a, 24, 64, &k);
	for (int i = 0; i < 3; i++) {
		c = connect_to(gport);
		s = accept(l, NULL, NULL);
		CHECK(c >= 0 && s >= 0);
		for (int j = 0; j < 20; j++) { /* some round trips */
			CHECK(write(c, buf, 100) == 100);
			CHECK(read(s, buf, sizeof(buf)) > 0);
			CHECK(write(s, buf, 100) == 100);
			CHECK(read(c, buf, sizeof(buf)) > 0);
		}
		if (i == 2) { /* the iterator samples the live, active gateway socket: one */
			struct tr_peer_stats b4 = {0}, af = {0};
			int err;

			trace_peer_get(tr, &k, &b4);
			err = trace_rtt_poll(tr);
			if (err == -ENOTSUP) {
				printf("# no rtt iterator: %s\n", trace_missing(tr));
			} else {
				CHECK_INT(err, 0);
				CHECK_INT(trace_peer_get(tr, &k, &af), 0);
				CHECK_MSG(af.rtt_n == b4.rtt_n + 1 && af.rtt_sum_us > b4.rtt_sum_us,
					  "rtt_n %llu -> %llu (one socket in scope)",
					  (unsigned long long)b4.rtt_n,
					  (unsigned long long)af.rtt_n);
			}
		}
		close(s); /* the gateway side closes first */
		usleep(10000);
		close(c);
	}
	trace_key_format(&k, name, sizeof(name));
	CHECK_STR(name, "127.0.0.0/24");
	/* the last close completes in softirq, which a busy machine may run late: 2 s */
	for (int i = 0; i < 100; i++) {
		if (trace_peer_get(tr, &k, &st) == 0 && st.conns >= 3 && st.closed_local >= 3 &&
		    st.life_n >= 3 && (!trace_has_sockops(tr) || st.rtt_n >= 3))
			break;
		usleep(20000);
	}
	CHECK_INT(trace_peer_get(tr, &k, &st), 0);
	CHECK_MSG(st.conns >= 3, "conns %llu", (unsigned long long)st.conns);
	CHECK_MSG(st.closed_local >= 3, "closed_local %llu", (unsigned long long)st.closed_local);
	CHECK_MSG(st.life_n >= 3, "life_n %llu", (unsigned long long)st.life_n);
	if (trace_has_sockops(tr))
		CHECK_MSG(st.rtt_n >= 3,
			  "%llu RTT samples although sockops is attached (one "
			  "per handshake expected)",
			  (unsigned long long)st.rtt_n);
	else
		printf("# sockops not attached: %s\n", trace_missing(tr));
	trace_port_set(tr, gport, false);
	close(l);
	test_end();
}

static void test_upstream_connect(void)
{
	uint16_t uport;
	int l, c, s;
	struct tr_peer_key k;
	struct tr_peer_stats st = {0};
	struct sockaddr_in a;
	char name[64];

	test_begin("upstream_connect_latency");
	l = listen_any(16, &uport);
	a = loopback(uport);
	CHECK_INT(trace_upstream_add(tr, (struct sockaddr *)&a), 0);
	c = connect_to(uport);
	s = accept(l, NULL, NULL);
	CHECK(c >= 0 && s >= 0);
	close(c);
	close(s);
	trace_key_endpoint((struct sockaddr *)&a, &k);
	trace_key_format(&k, name, sizeof(name));
	CHECK(!strncmp(name, "127.0.0.1:", 10));
	for (int i = 0; i < 100; i++) { /* as above: up to 2 s */
		if (trace_peer_get(tr, &k, &st) == 0 && st.connect_n >= 1 && st.conns >= 1 &&
		    st.closed_local >= 1)
			break;
		usleep(20000);
	}
	CHECK_INT(trace_peer_get(tr, &k, &st), 0);
	CHECK_MSG(st.connect_n == 1, "connect_n %llu", (unsigned long long)st.connect_n);
	CHECK(st.conns == 1);
	CHECK(st.closed_local == 1);
	trace_upstream_del(tr, (struct sockaddr *)&a);
	close(l);
	test_end();
}

static void test_resets(void)
{
	uint16_t gport, uport;
	int gl, ul, c, s;
	struct tr_peer_key kc, ku;
	struct sockaddr_in ca = loopback(0), ua;
	struct tr_peer_stats st = {0};
	char b = 'x';

	test_begin("client_reset_event");
	gl = listen_any(16, &gport);
	trace_port_set(tr, gport, true);
	n_evs = 0;
	c = connect_to(gport);
	s = accept(gl, NULL, NULL);
	CHECK(c >= 0 && s >= 0);
	close_reset(s); /* the gateway resets its client */
	trace_key_client((struct sockaddr *)&ca, 24, 64, &kc);
	drain_events(100);
	for (int i = 0; i < 20 && !has_event(TR_EV_RST_SENT, &kc); i++) /* busy machine: 2 s */
		drain_events(100);
	close(c);
	CHECK_MSG(has_event(TR_EV_RST_SENT, &kc), "no rst_sent event for 127.0.0.0/24 (%u events)",
		  n_evs);
	CHECK(!trace_peer_get(tr, &kc, &st) && st.rst_sent >= 1);
	trace_port_set(tr, gport, false);
	close(gl);
	test_end();

	test_begin("upstream_reset_event");
	ul = listen_any(16, &uport);
	ua = loopback(uport);
	trace_upstream_add(tr, (struct sockaddr *)&ua);
	n_evs = 0;
	c = connect_to(uport);
	s = accept(ul, NULL, NULL);
	CHECK(c >= 0 && s >= 0);
	close_reset(s); /* the upstream resets the gateway's connection */
	usleep(20000);
	CHECK(write(c, &b, 1) <= 1);
	trace_key_endpoint((struct sockaddr *)&ua, &ku);
	drain_events(100);
	for (int i = 0; i < 20 && !has_event(TR_EV_RST_RECV, &ku); i++) /* busy machine: 2 s */
		drain_events(100);
	close(c);
	CHECK_MSG(has_event(TR_EV_RST_RECV, &ku), "no rst_recv event for the endpoint (%u events)",
		  n_evs);
	/* the upstream's own socket is not ours: no event under a client prefix */
	CHECK(!has_event(TR_EV_RST_SENT, &kc));
	trace_upstream_del(tr, (struct sockaddr *)&ua);
	close(ul);
	test_end();
}

static void test_retransmits(void)
{
	uint16_t uport;
	int l, c = -1, s = -1;
	struct sockaddr_in ua;
	struct tr_peer_key k;
	struct tr_peer_stats st = {0};
	char cmd[512], buf[16384] = {0};

	if (system("command -v nft >/dev/null 2>&1")) {
		test_skip("retransmits_per_endpoint", "nft(8) not installed (Debian: nftables)");
		return;
	}
	test_begin("retransmits_per_endpoint");
	l = listen_any(16, &uport);
	ua = loopback(uport);
	trace_upstream_add(tr, (struct sockaddr *)&ua);
	c = connect_to(uport);
	s = accept(l, NULL, NULL);
	CHECK(c >= 0 && s >= 0);
	snprintf(cmd, sizeof(cmd),
		 "nft add table inet rxtest && nft 'add chain inet rxtest in { type filter hook "
		 "input priority 0; }' && nft add rule inet rxtest in tcp dport %u numgen random "
		 "mod 3 == 0 drop",
		 uport);
	CHECK_MSG(system(cmd) == 0, "nft rule not installed");
	fcntl(s, F_SETFL, O_NONBLOCK);
	/* ~2 s of small writes: each dropped segment must be retransmitted */
	uint64_t end = now_ms() + 2000;

	while (now_ms() < end && !test_failed()) {
		if (write(c, buf, 1000) < 0)
			break;
		while (read(s, buf, sizeof(buf)) > 0)
			;
		usleep(2000);
	}
	system("nft delete table inet rxtest >/dev/null 2>&1");
	trace_key_endpoint((struct sockaddr *)&ua, &k);
	CHECK_INT(trace_peer_get(tr, &k, &st), 0);
	CHECK_MSG(st.retrans > 0, "no retransmits counted for the endpoint");
	if (trace_has_drops(tr)) { /* the BTF names of the drop reasons */
		bool named = false;

		for (unsigned r = 0; r < TR_DROP_REASONS; r++)
			named |= trace_drop_reason_name(tr, r) != NULL;
		CHECK_MSG(named, "no drop reason names from BTF");
		CHECK(!trace_drop_reason_name(tr, 100000));
	}
	printf("# retransmits for the lossy endpoint: %llu, drops: %llu\n",
	       (unsigned long long)st.retrans, (unsigned long long)st.drops);
	close(c);
	close(s);
	trace_upstream_del(tr, (struct sockaddr *)&ua);
	close(l);
	test_end();
}

static void test_backlog_overflow(void)
{
	uint16_t port;
	uint64_t ov0 = 0, dr0 = 0, ov1 = 0, dr1 = 0;
	uint32_t queued = 0, backlog = 0;
	int l, fds[12];

	test_begin("listen_overflow");
	l = listen_any(1, &port);
	CHECK_INT(trace_netstat_read(&ov0, &dr0), 0);
	for (int i = 0; i < 12; i++) {
		struct sockaddr_in a = loopback(port);

		fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		connect(fds[i], (struct sockaddr *)&a, sizeof(a));
	}
	/* the handshakes complete in softirq, which a busy machine may run
	 * late: poll up to 3 s for the overflow and the queued connection */
	for (int i = 0; i < 150; i++) {
		if (trace_netstat_read(&ov1, &dr1) == 0 && ov1 > ov0 &&
		    trace_listener_queue(l, &queued, &backlog) == 0 && queued >= 1)
			break;
		usleep(20000);
	}
	CHECK_INT(trace_netstat_read(&ov1, &dr1), 0);
	CHECK_INT(trace_listener_queue(l, &queued, &backlog), 0);
	CHECK_MSG(ov1 > ov0, "ListenOverflows did not move (%llu)", (unsigned long long)ov1);
	CHECK_MSG(queued >= 1 && backlog == 1, "queued %u backlog %u", queued, backlog);
	for (int i = 0; i < 12; i++)
		close(fds[i]);
	close(l);
	test_end();
}

/* Reset flood with nobody reading the ring: the 256 KiB ring holds a few thousand events;
 * everything else must be counted lost (or capped). Then the same with a reader. */
static void test_flood_accounting(void)
{
	struct tr_counters c0, c1;
	struct tr_config cfg;
	uint16_t port;
	int l;
	unsigned n = 6000, made = 0;

	test_begin("event_loss_accounted");
	trace_config_get(tr, &cfg);
	cfg.events_per_sec = 1000000;
	trace_config_set(tr, &cfg);
	l = listen_any(4096, &port);
	trace_port_set(tr, port, true);
	trace_counters_read(tr, &c0);
	n_evs = 0;
	for (unsigned i = 0; i < n; i++) {
		int c = connect_to(port);
		int s = accept(l, NULL, NULL);

		if (c >= 0 && s >= 0) {
			close_reset(s);
			made++;
		}
		if (c >= 0)
			close(c);
	}
	trace_counters_read(tr, &c1);
	drain_events(300);
	uint64_t sent = c1.events_sent - c0.events_sent, lost = c1.events_lost - c0.events_lost,
		 capped = c1.events_capped - c0.events_capped;

	printf("# reset flood: %u resets, %llu delivered (%u read), %llu lost, %llu capped\n", made,
	       (unsigned long long)sent, n_evs, (unsigned long long)lost,
	       (unsigned long long)capped);
	CHECK_MSG(sent + lost + capped >= made, "events unaccounted: %llu+%llu+%llu < %u",
		  (unsigned long long)sent, (unsigned long long)lost, (unsigned long long)capped,
		  made);
	CHECK_MSG(lost > 0, "a stalled consumer should lose events");
	CHECK_MSG(n_evs >= sent, "read %u < delivered %llu", n_evs, (unsigned long long)sent);
	cfg.events_per_sec = 1000;
	trace_config_set(tr, &cfg);
	trace_port_set(tr, port, false);
	close(l);
	test_end();
}

int main(void)
{
	int err;

	if (geteuid() != 0) {
		test_skip("trace", "needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN for a netns)");
		return 0;
	}
	if (unshare(CLONE_NEWNET) || lo_up()) {
		test_skip("trace", "cannot make a network namespace: %s", strerror(errno));
		return 0;
	}
	err = trace_open(&tr, NULL, why, sizeof(why));
	if (err) {
		test_skip("trace", "%s", why);
		return 0;
	}
	test_begin("open_attach");
	CHECK_INT(trace_events_start(tr, on_event, NULL), 0);
	CHECK(trace_events_fd(tr) >= 0);
	printf("# drops hook: %s, sockops: %s%s%s\n", trace_has_drops(tr) ? "yes" : "no",
	       trace_has_sockops(tr) ? "yes" : "no", trace_missing(tr)[0] ? "; missing: " : "",
	       trace_missing(tr));
	test_end();

	test_lifecycle();
	test_upstream_connect();
	test_resets();
	test_retransmits();
	test_backlog_overflow();
	test_flood_accounting();
	trace_close(tr);
	return test_exit_code();
}
