/* harness.c — processes, ports, libcurl and raw-socket helpers for the e2e
 * scenarios. See harness.h for the contract. */
#include "harness.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define H_MAX_PROCS 32

static char scenario_name[64] = "e2e";
static struct h_proc *procs[H_MAX_PROCS];
/* A copy of the pids readable from a signal handler. */
static volatile pid_t proc_pids[H_MAX_PROCS];
static int n_procs;

/* ---- lifetime -------------------------------------------------------------- */

const char *h_build_dir(void)
{
	const char *b = getenv("REFLEX_BUILD");

	return b && *b ? b : "build";
}

const char *h_reflexd_path(void)
{
	static char path[512];

	snprintf(path, sizeof(path), "%s/reflexd", h_build_dir());
	return path;
}

const char *h_origin_path(void)
{
	static char path[512];

	snprintf(path, sizeof(path), "%s/reflex-origin", h_build_dir());
	return path;
}

static const char *log_dir(void)
{
	static char dir[256];

	if (!dir[0]) {
		snprintf(dir, sizeof(dir), "%s/test-logs", h_build_dir());
		mkdir(h_build_dir(), 0755);
		mkdir(dir, 0755);
	}
	return dir;
}

double h_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void h_sleep_ms(unsigned ms)
{
	struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

/* Async-signal-safe: kill everything we started, hard. */
static void kill_all_now(void)
{
	for (int i = 0; i < H_MAX_PROCS; i++)
		if (proc_pids[i] > 0)
			kill(proc_pids[i], SIGKILL);
}

static void on_fatal_signal(int sig)
{
	static const char msg[] = "FAIL watchdog: scenario killed by a signal or timed out\n";

	if (sig == SIGALRM) {
		ssize_t r = write(STDOUT_FILENO, msg, sizeof(msg) - 1);
		(void)r;
	}
	kill_all_now();
	signal(sig, SIG_DFL);
	if (sig == SIGALRM)
		_exit(1);
	raise(sig);
}

static void on_exit_cleanup(void)
{
	bool failed = test_exit_code() != 0;

	for (int i = 0; i < n_procs; i++) {
		struct h_proc *p = procs[i];

		if (!p)
			continue;
		if (!p->exited)
			h_stop(p, 2000);
		if (failed) {
			printf("  --- log tail of %s (%s) ---\n", p->name, p->log);
			h_log_tail(p, 25);
		}
	}
	fflush(stdout);
	curl_global_cleanup();
}

void h_init(const char *scenario, unsigned watchdog_s)
{
	struct sigaction sa = {0};

	snprintf(scenario_name, sizeof(scenario_name), "%s", scenario);
	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	sa.sa_handler = on_fatal_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGALRM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGABRT, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	atexit(on_exit_cleanup);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	log_dir();
	if (watchdog_s)
		alarm(watchdog_s);
}

/* ---- ports ----------------------------------------------------------------- */

/* Ports handed out so far. A port is closed again before the scenario's
 * process binds it, so the kernel may hand the same one to the next bind(0):
 * two listeners of one scenario would then fight over it. */
static int given_ports[256];
static int n_given_ports;

static int free_port_of(int family)
{
	for (int attempt = 0; attempt < 100; attempt++) {
		struct sockaddr_storage ss = {0};
		socklen_t len;
		int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int port = -1;
		bool seen = false;

		if (fd < 0)
			return -1;
		if (family == AF_INET6) {
			struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

			a->sin6_family = AF_INET6;
			a->sin6_addr = in6addr_loopback;
			len = sizeof(*a);
		} else {
			struct sockaddr_in *a = (struct sockaddr_in *)&ss;

			a->sin_family = AF_INET;
			a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			len = sizeof(*a);
		}
		if (bind(fd, (struct sockaddr *)&ss, len) == 0 &&
		    getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
			port = ntohs(family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							: ((struct sockaddr_in *)&ss)->sin_port);
		close(fd);
		if (port < 0)
			return -1;
		for (int i = 0; i < n_given_ports; i++)
			seen |= given_ports[i] == port;
		if (seen)
			continue;
		if (n_given_ports < (int)(sizeof(given_ports) / sizeof(given_ports[0])))
			given_ports[n_given_ports++] = port;
		return port;
	}
	return -1;
}

int h_free_port(void)
{
	return free_port_of(AF_INET);
}

int h_free_port6(void)
{
	return free_port_of(AF_INET6);
}

/* ---- processes ------------------------------------------------------------- */

static void register_proc(struct h_proc *p)
{
	for (int i = 0; i < H_MAX_PROCS; i++) {
		if (!proc_pids[i]) {
			proc_pids[i] = p->pid;
			break;
		}
	}
	if (n_procs < H_MAX_PROCS)
		procs[n_procs++] = p;
}

static void forget_pid(pid_t pid)
{
	for (int i = 0; i < H_MAX_PROCS; i++)
		if (proc_pids[i] == pid)
			proc_pids[i] = 0;
}

bool h_alive(struct h_proc *p)
{
	int st;

	if (!p || p->exited)
		return false;
	pid_t r = waitpid(p->pid, &st, WNOHANG);
	if (r == p->pid) {
		p->exited = true;
		p->status = st;
		forget_pid(p->pid);
		return false;
	}
	return r == 0;
}

int h_wait_port(const char *host, int port, unsigned timeout_ms)
{
	double end = h_now_ms() + timeout_ms;

	do {
		int fd = h_connect(host, port, 200);

		if (fd >= 0) {
			close(fd);
			return 0;
		}
		h_sleep_ms(20);
	} while (h_now_ms() < end);
	return -ETIMEDOUT;
}

static bool is_reflexd(char *const argv[])
{
	for (int i = 0; argv[i]; i++) {
		const char *slash = strrchr(argv[i], '/');
		if (!strcmp(slash ? slash + 1 : argv[i], "reflexd"))
			return true;
	}
	return false;
}

/* Wait until p's log, from byte `from` on, holds "reflexd: ready", p dies, or end. */
static void wait_ready_line(struct h_proc *p, off_t from, double end)
{
	do {
		FILE *f = fopen(p->log, "r");
		char line[1024];
		bool ready = false;

		if (f && fseeko(f, from, SEEK_SET) == 0)
			while (!ready && fgets(line, sizeof(line), f))
				ready = strstr(line, "reflexd: ready") != NULL;
		if (f)
			fclose(f);
		if (ready || !h_alive(p))
			return;
		h_sleep_ms(10);
	} while (h_now_ms() < end);
}

struct h_proc *h_spawn(const char *name, char *const argv[], const char *host, int port,
		       unsigned ready_ms)
{
	struct h_proc *p = calloc(1, sizeof(*p));
	char cmd[1024] = "";
	size_t off = 0;

	if (!p)
		return NULL;
	snprintf(p->name, sizeof(p->name), "%s", name);
	snprintf(p->log, sizeof(p->log), "%s/e2e-%s-%s.log", log_dir(), scenario_name, name);
	for (int i = 0; argv[i] && off < sizeof(cmd) - 1; i++)
		off += snprintf(cmd + off, sizeof(cmd) - off, "%s%s", i ? " " : "", argv[i]);

	/* A fresh log per scenario run; a process restarted under the same
	 * name within the run appends to it. */
	static char seen[H_MAX_PROCS][64];
	bool first = true;
	for (int i = 0; i < H_MAX_PROCS && seen[i][0]; i++)
		if (!strcmp(seen[i], name))
			first = false;
	if (first)
		for (int i = 0; i < H_MAX_PROCS; i++)
			if (!seen[i][0]) {
				snprintf(seen[i], sizeof(seen[i]), "%s", name);
				break;
			}
	int logfd = open(p->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (first ? O_TRUNC : 0),
			 0644);
	if (logfd < 0) {
		fprintf(stderr, "h_spawn: %s: %s\n", p->log, strerror(errno));
		free(p);
		return NULL;
	}
	dprintf(logfd, "=== %s: %s\n", name, cmd);
	off_t log_start = lseek(logfd, 0, SEEK_END);
	/* The build tree is shared: a binary being relinked right now is
	 * missing or not executable for a moment. Wait that out (3 s). */
	for (int i = 0; i < 60 && access(argv[0], X_OK) != 0; i++)
		h_sleep_ms(50);
	if (access(argv[0], X_OK) != 0) {
		test_fail(__FILE__, __LINE__, "%s: cannot execute %s: %s (make %s?)", name, argv[0],
			  strerror(errno), argv[0]);
		close(logfd);
		free(p);
		return NULL;
	}

	pid_t parent = getpid();
	int attempts = 0;
	bool registered = false;
respawn:
	attempts++;
	p->exited = false;
	p->pid = fork();
	if (p->pid < 0) {
		close(logfd);
		if (!registered)
			free(p);
		return NULL;
	}
	if (p->pid == 0) {
		/* Die with the scenario even if it is SIGKILLed. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		int devnull = open("/dev/null", O_RDONLY);
		dup2(devnull, STDIN_FILENO);
		dup2(logfd, STDOUT_FILENO);
		dup2(logfd, STDERR_FILENO);
		signal(SIGPIPE, SIG_DFL);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		alarm(0);
		execv(argv[0], argv);
		dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	if (!registered) {
		register_proc(p);
		registered = true;
	} else {
		for (int i = 0; i < H_MAX_PROCS; i++) {
			if (!proc_pids[i]) {
				proc_pids[i] = p->pid;
				break;
			}
		}
	}
	if (port <= 0) {
		close(logfd);
		return p;
	}

	double end = h_now_ms() + ready_ms;
	while (h_now_ms() < end) {
		if (!h_alive(p)) {
			/* 127: exec failed, e.g. the binary was being relinked. */
			if (WIFEXITED(p->status) && WEXITSTATUS(p->status) == 127 && attempts < 3) {
				dprintf(logfd, "=== %s: exec failed, retrying\n", name);
				h_sleep_ms(300);
				goto respawn;
			}
			/* a FAIL, so a scenario that then gives up cannot pass by doing nothing */
			test_fail(__FILE__, __LINE__,
				  "%s exited before listening (status 0x%x); log %s", name,
				  p->status, p->log);
			h_log_tail(p, 20);
			close(logfd);
			return NULL;
		}
		int fd = h_connect(host, port, 200);
		if (fd >= 0) {
			close(fd);
			/* reflexd's listeners queue connections from the start, but it serves
			 * (admin API up, privileges dropped, accepts armed) only once it says
			 * "reflexd: ready" */
			if (is_reflexd(argv))
				wait_ready_line(p, log_start, end);
			close(logfd);
			return p;
		}
		h_sleep_ms(20);
	}
	close(logfd);
	test_fail(__FILE__, __LINE__, "%s did not accept on %s:%d within %u ms; log %s", name, host,
		  port, ready_ms, p->log);
	h_log_tail(p, 20);
	h_stop(p, 1000);
	return NULL;
}

struct h_proc *h_start_origin(const char *name, int port, unsigned workers)
{
	char listen[64], w[16];
	char *argv[10];
	int n = 0;

	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	snprintf(w, sizeof(w), "%u", workers ? workers : 1);
	argv[n++] = (char *)h_origin_path();
	argv[n++] = "--listen";
	argv[n++] = listen;
	argv[n++] = "--name";
	argv[n++] = (char *)name;
	argv[n++] = "--workers";
	argv[n++] = w;
	argv[n] = NULL;
	return h_spawn(name, argv, "127.0.0.1", port, 10000);
}

struct h_proc *h_start_reflexd(const char *name, int port, const char *const args[])
{
	char *argv[64];
	int n = 0;

	argv[n++] = (char *)h_reflexd_path();
	for (int i = 0; args && args[i] && n < 63; i++)
		argv[n++] = (char *)args[i];
	argv[n] = NULL;
	return h_spawn(name, argv, "127.0.0.1", port, 10000);
}

struct h_proc *h_start_reflexd_config(const char *name, int port, const char *config_path)
{
	const char *args[] = {"--config", config_path, NULL};

	return h_start_reflexd(name, port, args);
}

int h_signal(struct h_proc *p, int sig)
{
	if (!p || p->exited)
		return -ESRCH;
	return kill(p->pid, sig) == 0 ? 0 : -errno;
}

int h_wait_exit(struct h_proc *p, unsigned timeout_ms)
{
	double end = h_now_ms() + timeout_ms;

	if (!p)
		return -EINVAL;
	for (;;) {
		if (!h_alive(p) && p->exited)
			return 0;
		if (h_now_ms() >= end)
			return -ETIMEDOUT;
		h_sleep_ms(10);
	}
}

int h_stop(struct h_proc *p, unsigned timeout_ms)
{
	if (!p)
		return -1;
	if (p->exited)
		return p->status;
	kill(p->pid, SIGTERM);
	if (h_wait_exit(p, timeout_ms) == 0)
		return p->status;
	kill(p->pid, SIGKILL);
	if (h_wait_exit(p, 2000) == 0)
		return p->status;
	return -1;
}

void h_log_tail(const struct h_proc *p, int lines)
{
	FILE *f;
	char *buf;
	long size, from;

	if (!p || !(f = fopen(p->log, "r")))
		return;
	fseek(f, 0, SEEK_END);
	size = ftell(f);
	from = size > 16384 ? size - 16384 : 0;
	fseek(f, from, SEEK_SET);
	buf = calloc(1, (size_t)(size - from) + 1);
	if (buf && fread(buf, 1, (size_t)(size - from), f) == (size_t)(size - from)) {
		long len = size - from, start = len;
		int seen = 0;

		while (start > 0) {
			if (buf[start - 1] == '\n' && start != len && ++seen >= lines)
				break;
			start--;
		}
		char *line = buf + start, *nl;
		while (*line) {
			nl = strchr(line, '\n');
			if (nl)
				*nl = 0;
			printf("    | %s\n", line);
			if (!nl)
				break;
			line = nl + 1;
		}
	}
	free(buf);
	fclose(f);
	fflush(stdout);
}

bool h_log_contains(const struct h_proc *p, const char *needle)
{
	char line[4096];
	bool found = false;
	FILE *f;

	if (!p || !(f = fopen(p->log, "r")))
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, needle) != NULL;
	fclose(f);
	return found;
}

bool h_wait_log(const struct h_proc *p, const char *needle, unsigned timeout_ms)
{
	double end = h_now_ms() + timeout_ms;

	while (!h_log_contains(p, needle)) {
		if (h_now_ms() >= end)
			return false;
		h_sleep_ms(20);
	}
	return true;
}

bool h_log_has_sanitizer_report(const struct h_proc *p)
{
	char line[1024];
	bool found = false;
	FILE *f;

	if (!p || !(f = fopen(p->log, "r")))
		return false;
	while (!found && fgets(line, sizeof(line), f))
		found = strstr(line, "ERROR: AddressSanitizer") ||
			strstr(line, "ERROR: LeakSanitizer") || strstr(line, "runtime error:");
	fclose(f);
	return found;
}

void h_finish(struct h_proc *p, unsigned timeout_ms)
{
	char name[96];

	if (!p)
		return;
	snprintf(name, sizeof(name), "%s_alive", p->name);
	for (char *c = name; *c; c++)
		if (*c == '-')
			*c = '_';
	test_begin(name);
	CHECK_MSG(h_alive(p), "%s died during the scenario (status 0x%x)", p->name, p->status);
	test_end();

	snprintf(name, sizeof(name), "%s_clean_exit", p->name);
	for (char *c = name; *c; c++)
		if (*c == '-')
			*c = '_';
	test_begin(name);
	if (!p->exited) {
		kill(p->pid, SIGTERM);
		if (h_wait_exit(p, timeout_ms) != 0) {
			test_fail(__FILE__, __LINE__, "%s still running %u ms after SIGTERM",
				  p->name, timeout_ms);
			h_stop(p, 100);
		}
	}
	if (p->exited) {
		if (WIFSIGNALED(p->status))
			test_fail(__FILE__, __LINE__, "%s killed by signal %d", p->name,
				  WTERMSIG(p->status));
		else
			CHECK_MSG(WEXITSTATUS(p->status) == 0, "%s exit status %d, want 0", p->name,
				  WEXITSTATUS(p->status));
	}
	CHECK_MSG(!h_log_has_sanitizer_report(p), "sanitizer report in %s", p->log);
	test_end();
}

int h_run(char *const argv[], unsigned timeout_ms, char **out)
{
	int pfd[2];
	struct h_buf b = {0};
	int st = -1;

	if (out)
		*out = NULL;
	if (pipe2(pfd, O_CLOEXEC) != 0)
		return -1;
	pid_t pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		int devnull = open("/dev/null", O_RDONLY);
		dup2(devnull, STDIN_FILENO);
		dup2(pfd[1], STDOUT_FILENO);
		dup2(pfd[1], STDERR_FILENO);
		signal(SIGPIPE, SIG_DFL);
		alarm(0);
		execv(argv[0], argv);
		dprintf(STDERR_FILENO, "exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(pfd[1]);
	for (int i = 0; i < H_MAX_PROCS; i++) {
		if (!proc_pids[i]) {
			proc_pids[i] = pid;
			break;
		}
	}
	h_read_all(pfd[0], &b, timeout_ms, 0);
	close(pfd[0]);
	double end = h_now_ms() + timeout_ms;
	for (;;) {
		pid_t r = waitpid(pid, &st, WNOHANG);
		if (r == pid)
			break;
		if (h_now_ms() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &st, 0);
			break;
		}
		h_sleep_ms(5);
	}
	forget_pid(pid);
	if (out) {
		if (!b.data)
			b.data = calloc(1, 1);
		*out = b.data;
	} else {
		free(b.data);
	}
	return st;
}

long h_rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	if (!(f = fopen(path, "r")))
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* ---- temp files ------------------------------------------------------------ */

const char *h_write_config(const char *fmt, ...)
{
	static char paths[16][1024];
	static int next, seq;
	char *path = paths[next++ % 16];
	va_list ap;
	FILE *f;

	snprintf(path, 1024, "%s/e2e-%s-%d-%d.yaml", log_dir(), scenario_name, (int)getpid(),
		 seq++);
	if (!(f = fopen(path, "w")))
		return NULL;
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fclose(f);
	return path;
}

/* ---- hashing --------------------------------------------------------------- */

uint64_t h_fnv1a(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;

	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

void h_pattern_fill(char *buf, size_t len, uint64_t offset)
{
	unsigned k = (unsigned)(offset % 26);

	for (size_t i = 0; i < len; i++) {
		buf[i] = (char)('a' + k);
		if (++k == 26)
			k = 0;
	}
}

uint64_t h_pattern_hash(uint64_t n)
{
	char buf[65536];
	uint64_t h = H_FNV_INIT, off = 0;

	while (off < n) {
		size_t len = n - off < sizeof(buf) ? (size_t)(n - off) : sizeof(buf);

		h_pattern_fill(buf, len, off);
		h = h_fnv1a(h, buf, len);
		off += len;
	}
	return h;
}

const char *h_hex64(uint64_t h, char out[17])
{
	snprintf(out, 17, "%016llx", (unsigned long long)h);
	return out;
}

/* ---- libcurl --------------------------------------------------------------- */

struct xfer {
	const struct h_req *req;
	struct h_resp *resp;
	struct h_buf body;
	struct h_buf hdrs;
	uint64_t sent;
};

static void buf_append(struct h_buf *b, const void *data, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;

		while (cap < b->len + len + 1)
			cap *= 2;
		char *n = realloc(b->data, cap);
		if (!n)
			abort();
		b->data = n;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = 0;
}

void h_buf_free(struct h_buf *b)
{
	free(b->data);
	memset(b, 0, sizeof(*b));
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * n;

	x->resp->body_bytes += len;
	x->resp->body_hash = h_fnv1a(x->resp->body_hash, data, len);
	if (!x->req->count_only)
		buf_append(&x->body, data, len);
	if (x->req->sink)
		x->req->sink(data, len, h_now_ms(), x->req->sink_arg);
	return len;
}

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	size_t len = size * n;

	/* A new status line starts a new response (after a 1xx): keep only the
	 * final response's headers. */
	if (len >= 5 && memcmp(data, "HTTP/", 5) == 0)
		x->hdrs.len = 0;
	buf_append(&x->hdrs, data, len);
	return len;
}

static size_t on_upload(char *buf, size_t size, size_t n, void *arg)
{
	struct xfer *x = arg;
	const struct h_req *r = x->req;
	size_t want = size * n;
	uint64_t total = r->gen ? r->gen_len : r->body_len;

	if (x->sent >= total)
		return 0;
	if (want > total - x->sent)
		want = (size_t)(total - x->sent);
	if (r->gen)
		r->gen(buf, want, x->sent, r->gen_arg);
	else
		memcpy(buf, (const char *)r->body + x->sent, want);
	x->resp->upload_hash = h_fnv1a(x->resp->upload_hash, buf, want);
	x->resp->upload_bytes += want;
	x->sent += want;
	return want;
}

void *h_curl_new(void)
{
	return curl_easy_init();
}

void h_curl_free(void *curl)
{
	if (curl)
		curl_easy_cleanup(curl);
}

int h_http(const struct h_req *req, struct h_resp *resp)
{
	struct xfer x = {.req = req, .resp = resp};
	struct curl_slist *hl = NULL, *rl = NULL;
	char errbuf[CURL_ERROR_SIZE] = "";
	CURL *c = req->curl;
	bool own = !c;
	bool has_body = req->body || req->gen;
	CURLcode rc;

	memset(resp, 0, sizeof(*resp));
	resp->body_hash = H_FNV_INIT;
	resp->upload_hash = H_FNV_INIT;
	if (own)
		c = curl_easy_init();
	else
		curl_easy_reset(c);
	if (!c) {
		resp->curl_rc = -1;
		snprintf(resp->error, sizeof(resp->error), "curl_easy_init failed");
		return -1;
	}
	curl_easy_setopt(c, CURLOPT_URL, req->url);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_NOPROXY, "*");
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, req->timeout_ms ? req->timeout_ms : 10000L);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 3000L);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, &x);
	curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(c, CURLOPT_HEADERDATA, &x);
	curl_easy_setopt(c, CURLOPT_HTTP_VERSION,
			 req->http10 ? CURL_HTTP_VERSION_1_0 : CURL_HTTP_VERSION_1_1);
	/* We check bytes, not decodings: never ask for compression. */
	curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, NULL);
	if (req->resolve) {
		rl = curl_slist_append(rl, req->resolve);
		curl_easy_setopt(c, CURLOPT_RESOLVE, rl);
	}
	for (int i = 0; req->headers && req->headers[i]; i++)
		hl = curl_slist_append(hl, req->headers[i]);
	if (req->chunked)
		hl = curl_slist_append(hl, "Transfer-Encoding: chunked");
	if (req->no_expect)
		hl = curl_slist_append(hl, "Expect:");
	if (hl)
		curl_easy_setopt(c, CURLOPT_HTTPHEADER, hl);

	if (req->head) {
		curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
	} else if (has_body) {
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_READFUNCTION, on_upload);
		curl_easy_setopt(c, CURLOPT_READDATA, &x);
		if (!req->chunked)
			curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
					 (curl_off_t)(req->gen ? req->gen_len : req->body_len));
	}
	if (req->method)
		curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);

	double t0 = h_now_ms();
	rc = curl_easy_perform(c);
	resp->time_ms = h_now_ms() - t0;
	resp->curl_rc = (int)rc;
	if (rc != CURLE_OK)
		snprintf(resp->error, sizeof(resp->error), "curl: %s: %s", curl_easy_strerror(rc),
			 errbuf);
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp->status);
	curl_easy_getinfo(c, CURLINFO_NUM_CONNECTS, &resp->num_connects);
	resp->headers = x.hdrs.data;
	resp->headers_len = x.hdrs.len;
	resp->body = x.body.data;
	resp->body_len = x.body.len;
	if (!resp->headers)
		resp->headers = calloc(1, 1);
	if (!resp->body && !req->count_only)
		resp->body = calloc(1, 1);
	curl_slist_free_all(hl);
	curl_slist_free_all(rl);
	if (own)
		curl_easy_cleanup(c);
	return rc == CURLE_OK ? 0 : -1;
}

void h_resp_free(struct h_resp *resp)
{
	free(resp->headers);
	free(resp->body);
	resp->headers = resp->body = NULL;
}

bool h_head_header(const char *head, const char *name, char *out, size_t outlen)
{
	size_t nlen = strlen(name);
	const char *line = head;

	if (!head)
		return false;
	/* Skip the status / request line. */
	line = strchr(line, '\n');
	while (line) {
		line++;
		if (strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
			const char *v = line + nlen + 1, *e;

			while (*v == ' ' || *v == '\t')
				v++;
			e = v;
			while (*e && *e != '\r' && *e != '\n')
				e++;
			while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
				e--;
			if (out && outlen) {
				size_t l =
					(size_t)(e - v) < outlen - 1 ? (size_t)(e - v) : outlen - 1;

				memcpy(out, v, l);
				out[l] = 0;
			}
			return true;
		}
		line = strchr(line, '\n');
	}
	return false;
}

bool h_resp_header(const struct h_resp *resp, const char *name, char *out, size_t outlen)
{
	return h_head_header(resp->headers, name, out, outlen);
}

long h_get(const char *url, struct h_resp *resp)
{
	struct h_req r = {.url = url};

	if (h_http(&r, resp) != 0)
		return -1;
	return resp->status;
}

/* ---- raw sockets ----------------------------------------------------------- */

int h_connect(const char *host, int port, unsigned timeout_ms)
{
	struct sockaddr_storage ss = {0};
	socklen_t len;
	int fd, err = 0;
	socklen_t elen = sizeof(err);

	if (strchr(host, ':')) {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		if (inet_pton(AF_INET6, host, &a->sin6_addr) != 1)
			return -EINVAL;
		len = sizeof(*a);
	} else {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
			return -EINVAL;
		len = sizeof(*a);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
		if (errno != EINPROGRESS) {
			err = -errno;
			close(fd);
			return err;
		}
		struct pollfd pf = {.fd = fd, .events = POLLOUT};
		int r = poll(&pf, 1, (int)timeout_ms);
		if (r <= 0) {
			close(fd);
			return -ETIMEDOUT;
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) != 0 || err) {
			close(fd);
			return -(err ? err : EIO);
		}
	}
	/* Back to blocking: readers below poll with deadlines themselves. */
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int h_send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		struct pollfd pf = {.fd = fd, .events = POLLOUT};

		/* Bounded: a peer that stops reading must not hang the test. */
		if (poll(&pf, 1, 5000) <= 0)
			return -ETIMEDOUT;
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

const char *h_read_end_name(enum h_read_end e)
{
	switch (e) {
	case H_READ_CLOSED:
		return "closed";
	case H_READ_RESET:
		return "reset";
	case H_READ_TIMEOUT:
		return "timeout (still open)";
	case H_READ_ERROR:
		return "error";
	case H_READ_DONE:
		return "done";
	}
	return "?";
}

/* One poll+recv step: 1 data appended, 0 EOF, <0 end reason. */
static int read_step(int fd, struct h_buf *b, int wait_ms)
{
	char tmp[65536];
	struct pollfd pf = {.fd = fd, .events = POLLIN};

	if (wait_ms < 0)
		wait_ms = 0;
	int r = poll(&pf, 1, wait_ms);
	if (r == 0)
		return -H_READ_TIMEOUT - 100;
	if (r < 0)
		return errno == EINTR ? 1 : -H_READ_ERROR - 100;
	/* read(), not recv(): h_run reads a pipe with this too. */
	ssize_t n = read(fd, tmp, sizeof(tmp));
	if (n == 0)
		return 0;
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 1;
		return errno == ECONNRESET ? -H_READ_RESET - 100 : -H_READ_ERROR - 100;
	}
	buf_append(b, tmp, (size_t)n);
	return 1;
}

enum h_read_end h_read_all(int fd, struct h_buf *b, unsigned timeout_ms, unsigned idle_ms)
{
	double end = h_now_ms() + timeout_ms;

	for (;;) {
		double now = h_now_ms();
		int wait = (int)(end - now);

		if (wait <= 0)
			return H_READ_TIMEOUT;
		if (idle_ms && (unsigned)wait > idle_ms)
			wait = (int)idle_ms;
		int r = read_step(fd, b, wait);
		if (r == 0)
			return H_READ_CLOSED;
		if (r < 0)
			return (enum h_read_end)(-r - 100);
	}
}

enum h_read_end h_read_until(int fd, struct h_buf *b, const char *needle, unsigned timeout_ms)
{
	double end = h_now_ms() + timeout_ms;

	for (;;) {
		if (b->len && memmem(b->data, b->len, needle, strlen(needle)))
			return H_READ_DONE;
		int wait = (int)(end - h_now_ms());
		if (wait <= 0)
			return H_READ_TIMEOUT;
		int r = read_step(fd, b, wait);
		if (r == 0)
			return H_READ_CLOSED;
		if (r < 0)
			return (enum h_read_end)(-r - 100);
	}
}

/* ---- raw response parsing --------------------------------------------------- */

/* Find the end of the head: index after "\r\n\r\n" (or "\n\n"), or 0. */
static size_t head_end(const char *buf, size_t len)
{
	for (size_t i = 0; i + 1 < len; i++) {
		if (buf[i] == '\n' && buf[i + 1] == '\n')
			return i + 2;
		if (i + 3 < len && buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' &&
		    buf[i + 3] == '\n')
			return i + 4;
	}
	return 0;
}

static bool token_in_list(const char *list, const char *tok)
{
	size_t tl = strlen(tok);
	const char *p = list;

	while (*p) {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *s = p;
		while (*p && *p != ',')
			p++;
		const char *e = p;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if ((size_t)(e - s) == tl && strncasecmp(s, tok, tl) == 0)
			return true;
	}
	return false;
}

/* Parse a chunked body at buf: decoded into out; returns wire bytes used, or
 * 0 when incomplete, or -1 when invalid. */
static long parse_chunked(const char *buf, size_t len, struct h_buf *out)
{
	size_t pos = 0;

	for (;;) {
		const char *nl = memchr(buf + pos, '\n', len - pos);
		if (!nl)
			return 0;
		char *endp;
		unsigned long long sz = strtoull(buf + pos, &endp, 16);
		if (endp == buf + pos)
			return -1;
		pos = (size_t)(nl - buf) + 1;
		if (sz == 0) {
			/* Trailers until an empty line. */
			for (;;) {
				const char *l = memchr(buf + pos, '\n', len - pos);
				if (!l)
					return 0;
				size_t ll = (size_t)(l - (buf + pos));
				pos = (size_t)(l - buf) + 1;
				if (ll == 0 || (ll == 1 && buf[pos - 2] == '\r'))
					return (long)pos;
			}
		}
		if (len - pos < sz + 1)
			return 0;
		buf_append(out, buf + pos, (size_t)sz);
		pos += (size_t)sz;
		if (buf[pos] == '\r')
			pos++;
		if (pos >= len)
			return 0;
		if (buf[pos] != '\n')
			return -1;
		pos++;
	}
}

int h_parse_responses(const char *buf, size_t len, struct h_raw_resp *out, int max,
		      const bool *is_head)
{
	int n = 0, final_i = 0;
	size_t pos = 0;

	while (n < max && pos < len) {
		struct h_raw_resp *r = &out[n];
		const char *p = buf + pos;
		size_t rest = len - pos, he;
		char v[256];

		memset(r, 0, sizeof(*r));
		if (rest < 12 || memcmp(p, "HTTP/1.", 7) != 0) {
			/* Garbage or a partial status line: report it as incomplete. */
			r->status = -1;
			r->head = strndup(p, rest);
			r->body = calloc(1, 1);
			r->wire_len = rest;
			return n + 1;
		}
		r->minor = p[7] - '0';
		r->status = atoi(p + 9);
		he = head_end(p, rest);
		if (!he) {
			r->head = strndup(p, rest);
			r->body = calloc(1, 1);
			r->wire_len = rest;
			return n + 1;
		}
		r->head = strndup(p, he);
		pos += he;
		struct h_buf body = {0};
		bool head_req = r->status >= 200 && is_head && is_head[final_i];

		if ((r->status >= 100 && r->status < 200) || r->status == 204 || r->status == 304 ||
		    head_req) {
			r->complete = true;
		} else if (h_head_header(r->head, "Transfer-Encoding", v, sizeof(v)) &&
			   token_in_list(v, "chunked")) {
			r->chunked = true;
			long used = parse_chunked(buf + pos, len - pos, &body);
			if (used > 0) {
				r->complete = true;
				pos += (size_t)used;
			} else {
				pos = len;
			}
		} else if (h_head_header(r->head, "Content-Length", v, sizeof(v))) {
			unsigned long long cl = strtoull(v, NULL, 10);

			r->has_cl = true;
			if (len - pos >= cl) {
				buf_append(&body, buf + pos, (size_t)cl);
				pos += (size_t)cl;
				r->complete = true;
			} else {
				buf_append(&body, buf + pos, len - pos);
				pos = len;
			}
		} else {
			r->close_delim = true;
			buf_append(&body, buf + pos, len - pos);
			pos = len;
			r->complete = true; /* as far as the stream went */
		}
		r->body = body.data ? body.data : calloc(1, 1);
		r->body_len = body.len;
		r->wire_len = (size_t)(buf + pos - p);
		if (r->status >= 200)
			final_i++;
		n++;
		if (!r->complete)
			break;
	}
	return n;
}

void h_raw_resp_free(struct h_raw_resp *r, int n)
{
	for (int i = 0; i < n; i++) {
		free(r[i].head);
		free(r[i].body);
		r[i].head = r[i].body = NULL;
	}
}

static int count_final_complete(const char *buf, size_t len)
{
	struct h_raw_resp rs[128];
	int n = h_parse_responses(buf, len, rs, 128, NULL), done = 0;

	for (int i = 0; i < n; i++)
		if (rs[i].complete && !rs[i].close_delim && rs[i].status >= 200)
			done++;
	h_raw_resp_free(rs, n);
	return done;
}

enum h_read_end h_read_responses(int fd, struct h_buf *b, int want, unsigned timeout_ms)
{
	double end = h_now_ms() + timeout_ms;

	for (;;) {
		if (b->len && count_final_complete(b->data, b->len) >= want)
			return H_READ_DONE;
		int wait = (int)(end - h_now_ms());
		if (wait <= 0)
			return H_READ_TIMEOUT;
		int r = read_step(fd, b, wait);
		if (r == 0)
			return H_READ_CLOSED;
		if (r < 0)
			return (enum h_read_end)(-r - 100);
	}
}

enum h_read_end h_raw_roundtrip(const char *host, int port, const void *req, size_t len,
				struct h_buf *b, unsigned timeout_ms)
{
	int fd = h_connect(host, port, 2000);
	enum h_read_end e;

	if (fd < 0)
		return H_READ_ERROR;
	/* A gateway may answer and close before it read everything (413, 414):
	 * a failed send is fine as long as the answer arrives. */
	h_send_all(fd, req, len);
	e = h_read_all(fd, b, timeout_ms, 0);
	close(fd);
	return e;
}

enum h_read_end h_raw_get(int port, const char *host, const char *target, struct h_buf *b,
			  unsigned timeout_ms)
{
	char req[2048];
	int n = snprintf(req, sizeof(req),
			 "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target, host);

	if (n < 0 || (size_t)n >= sizeof(req))
		return H_READ_ERROR;
	return h_raw_roundtrip("127.0.0.1", port, req, (size_t)n, b, timeout_ms);
}

int h_statuses(const char *buf, size_t len, int *codes, int max)
{
	struct h_raw_resp rs[128];
	int n = h_parse_responses(buf, len, rs, max < 128 ? max : 128, NULL);

	for (int i = 0; i < n; i++)
		codes[i] = rs[i].status;
	h_raw_resp_free(rs, n);
	return n;
}

const char *h_excerpt(const char *buf, size_t len, size_t max)
{
	static char out[2048];
	size_t o = 0;

	if (!buf)
		return "(null)";
	if (max > 480)
		max = 480;
	for (size_t i = 0; i < len && i < max && o + 5 < sizeof(out); i++) {
		unsigned char ch = (unsigned char)buf[i];

		if (ch == '\r')
			o += snprintf(out + o, sizeof(out) - o, "\\r");
		else if (ch == '\n')
			o += snprintf(out + o, sizeof(out) - o, "\\n");
		else if (ch == '\\')
			o += snprintf(out + o, sizeof(out) - o, "\\\\");
		else if (ch < 0x20 || ch >= 0x7f)
			o += snprintf(out + o, sizeof(out) - o, "\\x%02x", ch);
		else
			out[o++] = (char)ch;
	}
	if (len > max && o + 4 < sizeof(out))
		o += snprintf(out + o, sizeof(out) - o, "...");
	out[o] = 0;
	return out;
}

/* ---- origin helpers -------------------------------------------------------- */

static bool json_long(const char *json, const char *key, long *out)
{
	char k[64];
	const char *p;

	snprintf(k, sizeof(k), "\"%s\"", key);
	if (!(p = strstr(json, k)))
		return false;
	p += strlen(k);
	while (*p == ' ' || *p == ':')
		p++;
	char *e;
	long v = strtol(p, &e, 10);
	if (e == p)
		return false;
	*out = v;
	return true;
}

long h_origin_requests(int port)
{
	struct h_origin_stats st;

	return h_origin_stats(port, &st) == 0 ? st.requests : -1;
}

int h_origin_stats(int port, struct h_origin_stats *st)
{
	char url[128];
	struct h_resp r;
	int rc = -1;

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/__stats", port);
	memset(st, 0, sizeof(*st));
	if (h_get(url, &r) == 200 && json_long(r.body, "requests", &st->requests) &&
	    json_long(r.body, "connections", &st->connections)) {
		json_long(r.body, "open", &st->open);
		rc = 0;
	}
	h_resp_free(&r);
	return rc;
}

/* Minimal JSON reader for the /echo document: strings, numbers, arrays,
 * objects. p advances; returns false on malformed input. */
struct jr {
	const char *p, *end;
};

static void j_ws(struct jr *j)
{
	while (j->p < j->end && (*j->p == ' ' || *j->p == '\n' || *j->p == '\r' || *j->p == '\t'))
		j->p++;
}

static bool j_lit(struct jr *j, char c)
{
	j_ws(j);
	if (j->p < j->end && *j->p == c) {
		j->p++;
		return true;
	}
	return false;
}

static char *j_string(struct jr *j)
{
	struct h_buf b = {0};

	j_ws(j);
	if (j->p >= j->end || *j->p != '"')
		return NULL;
	j->p++;
	while (j->p < j->end && *j->p != '"') {
		char c = *j->p++;

		if (c == '\\' && j->p < j->end) {
			char e = *j->p++;
			switch (e) {
			case 'n':
				c = '\n';
				break;
			case 'r':
				c = '\r';
				break;
			case 't':
				c = '\t';
				break;
			case 'b':
				c = '\b';
				break;
			case 'f':
				c = '\f';
				break;
			case 'u': {
				char hex[5] = {0};
				if (j->end - j->p < 4)
					goto bad;
				memcpy(hex, j->p, 4);
				j->p += 4;
				unsigned cp = (unsigned)strtoul(hex, NULL, 16);
				if (cp < 0x80) {
					c = (char)cp;
				} else if (cp < 0x800) {
					char u[2] = {(char)(0xc0 | (cp >> 6)),
						     (char)(0x80 | (cp & 0x3f))};
					buf_append(&b, u, 2);
					continue;
				} else {
					char u[3] = {(char)(0xe0 | (cp >> 12)),
						     (char)(0x80 | ((cp >> 6) & 0x3f)),
						     (char)(0x80 | (cp & 0x3f))};
					buf_append(&b, u, 3);
					continue;
				}
				break;
			}
			default:
				c = e;
				break;
			}
		}
		buf_append(&b, &c, 1);
	}
	if (j->p >= j->end)
		goto bad;
	j->p++;
	return b.data ? b.data : calloc(1, 1);
bad:
	free(b.data);
	return NULL;
}

static bool j_skip_value(struct jr *j);

static bool j_skip_value(struct jr *j)
{
	j_ws(j);
	if (j->p >= j->end)
		return false;
	if (*j->p == '"') {
		char *s = j_string(j);
		bool ok = s != NULL;
		free(s);
		return ok;
	}
	if (*j->p == '[' || *j->p == '{') {
		char close = *j->p == '[' ? ']' : '}';
		bool obj = *j->p == '{';
		j->p++;
		if (j_lit(j, close))
			return true;
		do {
			if (obj) {
				char *k = j_string(j);
				if (!k)
					return false;
				free(k);
				if (!j_lit(j, ':'))
					return false;
			}
			if (!j_skip_value(j))
				return false;
		} while (j_lit(j, ','));
		return j_lit(j, close);
	}
	while (j->p < j->end && *j->p != ',' && *j->p != '}' && *j->p != ']')
		j->p++;
	return true;
}

int h_echo_parse(const char *json, size_t len, struct h_echo *e)
{
	struct jr j = {json, json + len};

	memset(e, 0, sizeof(*e));
	e->body_bytes = -1;
	if (!json || !j_lit(&j, '{'))
		return -1;
	if (j_lit(&j, '}'))
		return 0;
	do {
		char *key = j_string(&j);
		if (!key || !j_lit(&j, ':')) {
			free(key);
			goto bad;
		}
		if (!strcmp(key, "method") || !strcmp(key, "target") || !strcmp(key, "version") ||
		    !strcmp(key, "body_hash")) {
			char *s = j_string(&j);
			char *dst = !strcmp(key, "method")    ? e->method
				    : !strcmp(key, "target")  ? e->target
				    : !strcmp(key, "version") ? e->version
							      : e->body_hash;
			size_t cap = !strcmp(key, "method")    ? sizeof(e->method)
				     : !strcmp(key, "target")  ? sizeof(e->target)
				     : !strcmp(key, "version") ? sizeof(e->version)
							       : sizeof(e->body_hash);
			if (!s) {
				free(key);
				goto bad;
			}
			snprintf(dst, cap, "%s", s);
			free(s);
		} else if (!strcmp(key, "body_bytes")) {
			j_ws(&j);
			e->body_bytes = strtoll(j.p, NULL, 10);
			j_skip_value(&j);
		} else if (!strcmp(key, "headers")) {
			if (!j_lit(&j, '[')) {
				free(key);
				goto bad;
			}
			if (!j_lit(&j, ']')) {
				do {
					char *n, *v;
					if (!j_lit(&j, '[') || !(n = j_string(&j))) {
						free(key);
						goto bad;
					}
					if (!j_lit(&j, ',') || !(v = j_string(&j)) ||
					    !j_lit(&j, ']')) {
						free(n);
						free(key);
						goto bad;
					}
					if (e->n_headers < H_ECHO_MAX_HEADERS) {
						e->names[e->n_headers] = n;
						e->values[e->n_headers++] = v;
					} else {
						free(n);
						free(v);
					}
				} while (j_lit(&j, ','));
				if (!j_lit(&j, ']')) {
					free(key);
					goto bad;
				}
			}
		} else if (!j_skip_value(&j)) {
			free(key);
			goto bad;
		}
		free(key);
	} while (j_lit(&j, ','));
	if (!j_lit(&j, '}'))
		goto bad;
	return 0;
bad:
	h_echo_free(e);
	return -1;
}

void h_echo_free(struct h_echo *e)
{
	for (int i = 0; i < e->n_headers; i++) {
		free(e->names[i]);
		free(e->values[i]);
	}
	e->n_headers = 0;
}

const char *h_echo_header(const struct h_echo *e, const char *name)
{
	for (int i = 0; i < e->n_headers; i++)
		if (!strcasecmp(e->names[i], name))
			return e->values[i];
	return NULL;
}

int h_echo_count(const struct h_echo *e, const char *name)
{
	int n = 0;

	for (int i = 0; i < e->n_headers; i++)
		if (!strcasecmp(e->names[i], name))
			n++;
	return n;
}

struct serve_tcp {
	int fd;
	void *(*serve)(void *arg);
};

static void *serve_tcp_accept(void *arg)
{
	struct serve_tcp *s = arg;

	for (;;) {
		pthread_t t;
		int c = accept(s->fd, NULL, NULL);

		if (c < 0)
			return NULL;
		if (pthread_create(&t, NULL, s->serve, (void *)(intptr_t)c) == 0)
			pthread_detach(t);
		else
			close(c);
	}
}

int h_serve_tcp(void *(*serve)(void *arg), int *port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t al = sizeof(a);
	struct serve_tcp *s = malloc(sizeof(*s)); /* the server's, for the test's lifetime */
	pthread_t t;

	if (!s)
		return -1;
	s->serve = serve;
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof(a)) || listen(s->fd, 16) ||
	    getsockname(s->fd, (struct sockaddr *)&a, &al) ||
	    pthread_create(&t, NULL, serve_tcp_accept, s)) {
		if (s->fd >= 0)
			close(s->fd);
		free(s);
		return -1;
	}
	pthread_detach(t);
	*port = ntohs(a.sin_port);
	return 0;
}

bool h_is_hex32(const char *s)
{
	if (!s || strlen(s) != 32)
		return false;
	for (int i = 0; i < 32; i++)
		if (!isxdigit((unsigned char)s[i]))
			return false;
	return true;
}
