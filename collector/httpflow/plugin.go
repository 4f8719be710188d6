package httpflow

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"dkebpf/collector/plugin"
	"dkebpf/collector/point"
	"dkebpf/collector/sslib"
)

// Kernel is the httpflow part of netflow's BPF object (collector/bpf.Netflow satisfies it): exchanges paired
// in its cgroup_skb programs (plain HTTP) and OpenSSL uprobes (TLS).
type Kernel interface {
	DrainHTTP(fn func([]byte)) int // struct hf_event records
	HTTPStats() []uint64           // indexed by Stat*
	TLS() bool                     // the uprobe programs loaded
	SSLSymbols() []string          // the OpenSSL functions they probe
	AttachSSL(path string, offsets map[string]uint64) error
}

// PluginConfig is the plugin's: the aggregator's, which tracers are on, and how often libssl is looked for.
type PluginConfig struct {
	Config
	Plain, TLS bool
	SSLRescan  time.Duration
}

// Plugin reads the HTTP exchanges of the netflow object into httpflow points.
type Plugin struct {
	k     Kernel
	agg   *Aggregator
	log   *slog.Logger
	debug bool // --log-level debug: log every exchange
	c     plugin.Counters

	tls         *sslWatcher // nil unless httpflow-tls
	stop        chan struct{}
	watcherDone chan struct{} // closed when the watcher's goroutine has returned
	stopOnce    sync.Once
}

var _ plugin.Plugin = (*Plugin)(nil)

// NewPlugin returns the httpflow plugin reading k. With TLS, every libssl file in use is probed now and
// the ones that appear later are probed at each rescan.
func NewPlugin(k Kernel, cfg PluginConfig, log *slog.Logger) *Plugin {
	p := &Plugin{
		k:           k,
		agg:         NewAggregator(cfg.Config),
		log:         log,
		debug:       log.Enabled(context.Background(), slog.LevelDebug),
		stop:        make(chan struct{}),
		watcherDone: make(chan struct{}),
	}
	// Part lines in netflow's format; plain HTTP is parsed by netflow/udp's cgroup_skb programs.
	if cfg.Plain {
		log.Info("httpflow: on; hooks: cgroup_skb/egress attached, cgroup_skb/ingress attached")
	}
	tls := cfg.TLS
	if tls && !k.TLS() {
		log.Error("httpflow-tls disabled: its uprobe programs (netflow/tls) are off")
		tls = false
	}
	if !tls {
		close(p.watcherDone)
		return p
	}
	log.Info(fmt.Sprintf("httpflow-tls: on; hooks: uprobes on %s of every libssl, found at start and every %s",
		strings.Join(k.SSLSymbols(), ", "), cfg.SSLRescan))
	p.tls = &sslWatcher{k: k, log: log}
	p.tls.scan() // before the first interval: libraries of processes running now, and the host's
	go func() { p.tls.run(cfg.SSLRescan, p.stop); close(p.watcherDone) }()
	return p
}

func (p *Plugin) Name() string     { return "httpflow" }
func (p *Plugin) Category() string { return "network" }
func (p *Plugin) Input() string    { return "ebpf-net/httpflow" }

// Drain takes the exchanges completed since the last drain.
func (p *Plugin) Drain() {
	p.k.DrainHTTP(func(b []byte) {
		p.c.Events++
		var e Event
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

func (p *Plugin) Flush(now time.Time) []point.Point { return p.agg.Flush(now) }

func (p *Plugin) Counters() plugin.Counters {
	st := p.k.HTTPStats()
	as := p.agg.Stats()
	c := p.c
	c.Lost = plugin.Stat(st, StatRingLost)
	c.MapFull = plugin.Stat(st, StatConnFull) + plugin.Stat(st, StatPipelineFull)
	c.Extra = map[string]uint64{
		"desyncs":          plugin.Stat(st, StatDesync),
		"unanswered":       plugin.Stat(st, StatUnanswered),
		"ignored":          as.Ignored,
		"unparsable":       as.Unparsable,
		"no_address":       as.NoAddress,
		"paths_folded":     as.Folded,
		"tls_uprobe_hits":  plugin.Stat(st, StatTLSHits),
		"tls_calls":        plugin.Stat(st, StatTLSCalls),
		"tls_libs_probed":  0,
		"tls_attach_fails": 0,
	}
	if p.tls != nil {
		libs, fails := p.tls.counts()
		c.Extra["tls_libs_probed"], c.Extra["tls_attach_fails"] = libs, fails
	}
	return c
}

// Close stops the libssl watcher and waits for it: it attaches to the kernel object, which netflow's owner
// closes next.
func (p *Plugin) Close() {
	p.stopOnce.Do(func() { close(p.stop) })
	<-p.watcherDone
}

// sslWatcher puts the OpenSSL uprobes on every libssl file in use: the host's at start, and each new one
// (another root, a new version) that a process maps, found by rescanning /proc.
type sslWatcher struct {
	k   Kernel
	log *slog.Logger

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
	known, _ := sslib.Known(w.k.SSLSymbols())
	found, _ := sslib.Scan("/proc", w.k.SSLSymbols()) // unreadable processes and libraries are skipped
	for _, lib := range w.seen.New(append(known, found...)) {
		if err := w.k.AttachSSL(lib.Path, lib.Offsets); err != nil {
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
