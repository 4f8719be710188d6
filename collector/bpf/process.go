package bpf

import (
	_ "embed"
	"fmt"
	"unsafe"

	libbpfgo "github.com/aquasecurity/libbpfgo"
)

//go:embed obj/process.bpf.o
var processObj []byte

// ProcessHooks: the scheduler's process tracepoints, BTF-typed or raw (both pass the tasks; the classic
// sched_process_fork has no child task, so it cannot tell a thread from a process: no third rung, but for
// exec, which needs only the current task).
var ProcessHooks = []Hook{
	{Prog: "pr_fork", Kind: TPBTF, Target: "sched_process_fork", Part: "process", Required: true, Since: "5.5", Group: "fork"},
	{Prog: "pr_fork_raw", Kind: RawTP, Target: "sched_process_fork", Part: "process", Required: true, Since: "4.17", Group: "fork", Alt: 1},
	{Prog: "pr_exec", Kind: TPBTF, Target: "sched_process_exec", Part: "process", Required: true, Since: "5.5", Group: "exec"},
	{Prog: "pr_exec_raw", Kind: RawTP, Target: "sched_process_exec", Part: "process", Required: true, Since: "4.17", Group: "exec", Alt: 1},
	{Prog: "pr_exec_tp", Kind: Tracepoint, Target: "sched/sched_process_exec", Part: "process", Required: true, Since: "3.4", Group: "exec", Alt: 2},
	{Prog: "pr_exit", Kind: TPBTF, Target: "sched_process_exit", Part: "process", Required: true, Since: "5.5", Group: "exit"},
	{Prog: "pr_exit_raw", Kind: RawTP, Target: "sched_process_exit", Part: "process", Required: true, Since: "4.17", Group: "exit", Alt: 1},
	// The resident set at a SIGKILL, for OOM kills: without it they are reported with no RSS.
	{Prog: "pr_signal", Kind: TPBTF, Target: "signal_deliver", Part: "process", Since: "5.5", Group: "signal"},
	{Prog: "pr_signal_raw", Kind: RawTP, Target: "signal_deliver", Part: "process", Since: "4.17", Group: "signal", Alt: 1},
	{Prog: "pr_signal_tp", Kind: Tracepoint, Target: "signal/signal_deliver", Part: "process", Since: "3.4", Group: "signal", Alt: 2},
	{Prog: "pr_free", Kind: TPBTF, Target: "sched_process_free", Part: "process", Required: true, Since: "5.5", Group: "free"},
	{Prog: "pr_free_raw", Kind: RawTP, Target: "sched_process_free", Part: "process", Required: true, Since: "4.17", Group: "free", Alt: 1},
}

// Process is the loaded ebpf-process object.
type Process struct {
	m     *libbpfgo.Module
	att   *attachment
	procs *libbpfgo.BPFMap
	stats *libbpfgo.BPFMap
}

// OpenProcess loads probes/process.bpf.c (from opts.ObjectDir when set) and attaches its tracepoints.
func OpenProcess(opts Options) (_ *Process, err error) {
	obj, err := loadObject(opts.ObjectDir, "process.bpf.o", processObj)
	if err != nil {
		return nil, err
	}
	p := &Process{}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	p.m, p.att, err = loadHooked("process", obj, ProcessHooks, hooked{setup: func(m *libbpfgo.Module, _ *attachment) error {
		if err := m.InitGlobalVariable("floor_only", opts.Floor); err != nil {
			return fmt.Errorf("set floor_only: %w", err)
		}
		return nil
	}})
	if err != nil {
		return nil, err
	}
	if !p.att.On("process") {
		return nil, fmt.Errorf("process: %s", p.att.off["process"])
	}
	for name, dst := range map[string]**libbpfgo.BPFMap{"pr_procs": &p.procs, "pr_stats": &p.stats} {
		if *dst, err = p.m.GetMap(name); err != nil {
			return nil, fmt.Errorf("map %s: %w", name, err)
		}
	}
	return p, nil
}

// Report is one line per part: its hooks and whether each attached.
func (p *Process) Report() []string { return p.att.Report("process") }

// Parts is each part's status on this kernel.
func (p *Process) Parts() []PartStatus { return p.att.Parts("process") }

// Refused is how many of its hooks the kernel refused to load.
func (p *Process) Refused() int { return p.att.Refused() }

// ReadProcesses calls fn with every process of pr_procs: its key (struct pr_key) and its counters (struct
// pr_counts). A process deleted meanwhile is skipped.
func (p *Process) ReadProcesses(fn func(key, val []byte)) error {
	it := p.procs.Iterator()
	for it.Next() {
		k := it.Key()
		v, err := p.procs.GetValue(unsafe.Pointer(&k[0]))
		if err != nil {
			continue
		}
		fn(k, v)
	}
	return it.Err()
}

// DeleteProcess forgets a process the collector has read freed.
func (p *Process) DeleteProcess(key []byte) error { return p.procs.DeleteKey(unsafe.Pointer(&key[0])) }

// Stats returns the kernel-side drop counters, indexed by the plugin's Stat*, summed over CPUs.
func (p *Process) Stats() []uint64 { return perCPUStats(p.stats) }

// Close detaches every program and frees the maps.
func (p *Process) Close() {
	if p.m != nil {
		p.m.Close()
	}
}
