/* test_reflexd_live.c — the kernel limiter as reflexd runs it, on a veth pair between two
 * network namespaces this test makes (rdgw<pid> with reflexd and reflex-origin, rdcl<pid>
 * with the clients). reflexd attaches the limiter to its side of the pair itself
 * (ratelimit.kernel.interfaces); the test then checks from the other namespace:
 *   - connections above the SYN limit never reach reflexd (its accept counter, /stats);
 *   - a client from another source still gets 200;
 *   - a policy change through the admin API applies without reattaching (one attach line);
 *   - reflexd detaches on exit (nothing limits the port afterwards).
 * Needs root, ip(8), BPF, and build/reflexd + build/reflex-origin: SKIP with the reason
 * otherwise. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/lib/test.h"

#define GW_ADDR "10.214.0.1"
#define SRC_A "10.214.0.2"
#define SRC_B "10.214.0.3"
#define TOKEN "live-secret-0123456789"

static char ns_gw[32], ns_cl[32], veth_gw[IF_NAMESIZE], veth_cl[IF_NAMESIZE];
static bool netns_made;
static int orig_ns = -1;
static pid_t gw_pid = -1, origin_pid = -1;
static char dir[256], log_path[300];
static uint16_t gw_port, admin_port;

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

static void stop(pid_t *pid, int *status)
{
	int st = -1;

	if (*pid <= 0)
		return;
	kill(*pid, SIGTERM);
	for (int i = 0; i < 100; i++) {
		if (waitpid(*pid, &st, WNOHANG) == *pid)
			goto out;
		usleep(50000);
	}
	kill(*pid, SIGKILL);
	waitpid(*pid, &st, 0);
out:
	if (status)
		*status = st;
	*pid = -1;
}

static void cleanup(void)
{
	stop(&gw_pid, NULL);
	stop(&origin_pid, NULL);
	if (!netns_made)
		return;
	if (orig_ns >= 0)
		setns(orig_ns, CLONE_NEWNET);
	sh("ip netns del %s", ns_gw);
	sh("ip netns del %s", ns_cl);
	netns_made = false;
	if (dir[0])
		sh("rm -rf '%s'", dir);
}

static void on_signal(int sig)
{
	cleanup();
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

static int netns_setup(char *why, size_t whylen)
{
	int pid = getpid();

	orig_ns = open("/proc/self/ns/net", O_RDONLY | O_CLOEXEC);
	snprintf(ns_gw, sizeof(ns_gw), "rdgw%d", pid);
	snprintf(ns_cl, sizeof(ns_cl), "rdcl%d", pid);
	snprintf(veth_gw, sizeof(veth_gw), "rdg%d", pid);
	snprintf(veth_cl, sizeof(veth_cl), "rdc%d", pid);
	netns_made = true;
	if (sh("ip netns add %s", ns_gw) || sh("ip netns add %s", ns_cl) ||
	    sh("ip link add %s netns %s type veth peer name %s netns %s", veth_gw, ns_gw, veth_cl,
	       ns_cl) ||
	    sh("ip -n %s addr add %s/24 dev %s", ns_gw, GW_ADDR, veth_gw) ||
	    sh("ip -n %s link set %s up", ns_gw, veth_gw) || sh("ip -n %s link set lo up", ns_gw) ||
	    sh("ip -n %s addr add %s/24 dev %s", ns_cl, SRC_A, veth_cl) ||
	    sh("ip -n %s addr add %s/24 dev %s", ns_cl, SRC_B, veth_cl) ||
	    sh("ip -n %s link set %s up", ns_cl, veth_cl) || sh("ip -n %s link set lo up", ns_cl)) {
		snprintf(why, whylen, "cannot create the namespaces and veth pair with ip(8)");
		return -1;
	}
	return 0;
}

/* A free port on addr in the current namespace (bind port 0, read it back). */
static uint16_t free_port(const char *addr)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	uint16_t p = 0;

	inet_pton(AF_INET, addr, &a.sin_addr);
	if (fd >= 0 && !bind(fd, (struct sockaddr *)&a, sizeof(a)) &&
	    !getsockname(fd, (struct sockaddr *)&a, &alen))
		p = ntohs(a.sin_port);
	if (fd >= 0)
		close(fd);
	return p;
}

/* Start argv inside the gateway namespace, output appended to log_path. */
static pid_t spawn_gw(char *const argv[])
{
	pid_t pid = fork();

	if (pid == 0) {
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (fd < 0 || netns_enter(ns_gw))
			_exit(126);
		dup2(fd, 1);
		dup2(fd, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	return pid;
}

/* One HTTP/1.1 exchange from src (NULL: any) to GW_ADDR:port; the status, body in out. */
static int http(const char *src, uint16_t port, const char *method, const char *path,
		const char *body, char *out, size_t outlen)
{
	struct sockaddr_in a = {.sin_family = AF_INET}, d = {.sin_family = AF_INET};
	struct timeval tv = {.tv_sec = 3};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), st = -1;
	char req[1024];
	size_t n = 0;

	if (fd < 0)
		return -1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (src) {
		inet_pton(AF_INET, src, &a.sin_addr);
		if (bind(fd, (struct sockaddr *)&a, sizeof(a)))
			goto out;
	}
	inet_pton(AF_INET, GW_ADDR, &d.sin_addr);
	d.sin_port = htons(port);
	if (connect(fd, (struct sockaddr *)&d, sizeof(d)))
		goto out;
	int len = snprintf(req, sizeof(req),
			   "%s %s HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n"
			   "Authorization: Bearer " TOKEN "\r\nContent-Length: %zu\r\n\r\n%s",
			   method, path, body ? strlen(body) : 0, body ? body : "");
	if (write(fd, req, (size_t)len) != len)
		goto out;
	for (;;) {
		ssize_t r = read(fd, out + n, outlen - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
		if (n + 1 >= outlen)
			break;
	}
	out[n] = 0;
	if (n > 12 && !strncmp(out, "HTTP/1.1 ", 9))
		st = atoi(out + 9);
out:
	close(fd);
	return st;
}

static long accepted(void)
{
	static char buf[1 << 16];
	const char *p;

	if (http(NULL, admin_port, "GET", "/stats", NULL, buf, sizeof(buf)) != 200)
		return -1;
	p = strstr(buf, "\"connections_accepted\":");
	return p ? atol(p + 23) : -1;
}

/* n (<= 64) non-blocking connects from src, given wait_ms to complete (below the 1 s SYN
 * retransmission, so a dropped SYN stays dropped). Returns how many connected. */
static int burst(const char *src, int n, int wait_ms)
{
	struct sockaddr_in a = {.sin_family = AF_INET}, d = {.sin_family = AF_INET};
	struct pollfd pfd[64];
	int ok = 0;

	inet_pton(AF_INET, src, &a.sin_addr);
	inet_pton(AF_INET, GW_ADDR, &d.sin_addr);
	d.sin_port = htons(gw_port);
	for (int i = 0; i < n && i < 64; i++) {
		int s = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		pfd[i] = (struct pollfd){.fd = -1};
		if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof(a)) ||
		    (connect(s, (struct sockaddr *)&d, sizeof(d)) && errno != EINPROGRESS)) {
			if (s >= 0)
				close(s);
			continue;
		}
		pfd[i] = (struct pollfd){.fd = s, .events = POLLOUT};
	}
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		long spent = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
		if (spent >= wait_ms || poll(pfd, (nfds_t)n, wait_ms - (int)spent) <= 0)
			break;
		for (int i = 0; i < n; i++)
			if (pfd[i].fd >= 0 && pfd[i].revents) {
				int err = 0;
				socklen_t el = sizeof(err);
				getsockopt(pfd[i].fd, SOL_SOCKET, SO_ERROR, &err, &el);
				ok += !err;
				close(pfd[i].fd);
				pfd[i].fd = -1;
			}
	}
	for (int i = 0; i < n; i++)
		if (pfd[i].fd >= 0)
			close(pfd[i].fd);
	return ok;
}

static int count_in_log(const char *needle)
{
	FILE *f = fopen(log_path, "r");
	char line[1024];
	int n = 0;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		n += strstr(line, needle) != NULL;
	fclose(f);
	return n;
}

int main(void)
{
	const char *build = getenv("REFLEX_BUILD") ? getenv("REFLEX_BUILD") : "build";
	char reflexd[300], origin[300], cfg[300], tokens[300], why[256], buf[1 << 14];
	uint16_t o_port;

	snprintf(reflexd, sizeof(reflexd), "%s/reflexd", build);
	snprintf(origin, sizeof(origin), "%s/reflex-origin", build);
	if (geteuid() != 0) {
		test_skip("reflexd_live", "needs root (network namespaces, BPF)");
		return test_exit_code();
	}
	if (access(reflexd, X_OK) || access(origin, X_OK)) {
		test_skip("reflexd_live", "%s or %s not built (make build)", reflexd, origin);
		return test_exit_code();
	}
	atexit(cleanup);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	alarm(90); /* a hang ends as a failure, and the namespaces go with it */
	signal(SIGALRM, on_signal);
	if (netns_setup(why, sizeof(why))) {
		test_skip("reflexd_live", "%s", why);
		return test_exit_code();
	}
	snprintf(dir, sizeof(dir), "/tmp/reflexd-live-%d", (int)getpid());
	mkdir(dir, 0700);
	snprintf(log_path, sizeof(log_path), "%s/reflexd.log", dir);
	snprintf(cfg, sizeof(cfg), "%s/reflexd.yaml", dir);
	snprintf(tokens, sizeof(tokens), "%s/tokens", dir);
	FILE *f = fopen(tokens, "w");
	if (f) {
		fputs("ops " TOKEN "\n", f);
		fclose(f);
	}
	chmod(tokens, 0600);
	if (netns_enter(ns_gw)) {
		test_skip("reflexd_live", "cannot enter %s", ns_gw);
		return test_exit_code();
	}
	gw_port = free_port(GW_ADDR);
	/* bind(0) may hand out the port it just gave back */
	do
		admin_port = free_port(GW_ADDR);
	while (admin_port == gw_port);
	o_port = free_port("127.0.0.1");
	f = fopen(cfg, "w");
	if (!f)
		return 1;
	fprintf(f,
		"workers: 2\n"
		"listen: [\"%s:%u\"]\n"
		"upstream: [\"127.0.0.1:%u\"]\n"
		"admin: {listen: \"%s:%u\", token_file: \"%s\"}\n"
		"ratelimit:\n"
		"  kernel: {interfaces: [%s], attach: tc, syn_rate: 1, syn_burst: 5}\n",
		GW_ADDR, gw_port, o_port, GW_ADDR, admin_port, tokens, veth_gw);
	fclose(f);
	char oport[16];
	snprintf(oport, sizeof(oport), "127.0.0.1:%u", o_port);
	char *oargv[] = {origin, "--listen", oport, "--name", "live", NULL};
	char *gargv[] = {reflexd, "--config", cfg, NULL};
	origin_pid = spawn_gw(oargv);
	gw_pid = spawn_gw(gargv);
	if (netns_enter(ns_cl)) {
		test_skip("reflexd_live", "cannot enter %s", ns_cl);
		return test_exit_code();
	}
	int st = -1;
	/* Process start and the BPF load take their time on a busy machine: 15 s. */
	for (int i = 0; i < 300 && st != 200; i++) {
		st = http(SRC_B, admin_port, "GET", "/limits", NULL, buf, sizeof(buf));
		if (st != 200)
			usleep(50000);
	}
	if (st != 200 || !strstr(buf, "\"kernel\":{\"active\":true")) {
		const char *w = strstr(buf, "\"why_off\":");
		test_skip("reflexd_live", "reflexd did not attach the kernel limiter: %.120s",
			  st != 200 ? "no admin answer"
			  : w	    ? w + 10
				    : buf);
		return test_exit_code();
	}

	test_begin("reflexd_live_syn_excess_never_reaches_reflexd");
	long before = accepted();
	int ok = burst(SRC_A, 20, 300);
	/* reflexd accepts (and counts) the queued connections in its own time */
	long after = accepted();
	for (int i = 0; i < 60 && before >= 0 && after - before < ok; i++) {
		usleep(50000);
		after = accepted();
	}
	CHECK_MSG(ok >= 5 && ok <= 7, "connected %d of 20 against burst 5", ok);
	CHECK_MSG(before >= 0 && after - before == ok, "reflexd accepted %ld, connected %d",
		  after - before, ok);
	CHECK_INT(http(SRC_B, gw_port, "GET", "/", NULL, buf, sizeof(buf)), 200);
	test_end();

	test_begin("reflexd_live_policy_change_without_reattach");
	CHECK_INT(http(SRC_B, admin_port, "PUT", "/limits/policy",
		       "{\"kernel\": {\"syn_rate\": 1000, \"syn_burst\": 1000}}", buf, sizeof(buf)),
		  200);
	usleep(100000); /* the bucket refills at the new rate from empty */
	ok = burst(SRC_A, 20, 1000);
	CHECK_MSG(ok == 20, "connected %d of 20 after raising the limit", ok);
	CHECK_INT(count_in_log("kernel limiter attached to"), 1);
	test_end();

	test_begin("reflexd_live_detach_on_exit");
	CHECK_INT(http(SRC_B, admin_port, "PUT", "/limits/policy",
		       "{\"kernel\": {\"syn_rate\": 1, \"syn_burst\": 1}}", buf, sizeof(buf)),
		  200);
	int status = -1;
	stop(&gw_pid, &status);
	CHECK_MSG(WIFEXITED(status) && WEXITSTATUS(status) == 0, "reflexd exit status %d", status);
	/* nothing listens now: every SYN must get its reset at once, none dropped */
	int refused = 0;
	for (int i = 0; i < 10; i++) {
		struct sockaddr_in a = {.sin_family = AF_INET}, d = {.sin_family = AF_INET};
		int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		struct timeval tv = {.tv_sec = 1}; /* bounds connect() if the SYN is dropped */
		if (s >= 0)
			setsockopt(s, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
		inet_pton(AF_INET, SRC_A, &a.sin_addr);
		inet_pton(AF_INET, GW_ADDR, &d.sin_addr);
		d.sin_port = htons(gw_port);
		if (s >= 0 && !bind(s, (struct sockaddr *)&a, sizeof(a)) &&
		    connect(s, (struct sockaddr *)&d, sizeof(d)) && errno == ECONNREFUSED)
			refused++;
		if (s >= 0)
			close(s);
	}
	CHECK_MSG(refused == 10,
		  "%d of 10 connects refused at once (the rest dropped: still "
		  "attached?)",
		  refused);
	test_end();
	return test_exit_code();
}
