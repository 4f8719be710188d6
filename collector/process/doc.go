// Package process is the ebpf-process plugin: what processes do, counted in the kernel per process
// (probes/process.bpf.c) and reported every interval per process name and container.
//
// process_task (category metric, input ebpf-process/process_task), one point per interval per (process name,
// container) that did something or holds a zombie:
//
//	tag   process_name   the process's name (its comm; after an exec, the new program's)
//	field forks          int  child processes created (fork, vfork, clone without CLONE_THREAD)
//	field threads        int  threads created (clone with CLONE_THREAD)
//	field execs          int  successful execve calls
//	field exits          int  processes that ended (their last thread exited)
//	field thread_exits   int  threads that exited while their process went on
//	field exits_failed   int  of exits, those with a non-zero status or killed by a signal
//	field zombies        int  processes ended and not yet reaped at the interval's end (a gauge)
//
// A process's counts go to the name it has when the interval is read: the counts of a child that forked
// and then exec'd `ls` are all `ls`'s. Container tags come from the process's mount namespace, as for the
// other plugins.
//
// process_exit_failed (category metric, input ebpf-process/process_exit_failed), one point per interval per
// (process name, container, exit status or signal) with failed exits:
//
//	tag   process_name   the process's name
//	tag   exit_code      its exit status (1–255), or N/A when a signal killed it
//	tag   signal         the signal that killed it (SIGKILL, SIGSEGV, …), or N/A
//	field count          int  processes that ended so in the interval
//
// oom_kill (category logging, input ebpf-process/oom_kill), one point per process the OOM killer ended:
//
//	tag   process_name   the process's name
//	tag   cgroup         its memory cgroup's path from its hierarchy's root (cgroup v2, or v1's memory
//	                     controller), or its id when no mount the collector sees holds it
//	field pid            int  the process id
//	field rss_bytes      int  its resident set (file + anonymous + shared memory) when the kill was delivered:
//	                          what the kernel's "Killed process" line gives; 0 if the signal hook is off
//	field cgroup_id      int  the memory cgroup's id (its directory's inode number)
//	field message        str  one line saying the above
//
// A kill is known at the process's end (signal->oom_mm, set by the OOM killer, in the process's own context)
// and read with the process's counters, so none is lost to a full ring buffer.
package process
