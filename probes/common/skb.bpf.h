/* Kernel-side helpers to read a packet in cgroup_skb programs, shared by netflow, httpflow and dnsflow. */
#ifndef COMMON_SKB_BPF_H
#define COMMON_SKB_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "common/sock.bpf.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/* A packet's network and transport header, as cgroup_skb sees it (from the network header). */
struct pkt {
	__u8 saddr[16], daddr[16];
	__u32 l4off;
	__u16 family;
	__u8 proto;
};

static __always_inline int parse_ip(struct __sk_buff *skb, struct pkt *p)
{
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, 0, &ip, sizeof(ip)))
			return -1;
		if (ip.frag_off & bpf_htons(0x1fff)) /* not the first fragment */
			return -1;
		p->l4off = ip.ihl * 4;
		p->family = AF_INET;
		p->proto = ip.protocol;
		__builtin_memcpy(p->saddr, &ip.saddr, 4);
		__builtin_memcpy(p->daddr, &ip.daddr, 4);
		return 0;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, 0, &ip6, sizeof(ip6)))
			return -1;
		p->l4off = sizeof(ip6);
		p->family = AF_INET6;
		p->proto = ip6.nexthdr; /* extension headers are not followed */
		__builtin_memcpy(p->saddr, &ip6.saddr, 16);
		__builtin_memcpy(p->daddr, &ip6.daddr, 16);
		return 0;
	}
	return -1;
}

#endif
