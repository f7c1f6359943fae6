/* privs.h — start privileged, then keep only what the running gateway needs.
 *
 * reflexd binds its listeners and attaches its eBPF programs first, then
 * calls privs_drop() once, from the main thread:
 *   1. with a target user (config `user:`) and a different effective uid it
 *      switches to that user: initgroups, setresgid, setresuid (glibc
 *      applies set*id to every thread). Capabilities named in `keep` survive
 *      the switch (PR_SET_KEEPCAPS is set in every thread first). Switching
 *      needs root; a process already running as the target user stays.
 *   2. in every thread of the process it reduces the permitted, effective
 *      and inheritable sets to keep ∩ what the thread holds, drops the rest
 *      of the bounding set when it may (CAP_SETPCAP), and makes the kept
 *      capabilities ambient so a binary upgrade (SIGUSR2 exec) starts with
 *      them and nothing more.
 * Capabilities are per thread in Linux and capset(2) changes only the
 * caller, so step 2 (and the KEEPCAPS of step 1) runs in each thread from a
 * real-time signal handler, the way glibc applies set*id: privs_drop sends
 * the signal to every task of /proc/self/task and waits (5 s at most) for
 * each to answer. io_uring's kernel workers (iou-wrk-*, iou-sqp-*) take no
 * signals and are skipped: they are short-lived and come and go with the
 * rings' async work; new ones copy the credentials of the thread that
 * creates them, which by then are the reduced ones.
 *
 * The thread calling privs_drop must not hold locks other threads' handlers
 * could need (the handler takes none) and threads must not block
 * PRIVS_SIGNAL. Blocking system calls in other threads see the signal with
 * SA_RESTART semantics (poll, epoll_wait and io_uring_enter return EINTR).
 *
 * No libcap: capget/capset and prctl are called directly (linux/capability.h).
 */
#ifndef REFLEX_CORE_PRIVS_H
#define REFLEX_CORE_PRIVS_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* The signal privs_drop sends to every thread. A thread that blocks signals
 * (a helper that leaves them to the main thread) must leave this one open,
 * or privs_drop times out and reflexd does not start. */
#define PRIVS_SIGNAL (SIGRTMIN + 4)

/* Bit n of a mask is capability n (CAP_NET_BIND_SERVICE = 10, ...). */
#define PRIVS_CAP(n) (1ULL << (n))

/* A resolved target user. */
struct privs_user {
	char name[64];
	uid_t uid;
	gid_t gid;
};

/* Look up `name` in the user database. 0, -ENOENT (no such user, with a
 * message in err) or another -errno. */
int privs_resolve(const char *name, struct privs_user *out, char *err, size_t errlen);

/* What a running reflexd keeps: CAP_NET_BIND_SERVICE always (a reload may
 * bind a new port below 1024); with `ebpf` also CAP_BPF, CAP_PERFMON and
 * CAP_NET_ADMIN, which a reload needs to attach the limiter to new
 * interfaces (CAP_NET_ADMIN), the map updates on older kernels (Debian 12's 6.1) with
 * unprivileged BPF disabled (CAP_BPF), and a binary upgrade to load the
 * programs again in the new process (all three). */
uint64_t privs_keep_mask(bool ebpf);

/* Switch to `user` (NULL: stay) and reduce every thread's capabilities to
 * `keep`. 0, or -errno with a message in err; on an error part of the
 * change may have happened, and the caller should exit. */
int privs_drop(const struct privs_user *user, uint64_t keep, char *err, size_t errlen);

/* The calling thread's effective set (capget), or 0 when it cannot be read. */
uint64_t privs_effective(void);

/* "cap_net_bind_service,cap_bpf" for a mask ("none" for 0). */
void privs_mask_names(uint64_t mask, char *buf, size_t len);

#endif
