/* dnsflow: the DNS messages of client sockets, taken in netflow's cgroup_skb programs (included by
 * netflow.bpf.c, self-contained on common/skb.bpf.h). A query is seen when the client's socket sends it and its answer when
 * the socket receives it, so each query is seen once, on loopback too, in every network namespace, with
 * no hook of its own: no socket filter on every packet, no syscall tracepoint. The collector parses the
 * messages, reassembles DNS over TCP and pairs queries with answers. */
#ifndef DNSFLOW_BPF_H
#define DNSFLOW_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "common/btf.bpf.h"
#include "common/skb.bpf.h"
#include "common/task.bpf.h"
#include "dnsflow.h"

/* The enums Go mirrors, into the object's BTF for the layout tests. */
BTF_ENUM(df_const);
BTF_ENUM(df_flag);
BTF_ENUM(df_stat);

#define DF_EVENTS_BYTES (2 << 20)

const volatile bool dns_enabled = false;
/* Server ports that mark DNS traffic (0: unused slot). Set by the collector (--dnsflow-ports). */
const volatile __u16 dns_ports[DF_PORTS_MAX] = {53};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, DF_EVENTS_BYTES);
} df_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DF_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} df_stats SEC(".maps");

/* A record is built here, then copied to the ring with only the payload bytes it holds: most DNS messages
 * are far shorter than DF_MSG_LEN, and fixed-size records filled the ring at about 40k queries/s. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct df_event);
} df_scratch SEC(".maps");

static __always_inline int df_port(__u16 port)
{
#pragma unroll
	for (int i = 0; i < DF_PORTS_MAX; i++)
		if (dns_ports[i] && dns_ports[i] == port)
			return 1;
	return 0;
}

/* Hands one DNS packet of a client socket to the collector. off/len: its payload in the skb. owner:
 * sent by the socket owner's own call (process context), so the current task is the sender. */
static __always_inline void df_emit(struct __sk_buff *skb, int egress, const struct pkt *p, __u16 sport,
				    __u16 dport, __u32 seq, __u32 off, __u32 len, __u8 flags, int owner)
{
	__u32 zero = 0;
	struct df_event *e = bpf_map_lookup_elem(&df_scratch, &zero);

	if (!e)
		return;
	e->ts_ns = bpf_ktime_get_ns();
	e->t.family = p->family;
	e->t.proto = p->proto;
	e->t.pad = 0;
	__builtin_memcpy(e->t.saddr, egress ? p->saddr : p->daddr, 16);
	__builtin_memcpy(e->t.daddr, egress ? p->daddr : p->saddr, 16);
	e->t.sport = egress ? sport : dport;
	e->t.dport = egress ? dport : sport;
	e->cookie = bpf_get_socket_cookie(skb);
	e->seq = seq;
	e->len = len;
	e->pid = 0;
	e->mntns = 0;
	e->netns = 0;
	e->pad = 0;
	__builtin_memset(e->comm, 0, sizeof(e->comm));
	if (egress)
		flags |= DF_F_EGRESS;
	if (owner) {
		/* Through the task: cgroup_skb programs may call bpf_get_current_pid_tgid only from Linux 6.x. */
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();

		e->pid = BPF_CORE_READ(task, tgid);
		e->mntns = task_mntns(task);
		e->netns = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
		bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), BPF_CORE_READ(task, group_leader, comm));
		flags |= DF_F_OWNER;
	}
	e->flags = flags;
	__u32 n = len < DF_MSG_LEN ? len : DF_MSG_LEN;

	/* The masks keep sizes provably in [1, DF_MSG_LEN] for older verifiers. */
	if (!n || bpf_skb_load_bytes(skb, off, e->msg, ((n - 1) & (DF_MSG_LEN - 1)) + 1))
		n = 0;
	e->cap = n;
	__u64 size = offsetof(struct df_event, msg) + (n ? ((n - 1) & (DF_MSG_LEN - 1)) + 1 : 0);

	/* No wakeup: the collector drains on a timer (a wakeup is a self-IPI, several µs here). */
	if (bpf_ringbuf_output(&df_events, e, size, BPF_RB_NO_WAKEUP)) {
		__u32 k = DF_STAT_RB_LOST;
		__u64 *v = bpf_map_lookup_elem(&df_stats, &k);

		if (v)
			*v += 1;
	}
}

/* A UDP datagram: a query the client sends to a DNS port, or what it receives from one. */
static __always_inline void df_udp(struct __sk_buff *skb, int egress, const struct pkt *p, const struct udphdr *uh)
{
	__u16 sport = bpf_ntohs(uh->source), dport = bpf_ntohs(uh->dest);

	if (!df_port(egress ? dport : sport))
		return;
	__u32 off = p->l4off + sizeof(*uh);
	__u32 len = skb->len > off ? skb->len - off : 0;

	/* UDP is sent from sendmsg only: egress always runs in the sender's context. */
	df_emit(skb, egress, p, sport, dport, 0, off, len, 0, egress);
}

/* A TCP segment of a client's connection to a DNS port. Returns whether the connection is DNS's (so
 * httpflow need not look at it). */
static __always_inline int df_tcp(struct __sk_buff *skb, int egress, const struct pkt *p, const struct tcphdr *th)
{
	__u16 sport = bpf_ntohs(th->source), dport = bpf_ntohs(th->dest);

	if (!df_port(egress ? dport : sport))
		return 0;
	__u32 off = p->l4off + th->doff * 4;
	__u32 len = skb->len > off ? skb->len - off : 0;
	__u8 flags = th->fin || th->rst ? DF_F_TCP_FIN : 0;

	if (!len && !flags)
		return 1; /* a bare ACK or SYN */
	int owner = 0;

	if (egress) {
		/* Sent by the owner's own call only while it holds the socket lock (not ACK-clocked from softirq). */
		struct bpf_sock *bsk = skb->sk;

		if (bsk)
			bsk = bpf_sk_fullsock(bsk);
		if (bsk) {
			struct tcp_sock *tp = bpf_skc_to_tcp_sock(bsk);

			owner = tp && BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_lock.owned);
		}
	}
	df_emit(skb, egress, p, sport, dport, bpf_ntohl(th->seq), off, len, flags, owner);
	return 1;
}

#endif
