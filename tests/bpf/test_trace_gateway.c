/* test_trace_gateway.c — anomaly tracing through a real reflexd, live.
 *
 * In a private network namespace this process makes (so the nftables rule, the tracer's
 * scope and every socket stay inside it), two reflex-origin endpoints A and B behind reflexd
 * with `trace: {enabled, eject}` and short windows:
 *   - an upstream that resets (reflex-origin reset=1) is a kernel event under its endpoint;
 *   - a client that resets its connection to reflexd is a kernel event under 127.0.0.0/24;
 *   - an nftables rule dropping a quarter of the packets to A makes reflexd retransmit to A:
 *     the detector reports A (retransmits or latency) and ejects it, requests keep flowing
 *     to B, A comes back after the cool-down, and no client ever sees an error;
 *   - with net.core.somaxconn at 2 in the namespace and reflexd stopped, a burst of connects
 *     overflows its accept queue: a listener event;
 *   - with the kernel limiter on lo and trace.penalty, a burst of client resets puts
 *     127.0.0.0/24 into the penalty box (new connections from it go unanswered);
 *   - GET /events?stream=1 delivers events as server-sent events;
 *   - without BPF privilege reflexd says so in one line and serves normally;
 *   - the access log attributes retransmits to A's requests (a second reflexd with A alone,
 *     so nothing is ejected while it is lossy);
 *   - an ejection refused because A was the last endpoint in rotation (a third reflexd, its
 *     other endpoint C stopped) takes effect once C is back, while A is still lossy.
 * Needs root, BPF (CAP_BPF + CAP_PERFMON), nft(8); otherwise SKIP and why.
 */
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "tests/e2e/lib/harness.h"
#include "userspace/trace.h"

static int pa, pb, pg, padm;
static char alog[512];

/* the detector of the reflexd instances that eject: short windows, little history */
#define TRACE_EJECT                                                                            \
	"trace: {enabled: true, window: 500ms, min_samples: 4, min_requests: 2, eject: true, " \
	"eject_time: 3s}\n"

/* Drop a quarter of the packets to port (to an endpoint: reflexd retransmits), until
 * unlossy(). 0 or nft's exit status. */
static int lossy(int port)
{
	char cmd[512];

	snprintf(
		cmd, sizeof(cmd),
		"nft add table inet rxgw && nft 'add chain inet rxgw in { type filter hook input "
		"priority 0; }' && nft add rule inet rxgw in tcp dport %d numgen random mod 4 == 0 "
		"drop",
		port);
	return system(cmd);
}

static void unlossy(void)
{
	int rc = system("nft delete table inet rxgw >/dev/null 2>&1");

	(void)rc; /* not there: nothing to undo */
}

static int lo_up(void)
{
	struct ifreq ifr = {0};
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int rc = 0;

	if (fd < 0)
		return -1;
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) ||
	    (ifr.ifr_flags |= IFF_UP, ioctl(fd, SIOCSIFFLAGS, &ifr)))
		rc = -1;
	close(fd);
	return rc;
}

/* The admin answer to GET path (malloc'd, NUL-terminated), or NULL. */
static char *admin_get(const char *path)
{
	char url[256];
	struct h_resp r;
	char *out = NULL;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", padm, path);
	if (h_get(url, &r) == 200 && r.body) {
		out = malloc(r.body_len + 1);
		if (out) {
			memcpy(out, r.body, r.body_len);
			out[r.body_len] = 0;
		}
	}
	h_resp_free(&r);
	return out;
}

/* Wait until GET /events has an event with all the needles in one object. */
/* True once every thread of pid is in the stopped state ('T'), within timeout_ms. */
static bool all_threads_stopped(pid_t pid, unsigned timeout_ms)
{
	for (double end = h_now_ms() + timeout_ms; h_now_ms() < end; h_sleep_ms(10)) {
		char cmd[128], out[64] = "";
		FILE *f;

		/* field 3 of /proc/PID/task/TID/stat is the state; count the threads not in T */
		snprintf(cmd, sizeof(cmd),
			 "awk '{ if ($3 != \"T\") n++ } END { print n+0 }' /proc/%d/task/*/stat",
			 (int)pid);
		f = popen(cmd, "r");
		if (!f)
			return false;
		if (!fgets(out, sizeof(out), f))
			out[0] = 0;
		pclose(f);
		if (!strcmp(out, "0\n"))
			return true;
	}
	return false;
}

static bool wait_event(const char *const needles[], unsigned timeout_ms, char *found, size_t flen)
{
	double end = h_now_ms() + timeout_ms;

	while (h_now_ms() < end) {
		char *ev = admin_get("/events");

		for (char *o = ev ? strstr(ev, "{\"seq\":") : NULL; o;
		     o = strstr(o + 1, "{\"seq\":")) {
			char *next = strstr(o + 1, "{\"seq\":");
			size_t len = next ? (size_t)(next - o) : strlen(o);
			char one[4096];
			bool all = true;

			if (len >= sizeof(one))
				len = sizeof(one) - 1;
			memcpy(one, o, len);
			one[len] = 0;
			for (unsigned i = 0; needles[i] && all; i++)
				all = strstr(one, needles[i]) != NULL;
			if (all) {
				if (found)
					snprintf(found, flen, "%s", one);
				free(ev);
				return true;
			}
		}
		free(ev);
		h_sleep_ms(100);
	}
	return false;
}

struct traffic {
	void *curl;
	unsigned ok, errors, from_a, from_b;
	bool quiet; /* errors are expected (an endpoint stopped on purpose): count, don't print */
};

/* One request through reflexd; counts where it went. */
static void one_request(struct traffic *t)
{
	char url[128], who[32] = "";
	struct h_req rq = {.url = url, .curl = t->curl, .timeout_ms = 60000};
	struct h_resp r;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/t?cc=no-store", pg);
	if (h_http(&rq, &r) == 0 && r.status == 200) {
		t->ok++;
		h_resp_header(&r, "X-Origin", who, sizeof(who));
		t->from_a += !strcmp(who, "a");
		t->from_b += !strcmp(who, "b");
	} else {
		t->errors++;
		if (!t->quiet)
			printf("# client error: status %ld curl %d %s\n", r.status, r.curl_rc,
			       r.error);
	}
	h_resp_free(&r);
}

static void traffic_for(struct traffic *t, unsigned ms)
{
	double end = h_now_ms() + ms;

	while (h_now_ms() < end) {
		one_request(t);
		h_sleep_ms(3);
	}
}

static bool metric_at_least(const char *line_prefix, unsigned long long min)
{
	char *m = admin_get("/metrics");
	char *p = m ? strstr(m, line_prefix) : NULL;
	bool ok = p && strtoull(p + strlen(line_prefix), NULL, 10) >= min;

	free(m);
	return ok;
}

int main(void)
{
	struct trace *probe = NULL;
	char why[256], found[4096], subj_a[64], subj_b[64];
	struct h_proc *oa, *ob, *rd;

	if (geteuid() != 0) {
		test_skip("trace_gateway", "needs root (BPF, a network namespace, nftables)");
		return 0;
	}
	if (system("command -v nft >/dev/null 2>&1")) {
		test_skip("trace_gateway", "nft(8) not installed (Debian: nftables)");
		return 0;
	}
	if (unshare(CLONE_NEWNET) || lo_up()) {
		test_skip("trace_gateway", "cannot make a network namespace");
		return 0;
	}
	if (trace_open(&probe, NULL, why, sizeof(why))) {
		test_skip("trace_gateway", "%s", why);
		return 0;
	}
	trace_close(probe);
	/* tiny accept queues in this namespace (listen() backlogs are capped by it) */
	if (system("sysctl -qw net.core.somaxconn=2")) {
		test_skip("trace_gateway", "cannot set net.core.somaxconn in the namespace");
		return 0;
	}
	h_init("trace_gateway", 150);

	pa = h_free_port();
	pb = h_free_port();
	pg = h_free_port();
	padm = h_free_port();
	snprintf(subj_a, sizeof(subj_a), "\"subject\":\"127.0.0.1:%d\"", pa);
	snprintf(subj_b, sizeof(subj_b), "\"subject\":\"127.0.0.1:%d\"", pb);
	snprintf(alog, sizeof(alog), "%s/test-logs/bpf-trace-gateway-%d-access.log", h_build_dir(),
		 (int)getpid());
	unlink(alog);
	oa = h_start_origin("a", pa, 1);
	ob = h_start_origin("b", pb, 1);
	const char *cfg = h_write_config("listen: [\"127.0.0.1:%d\"]\n"
					 "workers: 1\n"
					 "access_log: %s\n"
					 "pools:\n"
					 "  default:\n"
					 "    endpoints: [127.0.0.1:%d, 127.0.0.1:%d]\n"
					 "    balance: round_robin\n"
					 "admin: {listen: \"127.0.0.1:%d\"}\n" TRACE_EJECT,
					 pg, alog, pa, pb, padm);
	rd = oa && ob ? h_start_reflexd_config("reflexd", pg, cfg) : NULL;
	if (!rd) {
		test_begin("reflexd_starts");
		CHECK_MSG(0, "reflexd or an origin did not start");
		test_end();
		return test_exit_code();
	}

	test_begin("tracer_attached");
	CHECK_INT(h_wait_port("127.0.0.1", padm, 5000), 0); /* the admin API starts last */
	CHECK_MSG(metric_at_least("\nreflex_trace_enabled ", 1), "reflex_trace_enabled is not 1");
	CHECK(h_log_contains(rd, "trace: eBPF tracing on"));
	test_end();

	test_begin("upstream_reset_event");
	{
		char url[128];
		struct h_resp r;

		snprintf(url, sizeof(url), "http://127.0.0.1:%d/r?reset=1&cc=no-store", pg);
		for (int i = 0; i < 2; i++) {
			CHECK(h_get(url, &r) == 502);
			h_resp_free(&r);
		}
		const char *n1[] = {"\"source\":\"kernel\"", "\"action\":\"rst_recv\"",
				    "\"kind\":\"endpoint\"", NULL};
		CHECK_MSG(wait_event(n1, 3000, found, sizeof(found)), "no rst_recv endpoint event");
		CHECK_MSG(strstr(found, subj_a) || strstr(found, subj_b), "wrong subject: %s",
			  found);
	}
	test_end();

	test_begin("client_reset_event");
	{
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_port = htons(pg),
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		struct linger l = {1, 0};
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		CHECK(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
		CHECK(write(fd, "GET / HTTP/1.1\r\nHo", 18) == 18);
		h_sleep_ms(50);
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
		close(fd); /* RST to reflexd */
		const char *n2[] = {"\"kind\":\"client\"", "\"subject\":\"127.0.0.0/24\"",
				    "\"action\":\"rst_recv\"", NULL};
		CHECK_MSG(wait_event(n2, 3000, NULL, 0), "no rst_recv event for 127.0.0.0/24");
	}
	test_end();

	test_begin("events_stream_sse");
	{
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_port = htons(padm),
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		static const char rq[] = "GET /events?stream=1 HTTP/1.1\r\nHost: x\r\n\r\n";
		char buf[8192], url[128];
		size_t have = 0;
		struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		struct h_resp r;

		CHECK(connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		CHECK(write(fd, rq, sizeof(rq) - 1) == (ssize_t)sizeof(rq) - 1);
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/r?reset=1&cc=no-store", pg);
		/* A reset every 700 ms (each in a new 500 ms window, so each is logged
		 * again) until one shows: the stream is subscribed in its own time. */
		double next_reset = h_now_ms() + 700;
		for (double end = h_now_ms() + 8000; h_now_ms() < end && have < sizeof(buf) - 1;) {
			if (h_now_ms() >= next_reset) {
				h_get(url, &r);
				h_resp_free(&r);
				next_reset = h_now_ms() + 700;
			}
			ssize_t n = read(fd, buf + have, sizeof(buf) - 1 - have);

			if (n == 0)
				break;
			if (n > 0)
				have += (size_t)n;
			buf[have] = 0;
			if (strstr(buf, "\"action\":\"rst_recv\""))
				break;
		}
		buf[have] = 0;
		CHECK_MSG(strstr(buf, "Content-Type: text/event-stream"), "no SSE head: %.200s",
			  buf);
		CHECK_MSG(strstr(buf, "event: anomaly\ndata: {") &&
				  strstr(buf, "\"action\":\"rst_recv\""),
			  "no anomaly event on the stream: %.300s", buf);
		close(fd);
	}
	test_end();

	struct traffic t = {.curl = h_curl_new()};

	test_begin("lossy_endpoint_ejected_readmitted_no_client_errors");
	traffic_for(&t, 3500); /* history: min_samples windows */
	printf("# baseline: %u ok (a %u, b %u), %u errors\n", t.ok, t.from_a, t.from_b, t.errors);
	CHECK(t.from_a > 0 && t.from_b > 0);
	CHECK_MSG(lossy(pa) == 0, "nft rule not installed");
	const char *n3[] = {subj_a, "\"source\":\"detector\"", "\"action\":\"ejected", NULL};
	bool ejected = false;
	double end = h_now_ms() + 20000;

	while (!ejected && h_now_ms() < end) {
		traffic_for(&t, 300);
		ejected = wait_event(n3, 1, found, sizeof(found));
	}
	unlossy();
	CHECK_MSG(ejected, "A was not ejected while lossy");
	if (ejected) {
		printf("# ejection event: %s\n", found);
		CHECK(strstr(found, "\"signal\":\"tcp_retransmits\"") ||
		      strstr(found, "\"signal\":\"latency_p99\""));
		/* while A is out, everything goes to B */
		struct traffic during = {.curl = t.curl};

		traffic_for(&during, 1000);
		printf("# during ejection: a %u, b %u, errors %u\n", during.from_a, during.from_b,
		       during.errors);
		CHECK_MSG(during.from_a <= 1, "A still served %u requests", during.from_a);
		CHECK(during.from_b > 0);
		t.ok += during.ok;
		t.errors += during.errors;
		/* and A comes back after eject_time */
		bool back = false;

		end = h_now_ms() + 8000;
		while (!back && h_now_ms() < end) {
			traffic_for(&t, 200);
			back = metric_at_least("reflex_anomaly_actions_total{action=\"readmit\"} ",
					       1);
		}
		CHECK_MSG(back, "A was not readmitted");
		struct traffic after = {.curl = t.curl};

		traffic_for(&after, 1500);
		printf("# after readmission: a %u, b %u\n", after.from_a, after.from_b);
		CHECK_MSG(after.from_a > 0, "A gets no traffic after readmission");
		t.errors += after.errors;
	}
	CHECK_MSG(t.errors == 0, "%u client errors", t.errors);
	CHECK(metric_at_least("reflex_anomaly_actions_total{action=\"eject\"} ", 1));
	test_end();

	/* Attribution: a second reflexd with A alone (nothing to eject to) and the same loss;
	 * its access records to A carry the retransmits of the window they fell in. */
	test_begin("access_log_upstream_retransmits");
	{
		int pg2 = h_free_port(), padm2 = h_free_port();
		char alog2[600], url[128];
		const char *cfg2;
		struct h_proc *rd2;
		struct traffic t2 = {.curl = h_curl_new()};

		snprintf(alog2, sizeof(alog2), "%s.2", alog);
		unlink(alog2);
		cfg2 = h_write_config("listen: [\"127.0.0.1:%d\"]\n"
				      "workers: 1\n"
				      "access_log: %s\n"
				      "upstream: [127.0.0.1:%d]\n"
				      "admin: {listen: \"127.0.0.1:%d\"}\n"
				      "trace: {enabled: true, window: 500ms}\n",
				      pg2, alog2, pa, padm2);
		rd2 = h_start_reflexd_config("reflexd2", pg2, cfg2);
		CHECK(rd2 != NULL);
		/* warm up: the keep-alive connection and one window without loss */
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/t?cc=no-store", pg2);
		for (double w = h_now_ms() + 1200; rd2 && h_now_ms() < w;) {
			struct h_req rq = {.url = url, .curl = t2.curl};
			struct h_resp r;

			if (h_http(&rq, &r) || r.status != 200)
				t2.errors++;
			h_resp_free(&r);
			h_sleep_ms(5);
		}
		CHECK_MSG(lossy(pa) == 0, "nft rule not installed");
		double stop = h_now_ms() + 4000;

		while (rd2 && h_now_ms() < stop) {
			/* as long as one_request's: a segment lost several times in a row
			 * waits out TCP's doubling retransmission timer (0.2 + 0.4 + ... s) */
			struct h_req rq = {.url = url, .curl = t2.curl, .timeout_ms = 60000};
			struct h_resp r;

			if (h_http(&rq, &r) || r.status != 200) {
				t2.errors++;
				printf("# client error under loss: status %ld curl %d %s\n",
				       r.status, r.curl_rc, r.error);
			}
			h_resp_free(&r);
		}
		unlossy();
		CHECK_INT(t2.errors, 0);
		h_curl_free(t2.curl);
		h_stop(rd2, 10000); /* the access log is flushed at exit */
		unsigned with = 0, total = 0;
		char line[8192];
		FILE *f = fopen(alog2, "r");

		while (f && fgets(line, sizeof(line), f)) {
			const char *p = strstr(line, "\"upstream_retransmits\":");

			total++;
			with += p && p[23] >= '1' && p[23] <= '9';
		}
		if (f)
			fclose(f);
		printf("# access records with upstream_retransmits > 0: %u of %u\n", with, total);
		CHECK_MSG(with > 0, "no access record with upstream_retransmits > 0");
	}
	test_end();

	/* Deferred ejection: a third reflexd with A and C, C stopped (its health check takes it
	 * out), then A lossy: A's alarm finds it the last endpoint in rotation and it stays in;
	 * once C is back, A goes out while its alarm lasts, with an event of its own. */
	test_begin("refused_ejection_retried_when_peer_returns");
	{
		int pc = h_free_port(), pg3 = h_free_port(), padm3 = h_free_port();
		int saved_adm = padm, saved_pg = pg;
		const char *cfg3;
		struct h_proc *oc = h_start_origin("c", pc, 1), *rd3 = NULL;
		struct traffic t3 = {.curl = h_curl_new(), .quiet = true};
		const char *refused[] = {subj_a, "\"source\":\"detector\"",
					 "not ejected: last endpoint in rotation", NULL};
		/* mostly the deferred retry ("..., deferred: still in alarm"); with few requests
		 * per window A's alarms may clear and fire anew, which ejects it too */
		const char *deferred[] = {subj_a, "\"action\":\"ejected", NULL};
		bool got_refused = false, got_deferred = false;

		cfg3 = h_write_config(
			"listen: [\"127.0.0.1:%d\"]\n"
			"workers: 1\n"
			"pools:\n"
			"  default:\n"
			"    endpoints: [127.0.0.1:%d, 127.0.0.1:%d]\n"
			"    balance: round_robin\n"
			"    outlier: off\n"
			"    health: {interval: 200ms, timeout: 2s, rise: 1, fall: 3}\n"
			"admin: {listen: \"127.0.0.1:%d\"}\n" TRACE_EJECT,
			pg3, pa, pc, padm3);
		if (oc)
			rd3 = h_start_reflexd_config("reflexd3", pg3, cfg3);
		CHECK(rd3 != NULL);
		if (rd3) {
			CHECK_INT(h_wait_port("127.0.0.1", padm3, 5000), 0);
			padm = padm3;
			pg = pg3;
			traffic_for(&t3, 3000); /* history for both endpoints */
			h_stop(oc, 5000);
			oc = NULL;
			traffic_for(&t3, 1500); /* three failed checks: C is down */
			CHECK_MSG(lossy(pa) == 0, "nft rule not installed");
			for (double until = h_now_ms() + 20000;
			     !got_refused && h_now_ms() < until;) {
				traffic_for(&t3, 300);
				got_refused = wait_event(refused, 1, found, sizeof(found));
			}
			CHECK_MSG(got_refused, "no refused ejection of A while C was down");
			if (got_refused) {
				oc = h_start_origin("c", pc, 1);
				for (double until = h_now_ms() + 10000;
				     oc && !got_deferred && h_now_ms() < until;) {
					traffic_for(&t3, 300);
					got_deferred =
						wait_event(deferred, 1, found, sizeof(found));
				}
				CHECK_MSG(got_deferred,
					  "A stayed in rotation after C came back, still lossy");
				if (got_deferred)
					printf("# ejection once C was back (%s): %.300s\n",
					       strstr(found, "deferred") ? "deferred" : "new alarm",
					       found);
			}
			unlossy();
			padm = saved_adm;
			pg = saved_pg;
			h_stop(rd3, 10000);
		}
		if (oc)
			h_stop(oc, 5000);
		h_curl_free(t3.curl);
	}
	test_end();

	/* Listen-queue overflow: the namespace's somaxconn is 2 (set before reflexd started),
	 * reflexd is stopped so nothing accepts, a burst of connects overflows its queue. */
	test_begin("listen_overflow_event");
	{
		int fds[32];
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_port = htons(pg),
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

		uint64_t ovf0 = 0, ovf = 0, drops = 0;

		trace_netstat_read(&ovf0, &drops);
		CHECK_INT(h_signal(rd, SIGSTOP), 0);
		/* a stop signal takes effect when each thread next runs: wait until all are */
		CHECK_MSG(all_threads_stopped(rd->pid, 5000), "reflexd did not stop");
		for (int i = 0; i < 32; i++) {
			fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
			connect(fds[i], (struct sockaddr *)&a, sizeof(a));
		}
		/* Resume only once the kernel has counted the overflow: on a loaded machine the
		 * SYNs may still wait in softirq when a fixed sleep ends, and an accept queue that
		 * reflexd drains first never overflows. */
		for (double until = h_now_ms() + 5000; h_now_ms() < until; h_sleep_ms(50))
			if (!trace_netstat_read(&ovf, &drops) && ovf > ovf0)
				break;
		printf("# ListenOverflows %llu -> %llu\n", (unsigned long long)ovf0,
		       (unsigned long long)ovf);
		h_sleep_ms(100);
		CHECK_INT(h_signal(rd, SIGCONT), 0);
		const char *n4[] = {"\"kind\":\"listener\"", "\"signal\":\"listen_overflows\"",
				    NULL};
		found[0] = 0;
		CHECK_MSG(wait_event(n4, 8000, found, sizeof(found)), "no listen_overflows event");
		printf("# overflow event: %.300s\n", found);
		char subj_g[64];

		snprintf(subj_g, sizeof(subj_g), "\"subject\":\"127.0.0.1:%d\"", pg);
		CHECK_MSG(strstr(found, subj_g) || strstr(found, "\"subject\":\"netns\""),
			  "wrong subject");
		for (int i = 0; i < 32; i++)
			close(fds[i]);
	}
	test_end();

	/* Action: a client prefix whose resets jump goes into the kernel limiter's penalty box
	 * (a separate reflexd with the kernel layer on lo, so the others are not boxed). */
	test_begin("client_prefix_penalty_box");
	{
		int pg4 = h_free_port(), padm4 = h_free_port(), saved = padm;
		const char *cfg4 =
			h_write_config("listen: [\"127.0.0.1:%d\"]\n"
				       "workers: 1\n"
				       "upstream: [127.0.0.1:%d]\n"
				       "admin: {listen: \"127.0.0.1:%d\"}\n"
				       "ratelimit: {kernel: {interfaces: [lo], prefix_v4: 24}}\n"
				       "trace: {enabled: true, window: 500ms, min_samples: 4,\n"
				       "        penalty: true, penalty_time: 20s}\n",
				       pg4, pb, padm4);
		struct h_proc *p4 = h_start_reflexd_config("reflexd4", pg4, cfg4);
		struct sockaddr_in a = {.sin_family = AF_INET,
					.sin_port = htons(pg4),
					.sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		char url[128];

		CHECK(p4 != NULL);
		padm = padm4;
		snprintf(url, sizeof(url), "http://127.0.0.1:%d/t", pg4);
		/* history: a few quiet windows with connections and no resets */
		for (double until = h_now_ms() + 3000; p4 && h_now_ms() < until;) {
			struct h_resp r;

			h_get(url, &r);
			h_resp_free(&r);
			h_sleep_ms(50);
		}
		/* then a burst of resets from the same /24. Connects are non-blocking with a short
		 * wait: on a loaded machine the detector can box the source mid-burst, and a
		 * blocking connect would then sit in SYN retries until the box expires. */
		for (int i = 0; p4 && i < 30; i++) {
			struct linger l = {1, 0};
			int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
			struct pollfd bp = {.fd = fd, .events = POLLOUT};
			int soerr = 0;
			socklen_t sl = sizeof(soerr);

			connect(fd, (struct sockaddr *)&a, sizeof(a));
			if (poll(&bp, 1, 300) != 1 ||
			    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) || soerr) {
				close(fd);
				break; /* boxed already */
			}
			setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
			h_sleep_ms(2);
			close(fd);
		}
		const char *n5[] = {"\"kind\":\"client\"", "\"subject\":\"127.0.0.0/24\"",
				    "\"source\":\"detector\"", "\"action\":\"penalty 20s\"", NULL};
		CHECK_MSG(p4 && wait_event(n5, 4000, found, sizeof(found)),
			  "no penalty for 127.0.0.0/24: %s", found);
		/* boxed: a new connection from 127.0.0.1 gets no answer */
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		struct pollfd pf = {.fd = fd, .events = POLLOUT};

		connect(fd, (struct sockaddr *)&a, sizeof(a));
		if (poll(&pf, 1, 700) != 0) {
			char *pen = admin_get("/limits/penalty"), *ev = admin_get("/events");
			char *lim = admin_get("/limits"),
			     *cnt = lim ? strstr(lim, "\"counters\"") : NULL;

			CHECK_MSG(
				0,
				"a boxed source still connects; event %s; /limits/penalty: %.400s; "
				"counters: %.600s; events: %.3000s",
				found, pen ? pen : "?", cnt ? cnt : "?", ev ? ev : "?");
			free(pen);
			free(ev);
			free(lim);
		}
		close(fd);
		padm = saved;
		h_stop(p4, 5000);
	}
	test_end();

	if (system("test -x /usr/bin/setpriv")) {
		test_skip("no_bpf_privilege_one_line_http_signals", "setpriv(1) not installed");
	} else {
		int pg3 = h_free_port(), padm3 = h_free_port();
		const char *cfg3 = h_write_config("listen: [\"127.0.0.1:%d\"]\n"
						  "workers: 1\n"
						  "upstream: [127.0.0.1:%d]\n"
						  "admin: {listen: \"127.0.0.1:%d\"}\n"
						  "trace: {enabled: true}\n",
						  pg3, pb, padm3);
		char *argv[] = {"/usr/bin/setpriv", "--reuid=65534",   "--regid=65534",
				"--clear-groups",   "--inh-caps=-all", (char *)h_reflexd_path(),
				"--config",	    (char *)cfg3,      NULL};
		char url[128];
		struct h_resp r;
		struct h_proc *p;

		test_begin("no_bpf_privilege_one_line_http_signals");
		chmod(cfg3, 0644);
		p = h_spawn("reflexd_nobody", argv, "127.0.0.1", pg3, 10000);
		CHECK_MSG(p != NULL, "reflexd did not start as nobody");
		if (p) {
			snprintf(url, sizeof(url), "http://127.0.0.1:%d/t", pg3);
			CHECK_INT(h_get(url, &r), 200);
			h_resp_free(&r);
			CHECK_INT(h_wait_port("127.0.0.1", padm3, 5000), 0);
			CHECK(h_log_contains(p, "trace: eBPF tracing off ("));
			CHECK(h_log_contains(p, "the anomaly detector watches HTTP signals only"));
			padm = padm3;
			CHECK(metric_at_least("\nreflex_trace_enabled ", 0) &&
			      !metric_at_least("\nreflex_trace_enabled ", 1));
			h_stop(p, 5000);
		}
		test_end();
	}

	h_curl_free(t.curl);
	h_finish(rd, 10000);
	return test_exit_code();
}
