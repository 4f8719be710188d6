/* netflow: per-connection TCP counters and per-peer UDP counters, without a probe on every TCP send. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "common/btf.bpf.h"
#include "common/floor.bpf.h"
#include "common/skb.bpf.h"
#include "common/sock.bpf.h"
#include "common/task.bpf.h"
#include "netflow.h"

#define NF_SOCKS_MAX 65536
#define NF_UDP_MAX 65536
#define NF_UDP_SOCKS_MAX 16384
#define NF_LISTEN_MAX 4096
#define NF_EVENTS_BYTES (1 << 20)

char LICENSE[] SEC("license") = "GPL";

/* Tracing programs may ask for a socket's cookie from Linux 5.12; before, TCP sockets are known by their
 * address (unique while the socket lives: entries are deleted at close). Set by the collector. */
const volatile bool cookie_helper = true;

/* A kernel with no hook of the udp-owner ladder: learn a UDP socket's owner at its first datagram sent,
 * in cgroup_skb egress, which runs in the sender's call (sockets that only receive stay unowned). */
const volatile bool udp_owner_at_egress = false;

/* A plain hash, not an LRU: when full it refuses an insert, which is counted (NF_STAT_SOCK_FULL), where an
 * LRU would evict a live connection without a trace. Entries leave at ->CLOSE; one whose close the
 * tracepoint missed (a program skipped by recursion) is found stale by the interval walk and deleted. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NF_SOCKS_MAX);
	__type(key, __u64); /* socket cookie */
	__type(value, struct nf_sock);
} nf_socks SEC(".maps");

/* UDP sockets' owners, apart from nf_socks: UDP has no close event, so these only age out, and a
 * resolver's churn of short-lived sockets must not evict live TCP connections. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, NF_UDP_SOCKS_MAX);
	__type(key, __u64); /* socket cookie */
	__type(value, struct nf_sock);
} nf_udp_socks SEC(".maps");

/* Listening ports seen by the start-up walk (nf_seed). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, NF_LISTEN_MAX);
	__type(key, struct nf_listen_key);
	__type(value, __u8);
} nf_listen SEC(".maps");

/* Per CPU: a client's datagrams leave on one CPU and its answers arrive in softirq on another; shared
 * counters would bounce between them on every datagram. Atomic adds still, against a softirq
 * interrupting the same CPU's update. Not an LRU: the collector deletes entries idle for a few intervals,
 * and a full map refuses a new peer's datagram, which is counted (NF_STAT_UDP_FULL) rather than evicting
 * counters not yet read. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, NF_UDP_MAX);
	__type(key, struct nf_udp_key);
	__type(value, struct nf_udp_val);
} nf_udp SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, NF_EVENTS_BYTES);
} nf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, NF_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} nf_stats SEC(".maps");

/* Set by the collector (1) while its last walk met a tracked TCP socket with no owner: see tcp_owner. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} nf_want_owner SEC(".maps");

/* Puts struct nf_tcp_rec, only used as a local, and the enums Go mirrors into the object's BTF for the
 * layout tests (collector/bpf). */
const struct nf_tcp_rec *nf_rec_btf __attribute__((unused));
BTF_ENUM(nf_const);
BTF_ENUM(nf_dir);
BTF_ENUM(nf_stat);

static __always_inline void count_stat(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&nf_stats, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

#define EEXIST 17

/* Tracks a connection found already established (the start-up walks); one already tracked keeps its
 * exact bases. A full map's refusal is a connection not tracked. */
static __always_inline void track_preexisting(__u64 key, const struct nf_sock *n)
{
	long err = bpf_map_update_elem(&nf_socks, &key, n, BPF_NOEXIST);

	if (err && err != -EEXIST)
		count_stat(NF_STAT_SOCK_FULL);
}

/* The kernel's own counters of a TCP socket at one moment. */
struct tcp_now {
	__u64 acked, received;
	__u32 write_seq, retrans, srtt, mdev, ino;
	unsigned long flags;
};

/* Reads them with READ: TRUSTED (plain loads through a BTF pointer: tp_btf, iter/tcp) or BPF_CORE_READ
 * (helper calls, for a pointer kept in a map). Plain loads cost a fraction of a helper call, and
 * nf_state runs on every connection's state changes. */
#define TRUSTED(p, field) ((p)->field)
#define READ_TCP_NOW(now, tp, READ)                                                            \
	do {                                                                                   \
		(now).acked = READ(tp, bytes_acked);                                           \
		(now).received = READ(tp, bytes_received);                                     \
		(now).write_seq = READ(tp, write_seq);                                         \
		(now).retrans = READ(tp, total_retrans);                                       \
		(now).srtt = READ(tp, srtt_us);                                                \
		(now).mdev = READ(tp, mdev_us);                                                \
		(now).flags = READ(tp, inet_conn.icsk_inet.sk.__sk_common.skc_flags);          \
	} while (0)

/* Fills r with the connection's counters since ESTABLISHED. */
static __always_inline void tcp_counters(const struct tcp_now *now, const struct nf_sock *s,
					 struct nf_tcp_rec *r)
{
	/* write_seq gives the exact sequence space used since the base modulo 2^32; bytes_acked (64-bit,
	 * at most one window behind) supplies the high bits. The FIN takes one sequence number. */
	__u64 acked = now->acked - s->base_acked;
	__u32 seq32 = now->write_seq - s->base_write_seq;
	__u64 seq = acked + (__u32)(seq32 - (__u32)acked);

	r->bytes_written = seq > s->fin_sent ? seq - s->fin_sent : 0;

	/* bytes_received counts the peer's FIN too; SOCK_DONE says it arrived. */
	__u64 rcvd = now->received - s->base_received;

	if ((now->flags & (1UL << bpf_core_enum_value(enum sock_flags, SOCK_DONE))) && rcvd > 0)
		rcvd--;
	r->bytes_read = rcvd;
	r->retrans = now->retrans - s->base_retrans;
	r->srtt_us = now->srtt >> 3;
	r->rttvar_us = now->mdev >> 2;
	r->ino = now->ino;
}

static __always_inline void fill_rec(struct nf_tcp_rec *r, __u64 cookie, const struct nf_sock *s)
{
	r->cookie = cookie;
	r->t = s->t;
	r->pid = s->pid;
	r->mntns = s->mntns;
	r->netns = s->netns;
	__builtin_memcpy(r->comm, s->comm, NF_COMM_LEN);
	r->dir = s->dir;
	r->preexisting = s->preexisting;
}

/* Records the tuple and the counters' bases of a connection now established. trusted: tp is a BTF
 * pointer (tp_btf, iter/tcp) read with plain loads; otherwise (raw and classic tracepoints) through
 * helpers. It is a constant in every caller, so only one branch is compiled into each program. */
static __always_inline void tcp_established(struct nf_sock *n, struct sock *sk, const struct tcp_sock *tp,
					    const bool trusted)
{
	n->sk = (__u64)sk;
	n->t.proto = IPPROTO_TCP;
	if (trusted) {
		sock_tuple_btf(sk, &n->t, &n->netns);
		n->base_acked = tp->bytes_acked;
		n->base_received = tp->bytes_received;
		n->base_write_seq = tp->write_seq;
		n->base_retrans = tp->total_retrans;
	} else {
		sock_tuple(sk, &n->t, &n->netns);
		n->base_acked = BPF_CORE_READ(tp, bytes_acked);
		n->base_received = BPF_CORE_READ(tp, bytes_received);
		n->base_write_seq = BPF_CORE_READ(tp, write_seq);
		n->base_retrans = BPF_CORE_READ(tp, total_retrans);
	}
	n->established = 1;
}

static __always_inline __u64 tcp_sock_id(struct sock *sk)
{
	return cookie_helper ? bpf_get_socket_cookie(sk) : (__u64)sk;
}

/* The walk may read an entry in nf_socks while it is bound: the pid, which says the rest is there, is
 * written last. */
static __always_inline void bind_current(struct nf_sock *s)
{
	s->mntns = current_mntns();
	process_comm(s->comm, sizeof(s->comm));
	asm volatile("" ::: "memory");
	s->pid = bpf_get_current_pid_tgid() >> 32;
}

/* TCP lifecycle (tp is sk as a tcp_sock, or NULL). Runs in process context for connect/close/shutdown, in softirq for the rest,
 * so the process is only taken from transitions a syscall of the owner makes. */
static __always_inline int tcp_state(struct sock *sk, struct tcp_sock *tp, int oldstate, int newstate,
				     const bool trusted)
{
	if (floor_only || !tp)
		return 0;
	/* Half the transitions carry nothing we use (SYN_RECV, CLOSE_WAIT, FIN_WAIT2, LISTEN, ...). */
	if (newstate != TCP_SYN_SENT && newstate != TCP_ESTABLISHED && newstate != TCP_FIN_WAIT1 &&
	    newstate != TCP_LAST_ACK && newstate != TCP_CLOSE)
		return 0;
	__u64 cookie = tcp_sock_id(sk);
	struct nf_sock *s;

	switch (newstate) {
	case TCP_SYN_SENT: {
		/* connect(): the caller owns the socket. */
		struct nf_sock n = {};

		n.dir = NF_DIR_OUT;
		n.sk = (__u64)sk;
		bind_current(&n);
		/* Not counted when full: ->ESTABLISHED tries again, and counts once per connection. */
		bpf_map_update_elem(&nf_socks, &cookie, &n, BPF_ANY);
		return 0;
	}
	case TCP_ESTABLISHED: {
		struct nf_sock n = {};

		if (oldstate == TCP_SYN_SENT) {
			s = bpf_map_lookup_elem(&nf_socks, &cookie);
			if (s)
				n = *s;
			n.dir = NF_DIR_OUT;
		} else if (oldstate == TCP_SYN_RECV) {
			n.dir = NF_DIR_IN; /* softirq: the owner is learnt later */
		} else {
			return 0;
		}
		tcp_established(&n, sk, tp, trusted);
		if (bpf_map_update_elem(&nf_socks, &cookie, &n, BPF_ANY))
			count_stat(NF_STAT_SOCK_FULL);
		return 0;
	}
	case TCP_FIN_WAIT1:
	case TCP_LAST_ACK:
		/* close() or shutdown() by the owner; tcp_send_fin() follows and takes a sequence number. */
		s = bpf_map_lookup_elem(&nf_socks, &cookie);
		if (!s)
			return 0;
		s->fin_sent = 1;
		if (!s->pid)
			bind_current(s);
		return 0;
	default: { /* TCP_CLOSE */
		s = bpf_map_lookup_elem(&nf_socks, &cookie);
		if (!s)
			return 0;
		struct nf_sock copy = *s;

		/* Delete before submitting, so the interval iterator never sees a connection already reported closed. */
		bpf_map_delete_elem(&nf_socks, &cookie);
		if (!copy.established)
			return 0;
		struct nf_tcp_rec *r = bpf_ringbuf_reserve(&nf_events, sizeof(*r), 0);

		if (!r) {
			count_stat(NF_STAT_RB_LOST);
			return 0;
		}
		struct tcp_now now;

		if (trusted)
			READ_TCP_NOW(now, tp, TRUSTED);
		else
			READ_TCP_NOW(now, tp, BPF_CORE_READ);
		now.ino = 0; /* the socket is being released: its owner was learnt before, if at all */
		__builtin_memset(r, 0, sizeof(*r));
		fill_rec(r, cookie, &copy);
		tcp_counters(&now, &copy, r);
		r->closed = 1;
		/* No wakeup: the collector drains on a timer (a wakeup is a self-IPI, several µs here). */
		bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
		return 0;
	}
	}
}

/* The state tracepoint, best first: BTF-typed (plain loads), raw (helper reads: a kernel that refuses
 * tp_btf), classic (through tracefs). Raw and classic ones cannot ask for a socket's cookie, so with them
 * the collector keys connections by address (cookie_helper = false). */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(nf_state, struct sock *sk, int oldstate, int newstate)
{
	return tcp_state(sk, bpf_skc_to_tcp_sock(sk), oldstate, newstate, true);
}

static __always_inline struct tcp_sock *as_tcp_sock(struct sock *sk)
{
	return sk && BPF_CORE_READ(sk, sk_protocol) == IPPROTO_TCP ? (struct tcp_sock *)sk : NULL;
}

SEC("raw_tp/inet_sock_set_state")
int BPF_PROG(nf_state_raw, struct sock *sk, int oldstate, int newstate)
{
	return tcp_state(sk, as_tcp_sock(sk), oldstate, newstate, false);
}

SEC("tracepoint/sock/inet_sock_set_state")
int nf_state_tp(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct sock *sk = (struct sock *)BPF_CORE_READ(ctx, skaddr);

	return tcp_state(sk, as_tcp_sock(sk), BPF_CORE_READ(ctx, oldstate), BPF_CORE_READ(ctx, newstate), false);
}

/* Whether an nf_socks entry outlived its socket (the ->CLOSE tracepoint did not run for it): the socket's
 * memory is closed, listening or another socket now (TCP sockets are SLAB_TYPESAFE_BY_RCU, so it is
 * still a socket, and a reused one has another cookie and tuple). A local port of 0 is not a sign: on its
 * way to TCP_CLOSE, tcp_set_state releases the port (inet_put_port) before the state changes and the
 * tracepoint runs, and a walk in between took the closing connection for stale and lost its close. */
static __always_inline bool sock_stale(__u64 key, const struct nf_sock *s)
{
	const struct sock *sk = (const struct sock *)s->sk;

	if (cookie_helper && BPF_CORE_READ(sk, __sk_common.skc_cookie.counter) != key)
		return true;
	if (!s->established)
		return false; /* between connect() and ->SYN_SENT the socket is still TCP_CLOSE */
	int state = BPF_CORE_READ(sk, __sk_common.skc_state);

	__u16 num = BPF_CORE_READ(sk, __sk_common.skc_num);

	return state == TCP_CLOSE || state == TCP_LISTEN || (num && num != s->t.sport) ||
	       bpf_ntohs(BPF_CORE_READ(sk, __sk_common.skc_dport)) != s->t.dport;
}

/* Deletes a stale entry and counts it: the connection's bytes since its last report are lost. */
static __always_inline void drop_stale(__u64 key)
{
	if (!bpf_map_delete_elem(&nf_socks, &key))
		count_stat(NF_STAT_SOCK_STALE);
}

/* The live record of one tracked connection (s is its nf_socks entry; the socket is read through helpers:
 * the pointer was kept in a map). */
static __always_inline void live_rec(struct nf_tcp_rec *r, __u64 key, const struct nf_sock *s)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)s->sk;
	struct tcp_now now;

	READ_TCP_NOW(now, tp, BPF_CORE_READ);
	/* The inode names the owner through /proc, needed only while the kernel has not seen it: the chase
	 * costs three more objects' cold cache lines per socket, every interval. */
	now.ino = s->pid ? 0 : BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_socket, file, f_inode, i_ino);
	fill_rec(r, key, s);
	tcp_counters(&now, s, r);
}

/* Run by the collector once per interval over nf_socks: live counters of every tracked TCP connection. */
SEC("iter/bpf_map_elem")
int nf_iter(struct bpf_iter__bpf_map_elem *ctx)
{
	if (floor_only)
		return 0;
	__u64 *key = ctx->key;
	struct nf_sock *s = ctx->value;

	if (!key || !s)
		return 0;
	if (sock_stale(*key, s)) {
		drop_stale(*key);
		return 0;
	}
	if (!s->established)
		return 0;
	struct nf_tcp_rec r = {};

	live_rec(&r, *key, s);
	bpf_seq_write(ctx->meta->seq, &r, sizeof(r));
	return 0;
}

/* The same without map iterators (a kernel that refuses them): the collector walks nf_socks' keys itself
 * and runs this program (BPF_PROG_TEST_RUN, never attached) on up to NF_LIVE_BATCH of them at a time,
 * passed as its arguments (0 ends a batch); the records go to nf_live_out, which it drains after each run. */
#define NF_LIVE_BATCH 12 /* the most arguments a raw tracepoint program takes */
#define NF_LIVE_BYTES (1 << 16)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, NF_LIVE_BYTES);
} nf_live_out SEC(".maps");

SEC("raw_tp")
int nf_live(__u64 *ctx)
{
	if (floor_only)
		return 0;
#pragma unroll
	for (int i = 0; i < NF_LIVE_BATCH; i++) {
		__u64 key = ctx[i];

		if (!key)
			break;
		struct nf_sock *s = bpf_map_lookup_elem(&nf_socks, &key);

		if (!s)
			continue;
		if (sock_stale(key, s)) {
			drop_stale(key);
			continue;
		}
		if (!s->established)
			continue;
		struct nf_tcp_rec r = {};

		live_rec(&r, key, s);
		if (bpf_ringbuf_output(&nf_live_out, &r, sizeof(r), BPF_RB_NO_WAKEUP))
			count_stat(NF_STAT_RB_LOST);
	}
	return 0;
}

/* Run once at start over the collector's network namespace: connections established before the
 * collector are tracked from now on (their bytes before start are not known). Listening sockets come
 * first in the walk, so the direction of each connection is known when it is reached. */
SEC("iter/tcp")
int nf_seed(struct bpf_iter__tcp *ctx)
{
	if (floor_only)
		return 0;
	struct sock_common *skc = ctx->sk_common;

	if (!skc)
		return 0;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(skc);

	if (!tp)
		return 0;
	struct sock *sk = (struct sock *)tp;
	struct nf_listen_key lk = {};

	lk.netns = sk->__sk_common.skc_net.net->ns.inum;
	lk.port = sk->__sk_common.skc_num;
	int state = sk->__sk_common.skc_state;

	if (state == TCP_LISTEN) {
		__u8 one = 1;

		bpf_map_update_elem(&nf_listen, &lk, &one, BPF_ANY);
		return 0;
	}
	if (state != TCP_ESTABLISHED)
		return 0;
	struct nf_sock n = {};
	__u64 cookie = tcp_sock_id(sk);

	tcp_established(&n, sk, tp, true);
	n.preexisting = 1;
	n.dir = bpf_map_lookup_elem(&nf_listen, &lk) ? NF_DIR_IN : NF_DIR_OUT;
	track_preexisting(cookie, &n);
	return 0;
}

/* The same without iterators (a kernel that refuses them): the collector runs this program
 * (BPF_PROG_TEST_RUN, never attached) over the established-socket hash table of its own network namespace,
 * which is the one table of every namespace unless tcp_child_ehash_entries gave some their own,
 * NF_SEED_BUCKETS buckets from ctx[0] per run. It returns the number of buckets. The collector fills
 * nf_listen from /proc first. The table is read through helpers under RCU: a socket moving meanwhile may be
 * missed, as a connection opening at that moment would be by iter/tcp. */
#define NF_SEED_BUCKETS 16
#define NF_SEED_CHAIN 8 /* sockets followed per bucket; chains are ~1 long (the table is sized to the sockets) */

static __always_inline void seed_one(struct sock *sk)
{
	if (BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_ESTABLISHED)
		return; /* TIME_WAIT and request sockets share the table */
	struct nf_sock n = {};
	struct nf_listen_key lk = {};
	__u64 key = tcp_sock_id(sk);

	tcp_established(&n, sk, (struct tcp_sock *)sk, false);
	n.preexisting = 1;
	lk.netns = n.netns;
	lk.port = n.t.sport;
	n.dir = bpf_map_lookup_elem(&nf_listen, &lk) ? NF_DIR_IN : NF_DIR_OUT;
	track_preexisting(key, &n);
}

SEC("raw_tp")
int nf_seed_walk(__u64 *ctx)
{
	if (floor_only)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct inet_hashinfo *h = BPF_CORE_READ(task, nsproxy, net_ns, ipv4.tcp_death_row.hashinfo);
	struct inet_ehash_bucket *ehash = BPF_CORE_READ(h, ehash);
	__u32 mask = BPF_CORE_READ(h, ehash_mask);
	__u32 start = ctx[0];
	unsigned long node_off = bpf_core_field_offset(struct sock_common, skc_nulls_node);

	for (int b = 0; b < NF_SEED_BUCKETS; b++) {
		__u32 i = start + b;

		if (!ehash || i > mask)
			break;
		unsigned long node = 0;

		bpf_probe_read_kernel(&node, sizeof(node), &ehash[i].chain.first);
		for (int c = 0; c < NF_SEED_CHAIN; c++) {
			if (!node || (node & 1)) /* a nulls marker ends the chain */
				break;
			seed_one((struct sock *)(node - node_off));
			bpf_probe_read_kernel(&node, sizeof(node), (void *)node);
		}
	}
	return ehash ? mask + 1 : 0;
}

/* UDP sockets: learn the owner in process context. The cookie is the one cgroup_skb sees. */
/* The owner from the task, for cgroup_skb programs (which may not call bpf_get_current_pid_tgid before 6.x). */
static __always_inline void bind_task(struct nf_sock *s)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	s->pid = BPF_CORE_READ(task, tgid);
	s->mntns = task_mntns(task);
	bpf_probe_read_kernel_str(s->comm, sizeof(s->comm), BPF_CORE_READ(task, group_leader, comm));
}

/* from_skb: called by cgroup_skb egress (the last rung: a kernel with no socket hook for UDP). */
static __always_inline int udp_owner_of(struct sock *sk, __u64 cookie, const bool from_skb)
{
	if (!cookie || bpf_map_lookup_elem(&nf_udp_socks, &cookie))
		return 0;
	struct nf_sock n = {};

	n.sk = (__u64)sk;
	n.t.proto = IPPROTO_UDP;
	sock_tuple(sk, &n.t, &n.netns);
	/* A socket the application bound and did not connect serves many peers; any other is a client's
	 * (DataKit marks every bound port as a server, including a client's bind before connect). */
	__u8 locks = BPF_CORE_READ_BITFIELD_PROBED(sk, sk_userlocks);

	n.dir = (locks & (SOCK_BINDPORT_LOCK | SOCK_BINDADDR_LOCK)) && !n.t.dport ? NF_DIR_IN : NF_DIR_OUT;
	if (from_skb)
		bind_task(&n);
	else
		bind_current(&n);
	if (bpf_map_update_elem(&nf_udp_socks, &cookie, &n, BPF_ANY))
		count_stat(NF_STAT_SOCK_FULL);
	return 0;
}

static __always_inline int udp_owner(struct sock *sk, __u64 cookie)
{
	return udp_owner_of(sk, cookie, false);
}

/* A TCP socket's owner, at a send or receive (process context). An accepted socket's state changes run
 * in softirq, so without this its owner comes from a scan of every open file in /proc (about a second
 * at 200 000 sockets). The lookup runs only while the collector asks (nf_want_owner): otherwise a TCP
 * send or receive costs one array load more. */
static __always_inline int tcp_owner(struct sock *sk, const bool raw)
{
	__u32 zero = 0;
	__u32 *want = bpf_map_lookup_elem(&nf_want_owner, &zero);

	if (!want || !*want)
		return 0;
	/* The key as tcp_state made it: a raw tracepoint cannot ask for a cookie, but reads the one made then. */
	__u64 key;

	if (!raw)
		key = tcp_sock_id(sk);
	else /* raw is a constant in each caller: tcp_sock_id's helper call is not in raw programs */
		key = cookie_helper ? BPF_CORE_READ(sk, __sk_common.skc_cookie.counter) : (__u64)sk;
	struct nf_sock *s = bpf_map_lookup_elem(&nf_socks, &key);

	if (s && !s->pid)
		bind_current(s);
	return 0;
}

/* In httpflow.bpf.h, included below (after netflow's programs, whose order in the object is the order
 * the kernel meets them in): tie a TLS session to the socket its thread uses inside an SSL call. */
static __always_inline void hf_tls_tie_sock(struct sock *sk);
static __always_inline void hf_tls_tie_sock_raw(struct sock *sk);

/* Linux 6.3+: every socket send/receive, in process context; TCP learns owners (tcp_owner) and ties TLS
 * sessions, others return at once. */
static __always_inline int udp_owner_tp(struct sock *sk)
{
	/* Plain loads through the trusted argument: this runs on every socket send and receive. */
	if (sk->sk_protocol == IPPROTO_TCP) {
		hf_tls_tie_sock(sk);
		return tcp_owner(sk, false);
	}
	if (sk->sk_protocol != IPPROTO_UDP)
		return 0;
	__u16 family = sk->__sk_common.skc_family;

	if (family != AF_INET && family != AF_INET6)
		return 0;
	return udp_owner(sk, bpf_get_socket_cookie(sk));
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(nf_udp_send, struct sock *sk, int ret, int flags)
{
	if (floor_only)
		return 0;
	return udp_owner_tp(sk);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(nf_udp_recv, struct sock *sk, int ret, int flags)
{
	if (floor_only)
		return 0;
	return udp_owner_tp(sk);
}

/* A kernel that refuses tp_btf: the same tracepoints raw, reading through helpers. Raw tracepoints
 * cannot ask for a cookie: they read the one cgroup_skb generated at the socket's first packet. */
static __always_inline int udp_owner_raw(struct sock *sk)
{
	__u16 proto = BPF_CORE_READ(sk, sk_protocol);

	if (proto == IPPROTO_TCP) {
		hf_tls_tie_sock_raw(sk);
		return tcp_owner(sk, true);
	}
	if (proto != IPPROTO_UDP)
		return 0;
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (family != AF_INET && family != AF_INET6)
		return 0;
	return udp_owner(sk, BPF_CORE_READ(sk, __sk_common.skc_cookie.counter));
}

SEC("raw_tp/sock_send_length")
int BPF_PROG(nf_udp_send_raw, struct sock *sk, int ret, int flags)
{
	if (floor_only)
		return 0;
	return udp_owner_raw(sk);
}

SEC("raw_tp/sock_recv_length")
int BPF_PROG(nf_udp_recv_raw, struct sock *sk, int ret, int flags)
{
	if (floor_only)
		return 0;
	return udp_owner_raw(sk);
}

/* Older kernels with kprobes: the UDP send/receive entry points. kprobes cannot ask for a cookie, so they
 * read the one cgroup_skb generated at the socket's first packet (until then, a later call binds). */
static __always_inline int udp_owner_kprobe(struct sock *sk)
{
	return udp_owner(sk, BPF_CORE_READ(sk, __sk_common.skc_cookie.counter));
}

SEC("kprobe/udp_sendmsg")
int BPF_KPROBE(nf_kp_udp_send, struct sock *sk)
{
	if (floor_only)
		return 0;
	return udp_owner_kprobe(sk);
}

SEC("kprobe/udpv6_sendmsg")
int BPF_KPROBE(nf_kp_udp6_send, struct sock *sk)
{
	if (floor_only)
		return 0;
	return udp_owner_kprobe(sk);
}

SEC("kprobe/udp_recvmsg")
int BPF_KPROBE(nf_kp_udp_recv, struct sock *sk)
{
	if (floor_only)
		return 0;
	return udp_owner_kprobe(sk);
}

SEC("kprobe/udpv6_recvmsg")
int BPF_KPROBE(nf_kp_udp6_recv, struct sock *sk)
{
	if (floor_only)
		return 0;
	return udp_owner_kprobe(sk);
}

/* UDP bytes per (socket, peer), from the datagrams themselves: unconnected sockets name no peer elsewhere. */
static __always_inline void udp_count(struct __sk_buff *skb, int egress, const struct pkt *p, const struct udphdr *uh)
{
	struct nf_udp_key k = {};

	k.family = p->family;
	__builtin_memcpy(egress ? k.laddr : k.raddr, p->saddr, 16);
	__builtin_memcpy(egress ? k.raddr : k.laddr, p->daddr, 16);
	__u16 src = bpf_ntohs(uh->source), dst = bpf_ntohs(uh->dest);
	__u16 len = bpf_ntohs(uh->len);

	k.lport = egress ? src : dst;
	k.rport = egress ? dst : src;
	k.cookie = bpf_get_socket_cookie(skb);
	__u64 payload = len > sizeof(*uh) ? len - sizeof(*uh) : 0;

	struct nf_udp_val *v = bpf_map_lookup_elem(&nf_udp, &k);

	if (!v) {
		struct nf_udp_val zero = {};

		if (bpf_map_update_elem(&nf_udp, &k, &zero, BPF_NOEXIST) &&
		    !bpf_map_lookup_elem(&nf_udp, &k)) {
			count_stat(NF_STAT_UDP_FULL);
			return;
		}
		v = bpf_map_lookup_elem(&nf_udp, &k);
		if (!v)
			return;
	}
	if (egress) {
		__sync_fetch_and_add(&v->bytes_out, payload);
		__sync_fetch_and_add(&v->pkts_out, 1);
	} else {
		__sync_fetch_and_add(&v->bytes_in, payload);
		__sync_fetch_and_add(&v->pkts_in, 1);
	}
}

/* The last rung of udp-owner (udp_owner_at_egress). */
static __always_inline void udp_owner_skb(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	struct bpf_sock *bsk = skb->sk;
	__u64 sk = 0;

	if (!bsk || bpf_map_lookup_elem(&nf_udp_socks, &cookie))
		return;
	/* The verifier allows no arithmetic on a socket pointer: read the struct sock through helpers, from
	 * its address copied out as a number. */
	bpf_probe_read_kernel(&sk, sizeof(sk), &bsk);
	udp_owner_of((struct sock *)sk, cookie, true);
}

#include "httpflow.bpf.h"
#include "dnsflow.bpf.h"

static __always_inline int skb_hook(struct __sk_buff *skb, int egress)
{
	struct pkt p = {};

	if (floor_only || parse_ip(skb, &p))
		return 1;
	if (p.proto == IPPROTO_UDP) {
		struct udphdr uh;

		if (bpf_skb_load_bytes(skb, p.l4off, &uh, sizeof(uh)))
			return 1;
		udp_count(skb, egress, &p, &uh);
		if (udp_owner_at_egress && egress)
			udp_owner_skb(skb);
		if (dns_enabled && df_udp_port(egress, &uh)) {
			if (egress)
				df_udp_out(skb);
			else
				df_udp_in(skb);
		}
	} else if (p.proto == IPPROTO_TCP && (http_enabled || tls_enabled || dns_enabled)) {
		struct tcphdr th;

		if (bpf_skb_load_bytes(skb, p.l4off, &th, sizeof(th)))
			return 1;
		if (dns_enabled && df_tcp(skb, egress, &p, &th))
			return 1;
		if (http_enabled || tls_enabled)
			hf_skb(skb, egress, &p, &th);
	}
	return 1; /* observe only: let every packet pass */
}

SEC("cgroup_skb/egress")
int nf_skb_egress(struct __sk_buff *skb)
{
	return skb_hook(skb, 1);
}

SEC("cgroup_skb/ingress")
int nf_skb_ingress(struct __sk_buff *skb)
{
	return skb_hook(skb, 0);
}
