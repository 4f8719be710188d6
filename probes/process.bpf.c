/* ebpf-process: what processes do, counted per process in the kernel and read once per interval: forks and
 * threads created, execs, threads and processes that exit (with the last thread's exit code), and when a
 * process is freed (until then, an exited process is a zombie). Scheduler tracepoints: process context for
 * fork, exec and exit; sched_process_free runs from an RCU callback and only marks the process. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "common/btf.bpf.h"
#include "common/floor.bpf.h"
#include "common/task.bpf.h"
#include "process.h"

#define PR_PROCS_MAX 32768 /* processes followed at once: Linux's default pid_max on small hosts */

char LICENSE[] SEC("license") = "GPL";

BTF_ENUM(pr_const);
BTF_ENUM(pr_stat);
const struct pr_key *pr_key_btf __attribute__((unused));

/* Not per CPU: one entry per process on every CPU would cost max_entries x CPUs (150 MB on 64 CPUs), and a
 * process's events are rare enough that atomic adds do not contend. Preallocated: tracing programs may not
 * allocate on older and on PREEMPT_RT kernels. The collector deletes an entry once it has read it freed. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PR_PROCS_MAX);
	__type(key, struct pr_key);
	__type(value, struct pr_counts);
} pr_procs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PR_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} pr_stats SEC(".maps");

/* Zeroes to create entries from (struct pr_counts is small, but one copy serves every program). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pr_counts);
} pr_zero SEC(".maps");

static __always_inline void pr_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&pr_stats, &idx);

	if (v)
		__sync_fetch_and_add(v, 1);
}

/* The counters of task's process, created if new (NULL if the map is full). */
static __always_inline struct pr_counts *pr_get(struct task_struct *task)
{
	struct pr_key k = {.tgid = BPF_CORE_READ(task, tgid), .start_ns = BPF_CORE_READ(task, group_leader, start_time)};
	struct pr_counts *c = bpf_map_lookup_elem(&pr_procs, &k);
	__u32 zero = 0;

	if (c)
		return c;
	c = bpf_map_lookup_elem(&pr_zero, &zero);
	if (c)
		bpf_map_update_elem(&pr_procs, &k, c, BPF_NOEXIST); /* fails if another CPU made it first: fine */
	c = bpf_map_lookup_elem(&pr_procs, &k);
	if (!c)
		pr_count(PR_STAT_FULL);
	return c;
}

/* Notes the process's name and mount namespace (an exec changes the first, setns the second). */
static __always_inline void pr_name(struct pr_counts *c, struct task_struct *task)
{
	__u32 ns = task_mntns(task);

	if (ns)
		c->mntns = ns;
	bpf_probe_read_kernel_str(c->comm, sizeof(c->comm), BPF_CORE_READ(task, group_leader, comm));
}

static __always_inline int on_fork(struct task_struct *parent, struct task_struct *child)
{
	if (floor_only)
		return 0;
	struct pr_counts *c = pr_get(parent);

	if (!c)
		return 0;
	if (BPF_CORE_READ(child, tgid) == BPF_CORE_READ(parent, tgid))
		__sync_fetch_and_add(&c->threads, 1);
	else
		__sync_fetch_and_add(&c->forks, 1);
	pr_name(c, parent);
	return 0;
}

static __always_inline int on_exec(void)
{
	if (floor_only)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct pr_counts *c = pr_get(task);

	if (!c)
		return 0;
	__sync_fetch_and_add(&c->execs, 1);
	pr_name(c, task);
	return 0;
}

/* The kernfs id of task's memory cgroup (cgroup v1 or v2), 0 without the memory controller. */
static __always_inline __u64 pr_memcg_id(struct task_struct *task)
{
	if (!bpf_core_enum_value_exists(enum cgroup_subsys_id, memory_cgrp_id))
		return 0;
	__u32 i = bpf_core_enum_value(enum cgroup_subsys_id, memory_cgrp_id);
	struct css_set *cs = BPF_CORE_READ(task, cgroups);
	struct cgroup_subsys_state *css = NULL;

	if (i >= 64 || !cs) /* the count differs between kernels; a bound for the read below */
		return 0;
	/* subsys[i]: an index the program computes, so the address by hand */
	bpf_probe_read_kernel(&css, sizeof(css), (void *)cs + bpf_core_field_offset(struct css_set, subsys) + i * sizeof(css));
	return css ? BPF_CORE_READ(css, cgroup, kn, id) : 0;
}

/* Before 6.2, mm->rss_stat was a struct of atomic counters; since, an array of percpu_counters. */
struct mm_rss_stat___pre62 {
	atomic_long_t count[4];
} __attribute__((preserve_access_index));
struct mm_struct___pre62 {
	struct mm_rss_stat___pre62 rss_stat;
} __attribute__((preserve_access_index));

/* Resident pages of mm, as the OOM killer prints them: file (MM_FILEPAGES 0) + anonymous (1) + shared
 * memory (3); each counter as its last fold (threads' caches or CPUs' deltas not yet added). */
static __always_inline __u64 pr_mm_rss(struct mm_struct *mm)
{
	long n;

	if (bpf_core_type_exists(struct mm_rss_stat___pre62)) {
		struct mm_struct___pre62 *o = (void *)mm;

		n = BPF_CORE_READ(o, rss_stat.count[0].counter) + BPF_CORE_READ(o, rss_stat.count[1].counter) +
		    BPF_CORE_READ(o, rss_stat.count[3].counter);
	} else {
		n = BPF_CORE_READ(mm, rss_stat[0].count) + BPF_CORE_READ(mm, rss_stat[1].count) +
		    BPF_CORE_READ(mm, rss_stat[3].count);
	}
	return n > 0 ? n : 0;
}

/* A signal is delivered to the current thread: at a SIGKILL, its process's memory is still whole (the OOM
 * killer's is one), so note its resident set. Its end, where it is known whether the OOM killer sent it, is
 * too late: exit_mm has unmapped it (and signal->maxrss carries the peak of the mm an exec replaced). */
static __always_inline int on_signal(int sig)
{
	if (floor_only || sig != 9)
		return 0;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct mm_struct *mm = BPF_CORE_READ(task, mm);

	if (!mm)
		return 0;
	struct pr_counts *c = pr_get(task);

	if (c)
		c->kill_rss_pages = pr_mm_rss(mm);
	return 0;
}

/* do_exit has taken the thread off signal->live and set its exit_code: a count of 0 left is the process's end.
 * A process the OOM killer chose has signal->oom_mm set (mark_oom_victim): its end says so in its own context,
 * on every kernel (the oom/mark_victim tracepoint passes only a pid before 6.8, from the killer's context). */
static __always_inline int on_exit(struct task_struct *task)
{
	if (floor_only)
		return 0;
	struct pr_counts *c = pr_get(task);

	if (!c)
		return 0;
	pr_name(c, task);
	if (BPF_CORE_READ(task, signal, live.counter) == 0) {
		c->exit_code = BPF_CORE_READ(task, exit_code);
		c->memcg_id = pr_memcg_id(task);
		c->oom_killed = BPF_CORE_READ(task, signal, oom_mm) != NULL;
		asm volatile("" ::: "memory"); /* a read that sees it exited sees the rest */
		c->exited = 1;
	} else {
		__sync_fetch_and_add(&c->thread_exits, 1);
	}
	return 0;
}

/* The process's leader is freed: it was reaped (or never needed to be). A leader a non-leader thread's exec
 * replaced is freed too, while the process goes on: it left with exit_signal -1, as threads do. */
static __always_inline int on_free(struct task_struct *task)
{
	if (floor_only || BPF_CORE_READ(task, pid) != BPF_CORE_READ(task, tgid) || BPF_CORE_READ(task, exit_signal) < 0)
		return 0;
	struct pr_key k = {.tgid = BPF_CORE_READ(task, tgid), .start_ns = BPF_CORE_READ(task, start_time)};
	struct pr_counts *c = bpf_map_lookup_elem(&pr_procs, &k); /* none: it did nothing since the collector started */

	if (c)
		c->freed = 1;
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(pr_fork, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child);
}

SEC("raw_tp/sched_process_fork")
int BPF_PROG(pr_fork_raw, struct task_struct *parent, struct task_struct *child)
{
	return on_fork(parent, child);
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(pr_exec, struct task_struct *p)
{
	return on_exec();
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(pr_exec_raw, struct task_struct *p)
{
	return on_exec();
}

/* An exec needs only the current task: the classic tracepoint serves too. */
SEC("tracepoint/sched/sched_process_exec")
int pr_exec_tp(void *ctx)
{
	return on_exec();
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(pr_exit, struct task_struct *p)
{
	return on_exit(p);
}

SEC("raw_tp/sched_process_exit")
int BPF_PROG(pr_exit_raw, struct task_struct *p)
{
	return on_exit(p);
}

SEC("tp_btf/signal_deliver")
int BPF_PROG(pr_signal, int sig)
{
	return on_signal(sig);
}

SEC("raw_tp/signal_deliver")
int BPF_PROG(pr_signal_raw, int sig)
{
	return on_signal(sig);
}

SEC("tracepoint/signal/signal_deliver")
int pr_signal_tp(struct trace_event_raw_signal_deliver *ctx)
{
	return on_signal(ctx->sig);
}

SEC("tp_btf/sched_process_free")
int BPF_PROG(pr_free, struct task_struct *p)
{
	return on_free(p);
}

SEC("raw_tp/sched_process_free")
int BPF_PROG(pr_free_raw, struct task_struct *p)
{
	return on_free(p);
}
