package bpf

import (
	_ "embed"
	"fmt"

	libbpfgo "github.com/aquasecurity/libbpfgo"
)

//go:embed obj/bash.bpf.o
var bashObj []byte

// BashHooks: the readline uretprobe is attached per bash binary (AttachReadline); the exec tracepoint
// tells the collector at once when a bash starts, so a binary it has not seen yet is probed before the
// user types (without it, the collector's periodic /proc scan finds new binaries).
var BashHooks = []Hook{
	{Prog: "bash_readline", Kind: Uprobe, Target: "readline(ret)", Part: "readline", Required: true},
	{Prog: "bash_exec", Kind: TPBTF, Target: "sched_process_exec", Part: "exec", Required: true, Since: "5.5", Group: "exec"},
	{Prog: "bash_exec_raw", Kind: RawTP, Target: "sched_process_exec", Part: "exec", Required: true, Since: "4.17", Group: "exec", Alt: 1},
	{Prog: "bash_exec_tp", Kind: Tracepoint, Target: "sched/sched_process_exec", Part: "exec", Required: true, Since: "3.4", Group: "exec", Alt: 2},
}

// Bash is the loaded bash probe.
type Bash struct {
	m     *libbpfgo.Module
	att   *attachment
	lines *Ring
	execs *Ring
	stats *libbpfgo.BPFMap
	links []*libbpfgo.BPFLink
}

// OpenBash loads probes/bash.bpf.c (from opts.ObjectDir when set) and attaches its exec tracepoint.
func OpenBash(opts Options) (_ *Bash, err error) {
	obj, err := loadObject(opts.ObjectDir, "bash.bpf.o", bashObj)
	if err != nil {
		return nil, err
	}
	b := &Bash{}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	b.m, b.att, err = loadHooked("bash", obj, BashHooks, hooked{setup: func(m *libbpfgo.Module, _ *attachment) error {
		if err := m.InitGlobalVariable("floor_only", opts.Floor); err != nil {
			return fmt.Errorf("set floor_only: %w", err)
		}
		return nil
	}})
	if err != nil {
		return nil, err
	}
	m := b.m
	if !b.att.On("readline") {
		return nil, fmt.Errorf("bash: %s", b.att.off["readline"])
	}
	if b.stats, err = m.GetMap("bash_stats"); err != nil {
		return nil, fmt.Errorf("map bash_stats: %w", err)
	}
	for name, dst := range map[string]**Ring{"bash_lines": &b.lines, "bash_execs": &b.execs} {
		rb, err := m.GetMap(name)
		if err != nil {
			return nil, fmt.Errorf("map %s: %w", name, err)
		}
		if *dst, err = newRing(rb.FileDescriptor(), rb.MaxEntries()); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Report is one line per part: its hooks and whether each attached.
func (b *Bash) Report() []string { return b.att.Report("bash") }

// Parts is each part's status on this kernel.
func (b *Bash) Parts() []PartStatus { return b.att.Parts("bash") }

// Refused is how many of its hooks the kernel refused to load.
func (b *Bash) Refused() int { return b.att.Refused() }

// Execs says whether bash execs are reported (the exec tracepoint attached).
func (b *Bash) Execs() bool { return b.att.On("exec") }

// AttachReadline puts the uretprobe on readline of one bash binary (path must be openable by this
// process, e.g. /proc/<pid>/root/bin/bash; offset is readline's file offset). The kernel attaches it to
// the file's inode: every process running it, now or later, is covered.
func (b *Bash) AttachReadline(path string, offset uint64) error {
	prog, err := b.m.GetProgram("bash_readline")
	if err != nil {
		return fmt.Errorf("program bash_readline: %w", err)
	}
	l, err := prog.AttachURetprobe(-1, path, uint32(offset))
	if err != nil {
		return fmt.Errorf("attach uretprobe to %s:readline: %w", path, err)
	}
	b.links = append(b.links, l)
	return nil
}

// DrainLines hands over the lines returned since the last call (struct bash_line each).
func (b *Bash) DrainLines(fn func([]byte)) int { return b.lines.Drain(fn) }

// DrainExecs hands over the bash execs since the last call (struct bash_exec each).
func (b *Bash) DrainExecs(fn func([]byte)) int { return b.execs.Drain(fn) }

// Stats returns the kernel-side drop counters, indexed by BashStat*, summed over CPUs.
func (b *Bash) Stats() []uint64 { return perCPUStats(b.stats) }

// Close detaches every program and frees the maps.
func (b *Bash) Close() {
	detachParallel(b.links)
	for _, r := range []*Ring{b.lines, b.execs} {
		if r != nil {
			r.Close()
		}
	}
	if b.m != nil {
		b.m.Close()
	}
}
