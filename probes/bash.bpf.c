/* bash: every line an interactive bash's readline returns (uretprobe, attached by the collector to each
 * bash binary it finds), and a note of every bash exec so a binary never seen before is probed at once. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "common/btf.bpf.h"
#include "common/floor.bpf.h"
#include "common/task.bpf.h"
#include "bash.h"

#define BASH_LINES_BYTES (256 << 10) /* about 2 000 lines of 80 characters, or 240 of the longest */
#define BASH_EXECS_BYTES (1 << 16)

char LICENSE[] SEC("license") = "GPL";

/* The enums Go mirrors, into the object's BTF for the layout tests (collector/bpf). */
BTF_ENUM(bash_const);
BTF_ENUM(bash_stat);

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, BASH_LINES_BYTES);
} bash_lines SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, BASH_EXECS_BYTES);
} bash_execs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, BASH_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} bash_stats SEC(".maps");

/* Puts the record structs, only used through ring buffers, into the object's BTF for the layout test. */
const struct bash_line *bash_line_btf __attribute__((unused));
const struct bash_exec *bash_exec_btf __attribute__((unused));

static __always_inline void bash_count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&bash_stats, &idx);

	if (v)
		*v += 1;
}

#define BASH_SHORT_LEN 128 /* a line this long or shorter, NUL included, goes to the ring cut after its NUL */

/* A short line's record, built on the stack (a whole struct bash_line does not fit there). */
struct bash_line_short {
	BASH_LINE_HEAD_FIELDS
	char line[BASH_SHORT_LEN];
};

static __always_inline void bash_line_head(void *rec)
{
	struct bash_line *e = rec; /* the head's layout is the same in both */

	e->ts_ns = bpf_ktime_get_ns();
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->uid = (__u32)bpf_get_current_uid_gid();
	e->mntns = current_mntns();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	e->truncated = 0;
	__builtin_memset(e->pad, 0, sizeof(e->pad));
}

SEC("uretprobe")
int BPF_KRETPROBE(bash_readline, const char *line)
{
	if (floor_only || !line)
		return 0; /* EOF (Ctrl-D) */
	struct bash_line_short s;
	long n = bpf_probe_read_user_str(s.line, sizeof(s.line), line);

	if (n <= 0)
		return 0;
	if (n < sizeof(s.line)) { /* the NUL fit: the whole line is here */
		bash_line_head(&s);
		s.len = n - 1;
		/* Lines are rare: no need to spare the wakeup, but the collector drains on a timer anyway. */
		if (bpf_ringbuf_output(&bash_lines, &s, BASH_LINE_HEAD + (n & (BASH_SHORT_LEN - 1)), BPF_RB_NO_WAKEUP))
			bash_count(BASH_STAT_RB_LOST);
		return 0;
	}
	struct bash_line *e = bpf_ringbuf_reserve(&bash_lines, sizeof(*e), 0);

	if (!e) {
		bash_count(BASH_STAT_RB_LOST);
		return 0;
	}
	bash_line_head(e);
	n = bpf_probe_read_user_str(e->line, sizeof(e->line), line);
	if (n <= 0) {
		bpf_ringbuf_discard(e, 0);
		return 0;
	}
	e->len = n - 1;
	if (n == sizeof(e->line)) {
		/* The buffer is full: the line is longer unless its NUL is exactly where the copy stopped. */
		char next = 0;

		bpf_probe_read_user(&next, 1, line + sizeof(e->line) - 1);
		e->truncated = next != 0;
	}
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

/* Names bash runs under: comm is the exec'd file's base name. */
static __always_inline int bash_name(const char *c)
{
	return (c[0] == 'b' && c[1] == 'a' && c[2] == 's' && c[3] == 'h' && c[4] == 0) ||
	       (c[0] == 'r' && c[1] == 'b' && c[2] == 'a' && c[3] == 's' && c[4] == 'h' && c[5] == 0) ||
	       (c[0] == 's' && c[1] == 'h' && c[2] == 0);
}

/* A bash exec, best hook first: BTF-typed, raw, classic (a kernel that refuses the others). The
 * tracepoint runs in the exec'ing task, after its comm became the new file's name. */
static __always_inline int on_exec(void)
{
	char comm[BASH_COMM_LEN];

	if (floor_only)
		return 0;
	bpf_get_current_comm(comm, sizeof(comm));
	if (!bash_name(comm))
		return 0;
	struct bash_exec *e = bpf_ringbuf_reserve(&bash_execs, sizeof(*e), 0);

	if (!e) {
		bash_count(BASH_STAT_EXEC_LOST);
		return 0;
	}
	e->pid = bpf_get_current_pid_tgid() >> 32;
	e->pad = 0;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(bash_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec();
}

SEC("raw_tp/sched_process_exec")
int BPF_PROG(bash_exec_raw, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	return on_exec();
}

SEC("tracepoint/sched/sched_process_exec")
int bash_exec_tp(void *ctx)
{
	return on_exec();
}
