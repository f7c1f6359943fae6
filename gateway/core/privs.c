/* privs.c — see privs.h. */
#include "core/privs.h"

#include <dirent.h>
#include <errno.h>
#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef PR_CAP_AMBIENT
#define PR_CAP_AMBIENT 47
#define PR_CAP_AMBIENT_RAISE 2
#define PR_CAP_AMBIENT_CLEAR_ALL 4
#endif

#define PRIVS_WAIT_MS 5000
#define PRIVS_MAX_THREADS 4096

/* Names of the capabilities reflexd can keep; the others print as numbers. */
static const struct {
	int cap;
	const char *name;
} cap_names[] = {
	{CAP_NET_BIND_SERVICE, "cap_net_bind_service"},
	{CAP_NET_ADMIN, "cap_net_admin"},
	{CAP_PERFMON, "cap_perfmon"},
	{CAP_BPF, "cap_bpf"},
};

static int cap_get(struct __user_cap_data_struct d[2])
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};

	memset(d, 0, 2 * sizeof(*d));
	return syscall(SYS_capget, &h, d) ? -errno : 0;
}

static int cap_set(const struct __user_cap_data_struct d[2])
{
	struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};

	return syscall(SYS_capset, &h, d) ? -errno : 0;
}

static uint64_t join(uint32_t lo, uint32_t hi)
{
	return (uint64_t)hi << 32 | lo;
}

static int last_cap(void)
{
	FILE *f = fopen("/proc/sys/kernel/cap_last_cap", "re");
	int n = CAP_LAST_CAP;

	if (f) {
		if (fscanf(f, "%d", &n) != 1 || n < 0 || n > 63)
			n = CAP_LAST_CAP;
		fclose(f);
	}
	return n;
}

/* ---- per-thread phases, run by each thread on itself ---------------------- */

static uint64_t target_keep;
static int target_last;
static int phase_errors; /* threads whose capset failed */
/* The threads signalled, and which of them ran the phase. */
static pid_t sig_tids[PRIVS_MAX_THREADS];
static int sig_acked[PRIVS_MAX_THREADS];
static int n_sig;
static void (*phase_fn)(void);

/* Drop the bounding set while CAP_SETPCAP is still effective (the user
 * switch clears the effective set). */
static void drop_bounding(void)
{
	for (int c = 0; c <= target_last; c++)
		if (!(target_keep & PRIVS_CAP(c)))
			prctl(PR_CAPBSET_DROP, c, 0, 0, 0);
}

static void phase_keepcaps(void)
{
	drop_bounding();
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0))
		__atomic_add_fetch(&phase_errors, 1, __ATOMIC_RELAXED);
}

/* Async-signal-safe: system calls only. */
static void phase_reduce(void)
{
	struct __user_cap_data_struct d[2];
	uint64_t have, keep;

	if (cap_get(d)) {
		__atomic_add_fetch(&phase_errors, 1, __ATOMIC_RELAXED);
		return;
	}
	have = join(d[0].permitted, d[1].permitted);
	keep = have & target_keep;
	/* The bounding set first: dropping from it needs CAP_SETPCAP, which
	 * the capset below takes away. */
	if (join(d[0].effective, d[1].effective) & PRIVS_CAP(CAP_SETPCAP))
		drop_bounding();
	d[0].permitted = d[0].effective = d[0].inheritable = (uint32_t)keep;
	d[1].permitted = d[1].effective = d[1].inheritable = (uint32_t)(keep >> 32);
	if (cap_set(d)) {
		__atomic_add_fetch(&phase_errors, 1, __ATOMIC_RELAXED);
		return;
	}
	prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
	for (int c = 0; c <= target_last; c++)
		if (keep & PRIVS_CAP(c))
			prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0);
	prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0);
}

static void on_privs_signal(int sig)
{
	int saved = errno, n = __atomic_load_n(&n_sig, __ATOMIC_ACQUIRE);
	pid_t me = (pid_t)syscall(SYS_gettid);

	phase_fn();
	for (int i = 0; i < n; i++)
		if (sig_tids[i] == me)
			__atomic_store_n(&sig_acked[i], 1, __ATOMIC_RELEASE);
	errno = saved;
}

/* True for io_uring's kernel threads, which ignore signals. */
static bool is_io_thread(pid_t tid)
{
	char path[64], comm[32] = "";
	FILE *f;

	snprintf(path, sizeof(path), "/proc/self/task/%d/comm", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return false;
	if (!fgets(comm, sizeof(comm), f))
		comm[0] = '\0';
	fclose(f);
	return strncmp(comm, "iou-", 4) == 0;
}

/* True once every signalled thread ran the phase or is gone. */
static bool all_answered(void)
{
	char path[64];

	for (int i = 0; i < n_sig; i++) {
		if (__atomic_load_n(&sig_acked[i], __ATOMIC_ACQUIRE))
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%d", (int)sig_tids[i]);
		if (access(path, F_OK) == 0)
			return false;
	}
	return true;
}

/* Run fn in this thread and every other thread of the process. 0, -ETIMEDOUT
 * when some live thread did not answer, -EPERM when some thread's phase
 * failed, -E2BIG beyond PRIVS_MAX_THREADS threads. */
static int broadcast(void (*fn)(void))
{
	struct sigaction sa = {.sa_handler = on_privs_signal, .sa_flags = SA_RESTART}, old;
	pid_t self = (pid_t)syscall(SYS_gettid), pid = getpid();
	int rc = 0;
	DIR *dir;

	phase_fn = fn;
	__atomic_store_n(&n_sig, 0, __ATOMIC_RELEASE);
	__atomic_store_n(&phase_errors, 0, __ATOMIC_RELAXED);
	sigemptyset(&sa.sa_mask);
	if (sigaction(PRIVS_SIGNAL, &sa, &old))
		return -errno;
	dir = opendir("/proc/self/task");
	if (!dir) {
		rc = -errno;
		goto out;
	}
	for (struct dirent *de; (de = readdir(dir));) {
		pid_t tid = (pid_t)atoi(de->d_name);
		if (tid <= 0 || tid == self || is_io_thread(tid))
			continue;
		if (n_sig == PRIVS_MAX_THREADS) {
			rc = -E2BIG;
			break;
		}
		/* Recorded before the signal: the handler looks itself up. */
		sig_tids[n_sig] = tid;
		sig_acked[n_sig] = 0;
		__atomic_store_n(&n_sig, n_sig + 1, __ATOMIC_RELEASE);
		if (syscall(SYS_tgkill, pid, tid, PRIVS_SIGNAL) != 0)
			sig_acked[n_sig - 1] = 1; /* gone already */
	}
	closedir(dir);
	fn();
	for (int waited = 0; !all_answered(); waited++) {
		if (waited >= PRIVS_WAIT_MS) {
			rc = -ETIMEDOUT;
			goto out;
		}
		nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
	}
	if (__atomic_load_n(&phase_errors, __ATOMIC_RELAXED))
		rc = -EPERM;
out:
	/* Restore only once every thread answered: a late signal with the
	 * default action would end the process. */
	if (rc != -ETIMEDOUT)
		sigaction(PRIVS_SIGNAL, &old, NULL);
	return rc;
}

/* ---- the API --------------------------------------------------------------- */

int privs_resolve(const char *name, struct privs_user *out, char *err, size_t errlen)
{
	struct passwd pw, *res = NULL;
	char buf[4096];
	int rc;

	memset(out, 0, sizeof(*out));
	rc = getpwnam_r(name, &pw, buf, sizeof(buf), &res);
	if (rc || !res) {
		snprintf(err, errlen, "user \"%s\": %s", name, rc ? strerror(rc) : "no such user");
		return rc ? -rc : -ENOENT;
	}
	snprintf(out->name, sizeof(out->name), "%s", name);
	out->uid = pw.pw_uid;
	out->gid = pw.pw_gid;
	return 0;
}

uint64_t privs_keep_mask(bool ebpf)
{
	uint64_t m = PRIVS_CAP(CAP_NET_BIND_SERVICE);

	if (ebpf)
		m |= PRIVS_CAP(CAP_BPF) | PRIVS_CAP(CAP_PERFMON) | PRIVS_CAP(CAP_NET_ADMIN);
	return m;
}

int privs_drop(const struct privs_user *user, uint64_t keep, char *err, size_t errlen)
{
	int rc;

	target_keep = keep;
	target_last = last_cap();
	if (user && user->uid != geteuid()) {
		if (geteuid() != 0) {
			snprintf(err, errlen,
				 "user \"%s\": switching users needs root (running as uid %d)",
				 user->name, (int)geteuid());
			return -EPERM;
		}
		if ((rc = broadcast(phase_keepcaps))) {
			snprintf(err, errlen, "keeping capabilities across the user switch: %s",
				 strerror(-rc));
			return rc;
		}
		if (initgroups(user->name, user->gid) ||
		    setresgid(user->gid, user->gid, user->gid) ||
		    setresuid(user->uid, user->uid, user->uid)) {
			rc = -errno;
			snprintf(err, errlen, "switching to user \"%s\": %s", user->name,
				 strerror(errno));
			return rc;
		}
	}
	if ((rc = broadcast(phase_reduce))) {
		snprintf(err, errlen, "reducing capabilities: %s",
			 rc == -ETIMEDOUT ? "a thread did not answer" : strerror(-rc));
		return rc;
	}
	return 0;
}

uint64_t privs_effective(void)
{
	struct __user_cap_data_struct d[2];

	return cap_get(d) ? 0 : join(d[0].effective, d[1].effective);
}

void privs_mask_names(uint64_t mask, char *buf, size_t len)
{
	size_t used = 0;

	buf[0] = '\0';
	for (int c = 0; c < 64 && used < len; c++) {
		const char *name = NULL;
		int n;

		if (!(mask & PRIVS_CAP(c)))
			continue;
		for (size_t i = 0; i < sizeof(cap_names) / sizeof(cap_names[0]); i++)
			if (cap_names[i].cap == c)
				name = cap_names[i].name;
		n = name ? snprintf(buf + used, len - used, "%s%s", used ? "," : "", name)
			 : snprintf(buf + used, len - used, "%scap_%d", used ? "," : "", c);
		if (n < 0)
			break;
		used += (size_t)n;
	}
	if (!mask)
		snprintf(buf, len, "none");
}
