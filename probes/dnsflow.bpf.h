/* dnsflow: the DNS messages of client sockets, taken in netflow's cgroup_skb programs (included by
 * netflow.bpf.c, self-contained on common/skb.bpf.h). A query is seen when the client's socket sends it and its answer when
 * the socket receives it, so each query is seen once, on loopback too, in every network namespace, with
 * no hook of its own: no socket filter on every packet, no syscall tracepoint.
 *
 * A UDP query with one question is paired with its answer here and counted per (flow, process, name, type,
 * rcode) in df_agg, which the collector reads once per interval: such a packet costs no ring record and no
 * parse in user space. An answer carrying records goes to the collector (for netflow's dst_domain) only
 * when its content is new or was last sent DF_NAMES_REFRESH_NS ago. Everything else (DNS over TCP, a query
 * the kernel does not parse, the answer to a query it did not track) is copied to the ring and handled by
 * the collector as before: it parses, reassembles TCP and pairs. */
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

#define DF_EVENTS_BYTES (512 << 10) /* what the kernel does not pair: TCP, odd queries, names */
#define DF_INFLIGHT_MAX 65536 /* UDP queries awaiting their answer in the kernel */
#define DF_AGG_MAX 32768      /* counted keys, of the epoch being read and the next */

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
 * are far shorter than DF_MSG_LEN, and fixed-size records filled the ring at about 40k queries/s. Two
 * slots, egress and ingress: a softirq's ingress program may interrupt an egress program on its CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct df_event);
} df_scratch SEC(".maps");

/* UDP queries awaiting their answer. A plain hash: when full it refuses (DF_STAT_INFLIGHT_FULL) rather than
 * evict a query not yet answered; the collector deletes those unanswered for its timeout. Allocated as
 * used: most hosts have a handful in flight. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, DF_INFLIGHT_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct df_qid);
	__type(value, struct df_query);
} df_inflight SEC(".maps");

/* Finished queries per key and epoch. The collector moves df_ctl's epoch on, waits until no program of
 * the old epoch runs (df_busy), then reads and deletes its keys: nothing is counted after its read. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, DF_AGG_MAX);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct df_key);
	__type(value, struct df_acc);
} df_agg SEC(".maps");

/* [0]: the epoch new counts go to; written by the collector. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} df_ctl SEC(".maps");

/* Per CPU: programs between taking the epoch and their last write to df_agg (softirq may nest one in
 * another). A CPU seen at 0 after the epoch moved runs no writer of the old epoch. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} df_busy SEC(".maps");

/* Answers already handed to the collector for the name cache: a hash of their content (ID aside) -> when. */
#define DF_NAMES_REFRESH_NS (30ULL * 1000000000ULL) /* under the name cache's shortest TTL (60 s) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} df_names_sent SEC(".maps");

/* Where a query or an answer is parsed and its key built (too big for the stack); slots as df_scratch's. */
struct df_work {
	struct df_query q;
	__u8 buf[DF_MSG_LEN] __attribute__((aligned(8)));
	struct pkt p;
	struct df_qid id;
	struct df_acc zero; /* stays zero: a new df_agg entry's value */
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 2);
	__type(key, __u32);
	__type(value, struct df_work);
} df_work SEC(".maps");

static __always_inline void df_stat(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&df_stats, &idx);

	if (v)
		*v += 1;
}

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
static __always_inline int df_emit(struct __sk_buff *skb, int egress, const struct pkt *p, __u16 sport,
				   __u16 dport, __u32 seq, __u32 off, __u32 len, __u8 flags, int owner)
{
	__u32 slot = egress ? 0 : 1;
	struct df_event *e = bpf_map_lookup_elem(&df_scratch, &slot);

	if (!e)
		return 0;
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
		df_stat(DF_STAT_RB_LOST);
		return 0;
	}
	return 1;
}

/* The DNS header, in network order. */
struct df_hdr {
	__u16 id, flags, qdcount, ancount, nscount, arcount;
};

/* Keeps a mask the verifier needs where the compiler proved it redundant from earlier checks. */
#define df_masked(x, mask) ({ __u32 __v = (x); asm volatile("" : "+r"(__v)); __v & (mask); })

#define DF_QR 0x8000
#define DF_OPCODE 0x7800

/* Adds one finished query to df_agg under the current epoch. */
static __always_inline void df_count(struct df_work *w, struct df_key *k, __u64 latency)
{
	__u32 zero = 0;
	__u64 *busy = bpf_map_lookup_elem(&df_busy, &zero);
	__u32 *epoch = bpf_map_lookup_elem(&df_ctl, &zero);

	if (!busy || !epoch)
		return;
	/* Announce first, then read the epoch (the add is a full barrier): the collector, which moves the
	 * epoch and then waits for every CPU's count to be seen at 0, never misses this write. */
	__sync_fetch_and_add(busy, 1);
	k->epoch = *(volatile __u32 *)epoch;
	struct df_acc *a = bpf_map_lookup_elem(&df_agg, k);

	if (!a) {
		bpf_map_update_elem(&df_agg, k, &w->zero, BPF_NOEXIST);
		a = bpf_map_lookup_elem(&df_agg, k);
	}
	if (a) {
		__sync_fetch_and_add(&a->count, 1);
		/* Not for an unanswered one: clang turns an atomic add of 0 into an atomic OR (Linux 5.12+). */
		if (latency)
			__sync_fetch_and_add(&a->latency_sum, latency);
		if (latency > a->latency_max)
			a->latency_max = latency;
	} else {
		df_stat(DF_STAT_AGG_FULL);
	}
	__sync_fetch_and_sub(busy, 1);
}

/* A UDP query the client sends: tracked here when it has one question whose name is plain labels.
 * Returns 0 to leave it to the collector. */
static __always_inline int df_udp_query(struct __sk_buff *skb, struct df_work *w, __u16 sport, __u16 dport,
					__u32 off, __u32 len)
{
	struct df_hdr h;

	if (len < sizeof(h) + 5 || bpf_skb_load_bytes(skb, off, &h, sizeof(h)))
		return 0;
	__u16 flags = bpf_ntohs(h.flags);

	if ((flags & (DF_QR | DF_OPCODE)) || bpf_ntohs(h.qdcount) != 1)
		return 0;
	const struct pkt *p = &w->p;
	struct df_key *k = &w->q.k;

	__builtin_memset(k, 0, sizeof(*k));
	/* The name's labels, a byte read at each label start: a helper's offset, not an index into a buffer.
	 * Its length goes through the map value, which the verifier does not follow: the code after the
	 * loop is then checked once, not once for each length the loop can reach. */
	__u32 name = off + sizeof(h), pos = 0;

	for (int i = 0; i < DF_NAME_LEN / 2; i++) {
		__u8 l;

		if (pos >= DF_NAME_LEN - 1 || bpf_skb_load_bytes(skb, name + pos, &l, 1))
			return 0;
		if (!l) {
			k->name_len = pos + 1;
			break;
		}
		if (l & 0xc0) /* a compression pointer or an extended label: the collector's */
			return 0;
		pos += l + 1;
	}
	__u32 name_len = *(volatile __u16 *)&k->name_len;
	__u16 qtype;

	if (!name_len || name_len > DF_NAME_LEN - 1 || bpf_skb_load_bytes(skb, name + name_len, &qtype, sizeof(qtype)))
		return 0;
	k->t.family = p->family;
	k->t.proto = IPPROTO_UDP;
	__builtin_memcpy(k->t.saddr, p->saddr, 16);
	__builtin_memcpy(k->t.daddr, p->daddr, 16);
	k->t.sport = df_port(sport) ? sport : 0; /* a client's ephemeral port would make a key per socket */
	k->t.dport = dport;
	k->qtype = bpf_ntohs(qtype);
	if (bpf_skb_load_bytes(skb, name, k->name, df_masked(name_len - 1, DF_NAME_LEN - 1) + 1))
		return 0;
	/* UDP is sent from sendmsg only: the current task is the sender. Through the task: cgroup_skb
	 * programs may call bpf_get_current_pid_tgid only from Linux 6.x. */
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	k->pid = BPF_CORE_READ(task, tgid);
	k->mntns = task_mntns(task);
	k->netns = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
	bpf_probe_read_kernel_str(k->comm, sizeof(k->comm), BPF_CORE_READ(task, group_leader, comm));

	struct df_qid *id = &w->id;

	id->cookie = bpf_get_socket_cookie(skb);
	__builtin_memcpy(id->server, p->daddr, 16);
	id->port = dport;
	id->id = bpf_ntohs(h.id);
	id->pad = 0;
	w->q.ts_ns = bpf_ktime_get_ns();

	/* Inserted first: an insert that finds its key costs no more than a lookup, and a lookup before every
	 * insert cost 1% of the sending CPU at 70k queries/s. A retry with the same ID while the first is in
	 * flight (glibc resends the same query): the first went unanswered. Whoever deletes an entry counts it
	 * (the collector's timeout walk deletes too). */
	long err = bpf_map_update_elem(&df_inflight, id, &w->q, BPF_NOEXIST);

	/* Any error, not -EEXIST alone: on Linux 5.10 the error for a key already there did not compare equal
	 * to it (the kernel matrix's retry test); a key that is there, the lookup finds. A full map finds
	 * nothing and is not asked again. */
	struct df_query *old = err ? bpf_map_lookup_elem(&df_inflight, id) : NULL;

	if (old) {
		/* Copied before the delete (a freed entry may be reused at once), into buf: the name is read. */
		struct df_key *ok = (struct df_key *)w->buf;

		__builtin_memcpy(ok, &old->k, sizeof(*ok));
		if (!bpf_map_delete_elem(&df_inflight, id)) {
			ok->rcode = -1;
			df_count(w, ok, 0);
			df_stat(DF_STAT_RETRIED);
		}
		err = bpf_map_update_elem(&df_inflight, id, &w->q, BPF_NOEXIST);
	}
	if (err) {
		df_stat(DF_STAT_INFLIGHT_FULL);
		return 0; /* its answer will find no entry here either: the collector pairs them */
	}
	df_stat(DF_STAT_QUERIES);
	return 1;
}

/* The answer a client receives: counted here if the kernel tracked its query. Returns 0 to leave it to
 * the collector (the query was the collector's, or was never seen). */
static __always_inline int df_udp_answer(struct __sk_buff *skb, struct df_work *w, __u16 sport, __u16 dport,
					 __u32 off, __u32 len)
{
	struct df_hdr h;

	if (len < sizeof(h) || bpf_skb_load_bytes(skb, off, &h, sizeof(h)))
		return 0;
	__u16 flags = bpf_ntohs(h.flags);

	if (!(flags & DF_QR))
		return 0;
	const struct pkt *p = &w->p;
	struct df_qid *id = &w->id;

	id->cookie = bpf_get_socket_cookie(skb);
	__builtin_memcpy(id->server, p->saddr, 16);
	id->port = sport;
	id->id = bpf_ntohs(h.id);
	id->pad = 0;
	struct df_query *q = bpf_map_lookup_elem(&df_inflight, id);

	if (!q)
		return 0;
	__u64 now = bpf_ktime_get_ns();

	/* Copy before the delete: a freed entry may be reused at once. */
	w->q = *q;
	if (bpf_map_delete_elem(&df_inflight, id))
		return 1; /* the collector's timeout walk took it first, and counted it */
	w->q.k.rcode = flags & 0xf;
	df_count(w, &w->q.k, now > w->q.ts_ns ? now - w->q.ts_ns : 0);
	df_stat(DF_STAT_ANSWERS);

	/* The addresses of the answer are for netflow's dst_domain: sent on when new. */
	if ((flags & 0xf) || !h.ancount)
		return 1;
	__u32 n = len < DF_MSG_LEN ? len : DF_MSG_LEN;

	__builtin_memset(w->buf, 0, sizeof(w->buf));
	if (bpf_skb_load_bytes(skb, off, w->buf, df_masked(n - 1, DF_MSG_LEN - 1) + 1))
		return 1;
	w->buf[0] = w->buf[1] = 0; /* the ID */
	__u64 sum = 0xcbf29ce484222325ULL;

	for (int i = 0; i < DF_MSG_LEN / 8; i++) {
		if (i * 8 >= n)
			break;
		sum = (sum ^ *(__u64 *)&w->buf[df_masked(i * 8, DF_MSG_LEN - 8)]) * 0x100000001b3ULL;
	}
	sum ^= n;
	__u64 *sent = bpf_map_lookup_elem(&df_names_sent, &sum);

	if (sent && now - *sent < DF_NAMES_REFRESH_NS)
		return 1;
	if (df_emit(skb, 0, p, sport, dport, 0, off, len, DF_F_NAMES, 0)) /* a lost one is sent again next time */
		bpf_map_update_elem(&df_names_sent, &sum, &now, BPF_ANY);
	return 1;
}

/* A UDP datagram: a query the client sends to a DNS port, or what it receives from one. */
/* Reads a UDP datagram's headers again into w->p; returns the payload's offset (0: not one). */
static __always_inline __u32 df_udp_payload(struct __sk_buff *skb, struct df_work *w, __u16 *sport, __u16 *dport)
{
	struct udphdr uh;
	struct pkt *p = &w->p;

	__builtin_memset(p, 0, sizeof(*p));
	if (parse_ip(skb, p) || p->proto != IPPROTO_UDP || bpf_skb_load_bytes(skb, p->l4off, &uh, sizeof(uh)))
		return 0;
	*sport = bpf_ntohs(uh.source);
	*dport = bpf_ntohs(uh.dest);
	return p->l4off + sizeof(uh);
}

/* A UDP datagram a client's socket sends to a DNS port, and one it receives from one (the caller checked
 * the port). Functions of their own, each verified once apart from the program that calls it: the
 * verifier's budget for the cgroup_skb programs goes to httpflow's parser. They read the headers again. */
__noinline int df_udp_out(struct __sk_buff *skb)
{
	__u32 slot = 0;
	struct df_work *w = bpf_map_lookup_elem(&df_work, &slot);
	__u16 sport, dport;
	__u32 off;

	if (!w || !(off = df_udp_payload(skb, w, &sport, &dport)))
		return 0;
	__u32 len = skb->len > off ? skb->len - off : 0;

	/* UDP is sent from sendmsg only: egress always runs in the sender's context. */
	if (!df_udp_query(skb, w, sport, dport, off, len))
		df_emit(skb, 1, &w->p, sport, dport, 0, off, len, 0, 1);
	return 0;
}

__noinline int df_udp_in(struct __sk_buff *skb)
{
	__u32 slot = 1;
	struct df_work *w = bpf_map_lookup_elem(&df_work, &slot);
	__u16 sport, dport;
	__u32 off;

	if (!w || !(off = df_udp_payload(skb, w, &sport, &dport)))
		return 0;
	__u32 len = skb->len > off ? skb->len - off : 0;

	if (!df_udp_answer(skb, w, sport, dport, off, len))
		df_emit(skb, 0, &w->p, sport, dport, 0, off, len, 0, 0);
	return 0;
}

/* Whether a datagram is a client's DNS: sent to a DNS port, or received from one. */
static __always_inline int df_udp_port(int egress, const struct udphdr *uh)
{
	return df_port(bpf_ntohs(egress ? uh->dest : uh->source));
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
