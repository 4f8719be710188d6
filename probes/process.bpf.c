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

/* do_exit has taken the thread off signal->live and set its exit_code: a count of 0 left is the process's end. */
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
