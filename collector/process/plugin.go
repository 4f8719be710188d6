package process

import (
	"log/slog"
	"time"

	"dkebpf/collector/plugin"
	"dkebpf/collector/point"
)

// Measurement is the name of the process points.
const Measurement = "process_task"

// Kernel is the process object as the plugin reads it (collector/bpf.Process satisfies it).
type Kernel interface {
	ReadProcesses(fn func(key, val []byte)) error
	DeleteProcess(key []byte) error
	Stats() []uint64 // indexed by Stat*
}

// Plugin reports process_task every interval.
type Plugin struct {
	k       Kernel
	t       *Tracker
	log     *slog.Logger
	c       plugin.Counters
	freed   uint64
	zombies map[Group]bool     // groups whose last point had zombies: the next says when they are gone
	kills   []OOMKill          // found by the last Flush, for the OOM plugin
	fails   map[Failure]uint64 // found by the last Flush, for the exits plugin
}

var _ plugin.Plugin = (*Plugin)(nil)

func NewPlugin(k Kernel, log *slog.Logger) *Plugin {
	log.Info("process: on; forks, threads, execs, exits and zombies per process name, from the scheduler's tracepoints")
	return &Plugin{k: k, t: NewTracker(), log: log, zombies: map[Group]bool{}}
}

func (p *Plugin) Name() string     { return "process" }
func (p *Plugin) Category() string { return "metric" }
func (p *Plugin) Input() string    { return "ebpf-process/" + Measurement }

// Drain does nothing: the kernel counts, and Flush reads the counts.
func (p *Plugin) Drain() {}

// Flush reads every process's counters once, reports each group's differences, and deletes from the
// kernel the processes read freed.
func (p *Plugin) Flush(now time.Time) []point.Point {
	out := map[Group]*Totals{}
	seen := map[Key]bool{}
	var freed [][]byte
	err := p.k.ReadProcesses(func(kb, vb []byte) {
		k, err := DecodeKey(kb)
		if err != nil {
			p.c.DecodeErrors++
			return
		}
		c, err := DecodeCounts(vb)
		if err != nil {
			p.c.DecodeErrors++
			return
		}
		if seen[k] {
			return // the walk restarted (a process was deleted under it): read once
		}
		p.c.Events++
		seen[k] = true
		if p.t.Add(k, c, out) {
			freed = append(freed, append([]byte(nil), kb...))
		}
	})
	if err != nil {
		p.log.Warn("process: reading the kernel's counters", "err", err)
	}
	for _, kb := range freed {
		if err := p.k.DeleteProcess(kb); err == nil {
			p.freed++
		}
	}
	p.t.Forget(seen)
	p.kills, p.fails = p.t.TakeKills(), p.t.TakeFailures() // the plugins flushed next take them
	had := p.zombies
	p.zombies = map[Group]bool{}
	pts := make([]point.Point, 0, len(out))
	for g := range had {
		if out[g] == nil {
			out[g] = &Totals{} // its zombies were reaped: a point says 0
		}
	}
	for g, t := range out {
		if t.zero() && !had[g] {
			continue
		}
		if t.Zombies > 0 {
			p.zombies[g] = true
		}
		pts = append(pts, point.Point{
			Name: Measurement,
			Tags: map[string]string{"process_name": g.Comm},
			Fields: map[string]any{
				"forks": int64(t.Forks), "threads": int64(t.Threads), "execs": int64(t.Execs), "exits": int64(t.Exits),
				"thread_exits": int64(t.ThreadExits), "exits_failed": int64(t.ExitsFailed), "zombies": int64(t.Zombies),
			},
			Time:  now,
			Mntns: g.Mntns,
		})
	}
	return pts
}

func (p *Plugin) Counters() plugin.Counters {
	st := p.k.Stats()
	c := p.c
	c.MapFull = plugin.Stat(st, StatFull)
	c.Extra = map[string]uint64{
		"processes_followed": uint64(p.t.Len()),
		"processes_freed":    p.freed,
	}
	return c
}

func (p *Plugin) Close() {}
