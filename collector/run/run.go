// Package run is the collector's main loop: it starts the enabled plugins, drains them on a short timer,
// flushes their aggregates every interval as line protocol into the sender, and reports its own health.
package run

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"dkebpf/collector/bpf"
	"dkebpf/collector/cli"
	"dkebpf/collector/point"
	"dkebpf/collector/sender"
)

// drainEvery is how often ring buffers are emptied between flushes (they are written without wakeups).
// httpflow's 4 MiB ring holds about 14k exchanges: at 140k exchanges/s (nginx keep-alive at saturation, both
// sides on one host) it fills in 100 ms, so drain every 20 ms. An empty drain is two atomic loads.
const drainEvery = 20 * time.Millisecond

// plugin is one measurement's kernel probe and aggregator.
type plugin interface {
	Name() string     // "netflow"
	Category() string // DataKit category of its points
	Input() string    // the input= value, e.g. "ebpf-net/netflow"
	Drain()           // take discrete events from the kernel
	Flush(now time.Time) []point.Point
	Counters() Counters
	Close()
}

// Counters are a plugin's cumulative health numbers since start.
type Counters struct {
	Events       uint64 // records received from the kernel
	Lost         uint64 // records the kernel could not hand over (ring buffer full)
	MapFull      uint64 // kernel map inserts that failed
	DecodeErrors uint64
	Extra        map[string]uint64 // the plugin's own numbers, reported as <plugin>_<name>
}

// Main runs the collector until ctx ends (SIGTERM/SIGINT), then flushes once more and detaches.
func Main(ctx context.Context, cfg *cli.RunConfig, log *slog.Logger) error {
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if cfg.EphemeralPort == 0 {
		cfg.EphemeralPort = kernelEphemeralStart(log)
	}
	snd := sender.New(sender.Config{BaseURL: cfg.APIServer, MaxBufferedPoints: cfg.MaxBufferedPoints, Logger: log})
	sendCtx, stopSender := context.WithCancel(context.Background())
	senderDone := make(chan struct{})
	go func() { snd.Run(sendCtx); close(senderDone) }()
	defer func() { stopSender(); <-senderDone }()

	plugins, err := startPlugins(cfg, log)
	if err != nil {
		msg := err.Error()
		log.Error(msg)
		if perr := snd.PostLastError(ctx, "ebpf", msg); perr != nil {
			log.Warn("report last error to datakit", "err", perr)
		}
		return err
	}
	defer func() {
		// Last opened first: httpflow uses netflow's probe.
		for i := len(plugins) - 1; i >= 0; i-- {
			plugins[i].Close()
		}
	}()

	enc := point.NewEncoder(cfg.GlobalTags())
	self := newSelfMetrics(time.Now())
	flush := func(now time.Time) {
		// Every plugin drains before any flushes: netflow names addresses from the DNS answers dnsflow holds.
		for _, p := range plugins {
			p.Drain()
		}
		for _, p := range plugins {
			pts := p.Flush(now)
			snd.Enqueue(p.Category(), p.Input(), encodeAll(enc, pts, log))
			log.Debug("flushed", "plugin", p.Name(), "points", len(pts))
		}
		snd.Enqueue("metric", selfInput, encodeAll(enc, []point.Point{self.point(now, plugins, snd.Stats())}, log))
	}

	drain := time.NewTicker(drainEvery)
	defer drain.Stop()
	interval := time.NewTicker(cfg.Interval)
	defer interval.Stop()
	// tp_btf, raw tracepoints, iterators and cgroup_skb attach without tracefs; only a classic tracepoint
	// (a kernel refusing the others) needs it, and then the collector mounts it if the host has not.
	log.Info("collector running", "tracefs", bpf.TracefsNote(), "interval", cfg.Interval, "datakit", cfg.APIServer, "ephemeral_port", cfg.EphemeralPort)
	for {
		select {
		case <-ctx.Done():
			flush(time.Now())
			log.Info("stopping: final flush queued")
			return nil
		case <-drain.C:
			for _, p := range plugins {
				p.Drain()
			}
		case now := <-interval.C:
			flush(now)
		}
	}
}

// ErrNothingRuns: no enabled plugin can run on this host (every one lacks a required hook).
var ErrNothingRuns = errors.New("no plugin could start")

// startPlugins opens what --enabled asks for. Plugins not built yet are named and skipped; if nothing can
// run, it is an error.
func startPlugins(cfg *cli.RunConfig, log *slog.Logger) ([]plugin, error) {
	var plugins []plugin
	var failures []string
	for _, name := range cfg.Enabled {
		switch name {
		case "ebpf-bash":
			b, err := openBash(cfg, log)
			if err != nil {
				log.Error("bash disabled", "err", err)
				failures = append(failures, "bash: "+err.Error())
				continue
			}
			plugins = append(plugins, b)
		case "ebpf-net":
			nf, err := openNetflow(cfg, log)
			if err != nil {
				log.Error("netflow disabled", "err", err)
				failures = append(failures, "netflow: "+err.Error())
				continue
			}
			plugins = append(plugins, nf)
			if nf.probe.DNS() {
				plugins = append(plugins, openDNSFlow(cfg, nf, log))
			} else {
				log.Error("dnsflow disabled: it reads DNS packets in the cgroup_skb programs of netflow/udp, which is off")
			}
			if cfg.L7("httpflow") || cfg.L7("httpflow-tls") {
				if !nf.probe.HTTP() {
					log.Error("httpflow disabled: it parses packets in the cgroup_skb programs of netflow/udp, which is off")
					continue
				}
				plugins = append(plugins, openHTTPFlow(cfg, nf.probe, log))
			}
		default:
			log.Warn("plugin is not built yet, skipped", "plugin", name)
		}
	}
	if len(plugins) == 0 {
		return nil, fmt.Errorf("%w (enabled: %s): %s", ErrNothingRuns, strings.Join(cfg.Enabled, ","), strings.Join(failures, "; "))
	}
	return plugins, nil
}

func encodeAll(enc *point.Encoder, pts []point.Point, log *slog.Logger) [][]byte {
	lines := make([][]byte, 0, len(pts))
	for _, p := range pts {
		b, err := enc.Encode(p)
		if err != nil {
			log.Error("encode point", "measurement", p.Name, "err", err)
			continue
		}
		lines = append(lines, b)
	}
	return lines
}

// kernelEphemeralStart reads the first port of the kernel's ephemeral range: ports at or above it are
// aggregated as "*" (DataKit passes 0, which made every client port "*").
func kernelEphemeralStart(log *slog.Logger) uint16 {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.ParseUint(f[0], 10, 16); err == nil {
				return uint16(v)
			}
		}
	}
	log.Warn("cannot read the ephemeral port range, using 32768", "err", err)
	return 32768
}
