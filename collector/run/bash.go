package run

import (
	"fmt"
	"log/slog"
	"sync"
	"time"

	"dkebpf/collector/bash"
	"dkebpf/collector/bpf"
	"dkebpf/collector/cli"
	"dkebpf/collector/point"
)

// bashPlugin reports every line interactive bash shells read: the readline uretprobe on each bash binary
// found (the host's at start, others at each bash exec and on every /proc rescan), redacted, as logging points.
type bashPlugin struct {
	probe  *bpf.Bash
	buf    *bash.Buffer
	finder *bash.Finder
	log    *slog.Logger
	c      Counters

	stop     chan struct{}
	done     chan struct{} // closed when the rescan goroutine has returned
	stopOnce sync.Once

	mu                          sync.Mutex
	probed, failed, unprobeable uint64
}

func openBash(cfg *cli.RunConfig, log *slog.Logger) (*bashPlugin, error) {
	rules := make([]bash.Rule, len(cfg.BashRedact))
	for i, r := range cfg.BashRedact {
		rules[i] = bash.Rule{Name: r.Name, Pattern: r.Pattern}
	}
	red, err := bash.NewRedactor(rules)
	if err != nil {
		return nil, err
	}
	probe, err := bpf.OpenBash(bpf.Options{ObjectDir: cfg.BPFObjects, Floor: cfg.BPFFloor})
	if err != nil {
		return nil, err
	}
	for _, line := range probe.Report() {
		log.Info(line)
	}
	p := &bashPlugin{
		probe:  probe,
		buf:    bash.NewBuffer(bash.Config{Redactor: red, Users: bash.NewUsers("/proc", "/etc/passwd")}),
		finder: bash.NewFinder("/proc"),
		log:    log,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	log.Info(fmt.Sprintf("bash: on; uretprobe on readline of every bash binary, found at start, at each bash exec and every %s", cfg.BashRescan))
	p.attach(p.finder.Host())
	p.attach(p.finder.Scan())
	go p.rescan(cfg.BashRescan)
	return p, nil
}

func (p *bashPlugin) Name() string     { return "bash" }
func (p *bashPlugin) Category() string { return "logging" }
func (p *bashPlugin) Input() string    { return "ebpf-bash" }

// Drain probes the binaries of bashes started since the last drain, first, then takes the lines read.
func (p *bashPlugin) Drain() {
	var e bash.Exec
	p.probe.DrainExecs(func(b []byte) {
		if e.UnmarshalBinary(b) == nil {
			p.attach(p.finder.Check(e.Pid))
		}
	})
	var l bash.Line
	p.probe.DrainLines(func(b []byte) {
		p.c.Events++
		if err := l.UnmarshalBinary(b); err != nil {
			p.c.DecodeErrors++
			return
		}
		p.buf.Add(l)
	})
}

func (p *bashPlugin) Flush(time.Time) []point.Point { return p.buf.Flush() }

// attach puts the uretprobe on each new binary; files that are not a bash with its own readline are
// named once.
func (p *bashPlugin) attach(bins []bash.Binary, errs []error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, err := range errs {
		p.unprobeable++
		p.log.Info("bash: not probed", "err", err)
	}
	for _, b := range bins {
		if err := p.probe.AttachReadline(b.Path, b.Offset); err != nil {
			p.failed++
			p.log.Warn("bash: cannot probe", "path", b.Path, "err", err)
			continue
		}
		p.probed++
		p.log.Info("bash: probing readline", "path", b.Path, "inode", b.Ino)
	}
}

func (p *bashPlugin) rescan(every time.Duration) {
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

func (p *bashPlugin) Counters() Counters {
	st := p.probe.Stats()
	bs := p.buf.Stats()
	c := p.c
	c.Lost = st[bash.StatRBLost]
	p.mu.Lock()
	defer p.mu.Unlock()
	c.Extra = map[string]uint64{
		"lines":           bs.Lines,
		"empty_lines":     bs.Empty,
		"dropped_lines":   bs.Dropped,
		"redacted_lines":  bs.Redacted,
		"truncated_lines": bs.Truncated,
		"exec_lost":       st[bash.StatExecLost],
		"binaries_probed": p.probed,
		"attach_fails":    p.failed,
		"not_probeable":   p.unprobeable,
	}
	return c
}

// Close stops the rescans, then detaches the probes.
func (p *bashPlugin) Close() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.done
	p.probe.Close()
}

func (p *bashPlugin) probeParts() []bpf.PartStatus { return p.probe.Parts() }
func (p *bashPlugin) probeRefused() int            { return p.probe.Refused() }
