package run

import (
	"time"

	"dkebpf/collector/bpf"
	"dkebpf/collector/conntrack"
	"dkebpf/collector/k8s"
	"dkebpf/collector/plugin"
	"dkebpf/collector/point"
	"dkebpf/collector/sender"
)

// selfInput is the input= of the collector's own health point (measurement datakit_ebpf, category metric).
const selfInput = "datakit-ebpf"

type selfMetrics struct {
	start      time.Time
	sampledOut map[string]uint64 // plugin -> points sampling dropped (sampling_rate*)
	nat        *conntrack.Table  // nil: dst_nat_ip off
	pods       *k8s.Index        // nil: Kubernetes enrichment off
}

func newSelfMetrics(start time.Time) *selfMetrics {
	return &selfMetrics{start: start, sampledOut: map[string]uint64{}}
}

// point is one datakit_ebpf point with every plugin's cumulative counters, prefixed by the plugin name:
// events received, lost, map-full drops, decode errors, and the sender's points sent, failed, rejected,
// dropped, queued, spooled and resumed; the same sender counters of these points themselves (self_); and
// the spool records skipped as damaged.
func (s *selfMetrics) point(now time.Time, plugins []plugin.Plugin, objects []object, sent map[string]sender.InputStats, spoolCorrupt int64) point.Point {
	f := map[string]any{"uptime_seconds": int64(now.Sub(s.start).Seconds())}
	senderFields(f, "self_", sent[selfInput])
	f["spool_corrupt_records"] = spoolCorrupt
	// A fleet dashboard finds degraded hosts by these: hooks the kernel refused, parts on a fallback or off.
	var refused, fallback, off int64
	for _, o := range objects {
		refused += int64(o.Refused())
		for _, ps := range o.Parts() {
			switch ps.Mode {
			case bpf.Fallback:
				fallback++
			case bpf.Off:
				off++
			}
		}
	}
	f["hooks_refused"], f["parts_fallback"], f["parts_off"] = refused, fallback, off
	for _, p := range plugins {
		c := p.Counters()
		st := sent[p.Input()]
		n := p.Name() + "_"
		f[n+"events_received"] = int64(c.Events)
		f[n+"events_lost"] = int64(c.Lost)
		f[n+"map_full_drops"] = int64(c.MapFull)
		f[n+"decode_errors"] = int64(c.DecodeErrors)
		senderFields(f, n, st)
		f[n+"points_sampled_out"] = int64(s.sampledOut[p.Name()])
		for k, v := range c.Extra {
			f[n+k] = int64(v)
		}
	}
	if s.nat != nil {
		st := s.nat.Stats()
		f["conntrack_dumps"], f["conntrack_dump_errors"] = int64(st.Dumps), int64(st.Errors)
		f["conntrack_nat_entries"], f["conntrack_gets"], f["conntrack_hits"] = int64(st.Entries), int64(st.Gets), int64(st.Hits)
	}
	if s.pods != nil {
		f["k8s_synced"], f["k8s_pods"] = s.pods.Synced(), int64(s.pods.Pods())
	}
	return point.Point{Name: "datakit_ebpf", Tags: map[string]string{}, Fields: f, Time: now}
}

// senderFields adds the sender's counters of one input, prefixed.
func senderFields(f map[string]any, prefix string, st sender.InputStats) {
	f[prefix+"points_sent"] = st.Sent
	f[prefix+"points_failed_posts"] = st.Failed
	f[prefix+"points_rejected"] = st.Rejected
	f[prefix+"points_dropped"] = st.Dropped
	f[prefix+"points_queued"] = st.Queued
	f[prefix+"points_spooled"] = st.Spooled
	f[prefix+"points_spilled"] = st.Spilled
	f[prefix+"points_resumed"] = st.Resumed
}
