package bash

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"dkebpf/collector/plugin"
	"dkebpf/collector/point"
)

// Kernel is bash's BPF object as the plugin reads it (collector/bpf.Bash satisfies it).
type Kernel interface {
	DrainLines(fn func([]byte)) int // struct bash_line records
	DrainExecs(fn func([]byte)) int // struct bash_exec records: a process exec'd bash
	AttachReadline(path string, offset uint64) error
	Stats() []uint64 // indexed by Stat*
}

// Finding is where bash binaries come from (Finder; a fake in tests).
type Finding interface {
	Host() ([]Binary, []error)
	Scan() ([]Binary, []error)
	Check(pid uint32) ([]Binary, []error)
}

// Plugin reports every line interactive bash shells read: the readline uretprobe on each bash binary found
// (the host's at start, others at each bash exec and on every rescan), redacted, as logging points.
type Plugin struct {
	k      Kernel
	buf    *Buffer
	finder Finding
	log    *slog.Logger
	c      plugin.Counters

	stop     chan struct{}
	done     chan struct{} // closed when the rescan goroutine has returned
	stopOnce sync.Once

	mu                          sync.Mutex
	probed, failed, unprobeable uint64
}

var _ plugin.Plugin = (*Plugin)(nil)

// NewPlugin returns the bash plugin reading k: it probes the binaries finder finds now, then every rescan.
func NewPlugin(k Kernel, cfg Config, finder Finding, rescan time.Duration, log *slog.Logger) *Plugin {
	p := &Plugin{
		k:      k,
		buf:    NewBuffer(cfg),
		finder: finder,
		log:    log,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	log.Info(fmt.Sprintf("bash: on; uretprobe on readline of every bash binary, found at start, at each bash exec and every %s", rescan))
	p.attach(finder.Host())
	p.attach(finder.Scan())
	go p.rescan(rescan)
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
			p.attach(p.finder.Check(e.Pid))
		}
	})
	var l Line
	p.k.DrainLines(func(b []byte) {
		p.c.Events++
		if err := l.UnmarshalBinary(b); err != nil {
			p.c.DecodeErrors++
			return
		}
		p.buf.Add(l)
	})
}

func (p *Plugin) Flush(time.Time) []point.Point { return p.buf.Flush() }

// attach puts the uretprobe on each new binary; files that are not a bash with its own readline are
// named once.
func (p *Plugin) attach(bins []Binary, errs []error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, err := range errs {
		p.unprobeable++
		p.log.Info("bash: not probed", "err", err)
	}
	for _, b := range bins {
		if err := p.k.AttachReadline(b.Path, b.Offset); err != nil {
			p.failed++
			p.log.Warn("bash: cannot probe", "path", b.Path, "err", err)
			continue
		}
		p.probed++
		p.log.Info("bash: probing readline", "path", b.Path, "inode", b.Ino)
	}
}

func (p *Plugin) rescan(every time.Duration) {
	defer close(p.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.attach(p.finder.Scan())
		}
	}
}

func (p *Plugin) Counters() plugin.Counters {
	st := p.k.Stats()
	bs := p.buf.Stats()
	c := p.c
	c.Lost = plugin.Stat(st, StatRBLost)
	p.mu.Lock()
	defer p.mu.Unlock()
	c.Extra = map[string]uint64{
		"lines":           bs.Lines,
		"empty_lines":     bs.Empty,
		"dropped_lines":   bs.Dropped,
		"redacted_lines":  bs.Redacted,
		"truncated_lines": bs.Truncated,
		"exec_lost":       plugin.Stat(st, StatExecLost),
		"binaries_probed": p.probed,
		"attach_fails":    p.failed,
		"not_probeable":   p.unprobeable,
	}
	return c
}

// Close stops the rescans and waits for them; the kernel object is its owner's to close, after.
func (p *Plugin) Close() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
}
