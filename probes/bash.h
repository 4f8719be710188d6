/* Types shared by bash.bpf.c and collector/bash (Go mirrors name these structs). */
#ifndef BASH_H
#define BASH_H

/* Constants the Go side mirrors are enums: the object's BTF carries them (BTF_ENUM) and a test compares. */
enum bash_const {
	BASH_LINE_LEN = 1024, /* bytes of a command line captured, NUL included */
	BASH_COMM_LEN = 16,
	BASH_LINE_HEAD = 48, /* bytes of struct bash_line before line: a record's fixed part */
};

/* Indexes of the bash_stats per-CPU counters. */
enum bash_stat {
	BASH_STAT_RB_LOST = 0,   /* lines the ring buffer had no room for */
	BASH_STAT_EXEC_LOST = 1, /* bash execs the exec ring had no room for */
	BASH_STAT_MAX = 2,
};

/* The fields of a line before its bytes. */
#define BASH_LINE_HEAD_FIELDS                                                                              \
	__u64 ts_ns;    /* bpf_ktime_get_ns (CLOCK_MONOTONIC) when readline returned */                      \
	__u32 pid;      /* tgid */                                                                            \
	__u32 uid;      /* real uid, in the initial user namespace */                                         \
	__u32 len;      /* bytes of line before its NUL (at most BASH_LINE_LEN - 1) */                         \
	__u32 mntns;    /* mount namespace (the container bash runs in) */                                    \
	__u8 truncated; /* the line was longer than the capture: line holds its first len bytes */           \
	__u8 pad[7];                                                                                          \
	char comm[BASH_COMM_LEN];

/* One line an interactive bash's readline returned. A short line's record (most typed lines) ends after its
 * NUL: the ring then holds several times more of them. */
struct bash_line {
	BASH_LINE_HEAD_FIELDS
	char line[BASH_LINE_LEN];
};
_Static_assert(sizeof(struct bash_line) == 1072, "bash_line layout");
_Static_assert(__builtin_offsetof(struct bash_line, line) == BASH_LINE_HEAD, "bash_line head");

/* A process exec'd a program named bash (or sh): the collector checks its binary at once. */
struct bash_exec {
	__u32 pid;
	__u32 pad;
};

#endif
