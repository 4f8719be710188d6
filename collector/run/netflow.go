package run

import (
	"dkebpf/collector/flow"

	"log/slog"
	"time"

	"dkebpf/collector/bpf"
	"dkebpf/collector/cli"
	"dkebpf/collector/netflow"
	"dkebpf/collector/point"
	"dkebpf/collector/procfs"
)

// netflowPlugin joins the kernel probe (bpf.Netflow) to its aggregator.
type netflowPlugin struct {
	probe *bpf.Netflow
	agg   *netflow.Aggregator
	log   *slog.Logger
	c     Counters
}

func openNetflow(cfg *cli.RunConfig, log *slog.Logger) (*netflowPlugin, error) {
	probe, err := bpf.OpenNetflow(bpf.Options{ObjectDir: cfg.BPFObjects, Floor: cfg.BPFFloor,
		HTTP: cfg.L7("httpflow"), TLS: cfg.L7("httpflow-tls"), DNS: true, DNSPorts: cfg.DNSPorts})
	if err != nil {
		return nil, err
	}
	for _, line := range probe.Report() {
		log.Info(line)
	}
	agg := netflow.NewAggregator(netflow.Config{
		EphemeralPort: cfg.EphemeralPort,
		IgnoreCIDRs:   cfg.IgnoreCIDRs,
		IPv6Disabled:  cfg.IPv6Disabled,
	}, procfs.NewOwners("/proc"))
	return &netflowPlugin{probe: probe, agg: agg, log: log}, nil
}

func (p *netflowPlugin) Name() string     { return "netflow" }
func (p *netflowPlugin) Category() string { return "network" }
func (p *netflowPlugin) Input() string    { return "ebpf-net/netflow" }

// Drain takes the records of connections closed since the last drain.
func (p *netflowPlugin) Drain() {
	p.probe.DrainClosed(func(b []byte) {
		p.c.Events++
		var r netflow.TCPRecord
		if err := r.UnmarshalBinary(b); err != nil {
			p.c.DecodeErrors++
			p.log.Warn("netflow: decode close record", "err", err)
			return
		}
		p.agg.AddTCP(r)
	})
}

// Flush polls live TCP connections and UDP peers once, then returns the interval's points.
func (p *netflowPlugin) Flush(now time.Time) []point.Point {
	if p.probe.TCP() {
		b, err := p.probe.ReadLive()
		if err != nil {
			p.log.Warn("netflow: read live connections", "err", err)
		}
		recs, err := netflow.DecodeTCPRecords(b)
		if err != nil {
			p.c.DecodeErrors++
			p.log.Warn("netflow: decode live connections", "err", err)
		}
		p.c.Events += uint64(len(recs))
		for _, r := range recs {
			p.agg.AddTCP(r)
		}
	}
	if p.probe.UDP() {
		var idle [][]byte
		err := p.probe.ReadUDP(func(kb, vb []byte) {
			p.c.Events++
			var k netflow.UDPKey
			var v netflow.UDPVal
			if flow.Decode(kb, &k) != nil || flow.Decode(vb, &v) != nil {
				p.c.DecodeErrors++
				return
			}
			if p.agg.AddUDP(k, v, p.lookupSock) {
				idle = append(idle, kb)
			}
		})
		if err != nil {
			p.log.Warn("netflow: read udp counters", "err", err)
		}
		for _, k := range idle {
			p.probe.DeleteUDP(k)
		}
	}
	return p.agg.Flush(now)
}

func (p *netflowPlugin) lookupSock(cookie uint64) (flow.Sock, bool) {
	b, ok := p.probe.LookupUDPSock(cookie)
	if !ok {
		return flow.Sock{}, false
	}
	var s flow.Sock
	if err := flow.Decode(b, &s); err != nil {
		p.c.DecodeErrors++
		return s, false
	}
	return s, true
}

func (p *netflowPlugin) Counters() Counters {
	st := p.probe.Stats()
	c := p.c
	c.Lost = st[netflow.StatRingLost]
	c.MapFull = st[netflow.StatSockFull] + st[netflow.StatUDPFull]
	return c
}

func (p *netflowPlugin) Close() { p.probe.Close() }

func (p *netflowPlugin) probeParts() []bpf.PartStatus { return p.probe.Parts() }
func (p *netflowPlugin) probeRefused() int            { return p.probe.Refused() }
