package run

import (
	"dkebpf/collector/flow"

	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	"dkebpf/collector/bpf"
	"dkebpf/collector/cli"
	"dkebpf/collector/dnsflow"
	"dkebpf/collector/point"
)

// dnsflowPlugin pairs the DNS queries and answers that netflow's cgroup_skb programs hand over into
// dnsflow points. It shares the netflow plugin's probe and does not close it.
type dnsflowPlugin struct {
	probe *bpf.Netflow
	tr    *dnsflow.Tracker
	log   *slog.Logger
	c     Counters
}

func openDNSFlow(cfg *cli.RunConfig, nf *netflowPlugin, log *slog.Logger) *dnsflowPlugin {
	p := &dnsflowPlugin{probe: nf.probe, log: log}
	p.tr = dnsflow.NewTracker(dnsflow.Config{
		Ports:        cfg.DNSPorts,
		Timeout:      cfg.DNSTimeout,
		IgnoreCIDRs:  cfg.IgnoreCIDRs,
		IPv6Disabled: cfg.IPv6Disabled,
		// A query sent outside its owner's call (TCP, ACK-clocked) is attributed through the socket
		// owners netflow learns in process context.
		Owner: func(cookie uint64) (uint32, string, uint32, bool) {
			s, ok := nf.lookupSock(cookie)
			if !ok || s.Pid == 0 {
				return 0, "", 0, false
			}
			return s.Pid, flow.Comm(s.Comm), s.Netns, true
		},
	})
	nf.agg.SetDomains(p.tr.Names())
	log.Info("dnsflow: on; hooks: cgroup_skb/egress attached, cgroup_skb/ingress attached", "ports", cfg.DNSPorts, "timeout", cfg.DNSTimeout)
	return p
}

func (p *dnsflowPlugin) Name() string     { return "dnsflow" }
func (p *dnsflowPlugin) Category() string { return "network" }
func (p *dnsflowPlugin) Input() string    { return "ebpf-net/dnsflow" }

// Drain takes the DNS packets seen since the last drain and reports the queries that timed out.
func (p *dnsflowPlugin) Drain() {
	var e dnsflow.Event
	p.probe.DrainDNS(func(b []byte) {
		p.c.Events++
		if err := e.UnmarshalBinary(b); err != nil {
			p.c.DecodeErrors++
			return
		}
		p.tr.Add(&e)
	})
	p.tr.Expire(monotonicNow())
}

func (p *dnsflowPlugin) Flush(now time.Time) []point.Point { return p.tr.Flush(now) }

func (p *dnsflowPlugin) Counters() Counters {
	st := p.tr.Stats()
	c := p.c
	c.Lost = p.probe.DNSStats()[dnsflow.StatRingLost]
	c.MapFull = st.InFlightEvicted + st.NamesEvicted + st.StreamsEvicted
	c.Extra = map[string]uint64{
		"queries":           st.Queries,
		"answers":           st.Answers,
		"timeouts":          st.Timeouts,
		"unmatched_answers": st.UnmatchedAnswers,
		"malformed":         st.Malformed,
		"tcp_desyncs":       st.TCPDesyncs,
		"in_flight":         st.InFlight,
		"in_flight_evicted": st.InFlightEvicted,
		"names_evicted":     st.NamesEvicted,
		"streams_evicted":   st.StreamsEvicted,
		"ignored":           st.Ignored,
	}
	return c
}

func (p *dnsflowPlugin) Close() {}

// monotonicNow is CLOCK_MONOTONIC in ns, the clock of bpf_ktime_get_ns.
func monotonicNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano())
}
