package run

import (
	"testing"
	"time"

	"dkebpf/collector/sender"
)

func TestSelfPointReportsTheSenderCountersOfItsOwnPoints(t *testing.T) {
	start := time.Unix(1000, 0)
	self := newSelfMetrics(start)
	sent := map[string]sender.InputStats{selfInput: {Sent: 5, Failed: 1, Rejected: 2, Dropped: 3, Queued: 4, Spooled: 6, Resumed: 7, Spilled: 8}}
	p := self.point(start.Add(90*time.Second), nil, nil, sent, 2)
	want := map[string]int64{
		"uptime_seconds":           90,
		"self_points_sent":         5,
		"self_points_failed_posts": 1,
		"self_points_rejected":     2,
		"self_points_dropped":      3,
		"self_points_queued":       4,
		"self_points_spooled":      6,
		"self_points_resumed":      7,
		"self_points_spilled":      8,
		"spool_corrupt_records":    2,
	}
	for k, v := range want {
		if got, ok := p.Fields[k]; !ok || got != v {
			t.Errorf("field %s = %v (present %v), want %d", k, got, ok, v)
		}
	}
	if p.Name != "datakit_ebpf" {
		t.Errorf("measurement %q", p.Name)
	}
}
