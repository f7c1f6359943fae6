/* 91_notify_privs — reflexd and its service manager, and what it keeps of
 * its privileges (gateway/core/notify.h, gateway/core/privs.h, docs/deploy.md):
 *   - with $NOTIFY_SOCKET naming a datagram socket the test made (a path, and
 *     an abstract name), reflexd sends READY=1 once it listens, RELOADING=1
 *     then READY=1 around SIGHUP, STOPPING=1 on SIGTERM;
 *   - started as root, every thread ends with CapPrm = CapEff = CapAmb =
 *     CapBnd = CAP_NET_BIND_SERVICE (/proc/PID/task/TID/status) and still
 *     proxies;
 *   - started like the unit starts it (setpriv: uid nobody, the four
 *     capabilities ambient), it keeps only CAP_NET_BIND_SERVICE;
 *   - with `user: nobody` it runs as nobody with the same set, reloads, and
 *     a binary upgrade (SIGUSR2) hands over to a process that announces
 *     MAINPID=<its pid> and starts with that set and nothing more.
 * The privilege tests need root (SKIP otherwise).
 */
#include "lib/harness.h"

#include <dirent.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define BIND_SERVICE 0x400ULL /* 1 << CAP_NET_BIND_SERVICE */

static int origin_port;

/* A datagram socket bound to name ("/path" or "@abstract"), or -1. */
static int notify_socket(const char *name)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	size_t n = strlen(name);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || n >= sizeof(sun.sun_path))
		return -1;
	memcpy(sun.sun_path, name, n);
	if (name[0] == '@')
		sun.sun_path[0] = '\0';
	else
		unlink(name);
	if (bind(fd, (struct sockaddr *)&sun,
		 (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (name[0] == '/')))) {
		close(fd);
		return -1;
	}
	if (name[0] == '/')
		chmod(name, 0666); /* reflexd may have switched users by the time it sends */
	return fd;
}

/* Wait up to timeout_ms for a datagram starting with prefix; the message
 * is copied to out. Datagrams before it are skipped (STATUS= only ones). */
static bool await_msg(int fd, const char *prefix, char *out, size_t outlen, unsigned timeout_ms)
{
	double end = h_now_ms() + timeout_ms;

	while (h_now_ms() < end) {
		struct timeval tv = {.tv_sec = 0, .tv_usec = 200000};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		ssize_t n = recv(fd, out, outlen - 1, 0);
		if (n <= 0)
			continue;
		out[n] = '\0';
		if (!strncmp(out, prefix, strlen(prefix)))
			return true;
	}
	out[0] = '\0';
	return false;
}

/* A GET through reflexd reaches the origin. */
static bool proxies(int port)
{
	struct h_resp r;
	char url[64];

	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
	long st = h_get(url, &r);
	h_resp_free(&r);
	return st == 200;
}

static const char *write_cfg(int port, const char *extra)
{
	return h_write_config("listen: [\"127.0.0.1:%d\"]\n"
			      "workers: 2\n"
			      "admin: {listen: off}\n"
			      "upstream: [\"127.0.0.1:%d\"]\n"
			      "timeouts: {drain: 2s}\n"
			      "%s",
			      port, origin_port, extra);
}

static void test_notify(const char *name, const char *label)
{
	char msg[512], tname[64];
	int port = h_free_port();
	int fd = notify_socket(name);

	snprintf(tname, sizeof(tname), "notify_%s", label);
	test_begin(tname);
	CHECK_MSG(fd >= 0, "cannot bind %s", name);
	if (fd < 0) {
		test_end();
		return;
	}
	setenv("NOTIFY_SOCKET", name, 1);
	struct h_proc *p = h_start_reflexd_config(label, port, write_cfg(port, ""));
	unsetenv("NOTIFY_SOCKET");
	CHECK(p);
	if (p) {
		CHECK_MSG(await_msg(fd, "READY=1", msg, sizeof(msg), 10000), "no READY=1");
		h_signal(p, SIGHUP);
		CHECK_MSG(await_msg(fd, "RELOADING=1\nMONOTONIC_USEC=", msg, sizeof(msg), 10000),
			  "no RELOADING=1 on SIGHUP");
		CHECK_MSG(await_msg(fd, "READY=1", msg, sizeof(msg), 10000),
			  "no READY=1 after the reload");
		CHECK_MSG(proxies(port), "not serving after the reload");
		h_signal(p, SIGTERM);
		CHECK_MSG(await_msg(fd, "STOPPING=1", msg, sizeof(msg), 10000), "no STOPPING=1");
		CHECK_MSG(h_wait_exit(p, 10000) == 0, "did not exit after SIGTERM");
	}
	close(fd);
	if (name[0] == '/')
		unlink(name);
	test_end();
}

/* One "Cap...:" or "Uid:" field of a status file, as a number (hex for caps). */
static bool status_field(const char *path, const char *key, unsigned long long *v)
{
	FILE *f = fopen(path, "r");
	char line[256];
	bool found = false;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key))) {
			*v = strtoull(line + strlen(key), NULL, strncmp(key, "Cap", 3) ? 10 : 16);
			found = true;
			break;
		}
	fclose(f);
	return found;
}

/* Every thread but io_uring's kernel workers holds exactly `caps` in each
 * set and runs as uid. Returns the number of threads checked. */
static int check_threads(pid_t pid, unsigned long long caps, unsigned long long uid)
{
	static const char *const keys[] = {"CapPrm:", "CapEff:", "CapAmb:", "CapBnd:", "CapInh:"};
	char dir[64], path[400], comm[64];
	int n = 0;

	snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
	DIR *d = opendir(dir);
	CHECK_MSG(d, "cannot list %s", dir);
	if (!d)
		return 0;
	for (struct dirent *de; (de = readdir(d));) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s/comm", dir, de->d_name);
		FILE *f = fopen(path, "r");
		comm[0] = '\0';
		if (f) {
			if (!fgets(comm, sizeof(comm), f))
				comm[0] = '\0';
			fclose(f);
		}
		comm[strcspn(comm, "\n")] = '\0';
		if (!strncmp(comm, "iou-", 4))
			continue; /* io_uring workers: see core/privs.h */
		snprintf(path, sizeof(path), "%s/%s/status", dir, de->d_name);
		for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
			unsigned long long v = ~0ULL;
			if (!status_field(path, keys[i], &v))
				continue; /* the thread exited meanwhile */
			CHECK_MSG(v == caps, "thread %s (%s): %s %llx, expected %llx", de->d_name,
				  comm, keys[i], v, caps);
		}
		unsigned long long u = ~0ULL;
		if (status_field(path, "Uid:", &u))
			CHECK_MSG(u == uid, "thread %s (%s): uid %llu, expected %llu", de->d_name,
				  comm, u, uid);
		n++;
	}
	closedir(d);
	return n;
}

static void test_privs_root(void)
{
	int port = h_free_port();

	test_begin("privs_root_keeps_only_bind_service");
	struct h_proc *p = h_start_reflexd_config("root", port, write_cfg(port, ""));
	CHECK(p);
	if (p) {
		/* the drop runs before "ready", which h_start_reflexd waited for */
		CHECK(h_log_contains(p, "capabilities cap_net_bind_service"));
		int n = check_threads(p->pid, BIND_SERVICE, 0);
		CHECK_MSG(n >= 3, "only %d threads (main + 2 workers expected)", n);
		CHECK_MSG(proxies(port), "does not proxy after the drop");
		CHECK_MSG(h_stop(p, 10000) == 0, "did not drain cleanly");
	}
	test_end();
}

static void test_privs_user(void)
{
	char abstract[64], msg[512];
	int port = h_free_port();

	snprintf(abstract, sizeof(abstract), "@reflex-e2e-91-%d", (int)getpid());
	int fd = notify_socket(abstract);
	test_begin("privs_user_switch");
	setenv("NOTIFY_SOCKET", abstract, 1);
	struct h_proc *p =
		h_start_reflexd_config("nobody", port, write_cfg(port, "user: nobody\n"));
	unsetenv("NOTIFY_SOCKET");
	CHECK(p);
	if (!p || fd < 0) {
		test_end();
		return;
	}
	CHECK_MSG(await_msg(fd, "READY=1", msg, sizeof(msg), 10000), "no READY=1");
	CHECK(check_threads(p->pid, BIND_SERVICE, 65534) >= 3);
	CHECK_MSG(proxies(port), "does not proxy as nobody");
	h_signal(p, SIGHUP); /* the file is world-readable: nobody can reload it */
	CHECK_MSG(await_msg(fd, "READY=1", msg, sizeof(msg), 10000), "no READY=1 after reload");
	CHECK(h_log_contains(p, "configuration reloaded"));
	test_end();

	test_begin("privs_upgrade_mainpid");
	h_signal(p, SIGUSR2);
	pid_t npid = 0;
	if (await_msg(fd, "MAINPID=", msg, sizeof(msg), 15000))
		npid = (pid_t)atoi(msg + strlen("MAINPID="));
	CHECK_MSG(npid > 0 && npid != p->pid, "no MAINPID= from the new process (got \"%s\")", msg);
	CHECK_MSG(strstr(msg, "\nREADY=1"), "MAINPID= without READY=1: \"%s\"", msg);
	if (npid > 0) {
		/* The new process: started by nobody with the ambient set only. */
		CHECK(check_threads(npid, BIND_SERVICE, 65534) >= 3);
		CHECK_MSG(h_wait_exit(p, 15000) == 0,
			  "the old process did not drain after the hand-off");
		CHECK_MSG(proxies(port), "the new process does not proxy");
		kill(npid, SIGTERM);
		for (int i = 0; i < 100 && kill(npid, 0) == 0; i++)
			h_sleep_ms(100);
		CHECK_MSG(kill(npid, 0) != 0, "the new process did not exit");
		if (kill(npid, 0) == 0)
			kill(npid, SIGKILL);
	}
	close(fd);
	test_end();
}

/* What the unit does: start as an unprivileged user with the four
 * capabilities ambient (setpriv stands in for systemd's User= and
 * AmbientCapabilities=). Without an eBPF feature reflexd keeps only the bind
 * capability; the bounding set stays the four (no CAP_SETPCAP to cut it). */
static void test_privs_ambient(void)
{
	static const char caps[] = "+net_bind_service,+bpf,+perfmon,+net_admin";
	char inh[64], amb[64], bnd[64];
	int port = h_free_port();

	if (access("/usr/bin/setpriv", X_OK) != 0) {
		test_skip("privs_ambient_like_the_unit",
			  "setpriv is missing (Debian package util-linux)");
		return;
	}
	test_begin("privs_ambient_like_the_unit");
	snprintf(inh, sizeof(inh), "--inh-caps=%s", caps);
	snprintf(amb, sizeof(amb), "--ambient-caps=%s", caps);
	snprintf(bnd, sizeof(bnd), "--bounding-set=-all,%s", caps);
	const char *const argv[] = {"/usr/bin/setpriv",
				    "--reuid=65534",
				    "--regid=65534",
				    "--clear-groups",
				    inh,
				    amb,
				    bnd,
				    h_reflexd_path(),
				    "--config",
				    write_cfg(port, ""),
				    NULL};
	struct h_proc *p = h_spawn("ambient", (char *const *)argv, "127.0.0.1", port, 10000);
	CHECK(p);
	if (p) {
		/* h_spawn waited for the listener only: the drop comes after it,
		 * in its own time on a busy machine */
		CHECK(h_wait_log(p, "privileges: uid 65534, capabilities cap_net_bind_service",
				 10000));
		/* CapBnd is checked separately: it stays the unit's four. */
		char path[64];
		unsigned long long v = 0;
		snprintf(path, sizeof(path), "/proc/%d/status", (int)p->pid);
		CHECK(status_field(path, "CapEff:", &v) && v == BIND_SERVICE);
		CHECK(status_field(path, "CapPrm:", &v) && v == BIND_SERVICE);
		CHECK(status_field(path, "CapAmb:", &v) && v == BIND_SERVICE);
		CHECK(status_field(path, "CapBnd:", &v) &&
		      v == (BIND_SERVICE | 1ULL << 12 | 3ULL << 38));
		CHECK(status_field(path, "Uid:", &v) && v == 65534);
		CHECK_MSG(proxies(port), "does not proxy");
		CHECK_MSG(h_stop(p, 10000) == 0, "did not drain cleanly");
	}
	test_end();
}

int main(void)
{
	char path[128], abstract[64];

	h_init("91_notify_privs", 150);
	origin_port = h_free_port();
	if (!h_start_origin("origin", origin_port, 1)) {
		test_begin("notify_privs");
		CHECK_MSG(0, "reflex-origin did not start");
		test_end();
		return test_exit_code();
	}
	snprintf(path, sizeof(path), "/tmp/reflex-e2e-91-%d.sock", (int)getpid());
	test_notify(path, "path_socket");
	snprintf(abstract, sizeof(abstract), "@reflex-e2e-91-a-%d", (int)getpid());
	test_notify(abstract, "abstract_socket");
	if (geteuid() != 0) {
		test_skip("privs", "not root: the capability drop and the user switch need root");
		return test_exit_code();
	}
	test_privs_root();
	test_privs_user();
	test_privs_ambient();
	return test_exit_code();
}
