package bash

import (
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"dkebpf/collector/plugin"
	"dkebpf/collector/point"
	"dkebpf/collector/target"
)

// Kernel is bash's BPF object as the plugin reads it (collector/bpf.Bash satisfies it).
type Kernel interface {
	DrainLines(fn func([]byte)) int // struct bash_line records
	DrainExecs(fn func([]byte)) int // struct bash_exec records: a process exec'd bash
	AttachReadline(path string, offset uint64) error
	Stats() []uint64 // indexed by Stat*
}

// Targets are the files the readline uretprobe goes on: every process's executable when it is a bash (its
// name or its comm is "bash"), and the /bin/bash and /usr/bin/bash of each root directory, so that a
// container's bash is probed before anyone runs it. One file under several overlay mounts is one target.
func Targets() target.Spec {
	return target.Spec{
		Plugin: "bash", What: "readline", Symbols: []string{"readline"},
		Exe:               func(path, comm string) bool { return filepath.Base(path) == "bash" || comm == "bash" },
		InRoots:           []string{"/bin/bash", "/usr/bin/bash"},
		SameAcrossDevices: true,
	}
}

// Plugin reports every line interactive bash shells read: the readline uretprobe on each bash binary found
// (the host's at start, others at each bash exec and on every rescan), redacted, as logging points.
type Plugin struct {
	k     Kernel
	buf   *Buffer
	log   *slog.Logger
	c     plugin.Counters
	watch *target.Watcher
}

var _ plugin.Plugin = (*Plugin)(nil)

// NewPlugin returns the bash plugin reading k: it probes the binaries of targets (a Finder of Targets) now,
// at each bash exec the kernel reports, and every rescan.
func NewPlugin(k Kernel, cfg Config, targets target.Source, rescan time.Duration, log *slog.Logger) *Plugin {
	log.Info(fmt.Sprintf("bash: on; uretprobe on readline of every bash binary, found at start, at each bash exec and every %s", rescan))
	p := &Plugin{k: k, buf: NewBuffer(cfg), log: log}
	p.watch = target.Watch(targets, rescan, func(f target.File) error { return k.AttachReadline(f.Path, f.Offsets["readline"]) }, log)
	return p
}

func (p *Plugin) Name() string     { return "bash" }
func (p *Plugin) Category() string { return "logging" }
func (p *Plugin) Input() string    { return "ebpf-bash" }

// Drain probes the binaries of bashes started since the last drain, first, then takes the lines read.
func (p *Plugin) Drain() {
	var e Exec
	p.k.DrainExecs(func(b []byte) {
		if e.UnmarshalBinary(b) == nil {
			p.watch.Check(e.Pid)
		}
	})
	plugin.DrainRecords(&p.c, p.k.DrainLines, func(l *Line) { p.buf.Add(*l) })
}

func (p *Plugin) Flush(time.Time) []point.Point { return p.buf.Flush() }

func (p *Plugin) Counters() plugin.Counters {
	st := p.k.Stats()
	bs := p.buf.Stats()
	w := p.watch.Counts()
	c := p.c
	c.Lost = plugin.Stat(st, StatRBLost)
	c.Extra = map[string]uint64{
		"lines":           bs.Lines,
		"empty_lines":     bs.Empty,
		"dropped_lines":   bs.Dropped,
		"redacted_lines":  bs.Redacted,
		"truncated_lines": bs.Truncated,
		"exec_lost":       plugin.Stat(st, StatExecLost),
		"binaries_probed": w.Probed,
		"attach_fails":    w.Failed,
		"not_probeable":   w.Unprobeable,
	}
	return c
}

// Close stops the rescans and waits for them; the kernel object is its owner's to close, after.
func (p *Plugin) Close() { p.watch.Stop() }
