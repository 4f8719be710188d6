package process

import (
	"log/slog"
	"time"

	"dkebpf/collector/plugin"
	"dkebpf/collector/point"
)

// ExitsMeasurement is the name of the failed-exit points.
const ExitsMeasurement = "process_exit_failed"

// ExitsPlugin reports the failed exits the process plugin saw, per process name, container and exit status
// or signal: a metric, not a log line each, so a host where a script's grep fails thousands of times a minute
// sends one point per interval.
type ExitsPlugin struct {
	p *Plugin
	c plugin.Counters
}

var _ plugin.Plugin = (*ExitsPlugin)(nil)

// NewExitsPlugin reports the failed exits p sees; it must come after p in the plugin list (it flushes what
// p's Flush found in the same pass).
func NewExitsPlugin(p *Plugin, log *slog.Logger) *ExitsPlugin {
	log.Info("process: failed exits as " + ExitsMeasurement + " per exit status or signal")
	return &ExitsPlugin{p: p}
}

func (e *ExitsPlugin) Name() string              { return "exits" }
func (e *ExitsPlugin) Category() string          { return "metric" }
func (e *ExitsPlugin) Input() string             { return "ebpf-process/" + ExitsMeasurement }
func (e *ExitsPlugin) Drain()                    {}
func (e *ExitsPlugin) Close()                    {}
func (e *ExitsPlugin) Counters() plugin.Counters { return e.c }

func (e *ExitsPlugin) Flush(now time.Time) []point.Point {
	fails := e.p.fails
	e.p.fails = nil
	pts := make([]point.Point, 0, len(fails))
	for f, n := range fails {
		e.c.Events += n
		pts = append(pts, point.Point{
			Name:   ExitsMeasurement,
			Tags:   map[string]string{"process_name": f.Comm, "exit_code": f.ExitCode, "signal": f.Signal},
			Fields: map[string]any{"count": int64(n)},
			Time:   now,
			Mntns:  f.Mntns,
		})
	}
	return pts
}
