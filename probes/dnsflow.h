/* Types shared by the dnsflow part of netflow.bpf.c and collector/dnsflow (Go mirrors name these structs). */
#ifndef DNSFLOW_H
#define DNSFLOW_H

#include "netflow.h"

enum df_const {
	DF_MSG_LEN = 512, /* bytes of a packet's DNS payload copied: the header, question and most answers */
	DF_PORTS_MAX = 8, /* server ports that mark DNS (--dnsflow-ports) */
};

/* df_event.flags */
enum df_flag {
	DF_F_EGRESS = 1,  /* sent by the local socket to the server (a query); else received from it */
	DF_F_OWNER = 2,   /* sent in the owner's process context: pid, comm and netns are the sender's */
	DF_F_TCP_FIN = 4, /* TCP: the segment carries FIN or RST (the stream ends) */
};

/* Indexes of the df_stats per-CPU counters. */
enum df_stat {
	DF_STAT_RB_LOST = 0, /* DNS packets the ring buffer had no room for */
	DF_STAT_MAX = 1,
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

#endif
