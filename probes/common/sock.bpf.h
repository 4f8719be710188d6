/* Kernel-side helpers to describe a socket, shared by the probes. */
#ifndef COMMON_SOCK_BPF_H
#define COMMON_SOCK_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define SOCK_BINDADDR_LOCK 4
#define SOCK_BINDPORT_LOCK 8

/* Fills local/remote address and ports, family and netns of sk. */
static __always_inline void sock_tuple(const struct sock *sk, __u8 saddr[16], __u8 daddr[16],
				       __u16 *sport, __u16 *dport, __u16 *family, __u32 *netns)
{
	__u16 fam = BPF_CORE_READ(sk, __sk_common.skc_family);

	*family = fam;
	if (fam == AF_INET) {
		BPF_CORE_READ_INTO((__u32 *)saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)daddr, sk, __sk_common.skc_daddr);
	} else {
		BPF_CORE_READ_INTO((struct in6_addr *)saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO((struct in6_addr *)daddr, sk, __sk_common.skc_v6_daddr);
	}
	*sport = BPF_CORE_READ(sk, __sk_common.skc_num);
	*dport = bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport));
	*netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
}

/* Copies the calling process's name (its main thread's comm: worker threads may rename themselves). */
static __always_inline void process_comm(char *comm, int len)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	if (bpf_probe_read_kernel_str(comm, len, BPF_CORE_READ(task, group_leader, comm)) < 0)
		bpf_get_current_comm(comm, len);
}

#endif
