/* 81_ratelimit_kernel — reflexd with the kernel limiter attached (tcx on the
 * loopback of a network namespace this test makes for itself, so nothing
 * outside it is touched):
 *   - SYNs over the per-source rate are dropped before reflexd sees them
 *     (its accept counter), while a client from another source (127.0.0.2)
 *     still gets 200;
 *   - a kernel policy change through the admin API applies live, without
 *     reattaching;
 *   - L7 escalation: a source refused more than N times in the window lands
 *     in the kernel penalty box (listed by /limits/penalty, its SYNs
 *     dropped), and leaves it when removed through the admin API;
 *   - deny list entries added and removed through the admin API.
 * Needs root and BPF (CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, BTF): otherwise
 * SKIP with the reason. */
#include "lib/harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define TOKEN "rlk-secret-0123456789"

static int gw_port, admin_port, o_port;
static struct h_proc *gw;
static const char *cfg_path, *token_file;

static void write_config(const char *kernel_extra)
{
	FILE *f = fopen(cfg_path, "w");

	if (!f)
		return;
	fprintf(f,
		"workers: 2\n"
		"listen: [\"127.0.0.1:%d\", \"[::1]:%d\"]\n"
		"upstream: [\"127.0.0.1:%d\"]\n"
		"admin: {listen: \"127.0.0.1:%d\", token_file: \"%s\"}\n"
		"ratelimit:\n"
		"  client: {rate: 0.2/s, burst: 2}\n"
		"  escalate: {refusals: 3, window: 10s, penalty: 30s}\n"
		"  kernel: {interfaces: [lo], attach: tc, %s}\n",
		gw_port, gw_port, o_port, admin_port, token_file, kernel_extra);
	fclose(f);
}

static long admin(const char *method, const char *path, const char *body, struct h_resp *r)
{
	char url[256];
	const char *hdrs[] = {"Authorization: Bearer " TOKEN, "Content-Type: application/json",
			      NULL};
	struct h_req q = {.method = method,
			  .url = url,
			  .timeout_ms = 5000,
			  .headers = hdrs,
			  .body = body,
			  .body_len = body ? strlen(body) : 0,
			  .no_expect = true};

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", admin_port, path);
	memset(r, 0, sizeof(*r));
	if (h_http(&q, r) != 0)
		return -1;
	return r->status;
}

static long accepted(void)
{
	struct h_resp r;
	long v = -1;

	if (admin("GET", "/stats", NULL, &r) == 200 && r.body) {
		const char *p = strstr(r.body, "\"connections_accepted\":");
		if (p)
			v = atol(p + 23);
	}
	h_resp_free(&r);
	return v;
}

/* Connect from src to the gateway within wait_ms: 1 connected, 0 not (the
 * SYN was dropped: no answer, not even a reset). */
static int try_connect(const char *src, unsigned wait_ms)
{
	struct sockaddr_in a = {.sin_family = AF_INET}, d = {.sin_family = AF_INET};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), ok = 0;

	if (fd < 0)
		return 0;
	inet_pton(AF_INET, src, &a.sin_addr);
	inet_pton(AF_INET, "127.0.0.1", &d.sin_addr);
	d.sin_port = htons((uint16_t)gw_port);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    (connect(fd, (struct sockaddr *)&d, sizeof(d)) == 0 || errno == EINPROGRESS)) {
		struct pollfd p = {.fd = fd, .events = POLLOUT};
		int err = 0;
		socklen_t el = sizeof(err);
		if (poll(&p, 1, (int)wait_ms) == 1 &&
		    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 && !err)
			ok = 1;
	}
	close(fd);
	return ok;
}

/* GET / from src over a plain socket: the status, or -1. */
static int get_from(const char *src, const char *path)
{
	struct sockaddr_in a = {.sin_family = AF_INET}, d = {.sin_family = AF_INET};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), st = -1;
	struct timeval tv = {.tv_sec = 2};
	char req[256], buf[512];

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	inet_pton(AF_INET, src, &a.sin_addr);
	inet_pton(AF_INET, "127.0.0.1", &d.sin_addr);
	d.sin_port = htons((uint16_t)gw_port);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    connect(fd, (struct sockaddr *)&d, sizeof(d)) == 0) {
		snprintf(req, sizeof(req),
			 "GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", path);
		if (h_send_str(fd, req) == 0) {
			ssize_t n = read(fd, buf, sizeof(buf) - 1);
			if (n > 12) {
				buf[n] = 0;
				st = atoi(buf + 9);
			}
		}
	}
	close(fd);
	return st;
}

/* GET / from an IPv6 source to [::1]: the status, or -1. */
static int get_from6_to(const char *src, int port)
{
	struct sockaddr_in6 a = {.sin6_family = AF_INET6}, d = {.sin6_family = AF_INET6};
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0), st = -1;
	struct timeval tv = {.tv_sec = 2};
	char buf[512];

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	inet_pton(AF_INET6, src, &a.sin6_addr);
	inet_pton(AF_INET6, "::1", &d.sin6_addr);
	d.sin6_port = htons((uint16_t)port);
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 &&
	    connect(fd, (struct sockaddr *)&d, sizeof(d)) == 0 &&
	    h_send_str(fd, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") == 0) {
		ssize_t n = read(fd, buf, sizeof(buf) - 1);
		if (n > 12) {
			buf[n] = 0;
			st = atoi(buf + 9);
		}
	}
	close(fd);
	return st;
}

static int get_from6(const char *src)
{
	return get_from6_to(src, gw_port);
}

/* An IPv6 client is one bucket per /64 at L7 (as in the kernel layer): a second
 * address of the same /64 shares the first one's limit, another /64 does not. */
static void test_ipv6_prefix(void)
{
	test_begin("l7_ipv6_clients_grouped_by_64");
	if (system("ip -6 addr add 2001:db8:1::1/128 dev lo && ip -6 addr add 2001:db8:1::2/128 "
		   "dev lo && ip -6 addr add 2001:db8:2::1/128 dev lo") != 0) {
		test_end();
		test_skip("l7_ipv6_clients_grouped_by_64", "cannot add IPv6 addresses to lo");
		return;
	}
	h_sleep_ms(300); /* duplicate address detection is off on lo, but be gentle */
	int a1 = get_from6("2001:db8:1::1"), a2 = get_from6("2001:db8:1::1");
	int a3 = get_from6("2001:db8:1::1");
	CHECK_MSG(a1 == 200 && a2 == 200 && a3 == 429, "first /64: %d %d %d", a1, a2, a3);
	CHECK_INT(get_from6("2001:db8:1::2"), 429); /* same /64: same bucket */
	CHECK_INT(get_from6("2001:db8:2::1"), 200); /* another /64 */
	test_end();
}

/* Without the kernel layer (no interface here) syn_rate is enforced at
 * accept, per source: an IPv6 source must be its /64 there too, or a client
 * rotating through its /64 opens as many connections as it has addresses.
 * Uses the addresses test_ipv6_prefix added. */
static void test_accept_limit_ipv6_prefix(void)
{
	test_begin("accept_limit_ipv6_clients_grouped_by_64");
	int port = h_free_port();
	const char *cfg = h_write_config("workers: 1\n"
					 "listen: [\"127.0.0.1:%d\", \"[::1]:%d\"]\n"
					 "upstream: [\"127.0.0.1:%d\"]\n"
					 "admin: {listen: off}\n"
					 "ratelimit:\n"
					 "  kernel: {syn_rate: 1, syn_burst: 2}\n",
					 port, port, o_port);
	struct h_proc *acc = h_start_reflexd_config("reflexd_accept", port, cfg);
	if (!acc) {
		CHECK_MSG(false, "the second reflexd did not start");
		test_end();
		return;
	}
	/* the start-up probe's connection came from 127.0.0.1: its own bucket */
	double t0 = h_now_ms();
	int a1 = get_from6_to("2001:db8:1::1", port), a2 = get_from6_to("2001:db8:1::1", port);
	int a3 = get_from6_to("2001:db8:1::2", port); /* same /64: its third connection */
	double dt = h_now_ms() - t0;
	int a4 = get_from6_to("2001:db8:2::1", port); /* another /64 */
	CHECK_MSG(a1 == 200 && a2 == 200, "first two connections of the /64: %d %d", a1, a2);
	/* 1/s, burst 2: refused unless a second passed (a very loaded host) */
	if (dt < 900)
		CHECK_MSG(a3 == -1, "a third connection from the same /64 (other address) got %d",
			  a3);
	else
		printf("# three connections took %.0f ms: the refill makes the third legal\n", dt);
	CHECK_INT(a4, 200);
	test_end();
	h_finish(acc, 10000);
}

static bool in_penalty(const char *addr)
{
	struct h_resp r;
	char pat[64];
	bool in = false;

	snprintf(pat, sizeof(pat), "\"source\":\"%s/32\"", addr);
	if (admin("GET", "/limits/penalty", NULL, &r) == 200 && r.body)
		in = strstr(r.body, pat) != NULL;
	h_resp_free(&r);
	return in;
}

static void test_syn_limit(void)
{
	struct h_resp r;

	test_begin("kernel_syn_limit_excess_never_reaches_reflexd");
	long before = accepted();
	double t0 = h_now_ms();
	int ok = 0;
	/* 800 ms: below the 1 s SYN retransmission, so a dropped SYN stays dropped, and
	 * long enough that a loaded machine completes every handshake it let through */
	for (int i = 0; i < 20; i++)
		ok += try_connect("127.0.0.1", 800);
	int refilled = (int)((h_now_ms() - t0) / 1000) + 1;
	/* reflexd accepts (and counts) the queued connections in its own time */
	long after = accepted();
	for (double until = h_now_ms() + 5000;
	     before >= 0 && after - before < ok && h_now_ms() < until;) {
		h_sleep_ms(50);
		after = accepted();
	}
	/* burst 5 at 1/s: 5, plus one per second the loop took */
	CHECK_MSG(ok >= 5 && ok <= 5 + refilled, "connected %d of 20 (%d s)", ok, refilled);
	CHECK_MSG(before >= 0 && after - before == ok, "reflexd accepted %ld, connected %d",
		  after - before, ok);
	CHECK_INT(get_from("127.0.0.2", "/"), 200); /* another source is not limited */
	CHECK_INT(admin("GET", "/limits", NULL, &r), 200);
	CHECK_MSG(r.body && strstr(r.body, "\"syn_rate\":") && strstr(r.body, "\"active\":true"),
		  "%s", r.body ? r.body : "");
	h_resp_free(&r);
	test_end();

	test_begin("kernel_policy_change_live");
	CHECK_INT(admin("PUT", "/limits/policy",
			"{\"kernel\": {\"syn_rate\": 1000, \"syn_burst\": 1000}}", &r),
		  200);
	h_resp_free(&r);
	/* the bucket is empty at the moment of the change and refills at the
	 * new rate (docs/ratelimit.md): 100 ms at 1000/s is 100 tokens */
	h_sleep_ms(100);
	ok = 0;
	for (int i = 0; i < 20; i++)
		ok += try_connect("127.0.0.1", 1000);
	CHECK_MSG(ok == 20, "connected %d of 20 after raising the limit", ok);
	/* attached once, never again */
	CHECK(h_log_contains(gw, "kernel limiter attached to lo"));
	test_end();
}

static void test_escalation(void)
{
	struct h_resp r;

	test_begin("escalation_into_penalty_box");
	int refused = 0;
	for (int i = 0; i < 8; i++)
		refused += get_from("127.0.0.1", "/") == 429;
	CHECK_MSG(refused >= 4, "refused %d of 8", refused);
	bool boxed = false;
	for (int i = 0; i < 40 && !boxed; i++) {
		boxed = in_penalty("127.0.0.1");
		if (!boxed)
			h_sleep_ms(50);
	}
	CHECK_MSG(boxed, "127.0.0.1 not in /limits/penalty");
	CHECK_MSG(!try_connect("127.0.0.1", 300), "a boxed source still connects");
	CHECK_INT(get_from("127.0.0.2", "/"), 200);
	CHECK_INT(admin("GET", "/limits", NULL, &r), 200);
	const char *dropped = r.body ? strstr(r.body, "\"dropped\":{\"deny\":") : NULL;
	const char *pen = dropped ? strstr(dropped, "\"penalty\":") : NULL;
	CHECK_MSG(r.body && strstr(r.body, "\"escalated\":1") && pen && atol(pen + 10) >= 1, "%s",
		  r.body ? r.body : "");
	h_resp_free(&r);
	/* the same counters on /metrics */
	CHECK_INT(admin("GET", "/metrics", NULL, &r), 200);
	const char *m =
		r.body ? strstr(r.body,
				"\nreflex_ratelimit_kernel_dropped_total{reason=\"penalty\"} ")
		       : NULL;
	CHECK_MSG(m && atol(m + 57) >= 1 &&
			  strstr(r.body, "\nreflex_ratelimit_kernel_attached 1\n"),
		  "kernel metrics missing");
	h_resp_free(&r);
	CHECK_INT(admin("DELETE", "/limits/penalty", "{\"cidr\": \"127.0.0.1\"}", &r), 200);
	h_resp_free(&r);
	CHECK(!in_penalty("127.0.0.1"));
	CHECK(try_connect("127.0.0.1", 1000));
	test_end();

	test_begin("deny_list_live");
	CHECK_INT(admin("POST", "/limits/deny", "{\"cidr\": \"127.0.0.2/32\"}", &r), 200);
	h_resp_free(&r);
	CHECK(!try_connect("127.0.0.2", 300));
	CHECK_INT(admin("GET", "/limits/deny", NULL, &r), 200);
	CHECK(r.body && strstr(r.body, "127.0.0.2/32"));
	h_resp_free(&r);
	CHECK_INT(admin("DELETE", "/limits/deny", "{\"cidr\": \"127.0.0.2/32\"}", &r), 200);
	h_resp_free(&r);
	CHECK(try_connect("127.0.0.2", 1000));
	test_end();
}

static void test_reload(void)
{
	struct h_resp r;

	test_begin("kernel_policy_on_reload");
	write_config("syn_rate: 2, syn_burst: 3, deny: [127.0.0.3]");
	CHECK_INT(h_signal(gw, SIGHUP), 0);
	bool seen = false;
	for (int i = 0; i < 200 && !seen; i++) { /* 10 s */
		if (admin("GET", "/limits", NULL, &r) == 200 && r.body)
			seen = strstr(r.body, "\"syn_rate\":2,\"syn_burst\":3") != NULL;
		h_resp_free(&r);
		if (!seen)
			h_sleep_ms(50);
	}
	CHECK_MSG(seen, "the reloaded kernel policy is not in /limits");
	CHECK_INT(admin("GET", "/limits/deny", NULL, &r), 200);
	CHECK_MSG(r.body && strstr(r.body, "\"127.0.0.3/32\""), "%s", r.body ? r.body : "");
	h_resp_free(&r);
	CHECK(!try_connect("127.0.0.3", 300));
	CHECK_INT(get_from("127.0.0.4", "/"), 200); /* a fresh source: both layers let it in */
	/* still the one attachment made at start */
	CHECK(!h_log_contains(gw, "detached from lo"));
	test_end();
}

int main(void)
{
	h_init("81_ratelimit_kernel", 120);
	if (geteuid() != 0) {
		test_skip("ratelimit_kernel", "needs root (BPF and a network namespace)");
		return test_exit_code();
	}
	if (unshare(CLONE_NEWNET) != 0) {
		test_skip("ratelimit_kernel", "unshare(CLONE_NEWNET): %s", strerror(errno));
		return test_exit_code();
	}
	if (system("ip link set lo up") != 0) {
		test_skip("ratelimit_kernel", "cannot bring up lo in the new namespace");
		return test_exit_code();
	}
	if (h_free_port6() < 0) { /* reflexd listens on [::1] too */
		test_skip("ratelimit_kernel", "no IPv6 loopback (::1) in the new namespace");
		return test_exit_code();
	}
	gw_port = h_free_port();
	admin_port = h_free_port();
	o_port = h_free_port();
	char token_path[1024];
	snprintf(token_path, sizeof(token_path), "%s/test-logs/e2e-81-%d-tokens", h_build_dir(),
		 (int)getpid());
	FILE *f = fopen(token_path, "w");
	if (f) {
		fputs("ops " TOKEN "\n", f);
		fclose(f);
	}
	chmod(token_path, 0600);
	token_file = token_path;
	cfg_path = h_write_config("# rewritten below\n");
	write_config("syn_rate: 1, syn_burst: 5");
	const char *cfg = cfg_path;

	if (!h_start_origin("origin", o_port, 1))
		return test_exit_code();
	gw = h_start_reflexd_config("reflexd", gw_port, cfg);
	if (!gw || h_wait_port("127.0.0.1", admin_port, 5000)) {
		test_begin("setup");
		test_fail(__FILE__, __LINE__, "reflexd or its admin API did not start");
		return test_exit_code();
	}
	struct h_resp r;
	/* Ready = accepting (after the privilege drop): the start-up probe's connection,
	 * queued until then, is accepted before the tests count accepts. */
	for (double until = h_now_ms() + 5000; h_now_ms() < until; h_sleep_ms(20)) {
		long st = admin("GET", "/readyz", NULL, &r);
		h_resp_free(&r);
		if (st == 200)
			break;
	}
	h_sleep_ms(100);
	admin("GET", "/limits", NULL, &r);
	bool active = r.body && strstr(r.body, "\"kernel\":{\"active\":true");
	if (!active) {
		const char *why = r.body ? strstr(r.body, "\"why_off\":") : NULL;
		test_skip("ratelimit_kernel", "the kernel limiter did not attach: %.120s",
			  why ? why + 10 : "(no answer)");
		h_resp_free(&r);
		h_finish(gw, 10000);
		return test_exit_code();
	}
	h_resp_free(&r);
	test_syn_limit();
	test_escalation();
	test_reload();
	test_ipv6_prefix();
	test_accept_limit_ipv6_prefix();
	h_finish(gw, 10000);
	unlink(token_path);
	return test_exit_code();
}
