/* loader.h — attaching BPF programs to interfaces, and cleaning up after crashed runs.
 *
 * Everything here attaches through BPF links where the kernel has them: an XDP link or a tcx
 * link is owned by its file descriptor and the kernel detaches it when the last reference
 * goes, including on SIGKILL. Nothing is pinned.
 *
 * libbpf 1.1 (Debian 12) has no bpf_program__attach_tcx, so tcx goes through the raw
 * bpf_link_create() with the tcx ingress attach type (kernel >= 6.6). On older kernels the
 * fallback is a netlink tc filter (clsact, direct action) at a fixed handle and priority.
 * Such a filter is NOT owned by the process: it survives a crash and keeps enforcing the
 * policy of the dead run, so whoever uses the fallback calls loader_tc_cleanup() first.
 *
 * All functions return a file descriptor or 0 on success and -errno on failure.
 */
#ifndef REFLEX_USERSPACE_LOADER_H
#define REFLEX_USERSPACE_LOADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Handle and priority of our netlink tc filter (fallback path only). */
#define LOADER_TC_HANDLE 0x5246u /* "RF" */
#define LOADER_TC_PRIO 0x5246u

/* An XDP link on ifindex: native (driver) mode, or generic (skb) mode, which is for tests
 * only. Never falls back from one mode to the other by itself. Returns the link fd. */
int loader_xdp_attach(int prog_fd, int ifindex, bool generic);

/* A tcx ingress link on ifindex. Returns the link fd, or -EINVAL/-EOPNOTSUPP when the kernel
 * has no tcx. */
int loader_tcx_attach(int prog_fd, int ifindex);

/* Fallback: a netlink clsact ingress filter at LOADER_TC_HANDLE/LOADER_TC_PRIO. Creates the
 * clsact qdisc if missing (and never destroys it: others may use it). Returns 0. */
int loader_tc_attach(int prog_fd, int ifindex);
/* Removes our netlink filter from ifindex; -ENOENT if none. */
int loader_tc_detach(int ifindex);
/* Removes a netlink filter left at our handle/priority on ifindex by an earlier run, if the
 * program attached there is named prog_name. Returns 1 if one was removed, 0 if none. */
int loader_tc_cleanup(int ifindex, const char *prog_name);
/* 1 if a netlink filter of ours (any program) is on ifindex, 0 if not, -errno. */
int loader_tc_present(int ifindex);

/* True when ifindex is a physical device (it has a parent device in sysfs): the only kind on
 * which native XDP is worth it. veth, lo, bridges and tunnels get tc. */
bool loader_is_physical(int ifindex);

/* Why BPF cannot be used here, as one line in why (e.g. no BTF, no privilege); 0 if it seems
 * usable. A cheap probe: the real answer is whether loading succeeds. */
int loader_probe(char *why, size_t why_len);

#endif
