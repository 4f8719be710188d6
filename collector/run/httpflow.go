package run

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"dkebpf/collector/bpf"
	"dkebpf/collector/cli"
	"dkebpf/collector/httpflow"
	"dkebpf/collector/point"
	"dkebpf/collector/sslib"
)

// httpflowPlugin reads the HTTP exchanges the netflow object pairs (plain in its cgroup_skb programs,
// TLS in OpenSSL uprobes) into httpflow points. It shares the netflow plugin's probe and does not close it.
type httpflowPlugin struct {
	probe *bpf.Netflow
	agg   *httpflow.Aggregator
	log   *slog.Logger
	debug bool // --log-level debug: log every exchange
	c     Counters

	tls         *sslWatcher // nil unless httpflow-tls
	stop        chan struct{}
	watcherDone chan struct{} // closed when the watcher's goroutine has returned
	stopOnce    sync.Once
}

func openHTTPFlow(cfg *cli.RunConfig, probe *bpf.Netflow, log *slog.Logger) *httpflowPlugin {
	p := &httpflowPlugin{
		probe: probe,
		agg: httpflow.NewAggregator(httpflow.Config{
			EphemeralPort: cfg.EphemeralPort,
			IgnoreCIDRs:   cfg.IgnoreCIDRs,
			IPv6Disabled:  cfg.IPv6Disabled,
			MaxPaths:      cfg.HTTPMaxPaths,
		}),
		log:         log,
		debug:       log.Enabled(context.Background(), slog.LevelDebug),
		stop:        make(chan struct{}),
		watcherDone: make(chan struct{}),
	}
	// Part lines in netflow's format; plain HTTP is parsed by netflow/udp's cgroup_skb programs.
	if cfg.L7("httpflow") {
		log.Info("httpflow: on; hooks: cgroup_skb/egress attached, cgroup_skb/ingress attached")
	}
	tls := cfg.L7("httpflow-tls")
	if tls && !probe.TLS() {
		log.Error("httpflow-tls disabled: its uprobe programs (netflow/tls) are off")
		tls = false
	}
	if tls {
		log.Info(fmt.Sprintf("httpflow-tls: on; hooks: uprobes on %s of every libssl, found at start and every %s",
			strings.Join(bpf.SSLSymbols, ", "), cfg.SSLRescan))
		p.tls = &sslWatcher{probe: probe, log: log}
		p.tls.scan() // before the first interval: libraries of processes running now, and the host's
		go func() { p.tls.run(cfg.SSLRescan, p.stop); close(p.watcherDone) }()
	} else {
		close(p.watcherDone)
	}
	return p
}

func (p *httpflowPlugin) Name() string     { return "httpflow" }
func (p *httpflowPlugin) Category() string { return "network" }
func (p *httpflowPlugin) Input() string    { return "ebpf-net/httpflow" }

// Drain takes the exchanges completed since the last drain.
func (p *httpflowPlugin) Drain() {
	p.probe.DrainHTTP(func(b []byte) {
		p.c.Events++
		var e httpflow.Event
		if err := e.UnmarshalBinary(b); err != nil {
			p.c.DecodeErrors++
			return
		}
		if p.debug {
			p.log.Debug("httpflow: exchange", "dir", e.Dir, "status", e.Status, "pid", e.Pid, "req", string(e.Req[:e.ReqLen]),
				"host", string(e.Host[:e.HostLen]), "req_bytes", e.ReqBytes, "resp_bytes", e.RespBytes, "sport", e.T.Sport, "dport", e.T.Dport)
		}
		p.agg.Add(e)
	})
}

func (p *httpflowPlugin) Flush(now time.Time) []point.Point { return p.agg.Flush(now) }

func (p *httpflowPlugin) Counters() Counters {
	st := p.probe.HTTPStats()
	as := p.agg.Stats()
	c := p.c
	c.Lost = st[httpflow.StatRingLost]
	c.MapFull = st[httpflow.StatConnFull] + st[httpflow.StatPipelineFull]
	c.Extra = map[string]uint64{
		"desyncs":          st[httpflow.StatDesync],
		"unanswered":       st[httpflow.StatUnanswered],
		"ignored":          as.Ignored,
		"unparsable":       as.Unparsable,
		"no_address":       as.NoAddress,
		"paths_folded":     as.Folded,
		"tls_uprobe_hits":  st[httpflow.StatTLSHits],
		"tls_calls":        st[httpflow.StatTLSCalls],
		"tls_libs_probed":  0,
		"tls_attach_fails": 0,
	}
	if p.tls != nil {
		libs, fails := p.tls.counts()
		c.Extra["tls_libs_probed"], c.Extra["tls_attach_fails"] = libs, fails
	}
	return c
}

// Close stops the libssl watcher and waits for it: it attaches to the probe, which netflow closes next.
func (p *httpflowPlugin) Close() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.watcherDone
}

// sslWatcher puts the OpenSSL uprobes on every libssl file in use: the host's at start, and each new one
// (another root, a new version) that a process maps, found by rescanning /proc.
type sslWatcher struct {
	probe *bpf.Netflow
	log   *slog.Logger

	mu           sync.Mutex
	seen         sslib.Tracker
	libs, failed uint64
}

func (w *sslWatcher) run(every time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			w.scan()
		}
	}
}

func (w *sslWatcher) scan() {
	w.mu.Lock()
	defer w.mu.Unlock()
	known, _ := sslib.Known(bpf.SSLSymbols)
	found, _ := sslib.Scan("/proc", bpf.SSLSymbols) // unreadable processes and libraries are skipped
	for _, lib := range w.seen.New(append(known, found...)) {
		if err := w.probe.AttachSSL(lib.Path, lib.Offsets); err != nil {
			w.failed++
			w.log.Warn("httpflow-tls: cannot probe libssl", "path", lib.Path, "err", err)
			continue
		}
		w.libs++
		w.log.Info("httpflow-tls: probing libssl", "path", lib.Path)
	}
}

func (w *sslWatcher) counts() (libs, failed uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.libs, w.failed
}
