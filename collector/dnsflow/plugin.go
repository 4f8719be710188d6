package dnsflow

import (
	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	"dkebpf/collector/plugin"
	"dkebpf/collector/point"
)

// Kernel is the dnsflow part of netflow's BPF object (collector/bpf.Netflow satisfies it): the DNS packets
// of client sockets, copied in its cgroup_skb programs.
type Kernel interface {
	DrainDNS(fn func([]byte)) int // struct df_event records
	DNSStats() []uint64           // indexed by Stat*
}

// Plugin pairs DNS queries and answers into dnsflow points.
type Plugin struct {
	k   Kernel
	tr  *Tracker
	log *slog.Logger
	c   plugin.Counters
	now func() uint64 // CLOCK_MONOTONIC ns, the kernel's event clock
}

var _ plugin.Plugin = (*Plugin)(nil)

// NewPlugin returns the dnsflow plugin reading k. cfg.Owner attributes a query sent outside its owner's
// call (TCP, ACK-clocked) through the socket owners netflow learns in process context.
func NewPlugin(k Kernel, cfg Config, log *slog.Logger) *Plugin {
	log.Info("dnsflow: on; hooks: cgroup_skb/egress attached, cgroup_skb/ingress attached", "ports", cfg.Ports, "timeout", cfg.Timeout)
	return &Plugin{k: k, tr: NewTracker(cfg), log: log, now: monotonicNow}
}

func (p *Plugin) Name() string     { return "dnsflow" }
func (p *Plugin) Category() string { return "network" }
func (p *Plugin) Input() string    { return "ebpf-net/dnsflow" }

// Names are the names the answers gave each address, for netflow's dst_domain.
func (p *Plugin) Names() *NameCache { return p.tr.Names() }

// Drain takes the DNS packets seen since the last drain and reports the queries that timed out.
func (p *Plugin) Drain() {
	plugin.DrainRecords(&p.c, p.k.DrainDNS, p.tr.Add)
	p.tr.Expire(p.now())
}

func (p *Plugin) Flush(now time.Time) []point.Point { return p.tr.Flush(now) }

func (p *Plugin) Counters() plugin.Counters {
	st := p.tr.Stats()
	c := p.c
	c.Lost = plugin.Stat(p.k.DNSStats(), StatRingLost)
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

// Close does nothing: the kernel object is netflow's owner's to close.
func (p *Plugin) Close() {}

// monotonicNow is CLOCK_MONOTONIC in ns, the clock of bpf_ktime_get_ns.
func monotonicNow() uint64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return uint64(ts.Nano())
}
