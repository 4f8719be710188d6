/* What the probes record of the process behind an event, read through its task. */
#ifndef COMMON_TASK_BPF_H
#define COMMON_TASK_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/* The task's mount namespace inode. The collector maps it to a container at the next flush, when the
 * process itself may be gone but the container (its other processes) is not; it works on cgroup v1,
 * v2 and hybrid hosts alike, where bpf_get_current_cgroup_id sees only v2. 0 for an exiting task. */
static __always_inline __u32 task_mntns(struct task_struct *task)
{
	return BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
}

static __always_inline __u32 current_mntns(void)
{
	return task_mntns((struct task_struct *)bpf_get_current_task());
}

#endif
