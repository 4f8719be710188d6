package httpflow

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"dkebpf/collector/elfsym"
	"dkebpf/collector/flow"
	"dkebpf/collector/h2"
	"dkebpf/collector/plugin"
	"dkebpf/collector/point"
	"dkebpf/collector/target"
)

// Kernel is the httpflow part of netflow's BPF object (collector/bpf.Netflow satisfies it): exchanges paired
// in its cgroup_skb programs (plain HTTP) and OpenSSL uprobes (TLS).
type Kernel interface {
	DrainHTTP(fn func([]byte)) int // struct hf_event records
	HTTPStats() []uint64           // indexed by Stat*
	TLS() bool                     // the OpenSSL uprobe programs loaded
	SSLSymbols() []string          // the OpenSSL functions they probe
	AttachSSL(path string, offsets map[string]uint64) error
	GoTLS() bool          // the crypto/tls uprobe programs loaded
	GoTLSFuncs() []string // the Go functions they probe
	AttachGoTLS(path string, funcs map[string]elfsym.GoFunc) error
	H2() bool                    // HTTP/2 sessions in TLS calls are followed (hf_h2 loaded)
	DrainH2(fn func([]byte)) int // struct hf_h2_rec records
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

	tls   *target.Watcher // nil unless httpflow-tls
	gotls *target.Watcher // nil unless httpflow-tls and its crypto/tls programs loaded
	h2    *h2.Tracker     // HTTP/2 sessions in TLS calls
}

var _ plugin.Plugin = (*Plugin)(nil)

// Libssl are the files httpflow-tls probes: every libssl a process maps (OpenSSL's or BoringSSL's), the host's in
// the standard library directories (so that a process started later is covered without being seen first), and every executable
// with OpenSSL linked in (found by its symbols, exported or in its static symbol table: not when stripped).
func Libssl(symbols []string) target.Spec {
	var known []string
	for _, d := range []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
		"/lib", "/usr/lib", "/usr/local/lib64", "/usr/local/lib"} {
		known = append(known, d+"/libssl.so.3", d+"/libssl.so.1.1")
	}
	known = append(known, "/usr/lib/x86_64-linux-gnu/android/libssl.so.0") // BoringSSL, as Debian packages it
	return target.Spec{
		Plugin: "httpflow-tls", What: "OpenSSL", Symbols: symbols, Partial: true,
		Mapped: func(path string) bool { return strings.HasPrefix(filepath.Base(path), "libssl.so") },
		Known:  known,
		Exe:    func(string, string) bool { return true },
		Linked: true,
	}
}

// GoTLS are the files httpflow-tls probes for Go's crypto/tls: every Go program's executable (found through
// its own function table: stripped programs too) that has the functions, but self and the parent agent
// (datakit*: their own calls are not the host's to report, they are dropped as ignored, and each probe costs
// uprobe hits and, at stop, a detach that waits for the kernel's grace periods).
func GoTLS(funcs []string, self string) target.Spec {
	return target.Spec{
		Plugin: "httpflow-tls", What: "Go crypto/tls", Symbols: funcs,
		Exe: func(path, comm string) bool { return path != self && !flow.OwnProcess(comm) },
		Go:  true,
	}
}

// NewPlugin returns the httpflow plugin reading k. With TLS, every libssl file and Go program in use is probed
// now and the ones that appear later are probed at each rescan.
func NewPlugin(k Kernel, cfg PluginConfig, log *slog.Logger) *Plugin {
	p := &Plugin{
		k:     k,
		agg:   NewAggregator(cfg.Config),
		log:   log,
		debug: log.Enabled(context.Background(), slog.LevelDebug),
		h2:    h2.NewTracker(),
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
	if tls {
		log.Info(fmt.Sprintf("httpflow-tls: on; hooks: uprobes on %s of every libssl and every executable with OpenSSL linked in, found at start and every %s",
			strings.Join(k.SSLSymbols(), ", "), cfg.SSLRescan))
		p.tls = target.Watch(target.NewFinder("/proc", Libssl(k.SSLSymbols())), cfg.SSLRescan,
			func(f target.File) error { return k.AttachSSL(f.Path, f.Offsets) }, log)
		if k.GoTLS() {
			log.Info(fmt.Sprintf("httpflow-tls: Go crypto/tls on (Go 1.18+, amd64); hooks: uprobes past the stack check and at the returns of %s in every Go program, found at start and every %s",
				strings.Join(k.GoTLSFuncs(), ", "), cfg.SSLRescan))
			self, _ := os.Executable()
			p.gotls = target.Watch(target.NewFinder("/proc", GoTLS(k.GoTLSFuncs(), self)), cfg.SSLRescan,
				func(f target.File) error { return k.AttachGoTLS(f.Path, f.Funcs) }, log)
		} else {
			log.Error("httpflow-tls: Go crypto/tls is not followed: its uprobe programs (netflow/gotls) are off")
		}
		if k.H2() {
			log.Info("httpflow-tls: HTTP/2 and gRPC on (frames of TLS sessions that start with HTTP/2's preface, headers decoded in the collector)")
		} else {
			log.Error("httpflow-tls: HTTP/2 is not followed: its program (netflow/h2) is off")
		}
	}
	return p
}

func (p *Plugin) Name() string     { return "httpflow" }
func (p *Plugin) Category() string { return "network" }
func (p *Plugin) Input() string    { return "ebpf-net/httpflow" }

// Drain takes the exchanges completed since the last drain.
func (p *Plugin) Drain() {
	plugin.DrainRecords(&p.c, p.k.DrainHTTP, func(e *Event) {
		if p.debug {
			p.log.Debug("httpflow: exchange", "dir", e.Dir, "status", e.Status, "pid", e.Pid, "req", string(e.Req[:min(int(e.ReqLen), ReqLen)]),
				"host", string(e.Host[:min(int(e.HostLen), HostLen)]), "req_bytes", e.ReqBytes, "resp_bytes", e.RespBytes, "sport", e.T.Sport, "dport", e.T.Dport)
		}
		p.agg.Add(*e)
	})
	plugin.DrainRecords(&p.c, p.k.DrainH2, func(r *h2Record) {
		c := h2.Chunk{Session: h2.Session{Pid: r.Pid, SSL: r.SSL}, Dir: int(r.Dir), Seq: r.Seq, TsNs: r.TsNs, Data: r.data,
			Client: r.Flags&H2FlagClient != 0, Close: r.Flags&H2FlagClose != 0, Lost: r.Flags&H2FlagLost != 0}
		p.h2.Add(c, func(x h2.Exchange) {
			if p.debug {
				p.log.Debug("httpflow: HTTP/2 exchange", "client", x.Client, "method", x.Method, "path", x.Path, "authority", x.Authority,
					"status", x.Status, "grpc_status", x.GRPCStatus, "req_bytes", x.ReqBytes, "resp_bytes", x.RespBytes, "pid", r.Pid)
			}
			p.agg.AddH2(&r.H2Record, x)
		})
	})
}

func (p *Plugin) Flush(now time.Time) []point.Point {
	p.h2.Expire()
	return p.agg.Flush(now)
}

func (p *Plugin) Counters() plugin.Counters {
	st := p.k.HTTPStats()
	as := p.agg.Stats()
	h := p.h2.Stats()
	c := p.c
	c.Lost = plugin.Stat(st, StatRingLost)
	c.MapFull = plugin.Stat(st, StatConnFull) + plugin.Stat(st, StatPipelineFull) + plugin.Stat(st, StatScratchFull)
	c.Extra = map[string]uint64{
		"desyncs":          plugin.Stat(st, StatDesync),
		"unanswered":       plugin.Stat(st, StatUnanswered),
		"exchanges_lost":   plugin.Stat(st, StatLost),
		"ignored":          as.Ignored,
		"unparsable":       as.Unparsable,
		"no_address":       as.NoAddress,
		"paths_folded":     as.Folded,
		"tls_uprobe_hits":  plugin.Stat(st, StatTLSHits),
		"tls_calls":        plugin.Stat(st, StatTLSCalls),
		"tls_libs_probed":  0,
		"tls_go_probed":    0,
		"tls_attach_fails": 0,
		"h2_records_lost":  plugin.Stat(st, StatH2Lost),
		"h2_desyncs":       h.Desyncs,
		"h2_resets":        h.Resets,
		"h2_unanswered":    h.Unanswered,
		"h2_dropped":       h.Dropped + h.Evicted,
		"routes_learned":   0,
		"routes_unlearned": 0,
	}
	if r := p.agg.cfg.Routes; r != nil {
		rs := r.Stats()
		c.Extra["routes_learned"], c.Extra["routes_unlearned"] = rs.Learned, rs.Unlearned
	}
	if p.tls != nil {
		w := p.tls.Counts()
		c.Extra["tls_libs_probed"], c.Extra["tls_attach_fails"] = w.Probed, w.Failed
	}
	if p.gotls != nil {
		w := p.gotls.Counts()
		c.Extra["tls_go_probed"] = w.Probed
		c.Extra["tls_attach_fails"] += w.Failed
	}
	return c
}

// Close stops the libssl watcher and waits for it: it attaches to the kernel object, which netflow's owner
// closes next.
func (p *Plugin) Close() {
	for _, w := range []*target.Watcher{p.tls, p.gotls} {
		if w != nil {
			w.Stop()
		}
	}
}
