#include "loader.h"

#include <errno.h>
#include <linux/bpf.h>
#include <linux/if_link.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

/* enum bpf_attach_type value of BPF_TCX_INGRESS (kernel 6.6 uapi); Debian 12's headers stop
 * before it. */
#define LOADER_BPF_TCX_INGRESS 46

int loader_xdp_attach(int prog_fd, int ifindex, bool generic)
{
	LIBBPF_OPTS(bpf_link_create_opts, opts,
		    .flags = generic ? XDP_FLAGS_SKB_MODE : XDP_FLAGS_DRV_MODE);
	int fd = bpf_link_create(prog_fd, ifindex, BPF_XDP, &opts);

	return fd < 0 ? -errno : fd;
}

int loader_tcx_attach(int prog_fd, int ifindex)
{
	int fd = bpf_link_create(prog_fd, ifindex, (enum bpf_attach_type)LOADER_BPF_TCX_INGRESS,
				 NULL);

	return fd < 0 ? -errno : fd;
}

int loader_tc_attach(int prog_fd, int ifindex)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = LOADER_TC_HANDLE, .priority = LOADER_TC_PRIO,
		    .prog_fd = prog_fd, .flags = BPF_TC_F_REPLACE);
	int err;

	err = bpf_tc_hook_create(&hook);
	if (err && err != -EEXIST)
		return err;
	return bpf_tc_attach(&hook, &opts);
}

int loader_tc_detach(int ifindex)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = LOADER_TC_HANDLE, .priority = LOADER_TC_PRIO);

	return bpf_tc_detach(&hook, &opts);
}

int loader_tc_present(int ifindex)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = LOADER_TC_HANDLE, .priority = LOADER_TC_PRIO);
	libbpf_print_fn_t print = libbpf_set_print(NULL); /* "no qdisc" is an answer here */
	int err = bpf_tc_query(&hook, &opts);

	libbpf_set_print(print);
	if (err == -ENOENT || err == -EINVAL)
		return 0;
	return err ? err : 1;
}

int loader_tc_cleanup(int ifindex, const char *prog_name)
{
	LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = ifindex, .attach_point = BPF_TC_INGRESS);
	LIBBPF_OPTS(bpf_tc_opts, opts, .handle = LOADER_TC_HANDLE, .priority = LOADER_TC_PRIO);
	struct bpf_prog_info info;
	__u32 len = sizeof(info);
	int fd, err;

	libbpf_print_fn_t print;

	/* No clsact qdisc or no filter at our slot: nothing was left behind. libbpf would log
	 * the kernel's "no such qdisc" as a warning; here it is the expected answer. */
	print = libbpf_set_print(NULL);
	err = bpf_tc_query(&hook, &opts);
	libbpf_set_print(print);
	if (err)
		return 0;
	fd = bpf_prog_get_fd_by_id(opts.prog_id);
	if (fd < 0)
		return -errno;
	memset(&info, 0, sizeof(info));
	err = bpf_obj_get_info_by_fd(fd, &info, &len);
	close(fd);
	if (err)
		return -errno;
	/* Not ours after all (the kernel truncates names to 15 chars). */
	if (strncmp(info.name, prog_name, sizeof(info.name) - 1) != 0)
		return 0;
	opts.prog_id = 0;
	opts.prog_fd = 0;
	opts.flags = 0;
	err = bpf_tc_detach(&hook, &opts);
	return err ? err : 1;
}

bool loader_is_physical(int ifindex)
{
	char name[IF_NAMESIZE], path[64 + IF_NAMESIZE];

	if (!if_indextoname(ifindex, name))
		return false;
	snprintf(path, sizeof(path), "/sys/class/net/%s/device", name);
	return access(path, F_OK) == 0;
}

int loader_probe(char *why, size_t why_len)
{
	if (access("/sys/kernel/btf/vmlinux", R_OK) != 0) {
		snprintf(why, why_len, "kernel has no BTF (/sys/kernel/btf/vmlinux): %s",
			 strerror(errno));
		return -ENOENT;
	}
	/* A two-instruction XDP program tells whether bpf() is allowed at all. */
	{
		struct bpf_insn insns[] = {
			{.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = 0},
			{.code = BPF_JMP | BPF_EXIT},
		};
		int fd = bpf_prog_load(BPF_PROG_TYPE_XDP, "rl_probe", "GPL", insns, 2, NULL);

		if (fd < 0) {
			int err = -errno;

			snprintf(why, why_len,
				 "bpf() refused (%s): needs CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON",
				 strerror(-err));
			return err;
		}
		close(fd);
	}
	return 0;
}
