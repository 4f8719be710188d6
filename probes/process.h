/* Types shared by process.bpf.c and collector/process (Go mirrors name these structs). */
#ifndef PROCESS_H
#define PROCESS_H

/* Constants the Go side mirrors are enums: the object's BTF carries them (BTF_ENUM) and a test compares. */
enum pr_const {
	PR_COMM_LEN = 16,
};

/* Indexes of the pr_stats per-CPU counters. */
enum pr_stat {
	PR_STAT_FULL = 0, /* processes whose counters could not be created (pr_procs full): their events are lost */
	PR_STAT_MAX = 1,
};

/* A process: its thread group id and its leader's start time (a reused pid is another process). */
struct pr_key {
	__u32 tgid;
	__u32 pad;
	__u64 start_ns; /* task->start_time of the group leader (CLOCK_MONOTONIC) */
};

/* A process's counters since it was first seen. Counters are added atomically: a process's threads fork and
 * exit on several CPUs at once. */
struct pr_counts {
	__u64 forks;            /* child processes it created */
	__u64 threads;          /* threads it created */
	__u64 execs;            /* execve calls that succeeded in it */
	__u64 thread_exits;     /* threads that exited while the process went on */
	__u32 exit_code;        /* the last thread's exit code: status << 8, or the signal */
	__u32 mntns;            /* mount namespace, the last one seen */
	__u8 exited;            /* its last thread exited: a zombie until freed */
	__u8 freed;             /* reaped and freed: nothing more will count against it */
	__u8 oom_killed;        /* it ended as the OOM killer's victim (signal->oom_mm set) */
	__u8 pad[5];
	char comm[PR_COMM_LEN]; /* the process name, the last one seen */
	/* Its resident set (file, anonymous and shared memory pages) when a SIGKILL was last delivered to it,
	 * and, set at its end, the kernfs id (the inode number) of its memory cgroup. */
	__u64 kill_rss_pages;
	__u64 memcg_id;
};
_Static_assert(sizeof(struct pr_counts) == 80, "pr_counts layout");

#endif
