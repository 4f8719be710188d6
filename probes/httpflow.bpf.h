/* httpflow: HTTP/1.x exchanges paired in the kernel, from TCP segments at the cgroup v2 root (plain) and
 * from OpenSSL's SSL_read/SSL_write (TLS). Included by netflow.bpf.c, whose cgroup_skb programs it shares:
 * plain HTTP costs no hook of its own.
 *
 * Each direction of a connection is a stream parsed message by message: the start line, then the headers
 * (scanned for their end, Content-Length, Transfer-Encoding and Host), then the body, skipped by
 * arithmetic (Content-Length, chunk sizes) without reading it. Requests wait in a small queue (pipelining)
 * until their final response ends; then one record per exchange goes to the ring buffer, without a wakeup.
 * A connection whose first bytes are not HTTP/1.x is marked so and costs one lookup per segment after. */
#ifndef HTTPFLOW_BPF_H
#define HTTPFLOW_BPF_H

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
#include "httpflow.h"

#define HF_EVENTS_BYTES (2 << 20) /* about 14k exchanges, 0.3 s of the bench's W1 at saturation */
#define HF_TLS_MAX 4096   /* OpenSSL sessions followed at once */
#define HF_CALLS_MAX 4096 /* threads inside an SSL call at once */
#define HF_THREADS_MAX 1024  /* threads with a TLS parse scratch (LRU: only a parse in progress needs one) */
#define HF_H2_THREADS_MAX 256 /* threads with an HTTP/2 record being filled (LRU, as above) */
#define HF_QUEUE 4        /* requests awaiting a response on one connection (pipelining depth) */
#define HF_STEPS 32       /* parsing steps per segment or SSL call (a step: a start line, a window of headers, a body) */
#define HF_WIN 256        /* bytes examined per header window */
#define HF_LOOK 24        /* bytes a header name check needs after a line start */
#define HF_NONE 0xffff
#define HF_BUF 1024
#define HF_POS(x) ((x) & (HF_BUF / 2 - 1)) /* a position the verifier knows leaves room to read past it */

/* Stream modes. */
#define HF_M_START 0      /* the next byte starts a message */
#define HF_M_HEAD 1       /* inside the start line and headers */
#define HF_M_BODY 2       /* skipping a Content-Length body */
#define HF_M_CHUNK 3      /* inside a chunk-size line */
#define HF_M_CHUNK_DATA 4 /* skipping a chunk and its CRLF */
#define HF_M_TRAILER 5    /* after the last chunk, until the empty line */
#define HF_M_EOF 6        /* a body that ends with the connection */
#define HF_M_LOST 7       /* lost track (a gap, an unknown start): wait for a segment that starts a message */
#define HF_M_CHUNK_LOST 8 /* a chunked body past a gap: counted by sequence until a segment ends with the last chunk */

/* hf_verdict values. */
#define HF_V_HTTP 1
#define HF_V_OTHER 2
#define HF_V_TLS 3 /* starts with a TLS handshake record: its SSL session is not tied to it yet */

#define HF_ROLE_CLIENT 1
#define HF_ROLE_SERVER 2

#define HF_OUT 0 /* egress, SSL_write */
#define HF_IN 1  /* ingress, SSL_read */

/* Loopback, curl and every client send a whole request line in one write; these are the requests. */
#define HF_KIND_REQ 1
#define HF_KIND_RESP 2

/* Benchmark knobs and parts, set by the collector before load. */
const volatile bool http_enabled = false;
const volatile bool tls_enabled = false;

/* One direction of a connection. */
struct hf_stream {
	__u64 left;      /* body or chunk bytes still to skip */
	__u64 msg_bytes; /* bytes of the current message so far */
	__u64 clen;      /* Content-Length, or the chunk size being parsed */
	__u32 next_seq;  /* TCP sequence number of the next new byte (plain only) */
	__u32 win;       /* the last four header bytes, to find the empty line */
	__u8 mode;       /* HF_M_* */
	__u8 seq_ok;     /* next_seq is set */
	__u8 has_clen;
	__u8 chunked;
	__u8 slot;      /* queue slot of the request being parsed; HF_QUEUE: not tracked */
	__u8 tracked;   /* the response being parsed answers the queue's head */
	__u8 carry_len; /* bytes in carry */
	__u8 h2_begun;  /* HTTP/2: this direction's first call was walked (hf_h2) */
	char carry[HF_LOOK]; /* a header line's start that ended the last write, to check it whole */
};

/* A request waiting for its response. */
struct hf_req {
	__u64 last_ns; /* when its last byte was seen */
	__u64 bytes;   /* its size so far (whole once its end was seen) */
	__u8 head;     /* HEAD: the response has no body */
	__u8 flags;
	__u8 req_len;
	__u8 host_len;
	__u8 pad[4];
	char req[HF_REQ_LEN];
	char host[HF_HOST_LEN];
};

struct hf_conn { /* what every segment touches first, the rest after: it is shared between CPUs */
	__u64 resp_first_ns; /* first byte of the head request's final response */
	__u64 resp_bytes;    /* its responses' bytes so far (interim ones included) */
	__u32 pid;
	__u16 status;
	__u8 role;
	__u8 qhead;
	__u8 qlen;
	__u8 tls;
	__u8 answered; /* the head's final response ended before its request did */
	__u8 pad;
	struct hf_stream s[2];
	struct nf_tuple t;
	__u64 cookie;
	__u32 netns;
	char comm[NF_COMM_LEN];
	__u32 mntns;
	struct hf_req q[HF_QUEUE];
};

/* A window of bytes and what hf_scan found in it: per CPU for the cgroup_skb programs, per thread for the
 * uprobe programs (hf_thread_scratch). */
struct hf_scratch {
	char buf[HF_BUF]; /* a carried partial line, a window, room to look past it; a power of two for masks */
	__u32 consumed;
	__u32 win;
	__u32 cl_pos, cl_end, te_pos, host_pos, host_end, first_nl;
	__u32 ls, win_ls; /* the current line's start, and the last four bytes before it */
	__u32 carry_at;   /* a partial line at the end of the data, to carry over */
	__u32 n, more;    /* hf_scan's arguments */
	__u64 clen;
	__u8 has_clen, chunked, ev_busy, pad[5];
	/* An exchange's record, built here and copied to the ring cut short; the second for a program that
	 * interrupts one building the first (a softirq's ingress program on this CPU). */
	struct hf_event ev[2];
};

/* Verdict for every TCP socket that carried payload: HTTP or not. Socket storage: freed with the socket. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u8);
} hf_verdict SEC(".maps");

/* Parser state of each plain HTTP connection. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct hf_conn);
} hf_conns SEC(".maps");

struct hf_tls_key {
	__u32 tgid;
	__u32 pad;
	__u64 ssl; /* SSL * in that process */
};

/* Parser state of each OpenSSL session; forgotten at SSL_free (nginx reuses SSL * addresses). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HF_TLS_MAX);
	__type(key, struct hf_tls_key);
	__type(value, struct hf_conn);
} hf_tls SEC(".maps");

/* A thread inside SSL_read/SSL_write: the arguments its return probe needs, and the session its socket
 * activity meanwhile belongs to (curl and openssl s_client give OpenSSL no fd: their own BIO writes). */
struct hf_call {
	__u64 ssl;
	__u64 buf;
	__u64 len_ptr; /* size_t * of the _ex variants, 0 for SSL_read/SSL_write */
	__u64 len;     /* the count, when the caller knows it (a Go call handed over), else 0 */
};

/* LRU: a thread killed inside a call never returns, and its entry must not stay forever. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HF_CALLS_MAX);
	__type(key, __u32); /* thread id */
	__type(value, struct hf_call);
} hf_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hf_scratch);
} hf_scratch SEC(".maps");

/* The uprobe programs' scratch, per thread: since Linux 6.1 they run with migration disabled but not
 * preemption (bpf_prog_run_array_sleepable), so on a preemptible kernel (PREEMPT_RT) two threads' programs
 * interleave on one CPU, and a per-CPU scratch would mix their bytes. The scratch only lives for one program
 * run: an entry the LRU takes back is made again at the thread's next call. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HF_THREADS_MAX);
	__type(key, __u32); /* thread id */
	__type(value, struct hf_scratch);
} hf_thread_scratch SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, HF_EVENTS_BYTES);
} hf_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, HF_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} hf_stats SEC(".maps");

/* Puts struct hf_event, only written into the ring buffer, and the enums Go mirrors into the object's BTF
 * for the layout tests. */
const struct hf_event *hf_event_btf __attribute__((unused));
BTF_ENUM(hf_const);
BTF_ENUM(hf_flag);
BTF_ENUM(hf_stat);

#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))

static __always_inline void hf_count_n(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&hf_stats, &idx);

	if (v)
		__sync_fetch_and_add(v, n); /* per CPU, but a uprobe program can be preempted by another on its CPU */
}

static __always_inline void hf_count(__u32 idx)
{
	hf_count_n(idx, 1);
}

/* The scratch of a cgroup_skb program (its CPU's), or of a uprobe program parsing a TLS call: tls, a constant
 * (its thread's, made by hf_thread_scratch_make). */
static __always_inline struct hf_scratch *hf_scratch_get(const int tls)
{
	__u32 key = 0;

	if (!tls)
		return bpf_map_lookup_elem(&hf_scratch, &key);
	key = bpf_get_current_pid_tgid();
	return bpf_map_lookup_elem(&hf_thread_scratch, &key);
}

/* Makes the calling thread's scratch if it has none, from the bytes of its CPU's (a parse writes what it
 * reads). Returns 0 if it cannot. */
static __always_inline int hf_thread_scratch_make(void)
{
	__u32 tid = bpf_get_current_pid_tgid(), zero = 0;
	struct hf_scratch *from;

	if (bpf_map_lookup_elem(&hf_thread_scratch, &tid))
		return 1;
	from = bpf_map_lookup_elem(&hf_scratch, &zero);
	if (from && !bpf_map_update_elem(&hf_thread_scratch, &tid, from, BPF_NOEXIST))
		return 1;
	hf_count(HF_STAT_SCRATCH_FULL);
	return 0;
}

#define LC8(p) (*(__u64 *)(p) | 0x2020202020202020ULL) /* 8 bytes, ASCII letters lower-cased */
#define STR8(a, b, c, d, e, f, g, h)                                                               \
	((__u64)(a) | (__u64)(b) << 8 | (__u64)(c) << 16 | (__u64)(d) << 24 | (__u64)(e) << 32 |    \
	 (__u64)(f) << 40 | (__u64)(g) << 48 | (__u64)(h) << 56)

/* Notes where a complete header line [ls, ls + len) of sc->buf gives a value we use. */
static __always_inline void hf_check_line(struct hf_scratch *sc, __u32 ls, __u32 len)
{
	if (ls > HF_WIN + HF_LOOK)
		return;
	char *p = sc->buf + HF_POS(ls);
	__u64 w0 = LC8(p);

	if (len >= 16 && w0 == STR8('c', 'o', 'n', 't', 'e', 'n', 't', '-') &&
	    (LC8(p + 8) & 0xffffffffffffffULL) == STR8('l', 'e', 'n', 'g', 't', 'h', ':', 0)) {
		sc->cl_pos = ls + 15;
		sc->cl_end = ls + len;
	} else if (len >= 19 && w0 == STR8('t', 'r', 'a', 'n', 's', 'f', 'e', 'r') &&
		   LC8(p + 8) == STR8('-', 'e', 'n', 'c', 'o', 'd', 'i', 'n') && (p[16] | 0x20) == 'g' &&
		   p[17] == ':') {
		sc->te_pos = ls + 18;
	} else if (len >= 6 && (w0 & 0xffffffffffULL) == STR8('h', 'o', 's', 't', ':', 0, 0, 0)) {
		sc->host_pos = ls + 5;
		sc->host_end = ls + len;
	}
}

/* A '\n' at i, with win the four bytes ending there: the empty line ending the block (returns 1, with
 * sc->consumed set), or the end of a header line, checked whole. */
static __always_inline int hf_line_end(struct hf_scratch *sc, __u32 i, __u32 win)
{
	if (READ_ONCE(sc->first_nl) == HF_NONE)
		sc->first_nl = i;
	if (win == 0x0d0a0d0a || (win & 0xffff) == 0x0a0a) {
		sc->consumed = i + 1;
		return 1;
	}
	__u32 ls = READ_ONCE(sc->ls);

	if (ls < i)
		hf_check_line(sc, ls, i - ls);
	sc->ls = i + 1;
	sc->win_ls = win;
	return 0;
}

/* Scans sc->buf[0, n) of a header block for its end (an empty line), and each complete header line for
 * Content-Length, Transfer-Encoding and Host. Returns 1 if the block ended (in sc->consumed bytes), 0 if
 * it needs more. When the window ends inside a line: with more bytes to come in this segment or call,
 * sc->consumed stops at the line's start, to reload from there; at the end of the data, a short partial
 * line is left in sc->carry_at for the caller to carry into the next write's window. Called through a global
 * function (hf_scan, hf_scan_tls): the verifier checks it once, not once per call site. */
static __always_inline int hf_scan_in(struct hf_scratch *sc, __u32 n, __u32 more)
{
	__u32 win = sc->win;
	int ended = 0;
	__u32 i;

	sc->cl_pos = sc->te_pos = sc->host_pos = sc->first_nl = sc->carry_at = HF_NONE;
	sc->consumed = n;
	sc->n = n;
	sc->more = more;
	/* A line starts at 0 if the bytes before ended one (never at a message's first byte: win is 0). */
	sc->ls = (win & 0xff) == '\n' ? 0 : HF_NONE;
	sc->win_ls = win;
	/* n, more and ls are read back from memory at each use: comparisons on a register would narrow its
	 * range differently on each path, and the verifier could not merge the loop's states. */
	/* The first eight bytes one by one: they continue the four bytes before the window (win). */
	for (i = 0; i < 8; i++) {
		if (i >= READ_ONCE(sc->n))
			goto out;
		char c = sc->buf[i];

		win = (win << 8) | (__u8)c;
		if (c != '\n')
			continue;
		if (hf_line_end(sc, i, win)) {
			ended = 1;
			goto out;
		}
	}
	/* Then eight bytes at a time, looking only at the '\n's: lines are tens of bytes long. */
	for (__u32 w = 1; w < (HF_WIN + HF_LOOK) / 8; w++) {
		__u32 base = w * 8, n_now = READ_ONCE(sc->n);

		if (base >= n_now)
			break;
		__u64 x = *(__u64 *)(sc->buf + base) ^ 0x0a0a0a0a0a0a0a0aULL;
		__u64 m = (x - 0x0101010101010101ULL) & ~x & 0x8080808080808080ULL; /* zero bytes of x */

		if (base + 8 > n_now)
			m &= ~0ULL >> ((base + 8 - n_now) * 8); /* only bytes below n */
		for (int k = 0; k < 8 && m; k++) {
			__u64 low = m & -m;

			m &= m - 1;
			i = base + ((((low >> 7) * 0x0001020304050607ULL) >> 56) & 7); /* the byte of that bit */
			if (sc->buf[i] != '\n')
				continue; /* a borrow, not a '\n' */
			win = __builtin_bswap32(*(__u32 *)(sc->buf + i - 3));
			if (hf_line_end(sc, i, win)) {
				ended = 1;
				goto out;
			}
		}
	}
	if (READ_ONCE(sc->n) >= 8)
		win = __builtin_bswap32(*(__u32 *)(sc->buf + ((READ_ONCE(sc->n) - 4) & (HF_BUF - 1))));
out:
	sc->win = win;
	if (!ended) {
		__u32 ls = READ_ONCE(sc->ls);

		if (ls < n && ls > 0 && more) {
			sc->consumed = ls; /* reload from the start of the unfinished line */
			sc->win = sc->win_ls;
		} else if (ls < n && !more && n - ls <= HF_LOOK) {
			sc->carry_at = ls; /* the line goes on in the next write */
		}
	}
	/* Positions are read back from memory, so the paths out of the loop merge. */
	__u32 cl_pos = READ_ONCE(sc->cl_pos), te_pos = READ_ONCE(sc->te_pos);

	if (cl_pos != HF_NONE) {
		__u32 j = cl_pos, end = READ_ONCE(sc->cl_end);
		__u64 v = 0;
		int digits = 0;

		for (int k = 0; k < 24 && j < end; k++, j++) {
			char c = sc->buf[j & (HF_BUF - 1)];

			if (c == ' ' && !digits)
				continue;
			if (c < '0' || c > '9')
				break;
			v = v * 10 + (c - '0');
			digits++;
		}
		if (digits) {
			sc->clen = v;
			sc->has_clen = 1;
		}
	}
	if (te_pos != HF_NONE && te_pos < HF_WIN + HF_LOOK) {
		__u32 j = te_pos;

		for (int k = 0; k < 4 && j < HF_WIN + HF_LOOK && sc->buf[HF_POS(j)] == ' '; k++)
			j++;
		if (j < HF_WIN + HF_LOOK) {
			char *p = sc->buf + HF_POS(j);

			/* "chunked" is the last coding when present; a list ("gzip, chunked") is not followed. */
			if ((LC8(p) & 0xffffffffffffffULL) == STR8('c', 'h', 'u', 'n', 'k', 'e', 'd', 0))
				sc->chunked = 1;
		}
	}
	return ended;
}

/* hf_scan_in on the CPU's scratch (a cgroup_skb program) or on the thread's (a uprobe program). */
__noinline int hf_scan(__u32 n, __u32 more)
{
	struct hf_scratch *sc = hf_scratch_get(0);

	return sc ? hf_scan_in(sc, n, more) : 0;
}

__noinline int hf_scan_tls(__u32 n, __u32 more)
{
	struct hf_scratch *sc = hf_scratch_get(1);

	return sc ? hf_scan_in(sc, n, more) : 0;
}

/* Parses a chunk-size line from sc->buf[0, n), continuing the size in sc->clen (bit 63: inside an
 * extension). Returns 1 with sc->consumed at the line's end, or 0 if the line goes on. */
static __always_inline int hf_chunk_line_in(struct hf_scratch *sc, __u32 n)
{
	__u64 v = sc->clen;

	sc->consumed = n;
	for (__u32 i = 0; i < 64; i++) {
		if (i >= n)
			break;
		char c = sc->buf[i];

		if (c == '\n') {
			sc->consumed = i + 1;
			sc->clen = v & ~(1ULL << 63);
			return 1;
		}
		if (v >> 63)
			continue;
		if (c >= '0' && c <= '9')
			v = (v << 4) | (c - '0');
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			v = (v << 4) | ((c | 0x20) - 'a' + 10);
		else if (c != '\r')
			v |= 1ULL << 63; /* ';' extension or junk: ignore the rest of the line */
	}
	sc->clen = v;
	return 0;
}

/* hf_chunk_line_in on the CPU's scratch or the thread's, as hf_scan. */
__noinline int hf_chunk_line(__u32 n)
{
	struct hf_scratch *sc = hf_scratch_get(0);

	return sc ? hf_chunk_line_in(sc, n) : 0;
}

__noinline int hf_chunk_line_tls(__u32 n)
{
	struct hf_scratch *sc = hf_scratch_get(1);

	return sc ? hf_chunk_line_in(sc, n) : 0;
}

/* What a message start looks like: a request method or an HTTP/1.x status line. */
static __always_inline int hf_classify(const char *b, __u32 n)
{
	if (n < 4)
		return 0;
	__u32 w = *(__u32 *)b;

	switch (w) {
	case 0x20544547: /* "GET " */
	case 0x54534f50: /* "POST" */
	case 0x20545550: /* "PUT " */
	case 0x44414548: /* "HEAD" */
	case 0x454c4544: /* "DELE" */
	case 0x43544150: /* "PATC" */
	case 0x4954504f: /* "OPTI" */
		return HF_KIND_REQ;
	case 0x50545448: /* "HTTP" */
		if (n >= 12 && b[4] == '/' && b[5] == '1' && b[6] == '.' && b[8] == ' ')
			return HF_KIND_RESP;
	}
	return 0;
}

/* Loads the stream's bytes [pos, pos + HF_WIN) into the scratch buffer at offset at (after a carried
 * partial line), from the packet or the user buffer. Returns how many, 0 on failure. */
static __always_inline __u32 hf_load(struct hf_scratch *sc, __u32 at, struct __sk_buff *skb, __u32 off,
				     const char *ubuf, __u32 pos, __u32 len)
{
	__u64 n = len > pos ? len - pos : 0; /* 64-bit: the bounds checked are the helper's argument's */

	if (n == 0 || at > HF_LOOK)
		return 0;
	if (n > HF_WIN)
		n = HF_WIN;
	/* 1..HF_WIN by construction: older verifiers lose the n != 0 learnt from a branch. */
	n = ((n - 1) & (HF_WIN - 1)) + 1;
	long err = skb ? bpf_skb_load_bytes(skb, off + pos, sc->buf + at, n)
		       : bpf_probe_read_user(sc->buf + at, n, ubuf + pos);

	return err ? 0 : n;
}

/* Is stream d the one carrying requests? */
static __always_inline int hf_req_stream(const struct hf_conn *c, int d)
{
	return (c->role == HF_ROLE_CLIENT) == (d == HF_OUT);
}

static __always_inline void hf_emit(struct hf_conn *c, struct hf_req *r, const int tls)
{
	struct hf_scratch *sc = hf_scratch_get(tls);

	if (!sc)
		return;
	/* An index, not a branch: a branch here would double the states the verifier walks at each caller. */
	__u32 nested = READ_ONCE(sc->ev_busy) & 1;
	struct hf_event *e = &sc->ev[nested];

	WRITE_ONCE(sc->ev_busy, 1);
	asm volatile("" ::: "memory"); /* the flag is set before the record is written */

	e->t = c->t;
	e->cookie = c->cookie;
	e->latency_ns = c->resp_first_ns > r->last_ns && r->last_ns ? c->resp_first_ns - r->last_ns : 0;
	e->req_bytes = r->bytes;
	e->resp_bytes = c->resp_bytes;
	e->pid = c->pid;
	e->mntns = c->mntns;
	e->pad2 = 0;
	e->netns = c->netns;
	__builtin_memcpy(e->comm, c->comm, NF_COMM_LEN);
	e->status = c->status;
	e->dir = c->role == HF_ROLE_CLIENT ? NF_DIR_OUT : NF_DIR_IN;
	e->flags = r->flags | (c->tls ? HF_F_TLS : 0);
	/* Bounds the verifier follows into the copy and the size below (the compiler's min is lost to it). */
	__u64 rl = r->req_len, hl = r->host_len;

	asm volatile("" : "+r"(rl), "+r"(hl));
	if (rl > HF_REQ_LEN)
		rl = HF_REQ_LEN;
	if (hl > HF_HOST_LEN)
		hl = HF_HOST_LEN;

	e->req_len = rl;
	e->host_len = hl;
	e->pad[0] = e->pad[1] = 0;
	__builtin_memcpy(e->req, r->req, HF_REQ_LEN);
	/* The host right after the request's bytes: the record ends there. */
	__builtin_memcpy((char *)e + HF_EVENT_HEAD + rl, r->host, HF_HOST_LEN);
	/* No wakeup: the collector drains on a timer (a wakeup is a self-IPI, several µs here). */
	if (bpf_ringbuf_output(&hf_events, e, HF_EVENT_HEAD + rl + hl, BPF_RB_NO_WAKEUP))
		hf_count(HF_STAT_RB_LOST);
	asm volatile("" ::: "memory");
	WRITE_ONCE(sc->ev_busy, nested);
}

/* A message starts in sc->buf[0, n): queue a request, or note a response's status. Returns 0 if the
 * message is not what this stream carries. */
static __always_inline int hf_msg_start(struct hf_conn *c, struct hf_stream *st, int d, int kind,
					struct hf_scratch *sc, __u32 n, __u64 now)
{
	st->msg_bytes = 0;
	st->has_clen = 0;
	st->chunked = 0;
	st->win = 0;
	if (hf_req_stream(c, d)) {
		if (kind != HF_KIND_REQ)
			return 0;
		st->slot = HF_QUEUE;
		if (c->qlen >= HF_QUEUE) {
			hf_count(HF_STAT_PIPELINE_FULL);
			return 1;
		}
		__u32 slot = (c->qhead + c->qlen) % HF_QUEUE;
		struct hf_req *r = &c->q[slot];

		c->qlen++;
		st->slot = slot;
		r->last_ns = 0;
		r->bytes = 0;
		r->head = *(__u32 *)sc->buf == 0x44414548;
		r->flags = 0;
		r->req_len = n < HF_REQ_LEN ? n : HF_REQ_LEN;
		r->host_len = 0;
		__builtin_memcpy(r->req, sc->buf, HF_REQ_LEN);
		return 1;
	}
	if (kind != HF_KIND_RESP)
		return 0;
	if (st->mode == HF_M_LOST) {
		/* The responses missed answered every request but the last (a client that waits for each
		 * answer): dropped, so that this one is not paired with an older request. */
		__u8 drop = c->qlen > 1 ? c->qlen - 1 : 0;

		if (drop) {
			c->qhead = (c->qhead + drop) % HF_QUEUE;
			c->qlen = 1;
			hf_count_n(HF_STAT_LOST, drop);
		}
		c->resp_first_ns = 0;
		c->resp_bytes = 0;
		c->answered = 0;
	}
	c->status = (sc->buf[9] - '0') * 100 + (sc->buf[10] - '0') * 10 + (sc->buf[11] - '0');
	st->tracked = c->qlen > 0;
	if (!st->tracked)
		return 1; /* answers a request sent before we saw the connection: framed, not reported */
	if (c->status >= 200 && !c->resp_first_ns)
		c->resp_first_ns = now;
	return 1;
}

/* The exchange at the queue's head is complete: report it and start on the next. tls, a constant: the caller
 * is a uprobe program (hf_scratch_get). */
static __always_inline void hf_complete(struct hf_conn *c, const int tls)
{
	hf_emit(c, &c->q[c->qhead & (HF_QUEUE - 1)], tls);
	c->qhead = (c->qhead + 1) % HF_QUEUE;
	c->qlen--;
	c->resp_first_ns = 0;
	c->resp_bytes = 0;
	c->answered = 0;
}

/* The message of stream d ended. A final response completes the exchange at the queue's head, once
 * its request has ended too (a server may answer before reading the body: nginx's `return`). */
static __always_inline void hf_msg_end(struct hf_conn *c, struct hf_stream *st, int d, __u64 now,
				       __u8 *verdict, const int tls)
{
	st->mode = HF_M_START;
	if (hf_req_stream(c, d)) {
		if (st->slot < HF_QUEUE) {
			struct hf_req *r = &c->q[st->slot & (HF_QUEUE - 1)];

			r->bytes = st->msg_bytes;
			r->last_ns = now;
			if (c->answered && c->qlen && st->slot == c->qhead)
				hf_complete(c, tls);
		}
		return;
	}
	if (!st->tracked || !c->qlen)
		return;
	c->resp_bytes += st->msg_bytes;
	if (c->status >= 100 && c->status < 200 && c->status != 101)
		return; /* interim: the final response follows */
	if (c->status == 101 && verdict)
		*verdict = HF_V_OTHER; /* switched protocols: no more HTTP/1.x on this connection */
	if (!c->q[c->qhead & (HF_QUEUE - 1)].last_ns) {
		c->answered = 1;
		return;
	}
	hf_complete(c, tls);
}

/* The headers of stream d's message ended: choose how its body ends. */
static __always_inline void hf_headers_end(struct hf_conn *c, struct hf_stream *st, int d, __u64 now,
					   __u8 *verdict, const int tls)
{
	int req = hf_req_stream(c, d);
	int no_body = 0;

	if (!req) {
		__u16 s = c->status;

		no_body = s < 200 || s == 204 || s == 304 ||
			  (st->tracked && c->qlen && c->q[c->qhead & (HF_QUEUE - 1)].head);
	}
	if (no_body || (!st->chunked && st->has_clen && st->clen == 0) ||
	    (req && !st->chunked && !st->has_clen)) {
		hf_msg_end(c, st, d, now, verdict, tls);
	} else if (st->chunked) {
		st->mode = HF_M_CHUNK;
		st->clen = 0;
	} else if (st->has_clen) {
		st->mode = HF_M_BODY;
		st->left = st->clen;
	} else {
		st->mode = HF_M_EOF; /* a response delimited by the connection's end */
	}
}

/* Do the n bytes at off end with the last chunk of a body, "0" CRLF CRLF (no trailer), on its own or after
 * the previous chunk's CRLF? A guess, made only past a gap: a chunk's data may end so too. */
static __always_inline int hf_ends_last_chunk(struct __sk_buff *skb, __u32 off, __u32 n)
{
	char b[6] = {'\n'};

	if (n < 5 || bpf_skb_load_bytes(skb, off + n - 5, b + 1, 5))
		return 0;
	if (n > 5 && bpf_skb_load_bytes(skb, off + n - 6, b, 1))
		return 0;
	return b[0] == '\n' && b[1] == '0' && b[2] == '\r' && b[3] == '\n' && b[4] == '\r' && b[5] == '\n';
}

/* Parses len new bytes of stream d (from the packet at off, or the user buffer ubuf of a TLS call: tls, a
 * constant). */
static __always_inline void hf_data(struct hf_conn *c, int d, struct __sk_buff *skb, __u32 off,
				    const char *ubuf, __u32 len, __u64 now, __u8 *verdict, const int tls)
{
	struct hf_scratch *sc = hf_scratch_get(tls);
	struct hf_stream *st = &c->s[d & 1];
	__u32 pos = 0;

	if (!sc)
		return;
	for (int step = 0; step < HF_STEPS; step++) {
		if (pos >= len)
			return;
		__u32 rest = len - pos;
		__u8 mode = st->mode;

		if (mode == HF_M_BODY || mode == HF_M_CHUNK_DATA) {
			__u64 k = st->left < rest ? st->left : rest;

			st->left -= k;
			st->msg_bytes += k;
			pos += k;
			if (st->left)
				continue;
			if (mode == HF_M_BODY) {
				hf_msg_end(c, st, d, now, verdict, tls);
				continue;
			}
			/* The next chunk's size line, in this same step: a train of chunks takes one step each. */
			st->mode = mode = HF_M_CHUNK;
			st->clen = 0;
			if (pos >= len)
				return;
			rest = len - pos;
		}
		if (mode == HF_M_EOF) {
			st->msg_bytes += rest;
			return;
		}
		/* A header line cut by the last write is scanned again whole, in front of the new bytes; so is, in
		 * TLS calls (not packets: the cgroup_skb programs are near the verifier's limit), a message's start
		 * cut short (Go's net/http server reads a keep-alive request's first byte alone). */
		int start_carry = tls && mode == HF_M_START;
		__u32 at = (mode == HF_M_HEAD || mode == HF_M_TRAILER || start_carry) && pos == 0 ? st->carry_len : 0;
		__u32 carried = 0; /* bytes of a cut message start, counted in the message now */

		if (at)
			__builtin_memcpy(sc->buf, st->carry, HF_LOOK);
		st->carry_len = 0;
		__u32 n = hf_load(sc, at, skb, off, ubuf, pos, len);

		if (!n)
			return;
		if (mode == HF_M_START || mode == HF_M_LOST) {
			__u32 have = start_carry ? at + n : n;
			int kind = hf_classify(sc->buf, have);

			if (mode == HF_M_LOST && pos) /* resynchronise only where a segment or call starts */
				return;
			if (!kind && start_carry && have < HF_LOOK && pos + n >= len) {
				/* Too short to say: kept for the next write or read of this stream. */
				__builtin_memcpy(st->carry, sc->buf, HF_LOOK);
				st->carry_len = have;
				return;
			}
			if (start_carry)
				carried = at;
			if (!kind || !hf_msg_start(c, st, d, kind, sc, have, now)) {
				if (mode == HF_M_START)
					hf_count(HF_STAT_DESYNC);
				st->mode = HF_M_LOST;
				return;
			}
			st->mode = mode = HF_M_HEAD;
		}
		if (mode == HF_M_CHUNK) {
			sc->clen = st->clen;
			int done = tls ? hf_chunk_line_tls(n) : hf_chunk_line(n);
			__u32 used = sc->consumed;

			st->msg_bytes += used;
			pos += used;
			st->clen = sc->clen;
			if (!done)
				continue;
			if (st->clen == 0) {
				st->mode = HF_M_TRAILER;
				st->win = 0x0d0a; /* as if a line just ended: an empty line ends the trailer */
			} else {
				st->mode = HF_M_CHUNK_DATA;
				st->left = st->clen + 2; /* the data and its CRLF */
			}
			continue;
		}
		/* HF_M_HEAD or HF_M_TRAILER: scan for the empty line. */
		sc->win = st->win;
		sc->has_clen = st->has_clen;
		sc->chunked = st->chunked;
		sc->clen = st->clen;
		int ended = tls ? hf_scan_tls(at + n, pos + n < len) : hf_scan(at + n, pos + n < len);
		__u32 used = sc->consumed > at ? sc->consumed - at : 0;

		st->win = sc->win;
		if (sc->carry_at <= HF_WIN + HF_LOOK) {
			__u32 ca = sc->carry_at;

			st->carry_len = at + n - ca;
			__builtin_memcpy(st->carry, sc->buf + HF_POS(ca), HF_LOOK);
			st->win = sc->win_ls;
		}
		if (st->mode == HF_M_HEAD) {
			st->has_clen = sc->has_clen;
			st->chunked = sc->chunked;
			st->clen = sc->clen;
			if (hf_req_stream(c, d) && st->slot < HF_QUEUE) {
				struct hf_req *r = &c->q[st->slot & (HF_QUEUE - 1)];

				/* The request line did not end in its first write: only its start is kept. */
				if (st->msg_bytes == 0 && sc->first_nl == HF_NONE && pos + n >= len)
					r->flags |= HF_F_REQ_SPLIT;
				/* Only the request line is reported: the record carries no more of it. */
				if (st->msg_bytes == 0 && sc->first_nl < r->req_len)
					r->req_len = sc->first_nl + 1;
				__u32 hp = sc->host_pos;

				if (hp <= HF_WIN + HF_LOOK) {
					__u32 hl = sc->host_end - hp;

					r->host_len = hl < HF_HOST_LEN ? hl : HF_HOST_LEN;
					__builtin_memcpy(r->host, sc->buf + HF_POS(hp), HF_HOST_LEN);
				}
			}
		}
		st->msg_bytes += used + carried;
		pos += used;
		if (!ended)
			continue;
		if (st->mode == HF_M_TRAILER)
			hf_msg_end(c, st, d, now, verdict, tls);
		else
			hf_headers_end(c, st, d, now, verdict, tls);
	}
	if (pos < len) {
		/* More messages in one segment than steps: lose track until a segment starts a message. */
		hf_count(HF_STAT_DESYNC);
		st->mode = HF_M_LOST;
	}
}

/* The connection is over (FIN or RST seen, or the SSL session freed): a body delimited by the end ends,
 * and requests still waiting will get no answer. */
static __always_inline void hf_close(struct hf_conn *c, __u64 now, const int tls)
{
	for (int d = 0; d < 2; d++) {
		struct hf_stream *st = &c->s[d];

		if (st->mode == HF_M_EOF)
			hf_msg_end(c, st, d, now, NULL, tls);
	}
	if (c->answered && c->qlen) { /* answered, its request cut short: it counts what was sent */
		struct hf_stream *rs = &c->s[c->role == HF_ROLE_CLIENT ? HF_OUT : HF_IN];

		if (rs->slot == c->qhead)
			c->q[c->qhead & (HF_QUEUE - 1)].bytes = rs->msg_bytes;
		hf_complete(c, tls);
	}
	for (int i = 0; i < HF_QUEUE; i++) {
		if (i >= c->qlen)
			break;
		hf_count(HF_STAT_UNANSWERED);
	}
	c->qlen = 0;
}

#define HF_ROLE_OTHER 3     /* a TLS session that does not carry HTTP/1.x */
#define HF_ROLE_H2_CLIENT 4 /* HTTP/2 over TLS (hf_h2): we sent the connection preface */
#define HF_ROLE_H2_SERVER 5 /* HTTP/2 over TLS: we received it */

/* Read-only zeroes to create hf_tls entries from (struct hf_conn does not fit on the BPF stack). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hf_conn);
} hf_zero SEC(".maps");

/* The first message of a connection says which side we are. */
static __always_inline __u8 hf_role(int kind, int d)
{
	if (kind == HF_KIND_REQ)
		return d == HF_OUT ? HF_ROLE_CLIENT : HF_ROLE_SERVER;
	if (kind == HF_KIND_RESP)
		return d == HF_IN ? HF_ROLE_CLIENT : HF_ROLE_SERVER;
	return 0;
}

/* Tuple and namespace of the connection a packet belongs to. */
static __always_inline void hf_tuple(struct hf_conn *c, const struct pkt *p, const struct tcphdr *th, int egress,
				     struct tcp_sock *tp)
{
	c->t.family = p->family;
	c->t.proto = IPPROTO_TCP;
	__builtin_memcpy(c->t.saddr, egress ? p->saddr : p->daddr, 16);
	__builtin_memcpy(c->t.daddr, egress ? p->daddr : p->saddr, 16);
	c->t.sport = bpf_ntohs(egress ? th->source : th->dest);
	c->t.dport = bpf_ntohs(egress ? th->dest : th->source);
	if (tp)
		c->netns = BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.__sk_common.skc_net.net, ns.inum);
}

/* Is this packet sent by a syscall of the socket's owner? Transmits from softirq (ACK clocking,
 * retransmits) happen only while no process holds the socket lock. */
static __always_inline int hf_owner_sending(struct tcp_sock *tp)
{
	return tp && BPF_CORE_READ(tp, inet_conn.icsk_inet.sk.sk_lock.owned);
}

static __always_inline struct hf_conn *hf_tls_conn(__u64 id, __u64 ssl, int create)
{
	struct hf_tls_key k = {.tgid = id >> 32, .ssl = ssl};
	struct hf_conn *c = bpf_map_lookup_elem(&hf_tls, &k);
	__u32 zero = 0;

	if (c || !create)
		return c;
	struct hf_conn *z = bpf_map_lookup_elem(&hf_zero, &zero);

	/* Two threads may make it at once (Go's server writes and reads a new session in two goroutines): the
	 * one whose update fails takes the other's. */
	if (z)
		bpf_map_update_elem(&hf_tls, &k, z, BPF_NOEXIST);
	c = bpf_map_lookup_elem(&hf_tls, &k);
	if (!c)
		hf_count(HF_STAT_CONN_FULL);
	return c;
}

/* The session the thread id (tgid << 32 | pid) is inside an SSL call of, to be tied to the connection
 * cookie: NULL if it is in no call, or the session is tied already (*tied set) or cannot be followed.
 * The caller fills in the connection's tuple. */
static __always_inline struct hf_conn *hf_tls_untied(__u64 id, __u64 cookie, int *tied)
{
	__u32 tid = id;
	struct hf_call *call = bpf_map_lookup_elem(&hf_calls, &tid);

	if (!call)
		return NULL;
	__u64 ssl = call->ssl;
	struct hf_conn *c = hf_tls_conn(id, ssl, 1);

	if (!c)
		return NULL;
	if (c->cookie == cookie) {
		*tied = 1;
		return NULL;
	}
	if (c->cookie) {
		/* The SSL * now serves another connection (its SSL_free was not seen): start afresh. */
		struct hf_tls_key k = {.tgid = id >> 32, .ssl = ssl};

		bpf_map_delete_elem(&hf_tls, &k);
		c = hf_tls_conn(id, ssl, 1);
		if (!c)
			return NULL;
	}
	c->cookie = cookie;
	return c;
}

/* A packet sent inside an SSL call of this thread belongs to that session: note its connection. Returns
 * whether the socket is now tied to a session. Kernels without the socket send/receive tracepoints tie
 * only here: a write that TCP holds back (Nagle, corking) leaves from softirq and ties nothing. */
static __always_inline int hf_tls_tie(__u64 cookie, const struct pkt *p, const struct tcphdr *th,
				      struct tcp_sock *tp)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u64 id = (__u64)BPF_CORE_READ(task, tgid) << 32 | BPF_CORE_READ(task, pid);
	int tied = 0;
	struct hf_conn *c = hf_tls_untied(id, cookie, &tied);

	if (c)
		hf_tuple(c, p, th, 1, tp);
	return c || tied;
}

/* Linux 6.3+: a TCP send or receive, in process context. Inside an SSL call of this thread, the socket
 * is the session's: tied here, before any packet of the call. An SSL server that reads the request first
 * (Python's ssl, after a handshake in another thread) has its response held back by Nagle until the client's
 * delayed ACK, sent from softirq, and the packet path would not tie its first exchange. */
static __always_inline void hf_tls_tie_sock(struct sock *sk)
{
	if (!tls_enabled)
		return;
	__u8 *v = bpf_sk_storage_get(&hf_verdict, sk, 0, 0);

	if (!v || *v != HF_V_TLS)
		return;
	__u64 cookie = bpf_get_socket_cookie(sk);
	int tied = 0;
	struct hf_conn *c = hf_tls_untied(bpf_get_current_pid_tgid(), cookie, &tied);

	if (c) {
		sock_tuple_btf(sk, &c->t, &c->netns);
		c->t.proto = IPPROTO_TCP;
	}
	if (c || tied)
		*v = HF_V_OTHER; /* its packets cost one lookup from now on */
}

/* The same from the raw tracepoints (a kernel that refuses tp_btf): no socket storage through a raw
 * pointer, so every TCP send and receive asks whether its thread is inside an SSL call, and the socket's
 * packets go on asking until one leaves inside a call (hf_tls_tie). */
static __always_inline void hf_tls_tie_sock_raw(struct sock *sk)
{
	if (!tls_enabled)
		return;
	__u64 cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	int tied = 0;

	if (!cookie)
		return; /* made at the socket's first packet: until then its packets tie */
	struct hf_conn *c = hf_tls_untied(bpf_get_current_pid_tgid(), cookie, &tied);

	if (c) {
		sock_tuple(sk, &c->t, &c->netns);
		c->t.proto = IPPROTO_TCP;
	}
}

/* A segment arrived ahead of gap bytes (loopback reorders when the sender moves between CPUs; the
 * late bytes are skipped when they come, by sequence number). Inside a body whose length is known the
 * gap is body too: returns 1 after counting it. Elsewhere framing needs those bytes: returns 0. */
static __always_inline int hf_skip_gap(struct hf_conn *c, struct hf_stream *st, int d, __u32 gap, __u64 now,
				       __u8 *verdict)
{
	if (st->mode == HF_M_EOF || st->mode == HF_M_CHUNK_LOST) {
		st->msg_bytes += gap;
		return 1;
	}
	if (st->mode == HF_M_CHUNK || (st->mode == HF_M_CHUNK_DATA && st->left < gap)) {
		/* Chunk framing is in the missing bytes: count by sequence and look for the last chunk. */
		hf_count(HF_STAT_DESYNC);
		st->mode = HF_M_CHUNK_LOST;
		st->msg_bytes += gap;
		return 1;
	}
	if ((st->mode != HF_M_BODY && st->mode != HF_M_CHUNK_DATA) || st->left < gap)
		return 0;
	st->left -= gap;
	st->msg_bytes += gap;
	if (st->left)
		return 1;
	if (st->mode == HF_M_BODY) {
		hf_msg_end(c, st, d, now, verdict, 0);
	} else {
		st->mode = HF_M_CHUNK;
		st->clen = 0;
	}
	return 1;
}

/* Plain HTTP in TCP segments. Retransmitted bytes are skipped by sequence number. */
static __always_inline void hf_skb(struct __sk_buff *skb, int egress, const struct pkt *p, const struct tcphdr *thp)
{
	struct tcphdr th = *thp;
	__u32 off = p->l4off + th.doff * 4;
	__u32 len = skb->len > off ? skb->len - off : 0;

	if (!len && !th.fin && !th.rst)
		return; /* a bare ACK */
	struct bpf_sock *bsk = skb->sk;

	if (!bsk)
		return;
	bsk = bpf_sk_fullsock(bsk);
	if (!bsk)
		return;
	__u8 *v = bpf_sk_storage_get(&hf_verdict, bsk, 0, 0);

	if (v && *v == HF_V_OTHER)
		return;
	int d = egress ? HF_OUT : HF_IN;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock(bsk);
	struct hf_conn *c = NULL;

	if (!v) {
		/* The first payload decides what the socket is. */
		struct hf_scratch *sc = hf_scratch_get(0);

		if (!len || !sc)
			return;
		__u32 n = hf_load(sc, 0, skb, off, NULL, 0, len);
		int kind = n && http_enabled ? hf_classify(sc->buf, n) : 0;

		v = bpf_sk_storage_get(&hf_verdict, bsk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (!v)
			return;
		*v = kind ? HF_V_HTTP : tls_enabled && n && sc->buf[0] == 0x16 ? HF_V_TLS : HF_V_OTHER;
		if (kind) {
			c = bpf_sk_storage_get(&hf_conns, bsk, 0, BPF_SK_STORAGE_GET_F_CREATE);
			if (!c) {
				hf_count(HF_STAT_CONN_FULL);
				*v = HF_V_OTHER;
				return;
			}
			c->role = hf_role(kind, d);
			c->cookie = bpf_get_socket_cookie(skb);
			hf_tuple(c, p, &th, egress, tp);
		}
	}
	if (*v == HF_V_TLS) {
		/* Until its session is tied (then it costs one lookup per segment, as any other socket). */
		if (egress && len && hf_owner_sending(tp) && hf_tls_tie(bpf_get_socket_cookie(skb), p, &th, tp))
			*v = HF_V_OTHER;
		return;
	}
	if (*v != HF_V_HTTP)
		return;
	__u64 now = bpf_ktime_get_ns();

	if (!c) {
		c = bpf_sk_storage_get(&hf_conns, bsk, 0, 0);
		if (!c)
			return;
	}
	if (egress && !c->pid && hf_owner_sending(tp)) {
		/* Through the task: cgroup_skb programs may call bpf_get_current_pid_tgid only from Linux 6.x. */
		struct task_struct *task = (struct task_struct *)bpf_get_current_task();

		c->pid = BPF_CORE_READ(task, tgid);
		c->mntns = task_mntns(task);
		bpf_probe_read_kernel_str(c->comm, sizeof(c->comm), BPF_CORE_READ(task, group_leader, comm));
	}
	if (len) {
		struct hf_stream *st = &c->s[d];
		__u32 seq = bpf_ntohl(th.seq);
		__u32 skip = 0;

		if (st->seq_ok) {
			__s32 diff = seq - st->next_seq;

			if (diff < 0) {
				skip = -diff;
			} else if (diff > 0 && !hf_skip_gap(c, st, d, diff, now, v) && st->mode != HF_M_LOST) {
				hf_count(HF_STAT_DESYNC); /* bytes we have not seen, where framing needs them */
				st->mode = HF_M_LOST;
			}
		}
		if (skip < len) {
			st->next_seq = seq + len;
			st->seq_ok = 1;
			if (st->mode == HF_M_CHUNK_LOST) {
				st->msg_bytes += len - skip;
				if (hf_ends_last_chunk(skb, off + skip, len - skip))
					hf_msg_end(c, st, d, now, v, 0);
			} else {
				hf_data(c, d, skb, off + skip, NULL, len - skip, now, v, 0);
			}
		}
	}
	/* The side that answers closed, or the connection was reset: nothing more will be answered. */
	if (th.rst || (th.fin && !hf_req_stream(c, d)))
		hf_close(c, now, 0);
}

/* Go's crypto/tls: the connection's socket, from the *tls.Conn (Go 1.18+; offsets set by the collector, which
 * checks them against Go's own debug information in its tests). tls.Conn.conn is a net.Conn interface
 * (type word, data word); its *net.TCPConn points at a netFD, whose poll.FD holds the descriptor. */
const volatile __u32 go_conn_iface_off = 8;  /* tls.Conn.conn's data word */
const volatile __u32 go_netfd_sysfd_off = 16; /* netFD.pfd.Sysfd */

#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define SOCK_STREAM 1

/* Ties a Go TLS connection to its socket, read through the calling process's descriptor table. A net.Conn
 * that is not a TCP socket (a pipe, a wrapped conn) ties nothing: its exchanges have no address. */
static __always_inline void hf_go_tie(struct hf_conn *c, __u64 conn)
{
	__u64 tcp = 0, netfd = 0;
	__s64 fd = -1;

	if (bpf_probe_read_user(&tcp, sizeof(tcp), (void *)(conn + go_conn_iface_off)) || !tcp ||
	    bpf_probe_read_user(&netfd, sizeof(netfd), (void *)tcp) || !netfd ||
	    bpf_probe_read_user(&fd, sizeof(fd), (void *)(netfd + go_netfd_sysfd_off)))
		return;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);

	if (fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *file = NULL;

	if (bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]) || !file ||
	    (BPF_CORE_READ(file, f_inode, i_mode) & S_IFMT) != S_IFSOCK)
		return;
	struct socket *sock = BPF_CORE_READ(file, private_data);
	struct sock *sk = BPF_CORE_READ(sock, sk);
	__u16 family = BPF_CORE_READ(sk, __sk_common.skc_family);

	if (!sk || BPF_CORE_READ(sock, type) != SOCK_STREAM || (family != AF_INET && family != AF_INET6))
		return;
	sock_tuple(sk, &c->t, &c->netns);
	c->t.proto = IPPROTO_TCP;
	c->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (!c->cookie)
		c->cookie = (__u64)sk; /* no cookie made yet: any non-zero value says tied */
}

/* Set by the collector: hf_ssl_write_ret and hf_ssl_read_ret by direction (HF_OUT, HF_IN), to which a Go
 * call is handed over; and hf_h2 (HF_EXIT_H2), to which a call of an HTTP/2 session is. */
#define HF_EXIT_H2 2
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u32);
} hf_tls_exits SEC(".maps");

/* The HTTP/2 connection preface, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", the first bytes a client sends. */
#define HF_H2_PREFACE_LEN 24
static __always_inline int hf_h2_preface(const char *b, __u32 n)
{
	return n >= HF_H2_PREFACE_LEN && *(__u64 *)b == 0x5448202a20495250ULL &&
	       *(__u64 *)(b + 8) == 0x0a0d302e322f5054ULL && *(__u64 *)(b + 16) == 0x0a0d0a0d4d530a0dULL;
}

/* Takes the call thread tid is returning from out of hf_calls: 0 if it is in none. */
static __always_inline int hf_call_take(__u32 tid, struct hf_call *cl)
{
	struct hf_call *call = bpf_map_lookup_elem(&hf_calls, &tid);

	if (!call)
		return 0;
	*cl = *call;
	bpf_map_delete_elem(&hf_calls, &tid);
	return 1;
}

/* HTTP/2: hf_h2 walks a call's bytes frame by frame with the direction's hf_stream (mode HF_H2_M_*, left: payload
 * bytes still to come, carry: a frame header cut by the end of a call) and copies them to hf_h2_events, DATA
 * payloads left out: user space decodes the headers (HPACK) and pairs the streams. */
#define HF_H2_M_HEADER 0 /* the next byte starts a frame header */
#define HF_H2_M_COPY 1   /* a payload to copy (every frame type but DATA) */
#define HF_H2_M_SKIP 2   /* a payload to skip (DATA, the preface) */
#define HF_H2_M_PAD 3    /* a padded DATA frame: its first byte, the pad length, is copied */
#define HF_H2_M_LOST 4   /* the frame boundaries are lost: nothing more is sent */
#define HF_H2_STEPS 48   /* frame headers or payload pieces per program run; a run tail-calls the next */
#define HF_H2_FRAME_MAX (1 << 24) /* a frame's length is 24 bits */
#define HF_H2_EVENTS_BYTES (1 << 20)

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, HF_H2_EVENTS_BYTES);
} hf_h2_events SEC(".maps");

/* A record being filled, with room past its data so that a copy of up to HF_H2_CHUNK bytes at any fill below
 * HF_H2_CHUNK stays inside (the verifier checks the two bounds apart). */
struct hf_h2_buf {
	struct hf_h2_rec r;
	char room[HF_H2_CHUNK];
};

/* Per thread, as hf_thread_scratch (hf_h2 is a uprobe program); the per-CPU one is what a thread's is made from. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HF_H2_THREADS_MAX);
	__type(key, __u32); /* thread id */
	__type(value, struct hf_h2_buf);
} hf_thread_h2 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct hf_h2_buf);
} hf_h2_buf SEC(".maps");

const struct hf_h2_rec *hf_h2_rec_btf __attribute__((unused));
BTF_ENUM(hf_h2_flag);

/* Sends the record's fill bytes of data (none: a close or a loss), numbered in the direction's sequence. */
static __always_inline void hf_h2_send(struct hf_h2_buf *b, struct hf_conn *c, __u64 ssl, int d, __u32 fill,
				       __u8 flags)
{
	struct hf_h2_rec *r = &b->r;

	r->t = c->t;
	r->cookie = c->cookie;
	r->ssl = ssl;
	r->ts_ns = bpf_ktime_get_ns();
	r->pid = c->pid;
	r->netns = c->netns;
	__builtin_memcpy(r->comm, c->comm, sizeof(r->comm));
	r->mntns = c->mntns;
	r->seq = c->s[d & 1].next_seq++;
	r->dir = d;
	r->flags = flags | (c->role == HF_ROLE_H2_CLIENT ? HF_H2_CLIENT : 0);
	if (fill > HF_H2_CHUNK)
		fill = HF_H2_CHUNK;
	r->n = fill;
	if (bpf_ringbuf_output(&hf_h2_events, r, __builtin_offsetof(struct hf_h2_rec, data) + fill, BPF_RB_NO_WAKEUP))
		hf_count(HF_STAT_H2_LOST);
}

/* The calling thread's record, made if it has none. */
static __always_inline struct hf_h2_buf *hf_h2_buf_get(void)
{
	__u32 tid = bpf_get_current_pid_tgid(), zero = 0;
	struct hf_h2_buf *b = bpf_map_lookup_elem(&hf_thread_h2, &tid);

	if (b)
		return b;
	b = bpf_map_lookup_elem(&hf_h2_buf, &zero);
	if (!b || bpf_map_update_elem(&hf_thread_h2, &tid, b, BPF_NOEXIST)) {
		hf_count(HF_STAT_SCRATCH_FULL);
		return NULL;
	}
	return bpf_map_lookup_elem(&hf_thread_h2, &tid);
}

/* The session ends: user space forgets it. */
static __always_inline void hf_h2_close(struct hf_conn *c, __u64 ssl)
{
	struct hf_h2_buf *b = hf_h2_buf_get();

	if (b)
		hf_h2_send(b, c, ssl, HF_OUT, 0, HF_H2_CLOSE);
}

/* One HTTP/2 call, handed over by hf_ssl_exit in hf_calls (len_ptr holds the direction), or the rest of one by
 * the run before (a call of more frames than a run's steps: up to 33 runs). */
SEC("uprobe")
int hf_h2(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = id;
	struct hf_call cl;

	if (!hf_call_take(tid, &cl))
		return 0;
	int d = cl.len_ptr & 1;
	struct hf_conn *c = hf_tls_conn(id, cl.ssl, 0);
	struct hf_h2_buf *b = hf_h2_buf_get();

	if (!c || !b)
		return 0;
	struct hf_stream *st = &c->s[d];
	const char *ubuf = (const char *)cl.buf;
	__u64 len = cl.len, pos = 0;
	__u32 fill = 0;

	if (!st->h2_begun) {
		/* The stream the client writes begins with the preface, which is skipped. Set here, by the
		 * direction's own thread: set where the role is decided, a thread deciding from the other
		 * direction could set it again after this one had walked the preface (seen on 6.1-rt). */
		st->h2_begun = 1;
		if ((c->role == HF_ROLE_H2_CLIENT) == (d == HF_OUT)) {
			st->left = HF_H2_PREFACE_LEN;
			st->mode = HF_H2_M_SKIP;
		}
	}
	for (int step = 0; step < HF_H2_STEPS; step++) {
		if (pos >= len || st->mode == HF_H2_M_LOST)
			break;
		__u64 rest = len - pos;

		if (st->mode == HF_H2_M_SKIP) {
			__u64 k = st->left < rest ? st->left : rest;

			st->left -= k;
			pos += k;
			if (!st->left)
				st->mode = HF_H2_M_HEADER;
			continue;
		}
		if (fill >= HF_H2_CHUNK - 16) { /* room for a frame header at least */
			hf_h2_send(b, c, cl.ssl, d, fill, 0);
			fill = 0;
		}
		asm volatile("" : "+r"(fill));
		fill &= HF_H2_CHUNK - 1;
		if (st->mode == HF_H2_M_COPY || st->mode == HF_H2_M_PAD) {
			__u64 k = st->left < rest ? st->left : rest;

			if (st->mode == HF_H2_M_PAD)
				k = 1;
			if (k > HF_H2_CHUNK - fill)
				k = HF_H2_CHUNK - fill;
			asm volatile("" : "+r"(k)); /* the compiler must not drop the bound the verifier needs */
			if (k > HF_H2_CHUNK)
				k = HF_H2_CHUNK;
			if (bpf_probe_read_user(b->r.data + fill, k, ubuf + pos))
				goto lost;
			fill += k;
			pos += k;
			st->left -= k;
			if (st->mode == HF_H2_M_PAD)
				st->mode = HF_H2_M_SKIP;
			if (!st->left)
				st->mode = HF_H2_M_HEADER;
			continue;
		}
		/* A frame header: its start may be carried from the last call. */
		__u32 have = st->carry_len & 15;
		__u64 k = 9 - have;

		if (have >= 9)
			goto lost;
		if (k > rest)
			k = rest;
		asm volatile("" : "+r"(k));
		k &= 15;
		if (bpf_probe_read_user(st->carry + have, k, ubuf + pos))
			goto lost;
		pos += k;
		have += k;
		st->carry_len = have;
		if (have < 9)
			break;
		st->carry_len = 0;
		__builtin_memcpy(b->r.data + fill, st->carry, 9);
		fill += 9;
		__u64 flen = (__u8)st->carry[0] << 16 | (__u8)st->carry[1] << 8 | (__u8)st->carry[2];
		__u8 type = st->carry[3], flags = st->carry[4];

		st->left = flen;
		if (!flen)
			continue;
		if (type != 0) /* not DATA */
			st->mode = HF_H2_M_COPY;
		else
			st->mode = flags & 0x8 ? HF_H2_M_PAD : HF_H2_M_SKIP; /* PADDED */
	}
	if (pos < len && st->mode != HF_H2_M_LOST) { /* more frames than steps: the next run goes on */
		struct hf_call next = {.ssl = cl.ssl, .buf = cl.buf + pos, .len_ptr = d, .len = len - pos};

		if (fill)
			hf_h2_send(b, c, cl.ssl, d, fill, 0);
		bpf_map_update_elem(&hf_calls, &tid, &next, BPF_ANY);
		bpf_tail_call(ctx, &hf_tls_exits, HF_EXIT_H2);
		bpf_map_delete_elem(&hf_calls, &tid);
		fill = 0;
		goto lost; /* the tail call limit */
	}
	if (fill)
		hf_h2_send(b, c, cl.ssl, d, fill, 0);
	return 0;
lost:
	hf_count(HF_STAT_DESYNC);
	st->mode = HF_H2_M_LOST;
	hf_h2_send(b, c, cl.ssl, d, fill, HF_H2_LOST);
	return 0;
}

/* A SETTINGS frame on stream 0: what a server sends first. */
static __always_inline int hf_h2_settings(const char *b, __u32 n)
{
	return n >= 9 && b[0] == 0 && b[3] == 4 && b[4] == 0 && *(__u32 *)(b + 5) == 0 &&
	       ((__u8)b[1] << 8 | (__u8)b[2]) % 6 == 0;
}

/* OpenSSL: entry probes keep the arguments for the return probe, which parses what moved. */
static __always_inline int hf_ssl_enter(void *ssl, const void *buf, void *len_ptr)
{
	if (floor_only)
		return 0;
	hf_count(HF_STAT_TLS_HITS);
	__u32 tid = bpf_get_current_pid_tgid();
	struct hf_call call = {.ssl = (__u64)ssl, .buf = (__u64)buf, .len_ptr = (__u64)len_ptr};

	bpf_map_update_elem(&hf_calls, &tid, &call, BPF_ANY);
	return 0;
}

static __always_inline int hf_ssl_exit(struct pt_regs *ctx, long ret, int d)
{
	if (floor_only)
		return 0;
	hf_count(HF_STAT_TLS_HITS);
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tid = id;
	struct hf_call cl;

	if (!hf_call_take(tid, &cl))
		return 0;
	__u64 n = ret, len = 0;

	if (cl.len) {
		n = cl.len;
	} else if (cl.len_ptr) { /* SSL_read_ex/SSL_write_ex: 1 on success, the size through a pointer */
		if (ret != 1 || bpf_probe_read_user(&n, sizeof(n), (void *)cl.len_ptr))
			return 0;
	} else if (ret <= 0) {
		return 0;
	}
	/* One value whatever its source: the verifier walks the parse below once, not once per source. */
	if (bpf_probe_read_kernel(&len, sizeof(len), &n) || !len || len > (1U << 30))
		return 0;
	hf_count(HF_STAT_TLS_CALLS);
	if (!hf_thread_scratch_make())
		return 0;
	struct hf_conn *c = hf_tls_conn(id, cl.ssl, 1);

	if (!c || c->role == HF_ROLE_OTHER)
		return 0;
	if (!c->role) {
		struct hf_scratch *sc = hf_scratch_get(1);

		if (!sc)
			return 0;
		__u32 n = hf_load(sc, 0, NULL, 0, (const char *)cl.buf, 0, len);
		int kind = n ? hf_classify(sc->buf, n) : 0;

		/* Another thread may be deciding from the other direction's first call at the same time: both
		 * decide the same, each in one store of the role (no thread may see a passing HF_ROLE_OTHER). */
		c->tls = 1;
		if (!kind && (hf_h2_preface(sc->buf, n) || hf_h2_settings(sc->buf, n))) {
			/* The client's preface, or the server's SETTINGS sent before it (Go's and gRPC's servers
			 * do). hf_h2 skips the preface. */
			int client = hf_h2_preface(sc->buf, n) == (d == HF_OUT);

			c->role = client ? HF_ROLE_H2_CLIENT : HF_ROLE_H2_SERVER;
		} else {
			c->role = kind ? hf_role(kind, d) : HF_ROLE_OTHER;
			if (!kind)
				return 0;
		}
	}
	if (c->pid != id >> 32) {
		c->pid = id >> 32;
		c->mntns = current_mntns();
		process_comm(c->comm, sizeof(c->comm));
	}
	if (c->role >= HF_ROLE_H2_CLIENT) { /* its frames go to user space: hf_h2 */
		struct hf_call h2 = {.ssl = cl.ssl, .buf = cl.buf, .len_ptr = d, .len = len};

		bpf_map_update_elem(&hf_calls, &tid, &h2, BPF_ANY);
		bpf_tail_call(ctx, &hf_tls_exits, HF_EXIT_H2);
		bpf_map_delete_elem(&hf_calls, &tid); /* HTTP/2 is off */
		return 0;
	}
	hf_data(c, d, NULL, 0, (const char *)cl.buf, len, bpf_ktime_get_ns(), NULL, 1);
	return 0;
}

SEC("uprobe")
int BPF_KPROBE(hf_ssl_write, void *ssl, const void *buf)
{
	return hf_ssl_enter(ssl, buf, NULL);
}

SEC("uprobe")
int BPF_KPROBE(hf_ssl_write_ex, void *ssl, const void *buf, __u64 num, void *written)
{
	return hf_ssl_enter(ssl, buf, written);
}

SEC("uprobe")
int BPF_KPROBE(hf_ssl_read, void *ssl, void *buf)
{
	return hf_ssl_enter(ssl, buf, NULL);
}

SEC("uprobe")
int BPF_KPROBE(hf_ssl_read_ex, void *ssl, void *buf, __u64 num, void *readbytes)
{
	return hf_ssl_enter(ssl, buf, readbytes);
}

SEC("uretprobe")
int BPF_KRETPROBE(hf_ssl_write_ret, long ret)
{
	return hf_ssl_exit(ctx, ret, HF_OUT);
}

SEC("uretprobe")
int BPF_KRETPROBE(hf_ssl_read_ret, long ret)
{
	return hf_ssl_exit(ctx, ret, HF_IN);
}

/* SSL_free: the session ends; nginx will hand the same address to its next connection. */
SEC("uprobe")
int BPF_KPROBE(hf_ssl_free, void *ssl)
{
	if (floor_only)
		return 0;
	hf_count(HF_STAT_TLS_HITS);
	__u64 id = bpf_get_current_pid_tgid();
	struct hf_tls_key k = {.tgid = id >> 32, .ssl = (__u64)ssl};
	struct hf_conn *c = bpf_map_lookup_elem(&hf_tls, &k);

	if (!c)
		return 0;
	if (c->role >= HF_ROLE_H2_CLIENT)
		hf_h2_close(c, k.ssl);
	else if (hf_thread_scratch_make())
		hf_close(c, bpf_ktime_get_ns(), 1);
	bpf_map_delete_elem(&hf_tls, &k);
	return 0;
}

/* Go crypto/tls, Go 1.18+ on amd64 (register ABI): the receiver, the slice's pointer and length in rax, rbx
 * and rcx past the stack check (probed there, not at the entry, which morestack can run twice for one call),
 * the count in rax at each return instruction (no uretprobe: see collector/elfsym.GoFunc), the goroutine in
 * r14 throughout. Go's HTTP client reads in one goroutine while it writes in another, so a response's read
 * can return before its request's write does: a write is parsed on its way in, before any of it is sent
 * (crypto/tls writes all of it or fails), and a read at its return. */
struct hf_go_key {
	__u32 tgid;
	__u32 pad;
	__u64 g;
};

/* A goroutine inside (*tls.Conn).Read: a goroutine that blocks returns on another thread. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, HF_CALLS_MAX);
	__type(key, struct hf_go_key);
	__type(value, struct hf_call);
} hf_go_reads SEC(".maps");

/* Hands a call of len bytes to the OpenSSL return program of direction d, which parses it as if this thread
 * were returning from SSL_write or SSL_read: one parser (a second copy would cost another half of the
 * verifier's budget, and every variant of its shape tried cost more than all of it). */
static __always_inline void hf_go_parse(__u64 id, __u64 conn, __u64 buf, __u64 len, __u32 d, struct pt_regs *ctx)
{
	__u32 tid = id;
	struct hf_call cl = {.ssl = conn, .buf = buf, .len = len};

	if (len) {
		bpf_map_update_elem(&hf_calls, &tid, &cl, BPF_ANY);
		bpf_tail_call(ctx, &hf_tls_exits, d); /* counts the hit */
		bpf_map_delete_elem(&hf_calls, &tid); /* no program there */
	}
	hf_count(HF_STAT_TLS_HITS);
}

/* The session of a *tls.Conn, tied to its socket at its first call. */
static __always_inline void hf_go_session(__u64 id, __u64 conn)
{
	struct hf_conn *c = hf_tls_conn(id, conn, 1);

	if (c && !c->cookie)
		hf_go_tie(c, conn);
}

SEC("uprobe")
int hf_go_write(struct pt_regs *ctx)
{
	if (floor_only)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();

	hf_go_session(id, ctx->ax);
	hf_go_parse(id, ctx->ax, ctx->bx, ctx->cx, HF_OUT, ctx);
	return 0;
}

SEC("uprobe")
int hf_go_read(struct pt_regs *ctx)
{
	if (floor_only)
		return 0;
	hf_count(HF_STAT_TLS_HITS);
	__u64 id = bpf_get_current_pid_tgid();
	struct hf_go_key k = {.tgid = id >> 32, .g = ctx->r14};
	struct hf_call cl = {.ssl = ctx->ax, .buf = ctx->bx};

	hf_go_session(id, cl.ssl);
	bpf_map_update_elem(&hf_go_reads, &k, &cl, BPF_ANY);
	return 0;
}

SEC("uprobe")
int hf_go_read_ret(struct pt_regs *ctx)
{
	if (floor_only)
		return 0;
	__u64 id = bpf_get_current_pid_tgid();
	struct hf_go_key k = {.tgid = id >> 32, .g = ctx->r14};
	struct hf_call *call = bpf_map_lookup_elem(&hf_go_reads, &k);

	if (!call)
		return 0;
	struct hf_call cl = *call;
	long n = ctx->ax;

	bpf_map_delete_elem(&hf_go_reads, &k);
	hf_go_parse(id, cl.ssl, cl.buf, n > 0 ? n : 0, HF_IN, ctx);
	return 0;
}

/* (*tls.Conn).Close: the connection ends; Go's allocator may hand its address to the next one. */
SEC("uprobe")
int hf_go_close(struct pt_regs *ctx)
{
	if (floor_only)
		return 0;
	hf_count(HF_STAT_TLS_HITS);
	struct hf_tls_key k = {.tgid = bpf_get_current_pid_tgid() >> 32, .ssl = ctx->ax};
	struct hf_conn *c = bpf_map_lookup_elem(&hf_tls, &k);

	if (!c)
		return 0;
	if (c->role >= HF_ROLE_H2_CLIENT)
		hf_h2_close(c, k.ssl);
	else if (hf_thread_scratch_make())
		hf_close(c, bpf_ktime_get_ns(), 1);
	bpf_map_delete_elem(&hf_tls, &k);
	return 0;
}

#endif
