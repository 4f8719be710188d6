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

/* The connection tuple of sk and its network namespace. T is any struct with saddr[16], daddr[16],
 * sport, dport, family. sock_tuple reads through helpers (any pointer); sock_tuple_btf with plain loads
 * through a trusted BTF pointer (tp_btf arguments, iterator sockets), much cheaper on hot paths. */
#define SOCK_TUPLE(sk, t, netns, FAMILY, V4, V6, NUM, DPORT, NETNS)                            \
	do {                                                                                   \
		(t)->family = FAMILY;                                                          \
		if ((t)->family == AF_INET) {                                                  \
			V4(skc_rcv_saddr, (t)->saddr);                                         \
			V4(skc_daddr, (t)->daddr);                                             \
		} else {                                                                       \
			V6(skc_v6_rcv_saddr, (t)->saddr);                                      \
			V6(skc_v6_daddr, (t)->daddr);                                          \
		}                                                                              \
		(t)->sport = NUM;                                                              \
		(t)->dport = bpf_ntohs(DPORT);                                                 \
		*(netns) = NETNS;                                                              \
	} while (0)

#define CORE_V4(f, dst) BPF_CORE_READ_INTO((__u32 *)(dst), sk, __sk_common.f)
#define CORE_V6(f, dst) BPF_CORE_READ_INTO((struct in6_addr *)(dst), sk, __sk_common.f)
#define sock_tuple(sk, t, netns)                                                               \
	SOCK_TUPLE(sk, t, netns, BPF_CORE_READ(sk, __sk_common.skc_family), CORE_V4, CORE_V6,    \
		   BPF_CORE_READ(sk, __sk_common.skc_num), BPF_CORE_READ(sk, __sk_common.skc_dport), \
		   BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum))

#define BTF_V4(f, dst) (*(__u32 *)(dst) = sk->__sk_common.f)
#define BTF_V6(f, dst) __builtin_memcpy((dst), &sk->__sk_common.f, 16)
#define sock_tuple_btf(sk, t, netns)                                                           \
	SOCK_TUPLE(sk, t, netns, sk->__sk_common.skc_family, BTF_V4, BTF_V6, sk->__sk_common.skc_num, \
		   sk->__sk_common.skc_dport, sk->__sk_common.skc_net.net->ns.inum)

/* Copies the calling process's name (its main thread's comm: worker threads may rename themselves). */
static __always_inline void process_comm(char *comm, int len)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	if (bpf_probe_read_kernel_str(comm, len, BPF_CORE_READ(task, group_leader, comm)) < 0)
		bpf_get_current_comm(comm, len);
}

#endif
