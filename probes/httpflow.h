/* Types shared by the httpflow part of netflow.bpf.c and collector/httpflow (Go mirrors name these structs). */
#ifndef HTTPFLOW_H
#define HTTPFLOW_H

#include "netflow.h"

enum hf_const {
	HF_REQ_LEN = 128, /* bytes of the request kept from its first byte: the request line */
	HF_HOST_LEN = 64, /* bytes of the Host header's value kept */
	HF_EVENT_HEAD = 112, /* bytes of struct hf_event before req: a record's fixed part */
	HF_H2_CHUNK = 4096,  /* bytes of HTTP/2 frames one struct hf_h2_rec carries at most */
};

/* hf_event.flags */
enum hf_flag {
	HF_F_TLS = 1,       /* seen through the OpenSSL uprobes, not in packets */
	HF_F_REQ_SPLIT = 2, /* the request line did not end in the first write (req holds only its start) */
};

/* Indexes of the hf_stats per-CPU counters. */
enum hf_stat {
	HF_STAT_RB_LOST = 0,       /* exchanges the ring buffer had no room for */
	HF_STAT_CONN_FULL = 1,     /* connections whose state could not be created */
	HF_STAT_PIPELINE_FULL = 2, /* requests beyond the pipelining depth (their exchange is not reported) */
	HF_STAT_DESYNC = 3,        /* streams that lost track of message boundaries (until a message start) */
	HF_STAT_UNANSWERED = 4,    /* requests whose connection ended before a response */
	HF_STAT_TLS_HITS = 5,      /* OpenSSL uprobe and uretprobe hits */
	HF_STAT_TLS_CALLS = 6,     /* SSL_read/SSL_write calls that moved data */
	HF_STAT_LOST = 7,          /* requests dropped unreported: their response's framing was lost */
	HF_STAT_H2_LOST = 8,       /* HTTP/2 records the ring buffer had no room for (their sessions are dropped) */
	HF_STAT_SCRATCH_FULL = 9,  /* TLS calls or ends not parsed: no scratch could be made for the thread */
	HF_STAT_MAX = 10,
};

/* One HTTP/1.x exchange: a request and its final response, paired in the kernel. The ring carries it cut
 * short: the fields before req, then req_len bytes of req, then host_len bytes of host (most request lines
 * and hosts are far shorter than their buffers, and so the ring holds twice as many exchanges). */
struct hf_event {
	struct nf_tuple t;  /* local and remote address of the connection */
	__u64 cookie;       /* socket cookie (0 when a TLS session's socket was not seen) */
	__u64 latency_ns;   /* first byte of the final response minus last byte of the request */
	__u64 req_bytes;    /* whole request message: line, headers, body */
	__u64 resp_bytes;   /* whole response messages: interim (1xx) and final */
	__u32 pid;          /* owning process (tgid), 0 if unknown */
	__u32 netns;
	char comm[NF_COMM_LEN];
	__u16 status;       /* final status code */
	__u8 dir;           /* NF_DIR_OUT: we sent the request (client); NF_DIR_IN: we answered it */
	__u8 flags;         /* HF_F_* */
	__u8 req_len;       /* bytes of req that are valid */
	__u8 host_len;      /* bytes of host that are valid (0: no Host header seen) */
	__u8 pad[2];
	__u32 mntns;        /* the owner's mount namespace (its container), with pid */
	__u32 pad2;
	char req[HF_REQ_LEN];
	char host[HF_HOST_LEN];
};
_Static_assert(sizeof(struct hf_event) == 304, "hf_event layout");
_Static_assert(__builtin_offsetof(struct hf_event, req) == HF_EVENT_HEAD, "hf_event head");

/* hf_h2_rec.flags */
enum hf_h2_flag {
	HF_H2_CLIENT = 1, /* we sent the connection preface: our streams are requests */
	HF_H2_CLOSE = 2,  /* the session ended (Close, SSL_free); no data */
	HF_H2_LOST = 4,   /* the kernel lost the frame boundaries of this direction: nothing follows */
};

/* HTTP/2 over TLS is parsed in user space (HPACK needs each connection's header table), from these records: a
 * TLS call's bytes in order, frame by frame, with DATA payloads left out (their size is in their frame
 * header) but for a padded frame's pad length. The record is cut after n bytes of data. */
struct hf_h2_rec {
	struct nf_tuple t; /* local and remote address of the connection (zero until tied) */
	__u64 cookie;
	__u64 ssl;         /* the session: SSL * or *tls.Conn in process pid */
	__u64 ts_ns;       /* the call's time (a Go write's entry, other calls' return) */
	__u32 pid;
	__u32 netns;
	char comm[NF_COMM_LEN];
	__u32 mntns;
	__u32 seq;         /* records of this session and direction so far: a gap is a lost record */
	__u16 n;           /* bytes of data */
	__u8 dir;          /* HF_OUT 0 (written), HF_IN 1 (read) */
	__u8 flags;        /* HF_H2_* */
	__u32 pad;
	char data[HF_H2_CHUNK];
};
_Static_assert(__builtin_offsetof(struct hf_h2_rec, data) == 104, "hf_h2_rec head");

#endif
