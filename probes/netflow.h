/* Types shared by netflow.bpf.c and collector/netflow (Go mirrors name these structs). */
#ifndef NETFLOW_H
#define NETFLOW_H

/* Constants the Go side mirrors are enums: the object's BTF carries them (BTF_ENUM) and a test compares. */
enum nf_const {
	NF_COMM_LEN = 16,
};

/* Direction of a socket, as DataKit names it. */
enum nf_dir {
	NF_DIR_UNKNOWN = 0,
	NF_DIR_OUT = 1, /* the local side initiated (connect, autobound UDP) */
	NF_DIR_IN = 2,  /* the local side accepted (accept, bound UDP port) */
};

/* Indexes of the nf_stats per-CPU counters. */
enum nf_stat {
	NF_STAT_RB_LOST = 0,   /* close records the ring buffer had no room for */
	NF_STAT_SOCK_FULL = 1,  /* TCP connections not tracked: nf_socks was full (and UDP owners not kept) */
	NF_STAT_UDP_FULL = 2,   /* datagrams not counted: nf_udp was full */
	NF_STAT_SOCK_STALE = 3, /* nf_socks entries whose close was missed, deleted by the interval walk */
	NF_STAT_MAX = 4,
};

struct nf_tuple {
	__u8 saddr[16]; /* local address; IPv4 in the first 4 bytes */
	__u8 daddr[16]; /* remote address */
	__u16 sport;    /* local port, host order */
	__u16 dport;    /* remote port, host order */
	__u16 family;   /* AF_INET or AF_INET6 */
	__u8 proto;     /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 pad;
};
_Static_assert(sizeof(struct nf_tuple) == 40, "nf_tuple layout");

/* nf_socks value: what we know of one socket, keyed by its socket cookie. */
struct nf_sock {
	struct nf_tuple t;
	__u64 sk;             /* struct sock *, read again by the interval iterator */
	__u64 base_acked;     /* tcp_sock.bytes_acked at ESTABLISHED */
	__u64 base_received;  /* tcp_sock.bytes_received at ESTABLISHED */
	__u32 base_write_seq; /* tcp_sock.write_seq at ESTABLISHED (first byte after SYN) */
	__u32 base_retrans;   /* tcp_sock.total_retrans at ESTABLISHED */
	__u32 pid;            /* owning process (tgid); 0 until seen in process context */
	__u32 netns;          /* network namespace inode */
	char comm[NF_COMM_LEN];
	__u8 dir;
	__u8 established; /* TCP: saw ->ESTABLISHED, so the bases are valid */
	__u8 fin_sent;    /* TCP: our FIN took one sequence number */
	__u8 preexisting; /* TCP: established before the collector started; counted from its start */
	__u32 mntns;      /* the owner's mount namespace (its container), with pid */
};
_Static_assert(sizeof(struct nf_sock) == 104, "nf_sock layout");

/* One TCP connection's cumulative counters since ESTABLISHED: written by the
 * interval iterator (live) or to the ring buffer at ->CLOSE (final). */
struct nf_tcp_rec {
	__u64 cookie;
	struct nf_tuple t;
	__u64 bytes_written; /* payload bytes the local side wrote */
	__u64 bytes_read;    /* payload bytes the local side received */
	__u32 retrans;       /* segments retransmitted */
	__u32 srtt_us;       /* smoothed RTT, microseconds */
	__u32 rttvar_us;     /* RTT variance (mdev), microseconds */
	__u32 ino;           /* socket inode, to find the owner when pid is 0 */
	__u32 pid;
	__u32 netns;
	char comm[NF_COMM_LEN];
	__u8 dir;
	__u8 closed;
	__u8 preexisting;
	__u8 pad;
	__u32 mntns;
};
_Static_assert(sizeof(struct nf_tcp_rec) == 112, "nf_tcp_rec layout");

/* nf_listen key: a listening TCP port, to tell the direction of connections found at start. */
struct nf_listen_key {
	__u32 netns;
	__u16 port;
	__u16 pad;
};
_Static_assert(sizeof(struct nf_listen_key) == 8, "nf_listen_key layout");

/* nf_udp key: one UDP socket talking to one peer, as seen in packets. */
struct nf_udp_key {
	__u64 cookie;
	__u8 laddr[16];
	__u8 raddr[16];
	__u16 lport;
	__u16 rport;
	__u16 family;
	__u8 pad[2];
};
_Static_assert(sizeof(struct nf_udp_key) == 48, "nf_udp_key layout");

struct nf_udp_val {
	__u64 bytes_out; /* UDP payload bytes sent */
	__u64 bytes_in;  /* UDP payload bytes delivered to the socket */
	__u64 pkts_out;
	__u64 pkts_in;
};
_Static_assert(sizeof(struct nf_udp_val) == 32, "nf_udp_val layout");

#endif
