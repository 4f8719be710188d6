package dnsflow

import (
	"log/slog"
	"time"

	"golang.org/x/sys/unix"

	"dkebpf/collector/plugin"
	"dkebpf/collector/point"
)

// Kernel is the dnsflow part of netflow's BPF object (collector/bpf.Netflow satisfies it): UDP queries
// paired with their answers and counted in its cgroup_skb programs, and the other DNS packets of client
// sockets, copied.
type Kernel interface {
	DrainDNS(fn func([]byte)) int // struct df_event records
	DNSStats() []uint64           // indexed by Stat*
	// DrainDNSCounts hands over (and forgets) what the kernel counted since the last call: struct df_key
	// and its counts summed over CPUs.
	DrainDNSCounts(fn func(key []byte, count, latencySum, latencyMax uint64)) error
	// ExpireDNS deletes the queries the kernel waits on that were sent before cutoff (CLOCK_MONOTONIC ns),
	// handing each (struct df_query) to fn, and returns how many still wait.
	ExpireDNS(cutoff uint64, fn func(query []byte)) (int, error)
	DNSGraceTimeouts() uint64
}

// Plugin pairs DNS queries and answers into dnsflow points.
type Plugin struct {
	k              Kernel
	tr             *Tracker
	log            *slog.Logger
	c              plugin.Counters
	now            func() uint64 // CLOCK_MONOTONIC ns, the kernel's event clock
	timeout        uint64        // ns
	kernelInFlight int           // queries the kernel waited on at the last flush
	kernelTimeouts uint64        // of those, reported unanswered by the collector
	kernelErrors   uint64        // failed reads of the kernel's counts
}

var _ plugin.Plugin = (*Plugin)(nil)

// NewPlugin returns the dnsflow plugin reading k. cfg.Owner attributes a query sent outside its owner's
// call (TCP, ACK-clocked) through the socket owners netflow learns in process context.
func NewPlugin(k Kernel, cfg Config, log *slog.Logger) *Plugin {
	log.Info("dnsflow: on; hooks: cgroup_skb/egress attached, cgroup_skb/ingress attached", "ports", cfg.Ports, "timeout", cfg.Timeout)
	tr := NewTracker(cfg)
	return &Plugin{k: k, tr: tr, log: log, now: monotonicNow, timeout: tr.timeoutNs}
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

// Flush adds what the kernel counted (the UDP queries it paired, and those it waited on past the timeout,
// unanswered) to the collector's own, and returns the interval's points.
func (p *Plugin) Flush(now time.Time) []point.Point {
	var q Query
	var k Key
	if cutoff := p.now(); cutoff > p.timeout {
		left, err := p.k.ExpireDNS(cutoff-p.timeout, func(b []byte) {
			if q.UnmarshalBinary(b) == nil {
				q.K.Rcode = -1
				p.tr.AddCounted(&q.K, 1, 0, 0)
				p.kernelTimeouts++
			}
		})
		p.kernelInFlight = left
		p.readError(err)
	}
	p.readError(p.k.DrainDNSCounts(func(b []byte, count, sum, most uint64) {
		if k.UnmarshalBinary(b) == nil {
			p.tr.AddCounted(&k, count, sum, most)
		}
	}))
	return p.tr.Flush(now)
}

func (p *Plugin) readError(err error) {
	if err != nil {
		p.kernelErrors++
		p.log.Warn("dnsflow: read the kernel's counts", "err", err)
	}
}

func (p *Plugin) Counters() plugin.Counters {
	st := p.tr.Stats()
	ks := p.k.DNSStats()
	c := p.c
	c.Lost = plugin.Stat(ks, StatRingLost)
	c.MapFull = st.InFlightEvicted + st.NamesEvicted + st.StreamsEvicted + plugin.Stat(ks, StatInFlightFull) + plugin.Stat(ks, StatAggFull)
	c.Extra = map[string]uint64{
		"queries":            st.Queries + plugin.Stat(ks, StatQueries),
		"answers":            st.Answers + plugin.Stat(ks, StatAnswers),
		"timeouts":           st.Timeouts + plugin.Stat(ks, StatRetried) + p.kernelTimeouts,
		"unmatched_answers":  st.UnmatchedAnswers,
		"malformed":          st.Malformed,
		"tcp_desyncs":        st.TCPDesyncs,
		"in_flight":          st.InFlight + uint64(p.kernelInFlight),
		"kernel_queries":     plugin.Stat(ks, StatQueries),
		"kernel_read_errors": p.kernelErrors + p.k.DNSGraceTimeouts(),
		"in_flight_evicted":  st.InFlightEvicted,
		"names_evicted":      st.NamesEvicted,
		"streams_evicted":    st.StreamsEvicted,
		"ignored":            st.Ignored,
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
