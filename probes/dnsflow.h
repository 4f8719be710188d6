/* Types shared by the dnsflow part of netflow.bpf.c and collector/dnsflow (Go mirrors name these structs). */
#ifndef DNSFLOW_H
#define DNSFLOW_H

#include "netflow.h"

enum df_const {
	DF_MSG_LEN = 512, /* bytes of a packet's DNS payload copied: the header, question and most answers */
	DF_PORTS_MAX = 8, /* server ports that mark DNS (--dnsflow-ports) */
	DF_NAME_LEN = 256, /* a question's name in wire format: at most 255 bytes */
};

/* df_event.flags */
enum df_flag {
	DF_F_EGRESS = 1,  /* sent by the local socket to the server (a query); else received from it */
	DF_F_OWNER = 2,   /* sent in the owner's process context: pid, comm and netns are the sender's */
	DF_F_TCP_FIN = 4, /* TCP: the segment carries FIN or RST (the stream ends) */
	DF_F_NAMES = 8,   /* an answer the kernel paired and counted: for the name cache only */
};

/* Indexes of the df_stats per-CPU counters. */
enum df_stat {
	DF_STAT_RB_LOST = 0,       /* DNS packets the ring buffer had no room for */
	DF_STAT_QUERIES = 1,       /* UDP queries tracked in the kernel */
	DF_STAT_ANSWERS = 2,       /* answers paired with them in the kernel */
	DF_STAT_RETRIED = 3,       /* queries replaced by a retry with the same ID: counted unanswered */
	DF_STAT_INFLIGHT_FULL = 4, /* queries not tracked: df_inflight was full (their answers go to the collector) */
	DF_STAT_AGG_FULL = 5,      /* finished queries not counted: df_agg was full */
	DF_STAT_MAX = 6,
};

/* One DNS packet seen on a client's socket: a query it sent or an answer it received. For TCP, one
 * segment with payload of a connection to a DNS port (messages are reassembled by the collector). */
struct df_event {
	struct nf_tuple t; /* local (client) and remote (server) address; proto UDP or TCP */
	__u64 cookie;      /* socket cookie */
	__u64 ts_ns;       /* bpf_ktime_get_ns (CLOCK_MONOTONIC) when the packet passed the socket's cgroup hook */
	__u32 pid;         /* sending process (tgid) if DF_F_OWNER, else 0 */
	__u32 netns;       /* its network namespace if DF_F_OWNER, else 0 */
	__u32 seq;         /* TCP: sequence number of the first payload byte */
	__u32 len;         /* payload bytes in the packet (UDP payload, TCP segment payload) */
	__u16 cap;         /* bytes of msg that are valid: min(len, DF_MSG_LEN) */
	__u8 flags;        /* DF_F_* */
	__u8 pad;
	__u32 mntns;       /* the sender's mount namespace (its container) if DF_F_OWNER, else 0 */
	char comm[NF_COMM_LEN];
	__u8 msg[DF_MSG_LEN]; /* the payload's first bytes */
};
_Static_assert(sizeof(struct df_event) == 608, "df_event layout");

/* df_inflight key: a UDP query until its answer, as the collector's queryKey: the socket, the server and
 * the DNS ID (an unconnected socket may ask several servers). */
struct df_qid {
	__u64 cookie;
	__u8 server[16];
	__u16 port;
	__u16 id;
	__u32 pad;
};
_Static_assert(sizeof(struct df_qid) == 32, "df_qid layout");

/* What one dnsflow point is per: the aggregation key of df_agg. */
struct df_key {
	struct nf_tuple t; /* client (local) and server; the client's port is 0 unless it is a DNS port */
	__u32 pid;         /* the asking process (tgid) */
	__u32 mntns;       /* its mount namespace (its container) */
	__u32 netns;       /* its network namespace */
	__s16 rcode;       /* the answer's RCODE; -1: unanswered (replaced by a retry) */
	__u16 qtype;
	__u16 name_len;    /* bytes of name, its final zero label included */
	__u8 epoch;        /* df_ctl's epoch when counted: the collector reads the epochs that ended */
	__u8 pad;
	char comm[NF_COMM_LEN];
	__u8 name[DF_NAME_LEN]; /* the question's name in wire format, zero-padded */
};
_Static_assert(sizeof(struct df_key) == 332, "df_key layout");

/* df_inflight value: when the query was sent and the key its answer is counted under. */
struct df_query {
	__u64 ts_ns;
	struct df_key k;
	__u32 pad;
};
_Static_assert(sizeof(struct df_query) == 344, "df_query layout");

/* df_agg value (per CPU): the queries of one key, their latency summed and the largest. */
struct df_acc {
	__u64 count;
	__u64 latency_sum; /* ns */
	__u64 latency_max; /* ns */
};
_Static_assert(sizeof(struct df_acc) == 24, "df_acc layout");

#endif
