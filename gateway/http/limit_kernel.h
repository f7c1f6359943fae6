/* limit_kernel.h — reflexd's owner of the kernel rate limiter
 * (bpf/ratelimit.bpf.c through userspace/ratelimit.h).
 *
 * limit_kernel_start() runs on the main thread before the workers start:
 * it loads the limiter, pushes the `ratelimit.kernel` policy (ports default
 * to the listen ports), attaches to the configured interfaces and starts
 * one low-priority thread that consumes the ring-buffer events (counted),
 * boxes the sources the L7 layer escalates (http/limit.h) and sweeps the
 * penalty box. When BPF cannot be loaded it logs ONE line saying why and
 * the connection-rate limit is enforced in userspace at accept instead
 * (limit_accept). Nothing is attached when no interface is configured.
 *
 * The rl handle is not thread-safe: every call below takes one mutex, so
 * the admin thread, the reload path and the event thread never overlap.
 * This module links libreflexbpf (mk/bpf.mk); only reflexd's main.c and
 * limit_admin.c refer to it, so unit tests that link libgateway.a never
 * pull it in.
 */
#ifndef REFLEX_HTTP_LIMIT_KERNEL_H
#define REFLEX_HTTP_LIMIT_KERNEL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/config.h"

/* Always returns 0: a kernel layer that cannot load degrades to userspace. */
int limit_kernel_start(const struct config *cfg);
/* Apply a new snapshot's kernel policy live (ports, rates, lists, dry-run,
 * interfaces attached or detached); nothing is reloaded. */
void limit_kernel_reload(const struct config *cfg);
/* Detach everything and stop the thread. */
void limit_kernel_stop(void);

/* Admin (any thread). */
int limit_kernel_json(struct buf *b); /* state, policy, counters, events */
/* which: "allow", "deny", "penalty" */
int limit_kernel_list_json(struct buf *b, const char *which);
/* Add or remove an entry; ttl_ms for "penalty" (0: the escalation penalty).
 * 0, or -errno with a reason in err. */
int limit_kernel_entry(const char *which, bool add, const char *cidr, uint64_t ttl_ms, char *err,
		       size_t errlen);
/* {"syn_rate":N,"syn_burst":N,"pkt_rate":N,"pkt_burst":N,"dry_run":bool}:
 * live until the next reload. */
int limit_kernel_policy_set(const char *json, size_t len, char *err, size_t errlen);

#endif
