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

	"dkebpf/collector/apicat"
	"dkebpf/collector/bash"
	"dkebpf/collector/bpf"
	"dkebpf/collector/cli"
	"dkebpf/collector/container"
	"dkebpf/collector/dnsflow"
	"dkebpf/collector/enrich"
	"dkebpf/collector/flow"
	"dkebpf/collector/httpflow"
	"dkebpf/collector/k8s"
	"dkebpf/collector/netflow"
	"dkebpf/collector/plugin"
	"dkebpf/collector/point"
	"dkebpf/collector/process"
	"dkebpf/collector/procfs"
	"dkebpf/collector/route"
	"dkebpf/collector/sampling"
	"dkebpf/collector/sender"
	"dkebpf/collector/target"
)

// drainEvery is how often ring buffers are emptied between flushes (they are written without wakeups).
// httpflow's 4 MiB ring holds about 14k exchanges: at 140k exchanges/s (nginx keep-alive at saturation, both
// sides on one host) it fills in 100 ms, so drain every 20 ms. An empty drain is two atomic loads.
const drainEvery = 20 * time.Millisecond

// Main runs the collector until ctx ends (SIGTERM/SIGINT), then flushes once more and detaches.
func Main(ctx context.Context, cfg *cli.RunConfig, log *slog.Logger) error {
	for _, w := range cfg.Warnings {
		log.Warn(w)
	}
	if cfg.EphemeralPort == 0 {
		cfg.EphemeralPort = kernelEphemeralStart(log)
	}
	snd := sender.New(sender.Config{BaseURL: cfg.APIServer, Token: cfg.APIToken, MaxBufferedPoints: cfg.MaxBufferedPoints,
		SpoolDir: cfg.SpoolDir, Logger: log})
	sendCtx, stopSender := context.WithCancel(context.Background())
	senderDone := make(chan struct{})
	go func() { snd.Run(sendCtx); close(senderDone) }()
	defer func() { stopSender(); <-senderDone }()

	k8sIndex := startK8s(ctx, cfg, log)
	nat, natLookup := openNAT(cfg, k8sIndex, log)
	if nat != nil {
		defer nat.Close()
	}
	plugins, objects, err := startPlugins(cfg, natLookup, log)
	if err != nil {
		msg := err.Error()
		log.Error(msg)
		if perr := snd.PostLastError(ctx, "ebpf", msg); perr != nil {
			log.Warn("report last error to datakit", "err", perr)
		}
		return err
	}
	defer func() {
		start := time.Now()
		plugin.CloseAll(plugins)
		for _, o := range objects { // after the plugins: their watchers attach to them
			o.Close()
		}
		log.Info("stopping: programs detached", "took", time.Since(start).Round(time.Millisecond))
	}()

	enc := point.NewEncoder(cfg.GlobalTags())
	self := newSelfMetrics(time.Now())
	self.nat, self.pods = nat, k8sIndex
	sampler := sampling.New(cfg.SamplingRate, cfg.SamplingRatePtsPerMinute)
	containers := container.New(container.Config{HostRoot: os.Getenv("HOST_ROOT"), Endpoints: cfg.ContainerEndpoints, Logger: log})
	var pods enrich.Pods
	if k8sIndex != nil {
		pods = k8sIndex
	}
	flush := func(now time.Time) {
		if nat != nil {
			if err := nat.Refresh(); err != nil {
				log.Warn("conntrack dump failed: dst_nat_ip from the previous one", "err", err)
			}
		}
		for _, b := range plugin.Flush(plugins, now) {
			enrich.Points(b.Points, containers, pods)
			pts := sampler.Sample(b.Plugin.Category(), b.Points, now)
			self.sampledOut[b.Plugin.Name()] += uint64(len(b.Points) - len(pts))
			snd.Enqueue(b.Plugin.Category(), b.Plugin.Input(), encodeAll(enc, pts, log))
			log.Debug("flushed", "plugin", b.Plugin.Name(), "points", len(pts), "sampled_out", len(b.Points)-len(pts))
		}
		// The health point goes through the sender like the others, so it is counted (self_points_*) too.
		snd.Enqueue("metric", selfInput, encodeAll(enc, []point.Point{self.point(now, plugins, objects, snd.Stats(), snd.SpoolCorrupt())}, log))
	}

	// A long flush drains too, between its batches: at 40 000 HTTP requests/s httpflow's ring holds about
	// 200 ms of exchanges, and netflow's walk takes about 1.5 µs of CPU per socket (50 ms at 34 000 on an
	// idle CPU; 200 ms and more of wall time when the CPU is shared with the load, in make bench-scale).
	lastDrain := time.Now()
	for _, p := range plugins {
		if pp, ok := p.(plugin.Pauser); ok {
			pp.SetPause(func() {
				if time.Since(lastDrain) >= drainEvery {
					plugin.Drain(plugins)
					lastDrain = time.Now()
				}
			})
		}
	}
	drain := time.NewTicker(drainEvery)
	defer drain.Stop()
	interval := time.NewTicker(cfg.Interval)
	defer interval.Stop()
	// tp_btf, raw tracepoints, iterators and cgroup_skb attach without tracefs; only a classic tracepoint
	// (a kernel refusing the others) needs it, and then the collector mounts it if the host has not.
	log.Info("collector running", "tracefs", bpf.TracefsNote(), "cgroup2", bpf.CgroupNote(), "interval", cfg.Interval, "datakit", cfg.APIServer, "ephemeral_port", cfg.EphemeralPort)
	for {
		select {
		case <-ctx.Done():
			flush(time.Now())
			log.Info("stopping: final flush queued")
			return nil
		case <-drain.C:
			plugin.Drain(plugins)
			lastDrain = time.Now()
		case now := <-interval.C:
			flush(now)
		}
	}
}

// startK8s starts Kubernetes enrichment when a token is configured or the service account's is there (in
// a pod); nil otherwise. It never waits for the API server.
func startK8s(ctx context.Context, cfg *cli.RunConfig, log *slog.Logger) *k8s.Index {
	ix, err := k8s.Start(ctx, k8s.Config{URL: cfg.K8sURL, Token: cfg.K8sToken, TokenFile: cfg.K8sTokenFile,
		WorkloadLabels: cfg.K8sWorkloadLabels, LabelPrefix: cfg.K8sLabelPrefix, Logger: log})
	switch {
	case errors.Is(err, k8s.ErrNoCredentials) && cfg.K8sURL == "":
		return nil // not in a pod, nothing configured: a host without Kubernetes
	case err != nil:
		log.Warn("kubernetes enrichment off", "err", err)
		return nil
	}
	return ix
}

// ErrNothingRuns: no enabled plugin can run on this host (every one lacks a required hook).
var ErrNothingRuns = errors.New("no plugin could start")

// object is a loaded BPF object: what its kernel refused or replaced, and its release.
type object interface {
	Parts() []bpf.PartStatus
	Refused() int
	Close()
}

// startPlugins opens what --enabled asks for: the BPF objects, then the plugins reading them. Plugins not
// built yet are named and skipped; if nothing can run, it is an error.
//
// Objects are opened smallest-footprint first (bash, then ebpf-net), and the plugins keep --enabled's
// order. Loading an object makes libbpf parse the kernel's BTF (several MB, freed after the load), and
// an opened object keeps its ring buffers mapped: in this order the parse for netflow's object comes
// while only bash's small rings are mapped, so the collector's peak memory is the larger of the two, not
// their sum.
func startPlugins(cfg *cli.RunConfig, nat flow.NAT, log *slog.Logger) ([]plugin.Plugin, []object, error) {
	opened := make([][]plugin.Plugin, len(cfg.Enabled))
	objs := make([]object, len(cfg.Enabled))
	errs := make([]error, len(cfg.Enabled))
	order := make([]int, 0, len(cfg.Enabled))
	for i, name := range cfg.Enabled {
		if name == "ebpf-bash" {
			order = append([]int{i}, order...)
		} else {
			order = append(order, i)
		}
	}
	for _, i := range order {
		switch name := cfg.Enabled[i]; name {
		case "ebpf-bash":
			opened[i], objs[i], errs[i] = openBash(cfg, log)
		case "ebpf-net":
			opened[i], objs[i], errs[i] = openNet(cfg, nat, log)
		case "ebpf-process":
			opened[i], objs[i], errs[i] = openProcess(cfg, log)
		default:
			log.Warn("plugin is not built yet, skipped", "plugin", name)
			continue
		}
		if errs[i] != nil {
			log.Error(cfg.Enabled[i]+" disabled", "err", errs[i])
		}
	}
	var plugins []plugin.Plugin
	var objects []object
	var failures []string
	for i, name := range cfg.Enabled {
		switch {
		case errs[i] != nil:
			failures = append(failures, name+": "+errs[i].Error())
		case objs[i] != nil:
			plugins, objects = append(plugins, opened[i]...), append(objects, objs[i])
		}
	}
	if len(plugins) == 0 {
		return nil, nil, fmt.Errorf("%w (enabled: %s): %s", ErrNothingRuns, strings.Join(cfg.Enabled, ","), strings.Join(failures, "; "))
	}
	return plugins, objects, nil
}

// openBash loads bash's object and builds its plugin.
func openBash(cfg *cli.RunConfig, log *slog.Logger) ([]plugin.Plugin, object, error) {
	red, err := bash.NewRedactor(cfg.BashRedact)
	if err != nil {
		return nil, nil, err
	}
	k, err := bpf.OpenBash(bpf.Options{ObjectDir: cfg.BPFObjects, Floor: cfg.BPFFloor})
	if err != nil {
		return nil, nil, err
	}
	logReport(log, k.Report())
	p := bash.NewPlugin(k, bash.Config{Redactor: red, Users: bash.NewUsers("/proc", "/etc/passwd")},
		target.NewFinder("/proc", bash.Targets()), cfg.BashRescan, log)
	return []plugin.Plugin{p}, k, nil
}

// openProcess loads the process object and builds its plugin.
func openProcess(cfg *cli.RunConfig, log *slog.Logger) ([]plugin.Plugin, object, error) {
	k, err := bpf.OpenProcess(bpf.Options{ObjectDir: cfg.BPFObjects, Floor: cfg.BPFFloor})
	if err != nil {
		return nil, nil, err
	}
	logReport(log, k.Report())
	p := process.NewPlugin(k, log)
	return []plugin.Plugin{p, process.NewOOMPlugin(p, process.NewCgroups("/proc/self/mountinfo"), log), process.NewExitsPlugin(p, log)}, k, nil
}

// openNet loads netflow's object and builds the plugins of ebpf-net on it.
func openNet(cfg *cli.RunConfig, nat flow.NAT, log *slog.Logger) ([]plugin.Plugin, object, error) {
	services, err := apicat.ParseServices(cfg.APIServices)
	if err != nil {
		return nil, nil, fmt.Errorf("--api-services: %w", err)
	}
	k, err := bpf.OpenNetflow(bpf.Options{ObjectDir: cfg.BPFObjects, Floor: cfg.BPFFloor,
		HTTP: cfg.L7("httpflow"), TLS: cfg.L7("httpflow-tls"), DNS: true, DNSPorts: cfg.DNSPorts, MaxSockets: cfg.MaxSockets})
	if err != nil {
		return nil, nil, err
	}
	logReport(log, k.Report())
	return netPlugins(cfg, k, nat, services, log), k, nil
}

// netPlugins are the plugins of ebpf-net, which share netflow's BPF object: netflow, dnsflow (which names
// netflow's remote addresses), httpflow, and the API catalogue's two (api_endpoint, unknown_api) that
// httpflow feeds.
func netPlugins(cfg *cli.RunConfig, k *bpf.Netflow, nat flow.NAT, services []apicat.Service, log *slog.Logger) []plugin.Plugin {
	filter := flow.Filter{IgnoreCIDRs: cfg.IgnoreCIDRs, IPv6Disabled: cfg.IPv6Disabled}
	nf := netflow.NewPlugin(k, netflow.Config{EphemeralPort: cfg.EphemeralPort, Filter: filter, NAT: nat}, procfs.NewOwners("/proc"), log)
	plugins := []plugin.Plugin{nf}
	if k.DNS() {
		dns := dnsflow.NewPlugin(k, dnsflow.Config{
			Ports:   cfg.DNSPorts,
			Timeout: cfg.DNSTimeout,
			Filter:  filter,
			Owner: func(cookie uint64) (flow.Proc, uint32, bool) {
				s, ok := nf.LookupSock(cookie)
				if !ok || s.Pid == 0 {
					return flow.Proc{}, 0, false
				}
				return flow.Proc{Pid: s.Pid, Comm: flow.Comm(s.Comm), Mntns: s.Mntns}, s.Netns, true
			},
		}, log)
		nf.SetDomains(dns.Names())
		plugins = append(plugins, dns)
	} else {
		log.Error("dnsflow disabled: it reads DNS packets in the cgroup_skb programs of netflow/udp, which is off")
	}
	if cfg.L7("httpflow") || cfg.L7("httpflow-tls") {
		if !k.HTTP() {
			log.Error("httpflow disabled: it parses packets in the cgroup_skb programs of netflow/udp, which is off")
			return plugins
		}
		// The API catalogue, from the exchanges this host makes as a client: flushed after httpflow drained.
		// Both report the route templates learned from every exchange.
		routes := route.NewLearner()
		cat := apicat.New(services, routes)
		plugins = append(plugins, httpflow.NewPlugin(k, httpflow.PluginConfig{
			Config: httpflow.Config{EphemeralPort: cfg.EphemeralPort, Filter: filter, MaxPaths: cfg.HTTPMaxPaths, NAT: nat,
				Catalogue: cat, Routes: routes},
			Plain: cfg.L7("httpflow"), TLS: cfg.L7("httpflow-tls"), SSLRescan: cfg.SSLRescan,
		}, log))
		plugins = append(plugins, apicat.Plugins(cat)...)
	}
	return plugins
}

func logReport(log *slog.Logger, lines []string) {
	for _, line := range lines {
		log.Info(line)
	}
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
