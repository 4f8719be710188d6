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
package process
